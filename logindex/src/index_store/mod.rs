//! A time-partitioned, write-ahead-logged tantivy store of records: the
//! engine under the log store and the span store.
//!
//! Writes: a batch gets sequence numbers, goes into `wal.log` (length +
//! CRC-32 + JSON), then into the active partition's index writer. A
//! commit every `commit_interval` (100 ms by default) makes it searchable
//! — so a record is found within about a second — and records the last
//! sequence number it holds as the commit's payload; the WAL is then
//! emptied. On open, WAL records past the committed sequence are indexed
//! again, so nothing acknowledged is lost and nothing is indexed twice.
//! Appends wait while a commit runs (they share one lock).
//!
//! Partitions are by arrival time (`partition`, a day by default), each a
//! tantivy index under `partitions/<start-ms>/`; each knows the time range
//! of its records, so a search opens only the partitions it needs, and
//! retention deletes whole partitions once their newest record is older
//! than `retention`.
//!
//! What a record is — its fields and how they are indexed — is the
//! [`Record`] trait's; the store adds `timestamp` (ms), `order` (the sort
//! key) and `raw` (the record as JSON, the only stored field).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tantivy::aggregation::agg_req::Aggregations;
use tantivy::aggregation::{AggContextParams, AggregationCollector};
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{BooleanQuery, Occur, Query, QueryParser};
use tantivy::schema::{
    FAST, Field, IndexRecordOption, JsonObjectOptions, STORED, Schema, TextFieldIndexing,
    TextOptions, Value,
};
use tantivy::{DocAddress, Index, IndexReader, IndexWriter, Order, ReloadPolicy, TantivyDocument};

use keel_metricstore::Fsync;
use keel_metricstore::batch_ids::BatchIds;

mod search;
pub use search::check_query;
mod reindex;
mod time_range;

/// Errors of an index store.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// Which file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// tantivy failed.
    #[error("index: {0}")]
    Index(#[from] tantivy::TantivyError),
    /// The query is not valid; the message names the position.
    #[error("{0}")]
    Query(String),
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IndexError + '_ {
    move |source| IndexError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Index store settings.
#[derive(Debug, Clone)]
pub struct IndexConfig {
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
    /// Write batches ahead to the WAL (off only to measure indexing alone,
    /// as `keel bench logs` does for its ceiling).
    pub write_ahead: bool,
    /// How long batch ids are kept to drop a batch sent again (ms).
    pub batch_id_retention_ms: i64,
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            commit_interval_ms: 100,
            partition_ms: 24 * 3_600_000,
            retention_ms: 7 * 24 * 3_600_000,
            fsync: Fsync::Never,
            writer_memory_bytes: 64 << 20,
            write_ahead: true,
            batch_id_retention_ms: 24 * 3_600_000,
        }
    }
}

/// A kind of record the store holds.
pub trait Record: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// When it happened (ns since the epoch): partitions, ranges, order.
    fn timestamp_ns(&self) -> i64;
    /// Add the record's own fields to the schema; returns the fields a
    /// query term without a field name searches.
    fn schema(b: &mut tantivy::schema::SchemaBuilder) -> Vec<Field>;
    /// Index the record's fields into `doc` (fields looked up in `schema`).
    fn index(&self, schema: &Schema, doc: &mut TantivyDocument);
}

/// Add a text value to a field by name, if both exist and the value is not empty.
pub fn add_text(schema: &Schema, doc: &mut TantivyDocument, field: &str, value: &str) {
    if !value.is_empty()
        && let Ok(f) = schema.get_field(field)
    {
        doc.add_text(f, value);
    }
}

/// The fields every store has.
#[derive(Debug, Clone)]
pub(crate) struct Fields {
    timestamp: Field,
    order: Field,
    raw: Field,
    defaults: Vec<Field>,
}

fn schema<R: Record>() -> (Schema, Fields) {
    schema_with::<R>(FAST.into())
}

/// The schema with `columns` as the options of `timestamp` and `order`
/// (tests build the earlier, also-indexed schema with it).
pub(crate) fn schema_with<R: Record>(columns: tantivy::schema::NumericOptions) -> (Schema, Fields) {
    let mut b = Schema::builder();
    // Columns only: tantivy answers a range query on a fast field from
    // the column, and sorting reads it too. Indexing them as terms as
    // well built a term dictionary with one entry a record (`order` is
    // unique per record), a third of ingest CPU in FST building.
    let timestamp = b.add_i64_field("timestamp", columns.clone());
    let order = b.add_i64_field("order", columns);
    let raw = b.add_text_field("raw", TextOptions::default() | STORED);
    let defaults = R::schema(&mut b);
    (
        b.build(),
        Fields {
            timestamp,
            order,
            raw,
            defaults,
        },
    )
}

