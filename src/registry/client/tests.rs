//! The client against the fake registry (`registry::testing`): the Bearer and Basic flows, token
//! refresh, refused credentials, retries, `Retry-After`, and redirects that must not carry
//! `Authorization` to another host.

use std::time::{Duration, Instant};

use super::*;
use crate::registry::credentials::{Credentials, Resolved, Secret};
use crate::registry::testing::{self, FakeAuth};

fn fast() -> ClientOptions {
    ClientOptions {
        retry: RetryPolicy {
            attempts: 4,
            base: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            max_retry_after: Duration::from_secs(2),
        },
        ..ClientOptions::default()
    }
}

fn creds(user: &str, pass: &str) -> Resolved {
    Resolved {
        credentials: Credentials::Basic {
            username: user.into(),
            password: Secret::new(pass),
        },
        origin: "--creds".into(),
    }
}

fn remote(addr: std::net::SocketAddr, rest: &str) -> RemoteRef {
    RemoteRef::parse(&format!("{addr}/{rest}")).unwrap()
}

fn bearer(uses: usize) -> FakeAuth {
    FakeAuth::Bearer {
        user: "alice".into(),
        pass: "s3cret".into(),
        anonymous: false,
        uses,
    }
}

/// A client for `fix/single:1.0` on the fake registry at `addr`, with `creds`.
async fn connect_single(
    addr: std::net::SocketAddr,
    creds: Resolved,
) -> anyhow::Result<RegistryClient> {
    RegistryClient::connect(&remote(addr, "fix/single:1.0"), creds, &fast()).await
}

/// An open fake registry serving `oci-single`, and an anonymous client to it.
async fn open_single() -> (testing::Fake, RegistryClient) {
    let fake = testing::start("oci-single", "fix/single", FakeAuth::Open).await;
    let c = connect_single(fake.addr, Resolved::anonymous())
        .await
        .unwrap();
    (fake, c)
}

/// Reads every blob of the fixture's tagged manifest, as a copy would.
async fn pull_all(c: &RegistryClient, tag: &str) -> usize {
    let m = c.manifest(tag, None).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&m.bytes).unwrap();
    let mut n = 0;
    let descs = std::iter::once(v["config"].clone()).chain(v["layers"].as_array().unwrap().clone());
    for d in descs {
        let digest = Digest::parse(d["digest"].as_str().unwrap()).unwrap();
        c.small_blob(&digest, d["size"].as_u64().unwrap())
            .await
            .unwrap();
        n += 1;
    }
    n
}

#[tokio::test]
async fn bearer_tokens_are_fetched_and_refreshed_on_401() {
    // Each token is good for two requests: a four-request copy needs fresh tokens mid-way.
    let fake = testing::start("oci-single", "fix/single", bearer(2)).await;
    let c = connect_single(fake.addr, creds("alice", "s3cret"))
        .await
        .unwrap();
    assert_eq!(pull_all(&c, "1.0").await, 3);
    let tokens = fake
        .state
        .token_requests
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        tokens >= 2,
        "expected a token refresh, got {tokens} token requests"
    );
    let log = fake.state.log();
    assert!(
        log.iter()
            .filter(|l| l.starts_with("GET /v2/fix/"))
            .all(|l| l.ends_with("auth=Bearer")),
        "{log:#?}"
    );
    // The token request carried the credentials (Basic) and asked for pull on the repository.
    assert!(
        log.iter().any(|l| l.starts_with("GET /token?")
            && l.contains("scope=repository%3Afix%2Fsingle%3Apull")
            && l.ends_with("auth=Basic")),
        "{log:#?}"
    );
}

#[tokio::test]
async fn refused_credentials_name_the_registry_and_user_never_the_password() {
    for auth in [
        bearer(100),
        FakeAuth::Basic {
            user: "alice".into(),
            pass: "s3cret".into(),
        },
    ] {
        let fake = testing::start("oci-single", "fix/single", auth.clone()).await;
        let err = connect_single(fake.addr, creds("alice", "wrong-pass"))
            .await
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains(&format!(
                "registry {} refused the credentials for user 'alice' (401): check --creds",
                fake.addr
            )),
            "{auth:?}: {msg}"
        );
        assert!(!msg.contains("wrong-pass"), "{msg}");
        // Anonymous: "requires authentication", with the ways to give credentials.
        let err = connect_single(fake.addr, Resolved::anonymous())
            .await
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("requires authentication to pull fix/single") && msg.contains("--creds"),
            "{auth:?}: {msg}"
        );
    }
}

