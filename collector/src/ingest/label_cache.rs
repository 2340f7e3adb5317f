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
//! bytes, so a hit gives what reading would. Only label sets that read
//! without a problem are learnt (one with a bad name, a duplicate or no
//! metric name is read, and refused, each time); the store applies its
//! limits (series, label lengths, sample age) to every append whether
//! the labels came from here or not.
//!
//! The cache holds about [`MAX_BYTES`] (the label bytes twice over, for
//! the key and the labels, and a little for the map) and starts over
//! when full. Learning never waits: when another request holds the
//! cache, what this one read is learnt the next time it is sent.

use std::sync::{RwLock, RwLockReadGuard};

use keel_series::FastMap;
use keel_series::labels::Labels;

/// About the most memory the cache holds (some 100,000 series of 300
/// label bytes); it starts over past it.
pub const MAX_BYTES: usize = 64 << 20;

/// What a learnt label set is reckoned to cost: its wire bytes as the
/// key, about as much again for the labels, and the map's entry.
fn cost(wire: &[u8]) -> usize {
    2 * wire.len() + 64
}

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
        let mut map = match self.map.try_write() {
            Ok(map) => map,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            // Decoding elsewhere: learn it when it is sent again.
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        for (wire, labels) in learnt {
            if map.by_bytes.contains_key(wire) {
                continue;
            }
            if map.bytes + cost(wire) > MAX_BYTES {
                map.by_bytes = FastMap::default();
                map.bytes = 0;
            }
            map.bytes += cost(wire);
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
        let big = vec![7u8; MAX_BYTES / 2 - 64];
        cache.learn([(&big[..], b.clone())]);
        let known = cache.read();
        assert_eq!(known.len(), 1, "started over before the big one");
        assert_eq!(known.get(&big), Some(&b));
        assert_eq!(known.get(b"x"), None);
    }
}
