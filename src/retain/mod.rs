//! Retention: which tags `static-registry retain` drops (docs/store-care.md, "Retention").
//!
//! This module is the decision alone, pure and table-tested: rules per repository prefix
//! ([`Policy`]), one tag's facts in ([`TagFacts`]), a [`Decision`] with its reason out. Reading
//! the store, the in-use list and untagging are in [`in_use`] and [`run`].
//!
//! Safety comes first in the order of the checks: a tag whose digest is in use (named, or reached
//! through a multi-platform index) is never dropped, nor is an immutable tag, whatever the rules
//! say.

pub mod in_use;
pub mod run;

use std::fmt;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::immutable::Immutable;
use crate::pattern::matches;
use crate::reference::{Digest, RepoName, Tag};

pub use in_use::InUse;
pub use run::{plan, retain, RetainReport, RetainRow};

/// Patterns and prefixes longer than this are refused (they come from a config file or flags).
const MAX_PATTERN_LEN: usize = 256;

/// `[[retention]]` in the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionRule {
    /// Repositories under this prefix (`team/`; empty: every repository). The longest prefix
    /// matching a repository is its rule.
    #[serde(default)]
    pub prefix: String,
    /// Keep the N most recently moved tags (pins aside).
    pub keep_newest: Option<usize>,
    /// Keep tags matching any of these patterns (`v*`, `latest`).
    #[serde(default)]
    pub keep: Vec<String>,
    /// Drop tags last moved longer ago than this (`30d`, `12h`).
    pub drop_older_than: Option<String>,
    /// Pin tags (`pin-*`): kept while their digest is in use, dropped once it is not.
    #[serde(default)]
    pub pins: Vec<String>,
}

/// One rule, checked.
#[derive(Debug, Clone)]
pub struct Rule {
    pub prefix: String,
    pub keep_newest: Option<usize>,
    pub keep: Vec<String>,
    pub older_than: Option<Duration>,
    pub pins: Vec<String>,
}

/// Every rule, and the immutable tags retain must never drop.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    rules: Vec<Rule>,
    immutable: Immutable,
}

fn check_pattern(what: &str, p: &str) -> anyhow::Result<()> {
    if p.is_empty() || p.len() > MAX_PATTERN_LEN || p.chars().any(char::is_control) {
        bail!("{what} {p:?}: a pattern is 1 to {MAX_PATTERN_LEN} printable characters");
    }
    Ok(())
}

impl Policy {
    /// Checks the rules: each must be able to drop something (`keep_newest` or
    /// `drop_older_than`), durations must parse, and no two rules may share a prefix.
    pub fn new(rules: &[RetentionRule], immutable: Immutable) -> anyhow::Result<Self> {
        let mut out = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            let what = format!("retention rule {} (prefix {:?})", i + 1, r.prefix);
            if r.keep_newest.is_none() && r.drop_older_than.is_none() {
                bail!("{what}: say keep_newest or drop_older_than, or it can never drop a tag");
            }
            if r.prefix.len() > MAX_PATTERN_LEN || r.prefix.chars().any(char::is_control) {
                bail!("{what}: the prefix is too long or not printable");
            }
            for p in r.keep.iter().chain(&r.pins) {
                check_pattern(&what, p)?;
            }
            let older_than = r
                .drop_older_than
                .as_deref()
                .map(crate::prune::parse_duration)
                .transpose()
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("{what}: drop_older_than"))?;
            if out.iter().any(|o: &Rule| o.prefix == r.prefix) {
                bail!("{what}: another rule has the same prefix");
            }
            out.push(Rule {
                prefix: r.prefix.clone(),
                keep_newest: r.keep_newest,
                keep: r.keep.clone(),
                older_than,
                pins: r.pins.clone(),
            });
        }
        Ok(Policy {
            rules: out,
            immutable,
        })
    }

    /// Adds pin patterns (`--pin`) to every rule.
    pub fn with_pins(mut self, pins: &[String]) -> anyhow::Result<Self> {
        for p in pins {
            check_pattern("--pin", p)?;
        }
        for r in &mut self.rules {
            r.pins.extend(pins.iter().cloned());
        }
        Ok(self)
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rule for `repo`: the longest prefix it starts with.
    pub fn rule_for(&self, repo: &RepoName) -> Option<&Rule> {
        self.rules
            .iter()
            .filter(|r| repo.as_str().starts_with(&r.prefix))
            .max_by_key(|r| r.prefix.len())
    }
}

