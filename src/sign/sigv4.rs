//! S3 (and compatibles: MinIO, Ceph RGW, R2, GCS HMAC keys) presigned URLs: AWS Signature
//! Version 4 in the query string.
//!
//! This runs once per redirected request, so it is hand-written rather than taken from an SDK
//! (rusty-s3 costs ~4 µs a URL, aws-sigv4 7–10 µs): everything that does not depend on the
//! request (host, bucket and prefix path, the canonical-request tail) is built once, the day's
//! signing key is derived once per UTC day and credentials, and a URL is one `String` written in
//! place. The canonical query string and the URL's query string use the same encoding, so the
//! query is written once, into the URL, and hashed from there.
//!
//! Tests check it against AWS's published vectors and, byte for byte, against rusty-s3.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest as _, Sha256};

use super::{encode, unix_secs, Method, SignRequest, Signer};
use crate::aws::{CredentialSource, Credentials, StaticCredentials};

type HmacSha256 = Hmac<Sha256>;

/// S3 refuses `X-Amz-Expires` outside 1 s ..= 7 days.
const MAX_EXPIRES: u64 = 604_800;
const SECS_PER_DAY: u64 = 86_400;
const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Where presigned URLs point: one bucket (and key prefix) on one S3-compatible endpoint.
///
/// Exists separately from the signer so it can be read from the config file as it is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigV4Config {
    /// The service endpoint, e.g. `https://s3.us-east-1.amazonaws.com` or
    /// `http://127.0.0.1:9000`. A path on it (a reverse proxy mounting S3 under `/s3`) is kept.
    #[serde(deserialize_with = "de_url")]
    pub endpoint: url::Url,
    pub bucket: String,
    /// Key prefix inside the bucket (the store root); may be empty. Keys become `prefix/key`.
    #[serde(default)]
    pub prefix: String,
    #[serde(default = "default_region")]
    pub region: String,
    /// `true`: `ENDPOINT/BUCKET/KEY` (MinIO, s3s, anything reached by IP address). `false`:
    /// virtual-host `BUCKET.ENDPOINT-HOST/KEY`, which AWS prefers.
    #[serde(default)]
    pub path_style: bool,
    /// The SigV4 service name: `s3` (also for most compatibles).
    #[serde(default = "default_service")]
    pub service: String,
}

/// `url`'s own serde support is a feature this crate doesn't enable; parsing here also names the
/// field in the error.
fn de_url<'de, D: serde::Deserializer<'de>>(d: D) -> Result<url::Url, D::Error> {
    let s = <String as serde::Deserialize>::deserialize(d)?;
    url::Url::parse(&s).map_err(|e| serde::de::Error::custom(format!("endpoint {s:?}: {e}")))
}

fn default_region() -> String {
    "us-east-1".into()
}

fn default_service() -> String {
    "s3".into()
}

/// Presigns S3 `GET`/`HEAD` URLs with SigV4, answering with the requested `Content-Type`
/// (`response-content-type`), so a manifest is served with its media type whatever the object's
/// metadata says.
pub struct SigV4Signer {
    cfg: SigV4Config,
    /// `scheme://host[:port]` of the URL (the bucket's virtual host, or the endpoint's).
    origin: String,
    /// The encoded path up to the key: `[/endpoint-path]/[bucket/][prefix/]`.
    base_path: String,
    /// The canonical request after the query string: the only signed header is `host`, and
    /// presigned URLs never sign the payload.
    canonical_tail: String,
    /// `/region/service/aws4_request` (the credential scope after the date).
    scope_suffix: String,
    source: Arc<dyn CredentialSource>,
    /// The current credentials with the signing key of the latest day seen. Read on every
    /// request (a shared read lock, no allocation); replaced on a new day or on rotation.
    state: RwLock<Arc<State>>,
    /// How many signing keys were derived (tests and metrics: it must stay at ~one a day).
    derivations: AtomicU64,
}

/// The credentials and everything derived from them that the hot path needs.
struct State {
    creds: Arc<Credentials>,
    /// The session token, already encoded as a query value.
    token_q: Option<String>,
    day: DayKey,
}

