//! Making a publish visible: the repository index under compare-and-swap, then the files derived
//! from it (tag copies, `_tags.json`, the catalog).
//!
//! Several publishers may write the same repository at once (CI jobs tagging in parallel). The
//! index is read, merged and written back only if nobody changed it meanwhile, so no tag is ever
//! lost. The derived files are plain overwrites, so each writer re-checks the index after writing
//! them and redoes them if it moved: whoever writes last leaves them matching the latest index.
//! Everything written here only points at content written before it, so a crash at any point
//! leaves no tag pointing at missing content.

use anyhow::{bail, Context};
use bytes::Bytes;
use std::collections::HashMap;

use crate::immutable::Immutable;
use crate::index::{Catalog, RepoIndex};
use crate::layout;
use crate::reference::{RepoName, Tag};
use crate::store::{update_json, PutMode, PutOptions, Store, MAX_ATTEMPTS};

/// Merges `update` into its repository's index, then writes the derived files for the tags it
/// sets and adds the repository to the catalog. Returns the merged index. An immutable tag
/// (`immutable`) that would move refuses the whole commit, decided inside the compare-and-swap.
pub async fn commit_repository(
    store: &dyn Store,
    update: &RepoIndex,
    immutable: &Immutable,
) -> anyhow::Result<RepoIndex> {
    ensure_content_present(store, update).await?;
    let merged = try_update_index(store, &update.name, |idx| {
        for (tag, d) in &update.tags {
            let current = idx.tags.get(tag).map(|c| &c.digest);
            immutable.check(&update.name, tag, current, &d.digest)?;
        }
        idx.merge(update);
        Ok(())
    })
    .await?;
    let touched: Vec<Tag> = update.tags.keys().cloned().collect();
    write_derived(store, &update.name, &touched).await?;
    add_to_catalog(store, &update.name).await?;
    Ok(merged)
}

/// Concurrent store requests while checking content before a commit.
const CHECK_PARALLEL: usize = 8;

/// Checks, just before the index commit, that every manifest and blob `update` references is in
/// the store with its size.
///
/// Blobs and manifests the store already had were found present at the start of the publish,
/// possibly minutes ago; a concurrent `prune` may have deleted one since, if no index referenced
/// it then (an untagged image being re-published). Checking again here shrinks that window from
/// the whole upload to the instant before the commit (see `docs/store-care.md`), and a publish
/// that lost content fails without committing anything, so re-running it repairs everything.
async fn ensure_content_present(store: &dyn Store, update: &RepoIndex) -> anyhow::Result<()> {
    let wanted: Vec<(String, u64)> = update
        .manifests
        .iter()
        .map(|(d, e)| (layout::manifest(d), e.size))
        .chain(
            update
                .blobs
                .iter()
                .map(|(d, size)| (layout::blob(d), *size)),
        )
        .collect();
    let mut missing = Vec::new();
    // Plain chunks of boxed futures: callers spawn this future, and closures returning borrowing
    // `async` blocks would not be `Send` for every lifetime.
    for chunk in wanted.chunks(CHECK_PARALLEL) {
        let heads = futures::future::try_join_all(chunk.iter().map(|(k, _)| store.head(k)))
            .await
            .context("cannot check the content before committing")?;
        for ((key, size), meta) in chunk.iter().zip(heads) {
            if meta.is_none_or(|m| m.size != *size) {
                missing.push(key.clone());
            }
        }
    }
    if !missing.is_empty() {
        bail!(
            "{}: content disappeared while publishing (a concurrent prune?), so nothing was \
             committed; publish again to upload it: {}",
            update.name,
            missing.join(", ")
        );
    }
    Ok(())
}

/// Applies `change` to a repository index under compare-and-swap (creating the index if there is
/// none), retrying on conflicts. Returns the index as committed. `prune` and `untag` use this
/// with their own changes.
pub async fn update_index(
    store: &dyn Store,
    name: &RepoName,
    mut change: impl FnMut(&mut RepoIndex),
) -> anyhow::Result<RepoIndex> {
    try_update_index(store, name, |idx| {
        change(idx);
        Ok(())
    })
    .await
}

/// [`update_index`] with a change that may refuse (nothing is written then).
pub async fn try_update_index(
    store: &dyn Store,
    name: &RepoName,
    mut change: impl FnMut(&mut RepoIndex) -> anyhow::Result<()>,
) -> anyhow::Result<RepoIndex> {
    let key = layout::repo_index(name);
    let committed = update_json(store, &key, |doc: &mut Option<RepoIndex>| {
        let idx = doc.get_or_insert_with(|| RepoIndex::new(name.clone()));
        idx.ensure_supported()
            .with_context(|| format!("{key}: cannot parse the repository index"))?;
        if idx.name != *name {
            bail!(
                "{key}: the index is for repository {}, not {name}",
                idx.name
            );
        }
        change(idx)
    })
    .await?;
    Ok(committed.expect("the change creates the index"))
}

