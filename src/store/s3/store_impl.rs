//! [`Store`] for [`S3Store`]: get, head, put, list, delete over `object_store`.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::{ObjectStoreExt, PutPayload};

use super::multipart::*;
use super::S3Store;
use crate::store::{ByteStream, Object, ObjectMeta, PutOptions, Store, StoreResult, Version};

pub(super) fn meta_of(prefix: &str, m: object_store::ObjectMeta) -> Option<ObjectMeta> {
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
