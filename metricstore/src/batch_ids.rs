//! Ids of recently stored batches, so that a batch sent again after its
//! acknowledgement was lost is dropped instead of stored twice.
//!
//! OTLP lets a client retry any export, and a retry after a lost answer
//! repeats data the collector already holds. The Keel agent sends a
//! stable id with every batch (`Keel-Batch-Id`); each store keeps the ids
//! it took during `retention` (longer than an agent buffers, by default a
//! day) in memory and in `batch-ids.log` beside its data — one line, id
//! and arrival time, a batch. A store records the id under the same lock
//! as the data, after its write-ahead log, and the log/span stores also
//! carry the id in that log, so a crash between the two writes leaves the
//! id recoverable at replay. A torn last line is ignored; the file is
//! rewritten without expired ids once it is mostly expired lines.

use std::collections::{HashMap, VecDeque};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use crate::append::AppendFile;

/// The header that carries a batch's id: 32 hex digits.
pub const HEADER: &str = "keel-batch-id";

/// Parse a batch id as sent in [`HEADER`].
pub fn parse(s: &str) -> Result<u128, String> {
    let s = s.trim();
    if s.is_empty() || s.len() > 32 {
        return Err(format!("{HEADER}: {s:?} is not 1 to 32 hex digits"));
    }
    u128::from_str_radix(s, 16).map_err(|_| format!("{HEADER}: {s:?} is not hex"))
}

/// The batch id a request carries in [`HEADER`], given the header's raw
/// value (HTTP and gRPC metadata alike): none without the header, an
/// error for a malformed one (the sender meant to be deduplicated).
pub fn from_header(value: Option<&[u8]>) -> Result<Option<u128>, String> {
    value
        .map(|v| {
            std::str::from_utf8(v)
                .ok()
                .filter(|s| s.is_ascii())
                .ok_or_else(|| format!("{HEADER}: not ASCII"))
                .and_then(parse)
        })
        .transpose()
}

/// The recent ids of one store.
#[derive(Debug)]
pub struct BatchIds {
    path: PathBuf,
    file: AppendFile,
    seen: HashMap<u128, i64>,
    /// Arrival order, for expiry.
    order: VecDeque<(i64, u128)>,
    retention_ms: i64,
    /// Lines in the file (live and expired).
    lines: usize,
}

impl BatchIds {
    /// Open (or create) the ids file at `path`, keeping ids younger than
    /// `retention_ms` at `now_ms`.
    pub fn open(path: &Path, retention_ms: i64, now_ms: i64) -> std::io::Result<Self> {
        let (mut file, image) = AppendFile::open(path)?;
        // A line cut by a crash (or a failed write) is cut off.
        let whole = image.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        file.keep(whole as u64)?;
        let text = String::from_utf8_lossy(&image[..whole]).into_owned();
        let mut ids = Self {
            path: path.to_path_buf(),
            file,
            seen: HashMap::new(),
            order: VecDeque::new(),
            retention_ms,
            lines: 0,
        };
        for line in text.lines() {
            let Some((id, ms)) = line.split_once(' ') else {
                continue;
            };
            let (Ok(id), Ok(ms)) = (u128::from_str_radix(id, 16), ms.parse::<i64>()) else {
                continue;
            };
            ids.lines += 1;
            if ms > now_ms - retention_ms && ids.seen.insert(id, ms).is_none() {
                ids.order.push_back((ms, id));
            }
        }
        ids.expire(now_ms)?;
        Ok(ids)
    }

    /// Was batch `id` stored within the retention?
    pub fn contains(&self, id: u128) -> bool {
        self.seen.contains_key(&id)
    }

    /// Remember batch `id`, stored at `now_ms`.
    pub fn record(&mut self, id: u128, now_ms: i64) -> std::io::Result<()> {
        if self.seen.insert(id, now_ms).is_some() {
            return Ok(());
        }
        self.order.push_back((now_ms, id));
        // Kept in memory even if the line is not written: this process
        // still drops a resend (the caller reports the error).
        self.file
            .append(format!("{id:032x} {now_ms}\n").as_bytes(), false)?;
        self.lines += 1;
        Ok(())
    }

    /// How many ids are kept.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Forget ids past the retention; rewrite the file once most of its
    /// lines are expired.
    pub fn expire(&mut self, now_ms: i64) -> std::io::Result<()> {
        while let Some(&(ms, id)) = self.order.front() {
            if ms > now_ms - self.retention_ms {
                break;
            }
            self.order.pop_front();
            if self.seen.get(&id) == Some(&ms) {
                self.seen.remove(&id);
            }
        }
        if self.lines > 2 * self.order.len() + 1024 {
            let tmp = self.path.with_extension("log.tmp");
            let mut text = String::with_capacity(self.order.len() * 48);
            for (ms, id) in &self.order {
                text.push_str(&format!("{id:032x} {ms}\n"));
            }
            std::fs::write(&tmp, &text)?;
            std::fs::rename(&tmp, &self.path)?;
            let file = OpenOptions::new().read(true).write(true).open(&self.path)?;
            self.file.replace(file, text.len() as u64);
            self.lines = self.order.len();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn ids_survive_reopen_expire_and_a_torn_line_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("batch-ids.log");
        let mut ids = BatchIds::open(&path, 1_000, 0).expect("open");
        ids.record(1, 100).expect("record");
        ids.record(2, 600).expect("record");
        ids.record(2, 650).expect("again");
        assert!(ids.contains(1) && ids.contains(2) && !ids.contains(3));
        drop(ids);
        // A crash cut the last line short.
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(b"000000000000000000000000000000")
            .expect("write");
        drop(f);
        let mut ids = BatchIds::open(&path, 1_000, 900).expect("reopen");
        assert!(ids.contains(1) && ids.contains(2));
        ids.record(4, 950).expect("record");
        ids.expire(1_200).expect("expire");
        assert!(!ids.contains(1) && ids.contains(2) && ids.contains(4));
        drop(ids);
        let ids = BatchIds::open(&path, 1_000, 1_200).expect("reopen");
        assert_eq!(ids.len(), 2);
        assert!(ids.contains(4), "the line after the torn one reads back");
    }

    #[test]
    fn the_file_is_compacted_once_mostly_expired() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("batch-ids.log");
        let mut ids = BatchIds::open(&path, 100, 0).expect("open");
        for i in 0..5_000u128 {
            ids.record(i, i as i64).expect("record");
        }
        ids.expire(5_000).expect("expire");
        let lines = std::fs::read_to_string(&path)
            .expect("read")
            .lines()
            .count();
        assert_eq!(lines, ids.len());
        assert_eq!(ids.len(), 99);
    }

    #[test]
    fn header_values_must_be_hex() {
        assert_eq!(parse("00ff"), Ok(255));
        assert!(parse("").is_err() && parse("xyz").is_err() && parse(&"f".repeat(33)).is_err());
    }
}
