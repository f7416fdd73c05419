//! What a command runs with: its flags, the environment, the config file and the defaults,
//! resolved in one place.
//!
//! Precedence, for every setting: **flag > environment variable > config file > default**. The
//! defaults live in [`SERVE_DEFAULTS`] and [`PUBLISH_DEFAULTS`] only; docs/operations.md ("Limits
//! and timeouts") and the README quote them, and a test checks the operations table against them.
//! Environment variables are read here, not by clap, so the precedence is one rule that a table
//! test can drive without touching the process environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;

use crate::aws::Env;
use crate::config::Config;
use crate::federation::cache::CacheConfig;
use crate::federation::config::EmbeddedConfig;
use crate::federation::region::RegionSettings;
use crate::serve::client_limits::ClientLimitsConfig;
use crate::serve::listener::{ListenerConfig, TlsFiles};
use crate::serve::send_floor::SendFloor;

mod publish;
#[cfg(test)]
mod tests;

pub use publish::{PublishFlags, PublishSettings, PUBLISH_DEFAULTS};

/// The store every command works on (`--store`, `STATIC_REGISTRY_STORE`, the file's `store`).
pub const ENV_STORE: &str = "STATIC_REGISTRY_STORE";
pub const ENV_LISTEN: &str = "STATIC_REGISTRY_LISTEN";
pub const ENV_ORIGIN_SECRET_FILE: &str = "STATIC_REGISTRY_ORIGIN_SECRET_FILE";
pub const ENV_TLS_CERT: &str = "STATIC_REGISTRY_TLS_CERT";
pub const ENV_TLS_KEY: &str = "STATIC_REGISTRY_TLS_KEY";
pub const ENV_WORKERS: &str = "STATIC_REGISTRY_WORKERS";

/// The defaults of `serve`, in seconds where a duration. `workers` has none here: it is one per
/// available core, found at start-up. `[serve.client_limits]` keeps its defaults beside the
/// buckets they size (`serve::client_limits`).
#[derive(Debug)]
pub struct ServeDefaults {
    pub listen: &'static str,
    pub url_ttl: u64,
    pub index_ttl: u64,
    pub health_interval: u64,
    pub max_connections: usize,
    pub header_timeout: u64,
    pub request_timeout: u64,
    pub shutdown_timeout: u64,
    pub http2_idle_timeout: u64,
    /// 0: no pings.
    pub http2_keepalive_interval: u64,
    pub http2_keepalive_timeout: u64,
    /// 0: no floor.
    pub send_timeout: u64,
    /// Bytes per second.
    pub send_min_rate: u64,
    pub trusted_proxy_hops: usize,
}

pub const SERVE_DEFAULTS: ServeDefaults = ServeDefaults {
    listen: "127.0.0.1:5000",
    url_ttl: 600,
    index_ttl: 10,
    health_interval: 10,
    max_connections: 10_000,
    header_timeout: 10,
    request_timeout: 30,
    shutdown_timeout: 30,
    http2_idle_timeout: 60,
    http2_keepalive_interval: 30,
    http2_keepalive_timeout: 20,
    send_timeout: 60,
    send_min_rate: 1024,
    trusted_proxy_hops: 0,
};

