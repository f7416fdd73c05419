//! The access decision: the one place the private-repository rule is applied to a request.
//!
//! Every reader of a repository (the v2 and v1 handlers, the reuse of recent answers, the catalog
//! and a later web UI) asks [`Access::of`] and acts on its answer; none of them looks at the
//! policy or the token itself. docs/request-handling.md shows where each caller asks.

use std::time::Duration;

use crate::reference::RepoName;

use super::TokenIssuer;

/// What one request may do with one repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Anyone may read it, and the answer is the same for every client (so it may be re-used).
    Public,
    /// Private, and the request's token grants pull: its signed URLs live at most `url_ttl`.
    Private { url_ttl: Duration },
    /// Private, and the request's token does not grant pull: a client gets a token for `scope`.
    Denied { scope: String },
}

impl Access {
    /// Decides for `repo`, given the endpoint's private-repository settings (`None`: every
    /// repository is public) and the request's `Authorization` header.
    pub fn of(auth: Option<&TokenIssuer>, authorization: Option<&str>, repo: &RepoName) -> Access {
        let Some(auth) = auth.filter(|a| a.policy.is_private(repo)) else {
            return Access::Public;
        };
        if auth.allows(authorization, repo.as_str()) {
            Access::Private {
                url_ttl: Duration::from_secs(auth.private_url_ttl),
            }
        } else {
            Access::Denied {
                scope: format!("repository:{repo}:pull"),
            }
        }
    }

    /// How long a signed URL for this repository's content lives, when public ones live
    /// `public`: private content never longer than its own limit.
    pub fn url_ttl(&self, public: Duration) -> Duration {
        match self {
            Access::Private { url_ttl } => public.min(*url_ttl),
            Access::Public | Access::Denied { .. } => public,
        }
    }

    pub fn may_read(&self) -> bool {
        !matches!(self, Access::Denied { .. })
    }
}

/// Whether the registry root (`/v2/`) answers without a challenge. With private repositories it
/// asks for any valid token (anonymous ones included), so that clients learn where `/token` is
/// before their first private pull; without them it never challenges, so no client ever sends
/// credentials that could follow a redirect.
pub fn may_enter(auth: Option<&TokenIssuer>, authorization: Option<&str>) -> bool {
    auth.filter(|a| a.policy.has_private())
        .is_none_or(|a| a.authenticated(authorization))
}

/// Which repositories a client's catalog lists: public ones, and the private ones the policy lets
/// the token's user pull (a catalog token carries no per-repository grants, so its user decides).
pub struct CatalogView {
    policy: Option<super::Policy>,
    user: Option<String>,
}

impl CatalogView {
    pub fn of(auth: Option<&TokenIssuer>, authorization: Option<&str>) -> CatalogView {
        let Some(auth) = auth.filter(|a| a.policy.has_private()) else {
            return CatalogView {
                policy: None,
                user: None,
            };
        };
        let user = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .and_then(|t| auth.verify(t.trim()))
            .map(|(u, _)| u)
            .filter(|u| !u.is_empty());
        CatalogView {
            policy: Some(auth.clone_policy()),
            user,
        }
    }

    /// The view of a web UI visitor: as [`CatalogView::of`], but a visitor may also sign in with
    /// HTTP Basic credentials from the same htpasswd ([`TokenIssuer::viewer`]).
    pub fn of_visitor(auth: Option<&TokenIssuer>, authorization: Option<&str>) -> CatalogView {
        let Some(auth) = auth.filter(|a| a.policy.has_private()) else {
            return CatalogView {
                policy: None,
                user: None,
            };
        };
        CatalogView {
            policy: Some(auth.clone_policy()),
            user: auth.viewer(authorization),
        }
    }

    /// The signed-in user, if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Whether every repository is listed (no private ones exist): the catalog may then be the
    /// static file, the same for everyone.
    pub fn lists_all(&self) -> bool {
        self.policy.is_none()
    }

