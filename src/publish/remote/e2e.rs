//! `publish docker://…` end to end against the fake registry (`registry::testing`), into a local
//! store: resuming a dropped blob, re-mirroring without downloads, `--platform`, `--pin`,
//! `--with-referrers`, and refused credentials leaving no tag behind.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::index::RepoIndex;
use crate::layout;
use crate::publish::pin::PinOptions;
use crate::publish::{publish, Compression, PublishOptions, Summary};
use crate::reference::{Digest, RepoName};
use crate::registry::testing::{self, FakeAuth};
use crate::store::{LocalStore, Store};

use super::MirrorOptions;

fn opts(source: String, creds: Option<&str>) -> PublishOptions {
    PublishOptions {
        compression: Compression::Gzip,
        jobs: 2,
        mirror: MirrorOptions {
            creds: creds.map(|c| c.parse().unwrap()),
            ..MirrorOptions::default()
        },
        ..PublishOptions::new(source, Vec::new())
    }
}

fn bearer() -> FakeAuth {
    FakeAuth::Bearer {
        user: "alice".into(),
        pass: "s3cret".into(),
        anonymous: false,
        uses: 1000,
    }
}

async fn index_of(store: &dyn Store, repo: &str) -> RepoIndex {
    let key = layout::repo_index(&RepoName::parse(repo).unwrap());
    RepoIndex::from_slice(&store.get(&key).await.unwrap().unwrap().bytes).unwrap()
}

fn fixture_tag(fixture: &str, tag: &str) -> String {
    let (_, tags) = testing::load_layout(&testing::fixture_dir(fixture));
    tags[tag].0.clone()
}

