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
        .map(|r| format!("{} {}", r.method, r.target))
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

/// The emulator ignores generation preconditions (see tests/common/fake_gcs.rs), so what can be
/// checked is what the store sends: every index and catalog write is conditional, a first write
/// on `x-goog-if-generation-match: 0`, a later one on the generation its read returned.
#[test]
fn index_writes_are_conditional_on_generations() {
    let world = GcsWorld::start();
    let config = world.config("store", "");
    world.publish(&config, "oci:fixtures/oci-single:1.0", &["cas/app:1"], &[]);
    world.publish(
        &config,
        "docker-archive:fixtures/docker-25.tar",
        &["cas/app:2"],
        &[],
    );
    let requests = world.gcs.adapter.requests();
    let index = format!("/{BUCKET}/{PREFIX}/repositories/cas/app/_index.json");
    let catalog = format!("/{BUCKET}/{PREFIX}/_catalog.json");
    for key in [&index, &catalog] {
        let writes: Vec<_> = requests
            .iter()
            .filter(|r| r.method == "PUT" && r.target.starts_with(key.as_str()))
            .collect();
        assert!(!writes.is_empty(), "no write of {key}");
        assert_eq!(
            writes[0].if_generation_match.as_deref(),
            Some("0"),
            "the first write of {key} must create: {writes:?}"
        );
        for (i, w) in writes.iter().enumerate().skip(1) {
            // The generation the last read of the key before this write returned.
            let at = requests.iter().position(|r| std::ptr::eq(r, *w)).unwrap();
            let read = requests[..at]
                .iter()
                .rev()
                .find(|r| {
                    r.method == "GET" && r.target.starts_with(key.as_str()) && r.status == 200
                })
                .and_then(|r| r.generation.clone());
            assert!(
                read.is_some(),
                "write {i} of {key} without a read before it"
            );
            assert_eq!(w.if_generation_match, read, "write {i} of {key}: {w:?}");
        }
    }
    // The index holds both tags.
    let index_text = String::from_utf8(
        common::blocking_request(world.gcs.server, "GET", &index)
            .unwrap()
            .body,
    )
    .unwrap();
    assert!(
        index_text.contains("\"1\"") && index_text.contains("\"2\""),
        "{index_text}"
    );
}

#[test]
fn untag_prune_and_export_on_gcs() {
    let world = GcsWorld::start();
    let config = world.config("store", "");
    world.check_untag_prune_export(&config, || world.gcs.names());
}
