//! Tar archives as a source: indexed in one pass, read in place, and for compressed archives
//! decompressed only as far as the image needs.
//!
//! Layers can be gigabytes, so a tar is never extracted. A plain tar is read where it lies: the
//! scan records where each member's data starts and later reads seek there. A compressed tar has
//! no usable offsets, so its members are copied ("spilled") into one temporary file; but only
//! members the image uses. The scan keeps the small ones (manifests and configs are small, and a
//! second pass just for them would cost more than writing them), the rest are spilled when asked
//! for, all wanted ones in one more pass ([`TarIndex::prefetch`]).
//!
//! Everything here is hostile input: the decompressed stream is capped ([`ArchiveLimits`]), so a
//! gzip bomb ends the scan at the cap instead of filling the disk, and so are the number of
//! members and the header bytes (long names, pax records) the tar reader buffers per member.

use std::cell::Cell;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Mutex;

use anyhow::{bail, Context};

pub use crate::byte_size::ByteSize;

/// The default cap on what a compressed archive may decompress to.
pub const DEFAULT_MAX_EXPANDED: u64 = 64 << 30;
/// Members (files, directories, links) an archive may have. `docker save` writes about four per
/// layer, so this is far above any real image and keeps the index to a few MiB of memory.
pub const MAX_MEMBERS: usize = 100_000;
/// Bytes the tar reader may buffer for one member's headers (GNU long names, pax records): it
/// reads those whole into memory, so an unbounded one is a memory bomb.
const MAX_HEADER_BYTES: u64 = 1 << 20;
/// Members up to this size are spilled during the scan, since they are likely manifests/configs.
const EAGER_MEMBER_MAX: u64 = 1 << 20;
/// But no more than this in total, so unreferenced small members cannot fill the temp dir either.
const EAGER_TOTAL_MAX: u64 = 256 << 20;
const CHUNK: usize = 256 << 10;

const _: () = assert!(EAGER_MEMBER_MAX <= MAX_HEADER_BYTES);

/// What an archive source may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveLimits {
    /// Bytes a compressed archive may decompress to (its tar stream): also the most it can put
    /// in the temporary directory. `--max-archive-bytes`, `[publish] max_archive_bytes`.
    pub max_expanded: u64,
}

impl Default for ArchiveLimits {
    fn default() -> Self {
        ArchiveLimits {
            max_expanded: DEFAULT_MAX_EXPANDED,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Codec {
    Gzip,
    Zstd,
}

impl Codec {
    fn sniff(f: &mut File) -> io::Result<Option<Codec>> {
        let mut magic = [0u8; 4];
        let mut n = 0;
        while n < magic.len() {
            match f.read(&mut magic[n..])? {
                0 => break,
                k => n += k,
            }
        }
        f.seek(SeekFrom::Start(0))?;
        Ok(match &magic[..n] {
            [0x1f, 0x8b, ..] => Some(Codec::Gzip),
            [0x28, 0xb5, 0x2f, 0xfd] => Some(Codec::Zstd),
            _ => None,
        })
    }

    fn decoder(self, f: File) -> io::Result<Box<dyn Read + Send>> {
        let f = BufReader::with_capacity(CHUNK, f);
        Ok(match self {
            Codec::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(f)),
            Codec::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(f)?),
        })
    }
}

/// One regular file of the archive: where its data sits in the (uncompressed) tar stream.
#[derive(Debug)]
struct Member {
    name: String,
    offset: u64,
    size: u64,
}

/// An indexed tar archive.
#[derive(Debug)]
pub struct TarIndex {
    /// The archive as given, for messages.
    display: PathBuf,
    members: Vec<Member>,
    /// Every name, links included, to its member.
    names: HashMap<String, usize>,
    /// `None`: a plain tar, read in place.
    spill: Option<Spill>,
}

/// The temporary file a compressed archive's members are copied into.
#[derive(Debug)]
struct Spill {
    codec: Codec,
    /// Deleted when the source is dropped.
    temp: tempfile::TempPath,
    state: Mutex<SpillState>,
}

#[derive(Debug)]
struct SpillState {
    file: File,
    end: u64,
    /// Where each member sits in the temporary file, once spilled.
    at: Vec<Option<u64>>,
}

/// A member opened for reading.
pub struct OpenedMember {
    pub reader: Box<dyn Read + Send>,
    pub size: u64,
}

impl TarIndex {
    /// Scans the archive at `path` (plain, gzip or zstd).
    pub fn open(path: &Path, limits: &ArchiveLimits) -> anyhow::Result<TarIndex> {
        let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let codec = Codec::sniff(&mut f)?;
        let guard = Rc::new(Guard::default());
        let (stream, mut spill) = match codec {
            None => (Stream::Plain(BufReader::with_capacity(CHUNK, f)), None),
            Some(c) => {
                tracing::info!(
                    "{} is compressed; spilling the members the image uses to a temporary file",
                    path.display()
                );
                let tmp = tempfile::NamedTempFile::new()
                    .context("cannot create a temporary file for the compressed archive")?;
                let (file, temp) = tmp.into_parts();
                let spill = Spill {
                    codec: c,
                    temp,
                    state: Mutex::new(SpillState {
                        file,
                        end: 0,
                        at: Vec::new(),
                    }),
                };
                (Stream::Decoded(c.decoder(f)?), Some(spill))
            }
        };
        let limit = if codec.is_some() {
            limits.max_expanded
        } else {
            u64::MAX
        };
        let scan = Scan {
            inner: stream,
            pos: 0,
            limit,
            guard: guard.clone(),
        };
        let scanned = scan_members(scan, &guard, spill.as_mut());
        if guard.exceeded.get() {
            bail!(
                "{}: the compressed archive expands to more than {}, the limit set by --max-archive-bytes / [publish] max_archive_bytes; raise it if the image really is that big",
                path.display(),
                ByteSize(limit)
            );
        }
        if guard.header_overflow.get() {
            bail!(
                "{}: a member's tar headers (long names, pax records) exceed {MAX_HEADER_BYTES} bytes",
                path.display()
            );
        }
        let (members, names) =
            scanned.with_context(|| format!("cannot read {} as a tar archive", path.display()))?;
        if let Some(s) = &mut spill {
            let st = s.state.get_mut().expect("not shared yet");
            st.at.resize(members.len(), None);
        }
        Ok(TarIndex {
            display: path.to_path_buf(),
            members,
            names,
            spill,
        })
    }

