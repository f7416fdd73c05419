//! Signed URLs re-used within the second they were signed in.
//!
//! A URL is a function of the origin, the method, the key, the content type, the lifetime and the
//! signing second: two requests for one blob in the same second would get the same bytes anyway.
//! When a fleet scales up, many nodes ask for the same layers at once; each serving thread keeps
//! the URLs it signed in the current second and answers repeats without signing again (a SigV4
//! signature costs ~0.9 µs, a lookup a tenth of that; docs/performance.md). The table is per
//! thread (no locks), bounded, and emptied when the second turns, so a re-used URL expires at most
//! one second earlier than a freshly signed one would, never later.

use std::cell::RefCell;
use std::time::Duration;

use axum::http::HeaderValue;

use crate::sign::Method;

use super::per_second::{PerSecond, Tally};

/// What a signed URL depends on, besides the second.
#[derive(Debug, Clone, Copy, Hash)]
pub struct UrlFor<'a> {
    /// Identifies the origin (and so its signer) for the life of the process.
    pub origin: usize,
    pub method: Method,
    pub key: &'a str,
    pub content_type: &'a str,
    pub ttl: Duration,
}

/// One kept URL, with everything it was signed for (a hash match alone is not trusted).
struct Kept {
    origin: usize,
    method: Method,
    ttl: Duration,
    key: Box<str>,
    content_type: Box<str>,
    url: HeaderValue,
}

impl Kept {
    fn is_for(&self, u: &UrlFor<'_>) -> bool {
        self.origin == u.origin
            && self.method == u.method
            && self.ttl == u.ttl
            && *self.key == *u.key
            && *self.content_type == *u.content_type
    }
}

thread_local! {
    /// This thread's URLs of the current second.
    static RECENT: RefCell<PerSecond<Kept>> = RefCell::new(PerSecond::new(&REUSED));
}

/// How many signed URLs were re-used, for `/metrics`.
pub static REUSED: Tally = Tally::new();

/// The URL for `u` signed in `second` (unix seconds): this thread's earlier one, or `sign()`'s.
/// `None` when the signature is not a valid header value (it is then not kept).
pub fn url(u: &UrlFor<'_>, second: u64, sign: impl FnOnce() -> String) -> Option<HeaderValue> {
    let hash = RECENT.with_borrow_mut(|r| {
        let hash = r.hash(u);
        match r.get(second, hash, |k| k.is_for(u)) {
            Some(k) => Err(k.url.clone()),
            None => Ok(hash),
        }
    });
    let hash = match hash {
        Ok(hash) => hash,
        Err(url) => return Some(url),
    };
    // Signed outside the borrow: a signer may take its time (a credential refresh).
    let url = HeaderValue::from_maybe_shared(bytes::Bytes::from(sign())).ok()?;
    let kept = Kept {
        origin: u.origin,
        method: u.method,
        ttl: u.ttl,
        key: u.key.into(),
        content_type: u.content_type.into(),
        url: url.clone(),
    };
    RECENT.with_borrow_mut(|r| r.keep(second, hash, kept));
    Some(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::per_second::CAPACITY;
    use std::cell::Cell;

    fn url_for(key: &str) -> UrlFor<'_> {
        UrlFor {
            origin: 1,
            method: Method::Get,
            key,
            content_type: "application/octet-stream",
            ttl: Duration::from_secs(600),
        }
    }

    #[test]
    fn a_url_is_reused_only_within_its_second_and_for_exactly_its_inputs() {
        let signed = Cell::new(0);
        let sign = |tag: &str| {
            signed.set(signed.get() + 1);
            format!("https://cdn.example/{tag}/{}", signed.get())
        };
        let base = url_for("blobs/sha256/aa");
        let first = url(&base, 100, || sign("a")).unwrap();
        assert_eq!(url(&base, 100, || sign("a")).unwrap(), first);
        assert_eq!(signed.get(), 1, "the repeat was not signed again");

        let variants = [
            UrlFor { origin: 2, ..base },
            UrlFor {
                method: Method::Head,
                ..base
            },
            UrlFor {
                key: "blobs/sha256/ab",
                ..base
            },
            UrlFor {
                content_type: "application/vnd.oci.image.manifest.v1+json",
                ..base
            },
            UrlFor {
                ttl: Duration::from_secs(60),
                ..base
            },
        ];
        for (i, v) in variants.iter().enumerate() {
            let got = url(v, 100, || sign("v")).unwrap();
            assert_ne!(got, first, "variant {i} got another request's URL");
            assert_eq!(signed.get(), 2 + i, "variant {i} was signed");
        }
        // The next second signs afresh.
        let next = url(&base, 101, || sign("a")).unwrap();
        assert_ne!(next, first);
        assert_eq!(url(&base, 101, || sign("a")).unwrap(), next);
    }

    #[test]
    fn an_invalid_header_value_is_not_kept() {
        let base = url_for("blobs/sha256/cc");
        assert!(url(&base, 200, || "bad\nurl".into()).is_none());
        let good = url(&base, 200, || "https://ok/1".into()).unwrap();
        assert_eq!(good, "https://ok/1");
    }

    #[test]
    fn the_table_is_bounded() {
        let keys: Vec<String> = (0..CAPACITY + 10).map(|i| format!("k/{i}")).collect();
        for k in &keys {
            url(&url_for(k), 300, || format!("https://x/{k}")).unwrap();
        }
        RECENT.with_borrow(|r| assert_eq!(r.kept(), CAPACITY));
        // A key past the bound is still answered, signed every time.
        let last = url_for(keys.last().unwrap());
        let n = Cell::new(0);
        for _ in 0..2 {
            url(&last, 300, || {
                n.set(n.get() + 1);
                "https://x/last".into()
            })
            .unwrap();
        }
        assert_eq!(n.get(), 2);
    }
}
