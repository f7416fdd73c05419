//! The copier: fills the store with what mirror clients missed, in the background.
//!
//! `serve` calls [`Populator`] through the `federation::mirror::Fill` seam and never waits. Each
//! missed image (or stale tag) becomes one job, bounded on every side: a queue length (misses
//! beyond it are dropped and counted), a concurrency limit, a per-image size limit, a total time
//! limit (the lease's lifetime), and a pause after a failure before the same image is tried again.
//! A job claims the image's lease in the store first ([`super::lease`]), so replicas sharing a
//! store copy it once, then runs the `docker://` publisher: only missing blobs are fetched, every
//! digest is verified, and the index is committed last, so a crash leaves no tag pointing at
//! missing content. Jobs run on their own small runtime, never on the serving threads.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::federation::mirror::{self, Fill, Mapped, MirrorConfig, Upstream};
use crate::immutable::Immutable;
use crate::layout;
use crate::publish::{self, remote::MirrorOptions, PublishOptions};
use crate::reference::{ManifestRef, RepoName, Tag, TaggedName};
use crate::registry::credentials::{CredsArg, Secret};
use crate::store::Store;

use super::lease::{self, Claim};

/// Called with a repository after a job committed to it (to drop the cached index).
pub type AfterCommit =
    Arc<dyn Fn(RepoName) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Why a job runs: both copy the same way, the metrics tell them apart.
#[derive(Debug, Clone, Copy)]
enum Cause {
    Miss,
    Refresh,
}

/// The background copier of one `serve` process (cheap to clone: one shared state).
#[derive(Clone)]
pub struct Populator {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    runtime: tokio::runtime::Handle,
    queue: usize,
    /// Jobs accepted and not yet started (the queue's length).
    pending: AtomicUsize,
    slots: Arc<Semaphore>,
    /// Lease keys queued or copying here: a second miss of the same image is not queued twice.
    active: Mutex<HashSet<String>>,
    /// Lease keys whose copy failed lately; a miss of them waits `retry_after`.
    failed: moka::sync::Cache<String, ()>,
    lease_ttl: Duration,
    holder: String,
    after_commit: AfterCommit,
    /// Jobs of one repository run one after another (striped by name): a client that misses a
    /// tag also misses each of its manifests by digest, and those jobs then find them present.
    repo_locks: Vec<tokio::sync::Mutex<()>>,
    /// `[[immutable]]`: a tag refresh never moves one (the publisher refuses, the job fails).
    immutable: Immutable,
}

/// Stripes of [`Inner::repo_locks`].
const REPO_LOCKS: usize = 64;

