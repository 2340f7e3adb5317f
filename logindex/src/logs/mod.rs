//! The log store: structured log records in an [`IndexStore`] (tantivy
//! indexes by time partition, written ahead before acknowledging).
//!
//! Indexed fields: `level` and its alias `severity` (normalised),
//! `service`, `host`, `trace_id`, `span_id` (exact terms), `message` (full
//! text, the default field), `attributes` (JSON: `attributes.key:value`),
//! plus the store's `timestamp` (ms).

pub mod api;
pub mod record;

use tantivy::TantivyDocument;
use tantivy::schema::{Field, STRING, Schema, SchemaBuilder, TEXT};

pub use crate::index_store::{IndexConfig as LogConfig, IndexError as LogError, Page};
use crate::index_store::{IndexStore, Record, add_text, attributes_options};
pub use record::LogRecord;

/// The log store.
pub type LogStore = IndexStore<LogRecord>;

/// Check a log query (tantivy syntax, the log fields) without a store;
/// the error names the position or the unknown field.
pub fn check_query(q: &str) -> Result<(), String> {
    crate::index_store::check_query::<LogRecord>(q).map_err(|e| e.to_string())
}

impl Record for LogRecord {
    fn timestamp_ns(&self) -> i64 {
        self.timestamp_ns
    }

    fn schema(b: &mut SchemaBuilder) -> Vec<Field> {
        for keyword in [
            "level", "severity", "service", "host", "trace_id", "span_id",
        ] {
            b.add_text_field(keyword, STRING);
        }
        b.add_json_field("attributes", attributes_options());
        vec![b.add_text_field("message", TEXT)]
    }

