//! Azure Blob Storage end to end: the real binary publishes into, verifies, prunes, exports from
//! and serves a real Azurite (tests/common/azurite.rs), which checks the Shared Key signature of
//! every request the store makes and the SAS of every URL `serve` redirects a client to.
//!
//! - every fixture pulls through SAS redirects with skopeo, podman, containerd's `ctr` and the
//!   Docker daemon, with the content checks of tests/pull.rs;
//! - Azurite serves a SAS URL with the manifest's media type (`rsct`) to GET and HEAD, and
//!   refuses it tampered, moved to another blob, or expired;
//! - racing publishers keep every tag (the index compare-and-swap on ETags);
//! - `verify --deep`, `untag` + `prune`, and `export` work unchanged;
//! - the account key appears in no output, log or stored blob.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::azurite::{AzureWorld, CONTAINER, PREFIX};
use common::checks::{
    check_docker_image, containerd_pulls_fixture, expected_top, for_each_fixture,
    podman_pulls_fixture, skopeo_pulls_fixture,
};
use common::clients::{Containerd, Podman, Skopeo};
use common::docker::Dockerd;
use common::fixtures::{self, Fixture, OCI_MANIFEST};
use common::world::{fetch, Serve, World};
use common::{describe_output, sha256};
use serde_json::Value;

/// Every fixture published into a fresh container, checked with `verify --deep`, and served.
struct Published {
    world: AzureWorld,
    serve: Serve,
    fixtures: Vec<Fixture>,
}

fn published(serve_args: &[&str]) -> Published {
    let world = AzureWorld::start();
    let config = world.config("store", "");
    let fixtures = world.publish_fixtures(&config);
    let serve = world.serve(&config, serve_args);
    Published {
        world,
        serve,
        fixtures,
    }
}

