//! The metric store: series in memory, compressed in Gorilla chunks, every
//! accepted batch written ahead to a log before it is acknowledged.
//!
//! Samples of a series must arrive in time order, except within the
//! out-of-order window (behind the series' newest sample), where they are
//! kept aside and merged on read; older ones are rejected and counted, as
//! is a second, different value for an existing timestamp.

pub mod arena;
pub mod block;
pub mod gorilla;
pub mod packed;
pub mod wal;

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use arena::{Arena, ChunkRef};
use gorilla::Chunk;
pub use wal::Fsync;
use wal::{Wal, WalError};

use crate::labels::Labels;

/// Samples per chunk before it is sealed.
const CHUNK_SAMPLES: usize = 120;

pub use keel_core::stale::{STALE_NAN, is_stale};

/// Why a sample was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// Older than the out-of-order window allows.
    TooOld,
    /// A different value for a timestamp already stored.
    Duplicate,
}

/// What an append did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Appended {
    /// Samples stored.
    pub accepted: u64,
    /// Samples rejected too old.
    pub too_old: u64,
    /// Samples rejected as conflicting duplicates.
    pub duplicate: u64,
}

impl Appended {
    /// One line per kind of rejection, for partial-success answers.
    pub fn reasons(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.too_old > 0 {
            out.push(format!(
                "{} samples older than the out-of-order window",
                self.too_old
            ));
        }
        if self.duplicate > 0 {
            out.push(format!(
                "{} samples with a different value for a timestamp already stored",
                self.duplicate
            ));
        }
        out
    }
}

#[derive(Debug)]
struct Series {
    labels: Labels,
    /// Its newest sealed chunk in the head's arena; each links to the one
    /// before, so the series needs no list of its own.
    newest_sealed: ChunkRef,
    /// The open chunk, Gorilla-encoded as samples arrive.
    head: Chunk,
    /// Out-of-order samples, merged on read (rare: boxed when present).
    #[expect(
        clippy::box_collection,
        reason = "8 bytes a series instead of an empty map's 24: most series never have one"
    )]
    ooo: Option<Box<BTreeMap<i64, f64>>>,
}

impl Series {
    fn new(labels: Labels) -> Self {
        Self {
            labels,
            newest_sealed: arena::NONE,
            head: Chunk::default(),
            ooo: None,
        }
    }

    fn last(&self, arena: &Arena) -> Option<(i64, f64)> {
        if self.head.is_empty() {
            arena
                .get(self.newest_sealed)
                .and_then(|c| packed::decode(c.bytes))
                .and_then(|s| s.last().copied())
        } else {
            self.head.last()
        }
    }

    fn max_t(&self, arena: &Arena) -> Option<i64> {
        if !self.head.is_empty() {
            Some(self.head.max_t())
        } else {
            arena.get(self.newest_sealed).map(|c| times(&c).1)
        }
    }

    fn min_t(&self, arena: &Arena) -> Option<i64> {
        match arena.chain(self.newest_sealed).first() {
            Some(c) => Some(times(c).0),
            None => (!self.head.is_empty()).then(|| self.head.min_t()),
        }
    }

    /// Re-encode the full open chunk compactly into the arena and start a
    /// new one.
    fn seal(&mut self, arena: &mut Arena) {
        let bytes = packed::encode(&self.head.samples());
        let span = self.head.max_t().wrapping_sub(self.head.min_t()) as u64;
        self.newest_sealed = arena.push(self.newest_sealed, span, &bytes);
        // The next chunk of a series is about as large as its last.
        self.head = Chunk::expecting(self.head.bytes() + self.head.bytes() / 8);
    }

    fn add_out_of_order(&mut self, t: i64, v: f64) {
        self.ooo.get_or_insert_default().insert(t, v);
    }

