//! Google Cloud Storage end to end: the real binary publishes into, verifies, prunes, exports from
//! and serves a `gs://` store on fake-gcs-server (tests/common/fake_gcs.rs, which says what the
//! emulator cannot check: signatures and generation preconditions).
//!
//! - every fixture published to the bucket passes `verify --deep` and pulls with skopeo through
//!   `serve`, whose redirects are V4-signed URLs (RSA, the conformance vectors' inert key) on the
//!   bucket;
//! - `serve` itself reads nothing from the bucket but index files;
//! - `untag` + `prune` and `export` work unchanged.

mod common;

use common::checks::{expected_top, for_each_fixture, skopeo_pulls_fixture};
use common::clients::Skopeo;
use common::fake_gcs::{GcsWorld, BUCKET, PREFIX};
use common::world::fetch;
use common::{manifest_dir, sha256};

/// The `[gcs]` line that gives `serve` a service-account key to sign with.
fn signing_key() -> String {
    format!(
        "service_account_file = \"{}/tests/data/gcs-v4/test_service_account.not-a-test.json\"",
        manifest_dir().display()
    )
}

#[test]
fn publish_verify_and_pull_through_v4_urls_on_gcs() {
    let world = GcsWorld::start();
    let config = world.config("store", "");
    let fixtures = world.publish_fixtures(&config);
    // What the store holds, listed by the emulator's own JSON API.
    let names = world.gcs.names();
    assert!(names.contains(&"_catalog.json".to_owned()), "{names:?}");
    assert!(
        names.iter().any(|n| n.starts_with("blobs/sha256/")),
        "{names:?}"
    );

    // `serve` on the gs:// store signs with the [gcs] key (the default origin).
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "anonymous = true",
        &format!("anonymous = true\n{}", signing_key()),
    );
    let serve_config = world.write_config("serve", &text);
    world.gcs.adapter.clear();
    let serve = world.serve(&serve_config, &[]);
    let f = &fixtures[0];
    let top = serve.tag_digest(f.repo(), f.tag());
    let url = serve.location(&format!("/v2/{}/manifests/{top}", f.repo()));
    assert!(
        url.starts_with(&format!(
            "{}/{BUCKET}/{PREFIX}/manifests/sha256/",
            world.gcs.endpoint()
        )) && url.contains("X-Goog-Algorithm=GOOG4-RSA-SHA256")
            && url.contains("X-Goog-Signature=")
            && url.contains("response-content-type="),
        "{url}"
    );
    let got = fetch("GET", &url);
    assert_eq!((got.status, sha256(&got.body)), (200, top.clone()), "{url}");

    let mut skopeo = Skopeo::new();
    let host = serve.host();
    for_each_fixture(&fixtures, |f| {
        let top = expected_top(serve.tag_digest(f.repo(), f.tag()), f)?;
        skopeo_pulls_fixture(&mut skopeo, &host, f, &top)
    });

    // Everything `serve` asked the bucket for itself (unsigned requests; the clients' carry a
    // signature) was an index file.
    let own: Vec<String> = world
        .gcs
        .adapter
        .requests()
        .into_iter()
        .filter(|r| !r.contains("X-Goog-Signature="))
        .collect();
    assert!(
        own.iter()
            .any(|r| r.starts_with("GET ") && r.ends_with("/_index.json")),
        "serve loaded no index: {own:#?}"
    );
    for r in &own {
        let index_file = r.ends_with("/_index.json") || r.ends_with("/_catalog.json");
        // The startup check and health canary fetch the layout's `_health` object.
        let health = r.contains(&format!("/{PREFIX}/_health"));
        assert!(
            (r.starts_with("GET ") || r.starts_with("HEAD ")) && (index_file || health),
            "serve asked the bucket for more than index files: {r} (all: {own:#?})"
        );
    }
}

#[test]
fn untag_prune_and_export_on_gcs() {
    let world = GcsWorld::start();
    let config = world.config("store", "");
    world.check_untag_prune_export(&config, || world.gcs.names());
}
