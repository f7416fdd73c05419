//! Operating the endpoint in tests: `serve` replicas that can be signalled (SIGTERM, SIGHUP),
//! stopped and restarted on the same port, and a real nginx load balancer in front of them.
//!
//! The balancer runs the proxy settings of the example `config/nginx-lb.conf` verbatim (the lines
//! between its `# --- begin proxy settings` and `# --- end proxy settings` markers), so the
//! example operators copy is the configuration the tests exercise. Like `nginx.rs`, nginx runs in
//! the foreground as a single process (`master_process off`) with everything under its own
//! temporary prefix, and is killed on drop.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::nginx::{nginx_prefix, spawn_nginx, tail};
use super::{
    bin, blocking_get_status, blocking_request, free_port, manifest_dir, wait_for, wait_started,
    Startup,
};

// ---------------------------------------------------------------------------------------------
// serve replicas
// ---------------------------------------------------------------------------------------------

/// A `static-registry serve` process on a fixed loopback port that survives restarts; killed on
/// drop. Readiness is `GET /healthz` → 200 (plain HTTP) or an accepted TCP connection (TLS).
pub struct Replica {
    child: Option<Child>,
    pub port: u16,
    args: Vec<String>,
    env: Vec<(String, String)>,
    tls: bool,
    dir: tempfile::TempDir,
    starts: usize,
}

impl Replica {
    /// `serve ARGS... --listen 127.0.0.1:PORT` on a free port, with
    /// `RUST_LOG=static_registry=debug,info` unless `env` sets it.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Replica {
        let tls = args.contains(&"--tls-cert");
        let mut r = Replica {
            child: None,
            port: 0,
            args: args.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            tls,
            dir: tempfile::Builder::new()
                .prefix("sr-replica-")
                .tempdir()
                .expect("replica temp dir"),
            starts: 0,
        };
        let mut last = String::new();
        for _ in 0..5 {
            r.port = free_port();
            match r.spawn() {
                Ok(()) => return r,
                // Someone took the port between the probe and the bind: try another.
                Err(e) if e.contains("cannot listen") => last = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("could not start static-registry serve on a free port:\n{last}");
    }

    fn log_path(&self, start: usize) -> PathBuf {
        self.dir.path().join(format!("serve-{start}.log"))
    }

    fn spawn(&mut self) -> Result<(), String> {
        self.starts += 1;
        let log_path = self.log_path(self.starts);
        let log = std::fs::File::create(&log_path).expect("replica log");
        let mut cmd = Command::new(bin());
        cmd.arg("serve")
            .args(&self.args)
            .arg("--listen")
            .arg(self.addr().to_string())
            .env_remove("STATIC_REGISTRY_CONFIG")
            .env_remove("STATIC_REGISTRY_STORE")
            .env_remove("STATIC_REGISTRY_LISTEN")
            .env("RUST_LOG", "static_registry=debug,info")
            .env("NO_COLOR", "1");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn static-registry serve");
        let (addr, tls) = (self.addr(), self.tls);
        match wait_started(&mut child, "serve", || {
            if tls {
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            } else {
                blocking_get_status(addr, "/healthz") == Some(200)
            }
        }) {
            Startup::Ready => {
                self.child = Some(child);
                Ok(())
            }
            Startup::Exited(status) => Err(format!(
                "static-registry serve on port {} exited early ({status}):\n{}",
                self.port,
                std::fs::read_to_string(&log_path).unwrap_or_default()
            )),
            Startup::TimedOut => Err(format!(
                "static-registry serve did not become ready on port {} within 30 s:\n{}",
                self.port,
                std::fs::read_to_string(&log_path).unwrap_or_default()
            )),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        self.addr().to_string()
    }

    /// `http://127.0.0.1:PORT{path}`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("replica is running").id()
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            None => false,
            Some(c) => c.try_wait().expect("poll serve").is_none(),
        }
    }

