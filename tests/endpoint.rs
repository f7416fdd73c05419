//! The HTTP surface of `static-registry serve`, request by request, against a real server over a
//! published store: the local answers (`/v2/`, `/v1/_ping`, HEADs, errors), the 307s to signed
//! URLs and what those URLs serve, the signature checks of the embedded origin, pagination, and a
//! table of hostile requests that must each get the right error and never a redirect.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::fixtures::{self, Expect, Image, OCI_INDEX, OCI_MANIFEST};
use common::http::{client, raw};
use common::{hex_of, manifest_dir, new_store, publish, sha256, Server};
use reqwest::{Method, StatusCode};

/// A served store holding:
/// - fix/oci-single:{1.0,2.0,latest} (oci-single, published byte for byte);
/// - legacy/hello:1.0 (docker-legacy, layers compressed on publish);
/// - fix/multi:latest (oci-multi, an image index).
struct Env {
    store: tempfile::TempDir,
    server: Server,
    http: reqwest::Client,
    single: Image,
}

const SINGLE: &str = "fix/oci-single";
const SINGLE_TAGS: [&str; 3] = ["1.0", "2.0", "latest"];

impl Env {
    fn start(extra: &[&str]) -> Env {
        let store = new_store();
        publish(
            store.path(),
            "oci:fixtures/oci-single:1.0",
            &[
                "fix/oci-single:1.0",
                "fix/oci-single:2.0",
                "fix/oci-single:latest",
            ],
        );
        publish(
            store.path(),
            "docker-archive:fixtures/docker-legacy.tar",
            &[],
        );
        publish(
            store.path(),
            "oci:fixtures/oci-multi:latest",
            &["fix/multi:latest"],
        );
        let server = Server::start(store.path(), extra);
        let Expect::Image(single) = fixtures::oci_single() else {
            unreachable!("oci-single is one image")
        };
        Env {
            store,
            server,
            http: client(),
            single,
        }
    }

    fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with('/') {
            self.server.url(path_or_url)
        } else {
            path_or_url.to_owned()
        }
    }

    async fn req(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut r = self.http.request(method.clone(), self.url(path));
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.req(Method::GET, path, &[]).await
    }

    async fn head(&self, path: &str) -> reqwest::Response {
        self.req(Method::HEAD, path, &[]).await
    }

    /// GETs `path`, asserts a 307 to the embedded origin, and returns the Location.
    async fn redirect_of(&self, path: &str) -> String {
        let r = self.get(path).await;
        assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT, "GET {path}");
        let loc = header(&r, "location")
            .unwrap_or_else(|| panic!("GET {path}: 307 without Location"))
            .to_owned();
        assert!(
            loc.starts_with("/_origin/"),
            "GET {path}: Location {loc} is not under /_origin/"
        );
        loc
    }

    fn manifest_digest(&self) -> &str {
        self.single
            .manifest
            .as_deref()
            .expect("oci-single keeps its digest")
    }

    fn manifest_bytes(&self) -> &[u8] {
        self.single
            .manifest_bytes
            .as_deref()
            .expect("oci-single manifest bytes")
    }

    fn layer(&self, i: usize) -> (String, Vec<u8>) {
        let d = self.single.layers.as_ref().expect("oci-single layers")[i].clone();
        let bytes = std::fs::read(
            manifest_dir()
                .join("fixtures/oci-single/blobs/sha256")
                .join(hex_of(&d)),
        )
        .expect("read fixture layer");
        (d, bytes)
    }
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Replaces the value of query parameter `key` in `url`.
fn with_param(url: &str, key: &str, value: &str) -> String {
    let (path, query) = url.split_once('?').expect("signed URL has a query");
    let query: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k == key => format!("{k}={value}"),
            _ => kv.to_owned(),
        })
        .collect();
    format!("{path}?{}", query.join("&"))
}

fn param<'a>(url: &'a str, key: &str) -> &'a str {
    url.split_once('?')
        .expect("query")
        .1
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("{url} has no {key}"))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

async fn json_of(r: reqwest::Response) -> serde_json::Value {
    let bytes = r.bytes().await.expect("body");
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
}

/// The `next` target of a `Link` header, if any.
fn next_link(r: &reqwest::Response) -> Option<String> {
    let link = header(r, "link")?;
    assert!(
        link.contains("rel=\"next\""),
        "Link without rel=\"next\": {link}"
    );
    let start = link.find('<').expect("Link <") + 1;
    let end = link.find('>').expect("Link >");
    Some(link[start..end].to_owned())
}