    pub fn display(&self) -> &Path {
        &self.display
    }

    pub fn contains(&self, name: &str) -> bool {
        self.names.contains_key(name)
    }

    /// The name of the regular file `name` is or links to: equal for two names of one file.
    pub fn canonical(&self, name: &str) -> Option<&str> {
        self.names.get(name).map(|&i| self.members[i].name.as_str())
    }

    /// Opens member `name` (a normalised path), or `None` when the archive has no such file.
    pub fn open_member(&self, name: &str) -> anyhow::Result<Option<OpenedMember>> {
        let Some(&i) = self.names.get(name) else {
            return Ok(None);
        };
        let m = &self.members[i];
        let (path, offset) = match &self.spill {
            None => (self.display.as_path(), m.offset),
            Some(s) => (s.temp.as_ref(), self.spilled_at(s, i)?),
        };
        let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        f.seek(SeekFrom::Start(offset))?;
        Ok(Some(OpenedMember {
            reader: Box::new(f.take(m.size)),
            size: m.size,
        }))
    }

    /// Spills every named member not spilled yet, in one pass (a no-op for plain archives).
    pub fn prefetch<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> anyhow::Result<()> {
        let Some(s) = &self.spill else {
            return Ok(());
        };
        let wanted: Vec<usize> = names
            .into_iter()
            .filter_map(|n| self.names.get(n).copied())
            .collect();
        self.fill(s, wanted)
    }

    fn spilled_at(&self, s: &Spill, i: usize) -> anyhow::Result<u64> {
        if let Some(at) = s.state.lock().expect("spill lock").at[i] {
            return Ok(at);
        }
        self.fill(s, vec![i])?;
        Ok(s.state.lock().expect("spill lock").at[i].expect("just spilled"))
    }

