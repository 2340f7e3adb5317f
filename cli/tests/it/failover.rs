//! Replica failover against the real sample app: the controller's
//! failover loop (in this process, on the system clock) watching real db
//! processes under a write load through the lb.
//!
//! - Synchronous mode: the primary SIGKILLed five times in a row; every
//!   acknowledged write is readable afterwards, and the epoch log shows no
//!   write accepted under an old epoch once a newer one began. Then a
//!   switchover (planned) loses nothing, a manual failover to a lagging
//!   member is refused and changes nothing, and bad config is refused.
//! - Asynchronous mode: the controller alone cut off from the primary
//!   fails nothing over; replicas cut off too, then the primary killed:
//!   the failover says how many writes were beyond the promoted replica,
//!   and the old primary's dropped records match.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::common::*;
use keel_controller::failover::{DriverConfig, FailoverConfig, Member, Mode};
use keel_controller::{Controller, ControllerConfig};
use keel_core::clock::{SharedClock, SystemClock};
use keel_sampleapp::config::ReplicationMode;
use keel_sampleapp::db::wal::{Op, Record};
use nix::sys::signal::Signal;

fn target(supervisor: &str, mode: Mode, max_lag: u64) -> FailoverConfig {
    FailoverConfig {
        name: "shop-db".into(),
        driver: DriverConfig::sample(supervisor, None),
        members: (1..=3).map(|i| Member::named(&format!("db-{i}"))).collect(),
        probe_interval: Duration::from_millis(250),
        probe_timeout: Duration::from_millis(200),
        failure_threshold: 3,
        maximum_lag_on_failover: max_lag,
        maximum_lag_seconds_on_failover: Duration::from_secs(30),
        mode,
        synchronous_replicas: 1,
        // Kills follow each other closely in this test.
        anti_flapping: Duration::ZERO,
        repoint: None,
        pause_policies: Vec::new(),
        agent_token: Default::default(),
        agent_token_file: Default::default(),
        agent_tls: Default::default(),
    }
}

/// A started controller watching `f`, and its target.
async fn controller(
    f: FailoverConfig,
) -> (Arc<Controller>, Arc<keel_controller::failover::Failover>) {
    // A policy for the failover to pause (it scales nothing: dry run).
    let web = keel_controller::Policy {
        name: "web".into(),
        actuator: keel_controller::ActuatorConfig::DryRun { start: 2 },
        min: 1,
        max: 4,
        metrics: vec![keel_controller::MetricSpec {
            name: "rate".into(),
            query: "vector(1)".into(),
            per_instance: None,
            average: Some(1.0),
            total: None,
        }],
        behavior: Default::default(),
        warm_up: Duration::ZERO,
        panic: None,
        predictive: None,
    };
    let config = ControllerConfig {
        failover: vec![f],
        policies: vec![web],
        ..ControllerConfig::default()
    };
    let mut problems = Vec::new();
    config.validate(&mut problems);
    assert!(problems.is_empty(), "{problems:?}");
    let clock: SharedClock = Arc::new(SystemClock);
    let c = Controller::new(&config, Arc::new(keel_testkit::NoMetrics), clock, None);
    let t = c.failovers()[0].clone();
    t.start("controller.failover[0]", None)
        .await
        .expect("failover starts");
    tokio::spawn(c.clone().run());
    (c, t)
}

/// Orders written through the lb until stopped: the ids acknowledged (201).
struct Writer {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<String>>,
    acked: Arc<std::sync::Mutex<usize>>,
}

impl Writer {
    fn start(lb: std::net::SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(std::sync::Mutex::new(0));
        let (s, a) = (stop.clone(), acked.clone());
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut ids = Vec::new();
            while !s.load(Ordering::Relaxed) {
                let r = http
                    .post(format!("http://{lb}/api/orders"))
                    .json(&serde_json::json!({"product_id": 3, "quantity": 1}))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                if let Ok(r) = r
                    && r.status() == 201
                    && let Ok(v) = r.json::<serde_json::Value>().await
                    && let Some(id) = v["id"].as_str()
                {
                    ids.push(id.to_owned());
                    *a.lock().unwrap_or_else(|e| e.into_inner()) = ids.len();
                } else {
                    // Refused while the primary is gone: try again soon.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            ids
        });
        Self { stop, task, acked }
    }