#[tokio::test]
async fn base_and_v1_ping() {
    let env = Env::start(&[]);
    for method in [Method::GET, Method::HEAD] {
        let r = env.req(method.clone(), "/v2/", &[]).await;
        assert_eq!(r.status(), StatusCode::OK, "{method} /v2/");
        assert_eq!(
            header(&r, "docker-distribution-api-version"),
            Some("registry/2.0"),
            "{method} /v2/"
        );
        assert!(
            header(&r, "www-authenticate").is_none(),
            "anonymous registry challenges"
        );
        if method == Method::GET {
            assert_eq!(json_of(r).await, serde_json::json!({}));
        }
    }
    let r = env.get("/v1/_ping").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "x-docker-registry-standalone"), Some("true"));
    assert!(header(&r, "x-docker-registry-version").is_some());
}

#[tokio::test]
async fn manifest_head_is_answered_locally_with_exact_headers() {
    let env = Env::start(&[]);
    let digest = env.manifest_digest().to_owned();
    let size = env.manifest_bytes().len().to_string();
    for reference in ["1.0", "latest", digest.as_str()] {
        let path = format!("/v2/{SINGLE}/manifests/{reference}");
        let r = env.head(&path).await;
        assert_eq!(r.status(), StatusCode::OK, "HEAD {path}");
        assert_eq!(
            header(&r, "content-type"),
            Some(OCI_MANIFEST),
            "HEAD {path}"
        );
        assert_eq!(
            header(&r, "content-length"),
            Some(size.as_str()),
            "HEAD {path}"
        );
        assert_eq!(
            header(&r, "docker-content-digest"),
            Some(digest.as_str()),
            "HEAD {path}"
        );
        assert!(
            header(&r, "location").is_none(),
            "HEAD {path} must not redirect"
        );
    }

    // The index: its own media type and size.
    let Expect::Index {
        digest: index_digest,
        bytes: index_bytes,
        ..
    } = fixtures::oci_multi()
    else {
        unreachable!()
    };
    let r = env.head("/v2/fix/multi/manifests/latest").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type"), Some(OCI_INDEX));
    assert_eq!(
        header(&r, "content-length"),
        Some(index_bytes.len().to_string().as_str())
    );
    assert_eq!(
        header(&r, "docker-content-digest"),
        Some(index_digest.as_str())
    );

    // A manifest publish rendered (docker archive): the HEAD must describe what GET serves.
    let r = env.head("/v2/legacy/hello/manifests/1.0").await;
    assert_eq!(r.status(), StatusCode::OK);
    let head_type = header(&r, "content-type").expect("content-type").to_owned();
    let head_len = header(&r, "content-length")
        .expect("content-length")
        .to_owned();
    let head_digest = header(&r, "docker-content-digest")
        .expect("digest")
        .to_owned();
    let loc = env.redirect_of("/v2/legacy/hello/manifests/1.0").await;
    let r = env.get(&loc).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type"), Some(head_type.as_str()));
    let body = r.bytes().await.expect("body");
    assert_eq!(body.len().to_string(), head_len);
    assert_eq!(sha256(&body), head_digest);
    let doc: serde_json::Value = serde_json::from_slice(&body).expect("manifest JSON");
    assert_eq!(
        doc["mediaType"],
        head_type.as_str(),
        "Content-Type is the manifest's mediaType"
    );
}

#[tokio::test]
async fn manifest_get_redirects_to_the_exact_bytes() {
    let env = Env::start(&[]);
    let digest = env.manifest_digest().to_owned();
    for reference in ["1.0", digest.as_str()] {
        let path = format!("/v2/{SINGLE}/manifests/{reference}");
        let r = env.get(&path).await;
        assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT, "GET {path}");
        assert_eq!(header(&r, "docker-content-digest"), Some(digest.as_str()));
        let loc = header(&r, "location").expect("Location").to_owned();
        assert!(loc.starts_with("/_origin/manifests/sha256/"), "{loc}");
        // A client that accepts compressed bodies must still get the exact bytes.
        let r = env
            .req(
                Method::GET,
                &loc,
                &[("accept-encoding", "gzip, deflate, br, zstd")],
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK, "GET {loc}");
        assert_eq!(header(&r, "content-type"), Some(OCI_MANIFEST), "GET {loc}");
        assert!(
            header(&r, "content-encoding").is_none(),
            "GET {loc} sets Content-Encoding"
        );
        let body = r.bytes().await.expect("body");
        assert_eq!(&body[..], env.manifest_bytes(), "manifest bytes differ");
    }

    // The index, by tag.
    let Expect::Index { bytes, .. } = fixtures::oci_multi() else {
        unreachable!()
    };
    let loc = env.redirect_of("/v2/fix/multi/manifests/latest").await;
    let r = env.get(&loc).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type"), Some(OCI_INDEX));
    assert_eq!(&r.bytes().await.unwrap()[..], &bytes[..]);
}

