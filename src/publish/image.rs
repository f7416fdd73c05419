//! What a source offers, independent of its format: a tree of manifests and image indexes whose
//! leaves are blobs, each with a recipe for getting it into the store.
//!
//! Loading (oci.rs, docker_archive.rs) builds this tree; uploading produces the blobs; rendering
//! (render.rs) then writes manifests bottom-up, because a manifest whose layers get compressed
//! only has a digest once its layers do.

use std::collections::HashSet;
use std::sync::Arc;

use crate::oci::Descriptor;
use crate::reference::Digest;

/// How to get one blob into the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobSource {
    /// Copied byte-for-byte from `path` in the source (`None`: the source does not carry it, as
    /// with foreign layers; then it must already be in the store).
    Copy {
        path: Option<String>,
        digest: Digest,
        size: u64,
    },
    /// An uncompressed layer at `path`, compressed on the way; its tar must hash to `diff_id`.
    Compress { path: String, diff_id: Digest },
}

/// Identifies a blob to produce, so a layer shared by several manifests is produced once.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BlobKey {
    Copy(Digest),
    /// The file as well as the diff_id: two layers that claim one diff_id but are different
    /// files are each read and checked, so a repeated diff_id cannot hide a layer.
    Compress {
        diff_id: Digest,
        path: String,
    },
}

impl BlobSource {
    pub fn key(&self) -> BlobKey {
        match self {
            BlobSource::Copy { digest, .. } => BlobKey::Copy(digest.clone()),
            BlobSource::Compress { path, diff_id } => BlobKey::Compress {
                diff_id: diff_id.clone(),
                path: path.clone(),
            },
        }
    }

    /// The file of the source it is read from, if the source has it.
    pub fn path(&self) -> Option<&str> {
        match self {
            BlobSource::Copy { path, .. } => path.as_deref(),
            BlobSource::Compress { path, .. } => Some(path),
        }
    }
}

/// A config or layer of a manifest.
#[derive(Debug, Clone)]
pub struct BlobRef {
    /// The media type the source gave it.
    pub media_type: String,
    pub source: BlobSource,
    /// Foreign-layer URLs, kept in generated manifests.
    pub urls: Option<Vec<String>>,
    /// Where it sits, for messages: "layer 2 of sha256:ab12… (linux/amd64)".
    pub what: String,
}

/// A manifest or image index of the source.
#[derive(Debug, Clone)]
pub enum Node {
    Manifest(ManifestNode),
    Index(IndexNode),
}

/// An image manifest.
#[derive(Debug, Clone)]
pub struct ManifestNode {
    /// The bytes and digest exactly as the source has them; `None` for legacy `docker save`
    /// images, which carry no manifest at all.
    pub original: Option<(Vec<u8>, Digest)>,
    /// Its media type (its own `mediaType`, else the descriptor's).
    pub media_type: String,
    pub config: BlobRef,
    pub layers: Vec<BlobRef>,
}

/// An image index (or Docker manifest list).
#[derive(Debug, Clone)]
pub struct IndexNode {
    pub original: Vec<u8>,
    pub digest: Digest,
    pub media_type: String,
    /// One per `manifests[]` entry, in order; `None` where the source lacks that child. A child
    /// listed several times (anywhere in the tree) is one shared node: the tree is a graph.
    pub children: Vec<Option<Arc<Node>>>,
    /// The `manifests[]` entries as the index lists them.
    pub entries: Vec<Descriptor>,
}

impl Node {
    /// Every blob the tree needs, each once, in first-seen order.
    pub fn blobs(&self) -> Vec<BlobRef> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for m in self.manifests() {
            for b in std::iter::once(&m.config).chain(&m.layers) {
                if seen.insert(b.source.key()) {
                    out.push(b.clone());
                }
            }
        }
        out
    }

    /// Every image manifest of the graph, each shared node once.
    pub fn manifests(&self) -> Vec<&ManifestNode> {
        let mut out = Vec::new();
        let mut seen: HashSet<*const Node> = HashSet::new();
        let mut todo = vec![self];
        while let Some(n) = todo.pop() {
            if !seen.insert(n as *const Node) {
                continue;
            }
            match n {
                Node::Manifest(m) => out.push(m),
                Node::Index(i) => todo.extend(i.children.iter().flatten().rev().map(|c| &**c)),
            }
        }
        out
    }

    /// Whether any config in the tree has this digest (used to match `docker save` entries).
    pub fn has_config(&self, digest: &Digest) -> bool {
        self.manifests()
            .iter()
            .any(|m| matches!(&m.config.source, BlobSource::Copy { digest: d, .. } if d == digest))
    }
}

/// `sha256:0123456789ab`, for messages.
pub fn short(d: &Digest) -> String {
    let s = d.as_str();
    s[..s.len().min(d.algorithm().as_str().len() + 13)].to_owned()
}
