//! The on-disk buffer: every batch is written here before it is sent,
//! and leaves only once the collector acknowledged it.
//!
//! Batches go into segment files (`<n>.seg`, up to 4 MiB each) as frames
//! of length, CRC-32 and payload (id, signal, record count, body). The
//! `head` file names the oldest batch not yet acknowledged; it is
//! replaced (write, rename) on every acknowledgement, so after a crash
//! at most the batch in flight is sent again, and the collector drops the
//! repeat by its id. On open, a frame that is short or fails its CRC —
//! a write cut by a crash — ends the segment: the file is cut there and
//! the agent goes on. Past `max_bytes` of unsent batches, or of segment
//! files (plus one segment's slack), the oldest batches are dropped, and
//! counted, to make room.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Largest segment file before a new one is started.
const SEGMENT_BYTES: u64 = 4 << 20;
/// Length + CRC-32.
const FRAME_HEADER: usize = 8;
/// Id (16) + signal (1) + records (4) + created (8) + cursor bytes (4),
/// then the cursors, then the body.
const PAYLOAD_HEADER: usize = 33;
/// Signal byte of a frame that only records read positions (written at
/// the head of each new segment; never sent).
const CURSORS_ONLY: u8 = u8::MAX;
/// Larger than any batch the agent builds: a length past it is a torn frame.
const MAX_FRAME: usize = 64 << 20;

/// Errors of the buffer.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// A file of the buffer could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// Which file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BufferError + '_ {
    move |source| BufferError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Which OTLP endpoint a batch goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// `/v1/metrics`.
    Metrics,
    /// `/v1/logs`.
    Logs,
    /// `/v1/traces`.
    Traces,
}

impl Signal {
    /// Every signal, in index order.
    pub const ALL: [Signal; 3] = [Signal::Metrics, Signal::Logs, Signal::Traces];

    /// The OTLP/HTTP path.
    pub fn path(self) -> &'static str {
        match self {
            Signal::Metrics => "/v1/metrics",
            Signal::Logs => "/v1/logs",
            Signal::Traces => "/v1/traces",
        }
    }

    /// The name used in the agent's own metrics.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
            Signal::Traces => "traces",
        }
    }

    /// Index into per-signal arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    fn from_byte(b: u8) -> Option<Self> {
        Self::ALL.get(usize::from(b)).copied()
    }
}

/// How far a source (a tailed file) has been read: what a batch holding
/// its lines up to `offset` of file `inode` at `key` (the path) records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The source, e.g. the file's path.
    pub key: String,
    /// The file's inode (a rotated file keeps it; its successor does not).
    pub inode: u64,
    /// Bytes read and buffered.
    pub offset: u64,
}

/// One batch: a gzip-compressed OTLP protobuf request and what it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Stable id, sent as the `Keel-Batch-Id` header on every attempt.
    pub id: u128,
    /// Where it goes.
    pub signal: Signal,
    /// Records in it (data points, log records or spans).
    pub records: u32,
    /// When it was made, ms since the epoch (for the send lag).
    pub created_ms: i64,
    /// Where its source stands once it is buffered (tailed files): kept
    /// in the same frame, so a restart resumes exactly after it.
    pub cursor: Option<Cursor>,
    /// The request body, gzip-compressed.
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    offset: u64,
    len: u64,
    id: u128,
    records: u32,
    signal: Signal,
    created_ms: i64,
    /// Where the body starts in the frame.
    body_at: usize,
}

#[derive(Debug)]
struct Segment {
    n: u64,
    path: PathBuf,
    /// Bytes in the file (acknowledged frames included).
    size: u64,
    /// Frames not yet acknowledged, oldest first.
    entries: VecDeque<Entry>,
}

/// What the buffer holds and has dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BufferStats {
    /// Batches waiting to be sent.
    pub batches: u64,
    /// Their bytes on disk.
    pub bytes: u64,
    /// Batches dropped to stay under `max_bytes`, per signal.
    pub dropped_batches: [u64; 3],
    /// Records in them, per signal.
    pub dropped_records: [u64; 3],
    /// Bytes cut from torn segment tails when the buffer was opened.
    pub torn_bytes: u64,
}

/// The buffer. Not shared by itself: callers hold it behind a lock.
#[derive(Debug)]
pub struct DiskBuffer {
    dir: PathBuf,
    max_bytes: u64,
    fsync: bool,
    segments: VecDeque<Segment>,
    active: File,
    /// The `head` file, kept open for in-place writes.
    head: File,
    stats: BufferStats,
    /// The newest cursor of every source, in the order first seen.
    cursors: Vec<Cursor>,
}

