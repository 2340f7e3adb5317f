//! The controller's loop on explicit times: decisions become events,
//! changes go through the actuator and the count is read back; actuator
//! failures (a command that exits non-zero or runs too long, an
//! unreachable supervisor) are events with their reasons, retried at
//! the next evaluation.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use keel_controller::{
    ActuatorConfig, Controller, ControllerConfig, MetricSource, MetricSpec, Policy,
};
use keel_core::clock::{ManualClock, SharedClock};

use crate::common::{S, T0};

/// A metric store that answers every query with one total.
#[derive(Default)]
struct Fixed(Mutex<f64>);

impl MetricSource for Fixed {
    fn instant(&self, _: &str, _: i64) -> Result<keel_controller::run::Samples, String> {
        Ok(vec![(
            BTreeMap::new(),
            *self.0.lock().unwrap_or_else(|e| e.into_inner()),
        )])
    }
}

fn policy(actuator: ActuatorConfig) -> Policy {
    Policy {
        name: "web".into(),
        actuator,
        min: 1,
        max: 10,
        metrics: vec![MetricSpec {
            name: "request rate".into(),
            query: "sum(rate(requests_total[1m]))".into(),
            per_instance: None,
            average: Some(100.0),
            total: None,
        }],
        behavior: Default::default(),
        warm_up: Duration::ZERO,
        panic: None,
        predictive: None,
    }
}

fn controller(p: Policy, source: Arc<Fixed>) -> Arc<Controller> {
    let config = ControllerConfig {
        policies: vec![p],
        ..ControllerConfig::default()
    };
    let mut problems = Vec::new();
    config.validate(&mut problems);
    assert!(problems.is_empty(), "{problems:?}");
    let clock: SharedClock = Arc::new(ManualClock::new(
        UNIX_EPOCH + Duration::from_millis(T0 as u64),
    ));
    Controller::new(&config, source, clock, None)
}

#[tokio::test]
async fn a_target_scales_up_at_once_and_down_after_the_window_each_step_an_event() {
    let load = Arc::new(Fixed::default());
    let c = controller(policy(ActuatorConfig::DryRun { start: 2 }), load.clone());
    *load.0.lock().expect("lock") = 400.0;
    let e = c.tick(T0).await.remove(0);
    assert_eq!(e.kind, "scale");
    assert_eq!(e.read_back, Some(4));
    assert_eq!(
        e.explanation,
        "web: scale 2 → 4: request rate 200 vs 100 (wants 4)"
    );
    // The load falls: the 300 s window holds 4.
    *load.0.lock().expect("lock") = 100.0;
    let e = c.tick(T0 + 15 * S).await.remove(0);
    assert_eq!(e.kind, "decision");
    assert!(
        e.explanation
            .starts_with("web: keep 4: request rate 25 vs 100 (wants 1)"),
        "{}",
        e.explanation
    );
    assert!(e.explanation.contains("scale-down stabilization window 5m"));
    let e = c.tick(T0 + 316 * S).await.remove(0);
    assert_eq!(
        (e.kind.as_str(), e.read_back),
        ("scale", Some(1)),
        "{}",
        e.explanation
    );
    let all = c.events(0, Some("web"), 100);
    assert_eq!(all.len(), 3);
    assert_eq!(c.events(T0 + 1, None, 100).len(), 2, "since");
    assert_eq!(c.events(0, None, 1)[0].at_ms, T0 + 316 * S, "the newest");
}

fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into(), "sh".into()]
}

