//! Immutable blocks: a time range of every series, cut from the head.
//!
//! A block is a directory `blocks/<min_t>-<max_t>/` holding `chunks.bin`
//! (chunks back to back, each encoded by [`super::packed`]) and `index.bin` (series labels and, per
//! chunk, its time range, sample count and place in `chunks.bin`, then a
//! CRC-32 of the whole index). It is written under a temporary name and
//! renamed, so a crash leaves either the whole block or none. The index is
//! held in memory; chunk bytes are read from disk when a query needs them.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::packed;
use super::wal::Cursor;
use super::{Matcher, SeriesSamples};
use keel_series::labels::Labels;

/// Samples per chunk in a block.
const BLOCK_CHUNK_SAMPLES: usize = 120;

#[derive(Debug, Clone)]
struct ChunkMeta {
    min_t: i64,
    max_t: i64,
    count: u16,
    offset: u64,
    len: u32,
}

#[derive(Debug)]
struct BlockSeries {
    labels: Labels,
    chunks: Vec<ChunkMeta>,
}

/// An open block.
#[derive(Debug)]
pub struct Block {
    /// Its directory.
    pub dir: PathBuf,
    /// First sample time in it.
    pub min_t: i64,
    /// Last sample time in it.
    pub max_t: i64,
    series: Vec<BlockSeries>,
    postings: crate::head::Postings,
    chunks: File,
    /// Bytes of chunk data.
    pub chunk_bytes: u64,
    /// Samples held.
    pub samples: u64,
}

fn io(path: &Path, e: std::io::Error) -> String {
    format!("{}: {e}", path.display())
}

/// Write a block of `series` (each sorted, all within `[min_t, max_t]`)
/// under `blocks_dir`; returns the open block.
pub fn write(
    blocks_dir: &Path,
    series: &[SeriesSamples],
    min_t: i64,
    max_t: i64,
) -> Result<Block, String> {
    let name = format!("{min_t:013}-{max_t:013}");
    let tmp = blocks_dir.join(format!("{name}.tmp"));
    let dir = blocks_dir.join(&name);
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    let mut chunks = Vec::new();
    let mut index = Vec::new();
    index.extend_from_slice(&(series.len() as u32).to_le_bytes());
    for (labels, samples) in series {
        super::wal::put_labels(&mut index, labels);
        let pieces: Vec<&[(i64, f64)]> = samples.chunks(BLOCK_CHUNK_SAMPLES).collect();
        index.extend_from_slice(&(pieces.len() as u32).to_le_bytes());
        for piece in pieces {
            let bytes = packed::encode(piece);
            let (first, last) = (piece[0].0, piece[piece.len() - 1].0);
            index.extend_from_slice(&first.to_le_bytes());
            index.extend_from_slice(&last.to_le_bytes());
            index.extend_from_slice(&(piece.len() as u16).to_le_bytes());
            index.extend_from_slice(&(chunks.len() as u64).to_le_bytes());
            index.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            chunks.extend_from_slice(&bytes);
        }
    }
    let crc = crc32fast::hash(&index);
    index.extend_from_slice(&crc.to_le_bytes());
    for (file, data) in [("chunks.bin", &chunks), ("index.bin", &index)] {
        let p = tmp.join(file);
        let mut f = File::create(&p).map_err(|e| io(&p, e))?;
        f.write_all(data).map_err(|e| io(&p, e))?;
        f.sync_all().map_err(|e| io(&p, e))?;
    }
    std::fs::rename(&tmp, &dir).map_err(|e| io(&dir, e))?;
    if let Ok(d) = File::open(blocks_dir) {
        let _ = d.sync_all();
    }
    open(&dir)
}

/// Open the block in `dir`, checking its index.
pub fn open(dir: &Path) -> Result<Block, String> {
    let index_path = dir.join("index.bin");
    let raw = std::fs::read(&index_path).map_err(|e| io(&index_path, e))?;
    if raw.len() < 8 {
        return Err(format!("{}: too short", index_path.display()));
    }
    let (body, crc) = raw.split_at(raw.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err(format!("{}: checksum mismatch", index_path.display()));
    }
    let corrupt = || format!("{}: malformed index", index_path.display());
    let mut r = Cursor { b: body, at: 0 };
    let n = r.u32().ok_or_else(corrupt)?;
    let mut series = Vec::with_capacity(r.capacity(n, 8));
    let mut postings = crate::head::Postings::default();
    let (mut min_t, mut max_t, mut samples) = (i64::MAX, i64::MIN, 0u64);
    for i in 0..n {
        let labels = r.labels().ok_or_else(corrupt)?;
        let nc = r.u32().ok_or_else(corrupt)?;
        let mut chunks = Vec::with_capacity(r.capacity(nc, 30));
        for _ in 0..nc {
            let c = ChunkMeta {
                min_t: r.u64().ok_or_else(corrupt)? as i64,
                max_t: r.u64().ok_or_else(corrupt)? as i64,
                count: r.u16().ok_or_else(corrupt)?,
                offset: r.u64().ok_or_else(corrupt)?,
                len: r.u32().ok_or_else(corrupt)?,
            };
            min_t = min_t.min(c.min_t);
            max_t = max_t.max(c.max_t);
            samples += u64::from(c.count);
            chunks.push(c);
        }
        crate::head::add_postings(&mut postings, &labels, i);
        series.push(BlockSeries { labels, chunks });
    }
    let chunks_path = dir.join("chunks.bin");
    let chunks = File::open(&chunks_path).map_err(|e| io(&chunks_path, e))?;
    let chunk_bytes = chunks.metadata().map(|m| m.len()).unwrap_or(0);
    Ok(Block {
        dir: dir.to_path_buf(),
        min_t,
        max_t,
        series,
        postings,
        chunks,
        chunk_bytes,
        samples,
    })
}

