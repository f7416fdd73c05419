//! Hostile manifest graphs and media types: each digest is read and written once, a graph over
//! the node limit fails clearly, and only manifest media types are published.

use super::*;
use crate::export::{Destination, ExportOptions, ExportRef};
use crate::walk::WalkLimits;

/// An image under `levels` image indexes, each listing the one below `dups` times.
fn duplicated_graph(src: &OciDir, levels: usize, dups: usize) -> Value {
    let mut below = src.image(&two_layers("dup"), true, "amd64");
    for _ in 0..levels {
        below = src.index(vec![below.clone(); dups]);
    }
    below
}

#[tokio::test]
async fn a_graph_listing_children_many_times_is_read_and_written_once() {
    let src = OciDir::new();
    let top = duplicated_graph(&src, 6, 12);
    src.index_json(vec![(top.clone(), "1")]);
    let out = tempfile::tempdir().unwrap();
    let s = store(out.path());
    // A tree walk would visit 12^6 images; the graph has 6 indexes and 1 image.
    let summary = publish(s.clone(), &opts(src.source("1"), &["dup/img:1"]))
        .await
        .unwrap();
    assert_eq!(summary.manifests_written, 7, "{summary}");
    let report = deep_ok(s.as_ref()).await;
    assert_eq!(report.manifests, 7, "{report}");
    let exported = tempfile::tempdir().unwrap();
    let e = crate::export::export(
        s.clone(),
        &ExportOptions {
            reference: "dup/img:1".parse::<ExportRef>().unwrap(),
            destination: Destination::Oci {
                dir: exported.path().to_owned(),
                ref_name: None,
            },
            platform: None,
            limits: WalkLimits::default(),
        },
    )
    .await
    .unwrap();
    assert_eq!(e.manifests, 7, "{e}");
    assert_eq!(e.digest.as_str(), top["digest"].as_str().unwrap());
}

#[tokio::test]
async fn a_graph_over_the_node_limit_fails_clearly_and_writes_no_tag() {
    let src = OciDir::new();
    let images: Vec<Value> = (0..12)
        .map(|i| src.image(&two_layers(&format!("img{i}")), true, "amd64"))
        .collect();
    let top = src.index(images);
    src.index_json(vec![(top, "1")]);
    let out = tempfile::tempdir().unwrap();
    let s = store(out.path());
    let mut o = opts(src.source("1"), &["many/img:1"]);
    o.limits = WalkLimits { max_manifests: 10 };
    let err = publish(s.clone(), &o).await.unwrap_err().to_string();
    assert!(err.contains("more than 10 distinct manifests"), "{err}");
    assert!(err.contains("--max-manifests"), "{err}");
    let name = RepoName::parse("many/img").unwrap();
    assert!(s.get(&layout::repo_index(&name)).await.unwrap().is_none());
    // Within the limit it publishes.
    o.limits = WalkLimits { max_manifests: 12 };
    publish(s.clone(), &o).await.unwrap();
}

/// A layout whose one image manifest says it is `media_type`.
fn layout_with_manifest_type(media_type: &str) -> OciDir {
    let src = OciDir::new();
    let layer = gzip(&layer_tar("a", b"a"));
    let layer_d = src.blob(media::OCI_LAYER_GZIP, &layer);
    let config = src.blob(media::OCI_CONFIG, &config_json(&[], "amd64"));
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": config,
        "layers": [layer_d],
    });
    let d = src.blob(media::OCI_MANIFEST, &serde_json::to_vec(&manifest).unwrap());
    src.index_json(vec![(d, "1")]);
    src
}

#[tokio::test]
async fn only_manifest_media_types_are_published() {
    for bad in [
        "text/html",
        "application/vnd.oci.image.manifest.v1+json\r\nX-Injected: 1",
    ] {
        let src = layout_with_manifest_type(bad);
        let out = tempfile::tempdir().unwrap();
        let s = store(out.path());
        let err = publish(s.clone(), &opts(src.source("1"), &["html/img:1"]))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not a manifest media type"), "{err}");
        let name = RepoName::parse("html/img").unwrap();
        assert!(s.get(&layout::repo_index(&name)).await.unwrap().is_none());
        assert!(s.list("manifests/").await.unwrap().is_empty());
    }
    // The same image with its real type publishes.
    let src = layout_with_manifest_type(media::OCI_MANIFEST);
    let out = tempfile::tempdir().unwrap();
    publish(store(out.path()), &opts(src.source("1"), &["ok/img:1"]))
        .await
        .unwrap();
}

#[tokio::test]
async fn verify_reports_a_stored_manifest_whose_type_is_not_a_manifest_type() {
    let src = layout_with_manifest_type(media::OCI_MANIFEST);
    let out = tempfile::tempdir().unwrap();
    let s = store(out.path());
    publish(s.clone(), &opts(src.source("1"), &["x/img:1"]))
        .await
        .unwrap();
    deep_ok(s.as_ref()).await;
    // Tamper with the index, as a hand edit or a hostile writer would.
    let name = RepoName::parse("x/img").unwrap();
    let key = layout::repo_index(&name);
    let mut idx = RepoIndex::from_slice(&s.get(&key).await.unwrap().unwrap().bytes).unwrap();
    for e in idx.manifests.values_mut() {
        e.media_type = "text/html".into();
    }
    for d in idx.tags.values_mut() {
        d.media_type = "text/html".into();
    }
    s.put(
        &key,
        Bytes::from(idx.to_vec()),
        &PutOptions {
            content_type: "application/json".into(),
            cache_control: layout::CACHE_INDEX,
            mode: PutMode::Overwrite,
        },
    )
    .await
    .unwrap();
    let r = verify(s.as_ref(), &VerifyOptions::default()).await.unwrap();
    assert!(
        r.problems
            .iter()
            .any(|p| p.contains("\"text/html\", which is not a manifest media type")),
        "{r}"
    );
    // serve's index loading leaves the entries out.
    let bytes = s.get(&key).await.unwrap().unwrap().bytes;
    let served = RepoIndex::for_serving(&bytes).unwrap();
    assert!(served.tags.is_empty() && served.manifests.is_empty());
}
