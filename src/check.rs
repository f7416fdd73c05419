//! `static-registry check`: signs and fetches through every origin the way clients will, and says
//! what a client would do with each wrong answer and how to fix it (docs/operations.md, "Checking
//! a deployment").
//!
//! Per origin: the `_health` canary (GET, and HEAD with a HEAD-signed URL), one manifest of a real
//! repository (its `Content-Type` must be the index's media type, with no `Content-Encoding`, and
//! its bytes must hash to the digest), one blob with `Range: bytes=0-0` (206 and `Content-Range`),
//! a URL whose signed key was swapped for another object's (must be refused), and an already
//! expired URL (must be refused). `serve` runs the same at startup and logs failures as warnings;
//! `/readyz` shows the last result.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{CONTENT_ENCODING, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use serde::Serialize;

use crate::federation::cache::Cached;
use crate::federation::{Federation, Origin};
use crate::hashing::Hasher;
use crate::layout;
use crate::reference::Digest;
use crate::sign::{Method, SignRequest};

/// A signed URL's lifetime for the checks.
const TTL: Duration = Duration::from_secs(120);
/// The most a manifest answer may be, read whole.
const MAX_MANIFEST: usize = 16 << 20;

/// One check of one origin.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub origin: String,
    pub check: &'static str,
    pub ok: bool,
    /// What was seen.
    pub detail: String,
    /// When failed: what clients will do with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consequence: Option<&'static str>,
    /// When failed: how to fix it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// Every finding of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.findings.iter().all(|f| f.ok)
    }

    /// One line per finding, failures with their consequence and fix.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for f in &self.findings {
            let mark = if f.ok { "ok  " } else { "FAIL" };
            out.push_str(&format!(
                "{mark} {:<12} {:<20} {}\n",
                f.origin, f.check, f.detail
            ));
            if let Some(c) = f.consequence {
                out.push_str(&format!("     → {c}\n"));
            }
            if let Some(x) = &f.fix {
                out.push_str(&format!("     fix: {x}\n"));
            }
        }
        let failed = self.findings.iter().filter(|f| !f.ok).count();
        out.push_str(&format!(
            "{} checks, {failed} failed\n",
            self.findings.len()
        ));
        out
    }
}

/// Runs every check against every origin. `endpoint` resolves relative redirect URLs (the
/// embedded origin's `/_origin/…`): the endpoint as clients reach it.
pub async fn run(federation: &Federation, endpoint: &url::Url) -> Report {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(15))
        .connect_timeout(Duration::from_secs(5))
        .no_gzip()
        .no_brotli()
        .no_zstd()
        .no_deflate()
        .build()
        .expect("HTTP client");
    let mut report = Report::default();
    for origin in &federation.origins {
        let c = OriginCheck {
            origin: origin.clone(),
            client: &client,
            endpoint,
        };
        c.run(&mut report.findings).await;
    }
    report
}

struct OriginCheck<'a> {
    origin: Arc<Origin>,
    client: &'a reqwest::Client,
    endpoint: &'a url::Url,
}

/// A fetched answer: status, headers and (for GETs) up to `MAX_MANIFEST` bytes of body.
struct Fetched {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl OriginCheck<'_> {
    fn url(&self, method: Method, key: &str, content_type: &str, now: SystemTime) -> String {
        let signed = self.origin.signer.sign(
            &SignRequest {
                method,
                key,
                content_type,
                ttl: TTL,
            },
            now,
        );
        match self.endpoint.join(&signed) {
            Ok(u) => u.to_string(),
            Err(_) => signed,
        }
    }

