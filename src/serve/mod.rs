//! `serve`: the stateless redirecting endpoint.
//!
//! It answers `/v2/` and `/v1/_ping` itself, answers HEADs from the cached repository index, and
//! redirects every content request to a signed URL. With a local store it also mounts the
//! embedded origin that those URLs point at. Operational routes (`/healthz`, `/readyz`,
//! `/metrics`) and the token endpoint (`/token`, with private repositories) live beside the API.

pub mod cache;
pub mod client_limits;
pub mod error;
pub mod h2_idle;
pub mod listener;
pub mod metrics;
pub mod ops;
pub mod origin;
pub mod per_second;
pub mod recent_answers;
pub mod recent_urls;
pub mod route;
pub mod send_floor;
pub mod v1;
pub mod v2;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method as HttpMethod, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;

use crate::auth::token::TokenError;
use crate::auth::TokenIssuer;
use crate::federation::Federation;
use crate::sign::embedded::ORIGIN_PREFIX;

use error::OciError;
use origin::EmbeddedOrigin;
use route::V2Route;

/// Everything a request handler needs; shared by all requests, no per-request state.
pub struct AppState {
    pub federation: Arc<Federation>,
    pub url_ttl: Duration,
    /// The built-in origin, mounted when a local store is served through it.
    pub embedded: Option<EmbeddedOrigin>,
    /// Private repositories and the token endpoint, when configured.
    pub auth: Option<Arc<TokenIssuer>>,
    /// Trust `X-Forwarded-Proto`/`-Host` (set by our own balancer) for external URLs.
    pub trust_forwarded: bool,
    /// Whether this listener terminates TLS (the scheme of external URLs without a proxy).
    pub tls: bool,
    /// Log every request at info level (otherwise at debug).
    pub access_log: bool,
    /// Limit for one registry API request (an index load from a slow store included).
    pub request_timeout: Duration,
    /// Re-use blob and manifest answers within their second ([`recent_answers`]); off when the
    /// index is not cached (`index_ttl = 0`), where every answer must read the store afresh.
    pub reuse_answers: bool,
    /// Per-client request rates, when configured ([`client_limits`]).
    pub client_limits: Option<client_limits::ClientLimits>,
}

const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole HTTP surface as an axum `Router`, for in-process callers (benches, embedding); the
/// listener calls [`dispatch`] itself.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new().fallback(dispatch_route).with_state(state)
}

/// Process-unique request ids: a random prefix per process plus a counter (cheap, and unique
/// across replicas for log correlation). Each serving thread takes the counter in blocks, so
/// threads do not pull one cache line back and forth on every request.
fn next_request_id() -> HeaderValue {
    const BLOCK: u64 = 1024;
    static PREFIX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    static NEXT_BLOCK: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        /// This thread's next id and the end of its block.
        static NEXT: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
    }
    let p = *PREFIX.get_or_init(rand::random);
    let n = NEXT.with(|next| {
        let (mut n, mut end) = next.get();
        if n == end {
            n = NEXT_BLOCK.fetch_add(BLOCK, Ordering::Relaxed);
            end = n + BLOCK;
        }
        next.set((n + 1, end));
        n
    });
    request_id(p, n)
}

