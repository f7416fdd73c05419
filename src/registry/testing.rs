//! A fake registry for the unit tests of the client and the `docker://` source: it serves a
//! fixture OCI layout through the pull API and can misbehave on purpose (Basic or Bearer auth
//! with tokens that expire after a few uses, 503s, a 429 with `Retry-After`, a connection dropped
//! mid-blob, blobs redirected to another host, a token body that never ends, responses that
//! trickle and never finish). Everything is counted and logged so tests can assert on what the
//! client did. [`start_hostile_storage`] stands for a storage host that asks for credentials.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;

/// How the fake authenticates.
#[derive(Debug, Clone)]
pub enum FakeAuth {
    Open,
    Basic {
        user: String,
        pass: String,
    },
    /// Tokens from `/token` (Basic-authenticated with these credentials, or anonymous when
    /// `anonymous` is set); each token works for `uses` requests, then gets a 401.
    Bearer {
        user: String,
        pass: String,
        anonymous: bool,
        uses: usize,
    },
}

/// The fake's state, shared with the test.
pub struct FakeState {
    pub auth: FakeAuth,
    /// name of the repository served.
    pub repo: String,
    /// digest -> bytes (blobs and manifests alike, as in an OCI layout).
    pub content: HashMap<String, Vec<u8>>,
    /// tag -> (digest, media type).
    pub tags: HashMap<String, (String, String)>,
    pub tokens: Mutex<HashMap<String, usize>>,
    pub token_requests: AtomicUsize,
    /// Answer this many 503s before serving anything under /v2/<name>/.
    pub fail_503: AtomicU32,
    /// Answer one 429 with `Retry-After: 1` on the next manifest request.
    pub rate_limit_once: AtomicBool,
    /// Drop the connection after this many bytes, once, on the first blob bigger than it.
    pub drop_after: Mutex<Option<usize>>,
    /// Redirect blob requests to this base URL (another server).
    pub redirect_blobs: Mutex<Option<String>>,
    /// Answer token requests with a body that never ends (up to [`ENDLESS_BOUND`] bytes).
    pub endless_token: AtomicBool,
    /// Send manifests and blobs one byte at a time, slowly, never finishing in time.
    pub trickle: AtomicBool,
    /// Bytes of endless or trickled bodies the client made the fake send.
    pub streamed: Arc<AtomicU64>,
    /// "METHOD path auth=<scheme or ->" per request, and the Range header when present.
    pub log: Mutex<Vec<String>>,
}

