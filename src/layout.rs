//! The store-layout contract: the object key of every artifact.
//!
//! `publish` writes these keys and `serve` signs URLs for them, so this module is the one place the
//! layout is defined (see `docs/layout.md`). Keys are built only from validated [`RepoName`],
//! [`Tag`] and [`Digest`] values, and repository components can never start with `_`, so the
//! `_`-prefixed files below can never collide with a repository.

use crate::reference::{Digest, RepoName, Tag};

/// The layout version written into every index document. Bump it on any incompatible change.
pub const LAYOUT_VERSION: u32 = 1;

/// An object key relative to the store root, e.g. `blobs/sha256/<hex>`.
pub type Key = String;

// The three keys `serve` builds for every request that is not a repeat are concatenated, not
// formatted: `format!` costs ~600 instructions each (docs/performance.md).

/// Layers and configs (immutable).
pub fn blob(digest: &Digest) -> Key {
    ["blobs/", digest.algorithm().as_str(), "/", digest.hex()].concat()
}

/// Manifests and image indexes by digest (immutable).
pub fn manifest(digest: &Digest) -> Key {
    ["manifests/", digest.algorithm().as_str(), "/", digest.hex()].concat()
}

/// Everything one repository references: the serving index.
pub fn repo_index(name: &RepoName) -> Key {
    ["repositories/", name.as_str(), "/_index.json"].concat()
}

/// The body of `GET /v2/<name>/tags/list`.
pub fn tags_list(name: &RepoName) -> Key {
    format!("repositories/{name}/_tags.json")
}

/// A copy of a tag's manifest, for index-less ("blind") serving straight from a CDN.
pub fn tag_manifest(name: &RepoName, tag: &Tag) -> Key {
    format!("repositories/{name}/_manifests/{tag}")
}

/// The OCI image index answering the referrers API for `subject`.
pub fn referrers(name: &RepoName, subject: &Digest) -> Key {
    format!(
        "repositories/{name}/_referrers/{}/{}",
        subject.algorithm().as_str(),
        subject.hex()
    )
}

/// The body of `GET /v2/_catalog`.
pub const CATALOG: &str = "_catalog.json";

/// A tiny canary object for origin health checks.
pub const HEALTH: &str = "_health";

/// Prefix under which all repository indexes live (used by `verify` to enumerate repositories).
pub const REPOSITORIES_PREFIX: &str = "repositories/";

/// Suffix of a repository index key.
pub const REPO_INDEX_SUFFIX: &str = "/_index.json";

/// Recovers the repository name from a repository-index key, validating it.
pub fn repo_of_index_key(key: &str) -> Option<RepoName> {
    let name = key
        .strip_prefix(REPOSITORIES_PREFIX)?
        .strip_suffix(REPO_INDEX_SUFFIX)?;
    RepoName::parse(name).ok()
}

/// Registry v1 (legacy protocol) files, all under `v1/` (see `docs/v1.md`). A v1 image's `layer` has
/// no key of its own: it is the v2 blob of the same bytes, [`blob`].
pub mod v1 {
    use super::Key;
    use crate::reference::{RepoName, Tag, V1ImageId};

    /// A v1 image's JSON (the body of `GET /v1/images/<id>/json`). Immutable.
    pub fn image_json(id: &V1ImageId) -> Key {
        format!("v1/images/{id}/json")
    }

    /// A v1 image's ancestry: a JSON list of ids, itself first. Immutable.
    pub fn ancestry(id: &V1ImageId) -> Key {
        format!("v1/images/{id}/ancestry")
    }

    /// The body of `GET /v1/repositories/<name>/tags`: a JSON map tag -> id. (`_tags.json`, not
    /// `tags`, because `tags/<tag>` below must be a directory on a local filesystem.)
    pub fn tags(name: &RepoName) -> Key {
        format!("v1/repositories/{name}/_tags.json")
    }

    /// The body of `GET /v1/repositories/<name>/tags/<tag>`: the id as a JSON string.
    pub fn tag(name: &RepoName, tag: &Tag) -> Key {
        format!("v1/repositories/{name}/_tags/{tag}")
    }

    /// The body of `GET /v1/repositories/<name>/images`: a JSON list of `{"id": …}`.
    pub fn images(name: &RepoName) -> Key {
        format!("v1/repositories/{name}/_images.json")
    }

    /// The shard of the global id -> image table holding `id` (v1 image URLs carry no repository,
    /// so the endpoint finds images here). 256 shards by the first two hex characters.
    pub fn image_shard(id: &V1ImageId) -> Key {
        format!("v1/_images/{}.json", &id.as_str()[..2])
    }
}

/// `Cache-Control` for content-addressed objects.
pub const CACHE_IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// `Cache-Control` for index files, which change when tags move.
pub const CACHE_INDEX: &str = "public, max-age=30";

/// Content type of blobs.
pub const BLOB_CONTENT_TYPE: &str = "application/octet-stream";
/// Content type of index files.
pub const JSON_CONTENT_TYPE: &str = "application/json";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let d = Digest::sha256_of(b"x");
        let n = RepoName::parse("library/alpine").unwrap();
        let t = Tag::parse("3.20").unwrap();
        assert_eq!(blob(&d), format!("blobs/sha256/{}", d.hex()));
        assert_eq!(manifest(&d), format!("manifests/sha256/{}", d.hex()));
        assert_eq!(repo_index(&n), "repositories/library/alpine/_index.json");
        assert_eq!(tags_list(&n), "repositories/library/alpine/_tags.json");
        assert_eq!(
            tag_manifest(&n, &t),
            "repositories/library/alpine/_manifests/3.20"
        );
        assert_eq!(
            referrers(&n, &d),
            format!("repositories/library/alpine/_referrers/sha256/{}", d.hex())
        );
        assert_eq!(repo_of_index_key(&repo_index(&n)), Some(n));
        assert_eq!(repo_of_index_key("repositories/_x/_index.json"), None);
    }

    #[test]
    fn v1_keys() {
        use crate::reference::V1ImageId;
        let id = V1ImageId::parse(&"ab".repeat(32)).unwrap();
        let n = RepoName::parse("library/alpine").unwrap();
        let t = Tag::parse("3.20").unwrap();
        assert_eq!(v1::image_json(&id), format!("v1/images/{id}/json"));
        assert_eq!(v1::ancestry(&id), format!("v1/images/{id}/ancestry"));
        assert_eq!(v1::tags(&n), "v1/repositories/library/alpine/_tags.json");
        assert_eq!(v1::tag(&n, &t), "v1/repositories/library/alpine/_tags/3.20");
        assert_eq!(
            v1::images(&n),
            "v1/repositories/library/alpine/_images.json"
        );
        assert_eq!(v1::image_shard(&id), "v1/_images/ab.json");
        // A repository's v1 files never collide with a nested repository's (names cannot start
        // with `_`), nor with the v2 layout.
        assert!(!v1::tags(&n).starts_with(REPOSITORIES_PREFIX));
    }
}
