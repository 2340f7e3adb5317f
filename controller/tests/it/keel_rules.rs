//! The rules Keel adds to the HPA's, each test named for its rule, on
//! explicit times (the manual Clock's): no reversal inside the last
//! move's stabilization window unless panic (which says so), forecast
//! jitter ignored, a scale-down held by the forecast's horizon and by
//! the last burst's need (`burst_memory`), and panic read from arrivals.
//! `Behavior::hpa()` beside each shows what the HPA would have done.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use keel_controller::{
    ActuatorConfig, Autoscaler, Behavior, Controller, ControllerConfig, Demand, ForecastPart,
    MetricSource, MetricSpec, Observation, PanicSpec, Policy, Reading, Settings, Target,
};
use keel_core::clock::{ManualClock, SharedClock};

use crate::common::{S, T0, inst};

/// The whole tier's request rate against 100 per instance.
fn total(rate: f64) -> Observation {
    Observation {
        name: "rps".into(),
        target: Target::AverageOfTotal(100.0),
        reading: Reading::Total(rate),
    }
}

/// A scale-down window of 20 s (so the table stays short).
fn scaler(behavior: Behavior) -> Autoscaler {
    let mut behavior = behavior;
    behavior.scale_down.stabilization_window = Duration::from_secs(20);
    Autoscaler::new(Settings {
        min: 1,
        max: 50,
        behavior,
        ..Settings::default()
    })
}

/// Scale 6 → 5 at T0 + 30 s, as both behaviours do.
fn scaled_down(a: &mut Autoscaler) {
    assert_eq!(a.evaluate(T0, &inst(6), &[total(600.0)], None).desired, 6);
    assert_eq!(
        a.evaluate(T0 + 15 * S, &inst(6), &[total(480.0)], None)
            .desired,
        6
    );
    let d = a.evaluate(T0 + 30 * S, &inst(6), &[total(480.0)], None);
    assert_eq!(d.desired, 5, "{}", d.explanation);
    a.scaled(T0 + 30 * S, 6, 5);
}

#[test]
fn no_reversal_inside_the_stabilization_window_of_the_last_move() {
    // At +32 s the load needs 6 again. The HPA goes back up (its scale-up
    // window is 0); Keel holds 5 until the scale-down window (20 s) has
    // passed since it moved down.
    let mut hpa = scaler(Behavior::hpa());
    scaled_down(&mut hpa);
    assert_eq!(
        hpa.evaluate(T0 + 32 * S, &inst(5), &[total(600.0)], None)
            .desired,
        6
    );

    let mut keel = scaler(Behavior::default());
    scaled_down(&mut keel);
    let d = keel.evaluate(T0 + 32 * S, &inst(5), &[total(600.0)], None);
    assert_eq!(d.desired, 5);
    assert!(
        d.explanation.contains("no reversal: scaled down 2s ago, inside the scale-down stabilization window 20s (only panic reverses)"),
        "{}",
        d.explanation
    );
    assert_eq!(
        keel.evaluate(T0 + 49 * S, &inst(5), &[total(600.0)], None)
            .desired,
        5
    );
    // The window has passed: up again.
    assert_eq!(
        keel.evaluate(T0 + 51 * S, &inst(5), &[total(600.0)], None)
            .desired,
        6
    );
}

#[test]
fn panic_reverses_a_scale_down_inside_the_window_and_says_so() {
    let mut keel = scaler(Behavior::default());
    scaled_down(&mut keel);
    // 1,500/s needs 15 ≥ 2 × 5 ready: panic, 2 s after the scale-down.
    let burst = Demand {
        rate: 1500.0,
        per_instance: 100.0,
    };
    let d = keel.evaluate(T0 + 32 * S, &inst(5), &[total(600.0)], Some(burst));
    assert!(d.panic);
    assert_eq!(d.desired, 15, "{}", d.explanation);
    assert!(
        d.explanation
            .contains("reverses the scale-down 2s ago, inside its 20s window"),
        "{}",
        d.explanation
    );
}