/// `serve`'s flags. Those with an environment variable name it in their help; the variable is
/// read by [`ServeSettings::resolve`], not by clap.
#[derive(Debug, Default, clap::Args)]
pub struct ServeFlags {
    /// The store to serve: a directory or file:///path [env: STATIC_REGISTRY_STORE].
    #[arg(long)]
    pub store: Option<String>,
    /// Address to listen on [env: STATIC_REGISTRY_LISTEN; default: 127.0.0.1:5000].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Lifetime of signed URLs, in seconds [default: 600].
    #[arg(long)]
    pub url_ttl: Option<u64>,
    /// Seconds a repository index is cached; a tag move is visible within this [default: 10].
    #[arg(long)]
    pub index_ttl: Option<u64>,
    /// A file holding the embedded origin's signing secret (first line; further lines are also
    /// accepted, for a rotation). Default: `.origin-secret` in the store directory, created on
    /// first start and shared by every replica of the store
    /// [env: STATIC_REGISTRY_ORIGIN_SECRET_FILE].
    #[arg(long)]
    pub origin_secret_file: Option<PathBuf>,
    /// External base URL of the embedded origin (default: redirects relative to this endpoint).
    #[arg(long)]
    pub origin_url: Option<String>,
    /// PEM certificate chain: serve HTTPS (HTTP/2 and HTTP/1.1). Reloaded when the file
    /// changes or on SIGHUP, without dropping connections [env: STATIC_REGISTRY_TLS_CERT].
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert [env: STATIC_REGISTRY_TLS_KEY].
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// Maximum concurrent connections; further clients wait in the accept backlog
    /// [default: 10000].
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Serving threads, each accepting and answering on its own [env: STATIC_REGISTRY_WORKERS;
    /// default: one per core].
    #[arg(long)]
    pub workers: Option<usize>,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT [default: 30].
    #[arg(long)]
    pub shutdown_timeout: Option<u64>,
    /// Seconds an HTTP/2 connection may stay without an open stream [default: 60].
    #[arg(long)]
    pub http2_idle_timeout: Option<u64>,
    /// Window in seconds in which a client keeping an answer waiting must take
    /// --send-min-rate bytes per second, or be disconnected [default: 60; 0: no floor].
    #[arg(long)]
    pub send_timeout: Option<u64>,
    /// Bytes per second a client keeping an answer waiting must take [default: 1024].
    #[arg(long)]
    pub send_min_rate: Option<u64>,
    /// Log every request at info level (method, path, status, latency, request id; never a
    /// signed URL).
    #[arg(long)]
    pub access_log: bool,
}

/// Everything `serve` runs with, resolved.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub store: Option<String>,
    pub listen: SocketAddr,
    pub url_ttl: Duration,
    /// 0: no index cache, and no answer re-used.
    pub index_ttl: Duration,
    pub health_interval: Duration,
    /// The embedded origin, `--origin-secret-file`/`--origin-url` over `[embedded]`.
    pub embedded: EmbeddedConfig,
    pub tls: Option<TlsFiles>,
    pub max_connections: usize,
    pub workers: usize,
    pub header_timeout: Duration,
    pub request_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub http2_idle_timeout: Duration,
    pub http2_keepalive_interval: Option<Duration>,
    pub http2_keepalive_timeout: Duration,
    pub send_floor: Option<SendFloor>,
    /// Proxies of ours in front: `X-Forwarded-For` entries and `X-Forwarded-Proto`/`-Host`
    /// are trusted when ≥ 1. One value for region routing, client limits and external URLs.
    pub trusted_proxy_hops: usize,
    /// `[regions]`, its deprecated `trusted_proxy_hops` replaced by the one above.
    pub regions: RegionSettings,
    pub public_url: Option<String>,
    pub access_log: bool,
    pub client_limits: ClientLimitsConfig,
    /// Origins whose browser pages may read `/v2/` (CORS); empty: none.
    pub cors_origins: Vec<String>,
    /// Run `check` at startup ([`crate::check`]).
    pub startup_check: bool,
    /// Deprecations and the like, for the caller to log.
    pub warnings: Vec<String>,
}

/// The first value set among flag, environment variable and config file. An environment value
/// that does not parse is an error naming the variable.
fn layered<T: FromStr>(
    flag: Option<T>,
    env: Env,
    var: Option<&str>,
    file: Option<T>,
) -> anyhow::Result<Option<T>>
where
    T::Err: std::fmt::Display,
{
    if flag.is_some() {
        return Ok(flag);
    }
    if let Some(raw) = var.and_then(|v| env_value(env, v)) {
        return raw
            .trim()
            .parse()
            .map(Some)
            .map_err(|e| anyhow::anyhow!("invalid {}={raw:?}: {e}", var.unwrap_or_default()));
    }
    Ok(file)
}

