//! The token side of private repositories on the wire: the `/token` endpoint and the
//! `WWW-Authenticate` challenge that points clients at it. Who may read what is decided in
//! [`crate::auth::access`]; this only speaks the protocol.

use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method as HttpMethod, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::auth::token::TokenError;
use crate::auth::TokenIssuer;

use super::error::OciError;
use super::AppState;

/// This endpoint's external base URL, as clients reach it.
fn external_base(state: &AppState, headers: &HeaderMap) -> String {
    let first = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let (mut scheme, mut host) = (
        if state.tls { "https" } else { "http" }.to_owned(),
        first("host").unwrap_or_else(|| "localhost".into()),
    );
    if state.trust_forwarded {
        if let Some(p) = first("x-forwarded-proto").filter(|p| p == "http" || p == "https") {
            scheme = p;
        }
        if let Some(h) = first("x-forwarded-host") {
            host = h;
        }
    }
    // Only host characters: a hostile Host header must not inject into the challenge.
    host.retain(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c));
    format!("{scheme}://{host}")
}

/// A 401 asking for a token (for `scope`, when one repository was asked for).
pub(super) fn challenge(state: &AppState, headers: &HeaderMap, scope: Option<&str>) -> Response {
    let mut resp = OciError::new(
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        "authentication required",
    )
    .into_response();
    let Some(auth) = state.auth.as_deref() else {
        return resp;
    };
    let realm = auth
        .realm
        .clone()
        .unwrap_or_else(|| format!("{}/token", external_base(state, headers)));
    let mut value = format!("Bearer realm=\"{realm}\",service=\"{}\"", auth.service);
    if let Some(scope) = scope {
        value.push_str(&format!(",scope=\"{scope}\""));
    }
    if let Ok(v) = HeaderValue::from_str(&value) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// `GET /token?service=…&scope=…`: Docker's token endpoint.
pub(super) async fn token(state: &AppState, req: &Parts) -> Response {
    let Some(auth) = state.auth.clone() else {
        return OciError::not_found().into_response();
    };
    if req.method != HttpMethod::GET && req.method != HttpMethod::HEAD {
        // containerd with credentials first tries the OAuth2 password grant (POST, credentials
        // in the form body). Answering that with an anonymous token would make it proceed with a
        // token that grants nothing; a 405 makes it fall back to GET with Basic credentials.
        let mut resp = OciError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "the token endpoint answers GET with Basic credentials",
        )
        .into_response();
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let scopes: Vec<String> = req
        .uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .filter(|(k, _)| k == "scope")
                .map(|(_, v)| v.into_owned())
                .collect()
        })
        .unwrap_or_default();
    let creds = req
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(TokenIssuer::basic);
    let user = creds.as_ref().map(|(u, _)| u.clone());
    // bcrypt is deliberately slow: keep it off the async workers.
    let issued = tokio::task::spawn_blocking(move || auth.issue(creds, &scopes)).await;
    match issued {
        Ok(Ok(body)) => axum::Json(body).into_response(),
        Ok(Err(TokenError::BadCredentials)) => {
            tracing::warn!(
                user = user.as_deref().unwrap_or(""),
                "token request with wrong credentials"
            );
            OciError::new(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "invalid username or password",
            )
            .into_response()
        }
        Err(_) => OciError::unavailable("token issuing failed").into_response(),
    }
}
