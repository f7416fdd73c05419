//! Active health checks: a HEAD on each origin's `_health` canary, signed like any other URL, so a
//! broken signer or an expired credential shows up as unhealthy too.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::layout;
use crate::sign::{Method, SignRequest};

use super::{Federation, Origin};

/// Probes one origin once.
pub async fn probe(
    origin: &Origin,
    http: &reqwest::Client,
    url_ttl: Duration,
) -> Result<(), String> {
    let url = origin.signer.sign(
        &SignRequest {
            method: Method::Head,
            key: layout::HEALTH,
            content_type: "text/plain",
            // The requests' lifetime, so signers that cache per expiry window (CloudFront
            // wildcard policies) reuse the window requests use instead of signing a new one.
            ttl: url_ttl,
        },
        SystemTime::now(),
    );
    if url.starts_with('/') {
        // The embedded origin lives in this process: its health is its store's.
        return match origin.store.head(layout::HEALTH).await {
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        };
    }
    match http.head(&url).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("canary answered {}", r.status())),
        // reqwest errors can carry the URL, and the URL carries a signature: log the kind only.
        Err(e) if e.is_timeout() => Err("canary timed out".into()),
        Err(e) if e.is_connect() => Err("cannot connect".into()),
        Err(_) => Err("request failed".into()),
    }
}

/// Probes every origin every `interval`, forever.
pub fn spawn(
    fed: Arc<Federation>,
    interval: Duration,
    url_ttl: Duration,
) -> tokio::task::JoinHandle<()> {
    let http = reqwest::Client::builder()
        .timeout(
            interval
                .min(Duration::from_secs(5))
                .max(Duration::from_millis(500)),
        )
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("HTTP client builds");
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let checks = fed.origins.iter().map(|o| {
                let http = http.clone();
                async move {
                    let r = probe(o, &http, url_ttl).await;
                    o.set_healthy(
                        r.is_ok(),
                        r.as_ref().err().map(String::as_str).unwrap_or(""),
                    );
                }
            });
            futures::future::join_all(checks).await;
        }
    })
}