#[tokio::test]
async fn anonymous_bearer_tokens_work() {
    let fake = testing::start(
        "oci-single",
        "fix/single",
        FakeAuth::Bearer {
            user: "x".into(),
            pass: "y".into(),
            anonymous: true,
            uses: 100,
        },
    )
    .await;
    let c = connect_single(fake.addr, Resolved::anonymous())
        .await
        .unwrap();
    assert_eq!(pull_all(&c, "1.0").await, 3);
    assert!(fake
        .state
        .log()
        .iter()
        .any(|l| l.starts_with("GET /token?") && l.ends_with("auth=-")));
}

#[tokio::test]
async fn redirected_blobs_do_not_carry_authorization_to_another_host() {
    let fake = testing::start(
        "oci-single",
        "fix/single",
        FakeAuth::Basic {
            user: "alice".into(),
            pass: "s3cret".into(),
        },
    )
    .await;
    let (cdn, seen) = testing::start_cdn(fake.state.clone()).await;
    // Same IP, other port: another origin for the purposes of credentials.
    *fake.state.redirect_blobs.lock().unwrap() = Some(format!("http://{cdn}"));
    let c = connect_single(fake.addr, creds("alice", "s3cret"))
        .await
        .unwrap();
    assert_eq!(pull_all(&c, "1.0").await, 3);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "every blob came from the CDN");
    assert!(seen.iter().all(Option::is_none), "{seen:?}");
    // ... while the registry itself got the credentials on every request.
    assert!(fake
        .state
        .log()
        .iter()
        .filter(|l| l.contains("/blobs/"))
        .all(|l| l.ends_with("auth=Basic")));
}

#[tokio::test]
async fn a_storage_host_that_asks_for_credentials_gets_none_and_is_named() {
    for auth in [
        FakeAuth::Basic {
            user: "alice".into(),
            pass: "s3cret".into(),
        },
        bearer(100),
    ] {
        let fake = testing::start("oci-single", "fix/single", auth.clone()).await;
        let (storage, seen) = testing::start_hostile_storage().await;
        *fake.state.redirect_blobs.lock().unwrap() = Some(format!("http://{storage}"));
        let c = connect_single(fake.addr, creds("alice", "s3cret"))
            .await
            .unwrap();
        let m = c.manifest("1.0", None).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&m.bytes).unwrap();
        let config = Digest::parse(v["config"]["digest"].as_str().unwrap()).unwrap();
        let err = c
            .small_blob(&config, v["config"]["size"].as_u64().unwrap())
            .await
            .unwrap_err();
        let msg = format!("{err:#}");
        let seen = seen.lock().unwrap().clone();
        // The storage host's challenge is not the registry's: no credential, no token request.
        assert!(
            seen.iter().all(|(_, a)| a.is_none()),
            "{auth:?}: credentials reached the storage host: {seen:?}"
        );
        assert!(
            seen.iter().all(|(p, _)| p != "/token"),
            "{auth:?}: the storage host's realm was asked for a token: {seen:?}"
        );
        assert!(msg.contains(&storage.to_string()), "{auth:?}: {msg}");
        assert!(!msg.contains("s3cret"), "{msg}");
    }
}

#[tokio::test]
async fn an_endless_token_body_is_refused_after_a_bounded_read() {
    let fake = testing::start("oci-single", "fix/single", bearer(100)).await;
    fake.state
        .endless_token
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let err = connect_single(fake.addr, creds("alice", "s3cret"))
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("token"), "{msg}");
    assert!(msg.contains("larger than"), "{msg}");
    // The client stopped reading: what the fake streamed is the cap plus socket buffers, not
    // the fake's 256 MiB bound (per attempt).
    let streamed = fake
        .state
        .streamed
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(streamed < 64 << 20, "the client read {streamed} bytes");
}

#[tokio::test]
async fn transient_failures_are_retried_and_retry_after_is_honoured() {
    let (fake, c) = open_single().await;
    fake.state
        .fail_503
        .store(2, std::sync::atomic::Ordering::SeqCst);
    c.manifest("1.0", None).await.unwrap();
    assert_eq!(Counters::get(&c.counters.retries), 2);
    fake.state
        .rate_limit_once
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let t = Instant::now();
    c.manifest("1.0", None).await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(950),
        "Retry-After: 1 not honoured ({:?})",
        t.elapsed()
    );
    // A registry that keeps failing: the error names it and the status.
    fake.state
        .fail_503
        .store(100, std::sync::atomic::Ordering::SeqCst);
    let err = c.manifest("1.0", None).await.unwrap_err();
    assert!(
        format!("{err:#}").contains(&format!("registry {} answered 503", fake.addr)),
        "{err:#}"
    );
}

