//! `export`: write an image from the store to a `docker load`-able tarball or an OCI layout,
//! with no endpoint running.
//!
//! This is dogestry's pull path: a machine that can read the bucket (or the directory) but cannot
//! or should not talk to a registry still gets the exact published image. Everything is read
//! through the repository index, as `serve` would: a tag resolves through it, and a digest is only
//! exported when the repository references it. Every manifest and blob is checked against its
//! digest and size on the way, so a damaged store cannot produce a plausible-looking export.
//!
//! - `oci:DIR[:TAG]` writes the manifests and blobs byte-for-byte (an image index is kept whole
//!   unless `--platform` picks one image), and adds or replaces the `index.json` entry whose
//!   `org.opencontainers.image.ref.name` is `TAG`, as `skopeo copy` does. Docker schema2
//!   manifests and lists are the exception: skopeo and containers/image ignore layout entries
//!   of Docker media types, so those get OCI media types (and so new manifest digests), exactly
//!   as `skopeo copy` converts them; configs and layers stay byte-for-byte.
//! - `docker-archive:FILE[:REPO:TAG]` writes the shape `docker save` wrote before Docker 25:
//!   `manifest.json` (`Config`, `RepoTags`, `Layers`), the config as `<hex>.json`, each layer as
//!   `<hex>/layer.tar`, and `repositories`. gzip layers are written as they are stored (`docker
//!   load`, podman and skopeo all detect the compression); zstd layers are decompressed, since
//!   older `docker load` cannot read them. One image only: an image index needs a platform.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

use crate::hashing::{Hasher, HashingReader};
use crate::index::RepoIndex;
use crate::layout;
use crate::oci::{media, AnyManifest, Descriptor, Platform};
use crate::reference::{Digest, RepoName, TaggedName};
use crate::store::Store;
use crate::walk::{self, WalkLimits};

const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Concurrent manifest reads while walking an image index.
const PARALLEL: usize = 8;

/// `REPO:TAG` or `REPO@DIGEST`: what to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportRef {
    Tag(TaggedName),
    Digest(RepoName, Digest),
}

impl ExportRef {
    pub fn name(&self) -> &RepoName {
        match self {
            ExportRef::Tag(t) => &t.name,
            ExportRef::Digest(n, _) => n,
        }
    }
}

impl std::str::FromStr for ExportRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some((name, digest)) = s.split_once('@') {
            let name = RepoName::parse(name).map_err(|e| e.to_string())?;
            let digest = Digest::parse(digest).map_err(|e| e.to_string())?;
            return Ok(ExportRef::Digest(name, digest));
        }
        s.parse::<TaggedName>()
            .map(ExportRef::Tag)
            .map_err(|e| format!("{e} (expected REPO:TAG or REPO@DIGEST)"))
    }
}

impl fmt::Display for ExportRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExportRef::Tag(t) => t.fmt(f),
            ExportRef::Digest(n, d) => write!(f, "{n}@{d}"),
        }
    }
}

/// Where to export to, in skopeo's transport syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// `docker-archive:FILE[:REPO:TAG]`
    DockerArchive {
        file: PathBuf,
        tag: Option<TaggedName>,
    },
    /// `oci:DIR[:REF]`
    Oci {
        dir: PathBuf,
        ref_name: Option<String>,
    },
}

