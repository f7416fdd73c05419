//! The per-repository index document (`_index.json`) and the derived static files.
//!
//! `serve` answers every request from this one document: tags resolve to descriptors, and a blob or
//! manifest digest is only redirected when the repository references it. `publish` merges into it
//! under a conditional write, so the merge rules live here with the types.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::layout::LAYOUT_VERSION;
use crate::reference::{Digest, RepoName, Tag, V1ImageId};

/// An OCI content descriptor, as stored in index documents and referrers indexes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// What the endpoint needs to answer a manifest HEAD locally.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestEntry {
    pub media_type: String,
    pub size: u64,
}

/// The repository index: the contract between `publish` and `serve` (see `docs/layout.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoIndex {
    pub layout_version: u32,
    pub name: RepoName,
    /// tag -> the manifest (or image index) it points at.
    #[serde(default)]
    pub tags: BTreeMap<Tag, Descriptor>,
    /// Every manifest and image index the repository references, children of indexes included.
    #[serde(default)]
    pub manifests: BTreeMap<Digest, ManifestEntry>,
    /// Every blob (config or layer) the repository references, with its size.
    #[serde(default)]
    pub blobs: BTreeMap<Digest, u64>,
    /// subject digest -> descriptors of the artifacts that refer to it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub referrers: BTreeMap<Digest, Vec<Descriptor>>,
    /// The registry v1 view (`publish --v1`); absent otherwise, so indexes written without it
    /// still parse and older readers ignore it (additive: no layout_version bump).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v1: Option<V1Index>,
    /// Tags copied from an upstream by mirror mode: where from and when last resolved there, so
    /// `serve` knows when to re-resolve them (additive, like `v1`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mirrored: BTreeMap<Tag, MirroredTag>,
    /// For every tag, where it pointed and since when, oldest first, the last [`MAX_HISTORY`]
    /// moves (the last entry is the current one). Written in the same compare-and-swap as the tag,
    /// so racing publishers each record their move (additive, like `v1`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub history: BTreeMap<Tag, Vec<TagMove>>,
}

/// How many moves of a tag the index remembers.
pub const MAX_HISTORY: usize = 20;

/// One move of a tag: the digest it then pointed at, and when (Unix seconds; 0 when the tag
/// predates history).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagMove {
    pub digest: Digest,
    pub at: i64,
}

/// Where a mirrored tag came from, and when the upstream last confirmed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirroredTag {
    /// The upstream as clients name it (`docker.io`).
    pub upstream: String,
    /// Unix seconds.
    pub resolved: i64,
}

impl RepoIndex {
    pub fn new(name: RepoName) -> Self {
        RepoIndex {
            layout_version: LAYOUT_VERSION,
            name,
            tags: BTreeMap::new(),
            manifests: BTreeMap::new(),
            blobs: BTreeMap::new(),
            referrers: BTreeMap::new(),
            v1: None,
            mirrored: BTreeMap::new(),
            history: BTreeMap::new(),
        }
    }

    /// Parses an index document, refusing layouts newer than this binary understands.
    pub fn from_slice(bytes: &[u8]) -> anyhow::Result<Self> {
        let idx: RepoIndex = serde_json::from_slice(bytes)?;
        idx.ensure_supported()?;
        Ok(idx)
    }

    /// Refuses an index written by a newer layout, which this binary could misread or, by
    /// rewriting it, corrupt.
    pub fn ensure_supported(&self) -> anyhow::Result<()> {
        if self.layout_version > LAYOUT_VERSION {
            anyhow::bail!(
                "repository index for {} has layout_version {}, this binary understands up to {}; upgrade static-registry",
                self.name,
                self.layout_version,
                LAYOUT_VERSION
            );
        }
        Ok(())
    }

    /// [`RepoIndex::from_slice`] for `serve`: tags and manifests recorded with a media type that
    /// is not a manifest's are left out (and logged), so the endpoint never answers a manifest
    /// with an arbitrary `Content-Type` from a tampered index. `verify` reports them.
    pub fn for_serving(bytes: &[u8]) -> anyhow::Result<Self> {
        use crate::oci::media::is_accepted;
        let mut idx = Self::from_slice(bytes)?;
        let before = (idx.tags.len(), idx.manifests.len());
        // Publish checked an artifact manifest's artifactType; the index does not record it.
        idx.manifests
            .retain(|_, e| is_accepted(&e.media_type, true));
        idx.tags.retain(|_, d| is_accepted(&d.media_type, true));
        if (idx.tags.len(), idx.manifests.len()) != before {
            tracing::warn!(
                "repository index of {}: left out {} tag(s) and {} manifest(s) whose media type is not a manifest's (run verify)",
                idx.name,
                before.0 - idx.tags.len(),
                before.1 - idx.manifests.len()
            );
        }
        Ok(idx)
    }

