//! The store-layout contract: the object key of every artifact.
//!
//! `publish` writes these keys and `serve` signs URLs for them, so this module is the one place the
//! layout is defined (see `docs/layout.md`). Keys are built only from validated [`RepoName`],
//! [`Tag`] and [`Digest`] values, and repository components can never start with `_`, so the
//! `_`-prefixed files below can never collide with a repository.

use crate::reference::{Digest, RepoName, Tag, V1ImageId};

/// The layout version written into every index document. Bump it on any incompatible change.
pub const LAYOUT_VERSION: u32 = 1;

/// An object key relative to the store root, e.g. `blobs/sha256/<hex>`.
pub type Key = String;

// The three keys `serve` builds for every request that is not a repeat are concatenated, not
// formatted: `format!` costs ~600 instructions each (docs/performance.md).

/// Prefix of every blob key (`prune` lists it).
pub const BLOBS_PREFIX: &str = "blobs/";

/// Prefix of every manifest key (`prune` lists it).
pub const MANIFESTS_PREFIX: &str = "manifests/";

/// Layers and configs (immutable).
pub fn blob(digest: &Digest) -> Key {
    [BLOBS_PREFIX, digest.algorithm().as_str(), "/", digest.hex()].concat()
}

/// Manifests and image indexes by digest (immutable).
pub fn manifest(digest: &Digest) -> Key {
    [
        MANIFESTS_PREFIX,
        digest.algorithm().as_str(),
        "/",
        digest.hex(),
    ]
    .concat()
}

/// Everything one repository references: the serving index.
pub fn repo_index(name: &RepoName) -> Key {
    [REPOSITORIES_PREFIX, name.as_str(), REPO_INDEX_SUFFIX].concat()
}

/// The common prefix of every file of one repository (its index and what derives from it):
/// `repositories/<name>/_`. A nested repository's keys never continue with `_` there, so
/// listing it finds this repository's files only (`delete-repository`).
pub fn repo_files_prefix(name: &RepoName) -> Key {
    [REPOSITORIES_PREFIX, name.as_str(), "/_"].concat()
}

/// The body of `GET /v2/<name>/tags/list`.
pub fn tags_list(name: &RepoName) -> Key {
    format!("{REPOSITORIES_PREFIX}{name}/_tags.json")
}

/// The common prefix of a repository's tag copies: a copy's key is this prefix and the tag.
pub fn tag_manifests_prefix(name: &RepoName) -> Key {
    format!("{REPOSITORIES_PREFIX}{name}/{TAG_MANIFESTS_DIR}")
}

const TAG_MANIFESTS_DIR: &str = "_manifests/";

/// A copy of a tag's manifest, for index-less ("blind") serving straight from a CDN.
pub fn tag_manifest(name: &RepoName, tag: &Tag) -> Key {
    [tag_manifests_prefix(name).as_str(), tag.as_str()].concat()
}

/// The OCI image index answering the referrers API for `subject`.
pub fn referrers(name: &RepoName, subject: &Digest) -> Key {
    format!(
        "{REPOSITORIES_PREFIX}{name}/_referrers/{}/{}",
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
    match parse(key)? {
        KeyKind::RepoIndex(name) => Some(name),
        _ => None,
    }
}

/// On a local store, the directory beside the layout (not part of it) where blobs are staged
/// before their final rename; `prune` removes stale files there.
pub const LOCAL_STAGING_DIR: &str = ".staging";

/// Where mirror mode's copy leases live (`src/mirror/lease.rs`): never signed, never served.
pub const MIRROR_LEASES_PREFIX: &str = "_mirror/leases/";

/// The lease on copying `reference` (a tag or digest) of store repository `name` from an upstream:
/// one object per image, named by a hash so any reference fits a key.
pub fn mirror_lease(name: &RepoName, reference: &str) -> Key {
    use sha2::Digest as _;
    let h = sha2::Sha256::digest(format!("{name}\n{reference}").as_bytes());
    format!("{MIRROR_LEASES_PREFIX}{}", hex::encode(h))
}

/// On a local store, the file beside the layout holding the embedded origin's URL-signing secret
/// when none is configured: created on first start, shared by every replica of the store, never
/// served (keys never start with `.`).
pub const LOCAL_ORIGIN_SECRET: &str = ".origin-secret";

/// On a local store, the directory beside the layout holding the compare-and-swap lock files.
pub const LOCAL_LOCKS_DIR: &str = ".locks";

/// How a staging file is named in reports, relative to the store root like a key.
pub fn staging_file(file_name: &str) -> String {
    format!("{LOCAL_STAGING_DIR}/{file_name}")
}

/// What a key names, recovered from its syntax: the inverse of the builders in this module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    /// [`blob`]
    Blob(Digest),
    /// [`manifest`]
    Manifest(Digest),
    /// [`repo_index`]
    RepoIndex(RepoName),
    /// A tag copy ([`tag_manifest`]) with the rest of its key as found (it may not be a valid
    /// tag: the store may hold anything).
    TagCopy(RepoName, String),
    /// Any other file of a repository (`_tags.json`, referrers indexes).
    RepoFile(RepoName),
    /// [`CATALOG`]
    Catalog,
    /// [`HEALTH`]
    Health,
    /// [`v1::image_json`] or [`v1::ancestry`]
    V1Image(V1ImageId),
    /// Any other v1 file (the id table's shards, a repository's v1 files).
    V1File,
    /// [`mirror_lease`]
    MirrorLease,
}

