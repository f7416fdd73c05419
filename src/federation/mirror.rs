//! Mirror namespaces: which store repository a pull-through request names (docs/mirror.md,
//! "Mirror mode").
//!
//! Clients configured to use the endpoint as a mirror name an upstream's repositories in three
//! ways, and all three map to one store repository, `<prefix>/<name>`:
//! - containerd adds `?ns=<host>` to every request it sends to a mirror;
//! - CRI-O and podman put a path prefix in the mirror's `location` (`mirror.example/docker.io`);
//! - Docker's `registry-mirrors` sends Docker Hub names bare (`library/alpine`), with no `ns`.
//!
//! This module is the mapping only (a table, no I/O), so serve, the copier and `mirror-config`
//! share one rule. What happens on a miss is the [`Fill`] seam: `serve` calls it, the copier in
//! `src/mirror/` implements it with the publisher, so `serve` never depends on `publish`.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::oci::Platform;
use crate::reference::{ManifestRef, RepoName, Tag};

/// Docker Hub as clients name it.
pub const DOCKER_HUB: &str = "docker.io";
/// Docker Hub's API host (clients rewrite `docker.io` to it).
pub const DOCKER_HUB_API: &str = "https://registry-1.docker.io";

/// `[mirror]` in the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// Where populated images are written; default: `serve`'s `--store`.
    pub store: Option<String>,
    /// Images waiting to be copied, at most (further misses are dropped and counted).
    pub queue: Option<usize>,
    /// Images copied at once by this replica.
    pub concurrency: Option<usize>,
    /// How long a replica's claim on a copy lasts (seconds), so a crashed copier is taken over.
    pub lease_ttl: Option<u64>,
    /// After a failed copy, how long (seconds) before a miss of the same image tries again.
    pub retry_after: Option<u64>,
    #[serde(default)]
    pub upstreams: Vec<UpstreamConfig>,
}

/// `[[mirror.upstreams]]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The registry as clients name it: `docker.io`, `ghcr.io`, `registry.example:5000`.
    pub host: String,
    /// Its API URL; default `https://<host>` (`https://registry-1.docker.io` for docker.io).
    pub url: Option<String>,
    /// The store prefix its repositories live under; default: the host (which must then be a
    /// valid repository path: a port is not).
    pub prefix: Option<String>,
    /// Whether bare names (Docker's `registry-mirrors`) that the store lacks map here; default:
    /// true for docker.io. At most one upstream may have it.
    pub unqualified: Option<bool>,
    /// Copy a missed image from the upstream into the store in the background.
    #[serde(default)]
    pub populate: bool,
    /// Repositories (upstream names) that may be populated: `library/*`, `org/**`, `exact/name`.
    /// Empty: none.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Seconds after which a mirrored tag is re-resolved upstream (still served meanwhile).
    pub tag_ttl: Option<u64>,
    /// The largest image (sum of its blobs) that is copied.
    pub max_image_bytes: Option<crate::byte_size::ByteSize>,
    /// Keep only these platforms of a multi-platform image; default: all.
    #[serde(default)]
    pub platforms: Vec<String>,
    /// Environment variables holding the upstream's user name and password (or token).
    pub username_env: Option<String>,
    pub password_env: Option<String>,
    /// A Docker `config.json` (`auths`, `credHelpers`, `credsStore`) to take credentials from.
    pub authfile: Option<std::path::PathBuf>,
    /// Verify the upstream's TLS certificate (false also allows plain HTTP).
    pub tls_verify: Option<bool>,
}

/// Defaults of `[mirror]` and `[[mirror.upstreams]]`.
pub const DEFAULT_QUEUE: usize = 64;
pub const DEFAULT_CONCURRENCY: usize = 2;
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(900);
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(60);
pub const DEFAULT_TAG_TTL: Duration = Duration::from_secs(3600);
pub const DEFAULT_MAX_IMAGE_BYTES: u64 = 8 << 30;

