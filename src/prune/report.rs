//! What `prune` reports: each object it deletes, the totals, and how a grace period is written.

use std::fmt;
use std::time::Duration;

use crate::layout::{self, KeyKind};

/// One object prune deletes (or would delete).
#[derive(Debug, Clone)]
pub struct Victim {
    pub key: String,
    pub size: u64,
    /// Time since `last_modified`, when the store reports it.
    pub age: Option<Duration>,
}

/// What a prune did (or, with `--dry-run`, would do).
#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    pub dry_run: bool,
    pub grace: Duration,
    /// Unreferenced manifests and blobs old enough to go.
    pub deleted: Vec<Victim>,
    /// Stale `.staging/` files of crashed publishes (local stores).
    pub staging: Vec<Victim>,
    /// Derived files of repositories that no longer have an index.
    pub leftovers: Vec<Victim>,
    /// Derived files rewritten or removed because they lagged the index.
    pub repaired: Vec<String>,
    /// Unreferenced content kept because it is younger than the grace period.
    pub kept_young: usize,
    pub kept_young_bytes: u64,
    /// Content some index references.
    pub referenced: usize,
    pub repositories: usize,
    /// Candidates that became referenced while deleting (a publish committed meanwhile).
    pub rescued: usize,
    /// Things worth knowing (unparseable manifests, odd keys).
    pub notes: Vec<String>,
}

impl PruneReport {
    pub fn bytes_freed(&self) -> u64 {
        self.deleted
            .iter()
            .chain(&self.staging)
            .chain(&self.leftovers)
            .map(|v| v.size)
            .sum()
    }
}

fn human_age(age: Option<Duration>) -> String {
    match age {
        None => "age unknown".into(),
        Some(a) => {
            let s = a.as_secs();
            if s >= 2 * 86400 {
                format!("{}d old", s / 86400)
            } else if s >= 7200 {
                format!("{}h old", s / 3600)
            } else if s >= 120 {
                format!("{}m old", s / 60)
            } else {
                format!("{s}s old")
            }
        }
    }
}

impl fmt::Display for PruneReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use indicatif::HumanBytes;
        let verb = if self.dry_run {
            "would delete"
        } else {
            "deleted"
        };
        for v in self.deleted.iter().chain(&self.leftovers) {
            writeln!(
                f,
                "{verb} {} ({}, {})",
                v.key,
                HumanBytes(v.size),
                human_age(v.age)
            )?;
        }
        for v in &self.staging {
            writeln!(
                f,
                "{verb} stale staging file {} ({}, {})",
                v.key,
                HumanBytes(v.size),
                human_age(v.age)
            )?;
        }
        for r in &self.repaired {
            let verb = if self.dry_run {
                "would repair"
            } else {
                "repaired"
            };
            writeln!(f, "{verb} {r}")?;
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        let manifests = self
            .deleted
            .iter()
            .filter(|v| matches!(layout::parse(&v.key), Some(KeyKind::Manifest(_))))
            .count();
        write!(
            f,
            "{}{verb} {manifests} manifest(s) and {} blob(s) no repository references, {} \
             leftover file(s) and {} staging file(s): {} freed; kept {} referenced object(s) \
             in {} repositories and {} unreferenced one(s) ({}) younger than the grace period \
             ({}s)",
            if self.dry_run { "dry run: " } else { "" },
            self.deleted.len() - manifests,
            self.leftovers.len(),
            self.staging.len(),
            HumanBytes(self.bytes_freed()),
            self.referenced,
            self.repositories,
            self.kept_young,
            HumanBytes(self.kept_young_bytes),
            self.grace.as_secs(),
        )?;
        if self.rescued > 0 {
            write!(
                f,
                "; {} became referenced while pruning and were kept",
                self.rescued
            )?;
        }
        Ok(())
    }
}

/// Writes a duration as [`parse_duration`] reads it, in the largest whole unit (`30d`, `90m`).
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    match [(86400, "d"), (3600, "h"), (60, "m")]
        .into_iter()
        .find(|(unit, _)| s > 0 && s.is_multiple_of(*unit))
    {
        Some((unit, name)) => format!("{}{name}", s / unit),
        None => format!("{s}s"),
    }
}

/// Parses a grace period: `24h`, `30m`, `90s`, `7d`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: use e.g. 24h, 30m, 90s or 7d"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("invalid duration unit in {s:?}: use s, m, h or d")),
    };
    n.checked_mul(mult)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("duration {s:?} is too long"))
}

// ---------------------------------------------------------------------------------------------
// Manifests, as far as reachability cares
// ---------------------------------------------------------------------------------------------
