//! The store's own tests: the head, the WAL and blocks together.

use super::*;
use crate::head::{CHUNK_SAMPLES, Series, push_posting};

fn l(name: &str, job: &str) -> Labels {
    Labels::new(vec![("__name__", name), ("job", job)])
}

#[test]
fn a_series_slot_stays_within_88_bytes() {
    // Every active series pays this; the memory goal is 1 kB a series.
    assert!(
        std::mem::size_of::<Series>() <= 88,
        "Series is {} bytes",
        std::mem::size_of::<Series>()
    );
}

#[test]
fn a_batch_id_seen_before_stores_nothing_even_after_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let batch = || {
        vec![
            (l("up", "a"), vec![(10_000, 1.0)]),
            (l("up", "b"), vec![(10_000, 1.0)]),
        ]
    };
    let store = Store::open(dir.path(), StoreConfig::default()).expect("open");
    let first = store.append_batch(batch(), Some(42), 1).expect("append");
    assert_eq!(first.map(|a| a.accepted), Some(2));
    assert!(
        store
            .append_batch(batch(), Some(42), 2)
            .expect("again")
            .is_none()
    );
    drop(store);
    let store = Store::open(dir.path(), StoreConfig::default()).expect("reopen");
    assert!(
        store
            .append_batch(batch(), Some(42), 3)
            .expect("retry")
            .is_none()
    );
    // Without a known id the same samples still add nothing.
    let other = store.append_batch(batch(), Some(43), 3).expect("other id");
    assert_eq!(other.map(|a| a.accepted), Some(0));
    let got = store.select(&[Matcher::Equal("job".into(), "a".into())], 0, 30_000);
    assert_eq!(got[0].1, vec![(10_000, 1.0)]);
}

#[test]
fn long_postings_lists_grow_by_an_eighth() {
    let mut refs = Vec::new();
    for r in 0..10_000 {
        push_posting(&mut refs, r);
    }
    assert_eq!(refs.len(), 10_000);
    assert!(
        refs.capacity() <= 10_000 + 10_000 / 8,
        "{}",
        refs.capacity()
    );
}

#[test]
fn out_of_order_within_the_window_is_kept_older_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(
        dir.path(),
        StoreConfig {
            out_of_order_window_ms: 1000,
            ..StoreConfig::default()
        },
    )
    .expect("open");
    let a = store
        .append(vec![(l("up", "a"), vec![(10_000, 1.0), (20_000, 2.0)])])
        .expect("append");
    assert_eq!(a.accepted, 2);
    let b = store
        .append(vec![(
            l("up", "a"),
            vec![(19_500, 1.5), (5_000, 0.5), (20_000, 2.0), (20_000, 9.0)],
        )])
        .expect("append");
    assert_eq!((b.accepted, b.too_old, b.duplicate), (1, 1, 1));
    let got = store.select(&[Matcher::Equal("job".into(), "a".into())], 0, 30_000);
    assert_eq!(got[0].1, vec![(10_000, 1.0), (19_500, 1.5), (20_000, 2.0)]);
}

#[test]
fn samples_come_back_bit_for_bit_across_sealed_chunks() {
    let store = Store::in_memory(StoreConfig::default());
    let a = l("x", "a");
    let sent: Vec<(i64, f64)> = (0..2 * CHUNK_SAMPLES as i64)
        .map(|i| {
            let v = match i % 50 {
                7 => f64::NAN,
                9 => -0.0,
                _ => (i * 37 % 101) as f64 / 100.0,
            };
            (i * 15_000, v)
        })
        .collect();
    for chunk in sent.chunks(7) {
        store
            .append(vec![(a.clone(), chunk.to_vec())])
            .expect("append");
    }
    // Exactly two full chunks: both sealed, the open chunk empty.
    assert_eq!(store.stats().open_chunk_samples, 0);
    let bits = |v: &[(i64, f64)]| v.iter().map(|(t, x)| (*t, x.to_bits())).collect::<Vec<_>>();
    let got = store.select(&[Matcher::Equal("job".into(), "a".into())], 0, i64::MAX);
    assert_eq!(bits(&got[0].1), bits(&sent));
    let last = sent[sent.len() - 1];
    assert_eq!(
        store.last(&a).map(|(t, v)| (t, v.to_bits())),
        Some((last.0, last.1.to_bits()))
    );
    // A window inside the second chunk, and an out-of-order sample in it.
    let mid = store.select(
        &[Matcher::Equal("job".into(), "a".into())],
        130 * 15_000,
        132 * 15_000,
    );
    assert_eq!(bits(&mid[0].1), bits(&sent[130..=132]));
    store
        .append(vec![(a.clone(), vec![(last.0 - 7_500, 4.25)])])
        .expect("append");
    let tail = store.select(
        &[Matcher::Equal("job".into(), "a".into())],
        last.0 - 15_000,
        last.0,
    );
    assert_eq!(tail[0].1.len(), 3);
    assert_eq!(tail[0].1[1], (last.0 - 7_500, 4.25));
}

