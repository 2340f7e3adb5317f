//! The head: the series being written, each an open Gorilla chunk and a
//! chain of sealed ones in the head's arena, the postings that find them
//! by label, and the checks an append passes before it is logged.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::hash::BuildHasher;

use keel_series::labels::Labels;

use crate::arena::{self, Arena, ChunkRef};
use crate::gorilla::Chunk;
use crate::packed;
use crate::{Appended, Matcher, SeriesSamples};

/// Samples per chunk before it is sealed.
pub(crate) const CHUNK_SAMPLES: usize = 120;

#[derive(Debug)]
pub(crate) struct Series {
    pub(crate) labels: Labels,
    /// Its newest sealed chunk in the head's arena; each links to the one
    /// before, so the series needs no list of its own.
    pub(crate) newest_sealed: ChunkRef,
    /// The open chunk, Gorilla-encoded as samples arrive.
    pub(crate) head: Chunk,
    /// Out-of-order samples, merged on read (rare: boxed when present).
    #[expect(
        clippy::box_collection,
        reason = "8 bytes a series instead of an empty map's 24: most series never have one"
    )]
    pub(crate) ooo: Option<Box<BTreeMap<i64, f64>>>,
}

impl Series {
    pub(crate) fn new(labels: Labels) -> Self {
        Self {
            labels,
            newest_sealed: arena::NONE,
            head: Chunk::default(),
            ooo: None,
        }
    }

    pub(crate) fn last(&self, arena: &Arena) -> Option<(i64, f64)> {
        if self.head.is_empty() {
            arena
                .get(self.newest_sealed)
                .and_then(|c| packed::decode(c.bytes))
                .and_then(|s| s.last().copied())
        } else {
            self.head.last()
        }
    }

    pub(crate) fn max_t(&self, arena: &Arena) -> Option<i64> {
        if !self.head.is_empty() {
            Some(self.head.max_t())
        } else {
            arena.get(self.newest_sealed).map(|c| times(&c).1)
        }
    }

    pub(crate) fn min_t(&self, arena: &Arena) -> Option<i64> {
        match arena.chain(self.newest_sealed).first() {
            Some(c) => Some(times(c).0),
            None => (!self.head.is_empty()).then(|| self.head.min_t()),
        }
    }

    /// Re-encode the full open chunk compactly into the arena and start a
    /// new one.
    pub(crate) fn seal(&mut self, arena: &mut Arena) {
        let bytes = packed::encode(&self.head.samples());
        let span = self.head.max_t().wrapping_sub(self.head.min_t()) as u64;
        self.newest_sealed = arena.push(self.newest_sealed, span, &bytes);
        // The next chunk of a series is about as large as its last.
        self.head = Chunk::expecting(self.head.bytes() + self.head.bytes() / 8);
    }

    pub(crate) fn add_out_of_order(&mut self, t: i64, v: f64) {
        self.ooo.get_or_insert_default().insert(t, v);
    }

    /// Whether a chunk of it (or an out-of-order sample) falls in
    /// `[mint, maxt]`, read from chunk headers without decoding samples:
    /// what a label or series lookup over a time range asks.
    pub(crate) fn overlaps(&self, arena: &Arena, mint: i64, maxt: i64) -> bool {
        if !self.head.is_empty() && self.head.max_t() >= mint && self.head.min_t() <= maxt {
            return true;
        }
        if self
            .ooo
            .as_ref()
            .is_some_and(|o| o.range(mint..=maxt).next().is_some())
        {
            return true;
        }
        // Newest first: once a chunk ends before `mint`, the older ones do too.
        let mut r = self.newest_sealed;
        while let Some(c) = arena.get(r) {
            let (min_t, max_t) = times(&c);
            if max_t < mint {
                return false;
            }
            if min_t <= maxt {
                return true;
            }
            r = c.prev;
        }
        false
    }

