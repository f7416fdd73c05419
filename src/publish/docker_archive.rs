//! `docker save` archives, in both shapes Docker writes.
//!
//! - Legacy (Docker < 25): `manifest.json` + `<id>/layer.tar` + `<hex>.json`. There is no
//!   registry manifest at all, so one is generated from the config and the compressed layers.
//! - Docker ≥ 25: a full OCI layout inside the tar, plus the legacy `manifest.json` for old
//!   loaders. The layout is used (it has real manifests); `manifest.json` only helps pick an image
//!   by `REPO:TAG`.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::oci::{media, Descriptor};
use crate::publish::files::Files;
use crate::publish::image::{BlobRef, BlobSource, ManifestNode, Node};
use crate::publish::oci::{self, Layout, CONTAINERD_NAME, REF_NAME};
use crate::publish::source::{DockerRef, Selector};
use crate::publish::Loaded;
use crate::reference::{Digest, TaggedName};
use crate::walk::WalkLimits;

/// One image of `manifest.json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SaveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
    /// diff_id -> descriptor of a foreign layer whose compressed blob is not in the archive.
    #[serde(default)]
    layer_sources: Option<BTreeMap<Digest, Descriptor>>,
}

impl SaveEntry {
    fn refs(&self) -> Vec<DockerRef> {
        self.repo_tags
            .iter()
            .flatten()
            .filter_map(|t| DockerRef::parse(t))
            .collect()
    }
}

fn read_save_manifest(files: &Files) -> anyhow::Result<Option<Vec<SaveEntry>>> {
    let Some(bytes) = files.read_small("manifest.json")? else {
        return Ok(None);
    };
    let entries = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: invalid manifest.json", files.display()))?;
    Ok(Some(entries))
}

fn available(entries: &[SaveEntry]) -> String {
    let mut names = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        match e.repo_tags.as_deref() {
            Some(tags) if !tags.is_empty() => names.extend(tags.iter().cloned()),
            _ => names.push(format!("@{i} (untagged)")),
        }
    }
    names.join(", ")
}

