//! Tailing log files: every line exactly once across appends, rotation,
//! truncation and restarts.
//!
//! A file is known by its device and inode, not its name, so a rotated
//! file (renamed, a new one created in its place) is read to its end
//! through the descriptor already open while the new one is read from
//! its start, and a file renamed into another matched name is not read
//! twice. A file that shrinks was truncated and is read again from its
//! start. How far each file has been read travels in the disk buffer
//! with the very batch that holds its lines ([`crate::buffer::Cursor`]),
//! so after a crash the agent resumes exactly after the last buffered
//! line: nothing lost, nothing repeated. A file rotated while the agent
//! was stopped is found again by its inode in its old directory and
//! finished.
//!
//! A line is taken only once it ends in a newline (a writer mid-line is
//! waited for), except the last line of a rotated-away file. With
//! `multiline_start`, a line that does not match the pattern belongs to
//! the record before it (stack traces); the last record is emitted once
//! the file has been quiet for two polls.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use opentelemetry_proto::tonic::logs::v1::LogRecord;
use regex::Regex;

use crate::buffer::Cursor;
use crate::config::LogSource;

/// Most bytes read from one file in one poll.
const READ_CHUNK: u64 = 4 << 20;
/// Most records in one batch.
const BATCH_RECORDS: usize = 1000;

struct Tracked {
    path: PathBuf,
    dev: u64,
    ino: u64,
    file: File,
    /// Bytes whose lines are buffered.
    offset: u64,
    /// Bytes read past `offset`, not yet taken.
    pending: Vec<u8>,
    /// Polls in a row that found nothing new.
    idle: u32,
    /// No matched path names it any more (rotated away or deleted).
    gone: bool,
}

/// One batch of a file's records and where the file stands after them.
pub struct FileBatch {
    /// The file it came from.
    pub path: PathBuf,
    /// The records' texts, in file order.
    pub records: Vec<String>,
    /// Where the file stands once they are buffered.
    pub cursor: Cursor,
}

/// The tailer of one configured source.
pub struct Tailer {
    source: LogSource,
    start: Option<Regex>,
    files: Vec<Tracked>,
    /// Positions from the buffer, by (device, inode), with the path seen.
    known: HashMap<(u64, u64), (u64, PathBuf)>,
    first_poll: bool,
}

/// The cursor key of a file: device, inode and the path it had.
fn key(dev: u64, ino: u64, path: &Path) -> String {
    format!("{dev}:{ino}:{}", path.display())
}

fn parse_key(k: &str) -> Option<(u64, u64, PathBuf)> {
    let mut parts = k.splitn(3, ':');
    let dev = parts.next()?.parse().ok()?;
    let ino = parts.next()?.parse().ok()?;
    Some((dev, ino, PathBuf::from(parts.next()?)))
}

impl Tailer {
    /// A tailer for `source`, resuming at the buffered `cursors` (newest
    /// last: a file renamed has a cursor under each name, and the later
    /// one wins). The pattern was checked by config validation.
    pub fn new(source: LogSource, cursors: &[Cursor]) -> Self {
        let start = source
            .multiline_start
            .as_deref()
            .and_then(|p| Regex::new(p).ok());
        let known = cursors
            .iter()
            .filter_map(|c| {
                let (dev, ino, path) = parse_key(&c.key)?;
                Some(((dev, ino), (c.offset, path)))
            })
            .collect();
        Self {
            source,
            start,
            files: Vec::new(),
            known,
            first_poll: true,
        }
    }

    fn track(&mut self, path: PathBuf, dev: u64, ino: u64, size: u64, gone: bool) {
        let Ok(file) = File::open(&path) else {
            return;
        };
        let offset = match self.known.get(&(dev, ino)) {
            // A shorter file under a known inode was truncated (or the
            // inode reused): from its start.
            Some((off, _)) if *off <= size => *off,
            _ => 0,
        };
        self.files.push(Tracked {
            path,
            dev,
            ino,
            file,
            offset,
            pending: Vec::new(),
            idle: 0,
            gone,
        });
    }

