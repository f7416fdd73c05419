//! `verify`: check that a store is consistent, i.e. that every pull `serve` would redirect lands on
//! the right bytes.
//!
//! The endpoint trusts the repository indexes completely (it never looks at the store on the hot
//! path), so a hand-edited store, a half-finished copy or a bad sync shows up only as failed pulls.
//! This walks every index and checks each reference it makes; `deep` also re-hashes every object.
//! Each problem names the object key and what is wrong, so it can be fixed (usually by
//! re-publishing).
//!
//! Findings come in two grades (see `docs/store-care.md`):
//! - **errors**: a reference to missing, partial or wrong content (a tag, an index entry, a tag
//!   copy or a catalog entry that a client could follow into a failure). The publishing order
//!   makes these impossible after a crash or a race, so an error always means damage or a bug,
//!   and `verify` exits non-zero.
//! - **warnings**: derived files lagging the index (`_tags.json`, a tag copy that is missing or
//!   still the previous manifest, a repository missing from the catalog). A publish killed between
//!   its index commit and its derived-file writes leaves exactly this; the next publish (or
//!   `prune`) rewrites them from the index. Nothing a client follows from them is missing, so they
//!   do not fail `verify`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use anyhow::Context;
use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use tokio::io::AsyncReadExt;

use crate::hashing::Hasher;
use crate::index::{Catalog, RepoIndex, TagsList};
use crate::layout;
use crate::oci::{media, AnyManifest};
use crate::reference::{Digest, RepoName};
use crate::store::Store;
use crate::walk::{self, WalkLimits};

/// Concurrent store requests while verifying (each is small; on S3 latency dominates).
const PARALLEL: usize = 16;

/// What `verify` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Re-hash every manifest and blob, not just check presence and size.
    pub deep: bool,
    /// Bounds of the walk through the manifests the indexes reach.
    pub limits: WalkLimits,
}

/// The outcome: empty `problems` means nothing points at missing or wrong content.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Errors: dangling or wrong references (see the module docs).
    pub problems: Vec<String>,
    /// Derived files lagging the index; harmless, repaired by the next publish.
    pub warnings: Vec<String>,
    pub repositories: usize,
    pub manifests: usize,
    pub blobs: usize,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let checked = format!(
            "{} repositories, {} manifests, {} blobs",
            self.repositories, self.manifests, self.blobs
        );
        if self.problems.is_empty() && self.warnings.is_empty() {
            return write!(f, "OK: checked {checked}");
        }
        if self.problems.is_empty() {
            write!(
                f,
                "OK with {} warning(s) (checked {checked}); derived files lag the index, the next \
                 publish to the repository rewrites them:",
                self.warnings.len()
            )?;
        } else {
            write!(
                f,
                "{} problem(s) found (checked {checked}):",
                self.problems.len()
            )?;
            for p in &self.problems {
                write!(f, "\n  {p}")?;
            }
            if !self.warnings.is_empty() {
                write!(f, "\n{} warning(s):", self.warnings.len())?;
            }
        }
        for w in &self.warnings {
            write!(f, "\n  warning: {w}")?;
        }
        Ok(())
    }
}

/// A manifest as found in the store.
enum Fetched {
    Missing,
    /// Present but not a usable manifest (the problem is already recorded).
    Broken(Bytes),
    Ok(Bytes, Box<AnyManifest>),
}

/// A blob as found in the store: its size, if present.
type BlobState = Option<u64>;

