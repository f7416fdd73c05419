//! `serve`: the stateless redirecting endpoint.
//!
//! It answers `/v2/` and `/v1/_ping` itself, answers HEADs from the cached repository index, and
//! redirects every content request to a signed URL. With a local store it also mounts the
//! embedded origin that those URLs point at. Operational routes (`/healthz`, `/readyz`,
//! `/metrics`) and the token endpoint (`/token`, with private repositories) live beside the API.
//!
//! docs/request-handling.md follows a request from [`dispatch`] to its answer, step by step (the
//! steps are numbered in the code too); `request_table.rs` is the same as a table test.

pub mod client_limits;
pub mod cors;
pub mod error;
pub mod h2_idle;
pub mod listener;
pub mod metrics;
pub mod ops;
pub mod per_second;
pub mod recent_answers;
pub mod recent_urls;
#[cfg(test)]
mod request_table;
pub mod route;
pub mod send_floor;
mod token;
pub mod v1;
pub mod v2;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method as HttpMethod, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;

use crate::auth::TokenIssuer;
use crate::federation::Federation;
use crate::sign::embedded::ORIGIN_PREFIX;

use crate::federation::origin::EmbeddedOrigin;
use error::OciError;
use recent_answers::Reuse;
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
    /// Mirror namespaces and the copier, when `[mirror]` names upstreams (docs/mirror.md).
    pub mirror: Option<Arc<crate::federation::mirror::Mirror>>,
    /// The web page (`[ui]`, docs/ui.md), unless disabled.
    pub ui: Option<Arc<crate::ui::Ui>>,
    /// CORS for the registry API (`[serve] cors_origins`), when configured.
    pub cors: Option<cors::Cors>,
    /// The last `check` of every origin (run at startup), for `/readyz`.
    pub checks: Arc<std::sync::RwLock<Option<serde_json::Value>>>,
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
/// docs/request-handling.md follows a request through here, step by step.
///
/// A repeat is answered before any future exists: the boxed future of a whole request is
/// several KiB to allocate and move, more than the repeat costs (docs/performance.md).
pub(crate) fn dispatch(state: &Arc<AppState>, req: Request, peer: Option<SocketAddr>) -> Answer {
    let started = Instant::now();
    let logged = (state.access_log || tracing::enabled!(tracing::Level::DEBUG))
        .then(|| (req.method().clone(), req.uri().path().to_owned()));
    // CORS (off unless configured): the origin an answer names, for allowed `/v2/` requests.
    let cors = state
        .cors
        .as_ref()
        .filter(|_| is_v2(req.uri().path()))
        .and_then(|c| c.allow(req.headers()));
    let logged = Logged { line: logged, cors };
    // 1. A client over its rate is refused before anything else is spent on it.
    if let Some(limits) = &state.client_limits {
        if let Some(refused) = limits.check(&state.federation.regions, &req, peer) {
            let refused = ("limited", with_api_version(refused));
            return futures::future::Either::Left(std::future::ready(finish(
                state, started, logged, refused,
            )));
        }
    }
    if let Some(origin) = &logged.cors {
        if cors::is_preflight(req.method(), req.headers()) {
            let answer = ("base", cors::preflight(origin.clone()));
            return futures::future::Either::Left(std::future::ready(finish(
                state, started, logged, answer,
            )));
        }
    }
    // 2. A repeat of a request whose handler declared its answer reusable (step 6) gets that
    //    answer again, without routing: it is keyed on everything the answer was declared to
    //    depend on.
    let read = V2Read::of(state, &req, peer);
    let reused = read.as_ref().and_then(|r| r.reused(target(req.uri())));
    if let Some(answer) = reused {
        return futures::future::Either::Left(std::future::ready(finish(
            state, started, logged, answer,
        )));
    }
    // 3. Everything else is routed and answered by a handler.
    let state = state.clone();
    futures::future::Either::Right(Box::pin(async move {
        let answer = handle(&state, req, peer, read).await;
        finish(&state, started, logged, answer)
    }))
}

/// The request target a kept answer is filed under: the raw path and query.
fn target(uri: &axum::http::Uri) -> &str {
    uri.path_and_query().map_or("/", |pq| pq.as_str())
}

/// What [`finish`] adds to an answer besides metrics: the access log line's method and path (when
/// logged) and the CORS origin (when allowed).
struct Logged {
    line: Option<(HttpMethod, String)>,
    cors: Option<HeaderValue>,
}

/// Metrics, the access log line, CORS and the request id, for every answer.
fn finish(
    state: &AppState,
    started: Instant,
    logged: Logged,
    (route, mut resp): (&'static str, Response),
) -> Response {
    if let Some(origin) = logged.cors {
        cors::decorate(&mut resp, origin);
    }
    let logged = logged.line;
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

/// A `/v2/` read (GET or HEAD), with what a reusable answer to it depends on besides its
/// target (path and query): worked out before routing, because a repeat is answered from it alone.
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

    /// The key an answer to `target` is kept under, when answers are re-used.
    fn answer_for<'a>(&'a self, target: &'a str) -> Option<recent_answers::AnswerFor<'a>> {
        Some(recent_answers::AnswerFor {
            head: self.head,
            target,
            region: self.region.as_deref(),
            health: self.health?,
        })
    }

    fn reused(&self, target: &str) -> Option<(&'static str, Response)> {
        recent_answers::get(&self.answer_for(target)?, self.second)
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
    // 4. Routes outside the registry API, each answered by its own module.
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
        return ("token", token::token(state, &parts).await);
    }
    if path.starts_with("/v1/") {
        return ("v1", v1::handle(state, &parts, peer).await);
    }
    let Some(read) = read else {
        if is_v2(path) {
            // Every write (pushes, upload sessions, deletes) gets the same answer, whatever
            // the path: this registry is read-only.
            let refused = OciError::unsupported(parts.method.as_str()).into_response();
            return ("write", with_api_version(refused));
        }
        // The web page, under its prefix (docs/ui.md): whatever the registry does not answer.
        if let Some(ui) = state.ui.as_ref().filter(|u| u.owns(path)) {
            return ("ui", ui.handle(&parts).await);
        }
        return ("other", OciError::not_found().into_response());
    };
    // 5. A `/v2/` read: parsed (a malformed path is refused, never redirected), then answered
    //    by its handler, which also says whether the answer may be re-used.
    let route = match V2Route::parse(path) {
        Ok(Some(route)) => route,
        Ok(None) => return ("other", OciError::not_found().into_response()),
        Err(e) => return ("invalid", with_api_version(e.into_response())),
    };
    let label = route_label(&route);
    let answer = v2::handle(state, &parts, route, read.region.as_deref());
    let (resp, reuse) = within(state.request_timeout, answer)
        .await
        .unwrap_or_else(|| {
            let timed_out = OciError::unavailable("the request timed out; try again");
            (timed_out.into_response(), Reuse::Never)
        });
    let resp = with_api_version(resp);
    if reuse == Reuse::ForSameRequest {
        if let Some(a) = read.answer_for(target(&parts.uri)) {
            recent_answers::keep(&a, read.second, label, &resp);
        }
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
