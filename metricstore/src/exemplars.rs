//! Exemplars: a sample's pointer to what it measured (a trace id and
//! span id, as a label set), kept as Prometheus keeps them — the newest
//! `capacity` across all series in one circular buffer, each series'
//! own in time order, served by `/api/v1/query_exemplars`.
//!
//! As in Prometheus, a series' exemplar older than its newest one is
//! refused (out of order), the same exemplar sent again is dropped
//! silently, and a label set longer than OpenMetrics' 128 characters is
//! refused. Unlike Prometheus' (whose write-ahead log holds them), the
//! buffer is written to `exemplars.log` beside the store, with the same
//! framing and fsync policy as the WAL, and rebuilt from it at open; the
//! log is rewritten from the buffer when it holds twice the capacity.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use keel_series::labels::Labels;
use keel_series::{FastMap, Matcher};

use crate::append::AppendFile;
use crate::wal::{Cursor, Fsync, frame, frames, put_labels};

/// OpenMetrics: an exemplar's label names and values together are at
/// most 128 UTF-8 characters.
pub const MAX_LABEL_CHARS: usize = 128;

/// Prometheus' `--storage.tsdb.max-exemplars` default once exemplars are
/// on.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// One exemplar.
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    /// Its labels (`trace_id`, `span_id`, …).
    pub labels: Labels,
    /// The value it observed.
    pub value: f64,
    /// When (ms since the epoch).
    pub t: i64,
}

/// What storing a batch of exemplars did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// Kept.
    pub stored: u64,
    /// Older than their series' newest exemplar: refused.
    pub out_of_order: u64,
    /// Label sets over [`MAX_LABEL_CHARS`]: refused.
    pub too_long: u64,
}

impl Stored {
    /// Why some were refused, one line a reason (empty when none were).
    pub fn reasons(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.out_of_order > 0 {
            out.push(format!(
                "{} exemplars out of order (older than their series' newest)",
                self.out_of_order
            ));
        }
        if self.too_long > 0 {
            out.push(format!(
                "{} exemplars with label sets over {MAX_LABEL_CHARS} characters",
                self.too_long
            ));
        }
        out
    }
}

/// A series and its exemplars in `[start, end]`, oldest first.
pub type SeriesExemplars = (Labels, Vec<Exemplar>);

/// The buffer: insertion order across series (for eviction) and each
/// series' exemplars.
#[derive(Debug, Default)]
struct Ring {
    order: VecDeque<Labels>,
    by_series: FastMap<Labels, VecDeque<Exemplar>>,
}

impl Ring {
    /// Keep `e` for `series` (already checked), evicting the oldest
    /// beyond `capacity`.
    fn push(&mut self, series: Labels, e: Exemplar, capacity: usize) {
        self.order.push_back(series.clone());
        self.by_series.entry(series).or_default().push_back(e);
        while self.order.len() > capacity {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(q) = self.by_series.get_mut(&old) {
                q.pop_front();
                if q.is_empty() {
                    self.by_series.remove(&old);
                }
            }
        }
    }

    /// Whether `e` may follow `series`' newest (see [`admit`]).
    fn admits(&self, series: &Labels, e: &Exemplar) -> Option<bool> {
        admit(self.by_series.get(series).and_then(VecDeque::back), e)
    }
}

/// Whether `e` may follow a series' newest exemplar `last`: `Some(true)`
/// to store, `Some(false)` a duplicate to drop, `None` out of order.
fn admit(last: Option<&Exemplar>, e: &Exemplar) -> Option<bool> {
    match last {
        Some(last) if last == e => Some(false),
        Some(last) if e.t < last.t => None,
        _ => Some(true),
    }
}

/// The exemplars of every series, newest `capacity` kept.
#[derive(Debug)]
pub struct Exemplars {
    capacity: usize,
    /// Read by queries; written only briefly, never across file I/O.
    ring: RwLock<Ring>,
    /// Held by an append from its checks to its push (appends one at a
    /// time, so a batch is checked against what the one before kept),
    /// and across its I/O; `None` in memory.
    log: Mutex<Option<Log>>,
}

