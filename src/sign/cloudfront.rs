//! CloudFront signed URLs (a distribution with a trusted key group).
//!
//! CloudFront verifies an RSA-2048 (or ECDSA P-256) signature over a JSON *policy*. An RSA
//! signature costs 1.3 ms or more (3-5 ms measured on a busy 2-core box; ECDSA P-256 here: about
//! 0.15-0.4 ms), thousands of times a SigV4 presign, so signing one per redirect would make the
//! signer the endpoint's bottleneck. Two modes:
//!
//! * **`wildcard`** (default): a *custom policy* whose resource is a wildcard over the whole layout
//!   (`https://dxxx.cloudfront.net/<prefix>/*`), with its expiry rounded up to a window:
//!   `expires = ceil((now + ttl) / window) * window`. One signature then serves every object for
//!   `window` seconds; the query suffix (`Policy=..&Signature=..&Key-Pair-Id=..`) is cached and a
//!   URL costs a string concatenation. A URL stays valid between `ttl` and `ttl + window` seconds.
//!   The next window's signature is made in the last quarter of the current one, by the one
//!   request that takes the signing lock, so other requests never wait for an RSA operation at a
//!   window boundary. The trade-off: a URL opens *every* object under the prefix until it expires,
//!   which is fine because the endpoint hands any of them to anyone who can reach it.
//! * **`canned`**: a canned policy per URL (`Expires`, `Signature`, `Key-Pair-Id`), scoped to
//!   exactly one object and expiring at exactly `now + ttl`, at the cost of one signature per
//!   redirect (use it with an ECDSA key, or for low traffic).
//!
//! `hash_algorithm = "SHA256"` signs SHA-256 instead of SHA-1 and adds `Hash-Algorithm=SHA256`.
//! The key type is taken from the PEM: RSA (`BEGIN RSA PRIVATE KEY` or `BEGIN PRIVATE KEY`) signs
//! PKCS#1 v1.5; EC P-256 (`BEGIN EC PRIVATE KEY` or `BEGIN PRIVATE KEY`) signs ECDSA with a
//! DER-encoded signature, as `openssl dgst -sign` does.
//!
//! CloudFront cannot be told a response `Content-Type`: the objects' stored metadata must be right
//! (publish sets it).
//!
//! ```toml
//! kind = "cloudfront"            # (however the origin table is tagged)
//! base_url = "https://d111111abcdef8.cloudfront.net"
//! prefix = "registry"            # optional
//! key_pair_id = "K2JCJMDEHXQW5F"
//! private_key_file = "/etc/static-registry/cloudfront.pem"   # or private_key_env = "CF_KEY"
//! policy = "wildcard"            # or "canned"
//! window_secs = 300              # optional; default: the URL TTL
//! hash_algorithm = "SHA1"        # or "SHA256"
//! ```

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::SystemTime;

use anyhow::{bail, Context};
use base64::Engine;
use p256::pkcs8::DecodePrivateKey as _;
use rsa::pkcs1::DecodeRsaPrivateKey as _;
use rsa::signature::hazmat::PrehashSigner;
use rsa::signature::SignatureEncoding as _;
use serde::Deserialize;
use sha1::{Digest, Sha1};
use sha2::Sha256;

use super::object_urls::{load_secret, ObjectUrls};
use super::{unix_secs, SignRequest, Signer};

/// The `[origin]` settings of a CloudFront origin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudFrontConfig {
    /// The distribution's URL, `https://dxxxx.cloudfront.net` or its alternate domain name.
    pub base_url: String,
    /// Path inside the distribution under which the layout lives. Default: none.
    #[serde(default)]
    pub prefix: String,
    /// The public key's id in the distribution's trusted key group (`K...`), or a legacy
    /// root-account key-pair id (`APKA...`). Sent as `Key-Pair-Id`.
    pub key_pair_id: String,
    /// A file holding the PEM private key (RSA-2048 or EC P-256; PKCS#1, SEC1 or PKCS#8).
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
    /// Or: an environment variable holding the PEM text.
    #[serde(default)]
    pub private_key_env: Option<String>,
    /// `wildcard` (default: one cached signature per window) or `canned` (one per URL).
    #[serde(default)]
    pub policy: PolicyMode,
    /// `wildcard` only: expiries are rounded up to a multiple of this many seconds, and one
    /// signature serves the whole window. Default: the URL TTL (so a URL lives ttl..2×ttl).
    #[serde(default)]
    pub window_secs: Option<u64>,
    /// `SHA1` (default, what CloudFront assumes) or `SHA256` (adds `Hash-Algorithm=SHA256`).
    #[serde(default)]
    pub hash_algorithm: HashAlgorithm,
}

