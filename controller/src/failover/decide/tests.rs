use super::*;
use crate::failover::config::{DriverConfig, Member};
use std::time::Duration;

fn cfg(mode: Mode) -> FailoverConfig {
    FailoverConfig {
        name: "db".into(),
        driver: DriverConfig::sample("", None),
        members: ["db-1", "db-2", "db-3"]
            .iter()
            .map(|n| Member::named(n))
            .collect(),
        probe_interval: Duration::from_millis(250),
        probe_timeout: Duration::from_millis(200),
        failure_threshold: 3,
        maximum_lag_on_failover: 1000,
        maximum_lag_seconds_on_failover: Duration::from_secs(30),
        mode,
        synchronous_replicas: 1,
        anti_flapping: Duration::from_secs(300),
        repoint: None,
        pause_policies: Vec::new(),
        agent_token: Default::default(),
        agent_token_file: Default::default(),
        agent_tls: Default::default(),
    }
}

fn primary(lsn: u64) -> Probe {
    Probe::Answered(MemberReport {
        role: "primary".into(),
        epoch: 1,
        last_lsn: lsn,
        wal_bytes: lsn * 100,
        primary_ok: None,
        lag_ms: 0,
        primary_head_lsn: 0,
        primary_head_bytes: 0,
    })
}

fn replica(lsn: u64, sees_primary: bool) -> Probe {
    Probe::Answered(MemberReport {
        role: "replica".into(),
        epoch: 1,
        last_lsn: lsn,
        wal_bytes: lsn * 100,
        primary_ok: Some(sees_primary),
        lag_ms: 0,
        primary_head_lsn: 0,
        primary_head_bytes: 0,
    })
}

fn at_epoch(p: Probe, epoch: u64) -> Probe {
    match p {
        Probe::Answered(r) => Probe::Answered(MemberReport { epoch, ..r }),
        failed => failed,
    }
}

#[test]
fn a_replica_left_on_an_older_epoch_is_never_promoted_nor_counted() {
    let c = cfg(Mode::Synchronous);
    let mut w = Watch::new("db-1", 2);
    // db-3 did not follow the last failover: further ahead in numbers,
    // but on epoch 1's history.
    let m = || {
        [
            ("db-1", down()),
            ("db-2", at_epoch(replica(50, false), 2)),
            ("db-3", replica(90, false)),
        ]
    };
    let Verdict::Hold { why } = feed(&c, &mut w, 0, 3, m) else {
        panic!("synchronous mode needs both replicas on epoch 2")
    };
    assert!(
        why.contains("only 1 of 2 replicas answer on the current epoch"),
        "{why}"
    );
    let err = plan(&cfg(Mode::Asynchronous), &w, &obs(1000, m()), Some("db-3")).unwrap_err();
    assert!(err.contains("on epoch 1 (the primary's is 2)"), "{err}");
    let p = plan(&cfg(Mode::Asynchronous), &w, &obs(1000, m()), None).expect("db-2 may be");
    assert_eq!(p.promote, "db-2");
}

fn down() -> Probe {
    Probe::Failed("connection refused".into())
}

fn obs(at_ms: i64, m: [(&str, Probe); 3]) -> Observation {
    Observation {
        at_ms,
        members: m.into_iter().map(|(n, p)| (n.to_owned(), p)).collect(),
    }
}

