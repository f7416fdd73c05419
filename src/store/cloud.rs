//! Azure Blob Storage and Google Cloud Storage as a [`Store`]: one [`Bucket`] (the shared reads,
//! lists and deletes) plus uploads and conditional writes, which `object_store` makes the same on
//! both clouds. Opening one (credentials, endpoints) is `store::azure` and `store::gcs`.
//!
//! # Conditional writes
//! [`PutMode::Create`] is `If-None-Match: *` on Azure and `x-goog-if-generation-match: 0` on GCS;
//! [`PutMode::Update`] compares the ETag on Azure and the generation on GCS ([`VersionField`]),
//! whichever [`Store::get`] returned as the object's [`Version`] (`bucket::VersionField`). A lost race is
//! [`StoreError::Conflict`] and the caller re-reads.
//!
//! # Memory
//! Files below [`Uploads::threshold`] are one PUT (read whole); larger ones are uploaded in
//! [`Uploads::part_size`] parts, at most [`PART_CONCURRENCY`] in flight (Azure block blobs, GCS
//! XML multipart), so a large layer never sits in memory whole. One byte budget per store bounds
//! the buffers of all concurrent uploads together (`publish --jobs`, `sync --jobs`).

use std::path::Path;

use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use object_store::{PutMultipartOptions, PutPayload, WriteMultipart};
use tokio::io::AsyncReadExt;

use super::bucket::{attributes, Bucket, ByteBudget};
use super::{ByteStream, Object, ObjectMeta, PutMode, PutOptions, Store, StoreError, StoreResult};

/// Parts uploaded at once: with the part size, the memory bound of one large upload.
pub const PART_CONCURRENCY: usize = 4;

/// How large files are uploaded (`[azure]`/`[gcs]` `multipart_threshold` and `part_size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uploads {
    /// Files at least this large go in parts. Default 64 MiB.
    pub threshold: u64,
    /// Default 16 MiB; 5 MiB (GCS's smallest part) to 4 GiB.
    pub part_size: u64,
}

impl Default for Uploads {
    fn default() -> Self {
        Uploads {
            threshold: 64 * MIB,
            part_size: 16 * MIB,
        }
    }
}

const MIB: u64 = 1024 * 1024;

impl Uploads {
    /// The settings of `section`, checked; unset ones take the defaults.
    pub fn from_settings(
        section: &str,
        threshold: Option<u64>,
        part_size: Option<u64>,
    ) -> anyhow::Result<Uploads> {
        let d = Uploads::default();
        let u = Uploads {
            threshold: threshold.unwrap_or(d.threshold),
            part_size: part_size.unwrap_or(d.part_size),
        };
        anyhow::ensure!(
            (5 * MIB..=4096 * MIB).contains(&u.part_size),
            "{section}.part_size must be between 5 MiB and 4 GiB"
        );
        anyhow::ensure!(
            (1..=5120 * MIB).contains(&u.threshold),
            "{section}.multipart_threshold must be between 1 byte and 5 GiB"
        );
        Ok(u)
    }
}

/// An Azure container or a GCS bucket, under a prefix.
#[derive(Debug)]
pub struct CloudStore {
    bucket: Bucket,
    uploads: Uploads,
    /// `max(threshold, part_size × PART_CONCURRENCY)`: what all concurrent uploads together may
    /// buffer (a single PUT reads its file whole; a multipart upload holds its parts in flight).
    budget: ByteBudget,
}

impl CloudStore {
    pub fn new(bucket: Bucket, uploads: Uploads) -> CloudStore {
        let budget =
            ByteBudget::new((uploads.part_size * PART_CONCURRENCY as u64).max(uploads.threshold));
        CloudStore {
            bucket,
            uploads,
            budget,
        }
    }

    /// The full object name in the bucket for a layout key (prefix included).
    pub fn object_key(&self, key: &str) -> StoreResult<String> {
        self.bucket.object_key(key)
    }

