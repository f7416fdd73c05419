//! The request table: every route, public and private, v1 and v2, hostile paths included, sent
//! through [`super::router`] in-process, with the answer each must get (status, the store key its
//! `Location` signs, the error code). It documents docs/request-handling.md in code and runs in
//! milliseconds; tests/endpoint.rs and tests/auth.rs check the same behaviour with real clients.
//! Also here: re-used answers equal fresh ones, whatever else the request carries.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request};
use tower::ServiceExt;

use crate::auth::{Rule, TokenIssuer};
use crate::federation::Federation;
use crate::index::{
    Catalog, Descriptor, ManifestEntry, RepoIndex, V1Image, V1ImageShard, V1Index, V1ShardEntry,
};
use crate::layout;
use crate::reference::{Digest, RepoName, Tag, V1ImageId};
use crate::store::LocalStore;

use super::AppState;

const MT: &str = "application/vnd.oci.image.manifest.v1+json";
const ID: &str = "55abd96a774e59f252ac2a84e55a09771bf9e0c50e361c5420e992559f7346c8";

fn digest(n: u32) -> Digest {
    Digest::parse(&format!("sha256:{n:064x}")).unwrap()
}

/// The manifest tagged `1.0` in every repository, its blob, and a digest nothing has.
fn m() -> Digest {
    digest(1)
}
fn b() -> Digest {
    digest(2)
}
fn unknown() -> Digest {
    digest(3)
}

fn write(store: &LocalStore, key: &str, bytes: &[u8]) {
    let path = store.path_of(key).unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// A store with `pub/app`, `team/app` (private: `team/` is alice's) and `library/hello` (with
/// a v1 view), each with tag `1.0` → manifest `m()` → blob `b()`.
fn store(dir: &Path) -> Arc<LocalStore> {
    let store = LocalStore::open(dir).unwrap();
    let id = V1ImageId::parse(ID).unwrap();
    let image = V1Image {
        parent: None,
        layer: b(),
        size: 4,
    };
    let repos = ["pub/app", "team/app", "library/hello"];
    for name in repos {
        let mut idx = RepoIndex::new(RepoName::parse(name).unwrap());
        idx.manifests.insert(
            m(),
            ManifestEntry {
                media_type: MT.into(),
                size: 100,
            },
        );
        let tag = Tag::parse("1.0").unwrap();
        idx.tags.insert(
            tag.clone(),
            Descriptor {
                media_type: MT.into(),
                digest: m(),
                size: 100,
                artifact_type: None,
                platform: None,
                annotations: None,
            },
        );
        idx.blobs.insert(b(), 4);
        if name != "pub/app" {
            let mut v1 = V1Index::default();
            v1.tags.insert(tag, id.clone());
            v1.images.insert(id.clone(), image.clone());
            idx.v1 = Some(v1);
        }
        write(&store, &layout::repo_index(&idx.name), &idx.to_vec());
    }
    let mut shard = V1ImageShard::default();
    shard.images.insert(
        id.clone(),
        V1ShardEntry {
            image,
            repositories: BTreeSet::from([RepoName::parse("library/hello").unwrap()]),
        },
    );
    write(
        &store,
        &layout::v1::image_shard(&id),
        &serde_json::to_vec(&shard).unwrap(),
    );
    let catalog = Catalog {
        repositories: repos.iter().map(|r| r.to_string()).collect(),
    };
    write(
        &store,
        layout::CATALOG,
        &serde_json::to_vec(&catalog).unwrap(),
    );
    Arc::new(store)
}

fn issuer() -> TokenIssuer {
    let rules = vec![Rule {
        prefix: "team/".into(),
        users: vec!["alice".into()],
    }];
    crate::auth::token::test_issuer(rules, &["alice"])
}

/// The endpoint over `store`, signing for an nginx `secure_link` edge at `https://edge.test`,
/// with private repositories when `auth` is given.
fn state(
    store: Arc<LocalStore>,
    auth: Option<Arc<TokenIssuer>>,
    reuse_answers: bool,
) -> Arc<AppState> {
    state_with_mirror(store, auth, reuse_answers, None)
}

fn state_with_mirror(
    store: Arc<LocalStore>,
    auth: Option<Arc<TokenIssuer>>,
    reuse_answers: bool,
    mirror: Option<&str>,
) -> Arc<AppState> {
    let mirror = mirror.map(|text| {
        let c: crate::federation::mirror::MirrorConfig = toml::from_str(text).unwrap();
        Arc::new(
            crate::federation::mirror::Mirror::from_config(&c)
                .unwrap()
                .unwrap(),
        )
    });
    let federation = Federation::one_edge(store);
    Arc::new(AppState {
        federation: Arc::new(federation),
        url_ttl: Duration::from_secs(300),
        embedded: None,
        auth,
        trust_forwarded: false,
        tls: false,
        access_log: false,
        request_timeout: Duration::from_secs(30),
        reuse_answers,
        client_limits: None,
        mirror,
        ui: None,
        cors: None,
        checks: Default::default(),
    })
}

/// What a row's request carries in `Authorization`.
#[derive(Debug, Clone, Copy)]
enum Who {
    Nobody,
    /// A token with alice's grant for `team/app`.
    Alice,
    /// A valid token with no grants.
    Anonymous,
    Junk,
    /// alice's password (for `/token`).
    AliceBasic,
}

/// (private repositories configured?, method, path, who) → (status, `Location` key, error code).
type Row<'a> = (
    bool,
    &'a str,
    String,
    Who,
    u16,
    Option<&'a str>,
    Option<&'a str>,
);

