//! Google Cloud Storage V4 signed URLs (`kind = "gcs"`): `GOOG4-RSA-SHA256` with a service-account
//! key file, or `GOOG4-HMAC-SHA256` with an HMAC key (access id and secret).
//!
//! Why a signer of its own rather than SigV4 with a GCS HMAC key: the RSA form has no SigV4
//! equivalent, and even the HMAC form differs in every name (`X-Goog-*`, `GOOG4`, the `auto`
//! region, `storage`, `goog4_request`), in the host header (GCS signs the host *without* its port)
//! and in header canonicalisation (values trimmed and inner whitespace runs collapsed). The
//! shared rule is the percent-encoding, which lives in [`super::encode`].
//!
//! The canonicalisation here is general (any method, extra headers, extra query parameters, a
//! signed payload through `x-goog-content-sha256`) so Google's conformance vectors
//! (`v4_signatures.json`) are checked byte for byte against the same code the signer runs; the
//! signer itself only signs `GET`/`HEAD` with the `host` header and, for manifests,
//! `response-content-type`, so GCS answers with the manifest's media type. A `HEAD` gets a URL
//! signed for `HEAD` (GCS refuses a `HEAD` on a `GET`-signed URL).
//!
//! Cost: an RSA-2048 signature takes 2-5 ms on the 2-core development machine (`cargo bench
//! --bench micro -- gcs`: `sign_slow/gcs_rsa` 4.4 ms, `sign/gcs_hmac` 2.8 µs),
//! and GCS has no wildcard or policy form for signed URLs (POST policies are for uploads), so
//! every distinct URL costs one RSA operation. The serving threads re-use URLs within their second
//! (`serve/recent_urls.rs`); beyond that, an HMAC key signs in microseconds and is the choice for
//! high request rates.
//!
//! ```toml
//! [origins.signer]
//! kind = "gcs"
//! bucket = "my-registry"
//! prefix = "registry"                          # optional
//! endpoint = "https://storage.googleapis.com"  # default
//! url_style = "path"                           # or "virtual-hosted", "bucket-bound"
//! service_account_file = "/etc/static-registry/sa.json"  # or service_account_env
//! # or: hmac_access_id = "GOOG1E...", hmac_secret_file = "..." (or hmac_secret_env)
//! ```

use std::fmt;
use std::path::PathBuf;
use std::sync::{PoisonError, RwLock};
use std::time::SystemTime;

use anyhow::{bail, Context};
use hmac::{Hmac, KeyInit, Mac};
use rsa::signature::hazmat::PrehashSigner;
use rsa::signature::SignatureEncoding as _;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::object_urls::load_secret;
use super::{encode, unix_secs, SignRequest, Signer};

/// GCS refuses `X-Goog-Expires` above 7 days.
pub const MAX_EXPIRES: u64 = 604_800;

/// Where a bucket's objects are addressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UrlStyle {
    /// `ENDPOINT/BUCKET/KEY` (the default; works for every bucket name and for emulators).
    #[default]
    Path,
    /// `BUCKET.ENDPOINT-HOST/KEY`.
    VirtualHosted,
    /// The endpoint's host *is* the bucket (a CNAME or load balancer): `ENDPOINT/KEY`.
    BucketBound,
}

/// The `[origins.signer]` table of `kind = "gcs"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcsConfig {
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    pub bucket: String,
    /// Key prefix inside the bucket (the store root); may be empty.
    #[serde(default)]
    pub prefix: String,
    #[serde(default)]
    pub url_style: UrlStyle,
    /// A service-account JSON key file (`client_email`, `private_key`): signs with RSA.
    pub service_account_file: Option<PathBuf>,
    /// An environment variable holding the service-account JSON.
    pub service_account_env: Option<String>,
    /// An HMAC key's access id: signs with HMAC (with `hmac_secret_file` or `hmac_secret_env`).
    pub hmac_access_id: Option<String>,
    pub hmac_secret_file: Option<PathBuf>,
    pub hmac_secret_env: Option<String>,
}

fn default_endpoint() -> String {
    "https://storage.googleapis.com".into()
}

