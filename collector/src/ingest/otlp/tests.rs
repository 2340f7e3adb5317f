use super::*;

#[test]
fn exponential_histograms_with_negative_values_become_ascending_classic_buckets() {
    use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
    // scale 0: base 2. Negative buckets 0 and 1 hold values in [-2, -1)
    // and [-4, -2); zero bucket 1; positive bucket 0 holds (1, 2].
    let p = ExponentialHistogramDataPoint {
        time_unix_nano: 1,
        scale: 0,
        count: 3 + 4 + 1 + 5,
        zero_count: 1,
        zero_threshold: 0.0,
        negative: Some(Buckets {
            offset: 0,
            bucket_counts: vec![3, 4],
        }),
        positive: Some(Buckets {
            offset: 0,
            bucket_counts: vec![5],
        }),
        ..Default::default()
    };
    let c = exponential_to_classic(&p).expect("converts");
    assert_eq!(c.explicit_bounds, vec![-2.0, -1.0, 0.0, 2.0]);
    assert_eq!(c.bucket_counts, vec![4, 3, 1, 5, 0]);
    let cumulative: Vec<u64> = c
        .bucket_counts
        .iter()
        .scan(0, |acc, x| {
            *acc += x;
            Some(*acc)
        })
        .collect();
    assert_eq!(*cumulative.last().expect("buckets"), p.count);
    let bad = ExponentialHistogramDataPoint { scale: 99, ..p };
    assert!(exponential_to_classic(&bad).is_err());
}

#[test]
fn exponential_histograms_become_native_ones_index_shifted_and_fine_scales_merged() {
    use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
    let p = ExponentialHistogramDataPoint {
        time_unix_nano: 1,
        scale: 0,
        count: 13,
        sum: Some(20.5),
        zero_count: 1,
        negative: Some(Buckets {
            offset: 0,
            bucket_counts: vec![3, 4],
        }),
        positive: Some(Buckets {
            offset: -1,
            bucket_counts: vec![2, 0, 3],
        }),
        ..Default::default()
    };
    let h = exponential_to_native(&p).expect("converts");
    // OTLP bucket i holds (2^i, 2^(i+1)]: Prometheus' index i + 1.
    assert_eq!(h.positive, vec![(0, 2.0), (2, 3.0)]);
    assert_eq!(h.negative, vec![(1, 3.0), (2, 4.0)]);
    assert_eq!(
        (h.schema, h.count, h.sum, h.zero_count),
        (0, 13.0, 20.5, 1.0)
    );
    assert_eq!(h.zero_threshold, DEFAULT_ZERO_THRESHOLD);
    // Scale 10 is merged to schema 8: four buckets become one.
    let fine = ExponentialHistogramDataPoint {
        scale: 10,
        positive: Some(Buckets {
            offset: 3,
            bucket_counts: vec![1, 1, 1, 1, 1],
        }),
        negative: None,
        ..p.clone()
    };
    let h = exponential_to_native(&fine).expect("converts");
    assert_eq!(h.schema, 8);
    // Indices 4..=8 at scale 10: index 4 ends at 2^(4/1024), schema 8 index
    // 1; 5..=8 make schema 8 index 2, (2^(4/1024), 2^(8/1024)].
    assert_eq!(h.positive, vec![(1, 1.0), (2, 4.0)]);
    for scale in [-5, 21] {
        let bad = ExponentialHistogramDataPoint { scale, ..p.clone() };
        let why = exponential_to_native(&bad).expect_err("refused");
        assert!(why.contains(&scale.to_string()), "{why}");
    }
}

#[test]
fn delta_histograms_accumulate_onto_the_stored_newest() {
    let l = Labels::new(vec![("__name__", "lat")]);
    let d = |c: f64| Histogram {
        count: c,
        positive: vec![(1, c)],
        ..Histogram::default()
    };
    let out = accumulate_deltas(vec![(l.clone(), vec![(2, d(2.0)), (1, d(1.0))])], &|_| {
        Some(d(10.0))
    });
    let counts: Vec<(i64, f64)> = out[0].1.iter().map(|(t, h)| (*t, h.count)).collect();
    assert_eq!(counts, vec![(1, 11.0), (2, 13.0)]);
    assert_eq!(out[0].1[1].1.positive, vec![(1, 13.0)]);
    let fresh = accumulate_deltas(vec![(l, vec![(1, d(1.0))])], &|_| None);
    assert_eq!(fresh[0].1[0].1.count, 1.0);
}

