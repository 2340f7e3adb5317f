//! The log store: structured records in tantivy indexes, one a time
//! partition, every accepted batch written ahead before it is
//! acknowledged.
//!
//! Writes: a batch gets sequence numbers, goes into `logs/wal.log`
//! (length + CRC-32 + JSON), then into the active partition's index
//! writer. A commit every `commit_interval` (500 ms by default) makes it
//! searchable — so a record is found within about a second — and records
//! the last sequence number it holds as the commit's payload; the WAL is
//! then emptied. On open, WAL records past the committed sequence are
//! indexed again, so nothing acknowledged is lost and nothing is indexed
//! twice. Appends wait while a commit runs (they share one lock).
//!
//! Partitions are by arrival time (`partition`, a day by default), each a
//! tantivy index under `logs/partitions/<start-ms>/`; each knows the time
//! range of its records, so a search opens only the partitions it needs,
//! and retention deletes whole partitions once their newest record is
//! older than `retention`.

pub mod api;
pub mod record;

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use serde::{Deserialize, Serialize};
use serde_json::json;
use tantivy::aggregation::agg_req::Aggregations;
use tantivy::aggregation::{AggContextParams, AggregationCollector};
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{BooleanQuery, Occur, Query, QueryParser, RangeQuery};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, JsonObjectOptions, STORED, STRING, Schema, TEXT,
    TextFieldIndexing, TextOptions, Value,
};
use tantivy::{
    DocAddress, Index, IndexReader, IndexWriter, Order, ReloadPolicy, TantivyDocument, Term,
};

pub use record::LogRecord;

use crate::store::Fsync;

/// Errors of the log store.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// Which file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// tantivy failed.
    #[error("log index: {0}")]
    Index(#[from] tantivy::TantivyError),
    /// The query is not valid; the message names the position.
    #[error("{0}")]
    Query(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Log store settings.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// How often new records are committed (made searchable), in ms.
    pub commit_interval_ms: i64,
    /// Time span of one partition, by arrival (ms).
    pub partition_ms: i64,
    /// Partitions whose newest record is older than this are deleted (ms).
    pub retention_ms: i64,
    /// WAL fsync policy.
    pub fsync: Fsync,
    /// Memory the index writer may use before it flushes a segment.
    pub writer_memory_bytes: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            commit_interval_ms: 500,
            partition_ms: 24 * 3_600_000,
            retention_ms: 7 * 24 * 3_600_000,
            fsync: Fsync::Never,
            writer_memory_bytes: 64 << 20,
        }
    }
}

/// The indexed fields.
#[derive(Debug, Clone, Copy)]
struct Fields {
    timestamp: Field,
    order: Field,
    level: Field,
    severity: Field,
    service: Field,
    host: Field,
    trace_id: Field,
    span_id: Field,
    message: Field,
    attributes: Field,
    raw: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let keyword = STRING;
    let fields = Fields {
        timestamp: b.add_i64_field("timestamp", INDEXED | FAST),
        order: b.add_i64_field("order", INDEXED | FAST),
        level: b.add_text_field("level", keyword.clone()),
        severity: b.add_text_field("severity", keyword.clone()),
        service: b.add_text_field("service", keyword.clone()),
        host: b.add_text_field("host", keyword.clone()),
        trace_id: b.add_text_field("trace_id", keyword.clone()),
        span_id: b.add_text_field("span_id", keyword),
        message: b.add_text_field("message", TEXT),
        attributes: b.add_json_field(
            "attributes",
            JsonObjectOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer("default")
                    .set_index_option(IndexRecordOption::WithFreqsAndPositions),
            ),
        ),
        raw: b.add_text_field("raw", TextOptions::default() | STORED),
    };
    (b.build(), fields)
}