impl FakeState {
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

/// A running fake registry.
pub struct Fake {
    pub addr: SocketAddr,
    pub state: Arc<FakeState>,
}

/// digest -> bytes.
pub type Content = HashMap<String, Vec<u8>>;
/// tag -> (digest, media type).
pub type Tags = HashMap<String, (String, String)>;

/// Loads an OCI layout directory as the fake's content; its `index.json` ref names become tags.
pub fn load_layout(dir: &Path) -> (Content, Tags) {
    let mut content = HashMap::new();
    for e in std::fs::read_dir(dir.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        content.insert(format!("sha256:{name}"), std::fs::read(e.path()).unwrap());
    }
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let mut tags = HashMap::new();
    for m in index["manifests"].as_array().unwrap() {
        if let Some(t) = m["annotations"]["org.opencontainers.image.ref.name"].as_str() {
            tags.insert(
                t.to_owned(),
                (
                    m["digest"].as_str().unwrap().to_owned(),
                    m["mediaType"].as_str().unwrap().to_owned(),
                ),
            );
        }
    }
    (content, tags)
}

/// Starts a fake serving the fixture layout `fixture` (under fixtures/) as repository `repo`.
pub async fn start(fixture: &str, repo: &str, auth: FakeAuth) -> Fake {
    let (content, tags) = load_layout(&fixture_dir(fixture));
    start_with(content, tags, repo, auth).await
}

/// The directory of a fixture under fixtures/.
pub fn fixture_dir(fixture: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(fixture)
}

/// Starts a fake serving `content` (digest -> bytes) with `tags` (tag -> digest, media type).
pub async fn start_with(content: Content, tags: Tags, repo: &str, auth: FakeAuth) -> Fake {
    let state = Arc::new(FakeState {
        auth,
        repo: repo.to_owned(),
        content,
        tags,
        tokens: Mutex::new(HashMap::new()),
        token_requests: AtomicUsize::new(0),
        fail_503: AtomicU32::new(0),
        rate_limit_once: AtomicBool::new(false),
        drop_after: Mutex::new(None),
        redirect_blobs: Mutex::new(None),
        endless_token: AtomicBool::new(false),
        trickle: AtomicBool::new(false),
        streamed: Arc::new(AtomicU64::new(0)),
        log: Mutex::new(Vec::new()),
    });
    let app = Router::new()
        .route("/v2/", get(ping))
        .route("/v2/{*rest}", get(route))
        .route("/token", get(token))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Fake { addr, state }
}

/// A second server standing for a CDN: serves `/cdn/<digest>` from the same content and records
/// the `Authorization` header each request carried.
pub async fn start_cdn(state: Arc<FakeState>) -> (SocketAddr, Arc<Mutex<Vec<Option<String>>>>) {
    let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let app = Router::new().route(
        "/cdn/{digest}",
        get(
            move |UrlPath(d): UrlPath<String>, headers: HeaderMap| async move {
                s2.lock().unwrap().push(
                    headers
                        .get(header::AUTHORIZATION)
                        .map(|v| v.to_str().unwrap_or("?").to_owned()),
                );
                match state.content.get(&d) {
                    Some(b) => (StatusCode::OK, b.clone()).into_response(),
                    None => StatusCode::NOT_FOUND.into_response(),
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, seen)
}

/// What a hostile storage host saw: the path and `Authorization` header of each request.
pub type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A storage host that wants credentials: every request gets a 401 with a Bearer challenge whose
/// realm is its own `/token`, which hands out a token to anyone. A client that adopted that
/// challenge would send the registry's credentials there; `Seen` records what arrived.
pub async fn start_hostile_storage() -> (SocketAddr, Seen) {
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let app = Router::new().fallback(move |uri: axum::http::Uri, headers: HeaderMap| async move {
        s2.lock().unwrap().push((
            uri.path().to_owned(),
            headers
                .get(header::AUTHORIZATION)
                .map(|v| v.to_str().unwrap_or("?").to_owned()),
        ));
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_owned();
        if uri.path() == "/token" {
            return axum::Json(serde_json::json!({"token": "storage-token"})).into_response();
        }
        (
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                format!(r#"Bearer realm="http://{host}/token",service="storage""#),
            )],
        )
            .into_response()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, seen)
}

/// The most an endless body sends before giving up (so a client without a cap still ends).
pub const ENDLESS_BOUND: u64 = 256 << 20;

/// A body of `prefix` then chunks of `chunk` bytes every `every`, up to `bound` bytes, counted
/// in `streamed` as the client pulls them.
fn endless(
    prefix: &'static [u8],
    chunk: usize,
    every: std::time::Duration,
    bound: u64,
    streamed: Arc<AtomicU64>,
) -> Body {
    let head = futures::stream::once(async move { Ok(bytes::Bytes::from_static(prefix)) });
    let tail = futures::stream::unfold(0u64, move |sent| {
        let streamed = streamed.clone();
        async move {
            if sent >= bound {
                return None;
            }
            if !every.is_zero() {
                tokio::time::sleep(every).await;
            }
            streamed.fetch_add(chunk as u64, Ordering::Relaxed);
            Some((
                Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'a'; chunk])),
                sent + chunk as u64,
            ))
        }
    });
    use futures::StreamExt as _;
    Body::from_stream(head.chain(tail))
}

/// One byte every 20 ms, for at most 10 s: never done within a short timeout.
fn trickle(streamed: Arc<AtomicU64>) -> Body {
    endless(b"", 1, std::time::Duration::from_millis(20), 500, streamed)
}

fn challenge(s: &FakeState, host: &str) -> Response {
    let value = match &s.auth {
        FakeAuth::Basic { .. } => r#"Basic realm="fake""#.to_owned(),
        FakeAuth::Bearer { .. } => format!(
            r#"Bearer realm="http://{host}/token",service="fake",scope="repository:{}:pull""#,
            s.repo
        ),
        FakeAuth::Open => String::new(),
    };
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, value)],
        r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#,
    )
        .into_response()
}

fn basic_of(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let b = base64::engine::general_purpose::STANDARD
        .decode(v.strip_prefix("Basic ")?)
        .ok()?;
    let s = String::from_utf8(b).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

/// Whether the request is authorised (consuming one use of a Bearer token).
fn authorised(s: &FakeState, headers: &HeaderMap) -> bool {
    match &s.auth {
        FakeAuth::Open => true,
        FakeAuth::Basic { user, pass } => basic_of(headers) == Some((user.clone(), pass.clone())),
        FakeAuth::Bearer { .. } => {
            let Some(t) = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
            else {
                return false;
            };
            let mut tokens = s.tokens.lock().unwrap();
            match tokens.get_mut(t) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    true
                }
                _ => false,
            }
        }
    }
}

fn record(s: &FakeState, what: &str, headers: &HeaderMap) {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(' ').next())
        .unwrap_or("-")
        .to_owned();
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|r| format!(" range={r}"))
        .unwrap_or_default();
    s.log
        .lock()
        .unwrap()
        .push(format!("{what} auth={auth}{range}"));
}

