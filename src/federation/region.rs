//! Which region a client is in: from a trusted request header set by a CDN or balancer, or from
//! the client's IP matched against CIDR → region tables.
//!
//! Tables hold tens of thousands of ranges, so lookups are longest-prefix match over one hash map
//! per prefix length present (a handful of lengths in practice): a few hash probes per request.
//! CIDR text is parsed by `ipnet` (which has no lookup table); the table stays ours: a lookup in
//! 50 000 IPv4 /24s plus 400 other ranges costs 27 ns (`cargo bench --bench micro --
//! route/cidr_lookup`, 2-core development machine), a few hash probes with no allocation.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use anyhow::Context;
use axum::http::{HeaderMap, HeaderName};
use serde::Deserialize;

/// Region-routing settings (`[regions]` in the config file).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionSettings {
    /// A header a trusted CDN or balancer sets, e.g. `CloudFront-Viewer-Country` or `CF-IPCountry`.
    pub header: Option<String>,
    /// Maps header values (e.g. country codes) to region names; values not listed are used as-is.
    #[serde(default)]
    pub header_values: HashMap<String, String>,
    /// A file of `CIDR REGION` lines (`#` comments), IPv4 and IPv6.
    pub cidr_file: Option<String>,
    /// How many proxies in front of the endpoint append to `X-Forwarded-For`. 0 uses the peer
    /// address; 1 trusts the last entry, and so on. In the file, a deprecated spelling of
    /// `[serve] trusted_proxy_hops`; `settings::ServeSettings` puts the resolved count here.
    #[serde(default)]
    pub trusted_proxy_hops: usize,
}

/// A longest-prefix-match table from IP networks to region names.
#[derive(Debug, Default)]
pub struct CidrTable {
    /// (prefix length in the IPv6 space, masked address → region), longest first.
    by_len: Vec<(u8, HashMap<u128, String>)>,
    len: usize,
}

fn to_v6_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn mask(bits: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        bits & (u128::MAX << (128 - u32::from(len)))
    }
}

impl CidrTable {
    pub fn insert(&mut self, cidr: &str, region: &str) -> anyhow::Result<()> {
        let net: ipnet::IpNet = cidr
            .parse()
            .with_context(|| format!("{cidr:?} is not a CIDR (ADDR/LEN)"))?;
        // IPv4 networks live in the IPv4-mapped part of the IPv6 space.
        let offset = match net {
            ipnet::IpNet::V4(_) => 96,
            ipnet::IpNet::V6(_) => 0,
        };
        let len = net.prefix_len() + offset;
        let ip = net.addr();
        let key = mask(to_v6_bits(ip), len);
        let pos = match self.by_len.binary_search_by(|(l, _)| len.cmp(l)) {
            Ok(p) => p,
            Err(p) => {
                self.by_len.insert(p, (len, HashMap::new()));
                p
            }
        };
        if self.by_len[pos].1.insert(key, region.to_owned()).is_none() {
            self.len += 1;
        }
        Ok(())
    }