/// Which policy the URLs carry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyMode {
    /// A custom policy over `<base>/<prefix>/*`, one signature per expiry window.
    #[default]
    Wildcard,
    /// A canned policy for exactly one URL, one signature per URL.
    Canned,
}

/// The hash CloudFront is told the signature uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum HashAlgorithm {
    #[default]
    #[serde(rename = "SHA1")]
    Sha1,
    #[serde(rename = "SHA256")]
    Sha256,
}

/// The private key, ready to sign with the configured hash.
enum Key {
    RsaSha1(rsa::pkcs1v15::SigningKey<Sha1>),
    RsaSha256(rsa::pkcs1v15::SigningKey<Sha256>),
    Ecdsa(p256::ecdsa::SigningKey, HashAlgorithm),
}

impl Key {
    fn kind(&self) -> &'static str {
        match self {
            Key::RsaSha1(_) | Key::RsaSha256(_) => "rsa",
            Key::Ecdsa(..) => "ecdsa-p256",
        }
    }

    fn try_sign(&self, msg: &[u8]) -> anyhow::Result<Vec<u8>> {
        Ok(match self {
            Key::RsaSha1(k) => k.sign_prehash(&Sha1::digest(msg))?.to_vec(),
            Key::RsaSha256(k) => k.sign_prehash(&Sha256::digest(msg))?.to_vec(),
            Key::Ecdsa(k, HashAlgorithm::Sha1) => {
                let sig: p256::ecdsa::Signature = k.sign_prehash(&Sha1::digest(msg))?;
                sig.to_der().as_bytes().to_vec()
            }
            Key::Ecdsa(k, HashAlgorithm::Sha256) => {
                let sig: p256::ecdsa::Signature = k.sign_prehash(&Sha256::digest(msg))?;
                sig.to_der().as_bytes().to_vec()
            }
        })
    }

    /// Parses a PEM private key: the first private-key block (a file may carry other blocks, e.g.
    /// `openssl ecparam -genkey` writes `EC PARAMETERS` first). Errors never quote the key.
    fn from_pem(pem: &str, hash: HashAlgorithm) -> anyhow::Result<Key> {
        use rustls_pki_types::pem::PemObject as _;
        use rustls_pki_types::PrivateKeyDer;
        let rsa_key = |k: rsa::RsaPrivateKey| match hash {
            HashAlgorithm::Sha1 => Key::RsaSha1(rsa::pkcs1v15::SigningKey::new(k)),
            HashAlgorithm::Sha256 => Key::RsaSha256(rsa::pkcs1v15::SigningKey::new(k)),
        };
        // The PEM parser's own errors are not shown: they may quote a line of the file.
        let Ok(der) = PrivateKeyDer::from_pem_slice(pem.as_bytes()) else {
            if pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
                bail!("the private key is encrypted; store it unencrypted (and protect the file)");
            }
            bail!("not a PEM private key (BEGIN RSA PRIVATE KEY, BEGIN EC PRIVATE KEY or BEGIN PRIVATE KEY)")
        };
        Ok(match der {
            PrivateKeyDer::Pkcs1(k) => rsa_key(
                rsa::RsaPrivateKey::from_pkcs1_der(k.secret_pkcs1_der())
                    .map_err(|e| anyhow::anyhow!("invalid PKCS#1 RSA private key: {e}"))?,
            ),
            PrivateKeyDer::Sec1(k) => Key::Ecdsa(
                p256::SecretKey::from_sec1_der(k.secret_sec1_der())
                    .map_err(|e| {
                        anyhow::anyhow!("invalid SEC1 EC private key (must be P-256): {e}")
                    })?
                    .into(),
                hash,
            ),
            PrivateKeyDer::Pkcs8(k) => {
                let der = k.secret_pkcs8_der();
                if let Ok(k) = rsa::RsaPrivateKey::from_pkcs8_der(der) {
                    rsa_key(k)
                } else {
                    let k = p256::ecdsa::SigningKey::from_pkcs8_der(der).map_err(|e| {
                        anyhow::anyhow!("PKCS#8 private key is neither RSA nor EC P-256: {e}")
                    })?;
                    Key::Ecdsa(k, hash)
                }
            }
            _ => bail!("unsupported private key format"),
        })
    }
}

