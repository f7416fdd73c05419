//! The OCI distribution-spec grammar for repository names, tags and digests.
//!
//! This module is the security boundary: every name, tag and digest that reaches a store key or a
//! signer has been parsed into one of these types first. The parsers are hand-written (no regex)
//! because they run on every request; they accept exactly the spec's grammar and nothing else, so
//! percent-encoding, `..`, empty components and uppercase names never get through.

use std::fmt;
use std::str::FromStr;

/// Longest repository name the spec allows (distribution's limit, path components included).
pub const MAX_NAME_LEN: usize = 255;
/// Longest tag the spec allows.
pub const MAX_TAG_LEN: usize = 128;

/// Why a name, tag or digest was rejected; the message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid repository name {0:?}: components are lowercase [a-z0-9] separated by '.', '_', '__' or '-', joined by '/', at most 255 characters")]
    Name(String),
    #[error("invalid tag {0:?}: a tag is [A-Za-z0-9_] followed by up to 127 of [A-Za-z0-9._-]")]
    Tag(String),
    #[error(
        "invalid digest {0:?}: expected sha256:<64 lowercase hex> or sha512:<128 lowercase hex>"
    )]
    Digest(String),
    #[error("invalid image reference {0:?}: expected NAME:TAG or NAME@DIGEST")]
    Reference(String),
    #[error("invalid v1 image id {0:?}: expected 64 lowercase hex characters")]
    V1Id(String),
}

