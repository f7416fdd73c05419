//! S3 and S3-compatible object stores (AWS, Cloudflare R2, MinIO, Ceph RGW, GCS's XML interop
//! API), through `object_store`'s S3 client.
//!
//! The location is `s3://BUCKET[/PREFIX]`; everything else is [`S3Settings`] (the `[s3]` section
//! of the configuration file). Keys are always relative to the prefix, so one bucket can hold
//! several layouts.
//!
//! # Conditional writes
//!
//! The publisher commits repository indexes with compare-and-swap, so two publishers racing on
//! one repository cannot lose each other's tags:
//! - [`PutMode::Create`] sends `If-None-Match: *`;
//! - [`PutMode::Update`] sends `If-Match: <etag>` with the ETag [`Store::get`] returned;
//! - a `412 Precondition Failed` (or `409 Conflict` left after retries, or the `304` some stores
//!   answer) becomes [`StoreError::Conflict`], and the caller re-reads and retries.
//!
//! AWS S3 (since 2024-08 for `If-None-Match`, 2024-11 for `If-Match`), R2, MinIO and s3s-fs honour
//! both headers (s3s-fs is checked by the test below). A backend that rejects them fails the
//! commit with an error naming `s3.conditional_writes`; a backend that silently *ignores* them
//! cannot be detected from the client, so check a new backend with two `Create`s on one key.
//! For such backends set `conditional_writes = "emulated"`: a read-compare-write that is only
//! safe while a single publisher runs at a time. GCS's XML API and older Ceph or MinIO releases
//! have not been checked here.
//!
//! `put_file` (blobs, content-addressed, always [`PutMode::Overwrite`] in the publisher) honours
//! the mode exactly for single-PUT uploads. A multipart upload cannot be conditional through
//! `object_store`, so above the threshold `Create` is a best-effort existence check and `Update`
//! is refused.
//!
//! # Memory
//!
//! `put_file` never reads a whole large file: below `multipart_threshold` it is one PUT of the
//! file's bytes; above, parts of `part_size` are read with `pread` and uploaded at most
//! `concurrency` at a time. A store-wide byte budget of
//! `max(part_size × concurrency, multipart_threshold)` bounds the buffers of *all* concurrent
//! `put_file` calls together, so the publisher's `--jobs` does not multiply it.
//!
//! # Credentials
//!
//! The standard AWS chain, first match wins: explicit `profile` setting; environment
//! (`AWS_ACCESS_KEY_ID`, ...); shared profile files (static keys only); web identity
//! (`AWS_WEB_IDENTITY_TOKEN_FILE` with `AWS_ROLE_ARN`); container credentials (ECS
//! `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`, EKS Pod Identity `AWS_CONTAINER_CREDENTIALS_FULL_URI`
//! with `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`); EC2 IMDSv2. The last three rotate and are
//! fetched by `object_store`; [`S3Store::credential_source`] exposes the same identity to the
//! SigV4 signer, so presigned URLs and writes never disagree. Secrets never reach `Debug`, logs
//! or errors.

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context};
use async_trait::async_trait;
use bytes::Bytes;
use object_store::aws::{
    AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, AwsCredential, AwsCredentialProvider,
    S3ConditionalPut,
};
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::path::Path as ObjPath;
use object_store::{
    Attribute, Attributes, Certificate, ClientOptions, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutPayload, StaticCredentialProvider, UpdateVersion,
};
use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{
    ByteStream, Object, ObjectMeta, PutMode, PutOptions, Store, StoreError, StoreResult, Version,
};
use crate::aws::{
    self, CredentialSource, Credentials, Env, FoundCredentials, ProfileFiles, StaticCredentials,
};

const MIB: u64 = 1024 * 1024;
/// S3's limits: parts other than the last are at least 5 MiB, at most 5 GiB, at most 10 000 of
/// them; a single PUT is at most 5 GiB.
const MIN_PART: u64 = 5 * MIB;
const MAX_PART: u64 = 5 * 1024 * MIB;
const MAX_PARTS: u64 = 10_000;
/// Appended to failed conditional PUTs: the likeliest cause on a compatible is missing support.
const NO_CONDITIONAL_HINT: &str = "if this backend does not support conditional writes, set \
     s3.conditional_writes = \"emulated\" (safe with a single publisher only)";
/// A whole request may legitimately take minutes (a 64 MiB PUT at 1 MB/s); object_store's
/// 30 s default would fail slow uplinks on every retry of the same body.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);

/// How conditional writes are done. A setting because a few S3 "compatibles" lack them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConditionalWrites {
    /// `If-None-Match: *` / `If-Match: <etag>` on PUT: atomic. AWS, R2, MinIO, s3s-fs.
    #[default]
    Etag,
    /// Read the current ETag, compare, then write unconditionally. Not atomic: only safe when a
    /// single publisher writes to the store at a time. For backends without conditional PUT.
    Emulated,
}

/// The `[s3]` configuration section: everything about an S3 store except its location.
///
/// Every field has a default, so an empty section (or none) works against AWS with the standard
/// credential chain.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Settings {
    /// The bucket's region, used for SigV4. Default: `AWS_REGION`, then `AWS_DEFAULT_REGION`,
    /// then the selected profile's `region`, then `us-east-1`. Compatibles usually accept any
    /// value (R2 wants `auto`).
    pub region: Option<String>,
    /// Base URL of an S3-compatible service, e.g. `https://<account>.r2.cloudflarestorage.com`,
    /// `https://storage.googleapis.com` or `http://127.0.0.1:9000`. Default: AWS
    /// (`https://s3.<region>.amazonaws.com`). Plain `http` is accepted for loopback hosts only,
    /// unless `allow_http` is set.
    pub endpoint: Option<String>,
    /// Address the bucket in the path (`https://host/bucket/key`) instead of the host name
    /// (`https://bucket.host/key`). Default `false`, which AWS requires for new buckets; MinIO,
    /// Ceph and s3s-fs usually need `true`.
    pub path_style: bool,
    /// Allow plain `http` to a non-loopback `endpoint` (a private network). Default `false`:
    /// request signatures protect integrity, not confidentiality.
    pub allow_http: bool,
    /// Files at least this large are uploaded in parts. Default 64 MiB; at most 5 GiB (the
    /// single-PUT limit). A single PUT holds the whole file in memory, so this is also a memory
    /// bound.
    pub multipart_threshold: u64,
    /// Size of each part. Default 16 MiB; 5 MiB to 5 GiB. Raised automatically when a file would
    /// need more than 10 000 parts.
    pub part_size: u64,
    /// Parts uploaded at once. Default 4. Memory for uploads is about `part_size × concurrency`.
    pub concurrency: usize,
    /// The shared-credentials profile to use, ahead of environment keys (like `aws --profile`).
    /// Default: `AWS_PROFILE`, else `default`, consulted after the environment.
    pub profile: Option<String>,
    /// See [`ConditionalWrites`]. Default `etag`.
    pub conditional_writes: ConditionalWrites,
}

impl Default for S3Settings {
    fn default() -> Self {
        S3Settings {
            region: None,
            endpoint: None,
            path_style: false,
            allow_http: false,
            multipart_threshold: 64 * MIB,
            part_size: 16 * MIB,
            concurrency: 4,
            profile: None,
            conditional_writes: ConditionalWrites::Etag,
        }
    }
}

