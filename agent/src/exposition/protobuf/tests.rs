use super::*;
use crate::exposition::proto::{
    Bucket, BucketSpan, Counter, Histogram as H, LabelPair, Metric, MetricFamily, Quantile,
    Summary, Timestamp, Value,
};

fn label(name: &str, value: &str) -> LabelPair {
    LabelPair::new(name, value)
}

fn family(name: &str, kind: i32, metric: Vec<Metric>) -> MetricFamily {
    MetricFamily::new(name, kind, metric)
}

fn body(families: &[MetricFamily]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in families {
        f.encode_length_delimited(&mut out).expect("encode");
    }
    out
}

/// `name{k="v",…}` of each float sample, with its value.
fn floats(p: &Parsed) -> Vec<(String, f64)> {
    p.samples
        .iter()
        .filter(|s| s.histogram.is_none())
        .map(|s| {
            let rest: Vec<String> = s.labels[1..]
                .iter()
                .map(|(k, v)| format!("{k}={v:?}"))
                .collect();
            (format!("{}{{{}}}", s.labels[0].1, rest.join(",")), s.value)
        })
        .collect()
}

/// A histogram with classic buckets 0.5, 1 and 2 (no +Inf) and native
/// buckets at schema 0: 3 observations in (0.5, 1] (index 0), 1 in
/// (1, 2] (index 1), 2 in (4, 8] (index 3), 1 in the zero bucket, 1
/// negative in [-2, -1) (index 1).
fn both() -> H {
    H {
        sample_count: 8,
        sample_sum: 12.5,
        bucket: vec![
            Bucket {
                cumulative_count: 2,
                upper_bound: 0.5,
                ..Bucket::default()
            },
            Bucket {
                cumulative_count: 5,
                upper_bound: 1.0,
                exemplar: Some(crate::exposition::proto::Exemplar {
                    label: vec![label("trace_id", "abc")],
                    value: 0.75,
                    timestamp: Some(Timestamp {
                        seconds: 1_700_000_000,
                        nanos: 250_000_000,
                    }),
                }),
                ..Bucket::default()
            },
            Bucket {
                cumulative_count: 6,
                upper_bound: 2.0,
                ..Bucket::default()
            },
        ],
        schema: 0,
        zero_threshold: 0.001,
        zero_count: 1,
        positive_span: vec![
            BucketSpan {
                offset: 0,
                length: 2,
            },
            BucketSpan {
                offset: 1,
                length: 1,
            },
        ],
        positive_delta: vec![3, -2, 1],
        negative_span: vec![BucketSpan {
            offset: 1,
            length: 1,
        }],
        negative_delta: vec![1],
        ..H::default()
    }
}

/// Four buckets of one observation each, at indices 0..4.
fn fine_buckets() -> H {
    H {
        sample_count: 4,
        sample_sum: 4.0,
        zero_threshold: 0.001,
        positive_span: vec![BucketSpan {
            offset: 0,
            length: 4,
        }],
        positive_delta: vec![1, 0, 0, 0],
        ..H::default()
    }
}

fn on() -> NativeHistograms {
    NativeHistograms {
        enabled: true,
        ..NativeHistograms::default()
    }
}