/// One UTC day's signing material for one set of credentials.
struct DayKey {
    /// Days since the Unix epoch.
    day: u64,
    yyyymmdd: [u8; 8],
    /// HMAC keyed with kSigning: the key schedule (ipad/opad blocks) is already hashed, so each
    /// URL only clones it.
    mac: HmacSha256,
    /// `X-Amz-Credential`, encoded: `AKID%2F20130524%2Fus-east-1%2Fs3%2Faws4_request`.
    credential_q: String,
    /// The credential scope for the string to sign: `20130524/us-east-1/s3/aws4_request`.
    scope: String,
}

impl fmt::Debug for SigV4Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The config holds no secret; `Credentials`' own Debug redacts the secret and token.
        f.debug_struct("SigV4Signer")
            .field("cfg", &self.cfg)
            .field("credentials", &self.load().creds)
            .finish_non_exhaustive()
    }
}

impl SigV4Signer {
    /// A signer whose credentials come from `source` (loaded now; see [`Self::refresh`]).
    pub async fn new(cfg: SigV4Config, source: Arc<dyn CredentialSource>) -> anyhow::Result<Self> {
        let creds = source
            .credentials()
            .await
            .context("loading credentials for S3 URL signing")?;
        Self::build(cfg, source, creds)
    }

    /// A signer with fixed credentials (tests, and keys given in configuration).
    // Configuration goes through a `CredentialSource` today, so only tests call this.
    pub fn with_credentials(cfg: SigV4Config, creds: Credentials) -> anyhow::Result<Self> {
        let creds = Arc::new(creds);
        Self::build(cfg, Arc::new(StaticCredentials(creds.clone())), creds)
    }

