//! A directory as an object store: the embedded default, and the easiest way to test.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use crate::layout;

use super::{
    ByteStream, Object, ObjectMeta, PutMode, PutOptions, Store, StoreError, StoreResult, Version,
};

/// Objects are files under `root`; writes go through a temp file and a rename, and conditional
/// writes take an exclusive lock so compare-and-swap is real across processes.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

const STAGING: &str = layout::LOCAL_STAGING_DIR;
const LOCKS: &str = layout::LOCAL_LOCKS_DIR;

impl LocalStore {
    pub fn open(root: impl AsRef<Path>) -> anyhow::Result<Self> {
        let root = root.as_ref();
        fs::create_dir_all(root)
            .with_context(|| format!("cannot create store directory {}", root.display()))?;
        let root = root
            .canonicalize()
            .with_context(|| format!("cannot open store directory {}", root.display()))?;
        fs::create_dir_all(root.join(STAGING))?;
        fs::create_dir_all(root.join(LOCKS))?;
        Ok(LocalStore { root })
    }

    /// The file behind `key`. Keys come from `layout` and are validated there; this refuses
    /// anything that could still escape the root.
    pub fn path_of(&self, key: &str) -> StoreResult<PathBuf> {
        if key.is_empty()
            || key.starts_with('/')
            || key.starts_with('.')
            || key
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(StoreError::Other(anyhow::anyhow!(
                "invalid object key {key:?}"
            )));
        }
        Ok(self.root.join(key))
    }

    fn version_of(bytes: &[u8]) -> Version {
        Version(hex::encode(Sha256::digest(bytes)))
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let mut tmp = tempfile::NamedTempFile::new_in(self.root.join(STAGING))?;
        tmp.write_all(bytes)?;
        tmp.as_file().sync_data()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }

    fn put_sync(&self, key: &str, bytes: &[u8], mode: &PutMode) -> StoreResult<()> {
        let path = self.path_of(key)?;
        if *mode == PutMode::Overwrite {
            return Ok(self.write_atomic(&path, bytes)?);
        }
        // One lock file per key: compare and swap must exclude other publishers, not readers
        // (readers always see a whole file thanks to the rename).
        let lock_path = self
            .root
            .join(LOCKS)
            .join(hex::encode(Sha256::digest(key.as_bytes())));
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)?;
        lock.lock()?;
        let current = match fs::read(&path) {
            Ok(b) => Some(Self::version_of(&b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        let ok = match (mode, &current) {
            (PutMode::Create, None) => true,
            (PutMode::Update(want), Some(have)) => want == have,
            _ => false,
        };
        if !ok {
            return Err(StoreError::Conflict);
        }
        self.write_atomic(&path, bytes)?;
        Ok(())
    }
}

fn meta_of(key: String, md: &fs::Metadata) -> ObjectMeta {
    ObjectMeta {
        key,
        size: md.len(),
        last_modified: md.modified().ok(),
    }
}

#[async_trait]
impl Store for LocalStore {
    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Object>> {
        let path = self.path_of(key)?;
        match tokio::fs::read(&path).await {
            Ok(b) => Ok(Some(Object {
                version: Self::version_of(&b),
                bytes: Bytes::from(b),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Other(
                anyhow::Error::new(e).context(format!("reading {}", path.display())),
            )),
        }
    }

    async fn get_stream(&self, key: &str) -> StoreResult<Option<ByteStream>> {
        let path = self.path_of(key)?;
        match tokio::fs::File::open(&path).await {
            Ok(f) => Ok(Some(Box::pin(f))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Other(
                anyhow::Error::new(e).context(format!("reading {}", path.display())),
            )),
        }
    }

    async fn head(&self, key: &str) -> StoreResult<Option<ObjectMeta>> {
        let path = self.path_of(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(md) if md.is_file() => Ok(Some(meta_of(key.to_owned(), &md))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn put(&self, key: &str, bytes: Bytes, opts: &PutOptions) -> StoreResult<()> {
        let this = self.clone();
        let key = key.to_owned();
        let mode = opts.mode.clone();
        tokio::task::spawn_blocking(move || this.put_sync(&key, &bytes, &mode))
            .await
            .map_err(|e| StoreError::Other(e.into()))?
    }

    async fn put_file(&self, key: &str, path: &Path, _opts: &PutOptions) -> StoreResult<()> {
        let dest = self.path_of(key)?;
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        if tokio::fs::rename(path, &dest).await.is_err() {
            // Staged on another filesystem: copy next to the destination, then rename.
            let tmp = tempfile::NamedTempFile::new_in(self.root.join(STAGING))?;
            tokio::fs::copy(path, tmp.path()).await?;
            tmp.persist(&dest).map_err(|e| e.error)?;
            let _ = tokio::fs::remove_file(path).await;
        }
        Ok(())
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectMeta>> {
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            // Walk from the deepest directory the prefix names, then filter by the full prefix.
            let dir_part = prefix.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
            let start = root.join(dir_part);
            let mut stack = vec![start];
            while let Some(dir) = stack.pop() {
                let entries = match fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e.into()),
                };
                for entry in entries {
                    let entry = entry?;
                    let path = entry.path();
                    let rel = path
                        .strip_prefix(&root)
                        .expect("under root")
                        .to_string_lossy()
                        .into_owned();
                    if rel.starts_with('.') {
                        continue;
                    }
                    // A publish may rename or a prune delete the entry between the listing and
                    // this stat: it is simply not there any more.
                    let md = match entry.metadata() {
                        Ok(md) => md,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(e.into()),
                    };
                    if md.is_dir() {
                        stack.push(path);
                    } else if rel.starts_with(&prefix) {
                        out.push(meta_of(rel, &md));
                    }
                }
            }
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
        .map_err(|e| StoreError::Other(e.into()))?
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        match tokio::fs::remove_file(self.path_of(key)?).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn staging_dir(&self) -> PathBuf {
        self.root.join(STAGING)
    }

    fn local_root(&self) -> Option<&Path> {
        Some(&self.root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(mode: PutMode) -> PutOptions {
        PutOptions {
            content_type: "application/json".into(),
            cache_control: "no-cache",
            mode,
        }
    }

    #[tokio::test]
    async fn conditional_writes() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        let k = "repositories/a/_index.json";
        s.put(k, Bytes::from_static(b"1"), &opts(PutMode::Create))
            .await
            .unwrap();
        assert!(matches!(
            s.put(k, Bytes::from_static(b"2"), &opts(PutMode::Create))
                .await,
            Err(StoreError::Conflict)
        ));
        let v1 = s.get(k).await.unwrap().unwrap().version;
        s.put(
            k,
            Bytes::from_static(b"2"),
            &opts(PutMode::Update(v1.clone())),
        )
        .await
        .unwrap();
        assert!(matches!(
            s.put(k, Bytes::from_static(b"3"), &opts(PutMode::Update(v1)))
                .await,
            Err(StoreError::Conflict)
        ));
        assert_eq!(&s.get(k).await.unwrap().unwrap().bytes[..], b"2");
        let listed = s.list("repositories/").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].key, k);
    }

    #[test]
    fn escaping_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            ".locks/x",
            "a/./b",
        ] {
            assert!(s.path_of(bad).is_err(), "{bad}");
        }
    }
}
