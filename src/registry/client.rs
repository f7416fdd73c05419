//! A registry API v2 client for pulling: the `/v2/` ping, manifests with the right `Accept`
//! headers, blobs as streams that resume with `Range` after a dropped connection, and the
//! referrers API with its tag-schema fallback.
//!
//! Everything that talks HTTP goes through [`RegistryClient::send`], which adds the credentials
//! (Basic, or a Bearer token fetched and refreshed as needed), re-authenticates once on a 401
//! (tokens expire during long copies), and retries connection errors, 5xx and 429 with
//! exponential backoff and jitter, honouring `Retry-After`. Redirects (blobs usually live on a
//! CDN or S3) are followed by [`Transport`], which sends credentials on the first hop only and
//! refuses a storage host's challenge: only the registry's own 401 is ever answered. Every
//! request has a total-time limit and every body read whole has a cap ([`ClientOptions`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{bail, Context};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, RANGE};
use reqwest::{Method, Response, StatusCode};
use url::Url;

use super::auth::{
    basic_value, fetch_token, parse_challenges, sensitive_value, AuthError, Challenge, Token,
    TokenRequest, TokenStatus,
};
use super::credentials::{Credentials, Resolved};
use super::reference::RemoteRef;
use super::retry::is_transient_status;
pub use super::retry::RetryPolicy;
use super::transport::{read_capped, HopError, Transport};
use crate::hashing::Hasher;
use crate::reference::{Digest, RepoName};

/// Every manifest type the publisher can store, in the order registries should prefer them.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Manifests are small (registries cap them at 4 MiB); anything bigger is refused unread.
pub const MAX_MANIFEST_SIZE: usize = 16 << 20;

/// Token responses are a few kilobytes (a JWT); a megabyte is plenty.
pub const MAX_TOKEN_RESPONSE: usize = 1 << 20;

/// How to reach the registry.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Verify TLS certificates; `false` also allows plain HTTP (skopeo's `--src-tls-verify=false`).
    pub tls_verify: bool,
    pub retry: RetryPolicy,
    pub connect_timeout: Duration,
    /// Longest silence while reading a response before the connection counts as dropped.
    pub read_timeout: Duration,
    /// Total time of any request but a blob download (ping, token, manifest, referrers page,
    /// config blob), redirects and the reading of the body included.
    pub request_timeout: Duration,
    /// Total time of one blob request. A download cut by it resumes with `Range` from where it
    /// got to, like a dropped connection, so a slow link still finishes a big layer.
    pub blob_timeout: Duration,
    /// Redirect hops followed per request.
    pub max_redirects: u32,
    /// Largest token response read.
    pub max_token_response: usize,
    /// Largest manifest, referrers page or config blob read.
    pub max_manifest_size: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            tls_verify: true,
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(120),
            request_timeout: Duration::from_secs(300),
            blob_timeout: Duration::from_secs(3600),
            max_redirects: 10,
            max_token_response: MAX_TOKEN_RESPONSE,
            max_manifest_size: MAX_MANIFEST_SIZE,
        }
    }
}

/// What the client did, for the summary and the tests.
#[derive(Debug, Default)]
pub struct Counters {
    pub blobs: AtomicU64,
    pub blob_bytes: AtomicU64,
    pub manifests: AtomicU64,
    pub manifest_bytes: AtomicU64,
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub resumes: AtomicU64,
    pub tokens: AtomicU64,
}

impl Counters {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// How requests are authenticated, learnt from the `/v2/` ping.
#[derive(Debug)]
enum Auth {
    None,
    Basic,
    Bearer {
        challenge: Challenge,
        token: Option<Token>,
    },
}

/// A manifest as the registry served it, digest checked.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub digest: Digest,
    /// The response's `Content-Type` (empty when the registry sent none).
    pub media_type: String,
}

/// A pull client for one repository of one registry.
#[derive(Debug)]
pub struct RegistryClient {
    transport: Transport,
    /// `https://host[:port]/` (or `http://` for an insecure or loopback registry).
    base: Url,
    /// The registry as the user named it, for messages.
    registry: String,
    repository: RepoName,
    creds: Resolved,
    auth: tokio::sync::Mutex<Auth>,
    opts: ClientOptions,
    pub counters: Counters,
}

