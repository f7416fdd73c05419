//! Token-authenticated CDN URLs in the Akamai EdgeAuth 2.0 format (HMAC-SHA256).
//!
//! Many CDNs validate a query token computed with a shared key: Akamai's Token Auth 2.0 is the
//! reference, and others (and nginx/OpenResty/Varnish modules) accept the same shape. The URL is
//! `<base_url>/<prefix>/<key>?<token_name>=<token>` with, per [`TokenScope`]:
//!
//! | scope | token | HMAC input |
//! |---|---|---|
//! | `acl` (default) | `exp=<unix>~acl=<path>~hmac=<hex>` | `exp=<unix>~acl=<path>` |
//! | `acl-prefix` | `exp=<unix>~acl=<prefix path>/*~hmac=<hex>` | `exp=<unix>~acl=<prefix path>/*` |
//! | `url` | `exp=<unix>~hmac=<hex>` | `exp=<unix>~url=<path>` |
//!
//! `<path>` is the URL path (from the `/` after the host, including the base URL's path and the
//! prefix), `<hex>` is the lower-case hex HMAC-SHA256 of the input under the **hex-decoded** key
//! (the "encryption key" Akamai's property settings show), the field separator is `~`, and the
//! default token name is `__token__`. No start time, IP, session id, payload or salt is sent:
//! client-IP binding cannot work behind a redirect (the endpoint never sees the edge's client).
//! This is what Akamai's reference implementation `akamai-edgeauth` (Python) produces with
//! `EdgeAuth(key=..., end_time=exp).generate_acl_token(path)` / `generate_url_token(path)`, and
//! the tests compare against it.
//!
//! The CDN cannot be told a response `Content-Type` through the token: the stored objects'
//! metadata must be right (publish sets it).

use std::fmt;
use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{bail, Context};
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::object_urls::{load_secret, ObjectUrls};
use super::{unix_secs, SignRequest, Signer};

type HmacSha256 = Hmac<Sha256>;

/// The `[origin]` settings of a token-auth CDN.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HmacTokenConfig {
    /// The CDN's URL, e.g. `https://registry-cdn.example.com`.
    pub base_url: String,
    /// Path inside the CDN under which the layout lives. Default: none.
    #[serde(default)]
    pub prefix: String,
    /// A file holding the key as hex (one trailing newline is ignored).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Or: an environment variable holding the hex key.
    #[serde(default)]
    pub key_env: Option<String>,
    /// The query parameter carrying the token. Default: `__token__` (Akamai's default; some
    /// properties use `hdnts`).
    #[serde(default = "default_token_name")]
    pub token_name: String,
    /// What the token covers: `acl` (default), `acl-prefix` or `url`. See [`TokenScope`].
    #[serde(default)]
    pub scope: TokenScope,
}

fn default_token_name() -> String {
    "__token__".to_owned()
}

/// What a token authorises.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenScope {
    /// `acl=<exact path>`: the token opens one object. Works wherever the CDN reads the token.
    #[default]
    Acl,
    /// `acl=<prefix>/*`: the token opens every object under the prefix (useful if a CDN caches
    /// tokens or rewrites paths).
    AclPrefix,
    /// The path is hashed as `url=<path>` but not sent; the edge takes it from the request.
    Url,
}

/// Signs URLs with an EdgeAuth 2.0 token (one HMAC-SHA256 per URL).
///
/// Exists for CDNs that authorise by a shared-key token rather than by a signed policy.
pub struct HmacTokenSigner {
    urls: ObjectUrls,
    mac: HmacSha256,
    token_name: String,
    scope: TokenScope,
    /// `<path prefix>*`, for `acl-prefix`.
    acl_prefix: String,
}

