//! Retention through the real binary (docs/store-care.md, "Retention"), on a local store and on
//! S3 (s3s-fs): a mixture of rules, an in-use list naming a tag, a digest and a platform image of
//! a multi-platform index, pins, an immutable tag; the dry run lists exactly what the real run
//! then drops; after `retain` and `prune --grace 0s` every remaining tag pulls with skopeo and the
//! dropped ones are 404. Tag ages come from the index history, rewritten to fixed ages (400 days,
//! 1 day) so no wall-clock threshold is involved.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

use common::clients::Skopeo;
use common::fixtures::{self, Expect};
use common::s3::{ConfigExtra, S3World};
use common::{bin, blocking_request, describe_output, new_store, Server};

const RULES: &str = r#"
[[retention]]
prefix = "team/"
keep_newest = 1
keep = ["v*"]
drop_older_than = "30d"
pins = ["pin-*"]

[[retention]]
prefix = ""
keep_newest = 10

[[immutable]]
prefix = "team/"
tags = ["frozen"]
"#;

const DAY: i64 = 86400;

/// A store to run commands on: a local directory, or a bucket on s3s-fs.
enum Kind {
    Local {
        dir: tempfile::TempDir,
        config: PathBuf,
        _cfg_dir: tempfile::TempDir,
    },
    S3 {
        world: S3World,
        config: PathBuf,
    },
}

impl Kind {
    fn local() -> Kind {
        let cfg_dir = tempfile::tempdir().unwrap();
        let config = cfg_dir.path().join("retain.toml");
        std::fs::write(&config, RULES).unwrap();
        Kind::Local {
            dir: new_store(),
            config,
            _cfg_dir: cfg_dir,
        }
    }

    fn s3() -> Kind {
        let world = S3World::start();
        let config = world.config(
            "retain",
            &world.s3.endpoint(),
            &ConfigExtra {
                s3: "",
                tail: RULES,
            },
        );
        Kind::S3 { world, config }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = match self {
            Kind::Local { dir, config, .. } => {
                let mut c = Command::new(bin());
                c.arg("--config")
                    .arg(config)
                    .env_remove("STATIC_REGISTRY_CONFIG")
                    .env_remove("STATIC_REGISTRY_STORE")
                    .env("NO_COLOR", "1")
                    .env("STATIC_REGISTRY_STORE", dir.path());
                c
            }
            Kind::S3 { world, config } => world.command(config),
        };
        cmd.args(args);
        cmd
    }

    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let mut cmd = self.cmd(args);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run static-registry");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.unwrap_or("").as_bytes())
            .unwrap();
        let out: Output = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            describe_output(&format!("{args:?}"), &out)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The directory holding the layout's objects as files (s3s-fs keeps them as plain files).
    fn root(&self) -> PathBuf {
        match self {
            Kind::Local { dir, .. } => dir.path().to_path_buf(),
            Kind::S3 { world, .. } => world.s3.object_file(""),
        }
    }

