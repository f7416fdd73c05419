//! Per-client request rates: a token bucket per client address, one for the registry API and
//! one for `/token`, answering `429 Too Many Requests` with `Retry-After` past them.
//!
//! The client is the address [`RegionResolver::client_ip`] trusts (after `trusted_proxy_hops`);
//! IPv6 clients are counted per /64, the block one subscriber usually holds. The table of
//! buckets is bounded (`max_clients` entries, each forgotten once its bucket would be full
//! again), so a flood of addresses costs bounded memory. Off by default; when off the endpoint
//! does not look at any of this.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::error::OciError;
use crate::federation::region::RegionResolver;

/// `[serve.client_limits]`: rates are requests per second per client, bursts how many a client
/// may send at once; a rate of 0 (the default) leaves that kind unlimited.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientLimitsConfig {
    #[serde(default)]
    pub api_rate: f64,
    pub api_burst: Option<u32>,
    #[serde(default)]
    pub token_rate: f64,
    pub token_burst: Option<u32>,
    /// Clients remembered at once (default 100000); beyond, the least recently seen are dropped.
    pub max_clients: Option<u64>,
}

/// Default burst: a `docker pull` of a many-layered image sends a few dozen API requests at once.
const DEFAULT_API_BURST: u32 = 100;
/// Default burst for `/token`: a pull asks for a token or two.
const DEFAULT_TOKEN_BURST: u32 = 10;
const DEFAULT_MAX_CLIENTS: u64 = 100_000;

/// The limits in force: `None` from [`ClientLimits::new`] when none is configured.
pub struct ClientLimits {
    api: Option<Buckets>,
    token: Option<Buckets>,
    epoch: Instant,
}

impl ClientLimits {
    pub fn new(cfg: &ClientLimitsConfig) -> anyhow::Result<Option<ClientLimits>> {
        let max_clients = cfg.max_clients.unwrap_or(DEFAULT_MAX_CLIENTS).max(1);
        let api = Buckets::new(
            "api",
            cfg.api_rate,
            cfg.api_burst.unwrap_or(DEFAULT_API_BURST),
            max_clients,
        )?;
        let token = Buckets::new(
            "token",
            cfg.token_rate,
            cfg.token_burst.unwrap_or(DEFAULT_TOKEN_BURST),
            max_clients,
        )?;
        Ok((api.is_some() || token.is_some()).then(|| ClientLimits {
            api,
            token,
            epoch: Instant::now(),
        }))
    }

    /// The answer for a request over its client's limit; `None` to serve it.
    pub fn check<B>(
        &self,
        clients: &RegionResolver,
        req: &Request<B>,
        peer: Option<SocketAddr>,
    ) -> Option<Response> {
        let path = req.uri().path();
        let buckets = if path == "/token" {
            self.token.as_ref()
        } else if super::is_v2(path) || path.starts_with("/v1/") {
            self.api.as_ref()
        } else {
            None
        }?;
        // Without a trusted forwarded address (a request that bypassed the balancer), the peer.
        let client = clients
            .client_ip(req.headers(), peer)
            .or(peer.map(|p| p.ip()))?;
        let now = self.epoch.elapsed().as_nanos() as u64;
        let wait = buckets.take(client_key(client), now).err()?;
        Some(too_many_requests(wait))
    }
}

/// The bucket key of a client: an IPv4 address, or an IPv6 /64.
fn client_key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(_) => u128::from(v6),
            None => u128::from(v6) & (u128::MAX << 64),
        },
    }
}

/// One kind's buckets, kept as GCRA: per client, the time its bucket will be full again
/// ("theoretical arrival time"), in nanoseconds since the epoch. A request is let through when
/// that stays within `burst` intervals of now.
struct Buckets {
    /// Nanoseconds a request costs (1 / rate).
    interval: u64,
    /// How far ahead of now a client may run: `burst` intervals.
    tolerance: u64,
    table: moka::sync::Cache<u128, Arc<AtomicU64>, foldhash::fast::RandomState>,
}