impl S3Settings {
    fn validate(&self) -> anyhow::Result<()> {
        if !(MIN_PART..=MAX_PART).contains(&self.part_size) {
            bail!("s3.part_size must be between 5 MiB and 5 GiB (S3's part limits)");
        }
        if self.multipart_threshold == 0 || self.multipart_threshold > MAX_PART {
            bail!("s3.multipart_threshold must be between 1 byte and 5 GiB (S3's PUT limit)");
        }
        if self.concurrency == 0 {
            bail!("s3.concurrency must be at least 1");
        }
        Ok(())
    }
}

/// `s3://BUCKET[/PREFIX]`, parsed and checked, so a typo fails at startup rather than as an odd
/// key on the first write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    /// No leading or trailing `/`; empty for the bucket root.
    pub prefix: String,
}

impl S3Location {
    pub fn parse(location: &str) -> anyhow::Result<S3Location> {
        let rest = location
            .strip_prefix("s3://")
            .ok_or_else(|| anyhow!("an S3 store location starts with s3://"))?;
        if rest.contains(['?', '#']) {
            bail!("invalid S3 location {location:?}: no query or fragment allowed");
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        // 3 to 63 characters is the S3 rule (and s3s-fs enforces it); the character set is kept
        // loose because GCS and old us-east-1 buckets allow more than today's AWS rules.
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
        if !valid_bucket {
            bail!("invalid S3 bucket name {bucket:?} in {location:?}");
        }
        let prefix = prefix.trim_matches('/');
        if !prefix.is_empty()
            && prefix
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            bail!("invalid S3 prefix {prefix:?} in {location:?}");
        }
        Ok(S3Location {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
    }
}

/// An S3 bucket (under an optional prefix) as a [`Store`].
///
/// Cheap to share (`Arc` inside `object_store`); build one per process and hand the
/// [`credential_source`](S3Store::credential_source) to the SigV4 signer.
pub struct S3Store {
    inner: AmazonS3,
    location: S3Location,
    region: String,
    /// Base URL of the bucket as requests address it (`https://bucket.host` or
    /// `https://host/bucket`), without credentials.
    bucket_url: String,
    /// Human form of the service for `describe()`.
    endpoint_display: String,
    settings: S3Settings,
    credentials: Arc<dyn CredentialSource>,
    credentials_origin: String,
    /// Bytes that `put_file` may hold in memory across all concurrent calls, in KiB permits.
    budget: Arc<Semaphore>,
    budget_kib: u32,
    /// Part buffers shared by every multipart upload of this store (see [`BufferPool`]).
    parts: BufferPool,
}

// Hand-written: `AmazonS3`'s derived Debug reaches into its credential provider.
impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.location.bucket)
            .field("prefix", &self.location.prefix)
            .field("endpoint", &self.endpoint_display)
            .field("region", &self.region)
            .field("credentials", &self.credentials_origin)
            .finish()
    }
}

impl S3Store {
    /// Opens `s3://BUCKET[/PREFIX]` with credentials from the standard AWS chain.
    pub fn open(location: &str, settings: &S3Settings) -> anyhow::Result<S3Store> {
        Self::build(location, settings, None, &aws::process_env)
    }

    /// Opens `s3://BUCKET[/PREFIX]` with the given keys, skipping the chain (tests, and callers
    /// that obtained credentials some other way).
    pub fn with_credentials(
        location: &str,
        settings: &S3Settings,
        credentials: Credentials,
    ) -> anyhow::Result<S3Store> {
        let found = FoundCredentials {
            credentials,
            origin: "explicit".into(),
        };
        Self::build(location, settings, Some(found), &aws::process_env)
    }

    fn build(
        location: &str,
        settings: &S3Settings,
        explicit: Option<FoundCredentials>,
        env: Env<'_>,
    ) -> anyhow::Result<S3Store> {
        settings.validate()?;
        let loc = S3Location::parse(location)?;
        let files = ProfileFiles::load(env)?;
        let region = aws::resolve_region(
            settings.region.as_deref(),
            settings.profile.as_deref(),
            env,
            &files,
        );
        let found = match explicit {
            Some(f) => Some(f),
            None => aws::static_chain(settings.profile.as_deref(), env, &files)?,
        };
        let endpoint = Endpoint::resolve(settings, &loc.bucket, &region)?;

        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&loc.bucket)
            .with_region(&region)
            .with_client_options(client_options(endpoint.allow_http, env))
            .with_virtual_hosted_style_request(endpoint.virtual_hosted)
            .with_conditional_put(match settings.conditional_writes {
                ConditionalWrites::Etag => S3ConditionalPut::ETagMatch,
                ConditionalWrites::Emulated => S3ConditionalPut::Disabled,
            })
            // Single-object DELETE is core S3; the bulk `POST ?delete` is missing on GCS interop.
            .with_disable_bulk_delete(true);
        if let Some(url) = &endpoint.builder_url {
            builder = builder.with_endpoint(url);
        }

        let (static_source, origin) = match found {
            Some(FoundCredentials {
                credentials,
                origin,
            }) => {
                builder = builder.with_credentials(Arc::new(StaticCredentialProvider::new(
                    AwsCredential {
                        key_id: credentials.access_key_id.clone(),
                        secret_key: credentials.secret_access_key.clone(),
                        token: credentials.session_token.clone(),
                    },
                )));
                let source: Arc<dyn CredentialSource> =
                    Arc::new(StaticCredentials(Arc::new(credentials)));
                (Some(source), origin)
            }
            None => {
                let (b, origin) = ambient_credentials(builder, env)?;
                builder = b;
                (None, origin.to_owned())
            }
        };
        let inner = builder.build().context("cannot configure the S3 client")?;
        // Rotating credentials: share the client's own provider (and its cache) with the signer.
        let credentials = static_source.unwrap_or_else(|| {
            Arc::new(ProviderSource::new(inner.credentials().clone())) as Arc<dyn CredentialSource>
        });
        tracing::debug!(
            "S3 store s3://{}/{} via {} ({}), credentials from {origin}",
            loc.bucket,
            loc.prefix,
            endpoint.display,
            region
        );

