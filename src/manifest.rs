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

/// The media types stored and served as manifests: OCI and Docker schema 2 image manifests and
/// indexes, and OCI artifact manifests. Anything else (`text/html`, a value with CR/LF) would be
/// answered as the `Content-Type` of a manifest on the registry's own origin, so it is refused
/// everywhere a manifest enters or leaves the store.
pub mod media_types {
    use oci_spec::image::MediaType;

    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

    /// The one list, for messages and docs.
    pub fn accepted() -> [String; 5] {
        [
            MediaType::ImageManifest.to_string(),
            MediaType::ImageIndex.to_string(),
            DOCKER_MANIFEST.to_owned(),
            DOCKER_LIST.to_owned(),
            MediaType::ArtifactManifest.to_string(),
        ]
    }

    /// Whether `mt` may be stored and served as a manifest. An artifact manifest must say what
    /// it is (`artifactType`); OCI image manifests may carry one too and need not.
    pub fn is_accepted(mt: &str, has_artifact_type: bool) -> bool {
        match MediaType::from(mt) {
            MediaType::ImageManifest | MediaType::ImageIndex => true,
            MediaType::ArtifactManifest => has_artifact_type,
            _ => mt == DOCKER_MANIFEST || mt == DOCKER_LIST,
        }
    }

    /// [`is_accepted`], as an error naming the accepted types; `what` says which manifest.
    pub fn check(mt: &str, has_artifact_type: bool, what: &str) -> anyhow::Result<()> {
        if is_accepted(mt, has_artifact_type) {
            return Ok(());
        }
        let extra = if MediaType::from(mt) == MediaType::ArtifactManifest {
            " without an artifactType"
        } else {
            ""
        };
        anyhow::bail!(
            "{what}: media type {mt:?}{extra} is not a manifest media type; accepted: {}",
            accepted().join(", ")
        )
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn only_manifest_types_are_accepted() {
            for mt in accepted().iter().take(4) {
                assert!(is_accepted(mt, false), "{mt}");
            }
            assert!(is_accepted(
                "application/vnd.oci.artifact.manifest.v1+json",
                true
            ));
            assert!(!is_accepted(
                "application/vnd.oci.artifact.manifest.v1+json",
                false
            ));
            for bad in [
                "text/html",
                "",
                "application/vnd.oci.image.manifest.v1+json\r\nX-Evil: 1",
                "application/vnd.oci.image.manifest.v1+json ",
                "application/vnd.oci.image.config.v1+json",
                "application/vnd.docker.distribution.manifest.v1+prettyjws",
            ] {
                assert!(!is_accepted(bad, true), "{bad:?}");
                let err = check(bad, false, "manifest x").unwrap_err().to_string();
                assert!(err.contains("not a manifest media type"), "{err}");
            }
        }
    }
}
