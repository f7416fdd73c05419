//! The S3 harness: a real `s3s-fs` (which enforces SigV4 on signed headers and on presigned URLs)
//! on a free loopback port, the `static-registry` binary pointed at it through a config file and
//! the standard AWS environment variables, and a counting TCP proxy that records every HTTP
//! request line sent through it (to measure what `serve` and `publish` ask of S3).
//!
//! Everything is killed on drop. Every run of the binary keeps its stdout and stderr under the
//! world's log directory, so a test can grep all of it (and every file `s3s-fs` stored) for the
//! secret key with [`S3World::assert_no_secret_leaked`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::world::files_containing;
#[allow(unused_imports)] // Not every test binary names both.
pub use super::world::{fetch, Serve as S3Serve, World};
use super::{blocking_get_status, spawn_on_free_port};

/// The access key id every test server accepts.
pub const ACCESS_KEY: &str = "AKIDSTATICREGISTRYTEST";
/// The secret key: distinctive (so a grep for it cannot match anything by chance) and with the
/// `/` and `+` real AWS secrets contain.
pub const SECRET_KEY: &str = "srTest/Secret+9Qx7vLw2Nd4-never-printed";
/// The bucket every world creates (s3s-fs wants 3 to 63 characters).
pub const BUCKET: &str = "registry-test";
/// The key prefix the layout lives under.
pub const PREFIX: &str = "layout/v1";

/// `s3://BUCKET/PREFIX`.
pub fn store_location() -> String {
    format!("s3://{BUCKET}/{PREFIX}")
}

/// Where `s3s-fs` is: on PATH, or in cargo's bin directory (`cargo install` puts it there).
pub fn s3s_fs_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("s3s-fs"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|c| c.join("bin").join("s3s-fs"));
    on_path
        .into_iter()
        .chain(cargo_bin)
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "required tool `s3s-fs` is not installed (looked on PATH and in ~/.cargo/bin). \
                 Run the suite with scripts/test.sh, or: \
                 cargo install s3s-fs --version 0.14.1 --locked --features binary"
            )
        })
}

// ---------------------------------------------------------------------------------------------
// s3s-fs
// ---------------------------------------------------------------------------------------------

/// A running `s3s-fs` serving `data/` (with [`BUCKET`] pre-created) on a free port; killed on
/// drop.
pub struct S3sFs {
    child: Child,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl S3sFs {
    pub fn start() -> S3sFs {
        let exe = s3s_fs_binary();
        let dir = tempfile::Builder::new()
            .prefix("sr-s3s-")
            .tempdir()
            .expect("s3s-fs temp dir");
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join(BUCKET)).expect("create the bucket directory");
        let log_path = dir.path().join("s3s-fs.log");
        // Any HTTP answer (an unsigned request gets 403) means it listens.
        let (child, addr) = spawn_on_free_port(
            "s3s-fs",
            &log_path,
            |port| {
                let mut cmd = Command::new(&exe);
                cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
                    .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
                    .arg(&data);
                cmd
            },
            |addr| blocking_get_status(addr, "/").is_some(),
        );
        S3sFs { child, addr, dir }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The directory s3s-fs stores everything in (buckets as directories, plus its metadata).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The file holding the object at layout key `key` (s3s-fs stores objects as plain files).
    pub fn object_file(&self, key: &str) -> PathBuf {
        self.data_dir().join(BUCKET).join(PREFIX).join(key)
    }
}

impl Drop for S3sFs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The counting proxy
// ---------------------------------------------------------------------------------------------

/// One HTTP request that went through the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxiedRequest {
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query string (without `?`), possibly empty.
    pub query: String,
    /// `If-Match: …` or `If-None-Match: …`, as sent, when the request had either.
    pub condition: Option<String>,
    /// The status code of the answer, once it started (clients here never pipeline, so the
    /// first bytes from the server after a request are its answer).
    pub status: Option<u16>,
}

impl ProxiedRequest {
    /// The path relative to the layout root (`/BUCKET/PREFIX/` stripped), when it is under it.
    pub fn key(&self) -> Option<&str> {
        self.path.strip_prefix(&format!("/{BUCKET}/{PREFIX}/"))
    }
}

#[derive(Default)]
struct ProxyState {
    requests: Mutex<Vec<ProxiedRequest>>,
    /// Things the request parser could not follow (chunked bodies, garbage): counting would no
    /// longer be exact, so tests assert there are none.
    errors: Mutex<Vec<String>>,
    connections: AtomicUsize,
    /// Held from a request's head to the first byte of its answer, when linearizing.
    gate: Option<Arc<tokio::sync::Mutex<()>>>,
}

