//! Append-only memory for the head's sealed chunks.
//!
//! Sealed chunks never change and all die together (when the head is cut
//! into a block and rebuilt), so they go into large pages back to back
//! instead of one heap allocation a chunk or a series: no per-chunk
//! allocator overhead, no fragmentation, and the pages are freed whole.
//! Each chunk is written with a small header that links it to the
//! series' previous chunk, so a series holds one reference to its newest
//! chunk and nothing else.

/// Reference to a chunk in the arena (page and offset).
pub type ChunkRef = u64;

/// No chunk.
pub const NONE: ChunkRef = u64::MAX;

/// Bytes per page; a chunk larger than this gets a page of its own.
const PAGE: usize = 1 << 20;

/// Header: previous ref (8), min_t (8), max_t (8), length (4).
const HEADER: usize = 28;

/// A sealed chunk's header and encoded bytes.
#[derive(Debug, Clone, Copy)]
pub struct Sealed<'a> {
    /// The series' chunk before this one.
    pub prev: ChunkRef,
    /// First sample time.
    pub min_t: i64,
    /// Last sample time.
    pub max_t: i64,
    /// The chunk as [`super::packed::encode`] wrote it.
    pub bytes: &'a [u8],
}

/// Pages of sealed chunks.
#[derive(Debug, Default)]
pub struct Arena {
    pages: Vec<Vec<u8>>,
    /// Encoded chunk bytes held (headers not counted).
    chunk_bytes: usize,
}

fn le<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at + N).and_then(|s| s.try_into().ok())
}

impl Arena {
    /// Store a chunk after `prev` (or [`NONE`]); returns its reference.
    pub fn push(&mut self, prev: ChunkRef, min_t: i64, max_t: i64, bytes: &[u8]) -> ChunkRef {
        let need = HEADER + bytes.len();
        let fits = self
            .pages
            .last()
            .is_some_and(|p| p.capacity() - p.len() >= need);
        if !fits {
            self.pages.push(Vec::with_capacity(PAGE.max(need)));
        }
        let page_no = self.pages.len() - 1;
        let Some(page) = self.pages.last_mut() else {
            return NONE;
        };
        let offset = page.len();
        page.extend_from_slice(&prev.to_le_bytes());
        page.extend_from_slice(&min_t.to_le_bytes());
        page.extend_from_slice(&max_t.to_le_bytes());
        page.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        page.extend_from_slice(bytes);
        self.chunk_bytes += bytes.len();
        ((page_no as u64) << 32) | offset as u64
    }

    /// The chunk at `r`, if there is one.
    pub fn get(&self, r: ChunkRef) -> Option<Sealed<'_>> {
        if r == NONE {
            return None;
        }
        let page = self.pages.get((r >> 32) as usize)?;
        let at = (r & 0xffff_ffff) as usize;
        let prev = u64::from_le_bytes(le(page, at)?);
        let min_t = i64::from_le_bytes(le(page, at + 8)?);
        let max_t = i64::from_le_bytes(le(page, at + 16)?);
        let len = u32::from_le_bytes(le(page, at + 24)?) as usize;
        let bytes = page.get(at + HEADER..at + HEADER + len)?;
        Some(Sealed {
            prev,
            min_t,
            max_t,
            bytes,
        })
    }

    /// A series' chunks from `newest` back, oldest first.
    pub fn chain(&self, newest: ChunkRef) -> Vec<Sealed<'_>> {
        let mut out = Vec::new();
        let mut r = newest;
        while let Some(c) = self.get(r) {
            r = c.prev;
            out.push(c);
        }
        out.reverse();
        out
    }

    /// Encoded chunk bytes held.
    pub fn chunk_bytes(&self) -> usize {
        self.chunk_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_link_each_series_chunks_oldest_first_across_pages() {
        let mut a = Arena::default();
        let (mut x, mut y) = (NONE, NONE);
        let big = vec![7u8; PAGE / 3];
        for i in 0..5i64 {
            x = a.push(x, i * 100, i * 100 + 99, &big);
            y = a.push(y, i, i, &[i as u8]);
        }
        assert!(a.pages.len() >= 2, "spilled onto more pages");
        let xs = a.chain(x);
        assert_eq!(xs.len(), 5);
        assert_eq!(
            xs.iter().map(|c| (c.min_t, c.max_t)).collect::<Vec<_>>(),
            [(0, 99), (100, 199), (200, 299), (300, 399), (400, 499)]
        );
        assert!(xs.iter().all(|c| c.bytes.len() == PAGE / 3));
        let ys: Vec<u8> = a.chain(y).iter().map(|c| c.bytes[0]).collect();
        assert_eq!(ys, [0, 1, 2, 3, 4]);
        assert_eq!(a.chunk_bytes(), 5 * (PAGE / 3) + 5);
        assert!(a.get(NONE).is_none());
        assert!(a.get(999 << 32).is_none());
        let huge = vec![1u8; PAGE * 2];
        let h = a.push(NONE, 0, 1, &huge);
        assert_eq!(a.get(h).map(|c| c.bytes.len()), Some(PAGE * 2));
    }
}
