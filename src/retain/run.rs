//! `retain`, the I/O around [`super::decide`]: read every index with prune's reachability, say
//! which tags are in use (through the one manifest walk, so a platform image in use keeps the
//! multi-platform index above it), decide, and either report (`--dry-run`, with what a prune
//! would then free) or untag through untag's compare-and-swap. The dry run and the real run are
//! the same [`plan`]; the real run only carries it out.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::SystemTime;

use serde::Serialize;

use super::{decide, Decision, InUse, Policy, TagFacts};
use crate::layout;
use crate::prune::{untag_expecting, Reachability};
use crate::reference::{Digest, RepoName, Tag};
use crate::store::Store;
use crate::walk::WalkLimits;

/// One tag in the report.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RetainRow {
    pub repository: RepoName,
    pub tag: Tag,
    pub digest: Digest,
    /// When the tag last moved (Unix seconds), if known.
    pub published_at: Option<i64>,
    pub age_seconds: Option<i64>,
    pub why: String,
}

/// What `retain` did, or with `--dry-run` would do.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetainReport {
    pub dry_run: bool,
    /// Tags dropped (or that would be).
    pub dropped: Vec<RetainRow>,
    /// Tags kept by a rule's decision (repositories no rule covers are left out).
    pub kept: Vec<RetainRow>,
    /// Tags that moved or went between the decision and the untag, left alone.
    pub skipped: Vec<String>,
    /// What the dropped tags alone kept referenced: what the next `prune` deletes once it is
    /// older than prune's grace period.
    pub unreferenced_manifests: usize,
    pub unreferenced_blobs: usize,
    pub unreferenced_bytes: u64,
    pub notes: Vec<String>,
}

fn row(repo: &RepoName, d: &Decision, now: i64) -> RetainRow {
    RetainRow {
        repository: repo.clone(),
        tag: d.facts.tag.clone(),
        digest: d.facts.digest.clone(),
        published_at: d.facts.published,
        age_seconds: d.facts.published.map(|p| now.saturating_sub(p)),
        why: d.why.to_string(),
    }
}

/// When a tag last moved: its history, else (a tag from before history) when its manifest was
/// written, else unknown.
async fn published(
    store: &dyn Store,
    idx: &crate::index::RepoIndex,
    tag: &Tag,
) -> anyhow::Result<Option<i64>> {
    let at = idx.published_at(tag);
    if at > 0 {
        return Ok(Some(at));
    }
    let meta = store.head(&layout::manifest(&idx.tags[tag].digest)).await?;
    Ok(meta
        .and_then(|m| m.last_modified)
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_secs()).ok()))
}

/// Decides every tag of every repository a rule covers, and what the drops would leave
/// unreferenced; changes nothing.
pub async fn plan(
    store: &dyn Store,
    policy: &Policy,
    in_use: Option<&InUse>,
    limits: WalkLimits,
) -> anyhow::Result<RetainReport> {
    let now = jiff::Timestamp::now().as_second();
    let reach = Reachability::read(store, limits).await?;
    let mut report = RetainReport {
        dry_run: true,
        notes: reach.notes().to_vec(),
        ..Default::default()
    };
    let (used, unknown) = match in_use {
        Some(list) => list.digests(reach.indexes()),
        None => (HashSet::new(), Vec::new()),
    };
    report.notes.extend(unknown);
    let mut drops: BTreeMap<RepoName, Vec<Tag>> = BTreeMap::new();
    for idx in reach.indexes() {
        if policy.rule_for(&idx.name).is_none() {
            continue;
        }
        let mut facts = Vec::new();
        for (tag, desc) in &idx.tags {
            let reaches = reach.descendants(&desc.digest)?;
            facts.push(TagFacts {
                tag: tag.clone(),
                digest: desc.digest.clone(),
                published: published(store, idx, tag).await?,
                in_use: used.contains(&desc.digest) || reaches.iter().any(|d| used.contains(d)),
            });
        }
        for d in decide(policy, &idx.name, &facts, now, in_use.is_some()) {
            if d.drop {
                drops
                    .entry(idx.name.clone())
                    .or_default()
                    .push(d.facts.tag.clone());
                report.dropped.push(row(&idx.name, &d, now));
            } else {
                report.kept.push(row(&idx.name, &d, now));
            }
        }
    }
    let gone = reach.without(store, &drops).await?;
    report.unreferenced_manifests = gone.manifests;
    report.unreferenced_blobs = gone.blobs;
    report.unreferenced_bytes = gone.bytes;
    Ok(report)
}

/// [`plan`], then (unless `dry_run`) untags what it dropped, each tag only if it still points
/// where it did when decided. Content is left to `prune`.
pub async fn retain(
    store: &dyn Store,
    policy: &Policy,
    in_use: Option<&InUse>,
    dry_run: bool,
    limits: WalkLimits,
) -> anyhow::Result<RetainReport> {
    let mut report = plan(store, policy, in_use, limits).await?;
    if dry_run {
        return Ok(report);
    }
    report.dry_run = false;
    let mut by_repo: BTreeMap<RepoName, BTreeMap<Tag, Digest>> = BTreeMap::new();
    for r in &report.dropped {
        by_repo
            .entry(r.repository.clone())
            .or_default()
            .insert(r.tag.clone(), r.digest.clone());
    }
    for (name, expected) in by_repo {
        let u = untag_expecting(store, &name, &expected, limits).await?;
        for t in &u.skipped {
            report
                .skipped
                .push(format!("{name}:{t} moved or went since the decision; kept"));
        }
        report
            .dropped
            .retain(|r| r.repository != name || !u.skipped.contains(&r.tag));
    }
    Ok(report)
}

impl fmt::Display for RetainReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.dry_run {
            "would drop"
        } else {
            "dropped"
        };
        // Rounded to the unit that matters at that age.
        let age = |r: &RetainRow| match r.age_seconds.and_then(|s| u64::try_from(s).ok()) {
            Some(s) => {
                let unit = [172_800, 7200, 120]
                    .into_iter()
                    .zip([86400, 3600, 60])
                    .find(|(from, _)| s >= *from)
                    .map_or(1, |(_, u)| u);
                let d = std::time::Duration::from_secs(s / unit * unit);
                format!("{} old", crate::prune::format_duration(d))
            }
            None => "age unknown".to_owned(),
        };
        for r in &self.dropped {
            writeln!(
                f,
                "{verb} {}:{}  {}  {}: {}",
                r.repository,
                r.tag,
                r.digest,
                age(r),
                r.why
            )?;
        }
        for s in &self.skipped {
            writeln!(f, "{s}")?;
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        let repos: HashSet<&RepoName> = self.dropped.iter().map(|r| &r.repository).collect();
        write!(
            f,
            "{}{verb} {} tag(s) in {} repositories, kept {}; {} manifest(s) and {} blob(s) ({}) \
             {} unreferenced: `prune` deletes them once older than its grace period",
            if self.dry_run { "dry run: " } else { "" },
            self.dropped.len(),
            repos.len(),
            self.kept.len(),
            self.unreferenced_manifests,
            self.unreferenced_blobs,
            indicatif::HumanBytes(self.unreferenced_bytes),
            if self.dry_run {
                "would become"
            } else {
                "became"
            },
        )
    }
}
