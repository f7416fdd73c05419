//! `untag` and `delete-repository`: changing what repositories reference, safely.
//!
//! Both change indexes only through [`update_index`] (compare-and-swap) and the catalog through
//! its own compare-and-swap, and order their writes so that a crash at any point leaves derived
//! files lagging (a `verify` warning), never a reference to missing content.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use anyhow::{bail, Context};

use crate::commit::{add_to_catalog, remove_from_catalog, update_index, write_derived};
use crate::index::RepoIndex;
use crate::layout;
use crate::reference::{Digest, RepoName, Tag};
use crate::store::Store;
use crate::walk::{self, WalkLimits};

use super::{fetch_all, Fetched, Refs};

/// What an untag did.
#[derive(Debug, Clone, Default)]
pub struct UntagReport {
    pub lines: Vec<String>,
    /// The tags removed, with the digest each pointed at.
    pub removed: Vec<(Tag, Digest)>,
    /// Tags asked for that moved or went meanwhile ([`untag_expecting`]), left alone.
    pub skipped: Vec<Tag>,
}

impl fmt::Display for UntagReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.lines.join("\n"))
    }
}

/// Why a repository's content set could not be recomputed in one pass.
pub(super) enum GcBlocked {
    /// A reachable manifest not fetched yet (a concurrent publish added it): fetch and retry.
    Unfetched(Vec<Digest>),
    /// A reachable manifest the store does not have (or that does not parse).
    Unknown(Digest, String),
    /// The walk refused the graph (over `--max-manifests`).
    Refused(anyhow::Error),
}

/// The manifests and blobs `idx` reaches from its tags, and from the referrers of what it
/// reaches (an artifact is kept while its subject is): the one walk over the manifests fetched
/// so far, again from the new roots while referrers add some.
fn closure(
    idx: &RepoIndex,
    fetched: &HashMap<Digest, Fetched>,
    limits: WalkLimits,
) -> Result<(BTreeSet<Digest>, BTreeSet<Digest>), GcBlocked> {
    let mut roots: BTreeSet<Digest> = idx.tags.values().map(|d| d.digest.clone()).collect();
    loop {
        let mut unfetched = Vec::new();
        let mut unknown = None;
        let walked = walk::walk_sync(
            roots.iter().cloned(),
            limits,
            "the remaining tags",
            |d: &Digest| {
                Ok(match fetched.get(d) {
                    Some(Fetched::Known(r)) => Some(r),
                    Some(Fetched::Unknown(why)) => {
                        unknown.get_or_insert_with(|| (d.clone(), why.clone()));
                        None
                    }
                    None => {
                        unfetched.push(d.clone());
                        None
                    }
                })
            },
            |r: &Option<&Refs>| r.map(|r| r.children.clone()).unwrap_or_default(),
        )
        .map_err(GcBlocked::Refused)?;
        if let Some((d, why)) = unknown {
            return Err(GcBlocked::Unknown(d, why));
        }
        if !unfetched.is_empty() {
            return Err(GcBlocked::Unfetched(unfetched));
        }
        let manifests: BTreeSet<Digest> =
            walked.visits.iter().map(|v| v.reference.clone()).collect();
        let more: Vec<Digest> = idx
            .referrers
            .iter()
            .filter(|(subject, _)| manifests.contains(*subject))
            .flat_map(|(_, artifacts)| artifacts.iter().map(|a| a.digest.clone()))
            .filter(|a| !manifests.contains(a))
            .collect();
        if more.is_empty() {
            let blobs = walked
                .visits
                .iter()
                .flat_map(|v| v.value.iter().flat_map(|r| r.blobs.iter().cloned()))
                .collect();
            return Ok((manifests, blobs));
        }
        roots.extend(more);
    }
}

