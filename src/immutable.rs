//! Immutable tags (`[[immutable]]`): tags that, once set, only ever name one digest. `publish` and
//! `tag` ask [`Immutable::check`] inside the compare-and-swap that would move the tag, so no race
//! can move one either. Publishing the same digest again stays a no-op.

use serde::Deserialize;

use crate::reference::{Digest, RepoName, Tag};

/// `[[immutable]]` in the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImmutableRule {
    /// Repositories under this prefix (`releases/`; empty: every repository).
    #[serde(default)]
    pub prefix: String,
    /// Tags matching any of these patterns (`v*`, `latest`; `*` within a component). Empty: every
    /// tag.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// Every rule.
#[derive(Debug, Clone, Default)]
pub struct Immutable {
    rules: Vec<ImmutableRule>,
}

impl Immutable {
    pub fn new(rules: &[ImmutableRule]) -> Self {
        Immutable {
            rules: rules.to_vec(),
        }
    }

    /// Whether `repo:tag` may never move.
    pub fn covers(&self, repo: &RepoName, tag: &Tag) -> bool {
        self.rules.iter().any(|r| {
            repo.as_str().starts_with(&r.prefix)
                && (r.tags.is_empty()
                    || r.tags
                        .iter()
                        .any(|p| crate::pattern::matches(p, tag.as_str())))
        })
    }

    /// Refuses to move an immutable `repo:tag` from `current` to `new`, naming both digests.
    pub fn check(
        &self,
        repo: &RepoName,
        tag: &Tag,
        current: Option<&Digest>,
        new: &Digest,
    ) -> anyhow::Result<()> {
        match current {
            Some(c) if c != new && self.covers(repo, tag) => anyhow::bail!(
                "{repo}:{tag} is an immutable tag (config [[immutable]]): it points at {c} and cannot move to {new}; publish under a new tag"
            ),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_by_prefix_and_pattern() {
        let i = Immutable::new(&[
            ImmutableRule {
                prefix: "releases/".into(),
                tags: vec!["v*".into()],
            },
            ImmutableRule {
                prefix: "frozen/".into(),
                tags: vec![],
            },
        ]);
        let n = |s: &str| RepoName::parse(s).unwrap();
        let t = |s: &str| Tag::parse(s).unwrap();
        let (a, b) = (Digest::sha256_of(b"a"), Digest::sha256_of(b"b"));
        assert!(i.covers(&n("releases/app"), &t("v1.2")));
        assert!(!i.covers(&n("releases/app"), &t("latest")));
        assert!(!i.covers(&n("dev/app"), &t("v1")));
        assert!(i.covers(&n("frozen/x"), &t("anything")));
        let e = i
            .check(&n("releases/app"), &t("v1"), Some(&a), &b)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("releases/app:v1") && e.contains(a.as_str()) && e.contains(b.as_str()),
            "{e}"
        );
        // The same digest again, a new tag, or a mutable tag: allowed.
        i.check(&n("releases/app"), &t("v1"), Some(&a), &a).unwrap();
        i.check(&n("releases/app"), &t("v1"), None, &a).unwrap();
        i.check(&n("releases/app"), &t("latest"), Some(&a), &b)
            .unwrap();
    }
}
