//! Native histogram series: every sample a whole distribution.
//!
//! Kept beside the float head, with their own write-ahead log and
//! segment files, so the float path (the hot one) is untouched:
//!
//! - A series' newest samples are held raw in an open chunk; at
//!   [`chunk::MAX_SAMPLES`] samples, or when the schema or zero
//!   threshold changes, the chunk is sealed (encoded by [`chunk`]).
//! - Every accepted batch is written to `histograms/wal.log` (framed and
//!   CRC-checked as the WAL is, with its fsync policy) before it is
//!   applied, and replayed at open.
//! - [`Histograms::persist`] (at every compaction) writes the sealed
//!   chunks to a new segment `histograms/<min_t>-<max_t>.seg` (written
//!   aside, synced, renamed), then rewrites the log to hold only the open
//!   chunks' samples. A crash between the two replays samples a segment
//!   already holds; replay skips those.
//! - Retention deletes segments whose newest sample is past it, and
//!   drops older sealed chunks from memory.
//!
//! A sample at or before its series' newest is refused (a histogram
//! series takes no out-of-order samples), the same one again is dropped.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use keel_series::histogram::Histogram;
use keel_series::labels::Labels;
use keel_series::{FastMap, Matcher, SeriesHistograms};

use crate::append::AppendFile;
use crate::wal::{Cursor, Fsync, frame, frames, put_labels};
use crate::{Appended, StoreError};

/// What a batch's taken samples are handed to (forwarding).
pub type HandOn<'a> = dyn Fn(&[keel_series::SeriesHistograms]) + 'a;

pub mod chunk;

/// Sealed chunk bytes in memory that make [`Histograms::persist_due`]
/// write a segment.
pub const PERSIST_BYTES: usize = 8 << 20;

/// A sealed chunk: in memory until persisted, then in a segment file.
#[derive(Debug, Clone)]
enum Sealed {
    Memory(Arc<[u8]>),
    File {
        seg: Arc<Segment>,
        offset: u64,
        len: u32,
    },
}

#[derive(Debug, Clone)]
struct SealedChunk {
    min_t: i64,
    max_t: i64,
    at: Sealed,
}

impl SealedChunk {
    /// Its samples, decoded from memory or read from its segment; `None`
    /// when they cannot be read (said in the log) or decoded.
    fn samples(&self) -> Option<Vec<(i64, Histogram)>> {
        match &self.at {
            Sealed::Memory(b) => chunk::decode(b),
            Sealed::File { seg, offset, len } => {
                let mut buf = vec![0u8; *len as usize];
                if let Err(e) = seg.file.read_exact_at(&mut buf, *offset) {
                    tracing::error!(segment = %seg.path.display(), error = %e, "histogram segment unreadable");
                    return None;
                }
                chunk::decode(&buf)
            }
        }
    }
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    file: File,
    max_t: i64,
}

#[derive(Debug, Default)]
struct Series {
    sealed: Vec<SealedChunk>,
    open: Vec<(i64, Histogram)>,
    filling: chunk::Filling,
}

impl Series {
    fn newest(&self) -> Option<(i64, &Histogram)> {
        self.open.last().map(|(t, h)| (*t, h))
    }

    /// The newest sample, from the open chunk or else the last sealed
    /// one (decoded).
    fn newest_sample(&self) -> Option<(i64, Histogram)> {
        if let Some((t, h)) = self.newest() {
            return Some((t, h.clone()));
        }
        self.sealed.last()?.samples()?.pop()
    }

    fn max_t(&self) -> Option<i64> {
        self.open
            .last()
            .map(|(t, _)| *t)
            .or_else(|| self.sealed.last().map(|c| c.max_t))
    }

    /// Append `h` (already checked to be newer), sealing the open chunk
    /// first when it is full or `h` does not fit it.
    fn push(&mut self, t: i64, mut h: Histogram) {
        // Custom bounds as the sample before's are held once.
        if let Some((_, prev)) = self.open.last()
            && !h.custom_values.is_empty()
            && prev.custom_values == h.custom_values
        {
            h.custom_values = prev.custom_values.clone();
        }
        if !self.filling.admits(&h) {
            self.seal();
        }
        self.filling.add(&h);
        self.open.push((t, h));
    }

