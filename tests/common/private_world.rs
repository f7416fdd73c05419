//! The world of the private-repository tests: two users, a token secret, two replicas behind a
//! balancer, and the HTTP, token and client checks those tests share.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::common::checks::check_podman_id_and_layers;
use crate::common::clients::{Containerd, Podman, Skopeo};
use crate::common::fixtures::{check_pulled, Expect, Platforms};
use crate::common::lb::{Balancer, Replica};
use crate::common::{new_store, publish};
use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

pub const ALICE_PW: &str = "alice-Pw-7Qx2-correct";
pub const BOB_PW: &str = "bob-Pw-9Kd4-correct";
pub const WRONG_PW: &str = "alice-Pw-WRONG-guess";
pub const SERVICE: &str = "static-registry";

pub const PUBLIC: &str = "public/app";
pub const PRIVATE: &str = "private/app";

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

// ---------------------------------------------------------------------------------------------
// Shared setup: secrets, configuration, a store, two replicas and a balancer
// ---------------------------------------------------------------------------------------------

/// Key files and users shared by every replica.
pub struct Secrets {
    pub dir: tempfile::TempDir,
    pub origin_key: String,
    pub token_key: String,
}

impl Secrets {
    pub fn new() -> Secrets {
        let dir = tempfile::Builder::new()
            .prefix("sr-secrets-")
            .tempdir()
            .expect("secrets dir");
        let origin_key = hex::encode(rand::random::<[u8; 32]>());
        let token_key = hex::encode(rand::random::<[u8; 32]>());
        std::fs::write(dir.path().join("origin.key"), format!("{origin_key}\n")).unwrap();
        std::fs::write(dir.path().join("token.key"), format!("{token_key}\n")).unwrap();
        // bcrypt, as `htpasswd -B` writes it (a low cost keeps the tests quick).
        let htpasswd = format!(
            "# users\nalice:{}\nbob:{}\n",
            bcrypt::hash(ALICE_PW, 5).unwrap(),
            bcrypt::hash(BOB_PW, 5).unwrap()
        );
        std::fs::write(dir.path().join("htpasswd"), htpasswd).unwrap();
        Secrets {
            dir,
            origin_key,
            token_key,
        }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// The `[embedded]` and (with `auth`) `[auth]` sections.
    pub fn toml(&self, auth: bool) -> String {
        let mut s = format!(
            "[embedded]\nsecret_file = \"{}\"\n",
            self.path("origin.key")
        );
        if auth {
            s.push_str(&format!(
                "\n[auth]\nhtpasswd = \"{}\"\ntoken_key_file = \"{}\"\ntoken_ttl = 300\n\
                 private_url_ttl = 60\nrules = [{{ prefix = \"private/\", users = [\"alice\"] }}]\n",
                self.path("htpasswd"),
                self.path("token.key"),
            ));
        }
        s
    }

    pub fn write_config(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write config");
        p.display().to_string()
    }
}

/// A store with `public/app:1.0` (oci-single) and `private/app:1.0` (docker-legacy), two
/// replicas sharing the embedded origin's secret (and, with auth, the token key), and an nginx
/// balancer in front of them.
pub struct LbWorld {
    pub store: tempfile::TempDir,
    pub secrets: Secrets,
    pub a: Replica,
    pub b: Replica,
    pub lb: Balancer,
}

pub fn lb_world(auth: bool) -> LbWorld {
    let store = new_store();
    publish(
        store.path(),
        "oci:fixtures/oci-single:1.0",
        &["public/app:1.0"],
    );
    publish(
        store.path(),
        "docker-archive:fixtures/docker-legacy.tar",
        &["private/app:1.0"],
    );
    let secrets = Secrets::new();
    let config = secrets.write_config(
        "replica.toml",
        &format!(
            "store = \"{}\"\n\n[serve]\ntrusted_proxy_hops = 1\nurl_ttl = 300\n\n{}",
            store.path().display(),
            secrets.toml(auth)
        ),
    );
    let a = Replica::start(&["--config", &config, "--shutdown-timeout", "30"], &[]);
    let b = Replica::start(&["--config", &config, "--shutdown-timeout", "30"], &[]);
    let lb = Balancer::start(&[a.port, b.port]);
    LbWorld {
        store,
        secrets,
        a,
        b,
        lb,
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP helpers
// ---------------------------------------------------------------------------------------------

pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub async fn send(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut r = http.request(method.clone(), url);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let resp = r
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
    Answer {
        status,
        headers,
        body,
    }
}

pub fn basic(user_pw: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_pw)
    )
}

/// `GET base/token?service=…&scope=…` with optional Basic credentials.
pub async fn fetch_token(
    http: &reqwest::Client,
    base: &str,
    user_pw: Option<&str>,
    scope: &str,
) -> Answer {
    let url = format!("{base}/token?service={SERVICE}&scope={scope}");
    let auth = user_pw.map(basic);
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("authorization", a)])
        .unwrap_or_default();
    send(http, Method::GET, &url, &headers).await
}

