//! The page in-process: real published fixtures in a local store, read through a store that
//! records every key read, so "layers are never read" is checked rather than assumed.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;

use async_trait::async_trait;
use axum::http::Request;
use bytes::Bytes;

use super::*;
use crate::auth::Rule;
use crate::oci::AnyManifest;
use crate::store::{ByteStream, LocalStore, Object, ObjectMeta, PutOptions, Store, StoreResult};

/// A local store that records the key of every read.
#[derive(Debug)]
struct Recording {
    inner: LocalStore,
    reads: Mutex<Vec<String>>,
}

#[async_trait]
impl Store for Recording {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn get(&self, key: &str) -> StoreResult<Option<Object>> {
        self.reads.lock().unwrap().push(key.to_owned());
        self.inner.get(key).await
    }
    async fn get_stream(&self, key: &str) -> StoreResult<Option<ByteStream>> {
        self.reads.lock().unwrap().push(key.to_owned());
        self.inner.get_stream(key).await
    }
    async fn head(&self, key: &str) -> StoreResult<Option<ObjectMeta>> {
        self.inner.head(key).await
    }
    async fn put(&self, key: &str, bytes: Bytes, opts: &PutOptions) -> StoreResult<()> {
        self.inner.put(key, bytes, opts).await
    }
    async fn put_file(&self, key: &str, path: &Path, opts: &PutOptions) -> StoreResult<()> {
        self.inner.put_file(key, path, opts).await
    }
    async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectMeta>> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.inner.delete(key).await
    }
}

async fn publish(store: &Path, source: &str, tag: &str) {
    let s: Arc<dyn Store> = Arc::new(LocalStore::open(store).unwrap());
    let opts = crate::publish::PublishOptions {
        jobs: 2,
        ..crate::publish::PublishOptions::new(source.to_owned(), vec![tag.parse().unwrap()])
    };
    crate::publish::publish(s, &opts).await.unwrap();
}

fn fixture(name: &str) -> String {
    format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A store with the fixtures published under `names` (multi-platform index, docker legacy).
async fn world(names: [&str; 2]) -> (tempfile::TempDir, Arc<Recording>) {
    let dir = tempfile::tempdir().unwrap();
    publish(
        dir.path(),
        &format!("oci:{}:latest", fixture("oci-multi")),
        &format!("{}:latest", names[0]),
    )
    .await;
    publish(
        dir.path(),
        &format!("docker-archive:{}", fixture("docker-legacy.tar")),
        &format!("{}:1", names[1]),
    )
    .await;
    let store = Arc::new(Recording {
        inner: LocalStore::open(dir.path()).unwrap(),
        reads: Mutex::new(Vec::new()),
    });
    (dir, store)
}

async fn ui(store: Arc<Recording>, auth: Option<Arc<TokenIssuer>>) -> Ui {
    let fed = Federation::one_edge(store);
    let ui = Ui::new(&UiConfig::default(), Arc::new(fed), auth, None)
        .unwrap()
        .unwrap();
    ui.summaries.refresh().await;
    ui
}

/// (status, body, headers) of `GET path`.
async fn get(
    ui: &Ui,
    method: &str,
    path: &str,
    authorization: Option<&str>,
) -> (u16, String, axum::http::HeaderMap) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "registry.test");
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let (parts, _) = req.body(()).unwrap().into_parts();
    let resp = ui.handle(&parts).await;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), 16 << 20)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap(), headers)
}

