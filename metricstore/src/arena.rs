//! Append-only memory for the head's sealed chunks.
//!
//! Sealed chunks never change and all die together (when the head is cut
//! into a block and rebuilt), so they go into large pages back to back
//! instead of one heap allocation a chunk or a series: no per-chunk
//! allocator overhead, no fragmentation, and the pages are freed whole.
//! Each chunk is written with a small header that links it to the
//! series' previous chunk, so a series holds one reference to its newest
//! chunk and nothing else. The header is varints (about 9 bytes, where
//! fixed-width fields took 28: at four chunks a series over two hours,
//! ~75 bytes a series): the length, the previous chunk's page (as a
//! distance back, plus one; 0 for none) and offset, and the time the chunk
//! spans. Its first timestamp is the chunk's own first field
//! ([`super::packed::first_timestamp`]), so the header does not repeat it.

use keel_series::varint::{put, take};

/// Reference to a chunk in the arena (page and offset).
pub type ChunkRef = u64;

/// No chunk.
pub const NONE: ChunkRef = u64::MAX;

/// Bytes per page; a chunk larger than this gets a page of its own.
const PAGE: usize = 1 << 20;

/// Longest header: four varints (length, page back, offset, span) of at
/// most 10 bytes.
const MAX_HEADER: usize = 40;

/// A sealed chunk's header and encoded bytes.
#[derive(Debug, Clone, Copy)]
pub struct Sealed<'a> {
    /// The series' chunk before this one.
    pub prev: ChunkRef,
    /// Its last sample time minus its first (ms).
    pub span: u64,
    /// The chunk as [`super::packed::encode`] wrote it.
    pub bytes: &'a [u8],
}

/// Pages of sealed chunks.
#[derive(Debug, Default)]
pub struct Arena {
    pages: Vec<Vec<u8>>,
    /// Encoded chunk bytes held (headers not counted).
    chunk_bytes: usize,
    /// Header bytes held.
    header_bytes: usize,
}

impl Arena {
    /// Store a chunk after `prev` (or [`NONE`]); returns its reference.
    pub fn push(&mut self, prev: ChunkRef, span: u64, bytes: &[u8]) -> ChunkRef {
        let mut header = Vec::with_capacity(MAX_HEADER);
        put(&mut header, bytes.len() as u64);
        let page_no = match self.pages.last() {
            Some(p) if p.capacity() - p.len() >= MAX_HEADER + bytes.len() => self.pages.len() - 1,
            _ => self.pages.len(),
        };
        if prev == NONE {
            put(&mut header, 0);
        } else {
            put(&mut header, page_no as u64 - (prev >> 32) + 1);
            put(&mut header, prev & 0xffff_ffff);
        }
        put(&mut header, span);
        if page_no == self.pages.len() {
            self.pages
                .push(Vec::with_capacity(PAGE.max(MAX_HEADER + bytes.len())));
        }
        let Some(page) = self.pages.last_mut() else {
            return NONE;
        };
        let offset = page.len();
        page.extend_from_slice(&header);
        page.extend_from_slice(bytes);
        self.chunk_bytes += bytes.len();
        self.header_bytes += header.len();
        ((page_no as u64) << 32) | offset as u64
    }

    /// The chunk at `r`, if there is one.
    pub fn get(&self, r: ChunkRef) -> Option<Sealed<'_>> {
        if r == NONE {
            return None;
        }
        let page_no = r >> 32;
        let page = self.pages.get(usize::try_from(page_no).ok()?)?;
        let mut at = page.get((r & 0xffff_ffff) as usize..)?;
        let len = usize::try_from(take(&mut at)?).ok()?;
        let prev = match take(&mut at)? {
            0 => NONE,
            back => (page_no.checked_sub(back - 1)? << 32) | take(&mut at)?,
        };
        let span = take(&mut at)?;
        let bytes = at.get(..len)?;
        Some(Sealed { prev, span, bytes })
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

    /// Header bytes held.
    pub fn header_bytes(&self) -> usize {
        self.header_bytes
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
            x = a.push(x, 99 + i as u64, &big);
            y = a.push(y, 0, &[i as u8]);
        }
        assert!(a.pages.len() >= 2, "spilled onto more pages");
        let xs = a.chain(x);
        assert_eq!(xs.len(), 5);
        assert_eq!(
            xs.iter().map(|c| c.span).collect::<Vec<_>>(),
            [99, 100, 101, 102, 103]
        );
        assert!(xs.iter().all(|c| c.bytes.len() == PAGE / 3));
        let ys: Vec<u8> = a.chain(y).iter().map(|c| c.bytes[0]).collect();
        assert_eq!(ys, [0, 1, 2, 3, 4]);
        assert_eq!(a.chunk_bytes(), 5 * (PAGE / 3) + 5);
        assert!(a.get(NONE).is_none());
        assert!(a.get(999 << 32).is_none());
        // Headers are a few varints, not 28 fixed bytes.
        assert!(
            a.header_bytes() <= 10 * 10,
            "{} header bytes",
            a.header_bytes()
        );
        let wide = a.push(NONE, u64::MAX, &[9]);
        let c = a.get(wide).expect("chunk spanning everything");
        assert_eq!((c.span, c.prev, c.bytes), (u64::MAX, NONE, &[9u8][..]));
        let huge = vec![1u8; PAGE * 2];
        let h = a.push(NONE, 1, &huge);
        assert_eq!(a.get(h).map(|c| c.bytes.len()), Some(PAGE * 2));
    }
}