fn stats(s: &Summary) -> super::MirrorStats {
    s.mirror
        .clone()
        .expect("a docker:// publish has mirror stats")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_resumes_a_dropped_blob_then_re_mirrors_without_downloading() {
    let fake = testing::start("oci-single", "fix/single", bearer()).await;
    *fake.state.drop_after.lock().unwrap() = Some(100);
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(LocalStore::open(dir.path()).unwrap());
    let mut o = opts(
        format!("docker://{}/fix/single:1.0", fake.addr),
        Some("alice:s3cret"),
    );
    o.pin = PinOptions {
        pin: true,
        registry_host: Some("cdn.example".into()),
        ..PinOptions::default()
    };
    let s = publish(store.clone(), &o).await.unwrap();
    let want = fixture_tag("oci-single", "1.0");
    assert_eq!(s.tags[0].0.to_string(), "fix/single:1.0");
    assert_eq!(s.tags[0].1.digest.as_str(), want, "published byte for byte");
    let pin = s.pin.clone().unwrap();
    assert!(pin.as_str().starts_with("pin-"), "{pin}");
    assert!(
        pin.as_str().ends_with(&want["sha256:".len()..][..8]),
        "{pin}"
    );
    assert_eq!(
        s.reference.as_deref(),
        Some(format!("cdn.example/fix/single@{want}").as_str())
    );
    let m = stats(&s);
    assert_eq!(m.resumes, 1, "{m:?}");
    assert_eq!(m.blobs_downloaded, 3);
    assert_eq!(s.blobs_written, 3);
    assert!(
        fake.state
            .log()
            .iter()
            .any(|l| l.contains("/blobs/") && l.ends_with("range=bytes=100-")),
        "{:#?}",
        fake.state.log()
    );
    let idx = index_of(store.as_ref(), "fix/single").await;
    assert_eq!(idx.tags.len(), 2, "the tag and the pin");
    assert_eq!(idx.tags[&pin].digest.as_str(), want);
    let report = crate::verify::verify(
        store.as_ref(),
        &crate::verify::VerifyOptions {
            deep: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(report.problems.is_empty(), "{report}");

    // Again: only the tag's manifest is fetched; nothing is downloaded or uploaded.
    let before = fake.state.log().len();
    let s2 = publish(store.clone(), &o).await.unwrap();
    let m2 = stats(&s2);
    assert_eq!((m2.bytes_downloaded, m2.blobs_downloaded), (0, 0), "{m2:?}");
    assert_eq!((s2.blobs_written, s2.bytes_written), (0, 0));
    assert_eq!(s2.blobs_skipped, 3);
    assert_ne!(s2.pin, s.pin, "a pin is never reused");
    let after: Vec<String> = fake.state.log()[before..].to_vec();
    assert!(after.iter().all(|l| !l.contains("/blobs/")), "{after:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_filter_writes_a_filtered_index_and_says_so() {
    let fake = testing::start("oci-multi", "fix/multi", FakeAuth::Open).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(LocalStore::open(dir.path()).unwrap());
    let mut o = opts(format!("docker://{}/fix/multi", fake.addr), None);
    o.tags = vec!["mirror/multi:arm".parse().unwrap()];
    o.mirror.platforms = vec!["linux/arm64".parse().unwrap()];
    let s = publish(store.clone(), &o).await.unwrap();
    let source = fixture_tag("oci-multi", "latest");
    let root = &s.tags[0].1;
    assert_ne!(root.digest.as_str(), source);
    assert!(
        s.notes
            .iter()
            .any(|n| n.contains("filtered image index") && n.contains(&source)),
        "{:?}",
        s.notes
    );
    let bytes = store
        .get(&layout::manifest(&root.digest))
        .await
        .unwrap()
        .unwrap()
        .bytes;
    assert_eq!(Digest::sha256_of(&bytes), root.digest);
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    let list = v["manifests"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["platform"]["architecture"], "arm64");
    // Only the arm64 image's blobs: the shared layer, its config and its own layer.
    assert_eq!(stats(&s).blobs_downloaded, 3);
    // Deterministic: filtering again gives the same digest.
    let s2 = publish(store.clone(), &o).await.unwrap();
    assert_eq!(s2.tags[0].1.digest, root.digest);
    // A platform the image lacks is an error naming what it has.
    o.mirror.platforms = vec!["linux/s390x".parse().unwrap()];
    let err = publish(store, &o).await.unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("linux/amd64") && msg.contains("linux/arm64"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_leave_no_tag() {
    let fake = testing::start("oci-single", "fix/single", bearer()).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(LocalStore::open(dir.path()).unwrap());
    let o = opts(
        format!("docker://{}/fix/single:1.0", fake.addr),
        Some("alice:not-the-password"),
    );
    let err = publish(store.clone(), &o).await.unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&format!(
            "registry {} refused the credentials for user 'alice'",
            fake.addr
        )),
        "{msg}"
    );
    assert!(!msg.contains("not-the-password"));
    assert!(!dir.path().join("repositories").exists());
    assert!(!dir.path().join("_catalog.json").exists());
}

/// An artifact manifest referring to `subject`: an empty config and one layer.
fn artifact(
    content: &mut HashMap<String, Vec<u8>>,
    subject: &str,
    subject_size: usize,
    artifact_type: &str,
    payload: &[u8],
) -> (String, usize) {
    let config = b"{}".to_vec();
    let cd = Digest::sha256_of(&config).to_string();
    content.insert(cd.clone(), config);
    let ld = Digest::sha256_of(payload).to_string();
    content.insert(ld.clone(), payload.to_vec());
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": artifact_type,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": cd, "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": ld, "size": payload.len()}],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": subject, "size": subject_size},
    }))
    .unwrap();
    let md = Digest::sha256_of(&m).to_string();
    let n = m.len();
    content.insert(md.clone(), m);
    (md, n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_from_the_tag_schema_and_cosign_tags() {
    let (mut content, mut tags) = testing::load_layout(&testing::fixture_dir("oci-single"));
    let subject = tags["1.0"].0.clone();
    let subject_size = content[&subject].len();
    let (sbom, sbom_size) = artifact(
        &mut content,
        &subject,
        subject_size,
        "application/spdx+json",
        b"{\"spdx\":1}",
    );
    let (sig, _) = artifact(
        &mut content,
        &subject,
        subject_size,
        "application/vnd.dev.cosign.artifact.sig.v1+json",
        b"signature",
    );
    // The referrers tag schema: an index listing the SBOM under `sha256-<hex>`.
    let hex = &subject["sha256:".len()..];
    let fallback = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sbom, "size": sbom_size, "artifactType": "application/spdx+json"}],
    }))
    .unwrap();
    let fd = Digest::sha256_of(&fallback).to_string();
    content.insert(fd.clone(), fallback);
    tags.insert(
        format!("sha256-{hex}"),
        (fd, "application/vnd.oci.image.index.v1+json".into()),
    );
    // cosign's tag for the signature.
    tags.insert(
        format!("sha256-{hex}.sig"),
        (
            sig.clone(),
            "application/vnd.oci.image.manifest.v1+json".into(),
        ),
    );
    let fake = testing::start_with(content, tags, "fix/single", FakeAuth::Open).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(LocalStore::open(dir.path()).unwrap());
    let mut o = opts(format!("docker://{}/fix/single:1.0", fake.addr), None);
    o.mirror.with_referrers = true;
    publish(store.clone(), &o).await.unwrap();
    let idx = index_of(store.as_ref(), "fix/single").await;
    let subject_d = Digest::parse(&subject).unwrap();
    let list = &idx.referrers[&subject_d];
    let mut got: Vec<(String, Option<String>)> = list
        .iter()
        .map(|d| (d.digest.to_string(), d.artifact_type.clone()))
        .collect();
    got.sort();
    let mut want = vec![
        (sbom.clone(), Some("application/spdx+json".to_owned())),
        (
            sig.clone(),
            Some("application/vnd.dev.cosign.artifact.sig.v1+json".to_owned()),
        ),
    ];
    want.sort();
    assert_eq!(got, want);
    assert!(idx
        .tags
        .keys()
        .any(|t| t.as_str() == format!("sha256-{hex}.sig")));
    // The static referrers index, and every artifact's manifest and blobs, are in the store.
    let file = store
        .get(&layout::referrers(&idx.name, &subject_d))
        .await
        .unwrap()
        .expect("referrers index written");
    let v: Value = serde_json::from_slice(&file.bytes).unwrap();
    assert_eq!(v["mediaType"], "application/vnd.oci.image.index.v1+json");
    assert_eq!(v["manifests"].as_array().unwrap().len(), 2);
    for d in [&sbom, &sig] {
        let d = Digest::parse(d).unwrap();
        assert!(store.head(&layout::manifest(&d)).await.unwrap().is_some());
        assert!(idx.manifests.contains_key(&d));
    }
    assert!(store
        .head(&layout::blob(&Digest::sha256_of(b"signature")))
        .await
        .unwrap()
        .is_some());
    let report = crate::verify::verify(
        store.as_ref(),
        &crate::verify::VerifyOptions {
            deep: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(report.problems.is_empty(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_filter_on_a_single_platform_image_checks_its_config_once() {
    let fake = testing::start("oci-single", "fix/single", FakeAuth::Open).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(LocalStore::open(dir.path()).unwrap());
    let mut o = opts(format!("docker://{}/fix/single:1.0", fake.addr), None);
    o.mirror.platforms = vec!["linux/arm64".parse().unwrap()];
    let err = publish(store.clone(), &o).await.unwrap_err();
    assert!(
        format!("{err:#}").contains("single-platform image for linux/amd64"),
        "{err:#}"
    );
    o.mirror.platforms = vec!["linux/amd64".parse().unwrap()];
    let s = publish(store, &o).await.unwrap();
    let m = stats(&s);
    // The config was read to check the platform, and not downloaded again to upload it.
    assert_eq!((m.blobs_downloaded, s.blobs_written), (3, 3), "{m:?}");
    let config_gets = fake
        .state
        .log()
        .iter()
        .filter(|l| l.contains("/blobs/"))
        .count();
    assert_eq!(
        config_gets, 4,
        "one config read for the refused run, then 3 blobs"
    );
}
