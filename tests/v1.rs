//! The registry v1 (legacy) protocol: `publish --v1` writes it, `serve` redirects it.
//!
//! Every single-platform fixture (and the linux/amd64 image of the multi-platform one) is
//! published with `--v1` into one store and pulled through `/v1/`:
//! - by a real v1 client nobody here wrote, the PyPI package `docker-registry-client`
//!   (tests/oracles/v1_pull.py);
//! - by replaying Docker 1.x's v1 pull sequence (`_ping`, `images`, `tags`, then `ancestry`,
//!   `json` and `layer` of each id) over HTTP, redirects followed, and also step by step without
//!   following them (every content answer is a 307 to a signed URL).
//!
//! Either way every layer must decompress to the config's diff_id at its position. Also: a legacy
//! `docker save` keeps its own ids and documents, the docker-25 archive's computed ids equal the
//! v1 documents the archive carries, republishing gives the same ids, v2 pulls are unaffected,
//! images v1 cannot serve (zstd layers) are refused with a note, and hostile or unknown v1
//! requests get a v1-style error and never a redirect.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::checks::assert_no_failures;
use common::clients::Skopeo;
use common::fixtures::{self, check_pulled, decompress, tar_members, Expect, Platforms};
use common::http::{client, raw};
use common::{describe_output, manifest_dir, new_store, publish_with, sha256, Server};
use reqwest::StatusCode;
use serde_json::Value;

/// A fixture published with `--v1`, and what a v1 pull of it must give.
struct V1Fixture {
    name: &'static str,
    source: &'static str,
    tags: Vec<&'static str>,
    repo: &'static str,
    tag: &'static str,
    /// The config's diff_ids of the image v1 serves (linux/amd64), bottom first.
    diff_ids: Vec<String>,
}

fn v1_fixtures() -> Vec<V1Fixture> {
    let diff_ids = |e: Expect| e.amd64().diff_ids.clone();
    vec![
        V1Fixture {
            name: "oci-single",
            source: "oci:fixtures/oci-single:1.0",
            tags: vec!["fix/oci-single:1.0"],
            repo: "fix/oci-single",
            tag: "1.0",
            diff_ids: diff_ids(fixtures::oci_single()),
        },
        V1Fixture {
            name: "oci-archive",
            source: "oci-archive:fixtures/oci-archive.tar:1.0",
            tags: vec!["fix/oci-archive:1.0"],
            repo: "fix/oci-archive",
            tag: "1.0",
            diff_ids: diff_ids(fixtures::oci_archive()),
        },
        V1Fixture {
            name: "docker-legacy",
            source: "docker-archive:fixtures/docker-legacy.tar",
            tags: vec![],
            repo: "legacy/hello",
            tag: "1.0",
            diff_ids: diff_ids(fixtures::docker_legacy()),
        },
        V1Fixture {
            name: "docker-25",
            source: "docker-archive:fixtures/docker-25.tar",
            tags: vec![],
            repo: "modern/hello",
            tag: "2.0",
            diff_ids: diff_ids(fixtures::docker_25()),
        },
        V1Fixture {
            name: "oci-multi (linux/amd64)",
            source: "oci:fixtures/oci-multi:latest",
            tags: vec!["fix/multi:latest"],
            repo: "fix/multi",
            tag: "latest",
            diff_ids: diff_ids(fixtures::oci_multi()),
        },
    ]
}

/// Publishes every v1 fixture with `--v1` into `store`.
fn publish_v1(store: &Path, fixtures: &[V1Fixture]) {
    for f in fixtures {
        publish_with(store, f.source, &f.tags, &["--v1"]);
    }
}

fn world() -> (tempfile::TempDir, Server, Vec<V1Fixture>) {
    let store = new_store();
    let fixtures = v1_fixtures();
    publish_v1(store.path(), &fixtures);
    let server = Server::start(store.path(), &[]);
    (store, server, fixtures)
}

/// Runs `check` for every fixture, then fails listing every fixture that failed.
fn for_each(fixtures: &[V1Fixture], mut check: impl FnMut(&V1Fixture) -> Result<(), String>) {
    let failures: Vec<String> = fixtures
        .iter()
        .filter_map(|f| check(f).err().map(|e| format!("[{}] {e}", f.name)))
        .collect();
    assert_no_failures(&failures, fixtures.len());
}