    fn build(
        cfg: SigV4Config,
        source: Arc<dyn CredentialSource>,
        creds: Arc<Credentials>,
    ) -> anyhow::Result<Self> {
        check_credentials(&creds)?;
        let (origin, host, base_path) = url_parts(&cfg)?;
        for (what, v) in [("region", &cfg.region), ("service", &cfg.service)] {
            // They end up unencoded in the scope; AWS's are all `[a-z0-9-]`.
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                bail!("S3 signer: invalid {what} {v:?}");
            }
        }
        let canonical_tail = format!("\nhost:{host}\n\nhost\nUNSIGNED-PAYLOAD");
        let scope_suffix = format!("/{}/{}/aws4_request", cfg.region, cfg.service);
        let state = new_state(
            &cfg,
            &scope_suffix,
            creds,
            day_of(unix_secs(SystemTime::now())),
        );
        Ok(SigV4Signer {
            cfg,
            origin,
            base_path,
            canonical_tail,
            scope_suffix,
            source,
            state: RwLock::new(Arc::new(state)),
            derivations: AtomicU64::new(1),
        })
    }

    /// Loads credentials from the source again; a change takes effect for the next URL.
    pub async fn refresh(&self) -> anyhow::Result<()> {
        let creds = self
            .source
            .credentials()
            .await
            .context("refreshing credentials for S3 URL signing")?;
        check_credentials(&creds)?;
        if *self.load().creds == *creds {
            return Ok(());
        }
        // Only the access key id is logged: it identifies the credentials and is not secret.
        tracing::info!(access_key_id = %creds.access_key_id, "S3 URL-signing credentials rotated");
        let state = Arc::new(self.new_state(creds, day_of(unix_secs(SystemTime::now()))));
        *self.state.write().unwrap_or_else(PoisonError::into_inner) = state;
        Ok(())
    }

    /// Calls [`Self::refresh`] every `every` in the background, until the signer is dropped.
    /// A failure keeps the current credentials (they may still be valid) and is logged.
    pub fn spawn_refresher(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        let every = every.max(Duration::from_secs(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is immediate, and the constructor has just loaded credentials.
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(signer) = weak.upgrade() else { break };
                if let Err(e) = signer.refresh().await {
                    tracing::warn!(error = %format!("{e:#}"), "keeping the current S3 URL-signing credentials");
                }
            }
        })
    }

    /// How many signing keys have been derived so far (tests; worth a metric: ~1 a day).
    pub fn key_derivations(&self) -> u64 {
        self.derivations.load(Ordering::Relaxed)
    }

    fn load(&self) -> Arc<State> {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn new_state(&self, creds: Arc<Credentials>, day: u64) -> State {
        self.derivations.fetch_add(1, Ordering::Relaxed);
        new_state(&self.cfg, &self.scope_suffix, creds, day)
    }

    fn day_key(&self, creds: &Credentials, day: u64) -> DayKey {
        self.derivations.fetch_add(1, Ordering::Relaxed);
        day_key(&self.cfg, &self.scope_suffix, creds, day)
    }

    /// Signs with the cached key of `day`, deriving (and caching, if it is a newer day) another.
    fn sign_at(&self, method: Method, key: &str, content_type: &str, ttl: u64, now: u64) -> String {
        let day = day_of(now);
        {
            let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
            if state.day.day == day {
                return self.sign_with(&state, &state.day, method, key, content_type, ttl, now);
            }
        }
        let state = self.load();
        let dk = self.day_key(&state.creds, day);
        let url = self.sign_with(&state, &dk, method, key, content_type, ttl, now);
        // Cache only a newer day, so requests straddling midnight (or a clock step back) can't
        // make the cache flap; and only for the credentials it was derived from.
        if day > state.day.day {
            let mut cell = self.state.write().unwrap_or_else(PoisonError::into_inner);
            if Arc::ptr_eq(&cell.creds, &state.creds) && day > cell.day.day {
                *cell = Arc::new(State {
                    creds: state.creds.clone(),
                    token_q: state.token_q.clone(),
                    day: dk,
                });
            }
        }
        url
    }

    #[allow(clippy::too_many_arguments)]
    fn sign_with(
        &self,
        state: &State,
        dk: &DayKey,
        method: Method,
        key: &str,
        content_type: &str,
        ttl: u64,
        now: u64,
    ) -> String {
        let amz_date = amz_date(&dk.yyyymmdd, now);
        let amz_date = std::str::from_utf8(&amz_date).expect("digits");
        let expires = ttl.clamp(1, MAX_EXPIRES);

        let token_len = state.token_q.as_ref().map_or(0, |t| t.len() + 22);
        let mut url = String::with_capacity(
            self.origin.len()
                + self.base_path.len()
                + key.len() * 3
                + content_type.len() * 3
                + dk.credential_q.len()
                + token_len
                + 200,
        );
        url.push_str(&self.origin);

        let path_start = url.len();
        url.push_str(&self.base_path);
        encode::push(&mut url, key, encode::PATH);
        let path_end = url.len();

        // Sorted by (encoded) name: uppercase `X-Amz-*` sorts before lowercase `response-*`,
        // and `Security-Token` before `SignedHeaders`.
        url.push('?');
        let query_start = url.len();
        url.push_str("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=");
        url.push_str(&dk.credential_q);
        url.push_str("&X-Amz-Date=");
        url.push_str(amz_date);
        url.push_str("&X-Amz-Expires=");
        push_u64(&mut url, expires);
        if let Some(token) = &state.token_q {
            url.push_str("&X-Amz-Security-Token=");
            url.push_str(token);
        }
        url.push_str("&X-Amz-SignedHeaders=host");
        if !content_type.is_empty() {
            url.push_str("&response-content-type=");
            encode::push(&mut url, content_type, encode::QUERY_VALUE);
        }
        let query_end = url.len();

        let mut h = Sha256::new();
        h.update(method.as_str());
        h.update("\n");
        h.update(&url[path_start..path_end]);
        h.update("\n");
        h.update(&url[query_start..query_end]);
        h.update(&self.canonical_tail);
        let mut hash_hex = [0u8; 64];
        hex::encode_to_slice(h.finalize(), &mut hash_hex).expect("64 hex digits");

        let mut mac = dk.mac.clone();
        mac.update(ALGORITHM.as_bytes());
        mac.update(b"\n");
        mac.update(amz_date.as_bytes());
        mac.update(b"\n");
        mac.update(dk.scope.as_bytes());
        mac.update(b"\n");
        mac.update(&hash_hex);
        let mut sig_hex = [0u8; 64];
        hex::encode_to_slice(mac.finalize().into_bytes(), &mut sig_hex).expect("64 hex digits");

        url.push_str("&X-Amz-Signature=");
        url.push_str(std::str::from_utf8(&sig_hex).expect("hex"));
        url
    }
}

