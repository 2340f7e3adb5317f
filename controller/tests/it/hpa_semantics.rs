//! The reactive autoscaler against the Kubernetes HPA's rules, each
//! test named for the rule it checks, with the expected counts worked
//! out by hand from `replica_calculator.go` and `horizontal.go`
//! (tolerance 0.1; scale-up: 0 s window, max(4 pods, 100 %) per 15 s;
//! scale-down: 300 s window, 100 % per 15 s), on explicit times.

use std::collections::BTreeMap;
use std::time::Duration;

use keel_controller::{
    Autoscaler, Behavior, Demand, Instances, Observation, PolicyKind, RatePolicy, Reading,
    SelectPolicy, Settings, Target,
};

use crate::common::{S, T0, inst, names};

/// Per-instance values for the first instances.
fn per(values: &[f64]) -> Reading {
    Reading::PerInstance(
        values
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("i{i}"), *v))
            .collect::<BTreeMap<_, _>>(),
    )
}

fn rps(reading: Reading) -> Observation {
    Observation {
        name: "rps".into(),
        target: Target::PerInstance(100.0),
        reading,
    }
}

fn scaler(min: u32, max: u32) -> Autoscaler {
    Autoscaler::new(Settings {
        min,
        max,
        behavior: Behavior::hpa(),
        ..Settings::default()
    })
}

/// Decide once and return the count.
fn once(a: &mut Autoscaler, t: i64, i: &Instances, m: &[Observation]) -> u32 {
    a.evaluate(t, i, m, None).desired
}

#[test]
fn desired_is_ceil_of_ratio_times_ready() {
    // 4 × avg 150 / 100 = 6.
    let mut a = scaler(1, 100);
    assert_eq!(once(&mut a, T0, &inst(4), &[rps(per(&[150.0; 4]))]), 6);
}

#[test]
fn within_tolerance_0_1_nothing_changes() {
    let mut a = scaler(1, 100);
    // ratio 1.08: within 0.1.
    assert_eq!(once(&mut a, T0, &inst(4), &[rps(per(&[108.0; 4]))]), 4);
    // ratio 1.11: ceil(4.44) = 5.
    assert_eq!(once(&mut a, T0, &inst(4), &[rps(per(&[111.0; 4]))]), 5);
}

#[test]
fn tolerance_is_per_direction() {
    let mut b = Behavior::hpa();
    b.scale_up.tolerance = 0.0;
    b.scale_down.tolerance = 0.5;
    let mut a = Autoscaler::new(Settings {
        min: 1,
        max: 100,
        behavior: b,
        ..Settings::default()
    });
    // Up, no tolerance: 1.03 → ceil(4.12) = 5.
    assert_eq!(once(&mut a, T0, &inst(4), &[rps(per(&[103.0; 4]))]), 5);
    // Down, 0.5 tolerance: 0.6 keeps 4.
    let mut a2 = a.clone();
    assert_eq!(once(&mut a2, T0, &inst(4), &[rps(per(&[60.0; 4]))]), 4);
}

#[test]
fn missing_instances_count_as_100_percent_on_scale_down() {
    // 4 ready, values for 2 at 50: ratio 0.5 < 1, the 2 missing count as
    // 100: avg (50+50+100+100)/4 = 75 → ceil(0.75 × 4) = 3 (not 1).
    let mut a = scaler(1, 100);
    let d = a.evaluate(T0, &inst(4), &[rps(per(&[50.0, 50.0]))], None);
    assert_eq!(d.metrics[0].proposal, Some(3), "{d:?}");
    assert_eq!(d.desired, 3);
}

#[test]
fn missing_instances_count_as_0_on_scale_up() {
    // 4 ready, values for 2 at 300: ratio 3, missing at 0: avg 150 →
    // ceil(1.5 × 4) = 6 (not ceil(3 × 2) = 6 by luck: use 250 → 5).
    let mut a = scaler(1, 100);
    assert_eq!(once(&mut a, T0, &inst(4), &[rps(per(&[250.0, 250.0]))]), 5);
    // 200 each: missing at 0 brings the average to 100: no change.
    assert_eq!(once(&mut a, T0, &inst(4), &[rps(per(&[200.0, 200.0]))]), 4);
}

