//! The embedded origin's signer: URLs for `/_origin/<key>` on the endpoint's own listener.
//!
//! The origin only answers URLs this signer produced, so the local store is never browsable, and
//! the signature covers the `Content-Type` the origin answers with so a blob can never be served as
//! a manifest. With several replicas the secret must be shared (config), else each process uses a
//! random one and only serves its own URLs.

use std::fmt;
use std::time::SystemTime;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::{unix_secs, Method, SignRequest, Signer};

/// The path prefix the embedded origin is mounted at.
pub const ORIGIN_PREFIX: &str = "/_origin/";

type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256 over method, key, expiry and content type.
#[derive(Clone)]
pub struct EmbeddedSigner {
    mac: HmacSha256,
    /// Secrets whose URLs are still accepted (a rotation in progress), never used to sign.
    accepted: Vec<HmacSha256>,
    /// Prepended to `/_origin/...`: empty for a same-host relative redirect, or an external URL.
    base_url: String,
}

impl fmt::Debug for EmbeddedSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.debug_struct("EmbeddedSigner")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// The query parameters of a signed origin URL.
#[derive(Debug, serde::Deserialize)]
pub struct OriginQuery {
    pub ct: String,
    pub exp: u64,
    pub m: String,
    pub sig: String,
}

impl EmbeddedSigner {
    pub fn new(secret: &[u8], base_url: Option<&str>) -> Self {
        Self::rotating(secret, &[], base_url)
    }

    /// Signs with `secret`, and also accepts URLs signed with any of `accepted` (the previous
    /// secret during a rotation, or the next one before it signs: docs/operations.md).
    pub fn rotating(secret: &[u8], accepted: &[&[u8]], base_url: Option<&str>) -> Self {
        let mac = |s: &[u8]| HmacSha256::new_from_slice(s).expect("HMAC takes any key length");
        EmbeddedSigner {
            mac: mac(secret),
            accepted: accepted.iter().map(|s| mac(s)).collect(),
            base_url: base_url.unwrap_or("").trim_end_matches('/').to_owned(),
        }
    }

    /// A signer with a random per-process secret.
    pub fn random(base_url: Option<&str>) -> Self {
        let secret: [u8; 32] = rand::random();
        Self::new(&secret, base_url)
    }

    fn mac_of(&self, method: &str, key: &str, exp: u64, ct: &str) -> HmacSha256 {
        Self::mac_with(&self.mac, method, key, exp, ct)
    }

    fn mac_with(base: &HmacSha256, method: &str, key: &str, exp: u64, ct: &str) -> HmacSha256 {
        let mut mac = base.clone();
        for part in [method, "\n", key, "\n", &exp.to_string(), "\n", ct] {
            mac.update(part.as_bytes());
        }
        mac
    }

    /// Checks a request to the origin. A GET-signed URL also allows HEAD (HEAD is GET without a
    /// body), but a HEAD-signed URL never allows GET.
    pub fn verify(&self, method: Method, key: &str, q: &OriginQuery, now: SystemTime) -> bool {
        if q.exp < unix_secs(now) {
            return false;
        }
        let signed_for = match q.m.as_str() {
            "GET" => Method::Get,
            "HEAD" if method == Method::Head => Method::Head,
            _ => return false,
        };
        let Ok(sig) = hex::decode(&q.sig) else {
            return false;
        };
        std::iter::once(&self.mac).chain(&self.accepted).any(|m| {
            Self::mac_with(m, signed_for.as_str(), key, q.exp, &q.ct)
                .verify_slice(&sig)
                .is_ok()
        })
    }
}

