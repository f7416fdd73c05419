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

pub mod archive;
mod compress;
mod docker_archive;
mod files;
mod image;
mod oci;
mod pgzip;
pub mod pin;
pub mod remote;
mod render;
mod reuse;
pub mod source;
mod upload;
mod v1;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use anyhow::{bail, Context};
use bytes::Bytes;

use crate::commit::commit_repository;

use crate::index::{Descriptor, ManifestEntry, RepoIndex};
use crate::layout;
use crate::reference::{Digest, RepoName, Tag, TaggedName};
use crate::store::Store;
use crate::walk::WalkLimits;
use files::Files;
use image::Node;
use source::{Selector, SourceSpec};

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
    /// Maximum concurrent blob uploads; also the threads that compress layers (at most the cores).
    pub jobs: usize,
    /// Draw progress bars on stderr.
    pub progress: bool,
    /// Also write the registry v1 view of the image (`--v1`, see `docs/v1.md`).
    pub v1: bool,
    /// Options of `docker://` sources (credentials, `--platform`, `--with-referrers`).
    pub mirror: remote::MirrorOptions,
    /// `--pin`, the registry host for printed references, the output format.
    pub pin: pin::PinOptions,
    /// What an archive source may expand to (`--max-archive-bytes`).
    pub archive: archive::ArchiveLimits,
    /// Bounds of the walk through the source's image indexes (`--max-manifests`).
    pub limits: WalkLimits,
    /// Set by mirror mode's copier: where the content goes and where its tags come from.
    pub fill: Option<Fill>,
    /// Tags that may never move (`[[immutable]]`).
    pub immutable: crate::immutable::Immutable,
}

impl PublishOptions {
    /// `source` to `tags` with every other option at the command's default (gzip, 4 jobs, no
    /// progress bars, no v1 view, default limits); callers override fields with `..`.
    pub fn new(source: String, tags: Vec<TaggedName>) -> PublishOptions {
        PublishOptions {
            source,
            tags,
            compression: Compression::default(),
            jobs: 4,
            progress: false,
            v1: false,
            mirror: Default::default(),
            pin: Default::default(),
            archive: Default::default(),
            limits: Default::default(),
            fill: None,
            immutable: Default::default(),
        }
    }
}

