//! A large image, and downloads read as slowly as a test needs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use serde_json::json;

use super::{fixtures, hex_of, sha256};

/// An OCI layout with one image whose only layer is a gzip stream of `size` random bytes (in a
/// tar); returns the layer digest and length.
pub fn big_image(dir: &Path, size: usize) -> (String, u64) {
    use rand::RngCore;
    let mut data = vec![0u8; size];
    rand::rng().fill_bytes(&mut data);
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(size as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "big.bin", &data[..]).unwrap();
    let tar = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
    gz.write_all(&tar).unwrap();
    let layer = gz.finish().unwrap();
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let d = sha256(bytes);
        std::fs::write(blobs.join(hex_of(&d)), bytes).unwrap();
        (d, bytes.len())
    };
    let (layer_d, layer_n) = put(&layer);
    let config = json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": { "type": "layers", "diff_ids": [sha256(&tar)] },
    })
    .to_string();
    let (config_d, config_n) = put(config.as_bytes());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": fixtures::OCI_MANIFEST,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_d, "size": config_n },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_d, "size": layer_n }],
    })
    .to_string();
    let (manifest_d, manifest_n) = put(manifest.as_bytes());
    let index = json!({
        "schemaVersion": 2,
        "mediaType": fixtures::OCI_INDEX,
        "manifests": [{
            "mediaType": fixtures::OCI_MANIFEST, "digest": manifest_d, "size": manifest_n,
            "annotations": { "org.opencontainers.image.ref.name": "1.0" },
        }],
    });
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    (layer_d, layer_n as u64)
}

/// Opens `GET location` on a fresh connection and reads the response head and `first` body
/// bytes; returns the stream, the content length and the body bytes read so far.
pub fn start_download(addr: SocketAddr, location: &str, first: usize) -> (TcpStream, u64, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {location} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let head_end = loop {
        let n = s.read(&mut chunk).expect("read response head");
        assert!(n > 0, "connection closed before the response head");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "download answered:\n{head}"
    );
    let len: u64 = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .expect("Content-Length");
    let mut body = buf[head_end..].to_vec();
    while body.len() < first {
        let n = s.read(&mut chunk).expect("read body");
        assert!(n > 0, "connection closed early");
        body.extend_from_slice(&chunk[..n]);
    }
    (s, len, body)
}
