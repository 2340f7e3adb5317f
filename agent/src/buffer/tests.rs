use super::*;

fn batch(id: u128, size: usize) -> Batch {
    Batch {
        id,
        signal: Signal::ALL[(id % 3) as usize],
        records: id as u32,
        created_ms: 1_700_000_000_000 + id as i64,
        cursor: None,
        body: vec![(id % 251) as u8; size],
    }
}

fn drain(b: &mut DiskBuffer) -> Vec<u128> {
    let mut out = Vec::new();
    while let Some(x) = b.peek().expect("peek") {
        assert_eq!(x, batch(x.id, x.body.len()));
        out.push(x.id);
        b.ack(x.id).expect("ack");
    }
    out
}

#[test]
fn each_signal_is_its_own_lane_and_old_metrics_hold_fresh_ones_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut b = DiskBuffer::open(dir.path(), 1 << 30, false).expect("open");
    let at = |id: u128, signal: Signal, created_ms: i64| Batch {
        signal,
        created_ms,
        ..batch(id, 100)
    };
    let fresh = |b: &DiskBuffer, s: Signal, window: i64| {
        b.peek_fresh(s, window).expect("peek").map(|x| x.id)
    };
    let oldest = |b: &DiskBuffer, s: Signal| b.peek_signal(s).expect("peek").map(|x| x.id);
    // A backlog of logs, then fresh logs: the newest goes ahead.
    for i in 1..=5 {
        b.push(&at(i, Signal::Logs, 1_000 * i as i64))
            .expect("push");
    }
    assert_eq!(fresh(&b, Signal::Logs, 60_000), Some(5));
    b.ack(5).expect("ack");
    assert_eq!(b.stats().batches, 4);
    assert_eq!(fresh(&b, Signal::Logs, 60_000), Some(4));
    assert_eq!(oldest(&b, Signal::Logs), Some(1), "the backlog is unmoved");
    // Metrics behind the log backlog are their own lane's oldest.
    assert_eq!(oldest(&b, Signal::Metrics), None);
    b.push(&at(6, Signal::Metrics, 0)).expect("push");
    b.push(&at(7, Signal::Logs, 3_600_000)).expect("push");
    b.push(&at(8, Signal::Metrics, 3_600_000)).expect("push");
    assert_eq!(oldest(&b, Signal::Metrics), Some(6));
    assert_eq!(oldest(&b, Signal::Traces), None);
    // Each lane's lag is its own oldest batch's age.
    assert_eq!(b.oldest_created_ms(Signal::Metrics), Some(0));
    assert_eq!(b.oldest_created_ms(Signal::Logs), Some(1_000));
    assert_eq!(b.oldest_created_ms(Signal::Traces), None);
    assert_eq!(fresh(&b, Signal::Traces, 60_000), None);
    // Metrics an hour older than a fresh metrics batch: the fresh one
    // waits (the collector would reject the older samples after it),
    // while a fresh log batch still goes.
    assert_eq!(fresh(&b, Signal::Metrics, 60_000), None);
    assert_eq!(fresh(&b, Signal::Logs, 60_000), Some(7));
    b.ack(7).expect("ack");
    assert_eq!(
        fresh(&b, Signal::Metrics, 3_600_000),
        Some(8),
        "within the window it may go"
    );
    // Acknowledged out of order, lane by lane: batch 6 is not the
    // oldest of all, so the head stays at batch 1.
    b.ack(6).expect("ack");
    assert_eq!(oldest(&b, Signal::Metrics), Some(8));
    assert_eq!(b.peek().expect("peek").map(|x| x.id), Some(1));
    // After a crash, batches acknowledged ahead of the head come back
    // (the collector drops the repeats by id); nothing is lost.
    drop(b);
    let mut b = DiskBuffer::open(dir.path(), 1 << 30, false).expect("reopen");
    assert_eq!(
        std::iter::from_fn(|| {
            let x = b.peek().expect("peek")?;
            b.ack(x.id).expect("ack");
            Some(x.id)
        })
        .collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6, 7, 8]
    );
    assert_eq!(fresh(&b, Signal::Logs, 60_000), None, "empty");
    b.push(&at(9, Signal::Logs, 0)).expect("push");
    assert_eq!(
        fresh(&b, Signal::Logs, 60_000),
        None,
        "the only batch is the backlog's"
    );
}

#[test]
fn a_lane_stuck_on_one_signal_cannot_pin_the_disk_past_its_cap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cap = 3 * SEGMENT_BYTES;
    let mut b = DiskBuffer::open(dir.path(), cap, false).expect("open");
    let on_disk = || -> u64 {
        std::fs::read_dir(dir.path())
            .expect("list")
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    };
    // Logs the collector keeps refusing, between metrics it takes: the
    // unsent bytes stay small, but each log batch holds its segment.
    for i in 0..400u128 {
        let log = Batch {
            signal: Signal::Logs,
            ..batch(2 * i + 1, 1_000)
        };
        let metrics = Batch {
            signal: Signal::Metrics,
            ..batch(2 * i + 2, 100_000)
        };
        b.push(&log).expect("push");
        b.push(&metrics).expect("push");
        b.ack(metrics.id).expect("ack");
        assert!(
            on_disk() <= cap + 2 * SEGMENT_BYTES,
            "{} bytes on disk after {} pairs",
            on_disk(),
            i + 1
        );
    }
    let stats = b.stats();
    assert!(stats.dropped_batches[Signal::Logs.index()] > 0, "{stats:?}");
    assert_eq!(stats.dropped_batches[Signal::Metrics.index()], 0);
    // The newest logs are still there, oldest first.
    let left: Vec<u128> = std::iter::from_fn(|| {
        let x = b.peek().expect("peek")?;
        b.ack(x.id).expect("ack");
        Some(x.id)
    })
    .collect();
    assert!(left.len() > 1 && left.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(left.last(), Some(&799));
}

