//! A real nginx (Debian's `/usr/sbin/nginx`) serving a published local store as a CDN edge, in
//! one of two shapes:
//!
//! - [`Nginx::secure_link`]: every request must carry a valid nginx `secure_link` hash (the
//!   verifier for `src/sign/secure_link.rs`), and the response's `Content-Type` is the signed
//!   `ct` query parameter (nginx cannot know a manifest's media type from its key);
//! - [`Nginx::public`]: plain files, no checks (a public origin, or a stand-in CDN host for
//!   signers that have no verifier here).
//!
//! nginx runs in the foreground as a single process (`master_process off`, so killing the child
//! stops everything and no worker outlives the test), on a free loopback port, with its logs, pid
//! file and temp directories under its own temporary prefix. It is killed on drop, and can be
//! stopped and restarted on the same port to simulate an origin outage.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, require_tool, wait_started, Startup};

/// The nginx binary (Debian installs it in `/usr/sbin`, which is not always on `PATH`).
pub fn nginx_bin() -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin/nginx");
    if sbin.is_file() {
        return sbin;
    }
    require_tool("nginx");
    PathBuf::from("nginx")
}

/// A fresh temporary nginx prefix (`tmp/` and `logs/` created), named `name_prefix…`.
pub fn nginx_prefix(name_prefix: &str) -> tempfile::TempDir {
    let prefix = tempfile::Builder::new()
        .prefix(name_prefix)
        .tempdir()
        .expect("nginx temp prefix");
    for d in ["tmp", "logs"] {
        std::fs::create_dir_all(prefix.path().join(d)).expect("nginx dirs");
    }
    prefix
}

/// Writes `conf` as `PREFIX/nginx.conf` and starts nginx on it in the foreground, its pid file
/// under `prefix` and its error log (and any output) in `log`.
pub fn spawn_nginx(prefix: &Path, conf: &str, log: std::fs::File) -> Child {
    let conf_path = prefix.join("nginx.conf");
    std::fs::write(&conf_path, conf).expect("write nginx.conf");
    let pid = prefix.join("nginx.pid");
    Command::new(nginx_bin())
        .arg("-p")
        .arg(prefix)
        .arg("-c")
        .arg(&conf_path)
        .arg("-g")
        .arg(format!(
            "daemon off; pid {}; error_log stderr;",
            pid.display()
        ))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log"))
        .stderr(log)
        .spawn()
        .expect("spawn nginx")
}

/// The last 30 lines of `s`.
pub fn tail(s: String) -> String {
    let lines: Vec<String> = s.lines().map(str::to_owned).collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The `secure_link_md5` expression the edge checks (with the secret in place of `SECRET`), and
/// the matching `template` for the signer config: the content type is covered by the hash.
pub const SECURE_LINK_TEMPLATE: &str = "$secure_link_expires$uri$arg_ct SECRET";

/// How the edge treats requests.
#[derive(Debug, Clone)]
enum Mode {
    SecureLink { secret: String, flaw: Flaw },
    Public,
}

/// A misconfiguration of a secure_link edge, as operators make them (`static-registry check`
/// must name each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flaw {
    None,
    /// The default template's edge: no `add_header Content-Type $arg_ct`, nginx's own types.
    NoContentType,
    /// `gzip on` for every type: manifests get `Content-Encoding: gzip`.
    Gzip,
    /// `max_ranges 0`: Range requests get the whole body.
    NoRange,
}

/// A running nginx; killed on drop.
pub struct Nginx {
    child: Option<Child>,
    prefix: tempfile::TempDir,
    root: PathBuf,
    mode: Mode,
    pub port: u16,
    starts: usize,
}

impl Nginx {
    /// nginx checking `secure_link` with `secret` ([`SECURE_LINK_TEMPLATE`]) in front of `root`:
    /// a missing or wrong hash gets 403, an expired link 410.
    pub fn secure_link(root: &Path, secret: &str) -> Nginx {
        assert!(
            secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "test secrets must be plain (they are written into nginx.conf)"
        );
        Nginx::secure_link_with(root, secret, Flaw::None)
    }

    /// [`Nginx::secure_link`] with a misconfiguration.
    pub fn secure_link_with(root: &Path, secret: &str, flaw: Flaw) -> Nginx {
        assert!(
            secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "test secrets must be plain (they are written into nginx.conf)"
        );
        Nginx::start(
            root,
            Mode::SecureLink {
                secret: secret.to_owned(),
                flaw,
            },
        )
    }

    /// nginx serving `root` as plain files, no checks.
    pub fn public(root: &Path) -> Nginx {
        Nginx::start(root, Mode::Public)
    }

