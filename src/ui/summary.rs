//! The store summary behind the catalog and the operator's page, recomputed in the background,
//! never per page view: on the first view, then at most every `[ui] refresh` seconds while
//! someone looks (a replica nobody browses never lists the store). Each computation is one listing of the repository indexes (their
//! last-modified time is when each repository was last published), one read of each index, and
//! `prune --dry-run` itself for what a prune would reclaim (through [`Reclaim`], so the page
//! shows prune's own answer and `serve` does not depend on `prune`), and a `retain --dry-run`
//! with the config's rules for what retention would remove (through [`Retention`], likewise).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use futures::StreamExt as _;

use crate::index::RepoIndex;
use crate::layout;
use crate::reference::{Digest, RepoName};
use crate::store::Store;

/// Index reads at once while summarising.
const PARALLEL: usize = 8;

/// One repository, as the catalog lists it.
#[derive(Debug, Clone)]
pub struct RepoSummary {
    pub name: RepoName,
    pub tags: usize,
    pub manifests: usize,
    /// Its manifests and blobs, each once (what it costs alone).
    pub bytes: u64,
    /// When its index was last written: the last publish (or untag).
    pub last_published: Option<SystemTime>,
}

/// The whole store, at `computed`.
#[derive(Debug, Clone, Default)]
pub struct StoreSummary {
    pub computed: Option<SystemTime>,
    /// How long the computation took.
    pub took: Duration,
    /// Sorted by name.
    pub repos: Vec<RepoSummary>,
    pub tags: usize,
    /// Distinct manifests and blobs referenced by any repository, and their bytes.
    pub manifests: usize,
    pub blobs: usize,
    pub bytes: u64,
    /// Bytes of blobs that more than one repository references.
    pub shared_bytes: u64,
    /// What `prune` would delete now, and what it keeps only because it is young.
    pub reclaim: Option<Reclaimable>,
    /// What a retention dry run (the config's rules, no in-use list) would remove.
    pub retention: Option<RetentionPreview>,
    /// Why the last computation failed, if it did (the previous summary is kept).
    pub error: Option<String>,
}

/// `prune --dry-run`'s figures.
#[derive(Debug, Clone, Default)]
pub struct Reclaimable {
    pub grace: Duration,
    pub items: usize,
    pub bytes: u64,
    /// Unreferenced, but younger than the grace period.
    pub young: usize,
    pub young_bytes: u64,
}

/// A dry run of a store-care command on a store, provided by the command that starts `serve` (so
/// `ui` depends on none of them).
pub type DryRun<T> = Arc<
    dyn Fn(Arc<dyn Store>) -> futures::future::BoxFuture<'static, anyhow::Result<T>> + Send + Sync,
>;

/// Runs `prune --dry-run` on a store.
pub type Reclaim = DryRun<Reclaimable>;

/// `retain --dry-run`'s answer with the config's `[[retention]]` rules and no in-use list.
#[derive(Debug, Clone, Default)]
pub struct RetentionPreview {
    pub drops: Vec<RetentionDrop>,
    /// What the drops alone keep referenced (prune deletes it once past its grace period).
    pub manifests: usize,
    pub blobs: usize,
    pub bytes: u64,
}

/// One tag a retention run would drop, and why.
#[derive(Debug, Clone)]
pub struct RetentionDrop {
    pub repository: RepoName,
    pub tag: String,
    pub digest: Digest,
    pub why: String,
}

/// Runs `retain --dry-run` (the config's rules, no in-use list) on a store.
pub type Retention = DryRun<RetentionPreview>;

/// The current summary, replaced whole by each recomputation (readers never wait for one).
pub struct Summaries {
    current: RwLock<Arc<StoreSummary>>,
    /// Set by a page view; the background task waits for it.
    wanted: tokio::sync::Notify,
    store: Arc<dyn Store>,
    every: Duration,
    reclaim: Option<Reclaim>,
    retention: std::sync::OnceLock<Retention>,
}

impl Summaries {
    pub fn new(store: Arc<dyn Store>, every: Duration, reclaim: Option<Reclaim>) -> Self {
        Summaries {
            current: RwLock::new(Arc::new(StoreSummary::default())),
            wanted: tokio::sync::Notify::new(),
            store,
            every,
            reclaim,
            retention: std::sync::OnceLock::new(),
        }
    }

    /// Adds the retention preview to every later summary (once; `serve` sets it when the config
    /// has `[[retention]]` rules).
    pub fn set_retention(&self, retention: Retention) {
        let _ = self.retention.set(retention);
    }

