//! Tag history, retagging and immutable tags (docs/store-care.md, "Tag history" and "Immutable
//! tags"), through the real binary: racing publishers both recorded, `tag --to` moving a tag that
//! `serve` then answers, and immutable tags refused by `publish` and `tag` alike.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::fixtures;
use common::{bin, describe_output, new_store, Server};

fn run(store: &Path, config: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin());
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.args(args)
        .arg("--store")
        .arg(store)
        .env_remove("STATIC_REGISTRY_CONFIG")
        .env_remove("STATIC_REGISTRY_STORE")
        .env("NO_COLOR", "1")
        .output()
        .expect("run static-registry")
}

fn publish(store: &Path, config: Option<&Path>, source: &str, tag: &str) -> Output {
    run(
        store,
        config,
        &[
            "publish",
            &common::absolute_source(source),
            "--tag",
            tag,
            "--quiet",
        ],
    )
}

fn history(store: &Path, reference: &str) -> serde_json::Value {
    let out = run(store, None, &["history", reference, "--output", "json"]);
    assert!(out.status.success(), "{}", describe_output("history", &out));
    serde_json::from_slice(&out.stdout).expect("history JSON")
}

fn moves(h: &serde_json::Value) -> Vec<String> {
    h["tags"][0]["moves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn racing_publishers_are_both_in_the_history_and_tag_rolls_back() {
    let store = new_store();
    let s = store.path();
    let first = publish(s, None, "oci:fixtures/oci-single:1.0", "team/app:latest");
    assert!(
        first.status.success(),
        "{}",
        describe_output("publish", &first)
    );
    // Two publishers move the same tag at once: both moves are recorded, in commit order.
    let (a, b) = std::thread::scope(|sc| {
        let a = sc.spawn(|| publish(s, None, "oci:fixtures/oci-multi:latest", "team/app:latest"));
        let b = sc.spawn(|| {
            publish(
                s,
                None,
                "docker-archive:fixtures/docker-legacy.tar",
                "team/app:latest",
            )
        });
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(
        a.status.success() && b.status.success(),
        "{}\n{}",
        describe_output("a", &a),
        describe_output("b", &b)
    );
    let single = fixtures::oci_single().top_digest();
    let multi = fixtures::oci_multi().top_digest();
    let h = history(s, "team/app:latest");
    let m = moves(&h);
    assert_eq!(m.len(), 3, "{h:#}");
    assert_eq!(m[0], single);
    assert!(m.contains(&multi), "{h:#}");
    let legacy = m
        .iter()
        .find(|d| **d != single && **d != multi)
        .expect("the legacy image's move")
        .clone();
    assert!(h["tags"][0]["moves"]
        .as_array()
        .unwrap()
        .iter()
        .all(|x| x["at"].as_i64().unwrap() > 0));

    // Roll back to the first image: serve answers the tag with it, and history says so.
    let out = run(s, None, &["tag", "team/app:latest", "--to", &single]);
    assert!(out.status.success(), "{}", describe_output("tag", &out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("(was "),
        "{}",
        describe_output("tag", &out)
    );
    let server = Server::start(s, &[]);
    assert_eq!(server.tag_digest("team/app", "latest"), single);
    assert_eq!(
        moves(&history(s, "team/app:latest")).last().unwrap(),
        &single
    );
    // The text form names every earlier digest.
    let text = run(s, None, &["history", "team/app"]);
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    for d in [&single, &multi, &legacy] {
        assert!(text.contains(d.as_str()), "{text}");
    }
    // Content the repository does not reference is refused.
    let out = run(
        s,
        None,
        &[
            "tag",
            "team/app:latest",
            "--to",
            &format!("sha256:{}", "0".repeat(64)),
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not reference"),
        "{}",
        describe_output("tag", &out)
    );
}

#[test]
fn immutable_tags_are_refused_by_publish_and_by_tag() {
    let store = new_store();
    let s = store.path();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("immutable.toml");
    std::fs::write(
        &cfg,
        "[[immutable]]\nprefix = \"releases/\"\ntags = [\"v*\"]\n",
    )
    .unwrap();
    let cfg = Some(cfg.as_path());
    let single = fixtures::oci_single().top_digest();
    let multi = fixtures::oci_multi().top_digest();
    let ok = |o: &Output| assert!(o.status.success(), "{}", describe_output("command", o));
    ok(&publish(
        s,
        cfg,
        "oci:fixtures/oci-single:1.0",
        "releases/app:v1",
    ));
    // The same digest again: a no-op, allowed.
    ok(&publish(
        s,
        cfg,
        "oci:fixtures/oci-single:1.0",
        "releases/app:v1",
    ));
    // Another digest: refused, naming the tag and both digests; nothing moved.
    let refused = publish(s, cfg, "oci:fixtures/oci-multi:latest", "releases/app:v1");
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("releases/app:v1")
            && err.contains(&single)
            && err.contains(&multi)
            && err.contains("immutable"),
        "{err}"
    );
    // A mutable tag of the same repository moves freely.
    ok(&publish(
        s,
        cfg,
        "oci:fixtures/oci-multi:latest",
        "releases/app:latest",
    ));
    let refused = run(
        s,
        cfg,
        &["tag", "releases/app:v1", "--to", "releases/app:latest"],
    );
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("immutable"),
        "{}",
        describe_output("tag", &refused)
    );
    ok(&run(
        s,
        cfg,
        &["tag", "releases/app:latest", "--to", &single],
    ));
    let server = Server::start(s, &[]);
    assert_eq!(server.tag_digest("releases/app", "v1"), single);
    assert_eq!(server.tag_digest("releases/app", "latest"), single);
}