pub async fn token_for(
    http: &reqwest::Client,
    base: &str,
    user_pw: Option<&str>,
    repo: &str,
) -> String {
    let a = fetch_token(http, base, user_pw, &format!("repository:{repo}:pull")).await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "token for {repo}: {}",
        String::from_utf8_lossy(&a.body)
    );
    let v: Value = serde_json::from_slice(&a.body).expect("token JSON");
    v["token"].as_str().expect("a token").to_owned()
}

/// The `access` claim of a JWT (not verified: for assertions only).
pub fn grants(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("JWT payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url payload");
    let v: Value = serde_json::from_slice(&bytes).expect("JSON claims");
    v["access"].clone()
}

/// A query parameter of a (possibly relative) URL.
pub fn query_param(location: &str, name: &str) -> Option<String> {
    let u = url::Url::parse("http://base.invalid")
        .unwrap()
        .join(location)
        .ok()?;
    u.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The digest a tag points at (HEAD on the manifest, with a token when given).
pub async fn tag_digest(
    http: &reqwest::Client,
    base: &str,
    repo: &str,
    tag: &str,
    token: Option<&str>,
) -> String {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .as_deref()
        .map(|b| vec![("authorization", b)])
        .unwrap_or_default();
    let a = send(
        http,
        Method::HEAD,
        &format!("{base}/v2/{repo}/manifests/{tag}"),
        &headers,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "HEAD {repo}:{tag}");
    a.header("docker-content-digest")
        .expect("Docker-Content-Digest")
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// Client checks
// ---------------------------------------------------------------------------------------------

/// Why a pull must be refused.
#[derive(Clone, Copy, Debug)]
pub enum Refusal {
    /// Wrong credentials: the token endpoint refuses them (401), so no token is issued at all.
    BadCredentials,
    /// No grant (anonymous, or a user without a rule): the token has no access, the manifest
    /// request gets 401.
    NoAccess,
}

/// A refused pull: the client failed, and its error names the reason.
pub fn refused(what: &str, why: Refusal, r: Result<(), String>) -> Result<(), String> {
    let Err(e) = r else {
        return Err(format!("{what}: the pull succeeded, it must be refused"));
    };
    let l = e.to_ascii_lowercase();
    let expected: &[&str] = match why {
        // skopeo/podman: "unable to retrieve auth token: invalid username/password";
        // ctr: "failed to fetch oauth token: unexpected status: 401 Unauthorized".
        Refusal::BadCredentials => &[
            "invalid username/password",
            "fetch oauth token: unexpected status: 401",
        ],
        // skopeo/podman: "reading manifest 1.0 in …: unauthorized";
        // ctr: "failed with status code [manifests 1.0]: 401 Unauthorized".
        Refusal::NoAccess => &[
            "reading manifest 1.0 in",
            "[manifests 1.0]: 401 unauthorized",
        ],
    };
    let unauthorized = l.contains("unauthorized");
    if unauthorized && expected.iter().any(|n| l.contains(n)) {
        Ok(())
    } else {
        Err(format!("{what}: refused, but not for {why:?}:\n{e}"))
    }
}

pub fn skopeo_pull(
    skopeo: &mut Skopeo,
    host: &str,
    reference: &str,
    args: &[&str],
    expect: &Expect,
    top: &str,
) -> Result<(), String> {
    let pulled = skopeo.copy_with(host, reference, args)?;
    pulled.check_file_names()?;
    let (got, _) = pulled.manifest()?;
    if got != top {
        return Err(format!(
            "skopeo pulled {got} for {reference}, the tag is {top}"
        ));
    }
    check_pulled(expect, &got, Platforms::All, &mut |d| pulled.get(d))
}

pub fn podman_pull(
    podman: &Podman,
    image: &str,
    args: &[&str],
    expect: &Expect,
) -> Result<(), String> {
    podman.pull_with(image, args)?;
    let info = podman.inspect(image)?;
    check_podman_id_and_layers(&info, expect.amd64())?;
    podman.remove_all()
}

pub fn ctr_pull(
    ctd: &Containerd,
    image: &str,
    args: &[&str],
    expect: &Expect,
    top: &str,
) -> Result<(), String> {
    ctd.pull_with(image, args)?;
    let (digest, media_type) = ctd.image(image)?;
    if digest != top {
        return Err(format!(
            "containerd recorded {digest} ({media_type}), want {top}"
        ));
    }
    check_pulled(expect, &digest, Platforms::Amd64, &mut |d| ctd.content(d))
}

pub fn check_all(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} checks failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// A JWT with the server's claim shape, signed HS256 with `key`.
pub fn mint(key: &[u8], sub: &str, aud: &str, exp: u64, repo: &str) -> String {
    let t = now();
    let claims = json!({
        "iss": "static-registry",
        "sub": sub,
        "aud": aud,
        "exp": exp,
        "nbf": t.saturating_sub(1),
        "iat": t,
        "access": [{ "type": "repository", "name": repo, "actions": ["pull"] }],
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(key),
    )
    .expect("encode JWT")
}

/// An unsigned JWT (`alg: none`).
pub fn unsigned(repo: &str) -> String {
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let t = now();
    format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(json!({
            "iss": "static-registry", "sub": "alice", "aud": SERVICE, "exp": t + 300,
            "nbf": t - 1, "iat": t,
            "access": [{ "type": "repository", "name": repo, "actions": ["pull"] }],
        }))
    )
}
