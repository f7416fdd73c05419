use std::collections::HashMap;

use clap::Parser;

use super::*;

#[derive(Parser)]
struct ServeCli {
    #[command(flatten)]
    flags: ServeFlags,
}

#[derive(Parser)]
struct PublishCli {
    #[command(flatten)]
    flags: PublishFlags,
}

/// Resolves `serve` from command-line words, an environment and a config file's text.
fn resolve(args: &[&str], env: &[(&str, &str)], toml: &str) -> anyhow::Result<ServeSettings> {
    let flags = ServeCli::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))?;
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let file: Config = toml::from_str(toml)?;
    ServeSettings::resolve(flags.flags, &file, &|k| env.get(k).cloned())
}

/// One setting: how each layer sets it, and what the resolved settings then show.
struct Row {
    name: &'static str,
    flag: &'static [&'static str],
    env: Option<(&'static str, &'static str)>,
    file: &'static str,
    get: fn(&ServeSettings) -> String,
    /// What `get` shows with only the default, the file, the env, the flag.
    want: [&'static str; 4],
}

fn rows() -> Vec<Row> {
    fn d(s: Duration) -> String {
        format!("{}", s.as_secs())
    }
    vec![
        Row {
            name: "store",
            flag: &["--store", "/flag"],
            env: Some((ENV_STORE, "/env")),
            file: "store = \"/file\"",
            get: |s| format!("{:?}", s.store),
            want: [
                "None",
                "Some(\"/file\")",
                "Some(\"/env\")",
                "Some(\"/flag\")",
            ],
        },
        Row {
            name: "listen",
            flag: &["--listen", "127.0.0.1:3"],
            env: Some((ENV_LISTEN, "127.0.0.1:2")),
            file: "[serve]\nlisten = \"127.0.0.1:1\"",
            get: |s| s.listen.to_string(),
            want: [
                "127.0.0.1:5000",
                "127.0.0.1:1",
                "127.0.0.1:2",
                "127.0.0.1:3",
            ],
        },
        Row {
            name: "url_ttl",
            flag: &["--url-ttl", "3"],
            env: None,
            file: "[serve]\nurl_ttl = 1",
            get: |s| d(s.url_ttl),
            want: ["600", "1", "1", "3"],
        },
        Row {
            name: "index_ttl",
            flag: &["--index-ttl", "3"],
            env: None,
            file: "[serve]\nindex_ttl = 1",
            get: |s| format!("{} {:?}", d(s.index_ttl), s.cache_config().negative_ttl),
            want: ["10 2s", "1 1s", "1 1s", "3 2s"],
        },
        Row {
            name: "health_interval",
            flag: &[],
            env: None,
            file: "[serve]\nhealth_interval = 1",
            get: |s| d(s.health_interval),
            want: ["10", "1", "1", "1"],
        },
        Row {
            name: "origin_secret_file",
            flag: &["--origin-secret-file", "/flag"],
            env: Some((ENV_ORIGIN_SECRET_FILE, "/env")),
            file: "[embedded]\nsecret_file = \"/file\"",
            get: |s| format!("{:?}", s.embedded.secret_file),
            want: [
                "None",
                "Some(\"/file\")",
                "Some(\"/env\")",
                "Some(\"/flag\")",
            ],
        },
        Row {
            name: "origin_url",
            flag: &["--origin-url", "http://flag"],
            env: None,
            file: "[embedded]\nurl = \"http://file\"",
            get: |s| format!("{:?}", s.embedded.url),
            want: [
                "None",
                "Some(\"http://file\")",
                "Some(\"http://file\")",
                "Some(\"http://flag\")",
            ],
        },
        Row {
            name: "tls_cert and tls_key",
            flag: &["--tls-cert=/flag.crt", "--tls-key=/flag.key"],
            env: None,
            file: "[serve]\ntls_cert = \"/file.crt\"\ntls_key = \"/file.key\"",
            get: |s| format!("{:?}", s.tls.as_ref().map(|t| (&t.cert, &t.key))),
            want: [
                "None",
                "Some((\"/file.crt\", \"/file.key\"))",
                "Some((\"/file.crt\", \"/file.key\"))",
                "Some((\"/flag.crt\", \"/flag.key\"))",
            ],
        },
        Row {
            name: "max_connections",
            flag: &["--max-connections", "3"],
            env: None,
            file: "[serve]\nmax_connections = 1",
            get: |s| s.max_connections.to_string(),
            want: ["10000", "1", "1", "3"],
        },
        Row {
            name: "workers (default: the cores)",
            flag: &["--workers", "3"],
            env: Some((ENV_WORKERS, "2")),
            file: "[serve]\nworkers = 1",
            get: |s| s.workers.to_string(),
            want: ["cores", "1", "2", "3"],
        },
        Row {
            name: "header_timeout",
            flag: &[],
            env: None,
            file: "[serve]\nheader_timeout = 1",
            get: |s| d(s.header_timeout),
            want: ["10", "1", "1", "1"],
        },
        Row {
            name: "request_timeout",
            flag: &[],
            env: None,
            file: "[serve]\nrequest_timeout = 1",
            get: |s| d(s.request_timeout),
            want: ["30", "1", "1", "1"],
        },
        Row {
            name: "shutdown_timeout",
            flag: &["--shutdown-timeout", "0"],
            env: None,
            file: "[serve]\nshutdown_timeout = 1",
            get: |s| d(s.shutdown_timeout),
            want: ["30", "1", "1", "0"],
        },
        Row {
            name: "http2_idle_timeout",
            flag: &["--http2-idle-timeout", "3"],
            env: None,
            file: "[serve]\nhttp2_idle_timeout = 1",
            get: |s| d(s.http2_idle_timeout),
            want: ["60", "1", "1", "3"],
        },
        Row {
            name: "http2_keepalive_interval (0: none)",
            flag: &[],
            env: None,
            file: "[serve]\nhttp2_keepalive_interval = 0",
            get: |s| format!("{:?}", s.http2_keepalive_interval),
            want: ["Some(30s)", "None", "None", "None"],
        },
        Row {
            name: "http2_keepalive_timeout",
            flag: &[],
            env: None,
            file: "[serve]\nhttp2_keepalive_timeout = 1",
            get: |s| d(s.http2_keepalive_timeout),
            want: ["20", "1", "1", "1"],
        },
        Row {
            name: "send_timeout (0: no floor)",
            flag: &["--send-timeout", "2"],
            env: None,
            file: "[serve]\nsend_timeout = 0",
            get: |s| format!("{:?}", s.send_floor),
            want: [
                "Some(SendFloor { window: 60s, min_bytes: 61440 })",
                "None",
                "None",
                "Some(SendFloor { window: 2s, min_bytes: 2048 })",
            ],
        },
        Row {
            name: "send_min_rate",
            flag: &["--send-min-rate", "3"],
            env: None,
            file: "[serve]\nsend_min_rate = 1",
            get: |s| format!("{:?}", s.send_floor.map(|f| f.min_bytes)),
            want: ["Some(61440)", "Some(60)", "Some(60)", "Some(180)"],
        },
        Row {
            name: "trusted_proxy_hops",
            flag: &[],
            env: None,
            file: "[serve]\ntrusted_proxy_hops = 2",
            get: |s| format!("{} {}", s.trusted_proxy_hops, s.regions.trusted_proxy_hops),
            want: ["0 0", "2 2", "2 2", "2 2"],
        },
        Row {
            name: "public_url",
            flag: &[],
            env: None,
            file: "[serve]\npublic_url = \"https://r.example\"",
            get: |s| format!("{:?}", s.public_url),
            want: [
                "None",
                "Some(\"https://r.example\")",
                "Some(\"https://r.example\")",
                "Some(\"https://r.example\")",
            ],
        },
        Row {
            name: "access_log",
            flag: &["--access-log"],
            env: None,
            file: "[serve]\naccess_log = true",
            get: |s| s.access_log.to_string(),
            want: ["false", "true", "true", "true"],
        },
        Row {
            name: "client_limits",
            flag: &[],
            env: None,
            file: "[serve.client_limits]\napi_rate = 2.5",
            get: |s| s.client_limits.api_rate.to_string(),
            want: ["0", "2.5", "2.5", "2.5"],
        },
    ]
}

