//! The one walk over a manifest graph: from some roots, through the children image indexes
//! list, each digest fetched and visited once.
//!
//! Every command that follows manifests uses it: `publish` from layouts, archives and registries,
//! `export`, `verify` and `prune`. Image indexes may list the same child many times and nest, so
//! a tree walk of a 40 KB archive can reach millions of nodes; memoizing by digest makes the work
//! proportional to the distinct manifests, and two bounds stop hostile graphs early with a clear
//! error: at most [`WalkLimits::max_manifests`] manifests besides the roots, and indexes nested at
//! most [`MAX_DEPTH`] deep (content addressing makes a cycle impossible, but the bound is cheap).
//!
//! The walk goes level by level, fetching each level's new digests concurrently. What a fetch
//! returns (`T`) is the caller's: parsed bytes from a store, a source's checked manifest, or
//! `None` for a child a source does not carry; the caller also says which children of a fetched
//! manifest to follow.

use std::collections::{HashMap, HashSet};
use std::future::Future;

use anyhow::bail;
use futures::stream::{self, StreamExt, TryStreamExt};

use crate::oci::Descriptor;
use crate::reference::Digest;

/// The default of `--max-manifests` (`max_manifests` in the config file).
pub const DEFAULT_MAX_MANIFESTS: usize = 4096;

/// Image indexes nest (an index of indexes is legal); deeper than this is refused.
pub const MAX_DEPTH: usize = 8;

/// Bounds of one walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkLimits {
    /// Distinct manifests a walk may reach besides its roots.
    pub max_manifests: usize,
}

impl Default for WalkLimits {
    fn default() -> Self {
        WalkLimits {
            max_manifests: DEFAULT_MAX_MANIFESTS,
        }
    }
}

/// `--max-manifests`, shared by `publish`, `export`, `verify` and `prune`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct WalkArgs {
    /// Distinct manifests a walk through image indexes may reach (besides its roots) before it
    /// stops, refusing the graph as hostile [default: `max_manifests` in the config file's
    /// [publish] section, else 4096].
    #[arg(long, value_name = "N")]
    pub max_manifests: Option<usize>,
}

impl WalkArgs {
    /// The flag, else the config file's value, else the default.
    pub fn limits(&self, config: Option<usize>) -> WalkLimits {
        WalkLimits {
            max_manifests: self
                .max_manifests
                .or(config)
                .unwrap_or(DEFAULT_MAX_MANIFESTS),
        }
    }
}

/// What the walk follows: a digest, or a descriptor naming one.
pub trait WalkRef: Clone {
    fn digest(&self) -> &Digest;
}

impl WalkRef for Digest {
    fn digest(&self) -> &Digest {
        self
    }
}

impl WalkRef for Descriptor {
    fn digest(&self) -> &Digest {
        &self.digest
    }
}

/// One manifest the walk reached, with the reference it was first reached by.
#[derive(Debug)]
pub struct Visit<R, T> {
    pub reference: R,
    /// 0 for a root, else the shortest number of index hops from one.
    pub depth: usize,
    pub value: T,
}

/// Every manifest a walk reached, each once, in the order reached (parents before the children
/// they first reached).
#[derive(Debug)]
pub struct Walked<R, T> {
    pub visits: Vec<Visit<R, T>>,
    by_digest: HashMap<Digest, usize>,
}

impl<R: WalkRef, T> Walked<R, T> {
    pub fn get(&self, d: &Digest) -> Option<&T> {
        self.by_digest.get(d).map(|&i| &self.visits[i].value)
    }

    pub fn len(&self) -> usize {
        self.visits.len()
    }

    pub fn is_empty(&self) -> bool {
        self.visits.is_empty()
    }

    /// Every blob the reached manifests refer to, each digest once, in first-seen order.
    pub fn blobs<'a, B, I>(&'a self, blobs: impl Fn(&'a T) -> I) -> Vec<B>
    where
        B: WalkRef,
        I: IntoIterator<Item = B>,
    {
        let mut seen = HashSet::new();
        self.visits
            .iter()
            .flat_map(|v| blobs(&v.value))
            .filter(|b| seen.insert(b.digest().clone()))
            .collect()
    }

    /// Takes the reached values out, by digest.
    pub fn into_map(self) -> HashMap<Digest, T> {
        self.visits
            .into_iter()
            .map(|v| (v.reference.digest().clone(), v.value))
            .collect()
    }
}

/// The walk's state: what was seen, and the next level to fetch.
struct Frontier<'w, R> {
    limits: WalkLimits,
    what: &'w str,
    seen: HashSet<Digest>,
    next: Vec<R>,
    depth: usize,
    roots: usize,
}

