//! The web page's server time on a big store (issue 19: a catalog of 10 000 repositories and a
//! repository of 5 000 tags render in under 100 ms of server time).
//!
//!   cargo bench --bench ui
//!
//! The store is written directly (indexes, manifests and configs; layers are never read, so none
//! exist), the summary is computed once, and each page is rendered through `Ui::handle`, the same
//! call `serve` makes. The repository page is measured warm (its 5 000 images' facts read once,
//! then kept, as in a running endpoint); the cold first view is printed once. Results are in
//! docs/performance.md ("Web page").

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use axum::http::Request;
use criterion::{criterion_group, criterion_main, Criterion};

use static_registry::federation::cache::CacheConfig;
use static_registry::federation::region::RegionResolver;
use static_registry::federation::{Federation, Origin};
use static_registry::index::{Catalog, Descriptor, ManifestEntry, RepoIndex};
use static_registry::layout;
use static_registry::reference::{Digest, RepoName, Tag};
use static_registry::sign::public::{PublicConfig, PublicSigner};
use static_registry::store::LocalStore;
use static_registry::ui::{Ui, UiConfig};

const REPOS: usize = 10_000;
const TAGS: usize = 5_000;
const BIG: &str = "big/app";
const MT: &str = "application/vnd.oci.image.manifest.v1+json";

fn write(store: &LocalStore, key: &str, bytes: &[u8]) {
    let path = store.path_of(key).unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn digest_of(bytes: &[u8]) -> Digest {
    Digest::sha256_of(bytes)
}

/// One image: a config (with a created date and a command) and a manifest of one layer.
fn image(store: &LocalStore, n: usize) -> (Digest, u64) {
    let config = serde_json::json!({
        "created": format!("2026-{:02}-{:02}T{:02}:00:00Z", 1 + n % 12, 1 + n % 28, n % 24),
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/app", format!("--n={n}")], "Env": ["PATH=/usr/bin", "N=1"]},
        "history": [{"created_by": "COPY app /bin/app"}],
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{n:064x}")]},
    });
    let config = serde_json::to_vec(&config).unwrap();
    let cd = digest_of(&config);
    write(store, &layout::blob(&cd), &config);
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": MT,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": format!("sha256:{:064x}", n + 1), "size": 1_000_000 + n}],
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let md = digest_of(&manifest);
    write(store, &layout::manifest(&md), &manifest);
    (md, manifest.len() as u64)
}

fn store(dir: &Path) -> Arc<LocalStore> {
    let store = LocalStore::open(dir).unwrap();
    let shared = image(&store, 0);
    let mut names = Vec::new();
    for r in 0..REPOS {
        let name = RepoName::parse(&format!("team{}/service-{r}", r % 100)).unwrap();
        let mut idx = RepoIndex::new(name.clone());
        idx.tags
            .insert(Tag::parse("latest").unwrap(), descriptor(&shared));
        idx.manifests.insert(
            shared.0.clone(),
            ManifestEntry {
                media_type: MT.into(),
                size: shared.1,
            },
        );
        idx.blobs.insert(
            Digest::parse(&format!("sha256:{:064x}", r + 10_000_000)).unwrap(),
            1000 + r as u64,
        );
        write(&store, &layout::repo_index(&name), &idx.to_vec());
        names.push(name.to_string());
    }
    let big = RepoName::parse(BIG).unwrap();
    let mut idx = RepoIndex::new(big.clone());
    for t in 0..TAGS {
        let img = image(&store, t + 1);
        idx.manifests.insert(
            img.0.clone(),
            ManifestEntry {
                media_type: MT.into(),
                size: img.1,
            },
        );
        idx.tags
            .insert(Tag::parse(&format!("v{t}")).unwrap(), descriptor(&img));
    }
    write(&store, &layout::repo_index(&big), &idx.to_vec());
    names.push(BIG.into());
    names.sort();
    write(
        &store,
        layout::CATALOG,
        &serde_json::to_vec(&Catalog {
            repositories: names,
        })
        .unwrap(),
    );
    Arc::new(store)
}

fn descriptor((d, size): &(Digest, u64)) -> Descriptor {
    Descriptor {
        media_type: MT.into(),
        digest: d.clone(),
        size: *size,
        artifact_type: None,
        platform: None,
        annotations: None,
    }
}

async fn get(ui: &Ui, path: &str) -> usize {
    let (parts, _) = Request::builder()
        .uri(path)
        .header("host", "registry.test")
        .body(())
        .unwrap()
        .into_parts();
    let resp = ui.handle(&parts).await;
    assert_eq!(resp.status(), 200, "{path}");
    axum::body::to_bytes(resp.into_body(), 64 << 20)
        .await
        .unwrap()
        .len()
}

fn pages(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let store = store(dir.path());
    eprintln!(
        "wrote {REPOS} repositories and a repository of {TAGS} tags in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let origin = Origin::new(
        "local",
        Arc::new(
            PublicSigner::from_config(&PublicConfig {
                base_url: "https://cdn.test".into(),
                prefix: String::new(),
            })
            .unwrap(),
        ),
        store,
        Vec::new(),
        CacheConfig::default(),
    );
    let fed = Arc::new(
        Federation::new(
            vec![Arc::new(origin)],
            Vec::new(),
            RegionResolver::default(),
        )
        .unwrap(),
    );
    let ui = Ui::new(&UiConfig::default(), fed, None, None)
        .unwrap()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let t = Instant::now();
    rt.block_on(ui.summaries.refresh());
    eprintln!(
        "store summary ({} repositories): {:.2} s, in the background",
        REPOS + 1,
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let bytes = rt.block_on(get(&ui, &format!("/r/{BIG}")));
    eprintln!("repository of {TAGS} tags, cold (every manifest and config read once): {:.2} s, {bytes} bytes of HTML", t.elapsed().as_secs_f64());

    let mut g = c.benchmark_group("ui");
    g.sample_size(20);
    g.bench_function("catalog_10000_repositories", |b| {
        b.iter(|| rt.block_on(get(&ui, black_box("/"))))
    });
    g.bench_function("catalog_search_10000_repositories", |b| {
        b.iter(|| rt.block_on(get(&ui, black_box("/?q=service-99"))))
    });
    g.bench_function("store_page_10000_repositories", |b| {
        b.iter(|| rt.block_on(get(&ui, black_box("/store"))))
    });
    g.bench_function("repository_5000_tags_warm", |b| {
        b.iter(|| rt.block_on(get(&ui, black_box(&format!("/r/{BIG}")))))
    });
    g.finish();
}

criterion_group!(benches, pages);
criterion_main!(benches);
