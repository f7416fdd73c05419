//! The reference grammar (`src/reference.rs`) and the reference parsers built on it: `docker://`
//! sources, Docker references in archives, `--source` specs. Every accepted value must print back
//! as what was parsed (these strings become store keys and URL paths).
#![no_main]

use libfuzzer_sys::fuzz_target;
use static_registry::publish::source::{DockerRef, SourceSpec};
use static_registry::reference::{Digest, ManifestRef, RepoName, Tag, TaggedName, V1ImageId};
use static_registry::registry::reference::RemoteRef;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(n) = RepoName::parse(s) {
        assert_eq!(n.as_str(), s);
        assert!(!s.contains("..") && !s.starts_with('/') && !s.ends_with('/') && !s.contains("//"));
    }
    if let Ok(t) = Tag::parse(s) {
        assert_eq!(t.as_str(), s);
    }
    if let Ok(d) = Digest::parse(s) {
        assert_eq!(d.as_str(), s);
        assert_eq!(format!("{}:{}", d.algorithm().as_str(), d.hex()), s);
    }
    if let Ok(id) = V1ImageId::parse(s) {
        assert_eq!(id.as_str(), s);
    }
    if let Ok(r) = ManifestRef::parse(s) {
        assert_eq!(r.to_string(), s);
    }
    if let Ok(t) = s.parse::<TaggedName>() {
        assert_eq!(t.to_string(), s);
    }
    if let Ok(r) = RemoteRef::parse(s) {
        let _ = (
            r.manifest_reference(),
            r.destination_repo(),
            r.default_destination(),
        );
        let _ = r.is_loopback();
        let again = r.to_string();
        let again = again
            .strip_prefix("docker://")
            .expect("displays as docker://");
        assert_eq!(RemoteRef::parse(again).ok().as_ref(), Some(&r), "{r}");
    }
    if let Some(d) = DockerRef::parse(s) {
        let _ = d.to_tagged_name();
        let _ = d.to_string();
    }
    let _ = SourceSpec::parse(s);
});
