//! Real clients pull every fixture through `static-registry serve`.
//!
//! Each test publishes every fixture into one fresh store (each under its own repository), starts
//! one server, then runs one client over every reference. The pulled content must be the fixture:
//! - OCI fixtures (compressed layers) are published byte for byte: the manifest (or index) digest
//!   and bytes and the layer digests equal the fixture's;
//! - docker archives (uncompressed layers, compressed on publish) keep their config, so the image
//!   ID and diff_ids equal the fixture's, and every pulled layer decompresses to its diff_id;
//! - the multi-platform index keeps its digest; single-platform pulls get linux/amd64.
//!
//! Every fixture is checked even when an earlier one fails; the test then lists every failure.

mod common;

use common::checks::{
    containerd_pulls_fixture, expected_top, for_each_fixture, podman_pulls_fixture,
    skopeo_pulls_fixture,
};
use common::clients::{Containerd, Podman, Skopeo};
use common::fixtures::{self, Fixture};
use common::{new_store, Server};

/// Publishes every fixture into a fresh store and serves it.
fn world() -> (tempfile::TempDir, Server, Vec<Fixture>) {
    let store = new_store();
    let fixtures = fixtures::publish_all(store.path());
    let server = Server::start(store.path(), &[]);
    (store, server, fixtures)
}

#[test]
fn skopeo_pulls_every_fixture() {
    let mut skopeo = Skopeo::new();
    let (_store, server, fixtures) = world();
    let host = server.host();
    for_each_fixture(&fixtures, |f| {
        let top = expected_top(server.tag_digest(f.repo(), f.tag()), f)?;
        skopeo_pulls_fixture(&mut skopeo, &host, f, &top)
    });
}

#[test]
fn podman_pulls_every_fixture() {
    let podman = Podman::new();
    let (_store, server, fixtures) = world();
    let host = server.host();
    for_each_fixture(&fixtures, |f| {
        let top = expected_top(server.tag_digest(f.repo(), f.tag()), f)?;
        podman_pulls_fixture(&podman, &host, f, &top)
    });
}

#[test]
fn containerd_pulls_every_fixture() {
    let ctd = Containerd::start();
    let (_store, server, fixtures) = world();
    let host = server.host();
    for_each_fixture(&fixtures, |f| {
        let top = expected_top(server.tag_digest(f.repo(), f.tag()), f)?;
        containerd_pulls_fixture(&ctd, &host, f, &top)
    });
}
