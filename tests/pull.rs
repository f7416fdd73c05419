//! Real clients pull every fixture through `static-registry serve`.
//!
//! Each test publishes every fixture into one fresh store (each under its own repository), starts
//! one server, then runs one client over every reference. The pulled content must be the fixture:
//! - OCI fixtures (compressed layers) are published byte for byte: the manifest (or index) digest
//!   and bytes and the layer digests equal the fixture's;
//! - docker archives (uncompressed layers, compressed on publish) keep their config, so the image
//!   ID and diff_ids equal the fixture's, and every pulled layer decompresses to its diff_id;
//! - the multi-platform index keeps its digest; single-platform pulls get linux/amd64.
//!
//! Every fixture is checked even when an earlier one fails; the test then lists every failure.

mod common;

use common::clients::{Containerd, Podman, Skopeo};
use common::fixtures::{self, check_pulled, Expect, Fixture, Platforms};
use common::{hex_of, new_store, Server};

/// Publishes every fixture into a fresh store and serves it.
fn world() -> (tempfile::TempDir, Server, Vec<Fixture>) {
    let store = new_store();
    let fixtures = fixtures::publish_all(store.path());
    let server = Server::start(store.path(), &[]);
    (store, server, fixtures)
}

/// Runs `check` for every fixture, then fails listing every fixture that failed.
fn for_each_fixture(fixtures: &[Fixture], mut check: impl FnMut(&Fixture) -> Result<(), String>) {
    let mut failures = Vec::new();
    for f in fixtures {
        if let Err(e) = check(f) {
            failures.push(format!("[{}] {}: {e}", f.name, f.pull_ref));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures failed:\n\n{}",
        failures.len(),
        fixtures.len(),
        failures.join("\n\n")
    );
}

/// The digest a client must end up with for `f`: the fixture's own manifest or index digest when
/// publish keeps it, and in every case what the endpoint says the tag points at.
fn expected_top(server: &Server, f: &Fixture) -> Result<String, String> {
    let served = server.tag_digest(f.repo(), f.tag());
    let own = match &f.expect {
        Expect::Index { digest, .. } => Some(digest.clone()),
        Expect::Image(img) => img.manifest.clone(),
    };
    match own {
        Some(d) if d != served => Err(format!(
            "the endpoint says {} is {served}, but the fixture's digest is {d}",
            f.pull_ref
        )),
        _ => Ok(served),
    }
}

#[test]
fn skopeo_pulls_every_fixture() {
    let mut skopeo = Skopeo::new();
    let (_store, server, fixtures) = world();
    let host = server.host();
    for_each_fixture(&fixtures, |f| {
        let top = expected_top(&server, f)?;
        // A plain copy: an index is resolved to this machine's platform (linux/amd64).
        let pulled = skopeo.copy(&host, f.pull_ref, false, Some("amd64"))?;
        pulled.check_file_names()?;
        let (got, _) = pulled.manifest()?;
        let platforms = match f.expect {
            Expect::Index { .. } => Platforms::Resolved("amd64"),
            Expect::Image(_) => Platforms::All,
        };
        if platforms == Platforms::All && got != top {
            return Err(format!("skopeo pulled {got}, the tag points at {top}"));
        }
        check_pulled(&f.expect, &got, platforms, &mut |d| pulled.get(d))?;

        // By digest, too.
        let by_digest = format!("{}@{top}", f.repo());
        let pulled = skopeo.copy(&host, &by_digest, true, None)?;
        pulled.check_file_names()?;
        let (got, _) = pulled.manifest()?;
        if got != top {
            return Err(format!("skopeo pulled {got} for {by_digest}"));
        }
        check_pulled(&f.expect, &got, Platforms::All, &mut |d| pulled.get(d))
            .map_err(|e| format!("{by_digest}: {e}"))?;

        if let Expect::Index { .. } = f.expect {
            // --all: the index and every platform, byte for byte.
            let pulled = skopeo.copy(&host, f.pull_ref, true, None)?;
            pulled.check_file_names()?;
            let (got, _) = pulled.manifest()?;
            check_pulled(&f.expect, &got, Platforms::All, &mut |d| pulled.get(d))
                .map_err(|e| format!("--all: {e}"))?;
            // Another platform than the machine's.
            let pulled = skopeo.copy(&host, f.pull_ref, false, Some("arm64"))?;
            pulled.check_file_names()?;
            let (got, _) = pulled.manifest()?;
            check_pulled(&f.expect, &got, Platforms::Resolved("arm64"), &mut |d| {
                pulled.get(d)
            })
            .map_err(|e| format!("--override-arch arm64: {e}"))?;
        }
        // What the registry serves for the tag, fetched the way `skopeo inspect` does.
        let raw = skopeo.inspect_raw(&host, f.pull_ref)?;
        if common::sha256(&raw) != top {
            return Err(
                "skopeo inspect --raw: the manifest bytes do not hash to the tag's digest".into(),
            );
        }
        Ok(())
    });
}

/// Checks `podman image inspect` of a pulled image against the fixture image for `arch`.
/// `repo_digest` is `HOST/REPO@DIGEST`: podman records one per manifest it pulled an image by
/// (`Digest` is only the first one, so an image ID pulled earlier through another manifest, e.g.
/// the same config with other layer compression, keeps its old `Digest`).
fn check_podman_image(
    podman: &Podman,
    image: &str,
    expect: &Expect,
    arch: &str,
    repo_digest: &str,
) -> Result<(), String> {
    let info = podman.inspect(image)?;
    let want = match expect {
        Expect::Image(img) => img,
        Expect::Index { images, .. } => images
            .iter()
            .find(|i| i.architecture == arch)
            .ok_or_else(|| format!("fixture has no {arch} image"))?,
    };
    let repo_digests: Vec<&str> = info["RepoDigests"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    if !repo_digests.contains(&repo_digest) {
        return Err(format!(
            "podman's RepoDigests {repo_digests:?} lack {repo_digest}"
        ));
    }
    let id = info["Id"].as_str().unwrap_or("");
    if id != hex_of(&want.config) {
        return Err(format!(
            "podman image ID {id}, want the fixture's config {}",
            want.config
        ));
    }
    let layers: Vec<&str> = info["RootFS"]["Layers"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    if layers != want.diff_ids {
        return Err(format!(
            "podman rootfs layers {layers:?}, want diff_ids {:?}",
            want.diff_ids
        ));
    }
    let got_arch = info["Architecture"].as_str().unwrap_or("");
    if got_arch != arch {
        return Err(format!(
            "podman pulled architecture {got_arch}, want {arch}"
        ));
    }
    Ok(())
}

#[test]
fn podman_pulls_every_fixture() {
    let podman = Podman::new();
    let (_store, server, fixtures) = world();
    let host = server.host();
    for_each_fixture(&fixtures, |f| {
        let top = expected_top(&server, f)?;
        let image = format!("{host}/{}", f.pull_ref);
        let by_digest = format!("{host}/{}@{top}", f.repo());
        podman.pull(&image, &["--arch", "amd64"])?;
        check_podman_image(&podman, &image, &f.expect, "amd64", &by_digest)?;
        if let Expect::Index { .. } = f.expect {
            podman.pull(&image, &["--arch", "arm64"])?;
            check_podman_image(&podman, &image, &f.expect, "arm64", &by_digest)
                .map_err(|e| format!("--arch arm64: {e}"))?;
        }
        // By digest.
        podman.pull(&by_digest, &["--arch", "amd64"])?;
        check_podman_image(&podman, &by_digest, &f.expect, "amd64", &by_digest)
            .map_err(|e| format!("{by_digest}: {e}"))?;
        Ok(())
    });
}

#[test]
fn containerd_pulls_every_fixture() {
    let ctd = Containerd::start();
    let (_store, server, fixtures) = world();
    let host = server.host();
    for_each_fixture(&fixtures, |f| {
        let top = expected_top(&server, f)?;
        let image = format!("{host}/{}", f.pull_ref);
        // ctr starts with a HEAD on the tag (no /v2/ ping) and needs Docker-Content-Digest.
        ctd.pull(&image, &["--platform", "linux/amd64"])?;
        let (digest, media_type) = ctd.image(&image)?;
        if digest != top {
            return Err(format!(
                "containerd recorded {digest} ({media_type}), want {top}"
            ));
        }
        check_pulled(&f.expect, &digest, Platforms::Amd64, &mut |d| {
            ctd.content(d)
        })?;
        if let Expect::Index { .. } = f.expect {
            ctd.pull(&image, &["--all-platforms"])?;
            check_pulled(&f.expect, &digest, Platforms::All, &mut |d| ctd.content(d))
                .map_err(|e| format!("--all-platforms: {e}"))?;
        }
        Ok(())
    });
}
