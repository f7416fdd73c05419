//! OCI image layouts: a directory (`oci:`), a tar of one (`oci-archive:`), and the layout Docker
//! ≥ 25 puts inside `docker save` archives.
//!
//! Manifests and indexes are read whole and checked against their descriptors here, so that
//! everything later stages trust about the tree (digests, media types, children) was verified.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::oci::{media, Descriptor, ImageIndex, ImageManifest};
use crate::walk::{self, WalkLimits, MAX_DEPTH};

use crate::hashing::Hasher;
use crate::publish::files::Files;
use crate::publish::image::{short, BlobRef, BlobSource, IndexNode, ManifestNode, Node};
use crate::publish::source::Selector;
use crate::reference::Digest;

/// The annotation skopeo, umoci and buildkit use for an image's tag in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The annotation Docker ≥ 25 adds with the full image name.
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// Where a blob lives inside a layout.
pub fn blob_path(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm().as_str(), d.hex())
}

/// An opened layout: its files and the images `index.json` lists.
#[derive(Debug)]
pub struct Layout {
    pub files: Files,
    pub entries: Vec<Descriptor>,
    /// Bounds of the walk through an image's indexes.
    pub limits: WalkLimits,
}

#[derive(Deserialize)]
struct ConfigJson {
    #[serde(default)]
    rootfs: Option<RootFs>,
}

#[derive(Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<Digest>,
}

/// The `diff_ids` of an image config, in layer order.
pub fn diff_ids(config: &[u8]) -> anyhow::Result<Vec<Digest>> {
    let c: ConfigJson = serde_json::from_slice(config).context("invalid image config JSON")?;
    Ok(c.rootfs.map(|r| r.diff_ids).unwrap_or_default())
}

impl Layout {
    pub fn open(files: Files, limits: WalkLimits) -> anyhow::Result<Layout> {
        let Some(bytes) = files.read_small("index.json")? else {
            bail!(
                "{}: not an OCI image layout (no index.json)",
                files.display()
            );
        };
        let idx: ImageIndex = serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: invalid index.json", files.display()))?;
        Ok(Layout {
            files,
            entries: idx.manifests,
            limits,
        })
    }

