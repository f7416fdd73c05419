//! The integration-test harness: runs the real `static-registry` binary, real clients (skopeo,
//! podman, containerd's `ctr`) and raw HTTP against it.
//!
//! Every helper that needs an external tool fails the test (never skips it) when the tool is
//! missing: `scripts/test.sh` installs them. Everything a test creates lives in its own temporary
//! directory and on its own port, so tests run in parallel; servers and daemons are killed on drop.

// Each test binary uses a different part of the harness.
#![allow(dead_code)]

pub mod azurite;
pub mod browser;
pub mod checks;
pub mod clients;
pub mod docker;
pub mod download;
pub mod fake_gcs;
pub mod fixtures;
pub mod hostile;
pub mod http;
pub mod lb;
pub mod load;
pub mod nginx;
pub mod pki;
pub mod private_world;
pub mod s3;
pub mod upstream;
pub mod world;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::Digest as _;

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_static-registry")
}

/// The repository root (fixtures are relative to it).
pub fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// The hex part of a `sha256:<hex>` digest.
pub fn hex_of(digest: &str) -> &str {
    digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("not a sha256 digest: {digest}"))
}

/// Where `name` is on PATH (the first match), if anywhere.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// Fails the test with a clear message when a required tool is not installed; returns its path.
pub fn require_tool(name: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|| {
        panic!(
            "required tool `{name}` is not installed (not on PATH). Run the suite with \
             scripts/test.sh, which installs skopeo, podman, containerd, umoci, nginx, \
             docker-registry, dockerd and docker (docker.io), busybox (busybox-static), wrk and \
             s3s-fs."
        )
    })
}

/// Renders a finished command for an assertion message.
pub fn describe_output(what: &str, out: &Output) -> String {
    format!(
        "{what}: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Makes a publish source absolute: `oci:fixtures/oci-single:1.0` ->
/// `oci:/…/fixtures/oci-single:1.0`. Absolute paths are left alone.
pub fn absolute_source(source: &str) -> String {
    let (transport, rest) = source
        .split_once(':')
        .unwrap_or_else(|| panic!("source without a transport: {source}"));
    if rest.starts_with('/') {
        return source.to_owned();
    }
    format!("{transport}:{}", manifest_dir().join(rest).display())
}

/// Runs `static-registry publish SOURCE --store STORE --tag T...` and returns its output,
/// whatever the exit status. `source` paths may be relative to the repository root.
pub fn try_publish(store: &Path, source: &str, tags: &[&str]) -> Output {
    try_publish_with(store, source, tags, &[])
}

/// [`try_publish`] with extra flags (e.g. `--compression zstd`).
pub fn try_publish_with(store: &Path, source: &str, tags: &[&str], extra: &[&str]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.arg("publish")
        .arg(absolute_source(source))
        .arg("--store")
        .arg(store)
        .arg("--quiet");
    for t in tags {
        cmd.arg("--tag").arg(t);
    }
    cmd.args(extra);
    cmd.env_remove("STATIC_REGISTRY_CONFIG")
        .env_remove("STATIC_REGISTRY_STORE")
        .env("NO_COLOR", "1")
        .output()
        .expect("run static-registry publish")
}

/// Publishes and asserts success (stderr is shown on failure). Returns the output.
pub fn publish(store: &Path, source: &str, tags: &[&str]) -> Output {
    publish_with(store, source, tags, &[])
}

/// [`publish`] with extra flags.
pub fn publish_with(store: &Path, source: &str, tags: &[&str], extra: &[&str]) -> Output {
    let out = try_publish_with(store, source, tags, extra);
    assert!(
        out.status.success(),
        "{}",
        describe_output(&format!("publish {source} {tags:?} {extra:?}"), &out)
    );
    out
}

/// Runs `static-registry verify --store STORE [ARGS...]`.
pub fn verify(store: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("verify")
        .arg("--store")
        .arg(store)
        .args(args)
        .env_remove("STATIC_REGISTRY_CONFIG")
        .env_remove("STATIC_REGISTRY_STORE")
        .env("NO_COLOR", "1")
        .output()
        .expect("run static-registry verify")
}

/// A port that was free a moment ago (bind to port 0, then release it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// Polls `ready` every 20 ms until it returns `Some`, panicking with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut ready: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = ready() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A request over a fresh blocking connection (for synchronous tests and readiness polls).
pub fn blocking_request(addr: SocketAddr, method: &str, path: &str) -> Option<http::RawResponse> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    http::parse(&buf, method == "HEAD").ok()
}

/// The status code of a `GET path` on `addr`.
pub fn blocking_get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    blocking_request(addr, "GET", path).map(|r| r.status)
}

/// How a just-spawned process came up (see [`wait_started`]).
pub enum Startup {
    /// It answered as ready.
    Ready,
    /// It exited first.
    Exited(std::process::ExitStatus),
    /// It was not ready within 30 s, and has been killed.
    TimedOut,
}