/// The options of a JSON attributes field searchable as `name.key:value`
/// (words and phrases).
pub fn attributes_options() -> JsonObjectOptions {
    JsonObjectOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer("default")
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    )
}

/// Sort key: milliseconds, then the low 20 bits of the sequence number,
/// so that records order (and page) exactly even within one millisecond.
fn order_key(timestamp_ms: i64, seq: u64) -> i64 {
    timestamp_ms
        .clamp(-(1 << 42), 1 << 42)
        .saturating_mul(1 << 20)
        .saturating_add((seq & 0xf_ffff) as i64)
}

/// What a commit records about its partition.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct Committed {
    last_seq: u64,
    min_ms: i64,
    max_ms: i64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(bound = "R: Record")]
struct WalBatch<R> {
    first_seq: u64,
    /// The sender's batch id (hex), kept so that replay can recover it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    batch_id: Option<String>,
    records: Vec<R>,
}

/// A record as the index stores it (the `raw` field).
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound = "R: Record")]
pub(crate) struct Stored<R> {
    pub(crate) seq: u64,
    #[serde(flatten)]
    pub(crate) record: R,
}

struct Partition {
    start_ms: i64,
    dir: PathBuf,
    index: Index,
    reader: IndexReader,
    /// Time range of its committed records (MAX, MIN while it has none).
    min_ms: i64,
    max_ms: i64,
    /// The last sequence number committed to it (0: none).
    last_seq: u64,
}

struct Writer {
    /// Ids of batches stored lately (checked and recorded under this lock).
    batch_ids: BatchIds,
    partition_start: i64,
    writer: IndexWriter,
    wal: keel_metricstore::append::AppendFile,
    next_seq: u64,
    /// Records added since the last commit, and their time range.
    pending: usize,
    pending_min: i64,
    pending_max: i64,
}

/// A page of search results, newest first.
#[derive(Debug, Clone)]
pub struct Page<R> {
    /// The records with their sequence numbers.
    pub records: Vec<(u64, R)>,
    /// Pass as `cursor` for the next (older) page; None on the last.
    pub next_cursor: Option<String>,
}

/// The store of records of kind `R`.
pub struct IndexStore<R: Record> {
    _kind: std::marker::PhantomData<fn() -> R>,
    dir: PathBuf,
    config: IndexConfig,
    schema: Schema,
    fields: Fields,
    partitions: RwLock<Vec<Partition>>,
    writer: Mutex<Writer>,
    /// Per-segment block indexes of `timestamp` and `order`, for ranges.
    blocks: std::sync::Arc<time_range::BlockIndexes>,
}

impl<R: Record> std::fmt::Debug for IndexStore<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexStore")
            .field("dir", &self.dir)
            .finish()
    }
}

fn open_partition<R: Record>(
    dir: &Path,
    schema: &Schema,
    fields: &Fields,
    config: &IndexConfig,
    start_ms: i64,
) -> Result<Partition, IndexError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mmap = tantivy::directory::MmapDirectory::open(dir)
        .map_err(|e| IndexError::Index(tantivy::TantivyError::from(e)))?;
    // A partition keeps the schema it was made with: one written before
    // `timestamp` and `order` became columns only (they were indexed as
    // terms too) opens and serves as before, with the same field ids.
    let exists =
        Index::exists(&mmap).map_err(|e| IndexError::Index(tantivy::TantivyError::from(e)))?;
    let index = if exists {
        let index = Index::open(mmap)?;
        if reindex::unreadable(&index)? {
            drop(index);
            reindex::rebuild::<R>(dir, schema, fields, config.writer_memory_bytes)?;
            Index::open_in_dir(dir)?
        } else {
            index
        }
    } else {
        Index::create(mmap, schema.clone(), tantivy::IndexSettings::default())?
    };
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
        last_seq: c.last_seq,
    })
}

pub(crate) fn committed(index: &Index) -> Committed {
    index
        .load_metas()
        .ok()
        .and_then(|m| m.payload)
        .and_then(|p| serde_json::from_str(&p).ok())
        .unwrap_or_default()
}

