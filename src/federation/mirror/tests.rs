use super::*;

fn mirror(toml_text: &str) -> Mirror {
    let c: MirrorConfig = toml::from_str(toml_text).expect("config parses");
    Mirror::from_config(&c).expect("valid").expect("upstreams")
}

const THREE: &str = r#"
[[upstreams]]
host = "docker.io"
populate = true
allow = ["library/*"]

[[upstreams]]
host = "ghcr.io"
allow = ["org/**"]
populate = true

[[upstreams]]
host = "registry.example:5000"
url = "http://127.0.0.1:5000"
prefix = "registry-example"
"#;

/// What a request maps to, as text: `as-is`, `unknown-ns`, `mirror HOST STORE REMOTE`,
/// `as-is-else HOST STORE REMOTE`.
fn show(m: &Mirror, name: &str, ns: Option<&str>) -> String {
    let r = |x: &Mapped| format!("{} {} {}", x.upstream.host, x.store, x.remote);
    match m.map(&RepoName::parse(name).unwrap(), ns) {
        Mapping::AsIs => "as-is".into(),
        Mapping::UnknownNamespace => "unknown-ns".into(),
        Mapping::Mirrored(x) => format!("mirror {}", r(&x)),
        Mapping::AsIsElse(x) => format!("as-is-else {}", r(&x)),
    }
}

#[test]
fn the_three_client_conventions_map_to_one_store_repository() {
    let m = mirror(THREE);
    let want = "docker.io docker.io/library/alpine library/alpine";
    let table: &[(&str, Option<&str>, String)] = &[
        // containerd: `?ns=docker.io` (case-insensitive host).
        (
            "library/alpine",
            Some("docker.io"),
            format!("mirror {want}"),
        ),
        (
            "library/alpine",
            Some("Docker.IO"),
            format!("mirror {want}"),
        ),
        // podman/CRI-O: the host as a path prefix.
        ("docker.io/library/alpine", None, format!("mirror {want}")),
        // Docker's registry-mirrors: a bare name, docker.io takes bare names by default.
        ("library/alpine", None, format!("as-is-else {want}")),
        // Other upstreams, by ns and by prefix (a port is not a valid path: the store prefix).
        (
            "org/tool",
            Some("ghcr.io"),
            "mirror ghcr.io ghcr.io/org/tool org/tool".into(),
        ),
        (
            "ghcr.io/org/tool",
            None,
            "mirror ghcr.io ghcr.io/org/tool org/tool".into(),
        ),
        (
            "team/app",
            Some("registry.example:5000"),
            "mirror registry.example:5000 registry-example/team/app team/app".into(),
        ),
        (
            "registry-example/team/app",
            None,
            "mirror registry.example:5000 registry-example/team/app team/app".into(),
        ),
        // An ns nobody mirrors: never answered from another namespace.
        ("library/alpine", Some("quay.io"), "unknown-ns".into()),
        // A prefix alone is not a repository under it.
        (
            "ghcr.io",
            None,
            "as-is-else docker.io docker.io/ghcr.io ghcr.io".into(),
        ),
        // A component that merely starts like a host is no prefix.
        (
            "ghcr.iox/tool",
            None,
            "as-is-else docker.io docker.io/ghcr.iox/tool ghcr.iox/tool".into(),
        ),
    ];
    for (name, ns, want) in table {
        assert_eq!(&show(&m, name, *ns), want, "{name} ns={ns:?}");
    }
}

#[test]
fn without_a_bare_name_upstream_requests_are_as_today() {
    let m = mirror(
        r#"
[[upstreams]]
host = "docker.io"
unqualified = false
"#,
    );
    assert_eq!(show(&m, "library/alpine", None), "as-is");
    assert_eq!(show(&m, "team/app", None), "as-is");
    assert_eq!(
        show(&m, "library/alpine", Some("docker.io")),
        "mirror docker.io docker.io/library/alpine library/alpine"
    );
}

