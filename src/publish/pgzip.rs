//! Parallel, deterministic gzip: the pigz method, one gzip member made of blocks compressed
//! independently on the shared worker pool.
//!
//! The input is cut into [`BLOCK`]-byte blocks at fixed offsets. Each block is compressed as raw
//! deflate, primed with the 32 KiB of input before it as its dictionary (so matches still reach
//! back across the cut, and the size stays that of one stream), and ended with a sync flush (an
//! empty stored block, which byte-aligns it); the last block ends the deflate stream instead.
//! Concatenated in order, the blocks are one valid deflate stream, framed by a fixed header and
//! the trailer (CRC-32 and length of the whole input), which the caller's thread computes as the
//! input passes.
//!
//! Why the output is a pure function of the input: a block's bytes depend only on its input, the
//! 32 KiB before it and the level, never on which thread or how many compressed it; and
//! zlib-rs's match finder hashes the same way on every CPU (SIMD only speeds up comparisons).
//!
//! Why hand-written: the single-threaded encoder was the publish bottleneck (docs/performance.md,
//! "Compression"), and the crate that does this (gzp) spawns its own threads per writer and wants
//! a `'static` writer, where concurrent layers must share one pool and write to a borrowed file.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc;

use flate2::{Compress, Crc, FlushCompress, Status};

use crate::publish::compress::Workers;

/// Input per block. Blocks of 128 KiB to 1 MiB measured the same for size and CPU time
/// (docs/performance.md, "Compression"), so the smallest, pigz's default, keeps the memory in
/// flight lowest.
pub const BLOCK: usize = 128 << 10;
/// With zlib-rs, level 5 gives nearly level 6's size for clearly less CPU, and about the size the
/// previous encoder gave at level 6 (docs/performance.md, "Compression").
pub const LEVEL: u32 = 5;
/// The deflate window: how far back a match can reach, so the dictionary a block needs.
const WINDOW: usize = 32 << 10;
/// No file name, mtime 0, XFL 0 (level 5 is neither the "best" nor the "fastest"), OS 255
/// ("unknown"): nothing in it depends on the file, the time or the machine.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// A gzip writer that compresses its input on [`Workers`], a bounded number of blocks at once.
/// Call [`ParallelGzip::finish`] at the end: dropping it loses the tail of the stream.
pub struct ParallelGzip<'w, W: Write> {
    out: W,
    workers: &'w Workers,
    /// The block being filled. A full one is sent off only when more input comes, since the
    /// last block must end the stream.
    block: Vec<u8>,
    /// The last [`WINDOW`] bytes of the blocks sent off: the next one's dictionary.
    window: Vec<u8>,
    /// Blocks being compressed, in input order.
    in_flight: VecDeque<mpsc::Receiver<io::Result<Vec<u8>>>>,
    crc: Crc,
}

impl<'w, W: Write> ParallelGzip<'w, W> {
    pub fn new(mut out: W, workers: &'w Workers) -> io::Result<Self> {
        out.write_all(&HEADER)?;
        Ok(ParallelGzip {
            out,
            workers,
            block: Vec::with_capacity(BLOCK),
            window: Vec::new(),
            in_flight: VecDeque::new(),
            crc: Crc::new(),
        })
    }

    /// Ends the stream: the last block, then the trailer. Returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        let last = std::mem::take(&mut self.block);
        self.send(last, true)?;
        while let Some(rx) = self.in_flight.pop_front() {
            write_block(&mut self.out, &rx)?;
        }
        self.out.write_all(&self.crc.sum().to_le_bytes())?;
        // ISIZE is the length modulo 2^32 (RFC 1952).
        self.out.write_all(&self.crc.amount().to_le_bytes())?;
        Ok(self.out)
    }

    /// Queues `block` on the pool, after writing out the oldest blocks while too many are in
    /// flight. Two per worker keep every worker busy while this thread reads and writes.
    fn send(&mut self, block: Vec<u8>, last: bool) -> io::Result<()> {
        while self.in_flight.len() >= 2 * self.workers.threads() {
            let rx = self.in_flight.pop_front().expect("not empty");
            write_block(&mut self.out, &rx)?;
        }
        let dictionary = std::mem::take(&mut self.window);
        if !last {
            // Full blocks are larger than the window, so this is always a whole window.
            self.window = block[block.len().saturating_sub(WINDOW)..].to_vec();
        }
        let (tx, rx) = mpsc::sync_channel(1);
        self.workers.spawn(move || {
            // The receiver is gone only if the layer already failed.
            let _ = tx.send(deflate_block(&dictionary, &block, last));
        });
        self.in_flight.push_back(rx);
        Ok(())
    }
}

impl<W: Write> Write for ParallelGzip<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.block.len() == BLOCK {
            let full = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK));
            self.send(full, false)?;
        }
        let n = buf.len().min(BLOCK - self.block.len());
        self.block.extend_from_slice(&buf[..n]);
        self.crc.update(&buf[..n]);
        Ok(n)
    }

    /// Writes out what is already compressed; block boundaries stay where they are, so flushing
    /// does not change the output.
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

fn write_block(out: &mut impl Write, rx: &mpsc::Receiver<io::Result<Vec<u8>>>) -> io::Result<()> {
    let bytes = rx
        .recv()
        .map_err(|_| io::Error::other("a gzip compression worker failed"))??;
    out.write_all(&bytes)
}

