//! S3 end to end: the real binary publishes into, verifies, and serves from a real `s3s-fs`, which
//! enforces SigV4 both on the publisher's signed requests and on the presigned URLs `serve`
//! redirects clients to.
//!
//! - every fixture published to the bucket pulls through `serve` with skopeo, podman and ctr, with
//!   the content checks of tests/pull.rs;
//! - the redirects are real presigned URLs: s3s-fs serves them with the right bytes and
//!   `Content-Type`, and refuses them tampered, expired, or with another method;
//! - `serve` asks S3 for nothing but index documents, once each (counted by a proxy);
//! - re-publishing uploads no blob bytes; racing publishers keep every tag; a blob above the
//!   multipart threshold is uploaded in parts and pulls back intact;
//! - the secret key appears in no output, log or stored object, and the example configs parse.
//!
//! Credentials reach the binary as `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`; the store and the
//! `[s3]` section come from a config file, as in a deployment.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::checks::{
    containerd_pulls_fixture, expected_top, for_each_fixture, podman_pulls_fixture,
    skopeo_pulls_fixture,
};
use common::clients::{Containerd, Podman, Skopeo};
use common::fixtures::{self, Fixture, OCI_INDEX, OCI_MANIFEST};
use common::s3::{
    fetch, ConfigExtra, CountingProxy, ProxiedRequest, RequestParser, S3Serve, S3World, ACCESS_KEY,
    BUCKET, PREFIX, SECRET_KEY,
};
use common::world::World;
use common::{describe_output, hex_of, manifest_dir, sha256, wait_for};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Helpers (the pull checks are those of tests/pull.rs, in tests/common/checks.rs)
// ---------------------------------------------------------------------------------------------

/// `serve`'s default signed-URL lifetime (`--url-ttl`), in seconds: 10 minutes.
const DEFAULT_URL_TTL: u64 = 600;

/// Every fixture published into a fresh bucket, checked with `verify --deep`, and served.
struct Published {
    world: S3World,
    serve: S3Serve,
    fixtures: Vec<Fixture>,
}

fn published() -> Published {
    let world = S3World::start();
    let config = world.direct_config();
    let fixtures = world.publish_fixtures(&config);
    let serve = world.serve(&config, &[]);
    Published {
        world,
        serve,
        fixtures,
    }
}

/// A repository index as s3s-fs stored it (it keeps objects as plain files).
fn stored_index(world: &S3World, repo: &str) -> Value {
    let path = world
        .s3
        .object_file(&format!("repositories/{repo}/_index.json"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).expect("index is JSON")
}

fn keys(v: &Value) -> Vec<String> {
    v.as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// The `name -> digest` lines of a publish summary (`REPO:TAG -> sha256:… (type, N bytes)`).
fn summary_tags(out: &Output) -> BTreeMap<String, String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.split_once(" -> ")?;
            Some((name.to_owned(), rest.split(' ').next()?.to_owned()))
        })
        .collect()
}