/// One tag, as retention sees it.
#[derive(Debug, Clone)]
pub struct TagFacts {
    pub tag: Tag,
    pub digest: Digest,
    /// When the tag last moved (Unix seconds); `None` when nobody knows (treated as oldest).
    pub published: Option<i64>,
    /// Its digest, or a manifest its digest reaches, is in use.
    pub in_use: bool,
}

/// Why a tag stays or goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// No rule's prefix covers the repository.
    NoRule,
    InUse,
    Immutable,
    /// A pin whose digest is in use... is [`Why::InUse`]; this one is a pin kept because no
    /// in-use list was given, so nobody can say it is unused.
    PinUseUnknown,
    /// Matches this `keep` pattern.
    Pattern(String),
    /// Fewer than N tags moved more recently.
    Newest(usize),
    /// Moved more recently than `drop_older_than`.
    Younger(Duration),
    /// Dropped: a pin whose digest is not in the in-use list.
    PinNotInUse,
    /// Dropped: not among the newest N (when the rule says N) and older than D (when it says D).
    Old {
        newest: Option<usize>,
        older_than: Option<Duration>,
    },
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = |d: &Duration| crate::prune::format_duration(*d);
        match self {
            Why::NoRule => write!(f, "no retention rule covers the repository"),
            Why::InUse => write!(f, "in use"),
            Why::Immutable => write!(f, "immutable tag"),
            Why::PinUseUnknown => write!(f, "pin, and no in-use list says it is unused"),
            Why::Pattern(p) => write!(f, "matches {p:?}"),
            Why::Newest(n) => write!(f, "among the {n} newest"),
            Why::Younger(a) => write!(f, "moved within {}", d(a)),
            Why::PinNotInUse => write!(f, "pin whose digest is not in use"),
            Why::Old { newest, older_than } => {
                let mut parts = Vec::new();
                if let Some(n) = newest {
                    parts.push(format!("not among the {n} newest"));
                }
                if let Some(a) = older_than {
                    parts.push(format!("older than {}", d(a)));
                }
                write!(f, "{}", parts.join(", "))
            }
        }
    }
}

/// What becomes of one tag.
#[derive(Debug, Clone)]
pub struct Decision {
    pub facts: TagFacts,
    pub drop: bool,
    pub why: Why,
}

/// Decides every tag of `repo` at time `now` (Unix seconds). `in_use_given`: an in-use list was
/// given (only then can a pin be known to be unused).
pub fn decide(
    policy: &Policy,
    repo: &RepoName,
    tags: &[TagFacts],
    now: i64,
    in_use_given: bool,
) -> Vec<Decision> {
    let rule = policy.rule_for(repo);
    let is_pin = |t: &Tag| rule.is_some_and(|r| r.pins.iter().any(|p| matches(p, t.as_str())));
    // Unknown times rank below every known one.
    let ranked: Vec<Option<i64>> = tags
        .iter()
        .filter(|t| !is_pin(&t.tag))
        .map(|t| t.published)
        .collect();
    tags.iter()
        .map(|t| {
            let keep = |why| Decision {
                facts: t.clone(),
                drop: false,
                why,
            };
            let Some(rule) = rule else {
                return keep(Why::NoRule);
            };
            if t.in_use {
                return keep(Why::InUse);
            }
            if policy.immutable.covers(repo, &t.tag) {
                return keep(Why::Immutable);
            }
            if is_pin(&t.tag) {
                return match in_use_given {
                    false => keep(Why::PinUseUnknown),
                    true => Decision {
                        facts: t.clone(),
                        drop: true,
                        why: Why::PinNotInUse,
                    },
                };
            }
            if let Some(p) = rule.keep.iter().find(|p| matches(p, t.tag.as_str())) {
                return keep(Why::Pattern(p.clone()));
            }
            if let Some(n) = rule.keep_newest {
                // Ties at the boundary are all kept: N is a minimum, never a coin toss.
                let newer = ranked.iter().filter(|p| **p > t.published).count();
                if newer < n {
                    return keep(Why::Newest(n));
                }
            }
            if let Some(d) = rule.older_than {
                let age = t.published.map(|p| now.saturating_sub(p));
                if age.is_some_and(|a| a <= i64::try_from(d.as_secs()).unwrap_or(i64::MAX)) {
                    return keep(Why::Younger(d));
                }
            }
            Decision {
                facts: t.clone(),
                drop: true,
                why: Why::Old {
                    newest: rule.keep_newest,
                    older_than: rule.older_than,
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
