use super::{Engine, QueryRange, Window};
use crate::Value;
use keel_series::{Labels, SeriesSamples};

#[test]
fn the_engine_reads_any_queryable_not_only_the_store() {
    // A counter rising 1/s on two instances, a sample every 15 s, held
    // in a plain vector: the engine needs nothing of the metric store.
    let series = |instance: &str| -> SeriesSamples {
        let l = Labels::new(vec![("__name__", "hits_total"), ("instance", instance)]);
        (l, (0..=20).map(|i| (i * 15_000, (i * 15) as f64)).collect())
    };
    let data: Vec<SeriesSamples> = vec![series("a"), series("b")];
    let engine = Engine::new(&data);
    let Value::Vector(v) = engine
        .instant("sum(rate(hits_total[1m]))", 300_000)
        .expect("evaluates")
    else {
        panic!("a vector");
    };
    assert_eq!(v.len(), 1);
    assert!((v[0].value - 2.0).abs() < 1e-9, "{}", v[0].value);
    let Value::Vector(v) = engine
        .instant("hits_total{instance=\"b\"}", 300_000)
        .expect("evaluates")
    else {
        panic!("a vector");
    };
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].value, 300.0);
}

#[test]
fn a_sliding_window_finds_what_binary_search_finds_in_any_step_order() {
    let points: Vec<(i64, f64)> = (0..200).map(|i| (i * 15 + (i % 7), 0.0)).collect();
    let mut w = Window::default();
    // Forward steps, repeats, jumps back, and windows past both ends.
    let mut ends: Vec<i64> = (-100..3_200).step_by(13).collect();
    ends.extend([500, 500, 100, 2_000, -50, 3_500, 3_000]);
    for range in [0, 15, 300, 5_000] {
        for &end in &ends {
            let start = end - range;
            let want = (
                points.partition_point(|(t, _)| *t <= start),
                points.partition_point(|(t, _)| *t <= end),
            );
            assert_eq!(w.slide(&points, start, end), want, "({start}, {end}]");
        }
    }
}

/// A counter on `n` series, a sample every second for `secs`.
fn counters(n: usize, secs: i64) -> Vec<SeriesSamples> {
    (0..n)
        .map(|i| {
            let id = i.to_string();
            let l = Labels::new(vec![("__name__", "c_total"), ("i", id.as_str())]);
            (l, (0..secs).map(|s| (s * 1000, s as f64)).collect())
        })
        .collect()
}

fn limited(max_samples: usize) -> crate::Budget {
    crate::QueryLimits {
        max_samples,
        ..crate::QueryLimits::default()
    }
    .budget(None)
}

#[test]
fn a_subquery_bomb_is_refused_at_the_sample_limit_with_prometheus_error() {
    let data: Vec<SeriesSamples> = Vec::new();
    let engine = Engine::with_budget(&data, limited(100_000));
    let e = engine
        .instant("count_over_time(vector(1)[1000d:1ms])", 86_400_000)
        .expect_err("refused");
    assert_eq!(
        e.to_string(),
        "query processing would load too many samples into memory in subquery evaluation"
    );
}

#[test]
fn the_limit_counts_samples_held_at_once_not_summed_over_steps() {
    // 10 series × 600 samples = 6,000 fetched; each step's window holds
    // 10 × 60. Over 60 steps the windows sum to 36,000, but at most
    // 6,000 + 600 + the result are held at once.
    let data = counters(10, 600);
    let range = QueryRange {
        start: 60_000,
        end: 599_000,
        step: 9_000,
    };
    let q = "max_over_time((c_total[1m]))";
    let fits = Engine::with_budget(&data, limited(7_500)).range(q, range);
    assert_eq!(fits.map(|s| s.len()).ok(), Some(10), "within the limit");
    let e = Engine::with_budget(&data, limited(6_500))
        .range(q, range)
        .expect_err("6,000 fetched + one step's 600 windows + results");
    assert_eq!(
        e.to_string(),
        "query processing would load too many samples into memory in query execution"
    );
    // An instant selector fetches its 5 m lookback: 10 × 300 samples.
    let e = Engine::with_budget(&data, limited(2_999))
        .instant("c_total", 599_000)
        .expect_err("the fetched series alone are over");
    assert!(matches!(e, crate::EvalError::TooManySamples(_)), "{e}");
}

