//! `publish`: copy an image from a local source into the static layout.
//!
//! The phases run in the order that makes a crash or a race harmless (see `docs/layout.md`):
//! 1. load and verify the source's manifest tree (nothing written yet);
//! 2. blobs: only missing ones, each verified in a staging file before an atomic put;
//! 3. manifests, children before the indexes that list them;
//! 4. per repository, the index under compare-and-swap, then the derived files and the catalog.
//!
//! Until step 4, nothing in the store refers to the new content, so a reader never sees a tag
//! whose content is missing.

pub mod commit;
mod compress;
mod docker_archive;
mod files;
pub(crate) mod hashing;
mod image;
mod oci;
mod render;
mod reuse;
pub mod source;
mod upload;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use anyhow::{bail, Context};
use bytes::Bytes;

pub use commit::commit_repository;

use crate::index::{Descriptor, ManifestEntry, RepoIndex};
use crate::layout;
use crate::reference::{RepoName, TaggedName};
use crate::store::{PutMode, PutOptions, Store};
use files::Files;
use image::Node;
use source::SourceSpec;

/// How uncompressed layers are compressed on the way into the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Compression {
    /// gzip: what every client supports.
    #[default]
    Gzip,
    /// zstd: smaller and faster to decompress; needs containerd ≥ 1.5 / podman ≥ 3 (OCI media
    /// types only, since Docker's schema2 has no zstd type).
    Zstd,
}

/// What `publish` was asked to do.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]` or `docker-archive:FILE[:REPO:TAG]`.
    pub source: String,
    /// Where to publish; empty means the source's own `REPO:TAG` (docker archives carry one).
    pub tags: Vec<TaggedName>,
    pub compression: Compression,
    /// Maximum concurrent blob uploads.
    pub jobs: usize,
    /// Draw progress bars on stderr.
    pub progress: bool,
}

/// What a publish did, for the user.
#[derive(Debug, Clone)]
pub struct Summary {
    pub tags: Vec<(TaggedName, Descriptor)>,
    pub blobs_written: u64,
    pub bytes_written: u64,
    pub blobs_skipped: u64,
    pub bytes_skipped: u64,
    pub manifests_written: u64,
    /// Things worth knowing, e.g. a digest that differs from the source's.
    pub notes: Vec<String>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use indicatif::HumanBytes;
        write!(
            f,
            "blobs: wrote {} ({}), skipped {} already in the store ({}); manifests: wrote {}",
            self.blobs_written,
            HumanBytes(self.bytes_written),
            self.blobs_skipped,
            HumanBytes(self.bytes_skipped),
            self.manifests_written
        )?;
        for (t, d) in &self.tags {
            write!(
                f,
                "\n{t} -> {} ({}, {} bytes)",
                d.digest, d.media_type, d.size
            )?;
        }
        for n in &self.notes {
            write!(f, "\nnote: {n}")?;
        }
        Ok(())
    }
}

/// A source, opened and its chosen image loaded and verified.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub files: Files,
    pub root: Node,
    /// The `REPO:TAG`s the source itself gives the image (docker archives).
    pub default_tags: Vec<TaggedName>,
}

fn load(spec: &SourceSpec, label: &str) -> anyhow::Result<Loaded> {
    match spec {
        SourceSpec::Oci { dir, select } => {
            if !dir.is_dir() {
                bail!("{label}: {} is not a directory", dir.display());
            }
            let layout = oci::Layout::open(Files::Dir(dir.clone()))?;
            let desc = layout.select(select.as_ref(), label)?;
            let root = layout.load(&desc)?;
            Ok(Loaded {
                files: layout.files,
                root,
                default_tags: Vec::new(),
            })
        }
        SourceSpec::OciArchive { file, select } => {
            let layout = oci::Layout::open(Files::open_tar(file)?)?;
            let desc = layout.select(select.as_ref(), label)?;
            let root = layout.load(&desc)?;
            Ok(Loaded {
                files: layout.files,
                root,
                default_tags: Vec::new(),
            })
        }
        SourceSpec::DockerArchive { file, select } => {
            docker_archive::load(Files::open_tar(file)?, select.as_ref(), label)
        }
    }
}

/// Publishes one image from `opts.source` under every tag in `opts.tags`.
pub async fn publish(store: Arc<dyn Store>, opts: &PublishOptions) -> anyhow::Result<Summary> {
    let spec = SourceSpec::parse(&opts.source)?;
    let label = opts.source.clone();
    let loaded = {
        let label = label.clone();
        tokio::task::spawn_blocking(move || load(&spec, &label)).await??
    };
    let tags = if opts.tags.is_empty() {
        if loaded.default_tags.is_empty() {
            bail!("{label}: the source does not name the image; pass --tag REPO:TAG");
        }
        loaded.default_tags.clone()
    } else {
        opts.tags.clone()
    };
    tracing::info!(
        "publishing {label} as {} to {}",
        tags.iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        store.describe()
    );

    let repos: Vec<RepoName> = tags.iter().map(|t| t.name.clone()).collect();
    let known = reuse::known_layers(store.as_ref(), &repos, opts.compression).await;
    let plan = upload::UploadPlan {
        compression: opts.compression,
        jobs: opts.jobs,
        progress: opts.progress,
        label: label.clone(),
        known,
    };
    let (produced, stats) = upload::upload_all(
        store.clone(),
        loaded.files.clone(),
        loaded.root.blobs(),
        plan,
    )
    .await?;

    let rendered = render::render(&loaded.root, &produced, opts.compression)?;
    let mut manifests_written = 0;
    for m in &rendered.manifests {
        let key = layout::manifest(&m.digest);
        if let Some(meta) = store.head(&key).await? {
            if meta.size == m.bytes.len() as u64 {
                continue;
            }
        }
        let put = PutOptions {
            content_type: m.media_type.clone(),
            cache_control: layout::CACHE_IMMUTABLE,
            mode: PutMode::Overwrite,
        };
        store
            .put(&key, Bytes::from(m.bytes.clone()), &put)
            .await
            .with_context(|| format!("cannot write {key} to {}", store.describe()))?;
        tracing::debug!("wrote {key}");
        manifests_written += 1;
    }

    let manifests: BTreeMap<_, _> = rendered
        .manifests
        .iter()
        .map(|m| {
            (
                m.digest.clone(),
                ManifestEntry {
                    media_type: m.media_type.clone(),
                    size: m.bytes.len() as u64,
                },
            )
        })
        .collect();
    let mut updates: BTreeMap<RepoName, RepoIndex> = BTreeMap::new();
    for t in &tags {
        let u = updates
            .entry(t.name.clone())
            .or_insert_with(|| RepoIndex::new(t.name.clone()));
        u.tags.insert(t.tag.clone(), rendered.root.clone());
        u.manifests.clone_from(&manifests);
        u.blobs.clone_from(&rendered.blobs);
    }
    for u in updates.values() {
        commit_repository(store.as_ref(), u).await?;
    }
    write_health_canary(store.as_ref()).await?;

    Ok(Summary {
        tags: tags
            .into_iter()
            .map(|t| (t, rendered.root.clone()))
            .collect(),
        blobs_written: stats.blobs_written,
        bytes_written: stats.bytes_written,
        blobs_skipped: stats.blobs_skipped,
        bytes_skipped: stats.bytes_skipped,
        manifests_written,
        notes: rendered.notes,
    })
}

/// Writes the `_health` object that origins' active health checks fetch, once per store.
async fn write_health_canary(store: &dyn Store) -> anyhow::Result<()> {
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

#[cfg(test)]
mod tests;