/// Checks a pulled v1 chain: `ancestry` is top first and as long as the image has layers, each
/// image's JSON names its id and parent, and each layer (in `layers`, same order) decompresses to
/// the diff_id at its position.
fn check_chain(
    f: &V1Fixture,
    ancestry: &[String],
    jsons: &[Value],
    layers: &[Vec<u8>],
) -> Result<(), String> {
    if ancestry.len() != f.diff_ids.len() {
        return Err(format!(
            "ancestry has {} ids, the image {} layers: {ancestry:?}",
            ancestry.len(),
            f.diff_ids.len()
        ));
    }
    for (i, id) in ancestry.iter().enumerate() {
        let json = &jsons[i];
        if json["id"] != id.as_str() {
            return Err(format!("json of {id} says id {}", json["id"]));
        }
        let want_parent = ancestry.get(i + 1).map(|p| Value::from(p.as_str()));
        let parent = json.get("parent").cloned();
        if parent != want_parent {
            return Err(format!(
                "json of {id} has parent {parent:?}, ancestry says {want_parent:?}"
            ));
        }
        // Bottom first in diff_ids; ancestry is top first.
        let diff_id = &f.diff_ids[f.diff_ids.len() - 1 - i];
        let tar = decompress(&layers[i]).map_err(|e| format!("layer of {id}: {e}"))?;
        if sha256(&tar) != *diff_id {
            return Err(format!(
                "layer of {id} decompresses to {}, the config's diff_id is {diff_id}",
                sha256(&tar)
            ));
        }
    }
    Ok(())
}

#[test]
fn python_v1_client_pulls_every_fixture() {
    let module = Command::new("python3")
        .args(["-c", "import docker_registry_client"])
        .output()
        .expect("run python3");
    assert!(
        module.status.success(),
        "the v1 client oracle needs the python module docker_registry_client: run \
         `python3 -m pip install docker-registry-client` (scripts/test.sh does)\n{}",
        String::from_utf8_lossy(&module.stderr)
    );
    let (_store, server, fixtures) = world();
    let script = manifest_dir().join("tests/oracles/v1_pull.py");
    for_each(&fixtures, |f| {
        let out_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("python3")
            .arg(&script)
            .arg(server.url(""))
            .arg(f.repo)
            .arg(f.tag)
            .arg(out_dir.path())
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(describe_output("v1_pull.py", &out));
        }
        let got: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "v1_pull.py output: {e}: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })?;
        if got["ping"] != Value::Bool(true) {
            return Err(format!("ping answered {}", got["ping"]));
        }
        if got["tags"]
            .as_array()
            .is_none_or(|t| !t.contains(&Value::from(f.tag)))
        {
            return Err(format!("tags {} do not list {}", got["tags"], f.tag));
        }
        let ancestry: Vec<String> =
            serde_json::from_value(got["ancestry"].clone()).map_err(|e| e.to_string())?;
        if got["image"] != ancestry[0].as_str() {
            return Err(format!(
                "image {} is not ancestry[0] {}",
                got["image"], ancestry[0]
            ));
        }
        let images = got["images"].as_array().cloned().unwrap_or_default();
        let jsons: Vec<Value> = images.iter().map(|i| i["json"].clone()).collect();
        let mut layers = Vec::new();
        for i in &images {
            // The client followed a 307 for every layer: the bytes came from the origin.
            if i["redirects"] != serde_json::json!([307]) {
                return Err(format!(
                    "layer of {} was not redirected once: {}",
                    i["id"], i["redirects"]
                ));
            }
            layers
                .push(std::fs::read(i["layer"].as_str().unwrap_or("")).map_err(|e| e.to_string())?);
        }
        check_chain(f, &ancestry, &jsons, &layers)
    });
}

/// `GET` with redirects followed (as Docker's Go client does); the final body, or the status.
async fn follow(http: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let r = http
        .get(url)
        .header("X-Docker-Token", "true")
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if r.status() != StatusCode::OK {
        return Err(format!("GET {url}: {}", r.status()));
    }
    Ok(r.bytes().await.map_err(|e| e.to_string())?.to_vec())
}

