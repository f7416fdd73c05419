//! Unit tests of prune, untag and delete-repository against a local store, with images built
//! directly in the store (the integration tests in tests/store_care.rs use the real CLI).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde_json::json;

use super::*;
use crate::commit::commit_repository;
use crate::index::{Catalog, Descriptor, ManifestEntry, RepoIndex};
use crate::store::{LocalStore, PutMode, PutOptions, Store};
use crate::verify::{verify, VerifyOptions};

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn put_opts(ct: &str) -> PutOptions {
    PutOptions {
        content_type: ct.into(),
        cache_control: layout::CACHE_IMMUTABLE,
        mode: PutMode::Overwrite,
    }
}

/// A repository's index as stored.
async fn stored_index(s: &dyn Store, name: &RepoName) -> RepoIndex {
    let obj = s.get(&layout::repo_index(name)).await.unwrap().unwrap();
    RepoIndex::from_slice(&obj.bytes).unwrap()
}

/// An image in the store: config + the given layers + manifest. Returns (manifest descriptor,
/// blob digests).
async fn image(s: &dyn Store, layers: &[&[u8]], note: &str) -> (Descriptor, Vec<Digest>) {
    let config =
        serde_json::to_vec(&json!({"note": note, "rootfs": {"type": "layers", "diff_ids": []}}))
            .unwrap();
    let mut blobs = vec![Digest::sha256_of(&config)];
    s.put(
        &layout::blob(&blobs[0]),
        Bytes::from(config.clone()),
        &put_opts("application/octet-stream"),
    )
    .await
    .unwrap();
    let mut ls = Vec::new();
    for l in layers {
        let d = Digest::sha256_of(l);
        s.put(
            &layout::blob(&d),
            Bytes::from(l.to_vec()),
            &put_opts("application/octet-stream"),
        )
        .await
        .unwrap();
        ls.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": l.len()}));
        blobs.push(d);
    }
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blobs[0], "size": config.len()},
        "layers": ls,
    }))
    .unwrap();
    let d = Digest::sha256_of(&m);
    s.put(
        &layout::manifest(&d),
        Bytes::from(m.clone()),
        &put_opts(MANIFEST),
    )
    .await
    .unwrap();
    (
        Descriptor {
            media_type: MANIFEST.into(),
            digest: d,
            size: m.len() as u64,
            artifact_type: None,
            platform: None,
            annotations: None,
        },
        blobs,
    )
}

/// Tags the image in `repo` as publish would.
async fn tag(s: &dyn Store, repo: &str, t: &str, img: &(Descriptor, Vec<Digest>)) {
    let u = tagged_index(s, repo, t, img).await;
    commit_repository(s, &u, &Default::default()).await.unwrap();
}

/// The index update that tags the image in `repo` (blob sizes read from the store).
async fn tagged_index(
    s: &dyn Store,
    repo: &str,
    t: &str,
    img: &(Descriptor, Vec<Digest>),
) -> RepoIndex {
    let name = RepoName::parse(repo).unwrap();
    let mut u = RepoIndex::new(name);
    u.tags.insert(Tag::parse(t).unwrap(), img.0.clone());
    u.manifests.insert(
        img.0.digest.clone(),
        ManifestEntry {
            media_type: MANIFEST.into(),
            size: img.0.size,
        },
    );
    for b in &img.1 {
        let size = s.head(&layout::blob(b)).await.unwrap().unwrap().size;
        u.blobs.insert(b.clone(), size);
    }
    u
}

fn store() -> (tempfile::TempDir, Arc<LocalStore>) {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(LocalStore::open(dir.path()).unwrap());
    (dir, s)
}

/// Makes every object under the store look `age` old.
fn age_everything(root: &std::path::Path, age: Duration) {
    let t = SystemTime::now() - age;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                std::fs::File::options()
                    .write(true)
                    .open(&p)
                    .unwrap()
                    .set_modified(t)
                    .unwrap();
            }
        }
    }
}

async fn clean(s: &dyn Store) {
    let r = verify(
        s,
        &VerifyOptions {
            deep: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(r.problems.is_empty() && r.warnings.is_empty(), "{r}");
}

fn exists(s: &LocalStore, key: &str) -> bool {
    s.path_of(key).unwrap().is_file()
}

#[test]
fn durations_parse() {
    assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86400)));
    assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
    assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
    assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
    assert!(parse_duration("1w").is_err());
    assert!(parse_duration("h").is_err());
    assert!(parse_duration("").is_err());
    for s in ["30d", "12h", "90m", "61s", "0s"] {
        assert_eq!(format_duration(parse_duration(s).unwrap()), s);
    }
}