/// Checks the whole store.
pub async fn verify(store: &dyn Store, opts: &VerifyOptions) -> anyhow::Result<Report> {
    let mut problems: Vec<String> = Vec::new();
    let mut warnings: Vec<String> = Vec::new();

    // Repository indexes.
    let listed = store
        .list(layout::REPOSITORIES_PREFIX)
        .await
        .context("cannot list repositories")?;
    let index_keys: Vec<(String, RepoName)> = listed
        .iter()
        .filter_map(|m| layout::repo_of_index_key(&m.key).map(|n| (m.key.clone(), n)))
        .collect();
    let fetched: Vec<(String, RepoName, Option<Bytes>)> = stream::iter(index_keys)
        .map(|(key, name)| async move {
            let o = store.get(&key).await?;
            anyhow::Ok((key, name, o.map(|o| o.bytes)))
        })
        .buffered(PARALLEL)
        .try_collect()
        .await?;
    let mut repos: Vec<(String, RepoIndex)> = Vec::new();
    for (key, name, bytes) in fetched {
        let Some(bytes) = bytes else {
            problems.push(format!("{key}: disappeared while verifying"));
            continue;
        };
        match RepoIndex::from_slice(&bytes) {
            Ok(idx) if idx.name == name => repos.push((key, idx)),
            Ok(idx) => problems.push(format!(
                "{key}: names repository {}, expected {name}",
                idx.name
            )),
            Err(e) => problems.push(format!("{key}: cannot parse: {e:#}")),
        }
    }

    // Every manifest the indexes reference, and the children those list: one walk, each
    // fetched once.
    let roots: BTreeSet<Digest> = repos
        .iter()
        .flat_map(|(_, idx)| {
            idx.manifests
                .keys()
                .chain(idx.tags.values().map(|d| &d.digest))
        })
        .cloned()
        .collect();
    let walked = walk::walk(
        roots,
        opts.limits,
        PARALLEL,
        "the repository indexes",
        |d: Digest| async move { fetch_manifest(store, &d, opts.deep).await },
        |(f, _): &(Fetched, Option<String>)| match f {
            Fetched::Ok(_, m) => m.children().map(|c| c.digest.clone()).collect(),
            _ => Vec::new(),
        },
    )
    .await?;
    let mut manifests: HashMap<Digest, Fetched> = HashMap::new();
    for v in walked.visits {
        let (f, problem) = v.value;
        problems.extend(problem);
        manifests.insert(v.reference, f);
    }

    // Every blob the indexes and manifests reference, checked once.
    let mut blob_digests: BTreeSet<Digest> = repos
        .iter()
        .flat_map(|(_, idx)| idx.blobs.keys())
        .cloned()
        .collect();
    for f in manifests.values() {
        if let Fetched::Ok(_, m) = f {
            blob_digests.extend(m.blobs().map(|b| b.digest.clone()));
        }
    }
    let blob_results: Vec<(Digest, BlobState, Option<String>)> = stream::iter(blob_digests)
        .map(|d| async move {
            let (state, problem) = check_blob(store, &d, opts.deep).await?;
            anyhow::Ok((d, state, problem))
        })
        .buffer_unordered(PARALLEL)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let mut blobs: HashMap<Digest, BlobState> = HashMap::new();
    for (d, state, problem) in blob_results {
        problems.extend(problem);
        blobs.insert(d, state);
    }

    // The catalog.
    let catalog: Option<Catalog> = match store.get(layout::CATALOG).await? {
        None => {
            // A publish killed before its first catalog write: the catalog lags, nothing dangles.
            if !repos.is_empty() {
                warnings.push(format!(
                    "{}: missing, but there are {} repositories",
                    layout::CATALOG,
                    repos.len()
                ));
            }
            None
        }
        Some(obj) => match serde_json::from_slice(&obj.bytes) {
            Ok(c) => Some(c),
            Err(e) => {
                problems.push(format!("{}: cannot parse: {e}", layout::CATALOG));
                None
            }
        },
    };
    if let Some(c) = &catalog {
        let have: BTreeSet<&str> = repos.iter().map(|(_, i)| i.name.as_str()).collect();
        for r in &c.repositories {
            if have.contains(r.as_str()) {
                continue;
            }
            // Listed before a concurrent publish created it? Then it has an index by now.
            let created = match RepoName::parse(r) {
                Ok(n) => store.head(&layout::repo_index(&n)).await?.is_some(),
                Err(_) => false,
            };
            if !created {
                problems.push(format!(
                    "{}: lists repository {r}, which has no index ({})",
                    layout::CATALOG,
                    RepoName::parse(r)
                        .map(|n| layout::repo_index(&n))
                        .unwrap_or_else(|_| "an invalid name".into())
                ));
            }
        }
    }

    // Every repository's derived files, fetched concurrently: on S3 each is a round trip.
    // The tag copies come from the one listing above: a listing per repository costs a walk of
    // the whole bucket on some S3 implementations.
    let mut copy_keys: HashMap<RepoName, Vec<String>> = HashMap::new();
    for m in &listed {
        if let Some(layout::KeyKind::TagCopy(name, _)) = layout::parse(&m.key) {
            copy_keys.entry(name).or_default().push(m.key.clone());
        }
    }
    let derived: Vec<Derived> = stream::iter(&repos)
        .map(|(_, idx)| {
            let keys = copy_keys.get(&idx.name).cloned().unwrap_or_default();
            fetch_derived(store, &idx.name, keys)
        })
        .buffered(PARALLEL)
        .try_collect()
        .await?;

    for ((key, idx), derived) in repos.iter().zip(&derived) {
        let mut c = RepoCheck {
            store,
            key,
            idx,
            derived,
            manifests: &manifests,
            blobs: &blobs,
            problems: &mut problems,
            warnings: &mut warnings,
        };
        c.check().await?;
        if let Some(cat) = &catalog {
            if !cat.repositories.iter().any(|r| r == idx.name.as_str()) {
                // Killed between the index commit and the catalog write: a lag, not a dangle.
                warnings.push(format!(
                    "{}: does not list repository {}",
                    layout::CATALOG,
                    idx.name
                ));
            }
        }
    }

    // The same broken object can be reached from several places; say it once.
    let mut seen = BTreeSet::new();
    problems.retain(|p| seen.insert(p.clone()));
    warnings.retain(|p| seen.insert(p.clone()));
    Ok(Report {
        problems,
        warnings,
        repositories: repos.len(),
        manifests: manifests.len(),
        blobs: blobs.len(),
    })
}

