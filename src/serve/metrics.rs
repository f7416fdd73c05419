//! Prometheus metrics, rendered at `/metrics`.
//!
//! Request counts and latencies are kept per thread, in that thread's own table, and summed when
//! `/metrics` is scraped: the `metrics` exporter's counters and histograms are shared between
//! threads, so recording every request in them moved their cache lines between the serving
//! threads and queued a sample per request for its upkeep thread to sort (0.3–0.6 µs of CPU per
//! request, docs/performance.md). Cache and origin figures are read from their own counters when
//! scraped; signature costs go through the exporter (a signature is rare: URLs are re-used).
//! Histogram samples are drained every few seconds by an upkeep thread, so memory stays flat when
//! nobody scrapes `/metrics`.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use metrics::Histogram;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use super::AppState;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency histogram buckets (upper bounds, seconds).
const BUCKETS: [f64; 15] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5,
];

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Installs the process-wide recorder (once), and its upkeep thread.
pub fn install() {
    HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .set_buckets(&BUCKETS)
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

/// One (route, status class)'s requests on one thread: a count, latency bucket counts (the last
/// one is +Inf) and the latency sum.
struct Series {
    route: &'static str,
    class: &'static str,
    count: u64,
    buckets: [u64; BUCKETS.len() + 1],
    sum: f64,
}

/// A `&'static str` label by address and length: equal keys are equal strings (two equal
/// literals at two addresses only cost one more entry, merged when rendered).
type LabelKey = (usize, usize);

fn label_key(s: &'static str) -> LabelKey {
    (s.as_ptr() as usize, s.len())
}

/// One thread's request table: locked by its thread per request (uncontended) and by a scrape.
type Table = Mutex<HashMap<(LabelKey, LabelKey), Series, foldhash::fast::RandomState>>;

/// Every thread's table that ever recorded a request; kept after the thread ends, so the counts
/// never go down.
static TABLES: Mutex<Vec<Arc<Table>>> = Mutex::new(Vec::new());

thread_local! {
    static REQUESTS: Arc<Table> = {
        let table = Arc::new(Table::default());
        TABLES.lock().unwrap_or_else(|e| e.into_inner()).push(table.clone());
        table
    };
    static SIGNS: RefCell<HashMap<LabelKey, Histogram>> = RefCell::new(HashMap::new());
}

/// Records one finished request.
pub fn record(route: &'static str, status: u16, seconds: f64) {
    let class = status_class(status);
    REQUESTS.with(|t| {
        let mut t = t.lock().unwrap_or_else(|e| e.into_inner());
        let s = t
            .entry((label_key(route), label_key(class)))
            .or_insert_with(|| Series {
                route,
                class,
                count: 0,
                buckets: [0; BUCKETS.len() + 1],
                sum: 0.0,
            });
        s.count += 1;
        s.buckets[BUCKETS.partition_point(|&le| le < seconds)] += 1;
        s.sum += seconds;
    });
}

/// The request counter and latency histogram in Prometheus' text format, summed over threads.
fn render_requests(out: &mut String) {
    // route -> (buckets, sum, count); (route, class) -> count
    let mut latency: BTreeMap<&str, ([u64; BUCKETS.len() + 1], f64, u64)> = BTreeMap::new();
    let mut counts: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let tables = TABLES.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for table in &tables {
        let t = table.lock().unwrap_or_else(|e| e.into_inner());
        for s in t.values() {
            *counts.entry((s.route, s.class)).or_default() += s.count;
            let l = latency.entry(s.route).or_default();
            for (sum, n) in l.0.iter_mut().zip(s.buckets) {
                *sum += n;
            }
            l.1 += s.sum;
            l.2 += s.count;
        }
    }
    out.push_str("# TYPE static_registry_requests_total counter\n");
    for ((route, class), n) in &counts {
        let _ = writeln!(
            out,
            "static_registry_requests_total{{route=\"{route}\",status=\"{class}\"}} {n}"
        );
    }
    out.push_str("# TYPE static_registry_request_duration_seconds histogram\n");
    for (route, (buckets, sum, count)) in &latency {
        let name = "static_registry_request_duration_seconds";
        let mut cumulative = 0;
        for (le, n) in BUCKETS.iter().zip(buckets) {
            cumulative += n;
            let _ = writeln!(
                out,
                "{name}_bucket{{route=\"{route}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(out, "{name}_sum{{route=\"{route}\"}} {sum}");
        let _ = writeln!(out, "{name}_count{{route=\"{route}\"}} {count}");
    }
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
    let mut text = handle.render();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    render_requests(&mut text);
    let mut resp = text.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_from_every_thread_are_summed_into_counters_and_cumulative_buckets() {
        let route = "test-route-sum";
        record(route, 307, 0.000_3);
        std::thread::spawn(move || {
            record(route, 307, 0.000_3);
            record(route, 404, 3.0);
        })
        .join()
        .unwrap();
        let mut out = String::new();
        render_requests(&mut out);
        let line = |prefix: &str| {
            out.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix} in:\n{out}"))
                .rsplit(' ')
                .next()
                .unwrap()
                .to_owned()
        };
        let h = "static_registry_request_duration_seconds";
        let c = "static_registry_requests_total";
        let r = format!("route=\"{route}\"");
        let wanted = [
            (format!("{c}{{{r},status=\"307\"}}"), "2"),
            (format!("{c}{{{r},status=\"404\"}}"), "1"),
            (format!("{h}_bucket{{{r},le=\"0.00025\"}}"), "0"),
            (format!("{h}_bucket{{{r},le=\"0.0005\"}}"), "2"),
            (format!("{h}_bucket{{{r},le=\"2.5\"}}"), "2"),
            (format!("{h}_bucket{{{r},le=\"+Inf\"}}"), "3"),
            (format!("{h}_count{{{r}}}"), "3"),
        ];
        for (series, value) in &wanted {
            assert_eq!(line(series), *value, "{series}");
        }
        let sum: f64 = line(&format!("{h}_sum{{route=\"{route}\"}}"))
            .parse()
            .unwrap();
        assert!((sum - 3.000_6).abs() < 1e-9, "{sum}");
    }
}
