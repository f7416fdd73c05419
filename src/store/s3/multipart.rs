//! Multipart upload of large files with bounded memory: a store-wide byte budget and a pool of
//! reused part buffers; see the module docs of `store::s3`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context};
use bytes::Bytes;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, PutMultipartOptions, PutPayload};
use tokio::task::JoinSet;

use super::settings::*;
use super::{attributes, S3Store};
use crate::store::{PutMode, PutOptions, Store, StoreError, StoreResult};

impl S3Store {
    /// Waits until `bytes` more may be buffered (the store-wide budget).
    pub(super) async fn reserve(&self, bytes: u64) -> tokio::sync::OwnedSemaphorePermit {
        self.budget.reserve(bytes).await
    }

    /// Multipart upload of a large file with bounded memory; see the module docs.
    pub(super) async fn put_multipart(
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

pub(super) fn joined(
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
pub(super) struct BufferPool {
    pub(super) free: Arc<Mutex<Vec<Vec<u8>>>>,
    pub(super) active: Arc<AtomicUsize>,
}

impl BufferPool {
    pub(super) fn take(&self, capacity: u64) -> Vec<u8> {
        self.free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_else(|| vec![0; capacity as usize])
    }

    pub(super) fn give_back(&self, buf: Vec<u8>) {
        if self.active.load(Ordering::Acquire) > 0 {
            self.free
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(buf);
        }
    }

    /// Marks an upload as active until the guard drops (also on error or cancellation).
    pub(super) fn active(&self) -> ActiveUpload {
        self.active.fetch_add(1, Ordering::AcqRel);
        ActiveUpload(self.clone())
    }
}

pub(super) struct ActiveUpload(BufferPool);

impl Drop for ActiveUpload {
    fn drop(&mut self) {
        let pool = &self.0;
        if pool.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            pool.free.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }
}

/// A filled pool buffer as the owner behind a `Bytes`; gives the buffer back when dropped.
pub(super) struct PooledPart {
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
pub(super) async fn read_part(
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
pub(super) async fn read_at(
    file: Arc<std::fs::File>,
    offset: u64,
    len: u64,
) -> std::io::Result<Bytes> {
    tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::FileExt as _;
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, offset)?;
        Ok(Bytes::from(buf))
    })
    .await
    .map_err(std::io::Error::other)?
}
