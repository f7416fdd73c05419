//! `docker-archive:` sources (`docker save` output): the tar index, `manifest.json`, legacy layer
//! directories, and the OCI layout newer Docker writes alongside. See `fuzz/src/lib.rs` for the
//! input format.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = static_registry_fuzz::write_archive(data);
    let loaded =
        static_registry::publish::load_file_source(&format!("docker-archive:{}", path.display()));
    static_registry_fuzz::show(&loaded);
});
