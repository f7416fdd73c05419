//! `static-registry mirror-config`: what each client needs to use the endpoint as its mirror.
//!
//! Three conventions, one per client family (docs/mirror.md, "Mirror mode"):
//! - Docker's `daemon.json` `registry-mirrors`, which only ever applies to Docker Hub;
//! - containerd's `hosts.toml`, one directory per upstream, the endpoint as the first host and
//!   the upstream as the server (containerd then adds `?ns=<upstream>` to each request);
//! - CRI-O and podman's `registries.conf`, a mirror `location` with the store prefix as its path.

use std::fmt::Write as _;

use crate::federation::mirror::{Upstream, DOCKER_HUB};

/// Which client's configuration to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Client {
    All,
    Docker,
    Containerd,
    Podman,
}

/// The configuration for `client` to reach `upstreams` through the endpoint at `endpoint`.
pub fn render(endpoint: &url::Url, upstreams: &[&Upstream], client: Client) -> String {
    let mut out = String::new();
    let insecure = endpoint.scheme() == "http";
    // host[:port][/path] of the endpoint, as registries.conf and Docker name registries.
    let authority = {
        let mut a = endpoint.host_str().unwrap_or_default().to_owned();
        if let Some(p) = endpoint.port() {
            let _ = write!(a, ":{p}");
        }
        a
    };
    let base = endpoint.as_str().trim_end_matches('/');
    let wants = |c: Client| client == Client::All || client == c;

    if wants(Client::Docker) {
        out.push_str("# Docker: /etc/docker/daemon.json (then restart dockerd). Docker sends only Docker Hub\n# pulls to registry-mirrors, and falls back to Docker Hub when the mirror answers 404.\n");
        if upstreams.iter().any(|u| u.host == DOCKER_HUB) {
            let mut doc = serde_json::json!({ "registry-mirrors": [base] });
            if insecure {
                doc["insecure-registries"] = serde_json::json!([authority]);
            }
            let _ = writeln!(out, "{:#}\n", doc);
        } else {
            out.push_str(
                "# (no docker.io upstream is configured: Docker has nothing to mirror)\n\n",
            );
        }
    }
    if wants(Client::Containerd) {
        out.push_str("# containerd: one hosts.toml per upstream under the registry config_path, e.g.\n#   [plugins.\"io.containerd.grpc.v1.cri\".registry] config_path = \"/etc/containerd/certs.d\"\n# (ctr: --hosts-dir /etc/containerd/certs.d). The endpoint is tried first; on a 404\n# containerd falls back to the server.\n");
        for u in upstreams {
            let server = u.url.as_str().trim_end_matches('/');
            let _ = writeln!(
                out,
                "\n# /etc/containerd/certs.d/{}/hosts.toml\nserver = \"{server}\"\n\n[host.\"{base}\"]\n  capabilities = [\"pull\", \"resolve\"]",
                u.host
            );
        }
        out.push('\n');
    }
    if wants(Client::Podman) {
        out.push_str("# CRI-O and podman: /etc/containers/registries.conf (or a file in registries.conf.d/)\n");
        for u in upstreams {
            let _ = writeln!(
                out,
                "\n[[registry]]\nprefix = \"{host}\"\nlocation = \"{host}\"\n\n[[registry.mirror]]\nlocation = \"{authority}/{prefix}\"{insecure}",
                host = u.host,
                prefix = u.prefix,
                insecure = if insecure { "\ninsecure = true" } else { "" },
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::federation::mirror::{Mirror, MirrorConfig};

    fn upstreams() -> Mirror {
        let c: MirrorConfig = toml::from_str(
            "[[upstreams]]\nhost = \"docker.io\"\n[[upstreams]]\nhost = \"registry.example:5000\"\nprefix = \"registry-example\"\n",
        )
        .unwrap();
        Mirror::from_config(&c).unwrap().unwrap()
    }

    #[test]
    fn every_client_gets_its_convention() {
        let m = upstreams();
        let list: Vec<&Upstream> = m.upstreams().iter().map(|u| u.as_ref()).collect();
        let url = url::Url::parse("http://127.0.0.1:5080").unwrap();
        let all = render(&url, &list, Client::All);
        // Docker: the mirror URL, and the insecure registry for plain HTTP.
        let docker = render(&url, &list, Client::Docker);
        let json: serde_json::Value = serde_json::from_str(
            &docker
                .lines()
                .filter(|l| !l.starts_with('#'))
                .collect::<Vec<_>>()
                .join("\n"),
        )
        .unwrap();
        assert_eq!(json["registry-mirrors"][0], "http://127.0.0.1:5080");
        assert_eq!(json["insecure-registries"][0], "127.0.0.1:5080");
        // containerd: a hosts.toml per upstream, with the upstream's API as the server.
        assert!(all.contains("# /etc/containerd/certs.d/docker.io/hosts.toml\nserver = \"https://registry-1.docker.io\""));
        assert!(all.contains(
            "certs.d/registry.example:5000/hosts.toml\nserver = \"https://registry.example:5000\""
        ));
        assert!(all.contains(
            "[host.\"http://127.0.0.1:5080\"]\n  capabilities = [\"pull\", \"resolve\"]"
        ));
        // podman: the store prefix as the mirror's path (a port cannot be one).
        assert!(all.contains("location = \"127.0.0.1:5080/docker.io\"\ninsecure = true"));
        assert!(all.contains("prefix = \"registry.example:5000\"\nlocation = \"registry.example:5000\"\n\n[[registry.mirror]]\nlocation = \"127.0.0.1:5080/registry-example\""));
        // Each mirror location maps back to the same store repository.
        for path in ["docker.io/library/alpine", "registry-example/team/app"] {
            let name = crate::reference::RepoName::parse(path).unwrap();
            assert!(
                matches!(
                    m.map(&name, None),
                    crate::federation::mirror::Mapping::Mirrored(_)
                ),
                "{path}"
            );
        }
        let https = render(
            &url::Url::parse("https://mirror.example").unwrap(),
            &list,
            Client::Podman,
        );
        assert!(!https.contains("insecure"));
        assert!(!render(&url, &list, Client::Containerd).contains("registry-mirrors"));
    }
}
