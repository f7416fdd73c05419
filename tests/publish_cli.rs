//! The `publish` and `verify` command lines, run as a user would: idempotent re-publishing, a
//! store that verifies, damage that `verify` (and only `verify --deep`, for same-size corruption)
//! finds and names, and bad input that fails cleanly without writing a repository index.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::fixtures::{self, Expect};
use common::{describe_output, files_under, hex_of, new_store, publish, try_publish, verify};

/// The numbers of the summary line
/// `blobs: wrote N (SIZE), skipped M already in the store (SIZE); manifests: wrote K`.
#[derive(Debug, PartialEq, Eq)]
struct Summary {
    blobs_written: u64,
    bytes_written: String,
    blobs_skipped: u64,
    manifests_written: u64,
}

fn summary(out: &Output) -> Summary {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("blobs: wrote "))
        .unwrap_or_else(|| panic!("no summary line in publish output:\n{text}"));
    let parse = || -> Option<Summary> {
        let rest = line.strip_prefix("blobs: wrote ")?;
        let (written, rest) = rest.split_once(" (")?;
        let (bytes, rest) = rest.split_once("), skipped ")?;
        let (skipped, rest) = rest.split_once(' ')?;
        let manifests = rest.rsplit_once("manifests: wrote ")?.1;
        Some(Summary {
            blobs_written: written.parse().ok()?,
            bytes_written: bytes.to_owned(),
            blobs_skipped: skipped.parse().ok()?,
            manifests_written: manifests.trim().parse().ok()?,
        })
    };
    parse().unwrap_or_else(|| panic!("unparseable summary line: {line}"))
}

/// (inode, mtime in ns, size) of every file under `blobs/` and `manifests/`.
fn content_files(store: &Path) -> BTreeMap<PathBuf, (u64, i128, u64)> {
    files_under(store)
        .into_iter()
        .filter(|p| p.starts_with("blobs") || p.starts_with("manifests"))
        .map(|p| {
            let m = std::fs::metadata(store.join(&p)).expect("stat");
            let mtime = i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec());
            (p, (m.ino(), mtime, m.size()))
        })
        .collect()
}

