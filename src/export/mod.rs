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

mod docker_archive;
mod oci;

use docker_archive::export_docker_archive;
use oci::export_oci;

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
