//! An upstream registry to mirror from: Debian's `docker-registry` (CNCF distribution 2.8) on a
//! loopback port with filesystem storage in a temporary directory, open, behind htpasswd Basic
//! auth, or behind a Bearer token service run here ([`TokenServer`], which signs ES256 JWTs the
//! registry trusts through `auth.token.rootcertbundle`). Fixtures are pushed into it with skopeo.
//! Its access log (stdout) tells which blobs a mirror downloaded. Killed on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::{blocking_get_status, describe_output, free_port, manifest_dir, require_tool};

/// How the upstream authenticates.
#[derive(Debug, Clone)]
pub enum UpstreamAuth {
    Open,
    /// htpasswd (bcrypt) with one user.
    Htpasswd {
        user: String,
        pass: String,
    },
    /// `auth.token` pointing at a [`TokenServer`].
    Token {
        realm: String,
        service: String,
        issuer: String,
    },
}

/// A running distribution registry.
pub struct Upstream {
    child: Option<Child>,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    log_path: PathBuf,
    pub auth: UpstreamAuth,
}

impl Upstream {
    /// Starts `docker-registry serve CONFIG` (without `AWS_CA_BUNDLE`, on which distribution's
    /// AWS SDK panics) and waits until `GET /v2/` answers 200 or 401.
    pub fn start(auth: UpstreamAuth) -> Upstream {
        require_tool("docker-registry");
        let dir = tempfile::Builder::new()
            .prefix("sr-upstream-")
            .tempdir()
            .expect("upstream temp dir");
        let auth_yaml = match &auth {
            UpstreamAuth::Open => String::new(),
            UpstreamAuth::Htpasswd { user, pass } => {
                let hash = bcrypt::hash(pass, 5).expect("bcrypt");
                let path = dir.path().join("htpasswd");
                std::fs::write(&path, format!("{user}:{hash}\n")).expect("write htpasswd");
                format!(
                    "auth:\n  htpasswd:\n    realm: test-realm\n    path: {}\n",
                    path.display()
                )
            }
            UpstreamAuth::Token {
                realm,
                service,
                issuer,
            } => format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {}\n",
                manifest_dir()
                    .join("tests/data/mirror/token-signer.crt")
                    .display()
            ),
        };
        let mut last = String::new();
        for attempt in 0..5 {
            let port = free_port();
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let cfg = format!(
                "version: 0.1\nlog:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: false\nhttp:\n  addr: {addr}\n  secret: test-only-secret\n{auth_yaml}",
                dir.path().join("data").display()
            );
            let cfg_path = dir.path().join("config.yml");
            std::fs::write(&cfg_path, cfg).expect("write registry config");
            let log_path = dir.path().join(format!("registry-{attempt}.log"));
            let log = std::fs::File::create(&log_path).expect("registry log");
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(&cfg_path)
                .env_remove("AWS_CA_BUNDLE")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone log"))
                .stderr(log)
                .spawn()
                .expect("spawn docker-registry");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(status) = child.try_wait().expect("poll registry") {
                    last = std::fs::read_to_string(&log_path).unwrap_or_default();
                    if last.contains("address already in use") {
                        break;
                    }
                    panic!("docker-registry exited early ({status}):\n{last}");
                }
                if matches!(blocking_get_status(addr, "/v2/"), Some(200 | 401)) {
                    return Upstream {
                        child: Some(child),
                        addr,
                        dir,
                        log_path,
                        auth,
                    };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "docker-registry did not answer within 30 s:\n{}",
                        std::fs::read_to_string(&log_path).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("could not start docker-registry on a free port:\n{last}");
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `skopeo copy [--all] [--dest-creds U:P] SOURCE docker://HOST/DEST`, asserting success.
    /// `source` paths are relative to the repository root.
    pub fn push(&self, source: &str, dest: &str, all: bool, creds: Option<&str>) {
        require_tool("skopeo");
        let conf = self.dir.path().join("registries.conf");
        std::fs::write(
            &conf,
            "unqualified-search-registries = []\nshort-name-mode = \"disabled\"\n",
        )
        .expect("write registries.conf");
        let mut cmd = Command::new("skopeo");
        cmd.env("CONTAINERS_REGISTRIES_CONF", &conf).args([
            "--insecure-policy",
            "copy",
            "--dest-tls-verify=false",
        ]);
        if all {
            cmd.arg("--all");
        }
        if let Some(c) = creds {
            cmd.arg("--dest-creds").arg(c);
        }
        cmd.arg(super::absolute_source(source))
            .arg(format!("docker://{}/{dest}", self.host()))
            .stdin(Stdio::null());
        let out = cmd.output().expect("run skopeo copy");
        assert!(
            out.status.success(),
            "{}\n--- registry log ---\n{}",
            describe_output(&format!("skopeo copy {source} -> {dest}"), &out),
            self.log()
        );
    }

    /// Everything the registry logged (its access log included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// How many blob GETs the registry served so far (from its access log).
    pub fn blob_gets(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("\"GET /v2/") && l.contains("/blobs/sha256:"))
            .count()
    }

    /// Stops the registry (the mirror must then serve on its own).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!("--- docker-registry log (tail) ---");
            for l in &lines[lines.len().saturating_sub(40)..] {
                eprintln!("{l}");
            }
        }
    }
}

