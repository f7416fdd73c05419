//! Random access to the files of a source: a directory, or a tar archive read in place.
//!
//! Layers can be gigabytes, so a tar is never extracted: one pass records where each entry's data
//! starts, and every later read opens its own handle and seeks there. That lets several uploads
//! read the same archive concurrently. A compressed archive has no usable offsets, so it is
//! decompressed once to a temporary file and indexed like a plain one.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};

/// Manifests, configs and `index.json` files are read whole; anything bigger than this is not one.
pub const MAX_METADATA_SIZE: u64 = 64 << 20;

/// The files of one source, addressed by their `/`-separated path relative to its root.
#[derive(Debug, Clone)]
pub enum Files {
    Dir(PathBuf),
    Tar(Arc<TarIndex>),
    /// The blobs of an image in another registry (`docker://`), streamed on read.
    Remote(Arc<crate::publish::remote::RemoteFiles>),
}

/// Where each regular file's data sits inside an uncompressed tar.
#[derive(Debug)]
pub struct TarIndex {
    /// The archive as given, for messages.
    display: PathBuf,
    /// The uncompressed archive actually read (the original, or a decompressed temporary copy).
    path: PathBuf,
    /// Keeps a decompressed copy alive (and deletes it when the source is dropped).
    _temp: Option<tempfile::TempPath>,
    entries: HashMap<String, Span>,
}

#[derive(Debug, Clone, Copy)]
struct Span {
    offset: u64,
    size: u64,
}

/// A readable file of the source and its length.
pub struct Opened {
    pub reader: Box<dyn Read + Send>,
    pub size: u64,
}

