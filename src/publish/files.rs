//! Random access to the files of a source: a directory, a tar archive (see archive.rs), or a
//! registry.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};

use crate::publish::archive::{normalize, ArchiveLimits, TarIndex};

/// Manifests, configs and `index.json` files are read whole; anything bigger than this is not one
/// (the same cap as for manifests fetched from a registry).
pub const MAX_METADATA_SIZE: u64 = crate::registry::client::MAX_MANIFEST_SIZE as u64;

/// The files of one source, addressed by their `/`-separated path relative to its root.
#[derive(Debug, Clone)]
pub enum Files {
    Dir(PathBuf),
    Tar(Arc<TarIndex>),
    /// The blobs of an image in another registry (`docker://`), streamed on read.
    Remote(Arc<crate::publish::remote::RemoteFiles>),
}

/// A readable file of the source and its length.
pub struct Opened {
    pub reader: Box<dyn Read + Send>,
    pub size: u64,
}

impl Files {
    /// Opens a tar archive (plain, gzip- or zstd-compressed) with the default limits.
    #[cfg(test)]
    pub fn open_tar(path: &Path) -> anyhow::Result<Files> {
        Self::open_archive(path, &ArchiveLimits::default())
    }

    /// Opens a tar archive (plain, gzip- or zstd-compressed) and indexes its members.
    pub fn open_archive(path: &Path, limits: &ArchiveLimits) -> anyhow::Result<Files> {
        Ok(Files::Tar(Arc::new(TarIndex::open(path, limits)?)))
    }

    /// Gets these files ready to be read, in one go where that is cheaper than one by one
    /// (the members of a compressed archive). Paths the source lacks are ignored here.
    pub fn prefetch<'a>(&self, paths: impl IntoIterator<Item = &'a str>) -> anyhow::Result<()> {
        match self {
            Files::Tar(t) => {
                let names: Vec<String> = paths.into_iter().filter_map(normalize).collect();
                t.prefetch(names.iter().map(String::as_str))
            }
            Files::Dir(_) | Files::Remote(_) => Ok(()),
        }
    }

    /// One name for the file `path` is, whichever of its names (links) is used, so two paths
    /// are the same content exactly when their canonical names are equal.
    pub fn canonical(&self, path: &str) -> Option<String> {
        let p = normalize(path)?;
        match self {
            Files::Tar(t) => t.canonical(&p).map(str::to_owned),
            Files::Dir(_) | Files::Remote(_) => Some(p),
        }
    }

    /// The source's own name, for messages.
    pub fn display(&self) -> String {
        match self {
            Files::Dir(d) => d.display().to_string(),
            Files::Tar(t) => t.display().display().to_string(),
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
            Files::Tar(t) => Ok(t.open_member(&path)?.map(|m| Opened {
                reader: m.reader,
                size: m.size,
            })),
            Files::Remote(r) => r.open(&path),
        }
    }

    pub fn exists(&self, path: &str) -> bool {
        match self {
            Files::Dir(root) => normalize(path).is_some_and(|p| root.join(p).is_file()),
            Files::Tar(t) => normalize(path).is_some_and(|p| t.contains(&p)),
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
