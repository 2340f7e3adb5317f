use super::*;

/// Schema 0: two observations in (1, 2], two in (2, 4]; sum 10.
fn two_buckets() -> Histogram {
    Histogram {
        schema: 0,
        zero_threshold: 1e-128,
        count: 4.0,
        sum: 10.0,
        positive: vec![(1, 2.0), (2, 2.0)],
        ..Histogram::default()
    }
}

#[test]
fn bounds_are_powers_of_the_schema_base() {
    assert_eq!(bound(0, 0), 1.0);
    assert_eq!(bound(1, 0), 2.0);
    assert_eq!(bound(-1, 0), 0.5);
    assert_eq!(bound(1, -2), 16.0);
    assert_eq!(bound(8, 3), 2.0);
    assert!((bound(1, 3) - 2f64.powf(0.125)).abs() < 1e-15);
    assert_eq!(bound(-9, 3), 2f64.powf(-9.0 / 8.0));
    // Far out of range saturates rather than panicking.
    assert_eq!(bound(i32::MAX, -4), f64::INFINITY);
    assert_eq!(bound(i32::MIN, -4), 0.0);
}

#[test]
fn quantiles_interpolate_exponentially_within_a_bucket() {
    let h = two_buckets();
    assert_eq!(h.quantile(0.5), 2.0);
    // Three quarters of the way through (2, 4] in log space: 2^1.5.
    assert!((h.quantile(0.75) - 2f64.powf(1.5)).abs() < 1e-12);
    assert!((h.quantile(0.25) - 2f64.sqrt()).abs() < 1e-12);
    assert_eq!(h.quantile(1.0), 4.0);
    assert_eq!(h.quantile(-0.1), f64::NEG_INFINITY);
    assert_eq!(h.quantile(1.1), f64::INFINITY);
    assert!(h.quantile(f64::NAN).is_nan());
    assert!(Histogram::default().quantile(0.5).is_nan());
}

#[test]
fn fraction_is_the_inverse_of_quantile() {
    let h = two_buckets();
    assert_eq!(h.fraction(0.0, 2.0), 0.5);
    assert!((h.fraction(f64::NEG_INFINITY, h.quantile(0.9)) - 0.9).abs() < 1e-12);
    assert!((h.fraction(h.quantile(0.3), f64::INFINITY) - 0.7).abs() < 1e-12);
    assert_eq!(h.fraction(3.0, 2.0), 0.0);
    assert!(h.fraction(f64::NAN, 2.0).is_nan());
}

#[test]
fn negative_buckets_mirror_the_positive_ones() {
    let h = Histogram {
        schema: 0,
        count: 4.0,
        sum: -10.0,
        negative: vec![(1, 2.0), (2, 2.0)],
        ..Histogram::default()
    };
    let b = h.buckets();
    assert_eq!((b[0].lower, b[0].upper, b[0].rule), (-4.0, -2.0, 1));
    assert_eq!((b[1].lower, b[1].upper), (-2.0, -1.0));
    assert_eq!(h.quantile(0.5), -2.0);
    assert!((h.quantile(0.25) + 2f64.powf(1.5)).abs() < 1e-12);
    assert!((h.fraction(f64::NEG_INFINITY, h.quantile(0.25)) - 0.25).abs() < 1e-12);
}

#[test]
fn the_zero_bucket_interpolates_linearly_from_zero() {
    let h = Histogram {
        schema: 0,
        zero_threshold: 1.0,
        zero_count: 2.0,
        count: 4.0,
        sum: 3.0,
        positive: vec![(2, 2.0)],
        ..Histogram::default()
    };
    // Only positive buckets: the zero bucket is taken as [0, 1].
    assert_eq!(h.quantile(0.25), 0.5);
    assert_eq!(h.fraction(0.0, 0.5), 0.25);
}

#[test]
fn variance_takes_each_bucket_at_its_geometric_middle() {
    let h = two_buckets();
    let mean = 2.5;
    let want = (2.0 * (2f64.sqrt() - mean).powi(2) + 2.0 * (8f64.sqrt() - mean).powi(2)) / 4.0;
    assert!((h.variance() - want).abs() < 1e-12);
}

#[test]
fn adding_histograms_of_two_schemas_merges_to_the_coarser() {
    let fine = Histogram {
        schema: 1,
        count: 3.0,
        sum: 5.0,
        // (1, √2], (√2, 2], (2, 2√2]
        positive: vec![(1, 1.0), (2, 1.0), (3, 1.0)],
        ..Histogram::default()
    };
    let sum = fine.add(&two_buckets()).expect("same kind of buckets");
    assert_eq!(sum.schema, 0);
    assert_eq!(sum.positive, vec![(1, 4.0), (2, 3.0)]);
    assert_eq!((sum.count, sum.sum), (7.0, 15.0));
    let diff = sum.sub(&two_buckets()).expect("same kind of buckets");
    assert_eq!(diff.positive, vec![(1, 2.0), (2, 1.0)]);
    assert_eq!(diff.reset, CounterReset::Gauge);
    assert_eq!(two_buckets().scale(0.5).positive, vec![(1, 1.0), (2, 1.0)]);
}