    /// Samples in `[mint, maxt]`, in time order.
    fn range(&self, arena: &Arena, mint: i64, maxt: i64) -> Vec<(i64, f64)> {
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
fn times(c: &arena::Sealed<'_>) -> (i64, i64) {
    match packed::first_timestamp(c.bytes) {
        Some(t) => (t, t.wrapping_add(c.span as i64)),
        None => (i64::MIN, i64::MAX),
    }
}

/// Label name → value → series refs holding that pair.
pub(crate) type Postings = crate::FastMap<String, crate::FastMap<String, Vec<u32>>>;

/// Index series `r` under each of its label pairs (copying a name or value
/// only the first time it is seen).
pub(crate) fn add_postings(postings: &mut Postings, labels: &Labels, r: u32) {
    for (k, v) in labels.pairs() {
        if !postings.contains_key(k) {
            postings.insert(k.to_owned(), crate::FastMap::default());
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
fn push_posting(refs: &mut Vec<u32>, r: u32) {
    if refs.len() == refs.capacity() && refs.len() >= 64 {
        refs.reserve_exact(refs.len() / 8);
    }
    refs.push(r);
}

/// Series in segments of a fixed size: growing never copies the series
/// nor reserves more than one segment ahead (a `Vec` doubling would hold
/// up to twice the memory, and copy it all, as series are added).
#[derive(Debug, Default)]
struct SeriesList {
    segments: Vec<Vec<Series>>,
    len: usize,
    /// One bit a series: its series record is in the WAL (samples may
    /// refer to it). A bitset rather than a `bool` in [`Series`], where
    /// alignment would make the one byte cost eight.
    logged: Vec<u64>,
}

const SEGMENT: usize = 1024;

impl SeriesList {
    fn len(&self) -> usize {
        self.len
    }

    fn push(&mut self, s: Series) {
        if self.len.is_multiple_of(SEGMENT) {
            self.segments.push(Vec::with_capacity(SEGMENT));
        }
        if let Some(seg) = self.segments.last_mut() {
            seg.push(s);
            self.len += 1;
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Series> {
        self.segments.iter().flatten()
    }

    fn logged(&self, r: u32) -> bool {
        let r = r as usize;
        self.logged
            .get(r / 64)
            .is_some_and(|w| w & (1 << (r % 64)) != 0)
    }

    fn set_logged(&mut self, r: u32) {
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
struct SeriesIndex {
    table: hashbrown::HashTable<u32>,
    hasher: foldhash::fast::RandomState,
}

impl std::fmt::Debug for SeriesIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SeriesIndex({} series)", self.table.len())
    }
}

impl SeriesIndex {
    /// The encoded labels of series `r`.
    fn key(series: &SeriesList, r: u32) -> &[u8] {
        series[r as usize].labels.borrow()
    }

    /// The ref of the series whose labels encode as `encoded`.
    fn get(&self, series: &SeriesList, encoded: &[u8]) -> Option<u32> {
        let h = self.hasher.hash_one(encoded);
        self.table
            .find(h, |r| Self::key(series, *r) == encoded)
            .copied()
    }

    /// Index series `r`, which `series` already holds.
    fn insert(&mut self, series: &SeriesList, r: u32) {
        let hasher = &self.hasher;
        let h = hasher.hash_one(Self::key(series, r));
        self.table
            .insert_unique(h, r, |r| hasher.hash_one(Self::key(series, *r)));
    }
}

#[derive(Debug, Default)]
struct Head {
    series: SeriesList,
    /// Sealed chunks of every series.
    arena: Arena,
    by_labels: SeriesIndex,
    postings: Postings,
    samples: u64,
}

impl Head {
    fn min_t(&self) -> Option<i64> {
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

    fn max_t(&self) -> Option<i64> {
        self.series
            .iter()
            .filter_map(|s| s.max_t(&self.arena))
            .max()
    }

    /// Every series' samples split at `boundary`: (before, from it on).
    fn split(&self, boundary: i64) -> (Vec<SeriesSamples>, Vec<SeriesSamples>) {
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

    fn get_or_create(&mut self, labels: &Labels) -> u32 {
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
    fn check(
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
                    if t < m - ooo_window {
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
    fn apply(&mut self, labels: &Labels, samples: &[(i64, f64)]) {
        let r = self.get_or_create(labels);
        self.series.set_logged(r);
        self.apply_ref(r, samples);
    }

    fn apply_ref(&mut self, r: u32, samples: &[(i64, f64)]) {
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

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The write-ahead log failed: nothing of the batch was acknowledged.
    #[error("write-ahead log: {0}")]
    Wal(#[from] WalError),
    /// A block could not be written, read or deleted.
    #[error("block: {0}")]
    Block(String),
}

/// Open every block under `dir`, removing half-written ones.
fn load_blocks(dir: &Path) -> Result<Vec<block::Block>, StoreError> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(out);
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "tmp") {
            let _ = std::fs::remove_dir_all(&p);
            continue;
        }
        if p.is_dir() {
            out.push(block::open(&p).map_err(StoreError::Block)?);
        }
    }
    out.sort_by_key(|b| b.min_t);
    Ok(out)
}

/// Store settings.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// How far behind a series' newest sample a sample may still arrive (ms).
    pub out_of_order_window_ms: i64,
    /// WAL fsync policy.
    pub fsync: Fsync,
    /// Time range of one block (ms); the head holds about 1.5 of these.
    pub block_ms: i64,
    /// Blocks whose newest sample is older than this (ms) are deleted.
    pub retention_ms: i64,
    /// How long batch ids are kept to drop a batch sent again (ms).
    pub batch_id_retention_ms: i64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            out_of_order_window_ms: 10 * 60 * 1000,
            fsync: Fsync::Never,
            block_ms: 2 * 3600 * 1000,
            retention_ms: 15 * 24 * 3600 * 1000,
            batch_id_retention_ms: 24 * 3600 * 1000,
        }
    }
}

/// A series with its samples in a time range.
pub type SeriesSamples = (Labels, Vec<(i64, f64)>);

/// A label matcher as the store understands it.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// `name="value"`
    Equal(String, String),
    /// `name!="value"`
    NotEqual(String, String),
    /// `name=~"re"` (anchored)
    Regex(String, regex::Regex),
    /// `name!~"re"` (anchored)
    NotRegex(String, regex::Regex),
}

impl Matcher {
    fn name(&self) -> &str {
        match self {
            Matcher::Equal(n, _)
            | Matcher::NotEqual(n, _)
            | Matcher::Regex(n, _)
            | Matcher::NotRegex(n, _) => n,
        }
    }

    /// Does a label value (empty if absent) match?
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::Equal(_, v) => value == v,
            Matcher::NotEqual(_, v) => value != v,
            Matcher::Regex(_, re) => re.is_match(value),
            Matcher::NotRegex(_, re) => !re.is_match(value),
        }
    }
}

/// The metric store.
#[derive(Debug)]
pub struct Store {
    head: RwLock<Head>,
    /// None for an in-memory store (tests, rule unit tests).
    wal: Option<Mutex<Wal>>,
    /// Immutable blocks, oldest first.
    blocks: RwLock<Vec<block::Block>>,
    /// Where blocks live (None in memory).
    dir: Option<PathBuf>,
    /// Held open with an exclusive lock: one process per data dir.
    _lock: Option<std::fs::File>,
    /// Ids of batches stored lately (None in memory). Checked and
    /// recorded under the head's write lock. The WAL does not carry them:
    /// a batch replayed after a crash between the WAL write and the id's
    /// line is stored again as exact duplicates, which the head drops.
    batch_ids: Option<Mutex<crate::batch_ids::BatchIds>>,
    config: StoreConfig,
    /// Signalled after every batch that stored samples (the rules
    /// evaluate on arrival).
    appended: Arc<tokio::sync::Notify>,
    /// Where batch arrivals are marked for incident bundles (none in
    /// tests and in replay).
    marks: std::sync::OnceLock<Arc<keel_core::marks::MarkLog>>,
}

/// A batch's sources and their newest sample times, for its arrival mark.
#[derive(Debug)]
pub struct Arrival(Vec<(String, String, i64)>);

impl Store {
    /// Mark every batch's arrival in `marks` from now on.
    pub fn set_marks(&self, marks: Arc<keel_core::marks::MarkLog>) {
        let _ = self.marks.set(marks);
    }

    /// What a batch's arrival mark will say: per source (`job`,
    /// `instance`) the newest sample time it holds (none without a mark
    /// log). Taken before the batch is moved into [`Self::append_batch`].
    pub fn arrival(&self, batch: &[(Labels, Vec<(i64, f64)>)]) -> Option<Arrival> {
        self.marks.get()?;
        let mut sources: std::collections::BTreeMap<(&str, &str), i64> = Default::default();
        for (labels, samples) in batch {
            if let Some(newest) = samples.iter().map(|(t, _)| *t).max() {
                let e = sources
                    .entry((labels.get("job"), labels.get("instance")))
                    .or_insert(newest);
                *e = (*e).max(newest);
            }
        }
        (!sources.is_empty()).then(|| {
            Arrival(
                sources
                    .into_iter()
                    .map(|((j, i), t)| (j.to_owned(), i.to_owned(), t))
                    .collect(),
            )
        })
    }

    /// Mark a batch acknowledged now, once it is stored: replay makes
    /// each of its samples visible from this time.
    pub fn mark_arrival(&self, arrival: Option<Arrival>) {
        if let (Some(marks), Some(Arrival(sources))) = (self.marks.get(), arrival) {
            marks.write(&keel_core::marks::Mark::Arrival {
                at_ms: marks.now_ms(),
                sources,
            });
        }
    }

    /// What is signalled after each batch that stored samples (one
    /// listener: a signal nobody waits for is kept for the next wait).
    pub fn appended(&self) -> Arc<tokio::sync::Notify> {
        self.appended.clone()
    }

    /// Open the store in `dir`, replaying its write-ahead log.
    pub fn open(dir: &Path, config: StoreConfig) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Block(format!("{}: {e}", dir.display())))?;
        let lock_path = dir.join("LOCK");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::Block(format!("{}: {e}", lock_path.display())))?;
        lock.try_lock().map_err(|_| {
            StoreError::Block(format!(
                "{} is in use by another Keel process (stop it first)",
                dir.display()
            ))
        })?;
        let blocks = load_blocks(&dir.join("blocks"))?;
        let covered = blocks.iter().map(|b| b.max_t).max().unwrap_or(i64::MIN);
        let (wal, batches) = Wal::open(dir, config.fsync)?;
        let mut head = Head::default();
        let mut replayed = 0usize;
        for batch in batches {
            for (labels, samples) in batch {
                // A crash between writing a block and rewriting the WAL
                // leaves samples in both: the block has them.
                let fresh: Vec<(i64, f64)> =
                    samples.into_iter().filter(|(t, _)| *t > covered).collect();
                replayed += fresh.len();
                head.apply(&labels, &fresh);
            }
        }
        tracing::info!(
            samples = replayed,
            series = head.series.len(),
            blocks = blocks.len(),
            "metric store opened"
        );
        let ids_path = dir.join("batch-ids.log");
        // Expired ids go at the first compaction (the store has no clock).
        let ids = crate::batch_ids::BatchIds::open(&ids_path, config.batch_id_retention_ms, 0)
            .map_err(|e| StoreError::Block(format!("{}: {e}", ids_path.display())))?;
        Ok(Self {
            head: RwLock::new(head),
            wal: Some(Mutex::new(wal)),
            blocks: RwLock::new(blocks),
            dir: Some(dir.to_path_buf()),
            _lock: Some(lock),
            batch_ids: Some(Mutex::new(ids)),
            config,
            appended: Arc::default(),
            marks: Default::default(),
        })
    }

    /// A store with no write-ahead log: nothing survives the process.
    pub fn in_memory(config: StoreConfig) -> Self {
        Self {
            head: RwLock::new(Head::default()),
            wal: None,
            blocks: RwLock::new(Vec::new()),
            dir: None,
            _lock: None,
            batch_ids: None,
            config,
            appended: Arc::default(),
            marks: Default::default(),
        }
    }

    fn blocks_max_t(&self) -> i64 {
        self.blocks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .last()
            .map(|b| b.max_t)
            .unwrap_or(i64::MIN)
    }

    /// Cut the oldest part of the head into a block when the head spans
    /// more than 1.5 block ranges, then delete blocks past retention.
    /// `now_ms` comes from the injected clock. Returns blocks written.
    pub fn compact(&self, now_ms: i64) -> Result<usize, StoreError> {
        let Some(dir) = &self.dir else { return Ok(0) };
        if let Some(ids) = &self.batch_ids {
            ids.lock()
                .unwrap_or_else(|e| e.into_inner())
                .expire(now_ms)
                .map_err(|e| StoreError::Block(format!("batch-ids.log: {e}")))?;
        }
        let blocks_dir = dir.join("blocks");
        let mut written = 0;
        {
            let mut head = self.head.write().unwrap_or_else(|e| e.into_inner());
            let (Some(min_t), Some(max_t)) = (head.min_t(), head.max_t()) else {
                return self.apply_retention(now_ms).map(|_| 0);
            };
            let block = self.config.block_ms.max(1);
            if max_t - min_t > block + block / 2 {
                let boundary = (max_t - block / 2).div_euclid(block) * block;
                let (old, keep) = head.split(boundary);
                if !old.is_empty() {
                    let lo = old
                        .iter()
                        .filter_map(|(_, s)| s.first().map(|x| x.0))
                        .min()
                        .unwrap_or(boundary);
                    let b = block::write(&blocks_dir, &old, lo, boundary - 1)
                        .map_err(StoreError::Block)?;
                    tracing::info!(block = %b.dir.display(), samples = b.samples, "cut a block from the head");
                    self.blocks
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(b);
                    written += 1;
                }
                let mut fresh = Head::default();
                for (labels, samples) in &keep {
                    fresh.apply(labels, samples);
                }
                *head = fresh;
                if let Some(wal) = &self.wal {
                    wal.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .rewrite(&[keep])?;
                }
            }
        }
        self.apply_retention(now_ms)?;
        Ok(written)
    }

    fn apply_retention(&self, now_ms: i64) -> Result<(), StoreError> {
        let cutoff = now_ms - self.config.retention_ms;
        let mut blocks = self.blocks.write().unwrap_or_else(|e| e.into_inner());
        let (expired, kept): (Vec<_>, Vec<_>) = blocks.drain(..).partition(|b| b.max_t < cutoff);
        *blocks = kept;
        drop(blocks);
        for b in expired {
            tracing::info!(block = %b.dir.display(), "deleting a block past retention");
            std::fs::remove_dir_all(&b.dir)
                .map_err(|e| StoreError::Block(format!("{}: {e}", b.dir.display())))?;
        }
        Ok(())
    }

    /// Blocks held: (min_t, max_t, samples).
    pub fn blocks(&self) -> Vec<(i64, i64, u64)> {
        self.blocks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|b| (b.min_t, b.max_t, b.samples))
            .collect()
    }

    /// Add a block written elsewhere (backfill) to the store's block list.
    pub fn adopt_block(&self, b: block::Block) {
        let mut blocks = self.blocks.write().unwrap_or_else(|e| e.into_inner());
        blocks.push(b);
        blocks.sort_by_key(|b| b.min_t);
    }

    /// Block length (ms).
    pub fn block_ms(&self) -> i64 {
        self.config.block_ms
    }

    /// Where blocks are written (None in memory).
    pub fn blocks_dir(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join("blocks"))
    }

