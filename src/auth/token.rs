//! The token endpoint and Bearer-token checks (Docker's registry token specification, HS256).

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::htpasswd::Htpasswd;
use super::{AuthConfig, Policy};

/// One grant in a token: `{"type":"repository","name":"team/app","actions":["pull"]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

/// The JWT claims.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: String,
    exp: u64,
    nbf: u64,
    iat: u64,
    access: Vec<Access>,
}

/// Issues and checks tokens; holds the users, the policy and the signing key.
pub struct TokenIssuer {
    enc: EncodingKey,
    dec: DecodingKey,
    validation: Validation,
    pub ttl: u64,
    pub service: String,
    pub realm: Option<String>,
    pub private_url_ttl: u64,
    pub policy: Policy,
    users: Htpasswd,
    /// Basic logins checked lately (the web UI), by a hash of the header: a page view then does
    /// not pay bcrypt again. A minute, so a removed user loses access within one.
    logins: moka::sync::Cache<[u8; 32], String>,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("service", &self.service)
            .field("users", &self.users)
            .finish_non_exhaustive()
    }
}

const ISSUER: &str = "static-registry";

/// Why a token request failed.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenError {
    BadCredentials,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl TokenIssuer {
    pub fn from_config(cfg: &AuthConfig) -> anyhow::Result<Self> {
        let key = std::fs::read(&cfg.token_key_file).with_context(|| {
            format!(
                "cannot read token key file {}",
                cfg.token_key_file.display()
            )
        })?;
        let key = key.trim_ascii();
        anyhow::ensure!(
            key.len() >= 32,
            "token key in {} is shorter than 32 bytes; generate one with `head -c 48 /dev/urandom | base64`",
            cfg.token_key_file.display()
        );
        Ok(Self::new(key, Htpasswd::load(&cfg.htpasswd)?, cfg))
    }

    pub fn new(key: &[u8], users: Htpasswd, cfg: &AuthConfig) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[&cfg.service]);
        validation.set_issuer(&[ISSUER]);
        // Seconds of clock skew between replicas, for `exp` and `nbf` alike.
        validation.leeway = 5;
        // Off by default in jsonwebtoken: a token not yet valid must be refused too.
        validation.validate_nbf = true;
        TokenIssuer {
            enc: EncodingKey::from_secret(key),
            dec: DecodingKey::from_secret(key),
            validation,
            ttl: cfg.token_ttl,
            service: cfg.service.clone(),
            realm: cfg.realm.clone(),
            private_url_ttl: cfg.private_url_ttl,
            policy: Policy::new(cfg.rules.clone()),
            users,
            logins: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(std::time::Duration::from_secs(60))
                .build(),
        }
    }

    /// Decodes `Authorization: Basic` into (user, password).
    pub fn basic(header: &str) -> Option<(String, String)> {
        let b64 = header
            .strip_prefix("Basic ")
            .or_else(|| header.strip_prefix("basic "))?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .ok()?;
        let s = String::from_utf8(raw).ok()?;
        let (u, p) = s.split_once(':')?;
        Some((u.to_owned(), p.to_owned()))
    }

    /// Issues a token for `scopes` (`repository:NAME:pull`), granting what the policy allows.
    /// `creds` is None for anonymous requests; wrong credentials are refused outright so a
    /// client never proceeds with a token that silently lacks access.
    pub fn issue(
        &self,
        creds: Option<(String, String)>,
        scopes: &[String],
    ) -> Result<serde_json::Value, TokenError> {
        let user = match creds {
            Some((u, p)) if self.users.verify(&u, &p) => Some(u),
            Some(_) => return Err(TokenError::BadCredentials),
            None => None,
        };
        let mut access = Vec::new();
        for scope in scopes.iter().flat_map(|s| s.split(' ')) {
            let mut parts = scope.splitn(3, ':');
            let (Some("repository"), Some(name), Some(actions)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if actions.split(',').any(|a| a == "pull" || a == "*")
                && self.policy.may_pull(user.as_deref(), name)
            {
                access.push(Access {
                    kind: "repository".into(),
                    name: name.to_owned(),
                    actions: vec!["pull".into()],
                });
            }
        }
        let iat = now();
        let claims = Claims {
            iss: ISSUER.into(),
            sub: user.clone().unwrap_or_default(),
            aud: self.service.clone(),
            exp: iat + self.ttl,
            nbf: iat.saturating_sub(1),
            iat,
            access,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.enc)
            .expect("HS256 encoding cannot fail");
        let issued_at = httpdate_rfc3339(iat);
        Ok(serde_json::json!({
            "token": token,
            "access_token": token,
            "expires_in": self.ttl,
            "issued_at": issued_at,
        }))
    }

    /// The user of a valid token (empty for anonymous) and its grants; None if invalid/expired.
    pub fn verify(&self, bearer: &str) -> Option<(String, Vec<Access>)> {
        let data = jsonwebtoken::decode::<Claims>(bearer, &self.dec, &self.validation).ok()?;
        Some((data.claims.sub, data.claims.access))
    }

    /// Whether a request's `Authorization` header grants pull on `name`.
    pub fn allows(&self, authorization: Option<&str>, name: &str) -> bool {
        let Some(token) = authorization.and_then(|h| h.strip_prefix("Bearer ")) else {
            return false;
        };
        self.verify(token.trim()).is_some_and(|(_, access)| {
            access.iter().any(|a| {
                a.kind == "repository" && a.name == name && a.actions.iter().any(|x| x == "pull")
            })
        })
    }

    /// A copy of the policy, for filters that outlive the request borrow.
    pub fn clone_policy(&self) -> Policy {
        self.policy.clone()
    }

    /// The user a request is signed in as, for the web UI: a valid token's user, or HTTP Basic
    /// credentials that the htpasswd accepts. `None` for anonymous or wrong credentials.
    pub fn viewer(&self, authorization: Option<&str>) -> Option<String> {
        let header = authorization?;
        if let Some(token) = header.strip_prefix("Bearer ") {
            return self
                .verify(token.trim())
                .map(|(u, _)| u)
                .filter(|u| !u.is_empty());
        }
        let key: [u8; 32] = {
            use sha2::Digest as _;
            sha2::Sha256::digest(header.as_bytes()).into()
        };
        if let Some(user) = self.logins.get(&key) {
            return Some(user);
        }
        let (user, password) = Self::basic(header)?;
        if !self.users.verify(&user, &password) {
            return None;
        }
        self.logins.insert(key, user.clone());
        Some(user)
    }

    /// Whether the header carries any valid token (for `/v2/`).
    pub fn authenticated(&self, authorization: Option<&str>) -> bool {
        authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .is_some_and(|t| self.verify(t.trim()).is_some())
    }
}

