//! Finding layers the store already holds in compressed form, so re-publishing an uncompressed
//! source (every `docker save` in CI) does not recompress gigabytes just to learn digests it
//! already knows.
//!
//! The compressed digest of an uncompressed layer is only known after compressing it. But the
//! images already tagged in the target repositories say it: their configs list `diff_ids`, and
//! their manifests list the compressed layer for each one, in the same order. Those were verified
//! against the `diff_id` when they were published, so a layer found there can be reused without
//! reading the source. This also keeps digests stable when the compressor itself changes.

use std::collections::{HashMap, HashSet};

use crate::index::RepoIndex;
use crate::layout;
use crate::oci::{media, AnyManifest};
use crate::publish::oci::diff_ids;
use crate::publish::render::Produced;
use crate::publish::Compression;
use crate::reference::{Digest, RepoName};
use crate::store::Store;

/// Bounds the look-up for repositories with very many tags: it is an optimisation only.
const MAX_MANIFESTS: usize = 64;

fn wanted(media_type: &str, c: Compression) -> bool {
    match c {
        Compression::Gzip => {
            media_type == media::OCI_LAYER_GZIP || media_type == media::DOCKER_LAYER_GZIP
        }
        Compression::Zstd => media_type == media::OCI_LAYER_ZSTD,
    }
}

/// diff_id -> the compressed blob the tagged images in `repos` already use for it. Failures only
/// cost the optimisation, so they are logged and skipped.
pub async fn known_layers(
    store: &dyn Store,
    repos: &[RepoName],
    compression: Compression,
) -> HashMap<Digest, Produced> {
    let mut out = HashMap::new();
    let mut todo: Vec<Digest> = Vec::new();
    for name in repos {
        let key = layout::repo_index(name);
        match store.get(&key).await {
            Ok(Some(obj)) => match RepoIndex::from_slice(&obj.bytes) {
                Ok(idx) => todo.extend(idx.tags.values().map(|d| d.digest.clone())),
                Err(e) => tracing::debug!("{key}: {e:#}"),
            },
            Ok(None) => {}
            Err(e) => tracing::debug!("{key}: {e:#}"),
        }
    }
    let mut seen = HashSet::new();
    while let Some(d) = todo.pop() {
        if !seen.insert(d.clone()) || seen.len() > MAX_MANIFESTS {
            continue;
        }
        let Ok(Some(obj)) = store.get(&layout::manifest(&d)).await else {
            continue;
        };
        let Ok(m) = serde_json::from_slice::<AnyManifest>(&obj.bytes) else {
            continue;
        };
        todo.extend(m.manifests.into_iter().flatten().map(|c| c.digest));
        let Some(config) = m.config else {
            continue;
        };
        let layers = m.layers.unwrap_or_default();
        if !layers.iter().any(|l| wanted(&l.media_type, compression)) {
            continue;
        }
        let Ok(Some(cfg)) = store.get(&layout::blob(&config.digest)).await else {
            continue;
        };
        let Ok(ids) = diff_ids(&cfg.bytes) else {
            continue;
        };
        if ids.len() != layers.len() {
            continue;
        }
        for (id, l) in ids.into_iter().zip(layers) {
            if wanted(&l.media_type, compression) {
                out.entry(id).or_insert(Produced {
                    digest: l.digest,
                    size: l.size,
                });
            }
        }
    }
    tracing::debug!(
        "{} compressed layers known from the target repositories",
        out.len()
    );
    out
}
