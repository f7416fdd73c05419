//! Deterministic layer compression, hashing both sides of the stream in the same pass.
//!
//! Registries serve compressed layers, but `docker save` and many OCI layouts hold plain tars.
//! Compressing them makes new blobs with new digests, so the output must be a pure function of the
//! input: same tar in, same bytes out, run after run (no timestamps, no file names, fixed level,
//! single-threaded encoders). Otherwise re-publishing would upload everything again and tags would
//! move for no reason. The uncompressed side is hashed on the way to check the config's `diff_id`,
//! which is what makes the compressed blob trustworthy.

use std::io::{self, BufRead, BufReader, Read, Write};

use crate::hashing::{HashingReader, HashingWriter};
use crate::publish::Compression;
use crate::reference::{Algorithm, Digest};

/// gzip level: Docker's and Go's default, the usual size/speed trade-off for registries.
const GZIP_LEVEL: u32 = 6;
/// zstd level: the library default, which containerd and buildkit also use.
const ZSTD_LEVEL: i32 = 3;
/// gzip header OS byte 255 ("unknown"), so the bytes do not depend on the publishing machine.
const GZIP_OS_UNKNOWN: u8 = 255;

const CHUNK: usize = 256 << 10;

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
            let mut enc = flate2::GzBuilder::new()
                .mtime(0)
                .operating_system(GZIP_OS_UNKNOWN)
                .write(sink, flate2::Compression::new(GZIP_LEVEL));
            pump(&mut plain, &mut enc)?;
            enc.finish()?
        }
        Compression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(sink, ZSTD_LEVEL)?;
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

    #[test]
    fn deterministic_and_checks_diff_id() {
        let tar = sample_tar();
        for c in [Compression::Gzip, Compression::Zstd] {
            let (a, bytes_a) = compress_layer(&tar[..], Vec::new(), c, u64::MAX).unwrap();
            let (b, bytes_b) = compress_layer(&tar[..], Vec::new(), c, u64::MAX).unwrap();
            assert_eq!(a, b, "{c:?}");
            assert_eq!(bytes_a, bytes_b);
            assert_eq!(a.diff_id, Digest::sha256_of(&tar));
            assert_eq!(a.uncompressed_size, tar.len() as u64);
            assert_eq!(a.digest, Digest::sha256_of(&bytes_a));
            assert_eq!(a.size, bytes_a.len() as u64);
            assert!(a.size < tar.len() as u64);
            // Compressing the compressed form gives the same blob again.
            let (again, _) = compress_layer(&bytes_a[..], Vec::new(), c, u64::MAX).unwrap();
            assert_eq!(again, a);
        }
        let (gz, bytes) =
            compress_layer(&tar[..], Vec::new(), Compression::Gzip, u64::MAX).unwrap();
        // No mtime, no file name: the header is fixed.
        assert_eq!(&bytes[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, tar);
        assert_eq!(gz.diff_id, Digest::sha256_of(&back));
    }

    #[test]
    fn a_layer_that_decodes_past_the_cap_is_refused() {
        let tar = sample_tar();
        let (_, gz) = compress_layer(&tar[..], Vec::new(), Compression::Gzip, u64::MAX).unwrap();
        let exact = tar.len() as u64;
        // Exactly at the cap passes, one byte under it does not, for plain and gzip input alike.
        for input in [&tar[..], &gz[..]] {
            let (c, _) = compress_layer(input, Vec::new(), Compression::Zstd, exact).unwrap();
            assert_eq!(c.uncompressed_size, exact);
            let err = compress_layer(input, Vec::new(), Compression::Zstd, exact - 1).unwrap_err();
            assert!(err.to_string().contains("--max-archive-bytes"), "{err}");
        }
    }
}