/// Sort key: milliseconds, then the low 20 bits of the sequence number,
/// so that records order (and page) exactly even within one millisecond.
fn order_key(timestamp_ms: i64, seq: u64) -> i64 {
    timestamp_ms
        .clamp(-(1 << 42), 1 << 42)
        .saturating_mul(1 << 20)
        .saturating_add((seq & 0xf_ffff) as i64)
}

/// `a AND NOT b` parses as `+a +(-b)`, and a group of exclusions alone
/// matches nothing, so it would find nothing; splice such groups into
/// their parent (`+a -b`), which is what users mean.
fn splice_negations(
    ast: tantivy::query_grammar::UserInputAst,
) -> tantivy::query_grammar::UserInputAst {
    use tantivy::query_grammar::{Occur as O, UserInputAst as A};
    match ast {
        A::Clause(children) => {
            let mut out = Vec::with_capacity(children.len());
            for (occur, child) in children {
                match splice_negations(child) {
                    A::Clause(sub)
                        if matches!(occur, None | Some(O::Must))
                            && !sub.is_empty()
                            && sub.iter().all(|(o, _)| *o == Some(O::MustNot)) =>
                    {
                        out.extend(sub)
                    }
                    other => out.push((occur, other)),
                }
            }
            A::Clause(out)
        }
        A::Boost(inner, by) => A::Boost(Box::new(splice_negations(*inner)), by),
        leaf => leaf,
    }
}

/// A query of exclusions only (`NOT level:info`) means "all but those".
fn all_but(ast: tantivy::query_grammar::UserInputAst) -> tantivy::query_grammar::UserInputAst {
    use tantivy::query_grammar::{Occur as O, UserInputAst as A, UserInputLeaf};
    let negative =
        |c: &[(Option<O>, A)]| !c.is_empty() && c.iter().all(|(o, _)| *o == Some(O::MustNot));
    match ast {
        A::Clause(mut c) if negative(&c) => {
            c.push((Some(O::Must), A::Leaf(Box::new(UserInputLeaf::All))));
            A::Clause(c)
        }
        other => other,
    }
}

/// What a commit records about its partition.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
struct Committed {
    last_seq: u64,
    min_ms: i64,
    max_ms: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct WalBatch {
    first_seq: u64,
    records: Vec<LogRecord>,
}

/// A record as the index stores it (the `raw` field).
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    seq: u64,
    #[serde(flatten)]
    record: LogRecord,
}

struct Partition {
    start_ms: i64,
    dir: PathBuf,
    index: Index,
    reader: IndexReader,
    /// Time range of its records (committed and pending).
    min_ms: i64,
    max_ms: i64,
}

struct Writer {
    partition_start: i64,
    writer: IndexWriter,
    wal: File,
    next_seq: u64,
    /// Records added since the last commit, and their time range.
    pending: usize,
    pending_min: i64,
    pending_max: i64,
}

/// A page of search results, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    /// The records with their sequence numbers.
    pub records: Vec<(u64, LogRecord)>,
    /// Pass as `cursor` for the next (older) page; None on the last.
    pub next_cursor: Option<String>,
}

/// The log store.
pub struct LogStore {
    dir: PathBuf,
    config: LogConfig,
    schema: Schema,
    fields: Fields,
    partitions: RwLock<Vec<Partition>>,
    writer: Mutex<Writer>,
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").field("dir", &self.dir).finish()
    }
}

fn open_partition(dir: &Path, schema: &Schema, start_ms: i64) -> Result<Partition, LogError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mmap = tantivy::directory::MmapDirectory::open(dir)
        .map_err(|e| LogError::Index(tantivy::TantivyError::from(e)))?;
    let index = Index::open_or_create(mmap, schema.clone())?;
    let reader = index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()?;
    let c = committed(&index);
    let (min_ms, max_ms) = if c.last_seq == 0 {
        (i64::MAX, i64::MIN)
    } else {
        (c.min_ms, c.max_ms)
    };
    Ok(Partition {
        start_ms,
        dir: dir.to_path_buf(),
        index,
        reader,
        min_ms,
        max_ms,
    })
}

