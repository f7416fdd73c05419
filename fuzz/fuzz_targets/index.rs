//! The store's own documents as the endpoint and the publisher read them back: the per-repository
//! index (`_index.json`), the v1 image shards, the catalog. A store can be written by an older
//! binary or edited by hand, so reading one must never panic or loop.
#![no_main]

use libfuzzer_sys::fuzz_target;
use static_registry::index::{Catalog, RepoIndex, V1ImageShard};

fuzz_target!(|data: &[u8]| {
    if let Ok(idx) = RepoIndex::from_slice(data) {
        let _ = idx.tags_list();
        let _ = idx.v1_tags();
        if let Some(v1) = &idx.v1 {
            for id in v1.tags.values().chain(v1.images.keys()) {
                let chain = v1.ancestry(id);
                assert!(chain.len() <= v1.images.len() + 1);
            }
        }
        // What the publisher writes back must read as the same document. Platforms are opaque
        // JSON, and serde_json does not round-trip every float exactly, so they are left out.
        let bytes = idx.to_vec();
        let again = RepoIndex::from_slice(&bytes).expect("a written index reads back");
        let without_platforms = |i: &RepoIndex| {
            let mut i = i.clone();
            let referrers = i.referrers.values_mut().flatten();
            for d in i.tags.values_mut().chain(referrers) {
                d.platform = None;
            }
            i
        };
        assert_eq!(without_platforms(&again), without_platforms(&idx));
        let mut merged = idx.clone();
        merged.merge(&idx);
    }
    if let Ok(shard) = serde_json::from_slice::<V1ImageShard>(data) {
        let _ = serde_json::to_vec(&shard);
    }
    if let Ok(mut catalog) = serde_json::from_slice::<Catalog>(data) {
        let _ = serde_json::to_vec(&catalog);
        if let Ok(name) = static_registry::reference::RepoName::parse("fuzz/x") {
            catalog.insert(&name);
        }
    }
});
