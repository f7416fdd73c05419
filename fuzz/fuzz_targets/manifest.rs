//! Manifest and image-index parsing as `verify`, `export`, `prune` and layer reuse read stored
//! manifests (`src/oci/`). The manifests are exactly what the store holds, which a
//! publisher copied from anywhere.
#![no_main]

use libfuzzer_sys::fuzz_target;
use static_registry::oci::AnyManifest;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = serde_json::from_slice::<AnyManifest>(data) else {
        return;
    };
    let children = m.manifests.iter().flatten();
    let blobs = m.config.iter().chain(m.layers.iter().flatten());
    for d in children.chain(blobs) {
        let _ = d.foreign();
        let _ = d.platform_label();
        assert!(!d.digest.hex().contains(['/', '.']));
    }
});