impl Signer for SigV4Signer {
    fn kind(&self) -> &'static str {
        "s3"
    }

    fn sign(&self, req: &SignRequest<'_>, now: SystemTime) -> String {
        self.sign_at(
            req.method,
            req.key,
            req.content_type,
            req.ttl.as_secs(),
            unix_secs(now),
        )
    }
}

fn new_state(cfg: &SigV4Config, scope_suffix: &str, creds: Arc<Credentials>, day: u64) -> State {
    State {
        token_q: creds
            .session_token
            .as_deref()
            // An empty token is no token: signing `X-Amz-Security-Token=` only fails.
            .filter(|t| !t.is_empty())
            .map(|t| {
                let mut q = String::with_capacity(t.len() * 3 / 2);
                encode::push(&mut q, t, encode::QUERY_VALUE);
                q
            }),
        day: day_key(cfg, scope_suffix, &creds, day),
        creds,
    }
}

/// Derives kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service),
/// "aws4_request") and the day's credential strings. A few µs: once a day.
fn day_key(cfg: &SigV4Config, scope_suffix: &str, creds: &Credentials, day: u64) -> DayKey {
    let yyyymmdd = yyyymmdd(day);
    let date = std::str::from_utf8(&yyyymmdd).expect("digits");
    let k_signing = signing_key(&creds.secret_access_key, date, &cfg.region, &cfg.service);
    let scope = format!("{date}{scope_suffix}");
    let mut credential_q = String::with_capacity(creds.access_key_id.len() + 64);
    encode::push(&mut credential_q, &creds.access_key_id, encode::QUERY_VALUE);
    credential_q.push_str("%2F");
    encode::push(&mut credential_q, &scope, encode::QUERY_VALUE);
    DayKey {
        day,
        yyyymmdd,
        mac: HmacSha256::new_from_slice(&k_signing).expect("HMAC takes any key length"),
        credential_q,
        scope,
    }
}

fn check_credentials(c: &Credentials) -> anyhow::Result<()> {
    if c.access_key_id.is_empty() || c.secret_access_key.is_empty() {
        bail!("S3 URL signing needs credentials, and the access key id or secret is empty");
    }
    Ok(())
}

/// The URL's origin, the `host` header value, and the encoded path up to the key.
fn url_parts(cfg: &SigV4Config) -> anyhow::Result<(String, String, String)> {
    let ep = &cfg.endpoint;
    if !matches!(ep.scheme(), "http" | "https") {
        bail!("S3 endpoint {ep} must be http or https");
    }
    if cfg.bucket.is_empty() {
        bail!("S3 signer: empty bucket name");
    }
    let ep_host = ep
        .host()
        .with_context(|| format!("S3 endpoint {ep} has no host"))?;
    let host = match ep_host {
        url::Host::Domain(d) if !cfg.path_style => {
            let vhost = format!("{}.{d}", cfg.bucket);
            // Parse it as a host so a bucket name can't smuggle in a port, path or userinfo.
            match url::Host::parse(&vhost) {
                Ok(url::Host::Domain(h)) if !h.contains([':', '/', '@']) => h,
                _ => bail!(
                    "bucket {:?} can't be a virtual host; use path_style = true",
                    cfg.bucket
                ),
            }
        }
        url::Host::Domain(d) => d.to_owned(),
        _ if !cfg.path_style => {
            bail!("S3 endpoint {ep} is an IP address: virtual-host style needs a domain; use path_style = true")
        }
        url::Host::Ipv4(a) => a.to_string(),
        url::Host::Ipv6(a) => format!("[{a}]"),
    };
    // `port()` is `None` for the scheme's default port, which clients leave out of `Host` too.
    let host = match ep.port() {
        Some(p) => format!("{host}:{p}"),
        None => host,
    };
    let origin = format!("{}://{host}", ep.scheme());

    // The endpoint's path is already encoded by `url`; the bucket is one encoded segment.
    let mut base_path = ep.path().trim_end_matches('/').to_owned();
    base_path.push('/');
    if cfg.path_style {
        encode::push(&mut base_path, &cfg.bucket, encode::QUERY_VALUE);
        base_path.push('/');
    }
    let prefix = cfg.prefix.trim_matches('/');
    if !prefix.is_empty() {
        encode::push(&mut base_path, prefix, encode::PATH);
        base_path.push('/');
    }
    Ok((origin, host, base_path))
}

