//! Private repositories at startup and at the token check, against the real `serve` binary:
//! cheap bcrypt hashes are reported in the log, a token that is not yet valid (`nbf`) is refused,
//! and `[auth]` rules next to an origin whose URLs open more than one object are refused unless
//! the origin says `accept_shared_urls = true`.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::lb::Replica;
use common::{bin, free_port, new_store, publish, wait_for, wait_started, Startup};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

const ALICE_PW: &str = "alice-Pw-7Qx2-correct";
const PRIVATE: &str = "private/app";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A store with `private/app:1.0`, a token key, an htpasswd file (alice at bcrypt cost 5, what
/// `htpasswd -B` writes by default) and a config whose `[auth]` makes `private/` private.
struct World {
    dir: tempfile::TempDir,
    store: tempfile::TempDir,
    token_key: String,
    /// alice's bcrypt hash.
    hash: String,
}

impl World {
    fn new() -> World {
        let store = new_store();
        publish(
            store.path(),
            "oci:fixtures/oci-single:1.0",
            &["private/app:1.0"],
        );
        let dir = tempfile::Builder::new()
            .prefix("sr-auth-")
            .tempdir()
            .expect("temp dir");
        let token_key = hex::encode(rand::random::<[u8; 32]>());
        std::fs::write(dir.path().join("token.key"), format!("{token_key}\n")).unwrap();
        let hash = bcrypt::hash(ALICE_PW, 5).unwrap();
        std::fs::write(dir.path().join("htpasswd"), format!("alice:{hash}\n")).unwrap();
        World {
            dir,
            store,
            token_key,
            hash,
        }
    }

    /// Writes a config: the store, `extra` (origins), and `[auth]`.
    fn config(&self, extra: &str) -> String {
        let text = format!(
            "store = \"{store}\"\n\n{extra}\n\n[auth]\nhtpasswd = \"{dir}/htpasswd\"\n\
             token_key_file = \"{dir}/token.key\"\nrules = [{{ prefix = \"private/\", users = [\"alice\"] }}]\n",
            store = self.store.path().display(),
            dir = self.dir.path().display(),
        );
        let path = self.dir.path().join("serve.toml");
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    /// An HS256 token for `private/app`, signed with the replicas' key, valid from `nbf`.
    fn token(&self, nbf: u64) -> String {
        let iat = now();
        let claims = json!({
            "iss": "static-registry",
            "sub": "alice",
            "aud": "static-registry",
            "exp": iat + 3600,
            "nbf": nbf,
            "iat": iat,
            "access": [{"type": "repository", "name": PRIVATE, "actions": ["pull"]}],
        });
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(self.token_key.as_bytes()),
        )
        .expect("encode JWT")
    }
}

/// The status of `GET path` on the replica, with extra header lines.
fn status(r: &Replica, path: &str, headers: &[&str]) -> u16 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(common::http::raw(r.addr(), "GET", path.as_bytes(), headers))
        .status
}

/// Item 7 of issue 15: the log names a user whose hash is cheap, `/token` refuses an unknown
/// user and a wrong password alike, and a token whose `nbf` lies in the future is refused.
#[test]
fn cheap_hashes_are_reported_and_future_tokens_refused() {
    let w = World::new();
    let r = Replica::start(&["--config", &w.config("")], &[]);

    let log = wait_for("the cheap-hash warning", Duration::from_secs(10), || {
        let log = r.log();
        log.lines()
            .find(|l| l.contains("cheap bcrypt hash"))
            .map(str::to_owned)
    });
    assert!(log.contains("WARN"), "{log}");
    assert!(log.contains("alice") && log.contains("cost=5"), "{log}");
    assert!(log.contains("htpasswd -B -C 10"), "{log}");
    assert!(
        !r.log().contains(&w.hash[7..]),
        "the log holds alice's hash"
    );

    let basic = |up: &str| {
        format!(
            "Authorization: Basic {}",
            base64::engine::general_purpose::STANDARD.encode(up)
        )
    };
    let token_path = format!("/token?service=static-registry&scope=repository:{PRIVATE}:pull");
    assert_eq!(
        status(&r, &token_path, &[&basic(&format!("alice:{ALICE_PW}"))]),
        200
    );
    assert_eq!(status(&r, &token_path, &[&basic("alice:wrong")]), 401);
    assert_eq!(status(&r, &token_path, &[&basic("mallory:wrong")]), 401);

    let manifest = format!("/v2/{PRIVATE}/manifests/1.0");
    let bearer = |nbf: u64| format!("Authorization: Bearer {}", w.token(nbf));
    // The same token, valid since a second ago: redirected to the content.
    assert_eq!(status(&r, &manifest, &[&bearer(now() - 1)]), 307);
    // Not valid for another hour: refused like no token at all.
    assert_eq!(status(&r, &manifest, &[&bearer(now() + 3600)]), 401);
}

/// `[auth]` next to a public (unsigned) origin that serves every repository.
const PUBLIC_ORIGIN: &str = "[[origins]]\nname = \"open-cdn\"\n\
     signer = { kind = \"public\", base_url = \"http://127.0.0.1:9\" }\n";

/// Item 8 of issue 15: without the setting, startup fails naming the origin and the setting.
#[test]
fn auth_with_a_public_origin_is_refused() {
    let w = World::new();
    let config = w.config(PUBLIC_ORIGIN);
    let mut child = Command::new(bin())
        .args(["serve", "--config", &config, "--listen"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .env_remove("STATIC_REGISTRY_CONFIG")
        .env_remove("STATIC_REGISTRY_STORE")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    // Never ready: it either exits or is killed after 30 s.
    let started = wait_started(&mut child, "serve", || false);
    let out = child.wait_with_output().expect("serve output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    match started {
        Startup::Exited(status) => assert!(!status.success(), "{stderr}"),
        _ => panic!("serve kept running with [auth] and a public origin:\n{stderr}"),
    }
    assert!(stderr.contains("\"open-cdn\""), "{stderr}");
    assert!(stderr.contains("accept_shared_urls = true"), "{stderr}");
}

/// Item 8: with `accept_shared_urls = true` it starts, and says so in the log.
#[test]
fn accepted_shared_urls_start_with_a_warning() {
    let w = World::new();
    let config = w.config(&format!("{PUBLIC_ORIGIN}accept_shared_urls = true\n"));
    let r = Replica::start(&["--config", &config], &[]);
    let line = wait_for("the shared-URL warning", Duration::from_secs(10), || {
        r.log()
            .lines()
            .find(|l| l.contains("accept_shared_urls"))
            .map(str::to_owned)
    });
    assert!(line.contains("WARN") && line.contains("open-cdn"), "{line}");
}
