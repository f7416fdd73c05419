//! The public origin: plain, unsigned URLs on a public bucket or CDN (the registry.k8s.io shape).
//!
//! Everything the layout holds is meant to be world-readable there, so there is nothing to sign:
//! the URL is `base_url + "/" + prefix + "/" + key`, with no query. Such an origin cannot be told
//! which `Content-Type` to answer with (there is no `response-content-type` to sign), so the
//! objects' *stored* `Content-Type` must be right — which `publish` guarantees for every manifest
//! and index file it writes.

use std::time::SystemTime;

use serde::Deserialize;

use super::object_urls::ObjectUrls;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::object_urls::load_secret;
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
