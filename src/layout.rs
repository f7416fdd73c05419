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

/// Layers and configs (immutable).
pub fn blob(digest: &Digest) -> Key {
    format!("blobs/{}/{}", digest.algorithm().as_str(), digest.hex())
}

/// Manifests and image indexes by digest (immutable).
pub fn manifest(digest: &Digest) -> Key {
    format!("manifests/{}/{}", digest.algorithm().as_str(), digest.hex())
}

/// Everything one repository references: the serving index.
pub fn repo_index(name: &RepoName) -> Key {
    format!("repositories/{name}/_index.json")
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
}