        let budget_bytes =
            (settings.part_size * settings.concurrency as u64).max(settings.multipart_threshold);
        let budget_kib = u32::try_from(budget_bytes.div_ceil(1024)).unwrap_or(u32::MAX);
        Ok(S3Store {
            inner,
            region,
            bucket_url: endpoint.bucket_url,
            endpoint_display: endpoint.display,
            settings: settings.clone(),
            credentials,
            credentials_origin: origin,
            budget: Arc::new(Semaphore::new(budget_kib as usize)),
            budget_kib,
            parts: BufferPool::default(),
            location: loc,
        })
    }

    /// The identity this store writes with, for the SigV4 signer: static keys as they are, rotating
    /// ones through `object_store`'s cached provider.
    pub fn credential_source(&self) -> Arc<dyn CredentialSource> {
        self.credentials.clone()
    }

    /// Where the credentials came from (`environment`, `profile ci`, `container`, ...), for logs.
    pub fn credentials_origin(&self) -> &str {
        &self.credentials_origin
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    pub fn location(&self) -> &S3Location {
        &self.location
    }

    /// The bucket's base URL as this store addresses it (`https://bucket.host` or
    /// `https://host/bucket`), for the signer to build object URLs on.
    pub fn bucket_url(&self) -> &str {
        &self.bucket_url
    }

    /// The full object key in the bucket for a layout key (prefix included).
    pub fn object_key(&self, key: &str) -> StoreResult<String> {
        validate_key(key)?;
        Ok(if self.location.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.location.prefix)
        })
    }

    fn path(&self, key: &str) -> StoreResult<ObjPath> {
        let full = self.object_key(key)?;
        ObjPath::parse(&full)
            .map_err(|e| StoreError::Other(anyhow!("invalid object key {key:?}: {e}")))
    }

    fn fail(&self, what: &str, key: &str, e: object_store::Error) -> StoreError {
        StoreError::Other(
            anyhow::Error::new(e).context(format!("S3 {what} {key} failed ({})", self.describe())),
        )
    }

    /// Waits until `bytes` more may be buffered. The permit is clamped to the whole budget so one
    /// oversized buffer (a part raised past the budget for a huge file) waits for everything else
    /// instead of deadlocking.
    async fn reserve(&self, bytes: u64) -> tokio::sync::OwnedSemaphorePermit {
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.budget_kib);
        self.budget
            .clone()
            .acquire_many_owned(kib)
            .await
            .expect("the budget semaphore is never closed")
    }

    /// One PUT with the requested mode; the single place conditional semantics live.
    async fn put_payload(
        &self,
        key: &str,
        path: &ObjPath,
        payload: PutPayload,
        opts: &PutOptions,
    ) -> StoreResult<()> {
        let attributes = attributes(opts);
        let mode = match (&opts.mode, self.settings.conditional_writes) {
            (PutMode::Overwrite, _) => object_store::PutMode::Overwrite,
            (PutMode::Create, ConditionalWrites::Etag) => object_store::PutMode::Create,
            (PutMode::Update(v), ConditionalWrites::Etag) => {
                object_store::PutMode::Update(UpdateVersion {
                    e_tag: Some(etag_of(key, v)?),
                    version: None,
                })
            }
            (mode, ConditionalWrites::Emulated) => {
                self.emulated_check(key, path, mode).await?;
                object_store::PutMode::Overwrite
            }
        };
        let conditional = !matches!(mode, object_store::PutMode::Overwrite);
        let put = object_store::PutOptions {
            mode,
            attributes,
            ..Default::default()
        };
        match self.inner.put_opts(path, payload, put).await {
            Ok(_) => Ok(()),
            Err(
                object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. },
            ) if conditional => Err(StoreError::Conflict),
            Err(e) if conditional => {
                Err(StoreError::Other(anyhow::Error::new(e).context(format!(
                    "conditional S3 PUT (If-None-Match/If-Match) of {key} failed ({}); {}",
                    self.describe(),
                    NO_CONDITIONAL_HINT
                ))))
            }
            Err(e) => Err(self.fail("PUT", key, e)),
        }
    }

    /// The read-compare half of [`ConditionalWrites::Emulated`].
    async fn emulated_check(&self, key: &str, path: &ObjPath, mode: &PutMode) -> StoreResult<()> {
        let current = match self.inner.head(path).await {
            Ok(m) => Some(m.e_tag.unwrap_or_default()),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => return Err(self.fail("HEAD", key, e)),
        };
        let ok = match (mode, &current) {
            (PutMode::Overwrite, _) => true,
            (PutMode::Create, None) => true,
            (PutMode::Update(want), Some(have)) => want.0 == *have,
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(StoreError::Conflict)
        }
    }

    /// Multipart upload of a large file with bounded memory; see the module docs.
    async fn put_multipart(
        &self,
        key: &str,
        path: &ObjPath,
        file: std::fs::File,
        size: u64,
        opts: &PutOptions,
    ) -> StoreResult<()> {
        match &opts.mode {
            PutMode::Overwrite => {}
            // Best effort only (see the module docs); the publisher never asks for it.
            PutMode::Create => {
                if self.head(key).await?.is_some() {
                    return Err(StoreError::Conflict);
                }
            }
            PutMode::Update(_) => {
                return Err(StoreError::Other(anyhow!(
                    "cannot upload {key} conditionally: files above s3.multipart_threshold are \
                     uploaded in parts, which S3 cannot compare-and-swap"
                )))
            }
        }
        let part_size = self
            .settings
            .part_size
            .max(size.div_ceil(MAX_PARTS).next_multiple_of(MIB));
        let mut upload = self
            .inner
            .put_multipart_opts(
                path,
                PutMultipartOptions {
                    attributes: attributes(opts),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| self.fail("multipart upload start of", key, e))?;
        let file = Arc::new(file);
        let pool = self.parts.clone();
        let _active = self.parts.active();
        // Parts run as tasks so they progress while this loop waits for budget; a part holds its
        // share of the budget until its request finishes.
        let mut parts: JoinSet<object_store::Result<()>> = JoinSet::new();
        let result: anyhow::Result<()> = async {
            let mut offset = 0;
            while offset < size {
                while parts.len() >= self.settings.concurrency {
                    joined(parts.join_next().await)?;
                }
                while let Some(done) = parts.try_join_next() {
                    joined(Some(done))?;
                }
                let len = part_size.min(size - offset);
                let permit = self.reserve(len).await;
                let buf = pool.take(part_size);
                let bytes = read_part(file.clone(), buf, offset, len, pool.clone())
                    .await
                    .with_context(|| format!("reading part at offset {offset}"))?;
                let part = upload.put_part(PutPayload::from(bytes));
                parts.spawn(async move {
                    let r = part.await;
                    drop(permit);
                    r
                });
                offset += len;
            }
            while let Some(done) = parts.join_next().await {
                joined(Some(done))?;
            }
            upload.complete().await?;
            Ok(())
        }
        .await;
        if let Err(e) = result {
            parts.abort_all();
            // Best effort: an abandoned upload costs storage until a lifecycle rule removes it.
            if let Err(abort) = upload.abort().await {
                tracing::warn!("cannot abort the multipart upload of {key}: {abort}");
            }
            return Err(StoreError::Other(e.context(format!(
                "S3 multipart upload of {key} failed ({})",
                self.describe()
            ))));
        }
        Ok(())
    }
}

fn joined(
    r: Option<Result<object_store::Result<()>, tokio::task::JoinError>>,
) -> anyhow::Result<()> {
    match r {
        None => Ok(()),
        Some(Ok(r)) => Ok(r?),
        Some(Err(e)) => Err(e.into()),
    }
}

/// Part buffers, reused across parts and across concurrent multipart uploads of one store.
///
/// Why not a fresh `Vec` per part: glibc raises its mmap threshold after the first 16 MiB buffer
/// is freed, later buffers then come from fragmented arena heaps, and a 1 GiB upload peaked at
/// +81 MiB for a 64 MiB budget. Reused buffers keep the peak at the budget (+65 MiB measured).
/// A new buffer is only made while holding budget and finding the pool empty, so the pool never
/// grows past what the budget lets run at once. A buffer comes back only when every `Bytes`
/// view of it is gone, so a part still held for a retry is never overwritten. The pool is
/// emptied when the last active upload ends, so an idle publisher holds no part memory.
#[derive(Clone, Default)]
struct BufferPool {
    free: Arc<Mutex<Vec<Vec<u8>>>>,
    active: Arc<AtomicUsize>,
}

impl BufferPool {
    fn take(&self, capacity: u64) -> Vec<u8> {
        self.free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_else(|| vec![0; capacity as usize])
    }

    fn give_back(&self, buf: Vec<u8>) {
        if self.active.load(Ordering::Acquire) > 0 {
            self.free
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(buf);
        }
    }

    /// Marks an upload as active until the guard drops (also on error or cancellation).
    fn active(&self) -> ActiveUpload {
        self.active.fetch_add(1, Ordering::AcqRel);
        ActiveUpload(self.clone())
    }
}

struct ActiveUpload(BufferPool);

impl Drop for ActiveUpload {
    fn drop(&mut self) {
        let pool = &self.0;
        if pool.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            pool.free.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }
}

/// A filled pool buffer as the owner behind a `Bytes`; gives the buffer back when dropped.
struct PooledPart {
    buf: Vec<u8>,
    len: usize,
    pool: BufferPool,
}