impl std::str::FromStr for Destination {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let usage = "expected docker-archive:FILE[:REPO:TAG] or oci:DIR[:TAG]";
        let (transport, rest) = s
            .split_once(':')
            .ok_or_else(|| format!("invalid destination {s:?}: {usage}"))?;
        // Like skopeo, the path ends at the first `:`.
        let (path, extra) = match rest.split_once(':') {
            Some((p, e)) => (p, Some(e)),
            None => (rest, None),
        };
        if path.is_empty() {
            return Err(format!("invalid destination {s:?}: the path is empty"));
        }
        match transport {
            "docker-archive" => Ok(Destination::DockerArchive {
                file: PathBuf::from(path),
                tag: extra
                    .map(|t| {
                        t.parse::<TaggedName>()
                            .map_err(|e| format!("invalid REPO:TAG {t:?} in {s:?}: {e}"))
                    })
                    .transpose()?,
            }),
            "oci" => {
                if extra.is_some_and(|e| e.is_empty() || e.chars().any(|c| c.is_control())) {
                    return Err(format!("invalid reference name in {s:?}"));
                }
                Ok(Destination::Oci {
                    dir: PathBuf::from(path),
                    ref_name: extra.map(str::to_owned),
                })
            }
            other => Err(format!(
                "unsupported destination transport {other:?} in {s:?}: {usage}"
            )),
        }
    }
}

/// What `export` was asked to do.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub reference: ExportRef,
    pub destination: Destination,
    /// Which image of an image index; required for docker-archive unless the host's exists.
    pub platform: Option<Platform>,
    /// Bounds of the walk through an image index.
    pub limits: WalkLimits,
}

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct ExportSummary {
    pub reference: String,
    pub digest: Digest,
    pub destination: String,
    pub manifests: usize,
    pub blobs: usize,
    pub bytes: u64,
    pub notes: Vec<String>,
}

impl fmt::Display for ExportSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "exported {} ({}) to {}: {} manifest(s), {} blob(s), {}",
            self.reference,
            self.digest,
            self.destination,
            self.manifests,
            self.blobs,
            indicatif::HumanBytes(self.bytes)
        )?;
        for n in &self.notes {
            write!(f, "\nnote: {n}")?;
        }
        Ok(())
    }
}

/// A manifest read from the store, checked against its descriptor.
struct Fetched {
    digest: Digest,
    media_type: String,
    bytes: Bytes,
    doc: AnyManifest,
}

impl Fetched {
    fn is_index(&self) -> bool {
        self.doc.manifests.is_some()
    }
}

async fn fetch_manifest(
    store: &dyn Store,
    digest: &Digest,
    size: u64,
    media_type: &str,
) -> anyhow::Result<Fetched> {
    let key = layout::manifest(digest);
    let obj = store
        .get(&key)
        .await?
        .ok_or_else(|| anyhow!("{key} is missing from the store (run verify)"))?;
    let got = Hasher::digest_like(digest, &obj.bytes);
    if got != *digest || obj.bytes.len() as u64 != size {
        bail!(
            "{key}: {} bytes hashing to {got}, expected {size} bytes (run verify --deep)",
            obj.bytes.len()
        );
    }
    let doc: AnyManifest =
        serde_json::from_slice(&obj.bytes).with_context(|| format!("{key}: not a manifest"))?;
    if doc.manifests.is_none() && doc.config.is_none() {
        bail!("{key}: neither an image manifest nor an image index (schema 1 cannot be exported)");
    }
    let media_type = doc
        .media_type
        .clone()
        .unwrap_or_else(|| media_type.to_owned());
    // The type is written into the layout's index.json, which clients trust as they would a
    // registry's Content-Type.
    media::check(&media_type, doc.artifact_type.is_some(), &key)?;
    Ok(Fetched {
        digest: digest.clone(),
        media_type,
        bytes: obj.bytes,
        doc,
    })
}

