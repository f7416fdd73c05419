//! The TOML configuration file, as written. Flags and environment variables override it and the
//! defaults fill its gaps, both in `crate::settings`; it exists so a deployment is one reviewable
//! file (see `config/*.toml`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use crate::auth::AuthConfig;
use crate::federation::config::{EmbeddedConfig, OriginConfig, RouteConfig};
use crate::federation::region::RegionSettings;
use crate::store::{AzureSettings, CloudSettings, GcsSettings, S3Settings};

/// The whole configuration file. Every field is optional; `crate::settings` layers flags and
/// environment variables over it and holds the defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the layout lives: a directory, `file:///path`, `s3://bucket[/prefix]`,
    /// `azure://account/container[/prefix]` or `gs://bucket[/prefix]`.
    pub store: Option<String>,
    #[serde(default)]
    pub serve: ServeSection,
    /// Settings for `s3://` stores.
    #[serde(default)]
    pub s3: S3Settings,
    /// Settings for `azure://` stores.
    #[serde(default)]
    pub azure: AzureSettings,
    /// Settings for `gs://` stores.
    #[serde(default)]
    pub gcs: GcsSettings,
    /// The embedded origin (local stores).
    #[serde(default)]
    pub embedded: EmbeddedConfig,
    /// Where content is fetched from; without any, the store itself is the one origin.
    #[serde(default)]
    pub origins: Vec<OriginConfig>,
    /// Repository-name prefixes → ordered origins (longest prefix wins).
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Region routing.
    #[serde(default)]
    pub regions: RegionSettings,
    #[serde(default)]
    pub publish: PublishSection,
    /// Private repositories and the token endpoint.
    pub auth: Option<AuthConfig>,
    /// Pull-through mirroring of other registries (docs/mirror.md, "Mirror mode").
    #[serde(default)]
    pub mirror: crate::federation::mirror::MirrorConfig,
    /// The web page (docs/ui.md).
    #[serde(default)]
    pub ui: crate::ui::UiConfig,
    /// Tags that may never move (docs/store-care.md, "Immutable tags").
    #[serde(default)]
    pub immutable: Vec<crate::immutable::ImmutableRule>,
    /// Which tags `retain` drops (docs/store-care.md, "Retention").
    #[serde(default)]
    pub retention: Vec<crate::retain::RetentionRule>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeSection {
    pub listen: Option<String>,
    /// Lifetime of signed URLs, seconds.
    pub url_ttl: Option<u64>,
    /// How long a repository index is cached before a refresh, seconds.
    pub index_ttl: Option<u64>,
    /// Seconds between active health checks of each origin.
    pub health_interval: Option<u64>,
    /// PEM certificate chain and key: serve HTTPS (reloaded on change or SIGHUP).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Maximum concurrent connections (default 10000).
    pub max_connections: Option<usize>,
    /// Serving threads (default: one per available core).
    pub workers: Option<usize>,
    /// Seconds a registry API request may take, index load included, before a 503 (default 30).
    /// Downloads from the embedded origin have no total limit; `send_timeout` bounds slow readers.
    pub request_timeout: Option<u64>,
    /// Seconds a client has to send request headers (default 10).
    pub header_timeout: Option<u64>,
    /// Seconds in-flight requests get to finish after SIGTERM (default 30).
    pub shutdown_timeout: Option<u64>,
    /// Seconds an HTTP/2 connection may stay without an open stream before it is closed
    /// (default 60).
    pub http2_idle_timeout: Option<u64>,
    /// Seconds between keep-alive pings on a quiet HTTP/2 connection (default 30; 0: none).
    pub http2_keepalive_interval: Option<u64>,
    /// Seconds a ping's answer may take before the connection is closed (default 20).
    pub http2_keepalive_timeout: Option<u64>,
    /// Window, seconds, in which a client keeping an answer waiting must take `send_min_rate`
    /// (default 60; 0: no floor).
    pub send_timeout: Option<u64>,
    /// Bytes per second a client keeping an answer waiting must take (default 1024).
    pub send_min_rate: Option<u64>,
    /// Per-client request rates (off by default).
    #[serde(default)]
    pub client_limits: crate::serve::client_limits::ClientLimitsConfig,
    /// How many proxies (our own balancers) sit in front: with one or more, `X-Forwarded-Proto`
    /// and `-Host` are trusted for external URLs, and `X-Forwarded-For` for region routing and
    /// client limits (default 0). `[regions] trusted_proxy_hops` is its deprecated spelling.
    pub trusted_proxy_hops: Option<usize>,
    /// The endpoint's external URL (e.g. `https://registry.example.com`); used to warn when an
    /// origin is a subdomain of it (Go clients would forward `Authorization` there).
    pub public_url: Option<String>,
    /// Log every request at info level.
    #[serde(default)]
    pub access_log: bool,
    /// Origins (`https://ui.example`, or `"*"`) whose pages may read the registry API (CORS).
    #[serde(default)]
    pub cors_origins: Vec<String>,
    /// Run `check` against every origin at startup (default true); off for origins where every
    /// fetch is billed, or where another system does it.
    pub startup_check: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishSection {
    pub jobs: Option<usize>,
    /// Also write the registry v1 view of every published image (like `publish --v1`).
    pub v1: Option<bool>,
    /// Most a compressed archive source may decompress to (like `publish --max-archive-bytes`).
    pub max_archive_bytes: Option<crate::byte_size::ByteSize>,
    /// `--max-manifests` of publish, export, verify and prune (default 4096).
    pub max_manifests: Option<usize>,
}

impl Config {
    /// The `[s3]`, `[azure]` and `[gcs]` sections, for opening stores.
    pub fn clouds(&self) -> CloudSettings {
        CloudSettings {
            s3: self.s3.clone(),
            azure: self.azure.clone(),
            gcs: self.gcs.clone(),
        }
    }

    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_typos() {
        let c: Config = toml::from_str(
            "store = \"/srv/store\"\n[serve]\nlisten = \"0.0.0.0:5000\"\nurl_ttl = 60\n",
        )
        .unwrap();
        assert_eq!(c.store.as_deref(), Some("/srv/store"));
        assert_eq!(c.serve.url_ttl, Some(60));
        assert!(toml::from_str::<Config>("[serve]\nlisten_addr = \"x\"\n").is_err());
        let c: Config = toml::from_str(
            "[serve]\nsend_timeout = 5\n[serve.client_limits]\napi_rate = 2.5\ntoken_burst = 3\n",
        )
        .unwrap();
        assert_eq!(c.serve.send_timeout, Some(5));
        assert_eq!(c.serve.client_limits.api_rate, 2.5);
        assert_eq!(c.serve.client_limits.token_burst, Some(3));
        assert!(toml::from_str::<Config>("[serve.client_limits]\napi_rte = 1\n").is_err());
    }

    /// Every example in `config/` is a valid configuration file (a renamed or misspelt key there
    /// would mislead every operator who copies it).
    #[test]
    fn every_example_config_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Config::load(Some(&path)).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                seen += 1;
            }
        }
        assert!(
            seen >= 10,
            "only {seen} example configs found in {}",
            dir.display()
        );
        let clouds: Config =
            toml::from_str("store = \"azure://acct/cont\"\n[azure]\nendpoint = \"http://127.0.0.1:1/acct\"\n[gcs]\nanonymous = true\n")
                .unwrap();
        assert!(clouds.clouds().gcs.anonymous);
        assert!(toml::from_str::<Config>("[azure]\nendpont = \"x\"\n").is_err());
    }
}