    /// Store a batch: what can be stored is written ahead, then applied.
    /// Returns once the accepted samples are durable per the fsync policy.
    pub fn append(&self, batch: Vec<(Labels, Vec<(i64, f64)>)>) -> Result<Appended, StoreError> {
        Ok(self.append_batch(batch, None, 0)?.unwrap_or_default())
    }

    /// As [`Self::append`], for a batch with the sender's id, stored at
    /// `now_ms`: `None` when a batch with that id was stored within the
    /// retention (nothing is stored again).
    pub fn append_batch(
        &self,
        mut batch: Vec<(Labels, Vec<(i64, f64)>)>,
        batch_id: Option<u128>,
        now_ms: i64,
    ) -> Result<Option<Appended>, StoreError> {
        let mut out = Appended::default();
        let covered = self.blocks_max_t();
        let mut head = self.head.write().unwrap_or_else(|e| e.into_inner());
        let ids = self
            .batch_ids
            .as_ref()
            .zip(batch_id)
            .map(|(ids, id)| (ids.lock().unwrap_or_else(|e| e.into_inner()), id));
        if let Some((ids, id)) = &ids
            && ids.contains(*id)
        {
            return Ok(None);
        }
        let mut accepted = Vec::with_capacity(batch.len());
        for (labels, samples) in batch.drain(..) {
            let mut samples = samples;
            samples.sort_by_key(|(t, _)| *t);
            let before = samples.len();
            samples.retain(|(t, _)| *t > covered);
            out.too_old += (before - samples.len()) as u64;
            let r = head.by_labels.get(&head.series, labels.borrow());
            let keep = head.check(r, &samples, self.config.out_of_order_window_ms, &mut out);
            if !keep.is_empty() {
                accepted.push((labels, keep, r));
            }
        }
        if !accepted.is_empty() {
            // One lookup per series: the ref found while checking, or a new series.
            let refs: Vec<u32> = accepted
                .iter()
                .map(|(l, _, r)| r.unwrap_or_else(|| head.get_or_create(l)))
                .collect();
            let accepted: Vec<(Labels, Vec<(i64, f64)>)> =
                accepted.into_iter().map(|(l, k, _)| (l, k)).collect();
            if let Some(wal) = &self.wal {
                let new_series: Vec<(u32, Labels)> = refs
                    .iter()
                    .zip(&accepted)
                    .filter(|(r, _)| !head.series.logged(**r))
                    .map(|(r, (l, _))| (*r, l.clone()))
                    .collect();
                let samples: Vec<(u32, &[(i64, f64)])> = refs
                    .iter()
                    .zip(&accepted)
                    .map(|(r, (_, s))| (*r, s.as_slice()))
                    .collect();
                wal.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .append(&new_series, &samples)?;
                for (r, _) in new_series {
                    head.series.set_logged(r);
                }
            }
            for (r, (_, samples)) in refs.iter().zip(&accepted) {
                head.apply_ref(*r, samples);
            }
        }
        if let Some((mut ids, id)) = ids {
            ids.record(id, now_ms)
                .map_err(|e| StoreError::Block(format!("batch-ids.log: {e}")))?;
        }
        if out.accepted > 0 {
            self.appended.notify_one();
        }
        Ok(Some(out))
    }

