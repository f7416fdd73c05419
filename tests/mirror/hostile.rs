//! Hostile peers around a real upstream (Debian's `docker-registry`), through the real binary:
//! a storage host that asks for credentials behind a blob redirect, and a token service whose
//! body never ends.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use base64::Engine as _;

use super::*;
use common::hostile::Peer;

/// Mirrors `fix/single:1.0` through a proxy in front of `up` that redirects blobs to a storage
/// host answering 401 with its own Bearer challenge (realm: a third recorder). Neither the
/// storage host nor its realm may get a credential; the error names the storage host.
fn storage_challenge_is_refused(up: &Upstream, user: &str, pass: &str) {
    up.push(
        "oci:fixtures/oci-single:1.0",
        "fix/single:1.0",
        false,
        Some(&format!("{user}:{pass}")),
    );
    let realm = Peer::realm();
    let storage = Peer::storage(&format!("http://{}/token", realm.host()));
    let proxy = Peer::redirecting_proxy(up.addr, storage.addr);
    let store = new_store();
    let out = run_publish(
        store.path(),
        &format!("docker://{}/fix/single:1.0", proxy.host()),
        &[],
        &[
            ("STATIC_REGISTRY_SRC_USERNAME", user),
            ("STATIC_REGISTRY_SRC_PASSWORD", pass),
        ],
        None,
    );
    let what = "publish through a redirect to a storage host that asks for credentials";
    fails_with(&out, what, &storage.host());
    let at_storage = storage.seen();
    // The redirect was followed (so the test exercises it) ...
    assert!(
        at_storage.iter().any(|s| s.path.contains("/blobs/sha256:")),
        "{what}: the storage host got no request: {}",
        describe_output(what, &out)
    );
    // ... with no credential and nothing naming the registry.
    for s in &at_storage {
        assert_eq!(s.header("authorization"), None, "{s:?}");
        assert_eq!(s.header("referer"), None, "{s:?}");
        assert!(
            s.headers.iter().all(|(_, v)| !v.contains(&proxy.host())),
            "a header names the registry: {s:?}"
        );
    }
    // The storage host's realm was never asked for anything, and its token never reached the
    // registry.
    assert!(realm.seen().is_empty(), "{:?}", realm.seen());
    assert!(
        proxy.seen().iter().all(|s| !s
            .header("authorization")
            .unwrap_or("")
            .contains("storage-token")),
        "{:?}",
        proxy.seen()
    );
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    assert_no_secrets(store.path(), &[&out], &[pass.to_owned(), basic]);
}

#[test]
fn a_storage_host_behind_a_redirect_never_gets_basic_credentials() {
    let (user, pass) = ("mirror-bot", "basic-pass-8c1e");
    let up = Upstream::start(UpstreamAuth::Htpasswd {
        user: user.into(),
        pass: pass.into(),
    });
    storage_challenge_is_refused(&up, user, pass);
}

#[test]
fn a_storage_host_behind_a_redirect_never_gets_a_bearer_token_or_credentials() {
    let (user, pass) = ("token-bot", "bearer-pass-3f9a");
    let tokens = TokenServer::start(user, pass);
    let up = Upstream::start(UpstreamAuth::Token {
        realm: tokens.realm(),
        service: TOKEN_SERVICE.into(),
        issuer: TOKEN_ISSUER.into(),
    });
    storage_challenge_is_refused(&up, user, pass);
    assert!(
        tokens.issued.load(Ordering::SeqCst) > 0,
        "the registry's own realm was used"
    );
}

#[test]
fn an_endless_token_body_fails_the_mirror_after_a_bounded_read() {
    let streamed = Arc::new(AtomicU64::new(0));
    let registry = Peer::endless_token_registry(streamed.clone());
    let store = new_store();
    let out = run_publish(
        store.path(),
        &format!("docker://{}/fix/single:1.0", registry.host()),
        &[],
        &[
            ("STATIC_REGISTRY_SRC_USERNAME", "alice"),
            ("STATIC_REGISTRY_SRC_PASSWORD", "endless-pass-77"),
        ],
        None,
    );
    fails_with(
        &out,
        "publish from an endless token service",
        "the token response from",
    );
    fails_with(
        &out,
        "publish from an endless token service",
        "larger than 1048576 bytes",
    );
    // The publisher stopped reading at the cap (plus what sat in socket buffers), and asked once:
    // a body too big is not retried.
    let n = streamed.load(Ordering::SeqCst);
    assert!(n < 32 << 20, "the publisher made the peer send {n} bytes");
    let token_requests = registry
        .seen()
        .iter()
        .filter(|s| s.path == "/token")
        .count();
    assert_eq!(token_requests, 1, "{:?}", registry.seen());
    assert_no_secrets(store.path(), &[&out], &["endless-pass-77".to_owned()]);
}
