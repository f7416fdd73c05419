//! Federation end to end: the real binary in front of real CDN edges (nginx), real clients.
//!
//! - An nginx `secure_link` edge serving a published store is the CDN: skopeo, podman and ctr
//!   pull through `serve` → nginx; nginx refuses tampered and expired links.
//! - Two edges in one route: the primary is stopped mid-test, health checks notice within about
//!   one interval, every client keeps pulling through the secondary; the primary comes back and
//!   is preferred again; with everything down, requests still redirect to the last good origin.
//! - Routes (longest prefix wins) and region routing (trusted header, `X-Forwarded-For` against a
//!   CIDR file, IPv4 and IPv6) choose the origin a `Location` points at.
//! - CloudFront and public origins produce the expected query parameters, and `/readyz` reports
//!   them (their signatures are compared with independent implementations in the unit tests).
//! - Every `config/cdn-*.toml` example parses and builds a federation in the real binary.
//!
//! Nothing here sleeps to synchronise: health transitions are awaited by polling `/readyz`.

mod common;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use md5::{Digest as _, Md5};
use serde_json::Value;

use common::checks::{
    check_podman_id_and_layers, expected_top, skopeo_inspects_tag, skopeo_pulls_all,
    skopeo_pulls_tag,
};
use common::clients::{Containerd, Podman, Skopeo};
use common::fixtures::{self, check_pulled, Expect, Fixture, Platforms};
use common::http::RawResponse;
use common::nginx::{Nginx, SECURE_LINK_TEMPLATE};
use common::{hex_of, new_store, sha256, wait_for, Server};

/// How long a health transition may take to show in `/readyz` before the test fails. With
/// `health_interval = 1` it takes one to two seconds; the margin is for a loaded machine.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Set-up helpers
// ---------------------------------------------------------------------------------------------

/// The fixtures pulled through the edges: a single OCI image, a `docker save` (schema 2 media
/// types after publish) and a multi-platform OCI index.
const EDGE_FIXTURES: [&str; 3] = ["oci-single", "docker-legacy (--tag)", "oci-multi"];

/// Publishes [`EDGE_FIXTURES`] into `store`.
fn publish_edge_fixtures(store: &Path) -> Vec<Fixture> {
    let selected: Vec<Fixture> = fixtures::all()
        .into_iter()
        .filter(|f| EDGE_FIXTURES.contains(&f.name))
        .collect();
    assert_eq!(selected.len(), EDGE_FIXTURES.len(), "fixture names changed");
    for f in &selected {
        common::publish_with(store, f.source, &f.tags, &f.flags);
    }
    selected
}

/// A temporary directory for configs, secrets and CIDR files.
struct Scratch(tempfile::TempDir);

impl Scratch {
    fn new() -> Scratch {
        Scratch(
            tempfile::Builder::new()
                .prefix("sr-fed-")
                .tempdir()
                .expect("scratch dir"),
        )
    }

    fn write(&self, name: &str, content: &str) -> PathBuf {
        let p = self.0.path().join(name);
        std::fs::write(&p, content).expect("write scratch file");
        p
    }
}

/// A fresh random secret (hex, so it can go into nginx.conf verbatim).
fn new_secret() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// A TOML (basic) string: JSON's string syntax is a subset of it.
fn q(s: impl AsRef<str>) -> String {
    serde_json::to_string(s.as_ref()).expect("JSON string")
}

fn q_path(p: &Path) -> String {
    q(p.to_str().expect("UTF-8 path"))
}

/// An `[[origins]]` entry for a secure-link edge (the signer config that matches
/// [`Nginx::secure_link`]).
fn secure_link_origin(
    name: &str,
    store: &Path,
    edge: &Nginx,
    secret_file: &Path,
    regions: &[&str],
) -> String {
    format!(
        "\n[[origins]]\nname = {name}\nstore = {store}\nregions = {regions}\n\
         signer = {{ kind = \"secure-link\", base_url = {base}, secret_file = {secret}, \
         template = {template}, content_type_param = \"ct\" }}\n",
        name = q(name),
        store = q_path(store),
        regions = serde_json::to_string(regions).unwrap(),
        base = q(edge.base_url()),
        secret = q_path(secret_file),
        template = q(SECURE_LINK_TEMPLATE),
    )
}

/// An `[[origins]]` entry for a public (unsigned) origin.
fn public_origin(name: &str, store: &Path, base_url: &str, regions: &[&str]) -> String {
    format!(
        "\n[[origins]]\nname = {name}\nstore = {store}\nregions = {regions}\n\
         signer = {{ kind = \"public\", base_url = {base} }}\n",
        name = q(name),
        store = q_path(store),
        regions = serde_json::to_string(regions).unwrap(),
        base = q(base_url),
    )
}

/// Starts `serve` with `config` written to a file in `scratch`.
fn serve_with(store: &Path, scratch: &Scratch, config: &str) -> Server {
    let path = scratch.write("serve.toml", config);
    Server::start(store, &["--config", path.to_str().expect("UTF-8 path")])
}

// ---------------------------------------------------------------------------------------------
// HTTP helpers
// ---------------------------------------------------------------------------------------------

/// Extra request headers.
type Headers<'a> = &'a [(&'a str, &'a str)];

/// `METHOD target` on `addr` with extra headers, over a fresh connection; the target is sent
/// exactly as given.
fn request(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)]) -> RawResponse {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("write request");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read response");
    common::http::parse(&buf, method == "HEAD").unwrap_or_else(|e| {
        panic!(
            "unparseable response to {method} {target}: {e}\n{}",
            String::from_utf8_lossy(&buf)
        )
    })
}