#[test]
fn histogram_counts_that_overflow_saturate_instead_of_panicking() {
    use opentelemetry_proto::tonic::metrics::v1::Histogram;
    let p = HistogramDataPoint {
        time_unix_nano: 1_000_000_000,
        count: u64::MAX,
        bucket_counts: vec![u64::MAX, u64::MAX, 5],
        explicit_bounds: vec![1.0, 2.0],
        ..Default::default()
    };
    let req = one_metric(
        &[],
        Metric {
            name: "h".into(),
            data: Some(Data::Histogram(Histogram {
                data_points: vec![p],
                aggregation_temporality: 2,
            })),
            ..Default::default()
        },
    );
    let out = convert(&req, &Translation::default(), &|_| None);
    let inf = out
        .batch
        .iter()
        .find(|(l, _)| l.get("le") == "+Inf")
        .expect("+Inf bucket");
    assert_eq!(inf.1[0].1, u64::MAX as f64);
}

#[test]
fn histogram_exemplars_go_to_the_first_bucket_that_holds_them_with_hex_ids() {
    use opentelemetry_proto::tonic::metrics::v1::{Exemplar as OtlpExemplar, Histogram};
    let ex = |v: f64, trace: u8, ns: u64| OtlpExemplar {
        value: Some(exemplar::Value::AsDouble(v)),
        trace_id: vec![trace; 16],
        span_id: vec![0xab; 8],
        time_unix_nano: ns,
        filtered_attributes: vec![text("user.id", "u1")],
    };
    let p = HistogramDataPoint {
        time_unix_nano: 5_000_000_000,
        count: 3,
        bucket_counts: vec![1, 1, 1],
        explicit_bounds: vec![0.1, 1.0],
        exemplars: vec![
            ex(0.1, 1, 4_000_000_000),
            ex(0.5, 2, 0),
            ex(7.0, 3, 4_500_000_000),
        ],
        ..Default::default()
    };
    let req = one_metric(
        &[],
        Metric {
            name: "lat".into(),
            unit: "s".into(),
            data: Some(Data::Histogram(Histogram {
                data_points: vec![p],
                aggregation_temporality: 2,
            })),
            ..Default::default()
        },
    );
    let out = convert(&req, &Translation::default(), &|_| None);
    let got: Vec<(String, String, String, i64, f64)> = out
        .exemplars
        .iter()
        .map(|(s, e)| {
            (
                format!("{}{{le={}}}", s.get("__name__"), s.get("le")),
                e.labels.get("trace_id").to_owned(),
                format!("{}/{}", e.labels.get("span_id"), e.labels.get("user_id")),
                e.t,
                e.value,
            )
        })
        .collect();
    let trace = |b: u8| format!("{b:02x}").repeat(16);
    let rest = || "abababababababab/u1".to_owned();
    assert_eq!(
        got,
        vec![
            (
                "lat_seconds_bucket{le=0.1}".into(),
                trace(1),
                rest(),
                4000,
                0.1
            ),
            // No time of its own: the point's.
            (
                "lat_seconds_bucket{le=1}".into(),
                trace(2),
                rest(),
                5000,
                0.5
            ),
            (
                "lat_seconds_bucket{le=+Inf}".into(),
                trace(3),
                rest(),
                4500,
                7.0
            ),
        ]
    );
}

#[test]
fn names_follow_prometheus_otlp_translation() {
    assert_eq!(
        metric_name("http.server.request.duration", "s", false, false),
        "http_server_request_duration_seconds"
    );
    assert_eq!(
        metric_name("http.server.requests", "{request}", true, false),
        "http_server_requests_total"
    );
    assert_eq!(
        metric_name("system.memory.usage", "By", false, true),
        "system_memory_usage_bytes"
    );
    assert_eq!(
        metric_name("net.io", "By/s", true, false),
        "net_io_bytes_per_second_total"
    );
    assert_eq!(
        metric_name("cpu.utilization", "1", false, true),
        "cpu_utilization_ratio"
    );
    assert_eq!(
        metric_name("requests_total", "", true, false),
        "requests_total"
    );
    assert_eq!(label_name("http.route"), "http_route");
    assert_eq!(label_name("1st"), "key_1st");
}