#[test]
fn everything_acknowledged_is_there_after_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(dir.path(), StoreConfig::default()).expect("open");
        for i in 0..500 {
            store
                .append(vec![
                    (l("x", "a"), vec![(i * 1000, i as f64)]),
                    (l("x", "b"), vec![(i * 1000, 1.0)]),
                ])
                .expect("append");
        }
    }
    let store = Store::open(dir.path(), StoreConfig::default()).expect("reopen");
    let got = store.select(
        &[Matcher::Equal("__name__".into(), "x".into())],
        0,
        i64::MAX,
    );
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|(_, s)| s.len() == 500));
    assert_eq!(store.stats().samples, 1000);
    let re = regex::Regex::new("^(?:b)$").expect("re");
    assert_eq!(
        store
            .series(&[Matcher::Regex("job".into(), re)], 0, i64::MAX)
            .len(),
        1
    );
    assert_eq!(store.label_values("job"), ["a", "b"]);
}

#[test]
fn the_head_is_cut_into_blocks_that_survive_reopen_and_expire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hour = 3_600_000;
    let cfg = StoreConfig {
        block_ms: 2 * hour,
        retention_ms: 24 * hour,
        ..StoreConfig::default()
    };
    let store = Store::open(dir.path(), cfg.clone()).expect("open");
    // 5 hours of 15 s samples for 3 series, in minute-sized batches.
    let t0 = 1_700_000_000_000i64 / hour * hour;
    for m in 0..300 {
        let batch = (0..3)
            .map(|s| {
                (
                    l("x", &format!("s{s}")),
                    (0..4)
                        .map(|k| (t0 + m * 60_000 + k * 15_000, (m * 4 + k) as f64))
                        .collect(),
                )
            })
            .collect();
        store.append(batch).expect("append");
    }
    let written = store.compact(t0 + 5 * hour).expect("compact");
    assert_eq!(written, 1);
    let blocks = store.blocks();
    assert_eq!(blocks.len(), 1);
    assert!(
        blocks[0].1 < t0 + 5 * hour - hour,
        "the newest hour stays in the head: {blocks:?}"
    );
    let all = |s: &Store| {
        let got = s.select(
            &[Matcher::Equal("__name__".into(), "x".into())],
            0,
            i64::MAX,
        );
        got.iter().map(|(_, v)| v.len()).sum::<usize>()
    };
    assert_eq!(all(&store), 3 * 1200, "every sample, across block and head");
    // Appends after the WAL rewrite refer to the rewritten series refs,
    // and a brand-new series gets a series record of its own.
    store
        .append(vec![
            (l("x", "s1"), vec![(t0 + 5 * hour, 1.0)]),
            (l("x", "s9"), vec![(t0 + 5 * hour, 2.0)]),
        ])
        .expect("append");
    let wal_after = store.stats().wal_bytes;
    drop(store);
    let store = Store::open(dir.path(), cfg).expect("reopen");
    assert_eq!(
        all(&store),
        3 * 1200 + 2,
        "no loss and no duplicate after reopen"
    );
    let s9 = store.select(&[Matcher::Equal("job".into(), "s9".into())], 0, i64::MAX);
    assert_eq!(s9[0].1, vec![(t0 + 5 * hour, 2.0)]);
    assert!(wal_after > 0);
    // A sample for a time the block already covers is refused.
    let late = store
        .append(vec![(l("x", "s0"), vec![(t0 + 60_000, 1.0)])])
        .expect("append");
    assert_eq!(late.too_old, 1);
    // Block bytes per sample on regular scrapes.
    let (_, _, n) = store.blocks()[0];
    let bytes = std::fs::metadata(
        store
            .blocks_dir()
            .expect("dir")
            .join(
                std::fs::read_dir(store.blocks_dir().expect("dir"))
                    .expect("ls")
                    .flatten()
                    .next()
                    .expect("block")
                    .file_name(),
            )
            .join("chunks.bin"),
    )
    .expect("meta")
    .len();
    assert!(
        (bytes as f64) / (n as f64) < 2.0,
        "{bytes} bytes for {n} samples"
    );
    // Retention deletes whole blocks.
    store.compact(t0 + 48 * hour).expect("compact");
    assert!(store.blocks().is_empty());
    assert!(
        std::fs::read_dir(store.blocks_dir().expect("dir"))
            .expect("ls")
            .next()
            .is_none()
    );
}