/// The status, the store key the `Location` signs, and the error code of an answer.
#[derive(Debug, PartialEq, Eq)]
struct Got {
    status: u16,
    location: Option<String>,
    code: Option<String>,
}

async fn send(
    app: &axum::Router,
    method: &str,
    path: &str,
    authorization: Option<&str>,
) -> (Got, axum::http::HeaderMap) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "registry.test");
    if let Some(a) = authorization {
        req = req.header(header::AUTHORIZATION, a);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let location = headers.get(header::LOCATION).map(|l| {
        let url = url::Url::parse(l.to_str().unwrap()).unwrap();
        assert_eq!(url.host_str(), Some("edge.test"), "{path}: {url}");
        url.path().trim_start_matches('/').to_owned()
    });
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let code = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["errors"][0]["code"].as_str().map(str::to_owned));
    (
        Got {
            status,
            location,
            code,
        },
        headers,
    )
}

#[tokio::test]
async fn every_route_answers_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let auth = Arc::new(issuer());
    let token = |user: Option<&str>| {
        let creds = user.map(|u| (u.to_owned(), "pw".to_owned()));
        let v = auth
            .issue(creds, &["repository:team/app:pull".to_owned()])
            .unwrap();
        format!("Bearer {}", v["token"].as_str().unwrap())
    };
    let (alice, anonymous) = (token(Some("alice")), token(None));
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "alice:pw")
    );
    let private = super::router(state(store.clone(), Some(auth.clone()), false));
    let open = super::router(state(store, None, false));

    let (m, b, u) = (m(), b(), unknown());
    let (mk, bk) = (layout::manifest(&m), layout::blob(&b));
    let pub_tags = layout::tags_list(&RepoName::parse("pub/app").unwrap());
    let hello = RepoName::parse("library/hello").unwrap();
    let id = V1ImageId::parse(ID).unwrap();
    let v1_tags = layout::v1::tags(&hello);
    let v1_tag = layout::v1::tag(&hello, &Tag::parse("1.0").unwrap());
    let v1_images = layout::v1::images(&hello);
    let v1_json = layout::v1::image_json(&id);
    let team_v1_tags = layout::v1::tags(&RepoName::parse("team/app").unwrap());
    let no = None::<&str>;
    use Who::*;
    // (private repositories configured?, method, path, who) → (status, Location key, code)
    #[rustfmt::skip]
    let rows: Vec<Row> = vec![
        // The root: open without private repositories; with them, any valid token.
        (false, "GET", "/v2/".into(), Nobody, 200, no, no),
        (false, "GET", "/v2".into(), Nobody, 200, no, no),
        (true, "GET", "/v2/".into(), Nobody, 401, no, Some("UNAUTHORIZED")),
        (true, "GET", "/v2/".into(), Junk, 401, no, Some("UNAUTHORIZED")),
        (true, "GET", "/v2/".into(), Anonymous, 200, no, no),
        // Public content: HEADs answered here, GETs redirected to the content-addressed key.
        (true, "GET", "/v2/pub/app/manifests/1.0".into(), Nobody, 307, Some(&mk), no),
        (true, "HEAD", "/v2/pub/app/manifests/1.0".into(), Nobody, 200, no, no),
        (true, "GET", format!("/v2/pub/app/manifests/{m}"), Nobody, 307, Some(&mk), no),
        (true, "GET", format!("/v2/pub/app/blobs/{b}"), Nobody, 307, Some(&bk), no),
        (true, "HEAD", format!("/v2/pub/app/blobs/{b}"), Junk, 200, no, no),
        // A manifest fetched through the blobs route.
        (true, "GET", format!("/v2/pub/app/blobs/{m}"), Nobody, 307, Some(&mk), no),
        (true, "GET", "/v2/pub/app/tags/list".into(), Nobody, 307, Some(&pub_tags), no),
        (true, "GET", "/v2/pub/app/tags/list?n=1".into(), Nobody, 200, no, no),
        (true, "GET", "/v2/pub/app/tags/list?n=x".into(), Nobody, 400, no, Some("PAGINATION_NUMBER_INVALID")),
        (true, "GET", format!("/v2/pub/app/referrers/{m}"), Nobody, 200, no, no),
        (false, "GET", "/v2/_catalog".into(), Nobody, 307, Some(layout::CATALOG), no),
        // With private repositories the catalog is filtered, so answered here.
        (true, "GET", "/v2/_catalog".into(), Nobody, 200, no, no),
        // Private content: a challenge without alice's grant, short-lived URLs with it.
        (true, "GET", "/v2/team/app/manifests/1.0".into(), Nobody, 401, no, Some("UNAUTHORIZED")),
        (true, "HEAD", "/v2/team/app/manifests/1.0".into(), Anonymous, 401, no, no),
        (true, "GET", format!("/v2/team/app/blobs/{b}"), Junk, 401, no, Some("UNAUTHORIZED")),
        (true, "GET", "/v2/team/app/tags/list".into(), Nobody, 401, no, Some("UNAUTHORIZED")),
        (true, "GET", "/v2/team/app/manifests/1.0".into(), Alice, 307, Some(&mk), no),
        (true, "GET", format!("/v2/team/app/blobs/{b}"), Alice, 307, Some(&bk), no),
        (true, "HEAD", format!("/v2/team/app/blobs/{b}"), Alice, 200, no, no),
        // Without private repositories, team/ is public like any other.
        (false, "GET", format!("/v2/team/app/blobs/{b}"), Nobody, 307, Some(&bk), no),
        // Unknown things.
        (true, "GET", "/v2/nosuch/manifests/1.0".into(), Nobody, 404, no, Some("NAME_UNKNOWN")),
        (true, "GET", "/v2/pub/app/manifests/2.0".into(), Nobody, 404, no, Some("MANIFEST_UNKNOWN")),
        (true, "GET", format!("/v2/pub/app/manifests/{u}"), Nobody, 404, no, Some("MANIFEST_UNKNOWN")),
        (true, "GET", format!("/v2/pub/app/blobs/{u}"), Nobody, 404, no, Some("BLOB_UNKNOWN")),
        (true, "HEAD", format!("/v2/pub/app/blobs/{u}"), Nobody, 404, no, no),
        // Malformed references in a manifest path name no manifest (OCI conformance).
        (true, "GET", "/v2/pub/app/manifests/.INVALID_MANIFEST_NAME".into(), Nobody, 404, no, Some("MANIFEST_UNKNOWN")),
        (true, "HEAD", "/v2/pub/app/manifests/.INVALID_MANIFEST_NAME".into(), Nobody, 404, no, no),
        (true, "GET", "/v2/pub/app/manifests/..".into(), Nobody, 404, no, Some("MANIFEST_UNKNOWN")),
        (true, "GET", "/v2/pub/app/manifests/sha256:XYZ".into(), Nobody, 404, no, Some("MANIFEST_UNKNOWN")),
        (true, "GET", "/v2/team/app/manifests/.INVALID_MANIFEST_NAME".into(), Nobody, 404, no, Some("MANIFEST_UNKNOWN")),
        // Hostile names and digests: refused, never redirected.
        (true, "GET", "/v2/../etc/manifests/1.0".into(), Nobody, 400, no, Some("NAME_INVALID")),
        (true, "GET", "/v2/pub%2f..%2fteam/app/manifests/1.0".into(), Nobody, 400, no, Some("NAME_INVALID")),
        (true, "GET", "/v2/Pub/app/blobs/latest".into(), Nobody, 400, no, Some("NAME_INVALID")),
        (true, "GET", "/v2/pub/app/blobs/latest".into(), Nobody, 400, no, Some("DIGEST_INVALID")),
        (true, "GET", "/v2/pub/app/blobs/sha256:..%2f..%2fetc".into(), Nobody, 400, no, Some("DIGEST_INVALID")),
        (true, "GET", "/v2/pub/app/referrers/nope".into(), Nobody, 400, no, Some("DIGEST_INVALID")),
        (true, "GET", "/v2/pub/app/other/x".into(), Nobody, 404, no, Some("NOT_FOUND")),
        // Writes: one answer, whatever the path.
        (true, "PUT", "/v2/pub/app/manifests/1.0".into(), Alice, 405, no, Some("UNSUPPORTED")),
        (true, "POST", "/v2/pub/app/blobs/uploads/".into(), Nobody, 405, no, Some("UNSUPPORTED")),
        (true, "DELETE", format!("/v2/team/app/blobs/{b}"), Alice, 405, no, Some("UNSUPPORTED")),
        (true, "PATCH", "/v2/../x".into(), Nobody, 405, no, Some("UNSUPPORTED")),
        // v1: static files, private repositories refused (v1 clients cannot get a token).
        (true, "GET", "/v1/_ping".into(), Nobody, 200, no, no),
        (true, "GET", "/v1/repositories/hello/tags".into(), Nobody, 307, Some(&v1_tags), no),
        (true, "GET", "/v1/repositories/library/hello/tags/1.0".into(), Nobody, 307, Some(&v1_tag), no),
        (true, "GET", "/v1/repositories/hello/images".into(), Nobody, 307, Some(&v1_images), no),
        (true, "GET", format!("/v1/images/{ID}/json"), Nobody, 307, Some(&v1_json), no),
        (true, "GET", format!("/v1/images/{ID}/layer"), Nobody, 307, Some(&bk), no),
        (true, "GET", "/v1/repositories/hello/tags/2.0".into(), Nobody, 404, no, no),
        (true, "GET", "/v1/repositories/team/app/tags".into(), Nobody, 401, no, no),
        (true, "GET", "/v1/repositories/team/app/tags".into(), Anonymous, 401, no, no),
        (true, "GET", "/v1/repositories/team/app/tags".into(), Alice, 307, Some(&team_v1_tags), no),
        (false, "GET", "/v1/repositories/team/app/tags".into(), Nobody, 307, Some(&team_v1_tags), no),
        (true, "GET", "/v1/repositories/pub/app/tags".into(), Nobody, 404, no, no),
        (true, "GET", "/v1/repositories/../etc/tags".into(), Nobody, 400, no, no),
        (true, "GET", "/v1/images/%2e%2e/json".into(), Nobody, 400, no, no),
        (true, "PUT", "/v1/repositories/hello/tags/1.0".into(), Nobody, 405, no, no),
        // The token endpoint.
        (true, "GET", "/token?scope=repository:team/app:pull".into(), AliceBasic, 200, no, no),
        (true, "GET", "/token".into(), Nobody, 200, no, no),
        (true, "POST", "/token".into(), AliceBasic, 405, no, Some("UNSUPPORTED")),
        (false, "GET", "/token".into(), AliceBasic, 404, no, Some("NOT_FOUND")),
        // Everything else.
        (true, "GET", "/healthz".into(), Nobody, 200, no, no),
        (true, "GET", "/readyz".into(), Nobody, 200, no, no),
        (true, "GET", "/_origin/blobs/sha256/00".into(), Nobody, 404, no, Some("NOT_FOUND")),
        (true, "GET", "/".into(), Nobody, 404, no, Some("NOT_FOUND")),
        (true, "GET", "/v2x".into(), Nobody, 404, no, Some("NOT_FOUND")),
    ];
    for (with_auth, method, path, who, status, location, code) in rows {
        let authorization = match who {
            Nobody => None,
            Alice => Some(alice.as_str()),
            Anonymous => Some(anonymous.as_str()),
            Junk => Some("Bearer junk"),
            AliceBasic => Some(basic.as_str()),
        };
        let app = if with_auth { &private } else { &open };
        let (got, headers) = send(app, method, &path, authorization).await;
        let want = Got {
            status,
            location: location.map(str::to_owned),
            code: code.map(str::to_owned),
        };
        assert_eq!(got, want, "{method} {path} as {who:?} (auth: {with_auth})");
        // Private content's URLs live `private_url_ttl` (60 s), not `url_ttl` (300 s).
        if got.location.is_some() {
            let url = headers[header::LOCATION].to_str().unwrap();
            let expires: u64 = url::Url::parse(url)
                .unwrap()
                .query_pairs()
                .find(|(k, _)| k == "expires")
                .unwrap()
                .1
                .parse()
                .unwrap();
            let now = crate::sign::unix_secs(std::time::SystemTime::now());
            let private = with_auth && path.contains("/team/");
            let ttl = if private { 60 } else { 300 };
            assert!(
                expires > now && expires <= now + ttl,
                "{method} {path}: expires in {}s, want at most {ttl}",
                expires.saturating_sub(now)
            );
        }
        if status == 401 && path.starts_with("/v2/") {
            let challenge = headers[header::WWW_AUTHENTICATE].to_str().unwrap();
            let scoped = !matches!(path.as_str(), "/v2/" | "/v2");
            assert_eq!(
                challenge.contains("scope=\"repository:team/app:pull\""),
                scoped,
                "{path}: {challenge}"
            );
            assert!(challenge.starts_with("Bearer realm=\"http://registry.test/token\""));
        }
    }
}

