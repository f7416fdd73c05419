//! The one read-modify-write of a JSON object under compare-and-swap, and its retry policy.
//!
//! Every mutable document several writers share (repository indexes, the catalog, the v1 id
//! table's shards) changes only through [`update_json`]: read the object and its version, apply
//! the change, write it back only if nobody wrote it meanwhile ([`PutMode::Update`], or
//! [`PutMode::Create`] when it did not exist), else re-read and retry after a jittered pause. No
//! update is ever lost on a backend whose conditional puts are atomic. The loop is the same for
//! every backend: with S3's `conditional_writes = "emulated"` the store itself does a
//! read-compare-write, which is only safe while a single publisher runs (see `store/s3.rs`).

use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{PutMode, PutOptions, Store, StoreError};
use crate::layout;

/// Attempts before giving up: each failed one means another writer committed in between, so 50
/// only runs out when dozens of writers keep changing the same object.
pub const MAX_ATTEMPTS: u32 = 50;

/// Jittered, growing pause between attempts (1..=5·(n+1) ms, capped at 105 ms), so racing
/// writers spread out instead of colliding again in lockstep.
async fn backoff(attempt: u32) {
    let cap = 5 * u64::from(attempt.min(20) + 1);
    tokio::time::sleep(Duration::from_millis(rand::random_range(1..=cap))).await;
}

/// Applies `change` to the JSON object at `key` under compare-and-swap, retrying on conflicts,
/// and returns the object as it now stands (`None`: it does not exist and `change` left it so).
///
/// `change` sees the stored document (`None` when there is none) and edits it in place; it runs
/// again on every attempt, against the fresh copy, so it must not rely on an earlier run. An
/// unchanged document is not written. An error from `change` stops the update. Documents are
/// written pretty-printed, as [`layout::JSON_CONTENT_TYPE`] with [`layout::CACHE_INDEX`]: they
/// are all index files. Removing a document is not an update: `change` must not turn `Some`
/// into `None`.
pub async fn update_json<T>(
    store: &dyn Store,
    key: &str,
    mut change: impl FnMut(&mut Option<T>) -> anyhow::Result<()>,
) -> anyhow::Result<Option<T>>
where
    T: Serialize + DeserializeOwned + Clone + PartialEq,
{
    for attempt in 0..MAX_ATTEMPTS {
        let (before, mode) = match store.get(key).await? {
            Some(obj) => {
                let doc: T = serde_json::from_slice(&obj.bytes)
                    .with_context(|| format!("{key}: cannot parse"))?;
                (Some(doc), PutMode::Update(obj.version))
            }
            None => (None, PutMode::Create),
        };
        let mut doc = before.clone();
        change(&mut doc)?;
        let Some(new) = &doc else {
            if before.is_some() {
                bail!("{key}: an update cannot remove the object");
            }
            return Ok(None);
        };
        if before.as_ref() == Some(new) {
            tracing::debug!("{key}: already up to date");
            return Ok(doc);
        }
        let body = serde_json::to_vec_pretty(new).expect("a JSON document serialises");
        let opts = PutOptions {
            content_type: layout::JSON_CONTENT_TYPE.to_owned(),
            cache_control: layout::CACHE_INDEX,
            mode,
        };
        match store.put(key, Bytes::from(body), &opts).await {
            Ok(()) => {
                tracing::info!("committed {key}");
                return Ok(doc);
            }
            Err(StoreError::Conflict) => {
                tracing::debug!("{key}: changed concurrently, retrying (attempt {attempt})");
                backoff(attempt).await;
            }
            Err(e) => return Err(anyhow::Error::from(e).context(format!("cannot write {key}"))),
        }
    }
    bail!("{key}: gave up after {MAX_ATTEMPTS} attempts; other writers kept changing it")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use super::*;
    use crate::store::LocalStore;

    type Doc = BTreeSet<u32>;

    /// Racing updaters, each on its own thread and runtime so they truly interleave: every
    /// update lands, and the conflicts that made them retry really happened.
    #[test]
    fn concurrent_updaters_lose_nothing() {
        const WRITERS: u32 = 8;
        const EACH: u32 = 10;
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(LocalStore::open(dir.path()).unwrap());
        let key = "repositories/race/_index.json";
        let runs = Arc::new(std::sync::atomic::AtomicU32::new(0));
        std::thread::scope(|s| {
            for w in 0..WRITERS {
                let (store, runs) = (store.clone(), runs.clone());
                s.spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_time()
                        .build()
                        .unwrap();
                    rt.block_on(async {
                        for i in 0..EACH {
                            let got = update_json::<Doc>(store.as_ref(), key, |doc| {
                                runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                doc.get_or_insert_with(Doc::new).insert(w * EACH + i);
                                Ok(())
                            })
                            .await
                            .unwrap();
                            assert!(got.unwrap().contains(&(w * EACH + i)));
                        }
                    });
                });
            }
        });
        let rt = tokio::runtime::Runtime::new().unwrap();
        let stored: Doc =
            serde_json::from_slice(&rt.block_on(store.get(key)).unwrap().unwrap().bytes).unwrap();
        assert_eq!(stored, (0..WRITERS * EACH).collect::<Doc>());
        let runs = runs.load(std::sync::atomic::Ordering::Relaxed);
        eprintln!("{} updates took {runs} attempts", WRITERS * EACH);
    }

    #[tokio::test]
    async fn unchanged_and_absent_documents_are_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let key = "_catalog.json";
        // Left absent: nothing is created.
        let got = update_json::<Doc>(&store, key, |_| Ok(())).await.unwrap();
        assert_eq!(got, None);
        assert!(store.get(key).await.unwrap().is_none());
        update_json::<Doc>(&store, key, |d| {
            d.get_or_insert_with(Doc::new).insert(1);
            Ok(())
        })
        .await
        .unwrap();
        let v = store.get(key).await.unwrap().unwrap().version;
        // The same value again: no write, so the version stays.
        update_json::<Doc>(&store, key, |d| {
            d.get_or_insert_with(Doc::new).insert(1);
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(store.get(key).await.unwrap().unwrap().version, v);
        // Removing is refused, and an error from the change stops the update.
        let err = update_json::<Doc>(&store, key, |d| {
            *d = None;
            Ok(())
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("cannot remove"), "{err}");
        let err = update_json::<Doc>(&store, key, |_| bail!("no"))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "no");
        // A document that is not the expected JSON is an error, never overwritten.
        store
            .put(
                key,
                Bytes::from_static(b"not json"),
                &PutOptions {
                    content_type: layout::JSON_CONTENT_TYPE.into(),
                    cache_control: layout::CACHE_INDEX,
                    mode: PutMode::Overwrite,
                },
            )
            .await
            .unwrap();
        assert!(update_json::<Doc>(&store, key, |_| Ok(())).await.is_err());
        assert_eq!(
            &store.get(key).await.unwrap().unwrap().bytes[..],
            b"not json"
        );
    }
}