#[tokio::test]
async fn pages_show_published_images_and_never_read_a_layer() {
    let (dir, store) = world(["demo/multi", "demo/legacy"]).await;
    let ui = ui(store.clone(), None).await;

    let (status, catalog, headers) = get(&ui, "GET", "/", None).await;
    assert_eq!(status, 200);
    assert!(
        catalog.contains("href=\"/r/demo/multi\"") && catalog.contains("href=\"/r/demo/legacy\""),
        "{catalog}"
    );
    assert!(headers["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'none'"));
    let (_, searched, _) = get(&ui, "GET", "/?q=legacy", None).await;
    assert!(
        searched.contains("demo/legacy") && !searched.contains("href=\"/r/demo/multi\""),
        "{searched}"
    );

    // The repository: its tag, platforms, and the pull commands with the host the browser used.
    let idx: crate::index::RepoIndex = serde_json::from_slice(
        &std::fs::read(dir.path().join("repositories/demo/multi/_index.json")).unwrap(),
    )
    .unwrap();
    let top = &idx.tags[&crate::reference::Tag::parse("latest").unwrap()].digest;
    let (status, repo, _) = get(&ui, "GET", "/r/demo/multi", None).await;
    assert_eq!(status, 200);
    assert!(
        repo.contains("linux/amd64") && repo.contains("linux/arm64"),
        "{repo}"
    );
    assert!(
        repo.contains("docker pull registry.test/demo/multi:latest"),
        "{repo}"
    );
    assert!(
        repo.contains(&format!("docker pull registry.test/demo/multi@{top}")),
        "{repo}"
    );

    // The image: every layer of every platform, listed.
    let (status, image, _) = get(&ui, "GET", &format!("/r/demo/multi@{top}"), None).await;
    assert_eq!(status, 200);
    let mut layers = HashSet::new();
    let mut configs = HashSet::new();
    let legacy_idx: crate::index::RepoIndex = serde_json::from_slice(
        &std::fs::read(dir.path().join("repositories/demo/legacy/_index.json")).unwrap(),
    )
    .unwrap();
    for d in idx.manifests.keys().chain(legacy_idx.manifests.keys()) {
        let m: AnyManifest = serde_json::from_slice(
            &std::fs::read(dir.path().join(crate::layout::manifest(d))).unwrap(),
        )
        .unwrap();
        layers.extend(m.layers.iter().flatten().map(|l| l.digest.clone()));
        configs.extend(m.config.iter().map(|c| c.digest.clone()));
    }
    assert!(!layers.is_empty());
    for d in idx.manifests.keys() {
        let m: AnyManifest = serde_json::from_slice(
            &std::fs::read(dir.path().join(crate::layout::manifest(d))).unwrap(),
        )
        .unwrap();
        for l in m.layers.iter().flatten() {
            assert!(
                image.contains(l.digest.as_str()),
                "layer {} missing from the image page",
                l.digest
            );
        }
    }
    // Tag history: moving a tag shows both digests on the repository page.
    publish(
        dir.path(),
        &format!("docker-archive:{}", fixture("docker-legacy.tar")),
        "demo/multi:latest",
    )
    .await;
    let key = crate::layout::repo_index(&idx.name);
    ui.federation.origins[0].repos.invalidate(&key).await;
    let (_, moved, _) = get(&ui, "GET", "/r/demo/multi", None).await;
    assert!(
        moved.contains("Tag history")
            && moved.contains(top.as_str())
            && moved.contains("moved 1 time"),
        "{moved}"
    );
    let (status, legacy, _) = get(&ui, "GET", "/r/demo/legacy", None).await;
    assert_eq!(status, 200);
    assert!(legacy.contains("docker manifest"), "{legacy}");
    let (status, store_page, _) = get(&ui, "GET", "/store", None).await;
    assert_eq!(status, 200);
    assert!(
        store_page.contains("Biggest repositories") && store_page.contains("demo/multi"),
        "{store_page}"
    );

    // Every key read was an index, the catalog, a manifest or a config: never a layer.
    let reads = store.reads.lock().unwrap().clone();
    assert!(
        reads.iter().any(|k| k.starts_with("manifests/")),
        "{reads:?}"
    );
    for key in &reads {
        let ok = key.starts_with(crate::layout::REPOSITORIES_PREFIX)
            || key.starts_with(crate::layout::MANIFESTS_PREFIX)
            || key == crate::layout::CATALOG
            || configs.iter().any(|c| *key == crate::layout::blob(c));
        assert!(ok, "the page read {key}");
        assert!(
            !layers.iter().any(|l| *key == crate::layout::blob(l)),
            "the page read layer {key}"
        );
    }
    // Facts are kept: a second view reads no manifest or config again.
    let before = store.reads.lock().unwrap().len();
    get(&ui, "GET", &format!("/r/demo/multi@{top}"), None).await;
    get(&ui, "GET", "/r/demo/multi", None).await;
    let again: Vec<String> = store.reads.lock().unwrap()[before..].to_vec();
    assert!(
        again
            .iter()
            .all(|k| k.starts_with(crate::layout::REPOSITORIES_PREFIX)),
        "{again:?}"
    );
}

#[tokio::test]
async fn private_repositories_are_invisible_until_sign_in() {
    let (_dir, store) = world(["team/app", "pub/app"]).await;
    let auth = Arc::new(crate::auth::token::test_issuer(
        vec![Rule {
            prefix: "team/".into(),
            users: vec!["alice".into()],
        }],
        &["alice", "bob"],
    ));
    let ui = ui(store, Some(auth)).await;
    let basic = |cred: &str| {
        format!(
            "Basic {}",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, cred)
        )
    };

    for who in [None, Some(basic("bob:pw")), Some(basic("alice:wrong"))] {
        let who = who.as_deref();
        let (_, catalog, _) = get(&ui, "GET", "/", who).await;
        assert!(
            catalog.contains("pub/app") && !catalog.contains("team/"),
            "{who:?}: {catalog}"
        );
        let (_, store_page, _) = get(&ui, "GET", "/store", who).await;
        assert!(!store_page.contains("team/"), "{who:?}: {store_page}");
        // A private repository and one that does not exist get the same answer.
        let hidden = get(&ui, "GET", "/r/team/app", who).await;
        let missing = get(&ui, "GET", "/r/team/nothing", who).await;
        assert_eq!((hidden.0, &hidden.1), (404, &missing.1), "{who:?}");
    }
    let (status, _, headers) = get(&ui, "GET", "/login", None).await;
    assert_eq!(status, 401);
    assert!(headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Basic "));
    let alice = basic("alice:pw");
    let (status, _, headers) = get(&ui, "GET", "/login", Some(&alice)).await;
    assert_eq!((status, headers["location"].to_str().unwrap()), (303, "/"));
    let (_, catalog, _) = get(&ui, "GET", "/", Some(&alice)).await;
    assert!(
        catalog.contains("href=\"/r/team/app\"") && catalog.contains("Signed in as"),
        "{catalog}"
    );
    assert_eq!(get(&ui, "GET", "/r/team/app", Some(&alice)).await.0, 200);
}