/// Polls a just-spawned `child` every 20 ms until `ready` says it is ready, it exits, or 30 s
/// pass (it is then killed). `what` names it in a failed poll's panic.
pub fn wait_started(child: &mut Child, what: &str, mut ready: impl FnMut() -> bool) -> Startup {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child
            .try_wait()
            .unwrap_or_else(|e| panic!("poll {what}: {e:?}"))
        {
            return Startup::Exited(status);
        }
        if ready() {
            return Startup::Ready;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Startup::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts a server on a free loopback port: `command(port)` builds it (its output goes to
/// `log_path`), `ready(addr)` says when it answers. Retries on another port when it exits first
/// (someone took the port between the probe and the bind); panics with its log otherwise.
pub fn spawn_on_free_port(
    what: &str,
    log_path: &Path,
    command: impl Fn(u16) -> Command,
    ready: impl Fn(SocketAddr) -> bool,
) -> (Child, SocketAddr) {
    let mut last_log = String::new();
    for _attempt in 0..5 {
        let port = free_port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let log = std::fs::File::create(log_path).expect("server log");
        let mut child = command(port)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        match wait_started(&mut child, what, || ready(addr)) {
            Startup::Ready => return (child, addr),
            Startup::Exited(status) => {
                last_log = format!(
                    "exited {status}: {}",
                    std::fs::read_to_string(log_path).unwrap_or_default()
                );
            }
            Startup::TimedOut => panic!(
                "{what} did not answer on {addr} within 30 s:\n{}",
                std::fs::read_to_string(log_path).unwrap_or_default()
            ),
        }
    }
    panic!("could not start {what} on a free port: {last_log}");
}

/// A running `static-registry serve` on a free loopback port; killed on drop.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts `serve --store STORE --listen 127.0.0.1:PORT EXTRA...` and waits until `GET /v2/`
    /// answers 200.
    pub fn start(store: &Path, extra: &[&str]) -> Server {
        Self::start_with_env(store, extra, &[])
    }

    /// [`Server::start`] with extra environment variables (upstream credentials for mirror mode).
    pub fn start_with_env(store: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().expect("server temp dir");
        let mut last_log = String::new();
        for attempt in 0..5 {
            let port = free_port();
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let log_path = dir.path().join(format!("serve-{attempt}.log"));
            let log = std::fs::File::create(&log_path).expect("server log file");
            let mut child = Command::new(bin())
                .arg("serve")
                .arg("--store")
                .arg(store)
                .arg("--listen")
                .arg(addr.to_string())
                .args(extra)
                .env_remove("STATIC_REGISTRY_CONFIG")
                .env_remove("STATIC_REGISTRY_STORE")
                .env_remove("STATIC_REGISTRY_LISTEN")
                .env("RUST_LOG", "static_registry=debug,info")
                .env("NO_COLOR", "1")
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone log handle"))
                .stderr(log)
                .spawn()
                .expect("spawn static-registry serve");
            match wait_started(&mut child, "server", || {
                blocking_get_status(addr, "/v2/") == Some(200)
            }) {
                Startup::Ready => {
                    return Server {
                        child,
                        addr,
                        log_path,
                        _dir: dir,
                    }
                }
                Startup::Exited(status) => {
                    last_log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    if last_log.contains("cannot listen") {
                        // Someone took the port between our probe and the bind: try another.
                        continue;
                    }
                    panic!("static-registry serve exited early ({status}):\n{last_log}");
                }
                Startup::TimedOut => panic!(
                    "static-registry serve did not answer GET /v2/ with 200 within 30 s:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                ),
            }
        }
        panic!("could not start static-registry serve on a free port:\n{last_log}");
    }

    /// `127.0.0.1:PORT`, the registry host clients are given.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The `Docker-Content-Digest` a `HEAD` on `/v2/REPO/manifests/TAG` answers (what the tag
    /// points at), asserting the HEAD succeeds.
    pub fn tag_digest(&self, repo: &str, tag: &str) -> String {
        let path = format!("/v2/{repo}/manifests/{tag}");
        let r = blocking_request(self.addr, "HEAD", &path)
            .unwrap_or_else(|| panic!("HEAD {path}: no response"));
        assert_eq!(r.status, 200, "HEAD {path}: {r:?}");
        r.header("docker-content-digest")
            .unwrap_or_else(|| panic!("HEAD {path} has no Docker-Content-Digest: {r:?}"))
            .to_owned()
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- static-registry serve log ---\n{}", self.log());
        }
    }
}

/// A published store: a fresh temporary directory.
pub fn new_store() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sr-store-")
        .tempdir()
        .expect("store temp dir")
}

/// Every file under `dir`, relative to it, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).expect("under root").to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Serves `router` on `listener` (non-blocking, already bound) from a thread of its own, until
/// the returned sender fires or is dropped: the in-test HTTP peers (token server, hostile hosts).
pub fn serve_in_thread(
    listener: std::net::TcpListener,
    router: axum::Router,
) -> (
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
    });
    (tx, thread)
}