/// The tantivy document of record `r` with sequence number `seq`, and its
/// time in ms.
fn document<R: Record>(schema: &Schema, f: &Fields, seq: u64, r: R) -> (TantivyDocument, i64) {
    let ms = r.timestamp_ns().div_euclid(1_000_000);
    let mut doc = TantivyDocument::default();
    doc.add_i64(f.timestamp, ms);
    doc.add_i64(f.order, order_key(ms, seq));
    r.index(schema, &mut doc);
    let raw = serde_json::to_string(&Stored { seq, record: r }).unwrap_or_default();
    doc.add_text(f.raw, raw);
    (doc, ms)
}

impl<R: Record> IndexStore<R> {
    /// Open (or create) the store under `dir`, indexing again what the WAL
    /// holds past the last commit. `now_ms` comes from the injected clock.
    pub fn open(dir: &Path, config: IndexConfig, now_ms: i64) -> Result<Self, IndexError> {
        let (schema, fields) = schema::<R>();
        let parts_dir = dir.join("partitions");
        std::fs::create_dir_all(&parts_dir).map_err(io(&parts_dir))?;
        reindex::finish_swaps(&parts_dir)?;
        let mut partitions = Vec::new();
        for e in std::fs::read_dir(&parts_dir)
            .map_err(io(&parts_dir))?
            .flatten()
        {
            let Some(start) = e.file_name().to_str().and_then(|n| n.parse::<i64>().ok()) else {
                continue;
            };
            partitions.push(open_partition::<R>(
                &e.path(),
                &schema,
                &fields,
                &config,
                start,
            )?);
        }
        partitions.sort_by_key(|p| p.start_ms);
        let last_seq = partitions.iter().map(|p| p.last_seq).max().unwrap_or(0);
        let start = now_ms.div_euclid(config.partition_ms.max(1)) * config.partition_ms.max(1);
        if partitions.last().is_none_or(|p| p.start_ms < start) {
            partitions.push(open_partition::<R>(
                &parts_dir.join(start.to_string()),
                &schema,
                &fields,
                &config,
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
            .ok_or_else(|| IndexError::Query("no partition".into()))?;
        let wal_path = dir.join("wal.log");
        let (mut wal, image) =
            keel_metricstore::append::AppendFile::open(&wal_path).map_err(io(&wal_path))?;
        // Replay stops at the first torn, corrupt or unreadable record;
        // what follows it is cut before anything is appended.
        let mut valid = 0;
        let mut logged = Vec::new();
        for (at, payload) in keel_metricstore::wal::frames(&image) {
            let Ok(batch) = serde_json::from_slice::<WalBatch<R>>(payload) else {
                break;
            };
            valid = at + 8 + payload.len();
            logged.push(batch);
        }
        wal.keep(valid as u64).map_err(io(&wal_path))?;
        let ids_path = dir.join("batch-ids.log");
        let batch_ids = BatchIds::open(&ids_path, config.batch_id_retention_ms, now_ms)
            .map_err(io(&ids_path))?;
        let store = Self {
            _kind: std::marker::PhantomData,
            dir: dir.to_path_buf(),
            config,
            schema,
            fields,
            partitions: RwLock::new(partitions),
            blocks: Default::default(),
            writer: Mutex::new(Writer {
                batch_ids,
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
            for batch in logged {
                // Logged means acknowledged: its id counts, even if a crash
                // came before the id reached batch-ids.log.
                if let Some(id) = batch
                    .batch_id
                    .as_deref()
                    .and_then(|h| u128::from_str_radix(h, 16).ok())
                {
                    w.batch_ids.record(id, now_ms).map_err(io(&ids_path))?;
                }
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
        tracing::info!(records = replayed, dir = %dir.display(), "index store opened");
        Ok(store)
    }

    fn add(&self, w: &mut Writer, seq: u64, r: R) -> Result<(), IndexError> {
        let (doc, ms) = document(&self.schema, &self.fields, seq, r);
        w.writer.add_document(doc)?;
        w.pending += 1;
        w.pending_min = w.pending_min.min(ms);
        w.pending_max = w.pending_max.max(ms);
        Ok(())
    }

    /// Store records: written ahead (and synced per policy), then indexed;
    /// searchable after the next commit. Returns how many were stored.
    pub fn append(&self, records: Vec<R>, now_ms: i64) -> Result<usize, IndexError> {
        Ok(self.append_batch(records, now_ms, None)?.unwrap_or(0))
    }

    /// As [`Self::append`], for a batch with the sender's id: `None` when
    /// a batch with that id was stored within the retention (it is not
    /// stored again).
    pub fn append_batch(
        &self,
        records: Vec<R>,
        now_ms: i64,
        batch_id: Option<u128>,
    ) -> Result<Option<usize>, IndexError> {
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if batch_id.is_some_and(|id| w.batch_ids.contains(id)) {
            return Ok(None);
        }
        if records.is_empty() {
            if let Some(id) = batch_id {
                let path = self.dir.join("batch-ids.log");
                w.batch_ids.record(id, now_ms).map_err(io(&path))?;
            }
            return Ok(Some(0));
        }
        if now_ms >= w.partition_start + self.config.partition_ms {
            self.rotate(&mut w, now_ms)?;
        }
        let batch = WalBatch {
            first_seq: w.next_seq,
            batch_id: batch_id.map(|id| format!("{id:032x}")),
            records,
        };
        if self.config.write_ahead {
            // A batch that cannot be written whole is refused, never
            // logged empty and acknowledged.
            let wal_path = self.dir.join("wal.log");
            let payload = serde_json::to_vec(&batch).map_err(|e| {
                io(&wal_path)(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
            })?;
            let mut rec = Vec::with_capacity(payload.len() + 8);
            keel_metricstore::wal::frame(&mut rec, &payload).map_err(io(&wal_path))?;
            w.wal
                .append(&rec, self.config.fsync == Fsync::Batch)
                .map_err(io(&wal_path))?;
        }
        let n = batch.records.len();
        w.next_seq += n as u64;
        for (i, r) in batch.records.into_iter().enumerate() {
            self.add(&mut w, batch.first_seq + i as u64, r)?;
        }
        // Logged with the batch (when write-ahead is on), its id is
        // recovered at replay: a failed line here is no reason to report
        // the stored batch as not stored.
        if let Some(id) = batch_id
            && let Err(e) = w.batch_ids.record(id, now_ms)
        {
            tracing::error!(error = %e, "batch-ids.log not written; the batch is stored");
        }
        Ok(Some(n))
    }

    /// Was a batch with this id stored within the retention?
    pub fn has_batch(&self, id: u128) -> bool {
        self.writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .batch_ids
            .contains(id)
    }

    /// Commit what was added since the last commit (makes it searchable).
    pub fn commit(&self) -> Result<(), IndexError> {
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        self.commit_locked(&mut w)
    }

    fn commit_locked(&self, w: &mut Writer) -> Result<(), IndexError> {
        if w.pending == 0 {
            return Ok(());
        }
        let mut parts = self.partitions.write().unwrap_or_else(|e| e.into_inner());
        let Some(p) = parts.iter_mut().find(|p| p.start_ms == w.partition_start) else {
            return Err(IndexError::Query("the active partition is gone".into()));
        };
        // The partition's range, widened by what is pending (an empty
        // partition's MAX/MIN give way to any record).
        let c = Committed {
            last_seq: w.next_seq - 1,
            min_ms: p.min_ms.min(w.pending_min),
            max_ms: p.max_ms.max(w.pending_max),
        };
        let mut prepared = w.writer.prepare_commit()?;
        prepared.set_payload(&serde_json::to_string(&c).unwrap_or_default());
        prepared.commit()?;
        p.reader.reload()?;
        p.min_ms = c.min_ms;
        p.max_ms = c.max_ms;
        p.last_seq = c.last_seq;
        drop(parts);
        // Everything logged is now in a commit: the log starts afresh.
        let wal_path = self.dir.join("wal.log");
        w.wal.clear().map_err(io(&wal_path))?;
        w.pending = 0;
        w.pending_min = i64::MAX;
        w.pending_max = i64::MIN;
        Ok(())
    }

    /// Commit the active partition and open the next one.
    fn rotate(&self, w: &mut Writer, now_ms: i64) -> Result<(), IndexError> {
        self.commit_locked(w)?;
        let step = self.config.partition_ms.max(1);
        let start = now_ms.div_euclid(step) * step;
        let dir = self.dir.join("partitions").join(start.to_string());
        let p = open_partition::<R>(&dir, &self.schema, &self.fields, &self.config, start)?;
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
    pub fn apply_retention(&self, now_ms: i64) -> Result<usize, IndexError> {
        let active = {
            let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            let path = self.dir.join("batch-ids.log");
            w.batch_ids.expire(now_ms).map_err(io(&path))?;
            w.partition_start
        };
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

    /// Partitions held: (start ms, newest record ms).
    pub fn partitions(&self) -> Vec<(i64, i64)> {
        self.partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|p| (p.start_ms, p.max_ms))
            .collect()
    }

    /// A field of this store's schema, by name.
    pub fn field(&self, name: &str) -> Option<Field> {
        self.schema.get_field(name).ok()
    }

    /// The commit interval (ms).
    pub fn commit_interval_ms(&self) -> i64 {
        self.config.commit_interval_ms
    }
}
