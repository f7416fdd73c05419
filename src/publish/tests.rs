//! End-to-end tests of `publish` and `verify` against local stores, with sources built here.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};

use super::*;
use crate::index::TagsList;
use crate::oci::media;
use crate::reference::{Digest, Tag};
use crate::store::LocalStore;
use crate::store::{PutMode, PutOptions};
use crate::verify::{verify, VerifyOptions};

fn store(dir: &Path) -> Arc<dyn Store> {
    Arc::new(LocalStore::open(dir).unwrap())
}

fn tag(s: &str) -> TaggedName {
    s.parse().unwrap()
}

fn opts(source: String, tags: &[&str]) -> PublishOptions {
    PublishOptions {
        compression: Compression::Gzip,
        jobs: 3,
        ..PublishOptions::new(source, tags.iter().map(|t| tag(t)).collect())
    }
}

/// A layer tar with one file, with pinned metadata so it is the same bytes every run.
fn layer_tar(name: &str, content: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    b.append_data(&mut h, name, content).unwrap();
    b.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn config_json(diff_ids: &[Digest], arch: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap()
}

/// An OCI image layout under construction.
struct OciDir {
    dir: tempfile::TempDir,
}

impl OciDir {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("blobs/sha256")).unwrap();
        std::fs::write(
            dir.path().join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        OciDir { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn blob(&self, media_type: &str, bytes: &[u8]) -> Value {
        let d = Digest::sha256_of(bytes);
        std::fs::write(self.path().join("blobs/sha256").join(d.hex()), bytes).unwrap();
        json!({"mediaType": media_type, "digest": d, "size": bytes.len()})
    }

    /// An image manifest; returns its descriptor (with platform).
    fn image(&self, layers: &[Vec<u8>], compressed: bool, arch: &str) -> Value {
        let diff_ids: Vec<Digest> = layers.iter().map(|l| Digest::sha256_of(l)).collect();
        let config = self.blob(media::OCI_CONFIG, &config_json(&diff_ids, arch));
        let layer_descs: Vec<Value> = layers
            .iter()
            .map(|l| {
                if compressed {
                    self.blob(media::OCI_LAYER_GZIP, &gzip(l))
                } else {
                    self.blob(media::OCI_LAYER, l)
                }
            })
            .collect();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": config,
            "layers": layer_descs,
        });
        // Pretty-printed on purpose: the publisher must keep these exact bytes.
        let mut d = self.blob(
            media::OCI_MANIFEST,
            &serde_json::to_vec_pretty(&manifest).unwrap(),
        );
        d["platform"] = json!({"os": "linux", "architecture": arch});
        d
    }

    fn index(&self, children: Vec<Value>) -> Value {
        let idx = json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": children});
        self.blob(media::OCI_INDEX, &serde_json::to_vec_pretty(&idx).unwrap())
    }

    fn index_json(&self, entries: Vec<(Value, &str)>) {
        let manifests: Vec<Value> = entries
            .into_iter()
            .map(|(mut d, name)| {
                d["annotations"] = json!({"org.opencontainers.image.ref.name": name});
                d
            })
            .collect();
        let idx = json!({"schemaVersion": 2, "manifests": manifests});
        std::fs::write(
            self.path().join("index.json"),
            serde_json::to_vec(&idx).unwrap(),
        )
        .unwrap();
    }

    fn source(&self, tag: &str) -> String {
        format!("oci:{}:{tag}", self.path().display())
    }
}

/// The file of layer `i` of the manifest `desc` in a layout.
fn manifest_layer_of_source(src: &OciDir, desc: &Value, i: usize) -> PathBuf {
    let blobs = src.path().join("blobs/sha256");
    let m: Value = serde_json::from_slice(
        &std::fs::read(blobs.join(&desc["digest"].as_str().unwrap()[7..])).unwrap(),
    )
    .unwrap();
    blobs.join(&m["layers"][i]["digest"].as_str().unwrap()[7..])
}