fn committed(index: &Index) -> Committed {
    index
        .load_metas()
        .ok()
        .and_then(|m| m.payload)
        .and_then(|p| serde_json::from_str(&p).ok())
        .unwrap_or_default()
}

impl LogStore {
    /// Open (or create) the store under `dir`, indexing again what the WAL
    /// holds past the last commit. `now_ms` comes from the injected clock.
    pub fn open(dir: &Path, config: LogConfig, now_ms: i64) -> Result<Self, LogError> {
        let (schema, fields) = schema();
        let parts_dir = dir.join("partitions");
        std::fs::create_dir_all(&parts_dir).map_err(io(&parts_dir))?;
        let mut partitions = Vec::new();
        for e in std::fs::read_dir(&parts_dir)
            .map_err(io(&parts_dir))?
            .flatten()
        {
            let Some(start) = e.file_name().to_str().and_then(|n| n.parse::<i64>().ok()) else {
                continue;
            };
            partitions.push(open_partition(&e.path(), &schema, start)?);
        }
        partitions.sort_by_key(|p| p.start_ms);
        let last_seq = partitions
            .iter()
            .map(|p| committed(&p.index).last_seq)
            .max()
            .unwrap_or(0);
        let start = now_ms.div_euclid(config.partition_ms.max(1)) * config.partition_ms.max(1);
        if partitions.last().is_none_or(|p| p.start_ms < start) {
            partitions.push(open_partition(
                &parts_dir.join(start.to_string()),
                &schema,
                start,
            )?);
        }
        let active = partitions.last().map_or(start, |p| p.start_ms);
        let writer = partitions
            .last()
            .map(|p| {
                p.index
                    .writer_with_num_threads(1, config.writer_memory_bytes)
            })
            .transpose()?
            .ok_or_else(|| LogError::Query("no partition".into()))?;
        let wal_path = dir.join("wal.log");
        let mut wal = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&wal_path)
            .map_err(io(&wal_path))?;
        let mut image = Vec::new();
        wal.read_to_end(&mut image).map_err(io(&wal_path))?;
        let store = Self {
            dir: dir.to_path_buf(),
            config,
            schema,
            fields,
            partitions: RwLock::new(partitions),
            writer: Mutex::new(Writer {
                partition_start: active,
                writer,
                wal,
                next_seq: last_seq + 1,
                pending: 0,
                pending_min: i64::MAX,
                pending_max: i64::MIN,
            }),
        };
        // Replay: batches past the committed sequence go into the index
        // again (without being logged again), then one commit.
        let mut replayed = 0usize;
        {
            let mut w = store.writer.lock().unwrap_or_else(|e| e.into_inner());
            for (_, payload) in crate::store::wal::frames(&image) {
                let Ok(batch) = serde_json::from_slice::<WalBatch>(payload) else {
                    break;
                };
                for (i, r) in batch.records.into_iter().enumerate() {
                    let seq = batch.first_seq + i as u64;
                    if seq > last_seq {
                        store.add(&mut w, seq, r)?;
                        replayed += 1;
                    }
                    w.next_seq = w.next_seq.max(seq + 1);
                }
            }
            store.commit_locked(&mut w)?;
        }
        tracing::info!(records = replayed, dir = %dir.display(), "log store opened");
        Ok(store)
    }

    fn add(&self, w: &mut Writer, seq: u64, r: LogRecord) -> Result<(), LogError> {
        let f = &self.fields;
        let ms = r.timestamp_ns.div_euclid(1_000_000);
        let mut doc = TantivyDocument::default();
        doc.add_i64(f.timestamp, ms);
        doc.add_i64(f.order, order_key(ms, seq));
        for (field, v) in [
            (f.level, &r.level),
            (f.severity, &r.level),
            (f.service, &r.service),
            (f.host, &r.host),
            (f.trace_id, &r.trace_id),
            (f.span_id, &r.span_id),
            (f.message, &r.message),
        ] {
            if !v.is_empty() {
                doc.add_text(field, v);
            }
        }
        if !r.attributes.is_empty() {
            doc.add_field_value(
                f.attributes,
                &tantivy::schema::OwnedValue::from(r.attributes.clone()),
            );
        }
        let raw = serde_json::to_string(&Stored { seq, record: r }).unwrap_or_default();
        doc.add_text(f.raw, raw);
        w.writer.add_document(doc)?;
        w.pending += 1;
        w.pending_min = w.pending_min.min(ms);
        w.pending_max = w.pending_max.max(ms);
        Ok(())
    }

    /// Store records: written ahead (and synced per policy), then indexed;
    /// searchable after the next commit. Returns how many were stored.
    pub fn append(&self, records: Vec<LogRecord>, now_ms: i64) -> Result<usize, LogError> {
        if records.is_empty() {
            return Ok(0);
        }
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if now_ms >= w.partition_start + self.config.partition_ms {
            self.rotate(&mut w, now_ms)?;
        }
        let batch = WalBatch {
            first_seq: w.next_seq,
            records,
        };
        let payload = serde_json::to_vec(&batch).unwrap_or_default();
        let mut rec = Vec::with_capacity(payload.len() + 8);
        crate::store::wal::frame(&mut rec, &payload);
        let wal_path = self.dir.join("wal.log");
        w.wal.write_all(&rec).map_err(io(&wal_path))?;
        if self.config.fsync == Fsync::Batch {
            w.wal.sync_data().map_err(io(&wal_path))?;
        }
        let n = batch.records.len();
        w.next_seq += n as u64;
        for (i, r) in batch.records.into_iter().enumerate() {
            self.add(&mut w, batch.first_seq + i as u64, r)?;
        }
        Ok(n)
    }

    /// Commit what was added since the last commit (makes it searchable).
    pub fn commit(&self) -> Result<(), LogError> {
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        self.commit_locked(&mut w)
    }

    fn commit_locked(&self, w: &mut Writer) -> Result<(), LogError> {
        if w.pending == 0 {
            return Ok(());
        }
        let mut parts = self.partitions.write().unwrap_or_else(|e| e.into_inner());
        let Some(p) = parts.iter_mut().find(|p| p.start_ms == w.partition_start) else {
            return Err(LogError::Query("the active partition is gone".into()));
        };
        let before = committed(&p.index);
        let c = Committed {
            last_seq: w.next_seq - 1,
            min_ms: if before.last_seq == 0 {
                w.pending_min
            } else {
                before.min_ms.min(w.pending_min)
            },
            max_ms: before.max_ms.max(w.pending_max),
        };
        let mut prepared = w.writer.prepare_commit()?;
        prepared.set_payload(&serde_json::to_string(&c).unwrap_or_default());
        prepared.commit()?;
        p.reader.reload()?;
        p.min_ms = c.min_ms;
        p.max_ms = c.max_ms;
        drop(parts);
        // Everything logged is now in a commit: the log starts afresh.
        let wal_path = self.dir.join("wal.log");
        w.wal.set_len(0).map_err(io(&wal_path))?;
        w.wal.seek(SeekFrom::Start(0)).map_err(io(&wal_path))?;
        w.pending = 0;
        w.pending_min = i64::MAX;
        w.pending_max = i64::MIN;
        Ok(())
    }

    /// Commit the active partition and open the next one.
    fn rotate(&self, w: &mut Writer, now_ms: i64) -> Result<(), LogError> {
        self.commit_locked(w)?;
        let step = self.config.partition_ms.max(1);
        let start = now_ms.div_euclid(step) * step;
        let dir = self.dir.join("partitions").join(start.to_string());
        let p = open_partition(&dir, &self.schema, start)?;
        w.writer = p
            .index
            .writer_with_num_threads(1, self.config.writer_memory_bytes)?;
        w.partition_start = start;
        self.partitions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(p);
        Ok(())
    }

    /// Delete partitions whose newest record is older than the retention
    /// (never the active one). Returns how many were deleted.
    pub fn apply_retention(&self, now_ms: i64) -> Result<usize, LogError> {
        let active = self
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .partition_start;
        let cutoff = now_ms - self.config.retention_ms;
        let mut parts = self.partitions.write().unwrap_or_else(|e| e.into_inner());
        let (expired, kept): (Vec<Partition>, Vec<Partition>) = parts
            .drain(..)
            .partition(|p| p.start_ms != active && p.max_ms < cutoff);
        *parts = kept;
        drop(parts);
        let n = expired.len();
        for p in expired {
            tracing::info!(partition = %p.dir.display(), "deleting a log partition past retention");
            let dir = p.dir.clone();
            drop(p);
            std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
        }
        Ok(n)
    }

    /// Parse a query in tantivy's syntax (default field: message). Errors
    /// name the position (a byte offset) or the unknown field.
    fn parse(&self, q: &str) -> Result<Box<dyn Query>, LogError> {
        if q.trim().is_empty() || q.trim() == "*" {
            return Ok(Box::new(tantivy::query::AllQuery));
        }
        let (_, errors) = tantivy::query_grammar::parse_query_lenient(q);
        if let Some(e) = errors.first() {
            return Err(LogError::Query(format!(
                "invalid query at position {}: {}",
                e.pos, e.message
            )));
        }
        let ast = tantivy::query_grammar::parse_query(q)
            .map_err(|_| LogError::Query(format!("invalid query {q:?}")))?;
        let mut parser = QueryParser::new(
            self.schema.clone(),
            vec![self.fields.message],
            tantivy::tokenizer::TokenizerManager::default(),
        );
        parser.set_conjunction_by_default();
        parser
            .build_query_from_user_input_ast(all_but(splice_negations(ast)))
            .map_err(|e| LogError::Query(format!("invalid query: {e}")))
    }

    fn with_range(&self, q: Box<dyn Query>, field: Field, lo: i64, hi: i64) -> Box<dyn Query> {
        let range = RangeQuery::new(
            Bound::Included(Term::from_field_i64(field, lo)),
            Bound::Included(Term::from_field_i64(field, hi)),
        );
        Box::new(BooleanQuery::new(vec![
            (Occur::Must, q),
            (Occur::Must, Box::new(range)),
        ]))
    }

    /// Records matching `q` with timestamps in `[start_ms, end_ms]`, newest
    /// first, at most `limit`, continuing after `cursor` (from a previous
    /// page) when given.
    pub fn search(
        &self,
        q: &str,
        start_ms: i64,
        end_ms: i64,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page, LogError> {
        let query = self.parse(q)?;
        let query = self.with_range(query, self.fields.timestamp, start_ms, end_ms);
        let below = match cursor {
            Some(c) => c
                .parse::<i64>()
                .map_err(|_| LogError::Query(format!("invalid cursor {c:?}")))?,
            None => i64::MAX,
        };
        let query: Box<dyn Query> = if below == i64::MAX {
            query
        } else {
            self.with_range(query, self.fields.order, i64::MIN, below - 1)
        };
        let limit = limit.max(1);
        let parts = self.partitions.read().unwrap_or_else(|e| e.into_inner());
        let mut hits: Vec<(i64, String)> = Vec::new();
        for p in parts.iter().rev() {
            if p.max_ms < start_ms || p.min_ms > end_ms {
                continue;
            }
            let searcher = p.reader.searcher();
            let top: Vec<(Option<i64>, DocAddress)> = searcher.search(
                &*query,
                &TopDocs::with_limit(limit).order_by_fast_field::<i64>("order", Order::Desc),
            )?;
            for (key, addr) in top {
                let doc: TantivyDocument = searcher.doc(addr)?;
                let raw = doc
                    .get_first(self.fields.raw)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned();
                hits.push((key.unwrap_or(i64::MIN), raw));
            }
        }
        hits.sort_by_key(|h| std::cmp::Reverse(h.0));
        let more = hits.len() > limit;
        hits.truncate(limit);
        let next_cursor = if more || hits.len() == limit {
            hits.last().map(|(k, _)| k.to_string())
        } else {
            None
        };
        let records = hits
            .into_iter()
            .filter_map(|(_, raw)| serde_json::from_str::<Stored>(&raw).ok())
            .map(|s| (s.seq, s.record))
            .collect();
        Ok(Page {
            records,
            next_cursor,
        })
    }

    /// How many records match, per `step_ms` bucket from `start_ms` to
    /// `end_ms` (tantivy's histogram aggregation, summed over partitions).
    pub fn histogram(
        &self,
        q: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<Vec<(i64, u64)>, LogError> {
        if step_ms <= 0 || end_ms < start_ms {
            return Err(LogError::Query(
                "step must be positive and end not before start".into(),
            ));
        }
        let buckets = ((end_ms - start_ms) / step_ms + 1) as usize;
        if buckets > 11_000 {
            return Err(LogError::Query(format!(
                "{buckets} buckets: more than 11,000 (use a larger step)"
            )));
        }
        let query = self.parse(q)?;
        let query = self.with_range(query, self.fields.timestamp, start_ms, end_ms);
        let aggs: Aggregations = serde_json::from_value(json!({
            "h": { "histogram": {
                "field": "timestamp",
                "interval": step_ms as f64,
                "offset": start_ms.rem_euclid(step_ms) as f64,
                "min_doc_count": 0,
            }}
        }))
        .map_err(|e| LogError::Query(format!("aggregation: {e}")))?;
        let mut counts = vec![0u64; buckets];
        let parts = self.partitions.read().unwrap_or_else(|e| e.into_inner());
        for p in parts.iter() {
            if p.max_ms < start_ms || p.min_ms > end_ms {
                continue;
            }
            let searcher = p.reader.searcher();
            let collector = AggregationCollector::from_aggs(
                aggs.clone(),
                AggContextParams::new(Default::default(), p.index.tokenizers().clone()),
            );
            let res = searcher.search(&*query, &collector)?;
            let v = serde_json::to_value(&res).unwrap_or_default();
            for b in v["h"]["buckets"].as_array().into_iter().flatten() {
                let key = b["key"].as_f64().unwrap_or(f64::NAN) as i64;
                let n = b["doc_count"].as_u64().unwrap_or(0);
                if key >= start_ms && key <= end_ms {
                    counts[((key - start_ms) / step_ms) as usize] += n;
                }
            }
        }
        Ok(counts
            .into_iter()
            .enumerate()
            .map(|(i, n)| (start_ms + i as i64 * step_ms, n))
            .collect())
    }

    /// Records matching `q` in the range (a count, for rules and tests).
    pub fn count(&self, q: &str, start_ms: i64, end_ms: i64) -> Result<usize, LogError> {
        let query = self.with_range(self.parse(q)?, self.fields.timestamp, start_ms, end_ms);
        let parts = self.partitions.read().unwrap_or_else(|e| e.into_inner());
        let mut n = 0;
        for p in parts.iter() {
            n += p.reader.searcher().search(&*query, &Count)?;
        }
        Ok(n)
    }

    /// Partitions held: (start ms, newest record ms).
    pub fn partitions(&self) -> Vec<(i64, i64)> {
        self.partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|p| (p.start_ms, p.max_ms))
            .collect()
    }

    /// The commit interval (ms).
    pub fn commit_interval_ms(&self) -> i64 {
        self.config.commit_interval_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value as J;

    const T0: i64 = 1_795_000_000_000;

    fn corpus(n: usize) -> Vec<LogRecord> {
        (0..n)
            .map(|i| {
                let mut words = vec![format!("request {i} handled")];
                if i % 7 == 0 {
                    words.push("upstream timeout".into());
                }
                if i % 11 == 0 {
                    words.push("card declined card".into());
                }
                if i % 13 == 0 {
                    words.push("declined card".into());
                }
                let mut attributes = serde_json::Map::new();
                attributes.insert("user_id".into(), J::from(i as u64));
                attributes.insert("region".into(), J::from(["eu", "us"][i % 2]));
                LogRecord {
                    timestamp_ns: (T0 + i as i64 * 1000) * 1_000_000,
                    level: ["info", "warn", "error"][i % 3].into(),
                    service: ["payment", "checkout", "web"][i % 5 % 3].into(),
                    host: format!("host-{}", i % 4),
                    trace_id: format!("{:032x}", i + 1),
                    span_id: format!("{:016x}", i + 1),
                    message: words.join("; "),
                    attributes,
                }
            })
            .collect()
    }

    fn store(dir: &Path) -> LogStore {
        LogStore::open(dir, LogConfig::default(), T0).expect("open")
    }

    /// Every page of a search, as the records' indexes in the corpus.
    fn all_pages(s: &LogStore, q: &str, limit: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = s
                .search(q, T0 - 1, T0 + 10_000_000, limit, cursor.as_deref())
                .expect("search");
            out.extend(
                page.records
                    .iter()
                    .map(|(_, r)| ((r.timestamp_ns / 1_000_000 - T0) / 1000) as usize),
            );
            match page.next_cursor {
                Some(c) if !page.records.is_empty() => cursor = Some(c),
                _ => return out,
            }
        }
    }

    #[test]
    fn every_query_kind_returns_exactly_the_expected_records_newest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(dir.path());
        let records = corpus(600);
        for chunk in records.chunks(50) {
            s.append(chunk.to_vec(), T0).expect("append");
        }
        s.commit().expect("commit");
        let expect = |f: &dyn Fn(usize, &LogRecord) -> bool| -> Vec<usize> {
            let mut v: Vec<usize> = records
                .iter()
                .enumerate()
                .filter(|(i, r)| f(*i, r))
                .map(|(i, _)| i)
                .collect();
            v.reverse();
            v
        };
        let cases: Vec<(&str, Vec<usize>)> = vec![
            ("level:error", expect(&|_, r| r.level == "error")),
            (
                "\"declined card\"",
                expect(&|i, _| i % 11 == 0 || i % 13 == 0),
            ),
            (
                "level:error AND service:payment AND \"timeout\"",
                expect(&|i, r| r.level == "error" && r.service == "payment" && i % 7 == 0),
            ),
            (
                &*Box::leak(
                    format!("timestamp:[{} TO {}]", T0 + 100_000, T0 + 200_000).into_boxed_str(),
                ),
                expect(&|i, _| (100..=200).contains(&i)),
            ),
            ("attributes.region:eu", expect(&|i, _| i % 2 == 0)),
            ("attributes.user_id:456", expect(&|i, _| i == 456)),
            (
                "service:web AND NOT level:info",
                expect(&|_, r| r.service == "web" && r.level != "info"),
            ),
            (
                "severity:warn OR host:host-3",
                expect(&|i, r| r.level == "warn" || i % 4 == 3),
            ),
            (
                &*Box::leak(format!("trace_id:{:032x}", 43).into_boxed_str()),
                vec![42],
            ),
            ("*", expect(&|_, _| true)),
            (
                "NOT level:info AND NOT level:warn",
                expect(&|_, r| r.level == "error"),
            ),
            ("-service:web", expect(&|_, r| r.service != "web")),
        ];
        for (q, want) in cases {
            assert!(!want.is_empty(), "{q}: an empty expectation proves nothing");
            assert_eq!(all_pages(&s, q, 17), want, "{q}");
        }
        // A time window narrows any query.
        let page = s
            .search("level:error", T0 + 10_000, T0 + 20_000, 100, None)
            .expect("search");
        let got: Vec<i64> = page
            .records
            .iter()
            .map(|(_, r)| r.timestamp_ns / 1_000_000)
            .collect();
        assert_eq!(got, [T0 + 20_000, T0 + 17_000, T0 + 14_000, T0 + 11_000]);
        assert_eq!(page.records[0].1, records[20]);
    }

    #[test]
    fn the_histogram_counts_matches_per_step() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(dir.path());
        s.append(corpus(300), T0).expect("append");
        s.commit().expect("commit");
        let h = s
            .histogram("level:error", T0, T0 + 299_999, 60_000)
            .expect("histogram");
        assert_eq!(h.len(), 5);
        assert_eq!(h[0].0, T0);
        assert_eq!(
            h.iter().map(|b| b.1).collect::<Vec<_>>(),
            [20, 20, 20, 20, 20]
        );
        assert!(s.histogram("*", T0, T0 + 1, 0).is_err());
    }

    #[test]
    fn invalid_queries_name_the_position_or_the_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(dir.path());
        let e = s.search("level:", T0, T0, 10, None).expect_err("bad");
        assert_eq!(e.to_string(), "invalid query at position 6: expected word");
        let e = s
            .search("nosuchfield:x", T0, T0, 10, None)
            .expect_err("bad");
        assert!(e.to_string().contains("nosuchfield"), "{e}");
        let e = s.search("*", T0, T0, 10, Some("zz")).expect_err("bad");
        assert!(e.to_string().contains("invalid cursor"), "{e}");
    }

    #[test]
    fn acknowledged_records_survive_a_crash_before_the_commit_and_are_not_doubled() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = store(dir.path());
            s.append(corpus(10), T0).expect("append");
            s.commit().expect("commit");
            s.append(corpus(25)[10..].to_vec(), T0).expect("append");
            // Dropped without a commit: as after kill -9, only the WAL has them.
        }
        let s = store(dir.path());
        assert_eq!(s.count("*", T0 - 1, T0 + 100_000).expect("count"), 25);
        drop(s);
        let s = store(dir.path());
        assert_eq!(s.count("*", T0 - 1, T0 + 100_000).expect("count"), 25);
        // Sequence numbers continue after a restart.
        s.append(corpus(1), T0).expect("append");
        s.commit().expect("commit");
        let page = s
            .search("*", T0 - 1, T0 + 100_000, 100, None)
            .expect("search");
        let mut seqs: Vec<u64> = page.records.iter().map(|(q, _)| *q).collect();
        seqs.sort_unstable();
        seqs.dedup();
        assert_eq!(seqs.len(), 26);
    }

    #[test]
    fn partitions_rotate_by_arrival_and_retention_drops_whole_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let day = 24 * 3_600_000;
        let cfg = LogConfig {
            retention_ms: 2 * day,
            ..LogConfig::default()
        };
        let s = LogStore::open(dir.path(), cfg, T0).expect("open");
        let old: Vec<LogRecord> = corpus(5);
        s.append(old, T0).expect("append");
        let mut later = corpus(3);
        for r in &mut later {
            r.timestamp_ns += 3 * day * 1_000_000;
        }
        s.append(later, T0 + 3 * day).expect("append");
        s.commit().expect("commit");
        assert_eq!(s.partitions().len(), 2);
        assert_eq!(s.count("*", 0, i64::MAX).expect("count"), 8);
        assert_eq!(s.apply_retention(T0 + 3 * day).expect("retention"), 1);
        assert_eq!(s.partitions().len(), 1);
        assert_eq!(s.count("*", 0, i64::MAX).expect("count"), 3);
    }
}