    pub fn to_vec(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("index serialises")
    }

    /// Points `tag` at `to` at time `at`, recording the move in `history` when the digest changes
    /// (the one place a tag move is recorded: publish, `tag` and mirror mode all come here).
    pub fn set_tag(&mut self, tag: &Tag, to: Descriptor, at: i64) {
        let previous = self.tags.get(tag).map(|d| d.digest.clone());
        if previous.as_ref() != Some(&to.digest) {
            let moves = self.history.entry(tag.clone()).or_default();
            if moves.is_empty() {
                if let Some(p) = previous {
                    moves.push(TagMove { digest: p, at: 0 });
                }
            }
            moves.push(TagMove {
                digest: to.digest.clone(),
                at,
            });
            let excess = moves.len().saturating_sub(MAX_HISTORY);
            moves.drain(..excess);
        }
        self.tags.insert(tag.clone(), to);
    }

    /// When `tag` was last moved (0 when unknown).
    pub fn published_at(&self, tag: &Tag) -> i64 {
        self.history
            .get(tag)
            .and_then(|h| h.last())
            .map_or(0, |m| m.at)
    }

    /// Merges a publish into this index: new tags win (their moves recorded, at the time the
    /// publish stamped in its own history, else now), referenced content accumulates (digest
    /// pulls of earlier versions keep working until `prune` or an untag removes them).
    pub fn merge(&mut self, other: &RepoIndex) {
        self.layout_version = LAYOUT_VERSION;
        for (tag, d) in &other.tags {
            let at = other
                .history
                .get(tag)
                .and_then(|h| h.last())
                .map_or_else(|| jiff::Timestamp::now().as_second(), |m| m.at);
            self.set_tag(tag, d.clone(), at);
        }
        self.manifests
            .extend(other.manifests.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.blobs
            .extend(other.blobs.iter().map(|(k, v)| (k.clone(), *v)));
        for (subject, descs) in &other.referrers {
            let list = self.referrers.entry(subject.clone()).or_default();
            for d in descs {
                if !list.iter().any(|x| x.digest == d.digest) {
                    list.push(d.clone());
                }
            }
            list.sort_by(|a, b| a.digest.cmp(&b.digest));
        }
        // A tag this publish set without v1 data must not keep naming its old v1 image: v1 and v2
        // clients would then get different images for one tag.
        if let Some(mine) = &mut self.v1 {
            for t in other.tags.keys() {
                if other.v1.as_ref().is_none_or(|o| !o.tags.contains_key(t)) {
                    mine.tags.remove(t);
                }
            }
        }
        if let Some(theirs) = &other.v1 {
            self.v1.get_or_insert_with(V1Index::default).merge(theirs);
        }
        // A tag set by hand is no longer the upstream's: mirror mode stops refreshing it.
        for t in other.tags.keys() {
            match other.mirrored.get(t) {
                Some(m) => self.mirrored.insert(t.clone(), m.clone()),
                None => self.mirrored.remove(t),
            };
        }
    }

    /// The v1 tags served: v1 tags that are still v2 tags too (a tag another tool removed from
    /// the index must not live on in v1 only).
    pub fn v1_tags(&self) -> BTreeMap<&Tag, &V1ImageId> {
        self.v1
            .iter()
            .flat_map(|v| v.tags.iter())
            .filter(|(t, _)| self.tags.contains_key(*t))
            .collect()
    }

    /// The body of `GET /v2/<name>/tags/list`.
    pub fn tags_list(&self) -> TagsList {
        TagsList {
            name: self.name.clone(),
            tags: self.tags.keys().map(|t| t.as_str().to_owned()).collect(),
        }
    }
}

/// The registry v1 view of a repository (see `docs/v1.md`): which v1 image id each tag names, and
/// every v1 image the repository references. The endpoint answers `/v1/repositories/<name>/…`
/// from it, like `/v2/` from the rest of the index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct V1Index {
    /// tag -> the id of its top v1 image.
    #[serde(default)]
    pub tags: BTreeMap<Tag, V1ImageId>,
    /// Every v1 image of the repository (the ancestry of every tag, and earlier ones).
    #[serde(default)]
    pub images: BTreeMap<V1ImageId, V1Image>,
}