fn text(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// One gauge point `g` with `point` attributes under a resource of
/// `resource` attributes.
/// A request of one metric under a resource with `attrs`.
fn one_metric(attrs: &[(&str, &str)], metric: Metric) -> ExportMetricsServiceRequest {
    use opentelemetry_proto::tonic::metrics::v1::{ResourceMetrics, ScopeMetrics};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: attrs.iter().map(|(k, v)| text(k, v)).collect(),
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![metric],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn request(resource: &[(&str, &str)], point: &[(&str, &str)]) -> ExportMetricsServiceRequest {
    use opentelemetry_proto::tonic::metrics::v1::Gauge;
    let p = NumberDataPoint {
        attributes: point.iter().map(|(k, v)| text(k, v)).collect(),
        time_unix_nano: 1_000_000_000,
        value: Some(number_data_point::Value::AsDouble(1.0)),
        ..Default::default()
    };
    one_metric(
        resource,
        Metric {
            name: "g".into(),
            data: Some(Data::Gauge(Gauge {
                data_points: vec![p],
            })),
            ..Default::default()
        },
    )
}

/// Every series as `name{k="v",…}` text, sorted.
fn series(out: &Converted) -> Vec<String> {
    let mut v: Vec<String> = out
        .batch
        .iter()
        .chain(&out.target_info)
        .map(|(l, _)| l.to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn resources_map_to_job_instance_and_target_info_as_prometheus_3_does() {
    let req = request(
        &[
            ("service.name", "cart"),
            ("service.namespace", "shop"),
            ("service.instance.id", "c-1"),
            ("host.name", "box"),
            ("telemetry.sdk.language", "python"),
        ],
        &[("http.route", "/a")],
    );
    let out = convert(&req, &Translation::default(), &|_| None);
    assert_eq!(
        series(&out),
        vec![
            r#"g{http_route="/a", instance="c-1", job="shop/cart"}"#,
            r#"target_info{host_name="box", instance="c-1", job="shop/cart", telemetry_sdk_language="python"}"#,
        ]
    );
    // Only identifying attributes: no target_info.
    let req = request(&[("service.name", "cart")], &[]);
    assert_eq!(
        series(&convert(&req, &Translation::default(), &|_| None)),
        vec![r#"g{job="cart"}"#]
    );
    // Neither job nor instance: no target_info to join on.
    let req = request(&[("host.name", "box")], &[]);
    assert_eq!(
        series(&convert(&req, &Translation::default(), &|_| None)),
        vec!["g{}"]
    );
}

#[test]
fn promoted_resource_attributes_yield_to_a_points_own_and_job_instance_win() {
    let req = request(
        &[
            ("service.name", "cart"),
            ("service.instance.id", "c-1"),
            ("deployment.environment", "prod"),
            ("k8s.pod.name", "pod-7"),
            ("cloud.region", "eu"),
        ],
        &[
            ("cloud.region", "us"),
            ("job", "mine"),
            ("instance", "mine"),
        ],
    );
    let t = Translation {
        promote_resource_attributes: vec!["deployment.environment".into(), "cloud.region".into()],
        ..Translation::default()
    };
    let out = convert(&req, &t, &|_| None);
    let g = series(&out).remove(0);
    assert_eq!(
        g,
        r#"g{cloud_region="us", deployment_environment="prod", instance="c-1", job="cart"}"#
    );
    let all = Translation {
        promote_all_resource_attributes: true,
        ignore_resource_attributes: vec!["k8s.pod.name".into(), "cloud.region".into()],
        ..Translation::default()
    };
    let g = series(&convert(&req, &all, &|_| None)).remove(0);
    assert_eq!(
        g,
        r#"g{cloud_region="us", deployment_environment="prod", instance="c-1", job="cart", service_instance_id="c-1", service_name="cart"}"#
    );
    // keep_identifying_resource_attributes puts them on target_info.
    let keep = Translation {
        keep_identifying_resource_attributes: true,
        ..Translation::default()
    };
    let info = series(&convert(&req, &keep, &|_| None)).remove(1);
    assert!(info.contains(r#"service_name="cart""#), "{info}");
}

#[test]
fn a_points_own_job_stays_when_the_resource_names_none() {
    let req = request(
        &[("host.name", "box")],
        &[("job", "mine"), ("instance", "i")],
    );
    let v = series(&convert(&req, &Translation::default(), &|_| None));
    assert_eq!(v[0], r#"g{instance="i", job="mine"}"#);
}

#[test]
fn target_info_spans_at_most_an_hour_whatever_the_senders_timestamps() {
    use opentelemetry_proto::tonic::metrics::v1::Gauge;
    let point = |ns: u64| NumberDataPoint {
        time_unix_nano: ns,
        value: Some(number_data_point::Value::AsDouble(1.0)),
        ..Default::default()
    };
    let req = one_metric(
        &[("service.name", "s"), ("host.name", "h")],
        Metric {
            name: "g".into(),
            data: Some(Data::Gauge(Gauge {
                data_points: vec![point(1_000_000), point(u64::MAX)],
            })),
            ..Default::default()
        },
    );
    let out = convert(&req, &Translation::default(), &|_| None);
    let n: usize = out.target_info.iter().map(|(_, s)| s.len()).sum();
    assert_eq!(n, 25, "an hour every 150 s, and the newest");
}

#[test]
fn attribute_keys_that_sanitise_alike_join_their_values() {
    let req = request(
        &[("service.name", "s")],
        &[("a_b", "2"), ("a.b", "1"), ("_x", "3")],
    );
    let g = series(&convert(&req, &Translation::default(), &|_| None)).remove(0);
    assert_eq!(g, r#"g{a_b="1;2", job="s", key_x="3"}"#);
}

#[test]
fn translation_settings_report_every_problem() {
    let t = Translation {
        promote_resource_attributes: vec!["a".into(), "a".into(), " ".into()],
        promote_all_resource_attributes: true,
        ignore_resource_attributes: vec![],
        keep_identifying_resource_attributes: false,
        promote_scope_metadata: false,
        exponential_histograms: ExponentialAs::Native,
        convert_histograms_to_nhcb: false,
    };
    let mut problems = Vec::new();
    t.validate("collector.otlp", &mut problems);
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems[0].starts_with("collector.otlp.promote_resource_attributes:"));
    let t = Translation {
        ignore_resource_attributes: vec!["x".into()],
        ..Translation::default()
    };
    let mut problems = Vec::new();
    t.validate("collector.otlp", &mut problems);
    assert_eq!(
        problems,
        vec![
            "collector.otlp.ignore_resource_attributes: only applies with promote_all_resource_attributes: true"
        ]
    );
}

#[test]
fn an_attribute_with_an_empty_key_is_dropped_not_made_an_invalid_label() {
    // Found by keel-fuzz (otlp_metrics): the label "" was stored.
    let req = request(
        &[("service.name", "cart"), ("", "r")],
        &[("", "A"), ("a.b", "1"), ("a_b", "2")],
    );
    let out = convert(&req, &Translation::default(), &|_| None);
    assert_eq!(series(&out), vec![r#"g{a_b="1;2", job="cart"}"#]);
}

#[test]
fn scope_name_and_version_become_labels_only_when_promoted_and_never_the_agents() {
    use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
    use opentelemetry_proto::tonic::metrics::v1::{Gauge, ResourceMetrics, ScopeMetrics};
    let scoped = |name: &str, version: &str| ScopeMetrics {
        scope: Some(InstrumentationScope {
            name: name.into(),
            version: version.into(),
            ..Default::default()
        }),
        metrics: vec![Metric {
            name: format!("g_{}", name.replace('-', "_")),
            data: Some(Data::Gauge(Gauge {
                data_points: vec![NumberDataPoint {
                    time_unix_nano: 1_000_000_000,
                    value: Some(number_data_point::Value::AsDouble(1.0)),
                    ..Default::default()
                }],
            })),
            ..Default::default()
        }],
        ..Default::default()
    };
    let req = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(opentelemetry_proto::tonic::resource::v1::Resource {
                attributes: vec![text("service.name", "shop"), text("host.name", "h1")],
                ..Default::default()
            }),
            scope_metrics: vec![scoped("io.shop.db", "2.1"), scoped("keel-agent", "0.1.0")],
            ..Default::default()
        }],
    };
    let labels = |t: &Translation| -> Vec<String> {
        let mut v: Vec<String> = convert(&req, t, &|_| None)
            .batch
            .iter()
            .chain(convert(&req, t, &|_| None).target_info.iter())
            .map(|(l, _)| {
                l.pairs()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect();
        v.sort();
        v
    };
    let off = labels(&Translation::default());
    assert!(off.iter().all(|l| !l.contains("otel_scope")), "{off:?}");
    let on = labels(&Translation {
        promote_scope_metadata: true,
        ..Translation::default()
    });
    let db: Vec<&String> = on.iter().filter(|l| l.contains("g_io_shop_db")).collect();
    assert!(
        db.len() == 1
            && db[0].contains("otel_scope_name")
            && db[0].contains("io.shop.db")
            && db[0].contains("2.1"),
        "{on:?}"
    );
    let agent: Vec<&String> = on
        .iter()
        .filter(|l| l.contains("g_keel_agent") || l.contains("target_info"))
        .collect();
    assert!(
        agent.len() == 2 && agent.iter().all(|l| !l.contains("otel_scope")),
        "{on:?}"
    );
}

#[test]
fn a_gauge_histogram_keeps_its_hint_and_a_marked_explicit_histogram_becomes_custom_buckets() {
    use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
    use opentelemetry_proto::tonic::metrics::v1::{ExponentialHistogram, Histogram as Explicit};
    let exp = Metric {
        name: "queue".into(),
        metadata: vec![text("prometheus.type", "gaugehistogram")],
        data: Some(Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![ExponentialHistogramDataPoint {
                time_unix_nano: 1_000_000_000,
                count: 2,
                sum: Some(3.0),
                positive: Some(Buckets {
                    offset: 0,
                    bucket_counts: vec![2],
                }),
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        })),
        ..Default::default()
    };
    let explicit = |metadata: Vec<KeyValue>| Metric {
        name: "rpc".into(),
        metadata,
        data: Some(Data::Histogram(Explicit {
            data_points: vec![HistogramDataPoint {
                time_unix_nano: 1_000_000_000,
                count: 5,
                sum: Some(1.25),
                bucket_counts: vec![1, 0, 4],
                explicit_bounds: vec![0.1, 0.5],
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        })),
        ..Default::default()
    };
    let (k, v) = keel_core::names::OTLP_CUSTOM_BUCKETS;
    let t = Translation::default();
    let out = convert(&one_metric(&[("service.name", "s")], exp), &t, &|_| None);
    assert_eq!(out.histograms[0].1[0].1.reset, CounterReset::Gauge);
    // Marked by the agent: custom buckets whatever the translation says.
    let out = convert(
        &one_metric(&[("service.name", "s")], explicit(vec![text(k, v)])),
        &t,
        &|_| None,
    );
    let h = &out.histograms[0].1[0].1;
    assert!(h.is_custom());
    assert_eq!(&*h.custom_values, &[0.1, 0.5]);
    assert_eq!(h.positive, vec![(0, 1.0), (2, 4.0)]);
    assert!(out.batch.is_empty(), "no le series");
    // Unmarked: le series, as before.
    let out = convert(
        &one_metric(&[("service.name", "s")], explicit(vec![])),
        &t,
        &|_| None,
    );
    assert!(out.histograms.is_empty());
    assert_eq!(out.batch.len(), 5, "3 buckets, _sum and _count");
    // Counts that do not match the bounds are refused, named.
    let mut bad = explicit(vec![text(k, v)]);
    if let Some(Data::Histogram(h)) = &mut bad.data {
        h.data_points[0].bucket_counts = vec![1, 4];
    }
    let out = convert(&one_metric(&[("service.name", "s")], bad), &t, &|_| None);
    assert!(out.histograms.is_empty());
    assert!(
        out.reasons
            .iter()
            .any(|r| r.contains("rpc") && r.contains("one more count")),
        "{:?}",
        out.reasons
    );
}
