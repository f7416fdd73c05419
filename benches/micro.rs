//! Micro-benchmarks of the per-request hot path (docs/performance.md).
//!
//!   cargo bench --bench micro               # everything
//!   cargo bench --bench micro -- sign/      # one group (criterion's filter)
//!
//! What a blob redirect costs, piece by piece: parsing the path (`reference`, `route`), choosing
//! the origin (`federation`), finding the digest in the cached repository index (`index`),
//! signing the URL (`sign`), and the whole request through the router (`request`).

use std::hint::black_box;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{Method as HttpMethod, Request};
use criterion::{criterion_group, criterion_main, Criterion};
use tower::ServiceExt;

use static_registry::aws::Credentials;
use static_registry::federation::cache::CacheConfig;
use static_registry::federation::region::{CidrTable, RegionResolver};
use static_registry::federation::{Federation, Origin};
use static_registry::index::{Descriptor, ManifestEntry, RepoIndex};
use static_registry::layout;
use static_registry::reference::{Digest, ManifestRef, RepoName, Tag};
use static_registry::serve::client_limits::{ClientLimits, ClientLimitsConfig};
use static_registry::serve::route::V2Route;
use static_registry::serve::{self, AppState};
use static_registry::sign::azure_sas::AzureSasSigner;
use static_registry::sign::cloudfront::{
    CloudFrontConfig, CloudFrontSigner, HashAlgorithm, PolicyMode,
};
use static_registry::sign::gcs_v4::{Credential, GcsSigner, Target, UrlStyle};
use static_registry::sign::hmac_token::{HmacTokenConfig, HmacTokenSigner};
use static_registry::sign::public::{PublicConfig, PublicSigner};
use static_registry::sign::secure_link::{SecureLinkConfig, SecureLinkSigner};
use static_registry::sign::sigv4::{SigV4Config, SigV4Signer};
use static_registry::sign::{Method, SignRequest, Signer};
use static_registry::store::LocalStore;

const DIGEST: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const REPO: &str = "team/platform/app-server";
const BLOBS_PER_REPO: usize = 1000;

fn blob_key() -> String {
    layout::blob(&Digest::parse(DIGEST).unwrap())
}

fn request(key: &str) -> SignRequest<'_> {
    SignRequest {
        method: Method::Get,
        key,
        content_type: layout::BLOB_CONTENT_TYPE,
        ttl: Duration::from_secs(300),
    }
}

fn sigv4() -> SigV4Signer {
    let cfg = SigV4Config {
        endpoint: url::Url::parse("https://s3.eu-west-1.amazonaws.com").unwrap(),
        bucket: "my-registry-bucket".into(),
        prefix: "registry".into(),
        region: "eu-west-1".into(),
        path_style: false,
        service: "s3".into(),
    };
    let creds = Credentials {
        access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
        secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
        session_token: None,
    };
    SigV4Signer::with_credentials(cfg, creds).unwrap()
}

/// The n-th synthetic digest (distinct, valid).
fn digest(n: usize) -> Digest {
    Digest::parse(&format!("sha256:{n:064x}")).unwrap()
}

/// A repository index the size of a busy repository: 50 tags, 200 manifests, 1000 blobs; the
/// benchmarked digest is one of the blobs.
fn big_index() -> RepoIndex {
    let mut idx = RepoIndex::new(RepoName::parse(REPO).unwrap());
    for n in 0..200 {
        let d = digest(n + 1_000_000);
        idx.manifests.insert(
            d.clone(),
            ManifestEntry {
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                size: 1234,
            },
        );
        if n < 50 {
            idx.tags.insert(
                Tag::parse(&format!("1.{n}")).unwrap(),
                Descriptor {
                    media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                    digest: d,
                    size: 1234,
                    artifact_type: None,
                    platform: None,
                    annotations: None,
                },
            );
        }
    }
    for n in 0..BLOBS_PER_REPO - 1 {
        idx.blobs.insert(digest(n), 4096);
    }
    idx.blobs.insert(Digest::parse(DIGEST).unwrap(), 4096);
    idx
}