impl fmt::Debug for HmacTokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.debug_struct("HmacTokenSigner")
            .field("urls", &self.urls)
            .field("token_name", &self.token_name)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl HmacTokenSigner {
    /// Builds the signer, reading the hex key from the file or variable the config names.
    pub fn from_config(cfg: &HmacTokenConfig) -> anyhow::Result<Self> {
        let key = load_secret(cfg.key_file.as_deref(), cfg.key_env.as_deref(), "token key")?;
        Self::with_hex_key(cfg, &key)
    }

    /// Builds the signer with the hex key given directly (the config's key source is ignored).
    pub fn with_hex_key(cfg: &HmacTokenConfig, hex_key: &str) -> anyhow::Result<Self> {
        // Don't echo the key in the error.
        let key = hex::decode(hex_key.trim())
            .ok()
            .filter(|k| !k.is_empty())
            .context("the token key must be a non-empty, even-length hex string")?;
        let name = &cfg.token_name;
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            bail!("token_name {name:?} must be letters, digits, _ and -");
        }
        let urls = ObjectUrls::new(&cfg.base_url, &cfg.prefix)?;
        let acl_prefix = format!("{}*", urls.path_prefix());
        Ok(HmacTokenSigner {
            urls,
            mac: HmacSha256::new_from_slice(&key).expect("HMAC takes any key length"),
            token_name: name.clone(),
            scope: cfg.scope,
            acl_prefix,
        })
    }

    /// Appends the token for `path` expiring at `exp`.
    fn push_token(&self, out: &mut String, path: &str, exp: u64) {
        let start = out.len();
        out.push_str("exp=");
        out.push_str(&exp.to_string());
        let mut mac = self.mac.clone();
        match self.scope {
            TokenScope::Acl | TokenScope::AclPrefix => {
                out.push_str("~acl=");
                out.push_str(if self.scope == TokenScope::Acl {
                    path
                } else {
                    &self.acl_prefix
                });
                mac.update(&out.as_bytes()[start..]);
            }
            TokenScope::Url => {
                mac.update(&out.as_bytes()[start..]);
                mac.update(b"~url=");
                mac.update(path.as_bytes());
            }
        }
        out.push_str("~hmac=");
        out.push_str(&hex::encode(mac.finalize().into_bytes()));
    }
}