/// `exemplars.log`: how many exemplars it holds, and at how many it is
/// rewritten next.
#[derive(Debug)]
struct Log {
    file: AppendFile,
    path: PathBuf,
    fsync: Fsync,
    entries: usize,
    rewrite_at: usize,
}

/// Errors of the exemplar log.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct ExemplarLogError {
    path: String,
    #[source]
    source: std::io::Error,
}

/// Whether label pairs are more than an exemplar may carry
/// ([`MAX_LABEL_CHARS`]); counts no further than that, so a sender's
/// megabyte value costs no more than a short one. Decoders check this
/// before they build an exemplar's labels.
pub fn too_long<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> bool {
    let mut n = 0;
    for (k, v) in pairs {
        n += k.chars().chain(v.chars()).take(MAX_LABEL_CHARS + 1).count();
        if n > MAX_LABEL_CHARS {
            return true;
        }
    }
    false
}

/// One log record: the exemplars of one stored batch, each series' labels
/// written once (a table the exemplars index).
fn encode(batch: &[(Labels, Exemplar)]) -> Vec<u8> {
    let mut index: FastMap<&Labels, u32> = FastMap::default();
    let mut series: Vec<&Labels> = Vec::new();
    let refs: Vec<u32> = batch
        .iter()
        .map(|(s, _)| {
            *index.entry(s).or_insert_with(|| {
                series.push(s);
                (series.len() - 1) as u32
            })
        })
        .collect();
    let mut buf = Vec::new();
    buf.extend_from_slice(&(series.len() as u32).to_le_bytes());
    for s in series {
        put_labels(&mut buf, s);
    }
    buf.extend_from_slice(&(batch.len() as u32).to_le_bytes());
    for ((_, e), r) in batch.iter().zip(refs) {
        buf.extend_from_slice(&r.to_le_bytes());
        put_labels(&mut buf, &e.labels);
        buf.extend_from_slice(&e.t.to_le_bytes());
        buf.extend_from_slice(&e.value.to_bits().to_le_bytes());
    }
    buf
}

/// A record's exemplars (a series' labels shared, not copied, between
/// its exemplars); `None` if it is malformed.
fn decode(payload: &[u8]) -> Option<Vec<(Labels, Exemplar)>> {
    let mut c = Cursor { b: payload, at: 0 };
    let ns = c.u32()?;
    let mut series = Vec::with_capacity(c.capacity(ns, 4));
    for _ in 0..ns {
        series.push(c.labels()?);
    }
    let n = c.u32()?;
    let mut out = Vec::with_capacity(c.capacity(n, 24));
    for _ in 0..n {
        let s = series.get(c.u32()? as usize)?.clone();
        let labels = c.labels()?;
        let t = c.u64()? as i64;
        let value = f64::from_bits(c.u64()?);
        out.push((s, Exemplar { labels, value, t }));
    }
    (c.at == payload.len()).then_some(out)
}

/// Rewrite the log once it holds this many times the capacity.
const REWRITE_FACTOR: usize = 2;

impl Exemplars {
    /// A buffer of `capacity` exemplars held in memory only (0: none kept).
    pub fn in_memory(capacity: usize) -> Self {
        Self {
            capacity,
            ring: RwLock::default(),
            log: Mutex::new(None),
        }
    }