#[test]
fn warming_instances_count_as_0_on_scale_up_and_are_ignored_on_scale_down() {
    let warming = Instances {
        current: 4,
        ready: names(2),
        all: names(4),
    };
    let values = |ready: f64, warm: f64| {
        Reading::PerInstance(BTreeMap::from([
            ("i0".into(), ready),
            ("i1".into(), ready),
            ("i2".into(), warm),
            ("i3".into(), warm),
        ]))
    };
    // Up: ready avg 300 (ratio 3), warming at 0 → avg 150 → ceil(1.5×4) = 6;
    // their own (high) readings are not believed.
    let mut a = scaler(1, 100);
    assert_eq!(once(&mut a, T0, &warming, &[rps(values(300.0, 900.0))]), 6);
    // Up to exactly the target once warming count as 0: no change.
    let mut a = scaler(1, 100);
    assert_eq!(once(&mut a, T0, &warming, &[rps(values(200.0, 900.0))]), 4);
    // Down: warming ignored: ready avg 40 → ceil(0.4 × 2) = 1.
    let mut a = scaler(1, 100);
    assert_eq!(once(&mut a, T0, &warming, &[rps(values(40.0, 0.0))]), 1);
}

#[test]
fn the_largest_proposal_over_metrics_wins() {
    let mut a = scaler(1, 100);
    let cpu = Observation {
        name: "cpu".into(),
        target: Target::PerInstance(0.7),
        reading: per(&[0.35; 4]), // wants 2
    };
    assert_eq!(once(&mut a, T0, &inst(4), &[rps(per(&[150.0; 4])), cpu]), 6);
}

#[test]
fn no_scale_down_while_any_metric_is_invalid_but_scale_up_goes_on() {
    let broken = Observation {
        name: "latency".into(),
        target: Target::Total(0.5),
        reading: Reading::Invalid("query failed".into()),
    };
    let mut a = scaler(1, 100);
    let d = a.evaluate(T0, &inst(4), &[rps(per(&[50.0; 4])), broken.clone()], None);
    assert_eq!(d.desired, 4, "{}", d.explanation);
    assert!(
        d.explanation.contains("latency unreadable"),
        "{}",
        d.explanation
    );
    assert_eq!(
        once(&mut a, T0, &inst(4), &[rps(per(&[150.0; 4])), broken]),
        6
    );
}

#[test]
fn total_and_average_of_total_targets() {
    let mut a = scaler(1, 100);
    // Value: total 900 vs 300 → ratio 3 × 2 ready = 6.
    let total = Observation {
        name: "queue".into(),
        target: Target::Total(300.0),
        reading: Reading::Total(900.0),
    };
    assert_eq!(once(&mut a, T0, &inst(2), &[total]), 6);
    // AverageValue of a total: 1,820/s at 200 a replica → ceil(9.1) = 10,
    // capped by the scale-up rate from 4: max(4+4, 4×2) = 8.
    let avg = Observation {
        name: "request rate".into(),
        target: Target::AverageOfTotal(200.0),
        reading: Reading::Total(1820.0),
    };
    let d = a.evaluate(T0, &inst(4), &[avg], None);
    assert_eq!((d.proposed, d.desired), (10, 8), "{}", d.explanation);
    assert_eq!(
        d.explanation,
        "scale 4 → 8: request rate 455 vs 200 (wants 10); 10 → 8 by scale-up rate 4/15s, 100 %/15s (Max)"
    );
}

#[test]
fn scale_up_default_policies_4_pods_or_100_percent_per_15s_select_max() {
    // From 2: max(2+4, 2×2) = 6.
    let mut a = scaler(1, 100);
    assert_eq!(once(&mut a, T0, &inst(2), &[rps(per(&[1000.0; 2]))]), 6);
    // From 10: max(14, 20) = 20.
    let mut a = scaler(1, 100);
    assert_eq!(once(&mut a, T0, &inst(10), &[rps(per(&[500.0; 10]))]), 20);
}

#[test]
fn rate_policies_measure_from_the_count_at_the_period_start() {
    let mut a = scaler(1, 100);
    let hot = |n: u32| [rps(per(&vec![1000.0; n as usize]))];
    assert_eq!(once(&mut a, T0, &inst(4), &hot(4)), 8);
    a.scaled(T0, 4, 8);
    // 10 s later, same period: the start is still 4 → max(8, 8) = 8.
    assert_eq!(once(&mut a, T0 + 10 * S, &inst(8), &hot(8)), 8);
    // 16 s later: a new period from 8 → max(12, 16) = 16.
    assert_eq!(once(&mut a, T0 + 16 * S, &inst(8), &hot(8)), 16);
}