/// `{p:08x}-{n:x}`, written by hand: this runs on every request.
fn request_id(p: u32, n: u64) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 8 + 1 + 16];
    for (i, b) in buf[..8].iter_mut().enumerate() {
        *b = HEX[((p >> (28 - 4 * i)) & 0xf) as usize];
    }
    buf[8] = b'-';
    let digits = (64 - (n | 1).leading_zeros()).div_ceil(4) as usize;
    for i in 0..digits {
        buf[9 + i] = HEX[((n >> (4 * (digits - 1 - i))) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&buf[..9 + digits]).expect("hex is a valid header")
}

async fn dispatch_route(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    dispatch(&state, req, peer).await
}

/// An answer: made at once (a repeat, [`recent_answers`]), or still to be worked out. Small
/// either way: hyper keeps one in every connection's state, idle ones included.
pub(crate) type Answer = futures::future::Either<
    std::future::Ready<Response>,
    std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send>>,
>;

/// Answers one request: the listener calls this directly (no router in between).
/// `peer` is the client's address (the balancer's, behind one), for region lookup.
///
/// A repeat is answered before any future exists: the boxed future of a whole request is
/// several KiB to allocate and move, more than the repeat costs (docs/performance.md).
pub(crate) fn dispatch(state: &Arc<AppState>, req: Request, peer: Option<SocketAddr>) -> Answer {
    let started = Instant::now();
    let logged = (state.access_log || tracing::enabled!(tracing::Level::DEBUG))
        .then(|| (req.method().clone(), req.uri().path().to_owned()));
    if let Some(limits) = &state.client_limits {
        if let Some(refused) = limits.check(&state.federation.regions, &req, peer) {
            let refused = ("limited", with_api_version(refused));
            return futures::future::Either::Left(std::future::ready(finish(
                state, started, logged, refused,
            )));
        }
    }
    let read = V2Read::of(state, &req, peer);
    let reused = read.as_ref().and_then(|r| r.reused(req.uri().path()));
    if let Some(answer) = reused {
        return futures::future::Either::Left(std::future::ready(finish(
            state, started, logged, answer,
        )));
    }
    let state = state.clone();
    futures::future::Either::Right(Box::pin(async move {
        let answer = handle(&state, req, peer, read).await;
        finish(&state, started, logged, answer)
    }))
}

/// Metrics, the access log line and the request id, for every answer.
fn finish(
    state: &AppState,
    started: Instant,
    logged: Option<(HttpMethod, String)>,
    (route, mut resp): (&'static str, Response),
) -> Response {
    let status = resp.status().as_u16();
    let elapsed = started.elapsed();
    metrics::record(route, status, elapsed.as_secs_f64());
    let id = next_request_id();
    if let Some((method, path)) = logged {
        let ms = elapsed.as_secs_f64() * 1000.0;
        let rid = id.to_str().unwrap_or("");
        if state.access_log {
            tracing::info!(request_id = rid, %method, path, status, ms, route, "request");
        } else {
            tracing::debug!(request_id = rid, %method, path, status, ms, route, "request");
        }
    }
    resp.headers_mut().insert(X_REQUEST_ID, id);
    resp
}

/// A `/v2/` read (GET or HEAD), with what its answer depends on besides the path: worked out
/// before routing, because a repeat is answered from it alone.
struct V2Read {
    head: bool,
    region: Option<String>,
    /// The unix second the request arrived in.
    second: u64,
    /// Which origins are healthy; `None` when answers are not re-used.
    health: Option<u64>,
}

impl V2Read {
    fn of(state: &AppState, req: &Request, peer: Option<SocketAddr>) -> Option<V2Read> {
        let path = req.uri().path();
        let head = match *req.method() {
            HttpMethod::GET => false,
            HttpMethod::HEAD => true,
            _ => return None,
        };
        if !is_v2(path) {
            return None;
        }
        Some(V2Read {
            head,
            region: state.federation.regions.region(req.headers(), peer),
            second: unix_second(std::time::SystemTime::now()),
            health: state
                .reuse_answers
                .then(|| state.federation.health_mask())
                .flatten(),
        })
    }

    /// The key its answer is kept under, when answers are re-used.
    fn answer_for<'a>(&'a self, path: &'a str) -> Option<recent_answers::AnswerFor<'a>> {
        Some(recent_answers::AnswerFor {
            head: self.head,
            path,
            region: self.region.as_deref(),
            health: self.health?,
        })
    }

    fn reused(&self, path: &str) -> Option<(&'static str, Response)> {
        recent_answers::get(&self.answer_for(path)?, self.second)
    }
}

fn is_v2(path: &str) -> bool {
    path == "/v2" || path.starts_with("/v2/")
}

/// Routes a request; returns a low-cardinality route label for metrics with the response.
/// `read` is the request's [`V2Read`], when it is one.
async fn handle(
    state: &AppState,
    req: Request,
    peer: Option<SocketAddr>,
    read: Option<V2Read>,
) -> (&'static str, Response) {
    let path = req.uri().path();
    if path.starts_with(ORIGIN_PREFIX) {
        let resp = match &state.embedded {
            Some(origin) => origin.serve(req).await,
            None => OciError::not_found().into_response(),
        };
        return ("origin", resp);
    }
    match path {
        "/v1/_ping" | "/v1/_ping/" => return ("v1", v1_ping()),
        "/healthz" => return ("healthz", ops::healthz()),
        "/readyz" => return ("readyz", ops::readyz(state)),
        "/metrics" => return ("metrics", metrics::render(state)),
        _ => {}
    }
    // Only the head from here on: a body is not `Sync`, and no registry read has one.
    let (parts, _body) = req.into_parts();
    let path = parts.uri.path();
    if path == "/token" {
        return ("token", token(state, &parts).await);
    }
    if path.starts_with("/v1/") {
        return ("v1", v1::handle(state, &parts, peer).await);
    }
    let Some(read) = read else {
        if is_v2(path) {
            // Every write (pushes, upload sessions, deletes) gets the same answer, whatever
            // the path.
            let refused = OciError::unsupported(parts.method.as_str()).into_response();
            return ("write", with_api_version(refused));
        }
        return ("other", OciError::not_found().into_response());
    };
    let route = match V2Route::parse(path) {
        Ok(Some(route)) => route,
        Ok(None) => return ("other", OciError::not_found().into_response()),
        Err(e) => return ("invalid", with_api_version(e.into_response())),
    };
    let label = route_label(&route);
    let keepable = match &route {
        V2Route::Blob(name, _) | V2Route::Manifest(name, _) => !state
            .auth
            .as_deref()
            .is_some_and(|a| a.policy.has_private() && a.policy.is_private(name)),
        _ => false,
    };
    let answer = v2_request(state, &parts, &parts.method, route, read.region.as_deref());
    let resp = match within(state.request_timeout, answer).await {
        Some(Ok(r) | Err(r)) => r,
        None => OciError::unavailable("the request timed out; try again").into_response(),
    };
    let resp = with_api_version(resp);
    let answered = matches!(
        resp.status(),
        StatusCode::TEMPORARY_REDIRECT | StatusCode::OK
    );
    if let Some(a) = read.answer_for(path).filter(|_| keepable && answered) {
        recent_answers::keep(&a, read.second, label, &resp);
    }
    (label, resp)
}

/// The unix second of `t`: the unit signed URLs and answers are re-used in.
fn unix_second(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `answer`'s output, or `None` past `limit`. Answered from the cached index, a request completes
/// on its first poll: only one that waits (an index load) pays for a timer.
async fn within<T>(limit: Duration, answer: impl std::future::Future<Output = T>) -> Option<T> {
    let mut answer = std::pin::pin!(answer);
    match futures::poll!(answer.as_mut()) {
        std::task::Poll::Ready(out) => Some(out),
        std::task::Poll::Pending => tokio::time::timeout(limit, answer).await.ok(),
    }
}

fn with_api_version(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    resp
}

fn route_label(r: &V2Route) -> &'static str {
    match r {
        V2Route::Base => "base",
        V2Route::Catalog => "catalog",
        V2Route::Tags(_) => "tags",
        V2Route::Manifest(..) => "manifest",
        V2Route::Blob(..) => "blob",
        V2Route::Referrers(..) => "referrers",
    }
}

/// Which repositories a client may see in the catalog.
type RepoFilter = Box<dyn Fn(&str) -> bool + Sync + Send>;

/// Authorises and answers one `/v2/` request.
async fn v2_request(
    state: &AppState,
    req: &Parts,
    method: &HttpMethod,
    route: V2Route,
    region: Option<&str>,
) -> Result<Response, Response> {
    let authz = req
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let mut url_ttl = state.url_ttl;
    let mut visible: Option<RepoFilter> = None;
    if let Some(auth) = state.auth.as_deref().filter(|a| a.policy.has_private()) {
        let name = match &route {
            V2Route::Tags(n)
            | V2Route::Manifest(n, _)
            | V2Route::Blob(n, _)
            | V2Route::Referrers(n, _) => Some(n),
            V2Route::Base | V2Route::Catalog => None,
        };
        match (&route, name) {
            (V2Route::Base, _) if !auth.authenticated(authz) => {
                return Err(challenge(state, auth, &req.headers, None));
            }
            (_, Some(n)) if auth.policy.is_private(n) => {
                if !auth.allows(authz, n.as_str()) {
                    let scope = format!("repository:{n}:pull");
                    return Err(challenge(state, auth, &req.headers, Some(&scope)));
                }
                url_ttl = url_ttl.min(Duration::from_secs(auth.private_url_ttl));
            }
            (V2Route::Catalog, _) => {
                // Anonymous clients see public repositories; token holders also the private
                // ones the policy lets them pull.
                let user = authz
                    .and_then(|h| h.strip_prefix("Bearer "))
                    .and_then(|t| auth.verify(t.trim()))
                    .map(|(u, _)| u)
                    .filter(|u| !u.is_empty());
                let auth = auth.clone_policy();
                visible = Some(Box::new(move |r: &str| auth.may_pull(user.as_deref(), r)));
            }
            _ => {}
        }
    }
    let catalog_visible = visible
        .as_deref()
        .map(|f| f as &(dyn Fn(&str) -> bool + Sync));
    let r = v2::Request {
        query: req.uri.query(),
        region,
        url_ttl,
        catalog_visible,
    };
    v2::handle(state, method, route, r)
        .await
        .map_err(IntoResponse::into_response)
}

/// This endpoint's external base URL, as clients reach it.
fn external_base(state: &AppState, headers: &HeaderMap) -> String {
    let first = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let (mut scheme, mut host) = (
        if state.tls { "https" } else { "http" }.to_owned(),
        first("host").unwrap_or_else(|| "localhost".into()),
    );
    if state.trust_forwarded {
        if let Some(p) = first("x-forwarded-proto").filter(|p| p == "http" || p == "https") {
            scheme = p;
        }
        if let Some(h) = first("x-forwarded-host") {
            host = h;
        }
    }
    // Only host characters: a hostile Host header must not inject into the challenge.
    host.retain(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c));
    format!("{scheme}://{host}")
}

fn challenge(
    state: &AppState,
    auth: &TokenIssuer,
    headers: &HeaderMap,
    scope: Option<&str>,
) -> Response {
    let realm = auth
        .realm
        .clone()
        .unwrap_or_else(|| format!("{}/token", external_base(state, headers)));
    let mut value = format!("Bearer realm=\"{realm}\",service=\"{}\"", auth.service);
    if let Some(scope) = scope {
        value.push_str(&format!(",scope=\"{scope}\""));
    }
    let mut resp = OciError::new(
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        "authentication required",
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&value) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// `GET /token?service=…&scope=…`: Docker's token endpoint.
async fn token(state: &AppState, req: &Parts) -> Response {
    let Some(auth) = state.auth.clone() else {
        return OciError::not_found().into_response();
    };
    if req.method != HttpMethod::GET && req.method != HttpMethod::HEAD {
        // containerd with credentials first tries the OAuth2 password grant (POST, credentials
        // in the form body). Answering that with an anonymous token would make it proceed with a
        // token that grants nothing; a 405 makes it fall back to GET with Basic credentials.
        let mut resp = OciError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "the token endpoint answers GET with Basic credentials",
        )
        .into_response();
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let scopes: Vec<String> = req
        .uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .filter(|(k, _)| k == "scope")
                .map(|(_, v)| v.into_owned())
                .collect()
        })
        .unwrap_or_default();
    let creds = req
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(TokenIssuer::basic);
    let user = creds.as_ref().map(|(u, _)| u.clone());
    // bcrypt is deliberately slow: keep it off the async workers.
    let issued = tokio::task::spawn_blocking(move || auth.issue(creds, &scopes)).await;
    match issued {
        Ok(Ok(body)) => axum::Json(body).into_response(),
        Ok(Err(TokenError::BadCredentials)) => {
            tracing::warn!(
                user = user.as_deref().unwrap_or(""),
                "token request with wrong credentials"
            );
            OciError::new(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "invalid username or password",
            )
            .into_response()
        }
        Err(_) => OciError::unavailable("token issuing failed").into_response(),
    }
}

