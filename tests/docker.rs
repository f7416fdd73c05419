//! The real Docker daemon pulls from `static-registry serve` and runs what it pulled.
//!
//! Docker is the client most users have, and it is stricter than skopeo and podman in places
//! (it checks every layer against the config's diff_ids and reports the digest it pulled by).
//! Each test starts private daemons (tests/common/docker.rs: dockerd 20.10 from Debian's
//! `docker.io`, vfs storage, no network for containers):
//! - every fixture Docker can pull is pulled by tag and by digest, each time into a daemon with
//!   no image (dockerd skips what it already has): the image ID must be the fixture's config
//!   digest, the rootfs layers its diff_ids, `RepoDigests` the digest `serve` says the tag points
//!   at, and a multi-platform index resolves to linux/amd64; `serve`'s log must show Docker
//!   fetching the config and every layer of that manifest from it;
//! - a runnable image (a static busybox, `docker import`ed into a first daemon and `docker
//!   save`d, no registry involved) is published from that archive, pulled by a fresh daemon
//!   through `serve` and run;
//! - every daemon sends what is not bound to loopback to a trap proxy, and the tests assert it saw
//!   nothing: the daemons only ever talked to `serve`. Images are always named
//!   `127.0.0.1:PORT/…`, never by a Docker Hub name.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use common::checks::{check_docker_image, expected_top, for_each_fixture};
use common::docker::Dockerd;
use common::fixtures::{self, Fixture, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use common::{blocking_request, hex_of, new_store, publish, require_tool, Server};

/// Whether a daemon of `version` can pull fixture `f`. Docker decompresses zstd layers only from
/// 23.0 on: 20.10 (Debian 12's) fails on them ("failed to register layer: ApplyLayer exit status
/// 1 … unexpected EOF"), so there the `--compression zstd` fixture is left out.
fn docker_can_pull(version: (u32, u32), f: &Fixture) -> bool {
    let zstd = f
        .expect
        .amd64()
        .compression
        .is_some_and(|c| c.contains("zstd"));
    !zstd || version >= (23, 0)
}

#[test]
fn docker_pulls_every_fixture() {
    let dockerd = Dockerd::start();
    let store = new_store();
    let all = fixtures::publish_all(store.path());
    let server = Server::start(store.path(), &[]);
    let version = dockerd.version();
    let (pullable, skipped): (Vec<Fixture>, Vec<Fixture>) =
        all.into_iter().partition(|f| docker_can_pull(version, f));
    eprintln!(
        "dockerd {version:?} cannot pull (zstd layers): {:?}",
        skipped.iter().map(|f| f.name).collect::<Vec<_>>()
    );

    let mut served_types = BTreeSet::new();
    for_each_fixture(&pullable, |f| {
        let top = expected_top(server.tag_digest(f.repo(), f.tag()), f)?;
        served_types.insert(served_type(&server, f)?);
        docker_pulls_fixture(&dockerd, &server, store.path(), f, &top)
    });
    // What was left out must not be a whole kind of image.
    for kind in [OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX] {
        assert!(
            served_types.contains(kind),
            "no fixture Docker pulled was served as {kind}: {served_types:?}"
        );
    }
    dockerd.assert_stayed_local();
}

/// The `Content-Type` `serve` answers for fixture `f`'s tag.
fn served_type(server: &Server, f: &Fixture) -> Result<String, String> {
    let path = format!("/v2/{}/manifests/{}", f.repo(), f.tag());
    let r =
        blocking_request(server.addr, "HEAD", &path).ok_or(format!("HEAD {path}: no answer"))?;
    r.header("content-type")
        .map(str::to_owned)
        .ok_or(format!("HEAD {path}: no Content-Type"))
}

/// Pulls fixture `f` (whose tag points at `top`) by tag, then by digest, each into a daemon with
/// no image, and checks what Docker made of it and what it fetched from `server`.
fn docker_pulls_fixture(
    dockerd: &Dockerd,
    server: &Server,
    store: &Path,
    f: &Fixture,
    top: &str,
) -> Result<(), String> {
    let host = server.host();
    let by_tag = format!("{host}/{}", f.pull_ref);
    let by_digest = format!("{host}/{}@{top}", f.repo());
    let picked = amd64_manifest(store, top)?;
    if let Some(want) = &f.expect.amd64().layers {
        let layers = layer_digests(&picked);
        if &layers != want {
            return Err(format!(
                "the published manifest lists layers {layers:?}, want the fixture's {want:?}"
            ));
        }
    }
    for (image, tags) in [(&by_tag, vec![by_tag.as_str()]), (&by_digest, vec![])] {
        dockerd.remove_all_images()?;
        let mark = server.log().len();
        dockerd.pull(image)?;
        check_docker_image(dockerd, image, &f.expect, "amd64", &by_digest)
            .map_err(|e| format!("{image}: {e}"))?;
        check_fetched(&server.log()[mark..], f.repo(), &picked)
            .map_err(|e| format!("{image}: {e}"))?;
        // A tag pull tags the image; a digest pull does not.
        let info = dockerd.image_inspect(image)?;
        let got: Vec<&str> = info["RepoTags"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if got != tags {
            return Err(format!("{image}: docker's RepoTags {got:?}, want {tags:?}"));
        }
    }
    Ok(())
}

/// The manifest Docker pulls for `top` on this machine, read from the store: `top` itself, or
/// the linux/amd64 manifest of an index.
fn amd64_manifest(store: &Path, top: &str) -> Result<Value, String> {
    let read = |digest: &str| -> Result<Value, String> {
        let path = store.join("manifests/sha256").join(hex_of(digest));
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
    };
    let m = read(top)?;
    let Some(list) = m["manifests"].as_array() else {
        return Ok(m);
    };
    let amd64 = list
        .iter()
        .find(|d| d["platform"]["os"] == "linux" && d["platform"]["architecture"] == "amd64")
        .and_then(|d| d["digest"].as_str())
        .ok_or(format!("index {top} has no linux/amd64 manifest"))?;
    read(amd64)
}

fn layer_digests(manifest: &Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .map(|ls| {
            ls.iter()
                .filter_map(|l| l["digest"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Checks that `log`, what `serve` logged during one pull, shows Docker fetching the config and
/// every layer of `manifest` from it: the endpoint's redirect for `/v2/REPO/blobs/DIGEST`, then
/// the embedded origin serving the blob.
fn check_fetched(log: &str, repo: &str, manifest: &Value) -> Result<(), String> {
    let config = manifest["config"]["digest"]
        .as_str()
        .ok_or("manifest without a config")?
        .to_owned();
    for d in std::iter::once(config).chain(layer_digests(manifest)) {
        let redirect = format!("path=\"/v2/{repo}/blobs/{d}\" status=307");
        if !log.contains(&redirect) {
            return Err(format!("serve never redirected a GET /v2/{repo}/blobs/{d}"));
        }
        let origin = format!("path=\"/_origin/blobs/sha256/{}\" status=200", hex_of(&d));
        if !log.contains(&origin) {
            return Err(format!("serve's origin never served {d}"));
        }
    }
    Ok(())
}

#[test]
fn docker_runs_an_image_pulled_through_serve() {
    let work = tempfile::Builder::new()
        .prefix("sr-docker-run-")
        .tempdir()
        .expect("temp dir");
    // A file only this run's image has, so the output proves which rootfs the container ran.
    let marker = format!("marker-{:016x}", rand::random::<u64>());
    let rootfs = work.path().join("rootfs.tar");
    busybox_rootfs(&rootfs, &marker);

    // A first daemon makes the image and saves it as users do (legacy `docker save` format).
    let archive = work.path().join("busybox.tar");
    let built_id = {
        let builder = Dockerd::start();
        let rootfs = rootfs.to_str().expect("utf-8 path");
        builder
            .docker_ok(&["import", rootfs, "local/busybox:1"])
            .unwrap_or_else(|e| panic!("{e}"));
        builder
            .docker_ok(&["save", "-o", archive.to_str().unwrap(), "local/busybox:1"])
            .unwrap_or_else(|e| panic!("{e}"));
        let info = builder
            .image_inspect("local/busybox:1")
            .unwrap_or_else(|e| panic!("{e}"));
        builder.assert_stayed_local();
        info["Id"].as_str().expect("image Id").to_owned()
    };

    let store = new_store();
    let source = format!("docker-archive:{}", archive.display());
    publish(store.path(), &source, &["run/busybox:1"]);
    let server = Server::start(store.path(), &[]);

    // A fresh daemon: it has nothing but what it pulls from serve.
    let dockerd = Dockerd::start();
    let image = format!("{}/run/busybox:1", server.host());
    dockerd.pull(&image).unwrap_or_else(|e| panic!("{e}"));
    let info = dockerd
        .image_inspect(&image)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        info["Id"].as_str(),
        Some(built_id.as_str()),
        "the image ID (the config digest) changed between docker save and docker pull"
    );
    let out = dockerd
        .run(
            &image,
            &[
                "sh",
                "-c",
                "echo hello-from-static-registry && busybox cat /etc/static-registry-marker",
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out, format!("hello-from-static-registry\n{marker}\n"));
    assert!(
        server.log().contains("/v2/run/busybox/manifests/1"),
        "serve did not see the pull of run/busybox:1"
    );
    dockerd.assert_stayed_local();
}

/// Writes a rootfs tar with a static busybox as `/bin/busybox`, `/bin/sh` linking to it, and
/// `/etc/static-registry-marker` holding `marker`.
fn busybox_rootfs(path: &Path, marker: &str) {
    let busybox = require_tool("busybox");
    let bytes = std::fs::read(&busybox).expect("read busybox");
    assert!(
        is_static_elf(&bytes),
        "{} is not a static x86-64 executable: the image has no libc. Install busybox-static \
         (scripts/test.sh does).",
        busybox.display()
    );
    let file = std::fs::File::create(path).expect("create rootfs tar");
    let mut tar = tar::Builder::new(file);
    let header = |kind: tar::EntryType, mode: u32, size: usize| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size as u64);
        h.set_mtime(1_704_067_200); // 2024-01-01
        h
    };
    for dir in ["bin/", "etc/"] {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        tar.append_data(&mut h, dir, std::io::empty())
            .expect("tar dir");
    }
    let mut h = header(tar::EntryType::Regular, 0o755, bytes.len());
    tar.append_data(&mut h, "bin/busybox", &bytes[..])
        .expect("tar busybox");
    let mut h = header(tar::EntryType::Symlink, 0o777, 0);
    tar.append_link(&mut h, "bin/sh", "busybox")
        .expect("tar sh link");
    let text = format!("{marker}\n");
    let mut h = header(tar::EntryType::Regular, 0o644, text.len());
    tar.append_data(&mut h, "etc/static-registry-marker", text.as_bytes())
        .expect("tar marker");
    tar.into_inner()
        .expect("finish rootfs tar")
        .sync_all()
        .expect("sync rootfs tar");
}

/// Whether `elf` is a 64-bit little-endian x86-64 executable with no program interpreter
/// (`PT_INTERP`): one that runs without a libc in the image.
fn is_static_elf(elf: &[u8]) -> bool {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    const EM_X86_64: u16 = 62;
    const PT_INTERP: u32 = 3;
    if !elf.starts_with(b"\x7fELF\x02\x01") || u16_at(0x12) != Some(EM_X86_64) {
        return false;
    }
    let (Some(phoff), Some(size), Some(count)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return false;
    };
    (0..usize::from(count)).all(|i| {
        u32_at(phoff as usize + i * usize::from(size)).is_some_and(|kind| kind != PT_INTERP)
    })
}
