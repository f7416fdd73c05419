//! Hostile peers for the registry client, all on loopback: a proxy in front of a real upstream
//! that redirects blob downloads to a storage host, a storage host that answers with its own
//! Bearer challenge, the token realm that challenge names, and a registry whose token service
//! streams a body that never ends. Each records what reached it, so tests can assert that no
//! credential did. Each runs on its own thread and runtime, stopped on drop.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;

/// One request as a peer saw it: method, path and every header (name, value).
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Seen {
    fn of(method: &Method, uri: &Uri, headers: &HeaderMap) -> Seen {
        Seen {
            method: method.to_string(),
            path: uri.path().to_owned(),
            headers: headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub type Log = Arc<Mutex<Vec<Seen>>>;

/// A server running `app` on a loopback port until dropped.
pub struct Peer {
    pub addr: SocketAddr,
    pub seen: Log,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Peer {
    fn spawn(app: impl FnOnce(SocketAddr, Log) -> Router + Send + 'static) -> Peer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let seen: Log = Arc::new(Mutex::new(Vec::new()));
        let router = app(addr, seen.clone());
        let (tx, thread) = super::serve_in_thread(listener, router);
        Peer {
            addr,
            seen,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// A storage host: records every request and answers 401 with a Bearer challenge whose
    /// realm is `realm` (a client that adopts it would send the registry's credentials there).
    pub fn storage(realm: &str) -> Peer {
        let realm = realm.to_owned();
        Peer::spawn(move |_, seen| {
            Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap| {
                let realm = realm.clone();
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push(Seen::of(&method, &uri, &headers));
                    (
                        StatusCode::UNAUTHORIZED,
                        [(
                            "www-authenticate",
                            format!(
                                r#"Bearer realm="{realm}",service="storage",scope="blob:read""#
                            ),
                        )],
                        r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#,
                    )
                        .into_response()
                }
            })
        })
    }

    /// A token realm that records every request and gives anyone the token `storage-token`.
    pub fn realm() -> Peer {
        Peer::spawn(|_, seen| {
            Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push(Seen::of(&method, &uri, &headers));
                    axum::Json(serde_json::json!({"token": "storage-token", "expires_in": 300}))
                }
            })
        })
    }

    /// A proxy in front of `upstream`: forwards every request as it came (credentials
    /// included: it stands for the registry), except blob GETs and HEADs, which it redirects
    /// (307) to `http://{storage}/blobs/<digest>`. Records what the client sent it.
    pub fn redirecting_proxy(upstream: SocketAddr, storage: SocketAddr) -> Peer {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("proxy client");
        Peer::spawn(move |_, seen| {
            Router::new().fallback(
                move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                    let seen = seen.clone();
                    let http = http.clone();
                    async move {
                        seen.lock().unwrap().push(Seen::of(&method, &uri, &headers));
                        let path = uri.path().to_owned();
                        if matches!(method, Method::GET | Method::HEAD) {
                            if let Some((_, digest)) = path.split_once("/blobs/") {
                                return (
                                    StatusCode::TEMPORARY_REDIRECT,
                                    [("location", format!("http://{storage}/blobs/{digest}"))],
                                )
                                    .into_response();
                            }
                        }
                        forward(&http, upstream, method, &uri, headers, body).await
                    }
                },
            )
        })
    }

    /// A registry whose `/v2/` asks for a Bearer token from its own `/token`, which answers
    /// 200 with a JSON body that never ends (up to 256 MiB, so a client without a cap still
    /// stops). `streamed` counts the body bytes the client pulled.
    pub fn endless_token_registry(streamed: Arc<AtomicU64>) -> Peer {
        Peer::spawn(move |addr, seen| {
            Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap| {
                let seen = seen.clone();
                let streamed = streamed.clone();
                async move {
                    seen.lock().unwrap().push(Seen::of(&method, &uri, &headers));
                    if uri.path() != "/token" {
                        return (
                            StatusCode::UNAUTHORIZED,
                            [(
                                "www-authenticate",
                                format!(r#"Bearer realm="http://{addr}/token",service="endless""#),
                            )],
                        )
                            .into_response();
                    }
                    const CHUNK: usize = 64 << 10;
                    let head = futures::stream::once(async {
                        Ok::<_, std::io::Error>(Bytes::from_static(br#"{"token":""#))
                    });
                    let tail =
                        futures::stream::iter(0..(256u64 << 20) / CHUNK as u64).map(move |_| {
                            streamed.fetch_add(CHUNK as u64, Ordering::Relaxed);
                            Ok(Bytes::from(vec![b'a'; CHUNK]))
                        });
                    use futures::StreamExt as _;
                    (
                        [("content-type", "application/json")],
                        Body::from_stream(head.chain(tail)),
                    )
                        .into_response()
                }
            })
        })
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends the request on to `upstream` and hands back its answer.
async fn forward(
    http: &reqwest::Client,
    upstream: SocketAddr,
    method: Method,
    uri: &Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut req = http.request(method, format!("http://{upstream}{pq}"));
    for (k, v) in &headers {
        if !matches!(
            k.as_str(),
            "host" | "content-length" | "connection" | "transfer-encoding"
        ) {
            req = req.header(k, v);
        }
    }
    let resp = match req.body(body).send().await {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let mut out = Response::builder().status(resp.status().as_u16());
    for (k, v) in resp.headers() {
        if !matches!(
            k.as_str(),
            "content-length" | "connection" | "transfer-encoding"
        ) {
            out = out.header(k.as_str(), v.as_bytes());
        }
    }
    let bytes = resp.bytes().await.unwrap_or_default();
    out.body(Body::from(bytes)).expect("response")
}
