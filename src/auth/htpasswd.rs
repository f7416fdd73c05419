//! Users from an htpasswd file. Only bcrypt entries (`$2y$`, `$2b$`, `$2a$`) are accepted: the
//! older schemes (MD5-crypt, SHA-1, plain) are too weak to protect private images.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;

/// Username → bcrypt hash.
#[derive(Clone, Default)]
pub struct Htpasswd {
    users: HashMap<String, String>,
}

impl std::fmt::Debug for Htpasswd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Htpasswd")
            .field("users", &self.users.len())
            .finish()
    }
}

impl Htpasswd {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read htpasswd file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut users = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .with_context(|| format!("line {}: expected user:hash", n + 1))?;
            anyhow::ensure!(
                ["$2y$", "$2b$", "$2a$"].iter().any(|p| hash.starts_with(p)),
                "line {}: user {user:?} does not have a bcrypt hash (create entries with `htpasswd -B`)",
                n + 1
            );
            users.insert(user.to_owned(), hash.to_owned());
        }
        Ok(Htpasswd { users })
    }

    /// Checks a password; unknown users cost as much as known ones (no user enumeration by timing).
    pub fn verify(&self, user: &str, password: &str) -> bool {
        const DUMMY: &str = "$2b$10$Z5JkqVqQe2jvW4JY9Q9o5e0Qw8dM0QH6QkqjKpQf6S7Q6Q1y3m2uG";
        match self.users.get(user) {
            Some(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            None => {
                let _ = bcrypt::verify(password, DUMMY);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcrypt_only() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let h = Htpasswd::parse(&format!("# users\nalice:{hash}\n")).unwrap();
        assert!(h.verify("alice", "s3cret"));
        assert!(!h.verify("alice", "wrong"));
        assert!(!h.verify("bob", "s3cret"));
        assert!(Htpasswd::parse("bob:$apr1$abc$def").is_err());
        assert!(Htpasswd::parse("nocolon").is_err());
        assert!(!format!("{h:?}").contains(&hash));
    }
}