/// CloudFront's URL-safe base64: standard base64 with `+`→`-`, `=`→`_`, `/`→`~`.
pub fn cloudfront_base64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(data)
        .chars()
        .map(|c| match c {
            '+' => '-',
            '=' => '_',
            '/' => '~',
            c => c,
        })
        .collect()
}

/// The policy document, byte for byte as CloudFront (and botocore) write it: no whitespace, keys in
/// this order. A canned policy is this with the exact URL as the resource.
pub fn policy_json(resource: &str, expires: u64) -> String {
    // Resources are built from a validated base URL and unreserved/percent-encoded path bytes, so
    // they never need JSON escaping.
    debug_assert!(!resource.contains(['"', '\\']) && resource.is_ascii());
    format!(
        r#"{{"Statement":[{{"Resource":"{resource}","Condition":{{"DateLessThan":{{"AWS:EpochTime":{expires}}}}}}}]}}"#
    )
}

/// One window's signed query suffix.
struct Window {
    expires: u64,
    /// `Policy=..&Signature=..&Key-Pair-Id=..[&Hash-Algorithm=SHA256]`
    query: String,
}

/// Signs CloudFront URLs, caching one wildcard-policy signature per expiry window.
///
/// Exists because CloudFront is the common CDN in front of S3 and its RSA signatures are too slow
/// to make per redirect; see the module docs for the window scheme.
pub struct CloudFrontSigner {
    urls: ObjectUrls,
    key_pair_id: String,
    key: Key,
    hash: HashAlgorithm,
    mode: PolicyMode,
    window_secs: Option<u64>,
    /// `<origin><path prefix>*`
    wildcard_resource: String,
    /// The current window and, near its end, the next one.
    windows: RwLock<[Option<Window>; 2]>,
    /// Held while signing a window, so a boundary costs one signature, not one per request.
    signing: Mutex<()>,
    signatures: AtomicU64,
}

impl fmt::Debug for CloudFrontSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.debug_struct("CloudFrontSigner")
            .field("urls", &self.urls)
            .field("key_pair_id", &self.key_pair_id)
            .field("key", &self.key.kind())
            .field("hash", &self.hash)
            .field("mode", &self.mode)
            .field("window_secs", &self.window_secs)
            .finish_non_exhaustive()
    }
}

impl CloudFrontSigner {
    /// Builds the signer, reading the key from the file or variable the config names.
    pub fn from_config(cfg: &CloudFrontConfig) -> anyhow::Result<Self> {
        let pem = load_secret(
            cfg.private_key_file.as_deref(),
            cfg.private_key_env.as_deref(),
            "CloudFront private key",
        )?;
        Self::with_pem(cfg, &pem)
    }

