//! A private Docker daemon per test (`dockerd` from Debian's `docker.io`, 20.10), driven with the
//! client from the same package, so the most used client of all pulls from `serve` for real.
//!
//! ```ignore
//! let dockerd = Dockerd::start(); // or Dockerd::start_with(&["--registry-mirror", &url])
//! dockerd.pull(&format!("{}/repo:tag", server.host()))?;
//! let info = dockerd.image_inspect("127.0.0.1:PORT/repo:tag")?; // Id, RepoDigests, RootFS
//! let out = dockerd.run("127.0.0.1:PORT/repo:tag", &["sh", "-c", "echo hi"])?; // stdout
//! dockerd.assert_stayed_local(); // nothing tried to leave the machine
//! ```
//!
//! What each daemon gets, and why:
//! - Its own `/tmp/dk-XXXXXX` directory for everything: data root, exec root (where dockerd puts
//!   the socket of the containerd it starts itself, its state and runc's), pid file, its API
//!   socket, its log, an empty `daemon.json` (so the machine's `/etc/docker/daemon.json` cannot
//!   add mirrors or registries) and its trust key (20.10 otherwise writes `/etc/docker/key.json`;
//!   `deprecated-key-path` is only accepted in the config file). Paths stay short: unix socket
//!   paths are limited to 108 bytes. No `--containerd`: dockerd starts a containerd of its own
//!   under the exec root, so daemons in parallel do not share one (checked by hand: three daemons
//!   running containers at once). Their shims put sockets in the shared `/run/containerd/s/`, named by a
//!   hash of their containerd's socket path, so they do not clash either.
//! - vfs storage (overlayfs is not available in every sandbox), no iptables, no bridge: no
//!   container gets a network, so run containers with `--network none` ([`Dockerd::run`] does).
//! - `HTTP_PROXY`/`HTTPS_PROXY` pointing at a trap on loopback ([`Dockerd::outside_attempts`]).
//!   Go never proxies requests to loopback addresses, so pulls from `127.0.0.1:PORT` go straight
//!   to the server, while anything bound elsewhere (Docker Hub, e.g. after a failed
//!   `--registry-mirror`, which dockerd falls back from to `registry-1.docker.io`) reaches the
//!   trap, is answered 403, and is recorded: nothing leaves the machine, and a test can assert
//!   nothing tried. Name images fully (`127.0.0.1:PORT/repo:tag`): a bare `repo:tag` means
//!   Docker Hub.
//! - `--debug`: the log says which endpoint each pull tried ("Trying to pull … from …").
//!
//! dockerd treats `127.0.0.0/8` as insecure by default: it tries HTTPS on `127.0.0.1:PORT`, then
//! plain HTTP, so no `--insecure-registry` is needed for a server on loopback.
//!
//! The client is `/usr/bin/docker` from the same `docker.io` package, not whatever `docker` comes
//! first on PATH: this machine has a newer client (28.x) in `/usr/local/bin`, which works against
//! dockerd 20.10 by negotiating API 1.41 down from 1.50, but its flags and output formats are
//! another version's; the daemon's own client has none of that drift. Its configuration
//! (`DOCKER_CONFIG`) is private too, so no `~/.docker/config.json` (credentials, proxies) applies.
//!
//! On drop the daemon gets SIGTERM and up to 20 s to stop its containerd and unmount its data
//! root (it bind-mounts that onto itself); after a SIGKILL both would stay, so whatever process
//! still names the directory (containerd, shims) is killed by pid and the mounts under it are
//! unmounted before the directory goes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{describe_output, require_tool};

/// The client of the `docker.io` package, the same version as its `dockerd`.
pub const DOCKER: &str = "/usr/bin/docker";

/// Proxy variables a test runner may have; dockerd gets none of them but the trap.
const PROXY_VARS: [&str; 8] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
];

/// A private `dockerd` (see the module doc); killed, with its containerd, on drop.
pub struct Dockerd {
    child: Child,
    dir: tempfile::TempDir,
    sock: PathBuf,
    log_path: PathBuf,
    trap: Trap,
}

impl Dockerd {
    /// Starts a daemon with the default options and waits until it answers.
    pub fn start() -> Dockerd {
        Dockerd::start_with(&[])
    }