    /// Sends a signal (`TERM`, `HUP`, `INT`) with kill(1).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{sig} {} failed", self.pid());
    }

    /// SIGTERM: stop accepting, drain in-flight requests, exit.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Waits for the process to exit (after [`Replica::terminate`]) and returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let port = self.port;
        let child = self.child.as_mut().expect("replica is running");
        let status = wait_for(&format!("serve on port {port} to exit"), timeout, || {
            child.try_wait().expect("poll serve")
        });
        self.child = None;
        status
    }

    /// Starts the replica again on the same port (a rolling restart's second half).
    pub fn restart(&mut self) {
        assert!(
            !self.is_running(),
            "replica on port {} still runs",
            self.port
        );
        self.child = None;
        if let Err(e) = self.spawn() {
            panic!("restarting serve on port {}: {e}", self.port);
        }
    }

    /// The log of the current (or last) run.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path(self.starts)).unwrap_or_default()
    }

    /// The logs of every run so far.
    pub fn all_logs(&self) -> String {
        (1..=self.starts)
            .map(|i| std::fs::read_to_string(self.log_path(i)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `GET /metrics` (plain HTTP only).
    pub fn metrics(&self) -> String {
        let r = blocking_request(self.addr(), "GET", "/metrics")
            .unwrap_or_else(|| panic!("GET /metrics on port {}: no response", self.port));
        assert_eq!(r.status, 200, "GET /metrics: {r:?}");
        r.body_text()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            let logs = self.all_logs();
            let lines: Vec<&str> = logs.lines().collect();
            eprintln!(
                "--- serve :{} log (tail) ---\n{}",
                self.port,
                lines[lines.len().saturating_sub(60)..].join("\n")
            );
        }
    }
}

/// The sum of every sample of `metric` whose labels contain all of `labels` (e.g.
/// `route="manifest"`) in a Prometheus text exposition; None when there is no such sample.
pub fn metric_sum(text: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(metric) else {
            continue;
        };
        let (label_text, value) = if let Some(r) = rest.strip_prefix('{') {
            match r.split_once('}') {
                Some((l, v)) => (l, v),
                None => continue,
            }
        } else if rest.starts_with(' ') {
            ("", rest)
        } else {
            continue; // another metric with this name as a prefix
        };
        if !labels.iter().all(|l| label_text.contains(l)) {
            continue;
        }
        if let Ok(v) = value.trim().parse::<f64>() {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

// ---------------------------------------------------------------------------------------------
// the nginx load balancer
// ---------------------------------------------------------------------------------------------

/// The proxy settings of `config/nginx-lb.conf` (between its markers).
pub fn example_proxy_settings() -> String {
    let path = manifest_dir().join("config/nginx-lb.conf");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let start = text
        .find("# --- begin proxy settings")
        .expect("config/nginx-lb.conf has a `# --- begin proxy settings` marker");
    let start = start + text[start..].find('\n').expect("marker line ends");
    let end = text
        .find("# --- end proxy settings")
        .expect("config/nginx-lb.conf has a `# --- end proxy settings` marker");
    text[start..end].to_owned()
}

/// A round-robin nginx balancer over replicas on loopback; killed on drop.
pub struct Balancer {
    child: Option<Child>,
    prefix: tempfile::TempDir,
    pub port: u16,
}

impl Balancer {
    /// Balances over `127.0.0.1:PORT` for each of `upstreams`. A replica that refuses a
    /// connection is retried on the next one and skipped for `fail_timeout` (2 s here).
    pub fn start(upstreams: &[u16]) -> Balancer {
        Balancer::start_with(|lb| lb.conf(upstreams))
    }

    /// nginx running `snippet(port, prefix)`, an `http`-context configuration that listens on
    /// `127.0.0.1:port` (plain or TLS) and keeps its files under `prefix`.
    pub fn start_snippet(snippet: impl Fn(u16, &Path) -> String) -> Balancer {
        Balancer::start_with(|lb| lb.wrap(&snippet(lb.port, lb.prefix.path())))
    }

    fn start_with(conf: impl Fn(&Balancer) -> String) -> Balancer {
        let prefix = nginx_prefix("sr-lb-");
        let mut lb = Balancer {
            child: None,
            prefix,
            port: 0,
        };
        let mut last = String::new();
        for _ in 0..5 {
            lb.port = free_port();
            let text = conf(&lb);
            match lb.spawn(&text) {
                Ok(()) => return lb,
                Err(e) if e.contains("Address already in use") => last = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("could not start the nginx balancer on a free port:\n{last}");
    }

    /// The process-level wrapper around an `http`-context snippet.
    fn wrap(&self, http: &str) -> String {
        let p = self.prefix.path().display();
        format!(
            r#"# Generated by tests/common/lb.rs
master_process off;
worker_processes 1;
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {p}/tmp/client_body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;
{http}
}}
"#
        )
    }

    /// The balancer of the tests: `config/nginx-lb.conf`'s proxy settings over `upstreams`.
    fn conf(&self, upstreams: &[u16]) -> String {
        let p = self.prefix.path().display();
        let servers: String = upstreams
            .iter()
            .map(|port| format!("        server 127.0.0.1:{port} max_fails=1 fail_timeout=2s;\n"))
            .collect();
        self.wrap(&format!(
            r#"    # No query strings in the log: signed URLs are credentials.
    log_format registry '$remote_addr [$time_local] "$request_method $uri" $status '
                        '$body_bytes_sent $request_time upstream=$upstream_addr '
                        'upstream_status=$upstream_status';
    access_log {p}/logs/access.log registry;
    upstream static_registry {{
{servers}        keepalive 16;
        keepalive_timeout 5s;
    }}
    server {{
        listen 127.0.0.1:{port};
{settings}
    }}"#,
            port = self.port,
            settings = example_proxy_settings(),
        ))
    }

    fn error_log_path(&self) -> PathBuf {
        self.prefix.path().join("logs/error.log")
    }

    fn spawn(&mut self, conf: &str) -> Result<(), String> {
        let log = std::fs::File::create(self.error_log_path()).expect("balancer error log");
        let mut child = spawn_nginx(self.prefix.path(), conf, log);
        let addr = self.addr();
        match wait_started(&mut child, "nginx", || {
            blocking_get_status(addr, "/healthz").is_some()
        }) {
            Startup::Ready => {
                self.child = Some(child);
                Ok(())
            }
            Startup::Exited(status) => Err(format!(
                "the nginx balancer exited early ({status}) on port {}:\n{}",
                self.port,
                self.error_log()
            )),
            Startup::TimedOut => Err(format!(
                "the nginx balancer did not answer on port {} within 30 s:\n{}",
                self.port,
                self.error_log()
            )),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    /// `127.0.0.1:PORT`, the registry host clients are given.
    pub fn host(&self) -> String {
        self.addr().to_string()
    }

    /// `http://127.0.0.1:PORT{path}`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.prefix.path().join("logs/access.log")).unwrap_or_default()
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.error_log_path()).unwrap_or_default()
    }

    pub fn prefix(&self) -> &Path {
        self.prefix.path()
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- nginx balancer :{} error log ---\n{}\n--- access log (tail) ---\n{}",
                self.port,
                tail(self.error_log()),
                tail(self.access_log())
            );
        }
    }
}