/// A TCP proxy in front of an upstream (s3s-fs) that forwards bytes unchanged both ways and
/// records every HTTP/1.1 request the client side sends, with the status it got. It runs on its
/// own small tokio runtime, shut down on drop.
pub struct CountingProxy {
    pub addr: SocketAddr,
    state: Arc<ProxyState>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl CountingProxy {
    /// A proxy that only observes.
    pub fn start(upstream: SocketAddr) -> CountingProxy {
        Self::spawn(upstream, false)
    }

    /// A proxy that also lets one request at a time reach the server, from the end of its head
    /// to the first byte of its answer.
    ///
    /// Why: s3s-fs checks `If-Match`/`If-None-Match` and then writes, without a lock, and a GET
    /// opens the file before it reads the stored ETag; so under concurrency two conditional PUTs
    /// can both pass, and a GET can return old bytes with the new ETag. Real S3 (and R2) make
    /// each request atomic; serializing request handling restores that, so a race test checks
    /// the publisher's compare-and-swap rather than s3s-fs's locking. Bodies still stream
    /// concurrently, and the answers are s3s-fs's own (including its 412s).
    pub fn start_linearizing(upstream: SocketAddr) -> CountingProxy {
        Self::spawn(upstream, true)
    }

    fn spawn(upstream: SocketAddr, linearize: bool) -> CountingProxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("proxy runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(ProxyState {
            gate: linearize.then(|| Arc::new(tokio::sync::Mutex::new(()))),
            ..ProxyState::default()
        });
        let st = state.clone();
        runtime.spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                st.connections.fetch_add(1, Ordering::Relaxed);
                // A connection ending (even by a reset) is normal; parser errors are recorded.
                tokio::spawn(relay(client, upstream, st.clone()));
            }
        });
        CountingProxy {
            addr,
            state,
            runtime: Some(runtime),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request seen so far, in arrival order.
    pub fn requests(&self) -> Vec<ProxiedRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Forgets the requests seen so far.
    pub fn clear(&self) {
        self.state.requests.lock().unwrap().clear();
    }

    /// Parser errors; a test that counts must assert this is empty.
    pub fn errors(&self) -> Vec<String> {
        self.state.errors.lock().unwrap().clone()
    }

    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::Relaxed)
    }

    /// Requests counted by `METHOD PATH` (query left out), for reports and assertions.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for r in self.requests() {
            *m.entry(format!("{} {}", r.method, r.path)).or_default() += 1;
        }
        m
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// The request waiting for its answer on one connection: its index in the log, and the gate
/// while linearizing.
type Awaiting = Arc<Mutex<Option<(usize, Option<tokio::sync::OwnedMutexGuard<()>>)>>>;

async fn relay(client: tokio::net::TcpStream, upstream: SocketAddr, state: Arc<ProxyState>) {
    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
        return;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let awaiting: Awaiting = Arc::default();
    let up = async {
        let mut parser = RequestParser::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = cr.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            let mut seen = Vec::new();
            if let Err(e) = parser.feed(&buf[..n], &mut seen) {
                state.errors.lock().unwrap().push(e);
            }
            if !seen.is_empty() {
                // Without pipelining the previous answer has started; never wait on ourselves.
                awaiting.lock().unwrap().take();
                let guard = match &state.gate {
                    Some(gate) => Some(gate.clone().lock_owned().await),
                    None => None,
                };
                // Recorded before forwarding, so a request is counted before its answer exists.
                let mut log = state.requests.lock().unwrap();
                log.extend(seen);
                *awaiting.lock().unwrap() = Some((log.len() - 1, guard));
            }
            sw.write_all(&buf[..n]).await?;
        }
        sw.shutdown().await
    };
    let down = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = sr.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            // Taken in its own statement: `up` locks the log before `awaiting`, never after.
            let answered = awaiting.lock().unwrap().take();
            if let Some((index, guard)) = answered {
                let status = std::str::from_utf8(&buf[..n.min(12)])
                    .ok()
                    .and_then(|s| s.strip_prefix("HTTP/1.1 ").or(s.strip_prefix("HTTP/1.0 ")))
                    .and_then(|s| s.get(..3))
                    .and_then(|s| s.parse().ok());
                if let Some(r) = state.requests.lock().unwrap().get_mut(index) {
                    r.status = status;
                }
                drop(guard);
            }
            cw.write_all(&buf[..n]).await?;
        }
        cw.shutdown().await
    };
    let _: (std::io::Result<()>, std::io::Result<()>) = tokio::join!(up, down);
    // Dropping `awaiting` releases the gate if the answer never came.
}

/// Follows an HTTP/1.1 request stream: request heads, then `Content-Length` bodies skipped.
#[derive(Default)]
pub struct RequestParser {
    pending: Vec<u8>,
    body_left: u64,
    /// After an error the stream can no longer be followed; everything else is ignored.
    broken: bool,
}