/// An environment variable's value; empty counts as unset.
fn env_value(env: Env, var: &str) -> Option<String> {
    env(var).filter(|v| !v.trim().is_empty())
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The store a command works on: `--store`, else `STATIC_REGISTRY_STORE`, else the file's `store`.
pub fn store_location(flag: Option<String>, file: &Config, env: Env) -> Option<String> {
    flag.or_else(|| env_value(env, ENV_STORE))
        .or_else(|| file.store.clone())
}

impl ServeSettings {
    /// Flags over environment over the config file over [`SERVE_DEFAULTS`]; `env` looks up a
    /// variable (empty values count as unset).
    pub fn resolve(flags: ServeFlags, file: &Config, env: Env) -> anyhow::Result<ServeSettings> {
        let d = &SERVE_DEFAULTS;
        let f = &file.serve;
        let listen = match layered(flags.listen, env, Some(ENV_LISTEN), None)? {
            Some(addr) => addr,
            None => f
                .listen
                .as_deref()
                .unwrap_or(d.listen)
                .parse()
                .context("invalid listen address in config")?,
        };
        let tls = match (
            layered(flags.tls_cert, env, Some(ENV_TLS_CERT), f.tls_cert.clone())?,
            layered(flags.tls_key, env, Some(ENV_TLS_KEY), f.tls_key.clone())?,
        ) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => anyhow::bail!("TLS needs both a certificate and a key (tls_cert and tls_key)"),
        };
        let embedded = EmbeddedConfig {
            secret_file: layered(
                flags.origin_secret_file,
                env,
                Some(ENV_ORIGIN_SECRET_FILE),
                file.embedded.secret_file.clone(),
            )?,
            url: flags.origin_url.or_else(|| file.embedded.url.clone()),
        };
        let workers = layered(flags.workers, env, Some(ENV_WORKERS), f.workers)?
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let (trusted_proxy_hops, warnings) = trusted_proxy_hops(file)?;
        let send_timeout = flags
            .send_timeout
            .or(f.send_timeout)
            .unwrap_or(d.send_timeout);
        let send_min_rate = flags
            .send_min_rate
            .or(f.send_min_rate)
            .unwrap_or(d.send_min_rate);
        let keepalive = f
            .http2_keepalive_interval
            .unwrap_or(d.http2_keepalive_interval);
        Ok(ServeSettings {
            store: store_location(flags.store, file, env),
            listen,
            url_ttl: secs(flags.url_ttl.or(f.url_ttl).unwrap_or(d.url_ttl)),
            index_ttl: secs(flags.index_ttl.or(f.index_ttl).unwrap_or(d.index_ttl)),
            health_interval: secs(f.health_interval.unwrap_or(d.health_interval).max(1)),
            embedded,
            tls,
            max_connections: flags
                .max_connections
                .or(f.max_connections)
                .unwrap_or(d.max_connections)
                .max(1),
            workers: workers.max(1),
            header_timeout: secs(f.header_timeout.unwrap_or(d.header_timeout).max(1)),
            request_timeout: secs(f.request_timeout.unwrap_or(d.request_timeout).max(1)),
            shutdown_timeout: secs(
                flags
                    .shutdown_timeout
                    .or(f.shutdown_timeout)
                    .unwrap_or(d.shutdown_timeout),
            ),
            http2_idle_timeout: secs(
                flags
                    .http2_idle_timeout
                    .or(f.http2_idle_timeout)
                    .unwrap_or(d.http2_idle_timeout)
                    .max(1),
            ),
            http2_keepalive_interval: (keepalive > 0).then(|| secs(keepalive)),
            http2_keepalive_timeout: secs(
                f.http2_keepalive_timeout
                    .unwrap_or(d.http2_keepalive_timeout)
                    .max(1),
            ),
            send_floor: SendFloor::new(secs(send_timeout), send_min_rate),
            trusted_proxy_hops,
            regions: RegionSettings {
                trusted_proxy_hops,
                ..file.regions.clone()
            },
            public_url: f.public_url.clone(),
            access_log: flags.access_log || f.access_log,
            client_limits: f.client_limits.clone(),
            cors_origins: f.cors_origins.clone(),
            startup_check: f.startup_check.unwrap_or(true),
            warnings,
        })
    }

    /// The repository-index cache: `index_ttl` for answers, at most 2 s for "not found".
    pub fn cache_config(&self) -> CacheConfig {
        CacheConfig {
            ttl: self.index_ttl,
            negative_ttl: self.index_ttl.clamp(secs(1), secs(2)),
            ..CacheConfig::default()
        }
    }

    pub fn listener_config(&self) -> ListenerConfig {
        ListenerConfig {
            max_connections: self.max_connections,
            workers: self.workers,
            header_timeout: self.header_timeout,
            http2_idle_timeout: self.http2_idle_timeout,
            http2_keep_alive_interval: self.http2_keepalive_interval,
            http2_keep_alive_timeout: self.http2_keepalive_timeout,
            send_floor: self.send_floor,
            shutdown_timeout: self.shutdown_timeout,
            tls: self.tls.clone(),
        }
    }
}

/// `[serve] trusted_proxy_hops`, or the deprecated `[regions] trusted_proxy_hops` when `[serve]`
/// does not set it (with a warning). Two different values are refused: the old reading used
/// `[regions]`'s for `X-Forwarded-For` and `[serve]`'s for `X-Forwarded-Host`, and which one the
/// operator meant for both cannot be guessed.
fn trusted_proxy_hops(file: &Config) -> anyhow::Result<(usize, Vec<String>)> {
    let serve = file.serve.trusted_proxy_hops;
    // `[regions]` never told 0 from unset: 0 there meant "use [serve]'s".
    let regions = Some(file.regions.trusted_proxy_hops).filter(|&n| n > 0);
    let Some(old) = regions else {
        return Ok((serve.unwrap_or(SERVE_DEFAULTS.trusted_proxy_hops), vec![]));
    };
    if let Some(new) = serve.filter(|&new| new != old) {
        anyhow::bail!(
            "[serve] trusted_proxy_hops = {new} and [regions] trusted_proxy_hops = {old} disagree; \
             set only [serve] trusted_proxy_hops ([regions]' spelling is deprecated)"
        );
    }
    let warning = "[regions] trusted_proxy_hops is deprecated: set [serve] trusted_proxy_hops \
                   (one count for X-Forwarded-For and X-Forwarded-Proto/-Host)";
    Ok((old, vec![warning.to_owned()]))
}
