//! `static-registry sync SRC DST`: make DST a replica of SRC's repositories, copying only what DST
//! lacks, with the same ordering guarantee as `publish`: content first, then each repository's
//! index, then the files derived from it and the catalog. A crash or an interruption at any point
//! leaves no tag in DST pointing at missing content; running it again finishes the job.
//!
//! Why a command of its own (docs/federation.md, "Replicating a store to another cloud"):
//! `export` + `publish` would recompress nothing but would re-render and re-commit each image, one
//! tag at a time, and lose tag history; sync copies the stored objects byte for byte, so digests,
//! history and signed-URL paths are identical on both clouds.
//!
//! Each repository's index is read once from SRC and that snapshot decides what is copied and is
//! what DST's index becomes, so a publish into SRC during a sync is either wholly in the
//! snapshot or left for the next run. Content is streamed through a staging file and its digest
//! and size checked against the key and the index before DST sees it: a corrupt or hostile
//! source object is refused, never replicated. DST's own tags in synced repositories are replaced
//! (it is a replica); repositories only DST has are left alone, and content no longer referenced
//! in DST goes with `prune`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use futures::{stream, StreamExt, TryStreamExt};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::commit::{
    add_to_catalog, blob_put_options, manifest_put_options, write_derived, write_health_canary,
};
use crate::hashing::Hasher;
use crate::index::RepoIndex;
use crate::layout;
use crate::reference::{Digest, RepoName};
use crate::store::{PutMode, PutOptions, Store, StoreError};

/// What to sync and how.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Only repositories whose name starts with one of these (all when empty).
    pub prefixes: Vec<String>,
    /// Objects copied at once.
    pub jobs: usize,
    /// Report what would be copied; write nothing.
    pub dry_run: bool,
}

/// What a sync did (or, in a dry run, would do).
#[derive(Debug, Default, Clone, Serialize)]
pub struct SyncReport {
    pub repositories: usize,
    /// Repositories whose index in DST changed (or would).
    pub indexes_written: usize,
    pub objects_copied: usize,
    pub bytes_copied: u64,
    /// Content objects DST already had.
    pub objects_present: usize,
    pub dry_run: bool,
}

/// One content object to copy: its key, the digest and size the index promises, and how it is
/// stored.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Content {
    key: String,
    digest: Digest,
    size: u64,
    /// `None` for a blob; a manifest's media type.
    media_type: Option<String>,
}

/// Replicates SRC's repositories (those under `opts.prefixes`) into DST.
pub async fn sync(
    src: Arc<dyn Store>,
    dst: Arc<dyn Store>,
    opts: &SyncOptions,
) -> anyhow::Result<SyncReport> {
    let mut report = SyncReport {
        dry_run: opts.dry_run,
        ..SyncReport::default()
    };
    // 1. The snapshot: every selected index, read once.
    let listed = src
        .list(layout::REPOSITORIES_PREFIX)
        .await
        .with_context(|| format!("cannot list repositories in {}", src.describe()))?;
    let names: Vec<RepoName> = listed
        .iter()
        .filter_map(|m| layout::repo_of_index_key(&m.key))
        .filter(|n| {
            opts.prefixes.is_empty() || opts.prefixes.iter().any(|p| n.as_str().starts_with(p))
        })
        .collect();
    let mut snapshot: Vec<(RepoIndex, bytes::Bytes)> = Vec::with_capacity(names.len());
    for name in names {
        let key = layout::repo_index(&name);
        let Some(obj) = src.get(&key).await? else {
            continue; // deleted since the listing
        };
        let idx = RepoIndex::from_slice(&obj.bytes)
            .with_context(|| format!("{key} in {}: cannot parse", src.describe()))?;
        if idx.name != name {
            bail!("{key} in {}: the index is for {}", src.describe(), idx.name);
        }
        snapshot.push((idx, obj.bytes));
    }
    report.repositories = snapshot.len();

    // 2. Content the snapshot references and DST lacks (each object once).
    let wanted: BTreeSet<Content> = snapshot
        .iter()
        .flat_map(|(idx, _)| content_of(idx))
        .collect();
    let present: BTreeMap<String, u64> = dst
        .list(layout::BLOBS_PREFIX)
        .await?
        .into_iter()
        .chain(dst.list(layout::MANIFESTS_PREFIX).await?)
        .map(|m| (m.key, m.size))
        .collect();
    let (have, missing): (Vec<Content>, Vec<Content>) = wanted
        .into_iter()
        .partition(|c| present.get(&c.key) == Some(&c.size));
    report.objects_present = have.len();
    report.objects_copied = missing.len();
    report.bytes_copied = missing.iter().map(|c| c.size).sum();
    if !opts.dry_run {
        let staging = dst.staging_dir();
        tokio::fs::create_dir_all(&staging)
            .await
            .with_context(|| format!("cannot create {}", staging.display()))?;
        stream::iter(missing)
            .map(|c| copy_content(src.as_ref(), dst.as_ref(), staging.clone(), c))
            .buffer_unordered(opts.jobs.max(1))
            .try_collect::<Vec<()>>()
            .await?;
        // The canary origins' health checks fetch: a replica is a store like any other.
        write_health_canary(dst.as_ref()).await?;
    }

    // 3. Per repository: the index (only after all its content), derived files, catalog.
    for (idx, bytes) in &snapshot {
        let key = layout::repo_index(&idx.name);
        let current = dst.get(&key).await?;
        if current.as_ref().is_some_and(|o| o.bytes == *bytes) {
            continue;
        }
        report.indexes_written += 1;
        if opts.dry_run {
            continue;
        }
        let mode = match current {
            Some(o) => PutMode::Update(o.version),
            None => PutMode::Create,
        };
        let put = PutOptions {
            content_type: layout::JSON_CONTENT_TYPE.to_owned(),
            cache_control: layout::CACHE_INDEX,
            mode,
        };
        match dst.put(&key, bytes.clone(), &put).await {
            Ok(()) => {}
            Err(StoreError::Conflict) => bail!(
                "{key} in {} changed during the sync (another writer?); run sync again",
                dst.describe()
            ),
            Err(e) => return Err(e).with_context(|| format!("cannot write {key}")),
        }
        let tags: Vec<_> = idx.tags.keys().cloned().collect();
        write_derived(dst.as_ref(), &idx.name, &tags).await?;
        remove_stale_tag_copies(dst.as_ref(), idx).await?;
        add_to_catalog(dst.as_ref(), &idx.name).await?;
        tracing::info!(repository = %idx.name, tags = tags.len(), "synced");
    }
    Ok(report)
}