#[test]
fn counters_gauges_summaries_and_classic_histograms_read_as_prometheus_reads_them() {
    let b = body(&[
        family(
            "reqs_total",
            kind::COUNTER,
            vec![Metric {
                label: vec![label("code", "200")],
                counter: Some(Counter {
                    value: 7.0,
                    exemplar: None,
                }),
                timestamp_ms: 1_700_000_000_000,
                ..Metric::default()
            }],
        ),
        family(
            "temp",
            kind::GAUGE,
            vec![Metric {
                gauge: Some(Value { value: -1.5 }),
                ..Metric::default()
            }],
        ),
        family(
            "rpc",
            kind::SUMMARY,
            vec![Metric {
                summary: Some(Summary {
                    sample_count: 4,
                    sample_sum: 2.0,
                    quantile: vec![
                        Quantile {
                            quantile: 0.0,
                            value: 0.1,
                        },
                        Quantile {
                            quantile: 0.5,
                            value: 0.4,
                        },
                        Quantile {
                            quantile: 1.0,
                            value: 0.9,
                        },
                    ],
                }),
                ..Metric::default()
            }],
        ),
        family(
            "lat",
            kind::HISTOGRAM,
            vec![Metric {
                histogram: Some(H {
                    // Classic only: no spans, no zero bucket.
                    schema: 0,
                    zero_threshold: 0.0,
                    zero_count: 0,
                    positive_span: Vec::new(),
                    positive_delta: Vec::new(),
                    negative_span: Vec::new(),
                    negative_delta: Vec::new(),
                    ..both()
                }),
                ..Metric::default()
            }],
        ),
    ]);
    let p = parse(&b, &on());
    assert_eq!(p.invalid_lines, 0, "{:?}", p.first_invalid);
    assert_eq!(
        floats(&p),
        vec![
            ("reqs_total{code=\"200\"}".into(), 7.0),
            ("temp{}".into(), -1.5),
            ("rpc{quantile=\"0.0\"}".into(), 0.1),
            ("rpc{quantile=\"0.5\"}".into(), 0.4),
            ("rpc{quantile=\"1.0\"}".into(), 0.9),
            ("rpc_sum{}".into(), 2.0),
            ("rpc_count{}".into(), 4.0),
            ("lat_count{}".into(), 8.0),
            ("lat_sum{}".into(), 12.5),
            ("lat_bucket{le=\"0.5\"}".into(), 2.0),
            ("lat_bucket{le=\"1.0\"}".into(), 5.0),
            ("lat_bucket{le=\"2.0\"}".into(), 6.0),
            ("lat_bucket{le=\"+Inf\"}".into(), 8.0),
        ]
    );
    assert_eq!(p.samples[0].timestamp_ms, Some(1_700_000_000_000));
    assert_eq!(p.samples[1].timestamp_ms, None);
    let e = p.samples[10]
        .exemplar
        .as_ref()
        .expect("the bucket's exemplar");
    assert_eq!((e.value, e.timestamp_ms), (0.75, Some(1_700_000_000_250)));
    assert_eq!(p.families["rpc"].kind, "summary");
    assert_eq!(p.families["lat"].help, "The lat.");
}

#[test]
fn a_native_histogram_is_one_series_and_its_classic_buckets_come_only_when_asked() {
    let b = body(&[family(
        "lat",
        kind::HISTOGRAM,
        vec![Metric {
            label: vec![label("path", "/")],
            histogram: Some(both()),
            ..Metric::default()
        }],
    )]);
    let p = parse(&b, &on());
    assert_eq!(p.invalid_lines, 0, "{:?}", p.first_invalid);
    assert_eq!(p.samples.len(), 1, "native only: {:?}", floats(&p));
    let s = &p.samples[0];
    assert_eq!(
        s.labels,
        vec![
            ("__name__".to_owned(), "lat".to_owned()),
            ("path".to_owned(), "/".to_owned())
        ]
    );
    let h = s.histogram.as_deref().expect("a native histogram");
    assert_eq!(
        (h.schema, h.zero_threshold, h.zero_count, h.count, h.sum),
        (0, 0.001, 1.0, 8.0, 12.5)
    );
    assert_eq!(h.positive, vec![(0, 3.0), (1, 1.0), (3, 2.0)]);
    assert_eq!(h.negative, vec![(1, 1.0)]);
    assert_eq!(h.reset, CounterReset::Unknown);

    // Both, when the job always wants the classic ones too.
    let both_kinds = NativeHistograms {
        always_classic: true,
        ..on()
    };
    let p = parse(&b, &both_kinds);
    assert_eq!(
        p.samples.iter().filter(|s| s.histogram.is_some()).count(),
        1
    );
    assert_eq!(floats(&p).len(), 6, "_count, _sum and 4 buckets");
    // Native histograms off: the classic ones only, as before.
    let p = parse(&b, &NativeHistograms::default());
    assert!(p.samples.iter().all(|s| s.histogram.is_none()));
    assert_eq!(floats(&p).len(), 6);
}

