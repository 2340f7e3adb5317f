//! The database's write-ahead log: one JSON record per line.
//!
//! A crash can leave a torn last line; [`Wal::open`] cuts it off and reports
//! how many bytes it dropped. A bad line anywhere else is corruption and an
//! error, never silently skipped.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What a record does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: serde_json::Value,
    },
    /// The record's epoch begins here (written on first start and on promotion).
    Epoch,
}

/// One WAL record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Log sequence number: 1, 2, 3, … with no gaps.
    pub lsn: u64,
    /// Epoch of the primary that wrote it.
    pub epoch: u64,
    /// When the primary wrote it (ms since the Unix epoch).
    pub ts_ms: u64,
    /// What it does.
    #[serde(flatten)]
    pub op: Op,
}

/// Errors opening or writing the WAL.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// I/O failed.
    #[error("{path}: {source}")]
    Io {
        /// The WAL file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A complete record in the middle of the file does not parse.
    #[error("{path}: corrupt record at byte offset {offset}: {reason}")]
    Corrupt {
        /// The WAL file.
        path: String,
        /// Where the bad record starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

/// The log: the file plus every record and where each ends.
#[derive(Debug)]
pub struct Wal {
    file: File,
    path: PathBuf,
    records: Vec<Record>,
    ends: Vec<u64>,
}

impl Wal {
    fn io(&self, source: std::io::Error) -> WalError {
        WalError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// Open (or create) the WAL at `path`, replaying it. Returns the log and
    /// the number of torn bytes cut from its end.
    pub fn open(path: &Path) -> Result<(Self, u64), WalError> {
        let shown = path.display().to_string();
        let io = |source| WalError::Io {
            path: shown.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let mut records = Vec::new();
        let mut ends = Vec::new();
        let mut offset = 0usize;
        while offset < bytes.len() {
            let Some(nl) = bytes[offset..].iter().position(|b| *b == b'\n') else {
                break; // torn tail: no newline yet
            };
            let line = &bytes[offset..offset + nl];
            let parsed = serde_json::from_slice::<Record>(line);
            let is_last = offset + nl + 1 == bytes.len();
            match parsed {
                Ok(r) => {
                    let want = records.last().map(|p: &Record| p.lsn + 1).unwrap_or(1);
                    if r.lsn != want {
                        return Err(WalError::Corrupt {
                            path: shown,
                            offset: offset as u64,
                            reason: format!("lsn {} where {want} was expected", r.lsn),
                        });
                    }
                    records.push(r);
                    offset += nl + 1;
                    ends.push(offset as u64);
                }
                Err(_) if is_last => break, // torn write of the last record
                Err(e) => {
                    return Err(WalError::Corrupt {
                        path: shown,
                        offset: offset as u64,
                        reason: e.to_string(),
                    });
                }
            }
        }
        let torn = (bytes.len() - offset) as u64;
        if torn > 0 {
            file.set_len(offset as u64).map_err(io)?;
        }
        file.seek(SeekFrom::End(0)).map_err(io)?;
        Ok((
            Self {
                file,
                path: path.to_path_buf(),
                records,
                ends,
            },
            torn,
        ))
    }

    /// Append records (their lsns must continue the log) with one write.
    pub fn append(&mut self, recs: &[Record]) -> Result<(), WalError> {
        let mut buf = Vec::new();
        let mut ends = Vec::with_capacity(recs.len());
        let mut end = self.bytes();
        for (next, r) in (self.last_lsn() + 1..).zip(recs) {
            if r.lsn != next {
                return Err(WalError::Corrupt {
                    path: self.path.display().to_string(),
                    offset: end,
                    reason: format!("append of lsn {} where {next} was expected", r.lsn),
                });
            }
            serde_json::to_writer(&mut buf, r).map_err(|e| self.io(e.into()))?;
            buf.push(b'\n');
            end = self.bytes() + buf.len() as u64;
            ends.push(end);
        }
        self.file.write_all(&buf).map_err(|e| self.io(e))?;
        self.records.extend_from_slice(recs);
        self.ends.extend(ends);
        Ok(())
    }

    /// Flush written records to stable storage.
    pub fn sync(&self) -> Result<(), WalError> {
        self.file.sync_data().map_err(|e| self.io(e))
    }

    /// Drop every record after `lsn` (used when a former primary rejoins
    /// and its unreplicated tail diverges from the new primary's history).
    pub fn truncate_after(&mut self, lsn: u64) -> Result<(), WalError> {
        let keep = (lsn as usize).min(self.records.len());
        let len = if keep == 0 { 0 } else { self.ends[keep - 1] };
        self.file.set_len(len).map_err(|e| self.io(e))?;
        self.file.seek(SeekFrom::End(0)).map_err(|e| self.io(e))?;
        self.records.truncate(keep);
        self.ends.truncate(keep);
        Ok(())
    }

    /// Every record, in order.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// Records from `lsn` on (at most `max`).
    pub fn from_lsn(&self, lsn: u64, max: usize) -> &[Record] {
        let start = (lsn.max(1) - 1) as usize;
        if start >= self.records.len() {
            return &[];
        }
        let end = start.saturating_add(max).min(self.records.len());
        &self.records[start..end]
    }

    /// Lsn of the last record (0 when empty).
    pub fn last_lsn(&self) -> u64 {
        self.records.last().map(|r| r.lsn).unwrap_or(0)
    }

    /// Epoch of the last record (0 when empty).
    pub fn last_epoch(&self) -> u64 {
        self.records.last().map(|r| r.epoch).unwrap_or(0)
    }

    /// Size of the log in bytes.
    pub fn bytes(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }

    /// Byte offset at which record `lsn` ends (0 for lsn 0).
    pub fn end_of(&self, lsn: u64) -> u64 {
        if lsn == 0 {
            0
        } else {
            self.ends
                .get((lsn - 1) as usize)
                .copied()
                .unwrap_or_else(|| self.bytes())
        }
    }

    /// First lsn written in an epoch greater than `epoch`, if any.
    pub fn first_lsn_after_epoch(&self, epoch: u64) -> Option<u64> {
        self.records
            .iter()
            .find(|r| r.epoch > epoch && r.op == Op::Epoch)
            .map(|r| r.lsn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(lsn: u64, epoch: u64) -> Record {
        Record {
            lsn,
            epoch,
            ts_ms: 1,
            op: Op::Put {
                key: format!("k{lsn}"),
                value: serde_json::json!(lsn),
            },
        }
    }

    #[test]
    fn torn_tail_is_cut_and_the_rest_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wal");
        {
            let (mut w, torn) = Wal::open(&path).expect("open");
            assert_eq!(torn, 0);
            w.append(&[put(1, 1), put(2, 1)]).expect("append");
        }
        let good = std::fs::metadata(&path).expect("meta").len();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b"{\"lsn\":3,\"epo"))
            .expect("tear");
        let (w, torn) = Wal::open(&path).expect("reopen");
        assert_eq!(torn, 13);
        assert_eq!(w.last_lsn(), 2);
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), good);
    }

    #[test]
    fn corruption_in_the_middle_is_an_error_with_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wal");
        std::fs::write(&path, "{\"lsn\":1,\"epoch\":1,\"ts_ms\":1,\"op\":\"epoch\"}\ngarbage\n{\"lsn\":2,\"epoch\":1,\"ts_ms\":1,\"op\":\"epoch\"}\n").expect("write");
        let err = Wal::open(&path).unwrap_err();
        assert!(err.to_string().contains("byte offset 43"), "{err}");
    }

    #[test]
    fn truncate_after_drops_the_tail_on_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wal");
        let (mut w, _) = Wal::open(&path).expect("open");
        w.append(&[put(1, 1), put(2, 1), put(3, 1)])
            .expect("append");
        let end1 = w.end_of(1);
        w.truncate_after(1).expect("truncate");
        assert_eq!(w.last_lsn(), 1);
        w.append(&[put(2, 2)]).expect("append after truncate");
        drop(w);
        let (w, _) = Wal::open(&path).expect("reopen");
        assert_eq!(w.last_lsn(), 2);
        assert_eq!(w.records()[1].epoch, 2);
        assert!(w.bytes() > end1);
    }
}
