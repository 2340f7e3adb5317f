use super::replication::hold_back;
use super::*;

fn cfg() -> DbConfig {
    DbConfig {
        products: 3,
        fsync: FsyncPolicy::Never,
        ..DbConfig::default()
    }
}

fn addr() -> SocketAddr {
    ([127, 0, 0, 1], 9).into()
}

/// `db-2`, opened in `dir` as a replica of [`addr`] at epoch 1.
fn replica_db2(dir: &Path) -> Node {
    Node::open("db-2", cfg(), Role::Replica { primary: addr() }, 1, dir).expect("open")
}

#[test]
fn an_apply_delay_holds_back_records_younger_than_it() {
    let rec = |lsn, ts_ms| Record {
        lsn,
        epoch: 1,
        ts_ms,
        op: Op::Epoch,
    };
    let pulled = PullResponse {
        records: vec![rec(1, 1_000), rec(2, 5_000), rec(3, 9_000)],
        epoch: 1,
        head_lsn: 3,
        head_bytes: 300,
        first_unsent_ts_ms: None,
        truncate_to: None,
        fenced: false,
    };
    let mut r = pulled.clone();
    assert_eq!(hold_back(&mut r, Duration::ZERO, 10_000), None);
    assert_eq!(r.records.len(), 3, "no delay, no change");
    let mut r = pulled.clone();
    assert_eq!(hold_back(&mut r, Duration::from_secs(4), 10_000), None);
    assert_eq!(r.records.iter().map(|r| r.lsn).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(
        r.first_unsent_ts_ms,
        Some(9_000),
        "the lag counts from the first held"
    );
    let mut r = pulled;
    let wait = hold_back(&mut r, Duration::from_secs(30), 10_000);
    assert!(r.records.is_empty());
    assert_eq!(r.first_unsent_ts_ms, Some(1_000));
    assert_eq!(
        wait,
        Some(Duration::from_millis(200)),
        "asks again soon, not in a hot loop"
    );
}

#[tokio::test]
async fn a_writer_from_a_newer_epoch_fences_the_old_primary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = Node::open("db-1", cfg(), Role::Primary, 1, dir.path()).expect("open");
    n.seed_if_empty().expect("seed");
    assert!(n.put("a".into(), 1.into(), 1).await.is_ok());
    let err = n.put("b".into(), 2.into(), 2).await.unwrap_err();
    assert!(err.to_string().contains("fenced"), "{err}");
    // Once fenced, not even writers of its own epoch get through.
    let err = n.put("c".into(), 3.into(), 1).await.unwrap_err();
    assert!(err.to_string().contains("fenced"), "{err}");
    assert_eq!(n.status().role, Role::Fenced);
    assert!(n.get("b").is_none() && n.get("c").is_none());
}

#[tokio::test]
async fn a_writer_from_an_older_epoch_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = replica_db2(dir.path());
    n.promote(2).expect("promote");
    let err = n.put("a".into(), 1.into(), 1).await.unwrap_err();
    assert!(err.to_string().contains("stale epoch"), "{err}");
    assert!(n.put("a".into(), 1.into(), 2).await.is_ok());
    assert!(n.promote(2).is_err(), "an epoch is never reused");
}

#[tokio::test]
async fn epoch_survives_restart_and_never_goes_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let n = replica_db2(dir.path());
        n.promote(3).expect("promote");
    }
    // Restarted with a stale spec that says epoch 1: it stays at 3.
    let n = replica_db2(dir.path());
    assert_eq!(n.status().epoch, 3);
    assert!(n.follow(addr(), 2).is_err());
}

