//! A range filter on an `i64` column (the records' `timestamp` and
//! `order`) that reads only the blocks of a segment its range can touch.
//!
//! tantivy's own range query checks the column value of every document
//! of every segment whose min/max overlaps the range: a five-minute
//! window in a merged segment that spans hours scans all its documents.
//! Records arrive nearly in time order, so a segment's documents are
//! nearly sorted by time; [`BlockIndexes`] keeps, per immutable segment,
//! the min and max of every [`BLOCK`] documents (built once, on the first
//! query that needs it), and the filter skips the blocks outside the
//! range, takes the blocks inside it whole, and checks values only in
//! the blocks that straddle an end. A segment entirely inside the range
//! matches all its documents (which a boolean query then drops from its
//! intersection), and one entirely outside matches none.

use std::collections::HashMap;
use std::ops::{Range, RangeInclusive};
use std::sync::{Arc, Mutex};

use tantivy::columnar::{Cardinality, Column};
use tantivy::index::SegmentId;
use tantivy::query::{
    AllScorer, ConstScorer, EmptyScorer, EnableScoring, Explanation, Query, Scorer, Weight,
};
use tantivy::{DocId, DocSet, Score, SeekDangerResult, SegmentReader, TERMINATED, TantivyError};

/// Documents a block of the index covers.
pub const BLOCK: u32 = 4096;

/// Most segments whose block indexes are kept (past it they are all
/// dropped and rebuilt as queries need them; segments merged away leave
/// theirs behind until then).
const MAX_SEGMENTS: usize = 4096;

/// The min and max of a column over each block of a segment.
type Blocks = Arc<[(i64, i64)]>;

/// Block indexes of immutable segments, by segment and column.
#[derive(Debug)]
pub struct BlockIndexes {
    block: u32,
    map: Mutex<HashMap<(SegmentId, String), Blocks>>,
}

impl Default for BlockIndexes {
    fn default() -> Self {
        Self::with_block(BLOCK)
    }
}

