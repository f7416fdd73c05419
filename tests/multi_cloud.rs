//! Federation across clouds: one store replicated to Azure (Azurite) and GCS (fake-gcs-server)
//! with `static-registry sync`, served by one endpoint whose route lists the Azure origin first
//! and the GCS origin second.
//!
//! - `sync` copies only what the destination lacks: a dry run and the real run agree, a second
//!   run copies nothing, and after one more publish it copies only that image's new objects;
//!   `verify --deep` passes on each replica and their indexes are byte-identical to the source's;
//! - skopeo pulls every fixture through SAS redirects while Azure is up; with Azurite stopped, the
//!   health check moves redirects to the GCS origin and skopeo pulls every fixture again.

mod common;

use std::time::Duration;

use serde_json::Value;

use common::azurite::{AzureWorld, ACCOUNT, CONTAINER};
use common::checks::{expected_top, for_each_fixture, skopeo_pulls_fixture};
use common::clients::Skopeo;
use common::fake_gcs::{FakeGcs, BUCKET};
use common::fixtures;
use common::{describe_output, manifest_dir, wait_for};

fn sync(world: &AzureWorld, config: &std::path::Path, args: &[&str]) -> Value {
    let args: Vec<&str> = ["sync"]
        .into_iter()
        .chain(args.iter().copied())
        .chain(["--output", "json"])
        .collect();
    let out = world.run_ok(config, &args);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("sync output: {e}"))
}

#[test]
fn sync_replicates_across_clouds_and_pulls_fail_over() {
    let world = AzureWorld::start();
    let gcs = FakeGcs::start();
    let local = tempfile::tempdir().unwrap();
    let local_store = local.path().to_str().unwrap().to_owned();
    let all = fixtures::all();
    let (first, rest) = all.split_at(all.len() - 1);
    for f in first {
        common::publish_with(local.path(), f.source, &f.tags, &f.flags);
    }
    let azure = world.location();
    let gs = format!("gs://{BUCKET}/replica");
    let key = format!(
        "{}/tests/data/gcs-v4/test_service_account.not-a-test.json",
        manifest_dir().display()
    );
    let clouds = format!(
        "[azure]\nendpoint = \"{}\"\n\n[gcs]\nendpoint = \"{}\"\nanonymous = true\n",
        world.azurite.endpoint(),
        gcs.endpoint()
    );
    let config = world.write_config("clouds", &clouds);

    // Local -> Azure: the dry run says what the real run then does.
    let dry = sync(&world, &config, &[&local_store, &azure, "--dry-run"]);
    let real = sync(&world, &config, &[&local_store, &azure]);
    assert!(dry["objects_copied"].as_u64().unwrap() > 0, "{dry}");
    for field in [
        "repositories",
        "objects_copied",
        "bytes_copied",
        "indexes_written",
    ] {
        assert_eq!(dry[field], real[field], "{field}: dry {dry} real {real}");
    }
    assert_eq!(dry["dry_run"], true);
    let again = sync(&world, &config, &[&local_store, &azure]);
    assert_eq!(again["objects_copied"], 0, "{again}");
    assert_eq!(again["indexes_written"], 0, "{again}");

    // One more image: only its new objects travel.
    let last = &rest[0];
    common::publish_with(local.path(), last.source, &last.tags, &last.flags);
    let more = sync(&world, &config, &[&local_store, &azure]);
    assert!(more["objects_copied"].as_u64().unwrap() > 0, "{more}");
    assert!(
        more["objects_copied"].as_u64() < real["objects_copied"].as_u64(),
        "first {real}, then {more}"
    );
    assert_eq!(more["indexes_written"], 1, "{more}");

    // Azure -> GCS, cloud to cloud.
    let to_gcs = sync(&world, &config, &[&azure, &gs]);
    assert_eq!(
        to_gcs["indexes_written"].as_u64(),
        more["repositories"].as_u64()
    );
    for store in [&azure, &gs] {
        let mut cmd = world.command(&config);
        cmd.args(["verify", "--deep", "--store", store]);
        let out = world.run("verify", &mut cmd);
        assert!(
            out.status.success(),
            "{store}: {}",
            describe_output("verify", &out)
        );
    }
    // Byte-identical indexes (history included) on the replica.
    let f = &all[0];
    let local_index = std::fs::read(
        local
            .path()
            .join(format!("repositories/{}/_index.json", f.repo())),
    )
    .unwrap();
    let replica_index = common::blocking_request(
        gcs.server,
        "GET",
        &format!("/{BUCKET}/replica/repositories/{}/_index.json", f.repo()),
    )
    .unwrap();
    assert_eq!(replica_index.body, local_index);

    // One endpoint over both clouds: Azure first, GCS second.
    let serve_config = world.write_config(
        "serve",
        &format!(
            "{clouds}\n[serve]\nhealth_interval = 1\n\n\
             [[origins]]\nname = \"azure\"\nstore = \"{azure}\"\n\
             signer = {{ kind = \"azure-sas\", account = \"{ACCOUNT}\", container = \"{CONTAINER}\", prefix = \"{}\", endpoint = \"{}\" }}\n\n\
             [[origins]]\nname = \"gcs\"\nstore = \"{gs}\"\n\
             signer = {{ kind = \"gcs\", bucket = \"{BUCKET}\", prefix = \"replica\", endpoint = \"{}\", service_account_file = \"{key}\" }}\n\n\
             [[routes]]\nprefix = \"\"\norigins = [\"azure\", \"gcs\"]\n",
            common::azurite::PREFIX,
            world.azurite.endpoint(),
            gcs.endpoint(),
        ),
    );
    let serve = world.serve(&serve_config, &[]);
    let mut skopeo = Skopeo::new();
    let host = serve.host();
    let pull_all = |skopeo: &mut Skopeo| {
        for_each_fixture(&all, |f| {
            let top = expected_top(serve.tag_digest(f.repo(), f.tag()), f)?;
            skopeo_pulls_fixture(skopeo, &host, f, &top)
        })
    };
    let top = serve.tag_digest(f.repo(), f.tag());
    let manifest_path = format!("/v2/{}/manifests/{top}", f.repo());
    assert!(
        serve
            .location(&manifest_path)
            .starts_with(&world.azurite.endpoint()),
        "Azure is the first origin"
    );
    pull_all(&mut skopeo);

    // Azure goes away: redirects move to GCS, and every pull still works.
    let azurite_endpoint = world.azurite.endpoint();
    world.azurite.stop();
    let moved = wait_for("redirects to move to GCS", Duration::from_secs(30), || {
        let url = serve.location(&manifest_path);
        (!url.starts_with(&azurite_endpoint)).then_some(url)
    });
    assert!(moved.starts_with(&gcs.endpoint()), "{moved}");
    pull_all(&mut skopeo);
    drop(serve);
    world.assert_no_secret_leaked();
}
