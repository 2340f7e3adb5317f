//! keel-metricstore: the metric store. Series in memory, compressed in
//! Gorilla chunks, every accepted batch written ahead to a log before it is
//! acknowledged; immutable blocks on disk, retention, the ids of batches
//! already stored, and backfill from OpenMetrics text.
//!
//! Samples of a series must arrive in time order, except within the
//! out-of-order window (behind the series' newest sample), where they are
//! kept aside and merged on read; older ones are rejected and counted, as
//! is a second, different value for an existing timestamp.
//!
//! It implements [`keel_series::Queryable`] for the query engine and must
//! never depend on the engine, the log index, alerting, HTTP or the
//! collector.

pub mod append;
pub mod arena;
pub mod batch_ids;
pub mod block;
pub mod exemplars;
pub mod gorilla;
pub mod histograms;
pub mod import;
pub mod metadata;
pub mod packed;
mod select;
pub use select::{Cardinality, Count, HeadStats};
pub mod wal;

mod head;
use head::Head;

use std::borrow::Borrow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

pub use wal::Fsync;
use wal::{Wal, WalError};

use keel_series::labels::Labels;

pub use keel_core::stale::{STALE_NAN, is_stale};
pub use keel_series::{Matcher, SeriesSamples};

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
    /// Samples of new series refused because the head holds
    /// `limits.max_series` series.
    pub over_series_limit: u64,
    /// Samples of series whose labels break a label limit.
    pub over_label_limits: u64,
    /// The first label limit broken, in words (for the answer).
    pub label_problem: Option<String>,
    /// Native histogram samples refused as malformed
    /// ([`keel_series::histogram::Histogram::validate`]).
    pub invalid_histograms: u64,
    /// Why the first of them was refused.
    pub histogram_problem: Option<String>,
    /// The series limit, when it refused something.
    pub series_limit: Option<usize>,
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
        if let Some(limit) = self.series_limit {
            out.push(format!(
                "{} samples of new series refused: the collector holds its limit of {limit} active series (collector.limits.max_series)",
                self.over_series_limit
            ));
        }
        if let Some(why) = &self.label_problem {
            out.push(format!("{} samples refused: {why}", self.over_label_limits));
        }
        if let Some(why) = &self.histogram_problem {
            out.push(format!(
                "{} native histogram samples refused: {why}",
                self.invalid_histograms
            ));
        }
        out
    }

    /// Count what `other` did as well.
    pub fn absorb(&mut self, other: Appended) {
        self.accepted += other.accepted;
        self.too_old += other.too_old;
        self.duplicate += other.duplicate;
        self.over_series_limit += other.over_series_limit;
        self.over_label_limits += other.over_label_limits;
        if self.label_problem.is_none() {
            self.label_problem = other.label_problem;
        }
        self.invalid_histograms += other.invalid_histograms;
        if self.histogram_problem.is_none() {
            self.histogram_problem = other.histogram_problem;
        }
        self.series_limit = self.series_limit.or(other.series_limit);
    }

    /// Samples refused by a limit.
    pub fn over_limits(&self) -> u64 {
        self.over_series_limit + self.over_label_limits
    }
}

/// What one client can make the store hold (`collector.limits`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeriesLimits {
    /// Most series in the head at once.
    pub max_series: usize,
    /// Most labels (the name included) a series may have.
    pub max_labels_per_series: usize,
    /// Longest label name, bytes.
    pub max_label_name_bytes: usize,
    /// Longest label value, bytes.
    pub max_label_value_bytes: usize,
}

impl Default for SeriesLimits {
    fn default() -> Self {
        Self {
            max_series: 1_000_000,
            max_labels_per_series: 64,
            max_label_name_bytes: 1024,
            max_label_value_bytes: 2048,
        }
    }
}

impl SeriesLimits {
    /// The first limit `labels` breaks, in words naming the setting.
    pub fn check(&self, labels: &Labels) -> Option<String> {
        let n = labels.pairs().count();
        if n > self.max_labels_per_series {
            return Some(format!(
                "a series with {n} labels, over collector.limits.max_labels_per_series ({})",
                self.max_labels_per_series
            ));
        }
        for (k, v) in labels.pairs() {
            if k.len() > self.max_label_name_bytes {
                return Some(format!(
                    "a label name of {} bytes, over collector.limits.max_label_name_bytes ({})",
                    k.len(),
                    self.max_label_name_bytes
                ));
            }
            if v.len() > self.max_label_value_bytes {
                return Some(format!(
                    "label {k:?} has a value of {} bytes, over collector.limits.max_label_value_bytes ({})",
                    v.len(),
                    self.max_label_value_bytes
                ));
            }
        }
        None
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
    /// The exemplar log failed: the batch's exemplars were not kept.
    #[error("exemplar log: {0}")]
    Exemplars(#[from] exemplars::ExemplarLogError),
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
    /// What one client can make the store hold.
    pub limits: SeriesLimits,
    /// Exemplars kept across all series (0: none).
    pub max_exemplars: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            out_of_order_window_ms: 10 * 60 * 1000,
            fsync: Fsync::Never,
            block_ms: 2 * 3600 * 1000,
            retention_ms: 15 * 24 * 3600 * 1000,
            batch_id_retention_ms: 24 * 3600 * 1000,
            limits: SeriesLimits::default(),
            max_exemplars: exemplars::DEFAULT_CAPACITY,
        }
    }
}

