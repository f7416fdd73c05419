//! Prometheus metrics, rendered at `/metrics`.
//!
//! Request counters and latency are recorded per request through the `metrics` facade; cache and
//! origin figures are read from their own counters when scraped, so the hot path pays nothing
//! extra for them.

use std::sync::atomic::Ordering;
use std::sync::OnceLock;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use super::AppState;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once).
pub fn install() {
    HANDLE.get_or_init(|| {
        PrometheusBuilder::new()
            .set_buckets(&[
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                0.1, 0.25, 0.5, 1.0, 2.5,
            ])
            .expect("static buckets")
            .install_recorder()
            .expect("only one metrics recorder is installed")
    });
}

/// Records one finished request.
pub fn record(route: &'static str, status: u16, seconds: f64) {
    metrics::counter!("static_registry_requests_total", "route" => route, "status" => status_class(status)).increment(1);
    metrics::histogram!("static_registry_request_duration_seconds", "route" => route).record(seconds);
}

/// Records the cost of one URL signature.
pub fn record_sign(kind: &'static str, seconds: f64) {
    metrics::histogram!("static_registry_sign_duration_seconds", "signer" => kind).record(seconds);
}

fn status_class(s: u16) -> &'static str {
    match s {
        200 => "200",
        206 => "206",
        307 => "307",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        503 => "503",
        _ if s < 300 => "2xx",
        _ if s < 400 => "3xx",
        _ if s < 500 => "4xx",
        _ => "5xx",
    }
}

pub fn render(state: &AppState) -> Response {
    let Some(handle) = HANDLE.get() else {
        return (axum::http::StatusCode::NOT_FOUND, "metrics disabled\n").into_response();
    };
    for o in &state.federation.origins {
        let name = o.name.clone();
        metrics::gauge!("static_registry_origin_healthy", "origin" => name.clone())
            .set(if o.is_healthy() { 1.0 } else { 0.0 });
        for (doc, cache) in [("repository", &o.repos.stats), ("catalog", &o.catalog.stats)] {
            let pairs = [
                ("static_registry_index_cache_hits_total", cache.hits.load(Ordering::Relaxed)),
                ("static_registry_index_cache_misses_total", cache.loads.load(Ordering::Relaxed)),
                ("static_registry_index_load_errors_total", cache.load_errors.load(Ordering::Relaxed)),
                ("static_registry_index_stale_serves_total", cache.stale_serves.load(Ordering::Relaxed)),
            ];
            for (metric, v) in pairs {
                metrics::counter!(metric, "origin" => name.clone(), "document" => doc).absolute(v);
            }
        }
    }
    let mut resp = handle.render().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}
