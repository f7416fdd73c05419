//! The stylesheet and the script, embedded in the binary: the page needs no other file and no
//! JavaScript build chain.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

const CSS: &str = include_str!("assets/ui.css");
const JS: &str = include_str!("assets/ui.js");

pub fn serve(name: &str) -> Response {
    let (body, content_type) = match name {
        "ui.css" => (CSS, "text/css; charset=utf-8"),
        "ui.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return super::plain(StatusCode::NOT_FOUND, "not found\n"),
    };
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Revalidated hourly: a new binary may ship new assets under the same name.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    super::secure(resp)
}