#[test]
fn a_bounded_select_stops_past_its_limit() {
    let store = Store::in_memory(StoreConfig::default());
    let batch: Vec<(Labels, Vec<(i64, f64)>)> = (0..10)
        .map(|i| {
            let id = i.to_string();
            (
                Labels::new(vec![("__name__", "m"), ("i", id.as_str())]),
                (0..100).map(|t| (t * 1000, t as f64)).collect(),
            )
        })
        .collect();
    store.append(batch).expect("append");
    let all = [Matcher::Equal("__name__".into(), "m".into())];
    assert!(store.select_bounded(&all, 0, i64::MAX, 999).is_none());
    let got = store.select_bounded(&all, 0, i64::MAX, 1000).expect("fits");
    assert_eq!(got.iter().map(|(_, s)| s.len()).sum::<usize>(), 1000);
}

#[test]
fn label_lookups_read_blocks_and_head_by_matchers_and_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hour = 3_600_000;
    let cfg = StoreConfig {
        block_ms: 2 * hour,
        retention_ms: 24 * hour,
        ..StoreConfig::default()
    };
    let store = Store::open(dir.path(), cfg).expect("open");
    let t0 = 1_700_000_000_000i64 / hour * hour;
    // `old` only in the first hour (it goes to a block); `x` throughout.
    for m in 0..300 {
        let t = t0 + m * 60_000;
        let mut batch = vec![
            (l("x", "a"), vec![(t, 1.0)]),
            (
                Labels::new(vec![("__name__", "x"), ("job", "b"), ("zone", "z1")]),
                vec![(t, 1.0)],
            ),
        ];
        if m < 60 {
            batch.push((l("old", "c"), vec![(t, 1.0)]));
        }
        store.append(batch).expect("append");
    }
    assert_eq!(store.compact(t0 + 5 * hour).expect("compact"), 1);
    let name = |n: &str| vec![Matcher::Equal("__name__".into(), n.into())];
    let all = (i64::MIN, i64::MAX);
    assert_eq!(store.label_values("__name__"), ["old", "x"], "blocks too");
    assert_eq!(
        store.label_values_in("job", &[], all.0, all.1),
        ["a", "b", "c"]
    );
    // After `old` ended: only what has data then.
    let late = (t0 + 3 * hour, t0 + 4 * hour);
    assert_eq!(
        store.label_values_in("__name__", &[], late.0, late.1),
        ["x"]
    );
    assert_eq!(
        store.label_values_in("job", &[], late.0, late.1),
        ["a", "b"]
    );
    assert_eq!(
        store.label_names_in(&[], late.0, late.1),
        ["__name__", "job", "zone"]
    );
    // Early: `old` from its block.
    let early = (t0, t0 + 30 * 60_000);
    assert_eq!(
        store.label_values_in("job", &[name("old")], early.0, early.1),
        ["c"]
    );
    // Matchers pick the series; a series without the label adds no value.
    assert_eq!(
        store.label_values_in("zone", &[name("x")], all.0, all.1),
        ["z1"]
    );
    assert_eq!(
        store.label_values_in(
            "job",
            &[
                name("old"),
                vec![Matcher::Equal("zone".into(), "z1".into())]
            ],
            all.0,
            all.1
        ),
        ["b", "c"]
    );
    assert_eq!(
        store.label_names_in(&[name("old")], all.0, all.1),
        ["__name__", "job"]
    );
    // Nothing before the first sample or after the last.
    assert!(store.label_values_in("job", &[], 0, t0 - 1).is_empty());
    assert!(
        store
            .label_names_in(&[], t0 + 6 * hour, i64::MAX)
            .is_empty()
    );
    assert!(
        store
            .series_labels(&[name("x")], t0 + 6 * hour, i64::MAX)
            .is_empty()
    );
    // Series: each once although block and head both hold `x`.
    assert_eq!(store.series_labels(&[name("x")], all.0, all.1).len(), 2);
    assert_eq!(store.series_labels(&[name("old")], late.0, late.1).len(), 0);
    assert_eq!(
        store.series_labels(&[name("old")], early.0, early.1).len(),
        1
    );
}