/// Writes `_manifests/<tag>` for `touched` and `_tags.json` from the current index, and repeats
/// until the index stops moving underneath.
pub async fn write_derived(
    store: &dyn Store,
    name: &RepoName,
    touched: &[Tag],
) -> anyhow::Result<()> {
    let key = layout::repo_index(name);
    // Copies written from an index that then moved: rewritten on the next attempt even when
    // their size looks right (two images' manifests can be the same size).
    let mut written: Vec<Tag> = Vec::new();
    for attempt in 0..MAX_ATTEMPTS {
        let Some(obj) = store.get(&key).await? else {
            bail!("{key}: disappeared while writing its derived files");
        };
        let idx = RepoIndex::from_slice(&obj.bytes)
            .with_context(|| format!("{key}: cannot parse the repository index"))?;
        // Besides the tags this publish set, repair copies an earlier publish left missing or
        // wrong-sized (it crashed between its index commit and here); one listing finds them.
        let prefix = layout::tag_manifests_prefix(name);
        let copies: HashMap<String, u64> = store
            .list(&prefix)
            .await?
            .into_iter()
            .map(|m| (m.key[prefix.len()..].to_owned(), m.size))
            .collect();
        let stale = idx.tags.iter().filter(|(t, d)| {
            !touched.contains(t) && !written.contains(t) && copies.get(t.as_str()) != Some(&d.size)
        });
        let todo: Vec<Tag> = touched
            .iter()
            .chain(written.iter().filter(|t| !touched.contains(t)))
            .chain(stale.map(|(t, _)| t))
            .cloned()
            .collect();
        for tag in &todo {
            let Some(desc) = idx.tags.get(tag) else {
                // Untagged concurrently: the copy is stale, not dangerous; `serve` uses the index.
                continue;
            };
            let mkey = layout::manifest(&desc.digest);
            let manifest = store.get(&mkey).await?.with_context(|| {
                format!("{key}: tag {tag} points at {mkey}, which is missing from the store")
            })?;
            let tkey = layout::tag_manifest(name, tag);
            let opts = PutOptions {
                content_type: desc.media_type.clone(),
                cache_control: layout::CACHE_INDEX,
                mode: PutMode::Overwrite,
            };
            put_if_changed(store, &tkey, manifest.bytes, &opts).await?;
            if !written.contains(tag) {
                written.push(tag.clone());
            }
        }
        let tkey = layout::tags_list(name);
        let body = serde_json::to_vec_pretty(&idx.tags_list()).expect("tags list serialises");
        let opts = PutOptions {
            content_type: layout::JSON_CONTENT_TYPE.to_owned(),
            cache_control: layout::CACHE_INDEX,
            mode: PutMode::Overwrite,
        };
        put_if_changed(store, &tkey, Bytes::from(body), &opts).await?;
        let now = store.get(&key).await?.map(|o| o.version);
        if now.as_ref() == Some(&obj.version) {
            return Ok(());
        }
        tracing::debug!(
            "{key}: changed while writing derived files, rewriting (attempt {attempt})"
        );
    }
    bail!("{key}: gave up rewriting derived files after {MAX_ATTEMPTS} attempts; the index keeps changing")
}

/// Writes a derived file unless it already holds exactly `bytes`: a re-publish of an unchanged
/// image then writes nothing at all (and a CDN keeps its cached copy).
async fn put_if_changed(
    store: &dyn Store,
    key: &str,
    bytes: Bytes,
    opts: &PutOptions,
) -> anyhow::Result<()> {
    if store.get(key).await?.is_some_and(|o| o.bytes == bytes) {
        return Ok(());
    }
    store
        .put(key, bytes, opts)
        .await
        .with_context(|| format!("cannot write {key}"))
}

/// Writes the `_health` object that origins' active health checks fetch, once per store.
pub async fn write_health_canary(store: &dyn Store) -> anyhow::Result<()> {
    if store.head(layout::HEALTH).await?.is_none() {
        let opts = PutOptions {
            content_type: "text/plain".into(),
            cache_control: "no-cache",
            mode: PutMode::Overwrite,
        };
        store
            .put(layout::HEALTH, Bytes::from_static(b"ok\n"), &opts)
            .await?;
    }
    Ok(())
}

/// How a blob is stored: opaque bytes, cached forever (its key is its digest).
pub fn blob_put_options() -> PutOptions {
    PutOptions {
        content_type: layout::BLOB_CONTENT_TYPE.to_owned(),
        cache_control: layout::CACHE_IMMUTABLE,
        mode: PutMode::Overwrite,
    }
}

/// How a manifest is stored: with its media type (origins serve it as `Content-Type`), cached
/// forever.
pub fn manifest_put_options(media_type: &str) -> PutOptions {
    PutOptions {
        content_type: media_type.to_owned(),
        cache_control: layout::CACHE_IMMUTABLE,
        mode: PutMode::Overwrite,
    }
}

/// Adds a repository to `_catalog.json` under compare-and-swap.
pub async fn add_to_catalog(store: &dyn Store, name: &RepoName) -> anyhow::Result<()> {
    update_json(store, layout::CATALOG, |doc: &mut Option<Catalog>| {
        let catalog = doc.get_or_insert_with(Catalog::default);
        // Older or hand-written catalogs may be unsorted; `insert` relies on order.
        catalog.repositories.sort();
        catalog.repositories.dedup();
        catalog.insert(name);
        Ok(())
    })
    .await?;
    Ok(())
}

/// Removes a repository from `_catalog.json` under compare-and-swap (`delete-repository`).
pub async fn remove_from_catalog(store: &dyn Store, name: &RepoName) -> anyhow::Result<()> {
    update_json(store, layout::CATALOG, |doc: &mut Option<Catalog>| {
        if let Some(catalog) = doc {
            catalog.repositories.retain(|r| r != name.as_str());
        }
        Ok(())
    })
    .await?;
    Ok(())
}
