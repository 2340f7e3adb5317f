//! Prometheus 3's errors, annotations and experimental switch, which the
//! golden files (answers only) cannot express.

use super::Engine;
use crate::{EvalError, Value};
use keel_series::{Labels, SeriesSamples};

/// A series `labels` with `values`, one every minute from 0.
fn series(labels: &[(&str, &str)], values: &[f64]) -> SeriesSamples {
    (
        Labels::new(labels.to_vec()),
        values
            .iter()
            .enumerate()
            .map(|(i, v)| (i as i64 * 60_000, *v))
            .collect(),
    )
}

fn err(data: &Vec<SeriesSamples>, q: &str) -> String {
    Engine::new(data)
        .instant(q, 600_000)
        .expect_err(q)
        .to_string()
}

fn vector(engine: &Engine<'_>, q: &str, t: i64) -> Vec<(String, f64)> {
    match engine.instant(q, t).unwrap_or_else(|e| panic!("{q}: {e}")) {
        Value::Vector(v) => v
            .into_iter()
            .map(|s| (s.labels.to_string(), s.value))
            .collect(),
        other => panic!("{q}: {other:?}"),
    }
}

fn experimental(data: &Vec<SeriesSamples>) -> Engine<'_> {
    Engine::with_budget(data, crate::Budget::default().with_experimental(true))
}

/// Two metrics that differ only by name, rising 1 a minute.
fn twins() -> Vec<SeriesSamples> {
    let up: Vec<f64> = (0..=10).map(f64::from).collect();
    vec![
        series(&[("__name__", "a_total"), ("env", "1")], &up),
        series(&[("__name__", "b_total"), ("env", "1")], &up),
    ]
}

#[test]
fn a_function_that_drops_the_name_refuses_series_that_then_collide() {
    let data = twins();
    for q in [
        "sum(rate({env=\"1\"}[10m]))",
        "abs({env=\"1\"})",
        "{env=\"1\"} * 2",
        "-{env=\"1\"}",
    ] {
        assert!(
            err(&data, q).starts_with("vector cannot contain metrics with the same labelset"),
            "{q}: {}",
            err(&data, q)
        );
    }
    // A filter keeps the names, so nothing collides.
    assert_eq!(
        vector(&Engine::new(&data), "{env=\"1\"} > 0", 600_000).len(),
        2
    );
}

#[test]
fn histogram_quantile_never_merges_two_metrics_buckets() {
    let mut data = Vec::new();
    for name in ["a_bucket", "b_bucket"] {
        for (le, v) in [("1", 5.0), ("+Inf", 10.0)] {
            data.push(series(&[("__name__", name), ("le", le)], &[v; 11]));
        }
    }
    assert!(
        err(&data, "histogram_quantile(0.5, {le!=\"\"})")
            .starts_with("vector cannot contain metrics with the same labelset")
    );
    let one = vector(
        &Engine::new(&data),
        "histogram_quantile(0.5, a_bucket)",
        600_000,
    );
    assert_eq!(one, [("{}".to_owned(), 1.0)]);
}

#[test]
fn invalid_label_names_and_parameters_are_errors_in_prometheus_words() {
    let data = twins();
    assert_eq!(
        err(
            &data,
            "label_replace(a_total, \"\", \"x\", \"env\", \".*\")"
        ),
        "invalid destination label name in label_replace(): "
    );
    assert_eq!(
        err(&data, "label_join(a_total, \"\", \"-\", \"env\")"),
        "invalid destination label name in label_join(): "
    );
    assert_eq!(
        err(&data, "count_values(\"\", a_total)"),
        "invalid label name \"\""
    );
    assert_eq!(err(&data, "topk(NaN, a_total)"), "Parameter value is NaN");
    assert_eq!(
        err(&data, "topk(1e20, a_total)"),
        "Scalar value 1e+20 overflows int64"
    );
    assert_eq!(
        Engine::with_budget(&data, crate::Budget::default().with_experimental(true))
            .instant("limit_ratio(NaN, a_total)", 600_000)
            .expect_err("NaN ratio")
            .to_string(),
        "Ratio value is NaN"
    );
}

#[test]
fn count_values_overwrites_a_label_of_its_name_then_groups() {
    let data = vec![
        series(&[("__name__", "v"), ("job", "a")], &[7.0]),
        series(&[("__name__", "v"), ("job", "b")], &[7.0]),
        series(&[("__name__", "v"), ("job", "c")], &[8.0]),
    ];
    let mut got = vector(
        &Engine::new(&data),
        "count_values without () (\"job\", v)",
        0,
    );
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        [
            ("{job=\"7\"}".to_owned(), 2.0),
            ("{job=\"8\"}".to_owned(), 1.0)
        ]
    );
}

