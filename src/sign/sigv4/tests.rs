//! SigV4 signer tests: AWS's published vectors, rusty-s3 as an oracle, key caching, rotation.

use super::key_cache::*;
use super::presign::*;
use super::*;
use crate::sign::Method;
use std::sync::Mutex;
use std::time::Duration;

const AK: &str = "AKIAIOSFODNN7EXAMPLE";
const SK: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
/// Fri, 24 May 2013 00:00:00 GMT.
const T2013: u64 = 1_369_353_600;
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn creds(token: Option<&str>) -> Credentials {
    Credentials {
        access_key_id: AK.into(),
        secret_access_key: SK.into(),
        session_token: token.map(Into::into),
    }
}

fn cfg(endpoint: &str, bucket: &str, prefix: &str, path_style: bool) -> SigV4Config {
    SigV4Config {
        endpoint: endpoint.parse().unwrap(),
        bucket: bucket.into(),
        prefix: prefix.into(),
        region: "us-east-1".into(),
        path_style,
        service: "s3".into(),
    }
}

#[test]
fn aws_presigned_url_vector() {
    // "Authenticating Requests: Using Query Parameters (AWS Signature Version 4)", S3 docs.
    let s = SigV4Signer::with_credentials(
        cfg("https://s3.amazonaws.com", "examplebucket", "", false),
        creds(None),
    )
    .unwrap();
    let url = s.sign_at(Method::Get, "test.txt", "", 86400, T2013);
    assert_eq!(
        url,
        "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256\
         &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
         &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\
         &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
    );
}

#[test]
fn aws_signing_key_vector() {
    // "Deriving the signing key" (SigV4), AWS IAM docs.
    let k = signing_key(
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        "20150830",
        "us-east-1",
        "iam",
    );
    assert_eq!(
        hex::encode(k),
        "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"
    );
}

#[test]
fn dates() {
    assert_eq!(&yyyymmdd(day_of(T2013)), b"20130524");
    assert_eq!(&yyyymmdd(0), b"19700101");
    // Leap day, and the day after.
    assert_eq!(&yyyymmdd(day_of(951_782_400)), b"20000229");
    assert_eq!(&yyyymmdd(day_of(951_868_800)), b"20000301");
    assert_eq!(&yyyymmdd(day_of(4_102_444_799)), b"20991231");
    assert_eq!(
        &amz_date(&yyyymmdd(day_of(1_700_000_000)), 1_700_000_000),
        b"20231114T221320Z"
    );
    // Cross-check a spread of days against jiff.
    for day in (0..40_000).step_by(37) {
        let ts = jiff::Timestamp::from_second(day as i64 * 86_400 + 12_345).unwrap();
        let want = ts.strftime("%Y%m%dT%H%M%SZ").to_string();
        let got = amz_date(&yyyymmdd(day), day * 86_400 + 12_345);
        assert_eq!(std::str::from_utf8(&got).unwrap(), want);
    }
}

#[test]
fn encoding() {
    let mut s = String::new();
    push_u64(&mut s, 0);
    push_u64(&mut s, 604_800);
    assert_eq!(s, "0604800");
}

/// The same URL from rusty-s3, an independent implementation.
fn rusty(
    c: &SigV4Config,
    cr: &Credentials,
    method: Method,
    key: &str,
    ct: &str,
    ttl: u64,
    now: u64,
) -> String {
    use rusty_s3::{Bucket, S3Action, UrlStyle};
    let style = if c.path_style {
        UrlStyle::Path
    } else {
        UrlStyle::VirtualHost
    };
    let bucket = Bucket::new(
        c.endpoint.clone(),
        style,
        c.bucket.clone(),
        c.region.clone(),
    )
    .unwrap();
    let rc = match &cr.session_token {
        Some(t) => {
            rusty_s3::Credentials::new_with_token(&cr.access_key_id, &cr.secret_access_key, t)
        }
        None => rusty_s3::Credentials::new(&cr.access_key_id, &cr.secret_access_key),
    };
    let object = if c.prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{}/{key}", c.prefix)
    };
    let at = jiff::Timestamp::from_second(now as i64).unwrap();
    let ttl = Duration::from_secs(ttl);
    let url = match method {
        Method::Get => {
            let mut a = bucket.get_object(Some(&rc), &object);
            if !ct.is_empty() {
                a.query_mut().insert("response-content-type", ct);
            }
            a.sign_with_time(ttl, &at)
        }
        Method::Head => {
            let mut a = bucket.head_object(Some(&rc), &object);
            if !ct.is_empty() {
                a.query_mut().insert("response-content-type", ct);
            }
            a.sign_with_time(ttl, &at)
        }
    };
    url.to_string()
}

