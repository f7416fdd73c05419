//! Prometheus metrics, rendered at `/metrics`.
//!
//! Request counters and latency are recorded per request through the `metrics` facade; cache and
//! origin figures are read from their own counters when scraped, so the hot path pays nothing
//! extra for them.
//!
//! The per-request handles are looked up once per worker thread and label set, then reused: a
//! request costs an atomic add and a histogram sample, not a key build and a registry lookup
//! (docs/performance.md). Histogram samples are drained every few seconds by an upkeep thread,
//! so memory stays flat when nobody scrapes `/metrics`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::Duration;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use super::AppState;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Installs the process-wide recorder (once), and its upkeep thread.
pub fn install() {
    HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .set_buckets(&[
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                0.1, 0.25, 0.5, 1.0, 2.5,
            ])
            .expect("static buckets")
            .install_recorder()
            .expect("only one metrics recorder is installed");
        // `install_recorder` leaves upkeep to the caller: without it every histogram sample is
        // kept until the next scrape, which is unbounded memory (16 bytes a redirect) when
        // nothing scrapes.
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .stack_size(64 * 1024)
            .spawn(move || loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            });
        if let Err(e) = spawned {
            tracing::warn!(
                error = %e,
                "cannot start the metrics upkeep thread; histograms drain on scrape only"
            );
        }
        handle
    });
}

/// Handles of one label set, registered with the installed recorder.
struct RequestHandles {
    requests: Counter,
    duration: Histogram,
}

/// A `&'static str` label by address and length: equal keys are equal strings (two equal
/// literals at two addresses only cost one more entry for the same series).
type LabelKey = (usize, usize);

fn label_key(s: &'static str) -> LabelKey {
    (s.as_ptr() as usize, s.len())
}

thread_local! {
    /// Per worker thread: (route, status class) -> handles.
    static REQUESTS: RefCell<HashMap<(LabelKey, LabelKey), RequestHandles>> =
        RefCell::new(HashMap::new());
    static SIGNS: RefCell<HashMap<LabelKey, Histogram>> = RefCell::new(HashMap::new());
}

fn request_handles(route: &'static str, class: &'static str) -> RequestHandles {
    RequestHandles {
        requests: metrics::counter!(
            "static_registry_requests_total", "route" => route, "status" => class
        ),
        duration: metrics::histogram!(
            "static_registry_request_duration_seconds", "route" => route
        ),
    }
}

/// Records one finished request.
pub fn record(route: &'static str, status: u16, seconds: f64) {
    let class = status_class(status);
    let record = |h: &RequestHandles| {
        h.requests.increment(1);
        h.duration.record(seconds);
    };
    // Before `install` (tests, tools) handles would be no-ops forever: don't cache those.
    if HANDLE.get().is_none() {
        return record(&request_handles(route, class));
    }
    REQUESTS.with(|m| {
        let mut m = m.borrow_mut();
        record(
            m.entry((label_key(route), label_key(class)))
                .or_insert_with(|| request_handles(route, class)),
        )
    });
}

/// Records the cost of one URL signature.
pub fn record_sign(kind: &'static str, seconds: f64) {
    let sign = || metrics::histogram!("static_registry_sign_duration_seconds", "signer" => kind);
    if HANDLE.get().is_none() {
        return sign().record(seconds);
    }
    SIGNS.with(|m| {
        m.borrow_mut()
            .entry(label_key(kind))
            .or_insert_with(sign)
            .record(seconds)
    });
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
        for (doc, cache) in [
            ("repository", &o.repos.stats),
            ("catalog", &o.catalog.stats),
        ] {
            let pairs = [
                (
                    "static_registry_index_cache_hits_total",
                    cache.hits.load(Ordering::Relaxed),
                ),
                (
                    "static_registry_index_cache_misses_total",
                    cache.loads.load(Ordering::Relaxed),
                ),
                (
                    "static_registry_index_load_errors_total",
                    cache.load_errors.load(Ordering::Relaxed),
                ),
                (
                    "static_registry_index_stale_serves_total",
                    cache.stale_serves.load(Ordering::Relaxed),
                ),
            ];
            for (metric, v) in pairs {
                metrics::counter!(metric, "origin" => name.clone(), "document" => doc).absolute(v);
            }
        }
    }
    for (kind, tally) in [
        ("answer", &super::recent_answers::REUSED),
        ("url", &super::recent_urls::REUSED),
    ] {
        metrics::counter!("static_registry_reused_total", "kind" => kind).absolute(tally.total());
    }
    let mut resp = handle.render().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}
