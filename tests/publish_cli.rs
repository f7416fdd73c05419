//! The `publish` and `verify` command lines, run as a user would: idempotent re-publishing, a
//! store that verifies, damage that `verify` (and only `verify --deep`, for same-size corruption)
//! finds and names, and bad input that fails cleanly without writing a repository index.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::fixtures::{self, Expect};
use common::{
    describe_output, files_under, hex_of, new_store, publish, publish_with, try_publish, verify,
};

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

/// (inode, mtime in ns, size) of every file of the layout: content, indexes and the files derived
/// from them (tag copies, tag lists, the catalog).
fn content_files(store: &Path) -> BTreeMap<PathBuf, (u64, i128, u64)> {
    files_under(store)
        .into_iter()
        .filter(|p| {
            p.starts_with("blobs") || p.starts_with("manifests") || p.starts_with("repositories")
        })
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
        // And the files prove it: nothing of the layout was rewritten or added, not even a tag
        // copy or a tag list.
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

/// A one-layer `docker save` archive whose layer spans many compression blocks and several zstd
/// jobs: 24 MiB of text-like files and a MiB of noise (deflate stores that).
fn big_layer_archive(path: &Path) {
    let mut layer = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        layer.append_data(&mut h, name, data).expect("layer member");
    };
    for f in 0..6 {
        let text: String = (0..150_000)
            .map(|i| format!("file {f} line {i}: value {}\n", (i * 7919 + f) % 104_729))
            .collect();
        add(&format!("usr/share/doc/{f}.txt"), text.as_bytes());
    }
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<u8> = (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    add("usr/lib/noise.bin", &noise);
    let layer = layer.into_inner().expect("layer tar");
    assert!(layer.len() > 20 << 20, "{} bytes", layer.len());
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [common::sha256(&layer)]},
    })
    .to_string();
    let config_name = format!("{}.json", hex_of(&common::sha256(config.as_bytes())));
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": ["big/layer:1"],
        "Layers": ["layer/layer.tar"],
    }])
    .to_string();
    let mut archive = tar::Builder::new(std::fs::File::create(path).expect("create archive"));
    for (name, data) in [
        (config_name.as_str(), config.as_bytes()),
        ("manifest.json", manifest.as_bytes()),
        ("layer/layer.tar", &layer[..]),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        archive
            .append_data(&mut h, name, data)
            .expect("archive member");
    }
    archive.finish().expect("archive");
}

/// Issue 18: compression runs on `--jobs` threads (at most the cores), and the bytes, so the
/// digests, must not depend on how many. The in-process tests cover 1, 2 and 8 threads; this one
/// checks the command line end to end, for both compressions.
#[test]
fn jobs_1_and_jobs_4_publish_the_same_digests() {
    let work = tempfile::tempdir().expect("tempdir");
    let archive = work.path().join("big.tar");
    big_layer_archive(&archive);
    let source = format!("docker-archive:{}", archive.display());
    for compression in ["gzip", "zstd"] {
        let mut results = Vec::new();
        for jobs in ["1", "4"] {
            let store = new_store();
            let args = ["--compression", compression, "--jobs", jobs];
            let out = publish_with(store.path(), &source, &[], &args);
            let blobs: Vec<PathBuf> = files_under(store.path())
                .into_iter()
                .filter(|p| p.starts_with("blobs"))
                .collect();
            assert_eq!(blobs.len(), 2, "{compression}: config and layer: {blobs:?}");
            results.push((tag_lines(&out), blobs));
            let v = verify(store.path(), &["--deep"]);
            assert!(v.status.success(), "{}", describe_output("verify", &v));
        }
        assert_eq!(
            results[0], results[1],
            "{compression}: --jobs 1 vs --jobs 4"
        );
    }
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

/// Writes `fixture`'s members into `out` as a gzip-compressed tar with an extra member `name` of
/// `mib` MiB of zeros, before the fixture's members (`first`) or after them. The zeros go through
/// the gzip encoder as one compressed MiB repeated: gzip members concatenate (RFC 1952), so a few
/// MB of file is a stream of gigabytes without the test spending seconds per GiB compressing it.
fn gzip_with_zeros(fixture: &Path, out: &Path, name: &str, mib: u64, first: bool) {
    use std::io::Write;
    let gz = |bytes: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(bytes).expect("gzip");
        e.finish().expect("gzip")
    };
    let mut b = tar::Builder::new(Vec::new());
    let mut src = tar::Archive::new(std::fs::File::open(fixture).expect("open fixture"));
    for entry in src.entries().expect("fixture entries") {
        let mut entry = entry.expect("fixture entry");
        let header = entry.header().clone();
        b.append(&header, &mut entry).expect("copy member");
    }
    let mut members = b.into_inner().expect("tar");
    members.truncate(members.len() - 1024); // without the end-of-archive blocks
    let mut h = tar::Header::new_gnu();
    h.set_path(name).expect("name");
    h.set_size(mib << 20);
    h.set_mode(0o644);
    h.set_cksum();
    let block = gz(&vec![0u8; 1 << 20]);
    let mut f = std::io::BufWriter::new(std::fs::File::create(out).expect("create archive"));
    if !first {
        f.write_all(&gz(&members)).expect("write");
    }
    f.write_all(&gz(h.as_bytes())).expect("write");
    for _ in 0..mib {
        f.write_all(&block).expect("write");
    }
    if first {
        f.write_all(&gz(&members)).expect("write");
    }
    f.write_all(&gz(&[0u8; 1024])).expect("write");
    f.flush().expect("flush");
}