fn tagged_names(refs: impl IntoIterator<Item = DockerRef>) -> Vec<TaggedName> {
    let mut out: Vec<TaggedName> = refs
        .into_iter()
        .filter_map(|r| r.to_tagged_name())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Loads the image `select` names from a `docker save` archive.
pub fn load(
    files: Files,
    select: Option<&Selector>,
    label: &str,
    limits: WalkLimits,
) -> anyhow::Result<Loaded> {
    if files.exists("index.json") && files.exists("oci-layout") {
        return load_oci(files, select, label, limits);
    }
    let Some(entries) = read_save_manifest(&files)? else {
        bail!(
            "{label}: not a docker save archive (no manifest.json, and no index.json + oci-layout)"
        );
    };
    let wanted = match select {
        Some(Selector::Name(n)) => Some(
            DockerRef::parse(n).with_context(|| format!("{label}: invalid image name {n:?}"))?,
        ),
        _ => None,
    };
    let entry = match select {
        None if entries.len() == 1 => &entries[0],
        None => bail!(
            "{label}: the archive holds {} images; pick one with {label}:REPO:TAG or {label}:@N; available: {}",
            entries.len(),
            available(&entries)
        ),
        Some(Selector::Index(i)) => entries.get(*i).with_context(|| {
            format!(
                "{label}: no image @{i}; the archive holds {}: {}",
                entries.len(),
                available(&entries)
            )
        })?,
        Some(Selector::Name(n)) => {
            let w = wanted.as_ref().expect("parsed above");
            entries
                .iter()
                .find(|e| e.refs().contains(w))
                .with_context(|| {
                    format!("{label}: no image tagged '{n}'; available: {}", available(&entries))
                })?
        }
    };
    let default_tags = match wanted {
        Some(w) => tagged_names([w]),
        None => tagged_names(entry.refs()),
    };
    let root = legacy_image(&files, entry, label)?;
    Ok(Loaded {
        files,
        root,
        default_tags,
    })
}

/// Builds the manifest tree for a legacy entry: the config as-is, every layer compressed.
fn legacy_image(files: &Files, entry: &SaveEntry, label: &str) -> anyhow::Result<Node> {
    let Some(config) = files.read_small(&entry.config)? else {
        bail!(
            "{label}: manifest.json names config {} but the archive has no such file",
            entry.config
        );
    };
    let config_digest = Digest::sha256_of(&config);
    let diff_ids =
        oci::diff_ids(&config).with_context(|| format!("{label}: config {}", entry.config))?;
    if diff_ids.len() != entry.layers.len() {
        bail!(
            "{label}: config {} lists {} diff_ids but manifest.json lists {} layers",
            entry.config,
            diff_ids.len(),
            entry.layers.len()
        );
    }
    let at = entry
        .repo_tags
        .as_ref()
        .and_then(|t| t.first().cloned())
        .unwrap_or_else(|| entry.config.clone());
    let mut layers = Vec::with_capacity(entry.layers.len());
    for (i, (path, diff_id)) in entry.layers.iter().zip(&diff_ids).enumerate() {
        let what = format!("layer {} of {at}", i + 1);
        // Docker ≥ 25 lists every layer in LayerSources; only foreign ones come from elsewhere.
        let foreign = entry
            .layer_sources
            .as_ref()
            .and_then(|s| s.get(diff_id))
            .filter(|d| media::is_foreign(&d.media_type));
        layers.push(match foreign {
            // The archive only has the uncompressed diff, not the exact compressed blob the
            // foreign descriptor names, so that blob must already be in the store.
            Some(d) => BlobRef {
                media_type: d.media_type.clone(),
                source: BlobSource::Copy {
                    path: None,
                    digest: d.digest.clone(),
                    size: d.size,
                },
                urls: d.urls.clone(),
                what,
            },
            // Keyed by the file it really is (`docker save` links repeated layers to the first
            // copy), so identical layers are compressed once and different ones each checked.
            None => BlobRef {
                media_type: media::DOCKER_LAYER.to_owned(),
                source: BlobSource::Compress {
                    path: files.canonical(path).unwrap_or_else(|| path.clone()),
                    diff_id: diff_id.clone(),
                },
                urls: None,
                what,
            },
        });
    }
    Ok(Node::Manifest(ManifestNode {
        original: None,
        media_type: media::DOCKER_MANIFEST.to_owned(),
        config: BlobRef {
            media_type: media::DOCKER_CONFIG.to_owned(),
            source: BlobSource::Copy {
                path: Some(entry.config.clone()),
                digest: config_digest,
                size: config.len() as u64,
            },
            urls: None,
            what: format!("config of {at}"),
        },
        layers,
    }))
}

/// Docker ≥ 25: select in the embedded OCI layout by the names Docker annotates it with, or
/// through `manifest.json`'s `RepoTags` (matched to a layout entry by config digest).
fn load_oci(
    files: Files,
    select: Option<&Selector>,
    label: &str,
    limits: WalkLimits,
) -> anyhow::Result<Loaded> {
    let saves = read_save_manifest(&files)?.unwrap_or_default();
    let layout = Layout::open(files, limits)?;
    let names_of = |e: &Descriptor| -> Vec<DockerRef> {
        let ann = e.annotations.as_ref();
        [CONTAINERD_NAME, REF_NAME]
            .iter()
            .filter_map(|k| ann.and_then(|a| a.get(*k)))
            // A bare tag in ref.name is not a name; a full reference there is.
            .filter(|v| v.contains('/') || v.contains(':'))
            .filter_map(|v| DockerRef::parse(v))
            .collect()
    };
    let available = || {
        let mut a = available(&saves);
        if a.is_empty() {
            a = layout.available();
        }
        a
    };
    // The saved entry whose config is in the chosen tree, to load it only once.
    let by_config = |config_path: &str| -> anyhow::Result<(Descriptor, Node)> {
        let bytes = layout.files.read_small(config_path)?.with_context(|| {
            format!("{label}: manifest.json names config {config_path} but the archive has no such file")
        })?;
        let digest = Digest::sha256_of(&bytes);
        for e in &layout.entries {
            let node = layout.load(e)?;
            if node.has_config(&digest) {
                return Ok((e.clone(), node));
            }
        }
        bail!("{label}: no image in index.json has config {digest} (named by manifest.json)")
    };
    let (desc, root, default_refs) = match select {
        Some(Selector::Name(n)) => {
            let w = DockerRef::parse(n)
                .with_context(|| format!("{label}: invalid image name {n:?}"))?;
            let direct = layout.entries.iter().find(|e| {
                names_of(e).contains(&w)
                    || e.annotations
                        .as_ref()
                        .and_then(|a| a.get(REF_NAME))
                        .is_some_and(|r| r == n)
            });
            let (desc, root) = match direct {
                Some(d) => (d.clone(), layout.load(d)?),
                None => {
                    let save = saves
                        .iter()
                        .find(|s| s.refs().contains(&w))
                        .with_context(|| {
                            format!("{label}: no image tagged '{n}'; available: {}", available())
                        })?;
                    by_config(&save.config)?
                }
            };
            (desc, root, vec![w])
        }
        Some(Selector::Index(i)) if !saves.is_empty() => {
            let save = saves.get(*i).with_context(|| {
                format!(
                    "{label}: no image @{i}; the archive holds {}: {}",
                    saves.len(),
                    available()
                )
            })?;
            let (desc, root) = by_config(&save.config)?;
            (desc, root, save.refs())
        }
        other => {
            let desc = layout.select(other, label)?;
            let root = layout.load(&desc)?;
            let mut refs: Vec<DockerRef> = layout
                .entries
                .iter()
                .filter(|e| e.digest == desc.digest)
                .flat_map(names_of)
                .collect();
            for s in &saves {
                if let Ok(Some(bytes)) = layout.files.read_small(&s.config) {
                    if root.has_config(&Digest::sha256_of(&bytes)) {
                        refs.extend(s.refs());
                    }
                }
            }
            (desc, root, refs)
        }
    };
    tracing::debug!("{label}: selected {} ({})", desc.digest, desc.media_type);
    Ok(Loaded {
        files: layout.files,
        root,
        default_tags: tagged_names(default_refs),
    })
}
