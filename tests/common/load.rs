//! A steady load of registry requests against a balancer, counting every failure.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::private_world::*;
use crate::common::lb::{metric_sum, Replica};
use crate::common::{sha256, wait_for};
use reqwest::{Method, StatusCode};

#[derive(Default)]
pub struct LoadStats {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    pub failures: Mutex<Vec<String>>,
}

impl LoadStats {
    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    pub fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut f = self.failures.lock().unwrap();
        if f.len() < 20 {
            f.push(what);
        }
    }

    /// Waits until `n` more requests than now have succeeded.
    pub fn wait_progress(&self, n: u64, what: &str) {
        let target = self.ok() + n;
        wait_for(what, Duration::from_secs(120), || {
            (self.ok() >= target).then_some(())
        });
    }
}

/// One load client: manifest GET (307) → the signed URL (200, hashed), manifest HEAD (200),
/// blob GET (307) → the signed URL (200, hashed), `/v2/` (200), over and over, until `stop`.
pub async fn load_worker(
    http: reqwest::Client,
    base: String,
    manifest: String,
    config: String,
    stop: Arc<AtomicBool>,
    stats: Arc<LoadStats>,
) {
    let steps: Vec<(Method, String, Option<&str>)> = vec![
        (
            Method::GET,
            format!("/v2/{PUBLIC}/manifests/1.0"),
            Some(manifest.as_str()),
        ),
        (Method::HEAD, format!("/v2/{PUBLIC}/manifests/1.0"), None),
        (
            Method::GET,
            format!("/v2/{PUBLIC}/blobs/{config}"),
            Some(config.as_str()),
        ),
        (Method::GET, "/v2/".to_owned(), None),
    ];
    while !stop.load(Ordering::Relaxed) {
        for (method, path, follow) in &steps {
            let what = format!("{method} {path}");
            let resp = match http
                .request(method.clone(), format!("{base}{path}"))
                .send()
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    stats.fail(format!("{what}: {e}"));
                    continue;
                }
            };
            let status = resp.status();
            if !(status.is_success() || status.is_redirection()) {
                stats.fail(format!("{what}: {status}"));
                continue;
            }
            stats.ok.fetch_add(1, Ordering::Relaxed);
            let Some(digest) = follow else { continue };
            let Some(loc) = resp.headers().get("location").and_then(|v| v.to_str().ok()) else {
                stats.fail(format!("{what}: {status} without Location"));
                continue;
            };
            let url = format!("{base}{loc}");
            match http.get(&url).send().await {
                Ok(r) if r.status() == StatusCode::OK => match r.bytes().await {
                    Ok(b) if sha256(&b) == *digest => {
                        stats.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => stats.fail(format!("{what} → origin: wrong content")),
                    Err(e) => stats.fail(format!("{what} → origin body: {e}")),
                },
                Ok(r) => stats.fail(format!("{what} → origin: {}", r.status())),
                Err(e) => stats.fail(format!("{what} → origin: {e}")),
            }
        }
    }
}

/// Registry requests a replica answered (operational routes excluded).
pub fn served(r: &Replica) -> f64 {
    let m = r.metrics();
    ["manifest", "blob", "origin", "base"]
        .iter()
        .map(|route| {
            metric_sum(
                &m,
                "static_registry_requests_total",
                &[&format!("route=\"{route}\"")],
            )
            .unwrap_or(0.0)
        })
        .sum()
}