/// Feed `n` identical observations 250 ms apart from `t0`; the last verdict.
fn feed(
    c: &FailoverConfig,
    w: &mut Watch,
    t0: i64,
    n: usize,
    m: impl Fn() -> [(&'static str, Probe); 3],
) -> Verdict {
    let mut v = Verdict::Healthy;
    for i in 0..n {
        v = observe(c, w, &obs(t0 + i as i64 * 250, m()));
    }
    v
}

#[test]
fn a_dead_primary_is_failed_over_only_after_the_threshold_to_the_most_caught_up_replica() {
    let c = cfg(Mode::Asynchronous);
    let mut w = Watch::new("db-1", 1);
    assert_eq!(
        observe(
            &c,
            &mut w,
            &obs(
                0,
                [
                    ("db-1", primary(50)),
                    ("db-2", replica(48, true)),
                    ("db-3", replica(50, true))
                ]
            )
        ),
        Verdict::Healthy
    );
    let dead = || {
        [
            ("db-1", down()),
            ("db-2", replica(48, false)),
            ("db-3", replica(50, false)),
        ]
    };
    assert!(matches!(
        feed(&c, &mut w, 250, 2, dead),
        Verdict::Suspect { failures: 2, .. }
    ));
    let Verdict::Failover(p) = feed(&c, &mut w, 750, 1, dead) else {
        panic!("the third failure fails over")
    };
    assert_eq!((p.promote.as_str(), p.epoch), ("db-3", 2));
    assert_eq!(p.candidates[1].name, "db-2");
    assert_eq!(
        p.beyond_promoted, 0,
        "db-3 had lsn 50, all the primary was seen with"
    );
}

#[test]
fn a_partition_of_the_controller_alone_never_fails_over() {
    let c = cfg(Mode::Asynchronous);
    let mut w = Watch::new("db-1", 1);
    let cut = || {
        [
            ("db-1", down()),
            ("db-2", replica(50, true)),
            ("db-3", replica(50, false)),
        ]
    };
    let v = feed(&c, &mut w, 0, 20, cut);
    let Verdict::Hold { why } = v else {
        panic!("{v:?}")
    };
    assert!(why.contains("db-2 still reaches it"), "{why}");
    assert!(why.contains("partition"), "{why}");
    // No replica answers at all: nothing to confirm with either.
    let mut w = Watch::new("db-1", 1);
    let alone = || [("db-1", down()), ("db-2", down()), ("db-3", down())];
    let Verdict::Hold { why } = feed(&c, &mut w, 0, 5, alone) else {
        panic!()
    };
    assert!(why.contains("no replica answers"), "{why}");
}

#[test]
fn a_replica_beyond_the_lag_limit_is_never_promoted() {
    let c = cfg(Mode::Asynchronous);
    let mut w = Watch::new("db-1", 1);
    observe(
        &c,
        &mut w,
        &obs(
            0,
            [
                ("db-1", primary(100)),
                ("db-2", replica(100, true)),
                ("db-3", replica(20, true)),
            ],
        ),
    );
    // db-2 (the caught-up one) has priority 0: db-3 is 8,000 bytes behind.
    let mut c2 = c.clone();
    c2.members[1].priority = 0;
    let dead = || {
        [
            ("db-1", down()),
            ("db-2", replica(100, false)),
            ("db-3", replica(20, false)),
        ]
    };
    let Verdict::Hold { why } = feed(&c2, &mut w, 250, 3, dead) else {
        panic!()
    };
    assert!(why.contains("beyond maximum_lag_on_failover"), "{why}");
    assert!(why.contains("priority 0"), "{why}");
    // A manual failover to it is refused with the same reason.
    let err = plan(&c, &w, &obs(1000, dead()), Some("db-3")).unwrap_err();
    assert!(err.contains("8000 bytes behind"), "{err}");
}

#[test]
fn a_replica_more_than_30_seconds_behind_is_never_promoted() {
    let c = cfg(Mode::Asynchronous);
    let mut w = Watch::new("db-1", 1);
    let stale = |lag_ms| match replica(50, false) {
        Probe::Answered(r) => Probe::Answered(MemberReport { lag_ms, ..r }),
        p => p,
    };
    let dead = || {
        [
            ("db-1", down()),
            ("db-2", stale(31_000)),
            ("db-3", stale(29_000)),
        ]
    };
    let Verdict::Failover(p) = feed(&c, &mut w, 0, 3, dead) else {
        panic!()
    };
    assert_eq!(p.promote, "db-3");
    let refused = p.candidates[1].refused.clone().unwrap_or_default();
    assert!(
        refused.contains("31.0 s behind, beyond maximum_lag_seconds_on_failover (30 s)"),
        "{refused}"
    );
}

#[test]
fn priority_comes_before_position_and_async_loss_is_counted() {
    let mut c = cfg(Mode::Asynchronous);
    c.maximum_lag_on_failover = 10_000;
    c.members[1].priority = 2;
    let mut w = Watch::new("db-1", 1);
    observe(
        &c,
        &mut w,
        &obs(
            0,
            [
                ("db-1", primary(60)),
                ("db-2", replica(55, true)),
                ("db-3", replica(58, true)),
            ],
        ),
    );
    let dead = || {
        [
            ("db-1", down()),
            ("db-2", replica(55, false)),
            ("db-3", replica(58, false)),
        ]
    };
    let Verdict::Failover(p) = feed(&c, &mut w, 250, 3, dead) else {
        panic!()
    };
    assert_eq!(p.promote, "db-2");
    assert_eq!(
        p.beyond_promoted, 5,
        "the primary was seen at 60, db-2 has 55"
    );
    assert!(p.why.contains("5 record(s)"), "{}", p.why);
}

#[test]
fn synchronous_mode_promotes_only_the_highest_of_a_quorum() {
    let c = cfg(Mode::Synchronous);
    let mut w = Watch::new("db-1", 1);
    observe(
        &c,
        &mut w,
        &obs(
            0,
            [
                ("db-1", primary(60)),
                ("db-2", replica(60, true)),
                ("db-3", replica(58, true)),
            ],
        ),
    );
    // One replica down: 1 of 2 answer, 2 needed (an acknowledged write
    // may be only on the one that does not answer).
    let one = || {
        [
            ("db-1", down()),
            ("db-2", down()),
            ("db-3", replica(58, false)),
        ]
    };
    let Verdict::Hold { why } = feed(&c, &mut w, 250, 3, one) else {
        panic!()
    };
    assert!(why.contains("2 are needed"), "{why}");
    // Both answer: the highest, and the lower one is refused by name.
    let mut w = Watch::new("db-1", 1);
    let both = || {
        [
            ("db-1", down()),
            ("db-2", replica(60, false)),
            ("db-3", replica(58, false)),
        ]
    };
    let Verdict::Failover(p) = feed(&c, &mut w, 250, 3, both) else {
        panic!()
    };
    assert_eq!(p.promote, "db-2");
    assert!(
        p.candidates[1]
            .refused
            .as_deref()
            .is_some_and(|r| r.contains("not known to be synchronous"))
    );
    let err = plan(&c, &w, &obs(1000, both()), Some("db-3")).unwrap_err();
    assert!(err.contains("not known to be synchronous"), "{err}");
}

#[test]
fn anti_flapping_blocks_a_second_automatic_failover() {
    let c = cfg(Mode::Asynchronous);
    let mut w = Watch::new("db-1", 1);
    w.promoted("db-2", 2, 10_000, true, None);
    // Both replicas followed db-2 to epoch 2.
    let dead = || {
        [
            ("db-1", at_epoch(replica(50, false), 2)),
            ("db-2", down()),
            ("db-3", at_epoch(replica(50, false), 2)),
        ]
    };
    let Verdict::Hold { why } = feed(&c, &mut w, 20_000, 3, dead) else {
        panic!()
    };
    assert!(why.contains("anti-flapping"), "{why}");
    // After the period, it may.
    let mut w2 = w.clone();
    w2.failures = 0;
    let v = feed(&c, &mut w2, 10_000 + 300_000, 3, dead);
    assert!(
        matches!(v, Verdict::Failover(ref p) if p.epoch == 3),
        "{v:?}"
    );
}

#[test]
fn a_restarted_read_only_primary_is_still_a_failure_and_not_a_candidate() {
    let c = cfg(Mode::Asynchronous);
    let mut w = Watch::new("db-1", 1);
    let ro = Probe::Answered(MemberReport {
        role: "read_only".into(),
        epoch: 1,
        last_lsn: 70,
        wal_bytes: 7000,
        primary_ok: None,
        lag_ms: 0,
        primary_head_lsn: 0,
        primary_head_bytes: 0,
    });
    let back = || {
        [
            ("db-1", ro.clone()),
            ("db-2", replica(50, false)),
            ("db-3", replica(50, false)),
        ]
    };
    let Verdict::Failover(p) = feed(&c, &mut w, 0, 3, back) else {
        panic!()
    };
    assert!(p.why.contains("answers as read_only"), "{}", p.why);
    assert_ne!(p.promote, "db-1");
}

#[test]
fn a_manual_failover_names_what_is_wrong_with_the_member() {
    let c = cfg(Mode::Asynchronous);
    let w = Watch::new("db-1", 1);
    let o = obs(
        0,
        [
            ("db-1", primary(5)),
            ("db-2", down()),
            ("db-3", replica(5, true)),
        ],
    );
    assert!(
        plan(&c, &w, &o, Some("db-9"))
            .unwrap_err()
            .contains("not a member")
    );
    assert!(
        plan(&c, &w, &o, Some("db-1"))
            .unwrap_err()
            .contains("primary already")
    );
    assert!(
        plan(&c, &w, &o, Some("db-2"))
            .unwrap_err()
            .contains("does not answer")
    );
    assert_eq!(
        plan(&c, &w, &o, Some("db-3")).map(|p| p.promote),
        Ok("db-3".into())
    );
}
