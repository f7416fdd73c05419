//! The image model: descriptors, manifests and image indexes as the code reads them, their
//! media types ([`media`]), and platforms ([`Platform`]). publish (every source, mirror
//! included), export, verify, prune and the walk read manifests through these types; the
//! repository index keeps its own stored descriptor (`index::Descriptor`, the layout contract).
//!
//! `oci-spec` supplies the media-type names ([`media`] checks its constants against ours); its
//! structs are not used, because they do not read what registries and `docker save` write (the
//! tests below pin each point against oci-spec 0.10):
//! - its `Platform` has no serde rename for `os.version`, so a Windows entry's OS version is
//!   silently dropped, and `Arch::from("armbe")` reads as `arm64be`;
//! - its `Descriptor` requires `mediaType` and its `ImageManifest` requires `schemaVersion`,
//!   which Docker's `LayerSources` and older OCI layouts omit, and it parses a manifest only once
//!   the caller knows which of index / manifest / artifact it is — the walk learns that from the
//!   document itself ([`AnyManifest`]);
//! - its `Digest` is a second digest type beside `reference::Digest`, which the store keys,
//!   the index and the registry client all use.
//!
//! These types read leniently (unknown fields ignored, optional parts defaulted) because the
//! bytes themselves, not a re-serialisation, are what gets stored and hashed.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::reference::Digest;

pub mod media;
pub mod platform;

pub use platform::Platform;

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
    /// Kept as written (the filtered indexes publish writes keep every field of an entry).
    #[serde(default)]
    pub platform: Option<Value>,
}

impl Descriptor {
    /// A descriptor of a manifest read without one (a root): no urls, annotations or platform.
    pub fn of_manifest(media_type: &str, digest: &Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.to_owned(),
            digest: digest.clone(),
            size,
            urls: None,
            annotations: None,
            platform: None,
        }
    }

    /// A foreign (non-distributable) blob: one with `urls`, which the store may not hold.
    pub fn foreign(&self) -> bool {
        self.urls.as_ref().is_some_and(|u| !u.is_empty())
    }

    /// The platform an index entry names, if it names one.
    pub fn platform(&self) -> Option<Platform> {
        self.platform.as_ref().map(Platform::of)
    }

    /// Whether the entry names a platform `want` matches.
    pub fn is_for(&self, want: &Platform) -> bool {
        self.platform().is_some_and(|p| want.matches(&p))
    }

    /// `os/architecture[/variant]` of an index entry, if it names a platform.
    pub fn platform_str(&self) -> Option<String> {
        self.platform().map(|p| p.to_string())
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
    /// What an artifact is (OCI artifact manifests must say).
    #[serde(default)]
    pub artifact_type: Option<String>,
}

impl AnyManifest {
    /// The child manifests an image index lists (none for an image manifest).
    pub fn children(&self) -> impl Iterator<Item = &Descriptor> {
        self.manifests.iter().flatten()
    }

    /// The config and layers of an image manifest (none for an index).
    pub fn blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.config.iter().chain(self.layers.iter().flatten())
    }
}

/// An image manifest, where the caller already knows it is one: the config is required.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageManifest {
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// An image index (or Docker manifest list), where the caller already knows it is one.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageIndex {
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// What an image config says about the image, for people (the web UI): read leniently, since
/// configs written by old tools omit most of it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub architecture: Option<String>,
    #[serde(default)]
    pub os: Option<String>,
    #[serde(default)]
    pub config: Option<RunConfig>,
    #[serde(default)]
    pub history: Vec<History>,
}

/// The `config` section of an image config: how a container of the image starts.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub exposed_ports: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub working_dir: Option<String>,
}

/// One step of an image's history.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct History {
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub created_by: Option<String>,
    #[serde(default)]
    pub empty_layer: Option<bool>,
    #[serde(default)]
    pub comment: Option<String>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The reasons the module docs give for not reading through oci-spec's structs; if one of
    /// these starts failing, oci-spec changed and the choice can be revisited.
    #[test]
    fn oci_spec_structs_lose_what_registries_write() {
        let entry = json!({"os": "windows", "architecture": "amd64", "os.version": "10.0.20348.1"});
        let theirs: oci_spec::image::Platform = serde_json::from_value(entry.clone()).unwrap();
        assert_eq!(theirs.os_version(), &None, "oci-spec reads os.version now");
        assert_eq!(
            Platform::of(&entry).os_version.as_deref(),
            Some("10.0.20348.1")
        );
        assert_eq!(
            oci_spec::image::Arch::from("armbe").to_string(),
            "arm64be",
            "oci-spec maps armbe correctly now"
        );
        // A descriptor without mediaType (Docker's LayerSources, old layouts).
        let d = json!({"digest": format!("sha256:{}", "a".repeat(64)), "size": 1});
        assert!(serde_json::from_value::<oci_spec::image::Descriptor>(d.clone()).is_err());
        assert!(serde_json::from_value::<Descriptor>(d).is_ok());
    }
}