#[test]
fn experimental_functions_are_refused_unless_switched_on() {
    let data = twins();
    for (q, words) in [
        ("limitk(1, a_total)", "limitk() is experimental"),
        (
            "sort_by_label(a_total, \"env\")",
            "function \"sort_by_label\" is not enabled",
        ),
        (
            "mad_over_time(a_total[5m])",
            "function \"mad_over_time\" is not enabled",
        ),
        (
            "double_exponential_smoothing(a_total[5m], 0.5, 0.5)",
            "function \"double_exponential_smoothing\" is not enabled",
        ),
    ] {
        let e = Engine::new(&data).instant(q, 600_000).expect_err(q);
        assert!(
            matches!(&e, EvalError::Parse(m) if m.contains(words)),
            "{q}: {e}"
        );
        assert!(experimental(&data).instant(q, 600_000).is_ok(), "{q} on");
    }
}

#[test]
fn limit_ratio_and_its_complement_partition_the_series() {
    let data: Vec<SeriesSamples> = (0..200)
        .map(|i| {
            let id = i.to_string();
            series(&[("__name__", "x"), ("i", id.as_str())], &[1.0])
        })
        .collect();
    let e = experimental(&data);
    for r in [0.1, 0.3, 0.5, 0.9] {
        let mut kept: Vec<String> = vector(&e, &format!("limit_ratio({r}, x)"), 0)
            .into_iter()
            .map(|s| s.0)
            .collect();
        let rest: Vec<String> = vector(&e, &format!("limit_ratio(-{}, x)", 1.0 - r), 0)
            .into_iter()
            .map(|s| s.0)
            .collect();
        assert!(kept.iter().all(|k| !rest.contains(k)), "{r}: overlap");
        kept.extend(rest);
        assert_eq!(kept.len(), 200, "{r}: together all the series");
        let n = vector(&e, &format!("limit_ratio({r}, x)"), 0).len() as f64;
        assert!((n / 200.0 - r).abs() < 0.12, "{r}: kept {n} of 200");
    }
    assert_eq!(vector(&e, "limit_ratio(1, x)", 0).len(), 200);
    assert_eq!(vector(&e, "limit_ratio(0, x)", 0).len(), 0);
}

