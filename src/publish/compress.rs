//! Deterministic layer compression in one pass: read, hash the `diff_id`, compress on a worker
//! pool, hash the digest, write.
//!
//! Registries serve compressed layers, but `docker save` and many OCI layouts hold plain tars.
//! Compressing them makes new blobs with new digests, so the output must be a pure function of the
//! input: same tar in, same bytes out, run after run and whatever the number of threads (no
//! timestamps, no file names, fixed levels, block boundaries at fixed offsets). Otherwise
//! re-publishing would upload everything again and tags would move for no reason. gzip is cut into
//! blocks compressed in parallel (pgzip.rs); zstd runs its own multi-threaded mode, with at least
//! one worker always, since zero workers is another code path with other output. The
//! uncompressed side is hashed on the way to check the config's `diff_id`, which is what makes
//! the compressed blob trustworthy. Memory stays flat whatever the layer size: only a few blocks
//! per worker are in flight.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::Arc;

use crate::hashing::{HashingReader, HashingWriter};
use crate::publish::pgzip::ParallelGzip;
use crate::publish::Compression;
use crate::reference::{Algorithm, Digest};

/// zstd level: the library default, which containerd and buildkit also use.
const ZSTD_LEVEL: i32 = 3;
/// Input per zstd job. Half the library's default at level 3 halves the memory its workers
/// hold, for about the size single-threaded zstd gave (docs/performance.md, "Compression"); and
/// set here, a change of the library's default cannot change our output.
const ZSTD_JOB: u32 = 4 << 20;

const CHUNK: usize = 256 << 10;

/// The threads that compress layers, shared by every layer of a publish so that concurrent
/// layers together use no more threads than asked for.
#[derive(Clone)]
pub struct Workers {
    pool: Arc<rayon::ThreadPool>,
}

impl Workers {
    pub fn new(threads: usize) -> io::Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("compress-{i}"))
            // A panicking block then fails its layer (its result channel closes) instead of
            // aborting the process, which is rayon's default.
            .panic_handler(|_| {})
            .build()
            .map_err(io::Error::other)?;
        Ok(Workers {
            pool: Arc::new(pool),
        })
    }

    /// As many threads as `--jobs` asks for, but no more than the cores.
    pub fn for_jobs(jobs: usize) -> io::Result<Self> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Workers::new(jobs.min(cores))
    }

    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    pub fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        self.pool.spawn(job);
    }
}

/// The result of compressing one layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compressed {
    /// Digest and size of the compressed blob.
    pub digest: Digest,
    pub size: u64,
    /// Digest and size of the uncompressed tar (the `diff_id`).
    pub diff_id: Digest,
    pub uncompressed_size: u64,
}

/// Compresses a layer from `input` into `out`. Input that is already gzip- or zstd-compressed
/// (some tools write those into "uncompressed" slots) is decoded first, so the output only
/// depends on the tar inside it. The tar may be at most `max_plain` bytes: a few MB of gzip can
/// decode to terabytes, which would cost hours of CPU even though nothing is kept.
pub fn compress_layer<W: Write>(
    input: impl Read,
    out: W,
    compression: Compression,
    max_plain: u64,
    workers: &Workers,
) -> io::Result<(Compressed, W)> {
    let mut input = BufReader::with_capacity(CHUNK, input);
    let head = input.fill_buf()?;
    let decoded: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(input))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(input)?)
    } else {
        Box::new(input)
    };
    let capped = Capped {
        inner: decoded,
        left: max_plain,
        max: max_plain,
    };
    let mut plain = HashingReader::new(capped, Algorithm::Sha256);
    let sink = HashingWriter::new(out, Algorithm::Sha256);
    let sink = match compression {
        Compression::Gzip => {
            let mut enc = ParallelGzip::new(sink, workers)?;
            pump(&mut plain, &mut enc)?;
            enc.finish()?
        }
        Compression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(sink, ZSTD_LEVEL)?;
            let threads = u32::try_from(workers.threads()).unwrap_or(u32::MAX);
            enc.multithread(threads.max(1))?;
            enc.set_parameter(zstd::zstd_safe::CParameter::JobSize(ZSTD_JOB))?;
            pump(&mut plain, &mut enc)?;
            enc.finish()?
        }
    };
    let (mut out, digest, size) = sink.finish();
    out.flush()?;
    let (diff_id, uncompressed_size) = plain.finish();
    Ok((
        Compressed {
            digest,
            size,
            diff_id,
            uncompressed_size,
        },
        out,
    ))
}

/// A reader that fails once more than `left` bytes have come out of it.
struct Capped<R> {
    inner: R,
    left: u64,
    max: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Ask for one byte past the cap, so reaching it exactly is not an error.
        let want = buf
            .len()
            .min(usize::try_from(self.left.saturating_add(1)).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        match self.left.checked_sub(n as u64) {
            Some(left) => {
                self.left = left;
                Ok(n)
            }
            None => Err(io::Error::other(format!(
                "the layer decompresses to more than the {} bytes allowed (--max-archive-bytes)",
                crate::byte_size::ByteSize(self.max)
            ))),
        }
    }
}

