//! Turning a loaded tree plus its produced blobs into the exact manifest bytes to publish.
//!
//! The rule is "never re-serialise what need not change": a manifest whose blobs are all copied
//! keeps its source bytes, so its digest (and any signature over it) survives. Only manifests with
//! compressed layers, and the indexes above them, get new bytes; those are generated
//! deterministically (fixed-order structs, or `serde_json::Value`, whose maps are sorted) so the
//! same input always yields the same digests.

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::{bail, Context};
use serde::Serialize;
use serde_json::{json, Value};

use crate::index::Descriptor;
use crate::oci::media;
use crate::publish::image::{short, BlobKey, BlobRef, BlobSource, IndexNode, ManifestNode, Node};
use crate::publish::Compression;
use crate::reference::Digest;

/// A blob as it ended up in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Produced {
    pub digest: Digest,
    pub size: u64,
}

/// One manifest or index to write under `manifests/`.
#[derive(Debug, Clone)]
pub struct ManifestOut {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

/// Everything the manifest and commit phases need.
#[derive(Debug)]
pub struct Rendered {
    /// Children before the indexes that list them, each digest once.
    pub manifests: Vec<ManifestOut>,
    pub root: Descriptor,
    /// Every config and layer the tree references.
    pub blobs: BTreeMap<Digest, u64>,
    /// Things the user should know (digests that differ from the source's, dropped platforms).
    pub notes: Vec<String>,
}

pub fn render(
    root: &Node,
    produced: &HashMap<BlobKey, Produced>,
    compression: Compression,
) -> anyhow::Result<Rendered> {
    let mut r = Renderer {
        produced,
        compression,
        out: Rendered {
            manifests: Vec::new(),
            root: Descriptor {
                media_type: String::new(),
                digest: Digest::sha256_of(b""),
                size: 0,
                artifact_type: None,
                platform: None,
                annotations: None,
            },
            blobs: BTreeMap::new(),
            notes: Vec::new(),
        },
        seen: HashSet::new(),
        done: HashMap::new(),
    };
    let (desc, source_digest) = r.node(root)?;
    if let Some(src) = source_digest.filter(|s| *s != desc.digest) {
        r.out.notes.push(format!(
            "the source's {} {src} was published as {} because its layers were compressed",
            kind(&desc.media_type),
            desc.digest
        ));
    }
    r.out.root = desc;
    Ok(r.out)
}

fn kind(media_type: &str) -> &'static str {
    if media::is_index(media_type) {
        "image index"
    } else {
        "manifest"
    }
}

struct Renderer<'a> {
    produced: &'a HashMap<BlobKey, Produced>,
    compression: Compression,
    out: Rendered,
    seen: HashSet<Digest>,
    /// Nodes already rendered: a child shared by several indexes is rendered once.
    done: HashMap<*const Node, (Descriptor, Option<Digest>)>,
}

/// A descriptor in a generated manifest (field order fixed, as Docker writes them).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GenDescriptor {
    media_type: String,
    size: u64,
    digest: Digest,
    #[serde(skip_serializing_if = "Option::is_none")]
    urls: Option<Vec<String>>,
}

/// A generated image manifest (for `docker save` images, which have none).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GenManifest {
    schema_version: u32,
    media_type: &'static str,
    config: GenDescriptor,
    layers: Vec<GenDescriptor>,
}