/// Splits `http://HOST:PORT/path?query` into the socket address and the request target, without
/// any normalisation (tampered URLs must reach nginx exactly as written).
fn split_url(url: &str) -> (SocketAddr, &str) {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("not an http:// URL: {url}"));
    let slash = rest.find('/').unwrap_or(rest.len());
    let addr = rest[..slash]
        .parse()
        .unwrap_or_else(|e| panic!("{url}: host is not IP:PORT: {e}"));
    (addr, &rest[slash..])
}

/// `METHOD url` with extra headers.
fn fetch(method: &str, url: &str, headers: &[(&str, &str)]) -> RawResponse {
    let (addr, target) = split_url(url);
    request(addr, method, target, headers)
}

/// The `Location` of a `GET path` on the endpoint, which must answer 307.
fn location(server: &Server, path: &str, headers: &[(&str, &str)]) -> String {
    let r = request(server.addr, "GET", path, headers);
    assert_eq!(
        r.status,
        307,
        "GET {path} {headers:?}: want 307, got {} {}",
        r.status,
        r.body_text()
    );
    r.header("location")
        .unwrap_or_else(|| panic!("GET {path}: 307 without Location"))
        .to_owned()
}

/// The port a URL points at.
fn port_of(url: &str) -> u16 {
    split_url(url).0.port()
}

/// The value of query parameter `name` in `url`, as written.
fn query_param<'a>(url: &'a str, name: &str) -> Option<&'a str> {
    let (_, query) = url.split_once('?')?;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

/// The names of the query parameters of `url`, in order.
fn query_names(url: &str) -> Vec<&str> {
    url.split_once('?')
        .map(|(_, q)| {
            q.split('&')
                .map(|kv| kv.split('=').next().unwrap())
                .collect()
        })
        .unwrap_or_default()
}

/// `url` with query parameter `name` set to `value` (appended when missing) or, with `None`,
/// removed.
fn with_param(url: &str, name: &str, value: Option<&str>) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut found = false;
    let mut parts: Vec<String> = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .filter_map(|kv| match kv.split_once('=') {
            Some((k, _)) if k == name => {
                found = true;
                value.map(|v| format!("{k}={v}"))
            }
            _ => Some(kv.to_owned()),
        })
        .collect();
    if !found {
        if let Some(v) = value {
            parts.push(format!("{name}={v}"));
        }
    }
    if parts.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", parts.join("&"))
    }
}

/// `/readyz`: status and JSON body.
fn readyz(server: &Server) -> (u16, Value) {
    let r = request(server.addr, "GET", "/readyz", &[]);
    let v: Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("/readyz is not JSON ({e}): {}", r.body_text()));
    (r.status, v)
}

/// The `/readyz` entry of origin `name`.
fn origin_entry<'a>(readyz: &'a Value, name: &str) -> &'a Value {
    readyz["origins"]
        .as_array()
        .unwrap_or_else(|| panic!("/readyz has no origins array: {readyz}"))
        .iter()
        .find(|o| o["name"] == name)
        .unwrap_or_else(|| panic!("/readyz does not list origin {name}: {readyz}"))
}

fn healthy(readyz: &Value, name: &str) -> bool {
    origin_entry(readyz, name)["healthy"]
        .as_bool()
        .unwrap_or_else(|| panic!("origin {name} has no boolean `healthy`: {readyz}"))
}

/// Polls `/readyz` until every `(origin, healthy)` pair holds; returns that `/readyz`.
fn wait_health(server: &Server, want: &[(&str, bool)]) -> (u16, Value) {
    wait_for(
        &format!("/readyz to report {want:?}"),
        HEALTH_TIMEOUT,
        || {
            let (status, v) = readyz(server);
            want.iter()
                .all(|(name, ok)| healthy(&v, name) == *ok)
                .then_some((status, v))
        },
    )
}

/// Waits until `edge` has answered a health probe (a HEAD of the `_health` canary) with 200.
fn wait_probed(edge: &Nginx) {
    wait_for(
        &format!("a successful health probe on nginx :{}", edge.port),
        HEALTH_TIMEOUT,
        || (edge.requests("HEAD", "/_health", 200) > 0).then_some(()),
    );
}