fn forecast(mean: f64, high: f64) -> ForecastPart {
    ForecastPart {
        at_ms: T0 + 300 * S,
        mean,
        low: mean - (high - mean),
        high,
        per_instance: 100.0,
        proposal: (mean / 100.0).ceil() as u32,
        applied: false,
    }
}

#[test]
fn forecast_jitter_smaller_than_its_interval_does_not_move_the_target() {
    let mut keel = scaler(Behavior::default());
    let at = |a: &mut Autoscaler, t: i64, f: ForecastPart| {
        let mut d = a.evaluate(T0 + t * S, &inst(2), &[total(200.0)], None);
        a.predictive(&mut d, f, true);
        d
    };
    // 480 ± 100 wants 5 (at up to 110 each).
    let d = at(&mut keel, 0, forecast(480.0, 580.0));
    assert_eq!(d.desired, 5);
    // 560 ± 100 would want 6, but it moved 80, inside its interval: 5.
    let d = at(&mut keel, 15, forecast(560.0, 660.0));
    assert_eq!(d.desired, 5, "{}", d.explanation);
    assert!(
        d.explanation.contains("inside its interval: keeps 5"),
        "{}",
        d.explanation
    );
    // 800 ± 100 (it moved 320): 8.
    let d = at(&mut keel, 30, forecast(800.0, 900.0));
    assert_eq!(d.desired, 8, "{}", d.explanation);
}

#[test]
fn the_forecast_does_not_reverse_a_scale_down_inside_its_window_either() {
    let mut keel = scaler(Behavior::default());
    scaled_down(&mut keel);
    // 2 s later the forecast wants 8: held at 5 until the window passes.
    let mut d = keel.evaluate(T0 + 32 * S, &inst(5), &[total(480.0)], None);
    keel.predictive(&mut d, forecast(800.0, 810.0), true);
    assert_eq!(d.desired, 5, "{}", d.explanation);
    assert!(
        d.explanation.contains(
            "(held at 5: scaled down 2s ago, inside the scale-down stabilization window 20s)"
        ),
        "{}",
        d.explanation
    );
    let mut d = keel.evaluate(T0 + 51 * S, &inst(5), &[total(480.0)], None);
    keel.predictive(&mut d, forecast(800.0, 810.0), true);
    assert_eq!(d.desired, 8, "{}", d.explanation);
    // The HPA's semantics let it.
    let mut hpa = scaler(Behavior::hpa());
    scaled_down(&mut hpa);
    let mut d = hpa.evaluate(T0 + 32 * S, &inst(5), &[total(480.0)], None);
    hpa.predictive(&mut d, forecast(800.0, 810.0), true);
    assert_eq!(d.desired, 8, "{}", d.explanation);
}

#[test]
fn scale_down_waits_for_the_forecast_horizon() {
    // Reactively 8 → 2, but the forecast within warm-up + buffer wants 6.
    let mut keel = scaler(Behavior::default());
    let mut d = keel.evaluate(T0, &inst(8), &[total(200.0)], None);
    let mut d2 = d.clone();
    keel.predictive(&mut d, forecast(600.0, 610.0), true);
    assert_eq!(d.desired, 6, "{}", d.explanation);
    assert!(
        d.explanation.starts_with("scale 8 → 6")
            && d.explanation
                .contains("by forecast: the next warm-up plus buffer needs them"),
        "{}",
        d.explanation
    );
    // Forecast only: recorded, not acted on.
    let mut other = scaler(Behavior::default());
    other.predictive(&mut d2, forecast(600.0, 610.0), false);
    assert_eq!(d2.desired, d2.current.min(d2.desired));
    assert!(d2.desired < 6, "{}", d2.explanation);
}