/// The headers a reused answer must repeat exactly.
fn answer_of(got: Got, headers: &axum::http::HeaderMap) -> (Got, Vec<Option<String>>) {
    let h = [
        header::LOCATION.as_str(),
        "content-type",
        "content-length",
        "docker-content-digest",
        "www-authenticate",
        "link",
    ]
    .iter()
    .map(|n| headers.get(*n).map(|v| v.to_str().unwrap().to_owned()))
    .collect();
    (got, h)
}

#[tokio::test]
async fn reused_answers_equal_fresh_ones_whatever_the_query_and_headers() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let auth = Arc::new(issuer());
    let alice = {
        let creds = Some(("alice".to_owned(), "pw".to_owned()));
        let v = auth
            .issue(creds, &["repository:team/app:pull".to_owned()])
            .unwrap();
        format!("Bearer {}", v["token"].as_str().unwrap())
    };
    let reusing = super::router(state(store.clone(), Some(auth.clone()), true));
    let fresh = super::router(state(store, Some(auth), false));
    let (m, b) = (m(), b());
    let paths = [
        format!("/v2/pub/app/blobs/{b}"),
        format!("/v2/pub/app/blobs/{m}"),
        "/v2/pub/app/manifests/1.0".to_owned(),
        format!("/v2/pub/app/manifests/{m}"),
        format!("/v2/team/app/blobs/{b}"),
        "/v2/team/app/manifests/1.0".to_owned(),
        "/v2/pub/app/tags/list".to_owned(),
        format!("/v2/pub/app/referrers/{m}"),
        "/v2/_catalog".to_owned(),
        "/v2/".to_owned(),
    ];
    let queries = [
        "",
        "?n=1",
        "?n=0&last=0",
        "?x=1",
        "?artifactType=a%2Fb",
        "?n=x",
    ];
    let authorizations = [None, Some(alice.as_str()), Some("Bearer junk")];
    let before = super::recent_answers::REUSED.total();
    for path in &paths {
        for query in queries {
            for method in ["GET", "HEAD"] {
                // Each order of clients: an answer kept for one must be right for the next.
                for first in authorizations {
                    let target = format!("{path}{query}");
                    loop {
                        let second = crate::sign::unix_secs(std::time::SystemTime::now());
                        let (kept, kh) = send(&reusing, method, &target, first).await;
                        let kept = answer_of(kept, &kh);
                        let mut all = Vec::new();
                        for authorization in authorizations {
                            let (r, rh) = send(&reusing, method, &target, authorization).await;
                            let (f, fh) = send(&fresh, method, &target, authorization).await;
                            all.push((authorization, answer_of(r, &rh), answer_of(f, &fh)));
                        }
                        // Signed URLs name their second: compare only within one.
                        if crate::sign::unix_secs(std::time::SystemTime::now()) != second {
                            continue;
                        }
                        for (authorization, reused, fresh) in all {
                            assert_eq!(
                                reused, fresh,
                                "{method} {target} as {authorization:?} (after {first:?})"
                            );
                            if authorization == first {
                                assert_eq!(reused, kept, "{method} {target} as {first:?}");
                            }
                        }
                        break;
                    }
                }
            }
        }
    }
    assert!(
        super::recent_answers::REUSED.total() > before,
        "no answer was re-used: the test compared fresh answers only"
    );
}