impl Buckets {
    fn new(what: &str, rate: f64, burst: u32, max_clients: u64) -> anyhow::Result<Option<Self>> {
        anyhow::ensure!(
            rate.is_finite() && rate >= 0.0,
            "client_limits: {what}_rate must be a number of requests per second, 0 or more"
        );
        if rate == 0.0 {
            return Ok(None);
        }
        anyhow::ensure!(burst >= 1, "client_limits: {what}_burst must be at least 1");
        let interval = (1e9 / rate).ceil().max(1.0) as u64;
        let tolerance = interval.saturating_mul(u64::from(burst));
        // A client unseen for longer than a full refill has a full bucket: forgetting it is exact.
        let idle = Duration::from_nanos(tolerance) + Duration::from_secs(1);
        let table = moka::sync::Cache::builder()
            .max_capacity(max_clients)
            .time_to_idle(idle)
            .build_with_hasher(foldhash::fast::RandomState::default());
        Ok(Some(Buckets {
            interval,
            tolerance,
            table,
        }))
    }

    /// Takes a token from `key`'s bucket at `now`, or says how long until one is there.
    fn take(&self, key: u128, now: u64) -> Result<(), Duration> {
        let tat = self.table.get_with(key, || Arc::new(AtomicU64::new(0)));
        let mut current = tat.load(Ordering::Relaxed);
        loop {
            let next = current.max(now) + self.interval;
            if next - now > self.tolerance {
                return Err(Duration::from_nanos(next - self.tolerance - now));
            }
            match tat.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Ok(()),
                Err(seen) => current = seen,
            }
        }
    }
}

/// `429` with the whole seconds until the next request would pass (clients retry after it).
fn too_many_requests(wait: Duration) -> Response {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut resp = OciError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "TOOMANYREQUESTS",
        "too many requests from this client; retry later",
    )
    .into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn buckets(rate: f64, burst: u32) -> Buckets {
        Buckets::new("api", rate, burst, 10).unwrap().unwrap()
    }

    #[test]
    fn a_burst_passes_then_the_rate_with_the_wait_until_the_next_token() {
        let b = buckets(2.0, 3);
        let t0 = 10 * SEC;
        for _ in 0..3 {
            assert_eq!(b.take(1, t0), Ok(()));
        }
        // The fourth at once waits one interval (half a second at 2/s).
        assert_eq!(b.take(1, t0), Err(Duration::from_millis(500)));
        // Another client has its own bucket.
        assert_eq!(b.take(2, t0), Ok(()));
        // Half a second later one token is back, and only one.
        assert_eq!(b.take(1, t0 + SEC / 2), Ok(()));
        assert!(b.take(1, t0 + SEC / 2).is_err());
        // After a full refill, the whole burst again.
        for _ in 0..3 {
            assert_eq!(b.take(1, t0 + 10 * SEC), Ok(()));
        }
        assert!(b.take(1, t0 + 10 * SEC).is_err());
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_and_at_least_one() {
        for (wait, secs) in [(1, "1"), (500_000_000, "1"), (SEC, "1"), (SEC + 1, "2")] {
            let r = too_many_requests(Duration::from_nanos(wait));
            assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(r.headers()[header::RETRY_AFTER], secs);
        }
    }

    #[test]
    fn ipv6_clients_count_per_64_and_ipv4_per_address() {
        let key = |s: &str| client_key(s.parse().unwrap());
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
        assert_eq!(key("192.0.2.1"), key("::ffff:192.0.2.1"));
    }

    #[test]
    fn zero_rates_are_off_and_bad_ones_refused() {
        let off = ClientLimitsConfig::default();
        assert!(ClientLimits::new(&off).unwrap().is_none());
        let bad = ClientLimitsConfig {
            api_rate: -1.0,
            ..Default::default()
        };
        assert!(ClientLimits::new(&bad).is_err());
        let zero_burst = ClientLimitsConfig {
            token_rate: 1.0,
            token_burst: Some(0),
            ..Default::default()
        };
        assert!(ClientLimits::new(&zero_burst).is_err());
    }
}