    /// Samples in `[mint, maxt]`, in time order.
    pub(crate) fn range(&self, arena: &Arena, mint: i64, maxt: i64) -> Vec<(i64, f64)> {
        let mut out = Vec::new();
        let in_range = |(t, _): &(i64, f64)| (mint..=maxt).contains(t);
        for c in arena.chain(self.newest_sealed) {
            let (min_t, max_t) = times(&c);
            if max_t < mint || min_t > maxt {
                continue;
            }
            match packed::decode(c.bytes) {
                Some(samples) => out.extend(samples.into_iter().filter(in_range)),
                None => tracing::error!(series = %self.labels, "a sealed chunk does not decode"),
            }
        }
        if !self.head.is_empty() && self.head.max_t() >= mint && self.head.min_t() <= maxt {
            out.extend(self.head.samples().into_iter().filter(in_range));
        }
        if let Some(ooo) = &self.ooo {
            let extra: Vec<(i64, f64)> = ooo.range(mint..=maxt).map(|(t, v)| (*t, *v)).collect();
            if !extra.is_empty() {
                out.extend(extra);
                out.sort_by_key(|(t, _)| *t);
                out.dedup_by_key(|(t, _)| *t);
            }
        }
        out
    }
}

/// A sealed chunk's first and last sample times: the first from the
/// chunk itself, the last from the span in its arena header. A chunk
/// whose head does not read is taken to span all time, so that a query
/// decodes it and reports it.
pub(crate) fn times(c: &arena::Sealed<'_>) -> (i64, i64) {
    match packed::first_timestamp(c.bytes) {
        Some(t) => (t, t.wrapping_add(c.span as i64)),
        None => (i64::MIN, i64::MAX),
    }
}

/// Label name → value → series refs holding that pair.
pub(crate) type Postings = keel_series::FastMap<String, keel_series::FastMap<String, Vec<u32>>>;

/// Refs (below `len`) of the series matching all `matchers`: from the
/// smallest posting list of an equality matcher on a non-empty value,
/// else every series; `labels` gives a ref's label set.
pub(crate) fn matching<'a>(
    postings: &Postings,
    len: usize,
    matchers: &[Matcher],
    labels: impl Fn(u32) -> &'a Labels,
) -> Vec<u32> {
    // The smallest posting list of an equality matcher, and which one.
    let mut candidates: Option<(usize, &[u32])> = None;
    for (i, m) in matchers.iter().enumerate() {
        if let Matcher::Equal(n, v) = m
            && !v.is_empty()
        {
            let list = postings
                .get(n)
                .and_then(|vals| vals.get(v))
                .map_or(&[][..], Vec::as_slice);
            if candidates.is_none_or(|(_, c)| list.len() < c.len()) {
                candidates = Some((i, list));
            }
        }
    }
    // A regex that cannot match the empty string, on a label with fewer
    // values than the series to check: the values it matches, and their
    // series marked (as Prometheus finds them), rather than the regex run
    // on every candidate's value.
    let checked = candidates.map_or(len, |(_, c)| c.len());
    let mut by_values: Vec<(usize, Vec<u64>)> = Vec::new();
    for (i, m) in matchers.iter().enumerate() {
        let Matcher::Regex(n, re) = m else { continue };
        let Some(values) = postings.get(n) else {
            continue;
        };
        if re.is_match("") || values.len() >= checked {
            continue;
        }
        let mut bits = vec![0u64; len.div_ceil(64)];
        for refs in values
            .iter()
            .filter(|(v, _)| re.is_match(v))
            .map(|(_, r)| r)
        {
            for &r in refs {
                if let Some(w) = bits.get_mut(r as usize / 64) {
                    *w |= 1 << (r % 64);
                }
            }
        }
        by_values.push((i, bits));
    }
    let marked = |r: u32| {
        by_values.iter().all(|(_, b)| {
            b.get(r as usize / 64)
                .is_some_and(|w| w >> (r % 64) & 1 == 1)
        })
    };
    // The series of that list match it, and the marked ones their regex:
    // only the others are checked on each series' labels.
    let rest: Vec<&Matcher> = matchers
        .iter()
        .enumerate()
        .filter(|(i, _)| candidates.is_none_or(|(c, _)| c != *i))
        .filter(|(i, _)| !by_values.iter().any(|(b, _)| b == i))
        .map(|(_, m)| m)
        .collect();
    let keep = |r: &u32| {
        if !marked(*r) {
            return false;
        }
        let l = labels(*r);
        rest.iter().all(|m| m.matches(l.get(m.name())))
    };
    match candidates {
        Some((_, c)) if rest.is_empty() && by_values.is_empty() => c.to_vec(),
        Some((_, c)) => c.iter().copied().filter(keep).collect(),
        None => (0..len as u32).filter(keep).collect(),
    }
}

