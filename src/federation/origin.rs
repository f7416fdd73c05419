//! The embedded origin: serves the local store at `/_origin/<key>`, but only to URLs the endpoint
//! signed. It stands in for a CDN in the zero-configuration default, with the behaviour clients
//! rely on: `Range` (206 + `Content-Range`), `HEAD`, the exact `Content-Type`, no `Content-Encoding`.

use std::time::SystemTime;

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;
use tower_http::services::ServeFile;

use crate::layout;
use crate::sign::embedded::{OriginQuery, ORIGIN_PREFIX};
use crate::sign::{EmbeddedSigner, Method};
use crate::store::LocalStore;

/// The files and the signer whose URLs the origin accepts.
#[derive(Debug, Clone)]
pub struct EmbeddedOrigin {
    pub files: LocalStore,
    pub signer: EmbeddedSigner,
}

fn parse_query(q: &str) -> Option<OriginQuery> {
    let (mut ct, mut exp, mut m, mut sig) = (None, None, None, None);
    for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
        match &*k {
            "ct" => ct = Some(v.into_owned()),
            "exp" => exp = v.parse().ok(),
            "m" => m = Some(v.into_owned()),
            "sig" => sig = Some(v.into_owned()),
            _ => {}
        }
    }
    Some(OriginQuery {
        ct: ct?,
        exp: exp?,
        m: m?,
        sig: sig?,
    })
}

fn forbidden() -> Response {
    (StatusCode::FORBIDDEN, "signature invalid or expired\n").into_response()
}

impl EmbeddedOrigin {
    /// Answers one request. Every answer, errors too, tells browsers not to guess a type and not
    /// to run anything: store objects are whatever was published, and this is the endpoint's
    /// own origin.
    pub async fn serve(&self, req: Request<Body>) -> Response {
        let mut resp = self.answer(req).await;
        let h = resp.headers_mut();
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("sandbox"),
        );
        resp
    }

    async fn answer(&self, req: Request<Body>) -> Response {
        let method = match *req.method() {
            axum::http::Method::GET => Method::Get,
            axum::http::Method::HEAD => Method::Head,
            _ => return StatusCode::METHOD_NOT_ALLOWED.into_response(),
        };
        let key = req.uri().path().strip_prefix(ORIGIN_PREFIX).unwrap_or("");
        let Some(q) = req.uri().query().and_then(parse_query) else {
            return forbidden();
        };
        if !self.signer.verify(method, key, &q, SystemTime::now()) {
            return forbidden();
        }
        let Ok(path) = self.files.path_of(key) else {
            return forbidden();
        };
        let Ok(mime) = q.ct.parse::<mime::Mime>() else {
            return forbidden();
        };
        let cache = if layout::is_immutable(key) {
            layout::CACHE_IMMUTABLE
        } else {
            layout::CACHE_INDEX
        };
        let mut resp = match ServeFile::new_with_mime(path, &mime).oneshot(req).await {
            Ok(r) => r.map(Body::new),
            Err(e) => match e {},
        };
        if resp.status().is_success() {
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
        }
        resp
    }
}
