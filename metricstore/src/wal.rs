//! The metric store's write-ahead log.
//!
//! A record is `[u32 length][u32 crc32 of payload][payload]`, little
//! endian; the payload is one accepted batch: series labels and samples.
//! On open, records are replayed up to the first torn or corrupt one,
//! where the file is cut: a crash mid-write loses only the batch that was
//! never acknowledged. A write that fails part-way is rewound before the
//! error is returned ([`crate::append::AppendFile`]), so no acknowledged
//! batch ever sits behind a torn record. No record is longer than its
//! length field can say: a rewrite is split into records of at most
//! [`MAX_RECORD`] bytes (a series' samples are never split).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::append::AppendFile;

use keel_series::labels::Labels;

/// When the log reaches stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fsync {
    /// Before each batch is acknowledged: survives power loss.
    Batch,
    /// Left to the OS (or a periodic flush): survives a crash of the process.
    Never,
}

/// One batch of series and their samples (what replay returns).
pub type Batch = Vec<(Labels, Vec<(i64, f64)>)>;

/// Record kind: new series, `(ref, labels)`, logged once per series.
const REC_SERIES: u8 = 1;
/// Record kind: samples, `(ref, t, v)`, referring to logged series.
const REC_SAMPLES: u8 = 2;

/// Encode a series record.
fn encode_series(series: &[(u32, Labels)]) -> Vec<u8> {
    let mut buf = vec![REC_SERIES];
    buf.extend_from_slice(&(series.len() as u32).to_le_bytes());
    for (r, labels) in series {
        buf.extend_from_slice(&r.to_le_bytes());
        put_labels(&mut buf, labels);
    }
    buf
}

/// Encode a samples record.
fn encode_samples(samples: &[(u32, &[(i64, f64)])]) -> Vec<u8> {
    let mut buf = vec![REC_SAMPLES];
    buf.extend_from_slice(&(samples.len() as u32).to_le_bytes());
    for (r, ss) in samples {
        buf.extend_from_slice(&r.to_le_bytes());
        buf.extend_from_slice(&(ss.len() as u32).to_le_bytes());
        for (t, v) in *ss {
            buf.extend_from_slice(&t.to_le_bytes());
            buf.extend_from_slice(&v.to_bits().to_le_bytes());
        }
    }
    buf
}

/// Apply one record to the replay state; `None` if it is malformed.
fn replay_record(
    payload: &[u8],
    refs: &mut std::collections::HashMap<u32, Labels>,
    out: &mut Vec<Batch>,
) -> Option<()> {
    let (&kind, body) = payload.split_first()?;
    let mut c = Cursor { b: body, at: 0 };
    let n = c.u32()?;
    match kind {
        REC_SERIES => {
            for _ in 0..n {
                let r = c.u32()?;
                refs.insert(r, c.labels()?);
            }
        }
        REC_SAMPLES => {
            let mut batch = Vec::with_capacity(c.capacity(n, 8));
            for _ in 0..n {
                let r = c.u32()?;
                let labels = refs.get(&r)?.clone();
                let ns = c.u32()?;
                let mut samples = Vec::with_capacity(c.capacity(ns, 16));
                for _ in 0..ns {
                    samples.push((c.u64()? as i64, f64::from_bits(c.u64()?)));
                }
                batch.push((labels, samples));
            }
            out.push(batch);
        }
        _ => return None,
    }
    (c.at == body.len()).then_some(())
}

/// Append a record: length, CRC-32 of the payload, payload. A payload
/// longer than the u32 length field can say is refused.
pub fn frame(out: &mut Vec<u8>, payload: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(payload.len()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "a record of {} bytes is longer than a WAL frame can say",
                payload.len()
            ),
        )
    })?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// Largest record a rewrite writes (a single series may exceed it).
pub const MAX_RECORD: usize = 16 << 20;

/// Errors of the WAL.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct WalError {
    path: String,
    source: std::io::Error,
}

impl WalError {
    /// The I/O error underneath (disk full, …).
    pub fn io(&self) -> &std::io::Error {
        &self.source
    }
}

/// The log file.
#[derive(Debug)]
pub struct Wal {
    file: AppendFile,
    path: PathBuf,
    fsync: Fsync,
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

/// Write a label set: pair count, then each name and value.
pub(crate) fn put_labels(buf: &mut Vec<u8>, labels: &Labels) {
    buf.extend_from_slice(&(labels.len() as u32).to_le_bytes());
    for (k, v) in labels.pairs() {
        put_str(buf, k);
        put_str(buf, v);
    }
}

/// Reads little-endian integers and length-prefixed strings; every read
/// is bounds-checked (`None` past the end). Shared with block indexes.
pub(crate) struct Cursor<'a> {
    pub(crate) b: &'a [u8],
    pub(crate) at: usize,
}