async fn fetch_manifest(
    store: &dyn Store,
    d: &Digest,
    deep: bool,
) -> anyhow::Result<(Fetched, Option<String>)> {
    let key = layout::manifest(d);
    let Some(obj) = store.get(&key).await? else {
        return Ok((Fetched::Missing, None));
    };
    if deep {
        let got = Hasher::digest_like(d, &obj.bytes);
        if got != *d {
            return Ok((
                Fetched::Broken(obj.bytes),
                Some(format!("{key}: digest mismatch (content hashes to {got})")),
            ));
        }
    }
    match serde_json::from_slice::<AnyManifest>(&obj.bytes) {
        Ok(m) if m.manifests.is_some() || m.config.is_some() => {
            Ok((Fetched::Ok(obj.bytes, Box::new(m)), None))
        }
        Ok(_) => Ok((
            Fetched::Broken(obj.bytes),
            Some(format!(
                "{key}: neither an image manifest nor an image index"
            )),
        )),
        Err(e) => Ok((
            Fetched::Broken(obj.bytes),
            Some(format!("{key}: not a valid manifest: {e}")),
        )),
    }
}

async fn check_blob(
    store: &dyn Store,
    d: &Digest,
    deep: bool,
) -> anyhow::Result<(BlobState, Option<String>)> {
    let key = layout::blob(d);
    let Some(meta) = store.head(&key).await? else {
        return Ok((None, None));
    };
    if !deep {
        return Ok((Some(meta.size), None));
    }
    let Some(mut r) = store.get_stream(&key).await? else {
        return Ok((None, None));
    };
    let mut h = Hasher::new(d.algorithm());
    let mut buf = vec![0u8; 256 << 10];
    let mut n_total = 0u64;
    loop {
        let n = r
            .read(&mut buf)
            .await
            .with_context(|| format!("reading {key}"))?;
        if n == 0 {
            break;
        }
        n_total += n as u64;
        h.update(&buf[..n]);
    }
    let got = h.finish();
    let problem = (got != *d).then(|| format!("{key}: digest mismatch (content hashes to {got})"));
    Ok((Some(n_total), problem))
}