    /// Decompresses the archive once more, copying the `wanted` members into the spill file.
    fn fill(&self, s: &Spill, mut wanted: Vec<usize>) -> anyhow::Result<()> {
        let mut st = s.state.lock().expect("spill lock");
        wanted.retain(|&i| st.at[i].is_none());
        wanted.sort_by_key(|&i| self.members[i].offset);
        wanted.dedup();
        if wanted.is_empty() {
            return Ok(());
        }
        let bytes: u64 = wanted.iter().map(|&i| self.members[i].size).sum();
        tracing::debug!(
            "{}: spilling {} member(s), {bytes} bytes",
            self.display.display(),
            wanted.len()
        );
        let f = File::open(&self.display)
            .with_context(|| format!("cannot open {}", self.display.display()))?;
        let mut r = s.codec.decoder(f)?;
        let mut pos = 0;
        let mut buf = vec![0u8; CHUNK];
        let st = &mut *st;
        st.file.seek(SeekFrom::Start(st.end))?;
        for i in wanted {
            let m = &self.members[i];
            let short = |what: &str| {
                format!(
                    "{}: the archive ended before {} ({what}); did it change while publishing?",
                    self.display.display(),
                    m.name
                )
            };
            copy_exact(&mut r, &mut io::sink(), m.offset - pos, &mut buf)
                .with_context(|| short("skipping to it"))?;
            copy_exact(&mut r, &mut st.file, m.size, &mut buf)
                .with_context(|| short("reading it"))?;
            st.at[i] = Some(st.end);
            st.end += m.size;
            pos = m.offset + m.size;
        }
        st.file.flush()?;
        Ok(())
    }
}

/// Copies exactly `n` bytes, failing on a short input.
fn copy_exact(r: &mut impl Read, w: &mut impl Write, mut n: u64, buf: &mut [u8]) -> io::Result<()> {
    while n > 0 {
        let k = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
        match r.read(&mut buf[..k]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(got) => {
                w.write_all(&buf[..got])?;
                n -= got as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What the scan loop and the stream it reads share.
#[derive(Default)]
struct Guard {
    /// Bytes the tar reader read (not skipped) since the loop last saw a member.
    header_bytes: Cell<u64>,
    exceeded: Cell<bool>,
    header_overflow: Cell<bool>,
}

enum Stream {
    Plain(BufReader<File>),
    Decoded(Box<dyn Read + Send>),
}

/// The tar stream as the scan sees it: capped at `limit`, and seekable forward even when
/// decompressed (by discarding), so the tar reader skips member data instead of reading it.
struct Scan {
    inner: Stream,
    pos: u64,
    limit: u64,
    guard: Rc<Guard>,
}

impl Scan {
    fn pull(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match &mut self.inner {
            Stream::Plain(r) => r.read(buf)?,
            Stream::Decoded(r) => r.read(buf)?,
        };
        self.pos += n as u64;
        if self.pos > self.limit {
            self.guard.exceeded.set(true);
            return Err(io::Error::other("the archive expands beyond the limit"));
        }
        Ok(n)
    }
}

impl Read for Scan {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.pull(buf)?;
        let h = self.guard.header_bytes.get() + n as u64;
        self.guard.header_bytes.set(h);
        if h > MAX_HEADER_BYTES {
            self.guard.header_overflow.set(true);
            return Err(io::Error::other("tar headers too large"));
        }
        Ok(n)
    }
}

impl Seek for Scan {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let ahead = match to {
            SeekFrom::Current(n) if n >= 0 => n as u64,
            SeekFrom::Start(n) if n >= self.pos => n - self.pos,
            _ => return Err(io::Error::other("the tar scan only moves forward")),
        };
        match &mut self.inner {
            Stream::Plain(r) => {
                r.seek_relative(ahead as i64)?;
                self.pos += ahead;
            }
            Stream::Decoded(_) => {
                let mut left = ahead;
                let mut buf = vec![0u8; CHUNK.min(usize::try_from(ahead).unwrap_or(CHUNK))];
                while left > 0 {
                    let k = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    match self.pull(&mut buf[..k])? {
                        // A truncated archive: the next header read sees the end.
                        0 => break,
                        n => left -= n as u64,
                    }
                }
            }
        }
        Ok(self.pos)
    }
}

type Scanned = (Vec<Member>, HashMap<String, usize>);

/// Where a link member points, before resolution.
enum Link {
    /// Symlink target, relative to the link's directory (or absolute = archive root).
    Sym(String),
    /// Hard link target, relative to the archive root.
    Hard(String),
}

/// One pass over the archive. Links are resolved to the regular file they name because
/// `docker save` writes a symlink for every layer it has already written once.
fn scan_members(
    scan: Scan,
    guard: &Guard,
    mut spill: Option<&mut Spill>,
) -> anyhow::Result<Scanned> {
    let mut archive = tar::Archive::new(scan);
    let mut members: Vec<Member> = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut links: Vec<(String, Link)> = Vec::new();
    let mut eager_total = 0u64;
    let mut buf = Vec::new();
    let mut count = 0usize;
    for entry in archive.entries_with_seek()? {
        let mut entry = entry?;
        guard.header_bytes.set(0);
        count += 1;
        if count > MAX_MEMBERS {
            bail!("more than {MAX_MEMBERS} members; not an image archive");
        }
        let name = entry.path()?.to_string_lossy().into_owned();
        let Some(name) = normalize(&name) else {
            continue;
        };
        let kind = entry.header().entry_type();
        if kind.is_file() || kind.is_contiguous() {
            let (offset, size) = (entry.raw_file_position(), entry.size());
            if let Some(s) = spill.as_deref_mut() {
                if size <= EAGER_MEMBER_MAX && eager_total + size <= EAGER_TOTAL_MAX {
                    let st = s.state.get_mut().expect("not shared yet");
                    buf.resize(CHUNK, 0);
                    copy_exact(&mut entry, &mut st.file, size, &mut buf)?;
                    guard.header_bytes.set(0);
                    st.at.resize(members.len(), None);
                    st.at.push(Some(st.end));
                    st.end += size;
                    eager_total += size;
                }
            }
            names.insert(name.clone(), members.len());
            members.push(Member { name, offset, size });
        } else if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name()?
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            links.push((
                name,
                if kind.is_symlink() {
                    Link::Sym(target)
                } else {
                    Link::Hard(target)
                },
            ));
        }
    }
    // Links may point at links; a few rounds settle any sane chain, and cycles just stay dangling.
    for _ in 0..8 {
        let mut progressed = false;
        for (name, link) in &links {
            if names.contains_key(name) {
                continue;
            }
            let target = match link {
                Link::Hard(t) => normalize(t),
                Link::Sym(t) if t.starts_with('/') => normalize(t),
                Link::Sym(t) => {
                    let dir = name.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                    normalize(&format!("{dir}/{t}"))
                }
            };
            if let Some(i) = target.and_then(|t| names.get(&t).copied()) {
                names.insert(name.clone(), i);
                progressed = true;
            }
        }
        if !progressed {
            break;
        }
    }
    Ok((members, names))
}

/// Normalises an archive path: `./a//b/../c` -> `a/c`. `None` if it climbs above the root.
pub fn normalize(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return None;
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn tar_of(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in members {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn spilled_bytes(t: &TarIndex) -> u64 {
        std::fs::metadata(&t.spill.as_ref().unwrap().temp)
            .unwrap()
            .len()
    }

    fn read(t: &TarIndex, name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        t.open_member(name)
            .unwrap()
            .unwrap()
            .reader
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn only_wanted_members_are_spilled() {
        let small = b"{\"small\":1}".to_vec();
        let wanted = vec![7u8; 3 << 20];
        let other = vec![9u8; 5 << 20];
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.tar.gz");
        let members = [
            ("m.json", &small[..]),
            ("big", &wanted[..]),
            ("junk", &other[..]),
        ];
        std::fs::write(&file, gz(&tar_of(&members))).unwrap();

        let t = TarIndex::open(&file, &ArchiveLimits::default()).unwrap();
        assert_eq!(
            spilled_bytes(&t),
            small.len() as u64,
            "the scan keeps small members only"
        );
        assert_eq!(read(&t, "m.json"), small);
        t.prefetch(["big", "m.json", "nope"]).unwrap();
        assert_eq!(spilled_bytes(&t), (small.len() + wanted.len()) as u64);
        assert_eq!(read(&t, "big"), wanted);
        // Asked for without a prefetch: spilled then, once.
        assert_eq!(read(&t, "junk"), other);
        assert_eq!(read(&t, "junk"), other);
        assert_eq!(
            spilled_bytes(&t),
            (small.len() + wanted.len() + other.len()) as u64
        );
    }

    #[test]
    fn the_cap_counts_the_decompressed_stream() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.tar.gz");
        let bytes = tar_of(&[("zeros", &vec![0u8; 4 << 20][..])]);
        std::fs::write(&file, gz(&bytes)).unwrap();
        let tight = ArchiveLimits {
            max_expanded: 1 << 20,
        };
        let err = format!("{:#}", TarIndex::open(&file, &tight).unwrap_err());
        assert!(err.contains("expands to more than 1MiB,"), "{err}");
        let exact = ArchiveLimits {
            max_expanded: bytes.len() as u64,
        };
        TarIndex::open(&file, &exact).unwrap();
        // A plain tar expands to nothing: no cap.
        let plain = dir.path().join("a.tar");
        std::fs::write(&plain, &bytes).unwrap();
        TarIndex::open(&plain, &tight).unwrap();
    }

    #[test]
    fn huge_long_names_are_refused() {
        // A GNU long-name member the tar reader would read whole into memory.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::GNULongName);
        h.set_size(2 << 20);
        h.set_path("././@LongLink").unwrap();
        h.set_cksum();
        b.append(&h, &vec![b'a'; 2 << 20][..]).unwrap();
        let mut f = tar::Header::new_gnu();
        f.set_size(1);
        b.append_data(&mut f, "x", &b"x"[..]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("long.tar");
        std::fs::write(&file, b.into_inner().unwrap()).unwrap();
        let err = format!(
            "{:#}",
            TarIndex::open(&file, &ArchiveLimits::default()).unwrap_err()
        );
        assert!(err.contains("tar headers"), "{err}");
    }
}
