use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// A graph of `levels` indexes, each listing the next one `dups` times, over one image manifest.
fn duplicated_chain(levels: usize, dups: usize) -> (Digest, HashMap<Digest, Vec<Digest>>) {
    let mut graph = HashMap::new();
    let mut below = Digest::sha256_of(b"image");
    graph.insert(below.clone(), Vec::new());
    for l in 0..levels {
        let d = Digest::sha256_of(format!("index {l}").as_bytes());
        graph.insert(d.clone(), vec![below.clone(); dups]);
        below = d;
    }
    (below, graph)
}

#[test]
fn each_digest_is_fetched_once_however_often_it_is_listed() {
    let (root, graph) = duplicated_chain(6, 12);
    let fetches = Cell::new(0);
    let walked = walk_sync(
        [root],
        WalkLimits::default(),
        "test",
        |d: &Digest| {
            fetches.set(fetches.get() + 1);
            Ok(graph[d].clone())
        },
        |children: &Vec<Digest>| children.clone(),
    )
    .unwrap();
    // 6 indexes and the image: a tree walk would visit 12^6 + ... nodes.
    assert_eq!(fetches.get(), 7);
    assert_eq!(walked.len(), 7);
    assert_eq!(walked.visits.last().unwrap().depth, 6);
}

#[tokio::test]
async fn the_async_walk_fetches_each_digest_once_too() {
    let (root, graph) = duplicated_chain(6, 12);
    let fetches = AtomicUsize::new(0);
    let walked = walk(
        [root],
        WalkLimits::default(),
        4,
        "test",
        |d: Digest| {
            fetches.fetch_add(1, Ordering::SeqCst);
            let c = graph[&d].clone();
            async move { anyhow::Ok(c) }
        },
        |children: &Vec<Digest>| children.clone(),
    )
    .await
    .unwrap();
    assert_eq!(fetches.load(Ordering::SeqCst), 7);
    assert_eq!(walked.len(), 7);
}

#[test]
fn a_graph_over_the_node_limit_fails_clearly() {
    let root = Digest::sha256_of(b"root");
    let kids: Vec<Digest> = (0..20)
        .map(|i| Digest::sha256_of(format!("{i}").as_bytes()))
        .collect();
    let limits = WalkLimits { max_manifests: 19 };
    let fetch = |d: &Digest| Ok(if *d == root { kids.clone() } else { vec![] });
    let err = walk_sync([root.clone()], limits, "oci:x", fetch, |c: &Vec<Digest>| {
        c.clone()
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("oci:x"), "{err}");
    assert!(err.contains("more than 19 distinct manifests"), "{err}");
    // Exactly at the limit is fine; roots do not count.
    let limits = WalkLimits { max_manifests: 20 };
    let w = walk_sync([root.clone()], limits, "oci:x", fetch, |c: &Vec<Digest>| {
        c.clone()
    })
    .unwrap();
    assert_eq!(w.len(), 21);
}

#[test]
fn nesting_deeper_than_the_bound_fails_and_a_cycle_cannot_hang() {
    let (root, graph) = duplicated_chain(MAX_DEPTH + 1, 1);
    let err = walk_sync(
        [root],
        WalkLimits::default(),
        "deep",
        |d: &Digest| Ok(graph[d].clone()),
        |c: &Vec<Digest>| c.clone(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("nest deeper than 8 levels"), "{err}");
    let (root, graph) = duplicated_chain(MAX_DEPTH, 1);
    assert!(walk_sync(
        [root],
        WalkLimits::default(),
        "ok",
        |d: &Digest| Ok(graph[d].clone()),
        |c: &Vec<Digest>| c.clone(),
    )
    .is_ok());
    // A crafted cycle (impossible with real digests): visited once, then done.
    let a = Digest::sha256_of(b"a");
    let b = Digest::sha256_of(b"b");
    let graph: HashMap<Digest, Vec<Digest>> =
        [(a.clone(), vec![b.clone()]), (b.clone(), vec![a.clone()])].into();
    let w = walk_sync(
        [a],
        WalkLimits::default(),
        "cycle",
        |d: &Digest| Ok(graph[d].clone()),
        |c: &Vec<Digest>| c.clone(),
    )
    .unwrap();
    assert_eq!(w.len(), 2);
}

#[test]
fn blobs_are_listed_once() {
    let (root, graph) = duplicated_chain(2, 3);
    let w = walk_sync(
        [root],
        WalkLimits::default(),
        "t",
        |d: &Digest| Ok(graph[d].clone()),
        |c: &Vec<Digest>| c.clone(),
    )
    .unwrap();
    let blobs: Vec<Digest> = w.blobs(|c: &Vec<Digest>| c.iter().cloned());
    assert_eq!(blobs.len(), 2);
}