/// Index series `r` under each of its label pairs (copying a name or value
/// only the first time it is seen).
pub(crate) fn add_postings(postings: &mut Postings, labels: &Labels, r: u32) {
    for (k, v) in labels.pairs() {
        if !postings.contains_key(k) {
            postings.insert(k.to_owned(), keel_series::FastMap::default());
        }
        let Some(values) = postings.get_mut(k) else {
            continue;
        };
        match values.get_mut(v) {
            Some(refs) => push_posting(refs, r),
            None => {
                values.insert(v.to_owned(), vec![r]);
            }
        }
    }
}

/// Append to a postings list, growing a long one by an eighth rather than
/// doubling it: a label such as `job` lists nearly every series, and a
/// doubled list holds a third of its memory unused on average. The copies
/// stay linear (eight a ref, amortised) and happen only as series are made.
pub(crate) fn push_posting(refs: &mut Vec<u32>, r: u32) {
    if refs.len() == refs.capacity() && refs.len() >= 64 {
        refs.reserve_exact(refs.len() / 8);
    }
    refs.push(r);
}

/// Series in segments of a fixed size: growing never copies the series
/// nor reserves more than one segment ahead (a `Vec` doubling would hold
/// up to twice the memory, and copy it all, as series are added).
#[derive(Debug, Default)]
pub(crate) struct SeriesList {
    pub(crate) segments: Vec<Vec<Series>>,
    pub(crate) len: usize,
    /// One bit a series: its series record is in the WAL (samples may
    /// refer to it). A bitset rather than a `bool` in [`Series`], where
    /// alignment would make the one byte cost eight.
    pub(crate) logged: Vec<u64>,
}

const SEGMENT: usize = 1024;

impl SeriesList {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn push(&mut self, s: Series) {
        if self.len.is_multiple_of(SEGMENT) {
            self.segments.push(Vec::with_capacity(SEGMENT));
        }
        if let Some(seg) = self.segments.last_mut() {
            seg.push(s);
            self.len += 1;
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Series> {
        self.segments.iter().flatten()
    }

    pub(crate) fn logged(&self, r: u32) -> bool {
        let r = r as usize;
        self.logged
            .get(r / 64)
            .is_some_and(|w| w & (1 << (r % 64)) != 0)
    }

    pub(crate) fn set_logged(&mut self, r: u32) {
        let r = r as usize;
        if self.logged.len() <= r / 64 {
            self.logged.resize(r / 64 + 1, 0);
        }
        self.logged[r / 64] |= 1 << (r % 64);
    }
}

impl std::ops::Index<usize> for SeriesList {
    type Output = Series;
    fn index(&self, r: usize) -> &Series {
        &self.segments[r / SEGMENT][r % SEGMENT]
    }
}

impl std::ops::IndexMut<usize> for SeriesList {
    fn index_mut(&mut self, r: usize) -> &mut Series {
        &mut self.segments[r / SEGMENT][r % SEGMENT]
    }
}

/// Series refs by label set. The table holds only the 4-byte refs and
/// hashes and compares through the series' own labels, so a label set is
/// not held a second time as a key (a map keyed by labels costs ~25 bytes
/// a series more).
#[derive(Default)]
pub(crate) struct SeriesIndex {
    pub(crate) table: hashbrown::HashTable<u32>,
    pub(crate) hasher: foldhash::fast::RandomState,
}

impl std::fmt::Debug for SeriesIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SeriesIndex({} series)", self.table.len())
    }
}

impl SeriesIndex {
    /// The encoded labels of series `r`.
    pub(crate) fn key(series: &SeriesList, r: u32) -> &[u8] {
        series[r as usize].labels.borrow()
    }

    /// The ref of the series whose labels encode as `encoded`.
    pub(crate) fn get(&self, series: &SeriesList, encoded: &[u8]) -> Option<u32> {
        let h = self.hasher.hash_one(encoded);
        self.table
            .find(h, |r| Self::key(series, *r) == encoded)
            .copied()
    }

    /// Index series `r`, which `series` already holds.
    pub(crate) fn insert(&mut self, series: &SeriesList, r: u32) {
        let hasher = &self.hasher;
        let h = hasher.hash_one(Self::key(series, r));
        self.table
            .insert_unique(h, r, |r| hasher.hash_one(Self::key(series, *r)));
    }
}