#[tokio::test]
async fn blob_get_redirects_and_origin_serves_ranges() {
    let env = Env::start(&[]);
    let (digest, bytes) = env.layer(0);
    let path = format!("/v2/{SINGLE}/blobs/{digest}");

    // HEAD is answered locally.
    let r = env.head(&path).await;
    assert_eq!(r.status(), StatusCode::OK, "HEAD {path}");
    assert_eq!(
        header(&r, "content-length"),
        Some(bytes.len().to_string().as_str())
    );
    assert_eq!(header(&r, "docker-content-digest"), Some(digest.as_str()));
    assert!(header(&r, "location").is_none());

    let loc = env.redirect_of(&path).await;
    assert!(loc.starts_with("/_origin/blobs/sha256/"), "{loc}");
    let r = env
        .req(Method::GET, &loc, &[("accept-encoding", "gzip")])
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        header(&r, "content-encoding").is_none(),
        "blob served with Content-Encoding"
    );
    let body = r.bytes().await.unwrap();
    assert_eq!(sha256(&body), digest);

    // Resuming: the client sends Range to the registry, which redirects again...
    let r = env.req(Method::GET, &path, &[("range", "bytes=10-")]).await;
    assert_eq!(
        r.status(),
        StatusCode::TEMPORARY_REDIRECT,
        "ranged GET on the registry"
    );
    let loc = header(&r, "location").expect("Location").to_owned();
    // ...and the origin answers 206 with the rest.
    let r = env.req(Method::GET, &loc, &[("range", "bytes=10-")]).await;
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    let n = bytes.len();
    assert_eq!(
        header(&r, "content-range"),
        Some(format!("bytes 10-{}/{n}", n - 1).as_str())
    );
    assert_eq!(&r.bytes().await.unwrap()[..], &bytes[10..]);
}

