//! `static-registry`: a redirecting container-registry endpoint in front of object storage and
//! CDNs (`serve`), and the tools that write and check the static layout it serves (`publish`,
//! `verify`).

// The modules live in the library crate (src/lib.rs); declare new ones there, not here.
use static_registry::{auth, aws, federation, publish, reference, serve, settings, store, verify};

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use static_registry::config::Config;
use static_registry::reference::TaggedName;
use static_registry::settings::{PublishSettings, ServeSettings};

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
enum CheckOutput {
    Text,
    Json,
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
    Serve(settings::ServeFlags),
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
        /// The store to write: a directory or file:///path [env: STATIC_REGISTRY_STORE].
        #[arg(long)]
        store: Option<String>,
        /// Destination REPO:TAG; repeat for several tags. Defaults to the tag a docker-archive
        /// carries.
        #[arg(long = "tag", short = 't')]
        tags: Vec<TaggedName>,
        /// Compression for layers that arrive uncompressed.
        #[arg(long, value_enum, default_value_t = publish::Compression::Gzip)]
        compression: publish::Compression,
        /// Never show progress bars (they are shown only when stderr is a terminal).
        #[arg(long)]
        quiet: bool,
        #[command(flatten)]
        settings: settings::PublishFlags,
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
        /// The store to check: a directory or file:///path [env: STATIC_REGISTRY_STORE].
        #[arg(long)]
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
        /// The store: a directory, file:///path, s3://bucket[/prefix], azure://account/container[/prefix]
        /// or gs://bucket[/prefix]
        /// [env: STATIC_REGISTRY_STORE].
        #[arg(long)]
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
        /// The store: a directory, file:///path, s3://bucket[/prefix], azure://account/container[/prefix]
        /// or gs://bucket[/prefix]
        /// [env: STATIC_REGISTRY_STORE].
        #[arg(long)]
        store: Option<String>,
        #[command(flatten)]
        walk: static_registry::walk::WalkArgs,
    },
    /// Drop tags by retention rules, never one in use; `prune` then deletes their content.
    ///
    /// Rules come from the flags (--keep-newest, --keep, --older-than, --prefix: one rule), else
    /// the config file's [[retention]]. A tag whose digest is in the --in-use list (directly, by
    /// tag, or as a platform image of a multi-platform index) is never dropped, nor is an
    /// immutable tag. See docs/store-care.md, "Retention".
    Retain {
        /// The store: a directory, file:///path, s3://bucket[/prefix], azure://account/container[/prefix]
        /// or gs://bucket[/prefix]
        /// [env: STATIC_REGISTRY_STORE].
        #[arg(long)]
        store: Option<String>,
        /// The flags' rule covers repositories under this prefix [default: every repository].
        #[arg(long)]
        prefix: Option<String>,
        /// Keep the N most recently moved tags of each repository.
        #[arg(long, value_name = "N")]
        keep_newest: Option<usize>,
        /// Keep tags matching PATTERN (`*` within a component); repeatable.
        #[arg(long = "keep", value_name = "PATTERN")]
        keep: Vec<String>,
        /// Drop tags last moved longer ago than this (e.g. 30d, 12h).
        #[arg(long, value_name = "DURATION")]
        older_than: Option<String>,
        /// Pin tags (e.g. `pin-*`): kept while their digest is in use, dropped once it is not;
        /// repeatable, added to every rule.
        #[arg(long = "pin", value_name = "PATTERN")]
        pins: Vec<String>,
        /// What is deployed: a file (or - for stdin) of references, REPO:TAG or REPO@DIGEST one
        /// a line; # comments and blank lines allowed.
        #[arg(long, value_name = "FILE")]
        in_use: Option<PathBuf>,
        /// List what would be dropped and what a prune would then free; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Report format.
        #[arg(long, value_enum, default_value_t = CheckOutput::Text)]
        output: CheckOutput,
        #[command(flatten)]
        walk: static_registry::walk::WalkArgs,
    },
    /// Move a tag to content its repository already references (retag, or roll back), with the
    /// same compare-and-swap, immutable-tag check and ordering as publish.
    Tag {
        /// REPO:TAG to move (or create).
        reference: TaggedName,
        /// Where to: a digest (sha256:…) the repository references, or REPO:OTHER (wherever that
        /// tag points now).
        #[arg(long)]
        to: static_registry::tags::Target,
        /// The store: a directory, file:///path, s3://bucket[/prefix], azure://account/container[/prefix]
        /// or gs://bucket[/prefix]
        /// [env: STATIC_REGISTRY_STORE].
        #[arg(long)]
        store: Option<String>,
    },
    /// Where a repository's tags point, since when, and where they pointed before.
    History {
        /// REPO or REPO:TAG.
        reference: String,
        /// The store: a directory, file:///path, s3://bucket[/prefix], azure://account/container[/prefix]
        /// or gs://bucket[/prefix]
        /// [env: STATIC_REGISTRY_STORE].
        #[arg(long)]
        store: Option<String>,
        /// Report format.
        #[arg(long, value_enum, default_value_t = CheckOutput::Text)]
        output: CheckOutput,
    },
    /// Delete a repository: its catalog entry, tag copies, tag list, referrers and index.
    ///
    /// Content is left for `prune`, since other repositories may share it.
    DeleteRepository {
        /// The repository name.
        repository: reference::RepoName,
        /// The store: a directory, file:///path, s3://bucket[/prefix], azure://account/container[/prefix]
        /// or gs://bucket[/prefix]
        /// [env: STATIC_REGISTRY_STORE].
        #[arg(long)]
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
        /// The store: a directory, file:///path, s3://bucket[/prefix], azure://account/container[/prefix]
        /// or gs://bucket[/prefix]
        /// [env: STATIC_REGISTRY_STORE].
        #[arg(long)]
        store: Option<String>,
        /// os/arch[/variant] of a multi-platform image to export (docker-archive defaults to
        /// this machine's; oci defaults to the whole index).
        #[arg(long)]
        platform: Option<static_registry::oci::Platform>,
        #[command(flatten)]
        walk: static_registry::walk::WalkArgs,
    },
    /// Make DST a replica of SRC's repositories: copy only the content DST lacks (digests
    /// checked), then each repository's index, then its tag files and the catalog. Run it
    /// again to catch up; DST's own tags in synced repositories are replaced. See
    /// docs/federation.md, "Replicating a store to another cloud".
    Sync {
        /// The store to copy from: a directory, file:///path, s3://, azure:// or gs://.
        source: String,
        /// The store to copy into (same forms); its cloud's settings come from the config file.
        destination: String,
        /// Only repositories whose name starts with this; repeat for several (default: all).
        #[arg(long = "repository", value_name = "PREFIX")]
        prefixes: Vec<String>,
        /// Objects copied at once.
        #[arg(long, default_value_t = 8)]
        jobs: usize,
        /// Say what would be copied; write nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, value_enum, default_value = "text")]
        output: CheckOutput,
    },
    /// Check every origin the way clients will use it: sign and fetch the health canary, a real
    /// manifest (its Content-Type, no Content-Encoding, its digest), a blob Range, a tampered and
    /// an expired URL. Says what clients will do with each failure and how to fix it; exits 1 on
    /// any failure.
    Check {
        #[command(flatten)]
        flags: settings::ServeFlags,
        /// The endpoint as clients reach it, for the embedded origin's relative redirects
        /// (default: http://LISTEN).
        #[arg(long)]
        endpoint: Option<url::Url>,
        /// Report format.
        #[arg(long, value_enum, default_value_t = CheckOutput::Text)]
        output: CheckOutput,
    },
    /// Print what Docker, containerd and podman/CRI-O need to pull through this endpoint as a
    /// mirror (docs/mirror.md, "Mirror mode").
    ///
    /// The upstreams come from --upstream, else the config file's [[mirror.upstreams]], else
    /// docker.io.
    MirrorConfig {
        /// The endpoint as clients reach it, e.g. https://mirror.example or http://10.0.0.5:5000.
        #[arg(long)]
        endpoint: url::Url,
        /// An upstream registry, HOST[=URL] (e.g. ghcr.io, or
        /// registry.example=http://10.0.0.9:5000); repeatable.
        #[arg(long = "upstream", value_name = "HOST[=URL]")]
        upstreams: Vec<String>,
        /// Only this client's configuration.
        #[arg(long, value_enum, default_value_t = static_registry::mirror::client_config::Client::All)]
        client: static_registry::mirror::client_config::Client,
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

/// The store a command works on: `--store`, else `STATIC_REGISTRY_STORE`, else the config file's.
fn open_store(flag: Option<String>, cfg: &Config) -> anyhow::Result<Arc<dyn store::Store>> {
    let location = settings::store_location(flag, cfg, &aws::process_env).context(
        "no store given: pass --store DIR (or file:///path, s3://, azure://, gs://), set STATIC_REGISTRY_STORE, or set `store` in the config file",
    )?;
    store::open_with(&location, &cfg.clouds())
}

/// The origins, routes and regions `serve` and `check` work with.
async fn build_federation(
    cfg: &Config,
    settings: &ServeSettings,
) -> anyhow::Result<federation::config::Built> {
    let private_prefixes: Vec<&str> = cfg
        .auth
        .iter()
        .flat_map(|a| a.rules.iter().map(|r| r.prefix.as_str()))
        .collect();
    federation::config::build(federation::config::FederationInput {
        default_store: settings.store.as_deref(),
        clouds: &cfg.clouds(),
        origins: &cfg.origins,
        routes: &cfg.routes,
        regions: &settings.regions,
        embedded: &settings.embedded,
        cache: settings.cache_config(),
        private_prefixes: &private_prefixes,
    })
    .await
}

/// The endpoint as the checks reach it: `listen`, with a wildcard address as loopback.
fn local_endpoint(settings: &ServeSettings) -> url::Url {
    let mut addr = settings.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let scheme = if settings.tls.is_some() {
        "https"
    } else {
        "http"
    };
    url::Url::parse(&format!("{scheme}://{addr}/")).expect("a socket address is a valid host")
}

/// `check` at startup, once the listener is up: failures are logged as warnings (a client is
/// about to meet them) and the report is kept for `/readyz`.
fn spawn_startup_check(
    federation: Arc<federation::Federation>,
    endpoint: url::Url,
    keep: Arc<std::sync::RwLock<Option<serde_json::Value>>>,
) {
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let report = static_registry::check::run(&federation, &endpoint).await;
        for f in report.findings.iter().filter(|f| !f.ok) {
            tracing::warn!(
                origin = %f.origin,
                check = f.check,
                fix = f.fix.as_deref().unwrap_or(""),
                "origin check failed: {}; {}",
                f.detail,
                f.consequence.unwrap_or("")
            );
        }
        if report.ok() {
            tracing::info!(
                checks = report.findings.len(),
                "every origin answers as clients need"
            );
        }
        if let Ok(mut k) = keep.write() {
            *k = serde_json::to_value(&report).ok();
        }
    });
}