#[derive(Debug, Default)]
pub(crate) struct Head {
    pub(crate) series: SeriesList,
    /// Sealed chunks of every series.
    pub(crate) arena: Arena,
    pub(crate) by_labels: SeriesIndex,
    pub(crate) postings: Postings,
    pub(crate) samples: u64,
}

impl Head {
    pub(crate) fn min_t(&self) -> Option<i64> {
        self.series
            .iter()
            .filter_map(|s| {
                let chunk_min = s.min_t(&self.arena);
                let ooo_min = s.ooo.as_ref().and_then(|o| o.keys().next().copied());
                match (chunk_min, ooo_min) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            })
            .min()
    }

    pub(crate) fn max_t(&self) -> Option<i64> {
        self.series
            .iter()
            .filter_map(|s| s.max_t(&self.arena))
            .max()
    }

    /// Every series' samples split at `boundary`: (before, from it on).
    pub(crate) fn split(&self, boundary: i64) -> (Vec<SeriesSamples>, Vec<SeriesSamples>) {
        let (mut old, mut keep) = (Vec::new(), Vec::new());
        for s in self.series.iter() {
            let all = s.range(&self.arena, i64::MIN, i64::MAX);
            let at = all.partition_point(|(t, _)| *t < boundary);
            if at > 0 {
                old.push((s.labels.clone(), all[..at].to_vec()));
            }
            if at < all.len() {
                keep.push((s.labels.clone(), all[at..].to_vec()));
            }
        }
        old.sort_by(|a, b| a.0.cmp(&b.0));
        (old, keep)
    }

    pub(crate) fn get_or_create(&mut self, labels: &Labels) -> u32 {
        if let Some(r) = self.by_labels.get(&self.series, labels.borrow()) {
            return r;
        }
        let r = self.series.len() as u32;
        add_postings(&mut self.postings, labels, r);
        self.series.push(Series::new(labels.clone()));
        self.by_labels.insert(&self.series, r);
        r
    }

    /// Decide what of `samples` (sorted) can be stored in series `r`.
    pub(crate) fn check(
        &self,
        r: Option<u32>,
        samples: &[(i64, f64)],
        ooo_window: i64,
        out: &mut Appended,
    ) -> Vec<(i64, f64)> {
        let (mut max_t, existing) = match r.map(|r| &self.series[r as usize]) {
            Some(s) => (s.max_t(&self.arena), Some(s)),
            None => (None, None),
        };
        let mut keep = Vec::with_capacity(samples.len());
        for &(t, v) in samples {
            match max_t {
                Some(m) if t <= m => {
                    if t < m.saturating_sub(ooo_window) {
                        out.too_old += 1;
                        continue;
                    }
                    let previous = keep
                        .iter()
                        .rev()
                        .find(|(kt, _)| *kt == t)
                        .map(|(_, kv): &(i64, f64)| *kv)
                        .or_else(|| {
                            existing.and_then(|s| s.range(&self.arena, t, t).first().map(|x| x.1))
                        });
                    match previous {
                        Some(p) if p.to_bits() == v.to_bits() => continue, // a repeat: already stored
                        Some(_) => {
                            out.duplicate += 1;
                            continue;
                        }
                        None => keep.push((t, v)),
                    }
                }
                _ => {
                    keep.push((t, v));
                    max_t = Some(t);
                }
            }
        }
        out.accepted += keep.len() as u64;
        keep
    }

    /// Apply samples to a series found or created by its labels; the
    /// series counts as logged (replay, or a head rebuilt after a WAL rewrite).
    pub(crate) fn apply(&mut self, labels: &Labels, samples: &[(i64, f64)]) {
        let r = self.get_or_create(labels);
        self.series.set_logged(r);
        self.apply_ref(r, samples);
    }

    pub(crate) fn apply_ref(&mut self, r: u32, samples: &[(i64, f64)]) {
        let s = &mut self.series[r as usize];
        for &(t, v) in samples {
            match s.max_t(&self.arena) {
                Some(m) if t <= m => s.add_out_of_order(t, v),
                _ => {
                    s.head.push(t, v);
                    // Sealed as soon as it is full, so a series that
                    // stops sending keeps no half-used open chunk.
                    if s.head.len() >= CHUNK_SAMPLES {
                        s.seal(&mut self.arena);
                    }
                }
            }
        }
        self.samples += samples.len() as u64;
    }
}