    fn seal(&mut self) {
        let (Some(first), Some(last)) = (self.open.first(), self.open.last()) else {
            return;
        };
        let (min_t, max_t) = (first.0, last.0);
        let bytes = chunk::encode(&self.open);
        self.sealed.push(SealedChunk {
            min_t,
            max_t,
            at: Sealed::Memory(bytes.into()),
        });
        self.open.clear();
        self.filling = chunk::Filling::default();
    }
}

/// Every native histogram series.
#[derive(Debug)]
pub struct Histograms {
    series: RwLock<FastMap<Labels, Series>>,
    log: Mutex<Option<Log>>,
    dir: Option<PathBuf>,
    segments: Mutex<Vec<Arc<Segment>>>,
}

#[derive(Debug)]
struct Log {
    file: AppendFile,
    path: PathBuf,
    fsync: Fsync,
}

/// Why the histogram log or a segment failed.
fn io_err(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Block(format!("{}: {e}", path.display()))
}

/// Write `data` to `path` whole or not at all: to a temporary file,
/// synced, opened again for appending (the same file), renamed over
/// `path`, the directory synced. Returns the file open at its end.
fn write_synced(dir: &Path, path: &Path, data: &[u8]) -> Result<File, StoreError> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
    f.write_all(data).map_err(|e| io_err(&tmp, e))?;
    f.sync_all().map_err(|e| io_err(&tmp, e))?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&tmp)
        .map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(file)
}

/// A log record: series count, then each series' labels, sample count
/// and samples (time, chunk-encoded histogram).
fn encode_batch(batch: &[(Labels, Vec<(i64, Histogram)>)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(batch.len() as u32).to_le_bytes());
    for (labels, samples) in batch {
        put_labels(&mut out, labels);
        // One chunk per run of samples that can share one.
        let runs = chunk::runs(samples);
        out.extend_from_slice(&(runs.len() as u32).to_le_bytes());
        for run in runs {
            let bytes = chunk::encode(run);
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(&bytes);
        }
    }
    out
}

fn decode_batch(payload: &[u8]) -> Option<Vec<SeriesHistograms>> {
    let mut c = Cursor { b: payload, at: 0 };
    let n = c.u32()?;
    let mut out = Vec::with_capacity(c.capacity(n, 8));
    for _ in 0..n {
        let labels = c.labels()?;
        let runs = c.u32()?;
        let mut samples = Vec::new();
        for _ in 0..runs {
            let len = c.u32()? as usize;
            samples.extend(chunk::decode(c.take(len)?)?);
        }
        out.push((labels, samples));
    }
    (c.at == payload.len()).then_some(out)
}

/// A segment file: sealed chunks back to back, then an index (series
/// count; per series its labels, chunk count, and per chunk min_t,
/// max_t, offset, length), the index's length (u64) and a CRC-32 of it.
fn read_segment(path: &Path) -> Result<(Segment, SegmentIndex), String> {
    let raw = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let bad = || {
        format!(
            "{}: not a histogram segment (corrupt index)",
            path.display()
        )
    };
    let tail = raw.len().checked_sub(12).ok_or_else(bad)?;
    let ilen = u64::from_le_bytes(raw[tail..tail + 8].try_into().map_err(|_| bad())?) as usize;
    let crc = u32::from_le_bytes(raw[tail + 8..].try_into().map_err(|_| bad())?);
    let istart = tail.checked_sub(ilen).ok_or_else(bad)?;
    let index = &raw[istart..tail];
    if crc32fast::hash(index) != crc {
        return Err(bad());
    }
    let mut c = Cursor { b: index, at: 0 };
    let mut out = Vec::new();
    let mut max_t = i64::MIN;
    let n = c.u32().ok_or_else(bad)?;
    for _ in 0..n {
        let labels = c.labels().ok_or_else(bad)?;
        let k = c.u32().ok_or_else(bad)?;
        let mut chunks = Vec::new();
        for _ in 0..k {
            let (min_t, hi) = (
                c.u64().ok_or_else(bad)? as i64,
                c.u64().ok_or_else(bad)? as i64,
            );
            let (offset, len) = (c.u64().ok_or_else(bad)?, c.u32().ok_or_else(bad)?);
            if offset.saturating_add(u64::from(len)) > istart as u64 {
                return Err(bad());
            }
            max_t = max_t.max(hi);
            chunks.push(SealedChunkAt {
                min_t,
                max_t: hi,
                offset,
                len,
            });
        }
        out.push((labels, chunks));
    }
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((
        Segment {
            path: path.to_path_buf(),
            file,
            max_t,
        },
        out,
    ))
}

