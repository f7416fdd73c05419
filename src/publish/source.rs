//! Where an image comes from, in skopeo's transport syntax, and the Docker reference rules used to
//! pick one image out of a multi-image source.
//!
//! Users already know skopeo's `oci:DIR:TAG` / `docker-archive:FILE:REPO:TAG` spelling, so the
//! publisher accepts exactly that rather than inventing flags. Like skopeo, the path ends at the
//! first `:` after the transport (paths with colons are not supported).

use std::fmt;
use std::path::PathBuf;

use anyhow::bail;

use crate::reference::{RepoName, Tag, TaggedName};

/// A parsed `--source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// `oci:DIR[:TAG]`
    Oci {
        dir: PathBuf,
        select: Option<Selector>,
    },
    /// `oci-archive:FILE[:TAG]`
    OciArchive {
        file: PathBuf,
        select: Option<Selector>,
    },
    /// `docker-archive:FILE[:REPO:TAG]`
    DockerArchive {
        file: PathBuf,
        select: Option<Selector>,
    },
    /// `docker://[REGISTRY/]REPO[:TAG][@DIGEST]`: an image in another registry (mirroring).
    Docker(crate::registry::reference::RemoteRef),
}

/// Which image of a multi-image source to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// An OCI `ref.name`, or a Docker `REPO[:TAG]` for docker archives.
    Name(String),
    /// skopeo's `@N`: the N-th image of the source, counting from 0.
    Index(usize),
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Name(n) => f.write_str(n),
            Selector::Index(i) => write!(f, "@{i}"),
        }
    }
}

impl SourceSpec {
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        // A registry reference has colons of its own (port, tag): parsed whole.
        if let Some(r) = s.strip_prefix("docker://") {
            return Ok(SourceSpec::Docker(
                crate::registry::reference::RemoteRef::parse(r)?,
            ));
        }
        let Some((transport, rest)) = s.split_once(':') else {
            bail!("invalid source {s:?}: expected oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:REPO:TAG] or docker://[REGISTRY/]REPO[:TAG]");
        };
        let (path, select) = match rest.split_once(':') {
            Some((p, sel)) => (p, Some(parse_selector(s, sel)?)),
            None => (rest, None),
        };
        if path.is_empty() {
            bail!("invalid source {s:?}: the path is empty");
        }
        let path = PathBuf::from(path);
        Ok(match transport {
            "oci" => SourceSpec::Oci { dir: path, select },
            "oci-archive" => SourceSpec::OciArchive { file: path, select },
            "docker-archive" => SourceSpec::DockerArchive { file: path, select },
            "docker" => bail!(
                "invalid source {s:?}: a registry image is docker://[REGISTRY/]REPO[:TAG][@DIGEST]"
            ),
            "containers-storage" | "dir" | "docker-daemon" => bail!(
                "source transport {transport:?} is not supported yet; export the image first, e.g. `skopeo copy {s} oci-archive:image.tar:TAG` or `docker save -o image.tar REPO:TAG`"
            ),
            other => bail!(
                "unknown source transport {other:?} in {s:?}: use oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:REPO:TAG] or docker://[REGISTRY/]REPO[:TAG]"
            ),
        })
    }
}

fn parse_selector(whole: &str, sel: &str) -> anyhow::Result<Selector> {
    if let Some(n) = sel.strip_prefix('@') {
        return match n.parse() {
            Ok(i) => Ok(Selector::Index(i)),
            Err(_) => bail!("invalid source {whole:?}: @{n} is not an image number"),
        };
    }
    if sel.is_empty() {
        bail!("invalid source {whole:?}: empty image name after ':'");
    }
    Ok(Selector::Name(sel.to_owned()))
}

/// A Docker reference in its fully qualified form, e.g. `docker.io/library/alpine:3.20`, so that
/// `alpine`, `library/alpine:latest` and `docker.io/library/alpine` all compare equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerRef {
    pub domain: String,
    /// The path below the domain, e.g. `library/alpine`.
    pub path: String,
    pub tag: String,
}