impl Signer for EmbeddedSigner {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn sign(&self, req: &SignRequest<'_>, now: SystemTime) -> String {
        let exp = unix_secs(now) + req.ttl.as_secs();
        let m = req.method.as_str();
        let sig = hex::encode(
            self.mac_of(m, req.key, exp, req.content_type)
                .finalize()
                .into_bytes(),
        );
        let ct: String =
            url::form_urlencoded::byte_serialize(req.content_type.as_bytes()).collect();
        format!(
            "{}{ORIGIN_PREFIX}{}?ct={ct}&exp={exp}&m={m}&sig={sig}",
            self.base_url, req.key
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn query_of(url: &str) -> (String, OriginQuery) {
        let (path, q) = url.split_once('?').unwrap();
        let key = path.strip_prefix(ORIGIN_PREFIX).unwrap().to_owned();
        (key, serde_urlencoded_parse(q))
    }

    fn serde_urlencoded_parse(q: &str) -> OriginQuery {
        let mut ct = String::new();
        let (mut exp, mut m, mut sig) = (0, String::new(), String::new());
        for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
            match &*k {
                "ct" => ct = v.into_owned(),
                "exp" => exp = v.parse().unwrap(),
                "m" => m = v.into_owned(),
                "sig" => sig = v.into_owned(),
                _ => {}
            }
        }
        OriginQuery { ct, exp, m, sig }
    }

    #[test]
    fn a_rotation_accepts_both_secrets_and_signs_with_the_first() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let req = SignRequest {
            method: Method::Get,
            key: "blobs/sha256/ab",
            content_type: "application/octet-stream",
            ttl: Duration::from_secs(60),
        };
        let old = EmbeddedSigner::new(b"old-secret-0123456789", None);
        let new = EmbeddedSigner::new(b"new-secret-0123456789", None);
        // Step 1: still signs with old, accepts new. Step 2: signs with new, accepts old.
        let step1 =
            EmbeddedSigner::rotating(b"old-secret-0123456789", &[b"new-secret-0123456789"], None);
        let step2 =
            EmbeddedSigner::rotating(b"new-secret-0123456789", &[b"old-secret-0123456789"], None);
        for (signer, verifiers) in [(&old, [&step1, &step2]), (&new, [&step1, &step2])] {
            let (key, q) = query_of(&signer.sign(&req, now));
            for v in verifiers {
                assert!(v.verify(Method::Get, &key, &q, now));
            }
        }
        assert_eq!(step1.sign(&req, now), old.sign(&req, now));
        assert_eq!(step2.sign(&req, now), new.sign(&req, now));
        // A third secret is refused by all.
        let other = EmbeddedSigner::new(b"other-secret-0123456", None);
        let (key, q) = query_of(&other.sign(&req, now));
        assert!(
            !step1.verify(Method::Get, &key, &q, now) && !step2.verify(Method::Get, &key, &q, now)
        );
    }

    #[test]
    fn sign_then_verify_and_tamper() {
        let s = EmbeddedSigner::new(b"k", None);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let req = SignRequest {
            method: Method::Get,
            key: "manifests/sha256/abc",
            content_type: "application/vnd.oci.image.manifest.v1+json",
            ttl: Duration::from_secs(60),
        };
        let url = s.sign(&req, now);
        let (key, q) = query_of(&url);
        assert_eq!(q.ct, req.content_type);
        assert!(s.verify(Method::Get, &key, &q, now));
        assert!(s.verify(Method::Head, &key, &q, now));
        assert!(!s.verify(Method::Get, "blobs/sha256/abc", &q, now));
        assert!(!s.verify(Method::Get, &key, &q, now + Duration::from_secs(61)));
        let other = EmbeddedSigner::new(b"other", None);
        assert!(!other.verify(Method::Get, &key, &q, now));
        let mut bad_ct = query_of(&url).1;
        bad_ct.ct = "text/html".into();
        assert!(!s.verify(Method::Get, &key, &bad_ct, now));
        let mut longer = query_of(&url).1;
        longer.exp += 3600;
        assert!(!s.verify(Method::Get, &key, &longer, now));

        let head = s.sign(
            &SignRequest {
                method: Method::Head,
                ..req
            },
            now,
        );
        let (key, q) = query_of(&head);
        assert!(s.verify(Method::Head, &key, &q, now));
        assert!(!s.verify(Method::Get, &key, &q, now));
    }

    #[test]
    fn debug_hides_secret() {
        let s = EmbeddedSigner::new(b"supersecret", Some("https://x"));
        assert!(!format!("{s:?}").contains("supersecret"));
    }
}
