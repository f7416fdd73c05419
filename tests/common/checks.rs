//! The per-fixture pull checks shared by the tests that pull fixtures with real clients
//! (tests/pull.rs, tests/s3.rs, tests/federation.rs, tests/mirror.rs, tests/ops.rs,
//! tests/docker.rs).

use serde_json::Value;

use super::clients::{Containerd, Podman, Skopeo};
use super::docker::Dockerd;
use super::fixtures::{check_pulled, Expect, Fixture, Image, Platforms};
use super::{hex_of, sha256};

/// Runs `check` for every fixture, then fails listing every fixture that failed.
pub fn for_each_fixture(
    fixtures: &[Fixture],
    mut check: impl FnMut(&Fixture) -> Result<(), String>,
) {
    let mut failures = Vec::new();
    for f in fixtures {
        if let Err(e) = check(f) {
            failures.push(format!("[{}] {}: {e}", f.name, f.pull_ref));
        }
    }
    assert_no_failures(&failures, fixtures.len());
}

/// The digest a client must end up with for `f`, given `served`, what the endpoint says the tag
/// points at: `served`, which must also be the fixture's own manifest or index digest when
/// publish keeps it.
pub fn expected_top(served: String, f: &Fixture) -> Result<String, String> {
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

/// The fixture image for `arch`.
pub fn image_for<'a>(expect: &'a Expect, arch: &str) -> Result<&'a Image, String> {
    match expect {
        Expect::Image(img) => Ok(img),
        Expect::Index { images, .. } => images
            .iter()
            .find(|i| i.architecture == arch)
            .ok_or_else(|| format!("fixture has no {arch} image")),
    }
}

/// Checks `podman image inspect` output `info` against the fixture image `want`: the image ID is
/// the config digest and the rootfs layers are the diff_ids.
pub fn check_podman_id_and_layers(info: &Value, want: &Image) -> Result<(), String> {
    check_id_and_layers("podman", info, hex_of(&want.config), want)
}

