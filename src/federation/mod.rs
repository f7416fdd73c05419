//! Federation: which origin serves a request, and steering around origins that are down.
//!
//! An origin is a signer (how URLs are made) plus a store (where its index files are read). Routes
//! map repository-name prefixes (longest match wins) to an ordered list of origins; a request goes
//! to the first healthy origin of its route, preferring one in the client's region, and when all
//! are down to the one that last answered. Health comes from active probes of the `_health` canary
//! and from index loads failing.

pub mod cache;
pub mod config;
pub mod health;
pub mod mirror;
pub mod origin;
pub mod region;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::federation::cache::{CacheConfig, DocCache};
use crate::index::{Catalog, RepoIndex};
use crate::reference::RepoName;
use crate::sign::{Method, SignRequest, Signer};
use crate::store::Store;

use region::RegionResolver;

/// One place content can be fetched from, with its own view of the index files.
pub struct Origin {
    pub name: String,
    pub signer: Arc<dyn Signer>,
    pub store: Arc<dyn Store>,
    pub repos: DocCache<RepoIndex>,
    pub catalog: DocCache<Catalog>,
    /// Regions this origin is close to (empty: no preference).
    pub regions: Vec<String>,
    pub healthy: Arc<AtomicBool>,
}

impl Origin {
    pub fn new(
        name: impl Into<String>,
        signer: Arc<dyn Signer>,
        store: Arc<dyn Store>,
        regions: Vec<String>,
        cache: CacheConfig,
    ) -> Self {
        let healthy = Arc::new(AtomicBool::new(true));
        Origin {
            name: name.into(),
            signer,
            repos: DocCache::with_parser(store.clone(), cache, RepoIndex::for_serving)
                .with_health_flag(healthy.clone()),
            catalog: DocCache::new(store.clone(), cache).with_health_flag(healthy.clone()),
            store,
            regions,
            healthy,
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Records a health observation, logging transitions only.
    pub fn set_healthy(&self, ok: bool, why: &str) {
        let was = self.healthy.swap(ok, Ordering::Relaxed);
        if was != ok {
            if ok {
                tracing::info!(origin = %self.name, "origin healthy again");
            } else {
                tracing::warn!(origin = %self.name, reason = why, "origin marked unhealthy");
            }
        }
    }
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origin")
            .field("name", &self.name)
            .field("signer", &self.signer.kind())
            .field("store", &self.store.describe())
            .field("healthy", &self.is_healthy())
            .finish()
    }
}

/// A repository-name prefix and the origins that serve it, in preference order.
#[derive(Debug)]
pub struct Route {
    pub prefix: String,
    pub origins: Vec<usize>,
    /// The origin this route last picked while it was healthy: the fallback when all are down.
    last_good: AtomicUsize,
}

/// All origins and routes.
#[derive(Debug)]
pub struct Federation {
    pub origins: Vec<Arc<Origin>>,
    /// Sorted longest prefix first; the last route has the empty prefix (the default).
    routes: Vec<Route>,
    pub regions: RegionResolver,
}

impl Federation {
    /// One origin, `edge`, signing secure_link URLs over `store`, with the default route: what
    /// the in-process request tests run against.
    #[cfg(test)]
    pub(crate) fn one_edge(store: Arc<dyn Store>) -> Federation {
        let signer = crate::sign::secure_link::test_signer();
        let origin = Origin::new(
            "edge",
            Arc::new(signer),
            store,
            Vec::new(),
            CacheConfig::default(),
        );
        Federation::new(
            vec![Arc::new(origin)],
            Vec::new(),
            RegionResolver::default(),
        )
        .expect("one origin makes a federation")
    }

    /// Builds the table; `routes` are (prefix, origin indexes). A default route over every origin
    /// in order is added when none has the empty prefix.
    pub fn new(
        origins: Vec<Arc<Origin>>,
        routes: Vec<(String, Vec<usize>)>,
        regions: RegionResolver,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(!origins.is_empty(), "no origins configured");
        let mut table: Vec<Route> = Vec::new();
        for (prefix, list) in routes {
            anyhow::ensure!(!list.is_empty(), "route {prefix:?} lists no origins");
            anyhow::ensure!(
                list.iter().all(|&i| i < origins.len()),
                "route {prefix:?} names an unknown origin"
            );
            anyhow::ensure!(
                !table.iter().any(|r| r.prefix == prefix),
                "route prefix {prefix:?} is configured twice"
            );
            let first = list[0];
            table.push(Route {
                prefix,
                origins: list,
                last_good: AtomicUsize::new(first),
            });
        }
        if !table.iter().any(|r| r.prefix.is_empty()) {
            table.push(Route {
                prefix: String::new(),
                origins: (0..origins.len()).collect(),
                last_good: AtomicUsize::new(0),
            });
        }
        table.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Ok(Federation {
            origins,
            routes: table,
            regions,
        })
    }

    /// Which origins are healthy, one bit each: [`Federation::pick`] is a function of this, the
    /// name and the region. `None` past 64 origins.
    pub fn health_mask(&self) -> Option<u64> {
        if self.origins.len() > 64 {
            return None;
        }
        Some(
            self.origins
                .iter()
                .enumerate()
                .fold(0, |mask, (i, o)| mask | (u64::from(o.is_healthy()) << i)),
        )
    }

