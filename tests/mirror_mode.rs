//! Mirror mode (`[mirror]`, docs/mirror.md): `serve` as the pull-through cache that containerd,
//! podman and Docker are configured to use, filling the store from a real upstream (Debian's
//! `docker-registry`, open or behind a Bearer token service) without a content byte passing
//! through the endpoint.
//!
//! Each test starts its own upstream, store and endpoint on loopback. Clients only ever pull what
//! the upstream or the endpoint has: nothing may fall back to a public registry.

mod common;

use std::path::Path;
use std::time::Duration;

use common::checks::check_docker_image;
use common::clients::{Containerd, Podman, Skopeo};
use common::docker::Dockerd;
use common::fixtures::{self, check_pulled, Expect, Platforms};
use common::lb::metric_sum;
use common::upstream::{TokenServer, Upstream, UpstreamAuth, TOKEN_ISSUER, TOKEN_SERVICE};
use common::{blocking_request, files_under, new_store, wait_for, Server};

/// Where the tests' upstream lives in the store (its host has a port: not a repository path).
const PREFIX: &str = "upstream";

/// A config file with one upstream (the test's registry), populating `library/*`.
fn config(dir: &Path, up: &Upstream, extra: &str) -> std::path::PathBuf {
    let path = dir.join("mirror.toml");
    let text = format!(
        "[mirror]\nretry_after = 1\n\n[[mirror.upstreams]]\nhost = \"{host}\"\nurl = \"http://{host}\"\nprefix = \"{PREFIX}\"\npopulate = true\nallow = [\"library/*\"]\n{extra}",
        host = up.host()
    );
    std::fs::write(&path, text).expect("write config");
    path
}

fn serve(store: &Path, cfg: &Path, env: &[(&str, &str)]) -> Server {
    Server::start_with_env(store, &["--config", cfg.to_str().expect("UTF-8 path")], env)
}

/// The status and `Docker-Content-Digest` of `HEAD path`.
fn head(s: &Server, path: &str) -> (u16, Option<String>) {
    let r =
        blocking_request(s.addr, "HEAD", path).unwrap_or_else(|| panic!("HEAD {path}: no answer"));
    (
        r.status,
        r.header("docker-content-digest").map(str::to_owned),
    )
}

/// Waits until `HEAD path` answers 200 (a populate finished), returning the digest.
fn until_present(s: &Server, path: &str) -> String {
    wait_for(
        &format!("{path} to be populated"),
        Duration::from_secs(90),
        || match head(s, path) {
            (200, d) => d,
            _ => None,
        },
    )
}

/// The store's index of `{PREFIX}/NAME`, parsed.
fn index_of(store: &Path, name: &str) -> serde_json::Value {
    let path = store.join(format!("repositories/{PREFIX}/{name}/_index.json"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).expect("index JSON")
}

fn metric(s: &Server, name: &str, labels: &[&str]) -> f64 {
    let text = blocking_request(s.addr, "GET", "/metrics")
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .unwrap_or_default();
    metric_sum(&text, name, labels).unwrap_or(0.0)
}

/// containerd's mirror convention: `DIR/<upstream>/hosts.toml` with the endpoint as first host.
fn hosts_dir(up: &Upstream, s: &Server) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("hosts dir");
    let d = dir.path().join(up.host());
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("hosts.toml"),
        format!(
            "server = \"http://{}\"\n\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            up.host(),
            s.host()
        ),
    )
    .unwrap();
    dir
}