#[test]
fn allow_lists_match_components() {
    let m = mirror(THREE);
    let hub = &m.upstreams()[0];
    let ghcr = &m.upstreams()[1];
    let local = &m.upstreams()[2];
    let name = |s: &str| RepoName::parse(s).unwrap();
    assert!(hub.allows(&name("library/alpine")));
    assert!(
        !hub.allows(&name("library/alpine/extra")),
        "* stays in one component"
    );
    assert!(!hub.allows(&name("someone/alpine")));
    assert!(!hub.allows(&name("library")));
    assert!(ghcr.allows(&name("org/tool")));
    assert!(ghcr.allows(&name("org/a/b/c")), "** crosses components");
    assert!(!ghcr.allows(&name("organisation/tool")));
    // No populate: nothing is ever copied, whatever the list says.
    assert!(!local.allows(&name("team/app")));
}

#[test]
fn defaults_and_refusals() {
    let m = mirror(THREE);
    let hub = &m.upstreams()[0];
    assert_eq!(hub.url.as_str(), "https://registry-1.docker.io/");
    assert_eq!(hub.tag_ttl, DEFAULT_TAG_TTL);
    assert!(hub.unqualified && hub.tls_verify);
    assert_eq!(m.upstreams()[1].url.as_str(), "https://ghcr.io/");
    assert!(!m.upstreams()[1].unqualified);

    let refused = |text: &str, needle: &str| {
        let c: MirrorConfig = toml::from_str(text).expect("parses");
        let e = Mirror::from_config(&c).expect_err(text).to_string();
        assert!(e.contains(needle), "{e}");
    };
    refused("[[upstreams]]\nhost = \"r.example:5000\"\n", "prefix");
    refused(
        "[[upstreams]]\nhost = \"a.io\"\nurl = \"https://user:pw@a.io\"\n",
        "credentials",
    );
    refused(
        "[[upstreams]]\nhost = \"a.io\"\nurl = \"https://a.io/v2/x\"\n",
        "no path",
    );
    refused(
        "[[upstreams]]\nhost = \"a.io\"\n[[upstreams]]\nhost = \"A.io\"\nprefix = \"b\"\n",
        "twice",
    );
    refused(
        "[[upstreams]]\nhost = \"a.io\"\nprefix = \"m\"\n[[upstreams]]\nhost = \"b.io\"\nprefix = \"m/b\"\n",
        "overlapping",
    );
    refused(
        "[[upstreams]]\nhost = \"a.io\"\nunqualified = true\n[[upstreams]]\nhost = \"b.io\"\nunqualified = true\n",
        "bare names",
    );
    refused(
        "[[upstreams]]\nhost = \"a.io\"\nallow = [\"Lib/*\"]\n",
        "allow pattern",
    );
    refused(
        "[[upstreams]]\nhost = \"a.io\"\nusername_env = \"U\"\n",
        "password_env",
    );
    let empty: MirrorConfig = toml::from_str("").unwrap();
    assert!(Mirror::from_config(&empty).unwrap().is_none());
}

#[test]
fn ns_is_read_from_the_query() {
    assert_eq!(ns_of(Some("ns=docker.io")).as_deref(), Some("docker.io"));
    assert_eq!(
        ns_of(Some("n=1&ns=registry.example%3A5000")).as_deref(),
        Some("registry.example:5000")
    );
    assert_eq!(ns_of(Some("n=1")), None);
    assert_eq!(ns_of(None), None);
}

#[test]
fn the_example_config_builds() {
    let c: crate::config::Config =
        toml::from_str(include_str!("../../../config/mirror.toml")).expect("config/mirror.toml");
    let m = Mirror::from_config(&c.mirror).unwrap().unwrap();
    let hosts: Vec<&str> = m.upstreams().iter().map(|u| u.host.as_str()).collect();
    assert_eq!(hosts, ["docker.io", "registry.internal:5000"]);
    let name = |s: &str| RepoName::parse(s).unwrap();
    assert!(m.upstreams()[0].allows(&name("library/alpine")));
    assert!(!m.upstreams()[0].allows(&name("someone/alpine")));
    assert_eq!(m.upstreams()[0].max_image_bytes, 4 << 30);
    assert_eq!(m.upstreams()[0].platforms.len(), 2);
    assert_eq!(
        show(&m, "registry-internal/team/app", None),
        "mirror registry.internal:5000 registry-internal/team/app team/app"
    );
}