/// The key URLs are signed with.
pub enum Credential {
    /// A service account: its email is the credential's id.
    Rsa {
        email: String,
        key: Box<rsa::pkcs1v15::SigningKey<Sha256>>,
    },
    Hmac {
        access_id: String,
        secret: String,
        /// The last day's derived signing key (`YYYYMMDD`, key): four HMACs saved per URL.
        day_key: RwLock<Option<([u8; 8], [u8; 32])>>,
    },
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Rsa { email, .. } => write!(f, "Rsa({email})"),
            Credential::Hmac { access_id, .. } => write!(f, "Hmac({access_id})"),
        }
    }
}

impl Credential {
    /// An HMAC key.
    pub fn hmac(access_id: impl Into<String>, secret: impl Into<String>) -> Self {
        Credential::Hmac {
            access_id: access_id.into(),
            secret: secret.into(),
            day_key: RwLock::new(None),
        }
    }

    /// From a service-account JSON key (`client_email` and a PKCS#8 `private_key`). Errors
    /// never quote the key.
    pub fn from_service_account_json(json: &str) -> anyhow::Result<Self> {
        #[derive(Deserialize)]
        struct Sa {
            client_email: String,
            private_key: String,
        }
        let sa: Sa = serde_json::from_str(json).map_err(|e| {
            anyhow::anyhow!(
                "not a service-account key (JSON with client_email and private_key): line {}",
                e.line()
            )
        })?;
        use rsa::pkcs8::DecodePrivateKey as _;
        let key = rsa::RsaPrivateKey::from_pkcs8_pem(&sa.private_key).map_err(|_| {
            anyhow::anyhow!("the service account's private_key is not a PKCS#8 RSA key")
        })?;
        if sa.client_email.is_empty() {
            bail!("the service account's client_email is empty");
        }
        Ok(Credential::Rsa {
            email: sa.client_email,
            key: Box::new(rsa::pkcs1v15::SigningKey::new(key)),
        })
    }

    fn id(&self) -> &str {
        match self {
            Credential::Rsa { email, .. } => email,
            Credential::Hmac { access_id, .. } => access_id,
        }
    }

    fn algorithm(&self) -> &'static str {
        match self {
            Credential::Rsa { .. } => "GOOG4-RSA-SHA256",
            Credential::Hmac { .. } => "GOOG4-HMAC-SHA256",
        }
    }

    /// The hex signature of `string_to_sign`; `date` is the scope's `YYYYMMDD`.
    fn sign_hex(&self, string_to_sign: &str, date: &str) -> String {
        match self {
            Credential::Rsa { key, .. } => {
                let sig = key
                    .sign_prehash(&Sha256::digest(string_to_sign.as_bytes()))
                    .expect("RSA PKCS#1 v1.5 signing of a SHA-256 digest cannot fail");
                hex::encode(sig.to_bytes())
            }
            Credential::Hmac {
                secret, day_key, ..
            } => {
                fn hmac(key: &[u8], data: &str) -> [u8; 32] {
                    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
                    m.update(data.as_bytes());
                    m.finalize().into_bytes().into()
                }
                let day: [u8; 8] = date.as_bytes().try_into().expect("YYYYMMDD");
                let cached = *day_key.read().unwrap_or_else(PoisonError::into_inner);
                let key = match cached {
                    Some((d, k)) if d == day => k,
                    _ => {
                        // The key derivation of SigV4 with Google's names.
                        let mut k = hmac(format!("GOOG4{secret}").as_bytes(), date);
                        for part in ["auto", "storage", "goog4_request"] {
                            k = hmac(&k, part);
                        }
                        *day_key.write().unwrap_or_else(PoisonError::into_inner) = Some((day, k));
                        k
                    }
                };
                hex::encode(hmac(&key, string_to_sign))
            }
        }
    }
}

/// Where URLs point: the URL's origin, the signed `host` header, and the path before the key.
#[derive(Debug, Clone)]
pub struct Target {
    /// `scheme://host[:port]` as the URL shows it.
    origin: String,
    /// The host GCS signs: without the port (Google's conformance vectors sign `localhost` for
    /// `http://localhost:8080`).
    host: String,
    /// Encoded, without a trailing `/`: `/BUCKET[/PREFIX]` (path style) or `[/PREFIX]`.
    base_path: String,
}