impl Signer for HmacTokenSigner {
    fn kind(&self) -> &'static str {
        "hmac-token"
    }

    fn sign(&self, req: &SignRequest<'_>, now: SystemTime) -> String {
        let exp = unix_secs(now).saturating_add(req.ttl.as_secs());
        let path = self.urls.path(req.key);
        let mut url = String::with_capacity(self.urls.url_len(req.key) * 2 + 120);
        url.push_str(self.urls.origin());
        url.push_str(&path);
        url.push('?');
        url.push_str(&self.token_name);
        url.push('=');
        self.push_token(&mut url, &path, exp);
        url
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::Method;
    use std::time::Duration;

    const KEY: &str = "52a152a152a152a152a152a152a1";

    fn cfg(scope: TokenScope) -> HmacTokenConfig {
        HmacTokenConfig {
            base_url: "https://cdn.example.com".into(),
            prefix: "reg".into(),
            key_file: None,
            key_env: Some("X".into()),
            token_name: "__token__".into(),
            scope,
        }
    }

    fn signer(scope: TokenScope) -> HmacTokenSigner {
        HmacTokenSigner::with_hex_key(&cfg(scope), KEY).unwrap()
    }

    fn req(key: &str) -> SignRequest<'_> {
        SignRequest {
            method: Method::Get,
            key,
            content_type: "application/octet-stream",
            ttl: Duration::from_secs(300),
        }
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn token(url: &str) -> &str {
        url.split_once("?__token__=").unwrap().1
    }

    /// Runs tests/oracles/akamai_edgeauth.py; fails with install instructions if it is missing.
    fn edgeauth(kind: &str, path: &str, exp: u64) -> String {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/oracles/akamai_edgeauth.py"
        );
        let out = std::process::Command::new("python3")
            .args([script, KEY, kind, path, &exp.to_string()])
            .output()
            .expect("python3 is needed for the EdgeAuth cross-check (then: pip install akamai-edgeauth)");
        assert!(
            out.status.success(),
            "akamai-edgeauth oracle failed — run `pip install akamai-edgeauth`: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim_end().to_owned()
    }

    const KEYS: [&str; 3] = [
        "blobs/sha256/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "repositories/library/alpine/_manifests/3.20",
        "_catalog.json",
    ];

    #[test]
    fn matches_akamai_edgeauth() {
        for key in KEYS {
            let path = format!("/reg/{key}");
            let url = signer(TokenScope::Acl).sign(&req(key), now());
            assert!(url.starts_with(&format!(
                "https://cdn.example.com{path}?__token__=exp=1700000300~acl={path}~hmac="
            )));
            assert_eq!(token(&url), edgeauth("acl", &path, 1_700_000_300), "{key}");

            let url = signer(TokenScope::AclPrefix).sign(&req(key), now());
            assert_eq!(
                token(&url),
                edgeauth("acl", "/reg/*", 1_700_000_300),
                "{key}"
            );

            let url = signer(TokenScope::Url).sign(&req(key), now());
            assert_eq!(token(&url), edgeauth("url", &path, 1_700_000_300), "{key}");
        }
    }

    #[test]
    fn known_answer_and_tamper() {
        // Independently: python3 -c 'import hmac,hashlib; print(hmac.new(bytes.fromhex(
        //   "52a152a152a152a152a152a152a1"), b"exp=1700000300~acl=/reg/_catalog.json",
        //   hashlib.sha256).hexdigest())'
        let url = signer(TokenScope::Acl).sign(&req("_catalog.json"), now());
        assert_eq!(
            url,
            "https://cdn.example.com/reg/_catalog.json?__token__=exp=1700000300~acl=/reg/_catalog.json\
             ~hmac=43501b5518238049502aedd144ca8d4e98db14159226776f05eebba8a8e86a2a"
        );
    }

    #[test]
    fn tokens_differ_when_anything_changes() {
        let s = signer(TokenScope::Url);
        let base = s.sign(&req(KEYS[0]), now());
        let other_key =
            HmacTokenSigner::with_hex_key(&cfg(TokenScope::Url), "52a152a152a152a152a152a152a2")
                .unwrap();
        for url in [
            s.sign(&req(KEYS[1]), now()),
            s.sign(&req(KEYS[0]), now() + Duration::from_secs(1)),
            other_key.sign(&req(KEYS[0]), now()),
        ] {
            let hmac_of = |u: &str| u.rsplit_once("~hmac=").unwrap().1.to_owned();
            assert_ne!(hmac_of(&url), hmac_of(&base));
        }
    }

    #[test]
    fn config_errors_defaults_and_redaction() {
        assert!(HmacTokenSigner::with_hex_key(&cfg(TokenScope::Acl), "xyz").is_err());
        assert!(HmacTokenSigner::with_hex_key(&cfg(TokenScope::Acl), "abc").is_err());
        assert!(HmacTokenSigner::with_hex_key(&cfg(TokenScope::Acl), "").is_err());
        let mut c = cfg(TokenScope::Acl);
        c.token_name = "a=b".into();
        assert!(HmacTokenSigner::with_hex_key(&c, KEY).is_err());
        let err = HmacTokenSigner::with_hex_key(&cfg(TokenScope::Acl), "zz52a1").unwrap_err();
        assert!(!format!("{err:#}").contains("zz52a1"));

        let c: HmacTokenConfig =
            toml::from_str("base_url = \"https://x\"\nkey_file = \"/k\"\nscope = \"acl-prefix\"\n")
                .unwrap();
        assert_eq!(
            (c.token_name.as_str(), c.scope),
            ("__token__", TokenScope::AclPrefix)
        );
        assert!(
            toml::from_str::<HmacTokenConfig>("base_url = \"https://x\"\nkey = \"ab\"\n").is_err()
        );
        let dbg = format!("{:?}", signer(TokenScope::Acl));
        assert!(
            !dbg.contains(KEY) && !dbg.to_lowercase().contains("52a1"),
            "{dbg}"
        );
    }
}