/// A layer's name, flags, environment and config file.
type Layer<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

#[test]
fn flag_beats_env_beats_file_beats_default() {
    let cores = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .to_string();
    for row in rows() {
        let env: Vec<_> = row.env.into_iter().collect();
        let layers: [Layer; 4] = [
            ("default", &[], &[], ""),
            ("file", &[], &[], row.file),
            ("env over file", &[], &env, row.file),
            ("flag over env and file", row.flag, &env, row.file),
        ];
        for ((layer, args, env, file), want) in layers.into_iter().zip(row.want) {
            let want = if want == "cores" {
                cores.as_str()
            } else {
                want
            };
            let got =
                resolve(args, env, file).unwrap_or_else(|e| panic!("{}, {layer}: {e:#}", row.name));
            assert_eq!((row.get)(&got), want, "{}, {layer}", row.name);
        }
    }
}

#[test]
fn zero_counts_and_timeouts_that_would_stall_become_one() {
    let s = resolve(
        &["--workers", "0", "--max-connections", "0"],
        &[],
        "[serve]\nheader_timeout = 0\nrequest_timeout = 0\nhealth_interval = 0\n\
         http2_idle_timeout = 0\nhttp2_keepalive_timeout = 0\n",
    )
    .unwrap();
    assert_eq!((s.workers, s.max_connections), (1, 1));
    for t in [
        s.header_timeout,
        s.request_timeout,
        s.health_interval,
        s.http2_idle_timeout,
        s.http2_keepalive_timeout,
    ] {
        assert_eq!(t, secs(1));
    }
}