/// Resolves the reference through the repository index: a tag to its descriptor, a digest only
/// when the repository references it.
async fn resolve(store: &dyn Store, r: &ExportRef) -> anyhow::Result<Descriptor> {
    let name = r.name();
    let key = layout::repo_index(name);
    let obj = store
        .get(&key)
        .await?
        .ok_or_else(|| anyhow!("repository {name} does not exist in {}", store.describe()))?;
    let idx = RepoIndex::from_slice(&obj.bytes).with_context(|| format!("{key}: cannot parse"))?;
    match r {
        ExportRef::Tag(t) => {
            let d = idx.tags.get(&t.tag).ok_or_else(|| {
                anyhow!(
                    "{name} has no tag {} (it has: {})",
                    t.tag,
                    idx.tags
                        .keys()
                        .map(|t| t.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
            Ok(Descriptor::of_manifest(&d.media_type, &d.digest, d.size))
        }
        ExportRef::Digest(_, d) => {
            let e = idx
                .manifests
                .get(d)
                .ok_or_else(|| anyhow!("{name} does not reference manifest {d}"))?;
            Ok(Descriptor::of_manifest(&e.media_type, d, e.size))
        }
    }
}

/// Picks the image for `platform` out of an index's children.
fn pick<'a>(
    children: &'a [Descriptor],
    platform: Option<&Platform>,
    what: &str,
) -> anyhow::Result<&'a Descriptor> {
    let images: Vec<&Descriptor> = children
        .iter()
        .filter(|c| !media::is_index(&c.media_type))
        // Attestations (buildkit) are `unknown/unknown` manifests, never an image to run.
        .filter(|c| c.platform_label() != "unknown/unknown")
        .collect();
    let available = || {
        images
            .iter()
            .map(|c| c.platform_label())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let want = platform.cloned().unwrap_or_else(Platform::host);
    if let Some(c) = images.iter().find(|c| c.is_for(&want)) {
        return Ok(c);
    }
    if platform.is_none() && images.len() == 1 {
        return Ok(images[0]);
    }
    bail!(
        "{what} is a multi-platform image index without {want}; pick one with --platform \
         (available: {})",
        available()
    )
}

/// Exports one image; see the module docs.
pub async fn export(store: Arc<dyn Store>, opts: &ExportOptions) -> anyhow::Result<ExportSummary> {
    let root_desc = resolve(store.as_ref(), &opts.reference).await?;
    let root_digest = root_desc.digest.clone();
    let what = opts.reference.to_string();
    let docker = matches!(opts.destination, Destination::DockerArchive { .. });
    // One image out of an index: always for a docker-archive, with --platform for oci:.
    let one_image = docker || opts.platform.is_some();
    let platform = opts.platform.as_ref();
    let children_of = |m: &Fetched| -> Vec<Descriptor> {
        let children = m.doc.manifests.as_deref().unwrap_or_default();
        if m.digest == root_digest && one_image {
            // Only the picked image; a failed pick is reported below.
            pick(children, platform, &what)
                .ok()
                .cloned()
                .into_iter()
                .collect()
        } else if docker {
            Vec::new()
        } else {
            children.to_vec()
        }
    };
    let store_ref = store.as_ref();
    let mut fetched =
        walk::walk(
            [root_desc],
            opts.limits,
            PARALLEL,
            &what,
            |c: Descriptor| async move {
                fetch_manifest(store_ref, &c.digest, c.size, &c.media_type).await
            },
            children_of,
        )
        .await?
        .into_map();
    let root = fetched
        .remove(&root_digest)
        .ok_or_else(|| anyhow!("internal error: {root_digest} was not fetched"))?;
    let top = if one_image && root.is_index() {
        let children = root.doc.manifests.as_deref().unwrap_or_default();
        let c = pick(children, platform, &what)?;
        fetched
            .remove(&c.digest)
            .ok_or_else(|| anyhow!("internal error: {} was not fetched", c.digest))?
    } else {
        root
    };
    match &opts.destination {
        Destination::Oci { dir, ref_name } => {
            let ref_name = ref_name.clone().or_else(|| match &opts.reference {
                ExportRef::Tag(t) => Some(t.tag.to_string()),
                ExportRef::Digest(..) => None,
            });
            export_oci(store, top, fetched, dir, ref_name, &what).await
        }
        Destination::DockerArchive { file, tag } => {
            if top.is_index() {
                bail!("{what}: nested image indexes cannot be exported to a docker-archive");
            }
            let tag = tag.clone().or_else(|| match &opts.reference {
                ExportRef::Tag(t) => Some(t.clone()),
                ExportRef::Digest(..) => None,
            });
            export_docker_archive(store, top, file, tag, &what).await
        }
    }
}

// ---------------------------------------------------------------------------------------------
// oci:
// ---------------------------------------------------------------------------------------------

/// Writes `root` and what it reaches; `fetched` holds every manifest below it, from the walk.
async fn export_oci(
    store: Arc<dyn Store>,
    root: Fetched,
    fetched: HashMap<Digest, Fetched>,
    dir: &Path,
    ref_name: Option<String>,
    what: &str,
) -> anyhow::Result<ExportSummary> {
    let blobs_dir = dir.join("blobs");
    tokio::fs::create_dir_all(&blobs_dir)
        .await
        .with_context(|| format!("cannot create {}", blobs_dir.display()))?;
    let layout_file = dir.join("oci-layout");
    if !layout_file.exists() {
        write_file(&layout_file, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    }
    let mut summary = ExportSummary {
        reference: what.to_owned(),
        digest: root.digest.clone(),
        destination: format!(
            "oci:{}{}",
            dir.display(),
            ref_name
                .as_deref()
                .map(|r| format!(":{r}"))
                .unwrap_or_default()
        ),
        manifests: 0,
        blobs: 0,
        bytes: 0,
        notes: Vec::new(),
    };
    let store_digest = root.digest.clone();
    let mut ctx = OciCtx {
        store: store.as_ref(),
        dir,
        summary: &mut summary,
        seen: HashSet::new(),
        fetched,
        written: HashMap::new(),
    };
    let top = write_tree(&mut ctx, &root).await?;
    if top.digest != store_digest {
        summary.notes.push(format!(
            "Docker media types were converted to OCI ones, as `skopeo copy` does (skopeo and \
             containers/image read only OCI types from a layout): the layout's manifest is {}, \
             the store's {store_digest}; configs and layers are byte-for-byte",
            top.digest
        ));
    }
    let root_desc = json!({
        "mediaType": top.media_type,
        "digest": top.digest,
        "size": top.size,
    });

    // index.json: replace the entry carrying the same ref.name (or the same digest, unnamed).
    let index_path = dir.join("index.json");
    let mut index: Value = match std::fs::read(&index_path) {
        Ok(b) => serde_json::from_slice(&b)
            .with_context(|| format!("{}: not an OCI index", index_path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": []})
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", index_path.display())),
    };
    let mut desc = root_desc;
    if let Some(r) = &ref_name {
        desc["annotations"] = json!({ REF_NAME: r });
    }
    let entries = index["manifests"]
        .as_array_mut()
        .ok_or_else(|| anyhow!("{}: has no manifests array", index_path.display()))?;
    entries.retain(|e| match &ref_name {
        Some(r) => e["annotations"][REF_NAME].as_str() != Some(r),
        None => !(e["digest"] == desc["digest"] && e["annotations"][REF_NAME].is_null()),
    });
    entries.push(desc);
    write_file(&index_path, &serde_json::to_vec_pretty(&index)?)?;
    Ok(summary)
}

/// Shared by the steps of one `oci:` export.
struct OciCtx<'a> {
    store: &'a dyn Store,
    dir: &'a Path,
    summary: &'a mut ExportSummary,
    /// Blobs already written.
    seen: HashSet<Digest>,
    /// Every manifest below the root, fetched by the walk.
    fetched: HashMap<Digest, Fetched>,
    /// Manifests already written, by store digest: each is written once.
    written: HashMap<Digest, Written>,
}

/// Where one manifest of the tree ended up in the layout.
#[derive(Clone)]
struct Written {
    media_type: String,
    digest: Digest,
    size: u64,
}

/// Writes a manifest, its children and its blobs into the layout, children first. OCI
/// manifests are written byte-for-byte; Docker ones get OCI media types (and so new digests),
/// and an index whose children changed is rewritten to name them.
fn write_tree<'a>(
    ctx: &'a mut OciCtx<'_>,
    m: &'a Fetched,
) -> futures::future::BoxFuture<'a, anyhow::Result<Written>> {
    Box::pin(async move {
        if let Some(w) = ctx.written.get(&m.digest) {
            return Ok(w.clone());
        }
        let mut doc: Value = serde_json::from_slice(&m.bytes)?;
        let mut changed = false;
        for (i, c) in m.doc.children().enumerate() {
            // The walk fetched (and checked) each child once, against the first descriptor
            // that listed it; every other listing must agree on its size.
            let child = ctx
                .fetched
                .remove(&c.digest)
                .ok_or_else(|| anyhow!("internal error: {} was not fetched", c.digest))?;
            if child.bytes.len() as u64 != c.size {
                bail!(
                    "{}: lists {} with size {}, but it is {} bytes (run verify)",
                    layout::manifest(&m.digest),
                    c.digest,
                    c.size,
                    child.bytes.len()
                );
            }
            let w = write_tree(ctx, &child).await;
            ctx.fetched.insert(c.digest.clone(), child);
            let w = w?;
            if w.digest != c.digest || w.media_type != c.media_type {
                let d = &mut doc["manifests"][i];
                d["mediaType"] = json!(w.media_type);
                d["digest"] = json!(w.digest);
                d["size"] = json!(w.size);
                changed = true;
            }
        }
        for b in m.doc.config.iter().chain(m.doc.layers.iter().flatten()) {
            if !ctx.seen.insert(b.digest.clone()) {
                continue;
            }
            let dest = oci_blob_path(ctx.dir, &b.digest);
            if file_size(&dest) == Some(b.size) {
                continue;
            }
            let key = layout::blob(&b.digest);
            if b.foreign() && ctx.store.head(&key).await?.is_none() {
                ctx.summary.notes.push(format!(
                    "{} is a foreign layer the store does not have; left out, as OCI layouts allow",
                    b.digest
                ));
                continue;
            }
            copy_blob(ctx.store, b, &dest).await?;
            ctx.summary.blobs += 1;
            ctx.summary.bytes += b.size;
        }
        let mut convert = |v: &mut Value| {
            if let Some(t) = v["mediaType"].as_str().and_then(media::docker_to_oci) {
                v["mediaType"] = json!(t);
                changed = true;
            }
        };
        if doc.get("config").is_some() {
            convert(&mut doc["config"]);
        }
        if let Some(layers) = doc.get_mut("layers").and_then(|l| l.as_array_mut()) {
            layers.iter_mut().for_each(&mut convert);
        }
        let mut media_type = m.media_type.clone();
        if let Some(t) = media::docker_to_oci(&m.media_type) {
            doc["mediaType"] = json!(t);
            media_type = t.to_owned();
            changed = true;
        }
        let bytes = if changed {
            Bytes::from(serde_json::to_vec(&doc)?)
        } else {
            m.bytes.clone()
        };
        let digest = if changed {
            Digest::sha256_of(&bytes)
        } else {
            m.digest.clone()
        };
        write_file(&oci_blob_path(ctx.dir, &digest), &bytes)?;
        ctx.summary.manifests += 1;
        ctx.summary.bytes += bytes.len() as u64;
        let w = Written {
            media_type,
            digest,
            size: bytes.len() as u64,
        };
        ctx.written.insert(m.digest.clone(), w.clone());
        Ok(w)
    })
}

fn oci_blob_path(dir: &Path, d: &Digest) -> PathBuf {
    dir.join("blobs").join(d.algorithm().as_str()).join(d.hex())
}

fn file_size(p: &Path) -> Option<u64> {
    std::fs::metadata(p)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len())
}

/// Writes a whole file through a temporary file and a rename, so an interrupted export never
/// leaves a partial file under a content address.
fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(parent)
        .with_context(|| format!("cannot write in {}", parent.display()))?;
    tmp.write_all(bytes)?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Streams a blob from the store into `dest`, checking digest and size before the rename.
async fn copy_blob(store: &dyn Store, b: &Descriptor, dest: &Path) -> anyhow::Result<()> {
    let key = layout::blob(&b.digest);
    let mut r = store
        .get_stream(&key)
        .await?
        .ok_or_else(|| anyhow!("{key} is missing from the store (run verify)"))?;
    let parent = dest.parent().unwrap_or(Path::new("."));
    tokio::fs::create_dir_all(parent).await?;
    let tmp = tempfile::NamedTempFile::new_in(parent)?;
    let mut out = tokio::fs::File::from_std(tmp.reopen()?);
    let mut h = Hasher::new(b.digest.algorithm());
    let mut n = 0u64;
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let k = r
            .read(&mut buf)
            .await
            .with_context(|| format!("reading {key}"))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
        tokio::io::AsyncWriteExt::write_all(&mut out, &buf[..k]).await?;
    }
    tokio::io::AsyncWriteExt::flush(&mut out).await?;
    drop(out);
    let got = h.finish();
    if got != b.digest || n != b.size {
        bail!(
            "{key}: {n} bytes hashing to {got}, expected {} bytes (run verify --deep)",
            b.size
        );
    }
    tmp.persist(dest)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write {}", dest.display()))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// docker-archive:
// ---------------------------------------------------------------------------------------------

fn tar_header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

fn append_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    bytes: &[u8],
) -> anyhow::Result<()> {
    let mut h = tar_header(bytes.len() as u64);
    tar.append_data(&mut h, path, bytes)
        .with_context(|| format!("cannot add {path} to the archive"))
}

async fn export_docker_archive(
    store: Arc<dyn Store>,
    image: Fetched,
    file: &Path,
    tag: Option<TaggedName>,
    what: &str,
) -> anyhow::Result<ExportSummary> {
    let config = image
        .doc
        .config
        .clone()
        .ok_or_else(|| anyhow!("{what}: the manifest has no config"))?;
    let layers = image.doc.layers.clone().unwrap_or_default();
    if let Some(f) = layers.iter().find(|l| l.foreign()) {
        // docker load needs every layer in the archive.
        if store.head(&layout::blob(&f.digest)).await?.is_none() {
            bail!(
                "{what}: layer {} is a foreign layer the store does not have; a docker-archive \
                 needs every layer",
                f.digest
            );
        }
    }
    let config_bytes = {
        let key = layout::blob(&config.digest);
        let obj = store
            .get(&key)
            .await?
            .ok_or_else(|| anyhow!("{key} is missing from the store (run verify)"))?;
        let got = Hasher::digest_like(&config.digest, &obj.bytes);
        if got != config.digest || obj.bytes.len() as u64 != config.size {
            bail!("{key}: content does not match its digest (run verify --deep)");
        }
        obj.bytes
    };
    let diff_ids: Vec<Digest> = serde_json::from_slice::<Value>(&config_bytes)
        .ok()
        .and_then(|c| {
            c["rootfs"]["diff_ids"].as_array().map(|a| {
                a.iter()
                    .filter_map(|d| d.as_str().and_then(|s| Digest::parse(s).ok()))
                    .collect()
            })
        })
        .unwrap_or_default();
    if diff_ids.len() != layers.len() {
        bail!(
            "{what}: the config lists {} diff_ids for {} layers",
            diff_ids.len(),
            layers.len()
        );
    }

    let parent = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let tmp = tempfile::NamedTempFile::new_in(&parent)
        .with_context(|| format!("cannot write in {}", parent.display()))?;
    let handle = tokio::runtime::Handle::current();
    let file = file.to_path_buf();
    let what = what.to_owned();
    let digest = image.digest.clone();
    tokio::task::spawn_blocking(move || {
        let mut summary = ExportSummary {
            reference: what.clone(),
            digest,
            destination: format!(
                "docker-archive:{}{}",
                file.display(),
                tag.as_ref().map(|t| format!(":{t}")).unwrap_or_default()
            ),
            manifests: 0,
            blobs: 1,
            bytes: config_bytes.len() as u64,
            notes: Vec::new(),
        };
        let out = std::io::BufWriter::with_capacity(256 << 10, tmp.as_file().try_clone()?);
        let mut tar = tar::Builder::new(out);
        let config_name = format!("{}.json", config.digest.hex());
        append_bytes(&mut tar, &config_name, &config_bytes)?;
        let mut layer_names = Vec::new();
        let mut written = HashSet::new();
        for (l, diff_id) in layers.iter().zip(&diff_ids) {
            let name = format!("{}/layer.tar", l.digest.hex());
            layer_names.push(name.clone());
            if !written.insert(name.clone()) {
                continue;
            }
            let key = layout::blob(&l.digest);
            let stream = handle
                .block_on(store.get_stream(&key))?
                .ok_or_else(|| anyhow!("{key} is missing from the store (run verify)"))?;
            // Read from this blocking thread: the tar writer is synchronous.
            let reader = tokio_util::io::SyncIoBridge::new_with_handle(stream, handle.clone());
            let written_size = if l.media_type == media::OCI_LAYER_ZSTD {
                append_decompressed(&mut tar, &name, reader, l, diff_id)?
            } else {
                let mut hr = HashingReader::new(reader.take(l.size), l.digest.algorithm());
                let mut h = tar_header(l.size);
                tar.append_data(&mut h, &name, &mut hr)
                    .with_context(|| format!("cannot add {key} to the archive"))?;
                let (got, n) = hr.finish();
                if got != l.digest || n != l.size {
                    bail!(
                        "{key}: {n} bytes hashing to {got}, expected {} bytes (run verify --deep)",
                        l.size
                    );
                }
                l.size
            };
            summary.blobs += 1;
            summary.bytes += written_size;
        }
        let repo_tags: Vec<String> = tag.iter().map(|t| t.to_string()).collect();
        let manifest = json!([{
            "Config": config_name,
            "RepoTags": repo_tags,
            "Layers": layer_names,
        }]);
        append_bytes(&mut tar, "manifest.json", &serde_json::to_vec(&manifest)?)?;
        // The pre-manifest.json index: repository -> tag -> top layer id. Loaders use
        // manifest.json; this keeps the file complete for the old ones.
        let mut repos: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        if let (Some(t), Some(top)) = (&tag, layers.last()) {
            repos
                .entry(t.name.to_string())
                .or_default()
                .insert(t.tag.to_string(), top.digest.hex().to_owned());
        }
        append_bytes(&mut tar, "repositories", &serde_json::to_vec(&repos)?)?;
        let mut out = tar.into_inner().context("cannot finish the archive")?;
        out.flush()?;
        drop(out);
        tmp.as_file().sync_data()?;
        tmp.persist(&file)
            .map_err(|e| e.error)
            .with_context(|| format!("cannot write {}", file.display()))?;
        anyhow::Ok(summary)
    })
    .await?
}

/// Decompresses a zstd layer into a temporary file (a tar entry needs its size up front),
/// checking its `diff_id`, then appends it.
fn append_decompressed<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    reader: impl Read,
    l: &Descriptor,
    diff_id: &Digest,
) -> anyhow::Result<u64> {
    let key = layout::blob(&l.digest);
    let mut compressed = HashingReader::new(reader.take(l.size), l.digest.algorithm());
    let mut tmp = tempfile::tempfile()?;
    let (plain_digest, plain_size) = {
        let dec = zstd::stream::read::Decoder::new(&mut compressed)
            .with_context(|| format!("{key}: not zstd"))?;
        let mut plain = HashingReader::new(dec, diff_id.algorithm());
        std::io::copy(&mut plain, &mut tmp).with_context(|| format!("decompressing {key}"))?;
        plain.finish()
    };
    // Drain whatever the decoder did not need, so the compressed digest covers every byte.
    std::io::copy(&mut compressed, &mut std::io::sink())?;
    let (got, n) = compressed.finish();
    if got != l.digest || n != l.size {
        bail!("{key}: content does not match its digest (run verify --deep)");
    }
    if plain_digest != *diff_id {
        bail!("{key}: decompresses to {plain_digest}, but the config says {diff_id}");
    }
    use std::io::Seek;
    tmp.seek(std::io::SeekFrom::Start(0))?;
    let mut h = tar_header(plain_size);
    tar.append_data(&mut h, name, &mut tmp)
        .with_context(|| format!("cannot add {key} to the archive"))?;
    Ok(plain_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_and_references_parse() {
        assert_eq!(
            "docker-archive:/tmp/x.tar:a/b:1".parse::<Destination>(),
            Ok(Destination::DockerArchive {
                file: "/tmp/x.tar".into(),
                tag: Some("a/b:1".parse().unwrap())
            })
        );
        assert_eq!(
            "oci:/tmp/d".parse::<Destination>(),
            Ok(Destination::Oci {
                dir: "/tmp/d".into(),
                ref_name: None
            })
        );
        assert!("dir:/tmp/d".parse::<Destination>().is_err());
        assert!("docker-archive:/x:NOPE".parse::<Destination>().is_err());
        let d = format!("sha256:{}", "a".repeat(64));
        assert!(matches!(
            format!("a/b@{d}").parse::<ExportRef>(),
            Ok(ExportRef::Digest(..))
        ));
        assert!(matches!(
            "a/b:1".parse::<ExportRef>(),
            Ok(ExportRef::Tag(_))
        ));
        assert!("a/b".parse::<ExportRef>().is_err());
        assert_eq!(
            "linux/arm64/v8".parse::<Platform>().unwrap().to_string(),
            "linux/arm64/v8"
        );
        assert!("linux".parse::<Platform>().is_err());
    }

    #[test]
    fn picks_a_platform_or_explains() {
        let child = |arch: &str| Descriptor {
            platform: Some(json!({"os": "linux", "architecture": arch})),
            ..Descriptor::of_manifest(media::OCI_MANIFEST, &Digest::sha256_of(arch.as_bytes()), 1)
        };
        let kids = vec![child("arm64"), child("s390x")];
        let arm: Platform = "linux/arm64".parse().unwrap();
        assert_eq!(pick(&kids, Some(&arm), "x").unwrap().digest, kids[0].digest);
        let err = pick(&kids, Some(&"linux/ppc64le".parse().unwrap()), "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("available: linux/arm64, linux/s390x"), "{err}");
        // One image only: taken whatever the host.
        assert_eq!(pick(&kids[1..], None, "x").unwrap().digest, kids[1].digest);
        // The one Platform rule: arm64 without a variant is v8 (as `publish --platform` has it).
        let v8: Platform = "linux/arm64/v8".parse().unwrap();
        assert_eq!(pick(&kids, Some(&v8), "x").unwrap().digest, kids[0].digest);
    }

    /// The media type a manifest is exported with (its own, else the repository index's) must
    /// be a manifest's: it is written into the layout's index.json.
    #[tokio::test]
    async fn refuses_a_manifest_recorded_with_a_non_manifest_type() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::LocalStore::open(dir.path()).unwrap();
        // OCI lets a manifest omit mediaType; the index's record then decides.
        let m = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "config": {"mediaType": media::OCI_CONFIG, "digest": Digest::sha256_of(b"c"), "size": 1},
            "layers": [],
        }))
        .unwrap();
        let d = Digest::sha256_of(&m);
        let opts = crate::store::PutOptions {
            content_type: "application/octet-stream".into(),
            cache_control: layout::CACHE_IMMUTABLE,
            mode: crate::store::PutMode::Overwrite,
        };
        store
            .put(&layout::manifest(&d), Bytes::from(m.clone()), &opts)
            .await
            .unwrap();
        let size = m.len() as u64;
        let err = fetch_manifest(&store, &d, size, "text/html")
            .await
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("not a manifest media type"), "{err}");
        let ok = fetch_manifest(&store, &d, size, media::OCI_MANIFEST)
            .await
            .unwrap();
        assert_eq!(ok.media_type, media::OCI_MANIFEST);
    }
}