    /// Look for new files, read what was appended, and return the records
    /// that are complete, in batches with their cursors.
    pub fn poll(&mut self) -> Vec<FileBatch> {
        let mut seen = Vec::new();
        if let Ok(paths) = glob::glob(&self.source.path) {
            for path in paths.flatten() {
                let Ok(m) = std::fs::metadata(&path) else {
                    continue;
                };
                if !m.is_file() {
                    continue;
                }
                let (dev, ino) = (m.dev(), m.ino());
                seen.push((dev, ino));
                match self.files.iter_mut().find(|t| t.dev == dev && t.ino == ino) {
                    Some(t) => {
                        t.path = path;
                        t.gone = false;
                    }
                    None => self.track(path, dev, ino, m.len(), false),
                }
            }
        }
        if self.first_poll {
            self.first_poll = false;
            self.find_rotated_while_stopped(&seen);
        }
        for t in &mut self.files {
            if !seen.contains(&(t.dev, t.ino)) {
                t.gone = true;
            }
        }
        let mut out = Vec::new();
        for t in &mut self.files {
            read(t, self.start.as_ref(), &mut out);
        }
        // A file rotated away (or deleted) and read to its end is done.
        // Its size is read again here, not taken from before the read: a
        // writer may still be appending to the rotated file.
        self.files.retain(|t| {
            let size = t.file.metadata().map(|m| m.len()).unwrap_or(0);
            !(t.gone && t.pending.is_empty() && t.offset >= size)
        });
        out
    }

    /// Files the buffer has positions for that no longer match, looked for
    /// by inode in the directory they were in: rotated while the agent
    /// was stopped, so their last lines are still to read.
    fn find_rotated_while_stopped(&mut self, seen: &[(u64, u64)]) {
        let missing: Vec<((u64, u64), PathBuf)> = self
            .known
            .iter()
            .filter(|(id, _)| !seen.contains(id))
            .map(|(id, (_, p))| (*id, p.clone()))
            .collect();
        for ((dev, ino), path) in missing {
            let Some(dir) = path.parent() else { continue };
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for e in entries.flatten() {
                let Ok(m) = e.metadata() else { continue };
                if m.is_file() && m.dev() == dev && m.ino() == ino {
                    self.track(e.path(), dev, ino, m.len(), true);
                    break;
                }
            }
        }
    }
}

/// Read what `t` gained and take its complete records into `out`.
fn read(t: &mut Tracked, start: Option<&Regex>, out: &mut Vec<FileBatch>) {
    let size = t.file.metadata().map(|m| m.len()).unwrap_or(0);
    let read_to = t.offset + t.pending.len() as u64;
    if size < read_to {
        tracing::warn!(file = %t.path.display(), size, was = read_to, "log file truncated: reading it from its start");
        t.offset = 0;
        t.pending.clear();
    }
    let from = t.offset + t.pending.len() as u64;
    let want = size.saturating_sub(from).min(READ_CHUNK);
    if want > 0 {
        // Read straight onto the end of what is pending (no second copy).
        let had = t.pending.len();
        t.pending.resize(had + want as usize, 0);
        match t.file.read_at(&mut t.pending[had..], from) {
            Ok(n) => {
                t.pending.truncate(had + n);
                t.idle = 0;
            }
            Err(e) => {
                t.pending.truncate(had);
                tracing::warn!(file = %t.path.display(), error = %e, "cannot read a log file");
                return;
            }
        }
    } else {
        t.idle = t.idle.saturating_add(1);
    }
    let drained = t.gone && t.offset + t.pending.len() as u64 >= size;
    // Complete lines: (start, end including the newline).
    let mut lines: Vec<(usize, usize)> = Vec::new();
    let mut at = 0;
    for nl in memchr::memchr_iter(b'\n', &t.pending) {
        lines.push((at, nl + 1));
        at = nl + 1;
    }
    if drained && at < t.pending.len() {
        lines.push((at, t.pending.len()));
    }
    // Records: (start, end) spans over whole lines.
    let mut records: Vec<(usize, usize)> = Vec::new();
    match start {
        None => records = lines.clone(),
        Some(re) => {
            for &(s, e) in &lines {
                let text = String::from_utf8_lossy(&t.pending[s..e]);
                let begins = re.is_match(text.trim_end_matches(['\n', '\r']));
                match records.last_mut() {
                    Some(last) if !begins => last.1 = e,
                    _ => records.push((s, e)),
                }
            }
            // The last record may still grow, unless the file is quiet.
            if !(drained || t.idle >= 2) {
                records.pop();
            }
        }
    }
    let Some(&(_, taken)) = records.last() else {
        return;
    };
    // UTF-8 checked once for the whole read (lines split at newlines, so
    // every span is a char boundary); only an invalid read goes line by line.
    let valid = std::str::from_utf8(&t.pending[..taken]).ok();
    for chunk in records.chunks(BATCH_RECORDS) {
        let end = chunk.last().map_or(0, |(_, e)| *e);
        let records: Vec<String> = chunk
            .iter()
            .filter_map(|&(s, e)| {
                let text = match valid {
                    Some(all) => std::borrow::Cow::Borrowed(&all[s..e]),
                    None => String::from_utf8_lossy(&t.pending[s..e]),
                };
                let text = text.trim_end_matches(['\n', '\r']);
                (!text.trim().is_empty()).then(|| text.to_owned())
            })
            .collect();
        out.push(FileBatch {
            path: t.path.clone(),
            records,
            cursor: Cursor {
                key: key(t.dev, t.ino, &t.path),
                inode: t.ino,
                offset: t.offset + end as u64,
            },
        });
    }
    t.pending.drain(..taken);
    t.offset += taken as u64;
}