    /// Starts a daemon with extra `dockerd` flags (e.g. `["--registry-mirror",
    /// "http://127.0.0.1:PORT"]`, `["--insecure-registry", "HOST:PORT"]`) and waits until it
    /// answers. Give them as flags: dockerd refuses an option that is both a flag and in its
    /// `daemon.json`, which only holds the key path.
    pub fn start_with(extra: &[&str]) -> Dockerd {
        let dockerd = require_tool("dockerd");
        assert!(
            Path::new(DOCKER).is_file(),
            "{DOCKER} (the client of Debian's docker.io) is not installed. Run the suite with \
             scripts/test.sh, which installs it."
        );
        let dir = tempfile::Builder::new()
            .prefix("dk-")
            .tempdir_in("/tmp")
            .expect("dockerd temp dir");
        let d = dir.path();
        let sock = d.join("d.sock");
        let config = d.join("daemon.json");
        let key = serde_json::json!({ "deprecated-key-path": d.join("key.json") });
        std::fs::write(&config, key.to_string()).expect("write daemon.json");
        std::fs::create_dir(d.join("client")).expect("client config dir");
        let trap = Trap::start();
        let log_path = d.join("dockerd.log");
        let log = std::fs::File::create(&log_path).expect("dockerd log");
        let mut cmd = Command::new(dockerd);
        cmd.arg("--config-file")
            .arg(&config)
            .arg("--data-root")
            .arg(d.join("root"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("pid"))
            .arg("--host")
            .arg(format!("unix://{}", sock.display()))
            .args([
                "--storage-driver",
                "vfs",
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--debug",
            ])
            .args(extra);
        for var in PROXY_VARS {
            cmd.env_remove(var);
        }
        let child = cmd
            .env("HTTP_PROXY", trap.url())
            .env("HTTPS_PROXY", trap.url())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn dockerd");
        // From here on a panic drops (stops and cleans up) the daemon.
        let mut dockerd = Dockerd {
            child,
            dir,
            sock,
            log_path,
            trap,
        };
        dockerd.wait_ready();
        // The trap is what keeps pulls of other hosts on this machine: make sure dockerd uses it.
        let info = dockerd.info();
        for field in ["HttpProxy", "HttpsProxy"] {
            assert_eq!(
                info[field].as_str(),
                Some(dockerd.trap.url().as_str()),
                "dockerd does not report the trap as its {field}: {info}"
            );
        }
        dockerd
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("poll dockerd") {
                panic!("dockerd exited early ({status}):\n{}", self.log());
            }
            if self.sock.exists() && self.docker(&["version"]).status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "dockerd did not answer on {} within 60 s",
                self.sock.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `unix:///tmp/dk-XXXXXX/d.sock`, the daemon's API (`DOCKER_HOST`).
    pub fn host(&self) -> String {
        format!("unix://{}", self.sock.display())
    }

    /// The daemon's directory (data root `root/`, exec root `exec/`, `dockerd.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `/usr/bin/docker` talking to this daemon, with a private client configuration.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(DOCKER);
        cmd.env("DOCKER_HOST", self.host())
            .env("DOCKER_CONFIG", self.dir.path().join("client"))
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH")
            .env_remove("DOCKER_API_VERSION")
            .stdin(Stdio::null());
        cmd
    }

    /// `docker ARGS...`, whatever its exit status.
    pub fn docker(&self, args: &[&str]) -> Output {
        self.cmd()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {DOCKER} {args:?}: {e}"))
    }

    /// `docker ARGS...`; an error (with its output) unless it succeeds.
    pub fn docker_ok(&self, args: &[&str]) -> Result<Output, String> {
        let out = self.docker(args);
        if out.status.success() {
            Ok(out)
        } else {
            Err(describe_output(&format!("docker {}", args.join(" ")), &out))
        }
    }

    /// `docker pull IMAGE`. Name it fully (`127.0.0.1:PORT/repo:tag` or `…/repo@sha256:…`).
    pub fn pull(&self, image: &str) -> Result<(), String> {
        self.docker_ok(&["pull", image]).map(|_| ())
    }

    /// `docker image inspect IMAGE`, parsed: `Id` (`sha256:` + the config digest), `RepoTags`,
    /// `RepoDigests` (`HOST/REPO@DIGEST` of what it was pulled by), `RootFS.Layers` (the
    /// diff_ids), `Architecture`, `Os`.
    pub fn image_inspect(&self, image: &str) -> Result<Value, String> {
        let out = self.docker_ok(&["image", "inspect", image])?;
        let v: Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("docker image inspect {image}: {e}"))?;
        v.get(0)
            .cloned()
            .ok_or_else(|| format!("docker image inspect {image}: empty output"))
    }

