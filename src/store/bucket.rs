//! A bucket (or container) under a key prefix, reached through `object_store`: the reads, lists
//! and deletes every cloud store does the same way (S3, Azure Blob, GCS). What differs between
//! clouds (credentials, uploads, which version a conditional write compares) stays in each store.

use std::sync::Arc;
use std::time::SystemTime;

use anyhow::anyhow;
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::path::Path as ObjPath;
use object_store::{Attribute, Attributes, ObjectStore, ObjectStoreExt};

use super::{ByteStream, Object, ObjectMeta, PutOptions, StoreError, StoreResult, Version};

/// A whole request may legitimately take minutes (a 64 MiB PUT at 1 MB/s); object_store's 30 s
/// default would fail slow uplinks on every retry of the same body.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// Bytes a store may hold in upload buffers at once, across all of its concurrent uploads, so a
/// publisher's or sync's `--jobs` does not multiply memory. Counted in KiB permits.
#[derive(Debug, Clone)]
pub struct ByteBudget {
    permits: Arc<tokio::sync::Semaphore>,
    kib: u32,
}

impl ByteBudget {
    pub fn new(bytes: u64) -> ByteBudget {
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .max(1);
        ByteBudget {
            permits: Arc::new(tokio::sync::Semaphore::new(kib as usize)),
            kib,
        }
    }

    /// Waits until `bytes` more may be buffered. The permit is clamped to the whole budget so one
    /// oversized buffer (a part raised past the budget for a huge file) waits for everything else
    /// instead of deadlocking.
    pub async fn reserve(&self, bytes: u64) -> tokio::sync::OwnedSemaphorePermit {
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.kib);
        self.permits
            .clone()
            .acquire_many_owned(kib)
            .await
            .expect("the budget semaphore is never closed")
    }
}

/// Which field of an object's metadata a compare-and-swap compares: S3 and Azure compare ETags
/// (`If-Match`), GCS compares generations (`x-goog-if-generation-match`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionField {
    ETag,
    Generation,
}

/// One bucket under a prefix. `inner` and `lister` are the same client (object_store splits
/// paginated listing into its own trait).
#[derive(Clone)]
pub struct Bucket {
    pub inner: Arc<dyn ObjectStore>,
    lister: Arc<dyn PaginatedListStore>,
    /// No leading or trailing `/`; empty for the bucket root.
    pub prefix: String,
    /// `S3`, `Azure`, `GCS`: names the service in errors.
    service: &'static str,
    /// The store's `describe()`, for errors.
    label: String,
    pub version_field: VersionField,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label)
    }
}

impl Bucket {
    pub fn new<T: ObjectStore + PaginatedListStore>(
        client: T,
        prefix: &str,
        service: &'static str,
        label: String,
        version_field: VersionField,
    ) -> Bucket {
        let client = Arc::new(client);
        Bucket {
            inner: client.clone(),
            lister: client,
            prefix: prefix.to_owned(),
            service,
            label,
            version_field,
        }
    }