/// Mirror mode from `[mirror]`: the namespace table, and the copier when an upstream populates.
fn start_mirror(
    cfg: &Config,
    serve_store: Option<&str>,
    federation: &Arc<federation::Federation>,
) -> anyhow::Result<Option<Arc<federation::mirror::Mirror>>> {
    use static_registry::mirror::populate::{AfterCommit, Populator};
    let Some(mut table) = federation::mirror::Mirror::from_config(&cfg.mirror)? else {
        return Ok(None);
    };
    if table.upstreams().iter().any(|u| u.populate) {
        let location = cfg
            .mirror
            .store
            .as_deref()
            .or(serve_store)
            .context("mirror upstreams with populate = true need a store to write to: set [mirror] store or --store")?;
        let store = store::open_with(location, &cfg.clouds())?;
        let fed = federation.clone();
        // This replica answers from the new index at once; others within their index_ttl.
        let after: AfterCommit = Arc::new(move |name| {
            let fed = fed.clone();
            Box::pin(async move {
                let key = static_registry::layout::repo_index(&name);
                for origin in &fed.origins {
                    origin.repos.invalidate(&key).await;
                }
            })
        });
        table.fill = Some(Arc::new(Populator::start(
            &cfg.mirror,
            store,
            after,
            static_registry::immutable::Immutable::new(&cfg.immutable),
        )?));
    }
    for u in table.upstreams() {
        tracing::info!(
            upstream = %u.host,
            url = %u.url,
            prefix = %u.prefix,
            populate = u.populate,
            bare_names = u.unqualified,
            "mirroring"
        );
    }
    Ok(Some(Arc::new(table)))
}