#[tokio::test]
async fn exec_failures_are_events_with_reasons_and_retried() {
    let load = Arc::new(Fixed::default());
    *load.0.lock().expect("lock") = 400.0;
    // The read fails.
    let c = controller(
        policy(ActuatorConfig::Exec {
            read: sh("echo 'no such cluster' >&2; exit 3"),
            scale: sh("exit 0"),
            timeout: Duration::from_secs(5),
        }),
        load.clone(),
    );
    let e = c.tick(T0).await.remove(0);
    assert_eq!(e.kind, "actuator_error");
    assert!(
        e.explanation.contains("exited with 3: no such cluster")
            && e.explanation.contains("retried at the next evaluation"),
        "{}",
        e.explanation
    );
    // It runs too long.
    let c = controller(
        policy(ActuatorConfig::Exec {
            read: sh("sleep 5"),
            scale: sh("exit 0"),
            timeout: Duration::from_millis(200),
        }),
        load.clone(),
    );
    let e = c.tick(T0).await.remove(0);
    assert!(
        e.explanation.contains("timed out after 200ms"),
        "{}",
        e.explanation
    );
    // The change fails, and is tried again at the next evaluation.
    let c = controller(
        policy(ActuatorConfig::Exec {
            read: sh("echo 2"),
            scale: sh("echo \"quota exceeded for $KEEL_REPLICAS\" >&2; exit 1"),
            timeout: Duration::from_secs(5),
        }),
        load.clone(),
    );
    for t in [T0, T0 + 15 * S] {
        let e = c.tick(t).await.remove(0);
        assert_eq!(e.kind, "actuator_error");
        assert!(
            e.explanation.contains("scale 2 → 4")
                && e.explanation.contains("the change failed")
                && e.explanation.contains("quota exceeded for 4"),
            "{}",
            e.explanation
        );
    }
}