#[test]
fn a_wider_zero_bucket_takes_in_the_buckets_below_it() {
    let mut wide = two_buckets();
    wide.zero_threshold = 2.0;
    wide.count = 0.0;
    wide.sum = 0.0;
    wide.positive.clear();
    let sum = two_buckets().add(&wide).expect("same kind of buckets");
    assert_eq!(sum.zero_threshold, 2.0);
    assert_eq!(sum.zero_count, 2.0);
    assert_eq!(sum.positive, vec![(2, 2.0)]);
    // A threshold inside a bucket widens to the bucket's upper bound.
    let mut mid = wide.clone();
    mid.zero_threshold = 3.0;
    let sum = two_buckets().add(&mid).expect("same kind of buckets");
    assert_eq!((sum.zero_threshold, sum.zero_count), (4.0, 4.0));
    assert!(sum.positive.is_empty());
}

#[test]
fn resets_are_detected_from_any_count_going_down_or_the_hint() {
    let prev = two_buckets();
    let mut next = two_buckets();
    next.count = 5.0;
    next.positive = vec![(1, 3.0), (2, 2.0)];
    assert!(!next.is_reset_after(&prev));
    next.positive = vec![(1, 4.0), (2, 1.0)];
    assert!(next.is_reset_after(&prev));
    next.positive = vec![(1, 3.0), (2, 2.0)];
    next.reset = CounterReset::Reset;
    assert!(next.is_reset_after(&prev));
    let mut finer = two_buckets();
    finer.schema = 1;
    assert!(finer.is_reset_after(&prev));
}

#[test]
fn histograms_keel_cannot_take_are_refused_with_the_reason() {
    assert_eq!(two_buckets().validate(), Ok(()));
    let bad = |f: &dyn Fn(&mut Histogram), word: &str| {
        let mut h = two_buckets();
        f(&mut h);
        let why = h.validate().expect_err(word);
        assert!(why.contains(word), "{why}");
    };
    bad(&|h| h.schema = 9, "schema");
    bad(&|h| h.positive[0].1 = -1.0, "count -1");
    bad(&|h| h.positive[0].1 = f64::NAN, "count NaN");
    bad(&|h| h.positive = vec![(2, 1.0), (1, 1.0)], "out of order");
    bad(&|h| h.positive = vec![(i32::MIN, 1.0)], "index");
    bad(&|h| h.count = -3.0, "negative");
    bad(
        &|h| h.positive = (0..5000).map(|i| (i, 0.0)).collect(),
        "5000 buckets",
    );
    // Bounds and coarser indices at the extremes saturate, not panic.
    assert_eq!(bound(i32::MIN, 99), 0.0);
    assert_eq!(coarser_index(i32::MIN, 8, -4), -(1 << 19) + 1);
}

#[test]
fn spans_and_deltas_decode_as_remote_write_sends_them() {
    let counts = undelta(&[2, 1, -1, 0]);
    assert_eq!(counts, vec![2.0, 3.0, 2.0, 2.0]);
    let b = from_spans(&[(-1, 2), (3, 2)], &counts).expect("consistent");
    assert_eq!(b, vec![(-1, 2.0), (0, 3.0), (4, 2.0), (5, 2.0)]);
    assert!(from_spans(&[(0, 3)], &counts).is_none());
    assert!(from_spans(&[(0, 2), (-1, 2)], &counts).is_none());
}

/// Custom buckets at `bounds` holding `counts` from bucket 0.
fn custom(bounds: &[f64], counts: &[f64]) -> Histogram {
    Histogram::with_custom_buckets(bounds, counts, 0.0)
}

#[test]
fn custom_bounds_are_validated_as_prometheus_validates_them() {
    assert!(custom(&[0.1, 1.0], &[1.0, 2.0, 3.0]).validate().is_ok());
    // -Inf as the first bound is allowed (Prometheus 3's newer rule).
    assert!(custom(&[f64::NEG_INFINITY, 1.0], &[1.0]).validate().is_ok());
    for (h, why) in [
        (custom(&[1.0, 0.5], &[1.0]), "strictly ascending"),
        (custom(&[1.0, 1.0], &[1.0]), "strictly ascending"),
        (custom(&[f64::NAN], &[1.0]), "NaN"),
        (custom(&[1.0, f64::INFINITY], &[1.0]), "+Inf"),
        (custom(&[1.0], &[1.0, 1.0, 1.0]), "past the 1 bounds"),
        (
            Histogram {
                zero_count: 1.0,
                ..custom(&[1.0], &[1.0])
            },
            "no zero bucket",
        ),
        (
            Histogram {
                negative: vec![(0, 1.0)],
                ..custom(&[1.0], &[1.0])
            },
            "no negative buckets",
        ),
        (
            Histogram {
                custom_values: std::sync::Arc::from([1.0]),
                ..two_buckets()
            },
            "exponential schema",
        ),
    ] {
        let e = h.validate().expect_err(why);
        assert!(e.contains(why), "{e} should say {why}");
    }
}

