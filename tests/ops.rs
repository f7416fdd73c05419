//! Operating `static-registry serve`: replicas behind a real nginx load balancer, private
//! repositories (Docker's token flow), graceful shutdown and rolling restarts under load, TLS with
//! certificate hot reload, readiness and metrics that follow an origin's health, and logs that
//! never hold a credential.
//!
//! Everything runs the real binary, real clients (skopeo, podman, containerd's `ctr`), a real
//! nginx and real `openssl`-made certificates, on loopback, each test in its own temporary
//! directories and ports.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use common::clients::{Containerd, Podman, Skopeo};
use common::download::{big_image, start_download};
use common::fixtures::{self, Expect};
use common::lb::{metric_sum, Balancer, Replica};
use common::load::*;
use common::nginx::{Nginx, SECURE_LINK_TEMPLATE};
use common::pki::*;
use common::private_world::*;
use common::{describe_output, new_store, publish, require_tool, sha256, wait_for};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// 1 + 2. Pulls through the balancer: public anonymously, private with credentials only
// ---------------------------------------------------------------------------------------------

#[test]
fn balancer_serves_public_and_private_pulls_to_every_client() {
    let w = lb_world(true);
    let host = w.lb.host();
    let base = w.lb.url("");
    let public = fixtures::oci_single();
    let private = fixtures::docker_legacy();
    let http = common::http::client();
    let rt = rt();
    let alice_token = rt.block_on(token_for(
        &http,
        &base,
        Some(&format!("alice:{ALICE_PW}")),
        PRIVATE,
    ));
    let public_top = rt.block_on(tag_digest(&http, &base, PUBLIC, "1.0", None));
    let private_top = rt.block_on(tag_digest(&http, &base, PRIVATE, "1.0", Some(&alice_token)));
    if let Expect::Image(img) = &public {
        assert_eq!(img.manifest.as_deref(), Some(public_top.as_str()));
    }

    let alice = format!("alice:{ALICE_PW}");
    let wrong = format!("alice:{WRONG_PW}");
    let bob = format!("bob:{BOB_PW}");
    let public_ref = format!("{PUBLIC}:1.0");
    let private_ref = format!("{PRIVATE}:1.0");
    let mut failures = Vec::new();
    let mut note = |what: &str, r: Result<(), String>| {
        if let Err(e) = r {
            failures.push(format!("[{what}] {e}"));
        }
    };

    // skopeo
    let mut skopeo = Skopeo::new();
    let plain = "--src-tls-verify=false";
    let r = skopeo_pull(
        &mut skopeo,
        &host,
        &public_ref,
        &[plain],
        &public,
        &public_top,
    );
    note("skopeo public anonymous", r);
    let r = skopeo.copy_with(&host, &private_ref, &[plain]).map(|_| ());
    note(
        "skopeo private anonymous",
        refused("skopeo private anonymous", Refusal::NoAccess, r),
    );
    let r = skopeo_pull(
        &mut skopeo,
        &host,
        &private_ref,
        &[plain, "--src-creds", &alice],
        &private,
        &private_top,
    );
    note("skopeo private alice", r);
    let r = skopeo
        .copy_with(&host, &private_ref, &[plain, "--src-creds", &wrong])
        .map(|_| ());
    note(
        "skopeo private wrong password",
        refused("skopeo wrong password", Refusal::BadCredentials, r),
    );
    let r = skopeo
        .copy_with(&host, &private_ref, &[plain, "--src-creds", &bob])
        .map(|_| ());
    note(
        "skopeo private bob",
        refused("skopeo bob", Refusal::NoAccess, r),
    );

    // podman
    let podman = Podman::new();
    let plain = "--tls-verify=false";
    let public_image = format!("{host}/{public_ref}");
    let private_image = format!("{host}/{private_ref}");
    note(
        "podman public anonymous",
        podman_pull(&podman, &public_image, &[plain], &public),
    );
    let r = podman.pull_with(&private_image, &[plain]);
    note(
        "podman private anonymous",
        refused("podman private anonymous", Refusal::NoAccess, r),
    );
    note(
        "podman private alice",
        podman_pull(
            &podman,
            &private_image,
            &[plain, "--creds", &alice],
            &private,
        ),
    );
    let r = podman.pull_with(&private_image, &[plain, "--creds", &wrong]);
    note(
        "podman private wrong password",
        refused("podman wrong password", Refusal::BadCredentials, r),
    );
    let r = podman.pull_with(&private_image, &[plain, "--creds", &bob]);
    note(
        "podman private bob",
        refused("podman bob", Refusal::NoAccess, r),
    );

    // containerd
    let ctd = Containerd::start();
    let plain = "--plain-http";
    note(
        "ctr public anonymous",
        ctr_pull(&ctd, &public_image, &[plain], &public, &public_top),
    );
    let r = ctd.pull_with(&private_image, &[plain]);
    note(
        "ctr private anonymous",
        refused("ctr private anonymous", Refusal::NoAccess, r),
    );
    let r = ctd.pull_with(&private_image, &[plain, "--user", &wrong]);
    note(
        "ctr private wrong password",
        refused("ctr wrong password", Refusal::BadCredentials, r),
    );
    let r = ctd.pull_with(&private_image, &[plain, "--user", &bob]);
    note("ctr private bob", refused("ctr bob", Refusal::NoAccess, r));
    note(
        "ctr private alice",
        ctr_pull(
            &ctd,
            &private_image,
            &[plain, "--user", &alice],
            &private,
            &private_top,
        ),
    );
    check_all(failures);

    // Both replicas answered client traffic (round robin), and nginx never failed a request.
    for (name, r) in [("A", &w.a), ("B", &w.b)] {
        let m = r.metrics();
        let served = metric_sum(
            &m,
            "static_registry_requests_total",
            &[r#"route="manifest""#],
        )
        .unwrap_or(0.0);
        assert!(
            served > 0.0,
            "replica {name} answered no manifest request:\n{m}"
        );
    }
    let log = w.lb.access_log();
    assert!(
        !log.lines()
            .any(|l| l.contains("\" 502 ") || l.contains("\" 504 ")),
        "the balancer failed requests:\n{log}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. A private repository is never redirected without a valid token
// ---------------------------------------------------------------------------------------------

#[test]
fn private_repositories_are_never_redirected_without_a_valid_token() {
    let w = lb_world(true);
    let http = common::http::client();
    let lb = w.lb.url("");
    let (a, b) = (w.a.url(""), w.b.url(""));
    let lb_host = w.lb.host();
    let key = w.secrets.token_key.as_bytes().to_vec();
    rt().block_on(async {
        let alice = format!("alice:{ALICE_PW}");
        let alice_token = token_for(&http, &a, Some(&alice), PRIVATE).await;
        let config = {
            let top = tag_digest(&http, &a, PRIVATE, "1.0", Some(&alice_token)).await;
            let m = send(&http, Method::GET, &format!("{a}/v2/{PRIVATE}/manifests/{top}"), &[("authorization", &format!("Bearer {alice_token}"))]).await;
            let loc = m.header("location").expect("redirect").to_owned();
            let body = send(&http, Method::GET, &format!("{a}{loc}"), &[]).await.body;
            assert_eq!(sha256(&body), top);
            let m: Value = serde_json::from_slice(&body).unwrap();
            m["config"]["digest"].as_str().unwrap().to_owned()
        };

        // The challenge: realm from the balancer's X-Forwarded-Proto/-Host (nginx itself sends
        // `Host: static_registry`, the upstream name, so only the forwarded headers are right).
        let v2 = send(&http, Method::GET, &format!("{lb}/v2/"), &[]).await;
        assert_eq!(v2.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            v2.header("www-authenticate"),
            Some(format!("Bearer realm=\"http://{lb_host}/token\",service=\"{SERVICE}\"").as_str())
        );
        // Without a proxy, the request's own host; a trusted proxy's headers otherwise.
        let direct = send(&http, Method::GET, &format!("{a}/v2/"), &[]).await;
        assert_eq!(
            direct.header("www-authenticate"),
            Some(format!("Bearer realm=\"http://{}/token\",service=\"{SERVICE}\"", w.a.host()).as_str())
        );
        let proxied = send(&http, Method::GET, &format!("{a}/v2/"), &[("x-forwarded-proto", "https"), ("x-forwarded-host", "registry.example.com")]).await;
        assert_eq!(
            proxied.header("www-authenticate"),
            Some(format!("Bearer realm=\"https://registry.example.com/token\",service=\"{SERVICE}\"").as_str())
        );

        // Every kind of private request, and every kind of bad token.
        let requests: Vec<(Method, String)> = vec![
            (Method::GET, format!("/v2/{PRIVATE}/manifests/1.0")),
            (Method::HEAD, format!("/v2/{PRIVATE}/manifests/1.0")),
            (Method::GET, format!("/v2/{PRIVATE}/blobs/{config}")),
            (Method::HEAD, format!("/v2/{PRIVATE}/blobs/{config}")),
            (Method::GET, format!("/v2/{PRIVATE}/tags/list")),
            (Method::GET, format!("/v2/{PRIVATE}/tags/list?n=1")),
            (Method::GET, format!("/v2/{PRIVATE}/referrers/{config}")),
            (Method::GET, format!("/v2/{PRIVATE}/manifests/no-such-tag")),
        ];
        let other_key = hex::encode(rand::random::<[u8; 32]>());
        let anonymous = token_for(&http, &a, None, PRIVATE).await;
        assert_eq!(grants(&anonymous), json!([]), "an anonymous token grants nothing private");
        let bob_token = token_for(&http, &a, Some(&format!("bob:{BOB_PW}")), PRIVATE).await;
        assert_eq!(grants(&bob_token), json!([]), "bob has no rule for private/");
        let other_repo = token_for(&http, &a, Some(&alice), "private/other").await;
        assert_eq!(grants(&other_repo)[0]["name"], "private/other");
        let bad_tokens: Vec<(&str, String)> = vec![
            ("forged (another key)", mint(other_key.as_bytes(), "alice", SERVICE, now() + 300, PRIVATE)),
            ("expired", mint(&key, "alice", SERVICE, now() - 120, PRIVATE)),
            ("for another service", mint(&key, "alice", "another-service", now() + 300, PRIVATE)),
            ("alg none", unsigned(PRIVATE)),
            ("for another repository", other_repo),
            ("anonymous", anonymous),
            ("bob's", bob_token),
            ("garbage", "not.a.jwt".into()),
        ];
        let scope_challenge = format!(
            "Bearer realm=\"http://{lb_host}/token\",service=\"{SERVICE}\",scope=\"repository:{PRIVATE}:pull\""
        );
        let mut failures = Vec::new();
        for (method, path) in &requests {
            let mut cases: Vec<(String, Vec<(&str, String)>)> = vec![("no token".into(), vec![])];
            cases.push(("Basic credentials instead of a token".into(), vec![("authorization", basic(&alice))]));
            for (what, t) in &bad_tokens {
                cases.push((format!("{what} token"), vec![("authorization", format!("Bearer {t}"))]));
            }
            for (what, headers) in &cases {
                let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let r = send(&http, method.clone(), &format!("{lb}{path}"), &h).await;
                if r.status != StatusCode::UNAUTHORIZED || r.header("location").is_some() {
                    failures.push(format!("{method} {path} with {what}: {} location={:?}", r.status, r.header("location")));
                } else if r.header("www-authenticate") != Some(scope_challenge.as_str()) {
                    failures.push(format!("{method} {path} with {what}: challenge {:?}, want {scope_challenge}", r.header("www-authenticate")));
                }
            }
        }
        check_all(failures);

        // The positive control: a token minted with the real key, like the server's, is valid —
        // so the rejections above are about what is wrong with each token.
        let minted = mint(&key, "alice", SERVICE, now() + 300, PRIVATE);
        let r = send(&http, Method::GET, &format!("{lb}/v2/{PRIVATE}/manifests/1.0"), &[("authorization", &format!("Bearer {minted}"))]).await;
        assert_eq!(r.status, StatusCode::TEMPORARY_REDIRECT, "a valid minted token");

        // Tokens are stateless: one from replica A works on replica B, and the reverse.
        let from_b = token_for(&http, &b, Some(&alice), PRIVATE).await;
        for (what, token, base) in [("A's token on B", &alice_token, &b), ("B's token on A", &from_b, &a)] {
            let bearer = format!("Bearer {token}");
            let r = send(&http, Method::GET, &format!("{base}/v2/{PRIVATE}/manifests/1.0"), &[("authorization", &bearer)]).await;
            assert_eq!(r.status, StatusCode::TEMPORARY_REDIRECT, "{what}");
            let loc = r.header("location").expect("Location").to_owned();
            // Private content gets short-lived URLs (private_url_ttl = 60 < url_ttl = 300).
            let exp: u64 = query_param(&loc, "exp").expect("exp").parse().unwrap();
            assert!(exp <= now() + 60, "{what}: a private URL lives until {exp}, more than 60 s");
            // ...which the other replica's origin serves (the shared origin secret).
            let other = if base == &a { &b } else { &a };
            let got = send(&http, Method::GET, &format!("{other}{loc}"), &[]).await;
            assert_eq!(got.status, StatusCode::OK, "{what}: the other replica's origin");
            let head = send(&http, Method::HEAD, &format!("{base}/v2/{PRIVATE}/manifests/1.0"), &[("authorization", &bearer)]).await;
            assert_eq!(head.status, StatusCode::OK);
            assert_eq!(head.header("docker-content-digest"), Some(sha256(&got.body).as_str()));
            // The same requests right after, without the token: a private answer is never
            // re-used for another client (recent answers keep public content only).
            for method in [Method::HEAD, Method::GET] {
                let r = send(&http, method.clone(), &format!("{base}/v2/{PRIVATE}/manifests/1.0"), &[]).await;
                assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {method} right after without a token");
                assert!(r.header("location").is_none() && r.header("docker-content-digest").is_none());
            }
        }
        // Public content: anonymous, long-lived URLs, no Authorization needed anywhere.
        let r = send(&http, Method::GET, &format!("{lb}/v2/{PUBLIC}/manifests/1.0"), &[]).await;
        assert_eq!(r.status, StatusCode::TEMPORARY_REDIRECT);
        let exp: u64 = query_param(r.header("location").unwrap(), "exp").unwrap().parse().unwrap();
        assert!(exp > now() + 60, "public URLs use url_ttl (300 s)");

        // The token endpoint refuses wrong passwords and unknown users outright.
        for creds in [format!("alice:{WRONG_PW}"), format!("mallory:{ALICE_PW}"), "alice:".into()] {
            let r = fetch_token(&http, &lb, Some(&creds), &format!("repository:{PRIVATE}:pull")).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "token for {creds}");
            assert!(!String::from_utf8_lossy(&r.body).contains("eyJ"), "no token for {creds}");
        }

        // The catalog shows each client what it may pull.
        let anon = send(&http, Method::GET, &format!("{lb}/v2/_catalog?n=100"), &[]).await;
        let repos: Value = serde_json::from_slice(&anon.body).unwrap_or(Value::Null);
        assert_eq!(repos["repositories"], json!([PUBLIC]), "anonymous catalog: {}", String::from_utf8_lossy(&anon.body));
        let cat_token = {
            let r = fetch_token(&http, &lb, Some(&alice), &format!("registry:catalog:* repository:{PRIVATE}:pull")).await;
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            v["token"].as_str().unwrap().to_owned()
        };
        let full = send(&http, Method::GET, &format!("{lb}/v2/_catalog?n=100"), &[("authorization", &format!("Bearer {cat_token}"))]).await;
        let repos: Value = serde_json::from_slice(&full.body).unwrap_or(Value::Null);
        assert_eq!(repos["repositories"], json!([PRIVATE, PUBLIC]), "alice's catalog: {}", String::from_utf8_lossy(&full.body));
    });
    drop(w.store);
}

// ---------------------------------------------------------------------------------------------
// 3. Graceful shutdown: rolling restarts under load, and in-flight downloads
// ---------------------------------------------------------------------------------------------

#[test]
fn rolling_restart_under_load_fails_no_request() {
    let mut w = lb_world(false);
    let rt = rt();
    let http = common::http::client();
    let base = w.lb.url("");
    let (manifest, config) = rt.block_on(async {
        let top = tag_digest(&http, &base, PUBLIC, "1.0", None).await;
        let m = send(
            &http,
            Method::GET,
            &format!("{base}/v2/{PUBLIC}/manifests/1.0"),
            &[],
        )
        .await;
        let body = send(
            &http,
            Method::GET,
            &format!("{base}{}", m.header("location").unwrap()),
            &[],
        )
        .await
        .body;
        let v: Value = serde_json::from_slice(&body).unwrap();
        (top, v["config"]["digest"].as_str().unwrap().to_owned())
    });

    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(LoadStats::default());
    let workers: Vec<_> = (0..6)
        .map(|_| {
            rt.spawn(load_worker(
                http.clone(),
                base.clone(),
                manifest.clone(),
                config.clone(),
                stop.clone(),
                stats.clone(),
            ))
        })
        .collect();
    stats.wait_progress(300, "the load to start");

    let mut progress = Vec::new();
    for (name, r) in [("A", &mut w.a), ("B", &mut w.b)] {
        assert!(
            served(r) > 0.0,
            "replica {name} got no balanced traffic before its restart"
        );
        r.terminate();
        let status = r.wait_exit(Duration::from_secs(60));
        assert!(
            status.success(),
            "replica {name} exited with {status} on SIGTERM:\n{}",
            r.log()
        );
        assert!(
            r.log().contains("drained"),
            "replica {name} did not drain:\n{}",
            r.log()
        );
        let down = stats.ok();
        stats.wait_progress(200, &format!("progress while replica {name} is down"));
        r.restart();
        // In rotation again: nginx retries it after fail_timeout and sends it traffic.
        wait_for(
            &format!("restarted replica {name} to answer balanced requests"),
            Duration::from_secs(60),
            || (served(r) >= 20.0).then_some(()),
        );
        stats.wait_progress(200, &format!("progress after replica {name} is back"));
        progress.push((name, down, stats.ok()));
    }
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for wk in workers {
            wk.await.expect("load worker");
        }
    });

    let failed = stats.failed.load(Ordering::Relaxed);
    assert_eq!(
        failed,
        0,
        "{failed} requests failed during the rolling restart (of {} that succeeded); first ones:\n{}",
        stats.ok(),
        stats.failures.lock().unwrap().join("\n")
    );
    eprintln!("rolling restart: {} requests, 0 failed; (replica, ok when it stopped, ok when back in rotation): {progress:?}", stats.ok());
}

