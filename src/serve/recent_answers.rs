//! Whole answers re-used within the second they were made in, for the handlers that declare
//! theirs reusable.
//!
//! When a fleet scales up, every node asks for the same few paths at once; each serving thread
//! keeps the answers it made in the current second and repeats them without routing, validating,
//! looking up the index or signing again (docs/performance.md measures what that saves). The
//! answer can be at most one second older than the index cache allows, and its URL expires at
//! most one second earlier than a freshly signed one (as with [`super::recent_urls`]).
//!
//! Only a handler knows what its answer depends on, so only a handler decides: it returns
//! [`Reuse::ForSameRequest`] with an answer that is a function of the request's [`AnswerFor`]
//! key (method, raw path and query, the client's region, which origins are healthy) and the
//! cached index, whatever else the request carries. Today those are the blob and manifest
//! answers (a 307 to a signed URL, or a HEAD answered from the index) of public repositories.
//! docs/request-handling.md lists every route's word.

use std::cell::RefCell;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;

use super::per_second::{PerSecond, Tally};

/// A handler's word on its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// It depends on more than its [`AnswerFor`] key (credentials, the time, an error that may
    /// pass): made afresh for every request.
    Never,
    /// It is a function of its [`AnswerFor`] key and the cached index: a repeat of the same key
    /// within the same second may get it again.
    ForSameRequest,
}

/// The key a kept answer is filed under: what a [`Reuse::ForSameRequest`] answer may depend on,
/// besides the second and the index.
#[derive(Debug, Clone, Copy, Hash)]
pub struct AnswerFor<'a> {
    pub head: bool,
    /// The raw request path and query (the route is a function of the path; a handler may read
    /// the query).
    pub target: &'a str,
    /// The client's region and which origins are healthy: together they pick the origin.
    pub region: Option<&'a str>,
    pub health: u64,
}

/// One kept answer, with the request it answered (a hash match alone is not trusted).
struct Kept {
    head: bool,
    target: Box<str>,
    region: Option<Box<str>>,
    health: u64,
    label: &'static str,
    status: StatusCode,
    headers: HeaderMap,
}

impl Kept {
    fn is_for(&self, a: &AnswerFor<'_>) -> bool {
        self.head == a.head
            && self.health == a.health
            && *self.target == *a.target
            && self.region.as_deref() == a.region
    }
}

thread_local! {
    /// This thread's answers of the current second.
    static RECENT: RefCell<PerSecond<Kept>> = RefCell::new(PerSecond::new(&REUSED));
}

/// How many answers were re-used, for `/metrics`.
pub static REUSED: Tally = Tally::new();

/// This thread's answer to `a` from `second` (unix seconds), with its route label.
pub fn get(a: &AnswerFor<'_>, second: u64) -> Option<(&'static str, Response)> {
    RECENT.with_borrow_mut(|r| {
        let hash = r.hash(a);
        let k = r.get(second, hash, |k| k.is_for(a))?;
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = k.status;
        *resp.headers_mut() = k.headers.clone();
        Some((k.label, resp))
    })
}

/// Keeps `resp` (status and headers; it has no body) as the answer to `a` for the rest of
/// `second`.
pub fn keep(a: &AnswerFor<'_>, second: u64, label: &'static str, resp: &Response) {
    let kept = Kept {
        head: a.head,
        target: a.target.into(),
        region: a.region.map(Into::into),
        health: a.health,
        label,
        status: resp.status(),
        headers: with_request_id_slot(resp.headers()),
    };
    RECENT.with_borrow_mut(|r| {
        let hash = r.hash(a);
        r.keep(second, hash, kept);
    });
}

/// `headers` with an entry for the request id every answer gets: a clone of a map has no spare
/// room, so adding that header to each re-used answer would grow (re-allocate) its map.
fn with_request_id_slot(headers: &HeaderMap) -> HeaderMap {
    let mut headers = headers.clone();
    headers.insert(super::X_REQUEST_ID, HeaderValue::from_static(""));
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::header;

    fn answer(location: &str) -> Response {
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = StatusCode::TEMPORARY_REDIRECT;
        resp.headers_mut()
            .insert(header::LOCATION, HeaderValue::from_str(location).unwrap());
        resp
    }

    fn location(r: &Response) -> &str {
        r.headers()[header::LOCATION].to_str().unwrap()
    }

    #[test]
    fn an_answer_is_reused_only_within_its_second_and_for_exactly_its_request() {
        let base = AnswerFor {
            head: false,
            target: "/v2/a/blobs/sha256:aa",
            region: Some("eu"),
            health: 0b11,
        };
        assert!(get(&base, 100).is_none());
        keep(&base, 100, "blob", &answer("https://eu/1"));
        let (label, hit) = get(&base, 100).expect("kept");
        assert_eq!(label, "blob");
        assert_eq!(hit.status(), StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(location(&hit), "https://eu/1");

        let variants = [
            AnswerFor { head: true, ..base },
            AnswerFor {
                target: "/v2/b/blobs/sha256:aa",
                ..base
            },
            AnswerFor {
                target: "/v2/a/blobs/sha256:aa?x=1",
                ..base
            },
            AnswerFor {
                region: Some("us"),
                ..base
            },
            AnswerFor {
                region: None,
                ..base
            },
            AnswerFor {
                health: 0b10,
                ..base
            },
        ];
        for (i, v) in variants.iter().enumerate() {
            assert!(
                get(v, 100).is_none(),
                "variant {i} got another request's answer"
            );
        }
        // The next second answers afresh, and forgets the previous one's answers.
        assert!(get(&base, 101).is_none());
        assert!(get(&base, 100).is_none());
    }

    #[test]
    fn an_answer_from_a_past_second_is_not_kept() {
        let a = AnswerFor {
            head: true,
            target: "/v2/c/manifests/latest",
            region: None,
            health: 1,
        };
        assert!(get(&a, 201).is_none());
        // Made during second 200, finished after the table moved on to 201.
        keep(&a, 200, "manifest", &answer("https://x/old"));
        assert!(get(&a, 201).is_none());
    }
}
