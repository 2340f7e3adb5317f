//! The lb under faults and scaling, with real processes and real load.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use keel_core::clock::{SharedClock, SystemClock};
use keel_sampleapp::load::{self, Outcome, Profile, ProfileKind, RunOptions, Target};
use nix::sys::signal::Signal;

fn failures(rec: &Recording) -> Vec<(Instant, String)> {
    rec.outcomes()
        .into_iter()
        .filter_map(|(t, o)| match o {
            Outcome::Ok => None,
            Outcome::Error(k) => Some((t, k)),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_a_web_instance_costs_at_most_its_in_flight_requests_and_is_routed_around() {
    let _turn = heavy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    // At most 4 + 4 requests can be in flight to one instance.
    config.web.capacity.max_concurrency = 4;
    config.web.capacity.queue_limit = 4;
    let max_in_flight_per_instance = 8;
    let (sup, ep) = start(config).await;
    let rec = Recording::new(&format!("http://{}", ep.lb));
    let target: Arc<dyn Target> = rec.clone();
    let clock: SharedClock = Arc::new(SystemClock);
    // One instance serves 4 / 40 ms = 100 req/s: 60 req/s leaves the
    // survivor headroom, so any failure is the kill's doing.
    let profile = Profile::builtin(ProfileKind::Steady, 60.0, Duration::from_secs(5));
    let run = tokio::spawn(async move {
        load::run(clock, &profile, target, RunOptions::default(), |_| {}).await
    });

    rec.wait_done(60).await;
    let killed_at = Instant::now();
    sup.signal("web-1", Signal::SIGKILL, true)
        .await
        .expect("kill web-1");
    let report = run.await.expect("load run");

    let failed = failures(&rec);
    assert!(
        failed.len() <= max_in_flight_per_instance,
        "{} requests failed; at most {max_in_flight_per_instance} can be in flight to one instance, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    for (sent, kind) in &failed {
        assert_eq!(
            kind, "http_502",
            "only requests cut off mid-flight may fail"
        );
        assert!(
            *sent < killed_at + 3 * HEALTH_INTERVAL,
            "a request sent {:?} after the kill failed: not routed around within 3 health intervals",
            sent.duration_since(killed_at)
        );
    }
    assert_eq!(report.sent, 300);
    assert_eq!(report.ok + report.errors, 300);

    // The supervisor restarts the crashed instance and the lb takes it back.
    let lb = ep.lb_admin;
    eventually(
        "web-1 restarted and healthy in the lb",
        Duration::from_secs(15),
        || async move {
            let (_, v) = get_json(&format!("http://{lb}/-/backends")).await;
            let b = v.as_array()?.iter().find(|b| b["name"] == "web-1")?.clone();
            (b["healthy"] == true).then_some(())
        },
    )
    .await;
    let web1 = sup
        .processes()
        .into_iter()
        .find(|p| p.name == "web-1")
        .expect("web-1");
    assert_eq!(web1.restarts, 1);
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_web_from_2_to_5_and_back_under_load_loses_no_request() {
    let _turn = heavy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (sup, ep) = start(test_config(dir.path())).await;
    let rec = Recording::new(&format!("http://{}", ep.lb));
    let target: Arc<dyn Target> = rec.clone();
    let clock: SharedClock = Arc::new(SystemClock);
    // Long enough to outlast both scaling steps; stopped once they are done.
    let profile = Profile::builtin(ProfileKind::Steady, 120.0, Duration::from_secs(60));
    let run = tokio::spawn(async move {
        load::run(clock, &profile, target, RunOptions::default(), |_| {}).await
    });
    rec.wait_done(50).await;

    let up = sup.scale_web(5).await.expect("scale up");
    assert_eq!(up.replicas, 5);
    let lb = ep.lb_admin;
    eventually(
        "5 healthy backends",
        Duration::from_secs(10),
        || async move {
            let (_, v) = get_json(&format!("http://{lb}/-/backends")).await;
            let n = v
                .as_array()?
                .iter()
                .filter(|b| b["healthy"] == true)
                .count();
            (n == 5).then_some(())
        },
    )
    .await;
    // Every new instance really serves traffic before we scale down.
    let before = rec.outcomes().len() as u64;
    rec.wait_done(before + 200).await;

    let down = sup.scale_web(2).await.expect("scale down");
    assert_eq!(down.replicas, 2);
    assert_eq!(down.instances, vec!["web-1", "web-2"]);
    let after = rec.outcomes().len() as u64;
    rec.wait_done(after + 100).await;
    run.abort();

    let failed = failures(&rec);
    assert!(
        failed.is_empty(),
        "{} requests lost while scaling, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    let (_, v) = get_json(&format!("http://{lb}/-/backends")).await;
    assert_eq!(v.as_array().map(Vec::len), Some(2), "{v}");
    // The removed instances' processes are gone.
    assert_eq!(
        sup.processes().iter().filter(|p| p.tier == "web").count(),
        2
    );
    sup.shutdown().await;
}