    fn matching(head: &Head, matchers: &[Matcher]) -> Vec<u32> {
        // Start from the smallest posting list of an equality matcher on a
        // non-empty value, if any; else scan every series.
        let mut candidates: Option<&[u32]> = None;
        for m in matchers {
            if let Matcher::Equal(n, v) = m
                && !v.is_empty()
            {
                let list = head
                    .postings
                    .get(n)
                    .and_then(|vals| vals.get(v))
                    .map_or(&[][..], Vec::as_slice);
                if candidates.is_none_or(|c| list.len() < c.len()) {
                    candidates = Some(list);
                }
            }
        }
        let all: Vec<u32>;
        let cands: &[u32] = match candidates {
            Some(c) => c,
            None => {
                all = (0..head.series.len() as u32).collect();
                &all
            }
        };
        cands
            .iter()
            .copied()
            .filter(|r| {
                let l = &head.series[*r as usize].labels;
                matchers.iter().all(|m| m.matches(l.get(m.name())))
            })
            .collect()
    }

    /// Every series matching all `matchers`, with its samples in `[mint, maxt]`
    /// (series with no sample there are left out).
    pub fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<SeriesSamples> {
        let mut merged: crate::FastMap<Labels, Vec<(i64, f64)>> = crate::FastMap::default();
        for b in self.blocks.read().unwrap_or_else(|e| e.into_inner()).iter() {
            for (l, s) in b.select(matchers, mint, maxt) {
                merged.entry(l).or_default().extend(s);
            }
        }
        let head = self.head.read().unwrap_or_else(|e| e.into_inner());
        if merged.is_empty() {
            // Only the head has samples in range (the common case for
            // rules): nothing to merge, and a series' samples come out
            // of `range` in order (checked: sorting is the exception).
            return Self::matching(&head, matchers)
                .into_iter()
                .filter_map(|r| {
                    let s = &head.series[r as usize];
                    let mut samples = s.range(&head.arena, mint, maxt);
                    if !samples.is_sorted_by(|a, b| a.0 < b.0) {
                        samples.sort_by_key(|(t, _)| *t);
                        samples.dedup_by_key(|(t, _)| *t);
                    }
                    (!samples.is_empty()).then(|| (s.labels.clone(), samples))
                })
                .collect();
        }
        for r in Self::matching(&head, matchers) {
            let s = &head.series[r as usize];
            let samples = s.range(&head.arena, mint, maxt);
            if !samples.is_empty() {
                merged.entry(s.labels.clone()).or_default().extend(samples);
            }
        }
        merged
            .into_iter()
            .map(|(l, mut s)| {
                s.sort_by_key(|(t, _)| *t);
                s.dedup_by_key(|(t, _)| *t);
                (l, s)
            })
            .collect()
    }