#[tokio::test]
async fn the_count_is_what_the_actuator_reads_back_not_what_was_asked() {
    let load = Arc::new(Fixed::default());
    *load.0.lock().expect("lock") = 400.0;
    let dir = std::env::temp_dir().join(format!("keel-exec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let names = dir.join("instances");
    std::fs::write(&names, "web-a\nweb-b\n").expect("write");
    // Scaling "succeeds" but only one instance comes up.
    let c = controller(
        policy(ActuatorConfig::Exec {
            read: sh(&format!("cat {}", names.display())),
            scale: sh(&format!("echo web-c >> {}", names.display())),
            timeout: Duration::from_secs(5),
        }),
        load.clone(),
    );
    let e = c.tick(T0).await.remove(0);
    assert_eq!(e.kind, "scale");
    assert_eq!(e.read_back, Some(3));
    assert!(
        e.explanation.ends_with("(read back 3, not 4)"),
        "{}",
        e.explanation
    );
    // The next evaluation starts from 3.
    let e = c.tick(T0 + 15 * S).await.remove(0);
    assert!(e.explanation.contains("scale 3 → 4"), "{}", e.explanation);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_unreachable_supervisor_is_an_event() {
    let load = Arc::new(Fixed::default());
    let c = controller(
        policy(ActuatorConfig::supervisor("http://127.0.0.1:1", None)),
        load,
    );
    let e = c.tick(T0).await.remove(0);
    assert_eq!(e.kind, "actuator_error");
    assert!(
        e.explanation
            .contains("cannot read web's count (unreachable"),
        "{}",
        e.explanation
    );
}

#[tokio::test]
async fn a_paused_policy_decides_nothing_and_says_why() {
    let load = Arc::new(Fixed::default());
    *load.0.lock().expect("lock") = 400.0;
    let c = controller(policy(ActuatorConfig::DryRun { start: 2 }), load);
    c.journal().pause("web", "shop-db fails over");
    let e = c.tick(T0).await;
    assert_eq!(e[0].kind, "paused");
    assert_eq!(e[0].explanation, "web: not scaled while shop-db fails over");
    c.journal().resume("web");
    let e = c.tick(T0 + S).await;
    assert_eq!(e[0].kind, "scale", "{}", e[0].explanation);
}

#[test]
fn a_bad_policy_reports_every_problem_with_its_field() {
    let mut p = policy(ActuatorConfig::DryRun { start: 1 });
    p.min = 5;
    p.max = 2;
    p.metrics[0].total = Some(3.0);
    let config = ControllerConfig {
        interval: Duration::ZERO,
        policies: vec![p],
        ..ControllerConfig::default()
    };
    let mut problems = Vec::new();
    config.validate(&mut problems);
    assert_eq!(
        problems,
        vec![
            "controller.interval: must be positive",
            "controller.policies[0].max: must be at least min (5) and positive",
            "controller.policies[0].metrics[0]: give exactly one of per_instance, average, total",
        ]
    );
}

/// A week of the seeds' daily shape (quiet 60/s, 08–10 300/s) behind
/// range queries; instant queries answer the load at that time.
struct Daily;

fn daily(t_ms: i64) -> f64 {
    let hour = (t_ms.rem_euclid(86_400_000)) as f64 / 3_600_000.0;
    if (8.0..10.0).contains(&hour) {
        300.0
    } else {
        60.0
    }
}

impl MetricSource for Daily {
    fn instant(&self, _: &str, t: i64) -> Result<keel_controller::run::Samples, String> {
        Ok(vec![(BTreeMap::new(), daily(t))])
    }
    fn range(&self, _: &str, start: i64, end: i64, step: i64) -> Result<Vec<(i64, f64)>, String> {
        Ok((0..=(end - start) / step)
            .map(|k| start + k * step)
            .filter(|t| *t >= DAY0)
            .map(|t| (t, daily(t)))
            .collect())
    }
}

/// A midnight (UTC) seven days before the test's morning.
const DAY0: i64 = 1_795_996_800_000 - 7 * 86_400_000;

fn predictive_policy(mode: keel_controller::PredictiveMode) -> Policy {
    let mut p = policy(ActuatorConfig::DryRun { start: 2 });
    p.metrics[0].average = Some(50.0);
    p.warm_up = Duration::from_secs(180);
    p.predictive = Some(keel_controller::PredictiveSpec {
        mode,
        query: "sum(rate(requests_total[1m]))".into(),
        per_instance: 50.0,
        step: Duration::from_secs(300),
        history: Duration::from_secs(14 * 86_400),
        refit: Duration::from_secs(3600),
        buffer: Duration::from_secs(300),
        season: Duration::from_secs(86_400),
    });
    p
}

fn at(hh: i64, mm: i64) -> i64 {
    DAY0 + 7 * 86_400_000 + (hh * 60 + mm) * 60_000
}

#[tokio::test]
async fn predictive_scaling_brings_the_morning_capacity_before_the_ramp() {
    let config = ControllerConfig {
        policies: vec![predictive_policy(
            keel_controller::PredictiveMode::ForecastAndScale,
        )],
        ..ControllerConfig::default()
    };
    let clock: SharedClock = Arc::new(ManualClock::new(UNIX_EPOCH));
    let c = Controller::new(&config, Arc::new(Daily), clock, None);
    // 07:45: the ramp is beyond warm-up + buffer (8 min): night capacity.
    let e = c.tick(at(7, 45)).await.remove(0);
    assert_eq!(e.read_back, None, "{}", e.explanation);
    assert!(e.explanation.contains("forecast"), "{}", e.explanation);
    // 07:52: 08:00 is within 8 min: 300/s at 50 each = 6, before any
    // request of the morning has arrived (the reactive side wants 2).
    let e = c.tick(at(7, 52)).await.remove(0);
    assert_eq!(e.kind, "scale", "{}", e.explanation);
    assert_eq!(e.read_back, Some(6), "{}", e.explanation);
    assert!(
        e.explanation
            .starts_with("web: scale 2 → 6: request rate 30 vs 50 (wants 2)")
            && e.explanation.contains("forecast 300 at 08:00"),
        "{}",
        e.explanation
    );
    // Predictive never scales in by itself: once the forecast falls
    // (10:00), the reactive side waits its 300 s window from the last
    // predictive count (09:58) before scaling in.
    for (h, m) in [(9, 58), (10, 2)] {
        let e = c.tick(at(h, m)).await.remove(0);
        assert_eq!(e.kind, "decision", "{}", e.explanation);
    }
    let e = c.tick(at(10, 3) + 1000).await.remove(0);
    assert_eq!(
        (e.kind.as_str(), e.read_back),
        ("scale", Some(2)),
        "{}",
        e.explanation
    );
}

#[tokio::test]
async fn forecast_only_records_the_forecast_and_changes_nothing() {
    let config = ControllerConfig {
        policies: vec![predictive_policy(
            keel_controller::PredictiveMode::ForecastOnly,
        )],
        ..ControllerConfig::default()
    };
    let clock: SharedClock = Arc::new(ManualClock::new(UNIX_EPOCH));
    let c = Controller::new(&config, Arc::new(Daily), clock, None);
    let e = c.tick(at(7, 55)).await.remove(0);
    assert_eq!(e.kind, "decision");
    assert!(
        e.explanation.contains("wants 6 (forecast only)"),
        "{}",
        e.explanation
    );
    let f = &e.decision.as_ref().expect("decision")["forecast"];
    assert_eq!(f["proposal"], 6);
    assert_eq!(f["applied"], false);
}
