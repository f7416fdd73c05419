//! The Azure harness: a real Azurite blob service (npm `azurite`; it verifies Shared Key request
//! signatures and SAS signatures, with no way to turn that off) on a free loopback port, with a
//! test account of its own, and the `static-registry` binary pointed at it through a config file
//! and the standard Azure environment variable for the account key.
//!
//! Containers are created with Microsoft's Python SDK (`azure-storage-blob`), an implementation
//! of the Shared Key protocol independent of `object_store`'s. Everything is killed on drop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command};

use super::pki::Pki;
use super::world::{files_containing, World};
use super::{blocking_get_status, spawn_on_free_port};

/// The account Azurite is started with (Azure's rules: 3-24 lowercase letters and digits).
pub const ACCOUNT: &str = "srtestaccount";
/// The account key's bytes: distinctive, so a grep for its base64 cannot match by chance.
const KEY_BYTES: &[u8] = b"srAzureTestKey/never+printed-0123456789";
/// The container every world creates.
pub const CONTAINER: &str = "images";
/// The blob-name prefix the layout lives under.
pub const PREFIX: &str = "layout/v1";

/// The account key as Azure shows it (base64).
pub fn account_key() -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, KEY_BYTES)
}

/// Where `azurite-blob` is: `AZURITE_BLOB`, on PATH, or where scripts/test.sh installs it.
pub fn azurite_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("AZURITE_BLOB") {
        return PathBuf::from(p);
    }
    let installed = std::env::var_os("HOME").map(|h| {
        PathBuf::from(h).join(".cache/static-registry-test/node_modules/.bin/azurite-blob")
    });
    super::find_tool("azurite-blob")
        .or(installed.filter(|p| p.is_file()))
        .unwrap_or_else(|| {
            panic!(
                "required tool `azurite-blob` is not installed. Run the suite with \
                 scripts/test.sh, or: npm install --prefix ~/.cache/static-registry-test azurite"
            )
        })
}

/// A running Azurite blob service with [`ACCOUNT`] and its [`CONTAINER`]; killed on drop.
pub struct Azurite {
    /// In a mutex so a test can [`Azurite::stop`] it through a shared world.
    child: std::sync::Mutex<Child>,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    /// With OAuth: HTTPS with a certificate from this test CA.
    pub tls: Option<Pki>,
}

impl Azurite {
    pub fn start() -> Azurite {
        Self::start_with(None)
    }

    /// Azurite checking Azure AD bearer tokens (`--oauth basic`: issuer, audience and times, not
    /// their signature), which it only does over HTTPS: its certificate is issued by `tls`.
    pub fn start_with_oauth() -> Azurite {
        Self::start_with(Some(Pki::new()))
    }

    fn start_with(tls: Option<Pki>) -> Azurite {
        let cert = tls.as_ref().map(|pki| pki.issue("azurite", "01"));
        let exe = azurite_binary();
        let dir = tempfile::Builder::new()
            .prefix("sr-azurite-")
            .tempdir()
            .expect("azurite temp dir");
        let data = dir.path().join("data");
        let (child, addr) = spawn_on_free_port(
            "azurite-blob",
            &dir.path().join("azurite.log"),
            |port| {
                let mut cmd = Command::new(&exe);
                cmd.args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
                    .arg("--location")
                    .arg(&data)
                    // The SDK asks for a newer service version than this Azurite knows; the
                    // requests it makes here are the same in every version.
                    .arg("--skipApiVersionCheck")
                    // Azurite reports usage to Microsoft unless told not to; tests stay local.
                    .arg("--disableTelemetry")
                    .env("AZURITE_ACCOUNTS", format!("{ACCOUNT}:{}", account_key()));
                if let Some((crt, key)) = &cert {
                    cmd.args(["--oauth", "basic", "--cert"])
                        .arg(crt)
                        .arg("--key")
                        .arg(key);
                }
                cmd
            },
            |addr| match cert {
                None => blocking_get_status(addr, "/").is_some(),
                Some(_) => std::net::TcpStream::connect(addr).is_ok(),
            },
        );
        let azurite = Azurite {
            child: std::sync::Mutex::new(child),
            addr,
            dir,
            tls,
        };
        azurite.sdk(&format!("c.create_container({CONTAINER:?})"));
        azurite
    }