#[test]
fn an_empty_native_histogram_is_known_by_its_no_op_span_and_float_and_gauge_ones_are_read() {
    let empty = H {
        positive_span: vec![BucketSpan {
            offset: 0,
            length: 0,
        }],
        schema: 3,
        ..H::default()
    };
    let float = H {
        sample_count_float: 2.0,
        sample_sum: 3.0,
        schema: 1,
        zero_count_float: 1.0,
        zero_threshold: 0.01,
        positive_span: vec![BucketSpan {
            offset: -2,
            length: 1,
        }],
        positive_count: vec![1.0],
        exemplars: [(1.0, Some(10)), (2.0, Some(20)), (3.0, None)]
            .into_iter()
            .map(|(value, seconds)| crate::exposition::proto::Exemplar {
                label: vec![label("trace_id", "t")],
                value,
                timestamp: seconds.map(|seconds| Timestamp { seconds, nanos: 0 }),
            })
            .collect(),
        ..H::default()
    };
    // OTLP carries whole counts only: a fractional one is refused by name.
    let fractional = H {
        zero_count_float: 0.5,
        ..float.clone()
    };
    let b = body(&[
        family(
            "empty",
            kind::HISTOGRAM,
            vec![Metric {
                histogram: Some(empty),
                ..Metric::default()
            }],
        ),
        family(
            "queue",
            kind::GAUGE_HISTOGRAM,
            vec![Metric {
                histogram: Some(float),
                ..Metric::default()
            }],
        ),
        family(
            "fractional",
            kind::GAUGE_HISTOGRAM,
            vec![Metric {
                histogram: Some(fractional),
                ..Metric::default()
            }],
        ),
    ]);
    let p = parse(&b, &on());
    assert_eq!(p.samples.len(), 2);
    assert_eq!(p.invalid_lines, 1, "{:?}", p.first_invalid);
    // Its own exemplars: the newest with a time (one without is not taken).
    let e = p.samples[1].exemplar.as_ref().expect("an exemplar");
    assert_eq!((e.value, e.timestamp_ms), (2.0, Some(20_000)));
    assert!(
        p.first_invalid[0]
            .1
            .contains("\"fractional\": a float histogram with fractional counts"),
        "{:?}",
        p.first_invalid
    );
    let e = p.samples[0].histogram.as_deref().expect("native");
    assert_eq!((e.schema, e.count, e.positive.len()), (3, 0.0, 0));
    let q = p.samples[1].histogram.as_deref().expect("native");
    assert_eq!(
        (q.count, q.zero_count, q.positive.clone(), q.reset),
        (2.0, 1.0, vec![(-2, 1.0)], CounterReset::Gauge)
    );
    assert_eq!(p.families["queue"].kind, "gaugehistogram");
}