    async fn fetch(
        &self,
        method: reqwest::Method,
        url: &str,
        range: Option<&str>,
    ) -> Result<Fetched, String> {
        // As clients ask: Go's HTTP client (Docker, containerd) offers gzip on every request.
        let mut req = self
            .client
            .request(method.clone(), url)
            .header(reqwest::header::ACCEPT_ENCODING, "gzip");
        if let Some(r) = range {
            req = req.header(RANGE, r);
        }
        // The URL is a credential: errors name the origin, never the URL.
        let resp = req
            .send()
            .await
            .map_err(|e| format!("no answer ({})", without_url(&e)))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let mut body = Vec::new();
        if method == reqwest::Method::GET {
            let mut resp = resp;
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| format!("body failed ({})", without_url(&e)))?
            {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_MANIFEST {
                    return Err("answer too large".into());
                }
            }
        }
        Ok(Fetched {
            status,
            headers,
            body,
        })
    }

    fn push(&self, out: &mut Vec<Finding>, check: &'static str, result: Result<String, Failure>) {
        let name = self.origin.name.clone();
        out.push(match result {
            Ok(detail) => Finding {
                origin: name,
                check,
                ok: true,
                detail,
                consequence: None,
                fix: None,
            },
            Err(f) => Finding {
                origin: name,
                check,
                ok: false,
                detail: f.detail,
                consequence: Some(f.consequence),
                fix: Some(f.fix),
            },
        });
    }

    async fn run(&self, out: &mut Vec<Finding>) {
        let now = SystemTime::now();
        let kind = self.origin.signer.kind();
        // 1. The canary, GET and HEAD.
        let get = self.url(Method::Get, layout::HEALTH, "text/plain", now);
        let r = match self.fetch(reqwest::Method::GET, &get, None).await {
            Ok(f) if f.status == 200 => Ok("200".into()),
            Ok(f) => Err(Failure::health(format!("GET answered {}", f.status), kind)),
            Err(e) => Err(Failure::health(e, kind)),
        };
        let healthy = r.is_ok();
        self.push(out, "health GET", r);
        let head = self.url(Method::Head, layout::HEALTH, "text/plain", now);
        let r = match self.fetch(reqwest::Method::HEAD, &head, None).await {
            Ok(f) if f.status == 200 => Ok("200".into()),
            Ok(f) => Err(Failure {
                detail: format!("HEAD with a HEAD-signed URL answered {}", f.status),
                consequence: "HEAD requests clients make on redirects fail (skopeo inspect, some containerd paths)",
                fix: "sign HEAD requests for HEAD (S3 and GCS bind the method), or let the edge accept HEAD on GET URLs".into(),
            }),
            Err(e) => Err(Failure::health(e, kind)),
        };
        self.push(out, "health HEAD", r);
        if !healthy {
            return;
        }
        // 2. A real manifest and one of its blobs.
        let Some((manifest, media_type, blob)) = self.sample().await else {
            self.push(
                out,
                "manifest",
                Ok("no published repository to sample; skipped".into()),
            );
            return;
        };
        let url = self.url(Method::Get, &layout::manifest(&manifest), &media_type, now);
        let r = match self.fetch(reqwest::Method::GET, &url, None).await {
            Ok(f) => check_manifest(&f, &manifest, &media_type, kind),
            Err(e) => Err(Failure::health(e, kind)),
        };
        self.push(out, "manifest", r);
        if let Some((blob, size)) = blob {
            let url = self.url(
                Method::Get,
                &layout::blob(&blob),
                layout::BLOB_CONTENT_TYPE,
                now,
            );
            let r = match self
                .fetch(reqwest::Method::GET, &url, Some("bytes=0-0"))
                .await
            {
                Ok(f) => check_range(&f, size),
                Err(e) => Err(Failure::health(e, kind)),
            };
            self.push(out, "blob range", r);
        }
        if kind == "public" {
            self.push(
                out,
                "signatures",
                Ok("public origin: URLs are not signed".into()),
            );
            return;
        }
        // 3. A URL signed for the catalog, pointed at the canary: a checking edge refuses it.
        let signed = self.url(Method::Get, layout::CATALOG, layout::JSON_CONTENT_TYPE, now);
        let tampered = signed.replacen(layout::CATALOG, layout::HEALTH, 1);
        let r = if tampered == signed {
            Ok("the signed URL does not name its key; skipped".into())
        } else {
            refused(
                self.fetch(reqwest::Method::GET, &tampered, None).await,
                "a URL whose key was changed",
                Failure::tampered(kind),
            )
        };
        self.push(out, "tampered URL", r);
        // 4. A URL that expired before it was made.
        let past = now - TTL * 3;
        let expired = self.url(Method::Get, layout::HEALTH, "text/plain", past);
        let r = refused(
            self.fetch(reqwest::Method::GET, &expired, None).await,
            "an expired URL",
            Failure::expired(kind),
        );
        self.push(out, "expired URL", r);
    }

    /// A manifest of a published repository (the first of the catalog with a tag) and one blob
    /// it references.
    async fn sample(&self) -> Option<(Digest, String, Option<(Digest, u64)>)> {
        let Ok(Cached::Found(catalog)) = self.origin.catalog.get(layout::CATALOG).await else {
            return None;
        };
        for name in catalog.repositories.iter().take(20) {
            let Ok(name) = crate::reference::RepoName::parse(name) else {
                continue;
            };
            let Ok(Cached::Found(idx)) = self.origin.repos.get(&layout::repo_index(&name)).await
            else {
                continue;
            };
            let Some(d) = idx.tags.values().next() else {
                continue;
            };
            let blob = idx.blobs.iter().next().map(|(d, s)| (d.clone(), *s));
            return Some((d.digest.clone(), d.media_type.clone(), blob));
        }
        None
    }
}

/// Why a check failed, what clients will do, and the fix.
struct Failure {
    detail: String,
    consequence: &'static str,
    fix: String,
}

