//! What another registry says about authentication: `WWW-Authenticate` challenges and token
//! service answers (`src/registry/auth.rs`). Both come from a server the mirror does not trust.
//! The first byte picks the parser; the rest is the header value or the response body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use static_registry::registry::auth::{parse_challenges, parse_token_response};

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    if which & 1 == 0 {
        let Ok(header) = std::str::from_utf8(rest) else {
            return;
        };
        for c in parse_challenges(header) {
            assert!(!c.scheme.is_empty());
            assert_eq!(c.scheme, c.scheme.to_ascii_lowercase());
            let _ = c.param("realm");
        }
    } else if let Ok(token) = parse_token_response(rest) {
        // The token must never show in a debug print (it ends up in logs).
        let _ = token.fresh();
        assert_eq!(format!("{token:?}"), "Token(***)");
    }
});