#[test]
fn environment_values_are_checked_and_empty_ones_unset() {
    let err = resolve(&[], &[(ENV_WORKERS, "many")], "").unwrap_err();
    assert!(
        format!("{err:#}").contains("STATIC_REGISTRY_WORKERS"),
        "{err:#}"
    );
    let err = resolve(&[], &[(ENV_LISTEN, "nowhere")], "").unwrap_err();
    assert!(
        format!("{err:#}").contains("STATIC_REGISTRY_LISTEN"),
        "{err:#}"
    );
    let s = resolve(&[], &[(ENV_LISTEN, " "), (ENV_STORE, "")], "store = \"/f\"").unwrap();
    assert_eq!(s.listen.to_string(), SERVE_DEFAULTS.listen);
    assert_eq!(s.store.as_deref(), Some("/f"));
}

#[test]
fn tls_needs_both_halves_from_any_layers() {
    let s = resolve(&["--tls-cert", "/c"], &[(ENV_TLS_KEY, "/k")], "").unwrap();
    let tls = s.tls.unwrap();
    assert_eq!(
        (tls.cert.to_str(), tls.key.to_str()),
        (Some("/c"), Some("/k"))
    );
    let s = resolve(&[], &[(ENV_TLS_CERT, "/c")], "[serve]\ntls_key = \"/k\"").unwrap();
    assert!(s.tls.is_some());
    let err = resolve(&["--tls-cert", "/c"], &[], "").unwrap_err();
    assert!(format!("{err:#}").contains("both a certificate and a key"));
}

#[test]
fn regions_spelling_of_trusted_proxy_hops_is_deprecated_but_works() {
    // The `[regions]` spelling alone: one count for everything, and a warning.
    let s = resolve(&[], &[], "[regions]\ntrusted_proxy_hops = 2\n").unwrap();
    assert_eq!((s.trusted_proxy_hops, s.regions.trusted_proxy_hops), (2, 2));
    assert_eq!(s.warnings.len(), 1);
    assert!(s.warnings[0].contains("deprecated"), "{:?}", s.warnings);
    // Both, agreeing: the same, still warned.
    let s = resolve(
        &[],
        &[],
        "[serve]\ntrusted_proxy_hops = 1\n[regions]\ntrusted_proxy_hops = 1\n",
    )
    .unwrap();
    assert_eq!((s.trusted_proxy_hops, s.warnings.len()), (1, 1));
    // `[serve]` alone: no warning.
    let s = resolve(&[], &[], "[serve]\ntrusted_proxy_hops = 1\n").unwrap();
    assert!(s.warnings.is_empty());
    // Disagreeing (an explicit 0 included): refused rather than guessed.
    for serve in [0, 1] {
        let toml =
            format!("[serve]\ntrusted_proxy_hops = {serve}\n[regions]\ntrusted_proxy_hops = 2\n");
        let err = resolve(&[], &[], &toml).unwrap_err();
        assert!(format!("{err:#}").contains("disagree"), "{err:#}");
    }
}

#[test]
fn the_operations_limits_table_quotes_the_defaults() {
    let d = &SERVE_DEFAULTS;
    let documented = [
        ("max_connections", d.max_connections as u64),
        ("header_timeout", d.header_timeout),
        ("request_timeout", d.request_timeout),
        ("shutdown_timeout", d.shutdown_timeout),
        ("http2_idle_timeout", d.http2_idle_timeout),
        ("http2_keepalive_interval", d.http2_keepalive_interval),
        ("http2_keepalive_timeout", d.http2_keepalive_timeout),
        ("send_timeout", d.send_timeout),
        ("send_min_rate", d.send_min_rate),
        ("url_ttl", d.url_ttl),
        ("index_ttl", d.index_ttl),
        ("health_interval", d.health_interval),
    ];
    let doc = include_str!("../../docs/operations.md");
    for (key, value) in documented {
        let cell = format!("| `[serve] {key}`");
        let row = doc
            .lines()
            .find(|l| l.starts_with(&cell))
            .unwrap_or_else(|| panic!("docs/operations.md has no limits row for {key}"));
        let default = row.split('|').nth(2).unwrap().trim();
        let number: String = default.chars().take_while(char::is_ascii_digit).collect();
        assert_eq!(number, value.to_string(), "{key}: documented {default:?}");
    }
}

#[test]
fn publish_flag_beats_file_beats_default() {
    let resolve = |args: &[&str], toml: &str| {
        let cli =
            PublishCli::try_parse_from(std::iter::once("publish").chain(args.iter().copied()))
                .unwrap();
        PublishSettings::resolve(cli.flags, &toml::from_str(toml).unwrap())
    };
    let s = resolve(&[], "");
    assert_eq!((s.jobs, s.v1, s.archive.max_expanded), (4, false, 64 << 30));
    assert_eq!(s.archive, crate::publish::archive::ArchiveLimits::default());
    let file = "[publish]\njobs = 2\nv1 = true\nmax_archive_bytes = \"1MiB\"\n";
    let s = resolve(&[], file);
    assert_eq!((s.jobs, s.v1, s.archive.max_expanded), (2, true, 1 << 20));
    let s = resolve(&["--jobs", "3", "--max-archive-bytes", "2KiB"], file);
    assert_eq!((s.jobs, s.v1, s.archive.max_expanded), (3, true, 2048));
    let s = resolve(&["--v1", "--jobs", "0"], "");
    assert_eq!((s.jobs, s.v1), (1, true));
}
