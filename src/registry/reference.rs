//! `docker://` references: which registry, repository and manifest a mirror copies.
//!
//! skopeo's spelling (`docker://[REGISTRY/]REPO[:TAG][@DIGEST]`) with Docker's naming rules, so
//! what users paste from `docker pull` means the same thing here: a first component without a `.`
//! or `:` (and not `localhost`) is a Docker Hub path, single names get `library/`, and Docker Hub's
//! API lives at `registry-1.docker.io` although everyone calls it `docker.io`. Repository names,
//! tags and digests go through [`crate::reference`], so nothing unvalidated reaches a URL path.

use std::fmt;
use std::net::IpAddr;

use anyhow::{bail, Context};

use crate::reference::{Digest, RepoName, Tag, TaggedName};

/// Docker Hub as users and `config.json` name it.
pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's registry API actually answers.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// The key `docker login` writes Docker Hub credentials under in `config.json`.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// Docker's rule for where a registry host ends: a first component with a `.` or a `:`, or
/// `localhost`, before a `/` is a host (`ghcr.io/org/app`, `127.0.0.1:5000/app`); anything else
/// is a repository path (`team/app`). Returns the host, if any, and the rest.
pub fn split_host(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

/// A parsed `docker://` source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteRef {
    /// The registry as users name it (`docker.io`, `ghcr.io`, `127.0.0.1:5000`): for messages and
    /// credential look-ups.
    pub registry: String,
    /// `host[:port]` the API is reached at (differs from `registry` only for Docker Hub).
    pub api_host: String,
    /// The full repository path at the registry (`library/alpine` for `alpine` on Docker Hub).
    pub repository: RepoName,
    pub tag: Option<Tag>,
    /// When given, the manifest is fetched by digest (and the tag only names the destination).
    pub digest: Option<Digest>,
}

impl RemoteRef {
    /// Parses what follows `docker://`.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let whole = || format!("docker://{s}");
        if s.is_empty() {
            bail!("invalid source {:?}: no image after docker://", whole());
        }
        let (name_tag, digest) = match s.split_once('@') {
            Some((n, d)) => (
                n,
                Some(Digest::parse(d).with_context(|| format!("invalid source {:?}", whole()))?),
            ),
            None => (s, None),
        };
        // A tag follows the last ':' that comes after the last '/' (a port comes before one).
        let (name, tag) = match name_tag.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (
                n,
                Some(Tag::parse(t).with_context(|| format!("invalid source {:?}", whole()))?),
            ),
            _ => (name_tag, None),
        };
        let (registry, path) = match split_host(name) {
            (Some(host), path) => (host.to_owned(), path.to_owned()),
            (None, path) => (DOCKER_HUB.to_owned(), path.to_owned()),
        };
        if registry.chars().any(|c| c.is_ascii_uppercase()) {
            bail!(
                "invalid source {:?}: registry host names are lowercase",
                whole()
            );
        }
        let hub = matches!(
            registry.as_str(),
            DOCKER_HUB | "index.docker.io" | DOCKER_HUB_API
        );
        let registry = if hub { DOCKER_HUB.to_owned() } else { registry };
        let path = if hub && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        let repository = RepoName::parse(&path)
            .with_context(|| format!("invalid source {:?}: bad repository name", whole()))?;
        let tag = match (&tag, &digest) {
            (None, None) => Some(Tag::parse("latest").expect("valid tag")),
            _ => tag,
        };
        let api_host = if hub {
            DOCKER_HUB_API.to_owned()
        } else {
            registry.clone()
        };
        Ok(RemoteRef {
            registry,
            api_host,
            repository,
            tag,
            digest,
        })
    }

    pub fn is_docker_hub(&self) -> bool {
        self.registry == DOCKER_HUB
    }

    /// What goes after `/manifests/`: the digest when given, else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.to_string(),
            (None, None) => "latest".to_owned(),
        }
    }

    /// The repository to publish under: the registry host is dropped (the store is a registry of
    /// its own) and so is Docker Hub's implicit `library/`, as `docker images` shows it.
    pub fn destination_repo(&self) -> RepoName {
        if self.is_docker_hub() {
            if let Some(short) = self.repository.as_str().strip_prefix("library/") {
                if let Ok(r) = RepoName::parse(short) {
                    return r;
                }
            }
        }
        self.repository.clone()
    }

    /// `REPO:TAG` to publish under when `--tag` is not given (none for a digest-only source).
    pub fn default_destination(&self) -> Option<TaggedName> {
        Some(TaggedName {
            name: self.destination_repo(),
            tag: self.tag.clone()?,
        })
    }

    /// Whether the registry is on this machine: plain HTTP is then tried after HTTPS, as Docker
    /// does for `localhost` registries.
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(&self.api_host)
    }
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
pub fn is_loopback_host(host_port: &str) -> bool {
    let host = if let Some(rest) = host_port.strip_prefix('[') {
        rest.split_once(']').map(|(h, _)| h).unwrap_or(rest)
    } else {
        host_port
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(host_port)
    };
    host == "localhost"
        || host
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

impl fmt::Display for RemoteRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "docker://{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn docker_hub_conventions() {
        let r = RemoteRef::parse("alpine").unwrap();
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.api_host, "registry-1.docker.io");
        assert_eq!(r.repository.as_str(), "library/alpine");
        assert_eq!(r.manifest_reference(), "latest");
        assert_eq!(
            r.default_destination().unwrap().to_string(),
            "alpine:latest"
        );
        assert_eq!(r.to_string(), "docker://docker.io/library/alpine:latest");
        for same in [
            "docker.io/alpine:latest",
            "docker.io/library/alpine",
            "index.docker.io/library/alpine:latest",
            "registry-1.docker.io/alpine",
        ] {
            assert_eq!(RemoteRef::parse(same).unwrap(), r, "{same}");
        }
        let u = RemoteRef::parse("bitnami/redis:7").unwrap();
        assert_eq!(u.repository.as_str(), "bitnami/redis");
        assert_eq!(u.destination_repo().as_str(), "bitnami/redis");
    }

    #[test]
    fn other_registries_tags_and_digests() {
        let r = RemoteRef::parse("127.0.0.1:5000/fix/single:1.0").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.api_host, "127.0.0.1:5000");
        assert_eq!(r.repository.as_str(), "fix/single");
        assert_eq!(r.tag.as_ref().unwrap().as_str(), "1.0");
        assert!(r.is_loopback());
        let d = RemoteRef::parse(&format!("ghcr.io/a/b@{D}")).unwrap();
        assert_eq!(d.tag, None);
        assert_eq!(d.manifest_reference(), D);
        assert!(d.default_destination().is_none());
        assert!(!d.is_loopback());
        let both = RemoteRef::parse(&format!("localhost:5000/a:v1@{D}")).unwrap();
        assert_eq!(both.manifest_reference(), D);
        assert_eq!(both.default_destination().unwrap().to_string(), "a:v1");
        assert_eq!(
            both.to_string(),
            format!("docker://localhost:5000/a:v1@{D}")
        );
        let noport = RemoteRef::parse("localhost/a").unwrap();
        assert_eq!(noport.registry, "localhost");
        for bad in [
            "",
            "Alpine",
            "a/../b",
            "x.io/a:bad tag",
            "x.io/a@sha256:nothex",
            "X.IO/a",
        ] {
            assert!(RemoteRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:1",
            "127.9.9.9",
            "[::1]:5000",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "10.0.0.1:5000",
            "example.com",
            "[::2]:1",
            "localhost.example.com",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }
}