#[test]
fn bad_families_are_skipped_by_byte_offset_and_the_rest_is_kept() {
    let good = family(
        "up_like",
        kind::GAUGE,
        vec![Metric {
            gauge: Some(Value { value: 1.0 }),
            ..Metric::default()
        }],
    );
    let mismatched = family(
        "lat",
        kind::HISTOGRAM,
        vec![
            Metric {
                label: vec![label("a", "1")],
                histogram: Some(H {
                    positive_delta: vec![3, -2],
                    ..both()
                }),
                ..Metric::default()
            },
            Metric {
                label: vec![label("a", "2")],
                histogram: Some(both()),
                ..Metric::default()
            },
        ],
    );
    let mut b = body(&[good.clone(), mismatched]);
    // A family whose framing is intact but whose bytes are not a message.
    let garbage_at = b.len();
    b.extend_from_slice(&[3, 0xff, 0xff, 0xff]);
    let after = b.len();
    b.extend(body(&[family("unknown_kind", 9, Vec::new()), good.clone()]));
    // And a last one cut short.
    let cut_at = b.len();
    let whole = body(std::slice::from_ref(&good));
    b.extend_from_slice(&whole[..whole.len() - 2]);

    let p = parse(&b, &on());
    let names: Vec<&str> = p.samples.iter().map(|s| s.labels[0].1.as_str()).collect();
    assert_eq!(
        names,
        ["up_like", "lat", "up_like"],
        "{:?}",
        p.first_invalid
    );
    assert_eq!(p.samples[1].labels[1], ("a".to_owned(), "2".to_owned()));
    assert_eq!(p.invalid_lines, 4, "{:?}", p.first_invalid);
    let at: Vec<usize> = p.first_invalid.iter().map(|(at, _)| *at).collect();
    assert_eq!(at[1], garbage_at);
    assert_eq!(at[2], after);
    assert_eq!(at[3], cut_at);
    assert!(
        p.first_invalid[0].1.contains("\"lat\"") && p.first_invalid[0].1.contains("spans"),
        "{:?}",
        p.first_invalid[0]
    );
    assert!(p.first_invalid[2].1.contains("unknown metric type 9"));
    assert!(p.first_invalid[3].1.contains("runs past the end"));
}

#[test]
fn the_jobs_limits_lower_the_resolution_and_refuse_what_cannot_fit() {
    // 4 positive buckets at schema 2: indices 0..4 merge to 0..1 at schema 0.
    let h = H {
        schema: 2,
        ..fine_buckets()
    };
    let fine = H {
        schema: 8,
        ..fine_buckets()
    };
    let b = body(&[family(
        "lat",
        kind::HISTOGRAM,
        vec![Metric {
            histogram: Some(h),
            ..Metric::default()
        }],
    )]);
    let fine = body(&[family(
        "lat",
        kind::HISTOGRAM,
        vec![Metric {
            histogram: Some(fine),
            ..Metric::default()
        }],
    )]);
    let limited = |bucket_limit, min_bucket_factor| NativeHistograms {
        enabled: true,
        always_classic: false,
        convert_classic: false,
        bucket_limit,
        min_bucket_factor,
    };
    let read_body = |b: &[u8], n: &NativeHistograms| {
        let p = parse(b, n);
        p.samples
            .first()
            .and_then(|s| s.histogram.as_deref().cloned())
            .ok_or(p.first_invalid)
    };
    let read = |n: &NativeHistograms| {
        let p = parse(&b, n);
        p.samples
            .first()
            .and_then(|s| s.histogram.as_deref().cloned())
            .ok_or(p.first_invalid)
    };
    let h = read(&limited(2, 0.0)).expect("fits at a coarser schema");
    // Schema 1 would still hold 3 buckets; schema 0 holds 2.
    assert_eq!(
        (h.schema, h.positive.clone()),
        (0, vec![(0, 1.0), (1, 3.0)])
    );
    assert_eq!(h.count, 4.0);
    // From schema 8: a factor of 1.1 allows schema 2 at most (each bucket
    // 2^(1/4) ≈ 1.19 wider; schema 3's 1.09 is too fine), 1.5 schema 0.
    assert_eq!(read_body(&fine, &limited(0, 1.1)).expect("read").schema, 2);
    assert_eq!(read_body(&fine, &limited(0, 1.5)).expect("read").schema, 0);
    assert_eq!(read_body(&fine, &limited(0, 0.0)).expect("read").schema, 8);
    // Finer than schema 8 (as OpenTelemetry allows) is merged down to it.
    let finest = body(&[family(
        "lat",
        kind::HISTOGRAM,
        vec![Metric {
            histogram: Some(H {
                schema: 12,
                ..fine_buckets()
            }),
            ..Metric::default()
        }],
    )]);
    let h = read_body(&finest, &limited(0, 0.0)).expect("read");
    assert_eq!((h.schema, h.count), (8, 4.0));
    // 1 bucket cannot hold buckets on both sides of 1.
    let wide = H {
        sample_count: 2,
        schema: -4,
        zero_threshold: 0.001,
        positive_span: vec![BucketSpan {
            offset: -1,
            length: 2,
        }],
        positive_delta: vec![1, 0],
        ..H::default()
    };
    let b = body(&[family(
        "wide",
        kind::HISTOGRAM,
        vec![Metric {
            histogram: Some(wide),
            ..Metric::default()
        }],
    )]);
    let p = parse(&b, &limited(1, 0.0));
    assert!(p.samples.is_empty());
    assert!(
        p.first_invalid[0]
            .1
            .contains("native_histogram_bucket_limit 1"),
        "{:?}",
        p.first_invalid
    );
}