#[test]
fn select_policy_min_takes_the_smallest_change_and_disabled_none() {
    let mut b = Behavior::hpa();
    b.scale_up.select_policy = SelectPolicy::Min;
    let mut a = Autoscaler::new(Settings {
        min: 1,
        max: 100,
        behavior: b.clone(),
        ..Settings::default()
    });
    // From 2: min(6, 4) = 4.
    assert_eq!(once(&mut a, T0, &inst(2), &[rps(per(&[1000.0; 2]))]), 4);
    b.scale_up.select_policy = SelectPolicy::Disabled;
    let mut a = Autoscaler::new(Settings {
        min: 1,
        max: 100,
        behavior: b,
        ..Settings::default()
    });
    assert_eq!(once(&mut a, T0, &inst(2), &[rps(per(&[1000.0; 2]))]), 2);
}

#[test]
fn scale_down_stabilization_300s_takes_the_largest_recommendation_in_the_window() {
    let mut a = scaler(1, 100);
    let at = |v: f64| [rps(per(&[v; 10]))];
    assert_eq!(once(&mut a, T0, &inst(10), &at(100.0)), 10);
    // Load halves: 5 is recommended but 10 is in the window.
    assert_eq!(once(&mut a, T0 + 60 * S, &inst(10), &at(50.0)), 10);
    assert_eq!(once(&mut a, T0 + 299 * S, &inst(10), &at(50.0)), 10);
    // A recommendation counts while strictly after now − 300 s (the HPA's
    // `timestamp.After(cutoff)`): at exactly 300 s the 10 is out.
    let d = a.evaluate(T0 + 300 * S, &inst(10), &at(50.0), None);
    assert_eq!(d.desired, 5, "{}", d.explanation);
}

#[test]
fn scale_up_stabilization_window_takes_the_smallest_recommendation() {
    let mut b = Behavior::hpa();
    b.scale_up.stabilization_window = Duration::from_secs(60);
    let mut a = Autoscaler::new(Settings {
        min: 1,
        max: 100,
        behavior: b,
        ..Settings::default()
    });
    assert_eq!(once(&mut a, T0, &inst(4), &[rps(per(&[100.0; 4]))]), 4);
    let d = a.evaluate(T0 + 15 * S, &inst(4), &[rps(per(&[200.0; 4]))], None);
    assert_eq!(d.desired, 4);
    assert!(
        d.explanation.contains("scale-up stabilization window 1m"),
        "{}",
        d.explanation
    );
    // The 4 at T0 has left the 60 s window.
    assert_eq!(
        once(&mut a, T0 + 61 * S, &inst(4), &[rps(per(&[200.0; 4]))]),
        8
    );
}

#[test]
fn scale_down_percent_policies_floor_and_select() {
    let mut b = Behavior::hpa();
    b.scale_down.stabilization_window = Duration::ZERO;
    b.scale_down.policies = vec![
        RatePolicy {
            kind: PolicyKind::Percent,
            value: 50,
            period: Duration::from_secs(15),
        },
        RatePolicy {
            kind: PolicyKind::Pods,
            value: 1,
            period: Duration::from_secs(15),
        },
    ];
    let settings = |b: Behavior| Settings {
        min: 1,
        max: 100,
        behavior: b,
        ..Settings::default()
    };
    // Max (most change): min(floor(5 × 0.5) = 2, 5 − 1 = 4) = 2.
    let mut a = Autoscaler::new(settings(b.clone()));
    assert_eq!(once(&mut a, T0, &inst(5), &[rps(per(&[10.0; 5]))]), 2);
    // Min (least change): max(2, 4) = 4.
    b.scale_down.select_policy = SelectPolicy::Min;
    let mut a = Autoscaler::new(settings(b));
    assert_eq!(once(&mut a, T0, &inst(5), &[rps(per(&[10.0; 5]))]), 4);
}