fn v1_ping() -> Response {
    let mut resp = (StatusCode::OK, Body::from("true")).into_response();
    let h = resp.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert(
        "x-docker-registry-version",
        HeaderValue::from_static(concat!("static-registry/", env!("CARGO_PKG_VERSION"))),
    );
    h.insert(
        "x-docker-registry-standalone",
        HeaderValue::from_static("true"),
    );
    resp
}

/// Serves until SIGINT/SIGTERM, then drains in-flight requests within the deadline.
pub async fn run(
    listen: SocketAddr,
    state: Arc<AppState>,
    cfg: listener::ListenerConfig,
) -> anyhow::Result<()> {
    for o in &state.federation.origins {
        tracing::info!(origin = %o.name, signer = o.signer.kind(), store = %o.store.describe(), "origin");
    }
    metrics::install();
    listener::serve(listen, state, cfg).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_are_prefix_dash_counter_in_hex() {
        for (p, n) in [
            (0, 0),
            (0xdead_beef, 1),
            (7, 15),
            (u32::MAX, 16),
            (1, u64::MAX),
        ] {
            assert_eq!(
                super::request_id(p, n).to_str().unwrap(),
                format!("{p:08x}-{n:x}")
            );
        }
    }

    #[test]
    fn request_ids_are_unique_across_threads_and_blocks() {
        let ids: Vec<String> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        (0..3000)
                            .map(|_| super::next_request_id().to_str().unwrap().to_owned())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            threads
                .into_iter()
                .flat_map(|t| t.join().unwrap())
                .collect()
        });
        let unique: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "a request id repeats");
    }
}