/// Removes `tags` from `idx`, then drops every manifest and blob no remaining tag (or referrer of
/// a kept manifest) reaches: untag's one change, also applied hypothetically by `retain
/// --dry-run`. Returns how many manifests and blobs left the index; when the closure cannot be
/// computed only the tags go, every manifest and blob stays (only conservative).
pub(super) fn drop_tags(
    idx: &mut RepoIndex,
    tags: &[Tag],
    fetched: &HashMap<Digest, Fetched>,
    limits: WalkLimits,
) -> Result<(usize, usize), GcBlocked> {
    for t in tags {
        idx.tags.remove(t);
        idx.mirrored.remove(t);
        idx.history.remove(t);
    }
    let (m, b) = closure(idx, fetched, limits)?;
    let (m0, b0) = (idx.manifests.len(), idx.blobs.len());
    idx.manifests.retain(|d, _| m.contains(d));
    idx.blobs.retain(|d, _| b.contains(d));
    idx.referrers.retain(|s, _| m.contains(s));
    Ok((m0 - idx.manifests.len(), b0 - idx.blobs.len()))
}

/// Removes tags from a repository, then drops from its index every manifest and blob no
/// remaining tag (or referrer of a kept manifest) reaches, so `prune` can collect them.
///
/// Order, for crash safety: the tag copies go first (a crash leaves a tag whose copy is missing:
/// a warning), then the index changes under compare-and-swap, then the copies are removed again
/// (a concurrent publish may have repaired one meanwhile) and `_tags.json` is rewritten.
pub async fn untag(
    store: &dyn Store,
    name: &RepoName,
    tags: &[Tag],
    limits: WalkLimits,
) -> anyhow::Result<UntagReport> {
    untag_inner(store, name, tags, None, limits).await
}

/// [`untag`] for tags that must still point where the caller decided (`retain`): a tag that
/// moved to another digest, or is gone, by the time of the compare-and-swap is left alone and
/// reported in [`UntagReport::skipped`], so a decision made on one digest never removes another.
pub async fn untag_expecting(
    store: &dyn Store,
    name: &RepoName,
    expected: &BTreeMap<Tag, Digest>,
    limits: WalkLimits,
) -> anyhow::Result<UntagReport> {
    let tags: Vec<Tag> = expected.keys().cloned().collect();
    untag_inner(store, name, &tags, Some(expected), limits).await
}