#[test]
fn min_and_max_bound_every_result() {
    let mut a = scaler(3, 10);
    let d = a.evaluate(T0, &inst(8), &[rps(per(&[1000.0; 8]))], None);
    assert_eq!(d.desired, 10);
    assert!(d.explanation.ends_with("by max 10"), "{}", d.explanation);
    let mut a = scaler(3, 10);
    assert_eq!(once(&mut a, T0, &inst(4), &[rps(per(&[1.0; 4]))]), 3);
    // Outside the bounds: straight to them.
    let mut a = scaler(3, 10);
    assert_eq!(once(&mut a, T0, &inst(12), &[rps(per(&[100.0; 12]))]), 10);
    // Scaled to 0 by hand: left alone.
    let mut a = scaler(3, 10);
    assert_eq!(once(&mut a, T0, &inst(0), &[]), 0);
}

#[test]
fn panic_jumps_past_the_rate_policies_but_not_past_max_and_never_scales_down() {
    let mut a = scaler(1, 20);
    // 5,000/s at 100 a replica needs 50 ≥ 2 × 2 ready: panic.
    let burst = Demand {
        rate: 5000.0,
        per_instance: 100.0,
    };
    let d = a.evaluate(T0, &inst(2), &[rps(per(&[2500.0; 2]))], Some(burst));
    assert!(d.panic);
    assert_eq!(d.desired, 20, "{}", d.explanation);
    a.scaled(T0, 2, 20);
    // 30 s later the burst is gone; still in panic (60 s): no scale-down.
    let calm = Demand {
        rate: 100.0,
        per_instance: 100.0,
    };
    let d = a.evaluate(T0 + 30 * S, &inst(20), &[rps(per(&[5.0; 20]))], Some(calm));
    assert!(d.panic);
    assert_eq!(d.desired, 20, "{}", d.explanation);
    // Below 2×: no panic; from 4 ready, 300/s needs 3 < 8.
    let mut b = scaler(1, 20);
    let d = b.evaluate(
        T0,
        &inst(4),
        &[rps(per(&[75.0; 4]))],
        Some(Demand {
            rate: 300.0,
            per_instance: 100.0,
        }),
    );
    assert!(!d.panic);
}

#[test]
fn an_oscillating_load_never_reverses_inside_the_stabilization_window() {
    let mut a = scaler(1, 50);
    let mut n = 4u32;
    let mut changes: Vec<(i64, i32)> = Vec::new();
    for step in 0..200 {
        let t = T0 + step * 15 * S;
        // 1,000/s then 200/s, alternating every 45 s.
        let total = if (step / 3) % 2 == 0 { 1000.0 } else { 200.0 };
        let each = total / f64::from(n);
        let d = a.evaluate(t, &inst(n), &[rps(per(&vec![each; n as usize]))], None);
        if d.desired != n {
            changes.push((t, (i64::from(d.desired) - i64::from(n)).signum() as i32));
            a.scaled(t, n, d.desired);
            n = d.desired;
        }
    }
    assert!(!changes.is_empty(), "it scaled up at least once");
    for w in changes.windows(2) {
        if w[0].1 > 0 && w[1].1 < 0 {
            assert!(
                w[1].0 - w[0].0 >= 300 * S,
                "up at {} then down at {}",
                w[0].0,
                w[1].0
            );
        }
    }
    assert_eq!(n, 10, "held at the peak's size");
}

#[test]
fn behavior_reads_from_yaml_with_the_hpa_defaults_and_reports_every_problem() {
    let b: Behavior = serde_saphyr::from_str(
        "scale_up:\n  stabilization_window: 0s\n  select_policy: Max\n  policies:\n  - {type: Pods, value: 4, period: 15s}\n  - {type: Percent, value: 100, period: 15s}\nscale_down:\n  stabilization_window: 5m\n  policies:\n  - {type: Percent, value: 100, period: 15s}\n",
    )
    .expect("yaml");
    assert_eq!(b, Behavior::default());
    let mut bad = Behavior::default();
    bad.scale_up.tolerance = 1.5;
    bad.scale_down.policies[0].value = 0;
    bad.scale_down.policies[0].period = Duration::ZERO;
    let mut problems = Vec::new();
    bad.validate("controller.policies[0].behavior", &mut problems);
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems[0].starts_with("controller.policies[0].behavior.scale_up.tolerance"));
}