impl RegistryClient {
    /// Pings the registry (`GET /v2/`), learns how it authenticates, and authenticates once, so
    /// wrong credentials fail before anything is copied.
    pub async fn connect(
        r: &RemoteRef,
        creds: Resolved,
        opts: &ClientOptions,
    ) -> anyhow::Result<RegistryClient> {
        let transport = Transport::new(
            opts.tls_verify,
            opts.connect_timeout,
            opts.read_timeout,
            opts.max_redirects,
        )?;
        // Plain HTTP only for registries on this machine or when TLS checks are off, and only
        // after HTTPS failed (Docker's rule for insecure registries).
        let schemes: &[&str] = if !opts.tls_verify || r.is_loopback() {
            &["https", "http"]
        } else {
            &["https"]
        };
        let mut last_err = None;
        for (i, scheme) in schemes.iter().enumerate() {
            let base = Url::parse(&format!("{scheme}://{}/", r.api_host))
                .with_context(|| format!("invalid registry host {:?}", r.api_host))?;
            let client = RegistryClient {
                transport: transport.clone(),
                base,
                registry: r.registry.clone(),
                repository: r.repository.clone(),
                creds: creds.clone(),
                auth: tokio::sync::Mutex::new(Auth::None),
                opts: opts.clone(),
                counters: Counters::default(),
            };
            let fallback = i + 1 < schemes.len();
            match client.ping(!fallback).await {
                Ok(()) => {
                    client.authenticate().await?;
                    return Ok(client);
                }
                Err(e) if fallback => {
                    tracing::debug!("{scheme}://{}: {e:#}; trying plain HTTP", r.api_host);
                    last_err = Some(e);
                }
                Err(e) => {
                    return Err(match last_err.take() {
                        // Both failed: say why HTTPS did too (a certificate problem, typically).
                        Some(tls) => e.context(format!("HTTPS failed first: {tls:#}")),
                        None => e,
                    });
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("registry {} unreachable", r.registry)))
    }

    /// The registry as users name it.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    pub fn repository(&self) -> &RepoName {
        &self.repository
    }

    async fn pause(&self, attempt: u32, headers: &HeaderMap) {
        self.counters.retries.fetch_add(1, Ordering::Relaxed);
        let d = self.opts.retry.delay(attempt, headers);
        tokio::time::sleep(d).await;
    }

    /// Sends one request to the registry with credentials (redirects get none), within
    /// `request_timeout`, re-authenticating once on the registry's own 401 and retrying transient
    /// failures. Returns any other response, whatever its status.
    pub async fn send(
        &self,
        method: Method,
        url: Url,
        headers: HeaderMap,
    ) -> anyhow::Result<Response> {
        self.send_within(method, url, headers, self.opts.request_timeout)
            .await
    }

    /// [`Self::send`] with `timeout` as the total time of each attempt.
    async fn send_within(
        &self,
        method: Method,
        url: Url,
        headers: HeaderMap,
        timeout: Duration,
    ) -> anyhow::Result<Response> {
        let path = url.path().to_owned();
        let mut reauthenticated = false;
        let mut attempt = 0;
        loop {
            let auth = self.auth_header().await?;
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            let sent = self
                .transport
                .send(&method, &url, &headers, auth.as_ref(), timeout)
                .await;
            // A 401 here is the registry's own: one from a redirect target is a `HopError`.
            let resp = match sent {
                Ok(r) => r,
                Err(e) if e.is_transient() && attempt + 1 < self.opts.retry.attempts => {
                    tracing::warn!(
                        "{method} {path} at registry {}: {e}; retrying",
                        self.registry
                    );
                    self.pause(attempt, &HeaderMap::new()).await;
                    attempt += 1;
                    continue;
                }
                Err(e) => {
                    return Err(anyhow::Error::new(e).context(format!(
                        "{method} {path} at registry {} failed",
                        self.registry
                    )))
                }
            };
            let status = resp.status();
            tracing::debug!("{method} {path} -> {status}");
            if status == StatusCode::UNAUTHORIZED {
                if !reauthenticated && self.reauthenticate(&resp, auth.as_ref()).await? {
                    reauthenticated = true;
                    continue;
                }
                return Err(match self.creds.credentials {
                    Credentials::Anonymous => self.required(401),
                    _ => self.refused(401),
                }
                .into());
            }
            if is_transient_status(status) && attempt + 1 < self.opts.retry.attempts {
                tracing::warn!(
                    "{method} {path} at registry {}: {status}; retrying",
                    self.registry
                );
                self.pause(attempt, resp.headers()).await;
                attempt += 1;
                continue;
            }
            return Ok(resp);
        }
    }