impl AsRef<[u8]> for PooledPart {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for PooledPart {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

/// Reads part `offset..offset + len` into a pool buffer on the blocking pool (`pread`: no shared
/// cursor between concurrent reads).
async fn read_part(
    file: Arc<std::fs::File>,
    mut buf: Vec<u8>,
    offset: u64,
    len: u64,
    pool: BufferPool,
) -> std::io::Result<Bytes> {
    tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::FileExt as _;
        let len = len as usize;
        if buf.len() < len {
            buf.resize(len, 0);
        }
        file.read_exact_at(&mut buf[..len], offset)?;
        Ok(Bytes::from_owner(PooledPart { buf, len, pool }))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Reads exactly `len` bytes at `offset` on the blocking pool, in one allocation.
async fn read_at(file: Arc<std::fs::File>, offset: u64, len: u64) -> std::io::Result<Bytes> {
    tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::FileExt as _;
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, offset)?;
        Ok(Bytes::from(buf))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Content-Type and Cache-Control as object metadata, which S3 and CDNs then serve as headers.
/// Content-Encoding is deliberately never set: containerd would decode a blob and its digest
/// check would fail.
fn attributes(opts: &PutOptions) -> Attributes {
    let mut a = Attributes::new();
    a.insert(Attribute::ContentType, opts.content_type.clone().into());
    a.insert(Attribute::CacheControl, opts.cache_control.into());
    a
}

fn etag_of(key: &str, v: &Version) -> StoreResult<String> {
    if v.0.is_empty() {
        return Err(StoreError::Other(anyhow!(
            "cannot update {key} conditionally: the backend returned no ETag for it"
        )));
    }
    Ok(v.0.clone())
}

/// Same rules as the local store: keys come from `layout`, and anything that could mean another
/// place (empty, `.`/`..` segments, a leading `/`) is refused before it reaches a request.
fn validate_key(key: &str) -> StoreResult<()> {
    if key.is_empty()
        || key.starts_with('/')
        || key
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(StoreError::Other(anyhow!("invalid object key {key:?}")));
    }
    Ok(())
}

fn meta_of(prefix: &str, m: object_store::ObjectMeta) -> Option<ObjectMeta> {
    let full = m.location.as_ref();
    let key = if prefix.is_empty() {
        full
    } else {
        full.strip_prefix(prefix)?.strip_prefix('/')?
    };
    Some(ObjectMeta {
        key: key.to_owned(),
        size: m.size,
        last_modified: Some(SystemTime::from(m.last_modified)),
    })
}

/// Where requests go, derived once from the settings.
struct Endpoint {
    /// What to give `AmazonS3Builder::with_endpoint`; `None` lets it derive AWS's.
    builder_url: Option<String>,
    virtual_hosted: bool,
    allow_http: bool,
    bucket_url: String,
    display: String,
}

impl Endpoint {
    fn resolve(settings: &S3Settings, bucket: &str, region: &str) -> anyhow::Result<Endpoint> {
        let Some(raw) = settings.endpoint.as_deref() else {
            let display = format!("https://s3.{region}.amazonaws.com");
            let bucket_url = if settings.path_style {
                format!("{display}/{bucket}")
            } else {
                format!("https://{bucket}.s3.{region}.amazonaws.com")
            };
            return Ok(Endpoint {
                builder_url: None,
                virtual_hosted: !settings.path_style,
                allow_http: false,
                bucket_url,
                display,
            });
        };
        // Errors here never echo the URL: it could carry user info.
        let mut url = url::Url::parse(raw).context("s3.endpoint is not a valid URL")?;
        if !url.username().is_empty() || url.password().is_some() {
            bail!("s3.endpoint must not contain user info; credentials come from the AWS chain");
        }
        if url.query().is_some() || url.fragment().is_some() {
            bail!("s3.endpoint must not have a query or fragment");
        }
        if url.path() != "/" {
            bail!("s3.endpoint must be a bare scheme://host[:port] (no path)");
        }
        let loopback = match url.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => bail!("s3.endpoint has no host"),
        };
        let allow_http = match url.scheme() {
            "https" => false,
            "http" if loopback || settings.allow_http => true,
            "http" => bail!(
                "s3.endpoint uses plain http to a non-loopback host; use https, or set \
                 s3.allow_http = true for a trusted private network"
            ),
            other => bail!("s3.endpoint scheme must be http or https, not {other:?}"),
        };
        let base = url.as_str().trim_end_matches('/').to_owned();
        if settings.path_style {
            return Ok(Endpoint {
                bucket_url: format!("{base}/{bucket}"),
                builder_url: Some(base.clone()),
                virtual_hosted: false,
                allow_http,
                display: base,
            });
        }
        // Virtual-hosted with a custom endpoint: object_store expects the bucket already in the
        // host name.
        let host = url.host_str().expect("checked above").to_owned();
        url.set_host(Some(&format!("{bucket}.{host}")))
            .context("s3.endpoint: bucket name does not make a valid host name")?;
        let bucket_url = url.as_str().trim_end_matches('/').to_owned();
        Ok(Endpoint {
            builder_url: Some(bucket_url.clone()),
            virtual_hosted: true,
            allow_http,
            bucket_url,
            display: base,
        })
    }
}

fn client_options(allow_http: bool, env: Env<'_>) -> ClientOptions {
    let mut options = ClientOptions::new()
        .with_allow_http(allow_http)
        .with_timeout(REQUEST_TIMEOUT);
    // AWS_CA_BUNDLE is the AWS SDKs' way to trust an extra CA (a proxy, a private endpoint).
    // Honour it as roots *added* to the system's, and never fail on it: these machines set it to
    // the system bundle, and a broken bundle should not stop a client that may not need it.
    if let Some(path) = env("AWS_CA_BUNDLE") {
        let certs = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|pem| Certificate::from_pem_bundle(&pem).map_err(|e| e.to_string()));
        match certs {
            Ok(certs) => {
                for c in certs {
                    options = options.with_root_certificate(c);
                }
            }
            Err(e) => tracing::warn!("ignoring AWS_CA_BUNDLE={path}: {e}"),
        }
    }
    options
}

/// The rotating links of the chain, configured on the builder for `object_store` to run, in the
/// SDKs' order: web identity, container endpoint, then EC2 instance metadata.
fn ambient_credentials(
    builder: AmazonS3Builder,
    env: Env<'_>,
) -> anyhow::Result<(AmazonS3Builder, &'static str)> {
    let mut b = builder;
    let origin;
    if let (Some(token_file), Some(role)) =
        (env("AWS_WEB_IDENTITY_TOKEN_FILE"), env("AWS_ROLE_ARN"))
    {
        b = b
            .with_config(AmazonS3ConfigKey::WebIdentityTokenFile, token_file)
            .with_config(AmazonS3ConfigKey::RoleArn, role);
        if let Some(name) = env("AWS_ROLE_SESSION_NAME") {
            b = b.with_config(AmazonS3ConfigKey::RoleSessionName, name);
        }
        if let Some(sts) = env("AWS_ENDPOINT_URL_STS") {
            b = b.with_config(AmazonS3ConfigKey::StsEndpoint, sts);
        }
        origin = "web identity";
    } else if let Some(uri) = env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
        b = b.with_config(AmazonS3ConfigKey::ContainerCredentialsRelativeUri, uri);
        origin = "container credentials (ECS)";
    } else if let Some(uri) = env("AWS_CONTAINER_CREDENTIALS_FULL_URI") {
        let Some(token_file) = env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") else {
            bail!(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI is set without \
                 AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE, which is not supported"
            );
        };
        b = b
            .with_config(AmazonS3ConfigKey::ContainerCredentialsFullUri, uri)
            .with_config(
                AmazonS3ConfigKey::ContainerAuthorizationTokenFile,
                token_file,
            );
        origin = "container credentials (EKS Pod Identity)";
    } else {
        if env("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            bail!(
                "no AWS credentials found (environment, profile files) and \
                 AWS_EC2_METADATA_DISABLED=true"
            );
        }
        if let Some(endpoint) = env("AWS_EC2_METADATA_SERVICE_ENDPOINT") {
            b = b.with_config(AmazonS3ConfigKey::MetadataEndpoint, endpoint);
        }
        origin = "EC2 instance metadata (IMDSv2)";
    }
    Ok((b, origin))
}