#[test]
fn extreme_times_and_steps_neither_panic_nor_loop() {
    let data = counters(1, 10);
    let engine = Engine::new(&data);
    let all = QueryRange {
        start: i64::MIN,
        end: i64::MAX,
        step: i64::MAX,
    };
    // MIN, -1, MAX - 1, and no overflow stepping past the end.
    let r = engine.range("vector(1)", all).expect("evaluates");
    assert_eq!(r[0].points.len(), 3);
    for q in [
        "c_total offset 1000000000d",
        "c_total @ 9000000000000",
        "rate(c_total[1000000000d])",
        "max_over_time(c_total[1000000000d:1000000000d])",
    ] {
        engine.instant(q, i64::MAX).expect("evaluates");
        engine.instant(q, i64::MIN).expect("evaluates");
    }
}

#[test]
fn histogram_quantile_with_one_bound_spelt_twice_is_nan_not_a_panic() {
    let b = |le: &str, v: f64| -> SeriesSamples {
        let l = Labels::new(vec![("__name__", "h_bucket"), ("le", le)]);
        (l, vec![(0, v)])
    };
    let data = vec![b("+Inf", 3.0), b("inf", 4.0)];
    let Value::Vector(v) = Engine::new(&data)
        .instant("histogram_quantile(0.5, h_bucket)", 1_000)
        .expect("evaluates")
    else {
        panic!("a vector");
    };
    assert_eq!(v.len(), 1);
    assert!(v[0].value.is_nan(), "{}", v[0].value);
}

/// Queries just under the nesting bound evaluate, right, on a 2 MiB
/// thread: before the stack grew on demand, ~200 nested calls or ~500
/// chained operators overflowed it in a debug build and aborted.
#[test]
fn queries_nested_up_to_the_bound_evaluate_on_a_small_stack() {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            let data: Vec<SeriesSamples> =
                vec![(Labels::new(vec![("__name__", "m")]), vec![(0, -2.0)])];
            let engine = Engine::new(&data);
            let n = crate::MAX_NESTING - 10;
            let nested = format!("{}m{}", "abs(".repeat(n), ")".repeat(n));
            let chain = vec!["m"; n].join(" + ");
            let parens = format!("{}m{}", "(".repeat(n), ")".repeat(n));
            for (q, want) in [(nested, 2.0), (chain, -2.0 * n as f64), (parens, -2.0)] {
                let Value::Vector(v) = engine.instant(&q, 1_000).expect("evaluates") else {
                    panic!("a vector");
                };
                assert_eq!(v.len(), 1);
                assert_eq!(v[0].value, want);
            }
        })
        .expect("thread")
        .join()
        .expect("no overflow");
}

/// Series of every awkward kind for the series-by-series path: counters
/// that reset, gaps, stale markers, NaN, ±Inf, -0, two names sharing the
/// other labels, and series that start or end inside the range.
fn awkward(rng: &mut rand::rngs::SmallRng) -> Vec<SeriesSamples> {
    use rand::Rng as _;
    let mut out = Vec::new();
    for i in 0..12 {
        // g's four series share their other labels with c_total's first four.
        let name = if i < 8 { "c_total" } else { "g" };
        let id = (i % 8).to_string();
        let job = if i % 8 % 3 == 0 { "api" } else { "web" };
        let l = Labels::new(vec![("__name__", name), ("i", id.as_str()), ("job", job)]);
        let (from, to) = (rng.random_range(0..600), rng.random_range(600..1_400));
        let mut v = 0.0;
        let mut points = Vec::new();
        let mut t = from * 1000;
        while t < to * 1000 {
            v += rng.random_range(0.0..10.0);
            let value = match rng.random_range(0..40) {
                0 => {
                    v = rng.random_range(0.0..3.0);
                    v
                }
                1 => keel_core::stale::marker(),
                2 => f64::NAN,
                3 => f64::INFINITY,
                4 => -0.0,
                _ => v,
            };
            points.push((t, value));
            t += rng.random_range(1..30) * 1000;
        }
        out.push((l, points));
    }
    out
}

