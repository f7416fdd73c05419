//! The per-repository index document (`_index.json`) and the derived static files.
//!
//! `serve` answers every request from this one document: tags resolve to descriptors, and a blob or
//! manifest digest is only redirected when the repository references it. `publish` merges into it
//! under a conditional write, so the merge rules live here with the types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::layout::LAYOUT_VERSION;
use crate::reference::{Digest, RepoName, Tag};

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
        }
    }

    /// Parses an index document, refusing layouts newer than this binary understands.
    pub fn from_slice(bytes: &[u8]) -> anyhow::Result<Self> {
        let idx: RepoIndex = serde_json::from_slice(bytes)?;
        if idx.layout_version > LAYOUT_VERSION {
            anyhow::bail!(
                "repository index for {} has layout_version {}, this binary understands up to {}; upgrade static-registry",
                idx.name,
                idx.layout_version,
                LAYOUT_VERSION
            );
        }
        Ok(idx)
    }

    pub fn to_vec(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("index serialises")
    }

    /// Merges a publish into this index: new tags win, referenced content accumulates (digest
    /// pulls of earlier versions keep working until `prune` or an untag removes them).
    pub fn merge(&mut self, other: &RepoIndex) {
        self.layout_version = LAYOUT_VERSION;
        self.tags
            .extend(other.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
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
    }

    /// The body of `GET /v2/<name>/tags/list`.
    pub fn tags_list(&self) -> TagsList {
        TagsList {
            name: self.name.clone(),
            tags: self.tags.keys().map(|t| t.as_str().to_owned()).collect(),
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
