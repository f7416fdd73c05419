//! The endpoint's defences against clients that hold it: idle HTTP/2 connections and slow
//! readers give their connection slots back, and per-client request rates answer 429.
//!
//! Every test runs the real binary on loopback with small configured values, and asserts the
//! outcome (a waiting client gets served, a connection gets closed), never how long it took.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::download::{big_image, start_download};
use common::http::{raw, RawResponse};
use common::{new_store, publish, Server};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `GET path` on a fresh connection, waiting up to 30 s for a connection slot and the answer.
fn get(addr: SocketAddr, path: &str, headers: &[&str]) -> RawResponse {
    rt().block_on(raw(addr, "GET", path.as_bytes(), headers))
}

/// The HTTP/2 client preface and an empty SETTINGS frame: what an h2c client with prior
/// knowledge sends before its first request.
const H2_OPENING: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

/// Reads frames from an HTTP/2 connection until the server closes it; returns the frame types
/// seen.
fn frames_until_closed(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the idle HTTP/2 connection was not closed: {e}"),
        }
    }
    let mut types = Vec::new();
    let mut rest = &bytes[..];
    while rest.len() >= 9 {
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        types.push(rest[3]);
        rest = &rest[(9 + len).min(rest.len())..];
    }
    types
}

#[test]
fn idle_http2_connections_give_their_slots_back() {
    let store = new_store();
    publish(
        store.path(),
        "oci:fixtures/oci-single:1.0",
        &["public/app:1.0"],
    );
    let server = Server::start(
        store.path(),
        &["--max-connections", "2", "--http2-idle-timeout", "1"],
    );
    let addr = server.addr;
    // Two h2c clients connect and then send nothing: together they hold both slots.
    let mut idle: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(H2_OPENING).unwrap();
            s
        })
        .collect();
    // A third client is served once they have been closed for idling.
    let third = get(addr, "/v2/", &[]);
    assert_eq!(third.status, 200, "{third:?}");
    for s in &mut idle {
        let frames = frames_until_closed(s);
        const GOAWAY: u8 = 7;
        assert!(
            frames.contains(&GOAWAY),
            "closed without a GOAWAY; frames {frames:?}"
        );
    }
}

/// A store holding one image whose layer is `size` bytes, served with one connection slot and a
/// rate floor of 64 KiB/s over 1 s; returns the signed URL of that layer's download.
fn one_slot_serving_a_blob_of(size: usize) -> (tempfile::TempDir, Server, String) {
    let store = new_store();
    let src = tempfile::tempdir().unwrap();
    let (layer, _) = big_image(src.path(), size);
    publish(
        store.path(),
        &format!("oci:{}:1.0", src.path().display()),
        &["big/blob:1.0"],
    );
    let server = Server::start(
        store.path(),
        &[
            "--max-connections",
            "1",
            "--send-timeout",
            "1",
            "--send-min-rate",
            "65536",
        ],
    );
    let redirect = get(server.addr, &format!("/v2/big/blob/blobs/{layer}"), &[]);
    assert_eq!(redirect.status, 307, "{redirect:?}");
    let location = redirect.header("location").expect("Location").to_owned();
    (store, server, location)
}

#[test]
fn a_client_that_stops_reading_a_download_is_cut_and_its_slot_freed() {
    const SIZE: usize = 48 << 20; // well above what loopback socket buffers hold
    let (_store, server, location) = one_slot_serving_a_blob_of(SIZE);
    let (addr, location) = (server.addr, location.as_str());
    // The download starts, then its client stops reading: it holds the only slot.
    let (mut slow, len, body) = start_download(addr, location, 0);
    // Another client is served once the slow one has been cut off.
    let next = get(addr, "/v2/", &[]);
    assert_eq!(next.status, 200, "{next:?}");
    let mut got = body.len() as u64;
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        match slow.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n as u64,
        }
    }
    assert!(
        got < len,
        "the stalled download was not cut ({got} of {len} bytes)"
    );
}