#[test]
fn cardinality_counts_series_by_name_and_pairs_largest_first() {
    let store = Store::in_memory(StoreConfig::default());
    let mut batch = Vec::new();
    for i in 0..5 {
        batch.push((l("big", &format!("j{i}")), vec![(1000, 1.0)]));
    }
    batch.push((l("small", "j0"), vec![(2000, 1.0)]));
    store.append(batch).expect("append");
    let c = store.cardinality(2);
    assert_eq!(c.head_stats.num_series, 6);
    assert_eq!(c.head_stats.num_label_pairs, 2 + 5);
    assert_eq!(c.head_stats.chunk_count, 6);
    assert_eq!((c.head_stats.min_time, c.head_stats.max_time), (1000, 2000));
    let names: Vec<(&str, u64)> = c
        .series_count_by_metric_name
        .iter()
        .map(|x| (x.name.as_str(), x.value))
        .collect();
    assert_eq!(names, [("big", 5), ("small", 1)]);
    assert_eq!(c.label_value_count_by_label_name[0].name, "job");
    assert_eq!(c.label_value_count_by_label_name[0].value, 5);
    assert_eq!(c.series_count_by_label_value_pair[0].name, "__name__=big");
    // "big" 3 bytes × 5 series + "small" 5 bytes × 1.
    let name_bytes = c
        .memory_in_bytes_by_label_name
        .iter()
        .find(|x| x.name == "__name__")
        .map(|x| x.value);
    assert_eq!(name_bytes, Some(20));
}

#[test]
fn regex_matchers_found_by_their_values_match_as_label_checks_do() {
    let store = Store::in_memory(StoreConfig::default());
    let mut batch: Vec<(Labels, Vec<(i64, f64)>)> = ["a", "b", "c", "a"]
        .iter()
        .enumerate()
        .map(|(i, job)| {
            let inst = format!("i{i}");
            (
                Labels::new(vec![("__name__", "x"), ("job", job), ("instance", &inst)]),
                vec![(1000, 1.0)],
            )
        })
        .collect();
    batch.push((Labels::new(vec![("__name__", "x")]), vec![(1000, 1.0)]));
    store.append(batch).expect("append");
    let re = |s: &str| regex::Regex::new(&format!("^(?:{s})$")).expect("re");
    let count = |ms: Vec<Matcher>| store.series_labels(&[ms], i64::MIN, i64::MAX).len();
    let name = || Matcher::Equal("__name__".into(), "x".into());
    assert_eq!(
        count(vec![name(), Matcher::Regex("job".into(), re("a|b"))]),
        3
    );
    assert_eq!(count(vec![Matcher::Regex("job".into(), re("a|b"))]), 3);
    // Matching the empty string: the series without the label too.
    assert_eq!(
        count(vec![name(), Matcher::Regex("job".into(), re("a|"))]),
        3
    );
    assert_eq!(
        count(vec![name(), Matcher::Regex("job".into(), re("zz"))]),
        0
    );
    assert_eq!(
        count(vec![
            Matcher::Regex("job".into(), re("a")),
            Matcher::Regex("instance".into(), re("i3|i1"))
        ]),
        1
    );
    assert_eq!(
        count(vec![name(), Matcher::NotRegex("job".into(), re("a"))]),
        3
    );
}