    /// The full object key in the bucket for a layout key (prefix included).
    pub fn object_key(&self, key: &str) -> StoreResult<String> {
        validate_key(key)?;
        Ok(if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.prefix)
        })
    }

    pub fn path(&self, key: &str) -> StoreResult<ObjPath> {
        let full = self.object_key(key)?;
        ObjPath::parse(&full)
            .map_err(|e| StoreError::Other(anyhow!("invalid object key {key:?}: {e}")))
    }

    pub fn fail(&self, what: &str, key: &str, e: object_store::Error) -> StoreError {
        StoreError::Other(anyhow::Error::new(e).context(format!(
            "{} {what} {key} failed ({})",
            self.service, self.label
        )))
    }

    /// The whole object, with the version a conditional write compares against.
    pub async fn get(&self, key: &str) -> StoreResult<Option<Object>> {
        let path = self.path(key)?;
        match self.inner.get(&path).await {
            Ok(r) => {
                let version = match self.version_field {
                    VersionField::ETag => r.meta.e_tag.clone(),
                    VersionField::Generation => r.meta.version.clone(),
                }
                .unwrap_or_default();
                let bytes = r.bytes().await.map_err(|e| self.fail("GET", key, e))?;
                Ok(Some(Object {
                    bytes,
                    version: Version(version),
                }))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.fail("GET", key, e)),
        }
    }

    /// Streams the body (`verify --deep` of a large blob).
    pub async fn get_stream(&self, key: &str) -> StoreResult<Option<ByteStream>> {
        let path = self.path(key)?;
        match self.inner.get(&path).await {
            Ok(r) => Ok(Some(Box::pin(tokio_util::io::StreamReader::new(
                r.into_stream(),
            )))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.fail("GET", key, e)),
        }
    }

    pub async fn head(&self, key: &str) -> StoreResult<Option<ObjectMeta>> {
        let path = self.path(key)?;
        match self.inner.head(&path).await {
            Ok(m) => Ok(Some(ObjectMeta {
                key: key.to_owned(),
                size: m.size,
                last_modified: Some(SystemTime::from(m.last_modified)),
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.fail("HEAD", key, e)),
        }
    }

    /// Every object whose layout key starts with `prefix` (a plain string prefix, as on the local
    /// store; `ObjectStore::list` would treat it as a directory and append `/`), sorted by key.
    pub async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectMeta>> {
        let full = if self.prefix.is_empty() {
            prefix.to_owned()
        } else {
            format!("{}/{prefix}", self.prefix)
        };
        let mut out = Vec::new();
        let mut page_token = None;
        loop {
            let page = self
                .lister
                .list_paginated(
                    (!full.is_empty()).then_some(full.as_str()),
                    PaginatedListOptions {
                        page_token,
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| self.fail("LIST", prefix, e))?;
            out.extend(
                page.result
                    .objects
                    .into_iter()
                    .filter_map(|m| meta_of(&self.prefix, m)),
            );
            match page.page_token {
                Some(t) => page_token = Some(t),
                None => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Deleting a missing object is not an error.
    pub async fn delete(&self, key: &str) -> StoreResult<()> {
        let path = self.path(key)?;
        match self.inner.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.fail("DELETE", key, e)),
        }
    }

    /// The object_store condition for a put: where the compared version goes depends on the cloud.
    pub fn update_version(&self, version: &str) -> object_store::UpdateVersion {
        match self.version_field {
            VersionField::ETag => object_store::UpdateVersion {
                e_tag: Some(version.to_owned()),
                version: None,
            },
            VersionField::Generation => object_store::UpdateVersion {
                e_tag: None,
                version: Some(version.to_owned()),
            },
        }
    }
}

/// A listed object's layout key (the prefix stripped), or `None` for an object outside it.
fn meta_of(prefix: &str, m: object_store::ObjectMeta) -> Option<ObjectMeta> {
    let full = m.location.as_ref();
    let key = if prefix.is_empty() {
        full
    } else {
        full.strip_prefix(prefix)?.strip_prefix('/')?
    };
    Some(ObjectMeta {
        key: key.to_owned(),
        size: m.size,
        last_modified: Some(SystemTime::from(m.last_modified)),
    })
}

/// Content-Type and Cache-Control as object metadata, which the clouds and CDNs then serve as
/// headers. Content-Encoding is deliberately never set: containerd would decode a blob and its
/// digest check would fail.
pub fn attributes(opts: &PutOptions) -> Attributes {
    let mut a = Attributes::new();
    a.insert(Attribute::ContentType, opts.content_type.clone().into());
    a.insert(Attribute::CacheControl, opts.cache_control.into());
    a
}

/// Same rules as the local store: keys come from `layout`, and anything that could mean another
/// place (empty, `.`/`..` segments, a leading `/`) is refused before it reaches a request.
pub fn validate_key(key: &str) -> StoreResult<()> {
    if key.is_empty()
        || key.starts_with('/')
        || key
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(StoreError::Other(anyhow!("invalid object key {key:?}")));
    }
    Ok(())
}

/// Parses a `SECTION.endpoint` setting: no user info (credentials come from the cloud's own
/// chain), no query or fragment, https, or plain http to a loopback host or where
/// `SECTION.allow_http` allows it. Returns the URL and whether the client must allow http.
/// Errors never echo the URL: it could carry user info.
pub fn checked_endpoint(
    raw: &str,
    section: &str,
    allow_http: bool,
) -> anyhow::Result<(url::Url, bool)> {
    use anyhow::{bail, Context};
    let url =
        url::Url::parse(raw).with_context(|| format!("{section}.endpoint is not a valid URL"))?;
    if !url.username().is_empty() || url.password().is_some() {
        bail!("{section}.endpoint must not contain user info; credentials come from the cloud's credential chain");
    }
    if url.query().is_some() || url.fragment().is_some() {
        bail!("{section}.endpoint must not have a query or fragment");
    }
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => bail!("{section}.endpoint has no host"),
    };
    let http = match url.scheme() {
        "https" => false,
        "http" if loopback || allow_http => true,
        "http" => bail!(
            "{section}.endpoint uses plain http to a non-loopback host; use https, or set \
             {section}.allow_http = true for a trusted private network"
        ),
        other => bail!("{section}.endpoint scheme must be http or https, not {other:?}"),
    };
    Ok((url, http))
}

/// Checks a location's bucket-relative prefix (`gs://b/PREFIX`, `azure://a/c/PREFIX`) the way
/// [`validate_key`] checks keys; returns it without surrounding `/`.
pub fn parse_prefix(prefix: &str, location: &str) -> anyhow::Result<String> {
    let prefix = prefix.trim_matches('/');
    if !prefix.is_empty()
        && prefix
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        anyhow::bail!("invalid prefix {prefix:?} in {location:?}");
    }
    Ok(prefix.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_listing_prefixes() {
        for bad in ["", "/a", "a//b", "a/../b", "./a", "a/"] {
            assert!(validate_key(bad).is_err(), "{bad}");
        }
        validate_key("repositories/library/alpine/_manifests/3.20").unwrap();
        let m = |p: &str| object_store::ObjectMeta {
            location: object_store::path::Path::parse(p).unwrap(),
            last_modified: Default::default(),
            size: 1,
            e_tag: None,
            version: None,
        };
        assert_eq!(
            meta_of("pre/fix", m("pre/fix/blobs/x")).unwrap().key,
            "blobs/x"
        );
        assert!(meta_of("pre/fix", m("pre/fix2/blobs/x")).is_none());
        assert_eq!(meta_of("", m("blobs/x")).unwrap().key, "blobs/x");
    }

    /// Which field of `object_store`'s condition carries the version, per cloud: an ETag on
    /// S3 and Azure, a generation on GCS (where a condition on the ETag would be refused).
    #[test]
    fn conditions_compare_each_clouds_version() {
        let client = object_store::azure::MicrosoftAzureBuilder::new()
            .with_account("acct")
            .with_container_name("cont")
            .with_access_key("a2V5a2V5a2V5a2V5a2V5a2V5")
            .build()
            .unwrap();
        for (field, etag, generation) in [
            (VersionField::ETag, Some("\"0x8D\""), None),
            (VersionField::Generation, None, Some("\"0x8D\"")),
        ] {
            let b = Bucket::new(client.clone(), "p", "T", "t".into(), field);
            let v = b.update_version("\"0x8D\"");
            assert_eq!(
                (v.e_tag.as_deref(), v.version.as_deref()),
                (etag, generation)
            );
            assert_eq!(b.object_key("blobs/x").unwrap(), "p/blobs/x");
            assert!(b.path("../x").is_err());
        }
    }

    #[test]
    fn location_prefixes() {
        assert_eq!(parse_prefix("/a/b/", "x").unwrap(), "a/b");
        assert_eq!(parse_prefix("", "x").unwrap(), "");
        for bad in ["a//b", "a/../b", "./a"] {
            assert!(parse_prefix(bad, "x").is_err(), "{bad}");
        }
    }
}