#[tokio::test]
async fn signed_urls_cannot_be_tampered_with() {
    let env = Env::start(&[]);
    let (digest, _) = env.layer(0);
    let (other, _) = env.layer(1);
    let loc = env
        .redirect_of(&format!("/v2/{SINGLE}/blobs/{digest}"))
        .await;
    assert_eq!(
        env.get(&loc).await.status(),
        StatusCode::OK,
        "the untouched URL works"
    );

    let sig = param(&loc, "sig");
    let first = sig.chars().next().expect("non-empty sig");
    let flipped = format!("{}{}", if first == '0' { '1' } else { '0' }, &sig[1..]);
    let exp: u64 = param(&loc, "exp").parse().expect("numeric exp");
    let mut cases = vec![
        ("flipped signature", with_param(&loc, "sig", &flipped)),
        (
            "truncated signature",
            with_param(&loc, "sig", &sig[..sig.len() - 2]),
        ),
        (
            "non-hex signature",
            with_param(&loc, "sig", &"z".repeat(sig.len())),
        ),
        ("changed ct", with_param(&loc, "ct", "application%2Fjson")),
        (
            "manifest ct on a blob",
            with_param(&loc, "ct", "application%2Fvnd.oci.image.manifest.v1%2Bjson"),
        ),
        (
            "longer exp",
            with_param(&loc, "exp", &(exp + 3600).to_string()),
        ),
        ("changed method", with_param(&loc, "m", "HEAD")),
        ("another key", loc.replace(hex_of(&digest), hex_of(&other))),
        ("no query", loc.split('?').next().unwrap().to_owned()),
    ];
    cases.push((
        "key moved to another prefix",
        loc.replacen("/_origin/blobs/", "/_origin/manifests/", 1),
    ));
    let mut failures = Vec::new();
    for (what, url) in &cases {
        assert_ne!(url, &loc, "{what}: the tampered URL is the original");
        let r = env.get(url).await;
        if r.status() != StatusCode::FORBIDDEN {
            failures.push(format!("{what}: GET {url} -> {}", r.status()));
        }
    }
    assert!(
        failures.is_empty(),
        "tampered URLs were served:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn signed_urls_expire() {
    let env = Env::start(&["--url-ttl", "1"]);
    let (digest, _) = env.layer(0);
    let before = unix_now();
    let loc = env
        .redirect_of(&format!("/v2/{SINGLE}/blobs/{digest}"))
        .await;
    let after = unix_now();
    let exp: u64 = param(&loc, "exp").parse().expect("numeric exp");
    assert!(
        (before + 1..=after + 1).contains(&exp),
        "--url-ttl 1 signed exp={exp}, requested between {before} and {after}"
    );
    let r = env.get(&loc).await;
    if unix_now() <= exp {
        // Still inside its lifetime (the server checked no later than now).
        assert_eq!(r.status(), StatusCode::OK, "a fresh URL is refused");
    }
    // Wait for the clock to pass exp: that, not any server state, is what the test waits for.
    while unix_now() <= exp {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = env.get(&loc).await;
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "an expired URL was served"
    );
}

#[tokio::test]
async fn tags_list_redirects_and_paginates() {
    let env = Env::start(&[]);
    let all: Vec<String> = SINGLE_TAGS.iter().map(|s| s.to_string()).collect();

    let loc = env.redirect_of(&format!("/v2/{SINGLE}/tags/list")).await;
    let r = env.get(&loc).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type"), Some("application/json"));
    let doc = json_of(r).await;
    assert_eq!(doc["name"], SINGLE);
    assert_eq!(doc["tags"], serde_json::json!(all));

    for n in [1usize, 2] {
        let mut next = Some(format!("/v2/{SINGLE}/tags/list?n={n}"));
        let mut seen: Vec<String> = Vec::new();
        let mut pages = 0;
        while let Some(path) = next {
            pages += 1;
            assert!(pages <= all.len() + 1, "pagination does not end");
            let r = env.get(&path).await;
            assert_eq!(r.status(), StatusCode::OK, "GET {path}");
            next = next_link(&r);
            let doc = json_of(r).await;
            assert_eq!(doc["name"], SINGLE);
            let tags: Vec<String> = serde_json::from_value(doc["tags"].clone()).expect("tags");
            assert!(tags.len() <= n, "GET {path}: {} tags for n={n}", tags.len());
            assert!(
                !tags.is_empty() || next.is_none(),
                "empty page with a next link"
            );
            seen.extend(tags);
        }
        assert_eq!(seen, all, "pages of n={n}");
        assert_eq!(pages, all.len().div_ceil(n), "number of pages for n={n}");
    }
}

#[tokio::test]
async fn catalog_lists_repositories() {
    let env = Env::start(&[]);
    let all = vec!["fix/multi", "fix/oci-single", "legacy/hello"];
    let loc = env.redirect_of("/v2/_catalog").await;
    let r = env.get(&loc).await;
    assert_eq!(r.status(), StatusCode::OK);
    let doc = json_of(r).await;
    assert_eq!(doc["repositories"], serde_json::json!(all));

    let mut next = Some("/v2/_catalog?n=2".to_owned());
    let mut seen: Vec<String> = Vec::new();
    while let Some(path) = next {
        assert!(seen.len() <= all.len(), "pagination does not end");
        let r = env.get(&path).await;
        assert_eq!(r.status(), StatusCode::OK, "GET {path}");
        next = next_link(&r);
        let repos: Vec<String> =
            serde_json::from_value(json_of(r).await["repositories"].clone()).expect("repos");
        assert!(repos.len() <= 2);
        seen.extend(repos);
    }
    assert_eq!(seen, all);
}

#[tokio::test]
async fn referrers_of_a_manifest_is_an_empty_index() {
    let env = Env::start(&[]);
    let path = format!("/v2/{SINGLE}/referrers/{}", env.manifest_digest());
    let r = env.get(&path).await;
    assert_eq!(r.status(), StatusCode::OK, "GET {path}");
    assert_eq!(header(&r, "content-type"), Some(OCI_INDEX));
    let doc = json_of(r).await;
    assert_eq!(doc["schemaVersion"], 2);
    assert_eq!(doc["mediaType"], OCI_INDEX);
    assert_eq!(doc["manifests"], serde_json::json!([]));
}

#[tokio::test]
async fn writes_are_refused_with_unsupported() {
    let env = Env::start(&[]);
    let digest = env.manifest_digest().to_owned();
    let (layer, _) = env.layer(0);
    let cases: Vec<(Method, String)> = vec![
        (Method::PUT, format!("/v2/{SINGLE}/manifests/1.0")),
        (Method::PUT, format!("/v2/{SINGLE}/manifests/new")),
        (Method::DELETE, format!("/v2/{SINGLE}/manifests/1.0")),
        (Method::DELETE, format!("/v2/{SINGLE}/manifests/{digest}")),
        (Method::PATCH, format!("/v2/{SINGLE}/manifests/1.0")),
        (Method::POST, format!("/v2/{SINGLE}/manifests/1.0")),
        (Method::PUT, format!("/v2/{SINGLE}/blobs/{layer}")),
        (Method::DELETE, format!("/v2/{SINGLE}/blobs/{layer}")),
        (Method::POST, "/v2/x/blobs/uploads/".to_owned()),
        (Method::POST, format!("/v2/{SINGLE}/blobs/uploads/")),
        (
            Method::POST,
            format!("/v2/{SINGLE}/blobs/uploads/?mount={layer}&from=legacy/hello"),
        ),
        (
            Method::PATCH,
            format!("/v2/{SINGLE}/blobs/uploads/some-uuid"),
        ),
        (
            Method::PUT,
            format!("/v2/{SINGLE}/blobs/uploads/some-uuid?digest={layer}"),
        ),
        (
            Method::DELETE,
            format!("/v2/{SINGLE}/blobs/uploads/some-uuid"),
        ),
    ];
    let mut failures = Vec::new();
    for (method, path) in &cases {
        let r = env.req(method.clone(), path, &[]).await;
        let status = r.status();
        let location = header(&r, "location").map(str::to_owned);
        let body = json_of(r).await;
        let code = body["errors"][0]["code"].as_str().unwrap_or("").to_owned();
        let message = body["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        if status != StatusCode::METHOD_NOT_ALLOWED
            || code != "UNSUPPORTED"
            || !message.contains("publish")
            || location.is_some()
        {
            failures.push(format!(
                "{method} {path} -> {status} {code} {message:?} location={location:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "writes not refused with 405 UNSUPPORTED naming `publish`:\n{}",
        failures.join("\n")
    );
}

/// Polls `check` every 100 ms until it returns `Some`, failing after 30 s.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after 30 s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `(status, Docker-Content-Digest)` of a HEAD.
async fn head_digest(env: &Env, path: &str) -> (StatusCode, Option<String>) {
    let r = env.head(path).await;
    (
        r.status(),
        header(&r, "docker-content-digest").map(str::to_owned),
    )
}

#[tokio::test]
async fn tag_moves_and_new_repositories_become_visible() {
    let env = Env::start(&["--index-ttl", "1"]);
    let old = env.manifest_digest().to_owned();
    let latest = format!("/v2/{SINGLE}/manifests/latest");
    let later = "/v2/fix/later/manifests/1.0";
    assert_eq!(
        head_digest(&env, &latest).await,
        (StatusCode::OK, Some(old.clone()))
    );
    // Not published yet: the miss is cached too.
    assert_eq!(env.head(later).await.status(), StatusCode::NOT_FOUND);

    // Move `latest` to another image, and create a repository.
    publish(
        env.store.path(),
        "docker-archive:fixtures/docker-25.tar",
        &["fix/oci-single:latest", "fix/later:1.0"],
    );
    let new = eventually("fix/later:1.0 to appear", || async {
        match head_digest(&env, later).await {
            (StatusCode::OK, d) => d,
            _ => None,
        }
    })
    .await;
    assert_ne!(new, old);
    eventually("the tag move to become visible", || async {
        let (status, d) = head_digest(&env, &latest).await;
        assert_eq!(status, StatusCode::OK, "HEAD {latest} while the tag moves");
        assert!(
            d.as_deref() == Some(old.as_str()) || d.as_deref() == Some(new.as_str()),
            "HEAD {latest}: {d:?} is neither the old nor the new manifest"
        );
        (d.as_deref() == Some(new.as_str())).then_some(())
    })
    .await;
    // The other tags did not move, and the old manifest is still pullable by digest.
    assert_eq!(
        head_digest(&env, &format!("/v2/{SINGLE}/manifests/1.0")).await,
        (StatusCode::OK, Some(old.clone()))
    );
    env.redirect_of(&format!("/v2/{SINGLE}/manifests/{old}"))
        .await;
    env.redirect_of(&latest).await;
}

/// Repeats within a second re-use this thread's answer (counted at /metrics); with the index
/// uncached (`--index-ttl 0`) every answer is made afresh. Either way each answer is right.
#[tokio::test]
async fn repeats_reuse_their_answer_unless_the_index_is_uncached() {
    for (args, reused) in [(&[][..], true), (&["--index-ttl", "0"][..], false)] {
        let env = Env::start(args);
        let (digest, bytes) = env.layer(0);
        let blob = format!("/v2/{SINGLE}/blobs/{digest}");
        let tag = format!("/v2/{SINGLE}/manifests/1.0");
        for _ in 0..5 {
            let loc = env.redirect_of(&blob).await;
            assert!(loc.contains(hex_of(&digest)), "{blob} redirected to {loc}");
            let r = env.head(&blob).await;
            assert_eq!(r.status(), StatusCode::OK, "HEAD {blob}");
            assert_eq!(
                header(&r, "content-length"),
                Some(bytes.len().to_string().as_str())
            );
            assert_eq!(
                head_digest(&env, &tag).await,
                (StatusCode::OK, Some(env.manifest_digest().to_owned()))
            );
        }
        let metrics = env.get("/metrics").await.text().await.unwrap();
        let n = common::lb::metric_sum(
            &metrics,
            "static_registry_reused_total",
            &[r#"kind="answer""#],
        )
        .unwrap_or_else(|| panic!("no reused answers counter in:\n{metrics}"));
        if reused {
            // 15 requests, 3 distinct: at least one repeat fell in its first answer's second.
            assert!(n >= 1.0, "{args:?}: {n} answers reused");
        } else {
            assert_eq!(n, 0.0, "{args:?}: answers reused with the index uncached");
        }
    }
}

#[tokio::test]
async fn an_unreadable_store_keeps_serving_the_last_good_index() {
    let env = Env::start(&["--index-ttl", "1"]);
    let tag = format!("/v2/{SINGLE}/manifests/1.0");
    let digest = env.manifest_digest().to_owned();
    assert_eq!(
        head_digest(&env, &tag).await,
        (StatusCode::OK, Some(digest.clone()))
    );

    // Make both repository indexes unreadable (a directory where the file was): fix/oci-single
    // has been loaded and cached, legacy/hello never has.
    let break_index = |repo: &str| {
        let path = env
            .store
            .path()
            .join(format!("repositories/{repo}/_index.json"));
        std::fs::rename(&path, path.with_extension("json.bak")).expect("move index away");
        std::fs::create_dir(&path).expect("dir in place of the index");
        path
    };
    let single_index = break_index(SINGLE);
    let legacy_index = break_index("legacy/hello");

    // Once a refresh has failed, the last good copy keeps answering.
    eventually("a failed refresh of the cached index", || async {
        assert_eq!(
            head_digest(&env, &tag).await,
            (StatusCode::OK, Some(digest.clone())),
            "HEAD {tag} while the store is unreadable"
        );
        env.server
            .log()
            .contains("serving the last good copy")
            .then_some(())
    })
    .await;
    assert_eq!(head_digest(&env, &tag).await.0, StatusCode::OK);
    env.redirect_of(&tag).await;

    // Nothing to fall back on: 503, never a redirect or a 404 that clients would cache.
    let r = raw(
        env.server.addr,
        "GET",
        b"/v2/legacy/hello/manifests/1.0",
        &[],
    )
    .await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.error_code().as_deref(), Some("UNAVAILABLE"));
    assert!(r.header("location").is_none());

    // Repaired: served again.
    for path in [&single_index, &legacy_index] {
        std::fs::remove_dir(path).expect("remove dir");
        std::fs::rename(path.with_extension("json.bak"), path).expect("restore index");
    }
    eventually("legacy/hello to be served again", || async {
        (env.head("/v2/legacy/hello/manifests/1.0").await.status() == StatusCode::OK).then_some(())
    })
    .await;
}

/// One row of the hostile table.
struct Row {
    method: &'static str,
    target: Vec<u8>,
    status: u16,
    /// The OCI error code the body must carry (`None`: no body is checked, e.g. for HEAD).
    code: Option<&'static str>,
}

fn row(
    method: &'static str,
    target: impl Into<Vec<u8>>,
    status: u16,
    code: Option<&'static str>,
) -> Row {
    Row {
        method,
        target: target.into(),
        status,
        code,
    }
}

#[tokio::test]
async fn hostile_requests_get_errors_and_never_a_redirect() {
    let env = Env::start(&[]);
    let digest = env.manifest_digest().to_owned();
    let (layer, _) = env.layer(0);
    let hex = hex_of(&layer).to_owned();
    let unknown = format!("sha256:{}", "0".repeat(64));
    // A layer and the manifest of legacy/hello: in the store, but not in fix/oci-single.
    let legacy_digest = env.server.tag_digest("legacy/hello", "1.0");
    let Expect::Image(legacy) = fixtures::docker_legacy() else {
        unreachable!()
    };
    let legacy_config = legacy.config.clone();
    assert!(
        env.head(&format!("/v2/legacy/hello/blobs/{legacy_config}"))
            .await
            .status()
            .is_success(),
        "legacy/hello's config must be served from its own repository"
    );

    let s = SINGLE;
    let name255 = format!("{}/{}", "a".repeat(127), "b".repeat(127));
    let name256 = format!("{}/{}", "a".repeat(128), "b".repeat(127));
    assert_eq!((name255.len(), name256.len()), (255, 256));
    let tag128 = "t".repeat(128);
    let tag129 = "t".repeat(129);
    let upper = format!("sha256:{}", hex.to_uppercase());
    let short = format!("sha256:{}", &hex[..63]);
    let long = format!("sha256:{hex}0");
    let nonhex = format!("sha256:{}", "g".repeat(64));
    let md5 = "md5:d41d8cd98f00b204e9800998ecf8427e".to_owned();
    let sha512_64 = format!("sha512:{hex}");
    let sha512_unknown = format!("sha512:{}", "0".repeat(128));
    let forged = format!(
        "/_origin/blobs/sha256/{hex}?ct=application%2Foctet-stream&exp=99999999999&m=GET&sig={}",
        "0".repeat(64)
    );

    let (nu, mu, bu, di, ni) = (
        Some("NAME_UNKNOWN"),
        Some("MANIFEST_UNKNOWN"),
        Some("BLOB_UNKNOWN"),
        Some("DIGEST_INVALID"),
        Some("NAME_INVALID"),
    );
    let rows = vec![
        // Unknown things.
        row("GET", "/v2/nosuch/repo/manifests/1.0", 404, nu),
        row("GET", format!("/v2/nosuch/blobs/{layer}"), 404, nu),
        row("GET", "/v2/nosuch/tags/list", 404, nu),
        row("GET", format!("/v2/nosuch/referrers/{digest}"), 404, nu),
        row("GET", format!("/v2/{s}/manifests/nosuchtag"), 404, mu),
        row("HEAD", format!("/v2/{s}/manifests/nosuchtag"), 404, None),
        row("GET", format!("/v2/{s}/manifests/{unknown}"), 404, mu),
        row("HEAD", format!("/v2/{s}/manifests/{unknown}"), 404, None),
        row("GET", format!("/v2/{s}/blobs/{unknown}"), 404, bu),
        row("HEAD", format!("/v2/{s}/blobs/{unknown}"), 404, None),
        row("GET", format!("/v2/{s}/blobs/{sha512_unknown}"), 404, bu),
        // In the store, but referenced by another repository only.
        row("GET", format!("/v2/{s}/blobs/{legacy_config}"), 404, bu),
        row("HEAD", format!("/v2/{s}/blobs/{legacy_config}"), 404, None),
        row("GET", format!("/v2/{s}/blobs/{legacy_digest}"), 404, bu),
        row("GET", format!("/v2/{s}/manifests/{legacy_digest}"), 404, mu),
        row(
            "HEAD",
            format!("/v2/{s}/manifests/{legacy_digest}"),
            404,
            None,
        ),
        row("GET", format!("/v2/legacy/hello/blobs/{layer}"), 404, bu),
        // Names.
        row("GET", "/v2/Fix/oci-single/manifests/1.0", 400, ni),
        row("GET", format!("/v2/FIX/oci-single/blobs/{layer}"), 400, ni),
        row("GET", "/v2/fix/../fix/oci-single/manifests/1.0", 400, ni),
        row("GET", "/v2/../v2/fix/oci-single/manifests/1.0", 400, ni),
        row("GET", "/v2/fix/./oci-single/manifests/1.0", 400, ni),
        row("GET", "/v2/fix//oci-single/manifests/1.0", 400, ni),
        row("GET", "/v2//fix/oci-single/manifests/1.0", 400, ni),
        row(
            "GET",
            "/v2/fix/%2e%2e/fix/oci-single/manifests/1.0",
            400,
            ni,
        ),
        row("GET", "/v2/fix%2foci-single/manifests/1.0", 400, ni),
        row("GET", "/v2/fix%2Foci-single/manifests/1.0", 400, ni),
        row("GET", "/v2/fix%2f..%2f..%2fetc/manifests/1.0", 400, ni),
        row("GET", "/v2/fix%00/oci-single/manifests/1.0", 400, ni),
        row("GET", "/v2/_fix/oci-single/manifests/1.0", 400, ni),
        row("GET", "/v2/fix/_oci-single/manifests/1.0", 400, ni),
        row("GET", "/v2/fix/oci-single_/manifests/1.0", 400, ni),
        row("GET", "/v2/_catalog/tags/list", 400, ni),
        row("GET", format!("/v2/{name256}/manifests/1.0"), 400, ni),
        row("GET", format!("/v2/{name255}/manifests/1.0"), 404, nu),
        row("GET", "/v2/fix/oci-single%20/tags/list", 400, ni),
        // Malformed manifest references name no manifest: 404, as distribution answers and
        // the OCI conformance suite requires.
        row(
            "GET",
            format!("/v2/{s}/manifests/.INVALID_MANIFEST_NAME"),
            404,
            mu,
        ),
        row(
            "HEAD",
            format!("/v2/{s}/manifests/.INVALID_MANIFEST_NAME"),
            404,
            None,
        ),
        row("GET", format!("/v2/{s}/manifests/{tag129}"), 404, mu),
        row("GET", format!("/v2/{s}/manifests/{tag128}"), 404, mu),
        row("GET", format!("/v2/{s}/manifests/.1"), 404, mu),
        row("GET", format!("/v2/{s}/manifests/-1"), 404, mu),
        row("GET", format!("/v2/{s}/manifests/.."), 404, mu),
        row("GET", format!("/v2/{s}/manifests/%2e%2e"), 404, mu),
        row("GET", format!("/v2/{s}/manifests/1.0%00"), 404, mu),
        row("GET", format!("/v2/{s}/manifests/1.0%2f..%2f2.0"), 404, mu),
        row(
            "GET",
            format!("/v2/{s}/manifests/1.0%0d%0aX-Injected%3a%20yes"),
            404,
            mu,
        ),
        // A raw NUL byte in the request line: refused by the HTTP layer itself.
        row("GET", format!("/v2/{s}/manifests/1.0\0"), 400, None),
        // Digests.
        row("GET", format!("/v2/{s}/manifests/{upper}"), 404, mu),
        row("GET", format!("/v2/{s}/blobs/{upper}"), 400, di),
        row("GET", format!("/v2/{s}/blobs/{short}"), 400, di),
        row("GET", format!("/v2/{s}/blobs/{long}"), 400, di),
        row("GET", format!("/v2/{s}/manifests/{short}"), 404, mu),
        row("GET", format!("/v2/{s}/blobs/{nonhex}"), 400, di),
        row("GET", format!("/v2/{s}/blobs/{md5}"), 400, di),
        row("GET", format!("/v2/{s}/manifests/{md5}"), 404, mu),
        row("GET", format!("/v2/{s}/blobs/{sha512_64}"), 400, di),
        row("GET", format!("/v2/{s}/blobs/sha256:"), 400, di),
        row("GET", format!("/v2/{s}/blobs/{hex}"), 400, di),
        row(
            "GET",
            format!("/v2/{s}/blobs/sha256:..%2f..%2f{}", &hex[6..]),
            400,
            di,
        ),
        row("GET", format!("/v2/{s}/referrers/{md5}"), 400, di),
        row("GET", format!("/v2/{s}/blobs/latest"), 400, di),
        // Pagination.
        row(
            "GET",
            format!("/v2/{s}/tags/list?n=abc"),
            400,
            Some("PAGINATION_NUMBER_INVALID"),
        ),
        row(
            "GET",
            format!("/v2/{s}/tags/list?n=-1"),
            400,
            Some("PAGINATION_NUMBER_INVALID"),
        ),
        // Not registry routes.
        row(
            "GET",
            format!("/v2/{s}/_index.json"),
            404,
            Some("NOT_FOUND"),
        ),
        row(
            "GET",
            "/v2/repositories/fix/oci-single/_index.json",
            404,
            Some("NOT_FOUND"),
        ),
        row("GET", "/_catalog.json", 404, Some("NOT_FOUND")),
        row(
            "GET",
            "/blobs/sha256/".to_owned() + &hex,
            404,
            Some("NOT_FOUND"),
        ),
        // The embedded origin: only URLs the endpoint signed.
        row("GET", format!("/_origin/blobs/sha256/{hex}"), 403, None),
        row("HEAD", format!("/_origin/blobs/sha256/{hex}"), 403, None),
        row("GET", forged.clone(), 403, None),
        row(
            "GET",
            "/_origin/repositories/fix/oci-single/_index.json",
            403,
            None,
        ),
        row("GET", "/_origin/_catalog.json", 403, None),
        row("GET", "/_origin/../Cargo.toml", 403, None),
        row("GET", "/_origin/%2e%2e/%2e%2e/etc/passwd", 403, None),
        row("GET", "/_origin/", 403, None),
        row("PUT", forged, 405, None),
    ];

    let mut failures = Vec::new();
    for r in &rows {
        let resp = raw(env.server.addr, r.method, &r.target, &[]).await;
        let target = String::from_utf8_lossy(&r.target).replace('\0', "\\0");
        let mut wrong = Vec::new();
        if resp.status != r.status {
            wrong.push(format!("status {} (want {})", resp.status, r.status));
        }
        if let Some(code) = r.code {
            let got = resp.error_code();
            if got.as_deref() != Some(code) {
                wrong.push(format!("code {got:?} (want {code})"));
            }
            let ct = resp.header("content-type").unwrap_or("");
            if !ct.starts_with("application/json") {
                wrong.push(format!("Content-Type {ct:?} for an error body"));
            }
        }
        if let Some(loc) = resp.header("location") {
            wrong.push(format!("Location: {loc}"));
        }
        if resp.header("x-injected").is_some() {
            wrong.push("a header was injected".to_owned());
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "{} {target}: {}; body {}",
                r.method,
                wrong.join(", "),
                resp.body_text().chars().take(200).collect::<String>()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} hostile requests were mishandled:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}
