//! Conditional writes (compare-and-swap on the ETag): `If-None-Match: *` / `If-Match`, or the
//! emulated read-compare-write; see the module docs of `store::s3`.

use anyhow::anyhow;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, UpdateVersion};

use super::settings::*;
use super::{attributes, S3Store};
use crate::store::{PutMode, PutOptions, Store, StoreError, StoreResult, Version};

/// Appended to failed conditional PUTs: the likeliest cause on a compatible is missing support.
pub(super) const NO_CONDITIONAL_HINT: &str =
    "if this backend does not support conditional writes, set \
     s3.conditional_writes = \"emulated\" (safe with a single publisher only)";

impl S3Store {
    /// One PUT with the requested mode; the single place conditional semantics live.
    pub(super) async fn put_payload(
        &self,
        key: &str,
        path: &ObjPath,
        payload: PutPayload,
        opts: &PutOptions,
    ) -> StoreResult<()> {
        let attributes = attributes(opts);
        let mode = match (&opts.mode, self.settings.conditional_writes) {
            (PutMode::Overwrite, _) => object_store::PutMode::Overwrite,
            (PutMode::Create, ConditionalWrites::Etag) => object_store::PutMode::Create,
            (PutMode::Update(v), ConditionalWrites::Etag) => {
                object_store::PutMode::Update(UpdateVersion {
                    e_tag: Some(etag_of(key, v)?),
                    version: None,
                })
            }
            (mode, ConditionalWrites::Emulated) => {
                self.emulated_check(key, path, mode).await?;
                object_store::PutMode::Overwrite
            }
        };
        let conditional = !matches!(mode, object_store::PutMode::Overwrite);
        let put = object_store::PutOptions {
            mode,
            attributes,
            ..Default::default()
        };
        match self.inner.put_opts(path, payload, put).await {
            Ok(_) => Ok(()),
            Err(
                object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. },
            ) if conditional => Err(StoreError::Conflict),
            Err(e) if conditional => {
                Err(StoreError::Other(anyhow::Error::new(e).context(format!(
                    "conditional S3 PUT (If-None-Match/If-Match) of {key} failed ({}); {}",
                    self.describe(),
                    NO_CONDITIONAL_HINT
                ))))
            }
            Err(e) => Err(self.fail("PUT", key, e)),
        }
    }

    /// The read-compare half of [`ConditionalWrites::Emulated`].
    pub(super) async fn emulated_check(
        &self,
        key: &str,
        path: &ObjPath,
        mode: &PutMode,
    ) -> StoreResult<()> {
        let current = match self.inner.head(path).await {
            Ok(m) => Some(m.e_tag.unwrap_or_default()),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => return Err(self.fail("HEAD", key, e)),
        };
        let ok = match (mode, &current) {
            (PutMode::Overwrite, _) => true,
            (PutMode::Create, None) => true,
            (PutMode::Update(want), Some(have)) => want.0 == *have,
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(StoreError::Conflict)
        }
    }
}

pub(super) fn etag_of(key: &str, v: &Version) -> StoreResult<String> {
    if v.0.is_empty() {
        return Err(StoreError::Other(anyhow!(
            "cannot update {key} conditionally: the backend returned no ETag for it"
        )));
    }
    Ok(v.0.clone())
}