#[tokio::test]
async fn manifests_are_checked_against_their_digest() {
    let (_fake, c) = open_single().await;
    let m = c.manifest("1.0", None).await.unwrap();
    assert_eq!(Digest::sha256_of(&m.bytes), m.digest);
    assert_eq!(m.media_type, "application/vnd.oci.image.manifest.v1+json");
    let by_digest = c
        .manifest(m.digest.as_str(), Some(&m.digest))
        .await
        .unwrap();
    assert_eq!(by_digest.bytes, m.bytes);
    let other = Digest::sha256_of(b"something else");
    assert!(c.manifest("1.0", Some(&other)).await.is_err());
    assert!(c.manifest_opt("nope", None).await.unwrap().is_none());
    // distribution-like registries have no referrers API: None, not an error.
    assert!(c.referrers(&m.digest).await.unwrap().is_none());
}

#[test]
fn next_links() {
    assert_eq!(
        next_link(r#"</v2/a/referrers/x?n=1&last=y>; rel="next""#).as_deref(),
        Some("/v2/a/referrers/x?n=1&last=y")
    );
}

#[tokio::test]
async fn responses_that_never_finish_time_out() {
    let fake = testing::start("oci-single", "fix/single", FakeAuth::Open).await;
    // The fake sends a byte every 20 ms, so the read timeout never fires: only the total does.
    let opts = ClientOptions {
        request_timeout: Duration::from_millis(300),
        blob_timeout: Duration::from_millis(300),
        read_timeout: Duration::from_secs(60),
        ..fast()
    };
    let c = RegistryClient::connect(
        &remote(fake.addr, "fix/single:1.0"),
        Resolved::anonymous(),
        &opts,
    )
    .await
    .unwrap();
    let m = c.manifest("1.0", None).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&m.bytes).unwrap();
    let layer = &v["layers"][0];
    let layer_digest = Digest::parse(layer["digest"].as_str().unwrap()).unwrap();
    fake.state
        .trickle
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let err = c.manifest("1.0", None).await.unwrap_err();
    let timed_out = |e: &anyhow::Error| {
        e.chain().any(|c| {
            c.downcast_ref::<HopError>()
                .is_some_and(HopError::is_timeout)
                || c.downcast_ref::<reqwest::Error>()
                    .is_some_and(reqwest::Error::is_timeout)
        })
    };
    assert!(timed_out(&err), "{err:#}");
    // A blob: the response starts, then its body is cut by the total time (and resumed by
    // the reader in remote.rs, which counts the resumes).
    let (mut resp, _) = c.blob(&layer_digest, 0).await.unwrap();
    let err = loop {
        match resp.chunk().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the trickled blob ended"),
            Err(e) => break anyhow::Error::new(e),
        }
    };
    assert!(timed_out(&err), "{err:#}");
    // Nothing close to the fake's 10 s of trickle was read.
    let streamed = fake
        .state
        .streamed
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(streamed < 400, "read {streamed} trickled bytes");
}

#[tokio::test]
async fn a_token_realm_must_be_https_when_the_registry_is() {
    let challenge = Challenge {
        scheme: "bearer".into(),
        params: [("realm".to_owned(), "http://127.0.0.1:9/token".to_owned())].into(),
    };
    let t = Transport::new(true, Duration::from_secs(1), Duration::from_secs(1), 3).unwrap();
    let https = Url::parse("https://registry.example/").unwrap();
    let creds = creds("alice", "s3cret");
    let req = TokenRequest {
        challenge: &challenge,
        scope: "repository:a:pull",
        creds: &creds,
        registry: "registry.example",
        registry_url: &https,
        repository: "a",
        timeout: Duration::from_secs(1),
        max_body: 1024,
    };
    let err = fetch_token(&t, &req).await.unwrap_err();
    assert!(
        format!("{err:#}").contains("plain-http token realm (127.0.0.1:9)"),
        "{err:#}"
    );
    // A plain-http registry (loopback) may name a plain-http realm: the request is made (and
    // fails to connect to the discard port, which is not the refusal above).
    let http = Url::parse("http://127.0.0.1:5000/").unwrap();
    let err = fetch_token(
        &t,
        &TokenRequest {
            registry_url: &http,
            ..req
        },
    )
    .await
    .unwrap_err();
    assert!(
        !format!("{err:#}").contains("plain-http token realm"),
        "{err:#}"
    );
}