#[test]
fn scale_down_never_goes_below_what_the_last_burst_needed_within_burst_memory() {
    let run = |b: Behavior| {
        let mut a = scaler(b);
        let burst = Demand {
            rate: 1000.0,
            per_instance: 100.0,
        };
        let d = a.evaluate(T0, &inst(2), &[total(1000.0)], Some(burst));
        assert_eq!(d.desired, 10);
        a.scaled(T0, 2, 10);
        // Quiet from then on: 100/s wants 1.
        let mut n = 10;
        let mut down_at = None;
        for k in 1..60 {
            let t = T0 + k * 15 * S;
            let d = a.evaluate(t, &inst(n), &[total(100.0)], None);
            if d.desired < n && down_at.is_none() {
                down_at = Some((t - T0) / S);
                assert!(d.desired < 10, "{}", d.explanation);
            }
            if d.desired != n {
                a.scaled(t, n, d.desired);
                n = d.desired;
            }
        }
        down_at
    };
    // The HPA: down once its (20 s) window and panic's 60 s are over.
    assert_eq!(run(Behavior::hpa()), Some(75));
    // Keel: not below 10 within the 10 minutes' memory.
    assert_eq!(run(Behavior::default()), Some(600));
    // Its explanation names the burst.
    let mut a = scaler(Behavior::default());
    let burst = Demand {
        rate: 1000.0,
        per_instance: 100.0,
    };
    a.evaluate(T0, &inst(2), &[total(1000.0)], Some(burst));
    a.scaled(T0, 2, 10);
    let d = a.evaluate(T0 + 120 * S, &inst(10), &[total(100.0)], None);
    assert_eq!(d.desired, 10);
    assert!(
        d.explanation
            .contains("by burst memory: a burst needed 10 2m ago (within 10m)"),
        "{}",
        d.explanation
    );
}

/// Answers by query: what finished (the metric) and what arrived (panic).
struct Split {
    finished: f64,
    arrived: Mutex<f64>,
}

impl MetricSource for Split {
    fn instant(&self, q: &str, _: i64) -> Result<keel_controller::run::Samples, String> {
        let v = if q.contains("lb_requests_received_total") {
            *self.arrived.lock().unwrap_or_else(|e| e.into_inner())
        } else {
            self.finished
        };
        Ok(vec![(BTreeMap::new(), v)])
    }
}

#[tokio::test]
async fn panic_reads_arrivals_from_the_received_counter() {
    // A burst still queued: few requests have finished (the metric stays
    // at 100/s) while the lb has received 1,000/s. Panic sees it.
    let source = Arc::new(Split {
        finished: 100.0,
        arrived: Mutex::new(100.0),
    });
    let policy = Policy {
        name: "web".into(),
        actuator: ActuatorConfig::DryRun { start: 2 },
        min: 2,
        max: 20,
        metrics: vec![MetricSpec {
            name: "request rate".into(),
            query: "sum(rate(http_server_request_duration_seconds_count{tier=\"web\"}[1m]))".into(),
            per_instance: None,
            average: Some(100.0),
            total: None,
        }],
        behavior: Behavior::default(),
        warm_up: Duration::ZERO,
        panic: Some(PanicSpec {
            demand: "sum(irate(lb_requests_received_total[5s]))".into(),
            per_instance: 100.0,
            threshold: 2.0,
            window: Duration::from_secs(60),
        }),
        predictive: None,
    };
    let config = ControllerConfig {
        policies: vec![policy],
        ..ControllerConfig::default()
    };
    let clock: SharedClock = Arc::new(ManualClock::new(
        UNIX_EPOCH + Duration::from_millis(T0 as u64),
    ));
    let c = Controller::new(&config, source.clone(), clock, None);
    let e = c.tick(T0).await.remove(0);
    assert_eq!(e.kind, "decision", "{}", e.explanation);
    *source.arrived.lock().unwrap_or_else(|e| e.into_inner()) = 1000.0;
    let e = c.tick(T0 + 15 * S).await.remove(0);
    assert_eq!(
        (e.kind.as_str(), e.read_back),
        ("scale", Some(10)),
        "{}",
        e.explanation
    );
    assert!(e.explanation.contains("panic"), "{}", e.explanation);
}