impl<'w, R: WalkRef> Frontier<'w, R> {
    fn new(roots: impl IntoIterator<Item = R>, limits: WalkLimits, what: &'w str) -> Self {
        let mut seen = HashSet::new();
        let next: Vec<R> = roots
            .into_iter()
            .filter(|r| seen.insert(r.digest().clone()))
            .collect();
        Frontier {
            limits,
            what,
            roots: next.len(),
            seen,
            next,
            depth: 0,
        }
    }

    /// The next level to fetch, and its depth; empty when the walk is done.
    fn level(&mut self) -> anyhow::Result<(Vec<R>, usize)> {
        let level = std::mem::take(&mut self.next);
        let depth = self.depth;
        if !level.is_empty() && depth > MAX_DEPTH {
            bail!(
                "{}: image indexes nest deeper than {MAX_DEPTH} levels (refused as hostile)",
                self.what
            );
        }
        self.depth += 1;
        Ok((level, depth))
    }

    fn follow(&mut self, children: impl IntoIterator<Item = R>) -> anyhow::Result<()> {
        for c in children {
            if !self.seen.insert(c.digest().clone()) {
                continue;
            }
            if self.seen.len() - self.roots > self.limits.max_manifests {
                bail!(
                    "{}: the image indexes reach more than {} distinct manifests (besides {} \
                     root(s)); refused as hostile (raise --max-manifests, or `max_manifests` in \
                     the config file, if the graph is genuine)",
                    self.what,
                    self.limits.max_manifests,
                    self.roots
                );
            }
            self.next.push(c);
        }
        Ok(())
    }
}

impl<R: WalkRef, T> Walked<R, T> {
    fn new() -> Self {
        Walked {
            visits: Vec::new(),
            by_digest: HashMap::new(),
        }
    }

    fn push(&mut self, reference: R, depth: usize, value: T) {
        self.by_digest
            .insert(reference.digest().clone(), self.visits.len());
        self.visits.push(Visit {
            reference,
            depth,
            value,
        });
    }
}

/// Walks from `roots`, fetching up to `parallel` manifests at a time; `children` says which
/// references of a fetched manifest to follow. `what` names the graph in errors.
pub async fn walk<R, T, F, Fut, C, I>(
    roots: impl IntoIterator<Item = R>,
    limits: WalkLimits,
    parallel: usize,
    what: &str,
    fetch: F,
    children: C,
) -> anyhow::Result<Walked<R, T>>
where
    R: WalkRef,
    F: Fn(R) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
    C: Fn(&T) -> I,
    I: IntoIterator<Item = R>,
{
    let mut frontier = Frontier::new(roots, limits, what);
    let mut out = Walked::new();
    loop {
        let (level, depth) = frontier.level()?;
        if level.is_empty() {
            return Ok(out);
        }
        let got: Vec<(R, T)> = stream::iter(level)
            .map(|r| {
                let f = fetch(r.clone());
                async move { anyhow::Ok((r, f.await?)) }
            })
            .buffered(parallel.max(1))
            .try_collect()
            .await?;
        for (r, t) in got {
            frontier.follow(children(&t))?;
            out.push(r, depth, t);
        }
    }
}

/// [`walk`] for sources read synchronously (files in a directory or an archive).
pub fn walk_sync<R, T, C, I>(
    roots: impl IntoIterator<Item = R>,
    limits: WalkLimits,
    what: &str,
    mut fetch: impl FnMut(&R) -> anyhow::Result<T>,
    children: C,
) -> anyhow::Result<Walked<R, T>>
where
    R: WalkRef,
    C: Fn(&T) -> I,
    I: IntoIterator<Item = R>,
{
    let mut frontier = Frontier::new(roots, limits, what);
    let mut out = Walked::new();
    loop {
        let (level, depth) = frontier.level()?;
        if level.is_empty() {
            return Ok(out);
        }
        for r in level {
            let t = fetch(&r)?;
            frontier.follow(children(&t))?;
            out.push(r, depth, t);
        }
    }
}

#[cfg(test)]
mod tests;