    /// `docker run --rm --network none --pull never IMAGE CMD...` (the image must be there
    /// already: never a pull from anywhere); its standard output.
    pub fn run(&self, image: &str, cmd: &[&str]) -> Result<String, String> {
        let mut args = vec!["run", "--rm", "--network", "none", "--pull", "never", image];
        args.extend_from_slice(cmd);
        let out = self.docker_ok(&args)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Removes every image (`docker image rm -f`), so the next pull downloads every blob again:
    /// dockerd skips a pull whose config it already has, and a layer whose diff_id it has.
    pub fn remove_all_images(&self) -> Result<(), String> {
        let out = self.docker_ok(&["image", "ls", "--all", "--quiet", "--no-trunc"])?;
        let mut ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        ids.sort();
        ids.dedup();
        if ids.is_empty() {
            return Ok(());
        }
        let mut args = vec!["image", "rm", "--force"];
        args.extend(ids.iter().map(String::as_str));
        self.docker_ok(&args).map(|_| ())
    }

    /// `docker info`, parsed (`ServerVersion`, `RegistryConfig.Mirrors`, `HttpsProxy`, …).
    pub fn info(&self) -> Value {
        let out = self
            .docker_ok(&["info", "--format", "{{json .}}"])
            .unwrap_or_else(|e| panic!("{e}"));
        serde_json::from_slice(&out.stdout).expect("docker info is JSON")
    }

    /// The daemon's version (`ServerVersion`) as (major, minor): Debian's `20.10.24+dfsg1` is
    /// (20, 10).
    pub fn version(&self) -> (u32, u32) {
        let info = self.info();
        let v = info["ServerVersion"].as_str().unwrap_or("").to_owned();
        let mut parts = v.split(|c: char| !c.is_ascii_digit());
        let mut next = || parts.next().and_then(|p| p.parse().ok());
        match (next(), next()) {
            (Some(major), Some(minor)) => (major, minor),
            _ => panic!("cannot read dockerd's version {v:?}"),
        }
    }

    /// The first line of every request the daemon sent anywhere but loopback (e.g.
    /// `CONNECT registry-1.docker.io:443 HTTP/1.1`): each was answered 403 and went nowhere.
    pub fn outside_attempts(&self) -> Vec<String> {
        self.trap.seen()
    }

    /// Fails if the daemon tried to reach anything but loopback.
    pub fn assert_stayed_local(&self) {
        let seen = self.outside_attempts();
        assert!(
            seen.is_empty(),
            "dockerd tried to leave the machine (caught by the trap proxy): {seen:?}"
        );
    }

    /// What dockerd (and its containerd) logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Stops the daemon: SIGTERM, then SIGKILL after 20 s.
    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = self.child.id().to_string();
        let _ = Command::new("kill")
            .args(["-TERM", &pid])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
        let dir = self.dir.path().to_path_buf();
        kill_processes_naming(&dir);
        unmount_under(&dir);
        if std::thread::panicking() {
            eprintln!("--- dockerd log (tail) ---");
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            for l in &lines[lines.len().saturating_sub(60)..] {
                eprintln!("{l}");
            }
            let seen = self.outside_attempts();
            if !seen.is_empty() {
                eprintln!("--- dockerd tried to reach (trapped) ---\n{seen:?}");
            }
        }
    }
}

/// Kills (by pid) every process whose command line names `dir`: a containerd or shim a killed
/// dockerd left behind. Its own directory is unique, so this never touches another test's.
fn kill_processes_naming(dir: &Path) {
    let needle = dir.to_string_lossy().into_owned();
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Unmounts (lazily, deepest first) every mount under `dir`, so the directory can be removed.
fn unmount_under(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount")
            .args(["-l", p])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A stand-in for every host off this machine: an HTTP proxy on loopback that records the first
/// line of each request (`CONNECT host:443 …` for HTTPS, `GET http://host/… …` for HTTP) and
/// answers 403.
struct Trap {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Trap {
    fn start() -> Trap {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the trap proxy");
        let addr = listener.local_addr().expect("trap address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(mut conn) = conn else { continue };
                    let line = request_line(&mut conn);
                    seen.lock().expect("trap lock").push(line);
                    let _ = conn.write_all(
                        b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                }
            })
        };
        Trap {
            addr,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().expect("trap lock").clone()
    }
}

/// The first line of what a client sent (at most 4 KiB, waiting at most 2 s).
fn request_line(conn: &mut TcpStream) -> String {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while buf.len() < 4096 && !buf.windows(2).any(|w| w == b"\r\n") {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&buf);
    match text.split("\r\n").next() {
        Some(line) if !line.is_empty() => line.to_owned(),
        _ => "(a connection with no request line)".to_owned(),
    }
}

impl Drop for Trap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
