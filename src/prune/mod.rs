//! Store care: `prune` (delete content no repository references), `untag` and
//! `delete-repository` (change what repositories reference, safely).
//!
//! # Why prune cannot break a live tag, nor a publish in flight
//!
//! Content (`blobs/…`, `manifests/…`) is only ever referenced through a repository index, and the
//! publisher writes content *before* the index that references it (see `docs/layout.md`). Prune
//! runs in this order:
//!
//! 1. **list** the candidates (every blob and manifest) with their `last_modified`, and keep only
//!    those older than the grace period;
//! 2. **then read every repository index** and compute what they reach (their tags, manifests,
//!    blobs and referrers, plus everything the reached manifests list, as a second line of
//!    defence against an index that under-records);
//! 3. delete candidates that are not reachable, re-reading the indexes every
//!    [`RECHECK_EVERY`] while deleting and dropping anything that became reachable.
//!
//! A publish in flight has written content that no index references yet. Either that content
//! did not exist when prune listed (1), so it is not a candidate, or it was written after the
//! publish started, so it is younger than the grace period as long as no publish runs longer than
//! the grace period (24 h by default). A publish that *commits* before prune reads the indexes
//! (2) is seen in (2). Reading the indexes after listing is what makes the two cases cover every
//! interleaving: content listed by (1) and committed after (2) must have been written within the
//! grace period, because the publish that wrote it was still running at (2).
//!
//! One case is not covered by age: a publish that *reuses* content already in the store (an
//! untagged image published again, or layers shared with it) while nothing references that
//! content. The publisher re-checks every referenced object just before its index commit and
//! fails (committing nothing) if one disappeared, and prune re-reads the indexes while it deletes,
//! so the two have to interleave within a couple of seconds for a tag to dangle, and only for
//! content that was unreferenced and older than the grace period. `docs/store-care.md` discusses
//! this; running prune when no publish reuses untagged content removes even that.
//!
//! Derived files are repaired first (tag copies for tags an index no longer has are deleted,
//! stale copies rewritten), so no copy keeps pointing at content prune then deletes.
//!
//! The report types are in [`report`]; `untag` and `delete-repository` in [`untag`].

mod reachability;
mod report;
mod untag;

pub use reachability::{Reachability, Unreferenced};
pub use report::{format_duration, parse_duration, PruneReport, Victim};
pub use untag::{delete_repository, untag, untag_expecting, UntagReport};

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use futures::stream::{self, StreamExt, TryStreamExt};

use crate::commit::write_derived;
use crate::index::{RepoIndex, TagsList};
use crate::layout::{self, KeyKind};
use crate::oci::AnyManifest;
use crate::reference::{Digest, RepoName, Tag};
use crate::store::{ObjectMeta, Store, Version};
use crate::walk::{self, WalkLimits};

/// The default grace period: content younger than this is never deleted.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);

/// Below this grace period a publish in flight may lose content it just wrote; prune warns.
const SAFE_GRACE: Duration = Duration::from_secs(3600);

/// While deleting, the indexes are re-read at least this often, so content a publish committed
/// meanwhile stops being deleted.
pub const RECHECK_EVERY: Duration = Duration::from_secs(2);

/// Concurrent store requests.
const PARALLEL: usize = 8;

/// Objects deleted between two checks of the clock (and so of [`RECHECK_EVERY`]).
const DELETE_CHUNK: usize = 32;

/// What `prune` was asked to do.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Content whose `last_modified` is younger than this is kept.
    pub grace: Duration,
    /// Report what would be deleted, delete nothing, repair nothing.
    pub dry_run: bool,
    /// Bounds of the walk through the manifests the indexes reach.
    pub limits: WalkLimits,
}

/// What one manifest refers to: child manifests (of an index) and blobs (config, layers).
#[derive(Debug, Clone, Default)]
struct Refs {
    children: Vec<Digest>,
    blobs: Vec<Digest>,
}

/// A manifest as found in the store.
#[derive(Debug, Clone)]
enum Fetched {
    Known(Refs),
    /// Missing from the store, or not a manifest: what it refers to is unknown.
    Unknown(String),
}

async fn fetch_refs(store: &dyn Store, d: &Digest) -> anyhow::Result<Fetched> {
    let key = layout::manifest(d);
    let Some(obj) = store.get(&key).await? else {
        return Ok(Fetched::Unknown(format!("{key} is missing")));
    };
    Ok(match serde_json::from_slice::<AnyManifest>(&obj.bytes) {
        Ok(m) => Fetched::Known(Refs {
            children: m.children().map(|c| c.digest.clone()).collect(),
            blobs: m.blobs().map(|b| b.digest.clone()).collect(),
        }),
        Err(e) => Fetched::Unknown(format!("{key} is not a manifest: {e}")),
    })
}