    fn index(&self, repo: &str) -> Value {
        let path = self.root().join(format!("repositories/{repo}/_index.json"));
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    /// Sets every tag's history of `repo` to one move, `days` old (by tag; default 400).
    fn age(&self, repo: &str, young: &[&str]) {
        let path = self.root().join(format!("repositories/{repo}/_index.json"));
        let mut idx = self.index(repo);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let mut history = serde_json::Map::new();
        for (tag, d) in idx["tags"].as_object().unwrap() {
            let days = if young.contains(&tag.as_str()) {
                1
            } else {
                400
            };
            history.insert(
                tag.clone(),
                json!([{ "digest": d["digest"], "at": now - days * DAY }]),
            );
        }
        idx["history"] = Value::Object(history);
        std::fs::write(path, serde_json::to_vec_pretty(&idx).unwrap()).unwrap();
    }

    fn publish(&self, source: &str, tags: &[&str], extra: &[&str]) {
        let mut args = vec![
            "publish".to_owned(),
            common::absolute_source(source),
            "--quiet".into(),
        ];
        for t in tags {
            args.push("--tag".into());
            args.push((*t).into());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.ok(&args, None);
    }
}

/// `(repository, tag)` of the `dropped` rows of a JSON report.
fn dropped(report: &Value) -> BTreeSet<(String, String)> {
    report["dropped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["repository"].as_str().unwrap().to_owned(),
                r["tag"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn set(list: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    list.iter()
        .map(|(r, t)| (r.to_string(), t.to_string()))
        .collect()
}

fn status(addr: SocketAddr, path: &str) -> u16 {
    blocking_request(addr, "HEAD", path)
        .unwrap_or_else(|| panic!("HEAD {path}: no answer"))
        .status
}

fn retention_keeps_what_is_in_use(kind: &Kind) {
    common::require_tool("skopeo");
    let single = fixtures::oci_single().top_digest();
    let Expect::Index { images, .. } = fixtures::oci_multi() else {
        panic!("oci-multi is an index")
    };
    let child = images[0]
        .manifest
        .clone()
        .expect("OCI children keep their digest");
    // oci-archive holds the same image as oci-single: docker-25 is the one only these name.
    kind.publish(
        "docker-archive:fixtures/docker-25.tar",
        &["team/app:new", "team/app:v1", "team/app:frozen"],
        &[],
    );
    kind.publish(
        "oci:fixtures/oci-single:1.0",
        &["team/app:by-digest", "team/app:pin-1", "other/app:x"],
        &[],
    );
    kind.publish(
        "docker-archive:fixtures/docker-legacy.tar",
        &["team/app:by-tag"],
        &[],
    );
    kind.publish("oci:fixtures/oci-multi:latest", &["team/app:multi"], &[]);
    kind.publish(
        "docker-archive:fixtures/docker-legacy.tar",
        &["team/app:gone", "team/app:pin-2"],
        &["--compression", "zstd"],
    );
    kind.age("team/app", &["new"]);
    kind.age("other/app", &[]);

    // Without an in-use list the deployed tags would go (pins stay: nobody says they are unused).
    let blind: Value =
        serde_json::from_str(&kind.ok(&["retain", "--dry-run", "--output", "json"], None)).unwrap();
    assert_eq!(
        dropped(&blind),
        set(&[
            ("team/app", "by-digest"),
            ("team/app", "by-tag"),
            ("team/app", "gone"),
            ("team/app", "multi"),
        ]),
        "{blind:#}"
    );

    // The platform's list: a digest, a tag, and a platform image of the multi-platform index.
    let in_use =
        format!("# what runs now\nteam/app@{single}\n\nteam/app:by-tag\nteam/app@{child}\n");
    let list = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(list.path(), &in_use).unwrap();
    let in_use_arg = |s3: bool| {
        if s3 {
            "-".to_owned()
        } else {
            path_str(list.path())
        }
    };
    let s3 = matches!(kind, Kind::S3 { .. });
    let before = common::files_under(&kind.root());
    let dry: Value = serde_json::from_str(&kind.ok(
        &[
            "retain",
            "--dry-run",
            "--output",
            "json",
            "--in-use",
            &in_use_arg(s3),
        ],
        s3.then_some(in_use.as_str()),
    ))
    .unwrap();
    assert_eq!(
        common::files_under(&kind.root()),
        before,
        "--dry-run changed the store"
    );
    let want = set(&[("team/app", "gone"), ("team/app", "pin-2")]);
    assert_eq!(dropped(&dry), want, "{dry:#}");
    assert!(dry["unreferenced_bytes"].as_u64().unwrap() > 0, "{dry:#}");
    let why = |tag: &str| {
        dry["kept"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["tag"] == tag && r["repository"] == "team/app")
            .map(|r| r["why"].as_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    for t in ["by-digest", "by-tag", "multi", "pin-1"] {
        assert_eq!(why(t), "in use", "{t}: {dry:#}");
    }
    assert_eq!(why("frozen"), "immutable tag");
    assert_eq!(why("v1"), "matches \"v*\"");
    assert_eq!(why("new"), "among the 1 newest");

    // The real run drops exactly what the dry run listed.
    let real: Value = serde_json::from_str(&kind.ok(
        &["retain", "--output", "json", "--in-use", &in_use_arg(s3)],
        s3.then_some(in_use.as_str()),
    ))
    .unwrap();
    assert_eq!(dropped(&real), want, "{real:#}");
    let idx = kind.index("team/app");
    let left: BTreeSet<String> = idx["tags"].as_object().unwrap().keys().cloned().collect();
    for (_, t) in &want {
        assert!(!left.contains(t), "{t} still tagged: {idx:#}");
    }
    assert_eq!(left.len(), 7, "{left:?}");

    kind.ok(&["prune", "--grace", "0s"], None);
    let verify = kind.cmd(&["verify"]).output().unwrap();
    assert!(
        verify.status.success(),
        "{}",
        describe_output("verify", &verify)
    );

    // Every remaining tag pulls; the dropped ones are gone.
    let (addr, _server): (SocketAddr, Box<dyn std::any::Any>) = match kind {
        Kind::Local { dir, .. } => {
            let s = Server::start(dir.path(), &[]);
            (s.addr, Box::new(s))
        }
        Kind::S3 { world, config } => {
            let s = world.serve(config, &[]);
            (s.addr, Box::new(s))
        }
    };
    let mut skopeo = Skopeo::new();
    for (repo, idx) in [("team/app", &idx), ("other/app", &kind.index("other/app"))] {
        for (tag, d) in idx["tags"].as_object().unwrap() {
            let pulled = skopeo
                .copy(&addr.to_string(), &format!("{repo}:{tag}"), true, None)
                .unwrap_or_else(|e| panic!("{repo}:{tag}: {e}"));
            assert_eq!(pulled.manifest().unwrap().0, d["digest"].as_str().unwrap());
        }
    }
    for (repo, tag) in &want {
        assert_eq!(
            status(addr, &format!("/v2/{repo}/manifests/{tag}")),
            404,
            "{tag}"
        );
    }
}

fn path_str(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

#[test]
fn retain_local_keeps_in_use_and_agrees_with_its_dry_run() {
    retention_keeps_what_is_in_use(&Kind::local());
}

#[test]
fn retain_s3_keeps_in_use_and_agrees_with_its_dry_run() {
    retention_keeps_what_is_in_use(&Kind::s3());
}

#[test]
fn bad_in_use_lists_are_refused_with_the_line() {
    let kind = Kind::local();
    kind.publish("oci:fixtures/oci-single:1.0", &["team/app:x"], &[]);
    let mut cmd = kind.cmd(&["retain", "--dry-run", "--in-use", "-"]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"team/app:x\n# fine\nTeam/App\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3"), "{err}");
    // No rules at all: refused too.
    let out = Command::new(bin())
        .args(["retain", "--dry-run"])
        .env_remove("STATIC_REGISTRY_CONFIG")
        .env("STATIC_REGISTRY_STORE", kind.root())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no retention rules"));
}