impl DockerRef {
    /// Parses `[DOMAIN/]PATH[:TAG][@DIGEST]` leniently; the digest part is ignored.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.split_once('@').map(|(n, _)| n).unwrap_or(s);
        let (name, tag) = match s.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, t.to_owned()),
            _ => (s, "latest".to_owned()),
        };
        let (domain, path) = match name.split_once('/') {
            Some((d, p)) if d.contains('.') || d.contains(':') || d == "localhost" => {
                (d.to_owned(), p.to_owned())
            }
            _ => ("docker.io".to_owned(), name.to_owned()),
        };
        let domain = if domain == "index.docker.io" {
            "docker.io".to_owned()
        } else {
            domain
        };
        let path = if domain == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if path.is_empty() || tag.is_empty() {
            return None;
        }
        Some(DockerRef { domain, path, tag })
    }

    /// The repository:tag to publish under: the registry host is dropped (this store is its own
    /// registry) and so is Docker Hub's implicit `library/`, as `docker images` shows it.
    pub fn to_tagged_name(&self) -> Option<TaggedName> {
        let path = if self.domain == "docker.io" {
            self.path.strip_prefix("library/").unwrap_or(&self.path)
        } else {
            &self.path
        };
        Some(TaggedName {
            name: RepoName::parse(path).ok()?,
            tag: Tag::parse(&self.tag).ok()?,
        })
    }
}

impl fmt::Display for DockerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.domain, self.path, self.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_sources() {
        assert_eq!(
            SourceSpec::parse("oci:fixtures/x:1.0").unwrap(),
            SourceSpec::Oci {
                dir: "fixtures/x".into(),
                select: Some(Selector::Name("1.0".into()))
            }
        );
        assert_eq!(
            SourceSpec::parse("oci-archive:/a/b.tar").unwrap(),
            SourceSpec::OciArchive {
                file: "/a/b.tar".into(),
                select: None
            }
        );
        assert_eq!(
            SourceSpec::parse("docker-archive:x.tar:localhost:5000/a/b:1").unwrap(),
            SourceSpec::DockerArchive {
                file: "x.tar".into(),
                select: Some(Selector::Name("localhost:5000/a/b:1".into()))
            }
        );
        assert_eq!(
            SourceSpec::parse("docker-archive:x.tar:@1").unwrap(),
            SourceSpec::DockerArchive {
                file: "x.tar".into(),
                select: Some(Selector::Index(1))
            }
        );
        for bad in [
            "x",
            "oci:",
            "foo:bar",
            "docker:alpine",
            "docker://",
            "docker://Alpine",
            "oci:x:",
            "oci:x:@y",
        ] {
            assert!(SourceSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn docker_sources() {
        let SourceSpec::Docker(r) = SourceSpec::parse("docker://alpine").unwrap() else {
            panic!("not a registry source");
        };
        assert_eq!(r.to_string(), "docker://docker.io/library/alpine:latest");
        let SourceSpec::Docker(r) =
            SourceSpec::parse("docker://127.0.0.1:5000/fix/single:1.0").unwrap()
        else {
            panic!("not a registry source");
        };
        assert_eq!(r.api_host, "127.0.0.1:5000");
        assert_eq!(r.repository.as_str(), "fix/single");
    }

    #[test]
    fn docker_refs_normalise() {
        let a = DockerRef::parse("alpine").unwrap();
        assert_eq!(a.to_string(), "docker.io/library/alpine:latest");
        assert_eq!(
            DockerRef::parse("docker.io/library/alpine:latest"),
            Some(a.clone())
        );
        assert_eq!(DockerRef::parse("library/alpine"), Some(a.clone()));
        assert_eq!(a.to_tagged_name().unwrap().to_string(), "alpine:latest");
        let b = DockerRef::parse("localhost:5000/x/y:2").unwrap();
        assert_eq!(b.domain, "localhost:5000");
        assert_eq!(b.to_tagged_name().unwrap().to_string(), "x/y:2");
        let c = DockerRef::parse("me/app:1@sha256:abc").unwrap();
        assert_eq!(c.to_string(), "docker.io/me/app:1");
    }
}
