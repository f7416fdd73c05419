//! Private repositories: Docker's token flow, stateless.
//!
//! Repositories are public unless a rule's prefix matches them. For private ones, clients fetch a
//! short-lived JWT from the built-in `/token` endpoint (users checked against an htpasswd file,
//! bcrypt) and present it as a Bearer token. Tokens are HMAC-signed with a key from the config, so
//! any replica verifies any replica's tokens without shared state.

pub mod access;
pub mod htpasswd;
pub mod token;

use std::path::PathBuf;

use serde::Deserialize;

use crate::reference::RepoName;

pub use access::Access;
pub use token::TokenIssuer;

/// `[auth]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// An htpasswd file with bcrypt hashes (`htpasswd -B -C 10`).
    pub htpasswd: PathBuf,
    /// A file holding the token-signing secret (≥ 32 bytes), shared by all replicas.
    pub token_key_file: PathBuf,
    /// Token lifetime, seconds.
    #[serde(default = "default_token_ttl")]
    pub token_ttl: u64,
    /// The `service` in challenges and the token audience.
    #[serde(default = "default_service")]
    pub service: String,
    /// The token endpoint URL announced in challenges; default: this endpoint's `/token`, using
    /// the request's (or the trusted proxy's) scheme and host.
    pub realm: Option<String>,
    /// Lifetime of signed URLs for private content, seconds (shorter than for public content).
    #[serde(default = "default_private_url_ttl")]
    pub private_url_ttl: u64,
    /// Private prefixes and who may pull them.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

fn default_token_ttl() -> u64 {
    300
}
fn default_service() -> String {
    "static-registry".into()
}
fn default_private_url_ttl() -> u64 {
    60
}

/// Repositories whose name starts with `prefix` are private; `users` may pull them (`*`: any
/// authenticated user).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub prefix: String,
    pub users: Vec<String>,
}

/// The rule set: which repositories are private and who may pull them.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Longest prefix first.
    rules: Vec<Rule>,
}

impl Policy {
    pub fn new(mut rules: Vec<Rule>) -> Self {
        rules.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Policy { rules }
    }

    pub fn has_private(&self) -> bool {
        !self.rules.is_empty()
    }

    fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| name.starts_with(&r.prefix))
    }

    pub fn is_private(&self, name: &RepoName) -> bool {
        self.rule(name.as_str()).is_some()
    }

    /// Whether `user` (None: anonymous) may pull `name`.
    pub fn may_pull(&self, user: Option<&str>, name: &str) -> bool {
        match self.rule(name) {
            None => true,
            Some(rule) => user.is_some_and(|u| rule.users.iter().any(|x| x == "*" || x == u)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_rule_decides() {
        let p = Policy::new(vec![
            Rule {
                prefix: "team/".into(),
                users: vec!["alice".into()],
            },
            Rule {
                prefix: "team/shared".into(),
                users: vec!["*".into()],
            },
        ]);
        assert!(p.may_pull(None, "public/app"));
        assert!(!p.may_pull(None, "team/app"));
        assert!(p.may_pull(Some("alice"), "team/app"));
        assert!(!p.may_pull(Some("bob"), "team/app"));
        assert!(p.may_pull(Some("bob"), "team/shared/x"));
        assert!(!p.may_pull(None, "team/shared/x"));
    }
}
