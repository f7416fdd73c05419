//! "What if these tags went?": prune's reachability over every repository index, kept so a
//! caller (`retain --dry-run`, the page's retention preview) can remove tags hypothetically with
//! untag's own change and see what would become unreferenced, without a second definition of
//! either.

use std::collections::{BTreeMap, BTreeSet};

use crate::index::RepoIndex;
use crate::reference::{Digest, RepoName, Tag};
use crate::store::Store;
use crate::walk::{self, WalkLimits};

use super::untag::drop_tags;
use super::{Fetched, Reach};

/// What every repository index reaches now, and the manifests read to find out.
pub struct Reachability {
    reach: Reach,
    limits: WalkLimits,
}

/// Content reachable now that would not be once some tags went: what a `prune` would then
/// delete (once older than its grace period).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unreferenced {
    pub manifests: usize,
    pub blobs: usize,
    /// Sizes as the indexes record them.
    pub bytes: u64,
}

impl Reachability {
    /// Reads every repository index and walks what they reach, as `prune` does.
    pub async fn read(store: &dyn Store, limits: WalkLimits) -> anyhow::Result<Self> {
        let mut reach = Reach::default();
        reach.refresh(store, limits).await?;
        Ok(Reachability { reach, limits })
    }

    /// Every repository index read.
    pub fn indexes(&self) -> impl Iterator<Item = &RepoIndex> {
        self.reach.indexes.values()
    }

    /// What the walk noticed (manifests missing or unparsable).
    pub fn notes(&self) -> &[String] {
        &self.reach.notes
    }

    /// The manifests `d` reaches through image indexes (children of a multi-platform index, and
    /// theirs), `d` excluded: the one walk, over the manifests already read.
    pub fn descendants(&self, d: &Digest) -> anyhow::Result<Vec<Digest>> {
        let walked = walk::walk_sync(
            [d.clone()],
            self.limits,
            d.as_str(),
            |r: &Digest| Ok(self.reach.manifests.get(r)),
            |f: &Option<&Fetched>| match f {
                Some(Fetched::Known(r)) => r.children.clone(),
                _ => Vec::new(),
            },
        )?;
        Ok(walked
            .visits
            .into_iter()
            .filter(|v| v.depth > 0)
            .map(|v| v.reference)
            .collect())
    }

    /// What would become unreferenced if `drops` were untagged (each repository's index changed
    /// exactly as `untag` changes it), every other index as it is.
    pub async fn without(
        &self,
        store: &dyn Store,
        drops: &BTreeMap<RepoName, Vec<Tag>>,
    ) -> anyhow::Result<Unreferenced> {
        let mut indexes: Vec<(String, RepoIndex)> = Vec::new();
        for (key, idx) in &self.reach.indexes {
            let mut idx = idx.clone();
            if let Some(tags) = drops.get(&idx.name) {
                // Blocked (a graph over the bounds, a missing manifest): only the tags go, as
                // untag does.
                let _ = drop_tags(&mut idx, tags, &self.reach.manifests, self.limits);
            }
            indexes.push((key.clone(), idx));
        }
        let mut after = Reach {
            manifests: self.reach.manifests.clone(),
            ..Reach::default()
        };
        after.absorb(store, indexes, self.limits).await?;
        let gone: BTreeSet<&Digest> = self
            .reach
            .digests
            .iter()
            .filter(|d| !after.digests.contains(*d))
            .collect();
        let mut sizes: BTreeMap<&Digest, (bool, u64)> = BTreeMap::new();
        for idx in self.reach.indexes.values() {
            sizes.extend(idx.manifests.iter().map(|(d, e)| (d, (true, e.size))));
            sizes.extend(idx.blobs.iter().map(|(d, s)| (d, (false, *s))));
        }
        let mut out = Unreferenced::default();
        for d in gone {
            let (manifest, size) = sizes
                .get(d)
                .copied()
                .unwrap_or((self.reach.manifests.contains_key(d), 0));
            if manifest {
                out.manifests += 1;
            } else {
                out.blobs += 1;
            }
            out.bytes += size;
        }
        Ok(out)
    }
}