/// The engine reads the store through this trait.
impl keel_series::Queryable for Store {
    fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<SeriesSamples> {
        Store::select(self, matchers, mint, maxt)
    }

    fn select_bounded(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        limit: usize,
    ) -> Option<Vec<SeriesSamples>> {
        Store::select_bounded(self, matchers, mint, maxt, limit)
    }

    fn select_histograms(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Vec<keel_series::SeriesHistograms> {
        if self.histograms.is_empty() {
            return Vec::new();
        }
        self.histograms.select(matchers, mint, maxt)
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
    /// Handed every stored batch's accepted samples (forwarding to a
    /// remote store), after they are durable, before the append returns.
    forward: std::sync::OnceLock<Forward>,
    /// The same for native histogram samples.
    forward_histograms: std::sync::OnceLock<ForwardHistograms>,
    /// Taken before the head is released and held while a batch is
    /// handed on, so batches are forwarded in the order they were stored
    /// (a remote store refuses a series' older samples after newer ones).
    forward_turn: Mutex<()>,
    /// Metric families' type, help and unit, as senders stated them.
    metadata: metadata::Metadata,
    /// The newest exemplars.
    exemplars: exemplars::Exemplars,
    /// Native histogram series.
    histograms: histograms::Histograms,
}

/// A stored batch's accepted samples, handed on.
pub type ForwardFn = dyn Fn(&[(Labels, Vec<(i64, f64)>)]) + Send + Sync;

/// What [`Store::forward_to`] hands stored samples to.
#[derive(Clone)]
pub struct Forward(pub Arc<ForwardFn>);

impl std::fmt::Debug for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Forward")
    }
}

/// A stored batch's accepted native histogram samples, handed on.
pub type ForwardHistogramsFn = dyn Fn(&[keel_series::SeriesHistograms]) + Send + Sync;

/// What [`Store::forward_histograms_to`] hands stored histograms to.
#[derive(Clone)]
pub struct ForwardHistograms(pub Arc<ForwardHistogramsFn>);

impl std::fmt::Debug for ForwardHistograms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ForwardHistograms")
    }
}

/// A batch's sources and their newest sample times, for its arrival mark.
#[derive(Debug)]
pub struct Arrival(Vec<(String, String, i64)>);

impl Store {
    /// Hand the accepted samples of every batch stored from now on to
    /// `sink` (called on the appending thread, outside the head's lock,
    /// before the append returns: what a sender was told is stored has
    /// been handed on).
    pub fn forward_to(&self, sink: Forward) {
        let _ = self.forward.set(sink);
    }

