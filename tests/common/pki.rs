//! A test CA made with `openssl`, and a TLS connection that reports what the server presented.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::common::{describe_output, require_tool};

/// A test CA (openssl) issuing server certificates for 127.0.0.1 and localhost.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

pub fn openssl(args: &[&str], dir: &Path) {
    require_tool("openssl");
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "{}",
        describe_output(&format!("openssl {args:?}"), &out)
    );
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("sr-pki-")
            .tempdir()
            .unwrap();
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=static-registry test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
            dir.path(),
        );
        std::fs::write(
            dir.path().join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        // What skopeo and podman read with --cert-dir: the CA only.
        std::fs::create_dir(dir.path().join("certs.d")).unwrap();
        std::fs::copy(dir.path().join("ca.crt"), dir.path().join("certs.d/ca.crt")).unwrap();
        Pki { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Issues `NAME.crt` / `NAME.key` with `serial`.
    pub fn issue(&self, name: &str, serial: &str) -> (PathBuf, PathBuf) {
        let (crt, key, csr) = (
            format!("{name}.crt"),
            format!("{name}.key"),
            format!("{name}.csr"),
        );
        openssl(
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                "/CN=localhost",
            ],
            self.dir.path(),
        );
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-set_serial",
                serial,
                "-days",
                "2",
                "-out",
                &crt,
                "-extfile",
                "server.ext",
            ],
            self.dir.path(),
        );
        (self.path(&crt), self.path(&key))
    }

    /// Installs a certificate and key as `live.crt`/`live.key`, each with an atomic rename.
    pub fn install(&self, crt: &Path, key: &Path) {
        for (from, to) in [(key, "live.key"), (crt, "live.crt")] {
            let tmp = self.path(&format!("{to}.tmp"));
            std::fs::copy(from, &tmp).unwrap();
            std::fs::rename(&tmp, self.path(to)).unwrap();
        }
    }
}

pub fn der_of(pem: &Path) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_file(pem)
        .expect("PEM certificate")
        .to_vec()
}

/// One TLS connection (rustls, trusting the test CA) speaking HTTP/1.1 with keep-alive.
pub struct TlsConn {
    pub stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    pub buf: Vec<u8>,
}

impl TlsConn {
    pub async fn connect(addr: SocketAddr, ca: &Path, alpn: &[&[u8]]) -> TlsConn {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let stream = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .expect("TLS handshake with the test CA");
        TlsConn {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn peer_cert(&self) -> Vec<u8> {
        self.stream
            .get_ref()
            .1
            .peer_certificates()
            .expect("peer certificates")[0]
            .to_vec()
    }

    pub fn alpn(&self) -> Option<Vec<u8>> {
        self.stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
    }

    /// `GET path` on this connection; returns the status. Errors if the connection is gone.
    pub async fn get(&mut self, path: &str) -> Result<u16, String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        self.stream
            .write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                if self.buf.len() >= end + 4 + len {
                    self.buf.drain(..end + 4 + len);
                    let status = head
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or("")
                        .parse()
                        .map_err(|_| head.clone())?;
                    return Ok(status);
                }
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(30), self.stream.read(&mut chunk))
                .await
                .map_err(|_| "timed out".to_string())?
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// New handshakes, every `every` for up to 60 s, until the server presents `want`;
/// `between` runs before each one.
pub async fn until_presented(
    addr: SocketAddr,
    ca: &Path,
    want: &[u8],
    every: Duration,
    timed_out: &str,
    mut between: impl AsyncFnMut(),
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        between().await;
        let fresh = TlsConn::connect(addr, ca, &[b"http/1.1"]).await;
        if fresh.peer_cert() == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{timed_out}");
        tokio::time::sleep(every).await;
    }
}

pub fn curl_version(url: &str, ca: &Path, flag: &str) -> String {
    require_tool("curl");
    let out = Command::new("curl")
        .args(["-sS", flag, "--cacert"])
        .arg(ca)
        .args(["-o", "/dev/null", "-w", "%{http_version} %{http_code}", url])
        .output()
        .expect("run curl");
    assert!(out.status.success(), "{}", describe_output("curl", &out));
    String::from_utf8_lossy(&out.stdout).to_string()
}