#[test]
fn series_by_series_answers_what_step_by_step_answers_to_the_bit() {
    use rand::SeedableRng as _;
    let functions = [
        "rate",
        "increase",
        "delta",
        "irate",
        "idelta",
        "deriv",
        "changes",
        "resets",
        "avg_over_time",
        "sum_over_time",
        "count_over_time",
        "min_over_time",
        "max_over_time",
        "last_over_time",
        "present_over_time",
        "stddev_over_time",
        "stdvar_over_time",
        "mad_over_time",
    ];
    let wraps = [
        "{}",
        "sum({})",
        "sum by (job) ({})",
        "avg by (job) ({})",
        "count without (i) ({})",
        "min by (i) ({})",
        "max({})",
        "group by (job) ({})",
        "sum by (__name__) ({})",
    ];
    let selectors = [
        "c_total[1m]",
        "c_total[5m]",
        "{__name__=~\"c_total|g\"}[2m]",
        "g[30s] offset 1m",
        "c_total[3m] @ 900",
    ];
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    let mut compared = 0;
    let went = std::sync::atomic::AtomicUsize::new(0);
    for round in 0..6 {
        let data = awkward(&mut rng);
        let budget = crate::limits::Budget::default().with_experimental(true);
        let fast = Engine::with_budget(&data, budget.clone());
        let mut slow = Engine::with_budget(&data, budget);
        slow.by_series = false;
        for f in functions {
            for w in wraps {
                for sel in selectors {
                    let q = w.replace("{}", &format!("{f}({sel})"));
                    let range = QueryRange {
                        start: 60_000 + round * 7_000,
                        end: 1_300_000,
                        step: 15_000 + round * 4_000,
                    };
                    let (a, b) = (
                        fast.range_annotated(&q, range),
                        slow.range_annotated(&q, range),
                    );
                    match (a, b) {
                        (Ok(a), Ok(b)) => {
                            assert_eq!(a.annotations, b.annotations, "{q}");
                            assert_eq!(a.value.len(), b.value.len(), "{q}");
                            for (x, y) in a.value.iter().zip(&b.value) {
                                assert_eq!(x.labels, y.labels, "{q}");
                                let bits = |p: &[(i64, f64)]| {
                                    p.iter()
                                        .map(|(t, v)| {
                                            (*t, if v.is_nan() { 1 } else { v.to_bits() })
                                        })
                                        .collect::<Vec<_>>()
                                };
                                assert_eq!(bits(&x.points), bits(&y.points), "{q} {:?}", x.labels);
                            }
                            compared += 1;
                        }
                        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{q}"),
                        (a, b) => panic!("{q}: {a:?} vs {b:?}"),
                    }
                }
            }
        }
        went.fetch_add(
            fast.went_by_series
                .load(std::sync::atomic::Ordering::Relaxed),
            std::sync::atomic::Ordering::Relaxed,
        );
    }
    assert!(compared > 3_500, "{compared} answers compared");
    // The comparison is of the two paths, not of the step path with
    // itself: all but the colliding selections went series by series.
    let went = went.load(std::sync::atomic::Ordering::Relaxed);
    assert!(went > 3_000, "{went} of {compared} went series by series");
}

#[test]
fn series_by_series_stops_at_the_same_sample_limit() {
    // 50 series x 591 samples fetched; 50 answers x 531 steps held.
    let data = counters(50, 600);
    let (fetched, answer) = (50 * 591, 50 * 531);
    let range = QueryRange {
        start: 60_000,
        end: 590_000,
        step: 1_000,
    };
    for limit in [fetched - 1, fetched + answer - 1, fetched + answer, 200_000] {
        let budget = crate::limits::QueryLimits {
            max_samples: limit,
            ..Default::default()
        }
        .budget(None);
        let fast = Engine::with_budget(&data, budget.clone());
        let mut slow = Engine::with_budget(&data, budget);
        slow.by_series = false;
        for q in ["rate(c_total[1m])", "sum by (i) (rate(c_total[1m]))"] {
            let a = fast.range(q, range).map_err(|e| e.to_string());
            let b = slow.range(q, range).map_err(|e| e.to_string());
            assert_eq!(a, b, "{q} at {limit}");
            assert_eq!(a.is_ok(), limit >= fetched + answer, "{q} at {limit}");
        }
        // Where the answer fits, it was the series-by-series path's.
        let went = fast
            .went_by_series
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            went,
            if limit >= fetched + answer { 2 } else { 0 },
            "at {limit}"
        );
    }
}

#[test]
fn a_short_lived_series_answers_its_own_span_of_a_long_range() {
    // A series that lives for 10 s of a range of 10,000 steps.
    let data = counters(1, 600);
    let short: Vec<SeriesSamples> = vec![(data[0].0.clone(), data[0].1[100..110].to_vec())];
    let engine = Engine::new(&short);
    let range = QueryRange {
        start: 0,
        end: 10_000_000,
        step: 1_000,
    };
    let out = engine
        .range("last_over_time(c_total[1s])", range)
        .expect("evaluates");
    assert_eq!(
        engine
            .went_by_series
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(out.len(), 1);
    let want: Vec<(i64, f64)> = (100..110).map(|s| (s * 1000, s as f64)).collect();
    assert_eq!(out[0].points, want);
}
