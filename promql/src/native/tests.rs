use super::*;
use crate::{Engine, Value};
use keel_series::{SeriesHistograms, SeriesSamples};

fn h(count: f64, buckets: Vec<(i32, f64)>) -> Histogram {
    Histogram {
        schema: 0,
        zero_threshold: 1e-128,
        count,
        sum: count * 1.5,
        positive: buckets,
        ..Histogram::default()
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::new(pairs.to_vec())
}

/// `lat` for two jobs, growing by 4 observations a minute; `up` a float.
fn data() -> (Vec<SeriesSamples>, Vec<SeriesHistograms>) {
    let series = |job: &str| {
        (
            labels(&[("__name__", "lat"), ("job", job)]),
            (0..=10)
                .map(|k| {
                    let k = k as f64;
                    (
                        k as i64 * 60_000,
                        h(4.0 * k, vec![(1, 2.0 * k), (2, 2.0 * k)]),
                    )
                })
                .collect(),
        )
    };
    (
        vec![(
            labels(&[("__name__", "up"), ("job", "a")]),
            vec![(600_000, 1.0)],
        )],
        vec![series("a"), series("b")],
    )
}

fn err(q: &str) -> String {
    let d = data();
    Engine::new(&d)
        .instant(q, 600_000)
        .expect_err(q)
        .to_string()
}

#[test]
fn rate_sum_and_quantile_compose_as_in_prometheus() {
    let d = data();
    let e = Engine::new(&d);
    let Value::Histograms(r) = e.instant("rate(lat[5m])", 600_000).expect("rate") else {
        panic!("a histogram vector");
    };
    assert_eq!(r.len(), 2);
    // 4 observations a minute; the window's edges extrapolate to 5 m.
    assert!(
        (r[0].histogram.count - 4.0 / 60.0).abs() < 1e-12,
        "{:?}",
        r[0]
    );
    assert_eq!(r[0].labels.get("__name__"), "");
    let Value::Vector(q) = e
        .instant(
            "histogram_quantile(0.5, sum by (job) (rate(lat[5m])))",
            600_000,
        )
        .expect("quantile")
    else {
        panic!("floats");
    };
    assert_eq!(q.len(), 2);
    assert_eq!(q[0].value, 2.0);
    let Value::Vector(c) = e
        .instant("histogram_count(sum(lat))", 600_000)
        .expect("count")
    else {
        panic!("floats");
    };
    assert_eq!(c[0].value, 80.0);
    let Value::Vector(n) = e.instant("count(lat)", 600_000).expect("count") else {
        panic!("floats");
    };
    assert_eq!(n[0].value, 2.0);
    let Value::Histograms(a) = e.instant("avg(lat)", 600_000).expect("avg") else {
        panic!("histograms");
    };
    assert_eq!(a[0].histogram.count, 40.0);
}

#[test]
fn a_range_query_returns_histograms_per_step() {
    let d = data();
    let r = Engine::new(&d)
        .range(
            "sum(lat)",
            crate::QueryRange {
                start: 60_000,
                end: 180_000,
                step: 60_000,
            },
        )
        .expect("range");
    assert_eq!(r.len(), 1);
    assert!(r[0].points.is_empty());
    let counts: Vec<f64> = r[0].histograms.iter().map(|(_, h)| h.count).collect();
    assert_eq!(counts, vec![8.0, 16.0, 24.0]);
}

#[test]
fn numbers_asked_of_histograms_are_errors_naming_them() {
    assert!(
        err("abs(lat)").contains("native histogram"),
        "{}",
        err("abs(lat)")
    );
    assert!(err("max(lat)").contains("max()"), "{}", err("max(lat)"));
    assert!(err("max_over_time(lat[5m])").contains("max_over_time"));
    assert!(err("lat > 1").contains("native histogram"));
    assert!(err("2 / lat").contains("h / n"));
    assert!(err("lat * on(job) group_left up").contains("group_left"));
}

#[test]
fn a_counter_reset_is_added_back() {
    let pts = vec![
        (0, h(10.0, vec![(1, 10.0)])),
        (60_000, h(20.0, vec![(1, 20.0)])),
        (120_000, h(5.0, vec![(1, 5.0)])),
    ];
    let (r, gauge) = extrapolated(
        &pts,
        (-30_000, 120_000),
        false,
        "x",
        &mut crate::annotations::Annotations::default(),
    )
    .expect("two samples or more");
    assert!(!gauge);
    // 10 up to the reset, then 5 from zero: 15 over 120 s, extrapolated
    // 30 s back to the window's start (the count's zero, 80 s back, is
    // further): 15 × 150/120.
    assert!((r.count - 18.75).abs() < 1e-9, "{}", r.count);
    assert_eq!(r.reset, CounterReset::Gauge);
}

#[test]
fn mixing_floats_and_histograms_in_one_selector_warns() {
    let d = data();
    let a = Engine::new(&d)
        .instant_annotated("{job=\"a\"}", 600_000)
        .expect("answers");
    assert!(matches!(a.value, Value::Vector(ref v) if v.len() == 1));
    assert!(
        a.annotations
            .warnings()
            .iter()
            .any(|w| w.contains("1 native histogram series left out")),
        "{:?}",
        a.annotations.warnings()
    );
}

/// A custom-bucket histogram with `bounds` and one count a bucket.
fn custom(bounds: &[f64], counts: &[f64]) -> Histogram {
    Histogram::with_custom_buckets(bounds, counts, 1.0)
}

/// Whether `a` carries a warning containing `text`.
fn warned(a: &crate::Answer<Value>, text: &str) -> bool {
    a.annotations.warnings().iter().any(|w| w.contains(text))
}

#[test]
fn custom_and_exponential_buckets_do_not_add_and_mismatched_bounds_are_reconciled() {
    let at = |name: &str, job: &str, h: Histogram| {
        (
            labels(&[("__name__", name), ("job", job)]),
            vec![(600_000, h)],
        )
    };
    let d: (Vec<SeriesSamples>, Vec<SeriesHistograms>) = (
        Vec::new(),
        vec![
            at("mixed", "a", h(4.0, vec![(1, 4.0)])),
            at("mixed", "b", custom(&[1.0], &[1.0, 1.0])),
            at("nhcb", "a", custom(&[1.0, 2.0, 5.0], &[1.0, 2.0, 3.0, 4.0])),
            at("nhcb", "b", custom(&[2.0, 10.0], &[5.0, 1.0, 1.0])),
        ],
    );
    let e = Engine::new(&d);
    // One exponential and one custom: nothing, with Prometheus' warning.
    let a = e.instant_annotated("sum(mixed)", 600_000).expect("answers");
    assert!(matches!(a.value, Value::Histograms(ref v) if v.is_empty()));
    assert!(
        warned(&a, "mix of histograms with exponential and custom buckets"),
        "{:?}",
        a.annotations.warnings()
    );
    let a = e
        .instant_annotated("mixed{job=\"a\"} + ignoring(job) mixed{job=\"b\"}", 600_000)
        .expect("answers");
    assert!(matches!(a.value, Value::Histograms(ref v) if v.is_empty()));
    assert!(
        warned(&a, "mix of histograms with exponential and custom buckets"),
        "{:?}",
        a.annotations.warnings()
    );
    // Bounds [1 2 5] and [2 10] share only 2: everything up to 2, and
    // the rest above it, with the info that says so.
    let a = e.instant_annotated("sum(nhcb)", 600_000).expect("answers");
    let Value::Histograms(v) = a.value else {
        panic!("histograms");
    };
    assert_eq!(&*v[0].histogram.custom_values, &[2.0]);
    assert_eq!(v[0].histogram.positive, vec![(0, 8.0), (1, 9.0)]);
    assert_eq!(v[0].histogram.count, 17.0);
    assert!(
        a.annotations
            .infos()
            .iter()
            .any(|i| i.contains("mismatched custom buckets were reconciled during aggregation")),
        "{:?}",
        a.annotations.infos()
    );
}