async fn ping(State(s): State<Arc<FakeState>>, headers: HeaderMap) -> Response {
    record(&s, "GET /v2/", &headers);
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if authorised(&s, &headers) {
        (StatusCode::OK, "{}").into_response()
    } else {
        challenge(&s, &host)
    }
}

async fn token(
    State(s): State<Arc<FakeState>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    s.token_requests.fetch_add(1, Ordering::SeqCst);
    record(&s, &format!("GET {uri}"), &headers);
    let FakeAuth::Bearer {
        user,
        pass,
        anonymous,
        uses,
    } = &s.auth
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let ok = match basic_of(&headers) {
        Some((u, p)) => &u == user && &p == pass,
        None => *anonymous,
    };
    if !ok {
        return (StatusCode::UNAUTHORIZED, "bad credentials").into_response();
    }
    if s.endless_token.load(Ordering::SeqCst) {
        let body = endless(
            br#"{"token":""#,
            64 << 10,
            std::time::Duration::ZERO,
            ENDLESS_BOUND,
            s.streamed.clone(),
        );
        return ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    }
    let t = format!("tok-{}", rand::random::<u64>());
    s.tokens.lock().unwrap().insert(t.clone(), *uses);
    axum::Json(serde_json::json!({"token": t, "expires_in": 300})).into_response()
}

async fn route(
    State(s): State<Arc<FakeState>>,
    UrlPath(rest): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    record(&s, &format!("GET /v2/{rest}"), &headers);
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if s.fail_503
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    if !authorised(&s, &headers) {
        return challenge(&s, &host);
    }
    let not_found = || StatusCode::NOT_FOUND.into_response();
    if let Some((name, reference)) = rest.split_once("/manifests/") {
        if name != s.repo {
            return not_found();
        }
        if s.rate_limit_once.swap(false, Ordering::SeqCst) {
            return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")]).into_response();
        }
        let (digest, media_type) = match s.tags.get(reference) {
            Some((d, mt)) => (d.clone(), mt.clone()),
            None => (reference.to_owned(), String::new()),
        };
        let Some(bytes) = s.content.get(&digest) else {
            return not_found();
        };
        let mt = if media_type.is_empty() {
            let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
            v["mediaType"]
                .as_str()
                .unwrap_or("application/vnd.oci.image.manifest.v1+json")
                .to_owned()
        } else {
            media_type
        };
        if s.trickle.load(Ordering::SeqCst) {
            return ([(header::CONTENT_TYPE, mt)], trickle(s.streamed.clone())).into_response();
        }
        return (
            [
                (header::CONTENT_TYPE, mt),
                (
                    header::HeaderName::from_static("docker-content-digest"),
                    digest,
                ),
            ],
            bytes.clone(),
        )
            .into_response();
    }
    let Some((name, digest)) = rest.split_once("/blobs/") else {
        return not_found();
    };
    if name != s.repo {
        return not_found();
    }
    let Some(bytes) = s.content.get(digest).cloned() else {
        return not_found();
    };
    if s.trickle.load(Ordering::SeqCst) {
        return (StatusCode::OK, trickle(s.streamed.clone())).into_response();
    }
    if let Some(base) = s.redirect_blobs.lock().unwrap().clone() {
        return (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, format!("{base}/cdn/{digest}"))],
        )
            .into_response();
    }
    let start = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    let drop_at = {
        let mut d = s.drop_after.lock().unwrap();
        match *d {
            Some(n) if start.is_none() && bytes.len() > n => d.take(),
            _ => None,
        }
    };
    if let Some(n) = drop_at {
        // Promise the whole blob, send part of it, then fail the body: the client sees the
        // connection drop mid-blob.
        let head = bytes::Bytes::copy_from_slice(&bytes[..n]);
        use futures::StreamExt as _;
        let stream = futures::stream::iter(vec![Ok::<_, std::io::Error>(head)]).chain(
            futures::stream::once(async {
                // Let the client receive the headers and the first bytes first.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                Err(std::io::Error::other("dropped on purpose"))
            }),
        );
        return Response::builder()
            .header(header::CONTENT_LENGTH, bytes.len())
            .body(Body::from_stream(stream))
            .unwrap();
    }
    match start {
        Some(n) if n < bytes.len() => Response::builder()
            .status(StatusCode::PARTIAL_CONTENT)
            .header(
                header::CONTENT_RANGE,
                format!("bytes {n}-{}/{}", bytes.len() - 1, bytes.len()),
            )
            .body(Body::from(bytes[n..].to_vec()))
            .unwrap(),
        _ => (StatusCode::OK, bytes).into_response(),
    }
}