impl KeyKind {
    /// Written once and never changed: content-addressed objects and v1 image files. Everything
    /// else changes when tags move.
    pub fn is_immutable(&self) -> bool {
        matches!(
            self,
            KeyKind::Blob(_) | KeyKind::Manifest(_) | KeyKind::V1Image(_)
        )
    }
}

/// What `key` names, or `None` for a key this layout never writes. Content keys must be exactly
/// what [`blob`] or [`manifest`] would build (a canonical, valid digest).
pub fn parse(key: &str) -> Option<KeyKind> {
    let content = |rest: &str| {
        let (alg, hex) = rest.split_once('/')?;
        Digest::parse(&format!("{alg}:{hex}")).ok()
    };
    if let Some(rest) = key.strip_prefix(BLOBS_PREFIX) {
        return content(rest).filter(|d| blob(d) == key).map(KeyKind::Blob);
    }
    if let Some(rest) = key.strip_prefix(MANIFESTS_PREFIX) {
        return content(rest)
            .filter(|d| manifest(d) == key)
            .map(KeyKind::Manifest);
    }
    if let Some(rest) = key.strip_prefix(REPOSITORIES_PREFIX) {
        // Repository components never start with `_`: the first `/_` ends the name.
        let (raw, _) = rest.split_once("/_")?;
        let name = RepoName::parse(raw).ok()?;
        let file = &rest[raw.len() + 1..];
        return Some(if file == &REPO_INDEX_SUFFIX[1..] {
            KeyKind::RepoIndex(name)
        } else if let Some(tag) = file.strip_prefix(TAG_MANIFESTS_DIR) {
            KeyKind::TagCopy(name, tag.to_owned())
        } else {
            KeyKind::RepoFile(name)
        });
    }
    if let Some(rest) = key.strip_prefix(MIRROR_LEASES_PREFIX) {
        return (rest.len() == 64 && rest.bytes().all(|b| b.is_ascii_hexdigit()))
            .then_some(KeyKind::MirrorLease);
    }
    match key {
        CATALOG => return Some(KeyKind::Catalog),
        HEALTH => return Some(KeyKind::Health),
        _ => {}
    }
    let rest = key.strip_prefix(v1::PREFIX)?;
    if let Some(image) = rest.strip_prefix(v1::IMAGES_DIR) {
        let (id, _) = image.split_once('/')?;
        let id = V1ImageId::parse(id).ok()?;
        return [v1::image_json(&id), v1::ancestry(&id)]
            .contains(&key.to_owned())
            .then_some(KeyKind::V1Image(id));
    }
    Some(KeyKind::V1File)
}

/// Whether the object at `key` never changes once written (see [`KeyKind::is_immutable`]).
pub fn is_immutable(key: &str) -> bool {
    parse(key).is_some_and(|k| k.is_immutable())
}

/// Registry v1 (legacy protocol) files, all under `v1/` (see `docs/v1.md`). A v1 image's `layer` has
/// no key of its own: it is the v2 blob of the same bytes, [`blob`].
pub mod v1 {
    use super::Key;
    use crate::reference::{RepoName, Tag, V1ImageId};

    /// Prefix of every v1 file.
    pub(super) const PREFIX: &str = "v1/";
    /// Where the image files are, under [`PREFIX`].
    pub(super) const IMAGES_DIR: &str = "images/";

    /// A v1 image's JSON (the body of `GET /v1/images/<id>/json`). Immutable.
    pub fn image_json(id: &V1ImageId) -> Key {
        format!("{PREFIX}{IMAGES_DIR}{id}/json")
    }

    /// A v1 image's ancestry: a JSON list of ids, itself first. Immutable.
    pub fn ancestry(id: &V1ImageId) -> Key {
        format!("{PREFIX}{IMAGES_DIR}{id}/ancestry")
    }

    /// The body of `GET /v1/repositories/<name>/tags`: a JSON map tag -> id. (`_tags.json`, not
    /// `tags`, because `tags/<tag>` below must be a directory on a local filesystem.)
    pub fn tags(name: &RepoName) -> Key {
        format!("{PREFIX}repositories/{name}/_tags.json")
    }