/// Runs a dry run on a thread of its own: prune's and retain's futures are not `Send` for every
/// lifetime (they were written for the command line), and a dry run every few minutes can
/// afford a thread.
fn dry_run_on_thread<T, F, Fut>(
    name: &str,
    run: F,
) -> std::io::Result<tokio::sync::oneshot::Receiver<anyhow::Result<T>>>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let out = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(run()));
            let _ = tx.send(out);
        })?;
    Ok(rx)
}

/// The retention rules of `retain`: the flags' one rule when any rule flag is given, else the
/// config file's, plus `--pin` in every rule.
fn retention_policy(
    cfg: &Config,
    flag_rule: Option<static_registry::retain::RetentionRule>,
    pins: &[String],
) -> anyhow::Result<static_registry::retain::Policy> {
    use static_registry::retain::Policy;
    let rules = match flag_rule {
        Some(r) => vec![r],
        None => cfg.retention.clone(),
    };
    anyhow::ensure!(
        !rules.is_empty(),
        "no retention rules: pass --keep-newest / --older-than (with --keep, --prefix), or add [[retention]] to the config file"
    );
    let immutable = static_registry::immutable::Immutable::new(&cfg.immutable);
    Policy::new(&rules, immutable)?.with_pins(pins)
}

/// The web page from `[ui]`, with its store summary recomputed in the background (and `prune
/// --dry-run`'s answer on what a prune would reclaim).
fn start_ui(
    cfg: &Config,
    federation: &Arc<federation::Federation>,
    auth: Option<Arc<auth::TokenIssuer>>,
) -> anyhow::Result<Option<Arc<static_registry::ui::Ui>>> {
    use static_registry::prune::{self, PruneOptions};
    use static_registry::ui::{Reclaim, Reclaimable, Ui};
    // The config file's walk bound, as the commands use it.
    let limits = static_registry::walk::WalkArgs::default().limits(cfg.publish.max_manifests);
    let reclaim: Reclaim = Arc::new(move |store| {
        Box::pin(async move {
            let opts = PruneOptions {
                grace: prune::DEFAULT_GRACE,
                dry_run: true,
                limits,
            };
            let rx = dry_run_on_thread("ui-prune-dry-run", move || async move {
                prune::prune(store.as_ref(), &opts).await
            })?;
            let r = rx.await.context("the prune dry run stopped")??;
            Ok(Reclaimable {
                grace: prune::DEFAULT_GRACE,
                items: r.deleted.len(),
                bytes: r.bytes_freed(),
                young: r.kept_young,
                young_bytes: r.kept_young_bytes,
            })
        })
    });
    let Some(ui) = Ui::new(&cfg.ui, federation.clone(), auth, Some(reclaim))? else {
        return Ok(None);
    };
    if !cfg.retention.is_empty() {
        let policy = Arc::new(retention_policy(cfg, None, &[])?);
        ui.summaries.set_retention(Arc::new(move |store| {
            let policy = policy.clone();
            Box::pin(async move {
                use static_registry::ui::{RetentionDrop, RetentionPreview};
                let rx = dry_run_on_thread("ui-retain-dry-run", move || async move {
                    static_registry::retain::plan(store.as_ref(), &policy, None, limits).await
                })?;
                let r = rx.await.context("the retention dry run stopped")??;
                Ok(RetentionPreview {
                    drops: r
                        .dropped
                        .into_iter()
                        .map(|d| RetentionDrop {
                            repository: d.repository,
                            tag: d.tag.to_string(),
                            digest: d.digest,
                            why: d.why,
                        })
                        .collect(),
                    manifests: r.unreferenced_manifests,
                    blobs: r.unreferenced_blobs,
                    bytes: r.unreferenced_bytes,
                })
            })
        }));
    }
    let ui = Arc::new(ui);
    tokio::spawn(ui.summaries.clone().run());
    tracing::info!(prefix = ui.prefix(), "web page");
    Ok(Some(ui))
}