async fn untag_inner(
    store: &dyn Store,
    name: &RepoName,
    requested: &[Tag],
    expected: Option<&BTreeMap<Tag, Digest>>,
    limits: WalkLimits,
) -> anyhow::Result<UntagReport> {
    let key = layout::repo_index(name);
    let Some(obj) = store.get(&key).await? else {
        bail!("repository {name} does not exist ({key} is missing)");
    };
    let idx = RepoIndex::from_slice(&obj.bytes).with_context(|| format!("{key}: cannot parse"))?;
    // Whether `t` is to go from `idx`: it exists and, when expected, still names that digest.
    let wanted = |idx: &RepoIndex, t: &Tag| {
        idx.tags.get(t).is_some_and(|d| {
            expected.is_none_or(|e| e.get(t).is_some_and(|want| *want == d.digest))
        })
    };
    if expected.is_none() {
        let unknown: Vec<&str> = requested
            .iter()
            .filter(|t| !idx.tags.contains_key(*t))
            .map(|t| t.as_str())
            .collect();
        if !unknown.is_empty() {
            bail!("{name} has no tag {}", unknown.join(", "));
        }
    }
    let mut report = UntagReport::default();
    let tags: Vec<Tag> = requested
        .iter()
        .filter(|t| wanted(&idx, t))
        .cloned()
        .collect();
    for t in &tags {
        store.delete(&layout::tag_manifest(name, t)).await?;
    }

    let mut fetched: HashMap<Digest, Fetched> = HashMap::new();
    fetch_all(
        store,
        &mut fetched,
        idx.manifests
            .keys()
            .cloned()
            .chain(idx.tags.values().map(|d| d.digest.clone())),
    )
    .await?;
    let mut committed;
    let mut dropped = (0usize, 0usize);
    let mut note = None;
    let mut attempts = 0;
    let mut removed: Vec<(Tag, Digest)> = Vec::new();
    loop {
        attempts += 1;
        let mut blocked = None;
        let mut counts = (0, 0);
        committed = update_index(store, name, |idx| {
            blocked = None;
            // Decided again on every attempt: the index may have moved underneath.
            removed = requested
                .iter()
                .filter(|t| wanted(idx, t))
                .map(|t| (t.clone(), idx.tags[t].digest.clone()))
                .collect();
            let going: Vec<Tag> = removed.iter().map(|(t, _)| t.clone()).collect();
            counts = drop_tags(idx, &going, &fetched, limits).unwrap_or_else(|e| {
                blocked = Some(e);
                (0, 0)
            });
        })
        .await?;

        dropped.0 += counts.0;
        dropped.1 += counts.1;
        match blocked {
            None => break,
            Some(GcBlocked::Unfetched(ds)) if attempts < 10 => {
                fetch_all(store, &mut fetched, ds).await?;
            }
            Some(GcBlocked::Unfetched(_)) => {
                note = Some(
                    "the index kept changing; its unreferenced entries were left for a later untag"
                        .to_owned(),
                );
                break;
            }
            // A graph over the walk's bounds: the tags go, every manifest and blob stays.
            Some(GcBlocked::Refused(e)) => {
                note = Some(format!(
                    "{e:#}; the index's manifests and blobs were left as they were"
                ));
                break;
            }
            Some(GcBlocked::Unknown(d, why)) => {
                note = Some(format!(
                    "{d} is reachable but {why}; the index's manifests and blobs were left as they were (run verify)"
                ));
                break;
            }
        }
    }
    for (t, d) in &removed {
        if !committed.tags.contains_key(t) {
            store.delete(&layout::tag_manifest(name, t)).await?;
        }
        report.lines.push(format!("untagged {name}:{t} ({d})"));
    }
    for t in requested
        .iter()
        .filter(|t| !removed.iter().any(|(r, _)| r == *t))
    {
        let now = committed.tags.get(t).map(|d| d.digest.to_string());
        report.lines.push(format!(
            "kept {name}:{t}: {} since the decision",
            now.map_or("removed by someone else".to_owned(), |d| format!(
                "moved to {d}"
            ))
        ));
        report.skipped.push(t.clone());
    }
    // Also restores the copy of a tag that was deleted above but moved meanwhile.
    write_derived(store, name, &[]).await?;
    report.lines.push(format!(
        "{key}: dropped {} manifest(s) and {} blob(s) no remaining tag reaches; {} tag(s) remain. \
         Run `prune` to delete content no repository references.",
        dropped.0,
        dropped.1,
        committed.tags.len()
    ));
    report.lines.extend(note.map(|n| format!("note: {n}")));
    report.removed = removed;
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// delete-repository
// ---------------------------------------------------------------------------------------------

/// Deletes a repository: its catalog entry, its derived files, then its index. Its content is
/// left to `prune` (other repositories may share it).
///
/// Order, for crash safety: the catalog entry goes first (a crash leaves a repository missing
/// from the catalog: a warning, and the next attempt finishes), then the tag copies,
/// `_tags.json` and referrers (a crash leaves them missing: warnings), then the index. A publish
/// into the same repository racing the deletion may re-create it; the end state is then checked
/// and made consistent either way.
pub async fn delete_repository(store: &dyn Store, name: &RepoName) -> anyhow::Result<String> {
    let key = layout::repo_index(name);
    let own_prefix = layout::repo_files_prefix(name);
    let files = store.list(&own_prefix).await?;
    if files.is_empty() {
        bail!("repository {name} does not exist (nothing under {own_prefix})");
    }
    remove_from_catalog(store, name).await?;
    let mut deleted = 0;
    for m in files.iter().filter(|m| m.key != key) {
        store
            .delete(&m.key)
            .await
            .with_context(|| format!("cannot delete {}", m.key))?;
        deleted += 1;
    }
    store.delete(&key).await?;
    // A publish may have committed into the repository meanwhile: then it exists again, and must
    // be complete; otherwise make sure that publish did not put it back into the catalog.
    if store.head(&key).await?.is_some() {
        write_derived(store, name, &[]).await?;
        add_to_catalog(store, name).await?;
        return Ok(format!(
            "{name}: a publish re-created the repository while it was being deleted; it was kept"
        ));
    }
    remove_from_catalog(store, name).await?;
    Ok(format!(
        "deleted repository {name}: its index and {deleted} derived file(s); run `prune` to \
         delete content no repository references"
    ))
}