/// A segment's index: each series and where its chunks are.
type SegmentIndex = Vec<(Labels, Vec<SealedChunkAt>)>;

/// Where a chunk sits in a segment: (index of the chunk in its series'
/// sealed list, offset, length).
type Placed = (usize, u64, u32);

/// A placed chunk with its time range.
type PlacedSpan = (Placed, i64, i64);

struct SealedChunkAt {
    min_t: i64,
    max_t: i64,
    offset: u64,
    len: u32,
}

impl Histograms {
    /// Native histograms held in memory only.
    pub fn in_memory() -> Self {
        Self {
            series: RwLock::default(),
            log: Mutex::new(None),
            dir: None,
            segments: Mutex::default(),
        }
    }

    /// Open `dir/histograms/`: its segments, then its log replayed.
    pub fn open(dir: &Path, fsync: Fsync) -> Result<Self, StoreError> {
        let dir = dir.join("histograms");
        std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        let mut series: FastMap<Labels, Series> = FastMap::default();
        let mut segments = Vec::new();
        let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| io_err(&dir, e))?
            .flatten()
            .map(|e| e.path())
            .collect();
        names.sort();
        for p in names {
            match p.extension().and_then(|x| x.to_str()) {
                Some("tmp") => {
                    let _ = std::fs::remove_file(&p);
                }
                Some("seg") => {
                    let (seg, index) = read_segment(&p).map_err(StoreError::Block)?;
                    let seg = Arc::new(seg);
                    for (labels, chunks) in index {
                        let s = series.entry(labels).or_default();
                        for c in chunks {
                            s.sealed.push(SealedChunk {
                                min_t: c.min_t,
                                max_t: c.max_t,
                                at: Sealed::File {
                                    seg: seg.clone(),
                                    offset: c.offset,
                                    len: c.len,
                                },
                            });
                        }
                    }
                    segments.push(seg);
                }
                _ => {}
            }
        }
        for s in series.values_mut() {
            s.sealed.sort_by_key(|c| c.min_t);
        }
        let path = dir.join("wal.log");
        let (mut file, image) = AppendFile::open(&path).map_err(|e| io_err(&path, e))?;
        let mut valid = 0usize;
        for (start, payload) in frames(&image) {
            valid = start + 8 + payload.len();
            // Whole (its CRC holds) but not readable: a bug, not a torn
            // write; the records after it are kept.
            let Some(batch) = decode_batch(payload) else {
                tracing::error!(path = %path.display(), at = start, "a histogram log record does not decode; skipped");
                continue;
            };
            for (labels, samples) in batch {
                let s = series.entry(labels).or_default();
                for (t, h) in samples {
                    // Already in a segment (a crash before the log's rewrite).
                    if s.max_t().is_none_or(|m| t > m) {
                        s.push(t, h);
                    }
                }
            }
        }
        file.keep(valid as u64).map_err(|e| io_err(&path, e))?;
        Ok(Self {
            series: RwLock::new(series),
            log: Mutex::new(Some(Log { file, path, fsync })),
            dir: Some(dir),
            segments: Mutex::new(segments),
        })
    }

    /// How many histogram series are held.
    pub fn len(&self) -> usize {
        self.series.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// A series' newest sample, if it is held and has one in memory.
    pub fn last(&self, labels: &Labels) -> Option<Histogram> {
        let series = self.series.read().unwrap_or_else(|e| e.into_inner());
        series.get(labels)?.newest_sample().map(|(_, h)| h)
    }

    /// Call `f` with the labels of every histogram series that matches one
    /// of `sets` (none: every series) and has samples in `[mint, maxt]`
    /// (for `/api/v1/series`, `labels` and `label/values`).
    pub fn visit(&self, sets: &[Vec<Matcher>], mint: i64, maxt: i64, mut f: impl FnMut(&Labels)) {
        let series = self.series.read().unwrap_or_else(|e| e.into_inner());
        for (labels, s) in series.iter() {
            let lo = s
                .sealed
                .first()
                .map(|c| c.min_t)
                .or(s.open.first().map(|p| p.0));
            let (Some(lo), Some(hi)) = (lo, s.max_t()) else {
                continue;
            };
            let matches = sets.is_empty()
                || sets
                    .iter()
                    .any(|ms| ms.iter().all(|m| m.matches(labels.get(m.name()))));
            if matches && lo <= maxt && hi >= mint {
                f(labels);
            }
        }
    }

    /// Whether `labels` is a histogram series held.
    pub fn holds(&self, labels: &Labels) -> bool {
        self.series
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(labels)
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Store a batch: each series' samples newer than its newest are
    /// logged, then applied; older ones are counted `too_old`, a second
    /// different sample at a stored time `duplicate`. The samples taken
    /// are handed to `hand_on` (forwarding) before the log is let go, so
    /// batches are handed on in the order they were stored.
    pub fn append(
        &self,
        batch: Vec<(Labels, Vec<(i64, Histogram)>)>,
        out: &mut Appended,
        hand_on: Option<&HandOn>,
    ) -> Result<(), StoreError> {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let mut accepted = Vec::with_capacity(batch.len());
        {
            let series = self.series.read().unwrap_or_else(|e| e.into_inner());
            for (labels, mut samples) in batch {
                samples.sort_by_key(|(t, _)| *t);
                let mut newest = series.get(&labels).and_then(|s| {
                    s.newest_sample()
                        .map(|(t, h)| (t, Some(h)))
                        .or_else(|| s.max_t().map(|t| (t, None)))
                });
                let mut keep = Vec::with_capacity(samples.len());
                for (t, h) in samples {
                    match &newest {
                        Some((nt, nh)) if t == *nt => {
                            // The same sample sent again is dropped quietly.
                            if !nh.as_ref().is_some_and(|n| n.identical(&h)) {
                                out.duplicate += 1;
                            }
                            continue;
                        }
                        Some((nt, _)) if t < *nt => {
                            out.too_old += 1;
                            continue;
                        }
                        _ => {}
                    }
                    newest = Some((t, Some(h.clone())));
                    keep.push((t, h));
                }
                if !keep.is_empty() {
                    out.accepted += keep.len() as u64;
                    accepted.push((labels, keep));
                }
            }
        }
        if accepted.is_empty() {
            return Ok(());
        }
        if let Some(log) = log.as_mut() {
            let mut rec = Vec::new();
            frame(&mut rec, &encode_batch(&accepted)).map_err(|e| io_err(&log.path, e))?;
            log.file
                .append(&rec, log.fsync == Fsync::Batch)
                .map_err(|e| io_err(&log.path, e))?;
        }
        let handed = hand_on.map(|_| accepted.clone());
        let mut series = self.series.write().unwrap_or_else(|e| e.into_inner());
        for (labels, samples) in accepted {
            let s = series.entry(labels).or_default();
            for (t, h) in samples {
                s.push(t, h);
            }
        }
        drop(series);
        if let (Some(sink), Some(handed)) = (hand_on, handed) {
            sink(&handed);
        }
        drop(log);
        Ok(())
    }

    /// Every matching series' newest sample, when it is in `[mint,
    /// maxt]` (federation: one decoded chunk at most a series, not a
    /// window's samples).
    pub fn newest(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Vec<(Labels, (i64, Histogram))> {
        let series = self.series.read().unwrap_or_else(|e| e.into_inner());
        series
            .iter()
            .filter(|(labels, s)| {
                matchers.iter().all(|m| m.matches(labels.get(m.name())))
                    && s.max_t().is_some_and(|t| (mint..=maxt).contains(&t))
            })
            .filter_map(|(labels, s)| Some((labels.clone(), s.newest_sample()?)))
            .collect()
    }

    /// Every matching series' samples in `[mint, maxt]`.
    pub fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<SeriesHistograms> {
        let series = self.series.read().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for (labels, s) in series.iter() {
            if !matchers.iter().all(|m| m.matches(labels.get(m.name()))) {
                continue;
            }
            let mut samples = Vec::new();
            for c in &s.sealed {
                if c.max_t < mint || c.min_t > maxt {
                    continue;
                }
                match c.samples() {
                    Some(d) => {
                        samples.extend(d.into_iter().filter(|(t, _)| (mint..=maxt).contains(t)))
                    }
                    None => {
                        tracing::error!(series = %labels, "a histogram chunk does not decode; skipped")
                    }
                }
            }
            samples.extend(
                s.open
                    .iter()
                    .filter(|(t, _)| (mint..=maxt).contains(t))
                    .cloned(),
            );
            if !samples.is_empty() {
                out.push((labels.clone(), samples));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Write the sealed chunks held in memory to a new segment, rewrite
    /// the log to hold only the open chunks, and apply retention
    /// (`cutoff`: samples older are dropped). Returns chunks written.
    pub fn persist(&self, cutoff: i64) -> Result<usize, StoreError> {
        self.persist_if(cutoff, |_, _| true)
    }

    /// As [`Self::persist`] once the sealed chunks in memory reach
    /// [`PERSIST_BYTES`] or their oldest is `block_ms` older than `now`
    /// (so segments are few and large); retention applies either way.
    pub fn persist_due(&self, cutoff: i64, now: i64, block_ms: i64) -> Result<usize, StoreError> {
        self.persist_if(cutoff, |bytes, oldest| {
            bytes >= PERSIST_BYTES || now.saturating_sub(oldest) >= block_ms
        })
    }

    fn persist_if(
        &self,
        cutoff: i64,
        due: impl Fn(usize, i64) -> bool,
    ) -> Result<usize, StoreError> {
        // Appends wait on the log for the whole of it (so the chunks
        // found below stay where they are); queries wait only while the
        // chunks are swapped for their places in the segment.
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let Some(dir) = &self.dir else {
            self.drop_before(cutoff);
            return Ok(0);
        };
        let mut data = Vec::new();
        let mut entries: Vec<(Labels, Vec<PlacedSpan>)> = Vec::new();
        let mut open: Vec<SeriesHistograms> = Vec::new();
        let (mut lo, mut hi) = (i64::MAX, i64::MIN);
        {
            let series = self.series.read().unwrap_or_else(|e| e.into_inner());
            let (bytes, oldest) = series
                .values()
                .flat_map(|s| s.sealed.iter())
                .filter_map(|c| match &c.at {
                    Sealed::Memory(b) => Some((b.len(), c.min_t)),
                    Sealed::File { .. } => None,
                })
                .fold((0, i64::MAX), |(n, o), (b, t)| (n + b, o.min(t)));
            if bytes == 0 || !due(bytes, oldest) {
                drop(series);
                self.expire(cutoff)?;
                return Ok(0);
            }
            for (labels, s) in series.iter() {
                let mut placed = Vec::new();
                for (k, c) in s.sealed.iter().enumerate() {
                    if let Sealed::Memory(b) = &c.at {
                        placed.push(((k, data.len() as u64, b.len() as u32), c.min_t, c.max_t));
                        data.extend_from_slice(b);
                        lo = lo.min(c.min_t);
                        hi = hi.max(c.max_t);
                    }
                }
                if !placed.is_empty() {
                    entries.push((labels.clone(), placed));
                }
                if !s.open.is_empty() {
                    open.push((labels.clone(), s.open.clone()));
                }
            }
        }
        let mut index = Vec::new();
        index.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        for (labels, placed) in &entries {
            put_labels(&mut index, labels);
            index.extend_from_slice(&(placed.len() as u32).to_le_bytes());
            for ((_, offset, len), min_t, max_t) in placed {
                index.extend_from_slice(&min_t.to_le_bytes());
                index.extend_from_slice(&max_t.to_le_bytes());
                index.extend_from_slice(&offset.to_le_bytes());
                index.extend_from_slice(&len.to_le_bytes());
            }
        }
        let crc = crc32fast::hash(&index);
        let ilen = index.len() as u64;
        data.extend_from_slice(&index);
        data.extend_from_slice(&ilen.to_le_bytes());
        data.extend_from_slice(&crc.to_le_bytes());
        let name = format!("{lo:013}-{hi:013}");
        let mut path = dir.join(format!("{name}.seg"));
        let mut n = 1;
        while path.exists() {
            path = dir.join(format!("{name}-{n}.seg"));
            n += 1;
        }
        let file = write_synced(dir, &path, &data)?;
        let seg = Arc::new(Segment {
            file,
            path,
            max_t: hi,
        });
        let written = entries.iter().map(|(_, p)| p.len()).sum();
        {
            let mut series = self.series.write().unwrap_or_else(|e| e.into_inner());
            for (labels, placed) in entries {
                let Some(s) = series.get_mut(&labels) else {
                    continue;
                };
                for ((k, offset, len), _, _) in placed {
                    if let Some(c) = s.sealed.get_mut(k) {
                        c.at = Sealed::File {
                            seg: seg.clone(),
                            offset,
                            len,
                        };
                    }
                }
            }
        }
        self.segments
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(seg);
        // The log now needs to hold only the open chunks.
        if let Some(log) = log.as_mut() {
            let mut out = Vec::new();
            for part in open.chunks(4096) {
                frame(&mut out, &encode_batch(part)).map_err(|e| io_err(&log.path, e))?;
            }
            let file = write_synced(dir, &log.path, &out)?;
            log.file.replace(file, out.len() as u64);
        }
        self.expire(cutoff)?;
        drop(log);
        Ok(written)
    }

    /// Drop what is older than `cutoff`: chunks, series, segments.
    fn expire(&self, cutoff: i64) -> Result<(), StoreError> {
        self.drop_before(cutoff);
        let mut segments = self.segments.lock().unwrap_or_else(|e| e.into_inner());
        let (expired, kept): (Vec<_>, Vec<_>) = segments.drain(..).partition(|s| s.max_t < cutoff);
        *segments = kept;
        for s in expired {
            std::fs::remove_file(&s.path).map_err(|e| io_err(&s.path, e))?;
        }
        Ok(())
    }

    /// Drop sealed chunks wholly before `cutoff`, and series left empty.
    fn drop_before(&self, cutoff: i64) {
        let mut series = self.series.write().unwrap_or_else(|e| e.into_inner());
        series.retain(|_, s| {
            s.sealed.retain(|c| c.max_t >= cutoff);
            s.open.retain(|(t, _)| *t >= cutoff);
            !s.sealed.is_empty() || !s.open.is_empty()
        });
    }

    /// Bytes of sealed chunks (in memory and in segments) and samples
    /// in open chunks: what a histogram costs on disk.
    pub fn chunk_bytes(&self) -> u64 {
        let series = self.series.read().unwrap_or_else(|e| e.into_inner());
        series
            .values()
            .flat_map(|s| s.sealed.iter())
            .map(|c| match &c.at {
                Sealed::Memory(b) => b.len() as u64,
                Sealed::File { len, .. } => u64::from(*len),
            })
            .sum()
    }

    /// Seal every open chunk (a benchmark's measure of what its samples
    /// cost once sealed).
    pub fn seal_all(&self) {
        let mut series = self.series.write().unwrap_or_else(|e| e.into_inner());
        for s in series.values_mut() {
            s.seal();
        }
    }
}

#[cfg(test)]
mod tests;