fn two_layers(seed: &str) -> Vec<Vec<u8>> {
    vec![
        layer_tar("etc/release", format!("{seed} one").as_bytes()),
        layer_tar(
            "usr/share/two.txt",
            format!("{seed} two").repeat(100).as_bytes(),
        ),
    ]
}

async fn deep_ok(s: &dyn Store) -> crate::verify::Report {
    let r = verify(
        s,
        &VerifyOptions {
            deep: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(r.problems.is_empty(), "{r}");
    r
}

async fn get(s: &dyn Store, key: &str) -> Vec<u8> {
    s.get(key).await.unwrap().unwrap().bytes.to_vec()
}

#[tokio::test]
async fn uncompressed_oci_is_compressed_deterministically_and_republish_writes_nothing() {
    let src = OciDir::new();
    let m = src.image(&two_layers("a"), false, "amd64");
    src.index_json(vec![(m.clone(), "1.0")]);

    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let o = opts(src.source("1.0"), &["test/app:1.0", "test/app:latest"]);
    let first = publish(s.clone(), &o).await.unwrap();
    assert_eq!(first.blobs_written, 3, "{first}");
    assert_eq!(first.blobs_skipped, 0);
    assert_eq!(first.manifests_written, 1);
    let root = &first.tags[0].1;
    assert_eq!(root.media_type, media::OCI_MANIFEST);
    assert_ne!(root.digest.as_str(), m["digest"].as_str().unwrap());
    assert!(first.notes.iter().any(|n| n.contains("compressed")));

    let manifest: Value =
        serde_json::from_slice(&get(s.as_ref(), &layout::manifest(&root.digest)).await).unwrap();
    for l in manifest["layers"].as_array().unwrap() {
        assert_eq!(l["mediaType"], media::OCI_LAYER_GZIP);
    }
    let r = deep_ok(s.as_ref()).await;
    assert_eq!((r.repositories, r.manifests, r.blobs), (1, 1, 3));
    let tags: TagsList =
        serde_json::from_slice(&get(s.as_ref(), &layout::tags_list(&tag("test/app:1").name)).await)
            .unwrap();
    assert_eq!(tags.tags, vec!["1.0", "latest"]);

    let again = publish(s.clone(), &o).await.unwrap();
    assert_eq!(again.bytes_written, 0, "{again}");
    assert_eq!(again.blobs_written, 0);
    assert_eq!(again.blobs_skipped, 3);
    assert_eq!(again.bytes_skipped, first.bytes_written);
    assert_eq!(again.manifests_written, 0);
    assert_eq!(again.tags[0].1, *root);

    // Re-publishing to a repository that already has the image reuses its compressed layers
    // without reading (or recompressing) the source's; elsewhere the layer is read and checked.
    let layer = manifest_layer_of_source(&src, &m, 0);
    std::fs::write(&layer, b"truncated").unwrap();
    let reused = publish(s.clone(), &o).await.unwrap();
    assert_eq!(reused.tags[0].1, *root);
    assert_eq!(reused.bytes_written, 0);
    let err = format!(
        "{:#}",
        publish(s.clone(), &opts(src.source("1.0"), &["elsewhere:1"]))
            .await
            .unwrap_err()
    );
    assert!(err.contains("diff_id"), "{err}");
    std::fs::write(&layer, &two_layers("a")[0]).unwrap();

    // A fresh store gets byte-identical blobs and digests, with zstd too.
    let dir2 = tempfile::tempdir().unwrap();
    let other = publish(store(dir2.path()), &o).await.unwrap();
    assert_eq!(other.tags[0].1, *root);
    let mut z = o.clone();
    z.compression = Compression::Zstd;
    let z1 = publish(s.clone(), &z).await.unwrap();
    let z2 = publish(store(dir2.path()), &z).await.unwrap();
    assert_eq!(z1.tags[0].1, z2.tags[0].1);
    assert_eq!(z2.blobs_written, 2, "only the layers are new: {z2}");
    let zm: Value =
        serde_json::from_slice(&get(s.as_ref(), &layout::manifest(&z1.tags[0].1.digest)).await)
            .unwrap();
    assert_eq!(zm["layers"][0]["mediaType"], media::OCI_LAYER_ZSTD);
    deep_ok(s.as_ref()).await;
}

#[tokio::test]
async fn compressed_sources_keep_their_bytes_and_indexes_are_published_whole() {
    let src = OciDir::new();
    let amd = src.image(&two_layers("x"), true, "amd64");
    let arm = src.image(&two_layers("y"), true, "arm64");
    let idx = src.index(vec![amd.clone(), arm.clone()]);
    src.index_json(vec![(idx.clone(), "multi"), (amd.clone(), "single")]);

    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let sum = publish(s.clone(), &opts(src.source("multi"), &["m:1"]))
        .await
        .unwrap();
    let root = &sum.tags[0].1;
    assert_eq!(root.digest.as_str(), idx["digest"].as_str().unwrap());
    assert_eq!(root.media_type, media::OCI_INDEX);
    assert_eq!(sum.manifests_written, 3);
    assert_eq!(sum.blobs_written, 6);
    assert!(sum.notes.is_empty(), "{sum}");
    let hex = root.digest.hex();
    assert_eq!(
        get(s.as_ref(), &layout::manifest(&root.digest)).await,
        std::fs::read(src.path().join("blobs/sha256").join(hex)).unwrap()
    );
    let r = deep_ok(s.as_ref()).await;
    assert_eq!((r.manifests, r.blobs), (3, 6));

    // Selecting the single image from the same layout shares every blob.
    let one = publish(s.clone(), &opts(src.source("single"), &["m:amd64"]))
        .await
        .unwrap();
    assert_eq!(one.blobs_written, 0);
    assert_eq!(
        one.tags[0].1.digest.as_str(),
        amd["digest"].as_str().unwrap()
    );
    deep_ok(s.as_ref()).await;
}

#[tokio::test]
async fn uncompressed_index_children_are_regenerated() {
    let src = OciDir::new();
    let amd = src.image(&two_layers("p"), false, "amd64");
    let arm = src.image(&two_layers("q"), false, "arm64");
    let idx = src.index(vec![amd, arm]);
    src.index_json(vec![(idx.clone(), "latest")]);
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let sum = publish(s.clone(), &opts(src.source("latest"), &["multi/x:latest"]))
        .await
        .unwrap();
    let root = &sum.tags[0].1;
    assert_eq!(root.media_type, media::OCI_INDEX);
    assert_ne!(root.digest.as_str(), idx["digest"].as_str().unwrap());
    assert!(
        sum.to_string().contains(idx["digest"].as_str().unwrap()),
        "the summary names the source digest: {sum}"
    );
    let published: Value =
        serde_json::from_slice(&get(s.as_ref(), &layout::manifest(&root.digest)).await).unwrap();
    let children = published["manifests"].as_array().unwrap();
    assert_eq!(children.len(), 2);
    assert_eq!(children[1]["platform"]["architecture"], "arm64");
    deep_ok(s.as_ref()).await;
    // Deterministic: a second store gets the same index digest.
    let dir2 = tempfile::tempdir().unwrap();
    let again = publish(
        store(dir2.path()),
        &opts(src.source("latest"), &["multi/x:latest"]),
    )
    .await
    .unwrap();
    assert_eq!(again.tags[0].1, *root);
}

fn tar_dir(dir: &Path, out: &Path, compress: bool) {
    let mut b = tar::Builder::new(Vec::new());
    b.append_dir_all(".", dir).unwrap();
    let bytes = b.into_inner().unwrap();
    std::fs::write(out, if compress { gzip(&bytes) } else { bytes }).unwrap();
}

#[tokio::test]
async fn oci_archive_plain_and_gzipped() {
    let src = OciDir::new();
    let m = src.image(&two_layers("arch"), false, "amd64");
    src.index_json(vec![(m, "1.0")]);
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let from_dir = publish(s.clone(), &opts(src.source("1.0"), &["a:1"]))
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for (name, gz) in [("x.tar", false), ("x.tar.gz", true)] {
        let file = tmp.path().join(name);
        tar_dir(src.path(), &file, gz);
        let sum = publish(
            s.clone(),
            &opts(format!("oci-archive:{}", file.display()), &["a:2"]),
        )
        .await
        .unwrap();
        assert_eq!(sum.tags[0].1, from_dir.tags[0].1, "{name}");
        assert_eq!(sum.bytes_written, 0);
    }
    deep_ok(s.as_ref()).await;
}

/// A legacy `docker save` archive; the second layer is a symlink to the first one's tar, as
/// Docker writes for repeated layers.
fn legacy_archive(out: &Path, repo_tags: &[&str], corrupt_diff_id: bool) -> Vec<Vec<u8>> {
    let l1 = layer_tar("a.txt", b"alpha");
    let l2 = layer_tar("b.txt", &b"beta".repeat(1000));
    let layers = vec![l1.clone(), l2.clone(), l1.clone()];
    let mut diff_ids: Vec<Digest> = layers.iter().map(|l| Digest::sha256_of(l)).collect();
    if corrupt_diff_id {
        diff_ids[1] = Digest::sha256_of(b"something else");
    }
    let config = config_json(&diff_ids, "amd64");
    let config_name = format!("{}.json", Digest::sha256_of(&config).hex());
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, path, data).unwrap();
    };
    add(&config_name, &config);
    add("1111/layer.tar", &l1);
    add("2222/layer.tar", &l2);
    let manifest = json!([{
        "Config": config_name,
        "RepoTags": repo_tags,
        "Layers": ["1111/layer.tar", "2222/layer.tar", "3333/layer.tar"],
    }]);
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "3333/layer.tar", "../1111/layer.tar")
        .unwrap();
    std::fs::write(out, b.into_inner().unwrap()).unwrap();
    layers
}