#[test]
fn agrees_with_rusty_s3() {
    let hex = "a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4";
    let blob = format!("blobs/sha256/{hex}");
    let manifest = format!("manifests/sha256/{hex}");
    let keys = [
        blob.as_str(),
        manifest.as_str(),
        "repositories/a/b/_tags.json",
        "repositories/library/alpine/_manifests/3.20",
        "_catalog.json",
        // Not a layout key, but exercises the encoder against rusty-s3's.
        "odd key/with spaces+plus=eq&amp;ü~",
    ];
    let cts = [
        "",
        OCI_MANIFEST,
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/octet-stream",
        "application/json; charset=utf-8",
    ];
    let configs = [
        cfg("https://s3.us-east-1.amazonaws.com", "my-bucket", "", false),
        cfg(
            "https://s3.us-east-1.amazonaws.com",
            "my-bucket",
            "reg/v1",
            false,
        ),
        cfg("http://127.0.0.1:9000", "bucketname", "", true),
        cfg("http://127.0.0.1:9000", "bucketname", "root", true),
        cfg("https://minio.example:8443/s3", "b-1", "x", true),
        cfg("https://storage.example", "b-1", "", false),
    ];
    let token = "FQoGZXIvYXdzEJr//////////wEaDH+tok/en=with+specials";
    let times = [T2013, 1_700_000_000, 1_767_225_599, 1_767_225_600];
    let mut n = 0;
    for c in &configs {
        for tok in [None, Some(token)] {
            let cr = creds(tok);
            let s = SigV4Signer::with_credentials(c.clone(), cr.clone()).unwrap();
            for (i, key) in keys.iter().enumerate() {
                for method in [Method::Get, Method::Head] {
                    let ct = cts[(i + n) % cts.len()];
                    let now = times[n % times.len()];
                    let ttl = [1, 300, 3600, 604_800][n % 4];
                    let ours = s.sign_at(method, key, ct, ttl, now);
                    let theirs = rusty(c, &cr, method, key, ct, ttl, now);
                    assert_eq!(ours, theirs, "{c:?} {method:?} {key} {ct}");
                    n += 1;
                }
            }
        }
    }
    assert!(n >= 100);
}

#[test]
fn request_shape() {
    let s = SigV4Signer::with_credentials(
        cfg("http://127.0.0.1:9000/", "bucketname", "/root/", true),
        creds(Some("tok/en")),
    )
    .unwrap();
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(T2013 + 3723);
    let req = SignRequest {
        method: Method::Head,
        key: "manifests/sha256/abc",
        content_type: OCI_MANIFEST,
        ttl: Duration::from_secs(10_000_000),
    };
    let url = s.sign(&req, now);
    assert!(
        url.starts_with("http://127.0.0.1:9000/bucketname/root/manifests/sha256/abc?"),
        "{url}"
    );
    assert!(url.contains("&X-Amz-Date=20130524T010203Z&X-Amz-Expires=604800&"));
    assert!(url.contains("&X-Amz-Security-Token=tok%2Fen&X-Amz-SignedHeaders=host&"));
    assert!(url.contains(
        "&response-content-type=application%2Fvnd.oci.image.manifest.v1%2Bjson&X-Amz-Signature="
    ));
    let get = s.sign(
        &SignRequest {
            method: Method::Get,
            ..req
        },
        now,
    );
    assert_ne!(get, url, "the method is signed");
    let zero = s.sign(
        &SignRequest {
            ttl: Duration::ZERO,
            ..req
        },
        now,
    );
    assert!(zero.contains("&X-Amz-Expires=1&"));
    assert_eq!(s.kind(), "s3");
}

#[test]
fn rejects_bad_config() {
    let c = creds(None);
    let ip_vhost = cfg("http://127.0.0.1:9000", "b", "", false);
    assert!(SigV4Signer::with_credentials(ip_vhost, c.clone()).is_err());
    let smuggle = cfg("https://s3.example", "evil.com:1@x", "", false);
    assert!(SigV4Signer::with_credentials(smuggle, c.clone()).is_err());
    let ftp = cfg("ftp://s3.example", "b", "", true);
    assert!(SigV4Signer::with_credentials(ftp, c.clone()).is_err());
    let mut bad_region = cfg("https://s3.example", "b", "", true);
    bad_region.region = "us-east-1/x".into();
    assert!(SigV4Signer::with_credentials(bad_region, c).is_err());
    let empty = Credentials {
        access_key_id: String::new(),
        secret_access_key: "x".into(),
        session_token: None,
    };
    assert!(
        SigV4Signer::with_credentials(cfg("https://s3.example", "b", "", true), empty).is_err()
    );
}