    /// Builds the signer with the PEM key given directly (the config's key source is ignored).
    pub fn with_pem(cfg: &CloudFrontConfig, pem: &str) -> anyhow::Result<Self> {
        let urls = ObjectUrls::new(&cfg.base_url, &cfg.prefix)?;
        if cfg.key_pair_id.is_empty() || !cfg.key_pair_id.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            bail!(
                "key_pair_id {:?} must be the key's id (letters and digits)",
                cfg.key_pair_id
            );
        }
        if cfg.window_secs == Some(0) {
            bail!("window_secs must be at least 1");
        }
        let key = Key::from_pem(pem, cfg.hash_algorithm).context("CloudFront private key")?;
        // Fail at start-up, not on the first redirect.
        key.try_sign(b"self-test")
            .context("CloudFront private key cannot sign")?;
        let wildcard_resource = format!("{}{}*", urls.origin(), urls.path_prefix());
        Ok(CloudFrontSigner {
            urls,
            key_pair_id: cfg.key_pair_id.clone(),
            key,
            hash: cfg.hash_algorithm,
            mode: cfg.policy,
            window_secs: cfg.window_secs,
            wildcard_resource,
            windows: RwLock::new([None, None]),
            signing: Mutex::new(()),
            signatures: AtomicU64::new(0),
        })
    }

    /// How many signatures this signer has computed (for metrics and tests).
    pub fn signatures_made(&self) -> u64 {
        self.signatures.load(Ordering::Relaxed)
    }

    /// The wildcard resource of `wildcard` mode's policy.
    #[cfg(test)]
    pub fn wildcard_resource(&self) -> &str {
        &self.wildcard_resource
    }

    fn signature_b64(&self, policy: &str) -> String {
        self.signatures.fetch_add(1, Ordering::Relaxed);
        let sig = self
            .key
            .try_sign(policy.as_bytes())
            .expect("the key passed its self-test at start-up");
        cloudfront_base64(&sig)
    }

    fn push_key_pair_id(&self, q: &mut String) {
        q.push_str("&Key-Pair-Id=");
        q.push_str(&self.key_pair_id);
        if self.hash == HashAlgorithm::Sha256 {
            q.push_str("&Hash-Algorithm=SHA256");
        }
    }

    /// The signed query suffix of the wildcard policy expiring at `expires`.
    fn window_query(&self, expires: u64) -> String {
        let policy = policy_json(&self.wildcard_resource, expires);
        let mut q = String::with_capacity(700);
        q.push_str("Policy=");
        q.push_str(&cloudfront_base64(policy.as_bytes()));
        q.push_str("&Signature=");
        q.push_str(&self.signature_b64(&policy));
        self.push_key_pair_id(&mut q);
        q
    }

    /// Appends the query of a window acceptable for a URL signed at `t` with `ttl`: one expiring
    /// no earlier than `t + ttl` and no later than `t + ttl + window`.
    fn push_window_query(&self, out: &mut String, t: u64, ttl: u64) {
        let window = self.window_secs.unwrap_or(ttl).max(1);
        let lo = t.saturating_add(ttl);
        let hi = lo.saturating_add(window);
        let usable = |w: &&Window| (lo..=hi).contains(&w.expires);

        let presign = {
            let windows = self.windows.read().unwrap_or_else(PoisonError::into_inner);
            match windows
                .iter()
                .flatten()
                .filter(usable)
                .max_by_key(|w| w.expires)
            {
                Some(w) => {
                    out.push_str(&w.query);
                    // In the last quarter of its life, and no later window made yet.
                    let ending = (w.expires - lo).saturating_mul(4) < window;
                    let has_next = windows.iter().flatten().any(|n| n.expires > w.expires);
                    if !ending || has_next {
                        return;
                    }
                    Some(w.expires.saturating_add(window))
                }
                None => None,
            }
        };
        match presign {
            // A hit near the window's end: one request (whoever gets the lock) signs the next
            // window; everybody else carries on with the current one.
            Some(next) => {
                let Ok(_guard) = self.signing.try_lock() else {
                    return;
                };
                if self.windows_have(|w| w.expires >= next) {
                    return;
                }
                let query = self.window_query(next);
                self.store_window(next, query);
            }
            // A miss (start-up, idle, or a TTL change): sign now, once.
            None => {
                let _guard = self.signing.lock().unwrap_or_else(PoisonError::into_inner);
                {
                    let windows = self.windows.read().unwrap_or_else(PoisonError::into_inner);
                    if let Some(w) = windows
                        .iter()
                        .flatten()
                        .filter(usable)
                        .max_by_key(|w| w.expires)
                    {
                        out.push_str(&w.query);
                        return;
                    }
                }
                let expires = lo.div_ceil(window).saturating_mul(window);
                let query = self.window_query(expires);
                out.push_str(&query);
                self.store_window(expires, query);
            }
        }
    }

    fn windows_have(&self, f: impl Fn(&Window) -> bool) -> bool {
        let windows = self.windows.read().unwrap_or_else(PoisonError::into_inner);
        windows.iter().flatten().any(f)
    }

    /// Keeps the new window and the latest other one.
    fn store_window(&self, expires: u64, query: String) {
        let mut windows = self.windows.write().unwrap_or_else(PoisonError::into_inner);
        let slot = if windows[0].as_ref().map_or(0, |w| w.expires)
            <= windows[1].as_ref().map_or(0, |w| w.expires)
        {
            0
        } else {
            1
        };
        windows[slot] = Some(Window { expires, query });
    }
}