/// RFC 3339 UTC timestamp for `issued_at`.
fn httpdate_rfc3339(secs: u64) -> String {
    jiff::Timestamp::from_second(i64::try_from(secs).unwrap_or(i64::MAX))
        .unwrap_or(jiff::Timestamp::MAX)
        .to_string()
}

/// A token issuer for tests: the given rules, each user with the password `pw` (bcrypt cost 4).
#[cfg(test)]
pub(crate) fn test_issuer(rules: Vec<crate::auth::Rule>, users: &[&str]) -> TokenIssuer {
    let hash = bcrypt::hash("pw", 4).unwrap();
    let cfg = AuthConfig {
        htpasswd: "unused".into(),
        token_key_file: "unused".into(),
        token_ttl: 300,
        service: "svc".into(),
        realm: None,
        private_url_ttl: 60,
        rules,
    };
    let file: String = users.iter().map(|u| format!("{u}:{hash}\n")).collect();
    TokenIssuer::new(
        &[7u8; 32],
        crate::auth::htpasswd::Htpasswd::parse(&file).unwrap(),
        &cfg,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Rule;

    fn issuer() -> TokenIssuer {
        test_issuer(
            vec![Rule {
                prefix: "private/".into(),
                users: vec!["alice".into()],
            }],
            &["alice", "bob"],
        )
    }

    fn token_of(v: &serde_json::Value) -> String {
        v["token"].as_str().unwrap().to_owned()
    }

    #[test]
    fn grants_follow_policy() {
        let t = issuer();
        let scope = vec!["repository:private/app:pull".to_string()];
        let alice = t
            .issue(Some(("alice".into(), "pw".into())), &scope)
            .unwrap();
        let h = format!("Bearer {}", token_of(&alice));
        assert!(t.allows(Some(&h), "private/app"));
        assert!(!t.allows(Some(&h), "private/other"));
        let bob = t.issue(Some(("bob".into(), "pw".into())), &scope).unwrap();
        assert!(!t.allows(Some(&format!("Bearer {}", token_of(&bob))), "private/app"));
        let anon = t.issue(None, &scope).unwrap();
        assert!(!t.allows(Some(&format!("Bearer {}", token_of(&anon))), "private/app"));
        assert!(t.authenticated(Some(&format!("Bearer {}", token_of(&anon)))));
        assert_eq!(
            t.issue(Some(("alice".into(), "nope".into())), &scope)
                .unwrap_err(),
            TokenError::BadCredentials
        );
    }

    #[test]
    fn tampered_or_foreign_tokens_fail() {
        let t = issuer();
        let scope = vec!["repository:private/app:pull".to_string()];
        let tok = token_of(
            &t.issue(Some(("alice".into(), "pw".into())), &scope)
                .unwrap(),
        );
        let mut bad = tok.clone();
        let last = bad.pop().unwrap();
        bad.push(if last == 'A' { 'B' } else { 'A' });
        assert!(!t.allows(Some(&format!("Bearer {bad}")), "private/app"));
        let other = TokenIssuer::new(
            &[8u8; 32],
            Htpasswd::default(),
            &AuthConfig {
                htpasswd: "x".into(),
                token_key_file: "x".into(),
                token_ttl: 300,
                service: "svc".into(),
                realm: None,
                private_url_ttl: 60,
                rules: vec![],
            },
        );
        assert!(!other.allows(Some(&format!("Bearer {tok}")), "private/app"));
    }

    #[test]
    fn token_not_yet_valid_is_refused() {
        let t = issuer();
        let sign = |nbf: u64| {
            let iat = now();
            let claims = Claims {
                iss: ISSUER.into(),
                sub: "alice".into(),
                aud: "svc".into(),
                exp: iat + 7200,
                nbf,
                iat,
                access: vec![Access {
                    kind: "repository".into(),
                    name: "private/app".into(),
                    actions: vec!["pull".into()],
                }],
            };
            let tok =
                jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &t.enc).unwrap();
            format!("Bearer {tok}")
        };
        assert!(t.allows(Some(&sign(now() - 1)), "private/app"));
        // Within the clock-skew leeway: accepted.
        assert!(t.allows(Some(&sign(now() + 2)), "private/app"));
        assert!(!t.allows(Some(&sign(now() + 3600)), "private/app"));
        assert!(!t.authenticated(Some(&sign(now() + 60))));
    }

    #[test]
    fn basic_and_dates() {
        let h = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("u:p:x")
        );
        assert_eq!(TokenIssuer::basic(&h), Some(("u".into(), "p:x".into())));
        assert_eq!(httpdate_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(httpdate_rfc3339(1_795_351_796), "2026-11-22T12:49:56Z");
    }
}