impl Target {
    pub fn new(
        endpoint: &str,
        bucket: &str,
        prefix: &str,
        style: UrlStyle,
    ) -> anyhow::Result<Self> {
        let url = url::Url::parse(endpoint)
            .with_context(|| format!("GCS endpoint {endpoint:?} is not an absolute URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            bail!("GCS endpoint {endpoint:?} must be http or https");
        }
        if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
            bail!("GCS endpoint {endpoint:?} must not carry credentials or a query");
        }
        if bucket.is_empty()
            || !bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        {
            bail!("GCS bucket {bucket:?}: use a-z 0-9 - _ .");
        }
        let Some(ep_host) = url.host_str() else {
            bail!("GCS endpoint {endpoint:?} has no host");
        };
        let host = match style {
            UrlStyle::VirtualHosted => format!("{bucket}.{ep_host}"),
            UrlStyle::Path | UrlStyle::BucketBound => ep_host.to_owned(),
        };
        // The port as written (`url` drops a default one; the vectors keep `:443`).
        let authority = endpoint
            .split_once("://")
            .map(|(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or(""))
            .unwrap_or("");
        let port = authority
            .rsplit_once(':')
            .filter(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .map(|(_, p)| p);
        let mut origin = format!("{}://{host}", url.scheme());
        if let Some(p) = port {
            origin.push(':');
            origin.push_str(p);
        }
        let mut base_path = String::new();
        let endpoint_path = url.path().trim_matches('/');
        let bucket_seg = (style == UrlStyle::Path).then_some(bucket);
        for seg in endpoint_path
            .split('/')
            .chain(bucket_seg)
            .chain(prefix.split('/'))
            .filter(|s| !s.is_empty())
        {
            if seg == "." || seg == ".." || !encode::is_unchanged(seg, encode::QUERY_VALUE) {
                bail!("GCS endpoint path or prefix segment {seg:?}: use A-Z a-z 0-9 - . _ ~");
            }
            base_path.push('/');
            base_path.push_str(seg);
        }
        Ok(Target {
            origin,
            host,
            base_path,
        })
    }
}

/// One presigned URL with what was hashed and signed (the conformance tests compare all three).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presigned {
    pub url: String,
    pub canonical_request: String,
    pub string_to_sign: String,
}

/// One request to sign.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The key after the base path (`None`: the bucket itself), unencoded.
    pub object: Option<&'a str>,
    /// Extra signed headers besides `host`, unencoded.
    pub headers: &'a [(&'a str, &'a str)],
    /// Extra query parameters, unencoded.
    pub query: &'a [(&'a str, &'a str)],
    /// Seconds since the Unix epoch.
    pub now: u64,
    /// Seconds the URL stays valid (clamped to 1 ..= [`MAX_EXPIRES`]).
    pub expires: u64,
}