/// One block as raw deflate: a sync flush ends it, or the end of the stream if it is the last.
fn deflate_block(dictionary: &[u8], input: &[u8], last: bool) -> io::Result<Vec<u8>> {
    let mut z = Compress::new(flate2::Compression::new(LEVEL), false);
    if !dictionary.is_empty() {
        z.set_dictionary(dictionary).map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    // Room for stored (incompressible) input, so one call nearly always does it.
    let mut out = Vec::with_capacity(input.len() + input.len() / 16 + 64);
    loop {
        let done = usize::try_from(z.total_in()).expect("a block fits in memory");
        let status = z
            .compress_vec(&input[done..], &mut out, flush)
            .map_err(io::Error::other)?;
        let consumed = z.total_in() == input.len() as u64;
        // A flush is complete once a call leaves output space unused (zlib's contract).
        match status {
            Status::StreamEnd => return Ok(out),
            _ if !last && consumed && out.len() < out.capacity() => return Ok(out),
            _ => out.reserve(out.capacity() / 4 + 64),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::io::Read;
    use std::process::{Command, Stdio};

    fn gzip_with(threads: usize, input: &[u8], write_size: usize) -> Vec<u8> {
        let workers = Workers::new(threads).unwrap();
        let mut gz = ParallelGzip::new(Vec::new(), &workers).unwrap();
        for piece in input.chunks(write_size) {
            gz.write_all(piece).unwrap();
        }
        gz.finish().unwrap()
    }

    /// Text-like data that compresses, with repeats further back than a block.
    pub(in crate::publish) fn compressible(len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        let mut i = 0u64;
        while out.len() < len {
            let line = format!("line {} of a layer, field {}\n", i % 7919, i % 13);
            out.extend_from_slice(line.as_bytes());
            i += 1;
        }
        out.truncate(len);
        out
    }

    /// xorshift bytes: deflate can only store them.
    fn incompressible(len: usize, seed: u64) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ seed;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// Inputs around the block size, shared with compress.rs's tests.
    pub(in crate::publish) fn cases() -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("empty", Vec::new()),
            ("one byte", b"x".to_vec()),
            ("one block", compressible(BLOCK)),
            ("one block + 1", compressible(BLOCK + 1)),
            ("many blocks", compressible(7 * BLOCK + 12_345)),
            ("incompressible", incompressible(3 * BLOCK + 7, 1)),
        ]
    }

    /// gzip(1) from the system, as a client that did not link our decoder.
    fn system_gzip(args: &[&str], input: &[u8]) -> std::process::Output {
        let mut child = Command::new("gzip")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gzip(1) is installed");
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let feeder = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output().unwrap();
        feeder.join().unwrap().unwrap();
        out
    }

    #[test]
    fn same_bytes_for_any_thread_count_and_write_size() {
        for (name, input) in cases() {
            let one = gzip_with(1, &input, 64 << 10);
            for (threads, write_size) in [(2, 1000), (8, 64 << 10), (8, BLOCK + 3), (3, 1)] {
                if write_size == 1 && input.len() > 2 * BLOCK {
                    continue; // byte-by-byte writes of a large input only cost time
                }
                let other = gzip_with(threads, &input, write_size);
                assert!(
                    one == other,
                    "{name}: {threads} threads, writes of {write_size}"
                );
            }
        }
    }

    #[test]
    fn output_is_one_gzip_member_that_decodes_to_the_input() {
        for (name, input) in cases() {
            let gz = gzip_with(2, &input, 50_000);
            assert_eq!(&gz[..10], &HEADER, "{name}");
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut back)
                .unwrap();
            assert!(back == input, "{name}: GzDecoder");
            // GzDecoder stops after one member; MultiGzDecoder would read on. Equal output
            // from both, and no bytes after the first member, make it a single member.
            let mut multi = Vec::new();
            flate2::read::MultiGzDecoder::new(&gz[..])
                .read_to_end(&mut multi)
                .unwrap();
            assert!(multi == input, "{name}: MultiGzDecoder");
            let mut dec = flate2::bufread::GzDecoder::new(&gz[..]);
            io::copy(&mut dec, &mut io::sink()).unwrap();
            assert!(
                dec.into_inner().is_empty(),
                "{name}: bytes after the member"
            );
            // Incompressible blocks are stored, so the output is barely larger than the input.
            if name == "incompressible" {
                assert!(gz.len() < input.len() + input.len() / 100, "{}", gz.len());
            } else if input.len() > BLOCK {
                assert!(gz.len() < input.len() / 5, "{name}: {} bytes", gz.len());
            }
        }
    }

    #[test]
    fn system_gzip_accepts_it() {
        for (name, input) in cases() {
            let gz = gzip_with(4, &input, 64 << 10);
            let t = system_gzip(&["-t"], &gz);
            assert!(t.status.success(), "{name}: gzip -t: {t:?}");
            let dc = system_gzip(&["-dc"], &gz);
            assert!(dc.status.success(), "{name}: gzip -dc: {dc:?}");
            assert!(dc.stdout == input, "{name}: gzip -dc output differs");
        }
    }

    #[test]
    fn blocks_reach_back_into_the_block_before() {
        // 16 KiB of noise at the end of the first block, again at the start of the second: only
        // the dictionary lets the second copy be a match instead of stored bytes.
        let noise = incompressible(16 << 10, 1);
        let mut input = incompressible(BLOCK - noise.len(), 2);
        input.extend_from_slice(&noise);
        input.extend_from_slice(&noise);
        input.extend_from_slice(&incompressible(100, 3));
        let gz = gzip_with(2, &input, 64 << 10);
        assert!(
            gz.len() < input.len() - (12 << 10),
            "{} of {}",
            gz.len(),
            input.len()
        );
    }
}