impl RequestParser {
    /// Consumes the next bytes of the stream, appending each request head completed to `out`.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<ProxiedRequest>) -> Result<(), String> {
        if self.broken {
            return Ok(());
        }
        self.pending.extend_from_slice(data);
        loop {
            if self.body_left > 0 {
                let n = self.body_left.min(self.pending.len() as u64) as usize;
                self.pending.drain(..n);
                self.body_left -= n as u64;
                if self.pending.is_empty() {
                    return Ok(());
                }
                continue;
            }
            // Stray CRLFs between requests are allowed (RFC 9112 §2.2).
            while self.pending.starts_with(b"\r\n") {
                self.pending.drain(..2);
            }
            let Some(end) = self.pending.windows(4).position(|w| w == b"\r\n\r\n") else {
                if self.pending.len() > 64 * 1024 {
                    self.broken = true;
                    return Err("request head longer than 64 KiB".into());
                }
                return Ok(());
            };
            let head = String::from_utf8_lossy(&self.pending[..end]).into_owned();
            self.pending.drain(..end + 4);
            let mut lines = head.split("\r\n");
            let line = lines.next().unwrap_or_default();
            let mut parts = line.split(' ');
            let (Some(method), Some(target), Some(version)) =
                (parts.next(), parts.next(), parts.next())
            else {
                self.broken = true;
                return Err(format!("not a request line: {line:?}"));
            };
            if !version.starts_with("HTTP/1.") {
                self.broken = true;
                return Err(format!("not HTTP/1.x: {line:?}"));
            }
            let mut length = 0u64;
            let mut condition = None;
            for h in lines {
                let Some((k, v)) = h.split_once(':') else {
                    continue;
                };
                let (k, v) = (k.trim(), v.trim());
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.parse().map_err(|_| format!("bad Content-Length {v:?}"))?;
                } else if k.eq_ignore_ascii_case("transfer-encoding") {
                    self.broken = true;
                    return Err(format!("cannot follow Transfer-Encoding {v:?} ({line})"));
                } else if k.eq_ignore_ascii_case("if-match") {
                    condition = Some(format!("If-Match: {v}"));
                } else if k.eq_ignore_ascii_case("if-none-match") {
                    condition = Some(format!("If-None-Match: {v}"));
                }
            }
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            out.push(ProxiedRequest {
                method: method.to_owned(),
                path: path.to_owned(),
                query: query.to_owned(),
                condition,
                status: None,
            });
            self.body_left = length;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The binary against a bucket
// ---------------------------------------------------------------------------------------------

/// What goes into a config file besides `store` and the `[s3]` endpoint.
#[derive(Default, Clone)]
pub struct ConfigExtra<'a> {
    /// Lines added to the `[s3]` section (e.g. `multipart_threshold = 5242880`).
    pub s3: &'a str,
    /// Whole sections after it (`[serve]`, `[[origins]]`).
    pub tail: &'a str,
}

/// An s3s-fs with the bucket, and a [`World`] for config files and the logs of every run of the
/// binary, with the test credentials in its environment.
pub struct S3World {
    pub s3: S3sFs,
    world: World,
}

impl std::ops::Deref for S3World {
    type Target = World;
    fn deref(&self) -> &World {
        &self.world
    }
}

impl Default for S3World {
    fn default() -> Self {
        Self::start()
    }
}

impl S3World {
    pub fn start() -> S3World {
        let s3 = S3sFs::start();
        let world = World::new(
            "sr-s3world-",
            &[
                "AWS_PROFILE",
                "AWS_SESSION_TOKEN",
                "AWS_REGION",
                "AWS_DEFAULT_REGION",
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                "AWS_ROLE_ARN",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            ],
            &[
                ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
                ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
                ("AWS_EC2_METADATA_DISABLED", "true"),
            ],
        );
        S3World { s3, world }
    }

    /// Writes `NAME.toml`: `store = "s3://BUCKET/PREFIX"` and an `[s3]` section addressing
    /// `endpoint` path-style in `us-east-1`, plus `extra`.
    pub fn config(&self, name: &str, endpoint: &str, extra: &ConfigExtra<'_>) -> PathBuf {
        self.write_config(
            name,
            &format!(
                "store = \"{store}\"\n\n[s3]\nendpoint = \"{endpoint}\"\npath_style = true\nregion = \"us-east-1\"\n{s3}\n\n{tail}\n",
                store = store_location(),
                s3 = extra.s3,
                tail = extra.tail,
            ),
        )
    }

    /// The plain config: the bucket on s3s-fs directly.
    pub fn direct_config(&self) -> PathBuf {
        self.config("direct", &self.s3.endpoint(), &ConfigExtra::default())
    }

    /// Every file this world's runs logged, and every file s3s-fs stored (objects and its own
    /// metadata), that contains the secret key, raw or percent-encoded; and how many files were
    /// searched.
    pub fn files_with_secret(&self) -> (Vec<PathBuf>, usize) {
        let encoded: String = url::form_urlencoded::byte_serialize(SECRET_KEY.as_bytes()).collect();
        let needles = [SECRET_KEY.as_bytes(), encoded.as_bytes()];
        files_containing(&[self.log_dir(), self.s3.data_dir()], &needles)
    }

    /// Asserts [`S3World::files_with_secret`] finds nothing; returns how many files were searched.
    pub fn assert_no_secret_leaked(&self) -> usize {
        let (found, searched) = self.files_with_secret();
        assert!(found.is_empty(), "the secret key appears in: {found:#?}");
        searched
    }
}