    pub fn lists(&self, repo: &str) -> bool {
        self.policy
            .as_ref()
            .is_none_or(|p| p.may_pull(self.user.as_deref(), repo))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Rule;

    fn issuer(rules: Vec<Rule>) -> TokenIssuer {
        crate::auth::token::test_issuer(rules, &["alice", "bob"])
    }

    fn bearer(t: &TokenIssuer, user: Option<&str>, scope: &str) -> String {
        let creds = user.map(|u| (u.to_owned(), "pw".to_owned()));
        let v = t.issue(creds, &[scope.to_owned()]).unwrap();
        format!("Bearer {}", v["token"].as_str().unwrap())
    }

    #[test]
    fn web_visitors_sign_in_with_a_token_or_basic_credentials() {
        let t = issuer(vec![Rule {
            prefix: "team/".into(),
            users: vec!["alice".into()],
        }]);
        let basic = |cred: &str| {
            format!(
                "Basic {}",
                base64::Engine::encode(&base64::engine::general_purpose::STANDARD, cred)
            )
        };
        let cases = [
            (None, None, false),
            (Some(basic("alice:pw")), Some("alice"), true),
            (Some(basic("bob:pw")), Some("bob"), false),
            (Some(basic("alice:wrong")), None, false),
            (Some(basic("mallory:pw")), None, false),
            (
                Some(bearer(&t, Some("alice"), "repository:x:pull")),
                Some("alice"),
                true,
            ),
            (Some("Bearer junk".to_owned()), None, false),
        ];
        for (header, user, sees_team) in cases {
            // Twice: the second answer comes from the login cache and must not differ.
            for _ in 0..2 {
                let v = CatalogView::of_visitor(Some(&t), header.as_deref());
                assert_eq!(v.user(), user, "{header:?}");
                assert_eq!(v.lists("team/app"), sees_team, "{header:?}");
                assert!(v.lists("pub/app"));
            }
        }
        // Without private repositories everyone sees everything, signed in or not.
        let open = issuer(vec![]);
        assert!(CatalogView::of_visitor(Some(&open), None).lists_all());
        assert!(CatalogView::of_visitor(None, None).lists("team/app"));
    }

    #[test]
    fn the_decision_table() {
        let t = issuer(vec![Rule {
            prefix: "team/".into(),
            users: vec!["alice".into()],
        }]);
        let n = |s: &str| RepoName::parse(s).unwrap();
        let alice = bearer(&t, Some("alice"), "repository:team/app:pull");
        let bob = bearer(&t, Some("bob"), "repository:team/app:pull");
        let anon = bearer(&t, None, "repository:team/app:pull");
        let denied = Access::Denied {
            scope: "repository:team/app:pull".into(),
        };
        let private = Access::Private {
            url_ttl: Duration::from_secs(60),
        };
        let rows: &[(Option<&TokenIssuer>, Option<&str>, &str, Access)] = &[
            (None, None, "team/app", Access::Public),
            (None, Some("Bearer junk"), "team/app", Access::Public),
            (Some(&t), None, "public/app", Access::Public),
            (Some(&t), Some(&bob), "public/app", Access::Public),
            (Some(&t), None, "team/app", denied.clone()),
            (Some(&t), Some("Bearer junk"), "team/app", denied.clone()),
            (Some(&t), Some(&anon), "team/app", denied.clone()),
            (Some(&t), Some(&bob), "team/app", denied.clone()),
            (Some(&t), Some(&alice), "team/app", private.clone()),
            // A grant names one repository.
            (
                Some(&t),
                Some(&alice),
                "team/other",
                Access::Denied {
                    scope: "repository:team/other:pull".into(),
                },
            ),
        ];
        for (i, (auth, authz, repo, want)) in rows.iter().enumerate() {
            assert_eq!(Access::of(*auth, *authz, &n(repo)), *want, "row {i}");
        }
        let ttl = Duration::from_secs(300);
        assert_eq!(private.url_ttl(ttl), Duration::from_secs(60));
        assert_eq!(
            private.url_ttl(Duration::from_secs(10)),
            Duration::from_secs(10)
        );
        assert_eq!(Access::Public.url_ttl(ttl), ttl);

        assert!(may_enter(None, None));
        assert!(may_enter(Some(&issuer(vec![])), None));
        assert!(!may_enter(Some(&t), None));
        assert!(!may_enter(Some(&t), Some("Bearer junk")));
        assert!(may_enter(Some(&t), Some(&anon)));

        let view = CatalogView::of(Some(&t), Some(&alice));
        assert!(view.lists("team/x") && view.lists("public/x") && !view.lists_all());
        let view = CatalogView::of(Some(&t), Some(&anon));
        assert!(!view.lists("team/x") && view.lists("public/x"));
        assert!(CatalogView::of(None, None).lists_all());
    }
}