#[test]
fn sigterm_drains_in_flight_downloads_within_the_deadline() {
    const SIZE: usize = 48 << 20; // well above what loopback socket buffers hold
    let store = new_store();
    let src = tempfile::tempdir().unwrap();
    let (layer, _) = big_image(src.path(), SIZE);
    publish(
        store.path(),
        &format!("oci:{}:1.0", src.path().display()),
        &["big/blob:1.0"],
    );
    let store_s = path_str(store.path()).to_owned();
    let location = |r: &Replica| {
        let resp =
            common::blocking_request(r.addr(), "GET", &format!("/v2/big/blob/blobs/{layer}"))
                .expect("blob request");
        assert_eq!(resp.status, 307, "{resp:?}");
        resp.header("location").expect("Location").to_owned()
    };

    // A long deadline: the download in flight at SIGTERM completes, new connections are
    // refused meanwhile, and then the process exits on its own.
    let mut r = Replica::start(&["--store", &store_s, "--shutdown-timeout", "120"], &[]);
    let loc = location(&r);
    let (mut s, len, mut body) = start_download(r.addr(), &loc, 1 << 20);
    r.terminate();
    let addr = r.addr();
    wait_for(
        "the listener to close after SIGTERM",
        Duration::from_secs(30),
        || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(500))
                .is_err()
                .then_some(())
        },
    );
    assert!(
        r.is_running(),
        "serve exited before the in-flight download finished:\n{}",
        r.log()
    );
    // A slow reader: small reads with pauses.
    let mut chunk = vec![0u8; 256 << 10];
    while (body.len() as u64) < len {
        let n = s.read(&mut chunk).expect("read the rest of the download");
        assert!(
            n > 0,
            "the download was cut at {} of {len} bytes:\n{}",
            body.len(),
            r.log()
        );
        body.extend_from_slice(&chunk[..n]);
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(body.len() as u64, len);
    assert_eq!(sha256(&body), layer, "the drained download is the blob");
    // The connection is closed after that response (no keep-alive while draining).
    assert_eq!(
        s.read(&mut chunk).unwrap_or(0),
        0,
        "connection kept open after draining"
    );
    let status = r.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "serve exited with {status}:\n{}", r.log());
    let log = r.log();
    assert!(log.contains("drained; exiting"), "{log}");

    // A short deadline: a client that stops reading cannot hold the process past it.
    let mut r = Replica::start(&["--store", &store_s, "--shutdown-timeout", "1"], &[]);
    let loc = location(&r);
    let (mut s, len, body) = start_download(r.addr(), &loc, 0);
    r.terminate();
    let status = r.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "serve exited with {status}:\n{}", r.log());
    assert!(r.log().contains("drain deadline reached"), "{}", r.log());
    let mut got = body.len() as u64;
    loop {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n as u64,
        }
    }
    assert!(
        got < len,
        "the stalled download was cut at the deadline ({got} of {len} bytes)"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. TLS: pulls with a test CA, HTTP/2, certificate reload without a restart
// ---------------------------------------------------------------------------------------------

#[test]
fn tls_pulls_http2_and_certificate_reload() {
    let pki = Pki::new();
    let (crt1, key1) = pki.issue("server-1", "0x1001");
    pki.install(&crt1, &key1);
    let store = new_store();
    publish(
        store.path(),
        "oci:fixtures/oci-single:1.0",
        &["public/app:1.0"],
    );
    let (live_crt, live_key) = (pki.path("live.crt"), pki.path("live.key"));
    let r = Replica::start(
        &[
            "--store",
            path_str(store.path()),
            "--tls-cert",
            path_str(&live_crt),
            "--tls-key",
            path_str(&live_key),
        ],
        &[],
    );
    let host = r.host();
    let ca = pki.path("ca.crt");
    let cert_dir = pki.path("certs.d");
    let cert_dir = path_str(&cert_dir);
    let expect = fixtures::oci_single();
    let top = match &expect {
        Expect::Image(i) => i.manifest.clone().expect("oci-single keeps its digest"),
        Expect::Index { .. } => unreachable!(),
    };

    // HTTP/2 by ALPN, and HTTP/1.1 for clients that ask for it.
    let base = format!("https://{host}/v2/");
    assert_eq!(curl_version(&base, &ca, "--http2"), "2 200");
    assert_eq!(curl_version(&base, &ca, "--http1.1"), "1.1 200");

    // All three clients pull over HTTPS, trusting only the test CA.
    let mut failures = Vec::new();
    let mut skopeo = Skopeo::new();
    let image = format!("{host}/{PUBLIC}:1.0");
    if let Err(e) = skopeo_pull(
        &mut skopeo,
        &host,
        &format!("{PUBLIC}:1.0"),
        &["--src-cert-dir", cert_dir],
        &expect,
        &top,
    ) {
        failures.push(format!("[skopeo] {e}"));
    }
    let podman = Podman::new();
    if let Err(e) = podman_pull(&podman, &image, &["--cert-dir", cert_dir], &expect) {
        failures.push(format!("[podman] {e}"));
    }
    // containerd 1.6 talks plain HTTP to 127.0.0.1/localhost unless a hosts directory says
    // otherwise: name the https:// server and the CA there.
    let ctd = Containerd::start();
    let hosts_dir = pki.path("hosts.d");
    std::fs::create_dir_all(hosts_dir.join(&host)).unwrap();
    std::fs::write(
        hosts_dir.join(&host).join("hosts.toml"),
        format!(
            "server = \"https://{host}\"\n\n[host.\"https://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = \"{}\"\n",
            ca.display()
        ),
    )
    .unwrap();
    let ctr_args = ["--hosts-dir", path_str(&hosts_dir)];
    if let Err(e) = ctr_pull(&ctd, &image, &ctr_args, &expect, &top) {
        failures.push(format!("[ctr] {e}"));
    }
    // Without the CA, verification fails (the test CA is what makes the pulls above work).
    match skopeo.copy_with(&host, &format!("{PUBLIC}:1.0"), &[]) {
        Ok(_) => failures.push("[skopeo] pulled without trusting the test CA".into()),
        Err(e) if e.contains("certificate") => {}
        Err(e) => failures.push(format!("[skopeo] without the CA, an unexpected error: {e}")),
    }
    check_all(failures);

    let rt = rt();
    rt.block_on(async {
        let h2 = TlsConn::connect(r.addr(), &ca, &[b"h2", b"http/1.1"]).await;
        assert_eq!(h2.alpn().as_deref(), Some(&b"h2"[..]), "ALPN picks h2");
        drop(h2);

        // A keep-alive connection made with the first certificate.
        let mut kept = TlsConn::connect(r.addr(), &ca, &[b"http/1.1"]).await;
        assert_eq!(kept.peer_cert(), der_of(&crt1));
        assert_eq!(kept.get("/v2/").await, Ok(200));

        // Swap the files on disk: new handshakes present the new certificate, without a
        // restart; the kept connection keeps answering meanwhile.
        let (crt2, key2) = pki.issue("server-2", "0x2002");
        pki.install(&crt2, &key2);
        until_presented(
            r.addr(),
            &ca,
            &der_of(&crt2),
            Duration::from_millis(250),
            "the new certificate was not picked up within 60 s",
            async || {
                assert_eq!(
                    kept.get("/v2/").await,
                    Ok(200),
                    "the kept connection during the swap"
                );
            },
        )
        .await;
        assert_eq!(
            kept.get("/v2/").await,
            Ok(200),
            "the kept connection after the swap"
        );
        assert_eq!(
            kept.peer_cert(),
            der_of(&crt1),
            "an existing connection keeps its certificate"
        );

        // SIGHUP reloads even when the files' modification times did not change.
        let times = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
        let (tc, tk) = (times(&live_crt), times(&live_key));
        let (crt3, key3) = pki.issue("server-3", "0x3003");
        pki.install(&crt3, &key3);
        for (p, t) in [(&live_crt, tc), (&live_key, tk)] {
            std::fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        r.signal("HUP");
        until_presented(
            r.addr(),
            &ca,
            &der_of(&crt3),
            Duration::from_millis(100),
            "SIGHUP did not reload the certificate within 60 s",
            async || {},
        )
        .await;
        assert_eq!(
            kept.get("/v2/").await,
            Ok(200),
            "the kept connection after SIGHUP"
        );
    });
    // A client pull over the reloaded certificate.
    let r2 = skopeo_pull(
        &mut skopeo,
        &host,
        &format!("{PUBLIC}:1.0"),
        &["--src-cert-dir", cert_dir],
        &expect,
        &top,
    );
    assert!(r2.is_ok(), "skopeo after the reload: {r2:?}");
    assert!(r.log().contains("TLS certificate reloaded"), "{}", r.log());
}

// ---------------------------------------------------------------------------------------------
// 5. Readiness and metrics follow an origin's health
// ---------------------------------------------------------------------------------------------

#[test]
fn readiness_and_metrics_follow_a_stopped_origin() {
    let store = new_store();
    publish(
        store.path(),
        "oci:fixtures/oci-single:1.0",
        &["public/app:1.0"],
    );
    publish(
        store.path(),
        "oci:fixtures/oci-single:1.0",
        &["public/other:1.0"],
    );
    let mut edge = Nginx::public(store.path());
    let secrets = Secrets::new();
    let config = secrets.write_config(
        "edge.toml",
        &format!(
            "store = \"{}\"\n\n[serve]\nhealth_interval = 1\n\n[[origins]]\nname = \"edge\"\n\
             signer = {{ kind = \"public\", base_url = \"{}\" }}\n",
            store.path().display(),
            edge.base_url()
        ),
    );
    let r = Replica::start(&["--config", &config], &[]);
    let http = common::http::client();
    let base = r.url("");
    let rt = rt();

    let ready = |want: StatusCode| {
        let (http, base) = (&http, &base);
        rt.block_on(async move {
            let a = send(http, Method::GET, &format!("{base}/readyz"), &[]).await;
            let v: Value = serde_json::from_slice(&a.body).expect("readyz JSON");
            (a.status == want).then_some(v)
        })
    };
    let v = ready(StatusCode::OK).expect("ready at start");
    assert_eq!(v["ready"], true);
    assert_eq!(v["origins"][0]["name"], "edge");
    assert_eq!(v["origins"][0]["healthy"], true);

    // Some traffic; every answer carries its own request id.
    let ids = rt.block_on(async {
        let mut ids = Vec::new();
        let config = {
            let m = send(
                &http,
                Method::GET,
                &format!("{base}/v2/{PUBLIC}/manifests/1.0"),
                &[],
            )
            .await;
            assert_eq!(m.status, StatusCode::TEMPORARY_REDIRECT);
            let loc = m.header("location").unwrap().to_owned();
            assert!(
                loc.starts_with(&edge.base_url()),
                "redirects to the edge: {loc}"
            );
            ids.push(m.header("x-request-id").map(str::to_owned));
            let body = send(&http, Method::GET, &loc, &[]).await.body;
            let v: Value = serde_json::from_slice(&body).unwrap();
            v["config"]["digest"].as_str().unwrap().to_owned()
        };
        let calls: Vec<(Method, String, StatusCode)> = vec![
            (
                Method::HEAD,
                format!("/v2/{PUBLIC}/manifests/1.0"),
                StatusCode::OK,
            ),
            (
                Method::GET,
                format!("/v2/{PUBLIC}/manifests/1.0"),
                StatusCode::TEMPORARY_REDIRECT,
            ),
            (
                Method::GET,
                format!("/v2/{PUBLIC}/blobs/{config}"),
                StatusCode::TEMPORARY_REDIRECT,
            ),
            (
                Method::HEAD,
                format!("/v2/{PUBLIC}/blobs/{config}"),
                StatusCode::OK,
            ),
            (
                Method::GET,
                format!("/v2/{PUBLIC}/manifests/nope"),
                StatusCode::NOT_FOUND,
            ),
            (Method::GET, "/v2/".into(), StatusCode::OK),
            (
                Method::PUT,
                format!("/v2/{PUBLIC}/manifests/1.0"),
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            (Method::GET, "/healthz".into(), StatusCode::OK),
        ];
        for _ in 0..3 {
            for (m, p, want) in &calls {
                let a = send(&http, m.clone(), &format!("{base}{p}"), &[]).await;
                assert_eq!(a.status, *want, "{m} {p}");
                ids.push(a.header("x-request-id").map(str::to_owned));
            }
        }
        ids
    });
    let ids: Vec<String> = ids
        .into_iter()
        .map(|i| i.expect("every response has x-request-id"))
        .collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "request ids repeat: {ids:?}");

    let m = r.metrics();
    let sample = |metric: &str, labels: &[&str]| {
        metric_sum(&m, metric, labels).unwrap_or_else(|| panic!("no {metric}{labels:?} in:\n{m}"))
    };
    let requests = "static_registry_requests_total";
    assert!(sample(requests, &[r#"route="manifest""#, r#"status="307""#]) >= 4.0);
    assert!(sample(requests, &[r#"route="manifest""#, r#"status="200""#]) >= 3.0);
    assert!(sample(requests, &[r#"route="manifest""#, r#"status="404""#]) >= 3.0);
    assert!(sample(requests, &[r#"route="blob""#, r#"status="307""#]) >= 3.0);
    assert!(sample(requests, &[r#"route="blob""#, r#"status="200""#]) >= 3.0);
    assert!(sample(requests, &[r#"route="base""#, r#"status="200""#]) >= 3.0);
    assert!(sample(requests, &[r#"route="write""#, r#"status="405""#]) >= 3.0);
    assert!(
        sample(
            "static_registry_request_duration_seconds_count",
            &[r#"route="manifest""#]
        ) >= 10.0
    );
    assert!(
        sample(
            "static_registry_request_duration_seconds_bucket",
            &[r#"route="manifest""#, r#"le="+Inf""#]
        ) >= 10.0
    );
    // Two distinct URLs per round; a repeat within the same second re-uses its URL unsigned.
    let signatures = sample(
        "static_registry_sign_duration_seconds_count",
        &[r#"signer="public""#],
    );
    assert!(signatures >= 2.0, "{signatures} signatures");
    // Three rounds of the same calls: repeats within a second re-use their answer.
    assert!(sample("static_registry_reused_total", &[r#"kind="answer""#]) >= 1.0);
    assert!(
        sample(
            "static_registry_index_cache_misses_total",
            &[r#"origin="edge""#, r#"document="repository""#]
        ) >= 1.0
    );
    assert!(
        sample(
            "static_registry_index_cache_hits_total",
            &[r#"origin="edge""#, r#"document="repository""#]
        ) >= 1.0
    );
    assert_eq!(
        sample("static_registry_origin_healthy", &[r#"origin="edge""#]),
        1.0
    );

    // The origin goes away: the health probe marks it down and the gauge drops to 0. /readyz
    // says `degraded` but stays 200: every replica shares the origin, so failing readiness
    // for it would take all of them out of the balancer at once.
    // Waits for /readyz to show the origin's health, checks the gauge, returns /readyz.
    let origin_health = |healthy: bool, what: &str| {
        let v = wait_for(what, Duration::from_secs(60), || {
            ready(StatusCode::OK).filter(|v| v["origins"][0]["healthy"] == healthy)
        });
        let m = r.metrics();
        assert_eq!(
            metric_sum(&m, "static_registry_origin_healthy", &[r#"origin="edge""#]),
            Some(if healthy { 1.0 } else { 0.0 }),
            "{m}"
        );
        v
    };
    edge.stop();
    let v = origin_health(false, "/readyz to report the stopped origin");
    assert_eq!(v["ready"], true, "{v}");
    assert_eq!(v["degraded"], true, "{v}");
    assert!(r.log().contains("origin marked unhealthy"), "{}", r.log());

    // And it comes back.
    edge.restart();
    let v = origin_health(true, "/readyz to report the origin back");
    assert_eq!(v["degraded"], false, "{v}");

    // Readiness fails when this replica cannot load indexes from its store (here: an index
    // file that cannot be read), and recovers with the next good load.
    let index = store.path().join("repositories/public/other/_index.json");
    std::fs::rename(&index, index.with_extension("moved")).unwrap();
    std::fs::create_dir(&index).unwrap();
    let other = format!("{base}/v2/public/other/manifests/1.0");
    let manifest_status = || rt.block_on(send(&http, Method::GET, &other, &[])).status;
    assert_eq!(manifest_status(), StatusCode::SERVICE_UNAVAILABLE);
    let v = ready(StatusCode::SERVICE_UNAVAILABLE).expect("not ready while index loads fail");
    assert_eq!(v["ready"], false, "{v}");
    let m = r.metrics();
    assert!(
        metric_sum(
            &m,
            "static_registry_index_load_errors_total",
            &[r#"origin="edge""#, r#"document="repository""#]
        ) >= Some(1.0),
        "{m}"
    );
    // Liveness is not readiness: the process is alive.
    assert_eq!(common::blocking_get_status(r.addr(), "/healthz"), Some(200));
    std::fs::remove_dir(&index).unwrap();
    std::fs::rename(index.with_extension("moved"), &index).unwrap();
    wait_for(
        "readiness after the store recovers",
        Duration::from_secs(60),
        || {
            (manifest_status() == StatusCode::TEMPORARY_REDIRECT).then_some(())?;
            ready(StatusCode::OK)
        },
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Logs hold no signed query strings, tokens or passwords
// ---------------------------------------------------------------------------------------------

#[test]
fn logs_hold_no_signed_urls_tokens_or_passwords() {
    let store = new_store();
    publish(
        store.path(),
        "oci:fixtures/oci-single:1.0",
        &["public/app:1.0", "edge/app:1.0"],
    );
    publish(
        store.path(),
        "docker-archive:fixtures/docker-legacy.tar",
        &["private/app:1.0"],
    );
    let secrets = Secrets::new();
    let cdn_secret = format!("cdn{}", hex::encode(rand::random::<[u8; 16]>()));
    let cdn_secret_file = secrets.write_config("cdn.secret", &cdn_secret);
    let cdn = Nginx::secure_link(store.path(), &cdn_secret);
    let config = secrets.write_config(
        "logs.toml",
        &format!(
            r#"store = "{store}"

[serve]
health_interval = 1

[[origins]]
name = "local"
signer = {{ kind = "embedded" }}

[[origins]]
name = "edge"
signer = {{ kind = "secure-link", base_url = "{cdn}", secret_file = "{cdn_secret_file}", template = "{template}", content_type_param = "ct" }}

[[routes]]
prefix = "edge/"
origins = ["edge"]

{rest}"#,
            store = store.path().display(),
            cdn = cdn.base_url(),
            template = SECURE_LINK_TEMPLATE,
            rest = secrets.toml(true),
        ),
    );
    let r = Replica::start(
        &["--config", &config, "--access-log", "--log-format", "json"],
        &[("RUST_LOG", "debug")],
    );
    let host = r.host();
    let base = r.url("");

    // Real pulls: embedded origin, the secure-link edge, a private repository with credentials,
    // and a refused password.
    let mut skopeo = Skopeo::new();
    let plain = "--src-tls-verify=false";
    let alice = format!("alice:{ALICE_PW}");
    let mut failures = Vec::new();
    for (reference, args) in [
        (format!("{PUBLIC}:1.0"), vec![plain]),
        ("edge/app:1.0".to_owned(), vec![plain]),
        (format!("{PRIVATE}:1.0"), vec![plain, "--src-creds", &alice]),
    ] {
        if let Err(e) = skopeo.copy_with(&host, &reference, &args) {
            failures.push(e);
        }
    }
    let wrong = format!("alice:{WRONG_PW}");
    let r_wrong = skopeo
        .copy_with(
            &host,
            &format!("{PRIVATE}:1.0"),
            &[plain, "--src-creds", &wrong],
        )
        .map(|_| ());
    if let Err(e) = refused("wrong password", Refusal::BadCredentials, r_wrong) {
        failures.push(e);
    }
    check_all(failures);

    // Raw requests, keeping every credential the server handed out.
    let http = common::http::client();
    let mut secrets_seen: Vec<String> = Vec::new();
    rt().block_on(async {
        let token = token_for(&http, &base, Some(&alice), PRIVATE).await;
        secrets_seen.push(token.clone());
        let bearer = format!("Bearer {token}");
        for (repo, auth) in [
            (PUBLIC, None),
            ("edge/app", None),
            (PRIVATE, Some(bearer.as_str())),
        ] {
            let h: Vec<(&str, &str)> = auth.map(|a| vec![("authorization", a)]).unwrap_or_default();
            let m = send(
                &http,
                Method::GET,
                &format!("{base}/v2/{repo}/manifests/1.0"),
                &h,
            )
            .await;
            assert_eq!(m.status, StatusCode::TEMPORARY_REDIRECT, "{repo}");
            let loc = m.header("location").unwrap().to_owned();
            for p in ["sig", "md5"] {
                if let Some(v) = query_param(&loc, p) {
                    secrets_seen.push(v);
                }
            }
            let url = if loc.starts_with('/') {
                format!("{base}{loc}")
            } else {
                loc
            };
            let got = send(&http, Method::GET, &url, &[]).await;
            assert_eq!(got.status, StatusCode::OK, "{repo} content");
        }
        let anon = send(
            &http,
            Method::GET,
            &format!("{base}/v2/{PRIVATE}/manifests/1.0"),
            &[],
        )
        .await;
        assert_eq!(anon.status, StatusCode::UNAUTHORIZED);
        // Not behind a trusted proxy: forwarded headers are ignored.
        let v2 = send(
            &http,
            Method::GET,
            &format!("{base}/v2/"),
            &[
                ("x-forwarded-host", "evil.example"),
                ("x-forwarded-proto", "https"),
            ],
        )
        .await;
        assert_eq!(
            v2.header("www-authenticate"),
            Some(format!("Bearer realm=\"http://{host}/token\",service=\"{SERVICE}\"").as_str())
        );
    });
    assert!(secrets_seen.len() >= 4, "collected {secrets_seen:?}");
    // Let the edge's health probe (a signed HEAD, through reqwest with debug logging) run.
    wait_for(
        "two health probes of the edge",
        Duration::from_secs(60),
        || (cdn.requests("HEAD", "/_health", 200) >= 2).then_some(()),
    );

    let log = r.log();
    // It is a JSON log with a request line per request.
    let mut requests = Vec::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        if v["fields"]["message"] == "request" {
            requests.push(v["fields"].clone());
        }
    }
    let has = |path_prefix: &str, status: u64| {
        requests.iter().any(|f| {
            f["path"]
                .as_str()
                .is_some_and(|p| p.starts_with(path_prefix))
                && f["status"] == status
                && f["request_id"].as_str().is_some_and(|id| !id.is_empty())
        })
    };
    assert!(
        has(&format!("/v2/{PRIVATE}/manifests/"), 401),
        "no 401 request line"
    );
    assert!(
        has(&format!("/v2/{PRIVATE}/manifests/"), 307),
        "no 307 request line"
    );
    assert!(has("/_origin/", 200), "no origin request line");
    assert!(
        has("/token", 200) && has("/token", 401),
        "no token request lines"
    );

    let basic_alice = base64::engine::general_purpose::STANDARD.encode(&alice);
    let basic_wrong = base64::engine::general_purpose::STANDARD.encode(&wrong);
    let mut forbidden: Vec<(&str, String)> = vec![
        ("a signed query (sig=)", "sig=".into()),
        ("a signed query (md5=)", "md5=".into()),
        ("an S3 signature", "X-Amz-Signature".into()),
        ("a JWT", "eyJ".into()),
        ("alice's password", ALICE_PW.into()),
        ("a wrong password", WRONG_PW.into()),
        ("Basic credentials", basic_alice),
        ("wrong Basic credentials", basic_wrong),
        ("the origin secret", secrets.origin_key.clone()),
        ("the token key", secrets.token_key.clone()),
        ("the CDN secret", cdn_secret.clone()),
    ];
    for s in &secrets_seen {
        forbidden.push(("a credential the server issued", s.clone()));
    }
    let leaks: Vec<String> = forbidden
        .iter()
        .filter_map(|(what, s)| {
            log.lines()
                .find(|l| l.contains(s.as_str()))
                .map(|l| format!("{what} ({s}) in: {l}"))
        })
        .collect();
    assert!(leaks.is_empty(), "the log leaks:\n{}", leaks.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// The examples operators copy: config/private.toml and the whole config/nginx-lb.conf
// ---------------------------------------------------------------------------------------------

#[test]
fn the_example_replica_and_balancer_configs_run() {
    // config/private.toml, with its paths pointed at temporary files.
    let store = new_store();
    publish(
        store.path(),
        "oci:fixtures/oci-single:1.0",
        &["team-a/app:1.0", "internal/app:1.0", "public/app:1.0"],
    );
    let secrets = Secrets::new();
    let example =
        std::fs::read_to_string(common::manifest_dir().join("config/private.toml")).unwrap();
    let config = secrets.write_config(
        "private.toml",
        &example
            .replace("/srv/static-registry/store", path_str(store.path()))
            .replace(
                "/run/credentials/static-registry.service/",
                &format!("{}/", secrets.dir.path().display()),
            ),
    );
    let replica = Replica::start(&["--config", &config], &[]);

    // The whole config/nginx-lb.conf: TLS at the balancer (test CA), both `server` lines
    // pointing at the replica, logs under the prefix.
    let pki = Pki::new();
    let (crt, key) = pki.issue("balancer", "0x4004");
    let example =
        std::fs::read_to_string(common::manifest_dir().join("config/nginx-lb.conf")).unwrap();
    let upstream = replica.host();
    let lb = Balancer::start_snippet(|port, prefix| {
        example
            .replace("10.0.0.11:5000", &upstream)
            .replace("10.0.0.12:5000", &upstream)
            .replace(
                "listen 80;",
                &format!("listen 127.0.0.1:{};", common::free_port()),
            )
            .replace(
                "listen 443 ssl http2;",
                &format!("listen 127.0.0.1:{port} ssl http2;"),
            )
            .replace(
                "/etc/ssl/registry.example.com/fullchain.pem",
                path_str(&crt),
            )
            .replace("/etc/ssl/registry.example.com/privkey.pem", path_str(&key))
            .replace("/var/log/nginx/", &format!("{}/logs/", prefix.display()))
    });
    let host = format!("localhost:{}", lb.port);
    let ca = pki.path("ca.crt");

    // Through the TLS balancer: the challenge names https and the balancer's host (from
    // X-Forwarded-Proto/-Host); the replicas' /metrics stay private.
    let curl = |path: &str, extra: &[&str]| {
        let out = Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-D", "-", "--cacert"])
            .arg(&ca)
            .args(extra)
            .arg(format!("https://{host}{path}"))
            .output()
            .expect("run curl");
        assert!(out.status.success(), "{}", describe_output("curl", &out));
        String::from_utf8_lossy(&out.stdout).to_ascii_lowercase()
    };
    let v2 = curl("/v2/", &[]);
    assert!(v2.starts_with("http/2 401"), "{v2}");
    assert!(
        v2.contains(&format!("www-authenticate: bearer realm=\"https://{host}/token\",service=\"registry.example.com\"")),
        "{v2}"
    );
    assert!(curl("/metrics", &[]).starts_with("http/2 404"));
    let team = "/v2/team-a/app/manifests/1.0";
    assert!(curl(team, &[]).starts_with("http/2 401"));

    // Rules: alice may pull team-a/, any user internal/, everyone public/.
    let mut skopeo = Skopeo::new();
    let cert_dir = pki.path("certs.d");
    let cert_dir = path_str(&cert_dir);
    let expect = fixtures::oci_single();
    let top = match &expect {
        Expect::Image(i) => i.manifest.clone().unwrap(),
        Expect::Index { .. } => unreachable!(),
    };
    let alice = format!("alice:{ALICE_PW}");
    let bob = format!("bob:{BOB_PW}");
    let mut failures = Vec::new();
    for (reference, creds, ok) in [
        ("team-a/app:1.0", Some(alice.as_str()), true),
        ("team-a/app:1.0", Some(bob.as_str()), false),
        ("internal/app:1.0", Some(bob.as_str()), true),
        ("internal/app:1.0", None, false),
        ("public/app:1.0", None, true),
    ] {
        let mut args = vec!["--src-cert-dir", cert_dir];
        if let Some(c) = creds {
            args.extend(["--src-creds", c]);
        }
        let r = if ok {
            skopeo_pull(&mut skopeo, &host, reference, &args, &expect, &top)
        } else {
            refused(
                reference,
                Refusal::NoAccess,
                skopeo.copy_with(&host, reference, &args).map(|_| ()),
            )
        };
        if let Err(e) = r {
            failures.push(format!("[{reference} as {creds:?}] {e}"));
        }
    }
    check_all(failures);
    // No signed query string in the balancer's access log either.
    let log =
        std::fs::read_to_string(lb.prefix().join("logs/registry.access.log")).unwrap_or_default();
    assert!(
        log.contains("/_origin/"),
        "the balancer's access log: {log}"
    );
    assert!(
        !log.contains("sig=") && !log.contains('?'),
        "query strings in the balancer's log:\n{log}"
    );
}

// ---------------------------------------------------------------------------------------------
// Listener limits: the connection limit, the header timeout, half-closed clients, h2c
// ---------------------------------------------------------------------------------------------

#[test]
fn connection_limit_header_timeout_half_close_and_h2c() {
    let store = new_store();
    publish(
        store.path(),
        "oci:fixtures/oci-single:1.0",
        &["public/app:1.0"],
    );
    let secrets = Secrets::new();
    let config = |name: &str, serve: &str| {
        secrets.write_config(
            name,
            &format!(
                "store = \"{}\"\n\n[serve]\n{serve}\n",
                store.path().display()
            ),
        )
    };
    let limited = Replica::start(
        &["--config", &config("limit.toml", "max_connections = 1")],
        &[],
    );
    let strict = Replica::start(
        &["--config", &config("strict.toml", "header_timeout = 1")],
        &[],
    );
    let get = |s: &mut TcpStream, addr: SocketAddr| {
        write!(s, "GET /v2/ HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    };
    let read_status = |s: &mut TcpStream| -> Option<String> {
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).ok()?;
        (n > 0).then(|| {
            String::from_utf8_lossy(&buf[..n])
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()
        })
    };

    // One keep-alive connection holds the only slot.
    let addr = limited.addr();
    let mut first = TcpStream::connect(addr).unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    get(&mut first, addr);
    assert_eq!(read_status(&mut first).as_deref(), Some("HTTP/1.1 200 OK"));
    // A second client waits in the accept backlog: no answer while the first holds the slot.
    let mut second = TcpStream::connect(addr).unwrap();
    get(&mut second, addr);
    second
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut buf = [0u8; 64];
    match second.read(&mut buf) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!("the second connection was served past the limit: {other:?}"),
    }
    // The first connection closes; the second is served.
    drop(first);
    second
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    assert_eq!(read_status(&mut second).as_deref(), Some("HTTP/1.1 200 OK"));
    drop(second);

    // A client that never finishes its request head is cut off (slow loris).
    let addr = strict.addr();
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(slow, "GET /v2/ HTTP/1.1\r\nHost: {addr}\r\n").unwrap();
    match read_status(&mut slow) {
        None => {}
        Some(line) if line.starts_with("HTTP/1.1 408") => {}
        Some(line) => panic!("an unfinished request head got {line}"),
    }

    // A client that sends its request and then shuts its sending side (`nc -N`, HTTP/1.0
    // style) still gets the whole answer: an uncached index load and a repeat.
    for _ in 0..2 {
        let mut once = TcpStream::connect(addr).unwrap();
        once.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        write!(
            once,
            "GET /v2/public/app/manifests/1.0 HTTP/1.1\r\nHost: {addr}\r\n\r\n"
        )
        .unwrap();
        once.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        let read = once.read_to_string(&mut answer);
        assert!(
            answer.starts_with("HTTP/1.1 307") && answer.contains("\r\nlocation: "),
            "a half-closed request got {read:?}: {answer:?}"
        );
    }

    // HTTP/2 without TLS, with prior knowledge (h2c), on the same port.
    require_tool("curl");
    let out = Command::new("curl")
        .args([
            "-sS",
            "--http2-prior-knowledge",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
        ])
        .arg(strict.url("/v2/"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "2 200",
        "{}",
        describe_output("curl", &out)
    );
}

/// Names of a process's serving threads (`serve-N`), sorted.
fn serving_threads(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .filter(|n| n.starts_with("serve-"))
        .collect();
    names.sort();
    names
}

/// `workers` sets the serving threads; together they answer every connection of a burst, with
/// the signed redirect each one needs, and SIGTERM still drains and exits cleanly with idle
/// keep-alive connections open on all of them.
#[test]
fn serving_threads_answer_every_connection_and_drain() {
    let store = new_store();
    publish(
        store.path(),
        "oci:fixtures/oci-single:1.0",
        &["public/app:1.0"],
    );
    let secrets = Secrets::new();
    let config = secrets.write_config(
        "workers.toml",
        &format!(
            "store = \"{}\"\n\n[serve]\nworkers = 3\n",
            store.path().display()
        ),
    );
    let mut three = Replica::start(&["--config", &config], &[]);
    assert_eq!(
        serving_threads(three.pid()),
        ["serve-0", "serve-1", "serve-2"]
    );
    let one = Replica::start(&["--store", path_str(store.path()), "--workers", "1"], &[]);
    assert_eq!(serving_threads(one.pid()), ["serve-0"]);

    let config_digest = fixtures::oci_single().amd64().config.clone();
    let addr = three.addr();
    let mut conns: Vec<TcpStream> = (0..32)
        .map(|_| {
            let s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            s
        })
        .collect();
    // Two rounds on every connection: a fresh one, then the same one kept alive.
    for round in 0..2 {
        for s in &mut conns {
            write!(
                s,
                "GET /v2/public/app/blobs/{config_digest} HTTP/1.1\r\nHost: {addr}\r\n\r\n"
            )
            .unwrap();
        }
        for (i, s) in conns.iter_mut().enumerate() {
            let mut head = String::new();
            while !head.contains("\r\n\r\n") {
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).unwrap();
                assert!(
                    n > 0,
                    "round {round}, connection {i}: closed after {head:?}"
                );
                head.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            assert!(
                head.starts_with("HTTP/1.1 307")
                    && head
                        .to_ascii_lowercase()
                        .contains("\r\nlocation: /_origin/"),
                "round {round}, connection {i}: {head}"
            );
        }
    }
    // A connection still sending its request head keeps the drain going (until header_timeout);
    // meanwhile the port must refuse new connections, so that a balancer retries elsewhere.
    let mut slow = TcpStream::connect(addr).unwrap();
    write!(slow, "GET /v2/ HTTP/1.1\r\nHost: {addr}\r\n").unwrap();
    // ...but one that has sent nothing at all is closed as soon as the drain starts.
    let mut silent = TcpStream::connect(addr).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    three.terminate();
    wait_for("the drain to start", Duration::from_secs(20), || {
        three.log().contains("no longer accepting").then_some(())
    });
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err(),
        "a new connection was let in while draining"
    );
    assert!(
        three.is_running(),
        "serve exited before the connection in flight was done:\n{}",
        three.log()
    );
    // Well under header_timeout (10 s), after which an idle socket is closed anyway.
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(
        silent.read(&mut [0u8; 1]).map_err(|e| e.kind()),
        Ok(0),
        "a connection that sent nothing was kept open during the drain"
    );
    drop(slow);
    let status = three.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "serve exited with {status}");
    for s in &mut conns {
        let mut buf = [0u8; 16];
        assert_eq!(
            s.read(&mut buf).unwrap_or(0),
            0,
            "idle connection closed on drain"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The embedded origin's answers
// ---------------------------------------------------------------------------------------------

/// Store objects are whatever was published, served from the endpoint's own origin: every
/// answer of the embedded origin forbids type sniffing and runs sandboxed, errors included.
#[test]
fn embedded_origin_answers_forbid_sniffing_and_run_sandboxed() {
    let store = new_store();
    publish(
        store.path(),
        "oci:fixtures/oci-single:1.0",
        &["public/app:1.0"],
    );
    let server = common::Server::start(store.path(), &[]);
    let follow = |path: &str| {
        let redirect = common::blocking_request(server.addr, "GET", path).expect(path);
        assert_eq!(redirect.status, 307, "{path}: {redirect:?}");
        let location = redirect.header("location").expect("Location");
        assert!(location.starts_with("/_origin/"), "{location}");
        common::blocking_request(server.addr, "GET", location).expect(location)
    };
    let hardened = |what: &str, r: &common::http::RawResponse| {
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{what}: {r:?}"
        );
        assert_eq!(
            r.header("content-security-policy"),
            Some("sandbox"),
            "{what}: {r:?}"
        );
    };
    let manifest = follow("/v2/public/app/manifests/1.0");
    assert_eq!(manifest.status, 200, "{manifest:?}");
    hardened("manifest", &manifest);
    let layer = serde_json::from_slice::<Value>(&manifest.body).unwrap()["layers"][0]["digest"]
        .as_str()
        .expect("a layer digest")
        .to_owned();
    let blob = follow(&format!("/v2/public/app/blobs/{layer}"));
    assert_eq!(blob.status, 200, "{blob:?}");
    assert_eq!(sha256(&blob.body), layer);
    hardened("blob", &blob);
    let unsigned = common::blocking_request(
        server.addr,
        "GET",
        &format!("/_origin/blobs/sha256/{}", common::hex_of(&layer)),
    )
    .expect("unsigned origin request");
    assert_eq!(unsigned.status, 403, "{unsigned:?}");
    hardened("refusal", &unsigned);
}