impl V1Index {
    /// Same rules as the v2 part: new tags win, images accumulate.
    pub fn merge(&mut self, other: &V1Index) {
        self.tags
            .extend(other.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.images
            .extend(other.images.iter().map(|(k, v)| (k.clone(), v.clone())));
    }

    /// The ids from `id` up to its base image, `id` first (the body of `ancestry`). Stops at a
    /// missing or repeated parent, so a corrupt document cannot loop.
    pub fn ancestry(&self, id: &V1ImageId) -> Vec<V1ImageId> {
        let mut out = vec![id.clone()];
        let mut cur = self.images.get(id).and_then(|i| i.parent.clone());
        while let Some(p) = cur {
            if out.contains(&p) {
                break;
            }
            cur = self.images.get(&p).and_then(|i| i.parent.clone());
            out.push(p);
        }
        out
    }
}

/// One v1 image: its parent, and the v2 blob that is its `layer` (v1 layers are never stored
/// twice: the endpoint redirects `/v1/images/<id>/layer` to this blob).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct V1Image {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<V1ImageId>,
    /// The layer blob (gzip-compressed tar, or a plain tar).
    pub layer: Digest,
    /// Its size in bytes (`X-Docker-Size`).
    pub size: u64,
}

/// One shard of the store-wide v1 image table (`v1/_images/<xx>.json`). v1 image URLs name no
/// repository, so without this the endpoint could not tell an unknown id from a known one, nor
/// find the layer blob to redirect to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct V1ImageShard {
    #[serde(default)]
    pub images: BTreeMap<V1ImageId, V1ShardEntry>,
}

/// A v1 image in the store-wide table, with the repositories that reference it: the endpoint
/// serves it only when one of them may be pulled, and signs through that repository's origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct V1ShardEntry {
    #[serde(flatten)]
    pub image: V1Image,
    #[serde(default)]
    pub repositories: BTreeSet<RepoName>,
}

impl V1ImageShard {
    /// Adds images, accumulating the repositories of ids already present.
    pub fn merge(&mut self, name: &RepoName, images: &BTreeMap<V1ImageId, V1Image>) {
        for (id, img) in images {
            let e = self
                .images
                .entry(id.clone())
                .or_insert_with(|| V1ShardEntry {
                    image: img.clone(),
                    repositories: BTreeSet::new(),
                });
            e.repositories.insert(name.clone());
        }
    }
}

/// The body of `GET /v2/<name>/tags/list` (`_tags.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagsList {
    pub name: RepoName,
    pub tags: Vec<String>,
}

/// The body of `GET /v2/_catalog` (`_catalog.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    pub repositories: Vec<String>,
}