#[tokio::test]
async fn legacy_docker_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("save.tar");
    legacy_archive(&file, &["legacy/app:2"], false);
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let src = format!("docker-archive:{}", file.display());
    let sum = publish(s.clone(), &opts(src.clone(), &[])).await.unwrap();
    assert_eq!(sum.tags[0].0, tag("legacy/app:2"));
    let root = &sum.tags[0].1;
    assert_eq!(root.media_type, media::DOCKER_MANIFEST);
    assert_eq!(sum.blobs_written, 3, "config + 2 distinct layers: {sum}");
    let m: Value =
        serde_json::from_slice(&get(s.as_ref(), &layout::manifest(&root.digest)).await).unwrap();
    assert_eq!(m["config"]["mediaType"], media::DOCKER_CONFIG);
    assert_eq!(m["layers"].as_array().unwrap().len(), 3);
    assert_eq!(m["layers"][0]["mediaType"], media::DOCKER_LAYER_GZIP);
    assert_eq!(m["layers"][0]["digest"], m["layers"][2]["digest"]);
    deep_ok(s.as_ref()).await;

    // Selecting by a differently spelled but equal reference; deterministic manifest digest.
    let named = publish(
        s.clone(),
        &opts(format!("{src}:docker.io/legacy/app:2"), &[]),
    )
    .await
    .unwrap();
    assert_eq!(named.tags[0].1, *root);
    assert_eq!(named.bytes_written, 0);

    // zstd: Docker schema2 has no zstd layer type, so the manifest becomes OCI.
    let mut z = opts(src.clone(), &["legacy/app:zstd"]);
    z.compression = Compression::Zstd;
    let zs = publish(s.clone(), &z).await.unwrap();
    let zm: Value =
        serde_json::from_slice(&get(s.as_ref(), &layout::manifest(&zs.tags[0].1.digest)).await)
            .unwrap();
    assert_eq!(zs.tags[0].1.media_type, media::OCI_MANIFEST);
    assert_eq!(zm["config"]["mediaType"], media::OCI_CONFIG);
    assert_eq!(zm["layers"][1]["mediaType"], media::OCI_LAYER_ZSTD);
    deep_ok(s.as_ref()).await;
}