/// Every manifest and blob an index references, with what it promises about each.
fn content_of(idx: &RepoIndex) -> Vec<Content> {
    let manifests = idx.manifests.iter().map(|(d, m)| Content {
        key: layout::manifest(d),
        digest: d.clone(),
        size: m.size,
        media_type: Some(m.media_type.clone()),
    });
    let blobs = idx.blobs.iter().map(|(d, size)| Content {
        key: layout::blob(d),
        digest: d.clone(),
        size: *size,
        media_type: None,
    });
    manifests.chain(blobs).collect()
}

/// Streams one object from SRC to a staging file, checks its digest and size, and hands it to
/// DST's `put_file` (atomic there).
async fn copy_content(
    src: &dyn Store,
    dst: &dyn Store,
    staging: PathBuf,
    c: Content,
) -> anyhow::Result<()> {
    let mut reader = src.get_stream(&c.key).await?.with_context(|| {
        format!(
            "{} is referenced but missing from {}",
            c.key,
            src.describe()
        )
    })?;
    // A temporary file in the staging directory, removed on drop whatever happens.
    let temp = tempfile::Builder::new()
        .prefix("sync-")
        .tempfile_in(&staging)
        .with_context(|| format!("cannot create a staging file in {}", staging.display()))?;
    let (file, path) = temp.into_parts();
    let mut file = tokio::fs::File::from_std(file);
    let mut hasher = Hasher::new(c.digest.algorithm());
    let mut count: u64 = 0;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        count += n as u64;
        // Never more than the index promises: a hostile source cannot fill the disk.
        if count > c.size {
            bail!(
                "{} in {} is larger than its {} bytes",
                c.key,
                src.describe(),
                c.size
            );
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).await?;
    }
    file.sync_all().await?;
    drop(file);
    let got = hasher.finish();
    if count != c.size || got != c.digest {
        bail!(
            "{} in {} does not match its digest and size (got {got}, {count} bytes); not copied",
            c.key,
            src.describe()
        );
    }
    let opts = match &c.media_type {
        Some(t) => manifest_put_options(t),
        None => blob_put_options(),
    };
    dst.put_file(&c.key, &path, &opts)
        .await
        .with_context(|| format!("cannot write {} to {}", c.key, dst.describe()))?;
    tracing::debug!(key = %c.key, bytes = c.size, "copied");
    Ok(())
}

/// Tag copies (`_manifests/TAG`) in DST for tags the synced index no longer has.
async fn remove_stale_tag_copies(dst: &dyn Store, idx: &RepoIndex) -> anyhow::Result<()> {
    let prefix = layout::tag_manifests_prefix(&idx.name);
    for m in dst.list(&prefix).await? {
        let tag = &m.key[prefix.len()..];
        if !idx.tags.keys().any(|t| t.as_str() == tag) {
            dst.delete(&m.key).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LocalStore;

    async fn put(store: &dyn Store, key: &str, bytes: &[u8]) {
        store
            .put(key, bytes.to_vec().into(), &blob_put_options())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_source_object_that_does_not_match_its_digest_is_not_copied() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let src = LocalStore::open(a.path()).unwrap();
        let dst = LocalStore::open(b.path()).unwrap();
        let staging = dst.staging_dir();
        std::fs::create_dir_all(&staging).unwrap();
        let good = b"layer bytes";
        let d = Digest::sha256_of(good);
        put(&src, &layout::blob(&d), b"tampered!!!").await;
        let c = Content {
            key: layout::blob(&d),
            digest: d.clone(),
            size: good.len() as u64,
            media_type: None,
        };
        let err = copy_content(&src, &dst, staging.clone(), c.clone())
            .await
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("does not match its digest"),
            "{err:#}"
        );
        assert!(dst.head(&c.key).await.unwrap().is_none());
        // Longer than promised: refused while reading.
        put(&src, &layout::blob(&d), b"layer bytes and more").await;
        let err = copy_content(&src, &dst, staging.clone(), c.clone())
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("larger than"), "{err:#}");
        // The real bytes copy.
        put(&src, &layout::blob(&d), good).await;
        copy_content(&src, &dst, staging.clone(), c.clone())
            .await
            .unwrap();
        assert_eq!(&dst.get(&c.key).await.unwrap().unwrap().bytes[..], good);
    }
}
