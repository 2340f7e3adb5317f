//! A P0 that starts firing gets an incident bundle of its own, written
//! `after` past its firing and spanning `before` to `after` around it, on
//! the manual clock; an episode still firing later is not recorded again,
//! and a new one is.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use keel_alerting::rules::RulesConfig;
use keel_collector::server::{CollectorConfig, Running, start};
use keel_core::clock::{ManualClock, SharedClock, unix_ms};
use keel_incident::IncidentsConfig;
use serde_json::Value;

use crate::common::{evaluated_at, get, x};

const RULES: &str = "groups:\n- name: hot\n  interval: 10s\n  rules:\n  - alert: Hot\n    expr: x > 1\n    severity: P0\n";

/// The bundles listed, once there are `n` of them.
async fn listed(c: &Running, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let v = get(c.api, "/api/v1/incidents").await;
        let list = v["data"].as_array().cloned().unwrap_or_default();
        if list.len() >= n {
            return list;
        }
        assert!(std::time::Instant::now() < deadline, "no {n} bundles: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p0_is_recorded_once_per_episode_around_its_firing() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("rules")).expect("mkdir");
    std::fs::write(dir.path().join("rules/hot.yml"), RULES).expect("write");
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000);
    let clock = ManualClock::new(t0);
    let config = CollectorConfig {
        data_dir: dir.path().join("data"),
        otlp_http_port: 0,
        otlp_grpc_port: 0,
        api_port: 0,
        rules: RulesConfig {
            files: vec![dir.path().join("rules")],
            reload_interval: Duration::ZERO,
            ..RulesConfig::default()
        },
        incidents: IncidentsConfig {
            before: Duration::from_secs(60),
            after: Duration::from_secs(120),
            ..IncidentsConfig::default()
        },
        ..CollectorConfig::default()
    };
    let shared: SharedClock = Arc::new(clock.clone());
    let c = start(&config, shared).await.expect("collector starts");
    evaluated_at(c.api, t0).await;
    let fired = t0 + Duration::from_secs(10);
    x(&c, "a", fired, 5.0);
    clock.set(fired);
    evaluated_at(c.api, fired).await;
    // Written once `after` has passed (the loop looks every 5 s).
    clock.set(fired + Duration::from_secs(125));
    let list = listed(&c, 1).await;
    let s = &list[0];
    let fired_ms = unix_ms(fired);
    assert_eq!(s["reason"], "p0 Hot", "{s}");
    assert!(
        s["name"].as_str().is_some_and(|n| n.starts_with("p0-Hot-")),
        "{s}"
    );
    assert_eq!(s["from_ms"].as_i64(), Some(fired_ms - 60_000), "{s}");
    assert_eq!(s["to_ms"].as_i64(), Some(fired_ms + 120_000), "{s}");
    let path = std::path::PathBuf::from(s["path"].as_str().expect("path"));
    let b = keel_incident::bundle::Bundle::read(&path).expect("bundle");
    assert_eq!(b.header.incident_ms, Some(fired_ms));
    assert!(
        b.series
            .iter()
            .any(|s| s.labels.get("__name__").map(String::as_str) == Some("x")),
        "the window's samples are in it"
    );
    // Still firing five minutes on (x keeps coming): not recorded again.
    // A second episode (another instance) is: two bundles, not three.
    for k in 1..=30 {
        let t = fired + Duration::from_secs(125 + 10 * k);
        x(&c, "a", t, 5.0);
        if k == 10 {
            x(&c, "b", t, 5.0);
        }
        clock.set(t);
        evaluated_at(c.api, t).await;
    }
    let list = listed(&c, 2).await;
    assert_eq!(list.len(), 2, "{list:?}");
    let later = get(c.api, "/api/v1/incidents").await;
    assert_eq!(later["data"].as_array().map(Vec::len), Some(2), "{later}");
}