impl BlockIndexes {
    /// Indexes of `block` documents a block (tests use small ones).
    pub fn with_block(block: u32) -> Self {
        Self {
            block: block.max(1),
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The block index of `column` (named `field`) in `reader`'s segment.
    fn get(&self, reader: &SegmentReader, field: &str, column: &Column<i64>) -> Blocks {
        let key = (reader.segment_id(), field.to_owned());
        if let Some(b) = self.lock().get(&key) {
            return b.clone();
        }
        let built = build(column, reader.max_doc(), self.block);
        let mut map = self.lock();
        if map.len() >= MAX_SEGMENTS {
            map.clear();
        }
        map.insert(key, built.clone());
        built
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(SegmentId, String), Blocks>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Min and max of each `block` documents of `column` (an empty block,
/// or one whose documents lack the value, gets `(MAX, MIN)`: no range
/// overlaps it).
fn build(column: &Column<i64>, max_doc: DocId, block: u32) -> Blocks {
    let mut out = Vec::with_capacity(max_doc.div_ceil(block) as usize);
    let mut docs = Vec::with_capacity(block as usize);
    let mut vals = vec![None; block as usize];
    let mut start = 0;
    while start < max_doc {
        let end = start.saturating_add(block).min(max_doc);
        docs.clear();
        docs.extend(start..end);
        let vals = &mut vals[..docs.len()];
        column.first_vals(&docs, vals);
        let (lo, hi) = vals
            .iter()
            .flatten()
            .fold((i64::MAX, i64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        out.push((lo, hi));
        start = end;
    }
    out.into()
}

/// Documents whose `field` is in `[lo, hi]`.
#[derive(Debug, Clone)]
pub struct TimeRangeQuery {
    field: String,
    range: RangeInclusive<i64>,
    blocks: Arc<BlockIndexes>,
}

impl TimeRangeQuery {
    /// `lo ≤ field ≤ hi`, with the block indexes in `blocks`.
    pub fn new(field: &str, lo: i64, hi: i64, blocks: Arc<BlockIndexes>) -> Self {
        Self {
            field: field.to_owned(),
            range: lo..=hi,
            blocks,
        }
    }
}

impl Query for TimeRangeQuery {
    fn weight(&self, _: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(self.clone()))
    }
}

impl Weight for TimeRangeQuery {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        let column = reader.fast_fields().i64(&self.field)?;
        let (lo, hi) = (*self.range.start(), *self.range.end());
        if lo > hi || column.num_docs() == 0 || hi < column.min_value() || lo > column.max_value() {
            return Ok(Box::new(EmptyScorer));
        }
        let full = column.get_cardinality() == Cardinality::Full;
        if full && lo <= column.min_value() && column.max_value() <= hi {
            return Ok(Box::new(AllScorer::new(reader.max_doc())));
        }
        let blocks = self.blocks.get(reader, &self.field, &column);
        let docs = BlockRangeDocSet::new(self, column, blocks, reader.max_doc(), full);
        Ok(Box::new(ConstScorer::new(docs, boost)))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        let mut scorer = self.scorer(reader, 1.0)?;
        if scorer.seek(doc) != doc {
            return Err(TantivyError::InvalidArgument(format!(
                "document #{doc} is not in {}:[{} TO {}]",
                self.field,
                self.range.start(),
                self.range.end()
            )));
        }
        Ok(Explanation::new("TimeRangeQuery", scorer.score()))
    }
}

/// The documents of one segment in the range, block by block.
struct BlockRangeDocSet {
    column: Column<i64>,
    range: RangeInclusive<i64>,
    blocks: Blocks,
    block: u32,
    max_doc: DocId,
    /// Every document has exactly one value (a block inside the range
    /// can then be taken whole).
    full: bool,
    /// Where the set stands: a run of consecutive matches (a block inside
    /// the range), or the listed matches of part of a block.
    at: At,
    size_hint: u32,
}

enum At {
    /// Every document of `start..end` matches; the current one is `start`.
    Run(Range<DocId>),
    /// The matches among the documents before `end`, the current one at `pos`.
    Listed {
        docs: Vec<DocId>,
        pos: usize,
        end: DocId,
    },
    Done,
}

impl BlockRangeDocSet {
    /// The matches of `q` in a segment of `max_doc` documents whose
    /// column is `column` and block index `blocks`.
    fn new(
        q: &TimeRangeQuery,
        column: Column<i64>,
        blocks: Blocks,
        max_doc: DocId,
        full: bool,
    ) -> Self {
        let (range, block) = (q.range.clone(), q.blocks.block);
        let touched = blocks
            .iter()
            .filter(|(lo, hi)| lo <= range.end() && hi >= range.start())
            .count() as u64;
        let mut s = Self {
            column,
            range,
            blocks,
            block,
            max_doc,
            full,
            at: At::Done,
            size_hint: (touched * u64::from(block)).min(u64::from(max_doc)) as u32,
        };
        s.load_from(0);
        s
    }

    /// Whether block `b` holds no match (`Some(false)`), only matches
    /// (`Some(true)`), or must be read to tell (`None`).
    fn verdict(&self, b: usize) -> Option<bool> {
        let (min, max) = self.blocks[b];
        if max < *self.range.start() || min > *self.range.end() {
            Some(false)
        } else if self.full && self.range.contains(&min) && self.range.contains(&max) {
            Some(true)
        } else {
            None
        }
    }

    /// One past the last document of block `b`.
    fn block_end(&self, b: usize) -> DocId {
        (b as u32 + 1).saturating_mul(self.block).min(self.max_doc)
    }

    /// The listed matches' buffer, emptied, for reuse (the set is left
    /// done until the caller stands it somewhere).
    fn take_buf(&mut self) -> Vec<DocId> {
        match std::mem::replace(&mut self.at, At::Done) {
            At::Listed { mut docs, .. } => {
                docs.clear();
                docs
            }
            _ => Vec::new(),
        }
    }

    /// Stand at the first match at or after `doc` (none: done).
    fn load_from(&mut self, mut doc: DocId) {
        let mut buf = self.take_buf();
        while doc < self.max_doc {
            let b = (doc / self.block) as usize;
            let end = self.block_end(b);
            match self.verdict(b) {
                Some(false) => {}
                Some(true) => {
                    self.at = At::Run(doc..end);
                    return;
                }
                None => {
                    self.column
                        .get_docids_for_value_range(self.range.clone(), doc..end, &mut buf);
                    if !buf.is_empty() {
                        self.at = At::Listed {
                            docs: buf,
                            pos: 0,
                            end,
                        };
                        return;
                    }
                }
            }
            doc = end;
        }
    }
}

impl DocSet for BlockRangeDocSet {
    fn advance(&mut self) -> DocId {
        let next = match &mut self.at {
            At::Run(r) => {
                r.start += 1;
                if r.start < r.end {
                    return r.start;
                }
                r.end
            }
            At::Listed { docs, pos, end } => {
                *pos += 1;
                if let Some(&d) = docs.get(*pos) {
                    return d;
                }
                *end
            }
            At::Done => return TERMINATED,
        };
        self.load_from(next);
        self.doc()
    }

    fn seek(&mut self, target: DocId) -> DocId {
        if self.doc() >= target {
            return self.doc();
        }
        match &mut self.at {
            At::Run(r) if target < r.end => {
                r.start = target;
                return target;
            }
            At::Listed { docs, pos, .. } if docs.last().is_some_and(|&l| l >= target) => {
                *pos += docs[*pos..].partition_point(|&d| d < target);
                return docs[*pos];
            }
            _ => {}
        }
        self.load_from(target);
        self.doc()
    }

    /// Whether `target` matches, by its block's verdict or one value
    /// (as tantivy's own range does), without reading a block.
    fn seek_danger(&mut self, target: DocId) -> SeekDangerResult {
        if target >= self.max_doc {
            return SeekDangerResult::SeekLowerBound(TERMINATED);
        }
        let b = (target / self.block) as usize;
        match self.verdict(b) {
            Some(true) => {
                self.at = At::Run(target..self.block_end(b));
                SeekDangerResult::Found
            }
            // Past a block with no match: to the next that may have one.
            Some(false) => SeekDangerResult::SeekLowerBound(
                (b + 1..self.blocks.len())
                    .find(|&c| self.verdict(c) != Some(false))
                    .map_or(TERMINATED, |c| c as u32 * self.block),
            ),
            None if self
                .column
                .first(target)
                .is_some_and(|v| self.range.contains(&v)) =>
            {
                let mut docs = self.take_buf();
                docs.push(target);
                self.at = At::Listed {
                    docs,
                    pos: 0,
                    end: target + 1,
                };
                SeekDangerResult::Found
            }
            None => SeekDangerResult::SeekLowerBound(target + 1),
        }
    }

    fn doc(&self) -> DocId {
        match &self.at {
            At::Run(r) => r.start,
            At::Listed { docs, pos, .. } => docs.get(*pos).copied().unwrap_or(TERMINATED),
            At::Done => TERMINATED,
        }
    }

    fn size_hint(&self) -> u32 {
        self.size_hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use tantivy::collector::DocSetCollector;
    use tantivy::query::{BooleanQuery, Occur, RangeQuery, TermQuery};
    use tantivy::schema::{FAST, INDEXED, IndexRecordOption, STRING, Schema};
    use tantivy::{DocAddress, Index, Term, doc};

    /// Both queries find the same documents, alone and intersected with a
    /// term (which drives by seeking), over segments whose timestamps are
    /// mostly rising with some out of order, one segment entirely old,
    /// and documents without a timestamp.
    #[test]
    fn finds_exactly_what_a_range_query_finds() {
        let mut sb = Schema::builder();
        let ts = sb.add_i64_field("ts", FAST | INDEXED);
        let tag = sb.add_text_field("tag", STRING);
        let index = Index::create_in_ram(sb.build());
        let mut w = index
            .writer_with_num_threads(1, 15_000_000)
            .expect("writer");
        let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
        let mut t = 0i64;
        for seg in 0..5 {
            for _ in 0..rng.random_range(1..700) {
                t += rng.random_range(0..20);
                let v = if rng.random_bool(0.05) {
                    t - rng.random_range(0..2000)
                } else {
                    t
                };
                let tg = match rng.random_range(0..100) {
                    0..2 => "c",
                    2..32 => "a",
                    _ => "b",
                };
                if seg == 3 && rng.random_bool(0.1) {
                    w.add_document(doc!(tag => tg)).expect("add");
                } else {
                    w.add_document(doc!(ts => v, tag => tg)).expect("add");
                }
            }
            w.commit().expect("commit");
        }
        for _ in 0..50 {
            w.add_document(doc!(ts => -5_000i64, tag => "a"))
                .expect("add");
        }
        w.commit().expect("commit");
        let searcher = index.reader().expect("reader").searcher();
        assert!(searcher.segment_readers().len() > 1);
        let blocks = Arc::new(BlockIndexes::with_block(16));
        let found = |q: &dyn Query| -> Vec<DocAddress> {
            let mut v: Vec<_> = searcher
                .search(q, &DocSetCollector)
                .expect("search")
                .into_iter()
                .collect();
            v.sort();
            v
        };
        for i in 0..300 {
            let (a, b) = (
                rng.random_range(-6_000..t + 100),
                rng.random_range(-6_000..t + 100),
            );
            let (lo, hi) = match i {
                0 => (i64::MIN, i64::MAX),
                1 => (t + 1, t + 5),
                2 => (5, 1),
                _ => (a.min(b), a.max(b)),
            };
            let ours = TimeRangeQuery::new("ts", lo, hi, blocks.clone());
            let theirs = RangeQuery::new(
                std::ops::Bound::Included(Term::from_field_i64(ts, lo)),
                std::ops::Bound::Included(Term::from_field_i64(ts, hi)),
            );
            assert_eq!(found(&ours), found(&theirs), "[{lo}, {hi}]");
            // A rare tag leads the intersection and seeks the range
            // (`seek_danger`); a common one is led by a narrow range.
            for t in ["a", "c"] {
                let with_tag = |q: Box<dyn Query>| {
                    BooleanQuery::new(vec![
                        (
                            Occur::Must,
                            Box::new(TermQuery::new(
                                Term::from_field_text(tag, t),
                                IndexRecordOption::Basic,
                            )) as Box<dyn Query>,
                        ),
                        (Occur::Must, q),
                    ])
                };
                assert_eq!(
                    found(&with_tag(Box::new(ours.clone()))),
                    found(&with_tag(Box::new(theirs.clone()))),
                    "tag:{t} AND [{lo}, {hi}]"
                );
            }
        }
    }
}