/// `mirror-config`: the upstreams from the flags, else the config file, else Docker Hub.
fn mirror_client_config(
    cfg: &Config,
    endpoint: &url::Url,
    flags: &[String],
    client: static_registry::mirror::client_config::Client,
) -> anyhow::Result<String> {
    use federation::mirror::{Mirror, MirrorConfig, UpstreamConfig};
    let from_flags = MirrorConfig {
        upstreams: flags
            .iter()
            .map(|f| {
                let (host, url) = match f.split_once('=') {
                    Some((h, u)) => (h, Some(u.to_owned())),
                    None => (f.as_str(), None),
                };
                UpstreamConfig {
                    host: host.to_owned(),
                    url,
                    ..Default::default()
                }
            })
            .collect(),
        ..Default::default()
    };
    let docker_hub = MirrorConfig {
        upstreams: vec![UpstreamConfig {
            host: federation::mirror::DOCKER_HUB.into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let chosen = if !flags.is_empty() {
        &from_flags
    } else if !cfg.mirror.upstreams.is_empty() {
        &cfg.mirror
    } else {
        &docker_hub
    };
    let table = Mirror::from_config(chosen)?.context("no upstreams")?;
    let list: Vec<_> = table.upstreams().iter().map(|u| u.as_ref()).collect();
    Ok(static_registry::mirror::client_config::render(
        endpoint, &list, client,
    ))
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
        Command::Serve(flags) => {
            let settings = ServeSettings::resolve(flags, &cfg, &aws::process_env)?;
            for warning in &settings.warnings {
                tracing::warn!("{warning}");
            }
            let built = build_federation(&cfg, &settings).await?;
            federation::health::spawn(
                built.federation.clone(),
                settings.health_interval,
                settings.url_ttl,
            );
            let auth = cfg
                .auth
                .as_ref()
                .map(auth::TokenIssuer::from_config)
                .transpose()?
                .map(Arc::new);
            if let Some(public) = settings.public_url.as_deref() {
                federation::warn_subdomain_origins(&built.federation, public);
            }
            let mirror = start_mirror(&cfg, settings.store.as_deref(), &built.federation)?;
            let ui = start_ui(&cfg, &built.federation, auth.clone())?;
            let state = Arc::new(serve::AppState {
                federation: built.federation,
                url_ttl: settings.url_ttl,
                embedded: built.embedded,
                auth,
                trust_forwarded: settings.trusted_proxy_hops > 0,
                tls: settings.tls.is_some(),
                access_log: settings.access_log,
                request_timeout: settings.request_timeout,
                reuse_answers: !settings.index_ttl.is_zero(),
                client_limits: serve::client_limits::ClientLimits::new(&settings.client_limits)?,
                mirror,
                ui,
                cors: serve::cors::Cors::new(&settings.cors_origins)?,
                checks: Default::default(),
            });
            if settings.startup_check {
                spawn_startup_check(
                    state.federation.clone(),
                    local_endpoint(&settings),
                    state.checks.clone(),
                );
            }
            serve::run(settings.listen, state, settings.listener_config()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Publish {
            source,
            store,
            tags,
            compression,
            quiet,
            settings,
            mirror,
            pin,
            walk,
        } => {
            let store = open_store(store, &cfg)?;
            let settings = PublishSettings::resolve(settings, &cfg);
            let opts = publish::PublishOptions {
                source,
                tags,
                compression,
                jobs: settings.jobs,
                progress: !quiet && std::io::stderr().is_terminal(),
                v1: settings.v1,
                mirror,
                pin,
                archive: settings.archive,
                limits: walk.limits(cfg.publish.max_manifests),
                fill: None,
                immutable: static_registry::immutable::Immutable::new(&cfg.immutable),
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
        Command::Retain {
            store,
            prefix,
            keep_newest,
            keep,
            older_than,
            pins,
            in_use,
            dry_run,
            output,
            walk,
        } => {
            let flag_rule = (prefix.is_some()
                || keep_newest.is_some()
                || !keep.is_empty()
                || older_than.is_some())
            .then(|| static_registry::retain::RetentionRule {
                prefix: prefix.unwrap_or_default(),
                keep_newest,
                keep,
                drop_older_than: older_than,
                pins: Vec::new(),
            });
            let policy = retention_policy(&cfg, flag_rule, &pins)?;
            let in_use = in_use
                .as_deref()
                .map(static_registry::retain::InUse::read)
                .transpose()?;
            let store = open_store(store, &cfg)?;
            let limits = walk.limits(cfg.publish.max_manifests);
            let report = static_registry::retain::retain(
                store.as_ref(),
                &policy,
                in_use.as_ref(),
                dry_run,
                limits,
            )
            .await?;
            match output {
                CheckOutput::Text => println!("{report}"),
                CheckOutput::Json => println!("{:#}", serde_json::to_value(&report)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Tag {
            reference,
            to,
            store,
        } => {
            let store = open_store(store, &cfg)?;
            let rules = static_registry::immutable::Immutable::new(&cfg.immutable);
            let (d, previous) = static_registry::tags::retag(
                store.as_ref(),
                &reference.name,
                &reference.tag,
                &to,
                &rules,
            )
            .await?;
            match previous {
                Some(p) if p == d.digest => println!("{reference} already points at {}", d.digest),
                Some(p) => println!("{reference} -> {} (was {p})", d.digest),
                None => println!("{reference} -> {} (new tag)", d.digest),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::History {
            reference,
            store,
            output,
        } => {
            let (name, tag) = match reference.rsplit_once(':') {
                Some((n, t)) if !t.contains('/') => (n, Some(t)),
                _ => (reference.as_str(), None),
            };
            let name = reference::RepoName::parse(name)?;
            let tag = tag.map(reference::Tag::parse).transpose()?;
            let store = open_store(store, &cfg)?;
            let list = static_registry::tags::history(store.as_ref(), &name, tag.as_ref()).await?;
            match output {
                CheckOutput::Text => {
                    print!("{}", static_registry::tags::history_text(&name, &list))
                }
                CheckOutput::Json => println!(
                    "{:#}",
                    serde_json::json!({ "repository": name, "tags": list })
                ),
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
        Command::Sync {
            source,
            destination,
            prefixes,
            jobs,
            dry_run,
            output,
        } => {
            let clouds = cfg.clouds();
            let src = store::open_with(&source, &clouds)?;
            let dst = store::open_with(&destination, &clouds)?;
            let opts = static_registry::sync::SyncOptions {
                prefixes,
                jobs,
                dry_run,
            };
            let report = static_registry::sync::sync(src, dst, &opts).await?;
            match output {
                CheckOutput::Text => println!(
                    "{}{} repositories: {} objects ({}) {}, {} already present; {} indexes {}",
                    if report.dry_run { "dry run: " } else { "" },
                    report.repositories,
                    report.objects_copied,
                    static_registry::byte_size::ByteSize(report.bytes_copied),
                    if report.dry_run { "to copy" } else { "copied" },
                    report.objects_present,
                    report.indexes_written,
                    if report.dry_run {
                        "to write"
                    } else {
                        "written"
                    },
                ),
                CheckOutput::Json => println!("{:#}", serde_json::json!(report)),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Check {
            flags,
            endpoint,
            output,
        } => {
            let settings = ServeSettings::resolve(flags, &cfg, &aws::process_env)?;
            let built = build_federation(&cfg, &settings).await?;
            let endpoint = endpoint.unwrap_or_else(|| local_endpoint(&settings));
            let report = static_registry::check::run(&built.federation, &endpoint).await;
            match output {
                CheckOutput::Text => print!("{}", report.text()),
                CheckOutput::Json => println!("{:#}", serde_json::to_value(&report)?),
            }
            Ok(if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::MirrorConfig {
            endpoint,
            upstreams,
            client,
        } => {
            print!(
                "{}",
                mirror_client_config(&cfg, &endpoint, &upstreams, client)?
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