/// nginx's `secure_link_md5` for [`SECURE_LINK_TEMPLATE`], computed here independently of the
/// signer: `base64url(md5(expires + uri + ct + " " + secret))` without padding.
fn nginx_md5(expires: &str, uri: &str, ct: &str, secret: &str) -> String {
    let digest = Md5::digest(format!("{expires}{uri}{ct} {secret}").as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

// ---------------------------------------------------------------------------------------------
// Pulls with real clients
// ---------------------------------------------------------------------------------------------

/// Runs `check` for every fixture and collects the failures.
fn for_each_fixture(
    client: &str,
    fixtures: &[Fixture],
    mut check: impl FnMut(&Fixture) -> Result<(), String>,
) -> Vec<String> {
    fixtures
        .iter()
        .filter_map(|f| {
            check(f)
                .err()
                .map(|e| format!("[{client}] [{}] {}: {e}", f.name, f.pull_ref))
        })
        .collect()
}

fn skopeo_pulls(server: &Server, fixtures: &[Fixture]) -> Vec<String> {
    let mut skopeo = Skopeo::new();
    let host = server.host();
    for_each_fixture("skopeo", fixtures, |f| {
        let top = expected_top(server.tag_digest(f.repo(), f.tag()), f)?;
        skopeo_pulls_tag(&mut skopeo, &host, f, &top)?;
        if let Expect::Index { .. } = f.expect {
            skopeo_pulls_all(&mut skopeo, &host, f)?;
        }
        skopeo_inspects_tag(&mut skopeo, &host, f, &top)
    })
}

fn podman_pulls(server: &Server, fixtures: &[Fixture]) -> Vec<String> {
    let podman = Podman::new();
    let host = server.host();
    for_each_fixture("podman", fixtures, |f| {
        expected_top(server.tag_digest(f.repo(), f.tag()), f)?;
        let image = format!("{host}/{}", f.pull_ref);
        podman.pull(&image, &["--arch", "amd64"])?;
        let info = podman.inspect(&image)?;
        check_podman_id_and_layers(&info, f.expect.amd64())
    })
}

fn ctr_pulls(server: &Server, fixtures: &[Fixture]) -> Vec<String> {
    let ctd = Containerd::start();
    let host = server.host();
    for_each_fixture("ctr", fixtures, |f| {
        let top = expected_top(server.tag_digest(f.repo(), f.tag()), f)?;
        let image = format!("{host}/{}", f.pull_ref);
        ctd.pull(&image, &["--platform", "linux/amd64"])?;
        let (digest, media_type) = ctd.image(&image)?;
        if digest != top {
            return Err(format!("recorded {digest} ({media_type}), want {top}"));
        }
        check_pulled(&f.expect, &digest, Platforms::Amd64, &mut |d| {
            ctd.content(d)
        })
    })
}

/// skopeo, podman and ctr (each with fresh local storage, so every byte is fetched again) pull
/// every fixture through `server`; fails listing every failure.
fn pull_with_every_client(server: &Server, fixtures: &[Fixture], when: &str) {
    let mut failures = skopeo_pulls(server, fixtures);
    failures.extend(podman_pulls(server, fixtures));
    failures.extend(ctr_pulls(server, fixtures));
    assert!(
        failures.is_empty(),
        "{when}: {} pulls failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

// ---------------------------------------------------------------------------------------------
// 1. nginx secure_link edge
// ---------------------------------------------------------------------------------------------

/// Checks one redirect for content that `serve` answered `HEAD` for: nginx serves the bytes of
/// `digest` with the exact `Content-Type` the endpoint's `HEAD` gave.
fn check_served(server: &Server, edge: &Nginx, path: &str, digest: &str, kind: &str) -> String {
    let head = request(server.addr, "HEAD", path, &[]);
    assert_eq!(head.status, 200, "HEAD {path}: {head:?}");
    let want_type = head
        .header("content-type")
        .unwrap_or_else(|| panic!("HEAD {path} without Content-Type"))
        .to_owned();
    let loc = location(server, path, &[]);
    let want_prefix = format!("{}/{kind}/sha256/{}?", edge.base_url(), hex_of(digest));
    assert!(
        loc.starts_with(&want_prefix),
        "GET {path} redirects to {loc}, want {want_prefix}…"
    );
    assert_eq!(query_names(&loc), ["md5", "expires", "ct"], "{loc}");
    let r = fetch("GET", &loc, &[]);
    assert_eq!(r.status, 200, "nginx GET {loc}: {r:?}");
    assert_eq!(
        sha256(&r.body),
        digest,
        "nginx served other bytes for {loc}"
    );
    assert_eq!(
        r.header("content-type"),
        Some(want_type.as_str()),
        "nginx's Content-Type for {loc}"
    );
    if kind == "manifests" {
        // The type is the manifest's own.
        let v: Value = serde_json::from_slice(&r.body).expect("manifest JSON");
        if let Some(mt) = v["mediaType"].as_str() {
            assert_eq!(mt, want_type, "{path}");
        }
    }
    loc
}

#[test]
fn secure_link_edge_serves_every_client_and_refuses_bad_links() {
    let store = new_store();
    let fixtures = publish_edge_fixtures(store.path());
    let scratch = Scratch::new();
    let secret = new_secret();
    let secret_file = scratch.write("edge.secret", &format!("{secret}\n"));
    let edge = Nginx::secure_link(store.path(), &secret);
    let server = serve_with(
        store.path(),
        &scratch,
        &format!(
            "[serve]\nhealth_interval = 1\n{}",
            secure_link_origin("edge", store.path(), &edge, &secret_file, &[])
        ),
    );

    // The health probe is a signed HEAD of the canary, and nginx accepts it.
    wait_probed(&edge);
    let (status, ready) = readyz(&server);
    assert_eq!(status, 200, "{ready}");
    assert_eq!(origin_entry(&ready, "edge")["signer"], "secure-link");
    assert!(healthy(&ready, "edge"), "{ready}");

    // Every manifest (image, schema 2, index) and a blob: nginx's bytes and Content-Type.
    let mut manifest_links = Vec::new();
    for f in &fixtures {
        let top = server.tag_digest(f.repo(), f.tag());
        let path = format!("/v2/{}/manifests/{}", f.repo(), f.tag());
        manifest_links.push(check_served(&server, &edge, &path, &top, "manifests"));
        let by_digest = format!("/v2/{}/manifests/{top}", f.repo());
        check_served(&server, &edge, &by_digest, &top, "manifests");
    }
    let single = &fixtures[0];
    let layer = single.expect.amd64().layers.as_ref().expect("OCI layers")[0].clone();
    let blob_link = check_served(
        &server,
        &edge,
        &format!("/v2/{}/blobs/{layer}", single.repo()),
        &layer,
        "blobs",
    );
    assert_eq!(
        query_param(&blob_link, "ct"),
        Some("application/octet-stream")
    );

    // Real clients, through serve → nginx.
    pull_with_every_client(&server, &fixtures, "through the secure_link edge");
    assert!(edge.requests("GET", "/manifests/", 200) > 0);
    assert!(edge.requests("GET", "/blobs/", 200) > 0);
    for status in [403, 410] {
        for path in ["/manifests/", "/blobs/", "/repositories/", "/_catalog"] {
            assert_eq!(
                edge.requests("GET", path, status),
                0,
                "nginx refused a link the endpoint signed:\n{}",
                edge.access_log()
            );
        }
    }

    // Ranges (clients resume with them) and HEAD work on a signed link.
    let r = fetch("GET", &blob_link, &[("Range", "bytes=10-")]);
    assert_eq!(r.status, 206, "{r:?}");
    assert!(r
        .header("content-range")
        .is_some_and(|c| c.starts_with("bytes 10-")));
    let r = fetch("HEAD", &manifest_links[0], &[]);
    assert_eq!(r.status, 200, "{r:?}");

    // The signer and this test's own reading of nginx's formula agree.
    let link = &manifest_links[0];
    let (_, target) = split_url(link);
    let uri = target.split_once('?').unwrap().0;
    let md5 = query_param(link, "md5").unwrap();
    let expires = query_param(link, "expires").unwrap();
    let ct = query_param(link, "ct").unwrap();
    assert_eq!(nginx_md5(expires, uri, ct, &secret), md5, "{link}");
    let expires_n: u64 = expires.parse().unwrap();
    assert!(
        expires_n > unix_now(),
        "the link has already expired: {link}"
    );

    // Tampered links: 403.
    let mut flipped = md5.to_owned();
    let first = if flipped.starts_with('A') { "B" } else { "A" };
    flipped.replace_range(0..1, first);
    let other_manifest = split_url(&manifest_links[1]).1.split_once('?').unwrap().0;
    let later = (expires_n + 3600).to_string();
    let tampered = [
        ("another hash", with_param(link, "md5", Some(&flipped))),
        ("a later expiry", with_param(link, "expires", Some(&later))),
        (
            "another content type",
            with_param(link, "ct", Some("text/html")),
        ),
        ("no content type", with_param(link, "ct", None)),
        ("no hash", with_param(link, "md5", None)),
        ("no query", link.split_once('?').unwrap().0.to_owned()),
        ("another object", link.replacen(uri, other_manifest, 1)),
        (
            "a second ct before the signed one",
            link.replacen("?md5=", "?ct=text/html&md5=", 1),
        ),
        (
            "the catalog, unsigned",
            format!("{}/_catalog.json", edge.base_url()),
        ),
    ];
    for (what, url) in &tampered {
        assert_ne!(url, link, "{what}: the tampering changed nothing");
        let r = fetch("GET", url, &[]);
        assert_eq!(
            r.status, 403,
            "{what}: nginx answered {} for {url}",
            r.status
        );
    }

    // An expired link, correctly hashed: 410.
    let past = (unix_now() - 60).to_string();
    let expired = with_param(
        &with_param(link, "expires", Some(&past)),
        "md5",
        Some(&nginx_md5(&past, uri, ct, &secret)),
    );
    let r = fetch("GET", &expired, &[]);
    assert_eq!(r.status, 410, "expired link {expired}: {r:?}");
    // ... and the untampered link still works.
    assert_eq!(fetch("GET", link, &[]).status, 200);
}

// ---------------------------------------------------------------------------------------------
// 2. Failover
// ---------------------------------------------------------------------------------------------

#[test]
fn failover_to_secondary_edge_and_back_and_last_known_good() {
    let store = new_store();
    let fixtures = publish_edge_fixtures(store.path());
    let scratch = Scratch::new();
    let secret = new_secret();
    let secret_file = scratch.write("edge.secret", &secret);
    let mut primary = Nginx::secure_link(store.path(), &secret);
    let mut secondary = Nginx::secure_link(store.path(), &secret);
    let server = serve_with(
        store.path(),
        &scratch,
        &format!(
            "[serve]\nhealth_interval = 1\n{}{}\n[[routes]]\nprefix = \"\"\norigins = [\"primary\", \"secondary\"]\n",
            secure_link_origin("primary", store.path(), &primary, &secret_file, &[]),
            secure_link_origin("secondary", store.path(), &secondary, &secret_file, &[]),
        ),
    );
    let f = &fixtures[0];
    let manifest = format!("/v2/{}/manifests/{}", f.repo(), f.tag());
    let layer = f.expect.amd64().layers.as_ref().expect("OCI layers")[0].clone();
    let blob = format!("/v2/{}/blobs/{layer}", f.repo());
    let tags = format!("/v2/{}/tags/list", f.repo());
    let points_at = |path: &str| port_of(&location(&server, path, &[]));

    // Both up: the primary serves.
    wait_probed(&primary);
    wait_probed(&secondary);
    let (status, _) = wait_health(&server, &[("primary", true), ("secondary", true)]);
    assert_eq!(status, 200);
    for p in [&manifest, &blob, &tags, "/v2/_catalog"] {
        assert_eq!(points_at(p), primary.port, "{p} while both are up");
    }
    let failures = skopeo_pulls(&server, &fixtures);
    assert!(
        failures.is_empty(),
        "via the primary:\n{}",
        failures.join("\n")
    );
    assert!(primary.requests("GET", "/blobs/", 200) > 0);
    assert_eq!(
        secondary.requests("GET", "/manifests/", 200) + secondary.requests("GET", "/blobs/", 200),
        0,
        "the secondary served content while the primary was up:\n{}",
        secondary.access_log()
    );

    // The primary goes down: within about one interval the secondary takes over.
    primary.stop();
    let (status, ready) = wait_health(&server, &[("primary", false)]);
    assert_eq!(status, 200, "one origin is still up: {ready}");
    assert_eq!(ready["ready"], true, "{ready}");
    assert!(healthy(&ready, "secondary"), "{ready}");
    for p in [&manifest, &blob, &tags, "/v2/_catalog"] {
        assert_eq!(points_at(p), secondary.port, "{p} with the primary down");
    }
    pull_with_every_client(&server, &fixtures, "with the primary down");
    assert!(secondary.requests("GET", "/blobs/", 200) > 0);
    assert!(
        server.log().contains("origin marked unhealthy"),
        "the transition is not logged"
    );

    // It comes back: preferred again.
    primary.restart();
    wait_health(&server, &[("primary", true), ("secondary", true)]);
    assert_eq!(
        points_at(&manifest),
        primary.port,
        "after the primary recovered"
    );
    let before = primary.requests("GET", "/blobs/", 200);
    let failures = skopeo_pulls(&server, &fixtures);
    assert!(
        failures.is_empty(),
        "after recovery:\n{}",
        failures.join("\n")
    );
    assert!(primary.requests("GET", "/blobs/", 200) > before);
    assert!(server.log().contains("origin healthy again"));

    // Everything down: redirects keep going to the last origin that was good, not a 5xx. Make
    // that the secondary (not simply the first configured one): the primary fails first, a
    // request goes to the secondary, then the secondary fails too.
    primary.stop();
    wait_health(&server, &[("primary", false), ("secondary", true)]);
    assert_eq!(points_at(&manifest), secondary.port);
    secondary.stop();
    let (status, ready) = wait_health(&server, &[("primary", false), ("secondary", false)]);
    // Origin health is shared by every replica: readiness stays up (index loads work) and the
    // body says degraded, so a balancer does not drop every replica for a CDN alarm.
    assert_eq!(status, 200, "index loads still work: {ready}");
    assert_eq!(ready["ready"], true, "{ready}");
    assert_eq!(ready["degraded"], true, "{ready}");
    for p in [&manifest, &blob, &tags] {
        assert_eq!(points_at(p), secondary.port, "{p} with every origin down");
    }
    // HEADs are still answered from the index.
    let r = request(server.addr, "HEAD", &manifest, &[]);
    assert_eq!(r.status, 200, "{r:?}");
}

// ---------------------------------------------------------------------------------------------
// 3. Routes
// ---------------------------------------------------------------------------------------------

#[test]
fn longest_route_prefix_chooses_the_origin() {
    let store = new_store();
    for tag in ["team/x:1.0", "team/deep/y:1.0", "teamx:1.0", "other:1.0"] {
        common::publish(store.path(), "oci:fixtures/oci-single:1.0", &[tag]);
    }
    let scratch = Scratch::new();
    let a = Nginx::public(store.path());
    let b = Nginx::public(store.path());
    let server = serve_with(
        store.path(),
        &scratch,
        &format!(
            "[serve]\nhealth_interval = 1\n{}{}\n\
             [[routes]]\nprefix = \"\"\norigins = [\"a\"]\n\n\
             [[routes]]\nprefix = \"team/\"\norigins = [\"b\"]\n",
            public_origin("a", store.path(), &a.base_url(), &[]),
            public_origin("b", store.path(), &b.base_url(), &[]),
        ),
    );
    wait_probed(&a);
    wait_probed(&b);
    let (status, ready) = wait_health(&server, &[("a", true), ("b", true)]);
    assert_eq!(status, 200, "{ready}");

    let top = server.tag_digest("other", "1.0");
    let layer = fixtures::oci_single()
        .amd64()
        .layers
        .clone()
        .expect("layers")[0]
        .clone();
    for (repo, want) in [
        ("team/x", b.port),
        ("team/deep/y", b.port),
        // "team/" is a string prefix: "teamx" is not under it.
        ("teamx", a.port),
        ("other", a.port),
    ] {
        for path in [
            format!("/v2/{repo}/manifests/1.0"),
            format!("/v2/{repo}/manifests/{top}"),
            format!("/v2/{repo}/blobs/{layer}"),
            format!("/v2/{repo}/tags/list"),
        ] {
            let loc = location(&server, &path, &[]);
            assert_eq!(port_of(&loc), want, "{path} → {loc}");
            // A public origin's URL is the plain object URL.
            assert!(!loc.contains('?'), "{loc}");
            assert_eq!(fetch("GET", &loc, &[]).status, 200, "{loc}");
        }
    }
    // The catalog belongs to the default route.
    assert_eq!(port_of(&location(&server, "/v2/_catalog", &[])), a.port);
}

// ---------------------------------------------------------------------------------------------
// 4. Region routing
// ---------------------------------------------------------------------------------------------

const CIDRS: &str = "\
# test table: CIDR REGION, nested prefixes (longest wins), IPv4 and IPv6
203.0.113.0/24        eu
203.0.113.128/25      us   # nested inside the eu /24
198.51.100.0/24       us
2001:db8::/32         us
2001:db8:e0::/48      eu   # nested inside the us /32
";

#[test]
fn region_routing_by_header_and_forwarded_ip() {
    let store = new_store();
    common::publish(store.path(), "oci:fixtures/oci-single:1.0", &["app:1.0"]);
    let scratch = Scratch::new();
    let cidr_file = scratch.write("regions.txt", CIDRS);
    let global = Nginx::public(store.path());
    let us = Nginx::public(store.path());
    let mut eu = Nginx::public(store.path());
    let mut config = String::from("[serve]\nhealth_interval = 1\n");
    config.push_str(&public_origin(
        "global",
        store.path(),
        &global.base_url(),
        &[],
    ));
    config.push_str(&public_origin("us", store.path(), &us.base_url(), &["us"]));
    config.push_str(&public_origin("eu", store.path(), &eu.base_url(), &["eu"]));
    config.push_str(&format!(
        "\n[[routes]]\nprefix = \"\"\norigins = [\"global\", \"us\", \"eu\"]\n\n\
         [regions]\nheader = \"CloudFront-Viewer-Country\"\n\
         header_values = {{ DE = \"eu\", FR = \"eu\", US = \"us\" }}\n\
         cidr_file = {}\ntrusted_proxy_hops = 1\n",
        q_path(&cidr_file)
    ));
    let server = serve_with(store.path(), &scratch, &config);
    for n in [&global, &us, &eu] {
        wait_probed(n);
    }
    wait_health(&server, &[("global", true), ("us", true), ("eu", true)]);

    let path = "/v2/app/manifests/1.0";
    let ports = [(global.port, "global"), (us.port, "us"), (eu.port, "eu")];
    let name_of = |port: u16| {
        ports
            .iter()
            .find(|(p, _)| *p == port)
            .map_or("?", |(_, n)| *n)
    };
    let cases: &[(&str, Headers<'_>, &str)] = &[
        ("no header, no X-Forwarded-For", &[], "global"),
        ("country DE", &[("CloudFront-Viewer-Country", "DE")], "eu"),
        ("country US", &[("CloudFront-Viewer-Country", "US")], "us"),
        (
            "unmapped country: no origin there",
            &[("CloudFront-Viewer-Country", "JP")],
            "global",
        ),
        (
            "the header wins over the address",
            &[
                ("CloudFront-Viewer-Country", "FR"),
                ("X-Forwarded-For", "198.51.100.7"),
            ],
            "eu",
        ),
        ("IPv4 /24", &[("X-Forwarded-For", "203.0.113.5")], "eu"),
        (
            "IPv4 nested /25",
            &[("X-Forwarded-For", "203.0.113.200")],
            "us",
        ),
        (
            "IPv4 other /24",
            &[("X-Forwarded-For", "198.51.100.7")],
            "us",
        ),
        (
            "IPv4 not in the table",
            &[("X-Forwarded-For", "192.0.2.1")],
            "global",
        ),
        ("IPv6 /32", &[("X-Forwarded-For", "2001:db8:1::1")], "us"),
        (
            "IPv6 nested /48",
            &[("X-Forwarded-For", "2001:db8:e0::5")],
            "eu",
        ),
        (
            "IPv4-mapped IPv6",
            &[("X-Forwarded-For", "::ffff:203.0.113.5")],
            "eu",
        ),
        (
            "spoofed leftmost entry is ignored (v4)",
            &[("X-Forwarded-For", "203.0.113.5, 198.51.100.7")],
            "us",
        ),
        (
            "spoofed leftmost entry is ignored (v6)",
            &[("X-Forwarded-For", "2001:db8:1::1, 2001:db8:e0::9")],
            "eu",
        ),
        (
            "spoofed header line: the last entry of the last line counts",
            &[
                ("X-Forwarded-For", "2001:db8:e0::9"),
                ("X-Forwarded-For", "198.51.100.7"),
            ],
            "us",
        ),
    ];
    let mut wrong = Vec::new();
    for (what, headers, want) in cases {
        let loc = location(&server, path, headers);
        let got = name_of(port_of(&loc));
        if got != *want {
            wrong.push(format!("{what} {headers:?}: went to {got}, want {want}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // A region's origin that is down is skipped: the route's first healthy origin serves.
    eu.stop();
    wait_health(&server, &[("eu", false)]);
    for headers in [
        &[("CloudFront-Viewer-Country", "DE")][..],
        &[("X-Forwarded-For", "2001:db8:e0::5")][..],
    ] {
        let loc = location(&server, path, headers);
        assert_eq!(name_of(port_of(&loc)), "global", "{headers:?} with eu down");
    }
    let loc = location(&server, path, &[("X-Forwarded-For", "198.51.100.7")]);
    assert_eq!(name_of(port_of(&loc)), "us");
}

// ---------------------------------------------------------------------------------------------
// 5. CloudFront and public origins
// ---------------------------------------------------------------------------------------------

const KEY_PAIR_ID: &str = "K2JCJMDEHXQW5F";

fn sign_data(name: &str) -> PathBuf {
    common::manifest_dir().join("tests/data/sign").join(name)
}

/// CloudFront's base64 (`-` `_` `~` for `+` `=` `/`) decoded.
fn cloudfront_b64_decode(s: &str) -> Vec<u8> {
    let std: String = s
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '=',
            '~' => '/',
            c => c,
        })
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(std)
        .unwrap_or_else(|e| panic!("not CloudFront base64 ({e}): {s}"))
}

/// Verifies a CloudFront RSA-SHA1 signature over `policy` with the test key's public half.
fn verify_cloudfront_signature(policy: &[u8], signature_param: &str) -> Result<(), String> {
    use rsa::pkcs8::DecodePublicKey as _;
    use rsa::signature::Verifier as _;
    let pem = std::fs::read_to_string(sign_data("test-only-rsa2048.pub.pem")).unwrap();
    let public = rsa::RsaPublicKey::from_public_key_pem(&pem).unwrap();
    let key = rsa::pkcs1v15::VerifyingKey::<sha1::Sha1>::new(public);
    let sig = rsa::pkcs1v15::Signature::try_from(&cloudfront_b64_decode(signature_param)[..])
        .map_err(|e| e.to_string())?;
    key.verify(policy, &sig).map_err(|e| e.to_string())
}

#[test]
fn cloudfront_and_public_origins_sign_as_configured() {
    let store = new_store();
    for tag in ["wild/app:1.0", "canned/app:1.0", "open/app:1.0"] {
        common::publish(store.path(), "oci:fixtures/oci-single:1.0", &[tag]);
    }
    let scratch = Scratch::new();
    // Stand-ins for the distribution and the public bucket: they answer the health probes.
    let cdn = Nginx::public(store.path());
    let bucket = Nginx::public(store.path());
    let cf = |name: &str, policy: &str, key: &str| {
        format!(
            "\n[[origins]]\nname = {}\nstore = {}\n\
             signer = {{ kind = \"cloudfront\", base_url = {}, key_pair_id = {}, \
             private_key_file = {}, policy = {} }}\n",
            q(name),
            q_path(store.path()),
            q(cdn.base_url()),
            q(KEY_PAIR_ID),
            q_path(&sign_data(key)),
            q(policy)
        )
    };
    let mut config = String::from("[serve]\nhealth_interval = 1\nurl_ttl = 300\n");
    config.push_str(&cf(
        "cf-wildcard",
        "wildcard",
        "test-only-rsa2048.pkcs8.pem",
    ));
    config.push_str(&cf("cf-canned", "canned", "test-only-rsa2048.pkcs1.pem"));
    config.push_str(&public_origin(
        "open",
        store.path(),
        &bucket.base_url(),
        &[],
    ));
    config.push_str(
        "\n[[routes]]\nprefix = \"\"\norigins = [\"cf-wildcard\"]\n\
         \n[[routes]]\nprefix = \"canned/\"\norigins = [\"cf-canned\"]\n\
         \n[[routes]]\nprefix = \"open/\"\norigins = [\"open\"]\n",
    );
    let server = serve_with(store.path(), &scratch, &config);

    // Health probes are signed like any URL; the stand-ins answer them.
    wait_for("a signed CloudFront health probe", HEALTH_TIMEOUT, || {
        (cdn.requests("HEAD", "/_health?Policy=", 200) > 0
            && cdn.requests("HEAD", "/_health?Expires=", 200) > 0)
            .then_some(())
    });
    wait_for("an unsigned health probe", HEALTH_TIMEOUT, || {
        (bucket.requests("HEAD", "/_health HTTP", 200) > 0).then_some(())
    });
    let (status, ready) = readyz(&server);
    assert_eq!(status, 200, "{ready}");
    for (name, kind) in [
        ("cf-wildcard", "cloudfront"),
        ("cf-canned", "cloudfront"),
        ("open", "public"),
    ] {
        let o = origin_entry(&ready, name);
        assert_eq!(o["signer"], kind, "{ready}");
        assert_eq!(o["healthy"], true, "{ready}");
    }

    let top = server.tag_digest("wild/app", "1.0");
    let layer = fixtures::oci_single()
        .amd64()
        .layers
        .clone()
        .expect("layers")[0]
        .clone();
    let manifest_url = format!("{}/manifests/sha256/{}", cdn.base_url(), hex_of(&top));
    let blob_url = format!("{}/blobs/sha256/{}", cdn.base_url(), hex_of(&layer));
    // Wildcard: one custom policy over the whole distribution, shared by every object. The two
    // requests are asked again (twice at most) when a window boundary falls between them.
    let mut attempts = 0;
    let queries = loop {
        let now = unix_now();
        let mut queries = Vec::new();
        for (path, url) in [
            ("/v2/wild/app/manifests/1.0", &manifest_url),
            (&*format!("/v2/wild/app/blobs/{layer}"), &blob_url),
        ] {
            let loc = location(&server, path, &[]);
            let (base, query) = loc.split_once('?').unwrap_or_else(|| panic!("{loc}"));
            assert_eq!(base, url, "{loc}");
            assert_eq!(
                query_names(&loc),
                ["Policy", "Signature", "Key-Pair-Id"],
                "{loc}"
            );
            assert_eq!(query_param(&loc, "Key-Pair-Id"), Some(KEY_PAIR_ID));
            let policy = cloudfront_b64_decode(query_param(&loc, "Policy").unwrap());
            let v: Value = serde_json::from_slice(&policy).expect("policy JSON");
            let statement = &v["Statement"][0];
            assert_eq!(
                statement["Resource"],
                format!("{}/*", cdn.base_url()),
                "{v}"
            );
            let expires = statement["Condition"]["DateLessThan"]["AWS:EpochTime"]
                .as_u64()
                .unwrap_or_else(|| panic!("no expiry in {v}"));
            // url_ttl = 300, the window defaults to the TTL: valid 300..=600 s from signing.
            assert!(
                expires >= now + 300 && expires <= unix_now() + 600,
                "expiry {expires} outside the TTL window (now {now}): {v}"
            );
            verify_cloudfront_signature(&policy, query_param(&loc, "Signature").unwrap())
                .unwrap_or_else(|e| panic!("signature of {loc} does not verify: {e}"));
            queries.push(query.to_owned());
        }
        if queries[0] == queries[1] || attempts == 2 {
            break queries;
        }
        attempts += 1;
    };
    assert_eq!(
        queries[0], queries[1],
        "wildcard mode signs once per window, not per object"
    );

    // Canned: a policy for exactly this URL, with Expires.
    let now = unix_now();
    let loc = location(&server, "/v2/canned/app/manifests/1.0", &[]);
    let (base, _) = loc.split_once('?').unwrap_or_else(|| panic!("{loc}"));
    assert_eq!(base, manifest_url);
    assert_eq!(
        query_names(&loc),
        ["Expires", "Signature", "Key-Pair-Id"],
        "{loc}"
    );
    assert_eq!(query_param(&loc, "Key-Pair-Id"), Some(KEY_PAIR_ID));
    let expires: u64 = query_param(&loc, "Expires").unwrap().parse().unwrap();
    assert!(expires >= now + 300 && expires <= unix_now() + 300, "{loc}");
    let canned = format!(
        r#"{{"Statement":[{{"Resource":"{base}","Condition":{{"DateLessThan":{{"AWS:EpochTime":{expires}}}}}}}]}}"#
    );
    verify_cloudfront_signature(canned.as_bytes(), query_param(&loc, "Signature").unwrap())
        .unwrap_or_else(|e| panic!("canned signature of {loc} does not verify: {e}"));

    // Public: the plain object URL, no query at all.
    let loc = location(&server, "/v2/open/app/manifests/1.0", &[]);
    assert_eq!(
        loc,
        format!("{}/manifests/sha256/{}", bucket.base_url(), hex_of(&top))
    );
    let loc = location(&server, &format!("/v2/open/app/blobs/{layer}"), &[]);
    assert_eq!(
        loc,
        format!("{}/blobs/sha256/{}", bucket.base_url(), hex_of(&layer))
    );
    let r = fetch("GET", &loc, &[]);
    assert_eq!((r.status, sha256(&r.body)), (200, layer.clone()));
}

// ---------------------------------------------------------------------------------------------
// 6. Example configurations
// ---------------------------------------------------------------------------------------------

/// Every `config/cdn-*.toml`.
fn cdn_examples() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(common::manifest_dir().join("config"))
        .expect("config/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("cdn-") && name.ends_with(".toml")
        })
        .collect();
    v.sort();
    v
}

/// Replaces every string value whose key `files` maps (store and key-file paths) with the path
/// it returns.
fn localise(value: &mut toml::Value, files: &dyn Fn(&str) -> Option<String>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                match files(k).filter(|_| v.is_str()) {
                    Some(path) => *v = toml::Value::String(path),
                    None => localise(v, files),
                }
            }
        }
        toml::Value::Array(a) => a.iter_mut().for_each(|v| localise(v, files)),
        _ => {}
    }
}

#[test]
fn example_cdn_configs_parse_and_build() {
    let examples = cdn_examples();
    let names: Vec<String> = examples
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "cdn-cloudfront.toml",
        "cdn-secure-link.toml",
        "cdn-hmac-token.toml",
        "cdn-public.toml",
        "cdn-failover.toml",
        "cdn-gcs.toml",
    ] {
        assert!(names.iter().any(|n| n == want), "config/{want} is missing");
    }
    let store = new_store();
    common::publish(store.path(), "oci:fixtures/oci-single:1.0", &["app:1.0"]);
    let scratch = Scratch::new();
    let secret_file = scratch.write("secret", &new_secret());
    let hex_key_file = scratch.write("hex.key", &new_secret());
    let regions = common::manifest_dir().join("config/regions.example.txt");
    assert!(regions.is_file(), "config/regions.example.txt is missing");

    for example in &examples {
        let text = std::fs::read_to_string(example).unwrap();
        let shown = example.display();
        // 1. Valid TOML.
        let mut value: toml::Value =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{shown} is not TOML: {e}"));

        // 2. The binary accepts it as is (every section and field known).
        let out = Command::new(common::bin())
            .arg("--config")
            .arg(example)
            .arg("verify")
            .arg("--store")
            .arg(scratch.0.path().join("empty-store"))
            .env_remove("STATIC_REGISTRY_CONFIG")
            .env_remove("STATIC_REGISTRY_STORE")
            .output()
            .expect("run static-registry verify");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("invalid config file") && !stderr.contains("cannot read config"),
            "{}",
            common::describe_output(&format!("verify --config {shown}"), &out)
        );

        // 3. With its files replaced by local ones, `serve` builds every origin, signer, route
        //    and the region table from it, and `/readyz` lists the declared origins.
        localise(&mut value, &|key: &str| {
            Some(match key {
                "store" => store.path().to_str().unwrap().to_owned(),
                "secret_file" => secret_file.to_str().unwrap().to_owned(),
                "key_file" => hex_key_file.to_str().unwrap().to_owned(),
                "private_key_file" => sign_data("test-only-rsa2048.pkcs8.pem")
                    .to_str()
                    .unwrap()
                    .to_owned(),
                "cidr_file" => regions.to_str().unwrap().to_owned(),
                "service_account_file" => common::manifest_dir()
                    .join("tests/data/gcs-v4/test_service_account.not-a-test.json")
                    .to_str()
                    .unwrap()
                    .to_owned(),
                _ => return None,
            })
        });
        let declared: Vec<(String, String)> = value
            .get("origins")
            .and_then(toml::Value::as_array)
            .unwrap_or_else(|| panic!("{shown} declares no [[origins]]"))
            .iter()
            .map(|o| {
                (
                    o["name"].as_str().unwrap().to_owned(),
                    o["signer"]["kind"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let local = scratch.write(
            &format!("local-{}", example.file_name().unwrap().to_string_lossy()),
            &toml::to_string(&value).expect("serialise config"),
        );
        let server = Server::start(store.path(), &["--config", local.to_str().unwrap()]);
        let (_, ready) = readyz(&server);
        let listed = ready["origins"].as_array().map(Vec::len).unwrap_or(0);
        assert_eq!(listed, declared.len(), "{shown}: {ready}");
        for (name, kind) in &declared {
            assert_eq!(
                origin_entry(&ready, name)["signer"],
                kind.as_str(),
                "{shown}"
            );
        }
        // And it redirects (to the example's CDN host, which need not exist here).
        let loc = location(&server, "/v2/app/manifests/1.0", &[]);
        assert!(loc.starts_with("https://"), "{shown}: {loc}");
    }
}
