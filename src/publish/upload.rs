//! Getting blobs into the store: only the missing ones, each verified before it becomes visible.
//!
//! Every blob streams into a staging file while it is hashed; only a blob whose digest and size
//! check out is handed to `put_file`, which publishes it atomically. So a reader can never see a
//! partial or wrong blob under a digest key, whatever happens mid-upload. Uploads run with bounded
//! concurrency; the tar reading and hashing run on the blocking pool, the compression itself on
//! one pool of threads shared by all layers (compress.rs).

use std::collections::HashMap;
use std::io::{BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use futures::stream::{self, StreamExt, TryStreamExt};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::hashing::HashingWriter;
use crate::layout;
use crate::oci::media;
use crate::publish::compress::{compress_layer, Workers};
use crate::publish::files::Files;
use crate::publish::image::{short, BlobKey, BlobRef, BlobSource};
use crate::publish::render::Produced;
use crate::publish::Compression;
use crate::reference::Digest;
use crate::store::Store;

/// What the blob phase did.
#[derive(Debug, Default, Clone)]
pub struct UploadStats {
    pub blobs_written: u64,
    pub bytes_written: u64,
    pub blobs_skipped: u64,
    pub bytes_skipped: u64,
}

/// One blob's outcome.
enum Outcome {
    Written(Produced),
    Skipped(Produced),
}

/// Shared by all upload tasks.
struct Ctx {
    store: Arc<dyn Store>,
    files: Files,
    compression: Compression,
    /// Most bytes a layer may decompress to (`--max-archive-bytes`).
    max_plain: u64,
    staging: PathBuf,
    bars: MultiProgress,
    label: String,
    /// diff_id -> compressed layer already in the store (see reuse.rs).
    known: HashMap<Digest, Produced>,
    /// The threads that compress layers, shared by the `jobs` layers in progress.
    workers: Workers,
}

/// How to run the blob phase.
pub struct UploadPlan {
    pub compression: Compression,
    pub jobs: usize,
    pub progress: bool,
    /// For messages: the source as the user wrote it.
    pub label: String,
    /// Compressed forms of uncompressed layers the store already has.
    pub known: HashMap<Digest, Produced>,
    /// Most bytes a layer may decompress to (`--max-archive-bytes`).
    pub max_plain: u64,
}

/// Produces every blob in `blobs` (each key once), at most `jobs` at a time.
pub async fn upload_all(
    store: Arc<dyn Store>,
    files: Files,
    blobs: Vec<BlobRef>,
    plan: UploadPlan,
) -> anyhow::Result<(HashMap<BlobKey, Produced>, UploadStats)> {
    let staging = store.staging_dir();
    tokio::fs::create_dir_all(&staging)
        .await
        .with_context(|| format!("cannot create staging directory {}", staging.display()))?;
    let target = if plan.progress {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let ctx = Arc::new(Ctx {
        store,
        files,
        compression: plan.compression,
        max_plain: plan.max_plain,
        staging,
        bars: MultiProgress::with_draw_target(target),
        label: plan.label,
        known: plan.known,
        workers: Workers::for_jobs(plan.jobs).context("cannot start the compression threads")?,
    });
    let results: Vec<(BlobKey, Outcome)> = stream::iter(blobs)
        .map(|b| {
            let ctx = ctx.clone();
            async move {
                let key = b.source.key();
                let outcome = produce(&ctx, &b).await?;
                anyhow::Ok((key, outcome))
            }
        })
        .buffer_unordered(plan.jobs.max(1))
        .try_collect()
        .await?;
    let _ = ctx.bars.clear();
    let mut stats = UploadStats::default();
    let mut produced = HashMap::with_capacity(results.len());
    for (key, outcome) in results {
        let p = match outcome {
            Outcome::Written(p) => {
                stats.blobs_written += 1;
                stats.bytes_written += p.size;
                p
            }
            Outcome::Skipped(p) => {
                stats.blobs_skipped += 1;
                stats.bytes_skipped += p.size;
                p
            }
        };
        produced.insert(key, p);
    }
    Ok((produced, stats))
}

/// Is the blob already in the store, complete?
async fn present(ctx: &Ctx, digest: &Digest, size: u64) -> anyhow::Result<bool> {
    let key = layout::blob(digest);
    match ctx.store.head(&key).await? {
        Some(m) if m.size == size => Ok(true),
        Some(m) => {
            tracing::warn!(
                "{key}: size {} in the store, expected {size}; rewriting it",
                m.size
            );
            Ok(false)
        }
        None => Ok(false),
    }
}

fn bar(ctx: &Ctx, len: u64, name: String) -> ProgressBar {
    let pb = ctx.bars.add(ProgressBar::new(len));
    pb.set_style(
        ProgressStyle::with_template(
            "{msg:24} [{bar:30}] {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb.set_message(name);
    pb
}

async fn produce(ctx: &Arc<Ctx>, b: &BlobRef) -> anyhow::Result<Outcome> {
    match &b.source {
        BlobSource::Copy { path, digest, size } => {
            let p = Produced {
                digest: digest.clone(),
                size: *size,
            };
            if present(ctx, digest, *size).await? {
                tracing::debug!("{}: {digest} already in the store", b.what);
                return Ok(Outcome::Skipped(p));
            }
            let opened = match path {
                Some(path) => ctx.files.open(path)?,
                None => None,
            };
            let Some(opened) = opened else {
                if media::is_foreign(&b.media_type) {
                    bail!(
                        "{}: {} is a foreign (non-distributable) layer {digest} that is neither in the source nor in the store; add the blob to the source or copy it into the store first",
                        ctx.label,
                        b.what
                    );
                }
                bail!(
                    "{}: {} ({digest}) is missing from the source{}",
                    ctx.label,
                    b.what,
                    path.as_deref()
                        .map(|p| format!(" ({p})"))
                        .unwrap_or_default()
                );
            };
            if opened.size != *size {
                bail!(
                    "{}: {} ({digest}): size {} in the source, but the manifest says {size}",
                    ctx.label,
                    b.what,
                    opened.size
                );
            }
            let pb = bar(ctx, opened.size, short(digest));
            let (c2, digest2, what) = (ctx.clone(), digest.clone(), b.what.clone());
            let staged = tokio::task::spawn_blocking(move || {
                let mut tmp = tempfile::NamedTempFile::new_in(&c2.staging)?;
                let mut w = HashingWriter::new(
                    BufWriter::with_capacity(256 << 10, tmp.as_file_mut()),
                    digest2.algorithm(),
                );
                std::io::copy(&mut pb.wrap_read(opened.reader), &mut w)
                    .with_context(|| format!("{}: reading {what}", c2.label))?;
                let (mut inner, got, n) = w.finish();
                inner.flush()?;
                drop(inner);
                // Durable before the rename makes it visible: a crash must not leave a short blob.
                tmp.as_file().sync_data()?;
                pb.finish_and_clear();
                if got != digest2 || n != opened.size {
                    bail!(
                        "{}: {what}: content does not match its digest {digest2} (got {got}, {n} bytes)",
                        c2.label
                    );
                }
                anyhow::Ok(tmp.into_temp_path())
            })
            .await??;
            put(ctx, digest, staged).await?;
            Ok(Outcome::Written(p))
        }
        BlobSource::Compress { path, diff_id } => {
            if let Some(p) = ctx.known.get(diff_id) {
                if present(ctx, &p.digest, p.size).await? {
                    tracing::debug!("{}: reusing {} for {diff_id}", b.what, p.digest);
                    return Ok(Outcome::Skipped(p.clone()));
                }
            }
            let Some(opened) = ctx.files.open(path)? else {
                bail!(
                    "{}: {} ({path}) is missing from the source",
                    ctx.label,
                    b.what
                );
            };
            let pb = bar(ctx, opened.size, short(diff_id));
            let (c2, want, what) = (ctx.clone(), diff_id.clone(), b.what.clone());
            let (compressed, staged) = tokio::task::spawn_blocking(move || {
                let mut tmp = tempfile::NamedTempFile::new_in(&c2.staging)?;
                let out = BufWriter::with_capacity(256 << 10, tmp.as_file_mut());
                let reader: Box<dyn Read> = Box::new(pb.wrap_read(opened.reader));
                let (c, out) =
                    compress_layer(reader, out, c2.compression, c2.max_plain, &c2.workers)
                    .with_context(|| format!("{}: compressing {what}", c2.label))?;
                drop(out);
                tmp.as_file().sync_data()?;
                pb.finish_and_clear();
                if c.diff_id != want {
                    bail!(
                        "{}: {what}: the uncompressed layer hashes to {}, but the image config says its diff_id is {want}",
                        c2.label,
                        c.diff_id
                    );
                }
                anyhow::Ok((c, tmp.into_temp_path()))
            })
            .await??;
            let p = Produced {
                digest: compressed.digest.clone(),
                size: compressed.size,
            };
            tracing::debug!(
                "{}: {} -> {} ({} -> {} bytes)",
                b.what,
                diff_id,
                p.digest,
                compressed.uncompressed_size,
                p.size
            );
            if present(ctx, &p.digest, p.size).await? {
                return Ok(Outcome::Skipped(p));
            }
            put(ctx, &p.digest, staged).await?;
            Ok(Outcome::Written(p))
        }
    }
}

async fn put(ctx: &Ctx, digest: &Digest, staged: tempfile::TempPath) -> anyhow::Result<()> {
    let key = layout::blob(digest);
    ctx.store
        .put_file(&key, &staged, &crate::commit::blob_put_options())
        .await
        .with_context(|| format!("cannot write {key} to {}", ctx.store.describe()))?;
    tracing::debug!("wrote {key}");
    // The store may have renamed the file away; dropping the guard then deletes nothing.
    drop(staged);
    Ok(())
}
