use super::*;

fn h(k: i64) -> Histogram {
    Histogram {
        schema: 2,
        zero_threshold: 1e-128,
        count: (4 * k) as f64,
        sum: k as f64 * 2.5,
        positive: vec![(1, k as f64), (3, (3 * k) as f64)],
        ..Histogram::default()
    }
}

fn labels(name: &str) -> Labels {
    Labels::new(vec![("__name__", name), ("job", "api")])
}

fn batch(name: &str, ks: std::ops::Range<i64>) -> Vec<(Labels, Vec<(i64, Histogram)>)> {
    vec![(labels(name), ks.map(|k| (k * 1000, h(k))).collect())]
}

fn all(store: &Histograms) -> Vec<(i64, Histogram)> {
    let m = [Matcher::Equal("__name__".into(), "lat".into())];
    store
        .select(&m, i64::MIN, i64::MAX)
        .into_iter()
        .flat_map(|(_, s)| s)
        .collect()
}

#[test]
fn samples_come_back_across_sealed_and_open_chunks_and_old_ones_are_refused() {
    let store = Histograms::in_memory();
    let mut out = Appended::default();
    store
        .append(batch("lat", 1..300), &mut out, None)
        .expect("stored");
    assert_eq!(out.accepted, 299);
    let got = all(&store);
    assert_eq!(got.len(), 299);
    assert_eq!(got[150], (151_000, h(151)));
    // A time already stored with another value, and an older one.
    let mut out = Appended::default();
    store
        .append(
            vec![(
                labels("lat"),
                vec![(299_000, h(1)), (5_000, h(5)), (299_000, h(299))],
            )],
            &mut out,
            None,
        )
        .expect("answered");
    assert_eq!((out.accepted, out.duplicate, out.too_old), (0, 1, 1));
    let m = [Matcher::Equal("__name__".into(), "lat".into())];
    let window = store.select(&m, 10_000, 12_000);
    assert_eq!(
        window[0].1.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
        vec![10_000, 11_000, 12_000]
    );
    assert!(
        store
            .select(
                &[Matcher::Equal("__name__".into(), "other".into())],
                0,
                i64::MAX
            )
            .is_empty()
    );
}

#[test]
fn a_schema_change_starts_a_new_chunk_without_losing_samples() {
    let store = Histograms::in_memory();
    let mut coarse = h(4);
    coarse.schema = 0;
    let mut out = Appended::default();
    store
        .append(
            vec![(
                labels("lat"),
                vec![(1, h(1)), (2, coarse.clone()), (3, h(3))],
            )],
            &mut out,
            None,
        )
        .expect("stored");
    assert_eq!(all(&store), vec![(1, h(1)), (2, coarse), (3, h(3))]);
}

#[test]
fn the_log_and_segments_bring_everything_back_after_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    {
        let store = Histograms::open(dir.path(), Fsync::Batch).expect("opens");
        store
            .append(batch("lat", 1..250), &mut Appended::default(), None)
            .expect("stored");
        // Two chunks sealed go to a segment; the log keeps the open one.
        assert_eq!(store.persist(i64::MIN).expect("persists"), 2);
        store
            .append(batch("lat", 250..260), &mut Appended::default(), None)
            .expect("stored");
    }
    let store = Histograms::open(dir.path(), Fsync::Batch).expect("reopens");
    let got = all(&store);
    assert_eq!(got.len(), 259);
    assert_eq!(got[258], (259_000, h(259)));
    assert_eq!(got[0], (1_000, h(1)));
}

#[test]
fn a_crash_between_segment_and_log_rewrite_does_not_double_samples() {
    let dir = tempfile::tempdir().expect("dir");
    {
        let store = Histograms::open(dir.path(), Fsync::Batch).expect("opens");
        store
            .append(batch("lat", 1..250), &mut Appended::default(), None)
            .expect("stored");
        store.persist(i64::MIN).expect("persists");
    }
    // Put back the log as it was before the rewrite: all 249 samples.
    let log = dir.path().join("histograms/wal.log");
    let mut rec = Vec::new();
    frame(&mut rec, &encode_batch(&batch("lat", 1..250))).expect("framed");
    std::fs::write(&log, &rec).expect("written");
    let store = Histograms::open(dir.path(), Fsync::Batch).expect("reopens");
    let got = all(&store);
    assert_eq!(got.len(), 249);
    assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
}

#[test]
fn a_torn_log_tail_is_cut_and_a_corrupt_segment_is_named() {
    let dir = tempfile::tempdir().expect("dir");
    {
        let store = Histograms::open(dir.path(), Fsync::Batch).expect("opens");
        store
            .append(batch("lat", 1..10), &mut Appended::default(), None)
            .expect("stored");
    }
    let log = dir.path().join("histograms/wal.log");
    let mut bytes = std::fs::read(&log).expect("read");
    bytes.extend_from_slice(&[9, 9, 9]);
    std::fs::write(&log, &bytes).expect("written");
    let store = Histograms::open(dir.path(), Fsync::Batch).expect("reopens");
    assert_eq!(all(&store).len(), 9);
    drop(store);
    let seg = dir
        .path()
        .join("histograms/0000000000001-0000000000002.seg");
    std::fs::write(&seg, b"not a segment at all").expect("written");
    let err = Histograms::open(dir.path(), Fsync::Batch).expect_err("refused");
    assert!(
        err.to_string().contains("0000000000001-0000000000002.seg"),
        "{err}"
    );
}

