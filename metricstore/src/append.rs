//! An append-only log file that never leaves a torn record in front of a
//! later one. Every write-ahead log of Keel (metrics, logs, spans, batch
//! ids) appends through it.
//!
//! A write or sync that fails part-way (disk full, an I/O error, the file
//! size limit) may leave part of a record on disk. Appending after it
//! would put the next, acknowledged record behind bytes replay stops at,
//! and lose it. So a failed append rewinds the file to the end of the
//! last whole record before it reports the error, and if even that fails
//! (the disk is gone), the next append rewinds first and fails rather
//! than write after the torn bytes. Space coming back needs nothing more:
//! the next append rewinds and goes on.
//!
//! The file underneath is a [`Sink`], so tests inject faults.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// What an [`AppendFile`] writes to: a file, or a test's faulty one.
pub trait Sink: Write + Send {
    /// Cut or extend to `len` bytes.
    fn truncate_to(&mut self, len: u64) -> std::io::Result<()>;
    /// Move the write position to `at`.
    fn seek_to(&mut self, at: u64) -> std::io::Result<()>;
    /// Flush data to the device.
    fn sync(&mut self) -> std::io::Result<()>;
}

impl Sink for File {
    fn truncate_to(&mut self, len: u64) -> std::io::Result<()> {
        self.set_len(len)
    }
    fn seek_to(&mut self, at: u64) -> std::io::Result<()> {
        self.seek(SeekFrom::Start(at)).map(|_| ())
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.sync_data()
    }
}

/// An append-only file whose length is always the end of its last whole
/// record once an append returns.
pub struct AppendFile<S: Sink = File> {
    sink: S,
    path: PathBuf,
    /// End of the last whole record.
    len: u64,
    /// A failed append may have left bytes past `len`.
    torn: bool,
}

impl<S: Sink> std::fmt::Debug for AppendFile<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppendFile")
            .field("path", &self.path)
            .field("len", &self.len)
            .field("torn", &self.torn)
            .finish()
    }
}

impl AppendFile<File> {
    /// Open (creating) `path` and read all of it; call [`Self::keep`]
    /// with the length of its valid prefix before appending.
    pub fn open(path: &Path) -> std::io::Result<(Self, Vec<u8>)> {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)?;
        let mut image = Vec::new();
        file.read_to_end(&mut image)?;
        let len = image.len() as u64;
        Ok((Self::over(file, path, len), image))
    }
}

impl<S: Sink> AppendFile<S> {
    /// Append to `sink`, whose whole records end at `len`.
    pub fn over(sink: S, path: &Path, len: u64) -> Self {
        Self {
            sink,
            path: path.to_path_buf(),
            len,
            torn: true,
        }
    }

    /// Keep the first `valid` bytes (what replay could read) and cut
    /// the rest: a torn tail found at open, trimmed before appending.
    pub fn keep(&mut self, valid: u64) -> std::io::Result<()> {
        if valid < self.len {
            tracing::warn!(path = %self.path.display(), cut_bytes = self.len - valid, "cut a torn or corrupt tail from a write-ahead log");
        }
        self.len = valid.min(self.len);
        self.torn = true;
        self.rewind()
    }

    /// Empty the file (everything in it is kept elsewhere now).
    pub fn clear(&mut self) -> std::io::Result<()> {
        self.len = 0;
        self.torn = true;
        self.rewind()
    }

    /// Cut what a failed append left, if anything.
    fn rewind(&mut self) -> std::io::Result<()> {
        if self.torn {
            self.sink.truncate_to(self.len)?;
            self.sink.seek_to(self.len)?;
            self.torn = false;
        }
        Ok(())
    }

    /// Append `bytes` (whole records), synced if `sync`. On error nothing
    /// of them stays: the file ends where it did.
    pub fn append(&mut self, bytes: &[u8], sync: bool) -> std::io::Result<()> {
        self.rewind()?;
        self.torn = true;
        let written = self.sink.write_all(bytes).and_then(|()| {
            self.sink.flush()?;
            if sync { self.sink.sync() } else { Ok(()) }
        });
        if let Err(e) = written {
            // Cut the partial record now; if that fails too, the next
            // append tries again before writing anything.
            let _ = self.rewind();
            return Err(e);
        }
        self.torn = false;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of whole records.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Start over on `sink` (a file written aside and renamed over this
    /// one), whose records end at `len`.
    pub fn replace(&mut self, sink: S, len: u64) {
        self.sink = sink;
        self.len = len;
        self.torn = true;
    }
}

impl<S: Sink> Drop for AppendFile<S> {
    fn drop(&mut self) {
        let _ = self.rewind();
    }
}

/// A file that fails once `budget` bytes have been written, part-way
/// through a write, as a full disk does; `budget` can be raised again
/// ("space returns"). For fault tests.
#[derive(Debug)]
pub struct Faulty {
    /// The file.
    pub file: File,
    /// Bytes it may still take.
    pub budget: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Write for Faulty {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use std::sync::atomic::Ordering;
        let left = self.budget.load(Ordering::SeqCst);
        if left == 0 {
            return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
        }
        let n = (buf.len() as u64).min(left) as usize;
        let n = self.file.write(&buf[..n])?;
        self.budget.fetch_sub(n as u64, Ordering::SeqCst);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl Sink for Faulty {
    fn truncate_to(&mut self, len: u64) -> std::io::Result<()> {
        self.file.set_len(len)
    }
    fn seek_to(&mut self, at: u64) -> std::io::Result<()> {
        self.file.seek(SeekFrom::Start(at)).map(|_| ())
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn a_failed_append_leaves_nothing_and_the_next_one_follows_the_last_whole_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .expect("open");
        let budget = Arc::new(AtomicU64::new(10));
        let mut f = AppendFile::over(
            Faulty {
                file,
                budget: budget.clone(),
            },
            &path,
            0,
        );
        f.append(b"aaaa|", false).expect("fits");
        // Disk full part-way: 5 of 8 bytes would land, then ENOSPC.
        let e = f.append(b"bbbbbbb|", false).expect_err("full");
        assert_eq!(e.raw_os_error(), Some(28));
        assert_eq!(std::fs::read(&path).expect("read"), b"aaaa|", "rewound");
        // Still full: refused, nothing written.
        assert!(f.append(b"c|", false).is_err());
        assert_eq!(std::fs::read(&path).expect("read"), b"aaaa|");
        // Space returns: the next append goes on from the whole record.
        budget.store(1_000, std::sync::atomic::Ordering::SeqCst);
        f.append(b"dd|", false).expect("space again");
        assert_eq!(std::fs::read(&path).expect("read"), b"aaaa|dd|");
        assert_eq!(f.len(), 8);
    }

    #[test]
    fn a_torn_tail_found_at_open_is_cut_before_appending() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        std::fs::write(&path, b"whole|tor").expect("write");
        let (mut f, image) = AppendFile::open(&path).expect("open");
        assert_eq!(image, b"whole|tor");
        f.keep(6).expect("keep");
        f.append(b"next|", false).expect("append");
        assert_eq!(std::fs::read(&path).expect("read"), b"whole|next|");
    }
}