/// Fetches every digest in `want` not yet in `cache`, `PARALLEL` at a time.
async fn fetch_all(
    store: &dyn Store,
    cache: &mut HashMap<Digest, Fetched>,
    want: impl IntoIterator<Item = Digest>,
) -> anyhow::Result<()> {
    let todo: BTreeSet<Digest> = want
        .into_iter()
        .filter(|d| !cache.contains_key(d))
        .collect();
    let got: Vec<(Digest, Fetched)> = stream::iter(todo)
        .map(|d| async move {
            let f = fetch_refs(store, &d).await?;
            anyhow::Ok((d, f))
        })
        .buffer_unordered(PARALLEL)
        .try_collect()
        .await?;
    cache.extend(got);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reachability
// ---------------------------------------------------------------------------------------------

/// Everything the repository indexes reach, and the index versions it was computed from, so it
/// can be refreshed cheaply. Only ever grows: a refresh can rescue content, never condemn it.
#[derive(Default)]
struct Reach {
    digests: HashSet<Digest>,
    versions: HashMap<String, Version>,
    indexes: BTreeMap<String, RepoIndex>,
    manifests: HashMap<Digest, Fetched>,
    notes: Vec<String>,
}

impl Reach {
    /// Reads every repository index (again) and adds what changed ones reach. `listed` is the
    /// listing of `repositories/`, when the caller already has a fresh one.
    async fn refresh(&mut self, store: &dyn Store, limits: WalkLimits) -> anyhow::Result<()> {
        let listed = store
            .list(layout::REPOSITORIES_PREFIX)
            .await
            .context("cannot list repositories")?;
        let keys: Vec<String> = listed
            .into_iter()
            .filter(|m| layout::repo_of_index_key(&m.key).is_some())
            .map(|m| m.key)
            .collect();
        let got: Vec<(String, Option<crate::store::Object>)> = stream::iter(keys)
            .map(|k| async move {
                let o = store.get(&k).await?;
                anyhow::Ok((k, o))
            })
            .buffer_unordered(PARALLEL)
            .try_collect()
            .await?;
        let mut changed = Vec::new();
        for (key, obj) in got {
            // Deleted since the listing (delete-repository): it reaches nothing any more, but
            // what it reached before stays in the set, which is only conservative.
            let Some(obj) = obj else { continue };
            if self.versions.get(&key) == Some(&obj.version) {
                continue;
            }
            // An index prune cannot read might reference anything: stop rather than guess.
            let idx = RepoIndex::from_slice(&obj.bytes).with_context(|| {
                format!("{key}: cannot parse the repository index; prune deletes nothing until it is fixed")
            })?;
            self.versions.insert(key.clone(), obj.version);
            changed.push((key, idx));
        }
        self.absorb(store, changed, limits).await
    }

    /// Adds what `indexes` reach (and the indexes themselves, by key).
    async fn absorb(
        &mut self,
        store: &dyn Store,
        indexes: Vec<(String, RepoIndex)>,
        limits: WalkLimits,
    ) -> anyhow::Result<()> {
        let mut roots: Vec<Digest> = Vec::new();
        for (key, idx) in indexes {
            roots.extend(idx.tags.values().map(|d| d.digest.clone()));
            roots.extend(idx.manifests.keys().cloned());
            self.digests.extend(idx.blobs.keys().cloned());
            for (subject, artifacts) in &idx.referrers {
                roots.push(subject.clone());
                roots.extend(artifacts.iter().map(|a| a.digest.clone()));
            }
            self.indexes.insert(key, idx);
        }
        // Expand through the manifests themselves, in case an index under-records: one walk,
        // each manifest fetched once (and never again on a later refresh).
        let cache = &self.manifests;
        let walked = walk::walk(
            roots,
            limits,
            PARALLEL,
            "the repository indexes",
            |d: Digest| async move {
                match cache.get(&d) {
                    Some(f) => Ok(f.clone()),
                    None => fetch_refs(store, &d).await,
                }
            },
            |f: &Fetched| match f {
                Fetched::Known(r) => r.children.clone(),
                Fetched::Unknown(_) => Vec::new(),
            },
        )
        .await?;
        for v in walked.visits {
            let d = v.reference;
            if let Fetched::Unknown(why) = &v.value {
                if !self.digests.contains(&d) {
                    self.notes.push(format!(
                        "an index references {d}, but {why} (run verify); the blobs its index lists are kept"
                    ));
                }
            }
            if let Fetched::Known(r) = &v.value {
                self.digests.extend(r.blobs.iter().cloned());
            }
            self.digests.insert(d.clone());
            self.manifests.insert(d, v.value);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// prune
// ---------------------------------------------------------------------------------------------

/// Deletes content no repository references and that is older than the grace period; see the
/// module docs for why this is safe with publishes running.
pub async fn prune(store: &dyn Store, opts: &PruneOptions) -> anyhow::Result<PruneReport> {
    if opts.grace < SAFE_GRACE {
        tracing::warn!(
            "grace period {}s: content a running publish has written but not yet committed may \
             be deleted; use a grace period longer than your longest publish when publishes may \
             be running",
            opts.grace.as_secs()
        );
    }
    let now = SystemTime::now();
    let cutoff = now
        .checked_sub(opts.grace)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        grace: opts.grace,
        ..PruneReport::default()
    };
    let age_of = |t: Option<SystemTime>| t.and_then(|t| now.duration_since(t).ok());
    let old_enough = |t: Option<SystemTime>| t.is_some_and(|t| t < cutoff);

    // 1. Candidates, listed before any index is read.
    let mut candidates: Vec<(Digest, Victim)> = Vec::new();
    for prefix in [layout::MANIFESTS_PREFIX, layout::BLOBS_PREFIX] {
        for m in store
            .list(prefix)
            .await
            .with_context(|| format!("cannot list {prefix}"))?
        {
            let (Some(KeyKind::Blob(d)) | Some(KeyKind::Manifest(d))) = layout::parse(&m.key)
            else {
                report
                    .notes
                    .push(format!("{}: not a content key, left alone", m.key));
                continue;
            };
            candidates.push((
                d,
                Victim {
                    key: m.key,
                    size: m.size,
                    age: age_of(m.last_modified),
                },
            ));
        }
    }
    let repo_files = store
        .list(layout::REPOSITORIES_PREFIX)
        .await
        .context("cannot list repositories")?;

    // 2. Then the indexes.
    let mut reach = Reach::default();
    reach.refresh(store, opts.limits).await?;
    let mut last_check = Instant::now();
    report.repositories = reach.indexes.len();

    // Derived files first, so no copy keeps describing content deleted below.
    for (key, idx) in reach.indexes.clone() {
        let prefix = layout::tag_manifests_prefix(&idx.name);
        let copies: Vec<&ObjectMeta> = repo_files
            .iter()
            .filter(|m| m.key.starts_with(&prefix))
            .collect();
        repair_derived(store, &key, &idx.name, &copies, opts.dry_run, &mut report).await?;
    }
    leftovers(&repo_files, &reach, &old_enough, &age_of, &mut report);
    if !opts.dry_run {
        for v in &report.leftovers {
            store
                .delete(&v.key)
                .await
                .with_context(|| format!("cannot delete {}", v.key))?;
        }
    }

    // 3. Unreferenced and old enough; manifests first, so a crash never leaves a manifest whose
    // blobs are gone (not that anything would reference it).
    let mut victims: Vec<(Digest, Victim)> = Vec::new();
    for (d, v) in candidates {
        if reach.digests.contains(&d) {
            report.referenced += 1;
        } else if v.age.is_some_and(|a| a >= opts.grace) {
            victims.push((d, v));
        } else {
            report.kept_young += 1;
            report.kept_young_bytes += v.size;
        }
    }
    if opts.dry_run {
        report.deleted = victims.into_iter().map(|(_, v)| v).collect();
    } else {
        for chunk in victims.chunks(DELETE_CHUNK) {
            if last_check.elapsed() >= RECHECK_EVERY {
                reach.refresh(store, opts.limits).await?;
                last_check = Instant::now();
            }
            let (rescued, doomed): (Vec<_>, Vec<_>) =
                chunk.iter().partition(|(d, _)| reach.digests.contains(d));
            report.rescued += rescued.len();
            stream::iter(doomed.iter().map(|(_, v)| v))
                .map(|v| async move {
                    store
                        .delete(&v.key)
                        .await
                        .with_context(|| format!("cannot delete {}", v.key))
                })
                .buffer_unordered(PARALLEL)
                .try_collect::<Vec<()>>()
                .await?;
            for (_, v) in doomed {
                tracing::debug!("deleted {}", v.key);
                report.deleted.push(v.clone());
            }
        }
    }
    report.notes.append(&mut reach.notes);

    // Stale staging files of publishes that crashed (local stores only: S3 stages in the
    // machine's temp directory, and its incomplete multipart uploads are a bucket lifecycle
    // rule's job).
    if let Some(root) = store.local_root() {
        let dir = root.join(layout::LOCAL_STAGING_DIR);
        report.staging = clean_staging(&dir, cutoff, now, opts.dry_run)?;
    }
    Ok(report)
}

/// Derived files of repositories without an index (a `delete-repository` that crashed), old
/// enough that no publish can be creating that repository right now.
fn leftovers(
    repo_files: &[ObjectMeta],
    reach: &Reach,
    old_enough: &dyn Fn(Option<SystemTime>) -> bool,
    age_of: &dyn Fn(Option<SystemTime>) -> Option<Duration>,
    report: &mut PruneReport,
) {
    let with_index: HashSet<RepoName> = reach
        .indexes
        .keys()
        .filter_map(|k| layout::repo_of_index_key(k))
        .collect();
    for m in repo_files {
        let repo = match layout::parse(&m.key) {
            Some(KeyKind::TagCopy(repo, _) | KeyKind::RepoFile(repo)) => repo,
            Some(_) => continue,
            None => {
                report
                    .notes
                    .push(format!("{}: not a layout key, left alone", m.key));
                continue;
            }
        };
        if with_index.contains(&repo) || !old_enough(m.last_modified) {
            continue;
        }
        report.leftovers.push(Victim {
            key: m.key.clone(),
            size: m.size,
            age: age_of(m.last_modified),
        });
    }
}

/// Deletes (or lists) regular files in `dir` last modified before `cutoff`.
fn clean_staging(
    dir: &Path,
    cutoff: SystemTime,
    now: SystemTime,
    dry_run: bool,
) -> anyhow::Result<Vec<Victim>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    for e in entries {
        let e = e?;
        // Renamed into place by a running publish since the listing.
        let md = match e.metadata() {
            Ok(md) => md,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err.into()),
        };
        let Ok(modified) = md.modified() else {
            continue;
        };
        if !md.is_file() || modified >= cutoff {
            continue;
        }
        if !dry_run {
            match std::fs::remove_file(e.path()) {
                Ok(()) => {}
                // Renamed into place by a publish that was still running after all.
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => {
                    return Err(err)
                        .with_context(|| format!("cannot delete {}", e.path().display()))
                }
            }
        }
        out.push(Victim {
            key: layout::staging_file(&e.file_name().to_string_lossy()),
            size: md.len(),
            age: now.duration_since(modified).ok(),
        });
    }
    Ok(out)
}

/// Brings a repository's tag copies and `_tags.json` in line with its index: copies for tags it
/// no longer has are deleted, copies that differ from the tagged manifest are rewritten.
///
/// `copies` comes from a listing made before the index is read here (in fact before any index
/// was read): a copy for a tag the index lacks at this later point is an orphan, because a
/// publish commits a tag before it writes the tag's copy. (Deleting a copy can at worst delete
/// one that a racing publish just rewrote, which leaves a missing copy: a lag, not a dangle.)
async fn repair_derived(
    store: &dyn Store,
    key: &str,
    name: &RepoName,
    copies: &[&ObjectMeta],
    dry_run: bool,
    report: &mut PruneReport,
) -> anyhow::Result<()> {
    let prefix = layout::tag_manifests_prefix(name);
    let Some(obj) = store.get(key).await? else {
        return Ok(()); // Deleted meanwhile; its files are leftovers for a later prune.
    };
    let idx = RepoIndex::from_slice(&obj.bytes).with_context(|| format!("{key}: cannot parse"))?;
    let mut stale: Vec<Tag> = Vec::new();
    let mut have: HashSet<String> = HashSet::new();
    for m in copies {
        let tag = &m.key[prefix.len()..];
        have.insert(tag.to_owned());
        let Some((t, desc)) = idx.tags.iter().find(|(t, _)| t.as_str() == tag) else {
            report
                .repaired
                .push(format!("{}: a copy for a tag {key} no longer has", m.key));
            if !dry_run {
                store.delete(&m.key).await?;
            }
            continue;
        };
        let same = m.size == desc.size
            && match (
                store.get(&m.key).await?,
                store.get(&layout::manifest(&desc.digest)).await?,
            ) {
                (Some(c), Some(mf)) => c.bytes == mf.bytes,
                _ => false,
            };
        if !same {
            report
                .repaired
                .push(format!("{}: not the manifest the tag points at", m.key));
            stale.push(t.clone());
        }
    }
    for t in idx.tags.keys() {
        if !have.contains(t.as_str()) {
            report
                .repaired
                .push(format!("{}: missing", layout::tag_manifest(name, t)));
            stale.push(t.clone());
        }
    }
    let lkey = layout::tags_list(name);
    let listed_ok = match store.get(&lkey).await? {
        Some(o) => serde_json::from_slice::<TagsList>(&o.bytes)
            .is_ok_and(|l| l.tags == idx.tags_list().tags && l.name == *name),
        None => false,
    };
    if !listed_ok {
        report
            .repaired
            .push(format!("{lkey}: does not list the index's tags"));
    }
    if !dry_run && (!stale.is_empty() || !listed_ok) {
        write_derived(store, name, &stale).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