    /// The common prefix of a repository's [`tag`] files: a file's key is this prefix and the tag.
    pub fn tag_files_prefix(name: &RepoName) -> Key {
        format!("{PREFIX}repositories/{name}/_tags/")
    }

    /// The body of `GET /v1/repositories/<name>/tags/<tag>`: the id as a JSON string.
    pub fn tag(name: &RepoName, tag: &Tag) -> Key {
        [tag_files_prefix(name).as_str(), tag.as_str()].concat()
    }

    /// The body of `GET /v1/repositories/<name>/images`: a JSON list of `{"id": …}`.
    pub fn images(name: &RepoName) -> Key {
        format!("{PREFIX}repositories/{name}/_images.json")
    }

    /// The shard of the global id -> image table holding `id` (v1 image URLs carry no repository,
    /// so the endpoint finds images here). 256 shards by the first two hex characters.
    pub fn image_shard(id: &V1ImageId) -> Key {
        format!("{PREFIX}_images/{}.json", &id.as_str()[..2])
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
        assert_eq!(repo_of_index_key(&repo_index(&n)), Some(n.clone()));
        assert_eq!(repo_of_index_key("repositories/_x/_index.json"), None);
        assert_eq!(
            repo_files_prefix(&n),
            "repositories/library/alpine/_",
            "a nested repository's keys (library/alpine/x/…) are not under it"
        );
        assert!(tag_manifest(&n, &t).starts_with(&tag_manifests_prefix(&n)));
        assert_eq!(staging_file("tmp1"), ".staging/tmp1");
    }

    /// Every key a builder makes parses back to what it was built from; keys the layout never
    /// writes (or not exactly so) parse to nothing.
    #[test]
    fn parse_inverts_the_builders() {
        use crate::reference::V1ImageId;
        let d = Digest::sha256_of(b"x");
        let n = RepoName::parse("library/alpine").unwrap();
        let t = Tag::parse("3.20").unwrap();
        let id = V1ImageId::parse(&"ab".repeat(32)).unwrap();
        let cases = [
            (blob(&d), Some(KeyKind::Blob(d.clone())), true),
            (manifest(&d), Some(KeyKind::Manifest(d.clone())), true),
            (repo_index(&n), Some(KeyKind::RepoIndex(n.clone())), false),
            (
                tag_manifest(&n, &t),
                Some(KeyKind::TagCopy(n.clone(), "3.20".into())),
                false,
            ),
            (tags_list(&n), Some(KeyKind::RepoFile(n.clone())), false),
            (referrers(&n, &d), Some(KeyKind::RepoFile(n.clone())), false),
            (CATALOG.into(), Some(KeyKind::Catalog), false),
            (HEALTH.into(), Some(KeyKind::Health), false),
            (
                v1::image_json(&id),
                Some(KeyKind::V1Image(id.clone())),
                true,
            ),
            (v1::ancestry(&id), Some(KeyKind::V1Image(id.clone())), true),
            (v1::image_shard(&id), Some(KeyKind::V1File), false),
            (v1::tags(&n), Some(KeyKind::V1File), false),
            (v1::tag(&n, &t), Some(KeyKind::V1File), false),
            (v1::images(&n), Some(KeyKind::V1File), false),
            (mirror_lease(&n, "3.20"), Some(KeyKind::MirrorLease), false),
            // Not what a builder would write.
            ("_mirror/leases/x".into(), None, false),
            (
                format!("blobs/sha256/{}", d.hex().to_uppercase()),
                None,
                false,
            ),
            (format!("blobs/sha256/{}/x", d.hex()), None, false),
            (format!("manifests/sha256/{}", &d.hex()[1..]), None, false),
            ("blobs/sha256".into(), None, false),
            ("repositories/A/_index.json".into(), None, false),
            ("repositories/a/b".into(), None, false),
            ("repositories/_x/_index.json".into(), None, false),
            (format!("v1/images/{id}/layer"), None, false),
            ("v1/images/zz/json".into(), None, false),
            (".staging/tmp1".into(), None, false),
            ("other".into(), None, false),
        ];
        for (key, want, immutable) in cases {
            assert_eq!(parse(&key), want, "{key}");
            assert_eq!(is_immutable(&key), immutable, "{key}");
        }
        // A nested repository's files belong to it, not to its parent.
        assert_eq!(
            parse("repositories/a/b/_manifests/x/y"),
            Some(KeyKind::TagCopy(
                RepoName::parse("a/b").unwrap(),
                "x/y".into()
            ))
        );
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
        assert_eq!(
            v1::tag_files_prefix(&n),
            "v1/repositories/library/alpine/_tags/"
        );
        // A repository's v1 files never collide with a nested repository's (names cannot start
        // with `_`), nor with the v2 layout.
        assert!(!v1::tags(&n).starts_with(REPOSITORIES_PREFIX));
    }
}