#[test]
fn native_histograms_survive_a_reopen_count_against_the_limits_and_expire() {
    use keel_series::Queryable;
    use keel_series::histogram::Histogram;
    let dir = tempfile::tempdir().expect("tempdir");
    let h = |c: f64| Histogram {
        count: c,
        sum: c,
        positive: vec![(1, c)],
        ..Histogram::default()
    };
    let config = StoreConfig {
        limits: SeriesLimits {
            max_series: 2,
            ..SeriesLimits::default()
        },
        retention_ms: 86_400_000,
        ..StoreConfig::default()
    };
    {
        let store = Store::open(dir.path(), config.clone()).expect("open");
        store
            .append(vec![(l("up", "a"), vec![(1_000, 1.0)])])
            .expect("floats");
        let got = store
            .append_histograms(vec![
                (
                    l("lat", "a"),
                    (1..=200).map(|k| (k * 1000, h(k as f64))).collect(),
                ),
                (l("lat", "b"), vec![(1_000, h(1.0))]),
            ])
            .expect("histograms");
        // One float series and one histogram series fill the limit of 2.
        assert_eq!((got.accepted, got.over_series_limit), (200, 1));
        // A block's time after the oldest sealed chunk: it goes to a
        // segment; the open chunk stays in the log.
        store.compact(7_300_000).expect("compacts");
        let segs = std::fs::read_dir(dir.path().join("histograms"))
            .expect("dir")
            .count();
        assert_eq!(segs, 2, "a segment beside the log");
    }
    let store = Store::open(dir.path(), config).expect("reopen");
    let m = [Matcher::Equal("__name__".into(), "lat".into())];
    let back = store.select_histograms(&m, 0, i64::MAX);
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].1.len(), 200);
    assert_eq!(back[0].1[199], (200_000, h(200.0)));
    // Lookups list them as they list float series.
    assert!(
        store
            .series_labels(&[], 0, i64::MAX)
            .contains(&l("lat", "a"))
    );
    assert!(store.series_labels(&[m.to_vec()], 0, i64::MAX) == vec![l("lat", "a")]);
    assert!(
        store
            .series_labels(&[m.to_vec()], 300_000, 400_000)
            .is_empty()
    );
    assert_eq!(
        store.label_values_in("__name__", &[], 0, i64::MAX),
        vec!["lat".to_owned(), "up".to_owned()]
    );
    assert_eq!(
        store.label_values_in("job", &[m.to_vec()], 0, i64::MAX),
        vec!["a".to_owned()]
    );
    assert!(
        store
            .label_names_in(&[m.to_vec()], 0, i64::MAX)
            .contains(&"job".to_owned())
    );
    // Past retention everything goes, segment files included.
    store.compact(200_000 + 86_400_001).expect("compacts");
    assert!(store.select_histograms(&m, 0, i64::MAX).is_empty());
}

#[test]
fn a_batch_arrives_from_each_source_at_its_newest_sample_however_its_series_are_grouped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("open");
    let src = |job: &str, instance: &str| {
        Labels::new(vec![
            ("__name__", "up"),
            ("instance", instance),
            ("job", job),
        ])
    };
    let batch = vec![
        (src("a", "1"), vec![(5, 1.0), (9, 1.0)]),
        (src("a", "1"), vec![(7, 1.0)]),
        (src("b", "1"), vec![(3, 1.0)]),
        (src("a", "1"), vec![(12, 1.0)]),
        (src("a", "2"), vec![]),
        (src("a", "2"), vec![(4, 1.0)]),
        (src("b", "1"), vec![(2, 1.0)]),
    ];
    assert!(store.arrival(&batch).is_none(), "no marks, nothing to mark");
    let clock: keel_core::clock::SharedClock =
        Arc::new(keel_core::clock::ManualClock::new(std::time::UNIX_EPOCH));
    store.set_marks(Arc::new(keel_core::marks::MarkLog::new(
        dir.path(),
        clock,
        std::time::Duration::from_secs(3600),
    )));
    let Some(Arrival(sources)) = store.arrival(&batch) else {
        panic!("marks are on");
    };
    assert_eq!(
        sources,
        vec![
            ("a".to_owned(), "1".to_owned(), 12),
            ("a".to_owned(), "2".to_owned(), 4),
            ("b".to_owned(), "1".to_owned(), 3),
        ]
    );
}
