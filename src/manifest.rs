//! The parts of a manifest or image index that the code walking a store reads (export, verify,
//! layer reuse on publish): its descriptors, and the children it lists.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::reference::Digest;

/// A descriptor inside a manifest or image index.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default)]
    pub urls: Option<Vec<String>>,
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub platform: Option<Value>,
}

impl Descriptor {
    /// A foreign (non-distributable) blob: one with `urls`, which the store may not hold.
    pub fn foreign(&self) -> bool {
        self.urls.as_ref().is_some_and(|u| !u.is_empty())
    }

    /// `os/architecture[/variant]` of an index entry, if it names a platform.
    pub fn platform_str(&self) -> Option<String> {
        let p = self.platform.as_ref()?;
        let get = |k: &str| p.get(k).and_then(|v| v.as_str()).unwrap_or("");
        let mut s = format!("{}/{}", get("os"), get("architecture"));
        if !get("variant").is_empty() {
            s.push('/');
            s.push_str(get("variant"));
        }
        Some(s)
    }

    /// [`Descriptor::platform_str`], or `no platform`.
    pub fn platform_label(&self) -> String {
        self.platform_str().unwrap_or_else(|| "no platform".into())
    }
}

/// Any manifest or index; which fields are present says which it is.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnyManifest {
    #[serde(default)]
    pub media_type: Option<String>,
    /// An index's entries.
    #[serde(default)]
    pub manifests: Option<Vec<Descriptor>>,
    /// An image manifest's config.
    #[serde(default)]
    pub config: Option<Descriptor>,
    /// An image manifest's layers.
    #[serde(default)]
    pub layers: Option<Vec<Descriptor>>,
}