/// A publish made by mirror mode (`src/mirror/populate.rs`).
#[derive(Debug, Clone)]
pub struct Fill {
    /// The store repository that receives the content, tagged or not (a pull by digest names
    /// no tag, yet its manifests must be referenced for `serve` to answer them).
    pub repo: RepoName,
    /// The upstream as clients name it: every tag this publish sets is recorded as mirrored
    /// from it, resolved now (`RepoIndex::mirrored`).
    pub upstream: String,
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
    /// The source as given.
    pub source: String,
    /// What was downloaded, for `docker://` sources.
    pub mirror: Option<remote::MirrorStats>,
    /// The `--pin` tag, in every repository published to.
    pub pin: Option<crate::reference::Tag>,
    /// The immutable reference to deploy: `HOST/REPO@DIGEST` (`REPO@DIGEST` without a host).
    pub reference: Option<String>,
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
        if let Some(m) = &self.mirror {
            write!(
                f,
                "\ndownloaded from {}: {} blob(s) ({}), {} manifest(s) ({})",
                m.registry,
                m.blobs_downloaded,
                HumanBytes(m.bytes_downloaded),
                m.manifests_downloaded,
                HumanBytes(m.manifest_bytes_downloaded)
            )?;
        }
        if let (Some(p), Some(r)) = (&self.pin, &self.reference) {
            write!(f, "\npinned: {p}\ndeploy: {r}")?;
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

/// Loads the image `select` picks from an OCI layout in `files` (a directory or an archive).
fn load_oci(
    files: Files,
    select: Option<&Selector>,
    label: &str,
    limits: WalkLimits,
) -> anyhow::Result<Loaded> {
    let layout = oci::Layout::open(files, limits)?;
    let desc = layout.select(select, label)?;
    let root = layout.load(&desc)?;
    Ok(Loaded {
        files: layout.files,
        root,
        default_tags: Vec::new(),
    })
}

fn load(
    spec: &SourceSpec,
    label: &str,
    archive: &archive::ArchiveLimits,
    limits: WalkLimits,
) -> anyhow::Result<Loaded> {
    let loaded = match spec {
        SourceSpec::Oci { dir, select } => {
            if !dir.is_dir() {
                bail!("{label}: {} is not a directory", dir.display());
            }
            load_oci(Files::Dir(dir.clone()), select.as_ref(), label, limits)
        }
        SourceSpec::OciArchive { file, select } => load_oci(
            Files::open_archive(file, archive)?,
            select.as_ref(),
            label,
            limits,
        ),
        SourceSpec::DockerArchive { file, select } => docker_archive::load(
            Files::open_archive(file, archive)?,
            select.as_ref(),
            label,
            limits,
        ),
        SourceSpec::Docker(_) => bail!("internal error: {label} loads through remote::load"),
    }?;
    // Only now is it known which members of an archive the image uses.
    let blobs = loaded.root.blobs();
    loaded
        .files
        .prefetch(blobs.iter().filter_map(|b| b.source.path()))?;
    Ok(loaded)
}

/// Opens a file source (`oci:`, `oci-archive:`, `docker-archive:`) and loads and verifies its
/// image, publishing nothing: the entry point of the fuzz harnesses (`fuzz/`), with the default
/// walk limits and a small expansion cap so a bomb costs the fuzzer little.
#[doc(hidden)]
pub fn load_file_source(source: &str) -> anyhow::Result<()> {
    let archive = archive::ArchiveLimits {
        max_expanded: 64 << 20,
    };
    load(
        &SourceSpec::parse(source)?,
        source,
        &archive,
        WalkLimits::default(),
    )
    .map(drop)
}

/// Publishes one image from `opts.source` under every tag in `opts.tags`.
pub async fn publish(store: Arc<dyn Store>, opts: &PublishOptions) -> anyhow::Result<Summary> {
    let spec = SourceSpec::parse(&opts.source)?;
    let label = opts.source.clone();
    // A registry source loads over the network (async); file sources on the blocking pool.
    let (loaded, mirror) = match spec {
        SourceSpec::Docker(r) => {
            let (l, m) = remote::load(&r, &opts.mirror, store.as_ref(), opts.limits).await?;
            (l, Some(m))
        }
        spec => {
            let (label, archive, limits) = (label.clone(), opts.archive, opts.limits);
            let l = tokio::task::spawn_blocking(move || load(&spec, &label, &archive, limits))
                .await??;
            (l, None)
        }
    };
    let mut tags = if opts.tags.is_empty() {
        // `docker://REPO@DIGEST --pin` needs no tag: the pin is one.
        if loaded.default_tags.is_empty()
            && !(opts.pin.pin && mirror.is_some())
            && opts.fill.is_none()
        {
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

    let repos: Vec<RepoName> = tags
        .iter()
        .map(|t| t.name.clone())
        .chain(opts.fill.iter().map(|f| f.repo.clone()))
        .collect();
    let known = reuse::known_layers(store.as_ref(), &repos, opts.compression).await;
    let plan = upload::UploadPlan {
        compression: opts.compression,
        jobs: opts.jobs,
        progress: opts.progress,
        label: label.clone(),
        known,
        max_plain: opts.archive.max_expanded,
    };
    let (produced, stats) = upload::upload_all(
        store.clone(),
        loaded.files.clone(),
        remote::all_blobs(&loaded.root, mirror.as_ref()),
        plan,
    )
    .await?;

    let mut rendered = render::render(&loaded.root, &produced, opts.compression)?;
    if let Some(m) = &mirror {
        m.render_into(&mut rendered, &produced, opts.compression)?;
        rendered.notes.extend(m.notes.iter().cloned());
    }
    let pin = if opts.pin.pin {
        let fallback = mirror.as_ref().map(|m| m.default_repo());
        Some(pin::add_pin(store.as_ref(), &mut tags, fallback, &rendered.root.digest).await?)
    } else {
        None
    };
    let mut manifests_written = 0;
    for m in &rendered.manifests {
        let key = layout::manifest(&m.digest);
        if let Some(meta) = store.head(&key).await? {
            if meta.size == m.bytes.len() as u64 {
                continue;
            }
        }
        let put = crate::commit::manifest_put_options(&m.media_type);
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
    if let Some(fill) = &opts.fill {
        let u = RepoIndex::new(fill.repo.clone());
        updates.insert(fill.repo.clone(), u);
    }
    for t in &tags {
        let u = updates
            .entry(t.name.clone())
            .or_insert_with(|| RepoIndex::new(t.name.clone()));
        u.tags.insert(t.tag.clone(), rendered.root.clone());
    }
    let resolved = jiff::Timestamp::now().as_second();
    for u in updates.values_mut() {
        let published: Vec<(Tag, Digest)> = u
            .tags
            .iter()
            .map(|(t, d)| (t.clone(), d.digest.clone()))
            .collect();
        for (tag, digest) in published {
            let m = crate::index::TagMove {
                digest,
                at: resolved,
            };
            u.history.insert(tag, vec![m]);
        }
        u.manifests.clone_from(&manifests);
        u.blobs.clone_from(&rendered.blobs);
        if let Some(fill) = &opts.fill {
            for t in u.tags.keys() {
                let m = crate::index::MirroredTag {
                    upstream: fill.upstream.clone(),
                    resolved,
                };
                u.mirrored.insert(t.clone(), m);
            }
        }
    }
    if let Some(m) = &mirror {
        for u in updates.values_mut() {
            u.referrers = m.referrers_map();
            u.tags.extend(m.referrer_tags.iter().cloned());
        }
    }
    // v1: image files and the id table now (content before references), the index section with
    // the commit, the per-repository v1 files after it.
    let v1_plan = if opts.v1 {
        let mut notes = Vec::new();
        let plan = v1::plan(store.as_ref(), &loaded.files, &rendered, &mut notes).await?;
        rendered.notes.extend(notes);
        plan
    } else {
        None
    };
    if let Some(plan) = &v1_plan {
        let names: Vec<RepoName> = updates.keys().cloned().collect();
        v1::write_images(store.as_ref(), plan, &names).await?;
        for u in updates.values_mut() {
            u.v1 = Some(plan.index_for(u.tags.keys()));
        }
    }
    for u in updates.values() {
        let merged = commit_repository(store.as_ref(), u, &opts.immutable).await?;
        remote::write_referrers_indexes(store.as_ref(), &merged, u.referrers.keys()).await?;
        if merged.v1.is_some() {
            let touched: Vec<_> = u.v1.iter().flat_map(|v| v.tags.keys().cloned()).collect();
            v1::write_derived(store.as_ref(), &u.name, &touched).await?;
        }
    }
    crate::commit::write_health_canary(store.as_ref()).await?;

    let reference = tags.first().map(|t| {
        pin::reference(
            opts.pin.registry_host.as_deref(),
            &t.name,
            &rendered.root.digest,
        )
    });
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
        source: opts.source.clone(),
        mirror: mirror.as_ref().map(|m| m.stats()),
        pin,
        reference,
    })
}

#[cfg(test)]
mod tests;