    /// Label sets of the series matching `matchers` that have samples in range.
    pub fn series(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<Labels> {
        self.select(matchers, mint, maxt)
            .into_iter()
            .map(|(l, _)| l)
            .collect()
    }

    /// A label set for each encoding (see `labels::encode_sorted`): the
    /// head's own when the series exists, so a batch of known series
    /// allocates no labels; a new one otherwise.
    pub fn resolve_labels<'a>(&self, encoded: impl Iterator<Item = &'a [u8]>) -> Vec<Labels> {
        let head = self.head.read().unwrap_or_else(|e| e.into_inner());
        encoded
            .map(|bytes| match head.by_labels.get(&head.series, bytes) {
                Some(r) => head.series[r as usize].labels.clone(),
                None => Labels::from_encoded(bytes),
            })
            .collect()
    }

    /// The newest sample of the series with exactly these labels.
    pub fn last(&self, labels: &Labels) -> Option<(i64, f64)> {
        let head = self.head.read().unwrap_or_else(|e| e.into_inner());
        head.by_labels
            .get(&head.series, labels.borrow())
            .and_then(|r| head.series[r as usize].last(&head.arena))
    }

    /// Every label name in use.
    pub fn label_names(&self) -> Vec<String> {
        let head = self.head.read().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<String> = head.postings.keys().cloned().collect();
        for b in self.blocks.read().unwrap_or_else(|e| e.into_inner()).iter() {
            v.extend(b.label_values().map(|(k, _)| k.clone()));
        }
        v.sort();
        v.dedup();
        v
    }