#[tokio::test]
async fn a_rejoining_old_primary_is_told_to_drop_its_divergent_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The new primary: replica of the old one up to lsn 4 (epoch 1
    // record + 3 products), then promoted at lsn 5 to epoch 2.
    let new = replica_db2(dir.path());
    let old_dir = tempfile::tempdir().expect("tempdir");
    let old = Node::open("db-1", cfg(), Role::Primary, 1, old_dir.path()).expect("open");
    old.seed_if_empty().expect("seed");
    let first = old
        .pull(PullRequest {
            from: 1,
            last_epoch: 0,
            replica: "db-2".into(),
            wait_ms: None,
        })
        .await
        .expect("pull");
    new.apply_pull(addr(), 1, first).expect("apply");
    assert_eq!(new.status().last_lsn, 4);
    // The old primary takes two writes that never replicate…
    old.put("lost-1".into(), 1.into(), 1).await.expect("w");
    old.put("lost-2".into(), 2.into(), 1).await.expect("w");
    new.promote(2).expect("promote");
    // …and rejoins: it has lsn 1..=6 at epoch 1, the new epoch began at 5.
    let answer = new
        .pull(PullRequest {
            from: 7,
            last_epoch: 1,
            replica: "db-1".into(),
            wait_ms: None,
        })
        .await
        .expect("pull");
    assert_eq!(answer.truncate_to, Some(4));
    old.follow(addr(), 2).expect("follow");
    old.apply_pull(addr(), 7, answer).expect("truncate");
    assert_eq!(old.status().last_lsn, 4);
    assert!(old.get("lost-1").is_none(), "divergent writes are gone");
    // …but kept beside the WAL, as evidence of what was lost.
    let kept = discarded(old_dir.path()).expect("discarded");
    assert_eq!(kept.iter().map(|r| r.lsn).collect::<Vec<_>>(), vec![5, 6]);
    let rest = new
        .pull(PullRequest {
            from: 5,
            last_epoch: 1,
            replica: "db-1".into(),
            wait_ms: None,
        })
        .await
        .expect("pull");
    assert_eq!(rest.truncate_to, None);
    old.apply_pull(addr(), 5, rest).expect("catch up");
    assert_eq!(old.status().last_lsn, new.status().last_lsn);
}

#[tokio::test]
async fn a_fenced_primary_still_serves_its_log_but_lends_no_epoch_and_is_no_primary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = Node::open("db-1", cfg(), Role::Primary, 1, dir.path()).expect("open");
    old.seed_if_empty().expect("seed");
    old.put("k".into(), 1.into(), 1).await.expect("write");
    old.fence(2).expect("fence");
    let rdir = tempfile::tempdir().expect("tempdir");
    let r = replica_db2(rdir.path());
    let answer = old
        .pull(PullRequest {
            from: 1,
            last_epoch: 0,
            replica: "db-2".into(),
            wait_ms: None,
        })
        .await
        .expect("a fenced node serves its log");
    assert!(answer.fenced);
    assert_eq!(answer.epoch, 1, "the fence's epoch is not lent");
    r.apply_pull(addr(), 1, answer).expect("apply");
    let s = r.status();
    assert_eq!((s.last_lsn, s.epoch), (old.status().last_lsn, 1));
    assert_eq!(
        s.primary_ok,
        Some(false),
        "a fenced node is no working primary"
    );
    // So the replica can still be promoted at the fence's epoch.
    assert!(r.promote(2).is_ok());
}

#[tokio::test]
async fn sync_write_waits_for_a_replica_ack_and_fails_without_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = DbConfig {
        replication: ReplicationMode::Sync,
        sync_timeout: Duration::from_millis(50),
        ..cfg()
    };
    let n = Node::open("db-1", c, Role::Primary, 1, dir.path()).expect("open");
    n.seed_if_empty().expect("seed");
    let err = n.put("a".into(), 1.into(), 1).await.unwrap_err();
    assert!(err.to_string().contains("not acknowledged"), "{err}");
    // A replica that has everything up to lsn 6 acks it by asking for 7…
    let n2 = n.clone();
    let write = tokio::spawn(async move { n2.put("b".into(), 2.into(), 1).await });
    let mut head = n.head.subscribe();
    head.wait_for(|h| *h >= 6).await.expect("write appended");
    n.pull(PullRequest {
        from: 7,
        last_epoch: 1,
        replica: "db-2".into(),
        wait_ms: None,
    })
    .await
    .expect("pull");
    assert_eq!(write.await.expect("join").expect("acknowledged"), 6);
}