#[test]
fn sort_by_label_is_natural_and_sorts_put_nan_last() {
    let data: Vec<SeriesSamples> = ["10", "9", "a2", "a10", "b"]
        .iter()
        .zip([1.0, f64::NAN, 3.0, 2.0, f64::NAN])
        .map(|(id, v)| series(&[("__name__", "x"), ("id", id)], &[v]))
        .collect();
    let e = experimental(&data);
    let ids = |q: &str| -> Vec<String> {
        vector(&e, q, 0)
            .into_iter()
            .map(|(l, _)| {
                l.split("id=\"")
                    .nth(1)
                    .unwrap_or("")
                    .trim_end_matches("\"}")
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(
        ids("sort_by_label(x, \"id\")"),
        ["9", "10", "a2", "a10", "b"]
    );
    assert_eq!(
        ids("sort_by_label_desc(x, \"id\")"),
        ["b", "a10", "a2", "10", "9"]
    );
    let values = |q: &str| -> Vec<f64> { vector(&e, q, 0).into_iter().map(|s| s.1).collect() };
    let desc = values("sort_desc(x)");
    assert_eq!(&desc[..3], [3.0, 2.0, 1.0]);
    assert!(desc[3..].iter().all(|v| v.is_nan()), "{desc:?}");
    let asc = values("sort(x)");
    assert_eq!(&asc[..3], [1.0, 2.0, 3.0]);
    assert!(asc[3..].iter().all(|v| v.is_nan()), "{asc:?}");
}

#[test]
fn rate_over_a_name_that_is_not_a_counter_is_an_info_with_its_position() {
    let up: Vec<f64> = (0..=10).map(f64::from).collect();
    let data = vec![
        series(&[("__name__", "requests")], &up),
        series(&[("__name__", "done_total")], &up),
    ];
    let e = Engine::new(&data);
    let a = e
        .instant_annotated("rate(requests[5m]) + rate(done_total[5m])", 600_000)
        .expect("evaluates");
    assert_eq!(
        a.annotations.infos(),
        [
            "PromQL info: metric might not be a counter, name does not end in _total/_sum/_count/_bucket: \"requests\" (1:6)"
        ]
    );
    assert!(a.annotations.warnings().is_empty());
    let quiet = e
        .instant_annotated("rate(done_total[5m])", 600_000)
        .expect("evaluates");
    assert!(quiet.annotations.is_empty(), "{:?}", quiet.annotations);
    // Over a range the same info is said once.
    let r = e
        .range_annotated(
            "rate(requests[5m])",
            crate::QueryRange {
                start: 300_000,
                end: 600_000,
                step: 60_000,
            },
        )
        .expect("evaluates");
    assert_eq!(r.annotations.infos().len(), 1);
}

#[test]
fn quantiles_out_of_range_and_bad_buckets_are_warnings() {
    let mut data = vec![series(&[("__name__", "g")], &[1.0; 11])];
    for (le, v) in [("1", 5.0), ("2", 4.0), ("+Inf", 10.0), ("x", 1.0)] {
        data.push(series(&[("__name__", "h_bucket"), ("le", le)], &[v; 11]));
    }
    let e = Engine::new(&data);
    let w = |q: &str| {
        e.instant_annotated(q, 600_000)
            .unwrap_or_else(|e| panic!("{q}: {e}"))
            .annotations
    };
    assert_eq!(
        w("quantile(1.5, g)").warnings(),
        ["PromQL warning: quantile value should be between 0 and 1, got 1.5"]
    );
    assert_eq!(
        w("quantile_over_time(-1, g[5m])").warnings(),
        ["PromQL warning: quantile value should be between 0 and 1, got -1"]
    );
    let h = w("histogram_quantile(0.5, h_bucket)");
    assert_eq!(
        h.warnings(),
        [
            "PromQL warning: bucket label \"le\" is missing or has a malformed value of \"x\" for metric name \"h_bucket\""
        ]
    );
    assert_eq!(
        h.infos().len(),
        1,
        "the falling bucket was raised: {:?}",
        h.infos()
    );
    assert!(h.infos()[0].contains("needed to be fixed for monotonicity"));
}

#[test]
fn at_pins_a_subquery_and_predict_linear_predicts_from_the_evaluation_time() {
    // Rising 1 a minute from 0.
    let up: Vec<f64> = (0..=30).map(f64::from).collect();
    let data = vec![series(&[("__name__", "g")], &up)];
    let e = Engine::new(&data);
    // max over the 5 minutes up to 10m, whatever the evaluation time.
    for t in [900_000, 1_800_000] {
        assert_eq!(
            vector(&e, "max_over_time(g[5m:1m] @ 600)", t),
            [("{}".to_owned(), 10.0)]
        );
    }
    // Over a range too, every step sees the pinned window.
    let r = e
        .range(
            "max_over_time(g[5m:1m] @ 600)",
            crate::QueryRange {
                start: 1_200_000,
                end: 1_800_000,
                step: 300_000,
            },
        )
        .expect("evaluates");
    assert!(r[0].points.iter().all(|p| p.1 == 10.0), "{:?}", r[0].points);
    // The line fitted at 10m (slope 1/60 per second) is extended from
    // the evaluation time (20m), not from 10m: 10 + (20m - 10m + 60 s) / 60.
    let p = vector(&e, "predict_linear(g[10m] @ 600, 60)", 1_200_000);
    assert!((p[0].1 - 21.0).abs() < 1e-9, "{p:?}");
}

#[test]
fn sort_by_label_orders_many_series_some_without_the_label_without_panicking() {
    // More than 20 elements: Rust's sort checks that the order is total.
    let ids = ["1", "01", "", "10", "9", "a", "a01", "a1", "b", ""];
    let data: Vec<SeriesSamples> = (0..40)
        .map(|i| {
            let n = i.to_string();
            let id = ids[i % ids.len()];
            let mut labels = vec![("__name__", "x"), ("n", n.as_str())];
            if !id.is_empty() {
                labels.push(("id", id));
            }
            series(&labels, &[1.0])
        })
        .collect();
    let e = experimental(&data);
    let got: Vec<String> = vector(&e, "sort_by_label(x, \"id\")", 0)
        .into_iter()
        .map(|(l, _)| {
            l.split("id=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(got.len(), 40);
    let mut firsts: Vec<&str> = Vec::new();
    for id in &got {
        if firsts.last() != Some(&id.as_str()) {
            firsts.push(id);
        }
    }
    assert_eq!(firsts, ["", "01", "1", "9", "10", "a", "a01", "a1", "b"]);
    let desc = vector(&e, "sort_by_label_desc(x, \"id\")", 0);
    assert_eq!(desc.len(), 40);
}

#[test]
fn a_pinned_subquery_reads_only_around_its_pin() {
    // A year of one sample a minute: a subquery pinned at its start must
    // not load the year between the pin and the evaluation time.
    let minutes = 365 * 24 * 60;
    let data = vec![(
        Labels::new(vec![("__name__", "g")]),
        (0..minutes).map(|i| (i * 60_000, i as f64)).collect(),
    )];
    let budget = crate::QueryLimits {
        max_samples: 10_000,
        ..crate::QueryLimits::default()
    }
    .budget(None);
    let e = Engine::with_budget(&data, budget);
    let end = (minutes - 1) * 60_000;
    assert_eq!(
        vector(&e, "max_over_time(g[5m:1m] @ 600)", end),
        [("{}".to_owned(), 10.0)]
    );
    let r = e
        .range(
            "max_over_time(g[5m:1m] @ 600)",
            crate::QueryRange {
                start: end - 3_600_000,
                end,
                step: 60_000,
            },
        )
        .expect("evaluates within 10,000 samples");
    assert_eq!(r[0].points.len(), 61);
    assert!(r[0].points.iter().all(|p| p.1 == 10.0));
}

#[test]
fn timestamp_refuses_series_that_collide_once_their_names_go() {
    let data = twins();
    assert!(
        err(&data, "timestamp({env=\"1\"})")
            .starts_with("vector cannot contain metrics with the same labelset")
    );
}