fn pump(r: &mut impl Read, w: &mut impl Write) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => w.write_all(&buf[..n])?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::pgzip::tests::{cases, compressible};

    fn sample_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, "etc/data.bin", &data[..]).unwrap();
        b.into_inner().unwrap()
    }

    fn compress(input: &[u8], c: Compression, threads: usize) -> (Compressed, Vec<u8>) {
        let workers = Workers::new(threads).unwrap();
        compress_layer(input, Vec::new(), c, u64::MAX, &workers).unwrap()
    }

    fn decode(bytes: &[u8], c: Compression) -> Vec<u8> {
        let mut back = Vec::new();
        match c {
            Compression::Gzip => flate2::read::GzDecoder::new(bytes).read_to_end(&mut back),
            Compression::Zstd => zstd::stream::read::Decoder::new(bytes)
                .unwrap()
                .read_to_end(&mut back),
        }
        .unwrap();
        back
    }

    #[test]
    fn same_bytes_for_1_2_and_8_threads_and_honest_digests() {
        for c in [Compression::Gzip, Compression::Zstd] {
            for (name, input) in cases() {
                let (a, bytes) = compress(&input, c, 1);
                assert_eq!(a.diff_id, Digest::sha256_of(&input), "{c:?} {name}");
                assert_eq!(a.uncompressed_size, input.len() as u64, "{c:?} {name}");
                assert_eq!(a.digest, Digest::sha256_of(&bytes), "{c:?} {name}");
                assert_eq!(a.size, bytes.len() as u64, "{c:?} {name}");
                assert!(decode(&bytes, c) == input, "{c:?} {name}: decodes back");
                for threads in [2, 8] {
                    let (b, other) = compress(&input, c, threads);
                    assert_eq!(a, b, "{c:?} {name}: {threads} threads");
                    assert!(bytes == other, "{c:?} {name}: {threads} threads");
                }
            }
        }
    }

    #[test]
    fn zstd_output_does_not_depend_on_its_worker_count() {
        // Several zstd jobs, so several workers really share the work.
        let input = compressible(20 << 20);
        let (one, _) = compress(&input, Compression::Zstd, 1);
        for threads in [2, 3, 8] {
            let (other, _) = compress(&input, Compression::Zstd, threads);
            assert_eq!(one, other, "{threads} workers");
        }
        // Zero workers is a different format path: what nbWorkers >= 1 avoids.
        let single = zstd::stream::encode_all(&input[..], ZSTD_LEVEL).unwrap();
        assert_ne!(Digest::sha256_of(&single), one.digest);
    }

    /// The compressed bytes of a fixed input. Layers compressed by another version of the
    /// compressors get other digests (re-publishing stores new blobs), so a dependency update
    /// that changes these must be a decision: note it in docs/layout.md, then update the digests.
    #[test]
    fn compressed_bytes_are_pinned() {
        // Many gzip blocks and a few zstd jobs.
        let input = compressible(9 << 20);
        for (c, want) in [
            (
                Compression::Gzip,
                "sha256:fe405be7161c6d35827f68fd830921b8d05b7b9f56a5d8f90a6dbf16ad32f66e",
            ),
            (
                Compression::Zstd,
                "sha256:f31d93c2d4865176c8b487e8e7de0cf81bec8b9720167f73098b300c9c632326",
            ),
        ] {
            let (got, _) = compress(&input, c, 2);
            assert_eq!(got.digest.to_string(), want, "{c:?}");
        }
    }

    #[test]
    fn compressed_input_is_decoded_first() {
        let tar = sample_tar();
        for c in [Compression::Gzip, Compression::Zstd] {
            let (a, bytes) = compress(&tar, c, 2);
            assert!(a.size < tar.len() as u64);
            // Compressing the compressed form gives the same blob again.
            let (again, _) = compress(&bytes, c, 2);
            assert_eq!(again, a, "{c:?}");
        }
    }

    #[test]
    fn a_layer_that_decodes_past_the_cap_is_refused() {
        let tar = sample_tar();
        let (_, gz) = compress(&tar, Compression::Gzip, 2);
        let workers = Workers::new(2).unwrap();
        let exact = tar.len() as u64;
        // Exactly at the cap passes, one byte under it does not, for plain and gzip input alike.
        for input in [&tar[..], &gz[..]] {
            for c in [Compression::Gzip, Compression::Zstd] {
                let (got, _) = compress_layer(input, Vec::new(), c, exact, &workers).unwrap();
                assert_eq!(got.uncompressed_size, exact);
                let err = compress_layer(input, Vec::new(), c, exact - 1, &workers).unwrap_err();
                assert!(err.to_string().contains("--max-archive-bytes"), "{err}");
            }
        }
    }
}