/// A server behind one trusted proxy, with per-client limits: API bursts of 3 and `/token`
/// bursts of 2, refilling so slowly (one request per 1000 s) that no test sees a refill.
fn limited_server(store: &std::path::Path, dir: &std::path::Path) -> Server {
    let token_key = dir.join("token.key");
    std::fs::write(&token_key, hex::encode(rand::random::<[u8; 32]>())).unwrap();
    let htpasswd = dir.join("htpasswd");
    std::fs::write(
        &htpasswd,
        format!("alice:{}\n", bcrypt::hash("pw", 5).unwrap()),
    )
    .unwrap();
    let config = dir.join("limits.toml");
    std::fs::write(
        &config,
        format!(
            "[serve]\ntrusted_proxy_hops = 1\n\n\
             [serve.client_limits]\napi_rate = 0.001\napi_burst = 3\n\
             token_rate = 0.001\ntoken_burst = 2\n\n\
             [auth]\nhtpasswd = \"{}\"\ntoken_key_file = \"{}\"\n",
            htpasswd.display(),
            token_key.display()
        ),
    )
    .unwrap();
    Server::start(store, &["--config", &config.display().to_string()])
}

/// Asserts a 429 with a whole number of seconds to wait and the OCI error code.
fn assert_too_many(r: &RawResponse) {
    assert_eq!(r.status, 429, "{r:?}");
    let wait: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After in seconds: {r:?}"));
    assert!(wait >= 1, "{r:?}");
    assert_eq!(r.error_code().as_deref(), Some("TOOMANYREQUESTS"), "{r:?}");
}

#[test]
fn each_client_gets_its_burst_of_api_and_token_requests_then_429() {
    let store = new_store();
    publish(
        store.path(),
        "oci:fixtures/oci-single:1.0",
        &["public/app:1.0"],
    );
    let dir = tempfile::tempdir().unwrap();
    let server = limited_server(store.path(), dir.path());
    let addr = server.addr;
    let api = "/v2/";
    let token = "/token?service=static-registry&scope=repository:public/app:pull";
    let from = |ip: &str| format!("X-Forwarded-For: {ip}");

    // The API: a burst of 3 from one client, then 429.
    let a = from("198.51.100.7");
    for _ in 0..3 {
        let r = get(addr, api, &[&a]);
        assert_eq!(r.status, 200, "{r:?}");
    }
    assert_too_many(&get(addr, api, &[&a]));
    // Only the entry the trusted proxy appended counts: a client cannot pose as another.
    assert_too_many(&get(
        addr,
        api,
        &["X-Forwarded-For: 203.0.113.50, 198.51.100.7"],
    ));
    // Another client is still served.
    let r = get(addr, api, &[&from("198.51.100.8")]);
    assert_eq!(r.status, 200, "{r:?}");

    // `/token` has its own buckets: the client out of API requests still gets 2 tokens.
    for _ in 0..2 {
        let r = get(addr, token, &[&a]);
        assert_eq!(r.status, 200, "{r:?}");
    }
    assert_too_many(&get(addr, token, &[&a]));
    let r = get(addr, token, &[&from("198.51.100.9")]);
    assert_eq!(r.status, 200, "{r:?}");
}

/// HTTP/2 lets a client stall a download without blocking the socket, by granting no more
/// flow-control window: the stalled stream is noticed, and the connection dropped.
#[test]
fn an_http2_client_that_stops_granting_window_is_cut_and_its_slot_freed() {
    const SIZE: usize = 16 << 20; // far above a client's stream window
    let (_store, server, location) = one_slot_serving_a_blob_of(SIZE);
    let addr = server.addr;
    let rt = rt();
    // h2c with prior knowledge; the body is never read, so the client grants no more window.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let stalled = rt
        .block_on(h2.get(server.url(&location)).send())
        .expect("the download starts");
    assert_eq!(stalled.status(), 200);
    assert_eq!(stalled.version(), reqwest::Version::HTTP_2);
    let len = stalled.content_length().expect("Content-Length");
    // Another client is served once the stalled connection has been dropped.
    let next = rt.block_on(raw(addr, "GET", b"/v2/", &[]));
    assert_eq!(next.status, 200, "{next:?}");
    // What the stalled client can still read ends early.
    let got = rt.block_on(async {
        let mut stalled = stalled;
        let mut got = 0u64;
        while let Ok(Some(chunk)) = stalled.chunk().await {
            got += chunk.len() as u64;
        }
        got
    });
    assert!(
        got < len,
        "the stalled download was not cut ({got} of {len} bytes)"
    );
}