    fn route(&self, name: &str) -> &Route {
        self.routes
            .iter()
            .find(|r| name.starts_with(r.prefix.as_str()))
            .expect("the default route matches everything")
    }

    /// The origin for a repository (or the catalog, with `None`) and a client region.
    pub fn pick(&self, name: Option<&RepoName>, region: Option<&str>) -> &Arc<Origin> {
        let route = self.route(name.map(RepoName::as_str).unwrap_or(""));
        let healthy = || {
            route
                .origins
                .iter()
                .copied()
                .filter(|&i| self.origins[i].is_healthy())
        };
        let chosen = region
            .and_then(|r| healthy().find(|&i| self.origins[i].regions.iter().any(|x| x == r)))
            .or_else(|| healthy().next());
        match chosen {
            Some(i) => {
                // Load first: an unconditional store on every request would bounce this cache
                // line between cores.
                if route.last_good.load(Ordering::Relaxed) != i {
                    route.last_good.store(i, Ordering::Relaxed);
                }
                &self.origins[i]
            }
            None => &self.origins[route.last_good.load(Ordering::Relaxed)],
        }
    }
}

/// Warns when an origin's host is a subdomain of the endpoint's public host: Go clients keep the
/// `Authorization` header on redirects to subdomains, so private-repository tokens would reach
/// the CDN.
pub fn warn_subdomain_origins(fed: &Federation, public_url: &str) {
    let Some(public_host) = url::Url::parse(public_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
    else {
        tracing::warn!(public_url, "public_url is not a valid URL");
        return;
    };
    for o in &fed.origins {
        let probe = o.signer.sign(
            &SignRequest {
                method: Method::Get,
                key: crate::layout::HEALTH,
                content_type: "text/plain",
                ttl: std::time::Duration::from_secs(1),
            },
            std::time::SystemTime::now(),
        );
        let Some(host) = url::Url::parse(&probe)
            .ok()
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
        else {
            continue; // relative: the embedded origin on this endpoint
        };
        if host.ends_with(&format!(".{public_host}")) {
            tracing::warn!(
                origin = %o.name,
                origin_host = %host,
                public_host = %public_host,
                "origin host is a subdomain of the endpoint's host: Go clients (docker, containerd, podman) forward Authorization to it; use a different domain"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::EmbeddedSigner;
    use crate::store::LocalStore;

    fn origin(name: &str, regions: &[&str], dir: &std::path::Path) -> Arc<Origin> {
        Arc::new(Origin::new(
            name,
            Arc::new(EmbeddedSigner::random(None)),
            Arc::new(LocalStore::open(dir).unwrap()),
            regions.iter().map(|s| s.to_string()).collect(),
            CacheConfig::default(),
        ))
    }

    #[test]
    fn longest_prefix_failover_regions_last_good() {
        let dir = tempfile::tempdir().unwrap();
        let o = vec![
            origin("a", &["us"], dir.path()),
            origin("b", &["eu"], dir.path()),
            origin("c", &[], dir.path()),
        ];
        let f = Federation::new(
            o,
            vec![
                ("team/".into(), vec![1, 0]),
                ("team/special".into(), vec![2]),
                (String::new(), vec![0, 1]),
            ],
            RegionResolver::default(),
        )
        .unwrap();
        let n = |s: &str| RepoName::parse(s).unwrap();
        assert_eq!(f.pick(Some(&n("team/x")), None).name, "b");
        assert_eq!(f.pick(Some(&n("team/special/x")), None).name, "c");
        assert_eq!(f.pick(Some(&n("other")), None).name, "a");
        assert_eq!(f.pick(None, None).name, "a");
        // Region preference among healthy origins of the route.
        assert_eq!(f.pick(Some(&n("other")), Some("eu")).name, "b");
        assert_eq!(f.pick(Some(&n("other")), Some("mars")).name, "a");
        // Failover, then "last known good" when everything is down; the health mask (part of
        // what a re-used answer is for) follows every change.
        assert_eq!(f.health_mask(), Some(0b111));
        f.origins[0].set_healthy(false, "test");
        assert_eq!(f.health_mask(), Some(0b110));
        assert_eq!(f.pick(Some(&n("other")), None).name, "b");
        f.origins[1].set_healthy(false, "test");
        assert_eq!(f.health_mask(), Some(0b100));
        assert_eq!(f.pick(Some(&n("other")), None).name, "b");
        f.origins[0].set_healthy(true, "test");
        assert_eq!(f.health_mask(), Some(0b101));
        assert_eq!(f.pick(Some(&n("other")), Some("eu")).name, "a");
    }

    #[test]
    fn bad_routes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let o = || vec![origin("a", &[], dir.path())];
        assert!(
            Federation::new(o(), vec![("x".into(), vec![5])], RegionResolver::default()).is_err()
        );
        assert!(
            Federation::new(o(), vec![("x".into(), vec![])], RegionResolver::default()).is_err()
        );
        assert!(Federation::new(vec![], vec![], RegionResolver::default()).is_err());
    }
}
