//! The label sets remote write senders send again and again, by their
//! bytes on the wire.
//!
//! A Prometheus remote write queue sends every series' labels in every
//! request, byte for byte the same while the series lives. Reading them
//! (UTF-8 checks, sorting, the checks on names, the encoding the store
//! looks series up by) was a third of the collector's ingest CPU. Here
//! the run of `Label` fields of a `TimeSeries`, as bytes, maps to the
//! labels they were read as the first time, so a series sent before costs
//! one hash and one comparison. Reading is a pure function of those
//! bytes, so a hit gives what reading would; only label sets that were
//! stored are learnt (a refused one is read, and refused, each time).
//!
//! The cache holds at most [`MAX_BYTES`] of label bytes and starts over
//! when full.

use std::sync::{RwLock, RwLockReadGuard};

use keel_series::FastMap;
use keel_series::labels::Labels;

/// Most label bytes kept (about 200,000 series of 300 bytes); the cache
/// starts over past it.
pub const MAX_BYTES: usize = 64 << 20;

/// Label sets by their bytes on the wire.
#[derive(Default)]
pub struct LabelCache {
    map: RwLock<Known>,
}

/// What the cache holds.
#[derive(Default)]
pub struct Known {
    by_bytes: FastMap<Box<[u8]>, Labels>,
    bytes: usize,
}

impl Known {
    /// The labels these wire bytes were read as, if learnt.
    pub fn get(&self, wire: &[u8]) -> Option<&Labels> {
        self.by_bytes.get(wire)
    }

    /// How many label sets are held.
    pub fn len(&self) -> usize {
        self.by_bytes.len()
    }

    /// True when none are.
    pub fn is_empty(&self) -> bool {
        self.by_bytes.is_empty()
    }
}

impl std::fmt::Debug for LabelCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabelCache")
            .field("label_sets", &self.read().len())
            .finish()
    }
}

impl LabelCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Read access for one request's decoding (many at once).
    pub fn read(&self) -> RwLockReadGuard<'_, Known> {
        self.map.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Learn what each run of label bytes was read and stored as.
    pub fn learn<'a>(&self, learnt: impl IntoIterator<Item = (&'a [u8], Labels)>) {
        let mut learnt = learnt.into_iter().peekable();
        if learnt.peek().is_none() {
            return;
        }
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        for (wire, labels) in learnt {
            if map.by_bytes.contains_key(wire) {
                continue;
            }
            if map.bytes + wire.len() > MAX_BYTES {
                map.by_bytes = FastMap::default();
                map.bytes = 0;
            }
            map.bytes += wire.len();
            map.by_bytes.insert(wire.into(), labels);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_starts_over_when_full_and_keeps_the_first_reading() {
        let cache = LabelCache::new();
        let a = Labels::new(vec![("__name__", "a")]);
        let b = Labels::new(vec![("__name__", "b")]);
        cache.learn([(&b"x"[..], a.clone())]);
        // Learnt again (two requests raced): the first reading stays.
        cache.learn([(&b"x"[..], b.clone())]);
        assert_eq!(cache.read().get(b"x"), Some(&a));
        let big = vec![7u8; MAX_BYTES];
        cache.learn([(&big[..], b.clone())]);
        let known = cache.read();
        assert_eq!(known.len(), 1, "started over before the big one");
        assert_eq!(known.get(&big), Some(&b));
        assert_eq!(known.get(b"x"), None);
    }
}