/// V4-signs one request.
pub fn presign(target: &Target, cred: &Credential, req: &Request<'_>) -> Presigned {
    let Request {
        method,
        object,
        headers,
        query,
        now,
        expires,
    } = *req;
    let ts = jiff::Timestamp::from_second(now as i64).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let goog_date = ts.strftime("%Y%m%dT%H%M%SZ").to_string();
    let date = &goog_date[..8];
    let scope = format!("{date}/auto/storage/goog4_request");

    let mut path = target.base_path.clone();
    if let Some(o) = object {
        path.push('/');
        encode::push(&mut path, o, encode::PATH);
    }
    if path.is_empty() {
        path.push('/');
    }

    // Canonical headers: lower-case names, values trimmed with inner whitespace runs collapsed,
    // sorted by name; `host` is always signed.
    let mut hs: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| {
            let v = v
                .split([' ', '\t'])
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            (k.to_ascii_lowercase(), v)
        })
        .collect();
    hs.push(("host".into(), target.host.clone()));
    hs.sort();
    let signed_headers = hs
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let payload = hs
        .iter()
        .find(|(k, _)| k == "x-goog-content-sha256")
        .map_or("UNSIGNED-PAYLOAD", |(_, v)| v.as_str());

    // Canonical query: every parameter, names and values encoded, sorted by encoded name.
    let enc = |s: &str| {
        let mut o = String::with_capacity(s.len());
        encode::push(&mut o, s, encode::QUERY_VALUE);
        o
    };
    let expires_s = expires.clamp(1, MAX_EXPIRES).to_string();
    let credential = format!("{}/{scope}", cred.id());
    let mut q: Vec<(String, String)> = vec![
        ("X-Goog-Algorithm".into(), cred.algorithm().into()),
        ("X-Goog-Credential".into(), enc(&credential)),
        ("X-Goog-Date".into(), goog_date.clone()),
        ("X-Goog-Expires".into(), expires_s),
        ("X-Goog-SignedHeaders".into(), enc(&signed_headers)),
    ];
    q.extend(query.iter().map(|(k, v)| (enc(k), enc(v))));
    q.sort();
    let query_string = q
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");

    let mut canonical_request = format!("{method}\n{path}\n{query_string}\n");
    for (k, v) in &hs {
        canonical_request.push_str(k);
        canonical_request.push(':');
        canonical_request.push_str(v);
        canonical_request.push('\n');
    }
    canonical_request.push('\n');
    canonical_request.push_str(&signed_headers);
    canonical_request.push('\n');
    canonical_request.push_str(payload);

    let string_to_sign = format!(
        "{}\n{goog_date}\n{scope}\n{}",
        cred.algorithm(),
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let signature = cred.sign_hex(&string_to_sign, date);
    let url = format!(
        "{}{path}?{query_string}&X-Goog-Signature={signature}",
        target.origin
    );
    Presigned {
        url,
        canonical_request,
        string_to_sign,
    }
}

/// Signs `GET`/`HEAD` URLs for one bucket (and prefix).
pub struct GcsSigner {
    target: Target,
    cred: Credential,
}

impl fmt::Debug for GcsSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcsSigner")
            .field("target", &self.target)
            .field("credential", &self.cred)
            .finish()
    }
}

impl GcsSigner {
    pub fn new(target: Target, cred: Credential) -> Self {
        GcsSigner { target, cred }
    }

    pub fn from_config(cfg: &GcsConfig) -> anyhow::Result<Self> {
        let target = Target::new(&cfg.endpoint, &cfg.bucket, &cfg.prefix, cfg.url_style)?;
        let sa = cfg.service_account_file.is_some() || cfg.service_account_env.is_some();
        let cred = match (sa, &cfg.hmac_access_id) {
            (true, None) => Credential::from_service_account_json(&load_secret(
                cfg.service_account_file.as_deref(),
                cfg.service_account_env.as_deref(),
                "GCS service-account key",
            )?)?,
            (false, Some(id)) => {
                if id.is_empty() {
                    bail!("kind = \"gcs\": hmac_access_id is empty");
                }
                Credential::hmac(
                    id.clone(),
                    load_secret(
                        cfg.hmac_secret_file.as_deref(),
                        cfg.hmac_secret_env.as_deref(),
                        "GCS HMAC secret",
                    )?,
                )
            }
            (true, Some(_)) => {
                bail!("kind = \"gcs\": give a service-account key or an HMAC key, not both")
            }
            (false, None) => bail!(
                "kind = \"gcs\" needs service_account_file (or _env), or hmac_access_id with \
                 hmac_secret_file (or _env)"
            ),
        };
        Ok(GcsSigner { target, cred })
    }
}

impl Signer for GcsSigner {
    fn kind(&self) -> &'static str {
        "gcs"
    }

    fn sign(&self, req: &SignRequest<'_>, now: SystemTime) -> String {
        let ct = [("response-content-type", req.content_type)];
        let query: &[(&str, &str)] = if req.content_type.is_empty() {
            &[]
        } else {
            &ct
        };
        let r = Request {
            method: req.method.as_str(),
            object: Some(req.key),
            headers: &[],
            query,
            now: unix_secs(now),
            expires: req.ttl.as_secs(),
        };
        presign(&self.target, &self.cred, &r).url
    }
}

#[cfg(test)]
mod tests;