#[test]
fn names_that_are_not_names_and_labels_given_twice_refuse_their_series() {
    let gauge = |labels: Vec<LabelPair>| Metric {
        label: labels,
        gauge: Some(Value { value: 1.0 }),
        ..Metric::default()
    };
    let b = body(&[
        family(
            "temp",
            kind::GAUGE,
            vec![
                gauge(vec![label("bad name", "x")]),
                gauge(vec![label("__name__", "other")]),
                gauge(vec![label("a", "1"), label("a", "2")]),
                gauge(vec![label("a", "ok")]),
            ],
        ),
        family(
            "lat",
            kind::HISTOGRAM,
            vec![Metric {
                label: vec![label("le", "1")],
                histogram: Some(H::default()),
                ..Metric::default()
            }],
        ),
        family("no good", kind::GAUGE, vec![gauge(Vec::new())]),
    ]);
    let p = parse(&b, &on());
    assert_eq!(floats(&p), vec![("temp{a=\"ok\"}".to_owned(), 1.0)]);
    assert_eq!(p.invalid_lines, 5, "{:?}", p.first_invalid);
    assert!(
        p.first_invalid[0]
            .1
            .contains("\"bad name\" is not a label name")
    );
    assert!(p.first_invalid[3].1.contains("label \"le\" is given twice"));
    assert!(
        p.first_invalid[4]
            .1
            .contains("\"no good\" is not a metric name")
    );
}

#[test]
fn a_small_body_cannot_yield_without_bound() {
    // One metric with 40 KiB of labels and 20,000 empty buckets: 80 KiB
    // on the wire, 800 MiB of series if each bucket copied the labels.
    let big = "v".repeat(40 << 10);
    let h = H {
        bucket: (0..20_000)
            .map(|i| Bucket {
                upper_bound: f64::from(i),
                ..Bucket::default()
            })
            .collect(),
        ..H::default()
    };
    let b = body(&[
        family(
            "first",
            kind::GAUGE,
            vec![Metric {
                gauge: Some(Value { value: 1.0 }),
                ..Metric::default()
            }],
        ),
        family(
            "lat",
            kind::HISTOGRAM,
            vec![Metric {
                label: vec![label("big", &big)],
                histogram: Some(h),
                ..Metric::default()
            }],
        ),
    ]);
    let p = parse(&b, &on());
    let yielded: usize = p
        .samples
        .iter()
        .flat_map(|s| &s.labels)
        .map(|(k, v)| k.len() + v.len())
        .sum();
    assert!(
        yielded <= MIN_BUDGET.max(b.len() * EXPANSION),
        "{yielded} bytes from a body of {}",
        b.len()
    );
    assert_eq!(
        p.samples[0].labels[0].1, "first",
        "what came before is kept"
    );
    assert!(
        p.first_invalid
            .last()
            .is_some_and(|(_, why)| why.contains("the rest is refused")),
        "{:?}",
        p.first_invalid
    );
}
