//! Media types: the names the code tells apart, the Docker → OCI renaming, and the one list of
//! types stored and served as manifests.

use oci_spec::image::MediaType;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const OCI_NONDIST: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar";
pub const OCI_NONDIST_GZIP: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_FOREIGN: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

pub fn is_index(mt: &str) -> bool {
    mt == OCI_INDEX || mt == DOCKER_LIST
}

/// Layers registries do not serve as-is and the publisher compresses.
pub fn is_uncompressed_layer(mt: &str) -> bool {
    mt == OCI_LAYER || mt == DOCKER_LAYER
}

/// Layers that normally live elsewhere (Windows base layers): copied only if present.
pub fn is_foreign(mt: &str) -> bool {
    mt == DOCKER_FOREIGN || mt.starts_with("application/vnd.oci.image.layer.nondistributable.")
}

/// The OCI media type for a Docker one, as `skopeo copy` renames them when it writes an OCI
/// manifest (`export` to a layout, `publish` of a Docker manifest whose layers become zstd).
pub fn docker_to_oci(mt: &str) -> Option<&'static str> {
    Some(match mt {
        DOCKER_MANIFEST => OCI_MANIFEST,
        DOCKER_LIST => OCI_INDEX,
        DOCKER_CONFIG => OCI_CONFIG,
        DOCKER_LAYER_GZIP => OCI_LAYER_GZIP,
        DOCKER_LAYER => OCI_LAYER,
        DOCKER_FOREIGN => OCI_NONDIST_GZIP,
        _ => return None,
    })
}

/// A manifest's own `mediaType`, else its descriptor's, else guessed from its shape (OCI makes
/// the field optional).
pub fn of_manifest(value: &serde_json::Value, descriptor: &str) -> String {
    if let Some(mt) = value.get("mediaType").and_then(|v| v.as_str()) {
        return mt.to_owned();
    }
    if !descriptor.is_empty() {
        return descriptor.to_owned();
    }
    if value.get("manifests").is_some() {
        OCI_INDEX.to_owned()
    } else {
        OCI_MANIFEST.to_owned()
    }
}

// The allow-list. Publish (every source, mirror included) refuses other types on the way in,
// export on the way out, verify reports them, and `serve` leaves them out of the index it
// answers from (`RepoIndex::for_serving`).

/// The media types stored and served as manifests: OCI and Docker schema 2 image manifests and
/// indexes, and OCI artifact manifests. Anything else (`text/html`, a value with CR/LF) would be
/// answered as the `Content-Type` of a manifest on the registry's own origin, so it is refused
/// everywhere a manifest enters or leaves the store.
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

/// [`check`] for a manifest read from a source, refusing Docker schema 1 with advice first.
pub fn check_manifest(value: &serde_json::Value, mt: &str, what: &str) -> anyhow::Result<()> {
    if mt == DOCKER_SCHEMA1
        || mt == DOCKER_SCHEMA1_SIGNED
        || value.get("schemaVersion").and_then(|v| v.as_u64()) == Some(1)
    {
        anyhow::bail!("{what}: Docker schema 1 manifests are not supported; convert the image with `skopeo copy --format v2s2`");
    }
    check(mt, value.get("artifactType").is_some(), what)
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

    #[test]
    fn the_constants_are_oci_specs_names() {
        for (ours, theirs) in [
            (OCI_MANIFEST, MediaType::ImageManifest),
            (OCI_INDEX, MediaType::ImageIndex),
            (OCI_CONFIG, MediaType::ImageConfig),
            (OCI_LAYER, MediaType::ImageLayer),
            (OCI_LAYER_GZIP, MediaType::ImageLayerGzip),
            (OCI_LAYER_ZSTD, MediaType::ImageLayerZstd),
        ] {
            assert_eq!(ours, theirs.to_string());
        }
    }
}
