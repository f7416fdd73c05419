//! The index cache: repository indexes (and the catalog) loaded from the store, kept in moka.
//!
//! This is what makes `serve` answer without touching the store per request. Entries live for a
//! short TTL so a tag move shows up within one TTL; concurrent misses for one key share one load; a
//! failed refresh keeps serving the last good copy (the endpoint survives an unreachable store);
//! documents that do not exist are cached negatively for a shorter time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use serde::de::DeserializeOwned;

use crate::store::Store;

/// A loaded document, or the fact that it does not exist.
#[derive(Debug)]
pub enum Cached<T> {
    Found(Arc<T>),
    Missing,
}

impl<T> Clone for Cached<T> {
    fn clone(&self) -> Self {
        match self {
            Cached::Found(t) => Cached::Found(t.clone()),
            Cached::Missing => Cached::Missing,
        }
    }
}

/// Per-entry TTL: found documents for `ttl`, missing ones for `negative_ttl`.
struct Ttl {
    ttl: Duration,
    negative_ttl: Duration,
}

impl<T> Expiry<String, Cached<T>> for Ttl {
    fn expire_after_create(&self, _: &String, v: &Cached<T>, _: Instant) -> Option<Duration> {
        Some(match v {
            Cached::Found(_) => self.ttl,
            Cached::Missing => self.negative_ttl,
        })
    }
}

/// Counters for `/metrics` and tests.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub loads: AtomicU64,
    pub load_errors: AtomicU64,
    pub stale_serves: AtomicU64,
    /// Whether the most recent load from the store failed (readiness: this replica cannot
    /// refresh what it serves).
    pub last_load_failed: AtomicBool,
}

/// Cache settings.
#[derive(Debug, Clone, Copy)]
pub struct CacheConfig {
    pub ttl: Duration,
    pub negative_ttl: Duration,
    /// How long a last-good copy may be served while the store is failing.
    pub max_stale: Duration,
    pub capacity: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            ttl: Duration::from_secs(10),
            negative_ttl: Duration::from_secs(2),
            max_stale: Duration::from_secs(24 * 3600),
            capacity: 100_000,
        }
    }
}

/// A cache of JSON documents at store keys.
pub struct DocCache<T> {
    store: Arc<dyn Store>,
    fresh: moka::future::Cache<String, Cached<T>>,
    last_good: moka::sync::Cache<String, Arc<T>>,
    pub stats: Arc<CacheStats>,
    parse: fn(&[u8]) -> anyhow::Result<T>,
    /// Cleared when a load fails: passive health marking of the origin behind this store.
    health: Option<Arc<AtomicBool>>,
}

impl<T: DeserializeOwned + Send + Sync + 'static> DocCache<T> {
    pub fn new(store: Arc<dyn Store>, cfg: CacheConfig) -> Self {
        Self::with_parser(store, cfg, |b| Ok(serde_json::from_slice(b)?))
    }
}

impl<T: Send + Sync + 'static> DocCache<T> {
    pub fn with_parser(
        store: Arc<dyn Store>,
        cfg: CacheConfig,
        parse: fn(&[u8]) -> anyhow::Result<T>,
    ) -> Self {
        DocCache {
            store,
            fresh: moka::future::Cache::builder()
                .max_capacity(cfg.capacity)
                .expire_after(Ttl {
                    ttl: cfg.ttl,
                    negative_ttl: cfg.negative_ttl,
                })
                .build(),
            last_good: moka::sync::Cache::builder()
                .max_capacity(cfg.capacity)
                .time_to_live(cfg.max_stale)
                .build(),
            stats: Arc::default(),
            parse,
            health: None,
        }
    }

    /// Clears `flag` whenever a load from the store fails.
    pub fn with_health_flag(mut self, flag: Arc<AtomicBool>) -> Self {
        self.health = Some(flag);
        self
    }

    /// The document at `key`: from cache, or loaded once for all concurrent callers.
    pub async fn get(&self, key: &str) -> Result<Cached<T>, Arc<anyhow::Error>> {
        if let Some(v) = self.fresh.get(key).await {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(v);
        }
        self.fresh.try_get_with_by_ref(key, self.load(key)).await
    }

    /// Forgets `key`, so the next request loads it (mirror mode after it populated a repository).
    pub async fn invalidate(&self, key: &str) {
        self.fresh.invalidate(key).await;
    }

    async fn load(&self, key: &str) -> anyhow::Result<Cached<T>> {
        self.stats.loads.fetch_add(1, Ordering::Relaxed);
        let loaded = match self.store.get(key).await {
            Ok(Some(obj)) => (self.parse)(&obj.bytes).map(|t| Cached::Found(Arc::new(t))),
            Ok(None) => Ok(Cached::Missing),
            Err(e) => Err(anyhow::Error::new(e)),
        };
        self.stats
            .last_load_failed
            .store(loaded.is_err(), Ordering::Relaxed);
        match loaded {
            Ok(Cached::Found(t)) => {
                self.last_good.insert(key.to_owned(), t.clone());
                Ok(Cached::Found(t))
            }
            Ok(Cached::Missing) => {
                self.last_good.invalidate(key);
                Ok(Cached::Missing)
            }
            Err(e) => {
                self.stats.load_errors.fetch_add(1, Ordering::Relaxed);
                if let Some(flag) = &self.health {
                    flag.store(false, Ordering::Relaxed);
                }
                match self.last_good.get(key) {
                    Some(t) => {
                        self.stats.stale_serves.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(key, error = %e, "index refresh failed; serving the last good copy");
                        Ok(Cached::Found(t))
                    }
                    None => {
                        tracing::error!(key, error = %e, "index load failed");
                        Err(e)
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{LocalStore, PutMode, PutOptions};
    use bytes::Bytes;

    fn opts() -> PutOptions {
        PutOptions {
            content_type: "application/json".into(),
            cache_control: "no-cache",
            mode: PutMode::Overwrite,
        }
    }

    #[tokio::test]
    async fn ttl_negative_and_stale() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(LocalStore::open(dir.path()).unwrap());
        let cfg = CacheConfig {
            ttl: Duration::from_millis(200),
            negative_ttl: Duration::from_millis(100),
            ..Default::default()
        };
        let cache: DocCache<Vec<u32>> = DocCache::new(store.clone(), cfg);
        assert!(matches!(
            cache.get("doc.json").await.unwrap(),
            Cached::Missing
        ));
        store
            .put("doc.json", Bytes::from_static(b"[1]"), &opts())
            .await
            .unwrap();
        // Still negatively cached...
        assert!(matches!(
            cache.get("doc.json").await.unwrap(),
            Cached::Missing
        ));
        tokio::time::sleep(Duration::from_millis(150)).await;
        // ...then visible.
        let Cached::Found(v) = cache.get("doc.json").await.unwrap() else {
            panic!()
        };
        assert_eq!(*v, vec![1]);
        // A corrupt document after expiry: the last good copy is served.
        store
            .put("doc.json", Bytes::from_static(b"{corrupt"), &opts())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Cached::Found(v) = cache.get("doc.json").await.unwrap() else {
            panic!()
        };
        assert_eq!(*v, vec![1]);
        assert_eq!(cache.stats.stale_serves.load(Ordering::Relaxed), 1);
    }
}