/// A legacy `docker save` archive of regular files only: `layers` as `(path, tar)`, and a
/// config listing `diff_ids` (which need not match them).
fn legacy_archive_of(out: &Path, layers: &[(&str, &[u8])], diff_ids: &[Digest]) {
    let config = config_json(diff_ids, "amd64");
    let config_name = format!("{}.json", Digest::sha256_of(&config).hex());
    let manifest = json!([{
        "Config": config_name,
        "RepoTags": ["dup/app:1"],
        "Layers": layers.iter().map(|(p, _)| p).collect::<Vec<_>>(),
    }]);
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let files = [
        (config_name.as_str(), &config[..]),
        ("manifest.json", &manifest[..]),
    ];
    for (path, data) in files.iter().chain(layers) {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, path, *data).unwrap();
    }
    std::fs::write(out, b.into_inner().unwrap()).unwrap();
}

/// Issue 15, item 10: layer i is checked against diff_ids[i] even when the config repeats a
/// diff_id, so a repeated one cannot stand in for a different second layer.
#[tokio::test]
async fn a_repeated_diff_id_cannot_hide_a_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let (l1, l2) = (layer_tar("a.txt", b"alpha"), layer_tar("evil", b"payload"));
    let d1 = Digest::sha256_of(&l1);
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());

    let hidden = tmp.path().join("hidden.tar");
    legacy_archive_of(
        &hidden,
        &[("1/layer.tar", &l1), ("2/layer.tar", &l2)],
        &[d1.clone(), d1.clone()],
    );
    let err = format!(
        "{:#}",
        publish(
            s.clone(),
            &opts(format!("docker-archive:{}", hidden.display()), &[])
        )
        .await
        .unwrap_err()
    );
    assert!(
        err.contains("layer 2 of") && err.contains(&format!("diff_id is {d1}")),
        "{err}"
    );
    assert!(s.get(layout::CATALOG).await.unwrap().is_none());

    // Two identical layers, each its own file: both published, as the one blob they are.
    let twice = tmp.path().join("twice.tar");
    legacy_archive_of(
        &twice,
        &[("1/layer.tar", &l1), ("2/layer.tar", &l1)],
        &[d1.clone(), d1],
    );
    let sum = publish(
        s.clone(),
        &opts(format!("docker-archive:{}", twice.display()), &[]),
    )
    .await
    .unwrap();
    let m: Value =
        serde_json::from_slice(&get(s.as_ref(), &layout::manifest(&sum.tags[0].1.digest)).await)
            .unwrap();
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2, "{m}");
    assert_eq!(layers[0]["digest"], layers[1]["digest"]);
    deep_ok(s.as_ref()).await;
}

