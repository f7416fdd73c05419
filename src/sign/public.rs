//! The public origin: plain, unsigned URLs on a public bucket or CDN (the registry.k8s.io shape).
//!
//! Everything the layout holds is meant to be world-readable there, so there is nothing to sign:
//! the URL is `base_url + "/" + prefix + "/" + key`, with no query. Such an origin cannot be told
//! which `Content-Type` to answer with (there is no `response-content-type` to sign), so the
//! objects' *stored* `Content-Type` must be right — which `publish` guarantees for every manifest
//! and index file it writes.
//!
//! This module also holds the two small helpers every CDN signer shares: [`ObjectUrls`] (how a base
//! URL, a prefix and a key are joined and encoded) and [`load_secret`] (key material from a file
//! or an environment variable, never from the config text itself).

use std::fmt;
use std::path::Path;
use std::time::SystemTime;

use anyhow::{bail, Context};
use serde::Deserialize;

use super::{SignRequest, Signer};

/// The `[origin]` settings of a public (unsigned) origin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicConfig {
    /// Base URL of the bucket or CDN, e.g. `https://cdn.example.com` or
    /// `https://bucket.s3.eu-west-1.amazonaws.com/some/path`. No query, no fragment.
    pub base_url: String,
    /// Path inside `base_url` under which the layout lives (e.g. `registry`). Default: none.
    #[serde(default)]
    pub prefix: String,
}

/// Unsigned URLs: for a layout published to a world-readable bucket or CDN.
#[derive(Debug, Clone)]
pub struct PublicSigner {
    urls: ObjectUrls,
}

impl PublicSigner {
    pub fn from_config(cfg: &PublicConfig) -> anyhow::Result<Self> {
        Ok(PublicSigner {
            urls: ObjectUrls::new(&cfg.base_url, &cfg.prefix)?,
        })
    }
}

impl Signer for PublicSigner {
    fn kind(&self) -> &'static str {
        "public"
    }

    fn sign(&self, req: &SignRequest<'_>, _now: SystemTime) -> String {
        let mut url = String::with_capacity(self.urls.url_len(req.key));
        self.urls.push_url(&mut url, req.key);
        url
    }
}

/// How a CDN base URL, an optional prefix and an object key are joined into a URL.
///
/// Exists so every signer joins the same way: exactly one `/` between the parts (no `//`, which
/// many origins treat as a different object), and the key percent-encoded per RFC 3986 wherever a
/// byte is not unreserved or `/`. Keys from [`crate::layout`] only use `[A-Za-z0-9._/-]`, so in
/// practice the key is copied verbatim; the encoder is a safety net, not a feature.
#[derive(Clone)]
pub struct ObjectUrls {
    /// `scheme://host[:port]`, lower-cased by the URL parser.
    origin: String,
    /// Always starts and ends with `/`: the base URL's path, then the prefix.
    path_prefix: String,
}

impl fmt::Debug for ObjectUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.origin, self.path_prefix)
    }
}

impl ObjectUrls {
    /// Validates `base_url` (absolute http(s), no credentials, query or fragment) and `prefix`
    /// (path segments of unreserved characters; `.` and `..` are refused).
    pub fn new(base_url: &str, prefix: &str) -> anyhow::Result<Self> {
        let url = url::Url::parse(base_url)
            .with_context(|| format!("base_url {base_url:?} is not an absolute URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            bail!("base_url {base_url:?} must be http:// or https://");
        }
        if !url.username().is_empty() || url.password().is_some() {
            bail!("base_url must not carry credentials");
        }
        if url.query().is_some() || url.fragment().is_some() {
            bail!("base_url {base_url:?} must not have a query or a fragment");
        }
        let Some(host) = url.host_str() else {
            bail!("base_url {base_url:?} has no host");
        };
        let mut origin = format!("{}://{host}", url.scheme());
        if let Some(port) = url.port() {
            origin.push_str(&format!(":{port}"));
        }
        let mut path_prefix = String::from("/");
        for seg in url.path().split('/').chain(prefix.split('/')) {
            if seg.is_empty() {
                continue;
            }
            // The URL parser has already percent-encoded the base path; `%` is kept as is there.
            // Signers that hash the path (secure_link, hmac-token) need encoded == decoded, so
            // anything outside the unreserved set is refused rather than silently re-encoded.
            if seg == "."
                || seg == ".."
                || !super::encode::is_unchanged(seg, super::encode::QUERY_VALUE)
            {
                bail!(
                    "path segment {seg:?} of base_url/prefix must use only A-Z a-z 0-9 - . _ ~ \
                     (and not be . or ..)"
                );
            }
            path_prefix.push_str(seg);
            path_prefix.push('/');
        }
        Ok(ObjectUrls {
            origin,
            path_prefix,
        })
    }

    /// `scheme://host[:port]`.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The path every object URL starts with; begins and ends with `/`.
    pub fn path_prefix(&self) -> &str {
        &self.path_prefix
    }

    /// An upper bound of the length of `push_url(key)`, for `String::with_capacity`.
    pub fn url_len(&self, key: &str) -> usize {
        self.origin.len() + self.path_prefix.len() + key.len()
    }

    /// Appends the URL path of `key` (`/prefix/key`, percent-encoded where needed).
    pub fn push_path(&self, out: &mut String, key: &str) {
        out.push_str(&self.path_prefix);
        super::encode::push(out, key.trim_start_matches('/'), super::encode::PATH);
    }

    /// Appends the absolute URL of `key`, without a query.
    pub fn push_url(&self, out: &mut String, key: &str) {
        out.push_str(&self.origin);
        self.push_path(out, key);
    }

    /// The URL path of `key`.
    pub fn path(&self, key: &str) -> String {
        let mut p = String::with_capacity(self.path_prefix.len() + key.len());
        self.push_path(&mut p, key);
        p
    }
}

/// Reads key material named in the config: a file (one trailing newline is dropped) or an
/// environment variable, exactly one of the two. Errors name the source, never the content.
pub fn load_secret(file: Option<&Path>, env: Option<&str>, what: &str) -> anyhow::Result<String> {
    let text = match (file, env) {
        (Some(path), None) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the {what} from {}", path.display()))?,
        (None, Some(var)) => std::env::var(var)
            .with_context(|| format!("environment variable {var} (the {what}) is not set"))?,
        (Some(_), Some(_)) => {
            bail!("give the {what} as a file or an environment variable, not both")
        }
        (None, None) => bail!("the {what} is missing: name a file or an environment variable"),
    };
    let text = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text)
        .to_owned();
    if text.is_empty() {
        bail!("the {what} is empty");
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::Method;
    use std::time::Duration;

    fn req(key: &str) -> SignRequest<'_> {
        SignRequest {
            method: Method::Get,
            key,
            content_type: "application/octet-stream",
            ttl: Duration::from_secs(60),
        }
    }