    async fn put_payload(
        &self,
        key: &str,
        payload: PutPayload,
        opts: &PutOptions,
    ) -> StoreResult<()> {
        let path = self.bucket.path(key)?;
        let mode = match &opts.mode {
            PutMode::Overwrite => object_store::PutMode::Overwrite,
            PutMode::Create => object_store::PutMode::Create,
            PutMode::Update(v) => object_store::PutMode::Update(self.bucket.update_version(&v.0)),
        };
        let conditional = !matches!(mode, object_store::PutMode::Overwrite);
        let put = object_store::PutOptions {
            mode,
            attributes: attributes(opts),
            ..Default::default()
        };
        match self.bucket.inner.put_opts(&path, payload, put).await {
            Ok(_) => Ok(()),
            Err(
                object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. },
            ) if conditional => Err(StoreError::Conflict),
            Err(e) => Err(self.bucket.fail("PUT", key, e)),
        }
    }

    /// A large file in parts with bounded memory. Multipart uploads cannot be conditional, so
    /// `Create` is an existence check first and `Update` is refused (the publisher only uploads
    /// content-addressed blobs this way, with `Overwrite`).
    async fn put_parts(&self, key: &str, file_path: &Path, opts: &PutOptions) -> StoreResult<()> {
        match &opts.mode {
            PutMode::Overwrite => {}
            PutMode::Create => {
                if self.bucket.head(key).await?.is_some() {
                    return Err(StoreError::Conflict);
                }
            }
            PutMode::Update(_) => {
                return Err(StoreError::Other(anyhow::anyhow!(
                    "{key}: a conditional update of a large object is not supported"
                )))
            }
        }
        let path = self.bucket.path(key)?;
        let mut file = tokio::fs::File::open(file_path)
            .await
            .with_context(|| format!("cannot open {}", file_path.display()))?;
        let upload = self
            .bucket
            .inner
            .put_multipart_opts(
                &path,
                PutMultipartOptions {
                    attributes: attributes(opts),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| self.bucket.fail("multipart upload start of", key, e))?;
        // The parts in flight, held for the whole upload.
        let _buffers = self
            .budget
            .reserve(self.uploads.part_size * PART_CONCURRENCY as u64)
            .await;
        let mut writer =
            WriteMultipart::new_with_chunk_size(upload, self.uploads.part_size as usize);
        let mut buf = vec![0u8; 1024 * 1024];
        loop {
            let n = match file.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    writer.abort().await.ok();
                    return Err(StoreError::Other(
                        anyhow::Error::new(e)
                            .context(format!("cannot read {}", file_path.display())),
                    ));
                }
            };
            if n == 0 {
                break;
            }
            // Waits while PART_CONCURRENCY parts are in flight: the memory bound.
            if let Err(e) = writer.wait_for_capacity(PART_CONCURRENCY).await {
                writer.abort().await.ok();
                return Err(self.bucket.fail("multipart upload of", key, e));
            }
            writer.write(&buf[..n]);
        }
        // `finish` aborts the upload itself when a part failed.
        writer
            .finish()
            .await
            .map_err(|e| self.bucket.fail("multipart upload of", key, e))?;
        Ok(())
    }
}

#[async_trait]
impl Store for CloudStore {
    fn describe(&self) -> String {
        format!("{:?}", self.bucket)
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Object>> {
        self.bucket.get(key).await
    }

    async fn get_stream(&self, key: &str) -> StoreResult<Option<ByteStream>> {
        self.bucket.get_stream(key).await
    }

    async fn head(&self, key: &str) -> StoreResult<Option<ObjectMeta>> {
        self.bucket.head(key).await
    }

    async fn put(&self, key: &str, bytes: Bytes, opts: &PutOptions) -> StoreResult<()> {
        self.put_payload(key, PutPayload::from(bytes), opts).await
    }

    async fn put_file(&self, key: &str, file_path: &Path, opts: &PutOptions) -> StoreResult<()> {
        let size = tokio::fs::metadata(file_path)
            .await
            .with_context(|| format!("cannot open {}", file_path.display()))?
            .len();
        if size < self.uploads.threshold {
            let _buffer = self.budget.reserve(size).await;
            let bytes = tokio::fs::read(file_path)
                .await
                .with_context(|| format!("cannot read {}", file_path.display()))?;
            self.put_payload(key, PutPayload::from(bytes), opts).await?;
        } else {
            self.put_parts(key, file_path, opts).await?;
        }
        // The file is consumed, as on the local store (where it is renamed away).
        let _ = tokio::fs::remove_file(file_path).await;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectMeta>> {
        self.bucket.list(prefix).await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.bucket.delete(key).await
    }
}