#[tokio::test]
async fn hostile_requests_get_plain_refusals() {
    let (_dir, store) = world(["demo/multi", "demo/legacy"]).await;
    let ui = ui(store, None).await;
    assert_eq!(get(&ui, "POST", "/", None).await.0, 405);
    for path in [
        "/r/../etc/passwd",
        "/r/demo/multi@sha256:zz",
        "/r/demo/multi@sha256:0000000000000000000000000000000000000000000000000000000000000000",
        "/r/DEMO/multi",
        "/assets/../../Cargo.toml",
        "/assets/ui.css.map",
        "/nothing",
    ] {
        assert_eq!(get(&ui, "GET", path, None).await.0, 404, "{path}");
    }
    let (status, css, headers) = get(&ui, "GET", "/assets/ui.css", None).await;
    assert_eq!(status, 200);
    assert!(css.contains("--accent"));
    assert_eq!(headers["x-content-type-options"], "nosniff");
    // A prefix elsewhere keeps `/` free; registry paths can never be the page's.
    let c = UiConfig {
        prefix: Some("/ui".into()),
        ..Default::default()
    };
    let fed = ui.federation.clone();
    let moved = Ui::new(&c, fed.clone(), None, None).unwrap().unwrap();
    assert!(moved.owns("/ui/") && moved.owns("/ui") && moved.owns("/ui/r/x") && !moved.owns("/"));
    // Only the page's own paths: a stray key-like path stays the registry's JSON 404.
    let root = &ui;
    for stray in ["/_catalog.json", "/blobs/sha256/ab", "/v2/", "/favicon.ico"] {
        assert!(!root.owns(stray), "{stray}");
    }
    assert!(root.owns("/") && root.owns("/store") && root.owns("/r/demo/multi"));
    for bad in ["/v2", "/v2/ui", "/_origin/x", "/token"] {
        let c = UiConfig {
            prefix: Some(bad.into()),
            ..Default::default()
        };
        assert!(Ui::new(&c, fed.clone(), None, None).is_err(), "{bad}");
    }
}

/// The retention preview reaches the store page and the repository page through the
/// [`Retention`] seam, with `retain`'s own dry run behind it, clearly labelled as one without an
/// in-use list.
#[tokio::test]
async fn pages_show_what_retention_would_remove() {
    let (_dir, store) = world(["team/app", "other/old"]).await;
    let policy = crate::retain::Policy::new(
        &[crate::retain::RetentionRule {
            prefix: "other/".into(),
            keep_newest: Some(0),
            ..Default::default()
        }],
        Default::default(),
    )
    .unwrap();
    let plan = crate::retain::plan(store.as_ref(), &policy, None, Default::default())
        .await
        .unwrap();
    let preview = RetentionPreview {
        drops: plan
            .dropped
            .iter()
            .map(|d| RetentionDrop {
                repository: d.repository.clone(),
                tag: d.tag.to_string(),
                digest: d.digest.clone(),
                why: d.why.clone(),
            })
            .collect(),
        manifests: plan.unreferenced_manifests,
        blobs: plan.unreferenced_blobs,
        bytes: plan.unreferenced_bytes,
    };
    assert_eq!(preview.drops.len(), 1, "{plan}");
    assert!(preview.blobs > 0, "{plan}");
    let ui = ui(store, None).await;
    ui.summaries.set_retention(Arc::new(move |_| {
        let p = preview.clone();
        Box::pin(async move { Ok(p) })
    }));
    ui.summaries.refresh().await;

    let (status, body, _) = get(&ui, "GET", "/store", None).await;
    assert_eq!(status, 200);
    assert!(body.contains("What retention would remove"), "{body}");
    assert!(body.contains("no in-use list"), "{body}");
    assert!(body.contains("other/old</a>:1"), "{body}");
    assert!(body.contains("not among the 0 newest"), "{body}");
    let (_, body, _) = get(&ui, "GET", "/r/other/old", None).await;
    assert!(body.contains("id=\"retention\""), "{body}");
    assert!(body.contains("other/old</a>:1"), "{body}");
    // A repository no rule drops from says so.
    let (_, body, _) = get(&ui, "GET", "/r/team/app", None).await;
    assert!(body.contains("Nothing: every tag is kept."), "{body}");
}