impl Renderer<'_> {
    /// Renders a node; returns its published descriptor and the digest it had in the source.
    fn node(&mut self, node: &Node) -> anyhow::Result<(Descriptor, Option<Digest>)> {
        if let Some(done) = self.done.get(&(node as *const Node)) {
            return Ok(done.clone());
        }
        let r = match node {
            Node::Manifest(m) => self.manifest(m),
            Node::Index(i) => self.index(i),
        }?;
        self.done.insert(node as *const Node, r.clone());
        Ok(r)
    }

    fn produced(&mut self, b: &BlobRef) -> anyhow::Result<Produced> {
        let p = self
            .produced
            .get(&b.source.key())
            .cloned()
            .with_context(|| format!("internal error: {} was not produced", b.what))?;
        self.out.blobs.insert(p.digest.clone(), p.size);
        Ok(p)
    }

    fn emit(&mut self, media_type: String, bytes: Vec<u8>, digest: Digest) -> Descriptor {
        let d = Descriptor {
            media_type: media_type.clone(),
            digest: digest.clone(),
            size: bytes.len() as u64,
            artifact_type: None,
            platform: None,
            annotations: None,
        };
        if self.seen.insert(digest.clone()) {
            self.out.manifests.push(ManifestOut {
                digest,
                media_type,
                bytes,
            });
        }
        d
    }

    fn manifest(&mut self, m: &ManifestNode) -> anyhow::Result<(Descriptor, Option<Digest>)> {
        let config = self.produced(&m.config)?;
        let mut layers = Vec::with_capacity(m.layers.len());
        for l in &m.layers {
            layers.push(self.produced(l)?);
        }
        let compressed: Vec<bool> = m
            .layers
            .iter()
            .map(|l| matches!(l.source, BlobSource::Compress { .. }))
            .collect();
        let source_digest = m.original.as_ref().map(|(_, d)| d.clone());
        // A Docker schema2 manifest has no zstd layer type, so zstd makes it an OCI manifest.
        let docker =
            m.media_type == media::DOCKER_MANIFEST && self.compression == Compression::Gzip;
        let layer_type = |c: Compression| match (docker, c) {
            (true, _) => media::DOCKER_LAYER_GZIP,
            (false, Compression::Gzip) => media::OCI_LAYER_GZIP,
            (false, Compression::Zstd) => media::OCI_LAYER_ZSTD,
        };
        match &m.original {
            Some((bytes, digest)) if !compressed.contains(&true) => {
                let d = self.emit(m.media_type.clone(), bytes.clone(), digest.clone());
                Ok((d, source_digest))
            }
            Some((bytes, _)) => {
                let mut v: Value = serde_json::from_slice(bytes)?;
                let to_oci = m.media_type == media::DOCKER_MANIFEST && !docker;
                let media_type = if to_oci || m.media_type.is_empty() {
                    media::OCI_MANIFEST.to_owned()
                } else {
                    m.media_type.clone()
                };
                v["mediaType"] = json!(media_type);
                if to_oci && v["config"]["mediaType"] == json!(media::DOCKER_CONFIG) {
                    v["config"]["mediaType"] = json!(media::OCI_CONFIG);
                }
                let Some(vl) = v.get_mut("layers").and_then(|l| l.as_array_mut()) else {
                    bail!("internal error: manifest without layers array");
                };
                for (i, entry) in vl.iter_mut().enumerate() {
                    if compressed[i] {
                        entry["mediaType"] = json!(layer_type(self.compression));
                        entry["digest"] = json!(layers[i].digest);
                        entry["size"] = json!(layers[i].size);
                    } else if to_oci {
                        let mt = entry["mediaType"].as_str().and_then(media::docker_to_oci);
                        if let Some(mt) = mt {
                            entry["mediaType"] = json!(mt);
                        }
                    }
                }
                let bytes = serde_json::to_vec(&v)?;
                let digest = Digest::sha256_of(&bytes);
                Ok((self.emit(media_type, bytes, digest), source_digest))
            }
            None => {
                let (media_type, config_type) = if docker {
                    (media::DOCKER_MANIFEST, media::DOCKER_CONFIG)
                } else {
                    (media::OCI_MANIFEST, media::OCI_CONFIG)
                };
                let gen = GenManifest {
                    schema_version: 2,
                    media_type,
                    config: GenDescriptor {
                        media_type: config_type.to_owned(),
                        size: config.size,
                        digest: config.digest,
                        urls: None,
                    },
                    layers: m
                        .layers
                        .iter()
                        .zip(layers)
                        .zip(&compressed)
                        .map(|((l, p), &c)| GenDescriptor {
                            media_type: if c {
                                layer_type(self.compression).to_owned()
                            } else if !docker && l.media_type == media::DOCKER_FOREIGN {
                                media::OCI_NONDIST_GZIP.to_owned()
                            } else {
                                l.media_type.clone()
                            },
                            size: p.size,
                            digest: p.digest,
                            urls: l.urls.clone(),
                        })
                        .collect(),
                };
                let bytes = serde_json::to_vec_pretty(&gen)?;
                let digest = Digest::sha256_of(&bytes);
                Ok((self.emit(media_type.to_owned(), bytes, digest), None))
            }
        }
    }

    fn index(&mut self, i: &IndexNode) -> anyhow::Result<(Descriptor, Option<Digest>)> {
        let mut children = Vec::with_capacity(i.children.len());
        for c in &i.children {
            children.push(match c {
                Some(c) => Some(self.node(c)?.0),
                None => None,
            });
        }
        let missing: Vec<String> = i
            .entries
            .iter()
            .zip(&children)
            .filter(|(_, c)| c.is_none())
            .map(|(e, _)| {
                e.platform_str()
                    .unwrap_or_else(|| format!("{} {}", e.media_type, short(&e.digest)))
            })
            .collect();
        let changed = i
            .entries
            .iter()
            .zip(&children)
            .any(|(e, c)| c.as_ref().is_some_and(|c| c.digest != e.digest));
        if !changed && missing.is_empty() {
            let d = self.emit(i.media_type.clone(), i.original.clone(), i.digest.clone());
            return Ok((d, Some(i.digest.clone())));
        }
        if missing.len() == i.entries.len() {
            bail!(
                "image index {} lists {} manifests and none of them is in the source",
                i.digest,
                missing.len()
            );
        }
        let mut v: Value = serde_json::from_slice(&i.original)?;
        let entries = v
            .get("manifests")
            .and_then(|m| m.as_array())
            .cloned()
            .unwrap_or_default();
        let mut any_oci_child = false;
        let kept: Vec<Value> = entries
            .into_iter()
            .zip(&children)
            .filter_map(|(mut e, c)| {
                let c = c.as_ref()?;
                any_oci_child |= c.media_type.starts_with("application/vnd.oci.");
                e["mediaType"] = json!(c.media_type);
                e["digest"] = json!(c.digest);
                e["size"] = json!(c.size);
                Some(e)
            })
            .collect();
        v["manifests"] = Value::Array(kept);
        let media_type = if i.media_type == media::DOCKER_LIST && !any_oci_child {
            media::DOCKER_LIST
        } else {
            media::OCI_INDEX
        };
        v["mediaType"] = json!(media_type);
        let bytes = serde_json::to_vec(&v)?;
        let digest = Digest::sha256_of(&bytes);
        if !missing.is_empty() {
            self.out.notes.push(format!(
                "image index {} lists {} manifest(s) the source does not have ({}); published a reduced index {digest} without them",
                i.digest,
                missing.len(),
                missing.join(", ")
            ));
        }
        Ok((
            self.emit(media_type.to_owned(), bytes, digest),
            Some(i.digest.clone()),
        ))
    }
}
