//! What the pages show about an image, read from its manifest (or index and child manifests) and
//! its image configs, never its layers, and kept per digest: content-addressed objects never
//! change, so a digest's facts are read once and then served from memory.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt as _;

use crate::index::RepoIndex;
use crate::layout;
use crate::oci::{media, AnyManifest, ImageConfig};
use crate::reference::{Digest, Tag};
use crate::store::Store;

/// Manifests and configs larger than this are not read for the page (registries cap manifests at
/// 4 MiB; configs are a few KB).
const MAX_DOCUMENT: u64 = 4 << 20;
/// Images whose facts are kept in memory.
const CAPACITY: u64 = 50_000;
/// Facts loaded at once for a repository page.
const PARALLEL: usize = 16;
/// Shown per image config, at most (a config is input from whoever published).
const MAX_LIST: usize = 200;

/// One image (a manifest, or an index and its platforms).
#[derive(Debug, Clone)]
pub struct ImageFacts {
    pub media_type: String,
    /// The platforms of an index, or the one image of a manifest.
    pub platforms: Vec<PlatformFacts>,
    /// Sum of every platform's config and layers: what a full mirror of it stores.
    pub compressed: u64,
    /// The newest `created` of its configs (RFC 3339 as written).
    pub created: Option<String>,
}

/// One platform's image.
#[derive(Debug, Clone)]
pub struct PlatformFacts {
    /// `linux/amd64`, or empty when the manifest names none.
    pub platform: String,
    pub digest: Digest,
    pub media_type: String,
    pub config: Option<Digest>,
    /// (digest, size, media type) of each layer.
    pub layers: Vec<(Digest, u64, String)>,
    pub compressed: u64,
    pub summary: Option<ConfigSummary>,
}

/// What a person wants from an image config.
#[derive(Debug, Clone, Default)]
pub struct ConfigSummary {
    pub created: Option<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// Names only: values may be secrets someone baked in.
    pub env_names: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub ports: Vec<String>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    /// (created, created_by, empty_layer) per step.
    pub history: Vec<(Option<String>, String, bool)>,
}

/// A tag, with its image's facts when they could be read.
#[derive(Debug, Clone)]
pub struct TagFacts {
    pub tag: Tag,
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub image: Option<Arc<ImageFacts>>,
}

/// The facts cache over a store.
pub struct Facts {
    store: Arc<dyn Store>,
    cache: moka::future::Cache<Digest, Arc<ImageFacts>>,
}

