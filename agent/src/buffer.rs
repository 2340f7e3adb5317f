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

fn put_cursors(out: &mut Vec<u8>, cursors: &[Cursor]) {
    for c in cursors {
        let key = c.key.as_bytes();
        let n = u16::try_from(key.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&key[..usize::from(n)]);
        out.extend_from_slice(&c.inode.to_le_bytes());
        out.extend_from_slice(&c.offset.to_le_bytes());
    }
}

fn take_cursors(mut b: &[u8]) -> Vec<Cursor> {
    let mut out = Vec::new();
    while b.len() >= 2 {
        let n = usize::from(u16::from_le_bytes([b[0], b[1]]));
        if b.len() < 2 + n + 16 {
            break;
        }
        let key = String::from_utf8_lossy(&b[2..2 + n]).into_owned();
        let num = |at: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[at..at + 8]);
            u64::from_le_bytes(x)
        };
        out.push(Cursor {
            key,
            inode: num(2 + n),
            offset: num(2 + n + 8),
        });
        b = &b[2 + n + 16..];
    }
    out
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

fn seg_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:020}.seg"))
}

/// Read the frames of one segment image: the entries, and where the
/// valid part ends.
fn scan(image: &[u8], cursors: &mut Vec<Cursor>) -> (Vec<Entry>, u64) {
    let mut out = Vec::new();
    let mut at = 0usize;
    while image.len() - at >= FRAME_HEADER {
        let len =
            u32::from_le_bytes([image[at], image[at + 1], image[at + 2], image[at + 3]]) as usize;
        let crc = u32::from_le_bytes([image[at + 4], image[at + 5], image[at + 6], image[at + 7]]);
        let start = at + FRAME_HEADER;
        if !(PAYLOAD_HEADER..=MAX_FRAME).contains(&len) || image.len() - start < len {
            break;
        }
        let payload = &image[start..start + len];
        if crc32fast::hash(payload) != crc {
            break;
        }
        let clen =
            u32::from_le_bytes([payload[29], payload[30], payload[31], payload[32]]) as usize;
        if len - PAYLOAD_HEADER < clen {
            break;
        }
        cursors.extend(take_cursors(
            &payload[PAYLOAD_HEADER..PAYLOAD_HEADER + clen],
        ));
        if payload[16] == CURSORS_ONLY {
            at = start + len;
            continue;
        }
        let Some(signal) = Signal::from_byte(payload[16]) else {
            break;
        };
        let mut id = [0u8; 16];
        id.copy_from_slice(&payload[..16]);
        let records = u32::from_le_bytes([payload[17], payload[18], payload[19], payload[20]]);
        let mut created = [0u8; 8];
        created.copy_from_slice(&payload[21..29]);
        out.push(Entry {
            body_at: FRAME_HEADER + PAYLOAD_HEADER + clen,
            created_ms: i64::from_le_bytes(created),
            offset: at as u64,
            len: (FRAME_HEADER + len) as u64,
            id: u128::from_le_bytes(id),
            records,
            signal,
        });
        at = start + len;
    }
    (out, at as u64)
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

/// Most sources whose positions are kept (the least recently moved go).
const MAX_CURSORS: usize = 1000;

/// Record `c` as its source's newest position: the list stays in the
/// order positions last moved, newest last.
fn remember(cursors: &mut Vec<Cursor>, c: Cursor) {
    cursors.retain(|k| k.key != c.key);
    cursors.push(c);
    if cursors.len() > MAX_CURSORS {
        cursors.remove(0);
    }
}

/// A frame: length, CRC-32, then the payload; and where its body starts.
fn encode_frame(
    id: u128,
    signal: u8,
    records: u32,
    created_ms: i64,
    cursors: &[Cursor],
    body: &[u8],
) -> (Vec<u8>, usize) {
    let mut c = Vec::new();
    put_cursors(&mut c, cursors);
    let mut payload = Vec::with_capacity(PAYLOAD_HEADER + c.len() + body.len());
    payload.extend_from_slice(&id.to_le_bytes());
    payload.push(signal);
    payload.extend_from_slice(&records.to_le_bytes());
    payload.extend_from_slice(&created_ms.to_le_bytes());
    payload.extend_from_slice(&(c.len() as u32).to_le_bytes());
    payload.extend_from_slice(&c);
    payload.extend_from_slice(body);
    let mut frame = Vec::with_capacity(FRAME_HEADER + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    frame.extend_from_slice(&payload);
    (frame, FRAME_HEADER + PAYLOAD_HEADER + c.len())
}

fn read_head(dir: &Path) -> (u64, u64) {
    std::fs::read_to_string(dir.join("head"))
        .ok()
        .and_then(|s| {
            let (n, off) = s.trim().split_once(' ')?;
            Some((n.parse().ok()?, off.parse().ok()?))
        })
        .unwrap_or((0, 0))
}

/// Overwrite the head file in place with one fixed-width write: a crash
/// of the agent cannot cut a single 42-byte `pwrite`, and one cut by a
/// power loss reads as no head, which only resends what is buffered (the
/// collector drops repeats by id). One syscall an acknowledgement, not
/// the four of write-and-rename.
fn write_head(file: &File, path: &Path, (n, off): (u64, u64)) -> Result<(), BufferError> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(format!("{n:020} {off:020}\n").as_bytes(), 0)
        .map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(id: u128, size: usize) -> Batch {
        Batch {
            id,
            signal: Signal::ALL[(id % 3) as usize],
            records: id as u32,
            created_ms: 1_700_000_000_000 + id as i64,
            cursor: None,
            body: vec![(id % 251) as u8; size],
        }
    }

    fn drain(b: &mut DiskBuffer) -> Vec<u128> {
        let mut out = Vec::new();
        while let Some(x) = b.peek().expect("peek") {
            assert_eq!(x, batch(x.id, x.body.len()));
            out.push(x.id);
            b.ack(x.id).expect("ack");
        }
        out
    }

    #[test]
    fn each_signal_is_its_own_lane_and_old_metrics_hold_fresh_ones_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut b = DiskBuffer::open(dir.path(), 1 << 30, false).expect("open");
        let at = |id: u128, signal: Signal, created_ms: i64| Batch {
            signal,
            created_ms,
            ..batch(id, 100)
        };
        let fresh = |b: &DiskBuffer, s: Signal, window: i64| {
            b.peek_fresh(s, window).expect("peek").map(|x| x.id)
        };
        let oldest = |b: &DiskBuffer, s: Signal| b.peek_signal(s).expect("peek").map(|x| x.id);
        // A backlog of logs, then fresh logs: the newest goes ahead.
        for i in 1..=5 {
            b.push(&at(i, Signal::Logs, 1_000 * i as i64))
                .expect("push");
        }
        assert_eq!(fresh(&b, Signal::Logs, 60_000), Some(5));
        b.ack(5).expect("ack");
        assert_eq!(b.stats().batches, 4);
        assert_eq!(fresh(&b, Signal::Logs, 60_000), Some(4));
        assert_eq!(oldest(&b, Signal::Logs), Some(1), "the backlog is unmoved");
        // Metrics behind the log backlog are their own lane's oldest.
        assert_eq!(oldest(&b, Signal::Metrics), None);
        b.push(&at(6, Signal::Metrics, 0)).expect("push");
        b.push(&at(7, Signal::Logs, 3_600_000)).expect("push");
        b.push(&at(8, Signal::Metrics, 3_600_000)).expect("push");
        assert_eq!(oldest(&b, Signal::Metrics), Some(6));
        assert_eq!(oldest(&b, Signal::Traces), None);
        // Each lane's lag is its own oldest batch's age.
        assert_eq!(b.oldest_created_ms(Signal::Metrics), Some(0));
        assert_eq!(b.oldest_created_ms(Signal::Logs), Some(1_000));
        assert_eq!(b.oldest_created_ms(Signal::Traces), None);
        assert_eq!(fresh(&b, Signal::Traces, 60_000), None);
        // Metrics an hour older than a fresh metrics batch: the fresh one
        // waits (the collector would reject the older samples after it),
        // while a fresh log batch still goes.
        assert_eq!(fresh(&b, Signal::Metrics, 60_000), None);
        assert_eq!(fresh(&b, Signal::Logs, 60_000), Some(7));
        b.ack(7).expect("ack");
        assert_eq!(
            fresh(&b, Signal::Metrics, 3_600_000),
            Some(8),
            "within the window it may go"
        );
        // Acknowledged out of order, lane by lane: batch 6 is not the
        // oldest of all, so the head stays at batch 1.
        b.ack(6).expect("ack");
        assert_eq!(oldest(&b, Signal::Metrics), Some(8));
        assert_eq!(b.peek().expect("peek").map(|x| x.id), Some(1));
        // After a crash, batches acknowledged ahead of the head come back
        // (the collector drops the repeats by id); nothing is lost.
        drop(b);
        let mut b = DiskBuffer::open(dir.path(), 1 << 30, false).expect("reopen");
        assert_eq!(
            std::iter::from_fn(|| {
                let x = b.peek().expect("peek")?;
                b.ack(x.id).expect("ack");
                Some(x.id)
            })
            .collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5, 6, 7, 8]
        );
        assert_eq!(fresh(&b, Signal::Logs, 60_000), None, "empty");
        b.push(&at(9, Signal::Logs, 0)).expect("push");
        assert_eq!(
            fresh(&b, Signal::Logs, 60_000),
            None,
            "the only batch is the backlog's"
        );
    }

    #[test]
    fn a_lane_stuck_on_one_signal_cannot_pin_the_disk_past_its_cap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cap = 3 * SEGMENT_BYTES;
        let mut b = DiskBuffer::open(dir.path(), cap, false).expect("open");
        let on_disk = || -> u64 {
            std::fs::read_dir(dir.path())
                .expect("list")
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        };
        // Logs the collector keeps refusing, between metrics it takes: the
        // unsent bytes stay small, but each log batch holds its segment.
        for i in 0..400u128 {
            let log = Batch {
                signal: Signal::Logs,
                ..batch(2 * i + 1, 1_000)
            };
            let metrics = Batch {
                signal: Signal::Metrics,
                ..batch(2 * i + 2, 100_000)
            };
            b.push(&log).expect("push");
            b.push(&metrics).expect("push");
            b.ack(metrics.id).expect("ack");
            assert!(
                on_disk() <= cap + 2 * SEGMENT_BYTES,
                "{} bytes on disk after {} pairs",
                on_disk(),
                i + 1
            );
        }
        let stats = b.stats();
        assert!(stats.dropped_batches[Signal::Logs.index()] > 0, "{stats:?}");
        assert_eq!(stats.dropped_batches[Signal::Metrics.index()], 0);
        // The newest logs are still there, oldest first.
        let left: Vec<u128> = std::iter::from_fn(|| {
            let x = b.peek().expect("peek")?;
            b.ack(x.id).expect("ack");
            Some(x.id)
        })
        .collect();
        assert!(left.len() > 1 && left.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(left.last(), Some(&799));
    }

    #[test]
    fn batches_come_back_in_order_across_segments_and_reopens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut b = DiskBuffer::open(dir.path(), 1 << 30, false).expect("open");
        for id in 1..=30 {
            b.push(&batch(id, 300_000)).expect("push");
        }
        let first = b.peek().expect("peek").expect("one");
        b.ack(first.id).expect("ack");
        drop(b);
        let mut b = DiskBuffer::open(dir.path(), 1 << 30, false).expect("reopen");
        assert_eq!(b.stats().batches, 29);
        assert_eq!(drain(&mut b), (2..=30).collect::<Vec<_>>());
        drop(b);
        let mut b = DiskBuffer::open(dir.path(), 1 << 30, false).expect("reopen");
        assert_eq!(b.peek().expect("peek"), None);
        b.push(&batch(31, 10)).expect("push");
        assert_eq!(drain(&mut b), vec![31]);
        let segs = std::fs::read_dir(dir.path())
            .expect("ls")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
            .count();
        assert_eq!(segs, 1, "acknowledged segments are deleted");
    }

    #[test]
    fn a_torn_tail_at_any_byte_is_cut_and_the_whole_batches_before_it_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut b = DiskBuffer::open(dir.path(), 1 << 30, false).expect("open");
        for id in 1..=3 {
            b.push(&batch(id, 100)).expect("push");
        }
        drop(b);
        let seg = seg_path(dir.path(), 1);
        let whole = std::fs::read(&seg).expect("read");
        let frame = whole.len() / 3;
        for cut in (2 * frame + 1)..whole.len() {
            std::fs::write(&seg, &whole[..cut]).expect("write");
            let mut b = DiskBuffer::open(dir.path(), 1 << 30, false).expect("opens");
            assert_eq!(b.stats().torn_bytes, (cut - 2 * frame) as u64);
            // Appends go on after the cut, and read back whole.
            b.push(&batch(9, 50)).expect("push");
            drop(b);
            let mut b = DiskBuffer::open(dir.path(), 1 << 30, false).expect("reopen");
            assert_eq!(b.stats().torn_bytes, 0);
            let ids: Vec<u128> = {
                let mut v = Vec::new();
                while let Some(x) = b.peek().expect("peek") {
                    v.push(x.id);
                    b.ack(x.id).expect("ack");
                }
                v
            };
            assert_eq!(ids, vec![1, 2, 9], "cut at {cut}");
            std::fs::remove_file(dir.path().join("head")).expect("rm head");
            std::fs::write(&seg, &whole).expect("restore");
        }
        // A flipped bit in the middle frame ends the segment there too.
        let mut bad = whole.clone();
        bad[frame + FRAME_HEADER + 3] ^= 1;
        std::fs::write(&seg, &bad).expect("write");
        let mut b = DiskBuffer::open(dir.path(), 1 << 30, false).expect("opens");
        assert_eq!(drain(&mut b), vec![1]);
    }

    #[test]
    fn past_the_cap_the_oldest_batches_are_dropped_and_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut b = DiskBuffer::open(dir.path(), 1 << 20, false).expect("open");
        for id in 1..=40 {
            b.push(&batch(id, 100_000)).expect("push");
        }
        let s = b.stats();
        assert!(s.bytes <= 1 << 20, "{s:?}");
        let kept = s.batches as u128;
        assert_eq!(kept, 10);
        let dropped: u64 = s.dropped_batches.iter().sum();
        assert_eq!(dropped, 30);
        let dropped_records: u64 = s.dropped_records.iter().sum();
        assert_eq!(dropped_records, (1..=30).sum::<u64>());
        assert_eq!(drain(&mut b), (31..=40).collect::<Vec<_>>());
    }

    #[test]
    fn cursors_survive_reopens_acknowledgements_and_segment_rolls() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut b = DiskBuffer::open(dir.path(), 1 << 30, false).expect("open");
        let at = |key: &str, offset: u64| Cursor {
            key: key.into(),
            inode: 7,
            offset,
        };
        for i in 1..=40u64 {
            let mut x = batch(u128::from(i), 300_000);
            x.cursor = Some(at(if i % 2 == 0 { "/a.log" } else { "/b.log" }, i * 10));
            b.push(&x).expect("push");
        }
        // Send (and forget) all but the last: older segments are deleted.
        for _ in 0..39 {
            let x = b.peek().expect("peek").expect("batch");
            assert_eq!(x.body.len(), 300_000);
            b.ack(x.id).expect("ack");
        }
        drop(b);
        let b = DiskBuffer::open(dir.path(), 1 << 30, false).expect("reopen");
        let mut got: Vec<Cursor> = b.cursors().to_vec();
        got.sort_by(|x, y| x.key.cmp(&y.key));
        assert_eq!(got, vec![at("/a.log", 400), at("/b.log", 390)]);
        assert_eq!(b.stats().batches, 1);
        let segs = std::fs::read_dir(dir.path())
            .expect("ls")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
            .count();
        assert_eq!(segs, 1);
    }
}