impl DiskBuffer {
    /// Open the buffer in `dir` (created if missing), cutting torn tails.
    pub fn open(dir: &Path, max_bytes: u64, fsync: bool) -> Result<Self, BufferError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut numbers: Vec<u64> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let name = name.to_str()?;
                name.strip_suffix(".seg")?.parse().ok()
            })
            .collect();
        numbers.sort_unstable();
        let (head_n, head_off) = read_head(dir);
        let mut stats = BufferStats::default();
        let mut segments = VecDeque::new();
        let mut seen_cursors = Vec::new();
        for n in numbers {
            let path = seg_path(dir, n);
            let mut image = Vec::new();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut image))
                .map_err(io(&path))?;
            let (entries, valid) = scan(&image, &mut seen_cursors);
            if valid < image.len() as u64 {
                stats.torn_bytes += image.len() as u64 - valid;
                tracing::warn!(
                    file = %path.display(),
                    at = valid,
                    cut = image.len() as u64 - valid,
                    "disk buffer: torn frame (a write cut short); the segment ends here"
                );
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(valid))
                    .map_err(io(&path))?;
            }
            let entries: VecDeque<Entry> = entries
                .into_iter()
                .filter(|e| n > head_n || (n == head_n && e.offset >= head_off))
                .collect();
            segments.push_back(Segment {
                n,
                path,
                size: valid,
                entries,
            });
        }
        // Fully acknowledged segments, but the newest, are gone.
        while segments.len() > 1 && segments.front().is_some_and(|s| s.entries.is_empty()) {
            if let Some(s) = segments.pop_front() {
                std::fs::remove_file(&s.path).map_err(io(&s.path))?;
            }
        }
        if segments.is_empty() {
            let n = head_n.max(1);
            segments.push_back(Segment {
                n,
                path: seg_path(dir, n),
                size: 0,
                entries: VecDeque::new(),
            });
        }
        let last = segments.back().map(|s| s.path.clone()).unwrap_or_default();
        let active = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&last)
            .map_err(io(&last))?;
        let mut cursors: Vec<Cursor> = Vec::new();
        for c in seen_cursors {
            remember(&mut cursors, c);
        }
        let head_path = dir.join("head");
        let head = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&head_path)
            .map_err(io(&head_path))?;
        let mut buf = Self {
            head,
            dir: dir.to_path_buf(),
            max_bytes,
            fsync,
            segments,
            active,
            stats,
            cursors,
        };
        buf.recount();
        Ok(buf)
    }

    fn recount(&mut self) {
        let (mut batches, mut bytes) = (0, 0);
        for s in &self.segments {
            batches += s.entries.len() as u64;
            bytes += s.entries.iter().map(|e| e.len).sum::<u64>();
        }
        self.stats.batches = batches;
        self.stats.bytes = bytes;
    }

    /// Append a batch (durable against a crash of the agent when this
    /// returns; against power loss too with `fsync`).
    pub fn push(&mut self, b: &Batch) -> Result<(), BufferError> {
        let cursors: Vec<Cursor> = b.cursor.iter().cloned().collect();
        let (frame, body_at) = encode_frame(
            b.id,
            b.signal as u8,
            b.records,
            b.created_ms,
            &cursors,
            &b.body,
        );
        let full = self
            .segments
            .back()
            .is_some_and(|s| s.size > 0 && s.size + frame.len() as u64 > SEGMENT_BYTES);
        if full {
            self.roll()?;
        }
        if let Some(c) = &b.cursor {
            remember(&mut self.cursors, c.clone());
        }
        let Some(seg) = self.segments.back_mut() else {
            return Ok(());
        };
        self.active.write_all(&frame).map_err(io(&seg.path))?;
        if self.fsync {
            self.active.sync_data().map_err(io(&seg.path))?;
        }
        seg.entries.push_back(Entry {
            offset: seg.size,
            len: frame.len() as u64,
            id: b.id,
            records: b.records,
            signal: b.signal,
            created_ms: b.created_ms,
            body_at,
        });
        seg.size += frame.len() as u64;
        self.stats.batches += 1;
        self.stats.bytes += frame.len() as u64;
        // Unsent bytes, and the segment files too: lanes acknowledge out
        // of order, and one unsent batch keeps its whole segment on disk
        // (a lane stuck on a refused signal would pin every segment).
        while (self.stats.bytes > self.max_bytes
            || self.disk_bytes() > self.max_bytes.saturating_add(SEGMENT_BYTES))
            && self.stats.batches > 1
        {
            let Some(e) = self.oldest() else { break };
            self.stats.dropped_batches[e.signal.index()] += 1;
            self.stats.dropped_records[e.signal.index()] += u64::from(e.records);
            tracing::warn!(
                signal = e.signal.name(),
                records = e.records,
                "disk buffer full: dropped its oldest batch"
            );
            self.remove_oldest()?;
        }
        Ok(())
    }

    /// Bytes of the segment files.
    fn disk_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }

    fn roll(&mut self) -> Result<(), BufferError> {
        let n = self.segments.back().map_or(1, |s| s.n + 1);
        let path = seg_path(&self.dir, n);
        self.active = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        // Every source's position heads the new segment, so the older
        // ones can go once sent without taking positions with them.
        let mut size = 0;
        if !self.cursors.is_empty() {
            let (frame, _) = encode_frame(0, CURSORS_ONLY, 0, 0, &self.cursors, &[]);
            self.active.write_all(&frame).map_err(io(&path))?;
            size = frame.len() as u64;
        }
        self.segments.push_back(Segment {
            n,
            path,
            size,
            entries: VecDeque::new(),
        });
        Ok(())
    }

    /// The newest position of every source, as buffered, in the order
    /// they last moved (newest last).
    pub fn cursors(&self) -> &[Cursor] {
        &self.cursors
    }

    fn oldest(&self) -> Option<Entry> {
        self.segments
            .iter()
            .find_map(|s| s.entries.front().copied())
    }

    /// The oldest unacknowledged batch of `signal`, and its segment.
    fn oldest_of(&self, signal: Signal) -> Option<(&Segment, &Entry)> {
        self.segments.iter().find_map(|s| {
            s.entries
                .iter()
                .find(|e| e.signal == signal)
                .map(|e| (s, e))
        })
    }

    /// The oldest batch not yet acknowledged.
    pub fn peek(&self) -> Result<Option<Batch>, BufferError> {
        let Some(seg) = self.segments.iter().find(|s| !s.entries.is_empty()) else {
            return Ok(None);
        };
        let Some(e) = seg.entries.front() else {
            return Ok(None);
        };
        self.read(seg, e)
    }

    /// The oldest batch of `signal` not yet acknowledged (each signal is
    /// sent in its own lane, so a backlog of one never holds up another).
    pub fn peek_signal(&self, signal: Signal) -> Result<Option<Batch>, BufferError> {
        match self.oldest_of(signal) {
            Some((seg, e)) => self.read(seg, e),
            None => Ok(None),
        }
    }

    /// The newest batch of `signal` that may go ahead of its backlog, if
    /// it is not the oldest one too: logs and traces always may (their
    /// stores take any order); a metrics batch only while the oldest unsent
    /// metrics are at most `metrics_window` older than it, so the
    /// collector's out-of-order window still takes the older samples after it.
    pub fn peek_fresh(
        &self,
        signal: Signal,
        metrics_window_ms: i64,
    ) -> Result<Option<Batch>, BufferError> {
        let Some((_, oldest)) = self.oldest_of(signal) else {
            return Ok(None);
        };
        // The newest few batches only: past them the backlog lane is as good.
        let newest = self
            .segments
            .iter()
            .rev()
            .flat_map(|s| s.entries.iter().rev().map(move |e| (s, e)))
            .filter(|(_, e)| e.signal == signal)
            .take(64)
            .find(|(_, e)| {
                signal != Signal::Metrics || e.created_ms - oldest.created_ms <= metrics_window_ms
            });
        match newest {
            Some((seg, e)) if e.id != oldest.id => self.read(seg, e),
            _ => Ok(None),
        }
    }

    /// Batch `e` of segment `seg`, read from its file.
    fn read(&self, seg: &Segment, e: &Entry) -> Result<Option<Batch>, BufferError> {
        let mut frame = vec![0u8; e.len as usize];
        File::open(&seg.path)
            .and_then(|mut f| {
                f.seek(SeekFrom::Start(e.offset))?;
                f.read_exact(&mut frame)
            })
            .map_err(io(&seg.path))?;
        Ok(Some(Batch {
            id: e.id,
            signal: e.signal,
            records: e.records,
            created_ms: e.created_ms,
            cursor: None,
            body: frame[e.body_at..].to_vec(),
        }))
    }

    /// The collector took batch `id`: forget it (a no-op when it is gone,
    /// e.g. dropped meanwhile). The head file moves only past the oldest
    /// batch; one acknowledged ahead of it leaves memory now but stays in
    /// its segment until the head passes, so after a crash it is sent
    /// again and the collector drops the repeat by its id.
    pub fn ack(&mut self, id: u128) -> Result<(), BufferError> {
        if self.oldest().is_some_and(|e| e.id == id) {
            return self.remove_oldest();
        }
        for seg in self.segments.iter_mut().rev() {
            if let Some(i) = seg.entries.iter().rposition(|e| e.id == id) {
                if let Some(e) = seg.entries.remove(i) {
                    self.stats.batches -= 1;
                    self.stats.bytes -= e.len;
                }
                break;
            }
        }
        Ok(())
    }

    fn remove_oldest(&mut self) -> Result<(), BufferError> {
        let Some(seg) = self.segments.iter_mut().find(|s| !s.entries.is_empty()) else {
            return Ok(());
        };
        let Some(e) = seg.entries.pop_front() else {
            return Ok(());
        };
        self.stats.batches -= 1;
        self.stats.bytes -= e.len;
        let head = (seg.n, e.offset + e.len);
        write_head(&self.head, &self.dir.join("head"), head)?;
        while self.segments.len() > 1 && self.segments.front().is_some_and(|s| s.entries.is_empty())
        {
            if let Some(s) = self.segments.pop_front() {
                std::fs::remove_file(&s.path).map_err(io(&s.path))?;
            }
        }
        Ok(())
    }

    /// What the buffer holds and has dropped.
    pub fn stats(&self) -> BufferStats {
        self.stats
    }

    /// When the oldest unsent batch of `signal` was made (ms since the epoch).
    pub fn oldest_created_ms(&self, signal: Signal) -> Option<i64> {
        self.oldest_of(signal).map(|(_, e)| e.created_ms)
    }
}

mod frame;
use frame::*;

#[cfg(test)]
mod tests;