    /// The buffer of `capacity` rebuilt from `dir/exemplars.log` (a torn
    /// or corrupt tail is cut), then appended to.
    pub fn open(dir: &Path, capacity: usize, fsync: Fsync) -> Result<Self, ExemplarLogError> {
        let path = dir.join("exemplars.log");
        let err = |source| ExemplarLogError {
            path: path.display().to_string(),
            source,
        };
        if capacity == 0 {
            // Turned off: what an earlier run kept must not come back when
            // they are turned on again.
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
                _ => return Ok(Self::in_memory(0)),
            }
        }
        let (mut file, image) = AppendFile::open(&path).map_err(err)?;
        let mut ring = Ring::default();
        let (mut valid, mut entries) = (0usize, 0usize);
        for (start, payload) in frames(&image) {
            let Some(batch) = decode(payload) else {
                break;
            };
            valid = start + 8 + payload.len();
            entries += batch.len();
            for (series, e) in batch {
                if ring.admits(&series, &e) == Some(true) {
                    ring.push(series, e, capacity);
                }
            }
        }
        file.keep(valid as u64).map_err(err)?;
        Ok(Self {
            capacity,
            ring: RwLock::new(ring),
            log: Mutex::new(Some(Log {
                file,
                path,
                fsync,
                entries,
                rewrite_at: capacity.saturating_mul(REWRITE_FACTOR),
            })),
        })
    }

    /// How many exemplars are held.
    pub fn len(&self) -> usize {
        self.ring
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .order
            .len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most this keeps.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Store `batch` (series, exemplar): each checked against its
    /// series' newest, the kept ones (at most the newest `capacity` of
    /// the batch: more would be evicted at once) logged before they are
    /// held. Queries wait only while they are pushed, never on the log.
    pub fn append(&self, batch: Vec<(Labels, Exemplar)>) -> Result<Stored, ExemplarLogError> {
        let mut out = Stored::default();
        if self.capacity == 0 || batch.is_empty() {
            return Ok(out);
        }
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let mut keep: Vec<(Labels, Exemplar)> = Vec::with_capacity(batch.len().min(self.capacity));
        {
            let ring = self.ring.read().unwrap_or_else(|e| e.into_inner());
            // Checked against the buffer and against those kept before in
            // this batch (the newest of a series may be in either).
            let mut newest: FastMap<Labels, Exemplar> = FastMap::default();
            for (series, e) in batch {
                if too_long(e.labels.pairs()) {
                    out.too_long += 1;
                    continue;
                }
                let admits = match newest.get(&series) {
                    Some(last) => admit(Some(last), &e),
                    None => ring.admits(&series, &e),
                };
                match admits {
                    Some(true) => {
                        newest.insert(series.clone(), e.clone());
                        keep.push((series, e));
                    }
                    Some(false) => {}
                    None => out.out_of_order += 1,
                }
            }
        }
        if keep.len() > self.capacity {
            keep.drain(..keep.len() - self.capacity);
        }
        if keep.is_empty() {
            return Ok(out);
        }
        if let Some(log) = log.as_mut() {
            log.append(&keep)?;
        }
        out.stored = keep.len() as u64;
        {
            let mut ring = self.ring.write().unwrap_or_else(|e| e.into_inner());
            for (series, e) in keep {
                ring.push(series, e, self.capacity);
            }
        }
        if let Some(log) = log.as_mut()
            && log.entries > log.rewrite_at
        {
            let held = self.ring.read().unwrap_or_else(|e| e.into_inner()).all();
            match log.rewrite(&held) {
                Ok(()) => log.rewrite_at = self.capacity.saturating_mul(REWRITE_FACTOR),
                // The longer log is whole; try again a capacity later.
                Err(e) => {
                    log.rewrite_at = log.entries.saturating_add(self.capacity);
                    tracing::warn!(error = %e, "could not rewrite the exemplar log (kept as it is)");
                }
            }
        }
        Ok(out)
    }

    /// The exemplars in `[start, end]` of every series that matches one
    /// of `sets` (all of its matchers), series in label order.
    pub fn select(&self, sets: &[Vec<Matcher>], start: i64, end: i64) -> Vec<SeriesExemplars> {
        let ring = self.ring.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<SeriesExemplars> = ring
            .by_series
            .iter()
            .filter(|(series, _)| {
                sets.iter()
                    .any(|ms| ms.iter().all(|m| m.matches(series.get(m.name()))))
            })
            .filter_map(|(series, q)| {
                let es: Vec<Exemplar> = q
                    .iter()
                    .filter(|e| e.t >= start && e.t <= end)
                    .cloned()
                    .collect();
                (!es.is_empty()).then(|| (series.clone(), es))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

impl Ring {
    /// Every held exemplar in the order it came.
    fn all(&self) -> Vec<(Labels, Exemplar)> {
        let mut at: FastMap<&Labels, usize> = FastMap::default();
        self.order
            .iter()
            .filter_map(|s| {
                let i = at.entry(s).or_insert(0);
                let e = self.by_series.get(s)?.get(*i)?.clone();
                *i += 1;
                Some((s.clone(), e))
            })
            .collect()
    }
}

impl Log {
    fn err(&self, source: std::io::Error) -> ExemplarLogError {
        ExemplarLogError {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// Append one record of `batch`.
    fn append(&mut self, batch: &[(Labels, Exemplar)]) -> Result<(), ExemplarLogError> {
        let mut rec = Vec::new();
        frame(&mut rec, &encode(batch)).map_err(|e| self.err(e))?;
        self.file
            .append(&rec, self.fsync == Fsync::Batch)
            .map_err(|e| self.err(e))?;
        self.entries += batch.len();
        Ok(())
    }

    /// Replace the log with `held` (what the buffer holds): written
    /// aside, synced, renamed over.
    fn rewrite(&mut self, held: &[(Labels, Exemplar)]) -> Result<(), ExemplarLogError> {
        let tmp = self.path.with_extension("log.tmp");
        let err = |source| ExemplarLogError {
            path: tmp.display().to_string(),
            source,
        };
        let mut out = Vec::new();
        for chunk in held.chunks(4096) {
            frame(&mut out, &encode(chunk)).map_err(err)?;
        }
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&out).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &self.path).map_err(err)?;
        if let Some(dir) = self.path.parent()
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(err)?;
        self.file.replace(file, out.len() as u64);
        self.entries = held.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(n: &str) -> Labels {
        Labels::new(vec![("__name__", "lat_bucket"), ("le", n)])
    }

    fn ex(trace: &str, t: i64, v: f64) -> Exemplar {
        Exemplar {
            labels: Labels::new(vec![("trace_id", trace)]),
            value: v,
            t,
        }
    }

    fn eq(name: &str, v: &str) -> Vec<Matcher> {
        vec![Matcher::Equal(name.into(), v.into())]
    }

    #[test]
    fn out_of_order_is_refused_duplicates_dropped_and_long_label_sets_refused() {
        let x = Exemplars::in_memory(10);
        let got = x
            .append(vec![
                (series("0.1"), ex("a", 10, 0.05)),
                (series("0.1"), ex("a", 10, 0.05)), // the same again
                (series("0.1"), ex("b", 5, 0.07)),  // older than a
                (series("0.5"), ex("c", 3, 0.2)),
                (series("0.5"), ex(&"x".repeat(121), 4, 0.3)), // 8 + 121 chars
            ])
            .expect("memory");
        assert_eq!(
            got,
            Stored {
                stored: 2,
                out_of_order: 1,
                too_long: 1
            }
        );
        // Across batches too.
        let again = x
            .append(vec![
                (series("0.1"), ex("a", 10, 0.05)),
                (series("0.1"), ex("d", 9, 0.0)),
            ])
            .expect("memory");
        assert_eq!((again.stored, again.out_of_order), (0, 1));
        let all = x.select(&[eq("__name__", "lat_bucket")], i64::MIN, i64::MAX);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].1, vec![ex("a", 10, 0.05)]);
        assert_eq!(all[1].1, vec![ex("c", 3, 0.2)]);
    }

    #[test]
    fn the_oldest_go_first_and_select_keeps_time_range_and_matchers() {
        let x = Exemplars::in_memory(3);
        for t in 0..5 {
            let le = if t % 2 == 0 { "0.1" } else { "0.5" };
            x.append(vec![(series(le), ex(&format!("t{t}"), t, 0.0))])
                .expect("memory");
        }
        assert_eq!(x.len(), 3);
        let all = x.select(&[eq("__name__", "lat_bucket")], i64::MIN, i64::MAX);
        let traces: Vec<(String, i64)> = all
            .iter()
            .flat_map(|(s, es)| es.iter().map(|e| (s.get("le").to_owned(), e.t)))
            .collect();
        assert_eq!(
            traces,
            vec![("0.1".into(), 2), ("0.1".into(), 4), ("0.5".into(), 3)]
        );
        let some = x.select(&[eq("le", "0.1")], 3, 10);
        assert_eq!(some.len(), 1);
        assert_eq!(some[0].1, vec![ex("t4", 4, 0.0)]);
        assert!(x.select(&[eq("le", "9")], i64::MIN, i64::MAX).is_empty());
    }

    #[test]
    fn the_log_restores_the_buffer_cuts_a_torn_tail_and_is_rewritten_when_long() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let x = Exemplars::open(dir.path(), 4, Fsync::Never).expect("open");
            for t in 0..20 {
                x.append(vec![(series("0.1"), ex(&format!("t{t}"), t, 1.0))])
                    .expect("append");
            }
        }
        let path = dir.path().join("exemplars.log");
        let len = std::fs::metadata(&path).expect("log").len();
        // Rewritten at more than 8 entries: never 20 records long.
        let one = {
            let mut r = Vec::new();
            frame(&mut r, &encode(&[(series("0.1"), ex("t0", 0, 1.0))])).expect("frame");
            r.len() as u64
        };
        assert!(len < 10 * one, "{len} bytes: the log was not rewritten");
        // A torn record at the end is cut, the rest restored.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        // A whole header (length 100, a CRC) with only 10 bytes after it.
        let mut torn = 100u32.to_le_bytes().to_vec();
        torn.extend_from_slice(&7u32.to_le_bytes());
        torn.extend_from_slice(&[1; 10]);
        f.write_all(&torn).expect("tear");
        drop(f);
        let x = Exemplars::open(dir.path(), 4, Fsync::Never).expect("reopen");
        let all = x.select(&[eq("le", "0.1")], i64::MIN, i64::MAX);
        let ts: Vec<i64> = all[0].1.iter().map(|e| e.t).collect();
        assert_eq!(ts, vec![16, 17, 18, 19]);
        x.append(vec![(series("0.1"), ex("t20", 20, 1.0))])
            .expect("append after the cut");
        drop(x);
        let x = Exemplars::open(dir.path(), 4, Fsync::Never).expect("reopen");
        let all = x.select(&[eq("le", "0.1")], i64::MIN, i64::MAX);
        assert_eq!(all[0].1.last().map(|e| e.t), Some(20));
    }

    #[test]
    fn a_batch_over_the_capacity_keeps_its_newest_and_capacity_zero_forgets_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let x = Exemplars::open(dir.path(), 3, Fsync::Never).expect("open");
        let batch: Vec<_> = (0..10)
            .map(|t| (series("0.1"), ex(&format!("t{t}"), t, 1.0)))
            .collect();
        assert_eq!(x.append(batch).expect("append").stored, 3);
        let ts = |x: &Exemplars| -> Vec<i64> {
            x.select(&[eq("le", "0.1")], i64::MIN, i64::MAX)
                .first()
                .map(|(_, es)| es.iter().map(|e| e.t).collect())
                .unwrap_or_default()
        };
        assert_eq!(ts(&x), vec![7, 8, 9]);
        drop(x);
        assert_eq!(
            ts(&Exemplars::open(dir.path(), 3, Fsync::Never).expect("reopen")),
            vec![7, 8, 9]
        );
        let off = Exemplars::open(dir.path(), 0, Fsync::Never).expect("off");
        assert!(off.append(vec![(series("0.1"), ex("z", 20, 1.0))]).is_ok() && off.is_empty());
        assert!(!dir.path().join("exemplars.log").exists());
        assert!(ts(&Exemplars::open(dir.path(), 3, Fsync::Never).expect("on again")).is_empty());
    }

    #[test]
    fn a_record_claiming_huge_counts_is_malformed() {
        let mut rec = u32::MAX.to_le_bytes().to_vec();
        rec.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&rec).is_none());
    }
}