#[test]
fn batches_come_back_in_order_across_segments_and_reopens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut b = DiskBuffer::open(dir.path(), 1 << 30, false).expect("open");
    for id in 1..=30 {
        b.push(&batch(id, 300_000)).expect("push");
    }
    let first = b.peek().expect("peek").expect("one");
    b.ack(first.id).expect("ack");
    drop(b);
    let mut b = DiskBuffer::open(dir.path(), 1 << 30, false).expect("reopen");
    assert_eq!(b.stats().batches, 29);
    assert_eq!(drain(&mut b), (2..=30).collect::<Vec<_>>());
    drop(b);
    let mut b = DiskBuffer::open(dir.path(), 1 << 30, false).expect("reopen");
    assert_eq!(b.peek().expect("peek"), None);
    b.push(&batch(31, 10)).expect("push");
    assert_eq!(drain(&mut b), vec![31]);
    let segs = std::fs::read_dir(dir.path())
        .expect("ls")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .count();
    assert_eq!(segs, 1, "acknowledged segments are deleted");
}

#[test]
fn a_torn_tail_at_any_byte_is_cut_and_the_whole_batches_before_it_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut b = DiskBuffer::open(dir.path(), 1 << 30, false).expect("open");
    for id in 1..=3 {
        b.push(&batch(id, 100)).expect("push");
    }
    drop(b);
    let seg = seg_path(dir.path(), 1);
    let whole = std::fs::read(&seg).expect("read");
    let frame = whole.len() / 3;
    for cut in (2 * frame + 1)..whole.len() {
        std::fs::write(&seg, &whole[..cut]).expect("write");
        let mut b = DiskBuffer::open(dir.path(), 1 << 30, false).expect("opens");
        assert_eq!(b.stats().torn_bytes, (cut - 2 * frame) as u64);
        // Appends go on after the cut, and read back whole.
        b.push(&batch(9, 50)).expect("push");
        drop(b);
        let mut b = DiskBuffer::open(dir.path(), 1 << 30, false).expect("reopen");
        assert_eq!(b.stats().torn_bytes, 0);
        let ids: Vec<u128> = {
            let mut v = Vec::new();
            while let Some(x) = b.peek().expect("peek") {
                v.push(x.id);
                b.ack(x.id).expect("ack");
            }
            v
        };
        assert_eq!(ids, vec![1, 2, 9], "cut at {cut}");
        std::fs::remove_file(dir.path().join("head")).expect("rm head");
        std::fs::write(&seg, &whole).expect("restore");
    }
    // A flipped bit in the middle frame ends the segment there too.
    let mut bad = whole.clone();
    bad[frame + FRAME_HEADER + 3] ^= 1;
    std::fs::write(&seg, &bad).expect("write");
    let mut b = DiskBuffer::open(dir.path(), 1 << 30, false).expect("opens");
    assert_eq!(drain(&mut b), vec![1]);
}

#[test]
fn past_the_cap_the_oldest_batches_are_dropped_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut b = DiskBuffer::open(dir.path(), 1 << 20, false).expect("open");
    for id in 1..=40 {
        b.push(&batch(id, 100_000)).expect("push");
    }
    let s = b.stats();
    assert!(s.bytes <= 1 << 20, "{s:?}");
    let kept = s.batches as u128;
    assert_eq!(kept, 10);
    let dropped: u64 = s.dropped_batches.iter().sum();
    assert_eq!(dropped, 30);
    let dropped_records: u64 = s.dropped_records.iter().sum();
    assert_eq!(dropped_records, (1..=30).sum::<u64>());
    assert_eq!(drain(&mut b), (31..=40).collect::<Vec<_>>());
}

#[test]
fn cursors_survive_reopens_acknowledgements_and_segment_rolls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut b = DiskBuffer::open(dir.path(), 1 << 30, false).expect("open");
    let at = |key: &str, offset: u64| Cursor {
        key: key.into(),
        inode: 7,
        offset,
    };
    for i in 1..=40u64 {
        let mut x = batch(u128::from(i), 300_000);
        x.cursor = Some(at(if i % 2 == 0 { "/a.log" } else { "/b.log" }, i * 10));
        b.push(&x).expect("push");
    }
    // Send (and forget) all but the last: older segments are deleted.
    for _ in 0..39 {
        let x = b.peek().expect("peek").expect("batch");
        assert_eq!(x.body.len(), 300_000);
        b.ack(x.id).expect("ack");
    }
    drop(b);
    let b = DiskBuffer::open(dir.path(), 1 << 30, false).expect("reopen");
    let mut got: Vec<Cursor> = b.cursors().to_vec();
    got.sort_by(|x, y| x.key.cmp(&y.key));
    assert_eq!(got, vec![at("/a.log", 400), at("/b.log", 390)]);
    assert_eq!(b.stats().batches, 1);
    let segs = std::fs::read_dir(dir.path())
        .expect("ls")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .count();
    assert_eq!(segs, 1);
}