fn push_u64(out: &mut String, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&buf[i..]).expect("digits"));
}

fn day_of(unix: u64) -> u64 {
    unix / SECS_PER_DAY
}

/// `YYYYMMDD` of a day since the epoch (once a day, when the signing key is derived).
fn yyyymmdd(day: u64) -> [u8; 8] {
    let at = i64::try_from(day * SECS_PER_DAY).unwrap_or(i64::MAX);
    let at = jiff::Timestamp::from_second(at).unwrap_or(jiff::Timestamp::MAX);
    let s = at.strftime("%Y%m%d").to_string();
    s.as_bytes().try_into().expect("a four-digit year")
}

/// `X-Amz-Date`: `YYYYMMDDTHHMMSSZ`.
fn amz_date(yyyymmdd: &[u8; 8], unix: u64) -> [u8; 16] {
    let s = unix % SECS_PER_DAY;
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(yyyymmdd);
    out[8] = b'T';
    put_digits(&mut out[9..11], s / 3600);
    put_digits(&mut out[11..13], s / 60 % 60);
    put_digits(&mut out[13..15], s % 60);
    out[15] = b'Z';
    out
}

/// Writes `n` as exactly `out.len()` decimal digits (zero-padded, high digits dropped).
fn put_digits(out: &mut [u8], mut n: u64) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    fn hmac(key: &[u8], data: &str) -> [u8; 32] {
        let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
        m.update(data.as_bytes());
        m.finalize().into_bytes().into()
    }
    let k_secret = format!("AWS4{secret}");
    let k_date = hmac(k_secret.as_bytes(), date);
    let k_region = hmac(&k_date, region);
    let k_service = hmac(&k_region, service);
    hmac(&k_service, "aws4_request")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    const AK: &str = "AKIAIOSFODNN7EXAMPLE";
    const SK: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    /// Fri, 24 May 2013 00:00:00 GMT.
    const T2013: u64 = 1_369_353_600;
    const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

    fn creds(token: Option<&str>) -> Credentials {
        Credentials {
            access_key_id: AK.into(),
            secret_access_key: SK.into(),
            session_token: token.map(Into::into),
        }
    }

    fn cfg(endpoint: &str, bucket: &str, prefix: &str, path_style: bool) -> SigV4Config {
        SigV4Config {
            endpoint: endpoint.parse().unwrap(),
            bucket: bucket.into(),
            prefix: prefix.into(),
            region: "us-east-1".into(),
            path_style,
            service: "s3".into(),
        }
    }

    #[test]
    fn aws_presigned_url_vector() {
        // "Authenticating Requests: Using Query Parameters (AWS Signature Version 4)", S3 docs.
        let s = SigV4Signer::with_credentials(
            cfg("https://s3.amazonaws.com", "examplebucket", "", false),
            creds(None),
        )
        .unwrap();
        let url = s.sign_at(Method::Get, "test.txt", "", 86400, T2013);
        assert_eq!(
            url,
            "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
             &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\
             &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        );
    }

    #[test]
    fn aws_signing_key_vector() {
        // "Deriving the signing key" (SigV4), AWS IAM docs.
        let k = signing_key(
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "20150830",
            "us-east-1",
            "iam",
        );
        assert_eq!(
            hex::encode(k),
            "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"
        );
    }

    #[test]
    fn dates() {
        assert_eq!(&yyyymmdd(day_of(T2013)), b"20130524");
        assert_eq!(&yyyymmdd(0), b"19700101");
        // Leap day, and the day after.
        assert_eq!(&yyyymmdd(day_of(951_782_400)), b"20000229");
        assert_eq!(&yyyymmdd(day_of(951_868_800)), b"20000301");
        assert_eq!(&yyyymmdd(day_of(4_102_444_799)), b"20991231");
        assert_eq!(
            &amz_date(&yyyymmdd(day_of(1_700_000_000)), 1_700_000_000),
            b"20231114T221320Z"
        );
        // Cross-check a spread of days against jiff.
        for day in (0..40_000).step_by(37) {
            let ts = jiff::Timestamp::from_second(day as i64 * 86_400 + 12_345).unwrap();
            let want = ts.strftime("%Y%m%dT%H%M%SZ").to_string();
            let got = amz_date(&yyyymmdd(day), day * 86_400 + 12_345);
            assert_eq!(std::str::from_utf8(&got).unwrap(), want);
        }
    }

    #[test]
    fn encoding() {
        let mut s = String::new();
        push_u64(&mut s, 0);
        push_u64(&mut s, 604_800);
        assert_eq!(s, "0604800");
    }

    /// The same URL from rusty-s3, an independent implementation.
    fn rusty(
        c: &SigV4Config,
        cr: &Credentials,
        method: Method,
        key: &str,
        ct: &str,
        ttl: u64,
        now: u64,
    ) -> String {
        use rusty_s3::{Bucket, S3Action, UrlStyle};
        let style = if c.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket = Bucket::new(
            c.endpoint.clone(),
            style,
            c.bucket.clone(),
            c.region.clone(),
        )
        .unwrap();
        let rc = match &cr.session_token {
            Some(t) => {
                rusty_s3::Credentials::new_with_token(&cr.access_key_id, &cr.secret_access_key, t)
            }
            None => rusty_s3::Credentials::new(&cr.access_key_id, &cr.secret_access_key),
        };
        let object = if c.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", c.prefix)
        };
        let at = jiff::Timestamp::from_second(now as i64).unwrap();
        let ttl = Duration::from_secs(ttl);
        let url = match method {
            Method::Get => {
                let mut a = bucket.get_object(Some(&rc), &object);
                if !ct.is_empty() {
                    a.query_mut().insert("response-content-type", ct);
                }
                a.sign_with_time(ttl, &at)
            }
            Method::Head => {
                let mut a = bucket.head_object(Some(&rc), &object);
                if !ct.is_empty() {
                    a.query_mut().insert("response-content-type", ct);
                }
                a.sign_with_time(ttl, &at)
            }
        };
        url.to_string()
    }

    #[test]
    fn agrees_with_rusty_s3() {
        let hex = "a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4";
        let blob = format!("blobs/sha256/{hex}");
        let manifest = format!("manifests/sha256/{hex}");
        let keys = [
            blob.as_str(),
            manifest.as_str(),
            "repositories/a/b/_tags.json",
            "repositories/library/alpine/_manifests/3.20",
            "_catalog.json",
            // Not a layout key, but exercises the encoder against rusty-s3's.
            "odd key/with spaces+plus=eq&amp;ü~",
        ];
        let cts = [
            "",
            OCI_MANIFEST,
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/octet-stream",
            "application/json; charset=utf-8",
        ];
        let configs = [
            cfg("https://s3.us-east-1.amazonaws.com", "my-bucket", "", false),
            cfg(
                "https://s3.us-east-1.amazonaws.com",
                "my-bucket",
                "reg/v1",
                false,
            ),
            cfg("http://127.0.0.1:9000", "bucketname", "", true),
            cfg("http://127.0.0.1:9000", "bucketname", "root", true),
            cfg("https://minio.example:8443/s3", "b-1", "x", true),
            cfg("https://storage.example", "b-1", "", false),
        ];
        let token = "FQoGZXIvYXdzEJr//////////wEaDH+tok/en=with+specials";
        let times = [T2013, 1_700_000_000, 1_767_225_599, 1_767_225_600];
        let mut n = 0;
        for c in &configs {
            for tok in [None, Some(token)] {
                let cr = creds(tok);
                let s = SigV4Signer::with_credentials(c.clone(), cr.clone()).unwrap();
                for (i, key) in keys.iter().enumerate() {
                    for method in [Method::Get, Method::Head] {
                        let ct = cts[(i + n) % cts.len()];
                        let now = times[n % times.len()];
                        let ttl = [1, 300, 3600, 604_800][n % 4];
                        let ours = s.sign_at(method, key, ct, ttl, now);
                        let theirs = rusty(c, &cr, method, key, ct, ttl, now);
                        assert_eq!(ours, theirs, "{c:?} {method:?} {key} {ct}");
                        n += 1;
                    }
                }
            }
        }
        assert!(n >= 100);
    }

    #[test]
    fn request_shape() {
        let s = SigV4Signer::with_credentials(
            cfg("http://127.0.0.1:9000/", "bucketname", "/root/", true),
            creds(Some("tok/en")),
        )
        .unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(T2013 + 3723);
        let req = SignRequest {
            method: Method::Head,
            key: "manifests/sha256/abc",
            content_type: OCI_MANIFEST,
            ttl: Duration::from_secs(10_000_000),
        };
        let url = s.sign(&req, now);
        assert!(
            url.starts_with("http://127.0.0.1:9000/bucketname/root/manifests/sha256/abc?"),
            "{url}"
        );
        assert!(url.contains("&X-Amz-Date=20130524T010203Z&X-Amz-Expires=604800&"));
        assert!(url.contains("&X-Amz-Security-Token=tok%2Fen&X-Amz-SignedHeaders=host&"));
        assert!(url.contains(
            "&response-content-type=application%2Fvnd.oci.image.manifest.v1%2Bjson&X-Amz-Signature="
        ));
        let get = s.sign(
            &SignRequest {
                method: Method::Get,
                ..req
            },
            now,
        );
        assert_ne!(get, url, "the method is signed");
        let zero = s.sign(
            &SignRequest {
                ttl: Duration::ZERO,
                ..req
            },
            now,
        );
        assert!(zero.contains("&X-Amz-Expires=1&"));
        assert_eq!(s.kind(), "s3");
    }

    #[test]
    fn rejects_bad_config() {
        let c = creds(None);
        let ip_vhost = cfg("http://127.0.0.1:9000", "b", "", false);
        assert!(SigV4Signer::with_credentials(ip_vhost, c.clone()).is_err());
        let smuggle = cfg("https://s3.example", "evil.com:1@x", "", false);
        assert!(SigV4Signer::with_credentials(smuggle, c.clone()).is_err());
        let ftp = cfg("ftp://s3.example", "b", "", true);
        assert!(SigV4Signer::with_credentials(ftp, c.clone()).is_err());
        let mut bad_region = cfg("https://s3.example", "b", "", true);
        bad_region.region = "us-east-1/x".into();
        assert!(SigV4Signer::with_credentials(bad_region, c).is_err());
        let empty = Credentials {
            access_key_id: String::new(),
            secret_access_key: "x".into(),
            session_token: None,
        };
        assert!(
            SigV4Signer::with_credentials(cfg("https://s3.example", "b", "", true), empty).is_err()
        );
    }

    #[test]
    fn config_from_toml() {
        let c: SigV4Config = toml::from_str(
            r#"
            endpoint = "http://127.0.0.1:9000"
            bucket = "registry"
            path_style = true
            "#,
        )
        .unwrap();
        assert_eq!(c, cfg("http://127.0.0.1:9000", "registry", "", true));
        assert!(toml::from_str::<SigV4Config>(
            "endpoint = \"http://x\"\nbucket = \"b\"\nregoin = \"x\""
        )
        .is_err());
    }

    #[test]
    fn debug_hides_secrets() {
        let s = SigV4Signer::with_credentials(
            cfg("https://s3.example", "b", "", true),
            creds(Some("sessiontok123")),
        )
        .unwrap();
        let d = format!("{s:?}");
        assert!(d.contains(AK) && d.contains("s3.example"), "{d}");
        assert!(!d.contains(SK) && !d.contains("sessiontok123"), "{d}");
    }

    #[test]
    fn signing_key_cached_per_day() {
        let now = unix_secs(SystemTime::now());
        let today = day_of(now) * SECS_PER_DAY;
        let s =
            SigV4Signer::with_credentials(cfg("https://s3.example", "b", "", true), creds(None))
                .unwrap();
        assert_eq!(
            s.key_derivations(),
            1,
            "the constructor derives today's key"
        );
        let first = s.sign_at(Method::Get, "k", "", 60, today + 10);
        for t in [today, today + 10, today + 60_000, today + SECS_PER_DAY - 1] {
            s.sign_at(Method::Get, "k", OCI_MANIFEST, 60, t);
        }
        assert_eq!(s.key_derivations(), 1, "same day, same key");

        // A new day: derived once, then cached.
        let tomorrow = today + SECS_PER_DAY;
        let next = s.sign_at(Method::Get, "k", "", 60, tomorrow + 10);
        s.sign_at(Method::Get, "k", "", 60, tomorrow + 500);
        assert_eq!(s.key_derivations(), 2);
        assert_ne!(first, next);

        // A late request from the day before is signed correctly but doesn't replace the cache.
        assert_eq!(s.sign_at(Method::Get, "k", "", 60, today + 10), first);
        assert_eq!(s.key_derivations(), 3);
        s.sign_at(Method::Get, "k", "", 60, tomorrow + 900);
        assert_eq!(
            s.key_derivations(),
            3,
            "tomorrow's key is still the cached one"
        );
    }

    /// A source whose credentials the test swaps, like an instance-metadata source.
    #[derive(Debug)]
    struct Rotating(Mutex<Arc<Credentials>>);

    #[async_trait::async_trait]
    impl CredentialSource for Rotating {
        async fn credentials(&self) -> anyhow::Result<Arc<Credentials>> {
            Ok(self.0.lock().unwrap().clone())
        }
    }

    #[tokio::test]
    async fn refresh_rotates_credentials() {
        let source = Arc::new(Rotating(Mutex::new(Arc::new(creds(None)))));
        let c = cfg("http://127.0.0.1:9000", "bucketname", "", true);
        let s = Arc::new(SigV4Signer::new(c.clone(), source.clone()).await.unwrap());
        let now = unix_secs(SystemTime::now());
        let a = s.sign_at(Method::Get, "k", OCI_MANIFEST, 60, now);
        s.refresh().await.unwrap();
        assert_eq!(
            s.key_derivations(),
            1,
            "unchanged credentials: nothing to derive"
        );

        let new = Credentials {
            access_key_id: "AKIDNEW".into(),
            secret_access_key: "newsecret".into(),
            session_token: Some("tok".into()),
        };
        *source.0.lock().unwrap() = Arc::new(new.clone());
        let task = s.spawn_refresher(Duration::from_millis(10));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while s.key_derivations() < 2 {
            assert!(std::time::Instant::now() < deadline, "refresher never ran");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let b = s.sign_at(Method::Get, "k", OCI_MANIFEST, 60, now);
        assert_ne!(a, b);
        assert_eq!(b, rusty(&c, &new, Method::Get, "k", OCI_MANIFEST, 60, now));
        assert_eq!(s.key_derivations(), 2);

        // The refresher ends with the signer.
        drop(s);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("refresher stops when the signer is dropped")
            .unwrap();
    }

    #[tokio::test]
    async fn new_fails_without_credentials() {
        #[derive(Debug)]
        struct NoCreds;
        #[async_trait::async_trait]
        impl CredentialSource for NoCreds {
            async fn credentials(&self) -> anyhow::Result<Arc<Credentials>> {
                anyhow::bail!("no credentials found")
            }
        }
        let c = cfg("http://127.0.0.1:9000", "bucketname", "", true);
        let e = SigV4Signer::new(c, Arc::new(NoCreds)).await.unwrap_err();
        assert!(format!("{e:#}").contains("no credentials found"));
    }
}