impl Signer for CloudFrontSigner {
    fn kind(&self) -> &'static str {
        "cloudfront"
    }

    fn sign(&self, req: &SignRequest<'_>, now: SystemTime) -> String {
        let t = unix_secs(now);
        let ttl = req.ttl.as_secs();
        let mut url = String::with_capacity(self.urls.url_len(req.key) + 720);
        self.urls.push_url(&mut url, req.key);
        url.push('?');
        match self.mode {
            PolicyMode::Wildcard => self.push_window_query(&mut url, t, ttl),
            PolicyMode::Canned => {
                let expires = t.saturating_add(ttl);
                let policy = policy_json(&url[..url.len() - 1], expires);
                url.push_str("Expires=");
                url.push_str(&expires.to_string());
                url.push_str("&Signature=");
                url.push_str(&self.signature_b64(&policy));
                self.push_key_pair_id(&mut url);
            }
        }
        url
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::Method;
    use rsa::pkcs8::DecodePublicKey as _;
    use rsa::signature::Verifier as _;
    use std::collections::HashMap;
    use std::time::Duration;

    const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/sign");
    const BASE: &str = "https://d111111abcdef8.cloudfront.net";

    fn read(name: &str) -> String {
        std::fs::read_to_string(format!("{DATA}/{name}")).unwrap()
    }

    fn config(policy: PolicyMode, hash: HashAlgorithm) -> CloudFrontConfig {
        CloudFrontConfig {
            base_url: BASE.into(),
            prefix: "registry".into(),
            key_pair_id: "K2JCJMDEHXQW5F".into(),
            private_key_file: Some(format!("{DATA}/test-only-rsa2048.pkcs1.pem").into()),
            private_key_env: None,
            policy,
            window_secs: None,
            hash_algorithm: hash,
        }
    }

    fn signer(policy: PolicyMode, hash: HashAlgorithm, key: &str) -> CloudFrontSigner {
        CloudFrontSigner::with_pem(&config(policy, hash), &read(key)).unwrap()
    }

    fn req(key: &str, ttl: u64) -> SignRequest<'_> {
        SignRequest {
            method: Method::Get,
            key,
            content_type: "application/octet-stream",
            ttl: Duration::from_secs(ttl),
        }
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// Splits a signed URL into the unsigned URL and its query parameters (in order).
    fn split(url: &str) -> (&str, Vec<(&str, &str)>) {
        let (base, q) = url.split_once('?').unwrap();
        let params = q.split('&').map(|kv| kv.split_once('=').unwrap()).collect();
        (base, params)
    }

    fn cf_b64_decode(s: &str) -> Vec<u8> {
        let std: String = s
            .chars()
            .map(|c| match c {
                '-' => '+',
                '_' => '=',
                '~' => '/',
                c => c,
            })
            .collect();
        base64::engine::general_purpose::STANDARD
            .decode(std)
            .unwrap()
    }

    fn verify_rsa_sha1(policy: &[u8], sig: &[u8]) {
        let public =
            rsa::RsaPublicKey::from_public_key_pem(&read("test-only-rsa2048.pub.pem")).unwrap();
        let vk = rsa::pkcs1v15::VerifyingKey::<Sha1>::new(public);
        let sig = rsa::pkcs1v15::Signature::try_from(sig).unwrap();
        vk.verify(policy, &sig)
            .expect("RSA-SHA1 signature verifies");
        assert!(vk.verify(b"{}", &sig).is_err());
    }

    const BLOB: &str =
        "blobs/sha256/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn canned_policy_verifies() {
        let s = signer(
            PolicyMode::Canned,
            HashAlgorithm::Sha1,
            "test-only-rsa2048.pkcs1.pem",
        );
        let url = s.sign(&req(BLOB, 300), at(1_700_000_000));
        let (base, params) = split(&url);
        assert_eq!(base, format!("{BASE}/registry/{BLOB}"));
        let names: Vec<_> = params.iter().map(|p| p.0).collect();
        assert_eq!(names, ["Expires", "Signature", "Key-Pair-Id"]);
        assert_eq!(params[0].1, "1700000300");
        assert_eq!(params[2].1, "K2JCJMDEHXQW5F");
        let policy = format!(
            r#"{{"Statement":[{{"Resource":"{base}","Condition":{{"DateLessThan":{{"AWS:EpochTime":1700000300}}}}}}]}}"#
        );
        verify_rsa_sha1(policy.as_bytes(), &cf_b64_decode(params[1].1));
        assert_eq!(s.signatures_made(), 1);
    }

    #[test]
    fn pkcs1_and_pkcs8_are_the_same_key() {
        for mode in [PolicyMode::Canned, PolicyMode::Wildcard] {
            let a = signer(mode, HashAlgorithm::Sha1, "test-only-rsa2048.pkcs1.pem");
            let b = signer(mode, HashAlgorithm::Sha1, "test-only-rsa2048.pkcs8.pem");
            assert_eq!(
                a.sign(&req(BLOB, 60), at(1_000)),
                b.sign(&req(BLOB, 60), at(1_000))
            );
        }
    }

    #[test]
    fn wildcard_policy_is_exact_and_verifies() {
        let s = signer(
            PolicyMode::Wildcard,
            HashAlgorithm::Sha1,
            "test-only-rsa2048.pkcs1.pem",
        );
        let url = s.sign(&req(BLOB, 300), at(1_700_000_001));
        let (base, params) = split(&url);
        assert_eq!(base, format!("{BASE}/registry/{BLOB}"));
        let names: Vec<_> = params.iter().map(|p| p.0).collect();
        assert_eq!(names, ["Policy", "Signature", "Key-Pair-Id"]);
        let policy = cf_b64_decode(params[0].1);
        // ceil((1_700_000_001 + 300) / 300) * 300
        assert_eq!(
            String::from_utf8(policy.clone()).unwrap(),
            r#"{"Statement":[{"Resource":"https://d111111abcdef8.cloudfront.net/registry/*","Condition":{"DateLessThan":{"AWS:EpochTime":1700000400}}}]}"#
        );
        verify_rsa_sha1(&policy, &cf_b64_decode(params[1].1));
        assert_eq!(
            s.wildcard_resource(),
            "https://d111111abcdef8.cloudfront.net/registry/*"
        );
    }

    fn expires_of(url: &str) -> u64 {
        let policy = cf_b64_decode(split(url).1[0].1);
        let v: serde_json::Value = serde_json::from_slice(&policy).unwrap();
        v["Statement"][0]["Condition"]["DateLessThan"]["AWS:EpochTime"]
            .as_u64()
            .unwrap()
    }

    #[test]
    fn one_signature_per_window_with_bounded_expiry() {
        let s = signer(
            PolicyMode::Wildcard,
            HashAlgorithm::Sha1,
            "test-only-rsa2048.pkcs1.pem",
        );
        let base = s.signatures_made();
        let ttl = 60;
        let mut suffixes = HashMap::new();
        // Walk 10 minutes second by second, several keys per second.
        for t in 1_000_000..1_000_600u64 {
            for key in ["blobs/sha256/aa", "manifests/sha256/bb", "_catalog.json"] {
                let url = s.sign(&req(key, ttl), at(t));
                let exp = expires_of(&url);
                assert!(exp >= t + ttl && exp <= t + 2 * ttl, "t={t} exp={exp}");
                let (_, q) = url.split_once('?').unwrap();
                assert_eq!(suffixes.entry(exp).or_insert_with(|| q.to_owned()), q);
            }
        }
        // 600 s / 60 s windows ≈ 10 signatures (+1 for the window straddling the end), not 1800.
        let made = s.signatures_made() - base;
        assert!((10..=12).contains(&made), "{made} signatures");
        // Each was used, but perhaps the last one made ahead of time.
        assert!(made as usize - suffixes.len() <= 1);
    }

    #[test]
    fn next_window_is_signed_before_it_is_needed() {
        let mut cfg = config(PolicyMode::Wildcard, HashAlgorithm::Sha1);
        cfg.window_secs = Some(100);
        let s = CloudFrontSigner::with_pem(&cfg, &read("test-only-rsa2048.pkcs1.pem")).unwrap();
        let base = s.signatures_made();
        // t + ttl = 1010 → window ending 1100, usable while t + ttl ≤ 1100.
        assert_eq!(expires_of(&s.sign(&req("k", 10), at(1_000))), 1_100);
        assert_eq!(s.signatures_made() - base, 1);
        assert_eq!(expires_of(&s.sign(&req("k", 10), at(1_060))), 1_100);
        assert_eq!(s.signatures_made() - base, 1, "not yet in the last quarter");
        // Last quarter: this request still gets the current window, and signs the next one.
        assert_eq!(expires_of(&s.sign(&req("k", 10), at(1_080))), 1_100);
        assert_eq!(s.signatures_made() - base, 2);
        assert_eq!(expires_of(&s.sign(&req("k", 10), at(1_085))), 1_100);
        assert_eq!(s.signatures_made() - base, 2, "next window already made");
        // Past the boundary the pre-made window is used without signing.
        assert_eq!(expires_of(&s.sign(&req("k", 10), at(1_091))), 1_200);
        assert_eq!(s.signatures_made() - base, 2);
        // An idle gap: both cached windows are too old; one fresh signature.
        assert_eq!(expires_of(&s.sign(&req("k", 10), at(5_000))), 5_100);
        assert_eq!(s.signatures_made() - base, 3);
        // A longer TTL is never served a window that would expire too early.
        let exp = expires_of(&s.sign(&req("k", 500), at(5_000)));
        assert!((5_500..=5_600).contains(&exp), "{exp}");
    }

    #[test]
    fn ecdsa_sha256_verifies_for_sec1_and_pkcs8() {
        use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
        use p256::pkcs8::DecodePublicKey as _;
        let vk = p256::ecdsa::VerifyingKey::from_public_key_pem(&read("test-only-p256.pub.pem"))
            .unwrap();
        for key in ["test-only-p256.sec1.pem", "test-only-p256.pkcs8.pem"] {
            for mode in [PolicyMode::Canned, PolicyMode::Wildcard] {
                let s = signer(mode, HashAlgorithm::Sha256, key);
                let url = s.sign(&req(BLOB, 300), at(1_700_000_000));
                let (base, params) = split(&url);
                let names: Vec<_> = params.iter().map(|p| p.0).collect();
                let policy = match mode {
                    PolicyMode::Canned => {
                        assert_eq!(
                            names,
                            ["Expires", "Signature", "Key-Pair-Id", "Hash-Algorithm"]
                        );
                        policy_json(base, 1_700_000_300).into_bytes()
                    }
                    PolicyMode::Wildcard => {
                        assert_eq!(
                            names,
                            ["Policy", "Signature", "Key-Pair-Id", "Hash-Algorithm"]
                        );
                        cf_b64_decode(params[0].1)
                    }
                };
                assert_eq!(params[3].1, "SHA256");
                let sig = p256::ecdsa::Signature::from_der(&cf_b64_decode(params[1].1)).unwrap();
                vk.verify_prehash(&Sha256::digest(&policy), &sig)
                    .expect("ECDSA verifies");
                assert!(vk.verify_prehash(&Sha256::digest(b"{}"), &sig).is_err());
                openssl_verify(
                    &policy,
                    &cf_b64_decode(params[1].1),
                    "-sha256",
                    "test-only-p256.pub.pem",
                );
            }
        }
    }

    #[test]
    fn rsa_sha256_and_ecdsa_sha1_verify_with_openssl() {
        for (key, public, hash, flag) in [
            (
                "test-only-rsa2048.pkcs8.pem",
                "test-only-rsa2048.pub.pem",
                HashAlgorithm::Sha256,
                "-sha256",
            ),
            (
                "test-only-rsa2048.pkcs1.pem",
                "test-only-rsa2048.pub.pem",
                HashAlgorithm::Sha1,
                "-sha1",
            ),
            (
                "test-only-p256.sec1.pem",
                "test-only-p256.pub.pem",
                HashAlgorithm::Sha1,
                "-sha1",
            ),
        ] {
            let s = signer(PolicyMode::Wildcard, hash, key);
            let url = s.sign(&req(BLOB, 300), at(1_700_000_000));
            let params = split(&url).1;
            openssl_verify(
                &cf_b64_decode(params[0].1),
                &cf_b64_decode(params[1].1),
                flag,
                public,
            );
        }
    }

    /// `openssl dgst -verify`: an independent implementation of both RSA PKCS#1 v1.5 and DER ECDSA.
    fn openssl_verify(msg: &[u8], sig: &[u8], digest_flag: &str, public: &str) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("msg"), msg).unwrap();
        std::fs::write(dir.path().join("sig"), sig).unwrap();
        let out = std::process::Command::new("openssl")
            .args([
                "dgst",
                digest_flag,
                "-verify",
                &format!("{DATA}/{public}"),
                "-signature",
            ])
            .arg(dir.path().join("sig"))
            .arg(dir.path().join("msg"))
            .output()
            .expect("openssl must be installed for this test");
        assert!(
            out.status.success(),
            "openssl rejected the signature: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs tests/oracles/cloudfront_botocore.py; fails with install instructions if the modules
    /// are missing.
    fn botocore(args: &[&str]) -> String {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/oracles/cloudfront_botocore.py"
        );
        let out = std::process::Command::new("python3")
            .arg(script)
            .arg(format!("{DATA}/test-only-rsa2048.pkcs1.pem"))
            .args(args)
            .output()
            .expect(
                "python3 is needed for the botocore cross-check (then: pip install botocore rsa)",
            );
        assert!(
            out.status.success(),
            "botocore oracle failed — run `pip install botocore rsa`: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim_end().to_owned()
    }

    #[test]
    fn matches_botocore_byte_for_byte() {
        let now = at(1_700_000_123);
        let canned = signer(
            PolicyMode::Canned,
            HashAlgorithm::Sha1,
            "test-only-rsa2048.pkcs8.pem",
        );
        let wildcard = signer(
            PolicyMode::Wildcard,
            HashAlgorithm::Sha1,
            "test-only-rsa2048.pkcs8.pem",
        );
        let key =
            "manifests/sha256/fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";
        let object = format!("{BASE}/registry/{key}");

        let ours = canned.sign(&req(key, 600), now);
        let theirs = botocore(&["canned", "K2JCJMDEHXQW5F", &object, "1700000723"]);
        assert_eq!(ours, theirs);

        // ceil((1_700_000_123 + 600) / 600) * 600 = 1_700_001_000
        let ours = wildcard.sign(&req(key, 600), now);
        let theirs = botocore(&[
            "custom",
            "K2JCJMDEHXQW5F",
            &object,
            "1700001000",
            &format!("{BASE}/registry/*"),
        ]);
        assert_eq!(ours, theirs);
    }

    #[test]
    fn config_errors_and_debug_redaction() {
        let pem = read("test-only-rsa2048.pkcs1.pem");
        let mut cfg = config(PolicyMode::Wildcard, HashAlgorithm::Sha1);
        cfg.key_pair_id = "K2 X".into();
        assert!(CloudFrontSigner::with_pem(&cfg, &pem).is_err());
        let mut cfg = config(PolicyMode::Wildcard, HashAlgorithm::Sha1);
        cfg.window_secs = Some(0);
        assert!(CloudFrontSigner::with_pem(&cfg, &pem).is_err());
        let cfg = config(PolicyMode::Wildcard, HashAlgorithm::Sha1);
        for bad in [
            "",
            "hello",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ] {
            let err = CloudFrontSigner::with_pem(&cfg, bad).unwrap_err();
            assert!(!format!("{err:#}").contains("AAAA"));
        }
        let s = CloudFrontSigner::from_config(&cfg).unwrap();
        let dbg = format!("{s:?}");
        let body_line = pem.lines().nth(1).unwrap();
        assert!(!dbg.contains(body_line) && !dbg.contains("BEGIN"), "{dbg}");
        assert!(dbg.contains("K2JCJMDEHXQW5F") && dbg.contains("rsa"));

        let toml_cfg: CloudFrontConfig = toml::from_str(
            "base_url = \"https://d.cloudfront.net\"\nkey_pair_id = \"K1\"\n\
             private_key_env = \"CF_KEY\"\npolicy = \"canned\"\nhash_algorithm = \"SHA256\"\n",
        )
        .unwrap();
        assert_eq!(toml_cfg.policy, PolicyMode::Canned);
        assert_eq!(toml_cfg.hash_algorithm, HashAlgorithm::Sha256);
        assert!(toml::from_str::<CloudFrontConfig>(
            "base_url = \"x\"\nkey_pair_id = \"K1\"\nhash_algorithm = \"sha256\"\n"
        )
        .is_err());
    }

    #[test]
    fn pem_with_extra_blocks() {
        let pem = format!(
            "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n{}",
            read("test-only-p256.sec1.pem")
        );
        let s =
            CloudFrontSigner::with_pem(&config(PolicyMode::Canned, HashAlgorithm::Sha256), &pem)
                .unwrap();
        assert!(format!("{s:?}").contains("ecdsa-p256"));
    }
}
