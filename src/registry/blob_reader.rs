//! A registry blob as a synchronous reader that survives dropped connections: what the publisher
//! stages, hashes and compresses from, on a blocking thread.

use std::io::{self, Read};
use std::sync::Arc;

use anyhow::bail;
use bytes::{Buf, Bytes};
use futures::TryStreamExt as _;

use super::client::RegistryClient;
use crate::reference::Digest;

/// A dropped connection is resumed this many times per blob before the copy fails.
pub const MAX_RESUMES: u32 = 8;

/// Streams one blob: a synchronous reader (what the staging code hashes from) over an async
/// response. A dropped connection is resumed from the current offset with `Range`, against the
/// registry URL (a redirect target's signature may have expired meanwhile).
pub struct BlobReader {
    client: Arc<RegistryClient>,
    digest: Digest,
    size: u64,
    /// Bytes handed out so far.
    pos: u64,
    /// Leading bytes of the current response to drop (a server that ignored `Range`).
    skip: u64,
    resp: Option<reqwest::Response>,
    resumes: u32,
    counted: bool,
}

impl BlobReader {
    pub fn new(client: Arc<RegistryClient>, digest: Digest, size: u64) -> BlobReader {
        BlobReader {
            client,
            digest,
            size,
            pos: 0,
            skip: 0,
            resp: None,
            resumes: 0,
            counted: false,
        }
    }

    /// The blob as a synchronous reader, run on `handle`'s runtime from a blocking thread.
    pub fn into_read(self, handle: tokio::runtime::Handle) -> impl Read + Send {
        let chunks = futures::stream::try_unfold(self, |mut r| async move {
            Ok(r.next().await?.map(|b| (b, r)))
        })
        .map_err(|e: anyhow::Error| io::Error::other(format!("{e:#}")));
        let chunks = tokio_util::io::StreamReader::new(Box::pin(chunks));
        tokio_util::io::SyncIoBridge::new_with_handle(chunks, handle)
    }

    async fn next(&mut self) -> anyhow::Result<Option<Bytes>> {
        loop {
            if self.resp.is_none() {
                if self.pos >= self.size {
                    return Ok(None);
                }
                let (resp, skip) = self.client.blob(&self.digest, self.pos).await?;
                if !self.counted {
                    self.client.count_blob();
                    self.counted = true;
                }
                self.resp = Some(resp);
                self.skip = skip;
            }
            let resp = self.resp.as_mut().expect("set above");
            match resp.chunk().await {
                Ok(Some(mut b)) => {
                    self.client.count_blob_bytes(b.len() as u64);
                    if self.skip > 0 {
                        let drop = self.skip.min(b.len() as u64);
                        b.advance(drop as usize);
                        self.skip -= drop;
                        if b.is_empty() {
                            continue;
                        }
                    }
                    self.pos += b.len() as u64;
                    if self.pos > self.size {
                        bail!(
                            "registry {} sent more than the {} bytes of blob {}",
                            self.client.registry(),
                            self.size,
                            self.digest
                        );
                    }
                    return Ok(Some(b));
                }
                Ok(None) if self.pos >= self.size => {
                    self.resp = None;
                    return Ok(None);
                }
                Ok(None) => self.resume("the response ended early")?,
                Err(e) => self.resume(&e.to_string())?,
            }
        }
    }

    fn resume(&mut self, why: &str) -> anyhow::Result<()> {
        self.resp = None;
        self.resumes += 1;
        if self.resumes > MAX_RESUMES {
            bail!(
                "blob {} from registry {}: {why} at byte {} of {}, {MAX_RESUMES} times; giving up",
                self.digest,
                self.client.registry(),
                self.pos,
                self.size
            );
        }
        self.client.count_resume();
        tracing::warn!(
            "blob {}: {why} at byte {} of {}; resuming with Range",
            self.digest,
            self.pos,
            self.size
        );
        Ok(())
    }
}
