//! `oci-archive:` sources: the tar index, `index.json`, nested indexes and manifests, configs.
//! See `fuzz/src/lib.rs` for the input format.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = static_registry_fuzz::write_archive(data);
    let loaded =
        static_registry::publish::load_file_source(&format!("oci-archive:{}", path.display()));
    static_registry_fuzz::show(&loaded);
});