#[test]
fn containerd_falls_back_then_pulls_the_populated_image_from_the_store() {
    let mut up = Upstream::start(UpstreamAuth::Open);
    up.push("oci:fixtures/oci-multi:latest", "library/app:1", true, None);
    let multi = fixtures::oci_multi();
    let store = new_store();
    let cfg_dir = tempfile::tempdir().unwrap();
    let s = serve(store.path(), &config(cfg_dir.path(), &up, ""), &[]);
    let hosts = hosts_dir(&up, &s);
    let hosts_arg = hosts.path().to_str().unwrap();
    let image = format!("{}/library/app:1", up.host());

    // Cold: the endpoint answers 404 (containerd falls back to the upstream) and populates.
    let ctd = Containerd::start();
    ctd.pull_with(&image, &["--hosts-dir", hosts_arg, "--all-platforms"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ctd.image(&image).unwrap().0, Expect::top_digest(&multi));
    assert!(
        metric(
            &s,
            "static_registry_mirror_requests_total",
            &["result=\"miss\""]
        ) >= 1.0
    );
    let ns = format!("?ns={}", up.host());
    let digest = until_present(&s, &format!("/v2/library/app/manifests/1{ns}"));
    assert_eq!(digest, Expect::top_digest(&multi));
    // The store holds it under the upstream's prefix, every platform, the tag stamped mirrored.
    let idx = index_of(store.path(), "library/app");
    assert_eq!(idx["tags"]["1"]["digest"], Expect::top_digest(&multi));
    assert_eq!(idx["mirrored"]["1"]["upstream"], up.host());
    assert_eq!(
        metric(
            &s,
            "static_registry_mirror_populates_total",
            &["result=\"succeeded\""]
        ),
        1.0
    );
    assert!(metric(&s, "static_registry_mirror_copied_bytes_total", &[]) > 0.0);

    // Warm, upstream still up: the client fetches no blob from it.
    let gets = up.blob_gets();
    let ctd2 = Containerd::start();
    ctd2.pull_with(&image, &["--hosts-dir", hosts_arg, "--all-platforms"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        up.blob_gets(),
        gets,
        "the second pull fetched blobs from the upstream"
    );
    check_pulled(&multi, &digest, Platforms::All, &mut |d| ctd2.content(d))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        metric(
            &s,
            "static_registry_mirror_requests_total",
            &["result=\"hit\""]
        ) >= 1.0
    );

    // Upstream down: the pull is served from the store alone.
    up.stop();
    let ctd3 = Containerd::start();
    ctd3.pull_with(&image, &["--hosts-dir", hosts_arg, "--all-platforms"])
        .unwrap_or_else(|e| panic!("upstream stopped: {e}"));
    check_pulled(&multi, &digest, Platforms::All, &mut |d| ctd3.content(d))
        .unwrap_or_else(|e| panic!("{e}"));
    // And no content byte ever came through the endpoint: every blob GET was a redirect.
    let log = s.log();
    assert!(!log.contains("mirror copy failed"), "{log}");
}

#[test]
fn podman_path_prefix_mirror_pulls_what_a_token_protected_upstream_populated() {
    let (user, pass) = ("carol", format!("pw-{:016x}", rand::random::<u64>()));
    let tokens = TokenServer::start(user, &pass);
    let mut up = Upstream::start(UpstreamAuth::Token {
        realm: tokens.realm(),
        service: TOKEN_SERVICE.into(),
        issuer: TOKEN_ISSUER.into(),
    });
    let creds = format!("{user}:{pass}");
    up.push(
        "oci:fixtures/oci-single:1.0",
        "library/tool:1.0",
        false,
        Some(&creds),
    );
    let single = fixtures::oci_single();
    let store = new_store();
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = config(
        cfg_dir.path(),
        &up,
        "username_env = \"SR_UPSTREAM_USER\"\npassword_env = \"SR_UPSTREAM_PASS\"\n",
    );
    let s = serve(
        store.path(),
        &cfg,
        &[("SR_UPSTREAM_USER", user), ("SR_UPSTREAM_PASS", &pass)],
    );

    // A miss by digest (what a pinned deployment asks for) populates without a tag.
    let want = Expect::top_digest(&single);
    let by_digest = format!("/v2/{PREFIX}/library/tool/manifests/{want}");
    assert_eq!(head(&s, &by_digest).0, 404);
    assert_eq!(until_present(&s, &by_digest), want);
    // Then the tag.
    let by_tag = format!("/v2/{PREFIX}/library/tool/manifests/1.0");
    assert_eq!(head(&s, &by_tag).0, 404);
    assert_eq!(until_present(&s, &by_tag), want);

    // podman/CRI-O: the mirror location carries the store prefix as its path.
    up.stop();
    let podman = Podman::with_registries(&format!(
        "\n[[registry]]\nprefix = \"{up}\"\nlocation = \"{up}\"\ninsecure = true\n\n[[registry.mirror]]\nlocation = \"{s}/{PREFIX}\"\ninsecure = true\n",
        up = up.host(),
        s = s.host()
    ));
    podman
        .pull_with(&format!("{}/library/tool:1.0", up.host()), &[])
        .unwrap_or_else(|e| panic!("podman through the mirror, upstream stopped: {e}"));
    let info = podman
        .inspect(&format!("{}/library/tool:1.0", up.host()))
        .unwrap();
    assert!(
        info["RepoDigests"].to_string().contains(&want),
        "podman pulled another image: {info}"
    );

    // The upstream password is in no stored file and no log line.
    for f in files_under(store.path()) {
        // Leases come and go while the copier runs.
        let Ok(bytes) = std::fs::read(&f) else {
            continue;
        };
        assert!(
            !String::from_utf8_lossy(&bytes).contains(&pass),
            "{} holds the upstream password",
            f.display()
        );
    }
    assert!(
        !s.log().contains(&pass),
        "serve logged the upstream password"
    );
}

#[test]
fn two_replicas_that_miss_together_copy_once() {
    let up = Upstream::start(UpstreamAuth::Open);
    up.push("oci:fixtures/oci-multi:latest", "library/app:1", true, None);
    let multi = fixtures::oci_multi();
    let store = new_store();
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = config(cfg_dir.path(), &up, "");
    let a = serve(store.path(), &cfg, &[]);
    let b = serve(store.path(), &cfg, &[]);
    let path = format!("/v2/library/app/manifests/1?ns={}", up.host());
    let before = up.blob_gets();
    std::thread::scope(|sc| {
        sc.spawn(|| head(&a, &path));
        sc.spawn(|| head(&b, &path));
    });
    let want = Expect::top_digest(&multi);
    assert_eq!(until_present(&a, &path), want);
    assert_eq!(until_present(&b, &path), want);
    // Every distinct blob of every platform exactly once, whichever replica copied it.
    let idx = index_of(store.path(), "library/app");
    let blobs = idx["blobs"].as_object().expect("blobs").len();
    assert!(blobs >= 4, "{idx}");
    assert_eq!(up.blob_gets() - before, blobs, "{}", up.log());
    let count = |result: &str| {
        let label = format!("result=\"{result}\"");
        metric(&a, "static_registry_mirror_populates_total", &[&label])
            + metric(&b, "static_registry_mirror_populates_total", &[&label])
    };
    let (started, skipped) = (count("started"), count("leased") + count("present"));
    // One copied; the other found the lease held, or the image present once it had the lease.
    assert_eq!(
        started, 1.0,
        "copies started: {started} (skipped {skipped})"
    );
    assert!(skipped >= 1.0, "the other replica never tried");
}

#[test]
fn only_the_allow_list_is_populated() {
    let up = Upstream::start(UpstreamAuth::Open);
    up.push("oci:fixtures/oci-single:1.0", "someone/else:1", false, None);
    up.push("oci:fixtures/oci-single:1.0", "library/ok:1", false, None);
    let store = new_store();
    let cfg_dir = tempfile::tempdir().unwrap();
    let s = serve(store.path(), &config(cfg_dir.path(), &up, ""), &[]);
    let ns = format!("?ns={}", up.host());
    // The refused one first, then an allowed one: once the allowed one is in, the refused one
    // has had every chance to be copied.
    assert_eq!(
        head(&s, &format!("/v2/someone/else/manifests/1{ns}")).0,
        404
    );
    assert_eq!(head(&s, &format!("/v2/library/ok/manifests/1{ns}")).0, 404);
    until_present(&s, &format!("/v2/library/ok/manifests/1{ns}"));
    assert_eq!(
        head(&s, &format!("/v2/someone/else/manifests/1{ns}")).0,
        404
    );
    assert!(!store
        .path()
        .join(format!("repositories/{PREFIX}/someone"))
        .exists());
    assert!(
        !up.log().contains("\"GET /v2/someone/else/manifests"),
        "the upstream was asked for it"
    );
    assert_eq!(
        metric(
            &s,
            "static_registry_mirror_populates_total",
            &["result=\"not_allowed\""]
        ),
        2.0
    );
    // An upstream nobody configured is never answered from another namespace.
    assert_eq!(head(&s, "/v2/library/ok/manifests/1?ns=quay.io").0, 404);
}

#[test]
fn a_tag_moved_upstream_moves_after_tag_ttl_and_the_old_digest_still_pulls() {
    let up = Upstream::start(UpstreamAuth::Open);
    up.push(
        "oci:fixtures/oci-single:1.0",
        "library/app:stable",
        false,
        None,
    );
    let store = new_store();
    let cfg_dir = tempfile::tempdir().unwrap();
    let s = serve(
        store.path(),
        &config(cfg_dir.path(), &up, "tag_ttl = 1\n"),
        &[],
    );
    let path = format!("/v2/{PREFIX}/library/app/manifests/stable");
    assert_eq!(head(&s, &path).0, 404);
    let old = until_present(&s, &path);
    assert_eq!(old, Expect::top_digest(&fixtures::oci_single()));

    // The upstream moves the tag to another image.
    up.push(
        "oci:fixtures/oci-multi:latest",
        "library/app:stable",
        true,
        None,
    );
    let new = Expect::top_digest(&fixtures::oci_multi());
    // Served from the store meanwhile (stale is fine: the upstream may be down), then moved.
    let moved = wait_for("the tag to move", Duration::from_secs(90), || {
        std::thread::sleep(Duration::from_millis(300));
        match head(&s, &path) {
            (200, Some(d)) if d == new => Some(d),
            (200, Some(d)) => {
                assert_eq!(d, old, "the tag pointed somewhere unexpected");
                None
            }
            other => panic!("a stale tag must still be served: {other:?}"),
        }
    });
    assert_eq!(moved, new);
    assert!(
        metric(
            &s,
            "static_registry_mirror_populates_total",
            &["result=\"succeeded\""]
        ) >= 2.0
    );
    // Digest references never change: the old image still pulls.
    let mut skopeo = Skopeo::new();
    let pulled = skopeo
        .copy(
            &s.host(),
            &format!("{PREFIX}/library/app@{old}"),
            false,
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pulled.manifest().unwrap().0, old);
}

#[test]
fn an_immutable_mirrored_tag_is_not_moved_by_a_refresh() {
    let up = Upstream::start(UpstreamAuth::Open);
    up.push("oci:fixtures/oci-single:1.0", "library/app:v1", false, None);
    let store = new_store();
    let cfg_dir = tempfile::tempdir().unwrap();
    let extra = format!("tag_ttl = 1\n\n[[immutable]]\nprefix = \"{PREFIX}/\"\ntags = [\"v*\"]\n");
    let s = serve(store.path(), &config(cfg_dir.path(), &up, &extra), &[]);
    let path = format!("/v2/{PREFIX}/library/app/manifests/v1");
    assert_eq!(head(&s, &path).0, 404);
    let old = until_present(&s, &path);
    up.push(
        "oci:fixtures/oci-multi:latest",
        "library/app:v1",
        true,
        None,
    );
    // The refresh runs, is refused by the immutable rule, and the tag stays where it was.
    wait_for("a refused refresh", Duration::from_secs(60), || {
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(head(&s, &path), (200, Some(old.clone())), "the tag moved");
        (metric(
            &s,
            "static_registry_mirror_populates_total",
            &["result=\"failed\""],
        ) >= 1.0)
            .then_some(())
    });
    assert_eq!(head(&s, &path), (200, Some(old.clone())));
    assert!(s.log().contains("immutable"), "{}", s.log());
    assert_eq!(
        index_of(store.path(), "library/app")["tags"]["v1"]["digest"],
        old.as_str()
    );
}

#[test]
fn docker_registry_mirrors_pulls_a_docker_hub_name_from_the_store() {
    // The test's registry plays Docker Hub: `host = "docker.io"` takes Docker's bare names.
    let mut up = Upstream::start(UpstreamAuth::Open);
    up.push(
        "oci:fixtures/oci-multi:latest",
        "library/tool:1.0",
        true,
        None,
    );
    let multi = fixtures::oci_multi();
    let store = new_store();
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("hub.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[mirror.upstreams]]\nhost = \"docker.io\"\nurl = \"http://{}\"\npopulate = true\nallow = [\"library/*\"]\n",
            up.host()
        ),
    )
    .unwrap();
    let s = serve(store.path(), &cfg, &[]);
    // Populate first: a miss would send the daemon to the real Docker Hub.
    let path = "/v2/library/tool/manifests/1.0?ns=docker.io";
    assert_eq!(head(&s, path).0, 404);
    let want = until_present(&s, path);
    assert_eq!(want, Expect::top_digest(&multi));
    assert!(store
        .path()
        .join("repositories/docker.io/library/tool/_index.json")
        .exists());
    up.stop();

    let docker = Dockerd::start_with(&["--registry-mirror", &s.url("")]);
    docker
        .pull("tool:1.0")
        .unwrap_or_else(|e| panic!("docker pull through registry-mirrors: {e}\n{}", s.log()));
    check_docker_image(
        &docker,
        "tool:1.0",
        &multi,
        "amd64",
        &format!("tool@{want}"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    docker.assert_stayed_local();
    // The bare name reached the store's docker.io/library/tool, as a hit.
    assert!(
        s.log()
            .contains("path=\"/v2/library/tool/manifests/1.0\" status=200"),
        "{}",
        s.log()
    );
    assert!(
        metric(
            &s,
            "static_registry_mirror_requests_total",
            &["upstream=\"docker.io\"", "result=\"hit\""]
        ) >= 1.0
    );
}

#[test]
fn the_size_limit_and_platform_filter_bound_a_copy() {
    let up = Upstream::start(UpstreamAuth::Open);
    up.push("oci:fixtures/oci-multi:latest", "library/app:1", true, None);
    let path = format!("/v2/library/app/manifests/1?ns={}", up.host());

    // Over the size limit: refused before a blob is fetched, counted, logged, still a miss.
    let store = new_store();
    let cfg_dir = tempfile::tempdir().unwrap();
    let small = serve(
        store.path(),
        &config(cfg_dir.path(), &up, "max_image_bytes = 100\n"),
        &[],
    );
    let before = up.blob_gets();
    assert_eq!(head(&small, &path).0, 404);
    wait_for("the copy to fail", Duration::from_secs(60), || {
        (metric(
            &small,
            "static_registry_mirror_populates_total",
            &["result=\"failed\""],
        ) >= 1.0)
            .then_some(())
    });
    assert!(
        small.log().contains("over the limit of 100 bytes"),
        "{}",
        small.log()
    );
    assert_eq!(
        up.blob_gets(),
        before,
        "blobs were fetched for a refused image"
    );
    assert_eq!(head(&small, &path).0, 404);
    drop(small);

    // A platform filter: only linux/arm64 of the index is copied (a filtered index of its own).
    let store = new_store();
    let cfg_dir = tempfile::tempdir().unwrap();
    let arm = serve(
        store.path(),
        &config(cfg_dir.path(), &up, "platforms = [\"linux/arm64\"]\n"),
        &[],
    );
    assert_eq!(head(&arm, &path).0, 404);
    let filtered = until_present(&arm, &path);
    let multi = fixtures::oci_multi();
    assert_ne!(filtered, Expect::top_digest(&multi));
    let Expect::Index { images, .. } = &multi else {
        panic!("oci-multi is an index")
    };
    let idx = index_of(store.path(), "library/app");
    let blobs = idx["blobs"].as_object().unwrap();
    let arm64 = images
        .iter()
        .find(|i| i.architecture == "arm64")
        .expect("arm64 image");
    let amd64 = images
        .iter()
        .find(|i| i.architecture == "amd64")
        .expect("amd64 image");
    assert!(blobs.contains_key(&arm64.config), "{idx}");
    assert!(!blobs.contains_key(&amd64.config), "{idx}");
}