    fn index(&self, schema: &Schema, doc: &mut TantivyDocument) {
        for (field, v) in [
            ("level", &self.level),
            ("severity", &self.level),
            ("service", &self.service),
            ("host", &self.host),
            ("trace_id", &self.trace_id),
            ("span_id", &self.span_id),
            ("message", &self.message),
        ] {
            add_text(schema, doc, field, v);
        }
        if !self.attributes.is_empty()
            && let Ok(f) = schema.get_field("attributes")
        {
            doc.add_field_value(
                f,
                &tantivy::schema::OwnedValue::from(self.attributes.clone()),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value as J;
    use std::path::Path;

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

    #[test]
    fn a_partition_made_when_timestamps_were_also_terms_still_opens_and_answers() {
        use tantivy::schema::{FAST, INDEXED};
        let dir = tempfile::tempdir().expect("tempdir");
        let day = 24 * 3_600_000;
        let start = T0.div_euclid(day) * day;
        let part = dir.path().join("partitions").join(start.to_string());
        std::fs::create_dir_all(&part).expect("mkdir");
        let (old, _) = crate::index_store::schema_with::<LogRecord>((INDEXED | FAST).into());
        tantivy::Index::create_in_dir(&part, old.clone()).expect("old partition");
        let s = store(dir.path());
        s.append(corpus(20), T0).expect("append");
        let mut later = corpus(10);
        for r in &mut later {
            r.timestamp_ns += 2 * day * 1_000_000;
        }
        s.append(later, T0 + 2 * day).expect("append");
        s.commit().expect("commit");
        assert_eq!(s.partitions().len(), 2);
        let reopened = tantivy::Index::open_in_dir(&part).expect("open");
        assert_eq!(reopened.schema(), old, "the old partition keeps its schema");
        // Time ranges and paging read the columns in both partitions.
        assert_eq!(s.count("*", T0, T0 + 4_999).expect("count"), 5);
        assert_eq!(s.count("*", 0, i64::MAX).expect("count"), 30);
        assert_eq!(all_pages(&s, "request", 7).len(), 20);
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("mkdir");
        for e in std::fs::read_dir(from).expect("read_dir").flatten() {
            if e.path().is_dir() {
                copy_dir(&e.path(), &to.join(e.file_name()));
            } else {
                std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
            }
        }
    }

    /// A log store written by Keel before SSTable term dictionaries (30
    /// records, `timestamp`/`order` indexed as terms too).
    const V1_PARTITION: i64 = 1_796_083_200_000;

    fn v1_store(dir: &Path) {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/logs-v1");
        copy_dir(&fixture, dir);
    }

    fn v1_answers(s: &LogStore) {
        assert_eq!(s.count("*", 0, i64::MAX).expect("count"), 30);
        let page = s
            .search("level:error", 0, i64::MAX, 100, None)
            .expect("search");
        let seqs: Vec<u64> = page.records.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, vec![30, 27, 24, 21, 18, 15, 12, 9, 6, 3]);
        assert_eq!(page.records[0].1.message, "request 29 handled");
        let one = s
            .search(
                "trace_id:0000000000000000000000000000001e",
                0,
                i64::MAX,
                10,
                None,
            )
            .expect("search");
        assert_eq!(one.records.len(), 1);
        assert_eq!(
            s.count("\"upstream timeout\"", 0, i64::MAX).expect("count"),
            5
        );
    }

    #[test]
    fn a_partition_from_before_sstable_dictionaries_is_indexed_again_losing_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        v1_store(dir.path());
        let now = V1_PARTITION + 3_600_000;
        let s = LogStore::open(dir.path(), LogConfig::default(), now).expect("open");
        v1_answers(&s);
        // Sequence numbers go on from the old partition's, into it.
        let mut more = corpus(1);
        more[0].message = "after the rebuild".into();
        s.append(more, now).expect("append");
        s.commit().expect("commit");
        let page = s
            .search("\"after the rebuild\"", 0, i64::MAX, 10, None)
            .expect("search");
        assert_eq!(
            page.records.iter().map(|r| r.0).collect::<Vec<_>>(),
            vec![31]
        );
        assert_eq!(s.partitions().len(), 1);
        drop(s);
        let names: Vec<String> = std::fs::read_dir(dir.path().join("partitions"))
            .expect("read_dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![V1_PARTITION.to_string()]);
        let s = LogStore::open(dir.path(), LogConfig::default(), now).expect("reopen");
        assert_eq!(s.count("*", 0, i64::MAX).expect("count"), 31);
    }

    #[test]
    fn a_rebuild_cut_short_at_any_step_is_finished_or_undone_on_open() {
        // A rebuilt partition to stand in for a finished `.new`.
        let built = tempfile::tempdir().expect("tempdir");
        v1_store(built.path());
        drop(LogStore::open(built.path(), LogConfig::default(), V1_PARTITION).expect("open"));
        let part = |root: &Path, suffix: &str| {
            root.join("partitions")
                .join(format!("{V1_PARTITION}{suffix}"))
        };
        let old_fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/logs-v1/partitions")
            .join(V1_PARTITION.to_string());
        // (name of the old partition's copy, whether a finished .new exists)
        for (old_as, new_done) in [("", false), ("", true), (".old", true)] {
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::create_dir_all(dir.path().join("partitions")).expect("mkdir");
            std::fs::write(dir.path().join("wal.log"), b"").expect("wal");
            copy_dir(&old_fixture, &part(dir.path(), old_as));
            let new = part(dir.path(), ".new");
            if new_done {
                copy_dir(&part(built.path(), ""), &new);
            } else {
                // Torn: a directory with half a segment in it.
                std::fs::create_dir_all(&new).expect("mkdir");
                std::fs::write(new.join("meta.json"), b"{").expect("write");
            }
            let s = LogStore::open(dir.path(), LogConfig::default(), V1_PARTITION)
                .unwrap_or_else(|e| panic!("{old_as} {new_done}: {e}"));
            v1_answers(&s);
            assert!(!new.exists() && !part(dir.path(), ".old").exists());
        }
        // The swap's last step undone: old moved aside, no .new yet.
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("wal.log"), b"").expect("wal");
        copy_dir(&old_fixture, &part(dir.path(), ".old"));
        let s = LogStore::open(dir.path(), LogConfig::default(), V1_PARTITION).expect("open");
        v1_answers(&s);
    }

    #[test]
    fn a_batch_id_is_kept_across_reopens_and_recovered_from_the_wal_after_a_crash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(dir.path());
        assert_eq!(
            s.append_batch(corpus(4), T0, Some(7)).expect("append"),
            Some(4)
        );
        assert_eq!(s.append_batch(corpus(4), T0, Some(7)).expect("again"), None);
        s.commit().expect("commit");
        drop(s);
        let s = store(dir.path());
        assert_eq!(
            s.append_batch(corpus(4), T0, Some(7))
                .expect("after reopen"),
            None
        );
        // Logged but not committed, and batch-ids.log lost its line (a
        // crash between the two writes): replay finds the id in the WAL.
        assert_eq!(
            s.append_batch(corpus(2), T0, Some(8)).expect("append"),
            Some(2)
        );
        drop(s);
        let ids = dir.path().join("batch-ids.log");
        let text = std::fs::read_to_string(&ids).expect("ids");
        assert!(text.contains(&format!("{:032x}", 8)));
        let kept: String = text
            .lines()
            .filter(|l| !l.starts_with(&format!("{:032x}", 8)))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&ids, kept).expect("cut");
        let s = store(dir.path());
        assert!(s.has_batch(8), "recovered from the WAL");
        assert_eq!(s.append_batch(corpus(2), T0, Some(8)).expect("retry"), None);
        assert_eq!(s.count("*", 0, i64::MAX).expect("count"), 6);
    }
}