/// An inspect answer's `Id` is `want_id` (how the client spells the config digest) and its
/// `RootFS.Layers` are the fixture's diff_ids.
fn check_id_and_layers(
    client: &str,
    info: &Value,
    want_id: &str,
    want: &Image,
) -> Result<(), String> {
    let id = info["Id"].as_str().unwrap_or("");
    if id != want_id {
        return Err(format!(
            "{client} image ID {id}, want the fixture's config {}",
            want.config
        ));
    }
    let layers: Vec<&str> = info["RootFS"]["Layers"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if layers != want.diff_ids {
        return Err(format!(
            "{client} rootfs layers {layers:?}, want diff_ids {:?}",
            want.diff_ids
        ));
    }
    Ok(())
}

/// Checks `podman image inspect` of a pulled image against the fixture image for `arch`.
/// `repo_digest` is `HOST/REPO@DIGEST`: podman records one per manifest it pulled an image by
/// (`Digest` is only the first one, so an image ID pulled earlier through another manifest, e.g.
/// the same config with other layer compression, keeps its old `Digest`).
pub fn check_podman_image(
    podman: &Podman,
    image: &str,
    expect: &Expect,
    arch: &str,
    repo_digest: &str,
) -> Result<(), String> {
    let info = podman.inspect(image)?;
    let want = image_for(expect, arch)?;
    let repo_digests: Vec<&str> = info["RepoDigests"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    if !repo_digests.contains(&repo_digest) {
        return Err(format!(
            "podman's RepoDigests {repo_digests:?} lack {repo_digest}"
        ));
    }
    check_podman_id_and_layers(&info, want)?;
    let got_arch = info["Architecture"].as_str().unwrap_or("");
    if got_arch != arch {
        return Err(format!(
            "podman pulled architecture {got_arch}, want {arch}"
        ));
    }
    Ok(())
}

/// skopeo pulls fixture `f` from `host` (whose tag points at `top`) every way: by tag (resolved to
/// linux/amd64), by digest, an index with `--all` and for arm64, and `inspect --raw`.
pub fn skopeo_pulls_fixture(
    skopeo: &mut Skopeo,
    host: &str,
    f: &Fixture,
    top: &str,
) -> Result<(), String> {
    skopeo_pulls_tag(skopeo, host, f, top)?;

    // By digest, too.
    let by_digest = format!("{}@{top}", f.repo());
    let pulled = skopeo.copy(host, &by_digest, true, None)?;
    pulled.check_file_names()?;
    let (got, _) = pulled.manifest()?;
    if got != top {
        return Err(format!("skopeo pulled {got} for {by_digest}"));
    }
    check_pulled(&f.expect, &got, Platforms::All, &mut |d| pulled.get(d))
        .map_err(|e| format!("{by_digest}: {e}"))?;

    if let Expect::Index { .. } = f.expect {
        skopeo_pulls_all(skopeo, host, f)?;
        // Another platform than the machine's.
        let pulled = skopeo.copy(host, f.pull_ref, false, Some("arm64"))?;
        pulled.check_file_names()?;
        let (got, _) = pulled.manifest()?;
        check_pulled(&f.expect, &got, Platforms::Resolved("arm64"), &mut |d| {
            pulled.get(d)
        })
        .map_err(|e| format!("--override-arch arm64: {e}"))?;
    }
    skopeo_inspects_tag(skopeo, host, f, top)
}

/// A plain `skopeo copy` of fixture `f`'s tag (whose digest is `top`): an index is resolved to
/// this machine's platform (linux/amd64).
pub fn skopeo_pulls_tag(
    skopeo: &mut Skopeo,
    host: &str,
    f: &Fixture,
    top: &str,
) -> Result<(), String> {
    let pulled = skopeo.copy(host, f.pull_ref, false, Some("amd64"))?;
    pulled.check_file_names()?;
    let (got, _) = pulled.manifest()?;
    let platforms = match f.expect {
        Expect::Index { .. } => Platforms::Resolved("amd64"),
        Expect::Image(_) => Platforms::All,
    };
    if platforms == Platforms::All && got != top {
        return Err(format!("skopeo pulled {got}, the tag points at {top}"));
    }
    check_pulled(&f.expect, &got, platforms, &mut |d| pulled.get(d))
}

/// `skopeo copy --all` of fixture `f`'s tag: the index and every platform, byte for byte.
pub fn skopeo_pulls_all(skopeo: &mut Skopeo, host: &str, f: &Fixture) -> Result<(), String> {
    let pulled = skopeo.copy(host, f.pull_ref, true, None)?;
    pulled.check_file_names()?;
    let (got, _) = pulled.manifest()?;
    check_pulled(&f.expect, &got, Platforms::All, &mut |d| pulled.get(d))
        .map_err(|e| format!("--all: {e}"))
}

/// What the registry serves for fixture `f`'s tag, fetched the way `skopeo inspect` does, hashes
/// to `top`.
pub fn skopeo_inspects_tag(
    skopeo: &mut Skopeo,
    host: &str,
    f: &Fixture,
    top: &str,
) -> Result<(), String> {
    let raw = skopeo.inspect_raw(host, f.pull_ref)?;
    if sha256(&raw) != top {
        return Err(
            "skopeo inspect --raw: the manifest bytes do not hash to the tag's digest".into(),
        );
    }
    Ok(())
}

/// Fails listing every failure when there are any (`total`: how many fixtures were checked).
pub fn assert_no_failures(failures: &[String], total: usize) {
    assert!(
        failures.is_empty(),
        "{} of {} fixtures failed:\n\n{}",
        failures.len(),
        total,
        failures.join("\n\n")
    );
}

/// podman pulls fixture `f` from `host` (whose tag points at `top`) by tag for linux/amd64, an
/// index for arm64 too, and by digest.
pub fn podman_pulls_fixture(
    podman: &Podman,
    host: &str,
    f: &Fixture,
    top: &str,
) -> Result<(), String> {
    let image = format!("{host}/{}", f.pull_ref);
    let by_digest = format!("{host}/{}@{top}", f.repo());
    podman.pull(&image, &["--arch", "amd64"])?;
    check_podman_image(podman, &image, &f.expect, "amd64", &by_digest)?;
    if let Expect::Index { .. } = f.expect {
        podman.pull(&image, &["--arch", "arm64"])?;
        check_podman_image(podman, &image, &f.expect, "arm64", &by_digest)
            .map_err(|e| format!("--arch arm64: {e}"))?;
    }
    // By digest.
    podman.pull(&by_digest, &["--arch", "amd64"])?;
    check_podman_image(podman, &by_digest, &f.expect, "amd64", &by_digest)
        .map_err(|e| format!("{by_digest}: {e}"))?;
    Ok(())
}

/// containerd pulls fixture `f` from `host` (whose tag points at `top`) for linux/amd64, and an
/// index with `--all-platforms`.
pub fn containerd_pulls_fixture(
    ctd: &Containerd,
    host: &str,
    f: &Fixture,
    top: &str,
) -> Result<(), String> {
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
}

/// Checks `docker image inspect IMAGE` of a pulled image against the fixture image for `arch`:
/// the image ID is the config digest, the rootfs layers are the diff_ids, the platform is
/// linux/`arch`, and `RepoDigests` holds `repo_digest` (`HOST/REPO@DIGEST`, the manifest or
/// index digest the image was pulled by).
pub fn check_docker_image(
    dockerd: &Dockerd,
    image: &str,
    expect: &Expect,
    arch: &str,
    repo_digest: &str,
) -> Result<(), String> {
    let info = dockerd.image_inspect(image)?;
    let want = image_for(expect, arch)?;
    check_id_and_layers("docker", &info, &want.config, want)?;
    let platform = (
        info["Os"].as_str().unwrap_or(""),
        info["Architecture"].as_str().unwrap_or(""),
    );
    if platform != ("linux", arch) {
        return Err(format!("docker pulled {platform:?}, want linux/{arch}"));
    }
    let repo_digests: Vec<&str> = info["RepoDigests"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !repo_digests.contains(&repo_digest) {
        return Err(format!(
            "docker's RepoDigests {repo_digests:?} lack {repo_digest}"
        ));
    }
    Ok(())
}