/// One upstream registry, resolved from its config.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// As clients name it (compared case-insensitively with `ns`).
    pub host: String,
    /// The API base URL, e.g. `https://registry-1.docker.io`.
    pub url: url::Url,
    /// The store prefix, a valid repository path.
    pub prefix: String,
    pub unqualified: bool,
    pub populate: bool,
    allow: Vec<String>,
    pub tag_ttl: Duration,
    pub max_image_bytes: u64,
    pub platforms: Vec<Platform>,
    pub username_env: Option<String>,
    pub password_env: Option<String>,
    pub authfile: Option<std::path::PathBuf>,
    pub tls_verify: bool,
}

impl Upstream {
    fn from_config(c: &UpstreamConfig) -> anyhow::Result<Self> {
        let host = c.host.trim().to_ascii_lowercase();
        anyhow::ensure!(
            !host.is_empty() && !host.contains('/') && !host.contains('@'),
            "mirror upstream host {:?}: expected a registry host such as docker.io or registry.example:5000",
            c.host
        );
        let url = match &c.url {
            Some(u) => u.clone(),
            None if host == DOCKER_HUB => DOCKER_HUB_API.to_owned(),
            None => format!("https://{host}"),
        };
        let url = url::Url::parse(&url)
            .map_err(|e| anyhow::anyhow!("mirror upstream {host}: url {url:?}: {e}"))?;
        anyhow::ensure!(
            matches!(url.scheme(), "http" | "https")
                && url.host_str().is_some()
                && url.username().is_empty()
                && url.password().is_none()
                && url.query().is_none()
                && matches!(url.path(), "" | "/"),
            "mirror upstream {host}: url {url} must be http(s)://HOST[:PORT] with no path, query or credentials (credentials go in username_env/password_env or authfile)"
        );
        let prefix = c.prefix.clone().unwrap_or_else(|| host.clone());
        let prefix = prefix.trim_matches('/').to_owned();
        RepoName::parse(&prefix).map_err(|e| {
            anyhow::anyhow!(
                "mirror upstream {host}: store prefix {prefix:?} is not a repository path ({e}); set prefix = \"...\" (a port is not allowed in repository names)"
            )
        })?;
        for p in &c.allow {
            anyhow::ensure!(
                !p.is_empty() && p.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-/*".contains(ch)),
                "mirror upstream {host}: allow pattern {p:?}: use repository names with * (one path component) or ** (any)"
            );
        }
        let platforms = c
            .platforms
            .iter()
            .map(|p| {
                p.parse::<Platform>()
                    .map_err(|e| anyhow::anyhow!("mirror upstream {host}: platform {p:?}: {e}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        anyhow::ensure!(
            c.username_env.is_some() == c.password_env.is_some(),
            "mirror upstream {host}: set both username_env and password_env, or neither"
        );
        Ok(Upstream {
            unqualified: c.unqualified.unwrap_or(host == DOCKER_HUB),
            host,
            url,
            prefix,
            populate: c.populate,
            allow: c.allow.clone(),
            tag_ttl: c.tag_ttl.map_or(DEFAULT_TAG_TTL, Duration::from_secs),
            max_image_bytes: c.max_image_bytes.map_or(DEFAULT_MAX_IMAGE_BYTES, |b| b.0),
            platforms,
            username_env: c.username_env.clone(),
            password_env: c.password_env.clone(),
            authfile: c.authfile.clone(),
            tls_verify: c.tls_verify.unwrap_or(true),
        })
    }

    /// Whether `remote` (an upstream repository name) may be copied into the store: the
    /// allow-list keeps the endpoint from filling the bucket with arbitrary images.
    pub fn allows(&self, remote: &RepoName) -> bool {
        self.populate
            && self
                .allow
                .iter()
                .any(|p| crate::pattern::matches(p, remote.as_str()))
    }

    /// The store repository of upstream repository `remote`.
    pub fn store_repo(&self, remote: &RepoName) -> Option<RepoName> {
        RepoName::parse(&format!("{}/{}", self.prefix, remote)).ok()
    }
}

/// A request that names a repository of an upstream.
#[derive(Debug, Clone)]
pub struct Mapped {
    pub upstream: Arc<Upstream>,
    /// The repository as the upstream names it (`library/alpine`).
    pub remote: RepoName,
    /// Where it lives in the store (`docker.io/library/alpine`).
    pub store: RepoName,
}

/// Where a request's repository is.
#[derive(Debug, Clone)]
pub enum Mapping {
    /// Not a mirror request: the name is the store repository, as without `[mirror]`.
    AsIs,
    /// A mirror request (by `ns` or path prefix).
    Mirrored(Mapped),
    /// A bare name while an upstream takes bare names (Docker's `registry-mirrors`): the store's
    /// own repository of that name if there is one, else this.
    AsIsElse(Mapped),
    /// `ns` names a registry this endpoint does not mirror: nothing may answer for it.
    UnknownNamespace,
}

/// What the copier is told; `serve` never waits for it.
pub trait Fill: Send + Sync {
    /// A manifest of `m` (by tag or digest) is not in the store.
    fn missed(&self, m: &Mapped, reference: &ManifestRef);
    /// A mirrored tag was last resolved upstream longer ago than the upstream's `tag_ttl`.
    fn stale(&self, m: &Mapped, tag: &Tag);
}

/// The upstreams, and the copier when one runs.
pub struct Mirror {
    upstreams: Vec<Arc<Upstream>>,
    pub fill: Option<Arc<dyn Fill>>,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("upstreams", &self.upstreams)
            .field("fill", &self.fill.is_some())
            .finish()
    }
}

impl Mirror {
    /// The table from `[mirror]`; `None` when no upstream is configured.
    pub fn from_config(c: &MirrorConfig) -> anyhow::Result<Option<Self>> {
        if c.upstreams.is_empty() {
            return Ok(None);
        }
        let upstreams = c
            .upstreams
            .iter()
            .map(|u| Upstream::from_config(u).map(Arc::new))
            .collect::<anyhow::Result<Vec<_>>>()?;
        for (i, a) in upstreams.iter().enumerate() {
            for b in &upstreams[i + 1..] {
                anyhow::ensure!(
                    a.host != b.host,
                    "mirror upstream {} is configured twice",
                    a.host
                );
                anyhow::ensure!(
                    a.prefix != b.prefix
                        && !a.prefix.starts_with(&format!("{}/", b.prefix))
                        && !b.prefix.starts_with(&format!("{}/", a.prefix)),
                    "mirror upstreams {} and {} have overlapping store prefixes {:?} and {:?}",
                    a.host,
                    b.host,
                    a.prefix,
                    b.prefix
                );
            }
        }
        anyhow::ensure!(
            upstreams.iter().filter(|u| u.unqualified).count() <= 1,
            "only one mirror upstream may take bare names (unqualified = true)"
        );
        Ok(Some(Mirror {
            upstreams,
            fill: None,
        }))
    }

    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }

    /// Maps the repository a `/v2/` request names, given the request's `ns` query parameter.
    pub fn map(&self, name: &RepoName, ns: Option<&str>) -> Mapping {
        let mapped = |u: &Arc<Upstream>, remote: RepoName| {
            u.store_repo(&remote).map(|store| Mapped {
                upstream: u.clone(),
                remote,
                store,
            })
        };
        if let Some(ns) = ns {
            // containerd names the upstream on every request it sends to a mirror.
            return match self
                .upstreams
                .iter()
                .find(|u| u.host.eq_ignore_ascii_case(ns))
            {
                Some(u) => {
                    mapped(u, name.clone()).map_or(Mapping::UnknownNamespace, Mapping::Mirrored)
                }
                None => Mapping::UnknownNamespace,
            };
        }
        // A path prefix (podman/CRI-O mirror locations): the host or the store prefix.
        for u in &self.upstreams {
            for p in [u.host.as_str(), u.prefix.as_str()] {
                if let Some(rest) = name
                    .as_str()
                    .strip_prefix(p)
                    .and_then(|r| r.strip_prefix('/'))
                {
                    if let Ok(remote) = RepoName::parse(rest) {
                        if let Some(m) = mapped(u, remote) {
                            return Mapping::Mirrored(m);
                        }
                    }
                }
            }
        }
        match self.upstreams.iter().find(|u| u.unqualified) {
            Some(u) => mapped(u, name.clone()).map_or(Mapping::AsIs, Mapping::AsIsElse),
            None => Mapping::AsIs,
        }
    }
}

/// `ns` from a query string, if present.
pub fn ns_of(query: Option<&str>) -> Option<String> {
    let q = query?;
    url::form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == "ns")
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests;