/// A repository's tag copies and `_tags.json`, fetched before the checks.
struct Derived {
    /// Every tag copy the listing shows: key -> bytes.
    copies: BTreeMap<String, Bytes>,
    tags_list: Option<Bytes>,
}

async fn fetch_derived(
    store: &dyn Store,
    name: &RepoName,
    copy_keys: Vec<String>,
) -> anyhow::Result<Derived> {
    let got: Vec<(String, Option<Bytes>)> = stream::iter(copy_keys)
        .map(|key| async move {
            let o = store.get(&key).await?;
            anyhow::Ok((key, o.map(|o| o.bytes)))
        })
        .buffer_unordered(PARALLEL)
        .try_collect()
        .await?;
    Ok(Derived {
        // A copy listed but gone by the time of the GET was removed meanwhile (an untag).
        copies: got
            .into_iter()
            .filter_map(|(k, b)| b.map(|b| (k, b)))
            .collect(),
        tags_list: store.get(&layout::tags_list(name)).await?.map(|o| o.bytes),
    })
}

/// The per-repository checks, against the store-wide results fetched beforehand.
struct RepoCheck<'a> {
    store: &'a dyn Store,
    key: &'a str,
    idx: &'a RepoIndex,
    derived: &'a Derived,
    manifests: &'a HashMap<Digest, Fetched>,
    blobs: &'a HashMap<Digest, BlobState>,
    problems: &'a mut Vec<String>,
    warnings: &'a mut Vec<String>,
}