#[tokio::test]
async fn bad_sources_fail_with_clear_messages() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let src = OciDir::new();
    let m = src.image(&two_layers("e"), false, "amd64");
    src.index_json(vec![(m.clone(), "1.0")]);

    let err = publish(s.clone(), &opts(src.source("2.0"), &["a:1"]))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no image tagged '2.0'; available: 1.0"),
        "{err}"
    );

    let err = publish(s.clone(), &opts(src.source("1.0"), &[]))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("--tag REPO:TAG"), "{err}");

    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("bad.tar");
    legacy_archive(&file, &["bad:1"], true);
    let err = format!(
        "{:#}",
        publish(
            s.clone(),
            &opts(format!("docker-archive:{}", file.display()), &[])
        )
        .await
        .unwrap_err()
    );
    assert!(err.contains("diff_id"), "{err}");
    let err = format!(
        "{:#}",
        publish(
            s.clone(),
            &opts(format!("docker-archive:{}:other:1", file.display()), &[])
        )
        .await
        .unwrap_err()
    );
    assert!(
        err.contains("no image tagged 'other:1'; available: bad:1"),
        "{err}"
    );

    // A layer blob missing from the layout.
    let layer = &serde_json::from_slice::<Value>(
        &std::fs::read(
            src.path()
                .join("blobs/sha256")
                .join(&m["digest"].as_str().unwrap()[7..]),
        )
        .unwrap(),
    )
    .unwrap()["layers"][1]["digest"];
    std::fs::remove_file(
        src.path()
            .join("blobs/sha256")
            .join(&layer.as_str().unwrap()[7..]),
    )
    .unwrap();
    let err = format!(
        "{:#}",
        publish(s.clone(), &opts(src.source("1.0"), &["a:1"]))
            .await
            .unwrap_err()
    );
    assert!(
        err.contains("layer 2 of") && err.contains("missing"),
        "{err}"
    );
    // Nothing was committed by the failed publishes.
    assert!(s
        .list(layout::REPOSITORIES_PREFIX)
        .await
        .unwrap()
        .is_empty());
    assert!(s.get(layout::CATALOG).await.unwrap().is_none());
}