#[test]
fn retention_deletes_old_segments_and_chunks() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Histograms::open(dir.path(), Fsync::Never).expect("opens");
    store
        .append(batch("lat", 1..250), &mut Appended::default(), None)
        .expect("stored");
    store.persist(i64::MIN).expect("persists");
    let segs = || {
        std::fs::read_dir(dir.path().join("histograms"))
            .expect("dir")
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
            .count()
    };
    assert_eq!(segs(), 1);
    // Everything before 245 s goes: the segment (to 240 s) and its chunks.
    store.persist(245_000).expect("retention");
    assert_eq!(segs(), 0);
    let got = all(&store);
    assert_eq!(got.first().map(|(t, _)| *t), Some(245_000));
}

#[test]
fn what_is_taken_and_only_that_is_handed_on_in_order() {
    let store = Histograms::in_memory();
    let handed: std::sync::Mutex<Vec<i64>> = Default::default();
    let sink = |b: &[keel_series::SeriesHistograms]| {
        let mut h = handed.lock().expect("lock");
        h.extend(b.iter().flat_map(|(_, s)| s.iter().map(|(t, _)| *t)));
    };
    store
        .append(batch("lat", 1..4), &mut Appended::default(), Some(&sink))
        .expect("stored");
    // An old sample and a resend are not handed on; the new one is.
    let mut out = Appended::default();
    store
        .append(batch("lat", 2..6), &mut out, Some(&sink))
        .expect("stored");
    assert_eq!(out.accepted, 2);
    assert_eq!(
        *handed.lock().expect("lock"),
        vec![1_000, 2_000, 3_000, 4_000, 5_000]
    );
}

#[test]
fn the_newest_sample_of_each_series_is_found_within_a_window() {
    let store = Histograms::in_memory();
    // 300 samples: two sealed chunks and an open one.
    store
        .append(batch("lat", 1..300), &mut Appended::default(), None)
        .expect("stored");
    let m = [Matcher::Equal("__name__".into(), "lat".into())];
    let got = store.newest(&m, 250_000, 400_000);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, (299_000, h(299)));
    // Its newest sample is older than the window: nothing.
    assert!(store.newest(&m, 300_000, 400_000).is_empty());
    let other = [Matcher::Equal("__name__".into(), "other".into())];
    assert!(store.newest(&other, 0, 400_000).is_empty());
}

#[test]
fn custom_buckets_keep_their_bounds_through_the_log_segments_and_a_restart() {
    let bounds: std::sync::Arc<[f64]> = std::sync::Arc::from([0.05, 0.1, 0.5]);
    let wider: std::sync::Arc<[f64]> = std::sync::Arc::from([0.05, 0.1, 0.5, 1.0]);
    let custom = |k: i64, b: &std::sync::Arc<[f64]>| Histogram {
        schema: keel_series::histogram::CUSTOM_SCHEMA,
        count: (3 * k) as f64,
        sum: k as f64 * 0.25,
        positive: vec![(0, k as f64), (2, (2 * k) as f64)],
        // Each sample its own copy, as decoded from a request.
        custom_values: std::sync::Arc::from(b.to_vec()),
        ..Histogram::default()
    };
    let want: Vec<(i64, Histogram)> = (1..200)
        .map(|k| (k * 1000, custom(k, if k < 150 { &bounds } else { &wider })))
        .collect();
    let dir = tempfile::tempdir().expect("dir");
    {
        let store = Histograms::open(dir.path(), Fsync::Batch).expect("opens");
        store
            .append(
                vec![(labels("lat"), want[..180].to_vec())],
                &mut Appended::default(),
                None,
            )
            .expect("stored");
        // 120, then the rest up to the change of bounds, are sealed.
        assert_eq!(store.persist(i64::MIN).expect("persists"), 2);
        store
            .append(
                vec![(labels("lat"), want[180..].to_vec())],
                &mut Appended::default(),
                None,
            )
            .expect("stored");
        // In the head, a series' samples hold their bounds once.
        let s = store.series.read().expect("not poisoned");
        let open = &s.values().next().expect("one series").open;
        assert!(
            open.windows(2)
                .all(|w| std::sync::Arc::ptr_eq(&w[0].1.custom_values, &w[1].1.custom_values)),
            "the open chunk's samples share one allocation of bounds"
        );
    }
    let store = Histograms::open(dir.path(), Fsync::Batch).expect("reopens");
    assert_eq!(all(&store), want);
}