/// `object_store`'s rotating provider as a [`CredentialSource`]: the signer presigns with exactly
/// the identity the store writes with, and the provider's cache decides when to refresh.
struct ProviderSource {
    provider: AwsCredentialProvider,
    /// The last credential seen and its conversion, so the signer's hot path does not allocate
    /// three strings per URL while the provider keeps returning the same `Arc`.
    last: Mutex<Option<(Arc<AwsCredential>, Arc<Credentials>)>>,
}

impl ProviderSource {
    fn new(provider: AwsCredentialProvider) -> Self {
        ProviderSource {
            provider,
            last: Mutex::new(None),
        }
    }
}

impl fmt::Debug for ProviderSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProviderSource(object_store AWS credential provider)")
    }
}

#[async_trait]
impl CredentialSource for ProviderSource {
    async fn credentials(&self) -> anyhow::Result<Arc<Credentials>> {
        let current = self
            .provider
            .get_credential()
            .await
            .context("cannot obtain AWS credentials")?;
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((seen, converted)) = last.as_ref() {
            if Arc::ptr_eq(seen, &current) {
                return Ok(converted.clone());
            }
        }
        let converted = Arc::new(Credentials {
            access_key_id: current.key_id.clone(),
            secret_access_key: current.secret_key.clone(),
            session_token: current.token.clone(),
        });
        *last = Some((current, converted.clone()));
        Ok(converted)
    }
}