/// The query parameters of a URL, decoded.
fn query_params(url: &str) -> BTreeMap<String, String> {
    let q = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    url::form_urlencoded::parse(q.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Seconds since the epoch of an `X-Amz-Date` (`YYYYMMDDTHHMMSSZ`).
fn amz_date_secs(s: &str) -> u64 {
    assert!(
        s.len() == 16 && &s[8..9] == "T" && s.ends_with('Z'),
        "X-Amz-Date {s:?}"
    );
    let n = |r: std::ops::Range<usize>| -> i64 { s[r].parse().expect("X-Amz-Date digits") };
    let (y, m, d) = (n(0..4), n(4..6), n(6..8));
    // Days from the civil date (H. Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    (days * 86_400 + n(9..11) * 3600 + n(11..13) * 60 + n(13..15)) as u64
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// The URL with one query parameter's value replaced (everything else byte for byte).
fn with_param(url: &str, name: &str, value: &str) -> String {
    let (base, q) = url.split_once('?').expect("URL with a query");
    let q: Vec<String> = q
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k == name => format!("{k}={value}"),
            _ => kv.to_owned(),
        })
        .collect();
    format!("{base}?{}", q.join("&"))
}

// ---------------------------------------------------------------------------------------------
// 1. Every fixture pulls from the bucket with skopeo, podman and ctr
// ---------------------------------------------------------------------------------------------

#[test]
fn skopeo_pulls_every_fixture_from_s3() {
    let mut skopeo = Skopeo::new();
    let Published {
        world,
        serve,
        fixtures,
    } = published();
    let host = serve.host();
    for_each_fixture(&fixtures, |f| {
        let top = expected_top(serve.tag_digest(f.repo(), f.tag()), f)?;
        skopeo_pulls_fixture(&mut skopeo, &host, f, &top)
    });
    drop(serve);
    world.assert_no_secret_leaked();
}

#[test]
fn podman_pulls_every_fixture_from_s3() {
    let podman = Podman::new();
    let Published {
        world,
        serve,
        fixtures,
    } = published();
    let host = serve.host();
    for_each_fixture(&fixtures, |f| {
        let top = expected_top(serve.tag_digest(f.repo(), f.tag()), f)?;
        podman_pulls_fixture(&podman, &host, f, &top)
    });
    drop(serve);
    world.assert_no_secret_leaked();
}

#[test]
fn containerd_pulls_every_fixture_from_s3() {
    let ctd = Containerd::start();
    let Published {
        world,
        serve,
        fixtures,
    } = published();
    let host = serve.host();
    for_each_fixture(&fixtures, |f| {
        let top = expected_top(serve.tag_digest(f.repo(), f.tag()), f)?;
        // ctr starts with a HEAD on the tag, answered locally (a HEAD on a GET-presigned URL
        // would get 403 from S3, which containerd treats as fatal).
        containerd_pulls_fixture(&ctd, &host, f, &top)
    });
    drop(serve);
    world.assert_no_secret_leaked();
}

// ---------------------------------------------------------------------------------------------
// 2. The redirects are S3 presigned URLs, and s3s-fs enforces them
// ---------------------------------------------------------------------------------------------

/// Checks the shape of a presigned URL for layout key `key` and returns its query.
fn check_presigned(
    world: &S3World,
    url: &str,
    key: &str,
    expires: u64,
) -> BTreeMap<String, String> {
    let base = format!("{}/{BUCKET}/{PREFIX}/{key}?", world.s3.endpoint());
    assert!(url.starts_with(&base), "{url} does not start with {base}");
    let q = query_params(url);
    assert_eq!(q["X-Amz-Algorithm"], "AWS4-HMAC-SHA256", "{url}");
    let credential = &q["X-Amz-Credential"];
    assert!(
        credential.starts_with(&format!("{ACCESS_KEY}/"))
            && credential.ends_with("/us-east-1/s3/aws4_request"),
        "{url}"
    );
    assert_eq!(q["X-Amz-Expires"], expires.to_string(), "{url}");
    assert_eq!(q["X-Amz-SignedHeaders"], "host", "{url}");
    let sig = &q["X-Amz-Signature"];
    assert!(
        sig.len() == 64 && sig.bytes().all(|b| b.is_ascii_hexdigit()),
        "{url}"
    );
    amz_date_secs(&q["X-Amz-Date"]);
    assert!(!url.contains(SECRET_KEY), "{url}");
    q
}

#[test]
fn redirects_are_presigned_urls_that_s3_enforces() {
    let world = S3World::start();
    let config = world.direct_config();
    world.publish(
        &config,
        "oci:fixtures/oci-single:1.0",
        &["fix/oci-single:1.0"],
        &[],
    );
    world.publish(
        &config,
        "docker-archive:fixtures/docker-legacy.tar",
        &[],
        &[],
    );
    world.publish(
        &config,
        "oci:fixtures/oci-multi:latest",
        &["fix/multi:latest"],
        &[],
    );
    let serve = world.serve(&config, &[]);

    // Blobs: the bytes hash to the digest; stored as immutable octet-streams, never encoded.
    let index = stored_index(&world, "fix/oci-single");
    let blobs = keys(&index["blobs"]);
    assert!(blobs.len() >= 2, "{index}");
    let mut some_blob_url = None;
    for d in &blobs {
        let url = serve.location(&format!("/v2/fix/oci-single/blobs/{d}"));
        let key = format!("blobs/sha256/{}", hex_of(d));
        let q = check_presigned(&world, &url, &key, DEFAULT_URL_TTL);
        assert_eq!(q["response-content-type"], "application/octet-stream");
        let r = fetch("GET", &url);
        assert_eq!(r.status, 200, "GET {url}: {}", r.body_text());
        assert_eq!(&sha256(&r.body), d, "{url}");
        assert_eq!(r.header("content-type"), Some("application/octet-stream"));
        assert_eq!(
            r.header("cache-control"),
            Some("public, max-age=31536000, immutable")
        );
        assert_eq!(r.header("content-encoding"), None, "{r:?}");
        some_blob_url = Some((url, key));
    }
    let (blob_url, blob_key) = some_blob_url.expect("a blob");

    // Manifests (OCI image, Docker schema 2, OCI index), by tag and by digest: served by s3s-fs
    // with the exact media type HEAD announces.
    for (repo, tag, want_type) in [
        ("fix/oci-single", "1.0", OCI_MANIFEST),
        ("legacy/hello", "1.0", fixtures::DOCKER_MANIFEST),
        ("fix/multi", "latest", OCI_INDEX),
    ] {
        let head = serve.request("HEAD", &format!("/v2/{repo}/manifests/{tag}"));
        assert_eq!(head.status, 200, "{head:?}");
        assert_eq!(head.header("content-type"), Some(want_type), "{repo}:{tag}");
        let digest = head
            .header("docker-content-digest")
            .expect("digest")
            .to_owned();
        for reference in [tag, digest.as_str()] {
            let url = serve.location(&format!("/v2/{repo}/manifests/{reference}"));
            let q = check_presigned(
                &world,
                &url,
                &format!("manifests/sha256/{}", hex_of(&digest)),
                DEFAULT_URL_TTL,
            );
            assert_eq!(q["response-content-type"], want_type);
            let r = fetch("GET", &url);
            assert_eq!(r.status, 200, "GET {url}: {}", r.body_text());
            assert_eq!(sha256(&r.body), digest, "{repo}:{reference}");
            assert_eq!(
                r.header("content-type"),
                Some(want_type),
                "{repo}:{reference}"
            );
            assert_eq!(r.header("content-encoding"), None);
            assert_eq!(
                r.body.len().to_string(),
                head.header("content-length").unwrap_or("?"),
                "{repo}:{reference}"
            );
        }
    }

    // Index documents: tags/list and the catalog redirect to short-lived JSON.
    for (path, key, field, want) in [
        (
            "/v2/fix/oci-single/tags/list",
            "repositories/fix/oci-single/_tags.json",
            "tags",
            vec!["1.0"],
        ),
        (
            "/v2/_catalog",
            "_catalog.json",
            "repositories",
            vec!["fix/multi", "fix/oci-single", "legacy/hello"],
        ),
    ] {
        let url = serve.location(path);
        check_presigned(&world, &url, key, DEFAULT_URL_TTL);
        let r = fetch("GET", &url);
        assert_eq!(r.status, 200, "GET {url}: {}", r.body_text());
        assert_eq!(r.header("content-type"), Some("application/json"), "{path}");
        assert_eq!(
            r.header("cache-control"),
            Some("public, max-age=30"),
            "{path}"
        );
        let v: Value = serde_json::from_slice(&r.body).expect("JSON");
        assert_eq!(v[field], serde_json::json!(want), "{path}: {v}");
    }

    // Tampering with anything signed is refused: the signature, the key, the response type.
    let sig = query_params(&blob_url)["X-Amz-Signature"].clone();
    let flipped: String = sig
        .char_indices()
        .map(|(i, c)| match (i, c) {
            (0, '0') => '1',
            (0, _) => '0',
            (_, c) => c,
        })
        .collect();
    let tampered = with_param(&blob_url, "X-Amz-Signature", &flipped);
    assert_ne!(tampered, blob_url);
    let r = fetch("GET", &tampered);
    assert_eq!(r.status, 403, "tampered signature: {}", r.body_text());
    let other_blob = blobs
        .iter()
        .map(|d| format!("blobs/sha256/{}", hex_of(d)))
        .find(|k| *k != blob_key)
        .expect("two blobs");
    let moved = blob_url.replacen(&blob_key, &other_blob, 1);
    assert_ne!(moved, blob_url);
    let r = fetch("GET", &moved);
    assert_eq!(
        r.status,
        403,
        "signature reused for another key: {}",
        r.body_text()
    );
    let retyped = with_param(&blob_url, "response-content-type", "text%2Fhtml");
    let r = fetch("GET", &retyped);
    assert_eq!(
        r.status,
        403,
        "response-content-type changed: {}",
        r.body_text()
    );
    // The untampered URL still works (the 403s above are the tampering, not the URL).
    assert_eq!(fetch("GET", &blob_url).status, 200);

    // The method is bound: a URL presigned for GET is refused for HEAD.
    let r = fetch("HEAD", &blob_url);
    assert_eq!(r.status, 403, "HEAD on a GET-presigned URL: {r:?}");

    // Expiry: with --url-ttl 1, a URL is refused once its second is over; the same key through
    // the default-TTL server is still served at that moment.
    let short = world.serve(&config, &["--url-ttl", "1"]);
    let path = format!("/v2/fix/oci-single/blobs/{}", blobs[0]);
    let url = short.location(&path);
    let q = check_presigned(
        &world,
        &url,
        &format!("blobs/sha256/{}", hex_of(&blobs[0])),
        1,
    );
    let expires_at = amz_date_secs(&q["X-Amz-Date"]) + 1;
    // Whole seconds on both sides: wait until now is strictly past the expiry second.
    while now_secs() <= expires_at + 1 {
        std::thread::sleep(Duration::from_millis(200));
    }
    let r = fetch("GET", &url);
    assert_eq!(r.status, 403, "expired URL: {}", r.body_text());
    let fresh = serve.location(&path);
    assert_eq!(
        fetch("GET", &fresh).status,
        200,
        "a default-TTL URL for the same key"
    );

    drop((serve, short));
    world.assert_no_secret_leaked();
}

/// The health checker's canary is a HEAD on a HEAD-presigned URL: a counting proxy in front of
/// the signer's endpoint sees those HEADs, and the origin stays healthy only because s3s-fs
/// accepts them; with a wrong secret, s3s-fs refuses them and the origin goes unhealthy.
#[test]
fn health_canary_is_a_head_presigned_for_head() {
    let world = S3World::start();
    let direct = world.direct_config();
    world.publish(
        &direct,
        "oci:fixtures/oci-single:1.0",
        &["fix/oci-single:1.0"],
        &[],
    );
    let proxy = CountingProxy::start(world.s3.addr);
    let tail = format!(
        // No startup check: it GETs the canary too, and this test counts the prober's HEADs.
        "[serve]\nhealth_interval = 1\nstartup_check = false\n\n[[origins]]\nname = \"s3\"\nsigner = {{ kind = \"s3\", endpoint = \"{}\" }}\n",
        proxy.endpoint()
    );
    let config = world.config(
        "signer-via-proxy",
        &world.s3.endpoint(),
        &ConfigExtra {
            s3: "",
            tail: &tail,
        },
    );
    let canaries = |proxy: &CountingProxy| -> Vec<ProxiedRequest> {
        proxy
            .requests()
            .into_iter()
            .filter(|r| r.key() == Some("_health"))
            .collect()
    };

    let answered = |proxy: &CountingProxy| -> Vec<ProxiedRequest> {
        canaries(proxy)
            .into_iter()
            .filter(|r| r.status.is_some())
            .collect()
    };

    let serve = world.serve(&config, &[]);
    wait_for(
        "two canary probes answered through the proxy",
        Duration::from_secs(30),
        || (answered(&proxy).len() >= 2).then_some(()),
    );
    let probes = answered(&proxy);
    for c in &probes {
        assert_eq!(c.method, "HEAD", "{c:?}");
        assert_eq!(c.status, Some(200), "s3s-fs refused the canary: {c:?}");
        let q = query_params(&format!("?{}", c.query));
        assert!(q.contains_key("X-Amz-Signature"), "{c:?}");
    }
    // Replayed (through the proxy: the host is signed too), the canary URL is signed for HEAD,
    // so a GET on it is refused.
    let c = &probes[probes.len() - 1];
    let url = format!("{}{}?{}", proxy.endpoint(), c.path, c.query);
    assert_eq!(fetch("HEAD", &url).status, 200, "{url}");
    assert_eq!(
        fetch("GET", &url).status,
        403,
        "GET on a HEAD-presigned URL: {url}"
    );
    let ready = serve.readyz();
    assert_eq!(ready["origins"][0]["healthy"], true, "{ready}");
    assert!(!serve.log().contains("marked unhealthy"), "{}", serve.log());
    drop(serve);

    // The control: the same setup with a wrong secret: s3s-fs refuses the canary, and the
    // origin is marked unhealthy.
    proxy.clear();
    let bad = world.serve_with(&config, &[], |cmd| {
        cmd.env("AWS_SECRET_ACCESS_KEY", "wrong/Secret+for-the-canary");
    });
    wait_for("the canary to fail", Duration::from_secs(30), || {
        bad.log().contains("origin marked unhealthy").then_some(())
    });
    let log = bad.log();
    assert!(log.contains("canary answered 403"), "{log}");
    let refused = answered(&proxy);
    assert!(
        !refused.is_empty() && refused.iter().all(|c| c.status == Some(403)),
        "{refused:#?}"
    );
    assert_eq!(bad.readyz()["origins"][0]["healthy"], false);
    drop(bad);
    world.assert_no_secret_leaked();
}

// ---------------------------------------------------------------------------------------------
// 3. serve calls S3 for index documents only, once each
// ---------------------------------------------------------------------------------------------

#[test]
fn serve_calls_s3_only_for_index_loads() {
    let world = S3World::start();
    let direct = world.direct_config();
    world.publish(
        &direct,
        "oci:fixtures/oci-single:1.0",
        &["fix/oci-single:1.0"],
        &[],
    );
    world.publish(
        &direct,
        "oci:fixtures/oci-multi:latest",
        &["fix/multi:latest"],
        &[],
    );
    // The store (index loads) goes through the proxy; presigned URLs point at s3s-fs directly.
    let proxy = CountingProxy::start(world.s3.addr);
    let tail = format!(
        "[serve]\nhealth_interval = 1\n\n[[origins]]\nname = \"s3\"\nsigner = {{ kind = \"s3\", endpoint = \"{}\" }}\n",
        world.s3.endpoint()
    );
    let config = world.config(
        "store-via-proxy",
        &proxy.endpoint(),
        &ConfigExtra {
            s3: "",
            tail: &tail,
        },
    );
    let serve = world.serve(&config, &["--index-ttl", "3600"]);
    let repos = ["fix/oci-single", "fix/multi"];

    let mut sent = 0usize;
    let mut expect = |method: &str, path: &str, status: u16| {
        let r = serve.request(method, path);
        assert_eq!(r.status, status, "{method} {path}: {r:?}");
        sent += 1;
        r
    };
    for repo in repos {
        let tag = if repo == "fix/multi" { "latest" } else { "1.0" };
        let index = stored_index(&world, repo);
        for _ in 0..100 {
            expect("HEAD", &format!("/v2/{repo}/manifests/{tag}"), 200);
        }
        for _ in 0..25 {
            let r = expect("GET", &format!("/v2/{repo}/manifests/{tag}"), 307);
            assert!(r
                .header("location")
                .unwrap()
                .starts_with(&world.s3.endpoint()));
        }
        for d in keys(&index["manifests"]) {
            for _ in 0..10 {
                expect("GET", &format!("/v2/{repo}/manifests/{d}"), 307);
                expect("HEAD", &format!("/v2/{repo}/manifests/{d}"), 200);
                expect("GET", &format!("/v2/{repo}/referrers/{d}"), 200);
            }
        }
        for d in keys(&index["blobs"]) {
            for _ in 0..10 {
                expect("GET", &format!("/v2/{repo}/blobs/{d}"), 307);
                expect("HEAD", &format!("/v2/{repo}/blobs/{d}"), 200);
            }
        }
        for _ in 0..10 {
            expect("GET", &format!("/v2/{repo}/tags/list"), 307);
            expect("GET", &format!("/v2/{repo}/tags/list?n=1"), 200);
        }
    }
    for _ in 0..10 {
        expect("GET", "/v2/_catalog", 307);
        expect("GET", "/v2/_catalog?n=1", 200);
    }
    // Full pulls, their content followed from the presigned URLs.
    let mut skopeo = Skopeo::new();
    let single = skopeo
        .copy(&serve.host(), "fix/oci-single:1.0", false, None)
        .unwrap();
    assert!(single.check_file_names().unwrap() >= 2);
    let multi = skopeo
        .copy(&serve.host(), "fix/multi:latest", true, None)
        .unwrap();
    assert!(multi.check_file_names().unwrap() >= 4);

    // What reached S3 through the store's endpoint.
    assert!(proxy.errors().is_empty(), "{:?}", proxy.errors());
    let requests = proxy.requests();
    let mut per_document: BTreeMap<String, usize> = BTreeMap::new();
    let mut canaries = 0;
    let mut other = Vec::new();
    for r in &requests {
        match (r.method.as_str(), r.key()) {
            ("GET", Some(k)) if k == "_catalog.json" || k.ends_with("/_index.json") => {
                *per_document.entry(k.to_owned()).or_default() += 1
            }
            ("HEAD", Some("_health")) => canaries += 1,
            _ => other.push(r.clone()),
        }
    }
    eprintln!(
        "serve_calls_s3_only_for_index_loads: {sent} requests to serve plus 2 skopeo pulls; \
         through the store endpoint: {:?} (canary HEADs: {canaries})",
        proxy.counts()
    );
    assert!(other.is_empty(), "serve made other S3 calls: {other:#?}");
    assert!(
        requests.iter().all(|r| r.status == Some(200)),
        "every index load was answered: {requests:#?}"
    );
    assert!(
        !requests.iter().any(|r| r
            .key()
            .is_some_and(|k| k.starts_with("blobs/") || k.starts_with("manifests/"))),
        "{requests:#?}"
    );
    let want: BTreeMap<String, usize> = [
        "_catalog.json".to_owned(),
        "repositories/fix/multi/_index.json".to_owned(),
        "repositories/fix/oci-single/_index.json".to_owned(),
    ]
    .into_iter()
    .map(|k| (k, 1))
    .collect();
    assert_eq!(per_document, want, "one load per document");
    // The endpoint's own count agrees (repository indexes; the catalog is counted apart).
    let ready = serve.readyz();
    assert_eq!(ready["origins"][0]["index_loads"], 2, "{ready}");
    drop(serve);
    world.assert_no_secret_leaked();
}

// ---------------------------------------------------------------------------------------------
// 4. Re-publishing uploads no blob bytes
// ---------------------------------------------------------------------------------------------

/// `(blobs written, bytes text, blobs skipped)` from a summary's first line:
/// `blobs: wrote N (X B), skipped M already in the store (Y B); manifests: wrote K`.
fn summary_counts(out: &Output) -> (u64, String, u64) {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text.lines().next().unwrap_or_default();
    let parse = || -> Option<(u64, String, u64)> {
        let rest = line.strip_prefix("blobs: wrote ")?;
        let (written, rest) = rest.split_once(" (")?;
        let (bytes, rest) = rest.split_once("), skipped ")?;
        let (skipped, _) = rest.split_once(" already in the store")?;
        Some((
            written.parse().ok()?,
            bytes.to_owned(),
            skipped.parse().ok()?,
        ))
    };
    parse().unwrap_or_else(|| panic!("unexpected publish summary: {text}"))
}

fn is_blob_write(r: &ProxiedRequest) -> bool {
    (r.method == "PUT" || r.method == "POST") && r.key().is_some_and(|k| k.starts_with("blobs/"))
}

#[test]
fn republishing_uploads_no_blob_bytes() {
    let world = S3World::start();
    let proxy = CountingProxy::start(world.s3.addr);
    let config = world.config("via-proxy", &proxy.endpoint(), &ConfigExtra::default());
    let fixtures = fixtures::all();

    // First pass: the blobs are uploaded (so the proxy demonstrably sees blob PUTs).
    let mut first_written = 0;
    for f in &fixtures {
        let (written, _, _) = summary_counts(&world.publish(&config, f.source, &f.tags, &f.flags));
        first_written += written;
    }
    let first_puts = proxy.requests().iter().filter(|r| is_blob_write(r)).count();
    assert!(first_written > 0 && first_puts as u64 >= first_written);

    // Second pass: nothing to upload.
    proxy.clear();
    let mut skipped_total = 0;
    for f in &fixtures {
        let out = world.publish(&config, f.source, &f.tags, &f.flags);
        let (written, bytes, skipped) = summary_counts(&out);
        assert_eq!(
            (written, bytes.as_str()),
            (0, "0 B"),
            "re-publishing {} wrote blobs:\n{}",
            f.name,
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(skipped > 0, "{}", String::from_utf8_lossy(&out.stdout));
        skipped_total += skipped;
    }
    assert!(proxy.errors().is_empty(), "{:?}", proxy.errors());
    let requests = proxy.requests();
    let blob_writes: Vec<_> = requests.iter().filter(|r| is_blob_write(r)).collect();
    assert!(blob_writes.is_empty(), "{blob_writes:#?}");
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for r in &requests {
        let kind = match r.key() {
            Some(k) if k.starts_with("blobs/") => "blobs/*",
            Some(k) if k.starts_with("manifests/") => "manifests/*",
            Some(k) if k.ends_with("/_index.json") => "*/_index.json",
            Some(k) if k.ends_with("/_tags.json") => "*/_tags.json",
            Some(k) if k.contains("/_manifests/") => "*/_manifests/*",
            Some(k) => k,
            None => "(bucket)",
        };
        *by_kind.entry(format!("{} {kind}", r.method)).or_default() += 1;
    }
    eprintln!(
        "republishing_uploads_no_blob_bytes: first pass {first_written} blobs ({first_puts} blob \
         PUT/POSTs); second pass {skipped_total} blobs skipped, S3 requests by kind: {by_kind:?}"
    );
    world.assert_no_secret_leaked();
}

// ---------------------------------------------------------------------------------------------
// 5. Racing publishers keep every tag
// ---------------------------------------------------------------------------------------------

#[test]
fn racing_publishers_keep_every_tag() {
    let world = S3World::start();
    // See `CountingProxy::start_linearizing`: s3s-fs's conditional PUTs are not atomic.
    let proxy = CountingProxy::start_linearizing(world.s3.addr);
    let config = world.config("linearized", &proxy.endpoint(), &ConfigExtra::default());
    // 8 distinct tags on one repository, 2 publishers of one more tag (different images), and 2
    // new repositories (which race on the catalog).
    let mut jobs = World::race_jobs(8);
    jobs.push((
        "race/other-a:1".into(),
        "oci-archive:fixtures/oci-archive.tar:1.0",
    ));
    jobs.push((
        "race/other-b:1".into(),
        "docker-archive:fixtures/docker-legacy.tar",
    ));
    let outputs = world.publish_concurrently(&config, &jobs);
    let mut published: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    // Logged compare-and-swap retries: (on an index, on the catalog, in all).
    let mut retries = (0, 0, 0);
    for (_, out) in &outputs {
        for line in String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| l.contains("changed concurrently, retrying"))
        {
            retries.0 += usize::from(line.contains("/_index.json: "));
            retries.1 += usize::from(line.contains(" _catalog.json: "));
            retries.2 += 1;
        }
        for (name, digest) in summary_tags(out) {
            published.entry(name).or_default().insert(digest);
        }
    }
    // Every index and catalog write was conditional, and s3s-fs's 412s are what made the
    // publishers retry.
    assert!(proxy.errors().is_empty(), "{:?}", proxy.errors());
    let commits: Vec<ProxiedRequest> = proxy
        .requests()
        .into_iter()
        .filter(|r| {
            r.method == "PUT"
                && r.key()
                    .is_some_and(|k| k == "_catalog.json" || k.ends_with("/_index.json"))
        })
        .collect();
    let unconditional: Vec<_> = commits.iter().filter(|r| r.condition.is_none()).collect();
    assert!(unconditional.is_empty(), "{unconditional:#?}");
    let refused = commits.iter().filter(|r| r.status == Some(412)).count();
    let accepted = commits.iter().filter(|r| r.status == Some(200)).count();
    assert_eq!(
        refused + accepted,
        commits.len(),
        "every commit got 200 or 412: {commits:#?}"
    );
    // Each publisher commits its repository's index once; each new repository enters the
    // catalog once.
    let accepted_on = |suffix: &str| {
        commits
            .iter()
            .filter(|r| r.status == Some(200) && r.path.ends_with(suffix))
            .count()
    };
    assert_eq!(
        (accepted_on("/_index.json"), accepted_on("/_catalog.json")),
        (jobs.len(), 3),
        "{commits:#?}"
    );
    let refused_on = |suffix: &str| {
        commits
            .iter()
            .filter(|r| r.status == Some(412) && r.path.ends_with(suffix))
            .count()
    };
    let (index_refused, catalog_refused) =
        (refused_on("/_index.json"), refused_on("/_catalog.json"));
    assert_eq!(
        retries,
        (index_refused, catalog_refused, refused),
        "each 412 is one logged retry of that object (and nothing else is): {commits:#?}"
    );
    eprintln!(
        "racing_publishers_keep_every_tag: {} publishers; index/catalog PUTs: {accepted} \
         accepted, {refused} refused with 412 ({index_refused} on the index, {catalog_refused} \
         on the catalog = {} logged compare-and-swap retries)",
        outputs.len(),
        retries.2
    );

    let index = stored_index(&world, "race/app");
    let tags: BTreeSet<String> = keys(&index["tags"]).into_iter().collect();
    let want: BTreeSet<String> = (0..8)
        .map(|i| format!("t{i}"))
        .chain(["same".to_owned()])
        .collect();
    assert_eq!(tags, want, "{index}");
    for t in &want {
        let digest = index["tags"][t]["digest"]
            .as_str()
            .expect("digest")
            .to_owned();
        let candidates = &published[&format!("race/app:{t}")];
        assert!(
            candidates.contains(&digest),
            "{t} -> {digest}, published as {candidates:?}"
        );
        // The tag copy is the manifest the index names.
        let copy = std::fs::read(
            world
                .s3
                .object_file(&format!("repositories/race/app/_manifests/{t}")),
        )
        .expect("tag copy");
        assert_eq!(sha256(&copy), digest, "_manifests/{t}");
        // Every manifest the index references is there (with the winner's content).
        assert!(world
            .s3
            .object_file(&format!("manifests/sha256/{}", hex_of(&digest)))
            .is_file());
    }
    let tags_json: Value = serde_json::from_slice(
        &std::fs::read(world.s3.object_file("repositories/race/app/_tags.json")).unwrap(),
    )
    .unwrap();
    let listed: BTreeSet<String> = tags_json["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, want, "_tags.json: {tags_json}");
    let catalog: Value =
        serde_json::from_slice(&std::fs::read(world.s3.object_file("_catalog.json")).unwrap())
            .unwrap();
    assert_eq!(
        catalog["repositories"],
        serde_json::json!(["race/app", "race/other-a", "race/other-b"]),
        "{catalog}"
    );
    let out = world.verify(&config, true);
    assert!(
        out.status.success(),
        "{}",
        describe_output("verify --deep", &out)
    );
    world.assert_no_secret_leaked();
}

// ---------------------------------------------------------------------------------------------
// 6. A blob above the multipart threshold
// ---------------------------------------------------------------------------------------------

#[test]
fn multipart_blob_publishes_and_pulls() {
    const MIB: usize = 1024 * 1024;
    let world = S3World::start();
    let work = tempfile::tempdir().unwrap();
    let (layout, diff_id, config_digest) = fixtures::big_layout(work.path(), 12 * MIB);
    let proxy = CountingProxy::start(world.s3.addr);
    let config = world.config(
        "multipart",
        &proxy.endpoint(),
        &ConfigExtra {
            s3: "multipart_threshold = 5242880\npart_size = 5242880\nconcurrency = 2",
            tail: "",
        },
    );
    let source = format!("oci:{}:1.0", layout.display());
    let out = world.publish(&config, &source, &["fix/big:1.0"], &[]);
    let (written, _, _) = summary_counts(&out);
    assert_eq!(
        written,
        2,
        "config and layer: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The compressed layer is the one blob above the threshold.
    let index = stored_index(&world, "fix/big");
    let big: Vec<(String, u64)> = index["blobs"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(d, s)| (d.clone(), s.as_u64().unwrap()))
        .filter(|(_, s)| *s > 5 * MIB as u64)
        .collect();
    assert_eq!(big.len(), 1, "{index}");
    let (layer_digest, layer_size) = big[0].clone();
    assert_ne!(
        layer_digest, diff_id,
        "publish compresses an uncompressed layer"
    );

    // It went up in parts: create, ceil(size / 5 MiB) part PUTs, complete; no single PUT.
    assert!(proxy.errors().is_empty(), "{:?}", proxy.errors());
    let key = format!("blobs/sha256/{}", hex_of(&layer_digest));
    let on_key: Vec<ProxiedRequest> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.key() == Some(key.as_str()))
        .collect();
    let count = |method: &str, pred: &dyn Fn(&str) -> bool| {
        on_key
            .iter()
            .filter(|r| r.method == method && pred(&r.query))
            .count()
    };
    let creates = count("POST", &|q| {
        q.split('&').any(|p| p == "uploads" || p == "uploads=")
    });
    let parts = count("PUT", &|q| q.contains("partNumber="));
    let completes = count("POST", &|q| q.contains("uploadId="));
    let plain_puts = count("PUT", &|q| q.is_empty());
    let want_parts = layer_size.div_ceil(5 * MIB as u64) as usize;
    eprintln!(
        "multipart_blob_publishes_and_pulls: layer of {layer_size} bytes; requests on its key: {:?}",
        on_key
            .iter()
            .map(|r| format!("{} ?{}", r.method, r.query.split('&').next().unwrap_or("")))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        (creates, parts, completes, plain_puts),
        (1, want_parts, 1, 0),
        "{on_key:#?}"
    );

    let direct = world.direct_config();
    let out = world.verify(&direct, true);
    assert!(
        out.status.success(),
        "{}",
        describe_output("verify --deep", &out)
    );

    // Pulled back through serve and the presigned URLs, the layer is intact.
    let serve = world.serve(&direct, &[]);
    let mut skopeo = Skopeo::new();
    let pulled = skopeo
        .copy(&serve.host(), "fix/big:1.0", false, None)
        .unwrap();
    pulled.check_file_names().unwrap();
    assert_eq!(pulled.layer_digests().unwrap(), vec![layer_digest.clone()]);
    let blob = pulled.get(&layer_digest).unwrap();
    assert_eq!(blob.len() as u64, layer_size);
    let tar = fixtures::decompress(&blob).unwrap();
    assert_eq!(sha256(&tar), diff_id);
    let (_, manifest) = pulled.manifest().unwrap();
    let m: Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(m["config"]["digest"], config_digest.as_str());
    drop(serve);
    world.assert_no_secret_leaked();
}

// ---------------------------------------------------------------------------------------------
// 7. Credentials never leak
// ---------------------------------------------------------------------------------------------

#[test]
fn credentials_never_leak() {
    let world = S3World::start();
    let config = world.direct_config();
    let trace = |cmd: &mut Command| {
        cmd.env("RUST_LOG", "trace");
    };
    // publish, verify and serve with everything logged.
    let mut cmd = world.publish_command(
        &config,
        "oci:fixtures/oci-multi:latest",
        &["leak/multi:1"],
        &[],
    );
    trace(&mut cmd);
    let out = world.run("publish (trace)", &mut cmd);
    assert!(out.status.success(), "{}", describe_output("publish", &out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("TRACE"),
        "trace logging is on"
    );
    let mut cmd = world.command(&config);
    cmd.args(["verify", "--deep"]);
    trace(&mut cmd);
    let out = world.run("verify (trace)", &mut cmd);
    assert!(out.status.success(), "{}", describe_output("verify", &out));
    let serve = world.serve_with(&config, &[], trace);
    let url = serve.location("/v2/leak/multi/manifests/1");
    assert_eq!(fetch("GET", &url).status, 200);
    assert_eq!(
        serve.request("HEAD", "/v2/leak/multi/manifests/1").status,
        200
    );
    assert_eq!(
        serve.request("GET", "/v2/leak/nothing/manifests/1").status,
        404
    );
    assert_eq!(serve.request("GET", "/readyz").status, 200);
    drop(serve);

    // Failures: a wrong secret (s3s-fs answers 403) must not be echoed either.
    const WRONG: &str = "wrongSecret/Zq8+must-not-be-echoed";
    let mut cmd = world.publish_command(&config, "oci:fixtures/oci-single:1.0", &["leak/x:1"], &[]);
    cmd.env("AWS_SECRET_ACCESS_KEY", WRONG);
    trace(&mut cmd);
    let out = world.run("publish (wrong secret)", &mut cmd);
    assert!(
        !out.status.success(),
        "{}",
        describe_output("publish", &out)
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("403 Forbidden"), "{text}");
    assert!(!text.contains(WRONG), "{text}");
    // An endpoint with credentials in it is refused without being echoed.
    let userinfo = world.config(
        "userinfo",
        &format!(
            "http://{ACCESS_KEY}:{}@{}",
            SECRET_KEY.replace('/', "%2F").replace('+', "%2B"),
            world.s3.addr
        ),
        &ConfigExtra::default(),
    );
    let out = world.run(
        "verify (userinfo endpoint)",
        world.command(&userinfo).arg("verify"),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("user info"), "{stderr}");
    std::fs::remove_file(&userinfo).unwrap();

    // --help and --version, with the secret in the environment (clap can print `[env: X=value]`).
    for args in [
        vec!["--help"],
        vec!["--version"],
        vec!["serve", "--help"],
        vec!["publish", "--help"],
        vec!["verify", "--help"],
        vec!["help", "serve"],
    ] {
        let out = world.run(&format!("{args:?}"), world.command(&config).args(&args));
        assert!(
            out.status.success(),
            "{}",
            describe_output(&format!("{args:?}"), &out)
        );
        assert!(!out.stdout.is_empty());
    }

    let searched = world.assert_no_secret_leaked();
    // The detector itself: a planted copy of the secret (percent-encoded, as in a URL) is found.
    let planted = world.log_dir().join("planted.log");
    let encoded: String = url::form_urlencoded::byte_serialize(SECRET_KEY.as_bytes()).collect();
    std::fs::write(&planted, format!("GET /x?k={encoded}\n")).unwrap();
    let (found, _) = world.files_with_secret();
    assert_eq!(
        found,
        vec![planted.clone()],
        "a planted secret must be detected"
    );
    std::fs::remove_file(&planted).unwrap();
    let logs = common::files_under(&world.log_dir()).len();
    assert!(
        logs >= 10 && searched > logs,
        "{logs} logs, {searched} files searched"
    );
}

// ---------------------------------------------------------------------------------------------
// The example configurations
// ---------------------------------------------------------------------------------------------

/// Runs the binary on a config file in an environment with no credentials anywhere, so it must
/// stop at the credential chain, after the whole file was parsed and checked.
fn run_without_credentials(config: &Path, args: &[&str]) -> Output {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(common::bin());
    cmd.arg("-c").arg(config).args(args);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("AWS_") || k.starts_with("STATIC_REGISTRY_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("HOME", home.path())
        .env("AWS_SHARED_CREDENTIALS_FILE", home.path().join("none"))
        .env("AWS_CONFIG_FILE", home.path().join("none"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("NO_COLOR", "1")
        .output()
        .expect("run static-registry")
}

#[test]
fn example_configs_parse() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["s3.toml", "r2.toml"] {
        let path = manifest_dir().join("config").join(name);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let table: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            table["store"]
                .as_str()
                .is_some_and(|s| s.starts_with("s3://")),
            "{name}"
        );
        assert!(table.contains_key("s3"), "{name}");
        for args in [&["verify"][..], &["serve", "--listen", "127.0.0.1:0"][..]] {
            let out = run_without_credentials(&path, args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{name} {args:?}: {stderr}");
            assert!(
                !stderr.contains("invalid config file"),
                "{name} {args:?}: {stderr}"
            );
            assert!(
                stderr.contains("no AWS credentials found"),
                "{name} {args:?} should get as far as the credential chain: {stderr}"
            );
        }
        // The control: one misspelt key in the same file is a config error.
        let broken = dir.path().join(name);
        std::fs::write(&broken, text.replacen("[s3]", "[s3]\nregoin = \"x\"", 1)).unwrap();
        let out = run_without_credentials(&broken, &["verify"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("invalid config file"), "{name}: {stderr}");
    }
}

// ---------------------------------------------------------------------------------------------
// The harness itself
// ---------------------------------------------------------------------------------------------

#[test]
fn proxy_parser_follows_bodies_and_keep_alive() {
    let mut p = RequestParser::default();
    let mut out = Vec::new();
    let stream: &[u8] = b"PUT /b/k?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 20\r\n\r\nGET /fake HTTP/1.1\r\n\r\n\
                          GET /b/real HTTP/1.1\r\nHost: h\r\n\r\nHEAD /b/h HTTP/1.1\r\ncontent-length: 0\r\n\r\n";
    // Byte by byte: heads and bodies split anywhere.
    for b in stream {
        p.feed(std::slice::from_ref(b), &mut out).unwrap();
    }
    let got: Vec<_> = out
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str(), r.query.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("PUT", "/b/k", "x=1"),
            ("GET", "/b/real", ""),
            ("HEAD", "/b/h", "")
        ]
    );
    // A chunked body cannot be followed: that is an error, not a silent miscount.
    let mut p = RequestParser::default();
    assert!(p
        .feed(
            b"PUT /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            &mut out
        )
        .is_err());
}

#[test]
fn amz_date_parsing() {
    assert_eq!(amz_date_secs("19700101T000000Z"), 0);
    assert_eq!(amz_date_secs("20130524T000000Z"), 1_369_353_600);
    assert_eq!(amz_date_secs("20240229T235959Z"), 1_709_251_199);
}