impl Cursor<'_> {
    pub(crate) fn take(&mut self, n: usize) -> Option<&[u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.take(2)
            .and_then(|s| s.try_into().ok())
            .map(u16::from_le_bytes)
    }
    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .and_then(|s| s.try_into().ok())
            .map(u32::from_le_bytes)
    }
    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .and_then(|s| s.try_into().ok())
            .map(u64::from_le_bytes)
    }
    /// Capacity for `n` items of at least `min_size` bytes each, never
    /// more than the bytes left could hold: a count read from a corrupt
    /// (CRC-valid) record must not allocate gigabytes before the reads
    /// that would find it short.
    pub(crate) fn capacity(&self, n: u32, min_size: usize) -> usize {
        (n as usize).min(self.b.len().saturating_sub(self.at) / min_size.max(1))
    }
    pub(crate) fn string(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    /// A label set written by [`put_labels`].
    pub(crate) fn labels(&mut self) -> Option<Labels> {
        let n = self.u32()?;
        let mut pairs = Vec::with_capacity(self.capacity(n, 8));
        for _ in 0..n {
            pairs.push((self.string()?, self.string()?));
        }
        Some(Labels::new(pairs))
    }
}

/// Every batch in a log image, and the length of its valid prefix: replay
/// stops at the first torn, corrupt or malformed record.
pub fn decode_log(all: &[u8]) -> (Vec<Batch>, usize) {
    let mut batches = Vec::new();
    let mut refs = std::collections::HashMap::new();
    for (start, payload) in frames(all) {
        if replay_record(payload, &mut refs, &mut batches).is_none() {
            return (batches, start);
        }
    }
    (batches, intact_len(all))
}

/// The intact records at the start of a log image, each with where it
/// starts: reading stops at the first torn or corrupt one.
pub fn frames(all: &[u8]) -> Vec<(usize, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + 8 <= all.len() {
        let len = u32::from_le_bytes([all[at], all[at + 1], all[at + 2], all[at + 3]]) as usize;
        let crc = u32::from_le_bytes([all[at + 4], all[at + 5], all[at + 6], all[at + 7]]);
        let Some(payload) = all.get(at + 8..at + 8 + len) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        out.push((at, payload));
        at += 8 + len;
    }
    out
}

/// Length of the intact prefix of a log image.
pub(crate) fn intact_len(all: &[u8]) -> usize {
    frames(all)
        .last()
        .map_or(0, |(start, p)| start + 8 + p.len())
}

/// A log image holding `batches`: the series get refs 0, 1, 2, … in
/// order, written as pairs of records (the series, then their samples) of
/// at most about `max_record` bytes each.
pub fn encode_log(batches: &[Batch], max_record: usize) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let all: Vec<&(Labels, Vec<(i64, f64)>)> = batches.iter().flatten().collect();
    let mut from = 0;
    while from < all.len() {
        // Series from `from` while their labels and samples fit (at
        // least one).
        let cost = |(l, s): &(Labels, Vec<(i64, f64)>)| {
            8 + s.len() * 16 + l.pairs().map(|(k, v)| 8 + k.len() + v.len()).sum::<usize>()
        };
        let mut to = from;
        let mut size = 0;
        while to < all.len() && (to == from || size + cost(all[to]) <= max_record) {
            size += cost(all[to]);
            to += 1;
        }
        let series: Vec<(u32, Labels)> = (from..to).map(|i| (i as u32, all[i].0.clone())).collect();
        frame(&mut out, &encode_series(&series))?;
        let samples: Vec<(u32, &[(i64, f64)])> = (from..to)
            .map(|i| (i as u32, all[i].1.as_slice()))
            .collect();
        frame(&mut out, &encode_samples(&samples))?;
        from = to;
    }
    Ok(out)
}