/// A validated repository name such as `library/alpine`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        if s.is_empty() || s.len() > MAX_NAME_LEN || !s.split('/').all(valid_component) {
            return Err(ReferenceError::Name(s.to_owned()));
        }
        Ok(RepoName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run; first and last bytes are alphanumeric, so it is always followed by one.
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &b[start..i];
        let ok = sep == b"." || sep == b"_" || sep == b"__" || sep.iter().all(|&x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for RepoName {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A validated tag such as `1.0` or `latest`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        let b = s.as_bytes();
        let head = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
        let tail = |x: u8| head(x) || x == b'.' || x == b'-';
        if b.is_empty() || b.len() > MAX_TAG_LEN || !head(b[0]) || !b[1..].iter().all(|&x| tail(x))
        {
            return Err(ReferenceError::Tag(s.to_owned()));
        }
        Ok(Tag(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The digest algorithms the layout stores. Anything else is rejected at parse time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A validated content digest such as `sha256:<64 hex>`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    /// The whole `algo:hex` string, kept so formatting and keys never allocate twice.
    full: String,
}

impl Digest {
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        let err = || ReferenceError::Digest(s.to_owned());
        let (algo, hex) = s.split_once(':').ok_or_else(err)?;
        let algorithm = match algo {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => return Err(err()),
        };
        // Every byte checked without an early exit: the loop vectorises (it runs per request).
        let lower_hex = |x: u8| x.is_ascii_digit() | (b'a'..=b'f').contains(&x);
        let all_hex = hex.bytes().fold(true, |ok, x| ok & lower_hex(x));
        if hex.len() != algorithm.hex_len() || !all_hex {
            return Err(err());
        }
        Ok(Digest {
            algorithm,
            full: s.to_owned(),
        })
    }

    /// The sha256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Self {
        use sha2::Digest as _;
        Self::from_sha256_hex(&hex::encode(sha2::Sha256::digest(bytes)))
    }

    /// Builds a sha256 digest from a hasher's hex output (trusted: it came from our own hasher).
    pub fn from_sha256_hex(hex: &str) -> Self {
        debug_assert_eq!(hex.len(), 64);
        Digest {
            algorithm: Algorithm::Sha256,
            full: format!("sha256:{hex}"),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn hex(&self) -> &str {
        &self.full[self.algorithm.as_str().len() + 1..]
    }

    pub fn as_str(&self) -> &str {
        &self.full
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl FromStr for Digest {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.full)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Tag {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Tag {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Tag::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for RepoName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for RepoName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        RepoName::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A legacy (registry v1) image id: exactly 64 lowercase hex characters, no algorithm prefix.
///
/// v1 ids name images in `/v1/images/<id>/…` URLs and in `v1/images/<id>/…` store keys, so they
/// cross the same security boundary as digests: only this type's parser lets one through.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct V1ImageId(String);

impl V1ImageId {
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        let lower_hex = |x: &u8| x.is_ascii_digit() || (b'a'..=b'f').contains(x);
        if s.len() != 64 || !s.as_bytes().iter().all(lower_hex) {
            return Err(ReferenceError::V1Id(s.to_owned()));
        }
        Ok(V1ImageId(s.to_owned()))
    }

    /// The id whose hex is that of a sha256 digest (how computed ids are made).
    pub fn from_sha256(d: &Digest) -> Option<Self> {
        match d.algorithm() {
            Algorithm::Sha256 => Some(V1ImageId(d.hex().to_owned())),
            Algorithm::Sha512 => None,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for V1ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for V1ImageId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for V1ImageId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        V1ImageId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// What a manifest request names: a tag, or a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ManifestRef {
    Tag(Tag),
    Digest(Digest),
}

impl ManifestRef {
    /// A `<reference>` path segment: a digest when it contains `:`, else a tag.
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        if s.contains(':') {
            Digest::parse(s).map(ManifestRef::Digest)
        } else {
            Tag::parse(s).map(ManifestRef::Tag)
        }
    }
}

impl fmt::Display for ManifestRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManifestRef::Tag(t) => t.fmt(f),
            ManifestRef::Digest(d) => d.fmt(f),
        }
    }
}

/// `REPO:TAG`, as given to `publish --tag`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaggedName {
    pub name: RepoName,
    pub tag: Tag,
}

impl FromStr for TaggedName {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, tag) = s
            .rsplit_once(':')
            .filter(|(_, t)| !t.contains('/'))
            .ok_or_else(|| ReferenceError::Reference(s.to_owned()))?;
        Ok(TaggedName {
            name: RepoName::parse(name)?,
            tag: Tag::parse(tag)?,
        })
    }
}

impl fmt::Display for TaggedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX64: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn names_accepted() {
        for ok in [
            "a",
            "library/alpine",
            "a.b_c__d---e/f9",
            "x/y/z/w",
            "0",
            "registry.k8s.io/pause",
        ] {
            assert!(RepoName::parse(ok).is_ok(), "{ok}");
        }
        assert!(RepoName::parse(&"a".repeat(255)).is_ok());
    }

    #[test]
    fn hostile_names_rejected() {
        let long = "a".repeat(256);
        for bad in [
            "",
            "/",
            "a/",
            "/a",
            "a//b",
            "..",
            "a/../b",
            "a/./b",
            ".a",
            "a.",
            "a..b",
            "a___b",
            "a_-b",
            "A",
            "Library/alpine",
            "a%2fb",
            "a%2e%2e/b",
            "%2e%2e",
            "a b",
            "a\0b",
            "a\\b",
            "a:b",
            "a@b",
            "_index.json",
            "a/_manifests",
            "a?b",
            "a#b",
            "é",
            "a\nb",
            "-a",
            "a-",
            long.as_str(),
        ] {
            assert!(RepoName::parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn tags() {
        for ok in ["latest", "1.0", "_x", "A-b.c_D", &"t".repeat(128)] {
            assert!(Tag::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".hidden",
            "-x",
            "a/b",
            "..",
            "a:b",
            "a%20b",
            "a b",
            "a\0",
            &"t".repeat(129),
            "é",
        ] {
            assert!(Tag::parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn digests() {
        let d = Digest::parse(&format!("sha256:{HEX64}")).unwrap();
        assert_eq!(d.hex(), HEX64);
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(Digest::sha256_of(b""), d);
        let sha512 = format!("sha512:{}", "a".repeat(128));
        assert!(Digest::parse(&sha512).is_ok());
        for bad in [
            String::new(),
            "sha256:".into(),
            HEX64.into(),
            format!("sha256:{}", HEX64.to_uppercase()),
            format!("sha256:{}", &HEX64[1..]),
            format!("sha256:{HEX64}0"),
            format!("sha384:{}", "a".repeat(96)),
            format!("md5:{}", "a".repeat(32)),
            format!("SHA256:{HEX64}"),
            format!("sha256:{}..", &HEX64[2..]),
            format!("sha256:{}%2f", &HEX64[3..]),
            format!("sha256:../{}", &HEX64[3..]),
            format!("sha512:{HEX64}"),
            format!("sha256:{HEX64}:x"),
        ] {
            assert!(Digest::parse(&bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn manifest_refs_and_tagged_names() {
        assert!(matches!(
            ManifestRef::parse("latest"),
            Ok(ManifestRef::Tag(_))
        ));
        assert!(matches!(
            ManifestRef::parse(&format!("sha256:{HEX64}")),
            Ok(ManifestRef::Digest(_))
        ));
        assert!(ManifestRef::parse("sha256:nothex").is_err());
        let t: TaggedName = "library/alpine:3.20".parse().unwrap();
        assert_eq!(t.name.as_str(), "library/alpine");
        assert_eq!(t.tag.as_str(), "3.20");
        assert!("noport".parse::<TaggedName>().is_err());
        assert!("Upper/x:1".parse::<TaggedName>().is_err());
        assert!("x:bad tag".parse::<TaggedName>().is_err());
    }

    #[test]
    fn v1_image_ids() {
        let id = V1ImageId::parse(HEX64).unwrap();
        assert_eq!(id.as_str(), HEX64);
        let d = Digest::parse(&format!("sha256:{HEX64}")).unwrap();
        assert_eq!(V1ImageId::from_sha256(&d), Some(id.clone()));
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<V1ImageId>(&json).unwrap(), id);
        for bad in [
            String::new(),
            HEX64.to_uppercase(),
            format!("sha256:{HEX64}"),
            HEX64[1..].to_owned(),
            format!("{HEX64}0"),
            format!("{}..", &HEX64[2..]),
            format!("../{}", &HEX64[3..]),
            format!("{}%2f", &HEX64[3..]),
            format!("{}/x", &HEX64[2..]),
            format!("{} ", &HEX64[1..]),
            format!("{}\0", &HEX64[2..]),
            format!("{}g", &HEX64[1..]),
            format!("{}\u{e9}", &HEX64[2..]),
            "latest".into(),
        ] {
            assert!(V1ImageId::parse(&bad).is_err(), "accepted {bad:?}");
            assert!(
                serde_json::from_value::<V1ImageId>(serde_json::Value::String(bad.clone()))
                    .is_err(),
                "deserialised {bad:?}"
            );
        }
    }
}