impl Populator {
    /// Starts the copier's runtime (its own threads, so a copy never slows a request).
    pub fn start(
        c: &MirrorConfig,
        store: Arc<dyn Store>,
        after_commit: AfterCommit,
        immutable: Immutable,
    ) -> anyhow::Result<Self> {
        let concurrency = c.concurrency.unwrap_or(mirror::DEFAULT_CONCURRENCY).max(1);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("mirror-copier".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(concurrency.min(4))
                    .thread_name("mirror-copy")
                    .enable_all()
                    .build();
                match rt {
                    Ok(rt) => {
                        let _ = tx.send(Ok(rt.handle().clone()));
                        rt.block_on(std::future::pending::<()>());
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            })?;
        let runtime = rx.recv()??;
        let holder = format!(
            "{}/{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "serve".into()),
            std::process::id()
        );
        let inner = Arc::new(Inner {
            immutable,
            store,
            runtime,
            queue: c.queue.unwrap_or(mirror::DEFAULT_QUEUE),
            pending: AtomicUsize::new(0),
            slots: Arc::new(Semaphore::new(concurrency)),
            active: Mutex::new(HashSet::new()),
            failed: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(
                    c.retry_after
                        .map_or(mirror::DEFAULT_RETRY_AFTER, Duration::from_secs),
                )
                .build(),
            lease_ttl: c
                .lease_ttl
                .map_or(mirror::DEFAULT_LEASE_TTL, Duration::from_secs),
            holder,
            after_commit,
            repo_locks: (0..REPO_LOCKS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        });
        Ok(Populator { inner })
    }
}

impl Inner {
    fn enqueue(self: &Arc<Self>, m: &Mapped, reference: ManifestRef, cause: Cause) {
        let host = m.upstream.host.clone();
        let count = |result: &'static str| count_job(&host, result);
        if !m.upstream.allows(&m.remote) {
            count("not_allowed");
            tracing::debug!(upstream = %host, repository = %m.remote, "not in the upstream's allow-list: not populated");
            return;
        }
        let key = layout::mirror_lease(&m.store, &reference.to_string());
        if self.failed.contains_key(&key) {
            return;
        }
        if !self.active.lock().expect("active set").insert(key.clone()) {
            return;
        }
        if self.pending.fetch_add(1, Ordering::SeqCst) >= self.queue {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            self.active.lock().expect("active set").remove(&key);
            count("dropped");
            tracing::warn!(upstream = %host, repository = %m.store, %reference, "mirror copy queue full ({}): miss not populated", self.queue);
            return;
        }
        metrics::gauge!("static_registry_mirror_queue_length")
            .set(self.pending.load(Ordering::SeqCst) as f64);
        let job = Job {
            mapped: m.clone(),
            reference,
            key,
            cause,
        };
        let me = self.clone();
        self.runtime.spawn(async move {
            let stripe = {
                use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
                BuildHasherDefault::<DefaultHasher>::default().hash_one(&job.mapped.store) as usize
                    % REPO_LOCKS
            };
            let _repo = me.repo_locks[stripe].lock().await;
            let permit = me.slots.clone().acquire_owned().await;
            me.pending.fetch_sub(1, Ordering::SeqCst);
            metrics::gauge!("static_registry_mirror_queue_length")
                .set(me.pending.load(Ordering::SeqCst) as f64);
            if permit.is_ok() {
                me.run(&job).await;
            }
            me.active.lock().expect("active set").remove(&job.key);
        });
    }

    async fn run(&self, job: &Job) {
        let m = &job.mapped;
        let host = m.upstream.host.clone();
        let count = |result: &'static str| count_job(&host, result);
        let now = jiff::Timestamp::now().as_second();
        match lease::claim(
            self.store.as_ref(),
            &job.key,
            &self.holder,
            self.lease_ttl,
            now,
        )
        .await
        {
            Ok(Claim::Won) => {}
            Ok(Claim::Held { holder }) => {
                count("leased");
                tracing::info!(upstream = %host, repository = %m.store, reference = %job.reference, %holder, "another replica is copying this image");
                return;
            }
            Err(e) => {
                count("failed");
                tracing::warn!(upstream = %host, repository = %m.store, reference = %job.reference, "cannot take the mirror lease: {e:#}");
                self.failed.insert(job.key.clone(), ());
                return;
            }
        }
        // Checked under the lease: whoever held it before may have copied this very image.
        if self.present(job, now).await {
            count("present");
            lease::release(self.store.as_ref(), &job.key).await;
            return;
        }
        count("started");
        let started = std::time::Instant::now();
        let result = match options(job) {
            Ok(mut opts) => {
                opts.immutable = self.immutable.clone();
                tokio::time::timeout(self.lease_ttl, publish::publish(self.store.clone(), &opts))
                    .await
                    .unwrap_or_else(|_| {
                        Err(anyhow::anyhow!(
                            "gave up after {:?} (the lease's lifetime)",
                            self.lease_ttl
                        ))
                    })
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(summary) => {
                count("succeeded");
                let bytes = summary.bytes_written;
                metrics::counter!("static_registry_mirror_copied_bytes_total", "upstream" => host.clone())
                    .increment(bytes);
                tracing::info!(
                    upstream = %host,
                    repository = %m.store,
                    reference = %job.reference,
                    cause = ?job.cause,
                    blobs_copied = summary.blobs_written,
                    bytes_copied = bytes,
                    blobs_present = summary.blobs_skipped,
                    seconds = started.elapsed().as_secs_f64(),
                    "populated {}:{} from {}",
                    m.store,
                    job.reference,
                    m.upstream.url
                );
                (self.after_commit)(m.store.clone()).await;
            }
            Err(e) => {
                count("failed");
                self.failed.insert(job.key.clone(), ());
                tracing::warn!(upstream = %host, repository = %m.store, reference = %job.reference, cause = ?job.cause, "mirror copy failed: {e:#}");
            }
        }
        lease::release(self.store.as_ref(), &job.key).await;
    }
}

impl Inner {
    /// Whether the store already answers `job` (read from the store, not the cache): a digest it
    /// references, a tag it has (for a miss), or a tag resolved within its `tag_ttl` (for a
    /// refresh).
    async fn present(&self, job: &Job, now: i64) -> bool {
        let m = &job.mapped;
        let Ok(Some(obj)) = self.store.get(&layout::repo_index(&m.store)).await else {
            return false;
        };
        let Ok(idx) = crate::index::RepoIndex::from_slice(&obj.bytes) else {
            return false;
        };
        match (&job.reference, job.cause) {
            (ManifestRef::Digest(d), _) => idx.manifests.contains_key(d),
            (ManifestRef::Tag(t), Cause::Miss) => idx.tags.contains_key(t),
            (ManifestRef::Tag(t), Cause::Refresh) => idx.mirrored.get(t).is_some_and(|mt| {
                now.saturating_sub(mt.resolved)
                    <= i64::try_from(m.upstream.tag_ttl.as_secs()).unwrap_or(i64::MAX)
            }),
        }
    }
}

impl Fill for Populator {
    fn missed(&self, m: &Mapped, reference: &ManifestRef) {
        self.inner.enqueue(m, reference.clone(), Cause::Miss);
    }

    fn stale(&self, m: &Mapped, tag: &Tag) {
        self.inner
            .enqueue(m, ManifestRef::Tag(tag.clone()), Cause::Refresh);
    }
}

/// Counts a copy job's outcome (`static_registry_mirror_populates_total`).
fn count_job(upstream: &str, result: &'static str) {
    metrics::counter!("static_registry_mirror_populates_total", "upstream" => upstream.to_owned(), "result" => result)
        .increment(1);
}

/// One image to copy.
struct Job {
    mapped: Mapped,
    reference: ManifestRef,
    /// Its lease key, also its identity in this replica.
    key: String,
    cause: Cause,
}

/// The registry as the `docker://` source names it: the upstream's own name when its URL is the
/// default one (so Docker's config.json entries for it apply), else the URL's authority.
fn source_registry(u: &Upstream) -> String {
    let authority = match (u.url.host_str(), u.url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        (None, _) => u.host.clone(),
    };
    let default_url = if u.host == mirror::DOCKER_HUB {
        mirror::DOCKER_HUB_API
            .trim_start_matches("https://")
            .to_owned()
    } else {
        u.host.clone()
    };
    if u.url.scheme() == "https" && authority == default_url {
        u.host.clone()
    } else {
        authority
    }
}

/// The publish that copies `job`.
fn options(job: &Job) -> anyhow::Result<PublishOptions> {
    let m = &job.mapped;
    let u = &m.upstream;
    let (source, tags) = match &job.reference {
        ManifestRef::Tag(t) => (
            format!("docker://{}/{}:{t}", source_registry(u), m.remote),
            vec![TaggedName {
                name: m.store.clone(),
                tag: t.clone(),
            }],
        ),
        ManifestRef::Digest(d) => (
            format!("docker://{}/{}@{d}", source_registry(u), m.remote),
            vec![],
        ),
    };
    let creds = match (&u.username_env, &u.password_env) {
        (Some(user), Some(pass)) => {
            let read = |name: &str| {
                std::env::var(name)
                    .ok()
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "upstream {}: environment variable {name} is not set",
                            u.host
                        )
                    })
            };
            Some(CredsArg {
                username: read(user)?,
                password: Some(Secret::new(read(pass)?)),
            })
        }
        _ => None,
    };
    Ok(PublishOptions {
        mirror: MirrorOptions {
            creds,
            authfile: u.authfile.clone(),
            platforms: u.platforms.clone(),
            with_referrers: false,
            src_tls_verify: u.tls_verify,
            max_image_bytes: Some(crate::byte_size::ByteSize(u.max_image_bytes)),
            isolated_credentials: true,
        },
        fill: Some(publish::Fill {
            repo: m.store.clone(),
            upstream: u.host.clone(),
        }),
        ..PublishOptions::new(source, tags)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::federation::mirror::Mirror;

    fn upstream(text: &str) -> Arc<Upstream> {
        let c: MirrorConfig = toml::from_str(text).unwrap();
        Mirror::from_config(&c).unwrap().unwrap().upstreams()[0].clone()
    }

    #[test]
    fn sources_name_the_registry_as_docker_config_does() {
        assert_eq!(
            source_registry(&upstream("[[upstreams]]\nhost = \"docker.io\"")),
            "docker.io"
        );
        assert_eq!(
            source_registry(&upstream("[[upstreams]]\nhost = \"ghcr.io\"")),
            "ghcr.io"
        );
        assert_eq!(
            source_registry(&upstream(
                "[[upstreams]]\nhost = \"registry.example:5000\"\nurl = \"http://127.0.0.1:5001\"\nprefix = \"r\""
            )),
            "127.0.0.1:5001"
        );
        assert_eq!(
            source_registry(&upstream(
                "[[upstreams]]\nhost = \"docker.io\"\nurl = \"https://hub-cache.internal\""
            )),
            "hub-cache.internal"
        );
    }

    #[test]
    fn a_copy_by_digest_sets_no_tag_and_stamps_its_upstream() {
        let u = upstream("[[upstreams]]\nhost = \"docker.io\"\nusername_env = \"SR_TEST_NOPE_U\"\npassword_env = \"SR_TEST_NOPE_P\"");
        let d = crate::reference::Digest::sha256_of(b"x");
        let job = |reference| Job {
            mapped: Mapped {
                upstream: u.clone(),
                remote: RepoName::parse("library/alpine").unwrap(),
                store: RepoName::parse("docker.io/library/alpine").unwrap(),
            },
            reference,
            key: String::new(),
            cause: Cause::Miss,
        };
        // Credentials named by the config but missing from the environment: a clear error that
        // names the variable, never a silent anonymous copy.
        let e = options(&job(ManifestRef::Digest(d.clone())))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("SR_TEST_NOPE_U"), "{e}");
        let u2 = upstream("[[upstreams]]\nhost = \"docker.io\"");
        let mut j = job(ManifestRef::Digest(d.clone()));
        j.mapped.upstream = u2;
        let o = options(&j).unwrap();
        assert_eq!(o.source, format!("docker://docker.io/library/alpine@{d}"));
        assert!(o.tags.is_empty());
        assert_eq!(
            o.fill.as_ref().unwrap().repo.as_str(),
            "docker.io/library/alpine"
        );
        assert!(o.mirror.isolated_credentials);
        j.reference = ManifestRef::Tag(Tag::parse("3.20").unwrap());
        let o = options(&j).unwrap();
        assert_eq!(o.source, "docker://docker.io/library/alpine:3.20");
        assert_eq!(o.tags[0].to_string(), "docker.io/library/alpine:3.20");
    }
}