fn combined(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn republishing_an_unchanged_image_writes_no_blob_bytes() {
    let store = new_store();
    for (source, tags, blobs) in [
        // config + 2 layers, published as they are
        ("oci:fixtures/oci-single:1.0", vec!["fix/oci-single:1.0"], 3),
        // config + 2 layers compressed on the way: compression must be deterministic
        ("docker-archive:fixtures/docker-legacy.tar", vec![], 3),
        ("docker-archive:fixtures/docker-25.tar", vec![], 3),
        // 2 configs + 3 distinct layers (the first layer is shared by both platforms)
        ("oci:fixtures/oci-multi:latest", vec!["fix/multi:latest"], 5),
    ] {
        let first = summary(&publish(store.path(), source, &tags));
        assert_eq!(
            first.blobs_written, blobs,
            "{source}: first publish {first:?}"
        );
        assert_eq!(first.blobs_skipped, 0, "{source}: first publish {first:?}");
        assert!(
            first.manifests_written >= 1,
            "{source}: first publish {first:?}"
        );

        let before = content_files(store.path());
        let again = summary(&publish(store.path(), source, &tags));
        assert_eq!(
            again,
            Summary {
                blobs_written: 0,
                bytes_written: "0 B".into(),
                blobs_skipped: blobs,
                manifests_written: 0,
            },
            "{source}: re-publish"
        );
        // And the files prove it: nothing under blobs/ or manifests/ was rewritten or added.
        assert_eq!(
            content_files(store.path()),
            before,
            "{source}: re-publishing touched content files"
        );
    }
    let out = verify(store.path(), &["--deep"]);
    assert!(
        out.status.success(),
        "{}",
        describe_output("verify --deep", &out)
    );
}

#[test]
fn verify_passes_on_a_fresh_store() {
    let store = new_store();
    fixtures::publish_all(store.path());
    for args in [&[][..], &["--deep"][..]] {
        let out = verify(store.path(), args);
        assert!(
            out.status.success(),
            "{}",
            describe_output(&format!("verify {args:?}"), &out)
        );
    }
}

/// A published oci-single and the store key of its first layer.
fn store_with_layer() -> (tempfile::TempDir, String) {
    let store = new_store();
    publish(
        store.path(),
        "oci:fixtures/oci-single:1.0",
        &["fix/oci-single:1.0"],
    );
    let Expect::Image(img) = fixtures::oci_single() else {
        unreachable!()
    };
    let layer = &img.layers.expect("layers")[0];
    let key = format!("blobs/sha256/{}", hex_of(layer));
    assert!(store.path().join(&key).is_file(), "{key} was not published");
    (store, key)
}

#[test]
fn verify_names_a_missing_blob() {
    let (store, key) = store_with_layer();
    std::fs::remove_file(store.path().join(&key)).expect("delete blob");
    for args in [&[][..], &["--deep"][..]] {
        let out = verify(store.path(), args);
        assert!(
            !out.status.success(),
            "verify {args:?} passed with {key} deleted:\n{}",
            combined(&out)
        );
        assert!(
            combined(&out).contains(&key),
            "verify {args:?} does not name {key}:\n{}",
            combined(&out)
        );
    }
}

#[test]
fn only_deep_verify_finds_a_same_size_corruption() {
    let (store, key) = store_with_layer();
    let path = store.path().join(&key);
    let mut bytes = std::fs::read(&path).expect("read blob");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).expect("corrupt blob");

    let out = verify(store.path(), &[]);
    assert!(
        out.status.success(),
        "plain verify checks sizes only, and the size is right:\n{}",
        describe_output("verify", &out)
    );
    let out = verify(store.path(), &["--deep"]);
    assert!(
        !out.status.success(),
        "verify --deep passed with {key} corrupted:\n{}",
        combined(&out)
    );
    assert!(
        combined(&out).contains(&key),
        "verify --deep does not name {key}:\n{}",
        combined(&out)
    );
}

#[test]
fn bad_input_fails_cleanly_and_writes_no_index() {
    let cases: [(&str, &[&str], &[&str]); 7] = [
        ("oci:fixtures/oci-single:1.0", &["Bad:Name"], &["Bad"]),
        ("oci:fixtures/oci-single:1.0", &["fix/ok:.bad"], &[".bad"]),
        (
            "docker-archive:fixtures/no-such-file.tar",
            &["fix/x:1"],
            &["no-such-file.tar"],
        ),
        (
            "oci:fixtures/no-such-dir:1.0",
            &["fix/x:1"],
            &["no-such-dir"],
        ),
        (
            "oci:fixtures/oci-single:nosuchtag",
            &["fix/x:1"],
            &["nosuchtag"],
        ),
        // An OCI layout does not name the image: a destination is required.
        ("oci:fixtures/oci-single:1.0", &[], &["--tag"]),
        (
            "nosuchtransport:fixtures/oci-single",
            &["fix/x:1"],
            &["nosuchtransport"],
        ),
    ];
    let mut failures = Vec::new();
    for (source, tags, mentions) in cases {
        let store = new_store();
        let out = try_publish(store.path(), source, tags);
        let text = combined(&out);
        let what = format!("publish {source} --tag {tags:?}");
        if out.status.success() {
            failures.push(format!("{what}: succeeded\n{text}"));
        }
        for m in mentions {
            if !String::from_utf8_lossy(&out.stderr).contains(m) {
                failures.push(format!("{what}: the error does not mention {m:?}:\n{text}"));
            }
        }
        if text.contains("panicked") {
            failures.push(format!("{what}: panicked\n{text}"));
        }
        let written: Vec<PathBuf> = files_under(store.path())
            .into_iter()
            .filter(|p| p.starts_with("repositories") || p.ends_with("_catalog.json"))
            .collect();
        if !written.is_empty() {
            failures.push(format!("{what}: wrote {written:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
