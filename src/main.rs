//! `static-registry`: a redirecting container-registry endpoint in front of object storage and
//! CDNs (`serve`), and the tools that write and check the static layout it serves (`publish`,
//! `verify`).

// The modules live in the library crate (src/lib.rs); declare new ones there, not here.
use static_registry::{auth, federation, publish, reference, serve, store, verify};

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use static_registry::config::Config;
use static_registry::reference::TaggedName;
use static_registry::serve::cache::CacheConfig;

const DEFAULT_LISTEN: &str = "127.0.0.1:5000";
const DEFAULT_URL_TTL: u64 = 600;
const DEFAULT_INDEX_TTL: u64 = 10;
const DEFAULT_HEALTH_INTERVAL: u64 = 10;

#[derive(Parser)]
#[command(
    name = "static-registry",
    version,
    about = "A read-only container registry that redirects every pull to signed object-storage or CDN URLs, and the publisher of the static layout behind it.",
    long_about = "A read-only container registry that redirects every pull to signed object-storage or CDN URLs, and the publisher of the static layout behind it.\n\n`publish` writes images (docker save tarballs, OCI layouts) into a store; `serve` answers the registry API from the store's index files and redirects content requests; `verify` checks a store.\n\nLogging follows RUST_LOG (e.g. RUST_LOG=static_registry=debug)."
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "STATIC_REGISTRY_LOG_FORMAT")]
    log_format: LogFormat,

    /// A TOML configuration file (see config/). Flags and environment variables override it.
    #[arg(long, short = 'c', global = true, env = "STATIC_REGISTRY_CONFIG")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry endpoint: answer /v2/ and redirect pulls to signed URLs.
    ///
    /// With a local store (a directory), the endpoint also serves that directory itself through a
    /// built-in origin at /_origin/, reachable only through URLs it signed.
    Serve {
        /// The store to serve: a directory or file:///path.
        #[arg(long, env = "STATIC_REGISTRY_STORE")]
        store: Option<String>,
        /// Address to listen on.
        #[arg(long, env = "STATIC_REGISTRY_LISTEN")]
        listen: Option<SocketAddr>,
        /// Lifetime of signed URLs, in seconds [default: 600].
        #[arg(long)]
        url_ttl: Option<u64>,
        /// Seconds a repository index is cached; a tag move is visible within this [default: 10].
        #[arg(long)]
        index_ttl: Option<u64>,
        /// A file holding the embedded origin's signing secret. Replicas sharing a store need the
        /// same one; without it each process picks a random secret.
        #[arg(long, env = "STATIC_REGISTRY_ORIGIN_SECRET_FILE")]
        origin_secret_file: Option<PathBuf>,
        /// External base URL of the embedded origin (default: redirects relative to this endpoint).
        #[arg(long)]
        origin_url: Option<String>,
        /// PEM certificate chain: serve HTTPS (HTTP/2 and HTTP/1.1). Reloaded when the file
        /// changes or on SIGHUP, without dropping connections.
        #[arg(long, env = "STATIC_REGISTRY_TLS_CERT", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key for --tls-cert.
        #[arg(long, env = "STATIC_REGISTRY_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Maximum concurrent connections; further clients wait in the accept backlog
        /// [default: 10000].
        #[arg(long)]
        max_connections: Option<usize>,
        /// Serving threads, each accepting and answering on its own [default: one per core].
        #[arg(long, env = "STATIC_REGISTRY_WORKERS")]
        workers: Option<usize>,
        /// Seconds in-flight requests get to finish after SIGTERM/SIGINT [default: 30].
        #[arg(long)]
        shutdown_timeout: Option<u64>,
        /// Seconds an HTTP/2 connection may stay without an open stream [default: 60].
        #[arg(long)]
        http2_idle_timeout: Option<u64>,
        /// Window in seconds in which a client keeping an answer waiting must take
        /// --send-min-rate bytes per second, or be disconnected [default: 60; 0: no floor].
        #[arg(long)]
        send_timeout: Option<u64>,
        /// Bytes per second a client keeping an answer waiting must take [default: 1024].
        #[arg(long)]
        send_min_rate: Option<u64>,
        /// Log every request at info level (method, path, status, latency, request id; never a
        /// signed URL).
        #[arg(long)]
        access_log: bool,
    },
    /// Publish an image into a store: blobs, then manifests, then the repository index.
    ///
    /// SOURCE uses skopeo's syntax:
    ///   oci:DIR[:TAG]                   an OCI image layout directory
    ///   oci-archive:FILE[:TAG]          a tar of an OCI image layout
    ///   docker-archive:FILE[:REPO:TAG]  a `docker save` tarball (legacy or Docker >= 25 shape)
    ///   docker://[REGISTRY/]REPO[:TAG][@DIGEST]
    ///                                   an image in another registry, mirrored (docs/mirror.md)
    ///
    /// Only blobs missing from the store are written; uncompressed layers are compressed on the
    /// way. Re-publishing an unchanged image writes no blob bytes.
    #[command(verbatim_doc_comment)]
    Publish {
        /// The image to publish (see above).
        source: String,
        /// The store to write: a directory or file:///path.
        #[arg(long, env = "STATIC_REGISTRY_STORE")]
        store: Option<String>,
        /// Destination REPO:TAG; repeat for several tags. Defaults to the tag a docker-archive
        /// carries.
        #[arg(long = "tag", short = 't')]
        tags: Vec<TaggedName>,
        /// Compression for layers that arrive uncompressed.
        #[arg(long, value_enum, default_value_t = publish::Compression::Gzip)]
        compression: publish::Compression,
        /// Blobs uploaded concurrently [default: 4].
        #[arg(long)]
        jobs: Option<usize>,
        /// Never show progress bars (they are shown only when stderr is a terminal).
        #[arg(long)]
        quiet: bool,
        /// Also write the registry v1 (legacy protocol) files, for Docker <= 17 clients; see
        /// docs/v1.md. Same as `[publish] v1 = true` in the config file.
        #[arg(long)]
        v1: bool,
        /// Most a compressed archive source may decompress to (its tar stream; also the most it
        /// can put in the temporary directory), e.g. 512MiB, 64GiB [default: 64GiB; config
        /// `[publish] max_archive_bytes`].
        #[arg(long, value_name = "SIZE")]
        max_archive_bytes: Option<publish::archive::ByteSize>,
        #[command(flatten)]
        mirror: publish::remote::MirrorOptions,
        #[command(flatten)]
        pin: publish::pin::PinOptions,
        #[command(flatten)]
        walk: static_registry::walk::WalkArgs,
    },
    /// Check a store: every tag resolves, every manifest parses, every blob exists with its size.
    ///
    /// Exits non-zero and names each broken object when anything points at missing or wrong
    /// content. Derived files lagging the index (what a crashed publish leaves; the next publish
    /// rewrites them) are reported as warnings and do not fail.
    Verify {
        /// The store to check: a directory or file:///path.
        #[arg(long, env = "STATIC_REGISTRY_STORE")]
        store: Option<String>,
        /// Also re-hash every manifest and blob.
        #[arg(long)]
        deep: bool,
        #[command(flatten)]
        walk: static_registry::walk::WalkArgs,
    },
    /// Delete blobs and manifests no repository index references (and stale staging files).
    ///
    /// Content younger than the grace period is always kept, so a publish in flight (which has
    /// written content that no index references yet) is never broken. See docs/store-care.md.
    Prune {
        /// The store: a directory, file:///path or s3://bucket[/prefix].
        #[arg(long, env = "STATIC_REGISTRY_STORE")]
        store: Option<String>,
        /// Keep unreferenced content younger than this (e.g. 24h, 30m, 7d). Use more than your
        /// longest publish.
        #[arg(long, default_value = "24h", value_parser = static_registry::prune::parse_duration)]
        grace: Duration,
        /// List what would be deleted and the bytes freed; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        walk: static_registry::walk::WalkArgs,
    },
    /// Remove tags from a repository; content no remaining tag reaches leaves its index.
    ///
    /// The repository's index keeps only what its remaining tags (and the referrers of what they
    /// reach) need, so digest pulls of untagged versions stop working; `prune` then deletes the
    /// content no repository references.
    Untag {
        /// REPO:TAG to remove; repeat for several.
        #[arg(required = true)]
        tags: Vec<TaggedName>,
        /// The store: a directory, file:///path or s3://bucket[/prefix].
        #[arg(long, env = "STATIC_REGISTRY_STORE")]
        store: Option<String>,
        #[command(flatten)]
        walk: static_registry::walk::WalkArgs,
    },
    /// Delete a repository: its catalog entry, tag copies, tag list, referrers and index.
    ///
    /// Content is left for `prune`, since other repositories may share it.
    DeleteRepository {
        /// The repository name.
        repository: reference::RepoName,
        /// The store: a directory, file:///path or s3://bucket[/prefix].
        #[arg(long, env = "STATIC_REGISTRY_STORE")]
        store: Option<String>,
    },
    /// Write an image from the store to a docker-archive or an OCI layout, without an endpoint.
    ///
    /// DEST uses skopeo's syntax:
    ///   docker-archive:FILE[:REPO:TAG]  a `docker load`-able tarball (one platform)
    ///   oci:DIR[:TAG]                   an OCI image layout (an image index is kept whole)
    #[command(verbatim_doc_comment)]
    Export {
        /// REPO:TAG or REPO@DIGEST.
        reference: static_registry::export::ExportRef,
        /// docker-archive:FILE[:REPO:TAG] or oci:DIR[:TAG].
        destination: static_registry::export::Destination,
        /// The store: a directory, file:///path or s3://bucket[/prefix].
        #[arg(long, env = "STATIC_REGISTRY_STORE")]
        store: Option<String>,
        /// os/arch[/variant] of a multi-platform image to export (docker-archive defaults to
        /// this machine's; oci defaults to the whole index).
        #[arg(long)]
        platform: Option<static_registry::oci::Platform>,
        #[command(flatten)]
        walk: static_registry::walk::WalkArgs,
    },
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The store a command works on: `--store` (or its variable), else the config file's `store`.
fn open_store(flag: Option<String>, cfg: &Config) -> anyhow::Result<Arc<dyn store::Store>> {
    let location = flag.or_else(|| cfg.store.clone()).context(
        "no store given: pass --store DIR (or file:///path), set STATIC_REGISTRY_STORE, or set `store` in the config file",
    )?;
    store::open_with(&location, &cfg.s3)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve {
            store,
            listen,
            url_ttl,
            index_ttl,
            origin_secret_file,
            origin_url,
            tls_cert,
            tls_key,
            max_connections,
            workers,
            shutdown_timeout,
            http2_idle_timeout,
            send_timeout,
            send_min_rate,
            access_log,
        } => {
            let listen = match listen {
                Some(l) => l,
                None => cfg
                    .serve
                    .listen
                    .as_deref()
                    .unwrap_or(DEFAULT_LISTEN)
                    .parse()
                    .context("invalid listen address in config")?,
            };
            let url_ttl =
                Duration::from_secs(url_ttl.or(cfg.serve.url_ttl).unwrap_or(DEFAULT_URL_TTL));
            let index_ttl = index_ttl
                .or(cfg.serve.index_ttl)
                .unwrap_or(DEFAULT_INDEX_TTL);
            let cache = CacheConfig {
                ttl: Duration::from_secs(index_ttl),
                negative_ttl: Duration::from_secs(index_ttl.clamp(1, 2)),
                ..CacheConfig::default()
            };
            let mut embedded = cfg.embedded.clone();
            if origin_secret_file.is_some() {
                embedded.secret_file = origin_secret_file;
            }
            if origin_url.is_some() {
                embedded.url = origin_url;
            }
            let store = store.or(cfg.store.clone());
            let mut regions = cfg.regions.clone();
            if regions.trusted_proxy_hops == 0 {
                regions.trusted_proxy_hops = cfg.serve.trusted_proxy_hops;
            }
            let private_prefixes: Vec<&str> = cfg
                .auth
                .iter()
                .flat_map(|a| a.rules.iter().map(|r| r.prefix.as_str()))
                .collect();
            let built = federation::config::build(federation::config::FederationInput {
                default_store: store.as_deref(),
                s3: &cfg.s3,
                origins: &cfg.origins,
                routes: &cfg.routes,
                regions: &regions,
                embedded: &embedded,
                cache,
                private_prefixes: &private_prefixes,
            })
            .await?;
            let interval = cfg.serve.health_interval.unwrap_or(DEFAULT_HEALTH_INTERVAL);
            federation::health::spawn(
                built.federation.clone(),
                Duration::from_secs(interval.max(1)),
                url_ttl,
            );
            let auth = cfg
                .auth
                .as_ref()
                .map(auth::TokenIssuer::from_config)
                .transpose()?
                .map(Arc::new);
            let tls = match (
                tls_cert.or(cfg.serve.tls_cert.clone()),
                tls_key.or(cfg.serve.tls_key.clone()),
            ) {
                (Some(cert), Some(key)) => Some(serve::listener::TlsFiles { cert, key }),
                (None, None) => None,
                _ => anyhow::bail!("TLS needs both a certificate and a key (tls_cert and tls_key)"),
            };
            if let Some(public) = cfg.serve.public_url.as_deref() {
                federation::warn_subdomain_origins(&built.federation, public);
            }
            let listener_cfg = serve::listener::ListenerConfig {
                max_connections: max_connections
                    .or(cfg.serve.max_connections)
                    .unwrap_or(10_000)
                    .max(1),
                workers: workers
                    .or(cfg.serve.workers)
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
                    .max(1),
                header_timeout: Duration::from_secs(cfg.serve.header_timeout.unwrap_or(10).max(1)),
                shutdown_timeout: Duration::from_secs(
                    shutdown_timeout
                        .or(cfg.serve.shutdown_timeout)
                        .unwrap_or(30),
                ),
                http2_idle_timeout: Duration::from_secs(
                    http2_idle_timeout
                        .or(cfg.serve.http2_idle_timeout)
                        .unwrap_or(60)
                        .max(1),
                ),
                http2_keep_alive_interval: Some(cfg.serve.http2_keepalive_interval.unwrap_or(30))
                    .filter(|&s| s > 0)
                    .map(Duration::from_secs),
                http2_keep_alive_timeout: Duration::from_secs(
                    cfg.serve.http2_keepalive_timeout.unwrap_or(20).max(1),
                ),
                send_floor: serve::send_floor::SendFloor::new(
                    Duration::from_secs(send_timeout.or(cfg.serve.send_timeout).unwrap_or(60)),
                    send_min_rate.or(cfg.serve.send_min_rate).unwrap_or(1024),
                ),
                tls: tls.clone(),
            };
            let state = Arc::new(serve::AppState {
                federation: built.federation,
                url_ttl,
                embedded: built.embedded,
                auth,
                trust_forwarded: cfg.serve.trusted_proxy_hops > 0,
                tls: tls.is_some(),
                access_log: access_log || cfg.serve.access_log,
                request_timeout: Duration::from_secs(
                    cfg.serve.request_timeout.unwrap_or(30).max(1),
                ),
                reuse_answers: index_ttl > 0,
                client_limits: serve::client_limits::ClientLimits::new(&cfg.serve.client_limits)?,
            });
            serve::run(listen, state, listener_cfg).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Publish {
            source,
            store,
            tags,
            compression,
            jobs,
            quiet,
            v1,
            max_archive_bytes,
            mirror,
            pin,
            walk,
        } => {
            let store = open_store(store, &cfg)?;
            let max_expanded = max_archive_bytes
                .or(cfg.publish.max_archive_bytes)
                .map_or(publish::archive::DEFAULT_MAX_EXPANDED, |b| b.0);
            let opts = publish::PublishOptions {
                source,
                tags,
                compression,
                jobs: jobs.or(cfg.publish.jobs).unwrap_or(4).max(1),
                progress: !quiet && std::io::stderr().is_terminal(),
                v1: v1 || cfg.publish.v1.unwrap_or(false),
                mirror,
                pin,
                archive: publish::archive::ArchiveLimits { max_expanded },
                limits: walk.limits(cfg.publish.max_manifests),
            };
            let summary = publish::publish(store, &opts).await?;
            match opts.pin.output {
                publish::pin::OutputFormat::Text => println!("{summary}"),
                publish::pin::OutputFormat::Json => {
                    println!("{:#}", publish::pin::summary_json(&summary))
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { store, deep, walk } => {
            let store = open_store(store, &cfg)?;
            let opts = verify::VerifyOptions {
                deep,
                limits: walk.limits(cfg.publish.max_manifests),
            };
            let report = verify::verify(store.as_ref(), &opts).await?;
            println!("{report}");
            Ok(if report.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Prune {
            store,
            grace,
            dry_run,
            walk,
        } => {
            let store = open_store(store, &cfg)?;
            let opts = static_registry::prune::PruneOptions {
                grace,
                dry_run,
                limits: walk.limits(cfg.publish.max_manifests),
            };
            let report = static_registry::prune::prune(store.as_ref(), &opts).await?;
            println!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Untag { tags, store, walk } => {
            let limits = walk.limits(cfg.publish.max_manifests);
            let store = open_store(store, &cfg)?;
            let mut by_repo: std::collections::BTreeMap<_, Vec<_>> = Default::default();
            for t in tags {
                by_repo.entry(t.name).or_default().push(t.tag);
            }
            for (name, tags) in by_repo {
                let report =
                    static_registry::prune::untag(store.as_ref(), &name, &tags, limits).await?;
                println!("{report}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::DeleteRepository { repository, store } => {
            let store = open_store(store, &cfg)?;
            let msg =
                static_registry::prune::delete_repository(store.as_ref(), &repository).await?;
            println!("{msg}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Export {
            reference,
            destination,
            store,
            platform,
            walk,
        } => {
            let store = open_store(store, &cfg)?;
            let opts = static_registry::export::ExportOptions {
                reference,
                destination,
                platform,
                limits: walk.limits(cfg.publish.max_manifests),
            };
            let summary = static_registry::export::export(store, &opts).await?;
            println!("{summary}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