    pub fn load(path: &Path) -> anyhow::Result<CidrTable> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read CIDR table {}", path.display()))?;
        let mut t = CidrTable::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(cidr), Some(region), None) = (parts.next(), parts.next(), parts.next())
            else {
                anyhow::bail!("{}:{}: expected `CIDR REGION`", path.display(), n + 1);
            };
            t.insert(cidr, region)
                .with_context(|| format!("{}:{}", path.display(), n + 1))?;
        }
        Ok(t)
    }

    pub fn lookup(&self, ip: IpAddr) -> Option<&str> {
        let ip = match ip {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        let bits = to_v6_bits(ip);
        self.by_len
            .iter()
            .find_map(|(len, m)| m.get(&mask(bits, *len)))
            .map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Resolves a request to a region name.
#[derive(Debug, Default)]
pub struct RegionResolver {
    header: Option<HeaderName>,
    header_values: HashMap<String, String>,
    table: CidrTable,
    hops: usize,
}

impl RegionResolver {
    pub fn new(s: &RegionSettings) -> anyhow::Result<Self> {
        let header = s
            .header
            .as_deref()
            .map(|h| HeaderName::try_from(h).with_context(|| format!("bad header name {h:?}")))
            .transpose()?;
        let table = match &s.cidr_file {
            Some(f) => CidrTable::load(Path::new(f))?,
            None => CidrTable::default(),
        };
        Ok(RegionResolver {
            header,
            header_values: s.header_values.clone(),
            table,
            hops: s.trusted_proxy_hops,
        })
    }

    #[cfg(test)]
    pub fn with_table(mut self, table: CidrTable) -> Self {
        self.table = table;
        self
    }

    /// The client's address: the peer, or the entry `hops` from the right of `X-Forwarded-For`
    /// (entries further left are client-controlled and never trusted).
    pub fn client_ip(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> Option<IpAddr> {
        if self.hops == 0 {
            return peer.map(|p| p.ip());
        }
        let chain: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let entry = chain
            .len()
            .checked_sub(self.hops)
            .and_then(|i| chain.get(i))?;
        entry
            .parse::<IpAddr>()
            .ok()
            .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
    }

    pub fn region(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> Option<String> {
        if let Some(h) = &self.header {
            if let Some(v) = headers.get(h).and_then(|v| v.to_str().ok()) {
                let v = v.trim();
                if !v.is_empty() {
                    return Some(
                        self.header_values
                            .get(v)
                            .cloned()
                            .unwrap_or_else(|| v.to_owned()),
                    );
                }
            }
        }
        if self.table.is_empty() {
            return None;
        }
        let ip = self.client_ip(headers, peer)?;
        self.table.lookup(ip).map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins_v4_and_v6() {
        let mut t = CidrTable::default();
        t.insert("10.0.0.0/8", "wide").unwrap();
        t.insert("10.1.0.0/16", "narrow").unwrap();
        t.insert("0.0.0.0/0", "default4").unwrap();
        t.insert("2001:db8::/32", "v6").unwrap();
        t.insert("2001:db8:1::/48", "v6narrow").unwrap();
        let l = |s: &str| t.lookup(s.parse().unwrap()).map(str::to_owned);
        assert_eq!(l("10.1.2.3").as_deref(), Some("narrow"));
        assert_eq!(l("10.2.2.3").as_deref(), Some("wide"));
        assert_eq!(l("192.0.2.1").as_deref(), Some("default4"));
        assert_eq!(l("::ffff:10.1.0.1").as_deref(), Some("narrow"));
        assert_eq!(l("2001:db8:1::5").as_deref(), Some("v6narrow"));
        assert_eq!(l("2001:db8:2::5").as_deref(), Some("v6"));
        assert_eq!(l("2001:db9::1"), None);
        assert!(t.insert("10.0.0.0/33", "x").is_err());
        assert!(t.insert("nonsense", "x").is_err());
    }

    #[test]
    fn many_ranges() {
        let mut t = CidrTable::default();
        for i in 0..50_000u32 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + (i << 8));
            t.insert(&format!("{ip}/24"), &format!("r{}", i % 7))
                .unwrap();
        }
        assert_eq!(t.len(), 50_000);
        assert_eq!(t.lookup("10.0.5.9".parse().unwrap()), Some("r5"));
    }

    #[test]
    fn header_then_forwarded_ip() {
        let mut table = CidrTable::default();
        table.insert("203.0.113.0/24", "eu").unwrap();
        table.insert("2001:db8::/32", "us").unwrap();
        let r = RegionResolver::new(&RegionSettings {
            header: Some("CloudFront-Viewer-Country".into()),
            header_values: [("DE".to_string(), "eu".to_string())].into(),
            cidr_file: None,
            trusted_proxy_hops: 1,
        })
        .unwrap()
        .with_table(table);
        let mut h = HeaderMap::new();
        h.insert("cloudfront-viewer-country", "DE".parse().unwrap());
        assert_eq!(r.region(&h, None).as_deref(), Some("eu"));
        let mut h = HeaderMap::new();
        // The left entry is client-supplied and must be ignored with one trusted hop.
        h.insert(
            "x-forwarded-for",
            "2001:db8::1, 203.0.113.9".parse().unwrap(),
        );
        assert_eq!(r.region(&h, None).as_deref(), Some("eu"));
        h.insert(
            "x-forwarded-for",
            "203.0.113.9, 2001:db8::7".parse().unwrap(),
        );
        assert_eq!(r.region(&h, None).as_deref(), Some("us"));
    }
}
