//! Object stores: where the static layout lives.
//!
//! One small trait sits in front of every backend so `publish`, `verify` and `serve` never know
//! which one they talk to, and tests can swap it. Keys come from [`crate::layout`] only.

pub mod azure;
pub mod bucket;
pub mod cloud;
pub mod gcs;
pub mod local;
pub mod s3;
mod update;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

pub use azure::{AzureLocation, AzureSettings};
pub use cloud::CloudStore;
pub use gcs::{GcsLocation, GcsSettings};
pub use local::LocalStore;
#[allow(unused_imports)] // For the configuration (`[s3]`) and the SigV4 signer.
pub use s3::{ConditionalWrites, S3Settings, S3Store};
pub use update::{update_json, MAX_ATTEMPTS};

/// A stored object's metadata.
#[derive(Debug, Clone)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    /// When the object was last written; `prune`'s grace period is measured against it.
    pub last_modified: Option<SystemTime>,
}

/// A whole small object (index files, manifests) and the version to compare-and-swap against.
#[derive(Debug, Clone)]
pub struct Object {
    pub bytes: Bytes,
    pub version: Version,
}

/// An opaque object version (an ETag, or a content hash on the local store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version(pub String);

/// How a put treats an existing object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutMode {
    /// Replace whatever is there (content-addressed objects: same key, same bytes).
    Overwrite,
    /// Only if no object exists yet.
    Create,
    /// Only if the object is still at this version.
    Update(Version),
}

/// Object metadata for a put.
#[derive(Debug, Clone)]
pub struct PutOptions {
    pub content_type: String,
    pub cache_control: &'static str,
    pub mode: PutMode,
}

/// Store failures callers act on differently.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A conditional put lost a race: re-read and retry.
    #[error("precondition failed: the object changed concurrently")]
    Conflict,
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::Other(e.into())
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// An object's bytes as a stream, for objects too big to hold in memory (`verify --deep`).
pub type ByteStream = std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>;

/// The operations the layout needs from a backend.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// A human description for logs and summaries; never contains credentials.
    fn describe(&self) -> String;

    /// A whole object, or `None` when it does not exist.
    async fn get(&self, key: &str) -> StoreResult<Option<Object>>;

    /// A whole object as a stream, or `None` when it does not exist. The default reads it whole;
    /// backends override it to stream large blobs.
    async fn get_stream(&self, key: &str) -> StoreResult<Option<ByteStream>> {
        Ok(self
            .get(key)
            .await?
            .map(|o| Box::pin(std::io::Cursor::new(o.bytes)) as ByteStream))
    }

    /// Metadata, or `None` when the object does not exist.
    async fn head(&self, key: &str) -> StoreResult<Option<ObjectMeta>>;

    /// Writes a small object atomically.
    async fn put(&self, key: &str, bytes: Bytes, opts: &PutOptions) -> StoreResult<()>;

    /// Moves or uploads a verified local file (a staged blob) to `key`, atomically. The file is
    /// consumed: it may be renamed away.
    async fn put_file(&self, key: &str, path: &Path, opts: &PutOptions) -> StoreResult<()>;

    /// Every object under `prefix`.
    async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectMeta>>;

    /// Deletes an object; deleting a missing one is not an error (`prune`, `untag`,
    /// `delete-repository`).
    async fn delete(&self, key: &str) -> StoreResult<()>;

    /// Where the publisher stages blobs before `put_file`; on the local store this is inside the
    /// store so the final step is a rename.
    fn staging_dir(&self) -> PathBuf {
        std::env::temp_dir()
    }

    /// The directory behind the store, when it is a local one (the embedded origin serves it).
    fn local_root(&self) -> Option<&Path> {
        None
    }
}

/// The settings of every cloud a store location can name: the `[s3]`, `[azure]` and `[gcs]`
/// sections of the configuration file.
#[derive(Debug, Clone, Default)]
pub struct CloudSettings {
    pub s3: S3Settings,
    pub azure: AzureSettings,
    pub gcs: GcsSettings,
}

/// The kinds of location a store can be opened from, for error messages.
pub const LOCATIONS: &str =
    "a directory path, file:///absolute/path, s3://bucket[/prefix], azure://account/container[/prefix] or gs://bucket[/prefix]";

/// Opens a store from a location with default settings (each cloud's standard environment and
/// credential chain).
pub fn open(location: &str) -> anyhow::Result<Arc<dyn Store>> {
    open_with(location, &CloudSettings::default())
}

/// Like [`open`], with the configured settings of the location's cloud. Callers that also sign
/// URLs for the bucket use [`S3Store::open`] to keep the concrete type and its
/// [`S3Store::credential_source`].
pub fn open_with(location: &str, clouds: &CloudSettings) -> anyhow::Result<Arc<dyn Store>> {
    if location.starts_with("s3://") {
        return Ok(Arc::new(S3Store::open(location, &clouds.s3)?));
    }
    if location.starts_with("azure://") {
        return Ok(Arc::new(azure::open(location, &clouds.azure)?));
    }
    if location.starts_with("gs://") {
        return Ok(Arc::new(gcs::open(location, &clouds.gcs)?));
    }
    if let Some(rest) = location.strip_prefix("file://") {
        return Ok(Arc::new(LocalStore::open(rest)?));
    }
    if location.contains("://") {
        anyhow::bail!("unsupported store {location:?}: use {LOCATIONS}");
    }
    Ok(Arc::new(LocalStore::open(location)?))
}
