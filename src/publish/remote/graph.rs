//! A hostile upstream: image indexes listing one child many times are fetched once per digest,
//! and manifests whose type is not a manifest's are refused.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::publish::{publish, Compression, PublishOptions};
use crate::reference::Digest;
use crate::registry::testing::{self, Content, FakeAuth, Tags};
use crate::store::{LocalStore, Store};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn put(content: &mut Content, media_type: &str, bytes: Vec<u8>) -> Value {
    let d = Digest::sha256_of(&bytes);
    let desc = json!({"mediaType": media_type, "digest": d, "size": bytes.len()});
    content.insert(d.to_string(), bytes);
    desc
}

/// An image whose manifest says it is `manifest_type`, under `levels` indexes each listing the
/// one below `dups` times; tagged `1`.
fn upstream(manifest_type: &str, levels: usize, dups: usize) -> (Content, Tags) {
    let mut c = Content::new();
    let config = put(
        &mut c,
        "application/vnd.oci.image.config.v1+json",
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec(),
    );
    let layer = put(
        &mut c,
        "application/vnd.oci.image.layer.v1.tar+gzip",
        b"not really gzip".to_vec(),
    );
    let manifest = json!({"schemaVersion": 2, "mediaType": manifest_type,
        "config": config, "layers": [layer]});
    let mut below = put(
        &mut c,
        "application/vnd.oci.image.manifest.v1+json",
        serde_json::to_vec(&manifest).unwrap(),
    );
    for _ in 0..levels {
        let idx = json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": vec![below.clone(); dups]});
        below = put(&mut c, OCI_INDEX, serde_json::to_vec(&idx).unwrap());
    }
    let top_type = below["mediaType"].as_str().unwrap().to_owned();
    let tags: Tags = [(
        "1".to_owned(),
        (below["digest"].as_str().unwrap().to_owned(), top_type),
    )]
    .into();
    (c, tags)
}

fn opts(source: String) -> PublishOptions {
    PublishOptions {
        compression: Compression::Gzip,
        jobs: 2,
        ..PublishOptions::new(source, vec!["dup/img:1".parse().unwrap()])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_upstream_index_graph_fetches_each_digest_once() {
    let (content, tags) = upstream("application/vnd.oci.image.manifest.v1+json", 6, 12);
    let fake = testing::start_with(content, tags, "dup/img", FakeAuth::Open).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(LocalStore::open(dir.path()).unwrap());
    let s = publish(store, &opts(format!("docker://{}/dup/img:1", fake.addr)))
        .await
        .unwrap();
    assert_eq!(s.manifests_written, 7, "{s}");
    let mut gets: HashMap<String, usize> = HashMap::new();
    for l in fake.state.log() {
        if let Some(rest) = l.split_once("/manifests/").map(|(_, r)| r) {
            if l.starts_with("GET") {
                let reference = rest.split_whitespace().next().unwrap().to_owned();
                *gets.entry(reference).or_default() += 1;
            }
        }
    }
    // The tag, then each of the 6 digests below it (the 7th is the tag's own).
    assert_eq!(gets.len(), 7, "{gets:#?}");
    assert!(gets.values().all(|&n| n == 1), "{gets:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_upstream_manifest_type_is_refused() {
    // (CR/LF cannot reach us in a Content-Type; in a manifest body the file-source tests cover it.)
    for bad in ["text/html", "application/xhtml+xml"] {
        let (content, tags) = upstream(bad, 1, 1);
        let fake = testing::start_with(content, tags, "dup/img", FakeAuth::Open).await;
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(LocalStore::open(dir.path()).unwrap());
        let err = publish(
            store.clone(),
            &opts(format!("docker://{}/dup/img:1", fake.addr)),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("is not a manifest media type"), "{err}");
        assert!(store.list("repositories/").await.unwrap().is_empty());
    }
}