    /// The ref names `index.json` offers, for "available: ..." messages.
    pub fn available(&self) -> String {
        let names: Vec<String> = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let ann = |k| e.annotations.as_ref().and_then(|a| a.get(k)).cloned();
                ann(REF_NAME)
                    .or_else(|| ann(CONTAINERD_NAME))
                    .unwrap_or_else(|| format!("@{i} ({})", short(&e.digest)))
            })
            .collect();
        if names.is_empty() {
            "none (index.json lists no images)".into()
        } else {
            names.join(", ")
        }
    }

    /// Picks an image the way skopeo does: by `ref.name`, by `@N`, or the only one.
    pub fn select(&self, sel: Option<&Selector>, label: &str) -> anyhow::Result<Descriptor> {
        match sel {
            Some(Selector::Index(i)) => self.entries.get(*i).cloned().with_context(|| {
                format!(
                    "{label}: no image @{i}; the layout has {} ({})",
                    self.entries.len(),
                    self.available()
                )
            }),
            Some(Selector::Name(name)) => {
                let found: Vec<&Descriptor> = self
                    .entries
                    .iter()
                    .filter(|e| {
                        e.annotations
                            .as_ref()
                            .and_then(|a| a.get(REF_NAME))
                            .is_some_and(|r| r == name)
                    })
                    .collect();
                self.unique(found, label, &format!("tagged '{name}'"))
            }
            None => self.unique(self.entries.iter().collect(), label, "at all"),
        }
    }

    /// One image, even if several entries name the same digest (one per tag).
    fn unique(
        &self,
        found: Vec<&Descriptor>,
        label: &str,
        what: &str,
    ) -> anyhow::Result<Descriptor> {
        let Some(first) = found.first() else {
            bail!("{label}: no image {what}; available: {}", self.available());
        };
        if found.iter().any(|e| e.digest != first.digest) {
            bail!(
                "{label}: several images match; name one with {label}:TAG or {label}:@N; available: {}",
                self.available()
            );
        }
        Ok((*first).clone())
    }

    /// Loads the manifest or index `desc` names, and everything below it: one walk reads each
    /// manifest once, then the graph is built with a child listed many times shared.
    pub fn load(&self, desc: &Descriptor) -> anyhow::Result<Node> {
        let what = self.files.display();
        let walked = walk::walk_sync(
            [desc.clone()],
            self.limits,
            &what,
            |d: &Descriptor| {
                // A child the source does not carry is left out (a reduced index is published).
                if d.digest != desc.digest && !self.files.exists(&blob_path(&d.digest)) {
                    return Ok(None);
                }
                self.read_manifest(d).map(Some)
            },
            |r: &Option<ReadManifest>| r.iter().flat_map(|r| r.entries.clone()).collect::<Vec<_>>(),
        )?;
        let reads = walked.into_map();
        let mut built = HashMap::new();
        let root = self
            .build(desc, &reads, &mut built, 0, &desc.platform_str())?
            .context("internal error: the root was not read")?;
        drop(built);
        Ok(Arc::try_unwrap(root).unwrap_or_else(|shared| (*shared).clone()))
    }

    fn read_verified(&self, desc: &Descriptor, what: &str) -> anyhow::Result<Vec<u8>> {
        let path = blob_path(&desc.digest);
        let Some(bytes) = self.files.read_small(&path)? else {
            bail!(
                "{}: {what} {} is missing from the source ({path})",
                self.files.display(),
                desc.digest
            );
        };
        if bytes.len() as u64 != desc.size {
            bail!(
                "{}: {path}: size {}, but the descriptor says {}",
                self.files.display(),
                bytes.len(),
                desc.size
            );
        }
        if Hasher::digest_like(&desc.digest, &bytes) != desc.digest {
            bail!(
                "{}: {path}: content does not match its digest {}",
                self.files.display(),
                desc.digest
            );
        }
        Ok(bytes)
    }

    /// Reads one manifest or index and checks what it is.
    fn read_manifest(&self, desc: &Descriptor) -> anyhow::Result<ReadManifest> {
        let bytes = self.read_verified(desc, "manifest")?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{}: manifest {} is not valid JSON",
                self.files.display(),
                desc.digest
            )
        })?;
        let media_type = media::of_manifest(&value, &desc.media_type);
        let what = format!("{}: manifest {}", self.files.display(), desc.digest);
        media::check_manifest(&value, &media_type, &what)?;
        let entries = if media::is_index(&media_type) {
            let idx: ImageIndex =
                serde_json::from_value(value.clone()).with_context(|| what.clone())?;
            idx.manifests
        } else {
            Vec::new()
        };
        Ok(ReadManifest {
            bytes,
            value,
            media_type,
            entries,
        })
    }

    /// The node for `desc`, built from what the walk read; `None` for a child the source lacks.
    fn build(
        &self,
        desc: &Descriptor,
        reads: &HashMap<Digest, Option<ReadManifest>>,
        built: &mut HashMap<Digest, Arc<Node>>,
        depth: usize,
        platform: &Option<String>,
    ) -> anyhow::Result<Option<Arc<Node>>> {
        let Some(read) = reads.get(&desc.digest).and_then(|r| r.as_ref()) else {
            return Ok(None);
        };
        // The walk checked the first descriptor naming this digest; every other must agree.
        if read.bytes.len() as u64 != desc.size {
            bail!(
                "{}: {}: size {}, but a descriptor says {}",
                self.files.display(),
                blob_path(&desc.digest),
                read.bytes.len(),
                desc.size
            );
        }
        if let Some(n) = built.get(&desc.digest) {
            return Ok(Some(n.clone()));
        }
        if depth > MAX_DEPTH {
            bail!(
                "{}: image indexes nest deeper than {MAX_DEPTH} levels",
                self.files.display()
            );
        }
        let node = if media::is_index(&read.media_type) {
            let mut children = Vec::with_capacity(read.entries.len());
            for child in &read.entries {
                let p = child.platform_str().or_else(|| platform.clone());
                children.push(self.build(child, reads, built, depth + 1, &p)?);
            }
            Node::Index(IndexNode {
                original: read.bytes.clone(),
                digest: desc.digest.clone(),
                media_type: read.media_type.clone(),
                children,
                entries: read.entries.clone(),
            })
        } else {
            self.manifest_node(desc, read, platform)?
        };
        let node = Arc::new(node);
        built.insert(desc.digest.clone(), node.clone());
        Ok(Some(node))
    }

    fn manifest_node(
        &self,
        desc: &Descriptor,
        read: &ReadManifest,
        platform: &Option<String>,
    ) -> anyhow::Result<Node> {
        let ctx = || format!("{}: manifest {}", self.files.display(), desc.digest);
        let (bytes, value, media_type) = (
            read.bytes.clone(),
            read.value.clone(),
            read.media_type.clone(),
        );
        let m: ImageManifest = serde_json::from_value(value).with_context(ctx)?;
        let at = match platform {
            Some(p) => format!("{} ({p})", short(&desc.digest)),
            None => short(&desc.digest),
        };
        let needs_diff_ids = m
            .layers
            .iter()
            .any(|l| media::is_uncompressed_layer(&l.media_type));
        let diff_ids = if needs_diff_ids {
            let config = self.read_verified(&m.config, "config")?;
            diff_ids(&config).with_context(|| format!("config {}", m.config.digest))?
        } else {
            Vec::new()
        };
        let config = BlobRef {
            media_type: m.config.media_type.clone(),
            source: BlobSource::Copy {
                path: Some(blob_path(&m.config.digest)),
                digest: m.config.digest.clone(),
                size: m.config.size,
            },
            urls: None,
            what: format!("config of {at}"),
        };
        let mut layers = Vec::with_capacity(m.layers.len());
        for (i, l) in m.layers.iter().enumerate() {
            let what = format!("layer {} of {at}", i + 1);
            let source = if media::is_uncompressed_layer(&l.media_type) {
                let Some(diff_id) = diff_ids.get(i) else {
                    bail!(
                        "{}: {what}: the config lists {} diff_ids for {} layers",
                        self.files.display(),
                        diff_ids.len(),
                        m.layers.len()
                    );
                };
                if *diff_id != l.digest {
                    bail!(
                        "{}: {what} is an uncompressed tar with digest {}, but the config's diff_id is {diff_id}",
                        self.files.display(),
                        l.digest
                    );
                }
                BlobSource::Compress {
                    path: blob_path(&l.digest),
                    diff_id: diff_id.clone(),
                }
            } else {
                BlobSource::Copy {
                    path: Some(blob_path(&l.digest)),
                    digest: l.digest.clone(),
                    size: l.size,
                }
            };
            layers.push(BlobRef {
                media_type: l.media_type.clone(),
                source,
                urls: l.urls.clone(),
                what,
            });
        }
        Ok(Node::Manifest(ManifestNode {
            original: Some((bytes, desc.digest.clone())),
            media_type,
            config,
            layers,
        }))
    }
}

/// A manifest or index as read from a source, checked against its descriptor.
struct ReadManifest {
    bytes: Vec<u8>,
    value: serde_json::Value,
    media_type: String,
    /// An index's `manifests[]` (empty for an image manifest).
    entries: Vec<Descriptor>,
}
