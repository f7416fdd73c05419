//! CORS for the registry API (`[serve] cors_origins`), so a registry browser served from another
//! origin (e.g. Joxit's docker-registry-ui, which reads only `/v2/`) can browse the endpoint.
//!
//! Off by default. Only listed origins (or `*`) get an answer, and only for `/v2/` reads: a
//! preflight `OPTIONS` is answered here with the methods a reader needs, and every answer to an
//! allowed origin names it in `Access-Control-Allow-Origin` and exposes the registry's headers.
//! Credentials (cookies) are never allowed; a browser UI sends its token in `Authorization`.

use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

/// The allowed origins, as configured.
#[derive(Debug, Clone)]
pub struct Cors {
    any: bool,
    origins: Vec<String>,
}

const EXPOSED: &str = "Docker-Content-Digest, Docker-Distribution-Api-Version, Link, Location, WWW-Authenticate, Content-Length, Content-Type";

impl Cors {
    /// `None` when no origin is configured.
    pub fn new(origins: &[String]) -> anyhow::Result<Option<Cors>> {
        if origins.is_empty() {
            return Ok(None);
        }
        for o in origins {
            anyhow::ensure!(
                o == "*"
                    || (url::Url::parse(o).is_ok_and(|u| {
                        matches!(u.scheme(), "http" | "https") && u.path() == "/" && u.query().is_none()
                    }) && !o.ends_with('/')),
                "[serve] cors_origins: {o:?} is not an origin (scheme://host[:port], no path) or \"*\""
            );
        }
        Ok(Some(Cors {
            any: origins.iter().any(|o| o == "*"),
            origins: origins.iter().map(|o| o.to_ascii_lowercase()).collect(),
        }))
    }

    /// The `Access-Control-Allow-Origin` value for a request with these headers, if its origin
    /// is allowed.
    pub fn allow(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = headers.get(header::ORIGIN)?;
        if self.any {
            return Some(HeaderValue::from_static("*"));
        }
        let o = origin.to_str().ok()?.to_ascii_lowercase();
        self.origins.contains(&o).then(|| origin.clone())
    }
}

/// The answer to a preflight from an allowed origin.
pub fn preflight(origin: HeaderValue) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Accept, Content-Type"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    resp
}

/// Adds the CORS headers to an answer for an allowed origin.
pub fn decorate(resp: &mut Response, origin: HeaderValue) {
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED),
    );
    h.append(header::VARY, HeaderValue::from_static("Origin"));
}

/// Whether a request is a CORS preflight.
pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        h
    }

    #[test]
    fn only_listed_origins_are_allowed() {
        let c = Cors::new(&["https://ui.example".into(), "http://127.0.0.1:8080".into()])
            .unwrap()
            .unwrap();
        assert_eq!(
            c.allow(&headers("https://ui.example")).unwrap(),
            "https://ui.example"
        );
        assert_eq!(
            c.allow(&headers("HTTPS://UI.example")).unwrap(),
            "HTTPS://UI.example"
        );
        assert!(c.allow(&headers("https://evil.example")).is_none());
        assert!(c.allow(&headers("https://ui.example.evil")).is_none());
        assert!(c.allow(&HeaderMap::new()).is_none());
        let any = Cors::new(&["*".into()]).unwrap().unwrap();
        assert_eq!(any.allow(&headers("https://x.example")).unwrap(), "*");
        assert!(Cors::new(&[]).unwrap().is_none());
        for bad in [
            "ui.example",
            "https://ui.example/path",
            "https://ui.example/",
            "ftp://x",
        ] {
            assert!(Cors::new(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