    /// Every value of label `name`.
    pub fn label_values(&self, name: &str) -> Vec<String> {
        let head = self.head.read().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<String> = head
            .postings
            .get(name)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Series and samples held, and compressed chunk bytes.
    pub fn stats(&self) -> StoreStats {
        let head = self.head.read().unwrap_or_else(|e| e.into_inner());
        let (open_bytes, open_samples) = head
            .series
            .iter()
            .fold((0, 0), |(b, n), s| (b + s.head.bytes(), n + s.head.len()));
        let sealed = head.arena.chunk_bytes();
        let blocks = self.blocks.read().unwrap_or_else(|e| e.into_inner());
        StoreStats {
            series: head.series.len() as u64,
            samples: head.samples + blocks.iter().map(|b| b.samples).sum::<u64>(),
            chunk_bytes: (sealed + open_bytes) as u64
                + blocks.iter().map(|b| b.chunk_bytes).sum::<u64>(),
            open_chunk_bytes: open_bytes as u64,
            open_chunk_samples: open_samples as u64,
            wal_bytes: self
                .wal
                .as_ref()
                .map(|w| w.lock().unwrap_or_else(|e| e.into_inner()).bytes())
                .unwrap_or(0),
        }
    }
}

/// Sizes of the store.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoreStats {
    /// Series.
    pub series: u64,
    /// Samples stored.
    pub samples: u64,
    /// Bytes of compressed chunks (sealed, open and in blocks).
    pub chunk_bytes: u64,
    /// Of those, the bytes of the head's open (Gorilla) chunks...
    pub open_chunk_bytes: u64,
    /// ...and the samples in them.
    pub open_chunk_samples: u64,
    /// Bytes of write-ahead log.
    pub wal_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(name: &str, job: &str) -> Labels {
        Labels::new(vec![("__name__", name), ("job", job)])
    }