    /// As [`Self::forward_to`], for native histogram samples.
    pub fn forward_histograms_to(&self, sink: ForwardHistograms) {
        let _ = self.forward_histograms.set(sink);
    }

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
        // A sender's series come grouped by source: the map is touched
        // when the source changes, not for every series.
        let mut run: Option<((&str, &str), i64)> = None;
        for (labels, samples) in batch {
            if let Some(newest) = samples.iter().map(|(t, _)| *t).max() {
                let source = (labels.get("job"), labels.get("instance"));
                match &mut run {
                    Some((s, t)) if *s == source => *t = (*t).max(newest),
                    _ => {
                        if let Some((s, t)) = run.replace((source, newest)) {
                            let e = sources.entry(s).or_insert(t);
                            *e = (*e).max(t);
                        }
                    }
                }
            }
        }
        if let Some((s, t)) = run {
            let e = sources.entry(s).or_insert(t);
            *e = (*e).max(t);
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
        let exemplars = exemplars::Exemplars::open(dir, config.max_exemplars, config.fsync)?;
        let histograms = histograms::Histograms::open(dir, config.fsync)?;
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
            forward: Default::default(),
            forward_histograms: Default::default(),
            forward_turn: Mutex::new(()),
            metadata: Default::default(),
            exemplars,
            histograms,
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
            exemplars: exemplars::Exemplars::in_memory(config.max_exemplars),
            histograms: histograms::Histograms::in_memory(),
            config,
            appended: Arc::default(),
            marks: Default::default(),
            forward: Default::default(),
            forward_histograms: Default::default(),
            forward_turn: Mutex::new(()),
            metadata: Default::default(),
        }
    }

    /// Metric families' type, help and unit, as senders stated them.
    pub fn metadata(&self) -> &metadata::Metadata {
        &self.metadata
    }

    /// The newest exemplars of every series.
    pub fn exemplars(&self) -> &exemplars::Exemplars {
        &self.exemplars
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
            if max_t.saturating_sub(min_t) > block + block / 2 {
                let boundary = max_t.saturating_sub(block / 2).div_euclid(block) * block;
                let (old, keep) = head.split(boundary);
                if !old.is_empty() {
                    let lo = old
                        .iter()
                        .filter_map(|(_, s)| s.first().map(|x| x.0))
                        .min()
                        .unwrap_or(boundary);
                    let b = block::write(&blocks_dir, &old, lo, boundary.saturating_sub(1))
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
        self.histograms
            .persist_due(cutoff, now_ms, self.config.block_ms)?;
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
        let mut forwarded = Vec::new();
        let limits = self.config.limits;
        // New series this batch makes, against the series limit.
        let mut new_series = std::collections::HashSet::new();
        for (labels, samples) in batch.drain(..) {
            let mut samples = samples;
            samples.sort_by_key(|(t, _)| *t);
            let before = samples.len();
            samples.retain(|(t, _)| *t > covered);
            out.too_old += (before - samples.len()) as u64;
            let r = head.by_labels.get(&head.series, labels.borrow());
            if r.is_none() {
                if let Some(why) = limits.check(&labels) {
                    out.over_label_limits += samples.len() as u64;
                    out.label_problem.get_or_insert(why);
                    continue;
                }
                if !new_series.contains(&labels)
                    && head.series.len() + new_series.len() >= limits.max_series
                {
                    out.over_series_limit += samples.len() as u64;
                    out.series_limit = Some(limits.max_series);
                    continue;
                }
            }
            let keep = head.check(r, &samples, self.config.out_of_order_window_ms, &mut out);
            if !keep.is_empty() {
                if r.is_none() {
                    new_series.insert(labels.clone());
                }
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
            if self.forward.get().is_some() {
                forwarded = accepted;
            }
        }
        if let Some((mut ids, id)) = ids {
            // The batch is stored: a lost id line costs at most a
            // duplicate after a restart, never the batch.
            if let Err(e) = ids.record(id, now_ms) {
                tracing::error!(error = %e, "batch-ids.log not written; the batch is stored");
            }
        }
        // The turn is taken before the head is let go: a later batch's
        // samples cannot be handed on before these.
        let turn = (!forwarded.is_empty())
            .then(|| self.forward_turn.lock().unwrap_or_else(|e| e.into_inner()));
        drop(head);
        if out.accepted > 0 {
            self.appended.notify_one();
        }
        if let Some(sink) = self.forward.get()
            && !forwarded.is_empty()
        {
            (sink.0)(&forwarded);
        }
        drop(turn);
        Ok(Some(out))
    }

    /// The native histogram series.
    pub fn histograms(&self) -> &histograms::Histograms {
        &self.histograms
    }

    /// Store native histogram samples: label limits and the series limit
    /// apply as to float series; each series' samples must be newer than
    /// its newest. Durable per the fsync policy when it returns.
    pub fn append_histograms(
        &self,
        batch: Vec<(Labels, Vec<(i64, keel_series::histogram::Histogram)>)>,
    ) -> Result<Appended, StoreError> {
        let mut out = Appended::default();
        let limits = self.config.limits;
        let held = self
            .head
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .series
            .len()
            + self.histograms.len();
        let mut new_series = 0usize;
        let mut keep = Vec::with_capacity(batch.len());
        for (labels, mut samples) in batch {
            if let Some(why) = limits.check(&labels) {
                out.over_label_limits += samples.len() as u64;
                out.label_problem.get_or_insert(why);
                continue;
            }
            samples.retain(|(_, h)| match h.validate() {
                Ok(()) => true,
                Err(why) => {
                    out.invalid_histograms += 1;
                    out.histogram_problem
                        .get_or_insert(format!("{labels}: {why}"));
                    false
                }
            });
            if !self.histograms.holds(&labels) {
                if held + new_series >= limits.max_series {
                    out.over_series_limit += samples.len() as u64;
                    out.series_limit = Some(limits.max_series);
                    continue;
                }
                new_series += 1;
            }
            keep.push((labels, samples));
        }
        let sink = self
            .forward_histograms
            .get()
            .map(|s| &*s.0 as &histograms::HandOn);
        self.histograms.append(keep, &mut out, sink)?;
        if out.accepted > 0 {
            self.appended.notify_one();
        }
        Ok(out)
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
mod tests;
