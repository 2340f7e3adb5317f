use super::{Engine, Window};
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