#[test]
fn config_from_toml() {
    let c: SigV4Config = toml::from_str(
        r#"
        endpoint = "http://127.0.0.1:9000"
        bucket = "registry"
        path_style = true
        "#,
    )
    .unwrap();
    assert_eq!(c, cfg("http://127.0.0.1:9000", "registry", "", true));
    assert!(toml::from_str::<SigV4Config>(
        "endpoint = \"http://x\"\nbucket = \"b\"\nregoin = \"x\""
    )
    .is_err());
}

#[test]
fn debug_hides_secrets() {
    let s = SigV4Signer::with_credentials(
        cfg("https://s3.example", "b", "", true),
        creds(Some("sessiontok123")),
    )
    .unwrap();
    let d = format!("{s:?}");
    assert!(d.contains(AK) && d.contains("s3.example"), "{d}");
    assert!(!d.contains(SK) && !d.contains("sessiontok123"), "{d}");
}

#[test]
fn signing_key_cached_per_day() {
    let now = unix_secs(SystemTime::now());
    let today = day_of(now) * SECS_PER_DAY;
    let s = SigV4Signer::with_credentials(cfg("https://s3.example", "b", "", true), creds(None))
        .unwrap();
    assert_eq!(
        s.key_derivations(),
        1,
        "the constructor derives today's key"
    );
    let first = s.sign_at(Method::Get, "k", "", 60, today + 10);
    for t in [today, today + 10, today + 60_000, today + SECS_PER_DAY - 1] {
        s.sign_at(Method::Get, "k", OCI_MANIFEST, 60, t);
    }
    assert_eq!(s.key_derivations(), 1, "same day, same key");

    // A new day: derived once, then cached.
    let tomorrow = today + SECS_PER_DAY;
    let next = s.sign_at(Method::Get, "k", "", 60, tomorrow + 10);
    s.sign_at(Method::Get, "k", "", 60, tomorrow + 500);
    assert_eq!(s.key_derivations(), 2);
    assert_ne!(first, next);

    // A late request from the day before is signed correctly but doesn't replace the cache.
    assert_eq!(s.sign_at(Method::Get, "k", "", 60, today + 10), first);
    assert_eq!(s.key_derivations(), 3);
    s.sign_at(Method::Get, "k", "", 60, tomorrow + 900);
    assert_eq!(
        s.key_derivations(),
        3,
        "tomorrow's key is still the cached one"
    );
}

/// A source whose credentials the test swaps, like an instance-metadata source.
#[derive(Debug)]
struct Rotating(Mutex<Arc<Credentials>>);

#[async_trait::async_trait]
impl CredentialSource for Rotating {
    async fn credentials(&self) -> anyhow::Result<Arc<Credentials>> {
        Ok(self.0.lock().unwrap().clone())
    }
}

#[tokio::test]
async fn refresh_rotates_credentials() {
    let source = Arc::new(Rotating(Mutex::new(Arc::new(creds(None)))));
    let c = cfg("http://127.0.0.1:9000", "bucketname", "", true);
    let s = Arc::new(SigV4Signer::new(c.clone(), source.clone()).await.unwrap());
    let now = unix_secs(SystemTime::now());
    let a = s.sign_at(Method::Get, "k", OCI_MANIFEST, 60, now);
    s.refresh().await.unwrap();
    assert_eq!(
        s.key_derivations(),
        1,
        "unchanged credentials: nothing to derive"
    );

    let new = Credentials {
        access_key_id: "AKIDNEW".into(),
        secret_access_key: "newsecret".into(),
        session_token: Some("tok".into()),
    };
    *source.0.lock().unwrap() = Arc::new(new.clone());
    let task = s.spawn_refresher(Duration::from_millis(10));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while s.key_derivations() < 2 {
        assert!(std::time::Instant::now() < deadline, "refresher never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let b = s.sign_at(Method::Get, "k", OCI_MANIFEST, 60, now);
    assert_ne!(a, b);
    assert_eq!(b, rusty(&c, &new, Method::Get, "k", OCI_MANIFEST, 60, now));
    assert_eq!(s.key_derivations(), 2);

    // The refresher ends with the signer.
    drop(s);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("refresher stops when the signer is dropped")
        .unwrap();
}

#[tokio::test]
async fn new_fails_without_credentials() {
    #[derive(Debug)]
    struct NoCreds;
    #[async_trait::async_trait]
    impl CredentialSource for NoCreds {
        async fn credentials(&self) -> anyhow::Result<Arc<Credentials>> {
            anyhow::bail!("no credentials found")
        }
    }
    let c = cfg("http://127.0.0.1:9000", "bucketname", "", true);
    let e = SigV4Signer::new(c, Arc::new(NoCreds)).await.unwrap_err();
    assert!(format!("{e:#}").contains("no credentials found"));
}
