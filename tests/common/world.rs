//! A directory for one test's config files and the logs of every run of the binary, and the
//! binary run against a cloud store through a config file: publish, verify, serve. The cloud
//! harnesses (`s3`, `azurite`, `fake_gcs`) each add their server and credentials.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use std::collections::BTreeSet;

use super::fixtures::{self, Fixture};
use super::http::RawResponse;
use super::{bin, blocking_get_status, blocking_request, describe_output, free_port};

/// Config files and logs in a temporary directory, and the environment every run gets.
pub struct World {
    dir: tempfile::TempDir,
    runs: AtomicUsize,
    remove_env: Vec<String>,
    env: Vec<(String, String)>,
}

impl World {
    /// A world whose runs drop `remove_env` from the caller's environment and set `env`.
    pub fn new(prefix: &str, remove_env: &[&str], env: &[(&str, &str)]) -> World {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("world temp dir");
        std::fs::create_dir(dir.path().join("logs")).expect("logs dir");
        World {
            dir,
            runs: AtomicUsize::new(0),
            remove_env: remove_env.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// Writes `NAME.toml` with `text` and returns its path.
    pub fn write_config(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).expect("write config");
        path
    }

    /// The directory config files are written to.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The directory logs are kept in.
    pub fn log_dir(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    /// `static-registry -c CONFIG` with the world's environment, debug logging, and nothing from
    /// the caller's environment that could change which store or credentials are used.
    pub fn command(&self, config: &Path) -> Command {
        let mut cmd = Command::new(bin());
        cmd.arg("-c").arg(config);
        for var in [
            "STATIC_REGISTRY_CONFIG",
            "STATIC_REGISTRY_STORE",
            "STATIC_REGISTRY_LISTEN",
            "STATIC_REGISTRY_ORIGIN_SECRET_FILE",
        ]
        .into_iter()
        .chain(self.remove_env.iter().map(String::as_str))
        {
            cmd.env_remove(var);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.env("RUST_LOG", "debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        cmd
    }

    fn log_file(&self, what: &str) -> PathBuf {
        let n = self.runs.fetch_add(1, Ordering::Relaxed);
        let safe: String = what
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(40)
            .collect();
        self.dir
            .path()
            .join("logs")
            .join(format!("{n:04}-{safe}.log"))
    }

    /// Runs a finished command, keeps its output under the log directory, and returns it.
    pub fn run(&self, what: &str, cmd: &mut Command) -> Output {
        let out = cmd.output().unwrap_or_else(|e| panic!("run {what}: {e}"));
        self.keep(what, &out);
        out
    }

    /// Keeps the output of a command run elsewhere (e.g. concurrently) with the logs.
    pub fn keep(&self, what: &str, out: &Output) {
        let mut text = describe_output(what, out).into_bytes();
        text.push(b'\n');
        std::fs::write(self.log_file(what), text).expect("write run log");
    }

    /// The `publish` command (not run): `publish SOURCE --quiet --tag T... EXTRA...`.
    pub fn publish_command(
        &self,
        config: &Path,
        source: &str,
        tags: &[&str],
        extra: &[&str],
    ) -> Command {
        let mut cmd = self.command(config);
        cmd.arg("publish")
            .arg(super::absolute_source(source))
            .arg("--quiet");
        for t in tags {
            cmd.arg("--tag").arg(t);
        }
        cmd.args(extra);
        cmd
    }

    /// Publishes and asserts success; returns the output.
    pub fn publish(&self, config: &Path, source: &str, tags: &[&str], extra: &[&str]) -> Output {
        let what = format!("publish {source} {tags:?} {extra:?}");
        let out = self.run(
            &what,
            &mut self.publish_command(config, source, tags, extra),
        );
        assert!(out.status.success(), "{}", describe_output(&what, &out));
        out
    }

    /// Runs `static-registry -c CONFIG ARGS...`, keeps its output with the logs, and asserts it
    /// succeeded; returns the output.
    pub fn run_ok(&self, config: &Path, args: &[&str]) -> Output {
        let what = args.join(" ");
        let out = self.run(&what, self.command(config).args(args));
        assert!(out.status.success(), "{}", describe_output(&what, &out));
        out
    }

    /// Publishes every fixture, and checks the store with `verify --deep` (which must name every
    /// repository); returns the fixtures.
    pub fn publish_fixtures(&self, config: &Path) -> Vec<Fixture> {
        let fixtures = fixtures::all();
        for f in &fixtures {
            self.publish(config, f.source, &f.tags, &f.flags);
        }
        let repos: BTreeSet<&str> = fixtures.iter().map(|f| f.repo()).collect();
        let out = self.run_ok(config, &["verify", "--deep"]);
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            report.starts_with(&format!("OK: checked {} repositories,", repos.len())),
            "verify --deep: {report}"
        );
        fixtures
    }

    /// The store care commands on any store: two images in one repository, one untagged;
    /// `prune --dry-run` deletes nothing, `prune` deletes blobs, `verify --deep` passes, the kept
    /// image exports with its digests checked and the untagged one no longer does. `stored`
    /// lists the store's keys as the cloud itself sees them.
    pub fn check_untag_prune_export(&self, config: &Path, stored: impl Fn() -> Vec<String>) {
        self.publish(
            config,
            "oci:fixtures/oci-single:1.0",
            &["care/app:keep"],
            &[],
        );
        self.publish(
            config,
            "docker-archive:fixtures/docker-25.tar",
            &["care/app:drop"],
            &[],
        );
        self.run_ok(config, &["untag", "care/app:drop"]);
        let blobs = |keys: &[String]| keys.iter().filter(|k| k.starts_with("blobs/")).count();
        let before = stored();
        self.run_ok(config, &["prune", "--grace", "0s", "--dry-run"]);
        assert_eq!(stored(), before, "a dry run deletes nothing");
        self.run_ok(config, &["prune", "--grace", "0s"]);
        let after = stored();
        assert!(
            blobs(&after) < blobs(&before),
            "prune deleted no blob: {before:?} -> {after:?}"
        );
        self.run_ok(config, &["verify", "--deep"]);

        let dest = self.dir().join("exported");
        let to = |tag: &str| format!("oci:{}:{tag}", dest.display());
        self.run_ok(config, &["export", "care/app:keep", &to("keep")]);
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dest.join("index.json")).unwrap()).unwrap();
        assert_eq!(index["manifests"][0]["mediaType"], fixtures::OCI_MANIFEST);
        let digest = index["manifests"][0]["digest"].as_str().unwrap();
        let bytes = std::fs::read(dest.join("blobs/sha256").join(super::hex_of(digest))).unwrap();
        assert_eq!(super::sha256(&bytes), digest);
        let gone = self.run(
            "export dropped",
            self.command(config)
                .args(["export", "care/app:drop", &to("drop")]),
        );
        assert!(!gone.status.success(), "an untagged image exported");
    }

    /// The race the compare-and-swap exists for: one publisher per `(tag, source)`, all started at
    /// once. Each must succeed; returns each one's tag and output (kept with the logs).
    pub fn publish_concurrently(
        &self,
        config: &Path,
        jobs: &[(String, &str)],
    ) -> Vec<(String, Output)> {
        let outputs: Vec<(String, Output)> = std::thread::scope(|s| {
            let handles: Vec<_> = jobs
                .iter()
                .map(|(tag, source)| {
                    let mut cmd = self.publish_command(config, source, &[tag.as_str()], &[]);
                    s.spawn(move || (tag.clone(), cmd.output().expect("run publish")))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (tag, out) in &outputs {
            self.keep(&format!("racing publish {tag}"), out);
            assert!(out.status.success(), "{}", describe_output(tag, out));
        }
        outputs
    }

    /// Racing jobs over the fixtures' four archive formats: `n` tags `race/app:t0…` and two
    /// publishers of `race/app:same` with different images.
    pub fn race_jobs(n: usize) -> Vec<(String, &'static str)> {
        let sources = [
            "oci:fixtures/oci-single:1.0",
            "oci-archive:fixtures/oci-archive.tar:1.0",
            "docker-archive:fixtures/docker-legacy.tar",
            "docker-archive:fixtures/docker-25.tar",
        ];
        let mut jobs: Vec<(String, &str)> = (0..n)
            .map(|i| (format!("race/app:t{i}"), sources[i % sources.len()]))
            .collect();
        jobs.push(("race/app:same".into(), sources[0]));
        jobs.push(("race/app:same".into(), sources[3]));
        jobs
    }

    /// Runs `verify [--deep]` (whatever its outcome).
    pub fn verify(&self, config: &Path, deep: bool) -> Output {
        let mut cmd = self.command(config);
        cmd.arg("verify");
        if deep {
            cmd.arg("--deep");
        }
        self.run("verify", &mut cmd)
    }

    /// Starts `serve -c CONFIG --listen 127.0.0.1:PORT EXTRA...` and waits for `GET /v2/` = 200.
    pub fn serve(&self, config: &Path, extra: &[&str]) -> Serve {
        self.serve_with(config, extra, |_| {})
    }

    /// [`World::serve`], with a last change to the command (say, other credentials).
    pub fn serve_with(
        &self,
        config: &Path,
        extra: &[&str],
        adjust: impl Fn(&mut Command),
    ) -> Serve {
        let mut last_log = String::new();
        for _attempt in 0..5 {
            let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
            let log_path = self.log_file("serve");
            let log = std::fs::File::create(&log_path).expect("serve log file");
            let mut cmd = self.command(config);
            cmd.arg("serve")
                .arg("--listen")
                .arg(addr.to_string())
                .args(extra)
                .stdout(log.try_clone().expect("clone log handle"))
                .stderr(log);
            adjust(&mut cmd);
            let mut child = cmd.spawn().expect("spawn static-registry serve");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(status) = child.try_wait().expect("poll server") {
                    last_log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    if last_log.contains("cannot listen") {
                        break;
                    }
                    panic!("static-registry serve exited early ({status}):\n{last_log}");
                }
                if blocking_get_status(addr, "/v2/") == Some(200) {
                    return Serve {
                        child,
                        addr,
                        log_path,
                    };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "static-registry serve did not answer GET /v2/ within 30 s:\n{}",
                        std::fs::read_to_string(&log_path).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("could not start static-registry serve on a free port:\n{last_log}");
    }
}

/// A running `static-registry serve` against a store; killed on drop. Its log is kept with the
/// world's logs.
pub struct Serve {
    child: Child,
    pub addr: SocketAddr,
    log_path: PathBuf,
}

impl Serve {
    /// `127.0.0.1:PORT`, the registry host clients are given.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// A request over a fresh connection; panics when there is no answer.
    pub fn request(&self, method: &str, path: &str) -> RawResponse {
        blocking_request(self.addr, method, path)
            .unwrap_or_else(|| panic!("{method} {path}: no response from serve"))
    }

    /// The `Location` of a `GET path` that must answer 307.
    pub fn location(&self, path: &str) -> String {
        let r = self.request("GET", path);
        assert_eq!(r.status, 307, "GET {path}: {r:?}");
        r.header("location")
            .unwrap_or_else(|| panic!("GET {path}: 307 without Location: {r:?}"))
            .to_owned()
    }

    /// The `Docker-Content-Digest` a `HEAD` on `/v2/REPO/manifests/TAG` answers.
    pub fn tag_digest(&self, repo: &str, tag: &str) -> String {
        let path = format!("/v2/{repo}/manifests/{tag}");
        let r = self.request("HEAD", &path);
        assert_eq!(r.status, 200, "HEAD {path}: {r:?}");
        r.header("docker-content-digest")
            .unwrap_or_else(|| panic!("HEAD {path} has no Docker-Content-Digest: {r:?}"))
            .to_owned()
    }

    /// `GET /readyz`, parsed.
    pub fn readyz(&self) -> serde_json::Value {
        let r = self.request("GET", "/readyz");
        serde_json::from_slice(&r.body)
            .unwrap_or_else(|e| panic!("/readyz is not JSON ({e}): {}", r.body_text()))
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- static-registry serve log ---\n{}", self.log());
        }
    }
}

/// Files under `roots` whose bytes contain one of `needles` (a secret in any of its forms), and
/// how many files were searched.
pub fn files_containing(roots: &[PathBuf], needles: &[&[u8]]) -> (Vec<PathBuf>, usize) {
    let mut searched = 0;
    let mut found = Vec::new();
    for root in roots {
        for rel in super::files_under(root) {
            let path = root.join(&rel);
            let bytes = std::fs::read(&path).unwrap_or_default();
            searched += 1;
            if needles
                .iter()
                .any(|n| bytes.windows(n.len()).any(|w| w == *n))
            {
                found.push(path);
            }
        }
    }
    (found, searched)
}

/// Fetches an absolute `http://127.0.0.1:PORT/...` URL (a presigned one) over a fresh connection,
/// sending the path and query exactly as they are in the URL.
pub fn fetch(method: &str, url: &str) -> RawResponse {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("not an http:// URL: {url}"));
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr: SocketAddr = host
        .parse()
        .unwrap_or_else(|e| panic!("URL host {host:?} is not IP:PORT ({e}): {url}"));
    blocking_request(addr, method, if path.is_empty() { "/" } else { path })
        .unwrap_or_else(|| panic!("{method} {url}: no response"))
}