/// `publish` with TMPDIR in `tmp` and no file it writes allowed past `max_file` bytes (prlimit:
/// the kernel stops the process at the first write beyond it), so a test sees what reaches disk.
fn publish_bounded(store: &Path, tmp: &Path, max_file: u64, pre: &[&str], args: &[&str]) -> Output {
    common::require_tool("prlimit");
    std::process::Command::new("prlimit")
        .arg(format!("--fsize={max_file}"))
        .arg(common::bin())
        .args(pre)
        .arg("publish")
        .args(args)
        .arg("--store")
        .arg(store)
        .arg("--quiet")
        .env_remove("STATIC_REGISTRY_CONFIG")
        .env_remove("STATIC_REGISTRY_STORE")
        .env("TMPDIR", tmp)
        .env("NO_COLOR", "1")
        .output()
        .expect("run prlimit static-registry publish")
}

fn tag_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(" -> "))
        .map(str::to_owned)
        .collect()
}

/// Issue 15, item 9: a gzip bomb inside a compressed archive ends the scan at the configured cap
/// with an error naming it (flag and config key), and nothing near the bomb's size reaches the
/// temporary directory: the old code decompressed all 4 GiB to a temporary file.
#[test]
fn a_gzip_bomb_in_an_archive_stops_at_the_cap() {
    let work = tempfile::tempdir().expect("tempdir");
    let bomb = work.path().join("bomb.tar.gz");
    let fixture = common::manifest_dir().join("fixtures/docker-legacy.tar");
    gzip_with_zeros(&fixture, &bomb, "zeros.bin", 4096, true);
    let compressed = std::fs::metadata(&bomb).expect("stat").len();
    assert!(compressed < 8 << 20, "the bomb is {compressed} bytes");
    let config = work.path().join("config.toml");
    std::fs::write(&config, "[publish]\nmax_archive_bytes = \"64MiB\"\n").expect("config");
    let source = format!("docker-archive:{}", bomb.display());
    let config_arg = format!("--config={}", config.display());
    for (how, pre, post) in [
        ("flag", vec![], vec!["--max-archive-bytes", "64MiB"]),
        ("config", vec![config_arg.as_str()], vec![]),
    ] {
        let store = new_store();
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut args = vec![source.as_str()];
        args.extend(post);
        let out = publish_bounded(store.path(), tmp.path(), 80 << 20, &pre, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{how}: not a clean failure (a signal means it wrote past 80 MiB):\n{}",
            describe_output("publish", &out)
        );
        assert!(
            err.contains("expands to more than 64MiB,") && err.contains("--max-archive-bytes"),
            "{how}: the error does not name the limit:\n{err}"
        );
        let left = files_under(tmp.path());
        assert!(left.is_empty(), "{how}: left in TMPDIR: {left:?}");
        assert!(
            files_under(store.path())
                .iter()
                .all(|p| !p.starts_with("repositories")),
            "{how}: wrote a repository index"
        );
    }
}

/// Issue 15, item 9: a huge member no manifest references is skipped, not spilled: publishing
/// the fixtures with 2 GiB of junk beside them succeeds with no file over 64 MiB written (the old
/// code decompressed the whole archive to one temporary file), and gives the same image.
#[test]
fn an_unreferenced_huge_member_is_not_spilled() {
    for (fixture, transport, tags) in [
        ("docker-legacy.tar", "docker-archive", vec![]),
        (
            "oci-archive.tar",
            "oci-archive",
            vec!["--tag", "fix/archive:1.0"],
        ),
    ] {
        let work = tempfile::tempdir().expect("tempdir");
        let path = common::manifest_dir().join("fixtures").join(fixture);
        let gz = work.path().join(format!("{fixture}.gz"));
        gzip_with_zeros(&path, &gz, "junk/unreferenced.bin", 2048, false);
        let plain_store = new_store();
        let mut args = vec![format!("{transport}:{}", path.display())];
        args.extend(tags.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let plain = publish_bounded(plain_store.path(), work.path(), 64 << 20, &[], &args);
        assert!(
            plain.status.success(),
            "{}",
            describe_output(fixture, &plain)
        );

        let store = new_store();
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut args = vec![format!("{transport}:{}", gz.display())];
        args.extend(tags.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = publish_bounded(store.path(), tmp.path(), 64 << 20, &[], &args);
        assert!(
            out.status.success(),
            "{fixture}.gz (a signal means a file grew past 64 MiB):\n{}",
            describe_output("publish", &out)
        );
        assert_eq!(
            tag_lines(&out),
            tag_lines(&plain),
            "{fixture}: another image"
        );
        assert!(
            files_under(tmp.path()).is_empty(),
            "{fixture}: left in TMPDIR"
        );
        let v = verify(store.path(), &["--deep"]);
        assert!(v.status.success(), "{}", describe_output("verify", &v));
    }
}
