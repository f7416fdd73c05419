//! Mirroring (`publish docker://…`) from a real upstream registry, Debian's `docker-registry`
//! (CNCF distribution 2.8): fixtures are pushed into it with skopeo, mirrored into a local store,
//! the upstream is stopped, and real clients pull through `serve`. Covers the open registry
//! (skopeo, podman and ctr; a single-platform image and a multi-platform index; `--platform`;
//! `--pin` and `--output json`; re-mirroring downloads and uploads nothing), htpasswd Basic auth
//! (every credential source; refused and missing credentials; no secret in the store or the
//! logs), and the Bearer token flow through a token service that signs JWTs the registry trusts.
//! `mirror/hostile.rs`: hostile peers (a storage host asking for credentials, an endless token).

mod common;
#[path = "mirror/hostile.rs"]
mod hostile;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use base64::Engine as _;
use serde_json::Value;

use common::checks::{check_podman_id_and_layers, image_for};
use common::clients::{Containerd, Podman, Skopeo};
use common::fixtures::{self, check_pulled, Expect, Platforms};
use common::upstream::{TokenServer, Upstream, UpstreamAuth, TOKEN_ISSUER, TOKEN_SERVICE};
use common::{bin, describe_output, files_under, hex_of, new_store, Server};

/// Runs `publish SOURCE --store STORE --quiet EXTRA…` with a clean environment: no
/// STATIC_REGISTRY_* variables and an empty Docker config unless `env` sets one. `stdin` is
/// piped in when given.
fn run_publish(
    store: &Path,
    source: &str,
    extra: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&str>,
) -> Output {
    let empty_docker = tempfile::tempdir().expect("temp dir");
    let mut cmd = Command::new(bin());
    cmd.arg("publish")
        .arg(source)
        .arg("--store")
        .arg(store)
        .arg("--quiet")
        .args(extra);
    for (k, _) in std::env::vars() {
        if k.starts_with("STATIC_REGISTRY_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("DOCKER_CONFIG", empty_docker.path())
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run static-registry publish");
    if let Some(s) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(s.as_bytes())
            .expect("write stdin");
    }
    child.wait_with_output().expect("wait for publish")
}

fn publish_json(store: &Path, source: &str, extra: &[&str], env: &[(&str, &str)]) -> Value {
    let mut args = extra.to_vec();
    args.extend(["--output", "json"]);
    let out = run_publish(store, source, &args, env, None);
    assert!(
        out.status.success(),
        "{}",
        describe_output(&format!("publish {source} {extra:?}"), &out)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "publish --output json printed something that is not JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn fails_with(out: &Output, what: &str, want: &str) {
    assert!(
        !out.status.success(),
        "{what} succeeded: {}",
        describe_output(what, out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(want), "{what}: stderr lacks {want:?}:\n{err}");
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing in {v:#}"))
}

/// No secret appears in any file of the store, nor in the given outputs.
fn assert_no_secrets(store: &Path, outputs: &[&Output], secrets: &[String]) {
    for rel in files_under(store) {
        let bytes = std::fs::read(store.join(&rel)).expect("read store file");
        let text = String::from_utf8_lossy(&bytes);
        for s in secrets {
            assert!(
                !text.contains(s.as_str()),
                "{} contains a secret",
                rel.display()
            );
        }
    }
    for out in outputs {
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for s in secrets {
            assert!(
                !all.contains(s.as_str()),
                "publish output contains a secret:\n{all}"
            );
        }
    }
}

/// podman pulled `image` for `arch` and it is the fixture's image.
fn podman_check(podman: &Podman, image: &str, expect: &Expect, arch: &str) -> Result<(), String> {
    podman.pull(image, &["--arch", arch])?;
    let info = podman.inspect(image)?;
    let want = image_for(expect, arch)?;
    check_podman_id_and_layers(&info, want).map_err(|e| format!("{image}: {e}"))?;
    if info["Architecture"].as_str() != Some(arch) {
        return Err(format!("{image}: architecture {}", info["Architecture"]));
    }
    Ok(())
}

#[test]
fn mirror_pin_and_pull_with_every_client_after_the_upstream_stops() {
    let mut up = Upstream::start(UpstreamAuth::Open);
    up.push("oci:fixtures/oci-single:1.0", "fix/single:1.0", false, None);
    up.push(
        "oci:fixtures/oci-multi:latest",
        "fix/multi:latest",
        true,
        None,
    );
    let single = fixtures::oci_single();
    let multi = fixtures::oci_multi();
    let host = up.host();
    let store = new_store();
    let s = store.path();

    // 1. Mirror, pinned, machine-readable.
    let src_single = format!("docker://{host}/fix/single:1.0");
    let j = publish_json(
        s,
        &src_single,
        &["--pin", "--registry-host", "mirror.example:5000"],
        &[],
    );
    let want = Expect::top_digest(&single);
    assert_eq!(j["source"], src_single.as_str());
    assert_eq!(j["tags"][0]["repository"], "fix/single");
    assert_eq!(j["tags"][0]["tag"], "1.0");
    assert_eq!(
        j["tags"][0]["digest"],
        want.as_str(),
        "mirrored byte for byte"
    );
    assert_eq!(j["tags"][0]["mediaType"], fixtures::OCI_MANIFEST);
    let pin = j["pin"].as_str().expect("a pin tag").to_owned();
    assert!(
        pin.starts_with("pin-") && pin.ends_with(&hex_of(&want)[..8]),
        "{pin}"
    );
    assert_eq!(j["tags"][1]["tag"], pin.as_str());
    assert_eq!(j["tags"][1]["digest"], want.as_str());
    assert_eq!(
        j["reference"],
        format!("mirror.example:5000/fix/single@{want}").as_str()
    );
    assert_eq!(u(&j, "blobs_written"), 3);
    assert_eq!(u(&j, "blobs_downloaded"), 3);
    assert_eq!(u(&j, "bytes_downloaded"), u(&j, "bytes_written"));

    let src_multi = format!("docker://{host}/fix/multi:latest");
    let jm = publish_json(s, &src_multi, &[], &[]);
    assert_eq!(jm["tags"][0]["digest"], Expect::top_digest(&multi).as_str());
    assert_eq!(jm["tags"][0]["mediaType"], fixtures::OCI_INDEX);
    assert_eq!(jm["pin"], Value::Null);
    assert_eq!(
        u(&jm, "blobs_written"),
        5,
        "2 configs, 2 own layers, 1 shared"
    );

    // 2. Re-mirroring downloads and uploads nothing: only the tags' manifests are fetched.
    let gets = up.blob_gets();
    for src in [&src_single, &src_multi] {
        let again = publish_json(s, src, &[], &[]);
        assert_eq!(u(&again, "bytes_downloaded"), 0, "{again:#}");
        assert_eq!(u(&again, "blobs_downloaded"), 0, "{again:#}");
        assert_eq!(u(&again, "blobs_written"), 0, "{again:#}");
        assert_eq!(u(&again, "bytes_written"), 0, "{again:#}");
        assert_eq!(u(&again, "manifests_downloaded"), 1, "{again:#}");
    }
    assert_eq!(
        up.blob_gets(),
        gets,
        "the upstream served blobs to a re-mirror"
    );

    // 3. One platform of the index: a filtered index, said so; nothing new to download.
    let ja = publish_json(
        s,
        &src_multi,
        &[
            "--platform",
            "linux/arm64",
            "--tag",
            "mirror/multi-arm:latest",
        ],
        &[],
    );
    let filtered = ja["tags"][0]["digest"].as_str().unwrap().to_owned();
    assert_ne!(filtered, Expect::top_digest(&multi));
    let notes = ja["notes"].to_string();
    assert!(notes.contains("filtered image index"), "{notes}");
    assert_eq!(u(&ja, "bytes_downloaded"), 0);

    // 4. The upstream goes away; the mirror serves everything on its own.
    up.stop();
    let server = Server::start(s, &[]);
    let sh = server.host();
    let mut skopeo = Skopeo::new();
    let pulled = skopeo
        .copy(&sh, "fix/single:1.0", false, None)
        .unwrap_or_else(|e| panic!("{e}"));
    check_pulled(
        &single,
        &pulled.manifest().unwrap().0,
        Platforms::All,
        &mut |d| pulled.get(d),
    )
    .unwrap();
    // The pinned reference, by digest and by pin tag.
    for r in [format!("fix/single@{want}"), format!("fix/single:{pin}")] {
        let p = skopeo
            .copy(&sh, &r, false, None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.manifest().unwrap().0, want, "{r}");
    }
    let p = skopeo
        .copy(&sh, "fix/multi:latest", true, None)
        .unwrap_or_else(|e| panic!("{e}"));
    check_pulled(&multi, &p.manifest().unwrap().0, Platforms::All, &mut |d| {
        p.get(d)
    })
    .unwrap();
    for (reference, arch) in [
        ("fix/multi:latest", "amd64"),
        ("fix/multi:latest", "arm64"),
        ("mirror/multi-arm:latest", "arm64"),
    ] {
        let p = skopeo
            .copy(&sh, reference, false, Some(arch))
            .unwrap_or_else(|e| panic!("{e}"));
        check_pulled(
            &multi,
            &p.manifest().unwrap().0,
            Platforms::Resolved(arch),
            &mut |d| p.get(d),
        )
        .unwrap_or_else(|e| panic!("skopeo {reference} {arch}: {e}"));
    }

    let podman = Podman::new();
    for (reference, expect, arch) in [
        ("fix/single:1.0", &single, "amd64"),
        ("fix/multi:latest", &multi, "amd64"),
        ("fix/multi:latest", &multi, "arm64"),
        ("mirror/multi-arm:latest", &multi, "arm64"),
    ] {
        podman_check(&podman, &format!("{sh}/{reference}"), expect, arch)
            .unwrap_or_else(|e| panic!("podman: {e}"));
    }

    let ctd = Containerd::start();
    for (reference, expect, extra, platforms) in [
        (
            "fix/single:1.0",
            &single,
            "--platform=linux/amd64",
            Platforms::All,
        ),
        (
            "fix/multi:latest",
            &multi,
            "--all-platforms",
            Platforms::All,
        ),
    ] {
        let image = format!("{sh}/{reference}");
        ctd.pull(&image, &[extra]).unwrap_or_else(|e| panic!("{e}"));
        let (digest, _) = ctd.image(&image).unwrap();
        assert_eq!(digest, Expect::top_digest(expect), "ctr {reference}");
        check_pulled(expect, &digest, platforms, &mut |d| ctd.content(d))
            .unwrap_or_else(|e| panic!("ctr {reference}: {e}"));
    }
    let arm = format!("{sh}/mirror/multi-arm:latest");
    ctd.pull(&arm, &["--platform", "linux/arm64"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ctd.image(&arm).unwrap().0, filtered);
}

#[test]
fn mirror_with_basic_auth_from_every_credential_source_and_no_secret_kept() {
    let pass = format!("pw-{:016x}", rand::random::<u64>());
    let mut up = Upstream::start(UpstreamAuth::Htpasswd {
        user: "alice".into(),
        pass: pass.clone(),
    });
    let creds = format!("alice:{pass}");
    up.push(
        "oci:fixtures/oci-single:1.0",
        "private/app:1.0",
        false,
        Some(&creds),
    );
    let host = up.host();
    let src = format!("docker://{host}/private/app:1.0");
    let store = new_store();
    let s = store.path();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&creds);
    let secrets = vec![pass.clone(), b64.clone()];

    // Wrong password: a clear error naming the registry; nothing committed.
    let bad = run_publish(s, &src, &["--creds", "alice:wrong-password"], &[], None);
    fails_with(
        &bad,
        "wrong password",
        &format!("registry {host} refused the credentials for user 'alice' (401): check --creds"),
    );
    assert!(!String::from_utf8_lossy(&bad.stderr).contains("wrong-password"));
    assert!(
        !s.join("repositories").exists(),
        "a refused mirror left a repository"
    );
    // No credentials at all.
    let anon = run_publish(s, &src, &[], &[], None);
    fails_with(
        &anon,
        "anonymous",
        &format!("registry {host} requires authentication"),
    );

    // 1. --creds USER:PASS, with debug logging.
    let a = run_publish(
        s,
        &src,
        &["--creds", &creds, "--tag", "m/app:flag"],
        &[("RUST_LOG", "debug")],
        None,
    );
    assert!(a.status.success(), "{}", describe_output("--creds", &a));
    // 2. --creds USER with the password on stdin.
    let b = run_publish(
        s,
        &src,
        &["--creds", "alice", "--tag", "m/app:stdin"],
        &[("RUST_LOG", "debug")],
        Some(&format!("{pass}\n")),
    );
    assert!(
        b.status.success(),
        "{}",
        describe_output("--creds USER + stdin", &b)
    );
    // 3. Environment variables.
    let c = run_publish(
        s,
        &src,
        &["--tag", "m/app:env"],
        &[
            ("STATIC_REGISTRY_SRC_USERNAME", "alice"),
            ("STATIC_REGISTRY_SRC_PASSWORD", &pass),
            ("RUST_LOG", "debug"),
        ],
        None,
    );
    assert!(c.status.success(), "{}", describe_output("environment", &c));
    // 4. Docker's config.json: `auths`, then a credential helper.
    let docker = tempfile::tempdir().unwrap();
    std::fs::write(
        docker.path().join("config.json"),
        format!(r#"{{"auths":{{"{host}":{{"auth":"{b64}"}}}}}}"#),
    )
    .unwrap();
    let dc = docker.path().to_str().unwrap();
    let d = run_publish(
        s,
        &src,
        &["--tag", "m/app:auths"],
        &[("DOCKER_CONFIG", dc)],
        None,
    );
    assert!(
        d.status.success(),
        "{}",
        describe_output("config.json auths", &d)
    );
    assert!(String::from_utf8_lossy(&d.stderr).contains("config.json (auths))"));
    assert!(String::from_utf8_lossy(&c.stderr).contains("(credentials: environment"));
    assert!(String::from_utf8_lossy(&b.stderr).contains("(credentials: --creds)"));
    let helper_dir = tempfile::tempdir().unwrap();
    let helper = helper_dir.path().join("docker-credential-srtest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nread -r server\nif [ \"$1\" = get ] && [ \"$server\" = \"{host}\" ]; then\n  printf '{{\"ServerURL\":\"%s\",\"Username\":\"alice\",\"Secret\":\"{pass}\"}}' \"$server\"\nelse\n  echo 'credentials not found in native keychain'; exit 1\nfi\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let helper_cfg = tempfile::tempdir().unwrap();
    std::fs::write(
        helper_cfg.path().join("config.json"),
        format!(r#"{{"auths":{{"{host}":{{}}}},"credHelpers":{{"{host}":"srtest"}}}}"#),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        helper_dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let e = run_publish(
        s,
        &src,
        &["--tag", "m/app:helper"],
        &[
            ("DOCKER_CONFIG", helper_cfg.path().to_str().unwrap()),
            ("PATH", &path),
            ("RUST_LOG", "debug"),
        ],
        None,
    );
    assert!(
        e.status.success(),
        "{}",
        describe_output("credential helper", &e)
    );
    assert!(
        String::from_utf8_lossy(&e.stderr)
            .contains("as user 'alice' (credentials: docker-credential-srtest)"),
        "{}",
        describe_output("credential helper", &e)
    );

    // Debug logs talked about the registry but never carried a secret; neither did the store.
    assert!(String::from_utf8_lossy(&a.stderr).contains("GET /v2/private/app/manifests/1.0"));
    assert_no_secrets(s, &[&a, &b, &c, &d, &e, &bad], &secrets);
    assert!(
        files_under(s).iter().all(|p| !p.starts_with(".staging")
            || std::fs::metadata(s.join(p)).is_ok_and(|m| m.len() == 0)),
        "staging files left behind: {:?}",
        files_under(s)
    );

    // The mirror serves without the upstream and without credentials.
    up.stop();
    let server = Server::start(s, &[]);
    let mut skopeo = Skopeo::new();
    for tag in ["flag", "stdin", "env", "auths", "helper"] {
        let p = skopeo
            .copy(&server.host(), &format!("m/app:{tag}"), false, None)
            .unwrap_or_else(|e| panic!("{e}"));
        check_pulled(
            &fixtures::oci_single(),
            &p.manifest().unwrap().0,
            Platforms::All,
            &mut |d| p.get(d),
        )
        .unwrap_or_else(|e| panic!("m/app:{tag}: {e}"));
    }
}

#[test]
fn mirror_through_a_bearer_token_service() {
    let pass = format!("tok-{:016x}", rand::random::<u64>());
    let tokens = TokenServer::start("alice", &pass);
    let mut up = Upstream::start(UpstreamAuth::Token {
        realm: tokens.realm(),
        service: TOKEN_SERVICE.into(),
        issuer: TOKEN_ISSUER.into(),
    });
    let creds = format!("alice:{pass}");
    up.push(
        "oci:fixtures/oci-multi:latest",
        "team/multi:latest",
        true,
        Some(&creds),
    );
    let host = up.host();
    let src = format!("docker://{host}/team/multi:latest");
    let store = new_store();
    let s = store.path();

    let bad = run_publish(s, &src, &["--creds", "alice:nope"], &[], None);
    fails_with(
        &bad,
        "wrong password",
        &format!("registry {host} refused the credentials for user 'alice' (401)"),
    );
    assert!(!s.join("repositories").exists());
    let anon = run_publish(s, &src, &[], &[], None);
    fails_with(
        &anon,
        "anonymous",
        "requires authentication to pull team/multi",
    );

    let issued = tokens.issued.load(std::sync::atomic::Ordering::SeqCst);
    let out = run_publish(
        s,
        &src,
        &["--creds", &creds, "--output", "json"],
        &[("RUST_LOG", "debug")],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        describe_output("bearer mirror", &out)
    );
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    let multi = fixtures::oci_multi();
    assert_eq!(j["tags"][0]["digest"], Expect::top_digest(&multi).as_str());
    assert_eq!(u(&j, "blobs_written"), 5);
    assert!(
        tokens.issued.load(std::sync::atomic::Ordering::SeqCst) > issued,
        "the mirror never asked the token service"
    );
    let b64 = base64::engine::general_purpose::STANDARD.encode(&creds);
    assert_no_secrets(s, &[&out, &bad], &[pass.clone(), b64]);
    // No token either: every JWT starts with the base64 of `{"`.
    assert_no_secrets(s, &[&out], &["eyJ".to_owned()]);

    up.stop();
    let server = Server::start(s, &[]);
    let mut skopeo = Skopeo::new();
    let p = skopeo
        .copy(&server.host(), "team/multi:latest", true, None)
        .unwrap_or_else(|e| panic!("{e}"));
    check_pulled(&multi, &p.manifest().unwrap().0, Platforms::All, &mut |d| {
        p.get(d)
    })
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Pushes an artifact manifest (empty config, one layer) that refers to `subject`.
async fn push_artifact(
    p: &common::upstream::Pusher,
    repo: &str,
    subject: (&str, usize),
    artifact_type: &str,
    payload: &[u8],
    tag: Option<&str>,
) -> (String, usize) {
    let config = p.blob(repo, b"{}").await;
    let layer = p.blob(repo, payload).await;
    let m = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": fixtures::OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config, "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": layer, "size": payload.len()}],
        "subject": {"mediaType": fixtures::OCI_MANIFEST, "digest": subject.0, "size": subject.1},
    }))
    .unwrap();
    let digest = common::sha256(&m);
    let reference = tag.map(str::to_owned).unwrap_or_else(|| digest.clone());
    p.manifest(repo, &reference, fixtures::OCI_MANIFEST, &m)
        .await;
    (digest, m.len())
}

#[test]
fn mirror_with_referrers_and_serve_the_referrers_api() {
    let mut up = Upstream::start(UpstreamAuth::Open);
    up.push("oci:fixtures/oci-single:1.0", "fix/signed:1.0", false, None);
    let single = fixtures::oci_single();
    let subject = Expect::top_digest(&single);
    let Expect::Image(img) = &single else {
        unreachable!()
    };
    let subject_size = img.manifest_bytes.as_ref().unwrap().len();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pusher = common::upstream::Pusher::new(&up);
    let hex = hex_of(&subject).to_owned();
    let (sbom, sig) = rt.block_on(async {
        let (sbom, sbom_size) = push_artifact(
            &pusher,
            "fix/signed",
            (&subject, subject_size),
            "application/spdx+json",
            b"{\"spdxVersion\":\"SPDX-2.3\"}",
            None,
        )
        .await;
        // distribution 2.8 has no referrers API: the tag schema lists the SBOM...
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": fixtures::OCI_INDEX,
            "manifests": [{"mediaType": fixtures::OCI_MANIFEST, "digest": sbom, "size": sbom_size, "artifactType": "application/spdx+json"}],
        }))
        .unwrap();
        pusher
            .manifest("fix/signed", &format!("sha256-{hex}"), fixtures::OCI_INDEX, &index)
            .await;
        // ... and cosign's tag holds the signature.
        let (sig, _) = push_artifact(
            &pusher,
            "fix/signed",
            (&subject, subject_size),
            "application/vnd.dev.cosign.artifact.sig.v1+json",
            b"not really a signature",
            Some(&format!("sha256-{hex}.sig")),
        )
        .await;
        (sbom, sig)
    });
    let store = new_store();
    let j = publish_json(
        store.path(),
        &format!("docker://{}/fix/signed:1.0", up.host()),
        &["--with-referrers"],
        &[],
    );
    assert!(
        j["notes"].to_string().contains("copied 2 referrer(s)"),
        "{j:#}"
    );
    up.stop();

    let server = Server::start(store.path(), &[]);
    let http = common::http::client();
    let (all, filtered) = rt.block_on(async {
        let url = server.url(&format!("/v2/fix/signed/referrers/{subject}"));
        let r = http.get(&url).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 307, "{r:?}");
        let loc = r.headers()["location"].to_str().unwrap().to_owned();
        let target = if loc.starts_with("http") {
            loc
        } else {
            server.url(&loc)
        };
        let r = http.get(&target).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let all: Value = r.json().await.unwrap();
        let r = http
            .get(format!("{url}?artifactType=application/spdx%2Bjson"))
            .send()
            .await
            .unwrap();
        let filtered: Value = r.json().await.unwrap();
        (all, filtered)
    });
    assert_eq!(all["mediaType"], fixtures::OCI_INDEX);
    let mut got: Vec<(String, String)> = all["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["digest"].as_str().unwrap().to_owned(),
                d["artifactType"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    got.sort();
    let mut want = vec![
        (sbom.clone(), "application/spdx+json".to_owned()),
        (
            sig.clone(),
            "application/vnd.dev.cosign.artifact.sig.v1+json".to_owned(),
        ),
    ];
    want.sort();
    assert_eq!(got, want);
    assert_eq!(filtered["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(filtered["manifests"][0]["digest"], sbom.as_str());
    // cosign finds the signature by its tag, and the artifact is whole.
    let mut skopeo = Skopeo::new();
    let raw = skopeo
        .inspect_raw(&server.host(), &format!("fix/signed:sha256-{hex}.sig"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(common::sha256(&raw), sig);
    let p = skopeo
        .copy(&server.host(), &format!("fix/signed@{sbom}"), false, None)
        .unwrap_or_else(|e| panic!("{e}"));
    p.check_file_names().unwrap();
}

#[test]
fn mirror_into_an_s3_store() {
    let mut up = Upstream::start(UpstreamAuth::Open);
    up.push(
        "oci:fixtures/oci-multi:latest",
        "fix/multi:latest",
        true,
        None,
    );
    let multi = fixtures::oci_multi();
    let world = common::s3::S3World::start();
    let config = world.direct_config();
    let src = format!("docker://{}/fix/multi:latest", up.host());
    let json = |out: &Output| -> Value {
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
    };
    let first = json(&world.publish(&config, &src, &[], &["--output", "json"]));
    assert_eq!(
        first["tags"][0]["digest"],
        Expect::top_digest(&multi).as_str()
    );
    assert_eq!(u(&first, "blobs_written"), 5);
    let gets = up.blob_gets();
    let again = json(&world.publish(&config, &src, &[], &["--output", "json"]));
    assert_eq!(u(&again, "bytes_downloaded"), 0, "{again:#}");
    assert_eq!(u(&again, "bytes_written"), 0, "{again:#}");
    assert_eq!(up.blob_gets(), gets);
    let verify = world.verify(&config, true);
    assert!(
        verify.status.success(),
        "{}",
        describe_output("verify", &verify)
    );
    up.stop();
    let server = world.serve(&config, &[]);
    let mut skopeo = Skopeo::new();
    let p = skopeo
        .copy(&server.host(), "fix/multi:latest", true, None)
        .unwrap_or_else(|e| panic!("{e}"));
    check_pulled(&multi, &p.manifest().unwrap().0, Platforms::All, &mut |d| {
        p.get(d)
    })
    .unwrap_or_else(|e| panic!("{e}"));
}