    #[test]
    fn joins_without_double_slashes() {
        let now = SystemTime::UNIX_EPOCH;
        for (base, prefix, want) in [
            (
                "https://cdn.example.com",
                "",
                "https://cdn.example.com/blobs/sha256/ab",
            ),
            (
                "https://cdn.example.com/",
                "",
                "https://cdn.example.com/blobs/sha256/ab",
            ),
            (
                "https://cdn.example.com//",
                "/",
                "https://cdn.example.com/blobs/sha256/ab",
            ),
            (
                "https://cdn.example.com",
                "reg",
                "https://cdn.example.com/reg/blobs/sha256/ab",
            ),
            (
                "https://cdn.example.com/",
                "/reg/",
                "https://cdn.example.com/reg/blobs/sha256/ab",
            ),
            (
                "https://CDN.example.com:8443/a/",
                "b/c",
                "https://cdn.example.com:8443/a/b/c/blobs/sha256/ab",
            ),
            (
                "http://127.0.0.1:9000/bucket",
                "",
                "http://127.0.0.1:9000/bucket/blobs/sha256/ab",
            ),
            (
                "https://cdn.example.com:443/x",
                "",
                "https://cdn.example.com/x/blobs/sha256/ab",
            ),
        ] {
            let s = PublicSigner::from_config(&PublicConfig {
                base_url: base.into(),
                prefix: prefix.into(),
            })
            .unwrap();
            assert_eq!(
                s.sign(&req("blobs/sha256/ab"), now),
                want,
                "{base} + {prefix}"
            );
            assert_eq!(
                s.sign(&req("/blobs/sha256/ab"), now),
                want,
                "{base} + {prefix}"
            );
        }
    }

    #[test]
    fn encodes_unexpected_bytes_only() {
        let u = ObjectUrls::new("https://x", "").unwrap();
        assert_eq!(
            u.path("repositories/a/b/_manifests/v1.0-rc_1"),
            "/repositories/a/b/_manifests/v1.0-rc_1"
        );
        assert_eq!(u.path("a b/c:d?e#f%/é"), "/a%20b/c%3Ad%3Fe%23f%25/%C3%A9");
    }

    #[test]
    fn refuses_bad_base_urls_and_prefixes() {
        for (base, prefix) in [
            ("cdn.example.com", ""),
            ("ftp://cdn.example.com", ""),
            ("https://u:p@cdn.example.com", ""),
            ("https://cdn.example.com/?a=b", ""),
            ("https://cdn.example.com/#x", ""),
            ("https://cdn.example.com", "a/../b"),
            ("https://cdn.example.com", "a b"),
            ("https://cdn.example.com/a%20b", ""),
        ] {
            assert!(ObjectUrls::new(base, prefix).is_err(), "{base} + {prefix}");
        }
    }

    #[test]
    fn config_from_toml_rejects_typos_and_works_in_a_tagged_enum() {
        let c: PublicConfig = toml::from_str("base_url = \"https://x\"\nprefix = \"p\"\n").unwrap();
        assert_eq!(c.prefix, "p");
        assert!(
            toml::from_str::<PublicConfig>("base_url = \"https://x\"\nprefx = \"p\"\n").is_err()
        );
        // The lead's origin enum will likely be internally tagged; deny_unknown_fields must not
        // trip over the tag.
        #[derive(Deserialize)]
        #[serde(tag = "kind", rename_all = "kebab-case")]
        #[allow(dead_code)]
        enum Origin {
            Public(PublicConfig),
        }
        let Origin::Public(c) =
            toml::from_str("kind = \"public\"\nbase_url = \"https://x\"\n").unwrap();
        assert_eq!(c.base_url, "https://x");
    }

    #[test]
    fn load_secret_sources() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s");
        std::fs::write(&f, "hunter2\r\n").unwrap();
        assert_eq!(load_secret(Some(&f), None, "secret").unwrap(), "hunter2");
        std::fs::write(&f, "\n").unwrap();
        assert!(load_secret(Some(&f), None, "secret").is_err());
        assert!(load_secret(None, None, "secret").is_err());
        assert!(load_secret(Some(&f), Some("X"), "secret").is_err());
        let err =
            load_secret(None, Some("STATIC_REGISTRY_TEST_SURELY_UNSET"), "secret").unwrap_err();
        assert!(err
            .to_string()
            .contains("STATIC_REGISTRY_TEST_SURELY_UNSET"));
    }
}