/// A federation of one origin (S3 signer) over a local store holding `big_index()`, and of two
/// more origins behind prefix routes, as a federated configuration has.
fn federation(dir: &Path) -> Arc<Federation> {
    let store = Arc::new(LocalStore::open(dir).unwrap());
    let idx = big_index();
    let key = store.path_of(&layout::repo_index(&idx.name)).unwrap();
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    std::fs::write(key, idx.to_vec()).unwrap();
    let origin = |name: &str| {
        Arc::new(Origin::new(
            name,
            Arc::new(sigv4()),
            store.clone(),
            Vec::new(),
            CacheConfig::default(),
        ))
    };
    let routes = vec![
        ("mirror/".to_owned(), vec![1, 0]),
        ("team/special/".to_owned(), vec![2]),
        (String::new(), vec![0, 1]),
    ];
    Arc::new(
        Federation::new(
            vec![origin("s3"), origin("b"), origin("c")],
            routes,
            RegionResolver::default(),
        )
        .unwrap(),
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn reference(c: &mut Criterion) {
    let mut g = c.benchmark_group("reference");
    g.bench_function("repo_name", |b| {
        b.iter(|| RepoName::parse(black_box(REPO)).unwrap())
    });
    g.bench_function("digest", |b| {
        b.iter(|| Digest::parse(black_box(DIGEST)).unwrap())
    });
    g.bench_function("tag", |b| {
        b.iter(|| Tag::parse(black_box("1.25.3-alpine")).unwrap())
    });
    g.bench_function("manifest_ref", |b| {
        b.iter(|| ManifestRef::parse(black_box("1.25.3-alpine")).unwrap())
    });
    g.finish();
}

fn route(c: &mut Criterion) {
    let blob = format!("/v2/{REPO}/blobs/{DIGEST}");
    let manifest = format!("/v2/{REPO}/manifests/1.25.3-alpine");
    let mut g = c.benchmark_group("route");
    g.bench_function("parse_blob", |b| {
        b.iter(|| V2Route::parse(black_box(&blob)).unwrap())
    });
    g.bench_function("parse_manifest_tag", |b| {
        b.iter(|| V2Route::parse(black_box(&manifest)).unwrap())
    });
    let dir = tempfile::tempdir().unwrap();
    let fed = federation(dir.path());
    let name = RepoName::parse(REPO).unwrap();
    g.bench_function("federation_pick", |b| {
        b.iter(|| fed.pick(black_box(Some(&name)), None).name.len())
    });

    // A region table of 50 000 IPv4 /24s plus nested /16s and IPv6 ranges (src/federation/region.rs).
    let mut table = CidrTable::default();
    for i in 0..50_000u32 {
        let ip = std::net::Ipv4Addr::from(0x0a00_0000 + (i << 8));
        table.insert(&format!("{ip}/24"), "eu").unwrap();
    }
    for i in 0..200u32 {
        table.insert(&format!("11.{i}.0.0/16"), "us").unwrap();
        table.insert(&format!("2001:db8:{i:x}::/48"), "v6").unwrap();
    }
    let hit: std::net::IpAddr = "10.0.77.9".parse().unwrap();
    g.bench_function("cidr_lookup_50k", |b| {
        b.iter(|| table.lookup(black_box(hit)).map(str::len))
    });
    g.finish();
}

fn sign(c: &mut Criterion) {
    let key = blob_key();
    let now = SystemTime::now();
    let mut g = c.benchmark_group("sign");

    let s3 = sigv4();
    g.bench_function("sigv4_presign", |b| {
        b.iter(|| s3.sign(black_box(&request(&key)), now))
    });

    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/sign");
    let pem = std::fs::read_to_string(format!("{data}/test-only-rsa2048.pkcs1.pem")).unwrap();
    let cf = |policy| CloudFrontConfig {
        base_url: "https://d111111abcdef8.cloudfront.net".into(),
        prefix: "registry".into(),
        key_pair_id: "K2JCJMDEHXQW5F".into(),
        private_key_file: None,
        private_key_env: None,
        policy,
        window_secs: None,
        hash_algorithm: HashAlgorithm::Sha1,
    };
    let wildcard = CloudFrontSigner::with_pem(&cf(PolicyMode::Wildcard), &pem).unwrap();
    g.bench_function("cloudfront_wildcard_amortised", |b| {
        b.iter(|| wildcard.sign(black_box(&request(&key)), now))
    });

    let link = SecureLinkSigner::with_secret(
        &SecureLinkConfig {
            base_url: "https://edge.example.com".into(),
            prefix: "registry".into(),
            secret_file: None,
            secret_env: None,
            template: "$secure_link_expires$uri SECRET".into(),
            md5_param: "md5".into(),
            expires_param: "expires".into(),
            content_type_param: None,
        },
        "edge-secret".into(),
    )
    .unwrap();
    g.bench_function("secure_link", |b| {
        b.iter(|| link.sign(black_box(&request(&key)), now))
    });

    let token_cfg: HmacTokenConfig = toml::from_str(
        "base_url = \"https://edge.example.com\"\nprefix = \"registry\"\nkey_env = \"UNUSED\"\n",
    )
    .unwrap();
    let token = HmacTokenSigner::with_hex_key(&token_cfg, &"ab".repeat(32)).unwrap();
    g.bench_function("hmac_token", |b| {
        b.iter(|| token.sign(black_box(&request(&key)), now))
    });

    let public = PublicSigner::from_config(&PublicConfig {
        base_url: "https://cdn.example.com".into(),
        prefix: "registry".into(),
    })
    .unwrap();
    g.bench_function("public", |b| {
        b.iter(|| public.sign(black_box(&request(&key)), now))
    });

    let gcs_target = || {
        Target::new(
            "https://storage.googleapis.com",
            "reg-bucket",
            "registry",
            UrlStyle::Path,
        )
        .unwrap()
    };
    let gcs_hmac = GcsSigner::new(
        gcs_target(),
        Credential::hmac(
            "GOOG1EXAMPLEACCESSID",
            "bGoa+V7g/yqDXvKRqq+JTFn4uQZbPiQJo4pf9RzJ",
        ),
    );
    g.bench_function("gcs_hmac", |b| {
        b.iter(|| gcs_hmac.sign(black_box(&request(&key)), now))
    });
    // One HMAC-SHA256 per URL with the account key (no wildcard form to amortise, none needed).
    let sas = AzureSasSigner::new(
        "registryaccount",
        "images",
        "registry",
        "https://registryaccount.blob.core.windows.net",
        vec![7u8; 64],
    )
    .unwrap();
    g.bench_function("azure_sas", |b| {
        b.iter(|| sas.sign(black_box(&request(&key)), now))
    });
    g.finish();

    // One RSA-2048 signature per URL: why `wildcard` is the default (few samples: ~ms each).
    let mut g = c.benchmark_group("sign_slow");
    g.sample_size(10);
    let canned = CloudFrontSigner::with_pem(&cf(PolicyMode::Canned), &pem).unwrap();
    g.bench_function("cloudfront_canned_rsa", |b| {
        b.iter(|| canned.sign(black_box(&request(&key)), now))
    });
    // GCS has no wildcard form: with a service-account key, every URL is an RSA signature.
    let sa = std::fs::read_to_string(format!(
        "{}/tests/data/gcs-v4/test_service_account.not-a-test.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let gcs_rsa = GcsSigner::new(
        gcs_target(),
        Credential::from_service_account_json(&sa).unwrap(),
    );
    g.bench_function("gcs_rsa", |b| {
        b.iter(|| gcs_rsa.sign(black_box(&request(&key)), now))
    });
    g.finish();
}

fn index(c: &mut Criterion) {
    let idx = big_index();
    let d = Digest::parse(DIGEST).unwrap();
    let tag = Tag::parse("1.42").unwrap();
    let mut g = c.benchmark_group("index");
    g.bench_function("blob_lookup_1000", |b| {
        b.iter(|| idx.blobs.get(black_box(&d)).copied())
    });
    g.bench_function("tag_lookup_50", |b| {
        b.iter(|| idx.tags.get(black_box(&tag)).map(|t| t.size))
    });

    // The cached document as a request sees it: the key, then moka.
    let dir = tempfile::tempdir().unwrap();
    let fed = federation(dir.path());
    let name = RepoName::parse(REPO).unwrap();
    let origin = fed.pick(Some(&name), None).clone();
    let key = layout::repo_index(&name);
    let rt = runtime();
    rt.block_on(origin.repos.get(&key)).unwrap(); // the one load from the store
    g.bench_function("cache_get", |b| {
        b.iter(|| rt.block_on(origin.repos.get(black_box(&key))).is_ok())
    });
    g.bench_function("cache_get_with_key", |b| {
        b.iter(|| {
            let key = layout::repo_index(black_box(&name));
            rt.block_on(origin.repos.get(&key)).is_ok()
        })
    });
    g.finish();
}

/// A whole request through the router, as the listener hands it over: routing, the index,
/// signing, headers, metrics (the Prometheus recorder installed, as `serve` does). Measured with
/// every answer made afresh, and with repeats within a second re-used (`recent_answers`).
fn request_path(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let federation = federation(dir.path());
    let app_with = |reuse_answers: bool, client_limits| {
        serve::router(Arc::new(AppState {
            federation: federation.clone(),
            url_ttl: Duration::from_secs(300),
            embedded: None,
            auth: None,
            trust_forwarded: false,
            tls: false,
            access_log: false,
            request_timeout: Duration::from_secs(30),
            reuse_answers,
            client_limits,
            mirror: None,
            ui: None,
            cors: None,
            checks: Default::default(),
        }))
    };
    let app = |reuse_answers: bool| app_with(reuse_answers, None);
    serve::metrics::install();
    let rt = runtime();
    let call_from =
        |app: &axum::Router, method: HttpMethod, path: &str, peer: Option<SocketAddr>| {
            let mut req = Request::builder()
                .method(method)
                .uri(path)
                .header("host", "registry.example.com");
            if let Some(peer) = peer {
                req = req.extension(axum::extract::ConnectInfo(peer));
            }
            let req = req.body(Body::empty()).unwrap();
            let resp = rt.block_on(app.clone().oneshot(req)).unwrap();
            assert!(resp.status().is_success() || resp.status().is_redirection());
            resp
        };
    let call =
        |app: &axum::Router, method: HttpMethod, path: &str| call_from(app, method, path, None);
    let blob = format!("/v2/{REPO}/blobs/{DIGEST}");
    let manifest = format!("/v2/{REPO}/manifests/1.42");
    let mut g = c.benchmark_group("request");
    for (reuse, suffix) in [(false, ""), (true, "_reused")] {
        let app = app(reuse);
        call(&app, HttpMethod::GET, &blob); // loads the index
        g.bench_function(format!("blob_get_307{suffix}"), |b| {
            b.iter(|| call(&app, HttpMethod::GET, &blob))
        });
        g.bench_function(format!("manifest_head_200{suffix}"), |b| {
            b.iter(|| call(&app, HttpMethod::HEAD, &manifest))
        });
    }
    // Per-client limits on (a rate no request reaches), against the same request with a peer
    // address and no limits: the cost of the bucket lookup.
    let peer: SocketAddr = ([192, 0, 2, 7], 40000).into();
    let limits = ClientLimitsConfig {
        api_rate: 1e9,
        api_burst: Some(u32::MAX),
        ..Default::default()
    };
    for (limited, suffix) in [(false, "_reused_peer"), (true, "_reused_limited")] {
        let limits = limited.then(|| ClientLimits::new(&limits).unwrap().unwrap());
        let app = app_with(true, limits);
        call_from(&app, HttpMethod::GET, &blob, Some(peer));
        g.bench_function(format!("blob_get_307{suffix}"), |b| {
            b.iter(|| call_from(&app, HttpMethod::GET, &blob, Some(peer)))
        });
    }
    g.finish();
}

criterion_group!(benches, reference, route, sign, index, request_path);
criterion_main!(benches);
