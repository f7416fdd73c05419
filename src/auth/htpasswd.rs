//! Users from an htpasswd file. Only bcrypt entries (`$2y$`, `$2b$`, `$2a$`) are accepted: the
//! older schemes (MD5-crypt, SHA-1, plain) are too weak to protect private images.
//!
//! Only the `user:hash` lines are parsed here; hashing is the `bcrypt` crate's. A crate for the
//! whole file (`htpasswd-verify`) would bring back the weak schemes refused above; speed is not
//! a reason either way, since one bcrypt check (cost 10: tens of ms) dwarfs the parsing.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use anyhow::Context;

/// Hashes below this bcrypt cost draw a startup warning (`htpasswd -B` defaults to 5).
pub const MIN_RECOMMENDED_COST: u32 = 10;

/// The dummy's cost when the file has no users (nobody to tell apart then).
const EMPTY_FILE_COST: u32 = MIN_RECOMMENDED_COST;

/// Username → bcrypt hash.
#[derive(Clone)]
pub struct Htpasswd {
    users: HashMap<String, String>,
    /// Verified for unknown users: made at load with the highest cost among the users' hashes, so
    /// an unknown user costs at least as much bcrypt work as any known one (no user enumeration
    /// by timing).
    dummy: String,
}

impl Default for Htpasswd {
    fn default() -> Self {
        Self::from_users(HashMap::new())
    }
}

impl std::fmt::Debug for Htpasswd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Htpasswd")
            .field("users", &self.users.len())
            .finish()
    }
}

/// The cost parameter of a bcrypt hash (None: not a well-formed bcrypt hash).
pub fn bcrypt_cost(hash: &str) -> Option<u32> {
    bcrypt::HashParts::from_str(hash).ok().map(|p| p.get_cost())
}

impl Htpasswd {
    /// Reads the file and warns (in the log) about every hash below [`MIN_RECOMMENDED_COST`].
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read htpasswd file {}", path.display()))?;
        let h = Self::parse(&text).with_context(|| format!("in {}", path.display()))?;
        for (user, cost) in h.weak_users() {
            tracing::warn!(
                file = %path.display(),
                user,
                cost,
                min_cost = MIN_RECOMMENDED_COST,
                "htpasswd entry has a cheap bcrypt hash; recreate it with `htpasswd -B -C 10`"
            );
        }
        Ok(h)
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
                "line {}: user {user:?} does not have a bcrypt hash (create entries with `htpasswd -B -C 10`)",
                n + 1
            );
            // A malformed hash could never match, and failing fast on it would tell the user
            // exists: refuse it here.
            anyhow::ensure!(
                bcrypt_cost(hash).is_some_and(|c| (4..=31).contains(&c)),
                "line {}: user {user:?} has a malformed bcrypt hash",
                n + 1
            );
            users.insert(user.to_owned(), hash.to_owned());
        }
        Ok(Self::from_users(users))
    }

    fn from_users(users: HashMap<String, String>) -> Self {
        let cost = users
            .values()
            .filter_map(|h| bcrypt_cost(h))
            .max()
            .unwrap_or(EMPTY_FILE_COST);
        // The password is irrelevant: an unknown user is refused whatever the dummy says.
        let dummy = bcrypt::hash("static-registry dummy", cost).expect("cost checked at parse");
        Htpasswd { users, dummy }
    }

    /// Users whose hash costs less than [`MIN_RECOMMENDED_COST`], with that cost, sorted by name.
    pub fn weak_users(&self) -> Vec<(&str, u32)> {
        let mut weak: Vec<(&str, u32)> = self
            .users
            .iter()
            .filter_map(|(u, h)| Some((u.as_str(), bcrypt_cost(h)?)))
            .filter(|&(_, c)| c < MIN_RECOMMENDED_COST)
            .collect();
        weak.sort_unstable();
        weak
    }

    /// The bcrypt cost an unknown user's check pays.
    pub fn dummy_cost(&self) -> u32 {
        bcrypt_cost(&self.dummy).expect("the dummy is a bcrypt hash")
    }

    /// Checks a password; unknown users cost as much as known ones (no user enumeration by timing).
    pub fn verify(&self, user: &str, password: &str) -> bool {
        match self.users.get(user) {
            Some(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            None => {
                let _ = bcrypt::verify(password, &self.dummy);
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

    /// An unknown user must pay the bcrypt cost of the loaded hashes: a cheaper dummy lets a
    /// client tell known users from unknown ones by timing.
    #[test]
    fn dummy_costs_what_the_loaded_hashes_cost() {
        let (c4, c6) = (bcrypt::hash("a", 4).unwrap(), bcrypt::hash("b", 6).unwrap());
        let h = Htpasswd::parse(&format!("alice:{c4}\nbob:{c6}\n")).unwrap();
        assert_eq!(h.dummy_cost(), 6, "the highest cost among the users");
        let h = Htpasswd::parse(&format!("alice:{c4}\n")).unwrap();
        assert_eq!(h.dummy_cost(), 4);
        assert!(!h.verify("nobody", "a"));
        assert_eq!(Htpasswd::default().dummy_cost(), MIN_RECOMMENDED_COST);
    }

    #[test]
    fn cheap_and_malformed_hashes() {
        let (c4, c10) = (
            bcrypt::hash("a", 4).unwrap(),
            bcrypt::hash("b", 10).unwrap(),
        );
        let h = Htpasswd::parse(&format!("zed:{c4}\nalice:{c4}\nbob:{c10}\n")).unwrap();
        assert_eq!(h.weak_users(), vec![("alice", 4), ("zed", 4)]);
        // Truncated, or a cost bcrypt refuses: an entry that could never log in.
        let truncated = &c10[..50];
        assert!(Htpasswd::parse(&format!("bob:{truncated}")).is_err());
        let huge = format!("$2b$99${}", &c10[7..]);
        assert!(Htpasswd::parse(&format!("bob:{huge}")).is_err());
    }
}