    /// The summary as last computed, and a wish for a fresh one (granted at most every
    /// `refresh` seconds).
    pub fn current(&self) -> Arc<StoreSummary> {
        self.wanted.notify_one();
        self.current.read().expect("summary lock").clone()
    }

    /// Recomputes now; on failure keeps the last summary and records why.
    pub async fn refresh(&self) {
        let started = std::time::Instant::now();
        let next = match compute(self.store.as_ref()).await {
            Ok(mut s) => {
                if let Some(reclaim) = &self.reclaim {
                    match reclaim(self.store.clone()).await {
                        Ok(r) => s.reclaim = Some(r),
                        Err(e) => tracing::warn!("prune --dry-run for the web page failed: {e:#}"),
                    }
                }
                if let Some(retention) = self.retention.get() {
                    match retention(self.store.clone()).await {
                        Ok(r) => s.retention = Some(r),
                        Err(e) => {
                            tracing::warn!("retain --dry-run for the web page failed: {e:#}")
                        }
                    }
                }
                s.took = started.elapsed();
                tracing::debug!(
                    repositories = s.repos.len(),
                    seconds = s.took.as_secs_f64(),
                    "store summary computed"
                );
                s
            }
            Err(e) => {
                tracing::warn!("cannot summarise the store for the web page: {e:#}");
                let mut s = (**self.current.read().expect("summary lock")).clone();
                s.error = Some(format!("{e:#}"));
                s
            }
        };
        *self.current.write().expect("summary lock") = Arc::new(next);
    }

    /// Recomputes when a page was viewed since the last computation, at most every `[ui]
    /// refresh` seconds, forever (on the caller's runtime).
    pub async fn run(self: Arc<Self>) {
        loop {
            self.wanted.notified().await;
            self.refresh().await;
            tokio::time::sleep(self.every).await;
        }
    }
}

async fn compute(store: &dyn Store) -> anyhow::Result<StoreSummary> {
    let listed = store.list(layout::REPOSITORIES_PREFIX).await?;
    let indexes: Vec<(RepoName, Option<SystemTime>, String)> = listed
        .into_iter()
        .filter_map(|m| {
            let name = layout::repo_of_index_key(&m.key)?;
            Some((name, m.last_modified, m.key))
        })
        .collect();
    let futures: Vec<_> = indexes
        .into_iter()
        .map(|(name, modified, key)| load(store, name, modified, key))
        .collect();
    let loaded: Vec<anyhow::Result<(RepoIndex, Option<SystemTime>)>> =
        futures::stream::iter(futures)
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
    let mut s = StoreSummary {
        computed: Some(SystemTime::now()),
        ..Default::default()
    };
    let mut blob_repos: HashMap<Digest, (u64, usize)> = HashMap::new();
    let mut manifests: HashMap<Digest, u64> = HashMap::new();
    for r in loaded {
        // A repository deleted meanwhile, or an index from a newer layout: skipped, not fatal.
        let Ok((idx, modified)) = r else { continue };
        s.tags += idx.tags.len();
        let bytes =
            idx.blobs.values().sum::<u64>() + idx.manifests.values().map(|m| m.size).sum::<u64>();
        for (d, size) in &idx.blobs {
            blob_repos.entry(d.clone()).or_insert((*size, 0)).1 += 1;
        }
        for (d, m) in &idx.manifests {
            manifests.insert(d.clone(), m.size);
        }
        s.repos.push(RepoSummary {
            name: idx.name.clone(),
            tags: idx.tags.len(),
            manifests: idx.manifests.len(),
            bytes,
            last_published: modified,
        });
    }
    s.repos.sort_by(|a, b| a.name.cmp(&b.name));
    s.blobs = blob_repos.len();
    s.manifests = manifests.len();
    s.bytes =
        blob_repos.values().map(|(size, _)| size).sum::<u64>() + manifests.values().sum::<u64>();
    s.shared_bytes = blob_repos
        .values()
        .filter(|(_, n)| *n > 1)
        .map(|(size, _)| size)
        .sum();
    Ok(s)
}

async fn load(
    store: &dyn Store,
    name: RepoName,
    modified: Option<SystemTime>,
    key: String,
) -> anyhow::Result<(RepoIndex, Option<SystemTime>)> {
    let obj = store
        .get(&key)
        .await?
        .ok_or_else(|| anyhow::anyhow!("{key} vanished"))?;
    let idx = RepoIndex::from_slice(&obj.bytes).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    Ok((idx, modified))
}