impl Files {
    /// Opens a tar archive (plain, gzip- or zstd-compressed) and indexes its entries.
    pub fn open_tar(path: &Path) -> anyhow::Result<Files> {
        let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut magic = [0u8; 4];
        let n = read_up_to(&mut f, &mut magic)?;
        f.seek(SeekFrom::Start(0))?;
        let decoder: Option<Box<dyn Read>> = match &magic[..n] {
            [0x1f, 0x8b, ..] => Some(Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(
                f,
            )))),
            [0x28, 0xb5, 0x2f, 0xfd] => Some(Box::new(zstd::stream::read::Decoder::new(f)?)),
            _ => None,
        };
        let (read_path, temp) = match decoder {
            None => (path.to_path_buf(), None),
            Some(mut d) => {
                tracing::info!(
                    "{} is compressed; decompressing to a temporary file",
                    path.display()
                );
                let mut tmp = tempfile::NamedTempFile::new()
                    .context("cannot create a temporary file to decompress the archive")?;
                io::copy(&mut d, tmp.as_file_mut())
                    .with_context(|| format!("cannot decompress {}", path.display()))?;
                let tmp = tmp.into_temp_path();
                (tmp.to_path_buf(), Some(tmp))
            }
        };
        let entries = index_tar(&read_path)
            .with_context(|| format!("cannot read {} as a tar archive", path.display()))?;
        Ok(Files::Tar(Arc::new(TarIndex {
            display: path.to_path_buf(),
            path: read_path,
            _temp: temp,
            entries,
        })))
    }

    /// The source's own name, for messages.
    pub fn display(&self) -> String {
        match self {
            Files::Dir(d) => d.display().to_string(),
            Files::Tar(t) => t.display.display().to_string(),
            Files::Remote(r) => r.display(),
        }
    }

    /// Opens `path`, or `None` when the source has no such file.
    pub fn open(&self, path: &str) -> anyhow::Result<Option<Opened>> {
        let path = normalize(path).with_context(|| format!("invalid path {path:?}"))?;
        match self {
            Files::Dir(root) => {
                let full = root.join(&path);
                match File::open(&full) {
                    Ok(f) => {
                        let md = f.metadata()?;
                        if !md.is_file() {
                            return Ok(None);
                        }
                        Ok(Some(Opened {
                            reader: Box::new(f),
                            size: md.len(),
                        }))
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(e).with_context(|| format!("cannot open {}", full.display())),
                }
            }
            Files::Tar(t) => {
                let Some(span) = t.entries.get(&path) else {
                    return Ok(None);
                };
                let mut f = File::open(&t.path)
                    .with_context(|| format!("cannot open {}", t.display.display()))?;
                f.seek(SeekFrom::Start(span.offset))?;
                Ok(Some(Opened {
                    reader: Box::new(f.take(span.size)),
                    size: span.size,
                }))
            }
            Files::Remote(r) => r.open(&path),
        }
    }

    pub fn exists(&self, path: &str) -> bool {
        match self {
            Files::Dir(root) => normalize(path).is_some_and(|p| root.join(p).is_file()),
            Files::Tar(t) => normalize(path).is_some_and(|p| t.entries.contains_key(&p)),
            Files::Remote(r) => r.exists(path),
        }
    }

    /// Reads a small metadata file whole, or `None` when it does not exist.
    pub fn read_small(&self, path: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let Some(mut o) = self.open(path)? else {
            return Ok(None);
        };
        if o.size > MAX_METADATA_SIZE {
            bail!(
                "{}: {path} is {} bytes, too big for a manifest, config or index",
                self.display(),
                o.size
            );
        }
        let mut buf = Vec::with_capacity(o.size as usize);
        o.reader
            .read_to_end(&mut buf)
            .with_context(|| format!("{}: cannot read {path}", self.display()))?;
        Ok(Some(buf))
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Normalises an archive path: `./a//b/../c` -> `a/c`. `None` if it climbs above the root.
fn normalize(path: &str) -> Option<String> {
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

/// Where a link entry points, before resolution.
enum Link {
    /// Symlink target, relative to the link's directory (or absolute = archive root).
    Sym(String),
    /// Hard link target, relative to the archive root.
    Hard(String),
}

/// One pass over the archive, seeking past data. Links are resolved to the regular file they name
/// because `docker save` writes a symlink for every layer it has already written once.
fn index_tar(path: &Path) -> anyhow::Result<HashMap<String, Span>> {
    let f = File::open(path)?;
    let mut archive = tar::Archive::new(BufReader::new(f));
    let mut entries = HashMap::new();
    let mut links: Vec<(String, Link)> = Vec::new();
    for entry in archive.entries_with_seek()? {
        let entry = entry?;
        let name = entry.path()?.to_string_lossy().into_owned();
        let Some(name) = normalize(&name) else {
            continue;
        };
        let kind = entry.header().entry_type();
        if kind.is_file() || kind.is_contiguous() {
            entries.insert(
                name,
                Span {
                    offset: entry.raw_file_position(),
                    size: entry.size(),
                },
            );
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
            if entries.contains_key(name) {
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
            if let Some(span) = target.and_then(|t| entries.get(&t).copied()) {
                entries.insert(name.clone(), span);
                progressed = true;
            }
        }
        if !progressed {
            break;
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn normalize_paths() {
        assert_eq!(normalize("./a//b/../c").as_deref(), Some("a/c"));
        assert_eq!(normalize("../x"), None);
        assert_eq!(normalize("."), None);
    }

    #[test]
    fn tar_entries_links_and_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        b.append_data(&mut h, "./a/layer.tar", &b"hello"[..])
            .unwrap();
        let mut l = tar::Header::new_gnu();
        l.set_entry_type(tar::EntryType::Symlink);
        l.set_size(0);
        b.append_link(&mut l, "b/layer.tar", "../a/layer.tar")
            .unwrap();
        let bytes = b.into_inner().unwrap();

        let plain = dir.path().join("x.tar");
        std::fs::write(&plain, &bytes).unwrap();
        let gz = dir.path().join("x.tar.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&bytes).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();

        for p in [plain, gz] {
            let files = Files::open_tar(&p).unwrap();
            for name in ["a/layer.tar", "b/layer.tar"] {
                assert_eq!(files.read_small(name).unwrap().unwrap(), b"hello", "{name}");
            }
            assert!(files.open("nope").unwrap().is_none());
        }
    }
}