impl Failure {
    fn health(detail: String, kind: &str) -> Failure {
        Failure {
            detail,
            consequence: "every redirect to this origin fails; /readyz marks it failing",
            fix: match kind {
                "embedded" => "the endpoint must be reachable at --endpoint; replicas behind a balancer must share the origin secret (the store's .origin-secret, or [embedded] secret_file)".into(),
                "s3" => "check the bucket, region, endpoint and credentials of the store, and that _health was published (any publish writes it)".into(),
                _ => format!("check the {kind} origin's base_url and its secret, and that the edge serves the store's files"),
            },
        }
    }

    fn tampered(kind: &str) -> Failure {
        Failure {
            detail: String::new(),
            consequence: "anyone can read any object of the store by editing a URL",
            fix: match kind {
                "secure-link" => "nginx must check $secure_link (`if ($secure_link = \"\") { return 403; }`) with the same template and secret".into(),
                _ => format!("the {kind} edge must verify signatures (its key or secret must match the signer's)"),
            },
        }
    }

    fn expired(kind: &str) -> Failure {
        Failure {
            detail: String::new(),
            consequence: "URLs never expire: a leaked redirect keeps working forever",
            fix: match kind {
                "secure-link" => "nginx must refuse expired links (`if ($secure_link = \"0\") { return 410; }`) and the template must include $arg_expires".into(),
                _ => format!("the {kind} edge must check the URL's expiry"),
            },
        }
    }
}

fn check_manifest(
    f: &Fetched,
    digest: &Digest,
    media_type: &str,
    kind: &str,
) -> Result<String, Failure> {
    if f.status != 200 {
        return Err(Failure::health(format!("GET answered {}", f.status), kind));
    }
    if let Some(enc) = f.headers.get(CONTENT_ENCODING) {
        return Err(Failure {
            detail: format!("Content-Encoding: {}", enc.to_str().unwrap_or("?")),
            consequence: "containerd decodes the body and its digest check then fails; Docker and podman refuse the manifest",
            fix: "turn compression off for the store's files (nginx `gzip off;`, the CDN's automatic compression)".into(),
        });
    }
    let got = f
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if got.split(';').next().unwrap_or("").trim() != media_type {
        return Err(Failure {
            detail: format!("Content-Type {got:?}, want {media_type:?}"),
            consequence: "skopeo and podman will refuse this manifest (\"unsupported schema version\"); containerd treats it as a blob",
            fix: match kind {
                "secure-link" => "sign the content type (`content_type_param = \"ct\"` in the origin) and add `add_header Content-Type $arg_ct;` (with `types {}` / `default_type`) in the nginx location (config/cdn-secure-link.toml)".into(),
                "s3" => "the object was stored with another Content-Type: re-publish it, or let the signer set response-content-type".into(),
                _ => format!("make the {kind} edge answer the Content-Type the URL asks for (or store objects with it)"),
            },
        });
    }
    let got = Hasher::digest_like(digest, &f.body);
    if &got != digest {
        return Err(Failure {
            detail: format!("the body hashes to {got}, not {digest}"),
            consequence: "every client refuses the manifest (digest mismatch)",
            fix: "the edge changes the bytes (minification, transcoding?) or serves another object: serve the store's files unchanged".into(),
        });
    }
    Ok(format!("200, {media_type}, digest verified"))
}

fn check_range(f: &Fetched, size: u64) -> Result<String, Failure> {
    let cr = f
        .headers
        .get(CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if f.status == 206 && cr == format!("bytes 0-0/{size}") && f.body.len() == 1 {
        return Ok(format!("206, Content-Range: {cr}"));
    }
    Err(Failure {
        detail: format!("Range: bytes=0-0 answered {} with Content-Range {cr:?} and {} bytes", f.status, f.body.len()),
        consequence: "clients cannot resume a broken download: Docker and containerd fetch big layers again from the start",
        fix: "let the edge answer Range requests (nginx: no `max_ranges 0;`, no proxy that drops Range; CDNs: enable byte-range requests)".into(),
    })
}

fn refused(r: Result<Fetched, String>, what: &str, mut f: Failure) -> Result<String, Failure> {
    match r {
        Ok(a) if (400..500).contains(&a.status) => Ok(format!("{what} refused ({})", a.status)),
        Ok(a) => {
            f.detail = format!("{what} answered {}", a.status);
            Err(f)
        }
        Err(e) => {
            f.detail = format!("{what}: {e}");
            Err(f)
        }
    }
}

/// A reqwest error without its URL (a signed URL is a credential).
fn without_url(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    if let Some(u) = e.url() {
        msg = msg.replace(u.as_str(), "<signed URL>");
    }
    msg
}