/// A Bearer token service for distribution's `auth.token`: `GET /token?service=…&scope=…` with
/// Basic credentials answers `{"token": <ES256 JWT>}` granting the requested actions; anything
/// else gets 401. The JWT's `kid` is the libtrust fingerprint of the signing key, which is how
/// distribution 2.8 finds the key among its `rootcertbundle` certificates.
pub struct TokenServer {
    pub addr: SocketAddr,
    /// Token requests answered with a token / refused.
    pub issued: Arc<AtomicUsize>,
    pub refused: Arc<AtomicUsize>,
    _thread: std::thread::JoinHandle<()>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

pub const TOKEN_SERVICE: &str = "mirror-test-registry";
pub const TOKEN_ISSUER: &str = "mirror-test-issuer";

/// libtrust's key id: the first 240 bits of SHA-256 over the DER SubjectPublicKeyInfo, base32,
/// in colon-separated groups of four.
fn libtrust_key_id(spki_der: &[u8]) -> String {
    use sha2::Digest as _;
    let sum = sha2::Sha256::digest(spki_der);
    let bytes = &sum[..30];
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = String::new();
    for &b in bytes {
        bits = (bits << 8) | u32::from(b);
        n += 8;
        while n >= 5 {
            n -= 5;
            out.push(ALPHABET[((bits >> n) & 31) as usize] as char);
        }
    }
    let groups: Vec<String> = out
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    groups.join(":")
}

fn pem_body(pem: &str) -> Vec<u8> {
    let b64: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .join("");
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("PEM base64")
}

impl TokenServer {
    /// Starts the service on a free port; `user`/`pass` are the only valid credentials.
    pub fn start(user: &str, pass: &str) -> TokenServer {
        use axum::extract::{Query, State};
        use axum::http::{HeaderMap, StatusCode};
        use axum::response::{IntoResponse, Response};

        let data = manifest_dir().join("tests/data/sign");
        let key_pem =
            std::fs::read_to_string(data.join("test-only-p256.pkcs8.pem")).expect("test key");
        let pub_pem = std::fs::read_to_string(data.join("test-only-p256.pub.pem")).expect("pub");
        let kid = libtrust_key_id(&pem_body(&pub_pem));
        let key = jsonwebtoken::EncodingKey::from_ec_der(&pem_body(&key_pem));

        struct St {
            key: jsonwebtoken::EncodingKey,
            kid: String,
            user: String,
            pass: String,
            issued: Arc<AtomicUsize>,
            refused: Arc<AtomicUsize>,
        }
        let issued = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let st = Arc::new(St {
            key,
            kid,
            user: user.to_owned(),
            pass: pass.to_owned(),
            issued: issued.clone(),
            refused: refused.clone(),
        });

        async fn token(
            State(st): State<Arc<St>>,
            Query(q): Query<Vec<(String, String)>>,
            headers: HeaderMap,
        ) -> Response {
            let creds = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Basic "))
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .and_then(|b| String::from_utf8(b).ok());
            let Some((u, p)) = creds.as_deref().and_then(|c| c.split_once(':')) else {
                st.refused.fetch_add(1, Ordering::SeqCst);
                return (StatusCode::UNAUTHORIZED, "credentials required").into_response();
            };
            if u != st.user || p != st.pass {
                st.refused.fetch_add(1, Ordering::SeqCst);
                return (StatusCode::UNAUTHORIZED, "bad credentials").into_response();
            }
            let access: Vec<serde_json::Value> = q
                .iter()
                .filter(|(k, _)| k == "scope")
                .filter_map(|(_, s)| {
                    let mut parts = s.splitn(3, ':');
                    let (t, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                    Some(serde_json::json!({
                        "type": t, "name": name,
                        "actions": actions.split(',').collect::<Vec<_>>(),
                    }))
                })
                .collect();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let claims = serde_json::json!({
                "iss": TOKEN_ISSUER, "sub": u, "aud": TOKEN_SERVICE,
                "exp": now + 300, "nbf": now - 10, "iat": now,
                "jti": format!("{:x}", rand::random::<u64>()),
                "access": access,
            });
            let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
            header.kid = Some(st.kid.clone());
            let jwt = jsonwebtoken::encode(&header, &claims, &st.key).expect("sign JWT");
            st.issued.fetch_add(1, Ordering::SeqCst);
            axum::Json(serde_json::json!({
                "token": jwt, "access_token": jwt, "expires_in": 300,
            }))
            .into_response()
        }

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind token server");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new()
            .route("/token", axum::routing::get(token))
            .with_state(st);
        let (tx, thread) = super::serve_in_thread(listener, app);
        TokenServer {
            addr,
            issued,
            refused,
            _thread: thread,
            shutdown: Some(tx),
        }
    }

    /// The realm to configure the registry with.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Pushes raw content into an open upstream through the registry API (what skopeo cannot push:
/// artifacts with a `subject`, referrers indexes under `sha256-<hex>` tags).
pub struct Pusher {
    base: String,
    http: reqwest::Client,
}

impl Pusher {
    pub fn new(up: &Upstream) -> Pusher {
        Pusher {
            base: format!("http://{}", up.host()),
            http: reqwest::Client::new(),
        }
    }

    /// Uploads a blob (monolithic: POST, then PUT with the digest); returns its digest.
    pub async fn blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = super::sha256(bytes);
        let r = self
            .http
            .post(format!("{}/v2/{repo}/blobs/uploads/", self.base))
            .send()
            .await
            .expect("start upload");
        assert_eq!(r.status().as_u16(), 202, "start upload: {r:?}");
        let loc = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .expect("upload location")
            .to_owned();
        let url = if loc.starts_with("http") {
            loc
        } else {
            format!("{}{loc}", self.base)
        };
        let sep = if url.contains('?') { '&' } else { '?' };
        let r = self
            .http
            .put(format!("{url}{sep}digest={digest}"))
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .expect("finish upload");
        assert_eq!(r.status().as_u16(), 201, "finish upload: {r:?}");
        digest
    }

    /// PUTs a manifest (or index) under `reference` (a tag or its digest); returns its digest.
    pub async fn manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> String {
        let r = self
            .http
            .put(format!("{}/v2/{repo}/manifests/{reference}", self.base))
            .header("content-type", media_type)
            .body(bytes.to_vec())
            .send()
            .await
            .expect("put manifest");
        let status = r.status().as_u16();
        let body = r.text().await.unwrap_or_default();
        assert_eq!(status, 201, "put manifest {reference}: {body}");
        super::sha256(bytes)
    }
}