#[test]
fn custom_bucket_estimates_are_linear_and_the_open_buckets_answer_their_bound() {
    // 1 below 0.1, 2 in (0.1, 0.5], 1 above 0.5.
    let h = custom(&[0.1, 0.5], &[1.0, 2.0, 1.0]);
    // The first bucket runs from 0: a quarter of 4 is its top.
    assert_eq!(h.quantile(0.25), 0.1);
    assert!((h.quantile(0.125) - 0.05).abs() < 1e-15);
    // Linear in (0.1, 0.5]: rank 2 of the 4 is half way.
    assert!((h.quantile(0.5) - 0.3).abs() < 1e-15, "{}", h.quantile(0.5));
    // In the +Inf bucket: its lower bound.
    assert_eq!(h.quantile(0.99), 0.5);
    assert!(
        (h.fraction(0.0, 0.3) - 0.5).abs() < 1e-15,
        "{}",
        h.fraction(0.0, 0.3)
    );
    // Midpoints (the open buckets' infinite) make the variance infinite.
    assert_eq!(h.variance(), f64::INFINITY);
    let mid = custom(&[0.0, 1.0, 3.0], &[0.0, 2.0, 2.0]);
    // Midpoints 0.5 and 2, mean 1.25: variance 0.5625.
    let mid = Histogram { sum: 5.0, ..mid };
    assert!(
        (mid.variance() - 0.5625).abs() < 1e-12,
        "{}",
        mid.variance()
    );
    // A bucket across zero keeps its bounds (no zero-bucket rule for
    // custom buckets): rank 1 of 4 in (-1, 1] is a quarter of the way.
    assert_eq!(custom(&[-1.0, 1.0], &[0.0, 4.0]).quantile(0.25), -0.5);
    // One bucket from -Inf to +Inf: the quantile is +Inf.
    assert_eq!(custom(&[], &[4.0]).quantile(0.5), f64::INFINITY);
    // The first bucket below zero answers its bound.
    assert_eq!(custom(&[-2.0, 1.0], &[3.0, 1.0]).quantile(0.25), -2.0);
}

#[test]
fn custom_bounds_that_differ_are_added_on_the_bounds_both_have() {
    let a = custom(&[1.0, 2.0, 5.0], &[1.0, 2.0, 3.0, 4.0]);
    let b = custom(&[2.0, 10.0], &[5.0, 1.0, 1.0]);
    assert!(a.bounds_differ(&b) && !a.bounds_differ(&a.clone()));
    let sum = a.add(&b).expect("both custom");
    assert_eq!(&*sum.custom_values, &[2.0]);
    assert_eq!(sum.positive, vec![(0, 8.0), (1, 9.0)]);
    let diff = a.sub(&a).expect("both custom");
    assert_eq!(diff.clone().compact().positive, vec![]);
    assert_eq!(diff.reset, CounterReset::Gauge);
    // Custom and exponential do not add.
    assert_eq!(a.add(&two_buckets()), Err(MixedSchemas));
    assert_eq!(two_buckets().sub(&a), Err(MixedSchemas));
    // No bound in common: one bucket, everything.
    let none = custom(&[1.0], &[1.0, 1.0])
        .add(&custom(&[3.0], &[2.0]))
        .expect("custom");
    assert!(none.custom_values.is_empty());
    assert_eq!(none.positive, vec![(0, 4.0)]);
    assert_eq!(none.cumulative(), vec![(f64::INFINITY, 4.0)]);
    assert_eq!(
        a.cumulative(),
        vec![(1.0, 1.0), (2.0, 3.0), (5.0, 6.0), (f64::INFINITY, 10.0)]
    );
}

#[test]
fn resets_are_detected_across_custom_bounds_and_kinds() {
    let before = custom(&[1.0, 2.0], &[2.0, 2.0, 2.0]);
    // More in every bucket, fewer bounds: compared on the shared ones.
    let grown = custom(&[2.0], &[5.0, 3.0]);
    assert!(!grown.is_reset_after(&before));
    // The bucket up to 2 lost observations.
    let lost = custom(&[2.0], &[3.0, 4.0]);
    assert!(lost.is_reset_after(&before));
    // From custom to exponential (or back) is a reset.
    assert!(two_buckets().is_reset_after(&before));
    assert!(before.is_reset_after(&two_buckets()));
}