/// Blob names in the container (under the layout prefix), as the SDK lists them.
fn stored_names(world: &AzureWorld) -> BTreeSet<String> {
    world
        .azurite
        .sdk(&format!(
            "for b in c.get_container_client({CONTAINER:?}).list_blobs(name_starts_with={:?}): print(b.name)",
            format!("{PREFIX}/")
        ))
        .lines()
        .map(|l| l.trim_start_matches(&format!("{PREFIX}/")).to_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Every client pulls through SAS redirects
// ---------------------------------------------------------------------------------------------

#[test]
fn skopeo_and_podman_pull_every_fixture_from_azure() {
    let mut skopeo = Skopeo::new();
    let podman = Podman::new();
    let Published {
        world,
        serve,
        fixtures,
    } = published(&[]);
    let host = serve.host();
    // The redirects go to Azurite with a SAS, not through `serve`.
    let top = serve.tag_digest(fixtures[0].repo(), fixtures[0].tag());
    let location = serve.location(&format!("/v2/{}/manifests/{top}", fixtures[0].repo()));
    assert!(
        location.starts_with(&format!(
            "{}/{CONTAINER}/{PREFIX}/manifests/sha256/",
            world.azurite.endpoint()
        )) && location.contains("&sig="),
        "{location}"
    );
    for_each_fixture(&fixtures, |f| {
        let top = expected_top(serve.tag_digest(f.repo(), f.tag()), f)?;
        skopeo_pulls_fixture(&mut skopeo, &host, f, &top)?;
        podman_pulls_fixture(&podman, &host, f, &top)
    });
    drop(serve);
    world.assert_no_secret_leaked();
}

#[test]
fn containerd_and_docker_pull_every_fixture_from_azure() {
    let ctd = Containerd::start();
    let dockerd = Dockerd::start();
    let Published {
        world,
        serve,
        fixtures,
    } = published(&[]);
    let host = serve.host();
    let docker_version = dockerd.version();
    for_each_fixture(&fixtures, |f| {
        let top = expected_top(serve.tag_digest(f.repo(), f.tag()), f)?;
        containerd_pulls_fixture(&ctd, &host, f, &top)?;
        // Docker 20.10 (Debian 12's) cannot unpack zstd layers (tests/docker.rs).
        let zstd = f
            .expect
            .amd64()
            .compression
            .is_some_and(|c| c.contains("zstd"));
        if zstd && docker_version < (23, 0) {
            return Ok(());
        }
        dockerd.remove_all_images()?;
        let by_tag = format!("{host}/{}", f.pull_ref);
        dockerd.pull(&by_tag)?;
        check_docker_image(
            &dockerd,
            &by_tag,
            &f.expect,
            "amd64",
            &format!("{host}/{}@{top}", f.repo()),
        )
    });
    dockerd.assert_stayed_local();
    drop(serve);
    world.assert_no_secret_leaked();
}

// ---------------------------------------------------------------------------------------------
// 2. Azurite enforces the SAS
// ---------------------------------------------------------------------------------------------

/// The URL with one character of its signature changed.
fn tampered(url: &str) -> String {
    let at = url.find("&sig=").expect("a sig parameter") + 5;
    let mut bytes = url.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

#[test]
fn sas_urls_are_read_only_one_blob_and_expire() {
    let Published {
        world,
        serve,
        fixtures,
    } = published(&["--url-ttl", "3"]);
    let f = fixtures
        .iter()
        .find(|f| f.name == "oci-single")
        .expect("the oci-single fixture (an OCI image manifest)");
    let top = serve.tag_digest(f.repo(), f.tag());
    let manifest_url = serve.location(&format!("/v2/{}/manifests/{top}", f.repo()));
    let query: BTreeMap<&str, &str> = manifest_url
        .split_once('?')
        .unwrap()
        .1
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    assert_eq!(query.get("sp"), Some(&"r"), "read only: {manifest_url}");
    assert_eq!(query.get("sr"), Some(&"b"), "one blob: {manifest_url}");
    assert!(!query.contains_key("st"), "no start time: {manifest_url}");

    // GET: the manifest's bytes, with its media type (rsct); HEAD on the same URL.
    let got = fetch("GET", &manifest_url);
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(sha256(&got.body), top);
    assert_eq!(got.header("content-type"), Some(OCI_MANIFEST));
    let head = fetch("HEAD", &manifest_url);
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(head.header("content-type"), Some(OCI_MANIFEST));

    // A blob through its own URL, and the same signature on another blob refused.
    let manifest: Value = serde_json::from_slice(&got.body).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let blob_url = serve.location(&format!("/v2/{}/blobs/{layer}", f.repo()));
    let blob = fetch("GET", &blob_url);
    assert_eq!((blob.status, sha256(&blob.body)), (200, layer.to_owned()));
    let (_, blob_query) = blob_url.split_once('?').unwrap();
    let (manifest_path, _) = manifest_url.split_once('?').unwrap();
    let moved = format!("{manifest_path}?{blob_query}");
    assert_eq!(
        fetch("GET", &moved).status,
        403,
        "another blob's SAS: {moved}"
    );
    assert_eq!(fetch("GET", &tampered(&manifest_url)).status, 403);

    // A well-formed write (curl, with the blob-type header Azure requires) with the read SAS is
    // refused, and the manifest is unchanged.
    let put = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
        .args([
            "-H",
            "x-ms-blob-type: BlockBlob",
            "--data-binary",
            "overwritten",
        ])
        .arg(&manifest_url)
        .output()
        .expect("run curl");
    assert_eq!(
        String::from_utf8_lossy(&put.stdout),
        "403",
        "PUT with a read SAS"
    );
    assert_eq!(sha256(&fetch("GET", &manifest_url).body), top);

    // Expired: the same URL, untouched, after its 3 s.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = fetch("GET", &manifest_url);
        if r.status == 403 {
            break;
        }
        assert_eq!(r.status, 200, "{r:?}");
        assert!(
            Instant::now() < deadline,
            "the SAS never expired: {manifest_url}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(serve);
    world.assert_no_secret_leaked();
}

// ---------------------------------------------------------------------------------------------
// 3. Racing publishers keep every tag
// ---------------------------------------------------------------------------------------------

#[test]
fn racing_publishers_keep_every_tag_on_azure() {
    let world = AzureWorld::start();
    let config = world.config("store", "");
    let outputs = world.publish_concurrently(&config, &World::race_jobs(6));
    let retries: usize = outputs
        .iter()
        .map(|(_, out)| {
            String::from_utf8_lossy(&out.stderr)
                .matches("changed concurrently, retrying")
                .count()
        })
        .sum();
    eprintln!("compare-and-swap retries: {retries}");
    let history = world.run_ok(&config, &["history", "race/app", "--output", "json"]);
    let history: Value = serde_json::from_slice(&history.stdout).unwrap();
    let text = history.to_string();
    for i in 0..6 {
        assert!(text.contains(&format!("\"t{i}\"")), "tag t{i} lost: {text}");
    }
    // Both publishes of `same` are recorded, in commit order: two moves.
    let out = world.run_ok(&config, &["history", "race/app:same", "--output", "json"]);
    let same: Value = serde_json::from_slice(&out.stdout).unwrap();
    let moves = same.to_string().matches("\"at\"").count();
    assert_eq!(moves, 2, "history of race/app:same: {same}");
    let out = world.verify(&config, true);
    assert!(out.status.success(), "{}", describe_output("verify", &out));
    world.assert_no_secret_leaked();
}

// ---------------------------------------------------------------------------------------------
// 4. verify, prune and export work unchanged
// ---------------------------------------------------------------------------------------------

#[test]
fn untag_prune_and_export_on_azure() {
    let world = AzureWorld::start();
    let config = world.config("store", "");
    world.check_untag_prune_export(&config, || stored_names(&world).into_iter().collect());
    world.assert_no_secret_leaked();
}

#[test]
fn a_large_blob_is_uploaded_in_blocks() {
    const MIB: usize = 1024 * 1024;
    let world = AzureWorld::start();
    let work = tempfile::tempdir().unwrap();
    let (layout, diff_id, _) = fixtures::big_layout(work.path(), 12 * MIB);
    // 5 MiB parts above 5 MiB: the ~12 MiB compressed layer goes as a block blob in 3 blocks.
    let config = world.write_config(
        "blocks",
        &format!(
            "store = \"{}\"\n\n[azure]\nendpoint = \"{}\"\nmultipart_threshold = 5242880\npart_size = 5242880\n",
            world.location(),
            world.azurite.endpoint()
        ),
    );
    world.publish(
        &config,
        &format!("oci:{}:1.0", layout.display()),
        &["fix/big:1.0"],
        &[],
    );
    world.run_ok(&config, &["verify", "--deep"]);
    let big: Vec<String> = stored_names(&world)
        .into_iter()
        .filter(|k| k.starts_with("blobs/"))
        .collect();
    // The SDK's view: the largest blob was committed from several blocks.
    let blocks = world.azurite.sdk(&format!(
        "cc = c.get_container_client({CONTAINER:?})\n\
         b = max(cc.list_blobs(name_starts_with={:?}), key=lambda b: b.size)\n\
         committed, _ = cc.get_blob_client(b.name).get_block_list('committed')\n\
         print(len(committed), b.size)",
        format!("{PREFIX}/blobs/")
    ));
    let (n, size) = blocks.trim().split_once(' ').expect("count and size");
    let (n, size): (usize, usize) = (n.parse().unwrap(), size.parse().unwrap());
    assert!(
        size > 10 * MIB && n == size.div_ceil(5 * MIB),
        "{blocks} ({big:?})"
    );
    // And it pulls back intact: skopeo checks the layer's digest, the config its diff_id.
    let serve = world.serve(&config, &[]);
    let mut skopeo = Skopeo::new();
    let pulled = skopeo
        .copy(&serve.host(), "fix/big:1.0", false, None)
        .unwrap_or_else(|e| panic!("{e}"));
    let (_, manifest) = pulled.manifest().unwrap();
    let manifest: Value = serde_json::from_slice(&manifest).unwrap();
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    let config: Value = serde_json::from_slice(&pulled.get(config_digest).unwrap()).unwrap();
    assert_eq!(config["rootfs"]["diff_ids"][0], diff_id.as_str());
    drop(serve);
    world.assert_no_secret_leaked();
}

// ---------------------------------------------------------------------------------------------
// 5. User-delegation SAS with an Azure AD identity
// ---------------------------------------------------------------------------------------------

/// Fetches an https URL from Azurite with curl, trusting only the test CA; returns the status and
/// the body.
fn curl(ca: &Path, url: &str) -> (String, Vec<u8>) {
    let out = std::process::Command::new("curl")
        .args(["-s", "--cacert"])
        .arg(ca)
        .args(["-w", "\n%{http_code}"])
        .arg(url)
        .output()
        .expect("run curl");
    let mut body = out.stdout;
    let split = body.iter().rposition(|b| *b == b'\n').unwrap_or(0);
    let status = String::from_utf8_lossy(&body[split + 1..]).into_owned();
    body.truncate(split);
    (status, body)
}

#[test]
fn user_delegation_sas_with_an_azure_ad_identity() {
    use common::azurite::{OBJECT_ID, TENANT};
    let world = AzureWorld::start_with_oauth();
    let config = world.config("store", "");
    // Publishing writes with the bearer token alone.
    world.publish(&config, "oci:fixtures/oci-single:1.0", &["ad/app:1.0"], &[]);
    let out = world.verify(&config, true);
    assert!(
        out.status.success(),
        "{}",
        describe_output("verify --deep", &out)
    );
    // No account key anywhere: the default origin signs user-delegation SAS.
    let serve = world.serve(&config, &[]);
    let top = serve.tag_digest("ad/app", "1.0");
    let url = serve.location(&format!("/v2/ad/app/manifests/{top}"));
    let query: BTreeMap<&str, &str> = url
        .split_once('?')
        .unwrap()
        .1
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    assert_eq!(query.get("skoid"), Some(&OBJECT_ID), "{url}");
    assert_eq!(query.get("sktid"), Some(&TENANT), "{url}");
    assert_eq!(query.get("spr"), Some(&"https"), "{url}");
    assert_eq!((query.get("sp"), query.get("sr")), (Some(&"r"), Some(&"b")));
    let ca = world.azurite.ca().unwrap();
    let (status, body) = curl(&ca, &url);
    assert_eq!(
        (status.as_str(), sha256(&body)),
        ("200", top.clone()),
        "{url}"
    );
    let (status, _) = curl(&ca, &tampered(&url));
    assert_eq!(status, "403", "a tampered user-delegation SAS");
    // A key the service never issued (another object id) is refused too.
    let forged = url.replace(
        &format!("skoid={OBJECT_ID}"),
        "skoid=00000000-0000-4000-8000-000000000000",
    );
    assert_eq!(curl(&ca, &forged).0, "403");
    drop(serve);
    world.assert_no_secret_leaked();
}
