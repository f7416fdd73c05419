//! [`Store`] for [`S3Store`]: get, head, put, list, delete over `object_store`.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use object_store::PutPayload;

use super::multipart::*;
use super::S3Store;
use crate::store::{ByteStream, Object, ObjectMeta, PutOptions, Store, StoreResult};

#[async_trait]
impl Store for S3Store {
    fn describe(&self) -> String {
        format!("{:?}", self.bucket)
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Object>> {
        self.bucket.get(key).await
    }

    /// Streams the body (`verify --deep` of a large blob), instead of the default whole read.
    async fn get_stream(&self, key: &str) -> StoreResult<Option<ByteStream>> {
        self.bucket.get_stream(key).await
    }

    async fn head(&self, key: &str) -> StoreResult<Option<ObjectMeta>> {
        self.bucket.head(key).await
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
        self.bucket.list(prefix).await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.bucket.delete(key).await
    }
}