    #[test]
    fn a_series_slot_stays_within_88_bytes() {
        // Every active series pays this; the memory goal is 1 kB a series.
        assert!(
            std::mem::size_of::<Series>() <= 88,
            "Series is {} bytes",
            std::mem::size_of::<Series>()
        );
    }

    #[test]
    fn a_batch_id_seen_before_stores_nothing_even_after_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let batch = || {
            vec![
                (l("up", "a"), vec![(10_000, 1.0)]),
                (l("up", "b"), vec![(10_000, 1.0)]),
            ]
        };
        let store = Store::open(dir.path(), StoreConfig::default()).expect("open");
        let first = store.append_batch(batch(), Some(42), 1).expect("append");
        assert_eq!(first.map(|a| a.accepted), Some(2));
        assert!(
            store
                .append_batch(batch(), Some(42), 2)
                .expect("again")
                .is_none()
        );
        drop(store);
        let store = Store::open(dir.path(), StoreConfig::default()).expect("reopen");
        assert!(
            store
                .append_batch(batch(), Some(42), 3)
                .expect("retry")
                .is_none()
        );
        // Without a known id the same samples still add nothing.
        let other = store.append_batch(batch(), Some(43), 3).expect("other id");
        assert_eq!(other.map(|a| a.accepted), Some(0));
        let got = store.select(&[Matcher::Equal("job".into(), "a".into())], 0, 30_000);
        assert_eq!(got[0].1, vec![(10_000, 1.0)]);
    }

    #[test]
    fn long_postings_lists_grow_by_an_eighth() {
        let mut refs = Vec::new();
        for r in 0..10_000 {
            push_posting(&mut refs, r);
        }
        assert_eq!(refs.len(), 10_000);
        assert!(
            refs.capacity() <= 10_000 + 10_000 / 8,
            "{}",
            refs.capacity()
        );
    }

    #[test]
    fn out_of_order_within_the_window_is_kept_older_is_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(
            dir.path(),
            StoreConfig {
                out_of_order_window_ms: 1000,
                ..StoreConfig::default()
            },
        )
        .expect("open");
        let a = store
            .append(vec![(l("up", "a"), vec![(10_000, 1.0), (20_000, 2.0)])])
            .expect("append");
        assert_eq!(a.accepted, 2);
        let b = store
            .append(vec![(
                l("up", "a"),
                vec![(19_500, 1.5), (5_000, 0.5), (20_000, 2.0), (20_000, 9.0)],
            )])
            .expect("append");
        assert_eq!((b.accepted, b.too_old, b.duplicate), (1, 1, 1));
        let got = store.select(&[Matcher::Equal("job".into(), "a".into())], 0, 30_000);
        assert_eq!(got[0].1, vec![(10_000, 1.0), (19_500, 1.5), (20_000, 2.0)]);
    }

    #[test]
    fn samples_come_back_bit_for_bit_across_sealed_chunks() {
        let store = Store::in_memory(StoreConfig::default());
        let a = l("x", "a");
        let sent: Vec<(i64, f64)> = (0..2 * CHUNK_SAMPLES as i64)
            .map(|i| {
                let v = match i % 50 {
                    7 => f64::NAN,
                    9 => -0.0,
                    _ => (i * 37 % 101) as f64 / 100.0,
                };
                (i * 15_000, v)
            })
            .collect();
        for chunk in sent.chunks(7) {
            store
                .append(vec![(a.clone(), chunk.to_vec())])
                .expect("append");
        }
        // Exactly two full chunks: both sealed, the open chunk empty.
        assert_eq!(store.stats().open_chunk_samples, 0);
        let bits = |v: &[(i64, f64)]| v.iter().map(|(t, x)| (*t, x.to_bits())).collect::<Vec<_>>();
        let got = store.select(&[Matcher::Equal("job".into(), "a".into())], 0, i64::MAX);
        assert_eq!(bits(&got[0].1), bits(&sent));
        let last = sent[sent.len() - 1];
        assert_eq!(
            store.last(&a).map(|(t, v)| (t, v.to_bits())),
            Some((last.0, last.1.to_bits()))
        );
        // A window inside the second chunk, and an out-of-order sample in it.
        let mid = store.select(
            &[Matcher::Equal("job".into(), "a".into())],
            130 * 15_000,
            132 * 15_000,
        );
        assert_eq!(bits(&mid[0].1), bits(&sent[130..=132]));
        store
            .append(vec![(a.clone(), vec![(last.0 - 7_500, 4.25)])])
            .expect("append");
        let tail = store.select(
            &[Matcher::Equal("job".into(), "a".into())],
            last.0 - 15_000,
            last.0,
        );
        assert_eq!(tail[0].1.len(), 3);
        assert_eq!(tail[0].1[1], (last.0 - 7_500, 4.25));
    }

    #[test]
    fn everything_acknowledged_is_there_after_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path(), StoreConfig::default()).expect("open");
            for i in 0..500 {
                store
                    .append(vec![
                        (l("x", "a"), vec![(i * 1000, i as f64)]),
                        (l("x", "b"), vec![(i * 1000, 1.0)]),
                    ])
                    .expect("append");
            }
        }
        let store = Store::open(dir.path(), StoreConfig::default()).expect("reopen");
        let got = store.select(
            &[Matcher::Equal("__name__".into(), "x".into())],
            0,
            i64::MAX,
        );
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|(_, s)| s.len() == 500));
        assert_eq!(store.stats().samples, 1000);
        let re = regex::Regex::new("^(?:b)$").expect("re");
        assert_eq!(
            store
                .series(&[Matcher::Regex("job".into(), re)], 0, i64::MAX)
                .len(),
            1
        );
        assert_eq!(store.label_values("job"), ["a", "b"]);
    }

    #[test]
    fn the_head_is_cut_into_blocks_that_survive_reopen_and_expire() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hour = 3_600_000;
        let cfg = StoreConfig {
            block_ms: 2 * hour,
            retention_ms: 24 * hour,
            ..StoreConfig::default()
        };
        let store = Store::open(dir.path(), cfg.clone()).expect("open");
        // 5 hours of 15 s samples for 3 series, in minute-sized batches.
        let t0 = 1_700_000_000_000i64 / hour * hour;
        for m in 0..300 {
            let batch = (0..3)
                .map(|s| {
                    (
                        l("x", &format!("s{s}")),
                        (0..4)
                            .map(|k| (t0 + m * 60_000 + k * 15_000, (m * 4 + k) as f64))
                            .collect(),
                    )
                })
                .collect();
            store.append(batch).expect("append");
        }
        let written = store.compact(t0 + 5 * hour).expect("compact");
        assert_eq!(written, 1);
        let blocks = store.blocks();
        assert_eq!(blocks.len(), 1);
        assert!(
            blocks[0].1 < t0 + 5 * hour - hour,
            "the newest hour stays in the head: {blocks:?}"
        );
        let all = |s: &Store| {
            let got = s.select(
                &[Matcher::Equal("__name__".into(), "x".into())],
                0,
                i64::MAX,
            );
            got.iter().map(|(_, v)| v.len()).sum::<usize>()
        };
        assert_eq!(all(&store), 3 * 1200, "every sample, across block and head");
        // Appends after the WAL rewrite refer to the rewritten series refs,
        // and a brand-new series gets a series record of its own.
        store
            .append(vec![
                (l("x", "s1"), vec![(t0 + 5 * hour, 1.0)]),
                (l("x", "s9"), vec![(t0 + 5 * hour, 2.0)]),
            ])
            .expect("append");
        let wal_after = store.stats().wal_bytes;
        drop(store);
        let store = Store::open(dir.path(), cfg).expect("reopen");
        assert_eq!(
            all(&store),
            3 * 1200 + 2,
            "no loss and no duplicate after reopen"
        );
        let s9 = store.select(&[Matcher::Equal("job".into(), "s9".into())], 0, i64::MAX);
        assert_eq!(s9[0].1, vec![(t0 + 5 * hour, 2.0)]);
        assert!(wal_after > 0);
        // A sample for a time the block already covers is refused.
        let late = store
            .append(vec![(l("x", "s0"), vec![(t0 + 60_000, 1.0)])])
            .expect("append");
        assert_eq!(late.too_old, 1);
        // Block bytes per sample on regular scrapes.
        let (_, _, n) = store.blocks()[0];
        let bytes = std::fs::metadata(
            store
                .blocks_dir()
                .expect("dir")
                .join(
                    std::fs::read_dir(store.blocks_dir().expect("dir"))
                        .expect("ls")
                        .flatten()
                        .next()
                        .expect("block")
                        .file_name(),
                )
                .join("chunks.bin"),
        )
        .expect("meta")
        .len();
        assert!(
            (bytes as f64) / (n as f64) < 2.0,
            "{bytes} bytes for {n} samples"
        );
        // Retention deletes whole blocks.
        store.compact(t0 + 48 * hour).expect("compact");
        assert!(store.blocks().is_empty());
        assert!(
            std::fs::read_dir(store.blocks_dir().expect("dir"))
                .expect("ls")
                .next()
                .is_none()
        );
    }
}