impl Block {
    /// Series matching `matchers` with their samples in `[mint, maxt]`.
    pub fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<SeriesSamples> {
        if maxt < self.min_t || mint > self.max_t {
            return Vec::new();
        }
        let mut out = Vec::new();
        for r in self.matching(matchers) {
            let s = &self.series[r as usize];
            let mut samples = Vec::new();
            for c in s
                .chunks
                .iter()
                .filter(|c| c.max_t >= mint && c.min_t <= maxt)
            {
                let mut buf = vec![0u8; c.len as usize];
                if let Err(e) = self.chunks.read_exact_at(&mut buf, c.offset) {
                    tracing::error!(block = %self.dir.display(), error = %e, "reading a chunk failed");
                    continue;
                }
                match packed::decode(&buf) {
                    Some(decoded) if decoded.len() == usize::from(c.count) => samples.extend(
                        decoded
                            .into_iter()
                            .filter(|(t, _)| (mint..=maxt).contains(t)),
                    ),
                    _ => {
                        tracing::error!(block = %self.dir.display(), offset = c.offset, "a chunk does not decode");
                    }
                }
            }
            if !samples.is_empty() {
                out.push((s.labels.clone(), samples));
            }
        }
        out
    }

    /// Refs of the series matching all `matchers`.
    fn matching(&self, matchers: &[Matcher]) -> Vec<u32> {
        crate::head::matching(&self.postings, self.series.len(), matchers, |r| {
            &self.series[r as usize].labels
        })
    }

    /// Call `f` with the labels of each series matching `matchers` that
    /// has a chunk in `[mint, maxt]` (chunk times only: nothing decoded).
    pub fn visit_series(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        mut f: impl FnMut(&Labels),
    ) {
        if maxt < self.min_t || mint > self.max_t {
            return;
        }
        for r in self.matching(matchers) {
            let s = &self.series[r as usize];
            if s.chunks.iter().any(|c| c.max_t >= mint && c.min_t <= maxt) {
                f(&s.labels);
            }
        }
    }

    /// How many series it holds.
    pub(crate) fn series_count(&self) -> usize {
        self.series.len()
    }

    /// Series `r`'s labels.
    pub(crate) fn labels(&self, r: u32) -> &Labels {
        &self.series[r as usize].labels
    }

    /// Its postings: label name → value → series refs.
    pub(crate) fn postings(&self) -> &crate::head::Postings {
        &self.postings
    }

    /// Whether series `r` has a chunk in `[mint, maxt]`.
    pub(crate) fn has_chunk_in(&self, r: u32, mint: i64, maxt: i64) -> bool {
        self.series
            .get(r as usize)
            .is_some_and(|s| s.chunks.iter().any(|c| c.max_t >= mint && c.min_t <= maxt))
    }
}

#[cfg(test)]
mod tests {
    /// A CRC-valid index whose counts claim billions of series or chunks
    /// is malformed, not an allocation of hundreds of gigabytes.
    #[test]
    fn an_index_claiming_huge_counts_is_malformed_without_allocating_them() {
        let one_series_many_chunks = {
            let mut b = 1u32.to_le_bytes().to_vec(); // series
            b.extend_from_slice(&0u32.to_le_bytes()); // no label pairs
            b.extend_from_slice(&u32::MAX.to_le_bytes()); // chunks
            b
        };
        for body in [u32::MAX.to_le_bytes().to_vec(), one_series_many_chunks] {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut raw = body.clone();
            raw.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
            std::fs::write(dir.path().join("index.bin"), raw).expect("write");
            let Err(err) = super::open(dir.path()) else {
                panic!("a malformed index opened");
            };
            assert!(err.contains("malformed index"), "{err}");
        }
    }
}