#[tokio::test]
async fn verify_names_missing_and_corrupt_objects() {
    let src = OciDir::new();
    let m = src.image(&two_layers("v"), true, "amd64");
    src.index_json(vec![(m.clone(), "1.0")]);
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    publish(s.clone(), &opts(src.source("1.0"), &["v/w:1"]))
        .await
        .unwrap();
    deep_ok(s.as_ref()).await;
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(
            src.path()
                .join("blobs/sha256")
                .join(&m["digest"].as_str().unwrap()[7..]),
        )
        .unwrap(),
    )
    .unwrap();
    let layer0 = Digest::parse(manifest["layers"][0]["digest"].as_str().unwrap()).unwrap();
    let layer1 = Digest::parse(manifest["layers"][1]["digest"].as_str().unwrap()).unwrap();
    let root = dir.path();

    // Same size, different bytes: only a deep verify can tell.
    let p1 = root.join(layout::blob(&layer1));
    let mut bytes = std::fs::read(&p1).unwrap();
    bytes[5] ^= 0xff;
    std::fs::write(&p1, &bytes).unwrap();
    let shallow = verify(
        s.as_ref(),
        &VerifyOptions {
            deep: false,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(shallow.problems.is_empty(), "{shallow}");
    let deep = verify(
        s.as_ref(),
        &VerifyOptions {
            deep: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let text = deep.to_string();
    assert!(
        text.contains(&format!("{}: digest mismatch", layout::blob(&layer1))),
        "{text}"
    );

    std::fs::remove_file(root.join(layout::blob(&layer0))).unwrap();
    let r = verify(
        s.as_ref(),
        &VerifyOptions {
            deep: false,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let text = r.to_string();
    assert!(
        text.contains(&format!(
            "{}: missing (referenced by repositories/v/w/_index.json)",
            layout::blob(&layer0)
        )),
        "{text}"
    );

    // A stale tag list and a missing tag copy are reported too.
    std::fs::write(
        root.join("repositories/v/w/_tags.json"),
        br#"{"name":"v/w","tags":[]}"#,
    )
    .unwrap();
    std::fs::remove_file(root.join("repositories/v/w/_manifests/1")).unwrap();
    let text = verify(s.as_ref(), &VerifyOptions::default())
        .await
        .unwrap()
        .to_string();
    assert!(
        text.contains("repositories/v/w/_tags.json: lists"),
        "{text}"
    );
    assert!(
        text.contains("repositories/v/w/_manifests/1: missing"),
        "{text}"
    );

    // The next publish to the repository (another tag) repairs all of that: the missing blob is
    // uploaded again, and derived files are rewritten from the index.
    let sum = publish(s.clone(), &opts(src.source("1.0"), &["v/w:2"]))
        .await
        .unwrap();
    assert_eq!(sum.blobs_written, 1, "{sum}");
    let r = verify(s.as_ref(), &VerifyOptions::default()).await.unwrap();
    assert!(r.problems.is_empty(), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commits_keep_every_tag() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let name = RepoName::parse("race/repo").unwrap();
    // Content first, as publish does: an (empty) image index per task.
    let mut descs = Vec::new();
    for i in 0..8 {
        let body = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_INDEX,
            "manifests": [],
            "annotations": {"n": i.to_string()},
        }))
        .unwrap();
        let d = Digest::sha256_of(&body);
        s.put(
            &layout::manifest(&d),
            body.clone().into(),
            &PutOptions {
                content_type: media::OCI_INDEX.into(),
                cache_control: layout::CACHE_IMMUTABLE,
                mode: PutMode::Overwrite,
            },
        )
        .await
        .unwrap();
        descs.push(Descriptor {
            media_type: media::OCI_INDEX.into(),
            digest: d,
            size: body.len() as u64,
            artifact_type: None,
            platform: None,
            annotations: None,
        });
    }
    let tasks: Vec<_> = descs
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            let s = s.clone();
            let name = name.clone();
            tokio::spawn(async move {
                let mut u = RepoIndex::new(name);
                u.manifests.insert(
                    d.digest.clone(),
                    ManifestEntry {
                        media_type: d.media_type.clone(),
                        size: d.size,
                    },
                );
                u.tags.insert(Tag::parse(&format!("t{i}")).unwrap(), d);
                commit_repository(s.as_ref(), &u, &Default::default())
                    .await
                    .unwrap()
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let idx = RepoIndex::from_slice(&get(s.as_ref(), &layout::repo_index(&name)).await).unwrap();
    assert_eq!(idx.tags.len(), 8);
    assert_eq!(idx.manifests.len(), 8);
    let r = deep_ok(s.as_ref()).await;
    assert_eq!(r.repositories, 1);
    let catalog: crate::index::Catalog =
        serde_json::from_slice(&get(s.as_ref(), layout::CATALOG).await).unwrap();
    assert_eq!(catalog.repositories, vec!["race/repo"]);
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The real fixtures (see fixtures/README.md), when they are present.
#[tokio::test]
async fn publishes_every_fixture() {
    let f = fixtures();
    let cases: [(&str, &[&str], Option<&str>); 5] = [
        ("oci:{}/oci-single:1.0", &["fx/single:1.0"], None),
        ("oci:{}/oci-multi:latest", &["fx/multi:latest"], None),
        (
            "oci-archive:{}/oci-archive.tar:1.0",
            &["fx/archive:1.0"],
            None,
        ),
        (
            "docker-archive:{}/docker-legacy.tar",
            &[],
            Some("legacy/hello:1.0"),
        ),
        (
            "docker-archive:{}/docker-25.tar",
            &[],
            Some("modern/hello:2.0"),
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let mut single = None;
    for (src, tags, expect) in cases {
        let src = src.replace("{}", &f.display().to_string());
        let file = src.split(':').nth(1).unwrap();
        if !Path::new(file).exists() {
            eprintln!("skipping {src}: fixture not generated");
            continue;
        }
        let sum = publish(s.clone(), &opts(src.clone(), tags))
            .await
            .unwrap_or_else(|e| panic!("{src}: {e:#}"));
        eprintln!("{src}:\n{sum}");
        if let Some(e) = expect {
            assert_eq!(sum.tags[0].0, tag(e), "{src}");
        }
        if src.contains("oci-single") || src.contains("oci-archive") {
            // Already-compressed sources keep their manifest digest.
            let d = sum.tags[0].1.digest.clone();
            assert!(sum.notes.is_empty(), "{src}: {sum}");
            if let Some(prev) = single.replace(d.clone()) {
                assert_eq!(prev, d, "oci-archive.tar is a copy of oci-single");
            }
        }
        if src.contains("oci-multi") {
            assert_eq!(sum.tags[0].1.media_type, media::OCI_INDEX);
        }
        let again = publish(s.clone(), &opts(src.clone(), tags)).await.unwrap();
        assert_eq!(again.bytes_written, 0, "{src}");
        assert_eq!(again.tags, sum.tags, "{src}");
    }
    deep_ok(s.as_ref()).await;
}

mod graph;