    fn url(&self, tail: &str) -> anyhow::Result<Url> {
        Ok(self.base.join(&format!("v2/{}/{tail}", self.repository))?)
    }

    /// The manifest (or index) `reference` names. With `expect`, its bytes must hash to that
    /// digest; otherwise they must match `Docker-Content-Digest` when the registry sends one.
    pub async fn manifest(
        &self,
        reference: &str,
        expect: Option<&Digest>,
    ) -> anyhow::Result<FetchedManifest> {
        self.manifest_opt(reference, expect)
            .await?
            .with_context(|| {
                format!(
                    "manifest {reference} not found in {} at registry {} (404)",
                    self.repository, self.registry
                )
            })
    }

    /// Like [`Self::manifest`], `None` on 404.
    pub async fn manifest_opt(
        &self,
        reference: &str,
        expect: Option<&Digest>,
    ) -> anyhow::Result<Option<FetchedManifest>> {
        let url = self.url(&format!("manifests/{reference}"))?;
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(MANIFEST_ACCEPT));
        let mut attempt = 0;
        loop {
            let resp = self.send(Method::GET, url.clone(), headers.clone()).await?;
            let status = resp.status();
            if status == StatusCode::NOT_FOUND {
                return Ok(None);
            }
            if status == StatusCode::FORBIDDEN {
                bail!(
                    "registry {} denied access to {} (403) for {}",
                    self.registry,
                    self.repository,
                    self.creds.who()
                );
            }
            if !status.is_success() {
                bail!(
                    "registry {} answered {status} to GET manifest {reference} of {}",
                    self.registry,
                    self.repository
                );
            }
            let media_type = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.split(';').next().unwrap_or(s).trim().to_owned())
                .unwrap_or_default();
            let header_digest = resp
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .and_then(|s| Digest::parse(s.trim()).ok());
            let bytes = match read_capped(resp, self.opts.max_manifest_size, "a manifest").await {
                Ok(b) => b,
                Err(e)
                    if attempt + 1 < self.opts.retry.attempts
                        && e.downcast_ref::<HopError>()
                            .is_some_and(HopError::is_transient) =>
                {
                    tracing::warn!("reading manifest {reference}: {e:#}; retrying");
                    self.pause(attempt, &HeaderMap::new()).await;
                    attempt += 1;
                    continue;
                }
                Err(e) => {
                    return Err(e.context(format!(
                        "reading manifest {reference} of {} from registry {}",
                        self.repository, self.registry
                    )))
                }
            };
            self.counters.manifests.fetch_add(1, Ordering::Relaxed);
            self.counters
                .manifest_bytes
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            let digest = match (expect, &header_digest) {
                (Some(want), _) => want.clone(),
                (None, Some(h)) => h.clone(),
                (None, None) => Digest::sha256_of(&bytes),
            };
            let got = Hasher::digest_like(&digest, &bytes);
            if got != digest {
                bail!(
                    "registry {} served manifest {reference} of {} with digest {got}, expected {digest}: refusing it",
                    self.registry,
                    self.repository
                );
            }
            if let (Some(want), Some(h)) = (expect, &header_digest) {
                if h.algorithm() == want.algorithm() && h != want {
                    bail!(
                        "registry {} says manifest {reference} is {h}, expected {want}",
                        self.registry
                    );
                }
            }
            return Ok(Some(FetchedManifest {
                bytes,
                digest,
                media_type,
            }));
        }
    }

    /// Starts (or resumes, from `offset`) a blob download. Returns the response and how many of
    /// its leading bytes to discard (a server that ignores `Range` sends the blob from 0).
    /// The request may take `blob_timeout` in all.
    pub async fn blob(&self, digest: &Digest, offset: u64) -> anyhow::Result<(Response, u64)> {
        self.blob_within(digest, offset, self.opts.blob_timeout)
            .await
    }

    async fn blob_within(
        &self,
        digest: &Digest,
        offset: u64,
        timeout: Duration,
    ) -> anyhow::Result<(Response, u64)> {
        let url = self.url(&format!("blobs/{digest}"))?;
        let mut headers = HeaderMap::new();
        if offset > 0 {
            headers.insert(
                RANGE,
                HeaderValue::from_str(&format!("bytes={offset}-")).expect("ascii"),
            );
        }
        let resp = self.send_within(Method::GET, url, headers, timeout).await?;
        let status = resp.status();
        match status.as_u16() {
            200 => Ok((resp, offset)),
            206 => {
                let start = resp
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|s| s.strip_prefix("bytes "))
                    .and_then(|s| s.split('-').next())
                    .and_then(|s| s.parse::<u64>().ok());
                if start != Some(offset) {
                    bail!(
                        "registry {}: resuming blob {digest} at byte {offset} got a response starting at {start:?}",
                        self.registry
                    );
                }
                Ok((resp, 0))
            }
            404 => bail!(
                "blob {digest} not found in {} at registry {} (404)",
                self.repository,
                self.registry
            ),
            403 => bail!(
                "registry {} denied access to blob {digest} of {} (403)",
                self.registry,
                self.repository
            ),
            _ => bail!(
                "registry {} answered {status} to GET blob {digest} of {}",
                self.registry,
                self.repository
            ),
        }
    }

    /// A small blob (an image config) read whole and verified, within `request_timeout`.
    pub async fn small_blob(&self, digest: &Digest, size: u64) -> anyhow::Result<Vec<u8>> {
        let cap = self.opts.max_manifest_size;
        if size > cap as u64 {
            bail!("blob {digest} is {size} bytes, too big to read as a config");
        }
        let (resp, skip) = self
            .blob_within(digest, 0, self.opts.request_timeout)
            .await?;
        debug_assert_eq!(skip, 0);
        let bytes = read_capped(resp, cap, "a config blob")
            .await
            .with_context(|| format!("reading blob {digest} from registry {}", self.registry))?;
        self.counters.blobs.fetch_add(1, Ordering::Relaxed);
        self.counters
            .blob_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        if bytes.len() as u64 != size || Hasher::digest_like(digest, &bytes) != *digest {
            bail!(
                "registry {} served blob {digest} with the wrong content",
                self.registry
            );
        }
        Ok(bytes)
    }

    /// Records blob bytes streamed by a reader outside this module.
    pub fn count_blob_bytes(&self, n: u64) {
        self.counters.blob_bytes.fetch_add(n, Ordering::Relaxed);
    }

    pub fn count_blob(&self) {
        self.counters.blobs.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_resume(&self) {
        self.counters.resumes.fetch_add(1, Ordering::Relaxed);
    }

    /// What the referrers API lists for `subject` (following `Link` pages), or `None` when the
    /// registry does not implement it.
    pub async fn referrers(
        &self,
        subject: &Digest,
    ) -> anyhow::Result<Option<Vec<serde_json::Value>>> {
        let mut url = self.url(&format!("referrers/{subject}"))?;
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(OCI_INDEX));
        let mut out = Vec::new();
        for _page in 0..50 {
            let resp = self.send(Method::GET, url.clone(), headers.clone()).await?;
            let status = resp.status();
            if matches!(status.as_u16(), 400 | 404 | 405 | 501) && out.is_empty() {
                return Ok(None);
            }
            if !status.is_success() {
                bail!(
                    "registry {} answered {status} to GET referrers of {subject}",
                    self.registry
                );
            }
            let is_index = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| ct.starts_with(OCI_INDEX));
            let next = resp
                .headers()
                .get(reqwest::header::LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(next_link)
                .and_then(|l| url.join(&l).ok());
            let body = read_capped(resp, self.opts.max_manifest_size, "a referrers page")
                .await
                .with_context(|| format!("reading the referrers of {subject}"))?;
            let v: serde_json::Value = match serde_json::from_slice::<serde_json::Value>(&body) {
                Ok(v) if is_index || v.get("manifests").is_some() => v,
                // Some registries answer 200 with an HTML page or `{}` for unknown routes.
                _ if out.is_empty() => return Ok(None),
                _ => break,
            };
            if let Some(list) = v.get("manifests").and_then(|m| m.as_array()) {
                out.extend(list.iter().cloned());
            }
            match next {
                Some(n) if n.origin() == self.base.origin() => url = n,
                _ => break,
            }
        }
        Ok(Some(out))
    }
}

/// The target of `rel="next"` in a `Link` header.
fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        params.contains("rel=\"next\"").then(|| {
            target
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned()
        })
    })
}

mod login;

#[cfg(test)]
mod tests;