#[tokio::test]
async fn prune_respects_references_grace_and_dry_run() {
    let (dir, s) = store();
    let shared: &[u8] = b"shared layer";
    let kept = image(s.as_ref(), &[shared, b"kept only"], "kept").await;
    tag(s.as_ref(), "a/app", "1", &kept).await;
    // Unreferenced: written but never committed (a crashed publish), sharing one layer.
    let orphan = image(s.as_ref(), &[shared, b"orphan only"], "orphan").await;
    // A stale staging file of a crashed publish.
    std::fs::write(dir.path().join(".staging/.tmpCRASH"), b"partial").unwrap();

    // Everything is young: nothing goes, whatever the references.
    let opts = PruneOptions {
        grace: Duration::from_secs(3600),
        dry_run: false,
        limits: Default::default(),
    };
    let r = prune(s.as_ref(), &opts).await.unwrap();
    assert!(r.deleted.is_empty() && r.staging.is_empty(), "{r}");
    assert_eq!(r.kept_young, 3, "{r}"); // orphan manifest, config and own layer

    age_everything(dir.path(), Duration::from_secs(7200));
    let dry = prune(
        s.as_ref(),
        &PruneOptions {
            dry_run: true,
            ..opts.clone()
        },
    )
    .await
    .unwrap();
    let want: BTreeSet<String> = [
        layout::manifest(&orphan.0.digest),
        layout::blob(&orphan.1[0]),
        layout::blob(&orphan.1[2]),
    ]
    .into_iter()
    .collect();
    let got: BTreeSet<String> = dry.deleted.iter().map(|v| v.key.clone()).collect();
    assert_eq!(got, want, "{dry}");
    assert_eq!(dry.staging.len(), 1, "{dry}");
    let text = dry.to_string();
    assert!(text.contains("would delete"), "{text}");
    assert!(
        text.starts_with("would delete") || text.contains("dry run"),
        "{text}"
    );
    // Nothing changed.
    for k in &want {
        assert!(exists(&s, k), "{k}");
    }
    assert!(dir.path().join(".staging/.tmpCRASH").exists());
    let freed = dry.bytes_freed();

    let r = prune(s.as_ref(), &opts).await.unwrap();
    assert_eq!(r.bytes_freed(), freed, "{r}");
    for k in &want {
        assert!(!exists(&s, k), "{k} survived");
    }
    assert!(!dir.path().join(".staging/.tmpCRASH").exists());
    assert!(exists(&s, &layout::blob(&Digest::sha256_of(shared))));
    assert_eq!(r.referenced, 4, "{r}");
    clean(s.as_ref()).await;
    // Idempotent.
    let again = prune(s.as_ref(), &opts).await.unwrap();
    assert!(again.deleted.is_empty(), "{again}");
}

/// What `retain` relies on: a tag decided on one digest that has moved to another by the time of
/// the compare-and-swap (a publish in between), or is gone, is left alone and reported.
#[tokio::test]
async fn untag_expecting_leaves_a_moved_tag_alone() {
    let (_dir, s) = store();
    let v1 = image(s.as_ref(), &[b"v1 layer"], "v1").await;
    let v2 = image(s.as_ref(), &[b"v2 layer"], "v2").await;
    for t in ["old", "moved", "gone"] {
        tag(s.as_ref(), "r/app", t, &v1).await;
    }
    let name = RepoName::parse("r/app").unwrap();
    let t = |s: &str| Tag::parse(s).unwrap();
    // The decision: all three pointed at v1. Then a publisher moves one, and one is untagged.
    let decided: BTreeMap<Tag, Digest> = ["old", "moved", "gone"]
        .into_iter()
        .map(|n| (t(n), v1.0.digest.clone()))
        .collect();
    tag(s.as_ref(), "r/app", "moved", &v2).await;
    untag(s.as_ref(), &name, &[t("gone")], WalkLimits::default())
        .await
        .unwrap();

    let r = untag_expecting(s.as_ref(), &name, &decided, WalkLimits::default())
        .await
        .unwrap();
    assert_eq!(r.removed, [(t("old"), v1.0.digest.clone())], "{r}");
    assert_eq!(r.skipped, [t("gone"), t("moved")], "{r}");
    let idx = stored_index(s.as_ref(), &name).await;
    assert_eq!(idx.tags.keys().collect::<Vec<_>>(), [&t("moved")]);
    assert_eq!(
        idx.tags[&t("moved")].digest,
        v2.0.digest,
        "the moved tag keeps its new digest"
    );
}