impl Catalog {
    /// Adds a repository, keeping the list sorted and unique; returns whether it changed.
    pub fn insert(&mut self, name: &RepoName) -> bool {
        match self
            .repositories
            .binary_search_by(|r| r.as_str().cmp(name.as_str()))
        {
            Ok(_) => false,
            Err(pos) => {
                self.repositories.insert(pos, name.as_str().to_owned());
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serving_leaves_out_entries_that_are_not_manifests() {
        let mut idx = RepoIndex::new(RepoName::parse("a/b").unwrap());
        let good = desc(b"good");
        let mut bad = desc(b"bad");
        bad.media_type = "text/html".into();
        for (t, d) in [("good", &good), ("bad", &bad)] {
            idx.tags.insert(Tag::parse(t).unwrap(), d.clone());
            idx.manifests.insert(
                d.digest.clone(),
                ManifestEntry {
                    media_type: d.media_type.clone(),
                    size: d.size,
                },
            );
        }
        let served = RepoIndex::for_serving(&idx.to_vec()).unwrap();
        assert_eq!(served.tags.len(), 1);
        assert!(served.tags.contains_key(&Tag::parse("good").unwrap()));
        assert!(served.manifests.contains_key(&good.digest));
        assert!(!served.manifests.contains_key(&bad.digest));
    }

    fn desc(data: &[u8]) -> Descriptor {
        Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: Digest::sha256_of(data),
            size: data.len() as u64,
            artifact_type: None,
            platform: None,
            annotations: None,
        }
    }

    #[test]
    fn merge_keeps_other_tags_and_moves_existing() {
        let name = RepoName::parse("a/b").unwrap();
        let mut base = RepoIndex::new(name.clone());
        base.tags.insert(Tag::parse("1").unwrap(), desc(b"one"));
        base.tags
            .insert(Tag::parse("latest").unwrap(), desc(b"one"));
        let mut new = RepoIndex::new(name);
        new.tags.insert(Tag::parse("2").unwrap(), desc(b"two"));
        new.tags.insert(Tag::parse("latest").unwrap(), desc(b"two"));
        new.blobs.insert(Digest::sha256_of(b"layer"), 5);
        base.merge(&new);
        assert_eq!(base.tags.len(), 3);
        assert_eq!(base.tags[&Tag::parse("latest").unwrap()], desc(b"two"));
        assert_eq!(base.tags[&Tag::parse("1").unwrap()], desc(b"one"));
        assert_eq!(base.blobs.len(), 1);
        let round = RepoIndex::from_slice(&base.to_vec()).unwrap();
        assert_eq!(round, base);
    }

    #[test]
    fn v1_section_merges_and_old_indexes_parse() {
        let id = |c: char| V1ImageId::parse(&c.to_string().repeat(64)).unwrap();
        let img = |parent: Option<V1ImageId>| V1Image {
            parent,
            layer: Digest::sha256_of(b"l"),
            size: 1,
        };
        let name = RepoName::parse("a/b").unwrap();
        let (one, two, latest) = (
            Tag::parse("1").unwrap(),
            Tag::parse("2").unwrap(),
            Tag::parse("latest").unwrap(),
        );
        // An index written before v1 existed parses, without a v1 section, and writes none.
        let old = br#"{"layout_version":1,"name":"a/b","tags":{},"manifests":{},"blobs":{}}"#;
        let mut base = RepoIndex::from_slice(old).unwrap();
        assert_eq!(base.v1, None);
        assert!(!String::from_utf8(base.to_vec()).unwrap().contains("v1"));

        let mut v1pub = RepoIndex::new(name.clone());
        for t in [&one, &latest] {
            v1pub.tags.insert(t.clone(), desc(b"one"));
        }
        let mut v = V1Index::default();
        v.images.insert(id('a'), img(None));
        v.images.insert(id('b'), img(Some(id('a'))));
        v.tags.insert(one.clone(), id('b'));
        v.tags.insert(latest.clone(), id('b'));
        v1pub.v1 = Some(v);
        base.merge(&v1pub);
        let v = base.v1.clone().unwrap();
        assert_eq!(v.tags.len(), 2);
        assert_eq!(v.ancestry(&id('b')), vec![id('b'), id('a')]);
        assert_eq!(v.ancestry(&id('c')), vec![id('c')]);
        assert_eq!(RepoIndex::from_slice(&base.to_vec()).unwrap(), base);

        // A publish without v1 moves `latest` and adds `2`: `latest` leaves the v1 view, `1`
        // stays, and the images stay (digest-like pulls of old ids keep working).
        let mut plain = RepoIndex::new(name);
        plain.tags.insert(latest.clone(), desc(b"two"));
        plain.tags.insert(two.clone(), desc(b"two"));
        base.merge(&plain);
        let v = base.v1.clone().unwrap();
        assert_eq!(v.tags.keys().collect::<Vec<_>>(), vec![&one]);
        assert_eq!(v.images.len(), 2);

        // A self-parented image cannot loop.
        let mut looped = V1Index::default();
        looped.images.insert(id('c'), img(Some(id('c'))));
        assert_eq!(looped.ancestry(&id('c')), vec![id('c')]);
    }

    #[test]
    fn v1_shards_accumulate_repositories() {
        let id = V1ImageId::parse(&"c".repeat(64)).unwrap();
        let mut images = BTreeMap::new();
        images.insert(
            id.clone(),
            V1Image {
                parent: None,
                layer: Digest::sha256_of(b"l"),
                size: 1,
            },
        );
        let mut shard = V1ImageShard::default();
        shard.merge(&RepoName::parse("b").unwrap(), &images);
        shard.merge(&RepoName::parse("a").unwrap(), &images);
        shard.merge(&RepoName::parse("a").unwrap(), &images);
        let e = &shard.images[&id];
        assert_eq!(e.repositories.len(), 2);
        let json = serde_json::to_string(&shard).unwrap();
        assert!(json.contains("\"layer\""), "{json}");
        assert_eq!(serde_json::from_str::<V1ImageShard>(&json).unwrap(), shard);
    }

    #[test]
    fn newer_layouts_are_refused() {
        let mut idx = RepoIndex::new(RepoName::parse("a").unwrap());
        idx.layout_version = LAYOUT_VERSION + 1;
        let err = RepoIndex::from_slice(&idx.to_vec()).unwrap_err();
        assert!(err.to_string().contains("upgrade"), "{err}");
    }

    #[test]
    fn catalog_insert_is_sorted_and_unique() {
        let mut c = Catalog::default();
        for n in ["b", "a", "c", "a"] {
            c.insert(&RepoName::parse(n).unwrap());
        }
        assert_eq!(c.repositories, vec!["a", "b", "c"]);
    }
}