    fn count(&self) -> usize {
        *self.acked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait until `more` writes past the count now are acknowledged.
    async fn progress(&self, more: usize, what: &str) {
        let from = self.count();
        eventually(what, Duration::from_secs(30), || async move {
            (self.count() >= from + more).then_some(())
        })
        .await;
    }

    async fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("writer")
    }
}

/// Every record in a node's WAL and the records it dropped on rejoining
/// (read as text: the node may still be running).
fn records(dir: &Path) -> (Vec<Record>, Vec<Record>) {
    let read = |f: &str| -> Vec<Record> {
        std::fs::read_to_string(dir.join(f))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    (read("wal.jsonl"), read("discarded.jsonl"))
}

/// No write was accepted under an epoch after a newer epoch began
/// anywhere: two members never took writes at the same time.
fn assert_one_writer_at_a_time(db_dir: &Path) -> BTreeMap<u64, u64> {
    let mut began: BTreeMap<u64, u64> = BTreeMap::new();
    let mut puts: Vec<(String, Record)> = Vec::new();
    for i in 1..=3 {
        let name = format!("db-{i}");
        let (wal, dropped) = records(&db_dir.join(&name));
        for r in wal.into_iter().chain(dropped) {
            match r.op {
                Op::Epoch => {
                    let t = began.entry(r.epoch).or_insert(r.ts_ms);
                    *t = (*t).min(r.ts_ms);
                }
                Op::Put { .. } => puts.push((name.clone(), r)),
            }
        }
    }
    for (node, r) in &puts {
        if let Some((next, t)) = began.range(r.epoch + 1..).next() {
            assert!(
                r.ts_ms <= *t,
                "{node} accepted lsn {} under epoch {} at {} ms, after epoch {next} began at {t} ms: two primaries",
                r.lsn,
                r.epoch,
                r.ts_ms
            );
        }
    }
    began
}

/// Every order in `acked` (acknowledged to a writer) is on the primary.
async fn assert_on_primary(sup: &keel_sampleapp::supervisor::Supervisor, acked: &[String]) {
    let primary = sup.db_topology().topology.primary;
    let http = reqwest::Client::new();
    for id in acked {
        let r = http
            .get(format!("http://{primary}/kv/order:{id}"))
            .send()
            .await
            .expect("read");
        assert_eq!(r.status(), 200, "acknowledged order {id} lost");
    }
}

async fn status(t: &keel_controller::failover::Failover) -> (String, u64) {
    let s = t.status();
    (s.primary, s.epoch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synchronous_failover_survives_five_primary_kills_losing_no_acknowledged_write() {
    let _turn = heavy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.db.replication = ReplicationMode::Sync;
    config.db.sync_replicas = 1;
    config.db.products = 10;
    let (sup, ep) = start(config).await;
    let supervisor = format!("http://{}", ep.supervisor);

    // Bad input first: unknown members, and a driver that cannot connect.
    let start_error = |f: FailoverConfig| async move {
        let c = Controller::new(
            &ControllerConfig {
                failover: vec![f],
                ..ControllerConfig::default()
            },
            Arc::new(keel_testkit::NoMetrics),
            Arc::new(SystemClock),
            None,
        );
        c.failovers()[0]
            .start("controller.failover[0]", None)
            .await
            .expect_err("refused")
    };
    let mut bad = target(&supervisor, Mode::Synchronous, 1 << 20);
    bad.members[2].name = "db-9".into();
    let e = start_error(bad).await;
    assert!(
        e.contains("controller.failover[0].members[2].name: \"db-9\" is not a member"),
        "{e}"
    );
    let e = start_error(target("http://127.0.0.1:1", Mode::Synchronous, 1 << 20)).await;
    assert!(
        e.contains("controller.failover[0].driver") && e.contains("cannot connect"),
        "{e}"
    );
    assert_eq!(sup.db_topology().topology.epoch, 1, "nothing changed");

    let (c, t) = controller(target(&supervisor, Mode::Synchronous, 1 << 20)).await;
    let writer = Writer::start(ep.lb);
    writer.progress(20, "writes through the lb").await;
    for kill in 1..=5 {
        let (old, epoch) = status(&t).await;
        sup.signal(&old, Signal::SIGKILL, true)
            .await
            .expect("kill the primary");
        let (new, e) = eventually(
            &format!("failover #{kill}"),
            Duration::from_secs(30),
            || async {
                let s = status(&t).await;
                (s.1 > epoch).then_some(s)
            },
        )
        .await;
        assert_ne!(new, old, "failover #{kill} promoted the dead primary");
        assert_eq!(e, epoch + 1);
        writer
            .progress(20, &format!("writes after failover #{kill}"))
            .await;
    }
    // A planned switchover loses nothing either.
    let (before, epoch) = status(&t).await;
    let p = t.switchover(None).await.expect("switchover");
    let (after, e2) = status(&t).await;
    assert_ne!(after, before);
    assert_eq!(e2, epoch + 1, "{p:?}");
    writer.progress(20, "writes after the switchover").await;
    let acked = writer.stop().await;
    assert!(acked.len() >= 140, "{} writes acknowledged", acked.len());

    // Every acknowledged write is on the primary.
    assert_on_primary(&sup, &acked).await;
    let began = assert_one_writer_at_a_time(&dir.path().join("db"));
    assert_eq!(began.keys().max(), Some(&7), "epochs {began:?}");

    // A replica left fenced (as one that missed a promotion's
    // re-attachment is) is told to follow the primary again.
    let (primary_name, epoch) = status(&t).await;
    let replica = ["db-1", "db-2", "db-3"]
        .into_iter()
        .find(|n| *n != primary_name)
        .expect("a replica");
    sup.fence(replica, epoch).await.expect("fence a replica");
    let rejoined = eventually(
        "the fenced replica re-attached",
        Duration::from_secs(30),
        || async {
            c.events(0, Some("shop-db"), 10_000)
                .into_iter()
                .find(|e| e.kind == "failover.rejoined" && e.explanation.contains(replica))
        },
    )
    .await;
    assert!(
        rejoined.explanation.contains("was fenced and now follows"),
        "{}",
        rejoined.explanation
    );
    eventually("it replicates again", Duration::from_secs(30), || async {
        let s = t.status();
        match s.members.get(replica) {
            Some(keel_controller::failover::Probe::Answered(r)) => {
                (r.role == "replica" && r.primary_ok == Some(true)).then_some(())
            }
            _ => None,
        }
    })
    .await;

    // Every step of a failover is an event.
    let kinds: Vec<String> = c
        .events(0, Some("shop-db"), 10_000)
        .into_iter()
        .map(|e| e.kind)
        .collect();
    for k in [
        "failover.probe",
        "failover.detected",
        "failover.candidates",
        "failover.fenced",
        "failover.promoted",
        "failover.repointed",
        "failover.first_write",
        "scaling.paused",
        "scaling.resumed",
    ] {
        assert!(kinds.iter().any(|x| x == k), "no {k} event in {kinds:?}");
    }
    assert_eq!(
        kinds.iter().filter(|k| *k == "failover.promoted").count(),
        6
    );

    // A member that is behind cannot be promoted by hand: cut db-x off from
    // the primary so it falls behind, then ask for it.
    let (primary_name, epoch) = status(&t).await;
    let lagging = ["db-1", "db-2", "db-3"]
        .into_iter()
        .find(|n| *n != primary_name)
        .expect("a replica");
    sup.partition(&primary_name, vec![lagging.into()])
        .await
        .expect("partition");
    let writer = Writer::start(ep.lb);
    writer
        .progress(200, "writes while a replica is cut off")
        .await;
    let _ = writer.stop().await;
    let mut small = target(&supervisor, Mode::Asynchronous, 1000);
    small.name = "strict".into();
    let (_, strict) = controller(small).await;
    let e = strict.failover(Some(lagging)).await.unwrap_err();
    assert!(
        e.contains("bytes behind, beyond maximum_lag_on_failover"),
        "{e}"
    );
    assert_eq!(
        status(&t).await,
        (primary_name.clone(), epoch),
        "nothing changed"
    );
    assert_eq!(sup.db_topology().primary_name, primary_name);
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_fails_nothing_over_and_an_asynchronous_failover_counts_what_it_loses() {
    let _turn = heavy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.db.products = 10;
    let (sup, ep) = start(config).await;
    let supervisor = format!("http://{}", ep.supervisor);
    // A loaded debug-build primary can answer a probe slower than the
    // default 200 ms; with its replicas cut off on purpose below, three
    // slow answers in a row would be a (correct) failover before the kill.
    let mut f = target(&supervisor, Mode::Asynchronous, u64::MAX);
    f.probe_timeout = Duration::from_secs(1);
    let (c, t) = controller(f).await;
    // A planned switchover under two writers at once, in asynchronous
    // mode: the replica catches up from the fenced primary, nothing is lost.
    let (w1, w2) = (Writer::start(ep.lb), Writer::start(ep.lb));
    w1.progress(20, "writes before the switchover").await;
    t.switchover(Some("db-2")).await.expect("switchover");
    assert_eq!(status(&t).await, ("db-2".to_owned(), 2));
    w1.progress(20, "writes after the switchover").await;
    w2.progress(20, "the second writer's writes after the switchover")
        .await;
    let mut acked = w1.stop().await;
    acked.extend(w2.stop().await);
    assert_on_primary(&sup, &acked).await;
    // And back, so the rest of the test starts from db-1.
    t.switchover(Some("db-1")).await.expect("switchover back");
    assert_eq!(status(&t).await, ("db-1".to_owned(), 3));
    let writer = Writer::start(ep.lb);
    writer.progress(20, "writes").await;

    // The controller alone loses sight of the primary: no failover.
    sup.partition("db-1", vec![keel_controller::failover::driver::PEER.into()])
        .await
        .expect("partition");
    let held_at = eventually("the controller holds", Duration::from_secs(30), || async {
        let s = t.status();
        (s.state == "hold").then_some(s.observed_at_ms.unwrap_or(0))
    })
    .await;
    let why = t.status().why.unwrap_or_default();
    assert!(why.contains("partition"), "{why}");
    // Ten more rounds of probes: still no failover, and writes go on.
    eventually("ten more probe rounds", Duration::from_secs(30), || async {
        (t.status().observed_at_ms.unwrap_or(0) >= held_at + 2500).then_some(())
    })
    .await;
    writer.progress(20, "writes during the partition").await;
    assert_eq!(status(&t).await, ("db-1".to_owned(), 3));
    assert!(
        !c.events(0, None, 10_000)
            .iter()
            .any(|e| e.kind == "failover.detected" && e.explanation.contains("primary lost")),
        "a partition of the controller alone failed over"
    );
    sup.partition("db-1", Vec::new()).await.expect("heal");
    eventually("healthy again", Duration::from_secs(30), || async {
        (t.status().state == "healthy").then_some(())
    })
    .await;

    // The replicas are cut off from the primary (asynchronous: it goes on
    // taking writes they never get), then it dies.
    sup.partition("db-1", vec!["db-2".into(), "db-3".into()])
        .await
        .expect("partition");
    writer.progress(100, "writes the replicas do not get").await;
    let epoch = status(&t).await.1;
    let killed_at = keel_core::clock::unix_ms(std::time::SystemTime::now());
    sup.signal("db-1", Signal::SIGKILL, true)
        .await
        .expect("kill");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let promoted = loop {
        let events = c.events(killed_at, Some("shop-db"), 10_000);
        if let Some(e) = events.iter().find(|e| e.kind == "failover.promoted") {
            break e.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no failover 30 s after the kill: {:?}\nevents: {:#?}",
            t.status(),
            events
                .iter()
                .map(|e| (&e.kind, &e.explanation))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let beyond = promoted
        .decision
        .as_ref()
        .and_then(|d| d["beyond_promoted"].as_u64())
        .expect("counted");
    assert!(beyond >= 50, "{}", promoted.explanation);
    assert!(
        promoted
            .explanation
            .contains(&format!("{beyond} record(s)")),
        "{}",
        promoted.explanation
    );
    assert_eq!(status(&t).await.1, epoch + 1);
    writer.progress(20, "writes after the failover").await;
    let _ = writer.stop().await;
    // The old primary comes back, rejoins and drops at least those records.
    let dropped = eventually(
        "db-1 rejoins and drops what it alone had",
        Duration::from_secs(30),
        || async {
            let (_, d) = records(&dir.path().join("db").join("db-1"));
            (!d.is_empty()).then_some(d.len() as u64)
        },
    )
    .await;
    assert!(
        dropped >= beyond,
        "db-1 dropped {dropped}, the failover counted {beyond}"
    );
    assert_one_writer_at_a_time(&dir.path().join("db"));
    sup.shutdown().await;
}
