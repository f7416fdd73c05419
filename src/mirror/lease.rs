//! A claim on copying one image, shared by every replica through the store.
//!
//! The lease is an object created with a conditional write (`If-None-Match: *` on S3, an exclusive
//! create on a local store), so of N replicas that miss the same image at once exactly one copies
//! it. It names an expiry, so a copier that crashed is taken over once it passes: the takeover is
//! a compare-and-swap on the version read, so two replicas cannot both take over one lease.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::store::{PutMode, PutOptions, Store, StoreError};

/// The lease object's body.
#[derive(Debug, Serialize, Deserialize)]
struct LeaseDoc {
    /// Which replica holds it (host name and process id), for operators reading the store.
    holder: String,
    /// Unix seconds.
    expires: i64,
}

/// The outcome of [`claim`].
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// This replica copies; [`release`] when done.
    Won,
    /// Another replica holds an unexpired lease.
    Held { holder: String },
}

fn put_options(mode: PutMode) -> PutOptions {
    PutOptions {
        content_type: crate::layout::JSON_CONTENT_TYPE.into(),
        cache_control: "no-store",
        mode,
    }
}

/// Tries to take the lease at `key` for `ttl`, at time `now` (Unix seconds).
pub async fn claim(
    store: &dyn Store,
    key: &str,
    holder: &str,
    ttl: Duration,
    now: i64,
) -> anyhow::Result<Claim> {
    let doc = LeaseDoc {
        holder: holder.to_owned(),
        expires: now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
    };
    let body = Bytes::from(serde_json::to_vec(&doc)?);
    // Two rounds: a lease released between our create and our read is simply created again.
    for _ in 0..2 {
        match store
            .put(key, body.clone(), &put_options(PutMode::Create))
            .await
        {
            Ok(()) => return Ok(Claim::Won),
            Err(StoreError::Conflict) => {}
            Err(StoreError::Other(e)) => return Err(e),
        }
        let Some(existing) = store.get(key).await? else {
            continue;
        };
        // An unreadable lease is treated as expired: it can only block, never protect.
        let current = serde_json::from_slice::<LeaseDoc>(&existing.bytes).ok();
        if let Some(c) = current.filter(|c| c.expires > now) {
            return Ok(Claim::Held { holder: c.holder });
        }
        return match store
            .put(key, body, &put_options(PutMode::Update(existing.version)))
            .await
        {
            Ok(()) => Ok(Claim::Won),
            Err(StoreError::Conflict) => Ok(Claim::Held {
                holder: "another replica (took over an expired lease)".into(),
            }),
            Err(StoreError::Other(e)) => Err(e),
        };
    }
    Ok(Claim::Held {
        holder: "another replica".into(),
    })
}

/// Gives the lease up, so a later miss (after a failure) may copy again.
pub async fn release(store: &dyn Store, key: &str) {
    if let Err(e) = store.delete(key).await {
        tracing::warn!(key, error = %e, "cannot release a mirror lease; it expires on its own");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LocalStore;

    #[tokio::test]
    async fn one_winner_then_takeover_after_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let key = "_mirror/leases/aa";
        let ttl = Duration::from_secs(60);
        assert_eq!(
            claim(&store, key, "a", ttl, 1000).await.unwrap(),
            Claim::Won
        );
        // Held while unexpired, by whoever asks.
        assert_eq!(
            claim(&store, key, "b", ttl, 1059).await.unwrap(),
            Claim::Held { holder: "a".into() }
        );
        // Expired: taken over once.
        assert_eq!(
            claim(&store, key, "b", ttl, 1061).await.unwrap(),
            Claim::Won
        );
        assert_eq!(
            claim(&store, key, "c", ttl, 1062).await.unwrap(),
            Claim::Held { holder: "b".into() }
        );
        release(&store, key).await;
        assert_eq!(
            claim(&store, key, "c", ttl, 1063).await.unwrap(),
            Claim::Won
        );
    }

    #[tokio::test]
    async fn racing_claims_have_one_winner() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(LocalStore::open(dir.path()).unwrap());
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    claim(
                        store.as_ref(),
                        "_mirror/leases/bb",
                        &format!("r{i}"),
                        Duration::from_secs(60),
                        5,
                    )
                    .await
                    .unwrap()
                })
            })
            .collect();
        let mut won = 0;
        for t in tasks {
            if t.await.unwrap() == Claim::Won {
                won += 1;
            }
        }
        assert_eq!(won, 1);
    }
}