/// (private repositories configured?, method, path) → (status, `Location` key, error code).
type MirrorRow<'a> = (bool, &'a str, String, u16, Option<&'a str>, Option<&'a str>);

/// Mirror namespaces (docs/mirror.md, "How requests map to the store"): containerd's `?ns=`, a
/// path prefix, and bare names all reach the same store repository, through the same access
/// decision; an `ns` nobody mirrors is never answered.
#[tokio::test]
async fn mirror_namespaces_answer_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let mirror = r#"
[[upstreams]]
host = "registry.test:5000"
prefix = "pub"

[[upstreams]]
host = "docker.io"
prefix = "library"

[[upstreams]]
host = "team.example"
prefix = "team"
"#;
    let open = super::router(state_with_mirror(store.clone(), None, false, Some(mirror)));
    let private = super::router(state_with_mirror(
        store,
        Some(Arc::new(issuer())),
        false,
        Some(mirror),
    ));
    let (m, b) = (m(), b());
    let (mk, bk) = (layout::manifest(&m), layout::blob(&b));
    let no = None::<&str>;
    #[rustfmt::skip]
    let rows: Vec<MirrorRow> = vec![
        // containerd: ns names the upstream; the name is under its prefix in the store.
        (false, "GET", "/v2/app/manifests/1.0?ns=registry.test:5000".into(), 307, Some(&mk), no),
        (false, "HEAD", "/v2/app/manifests/1.0?ns=registry.test:5000".into(), 200, no, no),
        (false, "GET", format!("/v2/app/blobs/{b}?ns=registry.test:5000"), 307, Some(&bk), no),
        (false, "GET", format!("/v2/hello/blobs/{b}?ns=docker.io"), 307, Some(&bk), no),
        // A miss is a 404 the client falls back on.
        (false, "GET", "/v2/app/manifests/1.0?ns=docker.io".into(), 404, no, Some("NAME_UNKNOWN")),
        (false, "GET", "/v2/app/manifests/2.0?ns=registry.test:5000".into(), 404, no, Some("MANIFEST_UNKNOWN")),
        // An ns nobody mirrors, even where the bare name exists.
        (false, "GET", "/v2/pub/app/manifests/1.0?ns=quay.io".into(), 404, no, Some("NAME_UNKNOWN")),
        // podman/CRI-O: the store prefix (or the host) as a path prefix.
        (false, "GET", "/v2/docker.io/hello/manifests/1.0".into(), 307, Some(&mk), no),
        (false, "GET", "/v2/pub/app/manifests/1.0".into(), 307, Some(&mk), no),
        // Docker's bare names: the store's own repository first, else docker.io's prefix.
        (false, "GET", "/v2/hello/manifests/1.0".into(), 307, Some(&mk), no),
        (false, "HEAD", "/v2/nothing/manifests/1.0".into(), 404, no, no),
        // The mapped repository goes through the access decision: team/ is private.
        (true, "GET", "/v2/app/manifests/1.0?ns=team.example".into(), 401, no, Some("UNAUTHORIZED")),
        (true, "GET", "/v2/app/manifests/1.0?ns=registry.test:5000".into(), 307, Some(&mk), no),
    ];
    let mut failures = Vec::new();
    for (private_repos, method, path, status, location, code) in &rows {
        let app = if *private_repos { &private } else { &open };
        let (got, _) = send(app, method, path, None).await;
        let want = Got {
            status: *status,
            location: location.map(str::to_owned),
            code: code.map(str::to_owned),
        };
        if got != want {
            failures.push(format!("{method} {path}: got {got:?}, want {want:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// CORS (`[serve] cors_origins`): an allowed origin's preflight is answered and its answers name
/// it; any other origin gets the answers it always got, with no CORS header.
#[tokio::test]
async fn cors_answers_allowed_origins_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = state(store(dir.path()), None, false);
    Arc::get_mut(&mut state).unwrap().cors =
        super::cors::Cors::new(&["https://ui.example".into()]).unwrap();
    let app = super::router(state);
    let call = |method: &'static str, path: &'static str, origin: &'static str| {
        let app = app.clone();
        async move {
            let req = Request::builder()
                .method(method)
                .uri(path)
                .header(header::HOST, "registry.test")
                .header(header::ORIGIN, origin)
                .header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET")
                .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "authorization")
                .body(Body::empty())
                .unwrap();
            app.oneshot(req).await.unwrap()
        }
    };
    let pre = call("OPTIONS", "/v2/pub/app/tags/list", "https://ui.example").await;
    assert_eq!(pre.status(), 204);
    let h = pre.headers();
    assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://ui.example");
    assert!(h[header::ACCESS_CONTROL_ALLOW_METHODS]
        .to_str()
        .unwrap()
        .contains("GET"));
    assert!(h[header::ACCESS_CONTROL_ALLOW_HEADERS]
        .to_str()
        .unwrap()
        .contains("Authorization"));
    let get = call("GET", "/v2/pub/app/manifests/1.0", "https://ui.example").await;
    assert_eq!(get.status(), 307);
    assert_eq!(
        get.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://ui.example"
    );
    assert!(get.headers()[header::ACCESS_CONTROL_EXPOSE_HEADERS]
        .to_str()
        .unwrap()
        .contains("Docker-Content-Digest"));
    let other = call("GET", "/v2/pub/app/manifests/1.0", "https://evil.example").await;
    assert_eq!(other.status(), 307);
    assert!(!other
        .headers()
        .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
    // A preflight from elsewhere is what it always was: a write the registry refuses.
    let refused = call("OPTIONS", "/v2/pub/app/tags/list", "https://evil.example").await;
    assert_eq!(refused.status(), 405);
    assert!(!refused
        .headers()
        .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
    // Outside /v2/, nothing changes.
    let ping = call("GET", "/v1/_ping", "https://ui.example").await;
    assert!(!ping
        .headers()
        .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
}
