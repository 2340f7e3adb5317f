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