    /// `http(s)://127.0.0.1:PORT/ACCOUNT`: the Blob service URL, path-style as Azurite wants it.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}/{ACCOUNT}", self.addr)
    }

    /// The test CA's certificate, when Azurite runs HTTPS.
    pub fn ca(&self) -> Option<PathBuf> {
        self.tls.as_ref().map(|pki| pki.path("ca.crt"))
    }

    /// Runs `statement` in Python with `c`, an SDK `BlobServiceClient` for the test account;
    /// returns what it printed.
    pub fn sdk(&self, statement: &str) -> String {
        let script = format!(
            "import sys\nfrom azure.storage.blob import BlobServiceClient\n\
             c = BlobServiceClient.from_connection_string(sys.argv[1], connection_verify=sys.argv[2] or True)\n{statement}\n"
        );
        let conn = format!(
            "DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={};BlobEndpoint={};",
            account_key(),
            self.endpoint()
        );
        let ca = self
            .ca()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let out = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(conn)
            .arg(ca)
            .output()
            .expect("run python3");
        assert!(
            out.status.success(),
            "azure-storage-blob ({statement}) failed (scripts/test.sh installs it): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The directory Azurite keeps blobs and its metadata database in.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Azurite {
    /// Stops the service (an outage); its data stays.
    pub fn stop(&self) {
        let mut child = self.child.lock().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Every Azure credential variable `object_store` reads: each run starts without them.
const AZURE_ENV: [&str; 10] = [
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_SAS_KEY",
    "AZURE_STORAGE_TOKEN",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_TENANT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_STORAGE_USE_EMULATOR",
    "AZURITE_BLOB_STORAGE_URL",
];

/// The tenant of the test identity.
pub const TENANT: &str = "ab1f708d-50f6-404c-a006-d71b2ac7a606";
/// Its object id (`skoid` in user-delegation SAS).
pub const OBJECT_ID: &str = "5f1b3d4a-0000-4000-8000-000000000001";

/// A bearer token as Azure AD issues them for Storage: what Azurite's `--oauth basic` checks
/// (issuer, audience, times), valid for an hour, with a signature nobody checks.
fn bearer_token() -> String {
    use base64::Engine as _;
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    format!(
        "{}.{}.c3ItdGVzdC10b2tlbg",
        b64(serde_json::json!({"alg": "RS256", "typ": "JWT"})),
        b64(serde_json::json!({
            "aud": "https://storage.azure.com",
            "iss": format!("https://sts.windows.net/{TENANT}/"),
            "iat": now - 60, "nbf": now - 60, "exp": now + 3600,
            "oid": OBJECT_ID, "tid": TENANT,
        }))
    )
}

/// Azurite and a [`World`] whose runs have the account key in `AZURE_STORAGE_ACCOUNT_KEY` and no
/// other Azure credential from the caller's environment.
pub struct AzureWorld {
    pub azurite: Azurite,
    world: World,
    /// What must never appear in a log or a stored blob: the account key, the bearer token.
    secrets: Vec<String>,
}

impl std::ops::Deref for AzureWorld {
    type Target = World;
    fn deref(&self) -> &World {
        &self.world
    }
}

impl AzureWorld {
    pub fn start() -> AzureWorld {
        let azurite = Azurite::start();
        let key = account_key();
        let world = World::new(
            "sr-azworld-",
            &AZURE_ENV,
            &[("AZURE_STORAGE_ACCOUNT_KEY", key.as_str())],
        );
        AzureWorld {
            azurite,
            world,
            secrets: vec![key],
        }
    }

    /// Azurite with OAuth over HTTPS, and runs that have no account key, only an Azure AD bearer
    /// token (`AZURE_STORAGE_TOKEN`, as a workload identity would yield) and the test CA
    /// (`SSL_CERT_FILE`): the store writes with the token, `serve` signs user-delegation SAS.
    pub fn start_with_oauth() -> AzureWorld {
        let azurite = Azurite::start_with_oauth();
        let token = bearer_token();
        let ca = azurite.ca().expect("TLS").display().to_string();
        let world = World::new(
            "sr-azworld-",
            &AZURE_ENV,
            &[
                ("AZURE_STORAGE_TOKEN", token.as_str()),
                ("SSL_CERT_FILE", ca.as_str()),
            ],
        );
        AzureWorld {
            azurite,
            world,
            secrets: vec![account_key(), token],
        }
    }

    /// `azure://ACCOUNT/CONTAINER/PREFIX`.
    pub fn location(&self) -> String {
        format!("azure://{ACCOUNT}/{CONTAINER}/{PREFIX}")
    }

    /// Writes `NAME.toml`: the store on Azurite, plus `tail` (whole sections).
    pub fn config(&self, name: &str, tail: &str) -> PathBuf {
        self.write_config(
            name,
            &format!(
                "store = \"{}\"\n\n[azure]\nendpoint = \"{}\"\n\n{tail}\n",
                self.location(),
                self.azurite.endpoint()
            ),
        )
    }

    /// Files under the logs and Azurite's data holding a secret (the account key, the bearer
    /// token; raw or percent-encoded); asserts there are none.
    pub fn assert_no_secret_leaked(&self) {
        let encoded: Vec<String> = self
            .secrets
            .iter()
            .map(|s| url::form_urlencoded::byte_serialize(s.as_bytes()).collect())
            .collect();
        let mut needles: Vec<&[u8]> = vec![KEY_BYTES];
        needles.extend(self.secrets.iter().map(|s| s.as_bytes()));
        needles.extend(encoded.iter().map(|s| s.as_bytes()));
        let (found, _) = files_containing(&[self.log_dir(), self.azurite.data_dir()], &needles);
        assert!(found.is_empty(), "a secret appears in: {found:#?}");
    }
}