async fn follow_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
) -> Result<T, String> {
    let body = follow(http, url).await?;
    serde_json::from_slice(&body).map_err(|e| {
        format!(
            "GET {url}: not the JSON expected: {e}: {}",
            String::from_utf8_lossy(&body)
        )
    })
}

/// What one pull of a fixture's tag gave: the ancestry, and per id its JSON bytes and layer bytes.
struct Pulled {
    ancestry: Vec<String>,
    json_bytes: Vec<Vec<u8>>,
    layers: Vec<Vec<u8>>,
}

/// Docker 1.x's v1 pull of `repo:tag` (registry/session.go and graph/pull_v1.go): the images
/// list, the tags, then per tagged image its ancestry and, for each id, json then layer.
async fn docker1_pull(server: &Server, f: &V1Fixture) -> Result<Pulled, String> {
    let http = reqwest::Client::new();
    let ping = http
        .get(server.url("/v1/_ping"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if ping
        .headers()
        .get("x-docker-registry-standalone")
        .map(|v| v.as_bytes())
        != Some(b"true")
    {
        return Err(format!("ping: not standalone: {:?}", ping.headers()));
    }
    let repo = f.repo;
    let images: Vec<Value> = follow_json(
        &http,
        &server.url(&format!("/v1/repositories/{repo}/images")),
    )
    .await?;
    let tags: BTreeMap<String, String> =
        follow_json(&http, &server.url(&format!("/v1/repositories/{repo}/tags"))).await?;
    let top = tags
        .get(f.tag)
        .ok_or_else(|| format!("tags {tags:?} do not list {}", f.tag))?
        .clone();
    let one: String = follow_json(
        &http,
        &server.url(&format!("/v1/repositories/{repo}/tags/{}", f.tag)),
    )
    .await?;
    if one != top {
        return Err(format!("tags/{} says {one}, tags says {top}", f.tag));
    }
    let ancestry: Vec<String> =
        follow_json(&http, &server.url(&format!("/v1/images/{top}/ancestry"))).await?;
    for id in &ancestry {
        if !images.iter().any(|i| i["id"] == id.as_str()) {
            return Err(format!("images list {images:?} lacks {id}"));
        }
    }
    let mut json_bytes = Vec::new();
    let mut layers = Vec::new();
    for id in &ancestry {
        json_bytes.push(follow(&http, &server.url(&format!("/v1/images/{id}/json"))).await?);
        layers.push(follow(&http, &server.url(&format!("/v1/images/{id}/layer"))).await?);
    }
    Ok(Pulled {
        ancestry,
        json_bytes,
        layers,
    })
}

#[tokio::test]
async fn docker1_pull_sequence_gets_every_layer() {
    let (store, server, fixtures) = world();
    let mut results = Vec::new();
    for f in &fixtures {
        let r = docker1_pull(&server, f).await.and_then(|p| {
            let jsons: Vec<Value> = p
                .json_bytes
                .iter()
                .map(|b| serde_json::from_slice(b).map_err(|e| e.to_string()))
                .collect::<Result<_, _>>()?;
            check_chain(f, &p.ancestry, &jsons, &p.layers)?;
            Ok(p)
        });
        results.push(r);
    }
    let mut it = results.into_iter();
    for_each(&fixtures, |_| {
        it.next().expect("one result per fixture").map(|_| ())
    });

    // Step by step, redirects not followed: every content answer is a 307 with a Location and
    // the v1 headers; json and layer say the layer's size; the layer URL is the v2 blob's (one
    // copy of the bytes).
    let http = client();
    let f = &fixtures[0];
    let p = docker1_pull(&server, f).await.expect("pull");
    let index: Value = serde_json::from_slice(
        &std::fs::read(
            store
                .path()
                .join(format!("repositories/{}/_index.json", f.repo)),
        )
        .unwrap(),
    )
    .unwrap();
    for path in [
        format!("/v1/repositories/{}/images", f.repo),
        format!("/v1/repositories/{}/tags", f.repo),
        format!("/v1/repositories/{}/tags/{}", f.repo, f.tag),
        format!("/v1/images/{}/ancestry", p.ancestry[0]),
    ] {
        let r = http.get(server.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT, "{path}");
        assert!(r.headers().contains_key("location"), "{path}");
        assert_eq!(
            r.headers()["x-docker-registry-standalone"],
            "true",
            "{path}"
        );
        assert!(
            r.headers().contains_key("x-docker-registry-version"),
            "{path}"
        );
    }
    for (i, id) in p.ancestry.iter().enumerate() {
        let entry = &index["v1"]["images"][id];
        let size = entry["size"].as_u64().expect("size in the index");
        assert_eq!(size, p.layers[i].len() as u64);
        for file in ["json", "layer"] {
            let r = http
                .get(server.url(&format!("/v1/images/{id}/{file}")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
            assert_eq!(
                r.headers()["x-docker-size"],
                size.to_string().as_str(),
                "{file}"
            );
            let location = r.headers()["location"].to_str().unwrap();
            if file == "layer" {
                let digest = entry["layer"].as_str().unwrap();
                assert!(
                    location.contains(&format!("blobs/sha256/{}", common::hex_of(digest))),
                    "{location}"
                );
                assert_eq!(sha256(&p.layers[i]), digest);
            }
        }
        // HEAD is signed for HEAD and answered by the origin (S3 refuses HEAD on GET URLs).
        let r = reqwest::Client::new()
            .head(server.url(&format!("/v1/images/{id}/layer")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["content-length"], size.to_string().as_str());
    }
    // The embedded origin caches what the layout says never changes (image files, as publish
    // wrote them to the store) for good, and what moves with tags briefly.
    for (path, cache) in [
        (
            format!("/v1/images/{}/json", p.ancestry[0]),
            "public, max-age=31536000, immutable",
        ),
        (
            format!("/v1/images/{}/ancestry", p.ancestry[0]),
            "public, max-age=31536000, immutable",
        ),
        (
            format!("/v1/repositories/{}/tags", f.repo),
            "public, max-age=30",
        ),
    ] {
        let r = reqwest::Client::new()
            .get(server.url(&path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_eq!(r.headers()["cache-control"], cache, "{path}");
    }
    // No v1 layer was stored twice: the store's v1 tree holds only JSON documents.
    for file in common::files_under(&store.path().join("v1")) {
        let name = file.to_string_lossy();
        assert!(!name.ends_with("/layer"), "{name}");
    }
}

#[tokio::test]
async fn legacy_archive_keeps_its_ids_and_docker25_matches_its_own_v1_documents() {
    let (_store, server, fixtures) = world();
    let legacy = fixtures.iter().find(|f| f.name == "docker-legacy").unwrap();
    let p = docker1_pull(&server, legacy)
        .await
        .expect("pull legacy/hello");
    let members = tar_members(&manifest_dir().join("fixtures/docker-legacy.tar"));
    let repositories: Value = serde_json::from_slice(&members["repositories"]).unwrap();
    assert_eq!(
        repositories["legacy/hello"]["1.0"],
        p.ancestry[0].as_str(),
        "the tag names the archive's own top id"
    );
    for (id, json) in p.ancestry.iter().zip(&p.json_bytes) {
        assert_eq!(
            json,
            &members[&format!("{id}/json")],
            "the json of {id} is the archive's, byte for byte"
        );
    }
    let manifest: Value = serde_json::from_slice(&members["manifest.json"]).unwrap();
    let layer_dirs: Vec<String> = manifest[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|l| {
            l.as_str()
                .unwrap()
                .trim_end_matches("/layer.tar")
                .to_owned()
        })
        .collect();
    assert_eq!(p.ancestry, layer_dirs);

    // Docker 25 archives carry the v1 documents a legacy save would have held (unreferenced, in
    // blobs/); the ids computed on publish are theirs.
    let modern = fixtures.iter().find(|f| f.name == "docker-25").unwrap();
    let p = docker1_pull(&server, modern)
        .await
        .expect("pull modern/hello");
    let members = tar_members(&manifest_dir().join("fixtures/docker-25.tar"));
    for (id, json) in p.ancestry.iter().zip(&p.json_bytes) {
        let blob = format!("blobs/sha256/{}", common::hex_of(&sha256(json)));
        let theirs = members
            .get(&blob)
            .unwrap_or_else(|| panic!("docker-25.tar has no v1 document for {id}"));
        assert_eq!(json, theirs);
    }
}

/// Every v1 file of a store (path -> bytes), and each repository index's v1 section.
fn v1_state(store: &Path, repos: &[&str]) -> (BTreeMap<String, Vec<u8>>, Vec<Value>) {
    let files = common::files_under(&store.join("v1"))
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(store.join("v1").join(&p)).unwrap();
            (p.to_string_lossy().into_owned(), bytes)
        })
        .collect();
    let sections = repos
        .iter()
        .map(|r| {
            let idx: Value = serde_json::from_slice(
                &std::fs::read(store.join(format!("repositories/{r}/_index.json"))).unwrap(),
            )
            .unwrap();
            idx["v1"].clone()
        })
        .collect();
    (files, sections)
}

#[test]
fn republishing_gives_identical_ids() {
    let fixtures = v1_fixtures();
    let repos: Vec<&str> = fixtures.iter().map(|f| f.repo).collect();
    let a = new_store();
    publish_v1(a.path(), &fixtures);
    let first = v1_state(a.path(), &repos);
    assert!(first.1.iter().all(|s| s.is_object()), "{:?}", first.1);
    publish_v1(a.path(), &fixtures);
    assert_eq!(
        v1_state(a.path(), &repos),
        first,
        "republishing into the same store"
    );
    let b = new_store();
    publish_v1(b.path(), &fixtures);
    assert_eq!(
        v1_state(b.path(), &repos),
        first,
        "publishing into a fresh store"
    );
}

#[test]
fn config_option_enables_v1_and_a_plain_publish_retires_the_v1_tag() {
    let store = new_store();
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("publish.toml");
    std::fs::write(&cfg, "[publish]\nv1 = true\n").unwrap();
    let cfg_arg = cfg.to_string_lossy().into_owned();
    publish_with(
        store.path(),
        "oci:fixtures/oci-single:1.0",
        &["hello:1.0", "hello:latest"],
        &["--config", &cfg_arg],
    );
    // A short index TTL, so the endpoint sees the second publish quickly.
    let server = Server::start(store.path(), &["--index-ttl", "1"]);
    let tag_file = store.path().join("v1/repositories/hello/_tags/latest");
    assert!(tag_file.is_file(), "the config option wrote v1 files");
    // A single-component name is `library/<name>` in v1; a plain `hello` repository answers both.
    for name in ["hello", "library/hello"] {
        let r = common::blocking_request(
            server.addr,
            "GET",
            &format!("/v1/repositories/{name}/tags/latest"),
        )
        .unwrap();
        assert_eq!(r.status, 307, "{name}: {r:?}");
    }
    // Moving `latest` without --v1 takes it out of the v1 view (it would name the old image).
    publish_with(
        store.path(),
        "oci-archive:fixtures/oci-archive.tar:1.0",
        &["hello:latest"],
        &[],
    );
    assert!(!tag_file.exists(), "the retired tag's file is deleted");
    let tags: Value = serde_json::from_slice(
        &std::fs::read(store.path().join("v1/repositories/hello/_tags.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        tags.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["1.0"]
    );
    common::wait_for(
        "the index cache to expire",
        std::time::Duration::from_secs(20),
        || {
            let r =
                common::blocking_request(server.addr, "GET", "/v1/repositories/hello/tags/latest")?;
            (r.status == 404).then_some(())
        },
    );
}

#[test]
fn v2_pulls_of_v1_published_images_are_unaffected() {
    let (_store, server, fixtures) = world();
    let mut skopeo = Skopeo::new();
    let all = fixtures::all();
    for_each(&fixtures, |f| {
        let reference = format!("{}:{}", f.repo, f.tag);
        let expect = &all
            .iter()
            .find(|x| x.pull_ref == reference)
            .ok_or("no v2 fixture")?
            .expect;
        let pulled = skopeo.copy(
            &server.host(),
            &format!("{}:{}", f.repo, f.tag),
            false,
            Some("amd64"),
        )?;
        let (top, _) = pulled.manifest()?;
        let platforms = match expect {
            Expect::Index { .. } => Platforms::Resolved("amd64"),
            Expect::Image(_) => Platforms::All,
        };
        check_pulled(expect, &top, platforms, &mut |d| pulled.get(d))
    });
}

#[tokio::test]
async fn images_v1_cannot_serve_are_refused_with_a_note() {
    let store = new_store();
    let out = publish_with(
        store.path(),
        "docker-archive:fixtures/docker-legacy.tar",
        &["fix/zstd:1.0"],
        &["--v1", "--compression", "zstd"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("v1: not published") && stdout.contains("zstd"),
        "{stdout}"
    );
    assert!(!store.path().join("v1").exists(), "no v1 files for it");
    let server = Server::start(store.path(), &[]);
    let r = raw(server.addr, "GET", b"/v1/repositories/fix/zstd/tags", &[]).await;
    assert_eq!(r.status, 404, "{r:?}");
    // v2 still serves it.
    assert_eq!(
        raw(server.addr, "GET", b"/v2/fix/zstd/manifests/1.0", &[])
            .await
            .status,
        307
    );
}

#[tokio::test]
async fn hostile_and_unknown_v1_requests_get_v1_errors_and_no_redirect() {
    let (_store, server, _fixtures) = world();
    let unknown_id = "0".repeat(64);
    let known = serde_json::from_slice::<BTreeMap<String, String>>(
        &follow(
            &reqwest::Client::new(),
            &server.url("/v1/repositories/fix/oci-single/tags"),
        )
        .await
        .unwrap(),
    )
    .unwrap()["1.0"]
        .clone();
    let cases: Vec<(&str, String, u16)> = vec![
        (
            "GET",
            format!("/v1/images/{}/json", known.to_uppercase()),
            400,
        ),
        ("GET", format!("/v1/images/{}/layer", &known[1..]), 400),
        ("GET", format!("/v1/images/sha256:{known}/json"), 400),
        ("GET", "/v1/images/../../etc/passwd/json".into(), 400),
        ("GET", "/v1/images/%2e%2e/ancestry".into(), 400),
        ("GET", format!("/v1/images/{known}%2f..%2f/json"), 400),
        ("GET", "/v1/repositories/../etc/tags".into(), 400),
        ("GET", "/v1/repositories/a%2f..%2fb/tags".into(), 400),
        ("GET", "/v1/repositories/FIX/oci-single/tags".into(), 400),
        ("GET", "/v1/repositories/fix/oci-single/tags/..".into(), 400),
        (
            "GET",
            "/v1/repositories/fix/oci-single/tags/%2e%2e".into(),
            400,
        ),
        ("GET", "/v1/repositories/_x/images".into(), 400),
        ("GET", format!("/v1/images/{unknown_id}/json"), 404),
        ("GET", format!("/v1/images/{unknown_id}/layer"), 404),
        ("GET", format!("/v1/images/{unknown_id}/ancestry"), 404),
        ("GET", format!("/v1/images/{known}/checksum"), 404),
        ("GET", "/v1/repositories/no/such/tags".into(), 404),
        (
            "GET",
            "/v1/repositories/fix/oci-single/tags/9.9".into(),
            404,
        ),
        (
            "GET",
            "/v1/repositories/fix/oci-single/tags/1.0/json".into(),
            404,
        ),
        ("GET", "/v1/search?q=x".into(), 404),
        ("PUT", format!("/v1/images/{known}/json"), 405),
        (
            "PUT",
            "/v1/repositories/fix/oci-single/tags/1.0".into(),
            405,
        ),
        ("DELETE", "/v1/repositories/fix/oci-single/".into(), 405),
        ("POST", "/v1/users/".into(), 405),
    ];
    let mut failures = Vec::new();
    for (method, path, want) in &cases {
        let r = raw(server.addr, method, path.as_bytes(), &[]).await;
        let error = serde_json::from_slice::<Value>(&r.body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned));
        let ok = r.status == *want
            && r.header("location").is_none()
            && error.is_some()
            && r.header("x-docker-registry-standalone") == Some("true");
        if !ok {
            failures.push(format!(
                "{method} {path}: want {want}, got {} {:?} {}",
                r.status,
                r.headers,
                r.body_text()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