    fn start(root: &Path, mode: Mode) -> Nginx {
        let prefix = nginx_prefix("sr-nginx-");
        let mut nginx = Nginx {
            child: None,
            prefix,
            root: root.to_owned(),
            mode,
            port: 0,
            starts: 0,
        };
        // Another process may take the port between the probe and nginx's bind: try a few.
        for _ in 0..5 {
            nginx.port = free_port();
            match nginx.spawn() {
                Ok(()) => return nginx,
                Err(e) if e.contains("Address already in use") => continue,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("could not start nginx on a free port");
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    fn conf(&self) -> String {
        let p = self.prefix.path().display();
        let root = self.root.display();
        let location = match &self.mode {
            Mode::SecureLink { secret, flaw } => format!(
                r#"
        location / {{
            secure_link $arg_md5,$arg_expires;
            secure_link_md5 "{template}";
            if ($secure_link = "")  {{ return 403; }}
            if ($secure_link = "0") {{ return 410; }}
{types}
{extra}
        }}"#,
                template = SECURE_LINK_TEMPLATE.replace("SECRET", secret),
                // The type comes from the signed URL: no type of nginx's own, only the signed one.
                types = if *flaw == Flaw::NoContentType {
                    "            default_type application/octet-stream;"
                } else {
                    "            types { }\n            default_type \"\";\n            add_header Content-Type $arg_ct;"
                },
                extra = match flaw {
                    Flaw::Gzip => "            gzip on; gzip_types *; gzip_min_length 0;",
                    Flaw::NoRange => "            max_ranges 0;",
                    Flaw::None | Flaw::NoContentType => "",
                },
            ),
            Mode::Public => r#"
        location / {
            types { }
            default_type application/octet-stream;
        }"#
            .to_owned(),
        };
        format!(
            r#"# Generated by tests/common/nginx.rs
master_process off;
worker_processes 1;
events {{ worker_connections 256; }}
http {{
    access_log {p}/logs/access.log;
    client_body_temp_path {p}/tmp/client_body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;
    sendfile on;
    server {{
        listen 127.0.0.1:{port};
        root {root};
{location}
    }}
}}
"#,
            port = self.port
        )
    }

    /// Writes the config for the current port and starts nginx; waits until it answers HTTP.
    fn spawn(&mut self) -> Result<(), String> {
        self.starts += 1;
        let log_path = self.error_log_path_for(self.starts);
        let log = std::fs::File::create(&log_path).expect("nginx error log");
        let mut child = spawn_nginx(self.prefix.path(), &self.conf(), log);
        // Any answer from nginx will do (a 403 from secure_link included); an answer from another
        // server means someone else holds the port, and nginx is about to exit.
        let addr = self.addr();
        match wait_started(&mut child, "nginx", || {
            super::blocking_request(addr, "GET", "/")
                .as_ref()
                .and_then(|r| r.header("server"))
                .is_some_and(|s| s.starts_with("nginx"))
        }) {
            Startup::Ready => {
                self.child = Some(child);
                Ok(())
            }
            Startup::Exited(status) => Err(format!(
                "nginx exited early ({status}) on port {}:\n{}",
                self.port,
                std::fs::read_to_string(&log_path).unwrap_or_default()
            )),
            Startup::TimedOut => Err(format!(
                "nginx did not answer on port {} within 30 s:\n{}",
                self.port,
                std::fs::read_to_string(&log_path).unwrap_or_default()
            )),
        }
    }

    fn error_log_path_for(&self, start: usize) -> PathBuf {
        self.prefix.path().join(format!("logs/error-{start}.log"))
    }

    /// Kills nginx and waits until its port refuses connections (an origin outage).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        super::wait_for("nginx's port to close", Duration::from_secs(30), || {
            TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200))
                .is_err()
                .then_some(())
        });
    }

    /// Starts nginx again on the same port (the origin is back). Panics if the port was taken
    /// meanwhile.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "nginx is still running");
        if let Err(e) = self.spawn() {
            panic!("restarting nginx on port {}: {e}", self.port);
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The access log so far (`combined` format: request line with the query, status, ...).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.prefix.path().join("logs/access.log")).unwrap_or_default()
    }

    /// Access-log lines whose request line is `METHOD PATH-PREFIX...` and whose status is
    /// `status`.
    pub fn requests(&self, method: &str, path_prefix: &str, status: u16) -> usize {
        let needle = format!("\"{method} {path_prefix}");
        let status = format!("\" {status} ");
        self.access_log()
            .lines()
            .filter(|l| l.contains(&needle) && l.contains(&status))
            .count()
    }

    /// Every error log written so far.
    pub fn error_log(&self) -> String {
        (1..=self.starts)
            .map(|i| std::fs::read_to_string(self.error_log_path_for(i)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- nginx :{} error log ---\n{}\n--- nginx :{} access log (tail) ---\n{}",
                self.port,
                tail(self.error_log()),
                self.port,
                tail(self.access_log())
            );
        }
    }
}
