//! Object stores: where the static layout lives.
//!
//! One small trait sits in front of every backend so `publish`, `verify` and `serve` never know
//! which one they talk to, and tests can swap it. Keys come from [`crate::layout`] only.

pub mod local;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

pub use local::LocalStore;

/// A stored object's metadata.
#[derive(Debug, Clone)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
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

/// The operations the layout needs from a backend.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// A human description for logs and summaries; never contains credentials.
    fn describe(&self) -> String;

    /// A whole object, or `None` when it does not exist.
    async fn get(&self, key: &str) -> StoreResult<Option<Object>>;

    /// Metadata, or `None` when the object does not exist.
    async fn head(&self, key: &str) -> StoreResult<Option<ObjectMeta>>;

    /// Writes a small object atomically.
    async fn put(&self, key: &str, bytes: Bytes, opts: &PutOptions) -> StoreResult<()>;

    /// Moves or uploads a verified local file (a staged blob) to `key`, atomically. The file is
    /// consumed: it may be renamed away.
    async fn put_file(&self, key: &str, path: &Path, opts: &PutOptions) -> StoreResult<()>;

    /// Every object under `prefix`.
    async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectMeta>>;

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

/// Opens a store from a location: `file:///abs/path` or a plain path.
pub fn open(location: &str) -> anyhow::Result<Arc<dyn Store>> {
    if let Some(rest) = location.strip_prefix("file://") {
        return Ok(Arc::new(LocalStore::open(rest)?));
    }
    if location.contains("://") {
        anyhow::bail!(
            "unsupported store {location:?}: use a directory path or file:///absolute/path"
        );
    }
    Ok(Arc::new(LocalStore::open(location)?))
}