impl RepoCheck<'_> {
    fn problem(&mut self, p: String) {
        self.problems.push(p);
    }

    fn warning(&mut self, w: String) {
        self.warnings.push(w);
    }

    async fn check(&mut self) -> anyhow::Result<()> {
        let (key, idx) = (self.key, self.idx);
        for (tag, desc) in &idx.tags {
            match idx.manifests.get(&desc.digest) {
                None => self.problem(format!(
                    "{key}: tag {tag} points at {}, which is not in its manifests",
                    desc.digest
                )),
                Some(e) if e.size != desc.size || e.media_type != desc.media_type => self.problem(
                    format!(
                        "{key}: tag {tag} says {} is {} bytes of {}, its manifests entry says {} bytes of {}",
                        desc.digest, desc.size, desc.media_type, e.size, e.media_type
                    ),
                ),
                Some(_) => {}
            }
        }
        for (d, entry) in &idx.manifests {
            let mkey = layout::manifest(d);
            let artifact = match self.manifests.get(d) {
                Some(Fetched::Ok(_, m)) => m.artifact_type.is_some(),
                _ => true,
            };
            if !media::is_accepted(&entry.media_type, artifact) {
                self.problem(format!(
                    "{key}: records {d} as {:?}, which is not a manifest media type (serve \
                     would answer the manifest with that Content-Type)",
                    entry.media_type
                ));
            }
            match self.manifests.get(d) {
                None | Some(Fetched::Missing) => {
                    self.problem(format!("{mkey}: missing (referenced by {key})"))
                }
                Some(Fetched::Broken(bytes)) => {
                    if bytes.len() as u64 != entry.size {
                        self.problem(format!(
                            "{mkey}: size {}, expected {} (per {key})",
                            bytes.len(),
                            entry.size
                        ));
                    }
                }
                Some(Fetched::Ok(bytes, m)) => {
                    if bytes.len() as u64 != entry.size {
                        self.problem(format!(
                            "{mkey}: size {}, expected {} (per {key})",
                            bytes.len(),
                            entry.size
                        ));
                    }
                    if let Some(mt) = &m.media_type {
                        if !media::is_accepted(mt, m.artifact_type.is_some()) {
                            self.problem(format!(
                                "{mkey}: its mediaType {mt:?} is not a manifest media type"
                            ));
                        }
                        if *mt != entry.media_type {
                            self.problem(format!(
                                "{key}: records {d} as {}, but the manifest says it is {mt} (clients need the exact type)",
                                entry.media_type
                            ));
                        }
                    }
                    self.check_references(&mkey, m);
                }
            }
        }
        for (d, size) in &idx.blobs {
            let bkey = layout::blob(d);
            match self.blobs.get(d) {
                Some(Some(have)) if have == size => {}
                Some(Some(have)) => {
                    self.problem(format!("{bkey}: size {have}, expected {size} (per {key})"))
                }
                _ => self.problem(format!("{bkey}: missing (referenced by {key})")),
            }
        }
        self.check_derived().await
    }

    /// An index's children and a manifest's config and layers.
    fn check_references(&mut self, mkey: &str, m: &AnyManifest) {
        let key = self.key;
        for c in m.manifests.iter().flatten() {
            let ckey = layout::manifest(&c.digest);
            if !self.idx.manifests.contains_key(&c.digest) {
                self.problem(format!(
                    "{key}: {mkey} lists {}, which is not in the index's manifests (pulls of it will fail)",
                    c.digest
                ));
                match self.manifests.get(&c.digest) {
                    None | Some(Fetched::Missing) => {
                        self.problem(format!("{ckey}: missing (referenced by {mkey})"))
                    }
                    Some(Fetched::Broken(b)) | Some(Fetched::Ok(b, _))
                        if b.len() as u64 != c.size =>
                    {
                        self.problem(format!(
                            "{ckey}: size {}, expected {} (per {mkey})",
                            b.len(),
                            c.size
                        ))
                    }
                    _ => {}
                }
            } else if let Some(e) = self.idx.manifests.get(&c.digest) {
                if e.size != c.size {
                    self.problem(format!(
                        "{mkey}: lists {} with size {}, but {key} records {}",
                        c.digest, c.size, e.size
                    ));
                }
            }
        }
        let blobs = m.config.iter().chain(m.layers.iter().flatten());
        for b in blobs {
            let bkey = layout::blob(&b.digest);
            // Foreign layers are fetched from their URLs; the store need not have them.
            let foreign = b.foreign();
            match self.blobs.get(&b.digest) {
                Some(Some(have)) if *have != b.size => self.problem(format!(
                    "{bkey}: size {have}, expected {} (per {mkey})",
                    b.size
                )),
                Some(Some(_)) => {}
                _ if foreign => continue,
                _ => self.problem(format!("{bkey}: missing (referenced by {mkey} in {key})")),
            }
            if !self.idx.blobs.contains_key(&b.digest) {
                self.problem(format!(
                    "{key}: does not list {} ({} of {mkey}) among its blobs, so serve will refuse to redirect it",
                    b.digest,
                    if b.media_type.is_empty() { "blob" } else { &b.media_type }
                ));
            }
        }
    }

    /// `_manifests/<tag>` copies and `_tags.json`.
    ///
    /// These are written after the index commit, so a publish killed in between leaves them
    /// lagging: a copy missing, or still the tag's previous manifest. That is a warning as long
    /// as what the copy describes is complete in the store; a copy describing missing content is
    /// an error (a CDN serving blind would hand it out).
    async fn check_derived(&mut self) -> anyhow::Result<()> {
        let (key, idx, derived) = (self.key, self.idx, self.derived);
        for (tag, desc) in &idx.tags {
            let tkey = layout::tag_manifest(&idx.name, tag);
            let Some(copy) = derived.copies.get(&tkey) else {
                self.warning(format!("{tkey}: missing (tag {tag} of {key})"));
                continue;
            };
            match self.manifests.get(&desc.digest) {
                Some(Fetched::Ok(b, _)) | Some(Fetched::Broken(b)) if b != copy => {
                    let what = format!(
                        "{tkey}: differs from {} (the manifest tag {tag} points at)",
                        layout::manifest(&desc.digest)
                    );
                    self.grade_copy(what, copy).await?;
                }
                _ => {}
            }
        }
        // Copies for tags the index no longer has would still be served by a CDN in blind mode.
        let prefix = layout::tag_manifests_prefix(&idx.name);
        for (ckey, copy) in &derived.copies {
            let tag = &ckey[prefix.len()..];
            if idx.tags.keys().any(|t| t.as_str() == tag) {
                continue;
            }
            let what = format!("{ckey}: a copy for tag {tag:?}, which {key} does not have");
            self.grade_copy(what, copy).await?;
        }
        let lkey = layout::tags_list(&idx.name);
        match &derived.tags_list {
            None => self.warning(format!("{lkey}: missing")),
            Some(bytes) => match serde_json::from_slice::<TagsList>(bytes) {
                Err(e) => self.problem(format!("{lkey}: cannot parse: {e}")),
                Ok(list) => {
                    let have: BTreeSet<&str> = list.tags.iter().map(|t| t.as_str()).collect();
                    let want: BTreeSet<&str> = idx.tags.keys().map(|t| t.as_str()).collect();
                    if list.name != idx.name || have != want {
                        // A tag listed here but gone from the index answers 404, never content.
                        self.warning(format!(
                            "{lkey}: lists {}:{:?}, but {key} has tags {:?}",
                            list.name, have, want
                        ));
                    }
                }
            },
        }
        Ok(())
    }

    /// Reports a tag copy that is not the tagged manifest: a warning when it is a manifest whose
    /// content is all in the store (a lagging copy), an error otherwise.
    async fn grade_copy(&mut self, what: String, bytes: &[u8]) -> anyhow::Result<()> {
        let digest = Digest::sha256_of(bytes);
        if let Some(Fetched::Ok(..)) = self.manifests.get(&digest) {
            if self.idx.manifests.contains_key(&digest) {
                self.warning(format!(
                    "{what}; it is the repository's earlier manifest {digest}, complete in the store"
                ));
                return Ok(());
            }
        }
        match self.missing_content(bytes).await? {
            None => self.warning(format!(
                "{what}; it is {digest}, whose content is complete in the store"
            )),
            Some(why) => self.problem(format!("{what}, and {why}")),
        }
        Ok(())
    }

    /// What a manifest (or image index) copy refers to that the store lacks, if anything.
    async fn missing_content(&self, bytes: &[u8]) -> anyhow::Result<Option<String>> {
        let Ok(m) = serde_json::from_slice::<AnyManifest>(bytes) else {
            return Ok(Some("it is not a manifest".into()));
        };
        if m.manifests.is_none() && m.config.is_none() {
            return Ok(Some("it is not a manifest".into()));
        }
        for c in m.manifests.iter().flatten() {
            let ckey = layout::manifest(&c.digest);
            match self.store.head(&ckey).await? {
                Some(meta) if meta.size == c.size => {}
                _ => {
                    return Ok(Some(format!(
                        "it lists {ckey}, which is missing or partial"
                    )))
                }
            }
        }
        for b in m.config.iter().chain(m.layers.iter().flatten()) {
            if b.foreign() {
                continue;
            }
            let have = match self.blobs.get(&b.digest) {
                Some(state) => *state,
                None => self
                    .store
                    .head(&layout::blob(&b.digest))
                    .await?
                    .map(|m| m.size),
            };
            if have != Some(b.size) {
                return Ok(Some(format!(
                    "it refers to {}, which is missing or partial",
                    layout::blob(&b.digest)
                )));
            }
        }
        Ok(None)
    }
}