impl Wal {
    /// Open the log in `dir`, returning it and every batch it holds.
    pub fn open(dir: &Path, fsync: Fsync) -> Result<(Self, Vec<Batch>), WalError> {
        let path = dir.join("wal.log");
        let err = |source| WalError {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        let (mut file, all) = AppendFile::open(&path).map_err(err)?;
        let (batches, at) = decode_log(&all);
        file.keep(at as u64).map_err(err)?;
        Ok((
            Self {
                file,
                path: path.clone(),
                fsync,
            },
            batches,
        ))
    }

    /// Append the series records of series not logged yet and one samples
    /// record; returns once written (and synced, per policy).
    pub fn append(
        &mut self,
        new_series: &[(u32, Labels)],
        samples: &[(u32, &[(i64, f64)])],
    ) -> Result<(), WalError> {
        let err = |source| WalError {
            path: self.path.display().to_string(),
            source,
        };
        let mut rec = Vec::new();
        if !new_series.is_empty() {
            frame(&mut rec, &encode_series(new_series)).map_err(err)?;
        }
        frame(&mut rec, &encode_samples(samples)).map_err(err)?;
        self.file
            .append(&rec, self.fsync == Fsync::Batch)
            .map_err(err)
    }

    /// Size of the log.
    pub fn bytes(&self) -> u64 {
        self.file.len()
    }
}

impl Wal {
    /// Replace the log's content with `batches` (what the head still holds
    /// after a block was cut): written aside, synced, then renamed over.
    pub fn rewrite(&mut self, batches: &[Batch]) -> Result<(), WalError> {
        let dir = self
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let tmp = dir.join("wal.log.tmp");
        let err = |source| WalError {
            path: tmp.display().to_string(),
            source,
        };
        // The head rebuilt from the same batches in the same order assigns
        // the same refs as the log.
        let out = encode_log(batches, MAX_RECORD).map_err(err)?;
        let mut f = File::create(&tmp).map_err(err)?;
        f.write_all(&out).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &self.path).map_err(err)?;
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(err)?;
        self.file.replace(file, out.len() as u64);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CRC-valid record whose counts claim billions of entries is
    /// malformed, not an allocation of gigabytes (found by keel-fuzz:
    /// 52 GB requested and the process aborted).
    #[test]
    fn a_record_claiming_huge_counts_is_cut_without_allocating_them() {
        let mut series = vec![REC_SERIES];
        series.extend_from_slice(&1u32.to_le_bytes());
        series.extend_from_slice(&0u32.to_le_bytes());
        series.extend_from_slice(&u32::MAX.to_le_bytes()); // label pairs
        let mut samples = vec![REC_SAMPLES];
        samples.extend_from_slice(&u32::MAX.to_le_bytes()); // series
        samples.extend_from_slice(&0u32.to_le_bytes());
        samples.extend_from_slice(&u32::MAX.to_le_bytes()); // samples
        // Ref 0 defined first, so the samples record gets to read its
        // sample count.
        let mut defined = vec![REC_SERIES];
        defined.extend_from_slice(&1u32.to_le_bytes());
        defined.extend_from_slice(&0u32.to_le_bytes());
        defined.extend_from_slice(&0u32.to_le_bytes()); // no label pairs
        for records in [vec![series], vec![defined, samples]] {
            let mut image = Vec::new();
            for payload in &records {
                frame(&mut image, payload).expect("frame");
            }
            let (batches, valid) = decode_log(&image);
            assert!(batches.is_empty());
            let good: usize = records[..records.len() - 1]
                .iter()
                .map(|r| 8 + r.len())
                .sum();
            assert_eq!(valid, good, "the malformed record is where replay stops");
        }
    }

    #[test]
    fn batches_replay_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = Labels::new(vec![("__name__", "up"), ("job", "x")]);
        {
            let (mut w, old) = Wal::open(dir.path(), Fsync::Never).expect("open");
            assert!(old.is_empty());
            w.append(&[(0, l.clone())], &[(0, &[(1, 1.0), (2, f64::NAN)][..])])
                .expect("append");
            w.append(&[], &[(0, &[(3, 3.0)][..])]).expect("append");
        }
        let path = dir.path().join("wal.log");
        let full = std::fs::metadata(&path).expect("meta").len();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(&[9, 0, 0, 0, 1, 2]))
            .expect("tear");
        let (_, batches) = Wal::open(dir.path(), Fsync::Never).expect("reopen");
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0][0].0, l);
        assert!(batches[0][0].1[1].1.is_nan());
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), full);
    }

    #[test]
    fn a_rewrite_is_split_into_records_that_replay_to_the_same_batches() {
        let series: Batch = (0..50)
            .map(|i| {
                let name = format!("s{i}");
                let l = Labels::new(vec![("__name__", name.as_str())]);
                (l, (0..100).map(|t| (t, t as f64)).collect())
            })
            .collect();
        // ~1.6 KB a series: records of at most 4 KB hold two series each.
        let image = encode_log(std::slice::from_ref(&series), 4_096).expect("encodes");
        let records = frames(&image);
        assert_eq!(
            records.len(),
            50,
            "25 series records and 25 samples records"
        );
        assert!(records.iter().all(|(_, p)| p.len() <= 4_096));
        let (batches, valid) = decode_log(&image);
        assert_eq!(valid, image.len());
        let back: Batch = batches.into_iter().flatten().collect();
        assert_eq!(back, series);
    }
}