#[async_trait]
impl Store for S3Store {
    fn describe(&self) -> String {
        let mut s = format!("s3://{}", self.location.bucket);
        if !self.location.prefix.is_empty() {
            s.push('/');
            s.push_str(&self.location.prefix);
        }
        format!("{s} ({}, {})", self.endpoint_display, self.region)
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Object>> {
        let path = self.path(key)?;
        match self.inner.get(&path).await {
            Ok(r) => {
                let version = Version(r.meta.e_tag.clone().unwrap_or_default());
                let bytes = r.bytes().await.map_err(|e| self.fail("GET", key, e))?;
                Ok(Some(Object { bytes, version }))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.fail("GET", key, e)),
        }
    }

    /// Streams the body (`verify --deep` of a large blob), instead of the default whole read.
    async fn get_stream(&self, key: &str) -> StoreResult<Option<ByteStream>> {
        let path = self.path(key)?;
        match self.inner.get(&path).await {
            Ok(r) => Ok(Some(Box::pin(tokio_util::io::StreamReader::new(
                r.into_stream(),
            )))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.fail("GET", key, e)),
        }
    }

    async fn head(&self, key: &str) -> StoreResult<Option<ObjectMeta>> {
        let path = self.path(key)?;
        match self.inner.head(&path).await {
            Ok(m) => Ok(Some(ObjectMeta {
                key: key.to_owned(),
                size: m.size,
                last_modified: Some(SystemTime::from(m.last_modified)),
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.fail("HEAD", key, e)),
        }
    }

    async fn put(&self, key: &str, bytes: Bytes, opts: &PutOptions) -> StoreResult<()> {
        let path = self.path(key)?;
        self.put_payload(key, &path, PutPayload::from(bytes), opts)
            .await
    }

    async fn put_file(&self, key: &str, file_path: &Path, opts: &PutOptions) -> StoreResult<()> {
        let path = self.path(key)?;
        let file = std::fs::File::open(file_path)
            .with_context(|| format!("cannot open {}", file_path.display()))?;
        let size = file.metadata()?.len();
        if size < self.settings.multipart_threshold {
            let _permit = self.reserve(size).await;
            let bytes = read_at(Arc::new(file), 0, size)
                .await
                .with_context(|| format!("cannot read {}", file_path.display()))?;
            self.put_payload(key, &path, PutPayload::from(bytes), opts)
                .await?;
        } else {
            self.put_multipart(key, &path, file, size, opts).await?;
        }
        // The file is consumed, as on the local store (where it is renamed away).
        let _ = tokio::fs::remove_file(file_path).await;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectMeta>> {
        let store_prefix = &self.location.prefix;
        let full = if store_prefix.is_empty() {
            prefix.to_owned()
        } else {
            format!("{store_prefix}/{prefix}")
        };
        // The paginated API takes the prefix as a plain string (`ObjectStore::list` would treat it
        // as a directory and append `/`), which matches the local store's `starts_with`.
        let mut out = Vec::new();
        let mut page_token = None;
        loop {
            let page = self
                .inner
                .list_paginated(
                    (!full.is_empty()).then_some(full.as_str()),
                    PaginatedListOptions {
                        page_token,
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| self.fail("LIST", prefix, e))?;
            out.extend(
                page.result
                    .objects
                    .into_iter()
                    .filter_map(|m| meta_of(store_prefix, m)),
            );
            match page.page_token {
                Some(t) => page_token = Some(t),
                None => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        let path = self.path(key)?;
        match self.inner.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.fail("DELETE", key, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};

    use sha2::{Digest as _, Sha256};

    use super::*;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| m.get(k).cloned()
    }

    fn creds(secret: &str) -> Credentials {
        Credentials {
            access_key_id: KEY.into(),
            secret_access_key: secret.into(),
            session_token: None,
        }
    }

    fn opts(mode: PutMode) -> PutOptions {
        PutOptions {
            content_type: "application/json".into(),
            cache_control: crate::layout::CACHE_INDEX,
            mode,
        }
    }

    #[test]
    fn settings_defaults_and_toml() {
        let d = S3Settings::default();
        assert_eq!(d.region, None);
        assert_eq!(d.endpoint, None);
        assert!(!d.path_style && !d.allow_http);
        assert_eq!(d.multipart_threshold, 64 * MIB);
        assert_eq!(d.part_size, 16 * MIB);
        assert_eq!(d.concurrency, 4);
        assert_eq!(d.profile, None);
        assert_eq!(d.conditional_writes, ConditionalWrites::Etag);
        d.validate().unwrap();

        // Embedded as `[s3]` in the configuration: an empty section is all defaults.
        #[derive(Deserialize)]
        struct Cfg {
            #[serde(default)]
            s3: S3Settings,
        }
        let c: Cfg = toml::from_str("[s3]\n").unwrap();
        assert_eq!(c.s3, d);
        let c: Cfg = toml::from_str(
            "[s3]\nendpoint = \"http://127.0.0.1:9000\"\npath_style = true\nregion = \"auto\"\n\
             part_size = 8388608\nconditional_writes = \"emulated\"\nprofile = \"ci\"\n",
        )
        .unwrap();
        assert!(c.s3.path_style);
        assert_eq!(c.s3.region.as_deref(), Some("auto"));
        assert_eq!(c.s3.part_size, 8 * MIB);
        assert_eq!(c.s3.concurrency, 4);
        assert_eq!(c.s3.conditional_writes, ConditionalWrites::Emulated);
        assert!(toml::from_str::<Cfg>("[s3]\npathstyle = true\n").is_err());
        assert!(toml::from_str::<Cfg>("[s3]\nconditional_writes = \"off\"\n").is_err());

        for bad in [
            S3Settings {
                part_size: MIB,
                ..S3Settings::default()
            },
            S3Settings {
                concurrency: 0,
                ..S3Settings::default()
            },
            S3Settings {
                multipart_threshold: 0,
                ..S3Settings::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn locations() {
        let l = S3Location::parse("s3://my-bucket").unwrap();
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("my-bucket", ""));
        let l = S3Location::parse("s3://my-bucket/").unwrap();
        assert_eq!(l.prefix, "");
        let l = S3Location::parse("s3://my-bucket/a/b/").unwrap();
        assert_eq!(l.prefix, "a/b");
        for bad in [
            "my-bucket",
            "s3://",
            "s3://ab",
            "s3://has/../dots",
            "s3://bucket/a//b",
            "s3://bucket?x=1",
            "s3://bu cket",
        ] {
            assert!(S3Location::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn endpoints() {
        let s = |endpoint: Option<&str>, path_style: bool| S3Settings {
            endpoint: endpoint.map(str::to_owned),
            path_style,
            ..S3Settings::default()
        };
        let e = Endpoint::resolve(&s(None, false), "bkt", "eu-west-1").unwrap();
        assert_eq!(e.bucket_url, "https://bkt.s3.eu-west-1.amazonaws.com");
        assert!(e.virtual_hosted && e.builder_url.is_none() && !e.allow_http);
        let e = Endpoint::resolve(&s(None, true), "bkt", "eu-west-1").unwrap();
        assert_eq!(e.bucket_url, "https://s3.eu-west-1.amazonaws.com/bkt");
        assert!(!e.virtual_hosted);

        let e = Endpoint::resolve(&s(Some("http://127.0.0.1:9000/"), true), "bkt", "x").unwrap();
        assert_eq!(e.builder_url.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(e.bucket_url, "http://127.0.0.1:9000/bkt");
        assert!(e.allow_http && !e.virtual_hosted);
        let e =
            Endpoint::resolve(&s(Some("https://r2.example.com"), false), "bkt", "auto").unwrap();
        assert_eq!(e.builder_url.as_deref(), Some("https://bkt.r2.example.com"));
        assert!(e.virtual_hosted);
        assert_eq!(e.display, "https://r2.example.com");

        // Plain http leaves loopback only when asked for.
        assert!(Endpoint::resolve(&s(Some("http://minio.lan:9000"), true), "bkt", "x").is_err());
        let mut lan = s(Some("http://minio.lan:9000"), true);
        lan.allow_http = true;
        assert!(Endpoint::resolve(&lan, "bkt", "x").unwrap().allow_http);
        assert!(Endpoint::resolve(&s(Some("http://[::1]:9000"), true), "bkt", "x").is_ok());
        // Never echo an endpoint that carries a secret.
        let e = Endpoint::resolve(&s(Some("https://u:hunter2@h"), true), "bkt", "x")
            .err()
            .unwrap();
        assert!(!format!("{e:#}").contains("hunter2"));
        assert!(Endpoint::resolve(&s(Some("ftp://h"), true), "bkt", "x").is_err());
        assert!(Endpoint::resolve(&s(Some("https://h/path"), true), "bkt", "x").is_err());
    }

    #[test]
    fn keys_and_listing_prefixes() {
        for bad in ["", "/a", "a//b", "a/../b", "./a", "a/"] {
            assert!(validate_key(bad).is_err(), "{bad}");
        }
        validate_key("repositories/library/alpine/_manifests/3.20").unwrap();
        let m = |p: &str| object_store::ObjectMeta {
            location: ObjPath::parse(p).unwrap(),
            last_modified: Default::default(),
            size: 1,
            e_tag: None,
            version: None,
        };
        assert_eq!(
            meta_of("pre/fix", m("pre/fix/blobs/x")).unwrap().key,
            "blobs/x"
        );
        assert!(meta_of("pre/fix", m("pre/fix2/blobs/x")).is_none());
        assert_eq!(meta_of("", m("blobs/x")).unwrap().key, "blobs/x");
    }

    #[tokio::test]
    async fn chain_selection_and_no_secrets_in_output() {
        let settings = S3Settings::default();
        let no_files = [("HOME", "/nonexistent")];
        // Environment keys.
        let env = env_of(&[
            no_files[0],
            ("AWS_ACCESS_KEY_ID", "AKIDENV"),
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t-env"),
            ("AWS_REGION", "eu-central-1"),
        ]);
        let s = S3Store::build("s3://bucket/p", &settings, None, &env).unwrap();
        assert_eq!(s.credentials_origin(), "environment");
        assert_eq!(s.region(), "eu-central-1");
        let c = s.credential_source().credentials().await.unwrap();
        assert_eq!(c.secret_access_key, "s3cr3t-env");
        for shown in [format!("{s:?}"), s.describe()] {
            assert!(!shown.contains("s3cr3t-env"), "{shown}");
        }
        assert_eq!(
            s.describe(),
            "s3://bucket/p (https://s3.eu-central-1.amazonaws.com, eu-central-1)"
        );

        // Nothing static: container credentials, then instance metadata, from object_store.
        let env = env_of(&[
            no_files[0],
            ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/x"),
        ]);
        let s = S3Store::build("s3://bucket", &settings, None, &env).unwrap();
        assert_eq!(s.credentials_origin(), "container credentials (ECS)");
        assert_eq!(s.region(), "us-east-1");
        assert!(format!("{:?}", s.credential_source()).contains("ProviderSource"));
        let s = S3Store::build("s3://bucket", &settings, None, &env_of(&no_files)).unwrap();
        assert_eq!(s.credentials_origin(), "EC2 instance metadata (IMDSv2)");
        let env = env_of(&[no_files[0], ("AWS_EC2_METADATA_DISABLED", "true")]);
        assert!(S3Store::build("s3://bucket", &settings, None, &env).is_err());

        // The instance-metadata provider is wrapped, not bypassed: pointing it at a local fake
        // shows the signer gets exactly what the client would sign with.
        let imds = fake_imds().await;
        let env = env_of(&[no_files[0], ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds)]);
        let s = S3Store::build("s3://bucket", &settings, None, &env).unwrap();
        let source = s.credential_source();
        let c = source.credentials().await.unwrap();
        assert_eq!(c.access_key_id, "ASIAIMDS");
        assert_eq!(c.secret_access_key, "imds-secret");
        assert_eq!(c.session_token.as_deref(), Some("imds-token"));
        // Cached: the same Arc while the provider's credential is unchanged.
        assert!(Arc::ptr_eq(&c, &source.credentials().await.unwrap()));

        // An unusable AWS_CA_BUNDLE is ignored, not fatal.
        let env = env_of(&[
            no_files[0],
            ("AWS_CA_BUNDLE", "/nonexistent/ca.pem"),
            ("AWS_ACCESS_KEY_ID", "A"),
            ("AWS_SECRET_ACCESS_KEY", "B"),
        ]);
        S3Store::build("s3://bucket", &settings, None, &env).unwrap();
    }

    /// A minimal IMDSv2: token, role name, role credentials.
    async fn fake_imds() -> String {
        use axum::routing::{get, put};
        let app = axum::Router::new()
            .route("/latest/api/token", put(|| async { "imds-session-token" }))
            .route(
                "/latest/meta-data/iam/security-credentials/",
                get(|| async { "the-role" }),
            )
            .route(
                "/latest/meta-data/iam/security-credentials/the-role",
                get(|| async {
                    axum::Json(serde_json::json!({
                        "Code": "Success",
                        "AccessKeyId": "ASIAIMDS",
                        "SecretAccessKey": "imds-secret",
                        "Token": "imds-token",
                        "Expiration": "2099-01-01T00:00:00Z",
                    }))
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    // ---- against a real s3s-fs ------------------------------------------------------------

    const KEY: &str = "AKIDS3SFS";
    const SECRET: &str = "s3s-fs-secret-key";

    /// A running `s3s-fs`, killed (by its own handle) when dropped.
    struct S3sFs {
        child: Child,
        port: u16,
        dir: tempfile::TempDir,
    }

    impl Drop for S3sFs {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn s3s_fs_binary() -> PathBuf {
        let on_path = std::env::var_os("PATH")
            .map(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("s3s-fs"))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let cargo_bin = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
            .map(|c| c.join("bin").join("s3s-fs"));
        on_path
            .into_iter()
            .chain(cargo_bin)
            .find(|p| p.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "s3s-fs is not installed (looked on PATH and in ~/.cargo/bin); the S3 \
                     store tests need it: \
                     cargo install s3s-fs --version 0.14.1 --locked --features binary"
                )
            })
    }

    async fn start_s3s_fs(bucket: &str) -> S3sFs {
        let bin = s3s_fs_binary();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(bucket)).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.path().join("s3s-fs.log")).unwrap();
        let mut child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", KEY, "--secret-key", SECRET])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start s3s-fs");
        for _ in 0..200 {
            if let Some(status) = child.try_wait().unwrap() {
                let log = std::fs::read_to_string(dir.path().join("s3s-fs.log")).unwrap();
                panic!("s3s-fs exited with {status}: {log}");
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return S3sFs { child, port, dir };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("s3s-fs did not start listening on port {port}");
    }

    fn s3s_settings(srv: &S3sFs) -> S3Settings {
        S3Settings {
            region: Some("us-east-1".into()),
            endpoint: Some(format!("http://127.0.0.1:{}", srv.port)),
            path_style: true,
            multipart_threshold: 5 * MIB,
            part_size: 5 * MIB,
            concurrency: 2,
            ..S3Settings::default()
        }
    }

    /// Deterministic, incompressible-looking bytes (xorshift), so a misplaced part would show.
    fn pseudo_random(len: usize) -> Vec<u8> {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.extend_from_slice(&x.to_le_bytes());
        }
        out.truncate(len);
        out
    }

    #[tokio::test]
    async fn against_s3s_fs() {
        let srv = start_s3s_fs("registry-test").await;
        let settings = s3s_settings(&srv);
        let store =
            S3Store::with_credentials("s3://registry-test/some/prefix", &settings, creds(SECRET))
                .unwrap();
        assert_eq!(
            store.describe(),
            format!(
                "s3://registry-test/some/prefix (http://127.0.0.1:{}, us-east-1)",
                srv.port
            )
        );
        let c = store.credential_source().credentials().await.unwrap();
        assert_eq!(c.access_key_id, KEY);

        // Missing objects.
        let k = "repositories/a/_index.json";
        assert!(store.get(k).await.unwrap().is_none());
        assert!(store.head(k).await.unwrap().is_none());
        store.delete(k).await.unwrap();

        // Create, then Create again: 412 -> Conflict.
        store
            .put(k, Bytes::from_static(b"v1"), &opts(PutMode::Create))
            .await
            .unwrap();
        assert!(matches!(
            store
                .put(k, Bytes::from_static(b"x"), &opts(PutMode::Create))
                .await,
            Err(StoreError::Conflict)
        ));
        let v1 = store.get(k).await.unwrap().unwrap();
        assert_eq!(&v1.bytes[..], b"v1");
        assert!(!v1.version.0.is_empty(), "s3s-fs returns ETags");
        // Update with the current ETag, then with the now stale one.
        store
            .put(
                k,
                Bytes::from_static(b"v2"),
                &opts(PutMode::Update(v1.version.clone())),
            )
            .await
            .unwrap();
        assert!(matches!(
            store
                .put(
                    k,
                    Bytes::from_static(b"v3"),
                    &opts(PutMode::Update(v1.version.clone()))
                )
                .await,
            Err(StoreError::Conflict)
        ));
        let v2 = store.get(k).await.unwrap().unwrap();
        assert_eq!(&v2.bytes[..], b"v2");
        assert_ne!(v1.version, v2.version);
        // Update of an object that does not exist is a conflict too (the index was deleted).
        assert!(matches!(
            store
                .put(
                    "repositories/none/_index.json",
                    Bytes::from_static(b"x"),
                    &opts(PutMode::Update(v2.version.clone()))
                )
                .await,
            Err(StoreError::Conflict)
        ));
        // What s3s-fs actually answers, beneath the mapping: 412 for both preconditions.
        let raw = store
            .inner
            .put_opts(
                &store.path(k).unwrap(),
                PutPayload::from_static(b"x"),
                object_store::PutMode::Create.into(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&raw, object_store::Error::AlreadyExists { source, .. }
                if format!("{source:?}").contains("412")),
            "{raw:?}"
        );
        let raw = store
            .inner
            .put_opts(
                &store.path(k).unwrap(),
                PutPayload::from_static(b"x"),
                object_store::PutMode::Update(UpdateVersion {
                    e_tag: Some(v1.version.0.clone()),
                    version: None,
                })
                .into(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&raw, object_store::Error::Precondition { source, .. }
                if format!("{source:?}").contains("412")),
            "{raw:?}"
        );
        let meta = store.head(k).await.unwrap().unwrap();
        assert_eq!((meta.key.as_str(), meta.size), (k, 2));
        assert!(meta.last_modified.is_some());

        // Object metadata round-trips on a plain GET; Content-Encoding is never set.
        let got = store.inner.get(&store.path(k).unwrap()).await.unwrap();
        assert_eq!(
            got.attributes
                .get(&Attribute::ContentType)
                .map(|v| v.as_ref()),
            Some("application/json")
        );
        assert_eq!(
            got.attributes
                .get(&Attribute::CacheControl)
                .map(|v| v.as_ref()),
            Some(crate::layout::CACHE_INDEX)
        );
        assert!(got.attributes.get(&Attribute::ContentEncoding).is_none());

        // put_file above the threshold: multipart, 4 parts of 5 MiB (2 at a time).
        let data = pseudo_random(20 * MIB as usize);
        let want = hex::encode(Sha256::digest(&data));
        let staged = srv.dir.path().join("staged-blob");
        std::fs::write(&staged, &data).unwrap();
        let blob = format!("blobs/sha256/{want}");
        let blob_opts = PutOptions {
            content_type: crate::layout::BLOB_CONTENT_TYPE.into(),
            cache_control: crate::layout::CACHE_IMMUTABLE,
            mode: PutMode::Overwrite,
        };
        store.put_file(&blob, &staged, &blob_opts).await.unwrap();
        assert!(!staged.exists(), "put_file consumes the staged file");
        assert_eq!(
            store.head(&blob).await.unwrap().unwrap().size,
            data.len() as u64
        );
        let got = store.inner.get(&store.path(&blob).unwrap()).await.unwrap();
        let etag = got.meta.e_tag.clone().unwrap_or_default();
        assert_eq!(
            got.attributes
                .get(&Attribute::CacheControl)
                .map(|v| v.as_ref()),
            Some(crate::layout::CACHE_IMMUTABLE)
        );
        assert_eq!(
            got.attributes
                .get(&Attribute::ContentType)
                .map(|v| v.as_ref()),
            Some(crate::layout::BLOB_CONTENT_TYPE)
        );
        let bytes = got.bytes().await.unwrap();
        assert_eq!(hex::encode(Sha256::digest(&bytes)), want);
        // The same through the streaming read.
        let mut stream = store.get_stream(&blob).await.unwrap().unwrap();
        let mut streamed = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut streamed)
            .await
            .unwrap();
        assert_eq!(hex::encode(Sha256::digest(&streamed)), want);
        assert!(store.get_stream("blobs/none").await.unwrap().is_none());
        // A multipart object's ETag is `"<md5 of part md5s>-<parts>"`.
        assert!(etag.ends_with("-4\""), "multipart ETag {etag}");

        // Concurrent multipart uploads share the budget and the buffer pool, which is emptied
        // once the last one ends.
        let (a, b) = (
            pseudo_random(11 * MIB as usize),
            pseudo_random(7 * MIB as usize + 3),
        );
        let (pa, pb) = (srv.dir.path().join("a"), srv.dir.path().join("b"));
        std::fs::write(&pa, &a).unwrap();
        std::fs::write(&pb, &b).unwrap();
        let (ra, rb) = tokio::join!(
            store.put_file("blobs/a", &pa, &blob_opts),
            store.put_file("blobs/b", &pb, &blob_opts)
        );
        ra.unwrap();
        rb.unwrap();
        for (k, want) in [("blobs/a", &a), ("blobs/b", &b)] {
            assert_eq!(
                &store.get(k).await.unwrap().unwrap().bytes[..],
                &want[..],
                "{k}"
            );
        }
        assert!(store.parts.free.lock().unwrap().is_empty());
        assert_eq!(store.parts.active.load(Ordering::Acquire), 0);
        store.delete("blobs/a").await.unwrap();
        store.delete("blobs/b").await.unwrap();

        // put_file below the threshold: a single PUT, with the mode honoured.
        let small = srv.dir.path().join("small");
        std::fs::write(&small, b"manifest").unwrap();
        store
            .put_file("manifests/sha256/abc", &small, &opts(PutMode::Create))
            .await
            .unwrap();
        std::fs::write(&small, b"manifest").unwrap();
        assert!(matches!(
            store
                .put_file("manifests/sha256/abc", &small, &opts(PutMode::Create))
                .await,
            Err(StoreError::Conflict)
        ));
        // Above the threshold, Update cannot be atomic and is refused.
        std::fs::write(&staged, &data[..6 * MIB as usize]).unwrap();
        let e = store
            .put_file(&blob, &staged, &opts(PutMode::Update(v2.version.clone())))
            .await
            .unwrap_err();
        assert!(format!("{e:#}").contains("multipart_threshold"), "{e:#}");

        // list: string prefixes, keys relative to the store prefix, sorted.
        store
            .put(
                "repositories/ab/_index.json",
                Bytes::from_static(b"{}"),
                &opts(PutMode::Overwrite),
            )
            .await
            .unwrap();
        let keys = |v: Vec<ObjectMeta>| v.into_iter().map(|m| m.key).collect::<Vec<_>>();
        assert_eq!(
            keys(store.list("repositories/").await.unwrap()),
            ["repositories/a/_index.json", "repositories/ab/_index.json"]
        );
        assert_eq!(
            keys(store.list("repositories/a").await.unwrap()).len(),
            2,
            "a string prefix, not a directory"
        );
        assert_eq!(keys(store.list("").await.unwrap()).len(), 4);
        // Another prefix in the same bucket sees nothing of this one.
        let other =
            S3Store::with_credentials("s3://registry-test/some/prefix2", &settings, creds(SECRET))
                .unwrap();
        assert!(other.list("").await.unwrap().is_empty());
        assert!(other.get(k).await.unwrap().is_none());

        // delete, and delete again.
        store.delete(k).await.unwrap();
        assert!(store.head(k).await.unwrap().is_none());
        store.delete(k).await.unwrap();

        // s3s-fs checks signatures: a wrong secret is refused, and the error does not echo it.
        let bad = S3Store::with_credentials(
            "s3://registry-test/some/prefix",
            &settings,
            creds("wrong-secret-value"),
        )
        .unwrap();
        let e = bad.get(&blob).await.unwrap_err();
        assert!(!format!("{e:#} {e:?}").contains("wrong-secret-value"));
    }

    #[tokio::test]
    async fn emulated_conditional_writes_against_s3s_fs() {
        let srv = start_s3s_fs("registry-emulated").await;
        let settings = S3Settings {
            conditional_writes: ConditionalWrites::Emulated,
            ..s3s_settings(&srv)
        };
        let store =
            S3Store::with_credentials("s3://registry-emulated", &settings, creds(SECRET)).unwrap();
        let k = "_catalog.json";
        store
            .put(k, Bytes::from_static(b"1"), &opts(PutMode::Create))
            .await
            .unwrap();
        assert!(matches!(
            store
                .put(k, Bytes::from_static(b"2"), &opts(PutMode::Create))
                .await,
            Err(StoreError::Conflict)
        ));
        let v = store.get(k).await.unwrap().unwrap().version;
        store
            .put(
                k,
                Bytes::from_static(b"2"),
                &opts(PutMode::Update(v.clone())),
            )
            .await
            .unwrap();
        assert!(matches!(
            store
                .put(k, Bytes::from_static(b"3"), &opts(PutMode::Update(v)))
                .await,
            Err(StoreError::Conflict)
        ));
    }

    fn vm_hwm_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// Peak RSS of a 1 GiB `put_file` with the default settings. Run alone:
    /// `cargo test --bin static-registry store::s3::tests::rss_of_1gib -- --ignored --nocapture`
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "uploads 1 GiB; run explicitly to measure"]
    async fn rss_of_1gib_put_file() {
        let srv = start_s3s_fs("registry-rss").await;
        let settings = S3Settings {
            multipart_threshold: S3Settings::default().multipart_threshold,
            part_size: S3Settings::default().part_size,
            concurrency: S3Settings::default().concurrency,
            ..s3s_settings(&srv)
        };
        let store =
            S3Store::with_credentials("s3://registry-rss", &settings, creds(SECRET)).unwrap();
        let staged = srv.dir.path().join("big");
        std::fs::File::create(&staged)
            .unwrap()
            .set_len(1024 * MIB)
            .unwrap();
        let before = vm_hwm_kib();
        // Reset the high-water mark (Linux >= 4.0) so only the upload counts.
        std::fs::write("/proc/self/clear_refs", "5").unwrap();
        let baseline = vm_hwm_kib();
        let started = std::time::Instant::now();
        let opts = PutOptions {
            content_type: crate::layout::BLOB_CONTENT_TYPE.into(),
            cache_control: crate::layout::CACHE_IMMUTABLE,
            mode: PutMode::Overwrite,
        };
        store.put_file("blobs/big", &staged, &opts).await.unwrap();
        let peak = vm_hwm_kib();
        eprintln!(
            "1 GiB put_file: VmHWM before {} MiB, after reset {} MiB, peak during upload {} MiB \
             (+{} MiB), {:.1} s",
            before / 1024,
            baseline / 1024,
            peak / 1024,
            peak.saturating_sub(baseline) / 1024,
            started.elapsed().as_secs_f64()
        );
        assert_eq!(
            store.head("blobs/big").await.unwrap().unwrap().size,
            1024 * MIB
        );
        assert!(peak < 100 * 1024, "peak RSS {} MiB", peak / 1024);
    }
}
