use super::*;

fn roundtrip(samples: &[(i64, f64)]) -> Chunk {
    let mut c = Chunk::default();
    for (t, v) in samples {
        c.push(*t, *v);
    }
    let got = c.samples();
    assert_eq!(got.len(), samples.len());
    assert_eq!(
        c.last().map(|(t, v)| (t, v.to_bits())),
        samples.last().map(|(t, v)| (*t, v.to_bits()))
    );
    for (a, b) in got.iter().zip(samples) {
        assert_eq!(a.0, b.0);
        assert_eq!(a.1.to_bits(), b.1.to_bits(), "value at {}", a.0);
    }
    c
}

#[test]
fn regular_scrapes_of_a_counter_compress_below_two_bytes_a_sample() {
    let samples: Vec<(i64, f64)> = (0..120)
        .map(|i| (1_700_000_000_000 + i * 15_000, (i * 7) as f64))
        .collect();
    let c = roundtrip(&samples);
    assert!(c.bytes() < 2 * 120, "{} bytes for 120 samples", c.bytes());
}

#[test]
fn jitter_big_gaps_negative_deltas_and_special_floats_roundtrip() {
    let mut s = vec![
        (0, 0.0),
        (1, -0.0),
        (15_001, f64::NAN),
        (30_000, f64::INFINITY),
        (44_999, f64::NEG_INFINITY),
    ];
    s.push((44_999 + (1 << 40), 1e-300));
    s.push((
        44_999 + (1 << 40) + 3,
        f64::from_bits(0x7ff0_0000_0000_0002),
    ));
    s.push((44_999 + (1 << 41), 123_456.789));
    for i in 0..50 {
        let last = s.last().map(|x| x.0).unwrap_or(0);
        s.push((last + 1000 + (i % 7) * 13 - 40, (i as f64).sin() * 1e6));
    }
    roundtrip(&s);
}

#[test]
fn an_expected_chunk_grows_by_quarters_and_keeps_its_first_timestamp() {
    let samples: Vec<(i64, f64)> = (0..120)
        .map(|i| (-60_000 + i * 15_000, (i * i) as f64 * 0.37))
        .collect();
    let full = roundtrip(&samples).bytes();
    let mut c = Chunk::expecting(full);
    assert_eq!(
        (c.bytes(), c.buf.capacity()),
        (0, 0),
        "nothing before a sample"
    );
    let mut most_slack = 0;
    for (t, v) in &samples {
        c.push(*t, *v);
        most_slack = most_slack.max(c.buf.capacity() - c.bytes());
        assert_eq!(c.min_t(), -60_000);
    }
    assert!(
        most_slack <= full / 4 + MAX_SAMPLE_BYTES,
        "slack {most_slack} of a {full}-byte chunk"
    );
    assert_eq!(c.samples(), samples);
    assert_eq!(Chunk::default().min_t(), 0);
}

fn bits(s: &[(i64, f64)]) -> Vec<(i64, u64)> {
    s.iter().map(|(t, v)| (*t, v.to_bits())).collect()
}

#[test]
fn decimal_mode_holds_cpu_seconds_in_under_half_of_gorillas_bytes() {
    // CPU seconds in hundredths, as node_exporter sends them.
    let mut ticks = 1_234_567i64;
    let samples: Vec<(i64, f64)> = (0..120)
        .map(|i| {
            ticks += 1380 + (i * 37) % 120;
            (1_700_000_000_000 + i * 15_000, ticks as f64 / 100.0)
        })
        .collect();
    let decimal = roundtrip(&samples);
    let mut xor = Chunk::xor();
    for (t, v) in &samples {
        xor.push(*t, *v);
    }
    assert_eq!(bits(&xor.samples()), bits(&samples));
    assert!(decimal.raw().is_none() && xor.raw().is_some());
    assert!(
        decimal.bytes() * 2 < xor.bytes(),
        "decimal {} vs gorilla {} bytes",
        decimal.bytes(),
        xor.bytes()
    );
}

#[test]
fn a_longer_decimal_or_a_non_decimal_reencodes_the_chunk_bit_for_bit() {
    let t = |i: i64| 1_000 + i * 15_000;
    // Exponent 0, then 1, then 3, then huge jumps either way.
    let widening = [
        (t(0), 3.0),
        (t(1), 2.5),
        (t(2), 2.125),
        (t(3), 9e15),
        (t(4), -9e15),
    ];
    roundtrip(&widening);
    // Values no decimal holds: the chunk becomes Gorilla.
    for odd in [
        f64::NAN,
        f64::from_bits(0x7ff0_0000_0000_0002),
        -0.0,
        f64::INFINITY,
        0.1 + 0.2,
    ] {
        let s = [(t(0), 1.5), (t(1), 1.75), (t(2), odd), (t(3), 4.0)];
        let c = roundtrip(&s);
        assert!(c.raw().is_some(), "{odd} made it Gorilla");
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
    #[test]
    fn any_mix_of_decimals_and_floats_roundtrips(
        steps in proptest::collection::vec(
            (1i64..1_000_000, proptest::prelude::any::<i64>(), 0usize..18, proptest::prelude::any::<u64>()),
            1..150,
        ),
    ) {
        let mut t = -1_000_000i64;
        let s: Vec<(i64, f64)> = steps.iter().map(|(dt, m, e, raw)| {
            t += dt;
            let v = match e {
                16 => f64::from_bits(*raw),
                17 => (*m % 1000) as f64,
                e => (*m >> (e * 3)) as f64 / POW10[(*e).min(MAX_EXP)],
            };
            (t, v)
        }).collect();
        let mut c = Chunk::expecting(64);
        for (t, v) in &s {
            c.push(*t, *v);
        }
        proptest::prop_assert_eq!(bits(&c.samples()), bits(&s));
        proptest::prop_assert_eq!(c.last().map(|(t, v)| (t, v.to_bits())), s.last().map(|(t, v)| (*t, v.to_bits())));
    }
}

#[test]
fn timestamps_at_both_ends_of_i64_round_trip() {
    // Found by keel-fuzz (otlp_metrics): the delta overflowed.
    roundtrip(&[(i64::MIN, 1.0), (-1, 2.0), (i64::MAX, 3.0), (i64::MAX, 4.0)]);
    roundtrip(&[(-5, 1.0), (i64::MAX - 1, 2.0)]);
}
