//! `static-registry check` against real origins (the embedded origin, a real nginx `secure_link`
//! edge configured right and configured wrong in the three ways operators do, and s3s-fs), and two
//! replicas with no secret configured behind a real nginx balancer (the store's own
//! `.origin-secret` makes a URL signed by one replica good on the other).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::clients::{Containerd, Skopeo};
use common::fixtures;
use common::lb::{metric_sum, Balancer, Replica};
use common::nginx::{Flaw, Nginx, SECURE_LINK_TEMPLATE};
use common::{bin, describe_output, new_store, publish, Server};

fn check(args: &[&str]) -> Output {
    Command::new(bin())
        .arg("check")
        .args(args)
        .env_remove("STATIC_REGISTRY_CONFIG")
        .env_remove("STATIC_REGISTRY_STORE")
        .env("NO_COLOR", "1")
        .output()
        .expect("run static-registry check")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A config whose only origin is the secure_link edge at `edge`.
fn edge_config(dir: &Path, store: &Path, edge: &Nginx, secret: &str) -> String {
    let secret_file = dir.join("edge.secret");
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    let path = dir.join("edge.toml");
    std::fs::write(
        &path,
        format!(
            "store = {store:?}\n\n[[origins]]\nname = \"edge\"\nstore = {store:?}\nsigner = {{ kind = \"secure-link\", base_url = {base:?}, secret_file = {secret_file:?}, template = {template:?}, content_type_param = \"ct\" }}\n",
            store = store.display().to_string(),
            base = edge.base_url(),
            secret_file = secret_file.display().to_string(),
            template = SECURE_LINK_TEMPLATE,
        ),
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn check_passes_on_good_origins_and_names_each_flaw() {
    let store = new_store();
    publish(
        store.path(),
        "oci:fixtures/oci-multi:latest",
        &["demo/multi:latest"],
    );
    publish(
        store.path(),
        "docker-archive:fixtures/docker-legacy.tar",
        &["demo/legacy:1"],
    );

    // The embedded origin, through a running endpoint, with the store's own secret.
    let server = Server::start(store.path(), &[]);
    let out = check(&[
        "--store",
        store.path().to_str().unwrap(),
        "--endpoint",
        &server.url("/"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        describe_output("check (embedded)", &out)
    );
    let text = stdout(&out);
    for line in [
        "health GET",
        "manifest",
        "blob range",
        "tampered URL",
        "expired URL",
    ] {
        assert!(text.contains(line), "{line}: {text}");
    }
    assert!(text.contains("0 failed"), "{text}");
    assert!(store.path().join(".origin-secret").exists());
    // serve ran the same at startup and /readyz says so.
    let ready = common::wait_for(
        "the startup check",
        std::time::Duration::from_secs(30),
        || {
            let r = common::blocking_request(server.addr, "GET", "/readyz")?;
            let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
            (!v["checks"].is_null()).then_some(v)
        },
    );
    let findings = ready["checks"]["findings"].as_array().unwrap();
    assert!(
        findings.len() >= 5 && findings.iter().all(|f| f["ok"] == true),
        "{ready}"
    );

    // A correctly configured nginx secure_link edge.
    let secret = format!("s{:016x}", rand::random::<u64>());
    let dir = tempfile::tempdir().unwrap();
    let good = Nginx::secure_link(store.path(), &secret);
    let cfg = edge_config(dir.path(), store.path(), &good, &secret);
    let out = check(&["--config", &cfg]);
    assert!(
        out.status.success(),
        "{}",
        describe_output("check (good edge)", &out)
    );

    // Each flaw: a failure that names the consequence and the fix; JSON for automation.
    // (nginx compresses whole answers only: gzip also turns Range off, and check says both.)
    let flaws: [(Flaw, &[&str], &str, &str); 3] = [
        (
            Flaw::NoContentType,
            &["manifest"],
            "skopeo and podman will refuse this manifest",
            "add_header Content-Type $arg_ct",
        ),
        (
            Flaw::Gzip,
            &["manifest", "blob range"],
            "containerd decodes the body",
            "gzip off",
        ),
        (
            Flaw::NoRange,
            &["blob range"],
            "cannot resume a broken download",
            "Range",
        ),
    ];
    for (flaw, failing, consequence, fix) in flaws {
        let edge = Nginx::secure_link_with(store.path(), &secret, flaw);
        let dir = tempfile::tempdir().unwrap();
        let cfg = edge_config(dir.path(), store.path(), &edge, &secret);
        let out = check(&["--config", &cfg]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{flaw:?}: {}",
            describe_output("check", &out)
        );
        let text = stdout(&out);
        assert!(
            text.contains(consequence) && text.contains(fix),
            "{flaw:?}: {text}"
        );
        let json = check(&["--config", &cfg, "--output", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON report");
        let failed: Vec<&str> = v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["ok"] == false)
            .map(|f| f["check"].as_str().unwrap())
            .collect();
        assert_eq!(failed, failing, "{flaw:?}: {v:#}");
        // The report never carries a signed URL.
        assert!(!text.contains("md5=") && !String::from_utf8_lossy(&json.stdout).contains("md5="));
    }

    // An edge whose secret differs from the signer's: every signed fetch is refused.
    let wrong = Nginx::secure_link(store.path(), "another-secret");
    let dir = tempfile::tempdir().unwrap();
    let cfg = edge_config(dir.path(), store.path(), &wrong, &secret);
    let out = check(&["--config", &cfg]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("every redirect to this origin fails"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn check_passes_on_s3s_fs() {
    let world = common::s3::S3World::start();
    let cfg = world.direct_config();
    let mut publish = world.publish_command(
        &cfg,
        "oci:fixtures/oci-multi:latest",
        &["demo/multi:latest"],
        &[],
    );
    let out = world.run("publish", &mut publish);
    assert!(out.status.success(), "{}", describe_output("publish", &out));
    let out = world.run("check", world.command(&cfg).arg("check"));
    assert!(
        out.status.success(),
        "{}",
        describe_output("check (s3)", &out)
    );
    assert!(stdout(&out).contains("digest verified"), "{}", stdout(&out));
}

#[test]
fn two_replicas_with_no_secret_serve_every_pull_behind_a_balancer() {
    let store = new_store();
    let published = fixtures::publish_all(store.path());
    let s = store.path().to_str().unwrap();
    let a = Replica::start(&["--store", s], &[]);
    let b = Replica::start(&["--store", s], &[]);
    let lb = Balancer::start(&[a.port, b.port]);
    let mut skopeo = Skopeo::new();
    for f in &published {
        skopeo
            .copy(&lb.host(), &format!("{}:{}", f.repo(), f.tag()), true, None)
            .unwrap_or_else(|e| panic!("skopeo through the balancer: {e}\n{}", lb.access_log()));
    }
    let ctd = Containerd::start();
    for f in published.iter().take(2) {
        ctd.pull(
            &format!("{}/{}:{}", lb.host(), f.repo(), f.tag()),
            &["--all-platforms"],
        )
        .unwrap_or_else(|e| panic!("ctr through the balancer: {e}\n{}", lb.access_log()));
    }
    let log = lb.access_log();
    assert!(!log.contains("\" 403 "), "a redirect was refused:\n{log}");
    // Both replicas answered downloads: URLs signed by one were used on the other.
    for r in [&a, &b] {
        let served = metric_sum(
            &r.metrics(),
            "static_registry_requests_total",
            &["route=\"origin\""],
        )
        .unwrap_or(0.0);
        assert!(served > 0.0, "a replica served no download");
    }
}
