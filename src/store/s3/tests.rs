//! S3 store tests: settings, locations, endpoints, the credential chain, and s3s-fs end to end.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use sha2::{Digest as _, Sha256};

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::{Attribute, ObjectStore, ObjectStoreExt, PutPayload, UpdateVersion};
use serde::Deserialize;

use super::endpoint::*;
use super::settings::*;
use super::*;
use crate::aws::Credentials;
use crate::store::{ObjectMeta, PutMode, PutOptions, Store, StoreError};

fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let m: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k: &str| m.get(k).cloned()
}

fn creds(secret: &str) -> Credentials {
    Credentials {
        access_key_id: KEY.into(),
        secret_access_key: secret.into(),
        session_token: None,
    }
}

fn opts(mode: PutMode) -> PutOptions {
    PutOptions {
        content_type: "application/json".into(),
        cache_control: crate::layout::CACHE_INDEX,
        mode,
    }
}

#[test]
fn settings_defaults_and_toml() {
    let d = S3Settings::default();
    assert_eq!(d.region, None);
    assert_eq!(d.endpoint, None);
    assert!(!d.path_style && !d.allow_http);
    assert_eq!(d.multipart_threshold, 64 * MIB);
    assert_eq!(d.part_size, 16 * MIB);
    assert_eq!(d.concurrency, 4);
    assert_eq!(d.profile, None);
    assert_eq!(d.conditional_writes, ConditionalWrites::Etag);
    d.validate().unwrap();

    // Embedded as `[s3]` in the configuration: an empty section is all defaults.
    #[derive(Deserialize)]
    struct Cfg {
        #[serde(default)]
        s3: S3Settings,
    }
    let c: Cfg = toml::from_str("[s3]\n").unwrap();
    assert_eq!(c.s3, d);
    let c: Cfg = toml::from_str(
        "[s3]\nendpoint = \"http://127.0.0.1:9000\"\npath_style = true\nregion = \"auto\"\n\
         part_size = 8388608\nconditional_writes = \"emulated\"\nprofile = \"ci\"\n",
    )
    .unwrap();
    assert!(c.s3.path_style);
    assert_eq!(c.s3.region.as_deref(), Some("auto"));
    assert_eq!(c.s3.part_size, 8 * MIB);
    assert_eq!(c.s3.concurrency, 4);
    assert_eq!(c.s3.conditional_writes, ConditionalWrites::Emulated);
    assert!(toml::from_str::<Cfg>("[s3]\npathstyle = true\n").is_err());
    assert!(toml::from_str::<Cfg>("[s3]\nconditional_writes = \"off\"\n").is_err());

    for bad in [
        S3Settings {
            part_size: MIB,
            ..S3Settings::default()
        },
        S3Settings {
            concurrency: 0,
            ..S3Settings::default()
        },
        S3Settings {
            multipart_threshold: 0,
            ..S3Settings::default()
        },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
}

#[test]
fn locations() {
    let l = S3Location::parse("s3://my-bucket").unwrap();
    assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("my-bucket", ""));
    let l = S3Location::parse("s3://my-bucket/").unwrap();
    assert_eq!(l.prefix, "");
    let l = S3Location::parse("s3://my-bucket/a/b/").unwrap();
    assert_eq!(l.prefix, "a/b");
    for bad in [
        "my-bucket",
        "s3://",
        "s3://ab",
        "s3://has/../dots",
        "s3://bucket/a//b",
        "s3://bucket?x=1",
        "s3://bu cket",
    ] {
        assert!(S3Location::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn endpoints() {
    let s = |endpoint: Option<&str>, path_style: bool| S3Settings {
        endpoint: endpoint.map(str::to_owned),
        path_style,
        ..S3Settings::default()
    };
    let e = Endpoint::resolve(&s(None, false), "bkt", "eu-west-1").unwrap();
    assert_eq!(e.bucket_url, "https://bkt.s3.eu-west-1.amazonaws.com");
    assert!(e.virtual_hosted && e.builder_url.is_none() && !e.allow_http);
    let e = Endpoint::resolve(&s(None, true), "bkt", "eu-west-1").unwrap();
    assert_eq!(e.bucket_url, "https://s3.eu-west-1.amazonaws.com/bkt");
    assert!(!e.virtual_hosted);

    let e = Endpoint::resolve(&s(Some("http://127.0.0.1:9000/"), true), "bkt", "x").unwrap();
    assert_eq!(e.builder_url.as_deref(), Some("http://127.0.0.1:9000"));
    assert_eq!(e.bucket_url, "http://127.0.0.1:9000/bkt");
    assert!(e.allow_http && !e.virtual_hosted);
    let e = Endpoint::resolve(&s(Some("https://r2.example.com"), false), "bkt", "auto").unwrap();
    assert_eq!(e.builder_url.as_deref(), Some("https://bkt.r2.example.com"));
    assert!(e.virtual_hosted);
    assert_eq!(e.display, "https://r2.example.com");

    // Plain http leaves loopback only when asked for.
    assert!(Endpoint::resolve(&s(Some("http://minio.lan:9000"), true), "bkt", "x").is_err());
    let mut lan = s(Some("http://minio.lan:9000"), true);
    lan.allow_http = true;
    assert!(Endpoint::resolve(&lan, "bkt", "x").unwrap().allow_http);
    assert!(Endpoint::resolve(&s(Some("http://[::1]:9000"), true), "bkt", "x").is_ok());
    // Never echo an endpoint that carries a secret.
    let e = Endpoint::resolve(&s(Some("https://u:hunter2@h"), true), "bkt", "x")
        .err()
        .unwrap();
    assert!(!format!("{e:#}").contains("hunter2"));
    assert!(Endpoint::resolve(&s(Some("ftp://h"), true), "bkt", "x").is_err());
    assert!(Endpoint::resolve(&s(Some("https://h/path"), true), "bkt", "x").is_err());
}

#[tokio::test]
async fn chain_selection_and_no_secrets_in_output() {
    let settings = S3Settings::default();
    let no_files = [("HOME", "/nonexistent")];
    // Environment keys.
    let env = env_of(&[
        no_files[0],
        ("AWS_ACCESS_KEY_ID", "AKIDENV"),
        ("AWS_SECRET_ACCESS_KEY", "s3cr3t-env"),
        ("AWS_REGION", "eu-central-1"),
    ]);
    let s = S3Store::build("s3://bucket/p", &settings, None, &env).unwrap();
    assert_eq!(s.credentials_origin(), "environment");
    assert_eq!(s.region(), "eu-central-1");
    let c = s.credential_source().credentials().await.unwrap();
    assert_eq!(c.secret_access_key, "s3cr3t-env");
    for shown in [format!("{s:?}"), s.describe()] {
        assert!(!shown.contains("s3cr3t-env"), "{shown}");
    }
    assert_eq!(
        s.describe(),
        "s3://bucket/p (https://s3.eu-central-1.amazonaws.com, eu-central-1)"
    );

    // Nothing static: container credentials, then instance metadata, from object_store.
    let env = env_of(&[
        no_files[0],
        ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/x"),
    ]);
    let s = S3Store::build("s3://bucket", &settings, None, &env).unwrap();
    assert_eq!(s.credentials_origin(), "container credentials (ECS)");
    assert_eq!(s.region(), "us-east-1");
    assert!(format!("{:?}", s.credential_source()).contains("ProviderSource"));
    let s = S3Store::build("s3://bucket", &settings, None, &env_of(&no_files)).unwrap();
    assert_eq!(s.credentials_origin(), "EC2 instance metadata (IMDSv2)");
    let env = env_of(&[no_files[0], ("AWS_EC2_METADATA_DISABLED", "true")]);
    assert!(S3Store::build("s3://bucket", &settings, None, &env).is_err());

    // The instance-metadata provider is wrapped, not bypassed: pointing it at a local fake
    // shows the signer gets exactly what the client would sign with.
    let imds = fake_imds().await;
    let env = env_of(&[no_files[0], ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds)]);
    let s = S3Store::build("s3://bucket", &settings, None, &env).unwrap();
    let source = s.credential_source();
    let c = source.credentials().await.unwrap();
    assert_eq!(c.access_key_id, "ASIAIMDS");
    assert_eq!(c.secret_access_key, "imds-secret");
    assert_eq!(c.session_token.as_deref(), Some("imds-token"));
    // Cached: the same Arc while the provider's credential is unchanged.
    assert!(Arc::ptr_eq(&c, &source.credentials().await.unwrap()));

    // An unusable AWS_CA_BUNDLE is ignored, not fatal.
    let env = env_of(&[
        no_files[0],
        ("AWS_CA_BUNDLE", "/nonexistent/ca.pem"),
        ("AWS_ACCESS_KEY_ID", "A"),
        ("AWS_SECRET_ACCESS_KEY", "B"),
    ]);
    S3Store::build("s3://bucket", &settings, None, &env).unwrap();
}

/// A minimal IMDSv2: token, role name, role credentials.
async fn fake_imds() -> String {
    use axum::routing::{get, put};
    let app = axum::Router::new()
        .route("/latest/api/token", put(|| async { "imds-session-token" }))
        .route(
            "/latest/meta-data/iam/security-credentials/",
            get(|| async { "the-role" }),
        )
        .route(
            "/latest/meta-data/iam/security-credentials/the-role",
            get(|| async {
                axum::Json(serde_json::json!({
                    "Code": "Success",
                    "AccessKeyId": "ASIAIMDS",
                    "SecretAccessKey": "imds-secret",
                    "Token": "imds-token",
                    "Expiration": "2099-01-01T00:00:00Z",
                }))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

// ---- against a real s3s-fs ------------------------------------------------------------

const KEY: &str = "AKIDS3SFS";
const SECRET: &str = "s3s-fs-secret-key";

/// A running `s3s-fs`, killed (by its own handle) when dropped.
struct S3sFs {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for S3sFs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn s3s_fs_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("s3s-fs"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|c| c.join("bin").join("s3s-fs"));
    on_path
        .into_iter()
        .chain(cargo_bin)
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "s3s-fs is not installed (looked on PATH and in ~/.cargo/bin); the S3 \
                 store tests need it: \
                 cargo install s3s-fs --version 0.14.1 --locked --features binary"
            )
        })
}

async fn start_s3s_fs(bucket: &str) -> S3sFs {
    let bin = s3s_fs_binary();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join(bucket)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = std::fs::File::create(dir.path().join("s3s-fs.log")).unwrap();
    let mut child = Command::new(bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", KEY, "--secret-key", SECRET])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("cannot start s3s-fs");
    for _ in 0..200 {
        if let Some(status) = child.try_wait().unwrap() {
            let log = std::fs::read_to_string(dir.path().join("s3s-fs.log")).unwrap();
            panic!("s3s-fs exited with {status}: {log}");
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return S3sFs { child, port, dir };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("s3s-fs did not start listening on port {port}");
}

fn s3s_settings(srv: &S3sFs) -> S3Settings {
    S3Settings {
        region: Some("us-east-1".into()),
        endpoint: Some(format!("http://127.0.0.1:{}", srv.port)),
        path_style: true,
        multipart_threshold: 5 * MIB,
        part_size: 5 * MIB,
        concurrency: 2,
        ..S3Settings::default()
    }
}

/// Deterministic, incompressible-looking bytes (xorshift), so a misplaced part would show.
fn pseudo_random(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

#[tokio::test]
async fn against_s3s_fs() {
    let srv = start_s3s_fs("registry-test").await;
    let settings = s3s_settings(&srv);
    let store =
        S3Store::with_credentials("s3://registry-test/some/prefix", &settings, creds(SECRET))
            .unwrap();
    assert_eq!(
        store.describe(),
        format!(
            "s3://registry-test/some/prefix (http://127.0.0.1:{}, us-east-1)",
            srv.port
        )
    );
    let c = store.credential_source().credentials().await.unwrap();
    assert_eq!(c.access_key_id, KEY);

    // Missing objects.
    let k = "repositories/a/_index.json";
    assert!(store.get(k).await.unwrap().is_none());
    assert!(store.head(k).await.unwrap().is_none());
    store.delete(k).await.unwrap();

    // Create, then Create again: 412 -> Conflict.
    store
        .put(k, Bytes::from_static(b"v1"), &opts(PutMode::Create))
        .await
        .unwrap();
    assert!(matches!(
        store
            .put(k, Bytes::from_static(b"x"), &opts(PutMode::Create))
            .await,
        Err(StoreError::Conflict)
    ));
    let v1 = store.get(k).await.unwrap().unwrap();
    assert_eq!(&v1.bytes[..], b"v1");
    assert!(!v1.version.0.is_empty(), "s3s-fs returns ETags");
    // Update with the current ETag, then with the now stale one.
    store
        .put(
            k,
            Bytes::from_static(b"v2"),
            &opts(PutMode::Update(v1.version.clone())),
        )
        .await
        .unwrap();
    assert!(matches!(
        store
            .put(
                k,
                Bytes::from_static(b"v3"),
                &opts(PutMode::Update(v1.version.clone()))
            )
            .await,
        Err(StoreError::Conflict)
    ));
    let v2 = store.get(k).await.unwrap().unwrap();
    assert_eq!(&v2.bytes[..], b"v2");
    assert_ne!(v1.version, v2.version);
    // Update of an object that does not exist is a conflict too (the index was deleted).
    assert!(matches!(
        store
            .put(
                "repositories/none/_index.json",
                Bytes::from_static(b"x"),
                &opts(PutMode::Update(v2.version.clone()))
            )
            .await,
        Err(StoreError::Conflict)
    ));
    // What s3s-fs actually answers, beneath the mapping: 412 for both preconditions.
    let raw = store
        .inner
        .put_opts(
            &store.path(k).unwrap(),
            PutPayload::from_static(b"x"),
            object_store::PutMode::Create.into(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&raw, object_store::Error::AlreadyExists { source, .. }
            if format!("{source:?}").contains("412")),
        "{raw:?}"
    );
    let raw = store
        .inner
        .put_opts(
            &store.path(k).unwrap(),
            PutPayload::from_static(b"x"),
            object_store::PutMode::Update(UpdateVersion {
                e_tag: Some(v1.version.0.clone()),
                version: None,
            })
            .into(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&raw, object_store::Error::Precondition { source, .. }
            if format!("{source:?}").contains("412")),
        "{raw:?}"
    );
    let meta = store.head(k).await.unwrap().unwrap();
    assert_eq!((meta.key.as_str(), meta.size), (k, 2));
    assert!(meta.last_modified.is_some());

    // Object metadata round-trips on a plain GET; Content-Encoding is never set.
    let got = store.inner.get(&store.path(k).unwrap()).await.unwrap();
    assert_eq!(
        got.attributes
            .get(&Attribute::ContentType)
            .map(|v| v.as_ref()),
        Some("application/json")
    );
    assert_eq!(
        got.attributes
            .get(&Attribute::CacheControl)
            .map(|v| v.as_ref()),
        Some(crate::layout::CACHE_INDEX)
    );
    assert!(got.attributes.get(&Attribute::ContentEncoding).is_none());

    // put_file above the threshold: multipart, 4 parts of 5 MiB (2 at a time).
    let data = pseudo_random(20 * MIB as usize);
    let want = hex::encode(Sha256::digest(&data));
    let staged = srv.dir.path().join("staged-blob");
    std::fs::write(&staged, &data).unwrap();
    let blob = format!("blobs/sha256/{want}");
    let blob_opts = PutOptions {
        content_type: crate::layout::BLOB_CONTENT_TYPE.into(),
        cache_control: crate::layout::CACHE_IMMUTABLE,
        mode: PutMode::Overwrite,
    };
    store.put_file(&blob, &staged, &blob_opts).await.unwrap();
    assert!(!staged.exists(), "put_file consumes the staged file");
    assert_eq!(
        store.head(&blob).await.unwrap().unwrap().size,
        data.len() as u64
    );
    let got = store.inner.get(&store.path(&blob).unwrap()).await.unwrap();
    let etag = got.meta.e_tag.clone().unwrap_or_default();
    assert_eq!(
        got.attributes
            .get(&Attribute::CacheControl)
            .map(|v| v.as_ref()),
        Some(crate::layout::CACHE_IMMUTABLE)
    );
    assert_eq!(
        got.attributes
            .get(&Attribute::ContentType)
            .map(|v| v.as_ref()),
        Some(crate::layout::BLOB_CONTENT_TYPE)
    );
    let bytes = got.bytes().await.unwrap();
    assert_eq!(hex::encode(Sha256::digest(&bytes)), want);
    // The same through the streaming read.
    let mut stream = store.get_stream(&blob).await.unwrap().unwrap();
    let mut streamed = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut streamed)
        .await
        .unwrap();
    assert_eq!(hex::encode(Sha256::digest(&streamed)), want);
    assert!(store.get_stream("blobs/none").await.unwrap().is_none());
    // A multipart object's ETag is `"<md5 of part md5s>-<parts>"`.
    assert!(etag.ends_with("-4\""), "multipart ETag {etag}");

    // Concurrent multipart uploads share the budget and the buffer pool, which is emptied
    // once the last one ends.
    let (a, b) = (
        pseudo_random(11 * MIB as usize),
        pseudo_random(7 * MIB as usize + 3),
    );
    let (pa, pb) = (srv.dir.path().join("a"), srv.dir.path().join("b"));
    std::fs::write(&pa, &a).unwrap();
    std::fs::write(&pb, &b).unwrap();
    let (ra, rb) = tokio::join!(
        store.put_file("blobs/a", &pa, &blob_opts),
        store.put_file("blobs/b", &pb, &blob_opts)
    );
    ra.unwrap();
    rb.unwrap();
    for (k, want) in [("blobs/a", &a), ("blobs/b", &b)] {
        assert_eq!(
            &store.get(k).await.unwrap().unwrap().bytes[..],
            &want[..],
            "{k}"
        );
    }
    assert!(store.parts.free.lock().unwrap().is_empty());
    assert_eq!(store.parts.active.load(Ordering::Acquire), 0);
    store.delete("blobs/a").await.unwrap();
    store.delete("blobs/b").await.unwrap();

    // put_file below the threshold: a single PUT, with the mode honoured.
    let small = srv.dir.path().join("small");
    std::fs::write(&small, b"manifest").unwrap();
    store
        .put_file("manifests/sha256/abc", &small, &opts(PutMode::Create))
        .await
        .unwrap();
    std::fs::write(&small, b"manifest").unwrap();
    assert!(matches!(
        store
            .put_file("manifests/sha256/abc", &small, &opts(PutMode::Create))
            .await,
        Err(StoreError::Conflict)
    ));
    // Above the threshold, Update cannot be atomic and is refused.
    std::fs::write(&staged, &data[..6 * MIB as usize]).unwrap();
    let e = store
        .put_file(&blob, &staged, &opts(PutMode::Update(v2.version.clone())))
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("multipart_threshold"), "{e:#}");

    // list: string prefixes, keys relative to the store prefix, sorted.
    store
        .put(
            "repositories/ab/_index.json",
            Bytes::from_static(b"{}"),
            &opts(PutMode::Overwrite),
        )
        .await
        .unwrap();
    let keys = |v: Vec<ObjectMeta>| v.into_iter().map(|m| m.key).collect::<Vec<_>>();
    assert_eq!(
        keys(store.list("repositories/").await.unwrap()),
        ["repositories/a/_index.json", "repositories/ab/_index.json"]
    );
    assert_eq!(
        keys(store.list("repositories/a").await.unwrap()).len(),
        2,
        "a string prefix, not a directory"
    );
    assert_eq!(keys(store.list("").await.unwrap()).len(), 4);
    // Another prefix in the same bucket sees nothing of this one.
    let other =
        S3Store::with_credentials("s3://registry-test/some/prefix2", &settings, creds(SECRET))
            .unwrap();
    assert!(other.list("").await.unwrap().is_empty());
    assert!(other.get(k).await.unwrap().is_none());

    // delete, and delete again.
    store.delete(k).await.unwrap();
    assert!(store.head(k).await.unwrap().is_none());
    store.delete(k).await.unwrap();

    // s3s-fs checks signatures: a wrong secret is refused, and the error does not echo it.
    let bad = S3Store::with_credentials(
        "s3://registry-test/some/prefix",
        &settings,
        creds("wrong-secret-value"),
    )
    .unwrap();
    let e = bad.get(&blob).await.unwrap_err();
    assert!(!format!("{e:#} {e:?}").contains("wrong-secret-value"));
}

#[tokio::test]
async fn emulated_conditional_writes_against_s3s_fs() {
    let srv = start_s3s_fs("registry-emulated").await;
    let settings = S3Settings {
        conditional_writes: ConditionalWrites::Emulated,
        ..s3s_settings(&srv)
    };
    let store =
        S3Store::with_credentials("s3://registry-emulated", &settings, creds(SECRET)).unwrap();
    let k = "_catalog.json";
    store
        .put(k, Bytes::from_static(b"1"), &opts(PutMode::Create))
        .await
        .unwrap();
    assert!(matches!(
        store
            .put(k, Bytes::from_static(b"2"), &opts(PutMode::Create))
            .await,
        Err(StoreError::Conflict)
    ));
    let v = store.get(k).await.unwrap().unwrap().version;
    store
        .put(
            k,
            Bytes::from_static(b"2"),
            &opts(PutMode::Update(v.clone())),
        )
        .await
        .unwrap();
    assert!(matches!(
        store
            .put(k, Bytes::from_static(b"3"), &opts(PutMode::Update(v)))
            .await,
        Err(StoreError::Conflict)
    ));
}

fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Peak RSS of a 1 GiB `put_file` with the default settings. Run alone:
/// `cargo test --bin static-registry store::s3::tests::rss_of_1gib -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "uploads 1 GiB; run explicitly to measure"]
async fn rss_of_1gib_put_file() {
    let srv = start_s3s_fs("registry-rss").await;
    let settings = S3Settings {
        multipart_threshold: S3Settings::default().multipart_threshold,
        part_size: S3Settings::default().part_size,
        concurrency: S3Settings::default().concurrency,
        ..s3s_settings(&srv)
    };
    let store = S3Store::with_credentials("s3://registry-rss", &settings, creds(SECRET)).unwrap();
    let staged = srv.dir.path().join("big");
    std::fs::File::create(&staged)
        .unwrap()
        .set_len(1024 * MIB)
        .unwrap();
    let before = vm_hwm_kib();
    // Reset the high-water mark (Linux >= 4.0) so only the upload counts.
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let baseline = vm_hwm_kib();
    let started = std::time::Instant::now();
    let opts = PutOptions {
        content_type: crate::layout::BLOB_CONTENT_TYPE.into(),
        cache_control: crate::layout::CACHE_IMMUTABLE,
        mode: PutMode::Overwrite,
    };
    store.put_file("blobs/big", &staged, &opts).await.unwrap();
    let peak = vm_hwm_kib();
    eprintln!(
        "1 GiB put_file: VmHWM before {} MiB, after reset {} MiB, peak during upload {} MiB \
         (+{} MiB), {:.1} s",
        before / 1024,
        baseline / 1024,
        peak / 1024,
        peak.saturating_sub(baseline) / 1024,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        store.head("blobs/big").await.unwrap().unwrap().size,
        1024 * MIB
    );
    assert!(peak < 100 * 1024, "peak RSS {} MiB", peak / 1024);
}
