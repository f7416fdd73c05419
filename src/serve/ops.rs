//! Operational endpoints: `/healthz` (the process is alive) and `/readyz` (origins and index loads,
//! as JSON), for load balancers and operators. They sit outside `/v2/`, so registry clients never
//! see them.

use std::sync::atomic::Ordering;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;

pub fn healthz() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

/// Ready while index loads work for at least one origin: a replica that cannot read any store
/// should leave the balancer. Origin (CDN) health is shared by every replica, so an unhealthy
/// origin only marks the answer `degraded`: failing readiness for it would take every replica
/// out at once while redirects to the last good origin may still work.
pub fn readyz(state: &AppState) -> Response {
    let origins: Vec<_> = state
        .federation
        .origins
        .iter()
        .map(|o| {
            let s = &o.repos.stats;
            json!({
                "name": o.name,
                "signer": o.signer.kind(),
                "store": o.store.describe(),
                "healthy": o.is_healthy(),
                "index_loads": s.loads.load(Ordering::Relaxed),
                "index_load_errors": s.load_errors.load(Ordering::Relaxed),
                "stale_serves": s.stale_serves.load(Ordering::Relaxed),
            })
        })
        .collect();
    let ready = state
        .federation
        .origins
        .iter()
        .any(|o| !o.repos.stats.last_load_failed.load(Ordering::Relaxed));
    let degraded = state.federation.origins.iter().any(|o| !o.is_healthy());
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let checks = state.checks.read().map(|c| c.clone()).unwrap_or_default();
    let body =
        json!({ "ready": ready, "degraded": degraded, "origins": origins, "checks": checks });
    (status, axum::Json(body)).into_response()
}
