//! A per-thread table of things made in the current second, for re-use within it.
//!
//! Both signed URLs ([`super::recent_urls`]) and whole answers ([`super::recent_answers`]) are
//! functions of their request and the second they were made in, so a repeat within that second
//! can be answered from what this thread already made. The table is bounded and emptied when the
//! second turns; entries are found by a keyed hash and then compared field by field by the caller,
//! so a hash collision costs a miss, never a wrong answer.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Entries kept per thread and second; past it, further requests are answered afresh.
pub const CAPACITY: usize = 4096;

/// A count of re-uses, for `/metrics`. Each thread adds to its own cache line, so the hot path
/// shares nothing between serving threads; a scrape sums the slots.
pub struct Tally([Slot; SLOTS]);

const SLOTS: usize = 16;

#[repr(align(128))]
struct Slot(AtomicU64);

impl Tally {
    pub const fn new() -> Self {
        Tally([const { Slot(AtomicU64::new(0)) }; SLOTS])
    }

    fn add(&self) {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static MINE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SLOTS;
        }
        self.0[MINE.with(|i| *i)].0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn total(&self) -> u64 {
        self.0.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

impl Default for Tally {
    fn default() -> Self {
        Self::new()
    }
}

/// One thread's entries of one second.
pub struct PerSecond<V> {
    /// Where hits are counted.
    reused: &'static Tally,
    second: u64,
    /// Seeded per process: request paths are client-chosen.
    state: foldhash::fast::RandomState,
    items: HashMap<u64, V, foldhash::fast::RandomState>,
}

impl<V> PerSecond<V> {
    pub fn new(reused: &'static Tally) -> Self {
        PerSecond {
            reused,
            second: 0,
            state: foldhash::fast::RandomState::default(),
            items: HashMap::default(),
        }
    }

    /// The table's hash of `key`.
    pub fn hash(&self, key: impl Hash) -> u64 {
        self.state.hash_one(key)
    }

    /// The entry kept under `hash` in `second` that `is_for` accepts; the table is emptied first
    /// when `second` is not the one it holds.
    pub fn get(&mut self, second: u64, hash: u64, is_for: impl Fn(&V) -> bool) -> Option<&V> {
        if self.second != second {
            self.second = second;
            self.items.clear();
        }
        let hit = self.items.get(&hash).filter(|v| is_for(v));
        if hit.is_some() {
            self.reused.add();
        }
        hit
    }

    /// Keeps `v` for the rest of `second`, unless the second has turned or the table is full.
    pub fn keep(&mut self, second: u64, hash: u64, v: V) {
        if self.second == second && (self.items.len() < CAPACITY || self.items.contains_key(&hash))
        {
            self.items.insert(hash, v);
        }
    }

    #[cfg(test)]
    pub fn kept(&self) -> usize {
        self.items.len()
    }
}
