//! The endpoint's request router: `/v2/…` and `/v1/…` paths, still percent-encoded, straight from
//! a client. Whatever a route names must be something the reference grammar accepts on its own
//! (no `..`, no `%`, nothing that could step outside a store key).
#![no_main]

use libfuzzer_sys::fuzz_target;
use static_registry::reference::{Digest, ManifestRef, RepoName};
use static_registry::serve::route::V2Route;
use static_registry::serve::v1::V1Route;

fn check_name(n: &RepoName) {
    let s = n.as_str();
    assert!(!s.is_empty() && !s.contains("..") && !s.contains('%') && !s.starts_with('/'));
    assert_eq!(RepoName::parse(s).as_ref(), Ok(n));
}

fn check_digest(d: &Digest) {
    assert!(d
        .as_str()
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b':'));
    assert_eq!(Digest::parse(d.as_str()).as_ref(), Ok(d));
}

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(Some(route)) = V2Route::parse(path) {
        match &route {
            V2Route::Base | V2Route::Catalog => {}
            V2Route::Tags(n) => check_name(n),
            V2Route::Manifest(n, r) => {
                check_name(n);
                match r {
                    ManifestRef::Digest(d) => check_digest(d),
                    ManifestRef::Tag(t) => {
                        assert!(!t.as_str().contains(['/', '%']) && !t.as_str().starts_with('.'))
                    }
                }
            }
            V2Route::Blob(n, d) | V2Route::Referrers(n, d) => {
                check_name(n);
                check_digest(d);
            }
        }
    }
    if let Ok(Some(route)) = V1Route::parse(path) {
        let _ = format!("{route:?}");
    }
});