impl Facts {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Facts {
            store,
            cache: moka::future::Cache::builder()
                .max_capacity(CAPACITY)
                .build(),
        }
    }

    /// The facts of manifest `digest` (media type as the index records it).
    pub async fn image(
        &self,
        digest: &Digest,
        media_type: &str,
    ) -> anyhow::Result<Arc<ImageFacts>> {
        if let Some(f) = self.cache.get(digest).await {
            return Ok(f);
        }
        let f = Arc::new(self.load(digest, media_type).await?);
        self.cache.insert(digest.clone(), f.clone()).await;
        Ok(f)
    }

    /// Every tag of `idx` with its facts, newest image first (by config `created`; tags whose
    /// facts are unknown last, by name).
    pub async fn of_tags(&self, idx: &RepoIndex) -> Vec<TagFacts> {
        // Futures made up front, not by a closure inside the stream: the serving future must be
        // `Send` for every lifetime, which closures returning borrowing futures defeat.
        let futures: Vec<_> = idx.tags.iter().map(|(tag, d)| self.tag(tag, d)).collect();
        let mut tags: Vec<TagFacts> = futures::stream::iter(futures)
            .buffered(PARALLEL)
            .collect()
            .await;
        let created = |t: &TagFacts| t.image.as_ref().and_then(|i| i.created.clone());
        tags.sort_by(|a, b| created(b).cmp(&created(a)).then_with(|| a.tag.cmp(&b.tag)));
        tags
    }

    async fn tag(&self, tag: &Tag, d: &crate::index::Descriptor) -> TagFacts {
        TagFacts {
            tag: tag.clone(),
            digest: d.digest.clone(),
            media_type: d.media_type.clone(),
            size: d.size,
            image: self.image(&d.digest, &d.media_type).await.ok(),
        }
    }

    async fn document(&self, key: &str) -> anyhow::Result<Vec<u8>> {
        if let Some(meta) = self.store.head(key).await? {
            anyhow::ensure!(meta.size <= MAX_DOCUMENT, "{key} is too big to show");
        }
        let obj = self
            .store
            .get(key)
            .await?
            .ok_or_else(|| anyhow::anyhow!("{key} is missing"))?;
        Ok(obj.bytes.to_vec())
    }

    async fn load(&self, digest: &Digest, media_type: &str) -> anyhow::Result<ImageFacts> {
        let top: AnyManifest =
            serde_json::from_slice(&self.document(&layout::manifest(digest)).await?)?;
        let mut platforms = Vec::new();
        if media::is_index(media_type) || top.manifests.is_some() {
            // An index's children are read one level down only: nested indexes are listed,
            // not walked (the walker's limits belong to the commands, not to a page view).
            for child in top.children().take(MAX_LIST) {
                let label = child.platform_str().unwrap_or_default();
                // A nested index, or a child the store lacks (a filtered mirror): listed bare.
                let listed = || PlatformFacts {
                    platform: label.clone(),
                    digest: child.digest.clone(),
                    media_type: child.media_type.clone(),
                    config: None,
                    layers: Vec::new(),
                    compressed: 0,
                    summary: None,
                };
                if media::is_index(&child.media_type) {
                    platforms.push(listed());
                    continue;
                }
                match self.document(&layout::manifest(&child.digest)).await {
                    Ok(bytes) => {
                        let m: AnyManifest = serde_json::from_slice(&bytes)?;
                        let p = self.platform(label.clone(), &child.digest, &child.media_type, &m);
                        platforms.push(p.await);
                    }
                    Err(_) => platforms.push(listed()),
                }
            }
        } else {
            platforms.push(self.platform(String::new(), digest, media_type, &top).await);
        }
        let compressed = platforms.iter().map(|p| p.compressed).sum();
        let created = platforms
            .iter()
            .filter_map(|p| p.summary.as_ref()?.created.clone())
            .max();
        Ok(ImageFacts {
            media_type: media_type.to_owned(),
            platforms,
            compressed,
            created,
        })
    }

    async fn platform(
        &self,
        mut label: String,
        digest: &Digest,
        media_type: &str,
        m: &AnyManifest,
    ) -> PlatformFacts {
        let layers: Vec<(Digest, u64, String)> = m
            .layers
            .iter()
            .flatten()
            .map(|l| (l.digest.clone(), l.size, l.media_type.clone()))
            .collect();
        let config = m.config.as_ref();
        let compressed = layers.iter().map(|l| l.1).sum::<u64>() + config.map_or(0, |c| c.size);
        // Only the config blob is read, and only when it is small: never a layer.
        let parsed = match config.filter(|c| c.size <= MAX_DOCUMENT) {
            Some(c) => self
                .document(&layout::blob(&c.digest))
                .await
                .ok()
                .and_then(|b| serde_json::from_slice::<ImageConfig>(&b).ok()),
            None => None,
        };
        if label.is_empty() {
            if let Some(c) = &parsed {
                if let (Some(os), Some(arch)) = (&c.os, &c.architecture) {
                    label = format!("{os}/{arch}");
                }
            }
        }
        PlatformFacts {
            platform: label,
            digest: digest.clone(),
            media_type: media_type.to_owned(),
            config: config.map(|c| c.digest.clone()),
            layers,
            compressed,
            summary: parsed.map(summarise),
        }
    }
}

fn summarise(c: ImageConfig) -> ConfigSummary {
    let run = c.config.unwrap_or_default();
    ConfigSummary {
        created: c.created,
        entrypoint: run.entrypoint.unwrap_or_default(),
        cmd: run.cmd.unwrap_or_default(),
        env_names: run
            .env
            .unwrap_or_default()
            .iter()
            .take(MAX_LIST)
            .map(|e| e.split('=').next().unwrap_or_default().to_owned())
            .collect(),
        labels: run
            .labels
            .unwrap_or_default()
            .into_iter()
            .take(MAX_LIST)
            .collect(),
        ports: run
            .exposed_ports
            .unwrap_or_default()
            .into_keys()
            .take(MAX_LIST)
            .collect(),
        user: run.user.filter(|u| !u.is_empty()),
        working_dir: run.working_dir.filter(|w| !w.is_empty()),
        history: c
            .history
            .into_iter()
            .take(MAX_LIST)
            .map(|h| {
                let by = h.created_by.or(h.comment).unwrap_or_default();
                (h.created, by, h.empty_layer.unwrap_or(false))
            })
            .collect(),
    }
}