#[tokio::test]
async fn untag_drops_the_closure_and_prune_collects_it() {
    let (dir, s) = store();
    let shared: &[u8] = b"base layer";
    let v1 = image(s.as_ref(), &[shared, b"v1 layer"], "v1").await;
    let v2 = image(s.as_ref(), &[shared, b"v2 layer"], "v2").await;
    tag(s.as_ref(), "a/app", "1", &v1).await;
    tag(s.as_ref(), "a/app", "2", &v2).await;
    tag(s.as_ref(), "a/app", "latest", &v2).await;
    // Another repository shares v1: its content must survive untagging it here.
    tag(s.as_ref(), "b/other", "x", &v1).await;
    clean(s.as_ref()).await;

    let name = RepoName::parse("a/app").unwrap();
    let r = untag(
        s.as_ref(),
        &name,
        &[Tag::parse("1").unwrap()],
        WalkLimits::default(),
    )
    .await
    .unwrap();
    assert!(
        r.to_string()
            .contains("dropped 1 manifest(s) and 2 blob(s)"),
        "{r}"
    );
    let idx = stored_index(s.as_ref(), &name).await;
    assert_eq!(idx.tags.len(), 2);
    assert!(!idx.manifests.contains_key(&v1.0.digest));
    assert!(idx.blobs.contains_key(&Digest::sha256_of(shared)));
    assert!(!exists(&s, "repositories/a/app/_manifests/1"));
    clean(s.as_ref()).await;

    // Unknown tags are refused, and change nothing.
    let err = untag(
        s.as_ref(),
        &name,
        &[Tag::parse("nope").unwrap()],
        WalkLimits::default(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("has no tag nope"), "{err}");

    age_everything(dir.path(), Duration::from_secs(7200));
    let opts = PruneOptions {
        grace: Duration::from_secs(3600),
        dry_run: false,
        limits: Default::default(),
    };
    // b/other still references v1: nothing goes.
    let r = prune(s.as_ref(), &opts).await.unwrap();
    assert!(r.deleted.is_empty(), "{r}");

    let msg = delete_repository(s.as_ref(), &RepoName::parse("b/other").unwrap())
        .await
        .unwrap();
    assert!(msg.contains("deleted repository b/other"), "{msg}");
    assert!(s.list("repositories/b/other/").await.unwrap().is_empty());
    let catalog: Catalog =
        serde_json::from_slice(&s.get(layout::CATALOG).await.unwrap().unwrap().bytes).unwrap();
    assert_eq!(catalog.repositories, vec!["a/app"]);
    clean(s.as_ref()).await;

    let r = prune(s.as_ref(), &opts).await.unwrap();
    let got: BTreeSet<String> = r.deleted.iter().map(|v| v.key.clone()).collect();
    let want: BTreeSet<String> = [
        layout::manifest(&v1.0.digest),
        layout::blob(&v1.1[0]),
        layout::blob(&v1.1[2]),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want, "{r}");
    clean(s.as_ref()).await;

    // Untagging the last tags leaves an empty repository; deleting it empties the catalog.
    untag(
        s.as_ref(),
        &name,
        &[Tag::parse("2").unwrap(), Tag::parse("latest").unwrap()],
        WalkLimits::default(),
    )
    .await
    .unwrap();
    clean(s.as_ref()).await;
    delete_repository(s.as_ref(), &name).await.unwrap();
    assert!(delete_repository(s.as_ref(), &name).await.is_err());
    age_everything(dir.path(), Duration::from_secs(7200));
    prune(s.as_ref(), &opts).await.unwrap();
    assert!(s.list("blobs/").await.unwrap().is_empty());
    assert!(s.list("manifests/").await.unwrap().is_empty());
    clean(s.as_ref()).await;
}

#[tokio::test]
async fn prune_repairs_lagging_derived_files_before_deleting() {
    let (dir, s) = store();
    let v1 = image(s.as_ref(), &[b"one"], "v1").await;
    let v2 = image(s.as_ref(), &[b"two"], "v2").await;
    tag(s.as_ref(), "a/app", "t", &v1).await;
    tag(s.as_ref(), "a/app", "t", &v2).await;
    let name = RepoName::parse("a/app").unwrap();
    // Crash leftovers: the copy of `t` is still v1's manifest, a copy for a tag that no longer
    // exists describes v1 too, and _tags.json is stale.
    let v1_bytes = s
        .get(&layout::manifest(&v1.0.digest))
        .await
        .unwrap()
        .unwrap()
        .bytes;
    for t in ["t", "gone"] {
        s.put(
            &layout::tag_manifest(&name, &Tag::parse(t).unwrap()),
            v1_bytes.clone(),
            &put_opts(MANIFEST),
        )
        .await
        .unwrap();
    }
    s.put(
        &layout::tags_list(&name),
        Bytes::from_static(br#"{"name":"a/app","tags":[]}"#),
        &put_opts("application/json"),
    )
    .await
    .unwrap();
    let r = verify(s.as_ref(), &VerifyOptions::default()).await.unwrap();
    assert!(r.problems.is_empty(), "{r}");
    assert_eq!(r.warnings.len(), 3, "{r}");

    // After the untag of nothing… v1 is still in the index (publish accumulates); untag `t`'s
    // history by re-tagging then untagging a helper tag, which recomputes the closure.
    tag(s.as_ref(), "a/app", "helper", &v2).await;
    untag(
        s.as_ref(),
        &name,
        &[Tag::parse("helper").unwrap()],
        WalkLimits::default(),
    )
    .await
    .unwrap();
    age_everything(dir.path(), Duration::from_secs(7200));
    let r = prune(
        s.as_ref(),
        &PruneOptions {
            grace: Duration::from_secs(3600),
            dry_run: false,
            limits: Default::default(),
        },
    )
    .await
    .unwrap();
    assert!(
        r.deleted
            .iter()
            .any(|v| v.key == layout::manifest(&v1.0.digest)),
        "{r}"
    );
    clean(s.as_ref()).await;

    // A copy describing content that is gone is an error, not a lag: a CDN serving blind would
    // hand out a manifest whose blobs 404.
    s.put(
        &layout::tag_manifest(&name, &Tag::parse("ghost").unwrap()),
        v1_bytes,
        &put_opts(MANIFEST),
    )
    .await
    .unwrap();
    let r = verify(s.as_ref(), &VerifyOptions::default()).await.unwrap();
    assert_eq!(r.problems.len(), 1, "{r}");
    assert!(
        r.problems[0].contains("_manifests/ghost") && r.problems[0].contains("missing or partial"),
        "{r}"
    );
}

/// The publisher's last line of defence against a concurrent prune: content that vanished
/// between the upload phase and the commit fails the publish, and nothing is committed.
#[tokio::test]
async fn commit_refuses_content_that_disappeared() {
    let (_dir, s) = store();
    let layer: &[u8] = b"layer a prune deleted";
    let img = image(s.as_ref(), &[layer], "x").await;
    let name = RepoName::parse("a/app").unwrap();
    let u = tagged_index(s.as_ref(), "a/app", "1", &img).await;
    s.delete(&layout::blob(&img.1[1])).await.unwrap();
    let err = commit_repository(s.as_ref(), &u, &Default::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("content disappeared"), "{err}");
    assert!(s.get(&layout::repo_index(&name)).await.unwrap().is_none());
}

/// untag walks the remaining tags with the one walker, so its node limit holds: an index
/// reaching more manifests than allowed keeps the repository's content (only the tag goes),
/// and within the limit the untagged image's content leaves the index.
#[tokio::test]
async fn untag_walks_within_the_node_limit() {
    let (_dir, s) = store();
    let old = image(s.as_ref(), &[b"old"], "old").await;
    let kids = [
        image(s.as_ref(), &[b"a"], "a").await,
        image(s.as_ref(), &[b"b"], "b").await,
        image(s.as_ref(), &[b"c"], "c").await,
    ];
    // The same child listed many times counts once.
    let entries: Vec<_> = kids
        .iter()
        .chain(&kids)
        .chain(&kids)
        .map(|k| &k.0)
        .collect();
    let idx_bytes = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    }))
    .unwrap();
    let idx_d = Digest::sha256_of(&idx_bytes);
    s.put(
        &layout::manifest(&idx_d),
        Bytes::from(idx_bytes.clone()),
        &put_opts("application/vnd.oci.image.index.v1+json"),
    )
    .await
    .unwrap();
    let name = RepoName::parse("a/multi").unwrap();
    let mut u = tagged_index(s.as_ref(), "a/multi", "old", &old).await;
    for k in &kids {
        let ku = tagged_index(s.as_ref(), "a/multi", "x", k).await;
        u.manifests.extend(ku.manifests);
        u.blobs.extend(ku.blobs);
    }
    let index_desc = Descriptor {
        media_type: "application/vnd.oci.image.index.v1+json".into(),
        digest: idx_d.clone(),
        size: idx_bytes.len() as u64,
        artifact_type: None,
        platform: None,
        annotations: None,
    };
    u.tags.insert(Tag::parse("keep").unwrap(), index_desc);
    u.tags.insert(Tag::parse("old2").unwrap(), old.0.clone());
    u.manifests.insert(
        idx_d,
        ManifestEntry {
            media_type: "application/vnd.oci.image.index.v1+json".into(),
            size: idx_bytes.len() as u64,
        },
    );
    commit_repository(s.as_ref(), &u, &Default::default())
        .await
        .unwrap();
    let read = || stored_index(s.as_ref(), &name);

    // Three distinct children, two allowed: the tag goes, the content stays.
    let tight = WalkLimits { max_manifests: 2 };
    let r = untag(s.as_ref(), &name, &[Tag::parse("old").unwrap()], tight)
        .await
        .unwrap()
        .to_string();
    assert!(r.contains("more than 2 distinct manifests"), "{r}");
    let after = read().await;
    assert!(!after.tags.contains_key(&Tag::parse("old").unwrap()));
    assert!(after.manifests.contains_key(&old.0.digest), "{r}");
    assert_eq!(after.manifests.len(), 5);

    // Within the limit (3 distinct, listed 9 times): the old image's content leaves the index.
    let three = WalkLimits { max_manifests: 3 };
    let r = untag(s.as_ref(), &name, &[Tag::parse("old2").unwrap()], three)
        .await
        .unwrap()
        .to_string();
    assert!(r.contains("dropped 1 manifest(s) and 2 blob(s)"), "{r}");
    let after = read().await;
    assert!(!after.manifests.contains_key(&old.0.digest), "{r}");
    assert_eq!(after.manifests.len(), 4);
}