/// The OTLP records of a batch's texts, read at `now_ns`.
pub fn to_records(texts: &[String], now_ns: u64) -> Vec<LogRecord> {
    texts
        .iter()
        .map(|t| crate::logline::record(t, now_ns, t.trim_start().starts_with('{')))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn source(dir: &Path, multiline: Option<&str>) -> LogSource {
        LogSource {
            path: dir.join("*.log").display().to_string(),
            service: String::new(),
            multiline_start: multiline.map(str::to_owned),
            metrics: Vec::new(),
        }
    }

    fn append(path: &Path, text: &str) {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .expect("append");
    }

    /// Poll and remember cursors as the buffer does (newest last).
    fn poll(t: &mut Tailer, cursors: &mut Vec<Cursor>) -> Vec<String> {
        let mut got = Vec::new();
        for b in t.poll() {
            got.extend(b.records);
            cursors.retain(|c| c.key != b.cursor.key);
            cursors.push(b.cursor);
        }
        got
    }

    #[test]
    fn appends_rotation_truncation_and_restarts_give_every_line_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("app.log");
        let mut cursors = Vec::new();
        let mut t = Tailer::new(source(dir.path(), None), &cursors);
        append(&log, "one\ntwo\nhalf");
        assert_eq!(poll(&mut t, &mut cursors), ["one", "two"]);
        append(&log, " done\n");
        assert_eq!(poll(&mut t, &mut cursors), ["half done"]);
        // Restart: resumes after the last buffered line.
        append(&log, "three\n");
        let mut t = Tailer::new(source(dir.path(), None), &cursors);
        assert_eq!(poll(&mut t, &mut cursors), ["three"]);
        // Rotation: the old file gets a last line after the rename, the
        // new one starts; both read once (the rotated name matches too).
        std::fs::rename(&log, dir.path().join("app.1.log")).expect("rotate");
        append(&dir.path().join("app.1.log"), "four\n");
        append(&log, "five\n");
        let mut got = poll(&mut t, &mut cursors);
        got.sort();
        assert_eq!(got, ["five", "four"]);
        // Rotated to a name that does not match, while stopped.
        append(&log, "six\n");
        std::fs::rename(&log, dir.path().join("app.log.2")).expect("rotate");
        append(&log, "seven\n");
        let mut t = Tailer::new(source(dir.path(), None), &cursors);
        let mut got = poll(&mut t, &mut cursors);
        got.sort();
        assert_eq!(got, ["seven", "six"]);
        // Truncation: read again from the start.
        std::fs::write(&log, "").expect("truncate");
        assert!(poll(&mut t, &mut cursors).is_empty());
        append(&log, "eight\n");
        assert_eq!(poll(&mut t, &mut cursors), ["eight"]);
        assert!(poll(&mut t, &mut cursors).is_empty());
    }

    #[test]
    fn stack_traces_join_the_line_that_started_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("app.log");
        let mut cursors = Vec::new();
        let mut t = Tailer::new(source(dir.path(), Some(r"^\d{4}-")), &cursors);
        append(
            &log,
            "2026-12-01 ERROR boom\njava.lang.X: y\n\tat A.b(A.java:1)\n2026-12-01 INFO ok\n",
        );
        assert_eq!(
            poll(&mut t, &mut cursors),
            ["2026-12-01 ERROR boom\njava.lang.X: y\n\tat A.b(A.java:1)"]
        );
        // The last record is taken once the file is quiet.
        assert!(poll(&mut t, &mut cursors).is_empty());
        assert_eq!(poll(&mut t, &mut cursors), ["2026-12-01 INFO ok"]);
    }
}
