//! `serve`: the stateless redirecting endpoint.
//!
//! It answers `/v2/` and `/v1/_ping` itself, answers HEADs from the cached repository index, and
//! redirects every content request to a signed URL. With a local store it also mounts the
//! embedded origin that those URLs point at.

pub mod cache;
pub mod error;
pub mod ops;
pub mod origin;
pub mod route;
pub mod v2;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method as HttpMethod, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;

use crate::federation::Federation;
use crate::sign::embedded::ORIGIN_PREFIX;

use error::OciError;
use origin::EmbeddedOrigin;
use route::V2Route;

/// Everything a request handler needs; shared by all requests, no per-request state.
pub struct AppState {
    pub federation: Arc<Federation>,
    pub url_ttl: Duration,
    /// The built-in origin, mounted when a local store is served through it.
    pub embedded: Option<EmbeddedOrigin>,
}

const API_VERSION: &str = "docker-distribution-api-version";

/// The whole HTTP surface.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new().fallback(dispatch).with_state(state)
}

async fn dispatch(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let path = req.uri().path();
    if path.starts_with(ORIGIN_PREFIX) {
        return match &state.embedded {
            Some(origin) => origin.serve(req).await,
            None => OciError::not_found().into_response(),
        };
    }
    match path {
        "/v1/_ping" | "/v1/_ping/" => return v1_ping(),
        "/healthz" => return ops::healthz(),
        "/readyz" => return ops::readyz(&state),
        _ => {}
    }
    let method = req.method().clone();
    let is_v2 = path == "/v2" || path.starts_with("/v2/");
    let mut resp = if is_v2 && method != HttpMethod::GET && method != HttpMethod::HEAD {
        // Every write (pushes, upload sessions, deletes) gets the same answer, whatever the path.
        OciError::unsupported(method.as_str()).into_response()
    } else {
        match V2Route::parse(path) {
            Ok(None) => OciError::not_found().into_response(),
            Err(e) => e.into_response(),
            Ok(Some(route)) => {
                let query = req.uri().query();
                let peer = req
                    .extensions()
                    .get::<axum::extract::ConnectInfo<SocketAddr>>()
                    .map(|c| c.0);
                let region = state.federation.regions.region(req.headers(), peer);
                match v2::handle(&state, &method, route, query, region.as_deref()).await {
                    Ok(r) => r,
                    Err(e) => e.into_response(),
                }
            }
        }
    };
    resp.headers_mut()
        .insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    resp
}

fn v1_ping() -> Response {
    let mut resp = (StatusCode::OK, Body::from("true")).into_response();
    let h = resp.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert(
        "x-docker-registry-version",
        HeaderValue::from_static(concat!("static-registry/", env!("CARGO_PKG_VERSION"))),
    );
    h.insert(
        "x-docker-registry-standalone",
        HeaderValue::from_static("true"),
    );
    resp
}

/// Binds and serves until SIGINT/SIGTERM, then drains in-flight requests.
pub async fn run(listen: SocketAddr, state: Arc<AppState>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    for o in &state.federation.origins {
        tracing::info!(origin = %o.name, signer = o.signer.kind(), store = %o.store.describe(), "origin");
    }
    tracing::info!(addr = %listener.local_addr()?, "serving");
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down: draining in-flight requests");
}