/// Leftovers are found by parsing keys with `layout`: the derived files of a repository without
/// an index go; objects under `repositories/` that the layout never writes (an invalid
/// repository name, no file part) are noted and left alone, not deleted as someone's leftovers.
#[tokio::test]
async fn prune_deletes_leftovers_and_leaves_foreign_keys_alone() {
    let (dir, s) = store();
    let img = image(s.as_ref(), &[b"kept"], "kept").await;
    tag(s.as_ref(), "a/app", "1", &img).await;
    let gone = RepoName::parse("gone/app").unwrap();
    let leftovers = [
        layout::tags_list(&gone),
        layout::tag_manifest(&gone, &Tag::parse("1").unwrap()),
    ];
    let foreign = ["repositories/Bad/_tags.json", "repositories/a/readme"];
    for k in leftovers.iter().map(String::as_str).chain(foreign) {
        s.put(k, Bytes::from_static(b"{}"), &put_opts("application/json"))
            .await
            .unwrap();
    }
    age_everything(dir.path(), Duration::from_secs(7200));
    let r = prune(
        s.as_ref(),
        &PruneOptions {
            grace: Duration::from_secs(3600),
            dry_run: false,
            limits: Default::default(),
        },
    )
    .await
    .unwrap();
    let deleted: BTreeSet<&str> = r.leftovers.iter().map(|v| v.key.as_str()).collect();
    assert_eq!(
        deleted,
        leftovers.iter().map(String::as_str).collect(),
        "{r}"
    );
    for k in leftovers {
        assert!(s.head(&k).await.unwrap().is_none(), "{k}");
    }
    for k in foreign {
        assert!(s.head(k).await.unwrap().is_some(), "{k} was deleted");
        assert!(r.notes.iter().any(|n| n.contains(k)), "{k} not noted: {r}");
    }
    clean(s.as_ref()).await;
}
