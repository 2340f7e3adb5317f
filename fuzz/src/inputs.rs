//! Generators of valid-shaped input with hostile values: what a buggy or
//! malicious client can send that still decodes.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram,
    HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary,
    SummaryDataPoint, exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
    summary_data_point::ValueAtQuantile,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span::Event};
use proptest::collection::vec;
use proptest::prelude::*;

/// Floats that break arithmetic: NaN, the infinities, -0, the extremes,
/// Prometheus' staleness marker, and any.
pub fn hostile_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-0.0),
        Just(f64::MAX),
        Just(f64::MIN_POSITIVE),
        Just(f64::from_bits(keel_core::stale::STALE_NAN)),
        any::<f64>(),
        -1e6f64..1e6,
    ]
}

/// Timestamps (ns) at the edges and around now.
pub fn hostile_time_ns() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(u64::MAX),
        Just(i64::MAX as u64),
        any::<u64>(),
        1_700_000_000_000_000_000u64..1_900_000_000_000_000_000,
    ]
}

/// Names: empty, Unicode, dotted, with every character a label cannot hold.
pub fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z_]{1,10}",
        "[a-z]{1,5}\\.[a-z]{1,5}",
        "__[a-z]{1,6}",
        "[0-9 -/:-@\\[-`{-~]{1,6}",
        any::<String>(),
    ]
}

/// An attribute value of any kind, nested up to three levels.
pub fn any_value() -> impl Strategy<Value = AnyValue> {
    let leaf = prop_oneof![
        any::<String>().prop_map(any_value::Value::StringValue),
        any::<bool>().prop_map(any_value::Value::BoolValue),
        any::<i64>().prop_map(any_value::Value::IntValue),
        hostile_f64().prop_map(any_value::Value::DoubleValue),
        vec(any::<u8>(), 0..12).prop_map(any_value::Value::BytesValue),
    ]
    .prop_map(|v| AnyValue { value: Some(v) });
    let leaf = prop_oneof![leaf, Just(AnyValue { value: None })];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(|values| AnyValue {
                value: Some(any_value::Value::ArrayValue(ArrayValue { values }))
            }),
            vec((name(), inner), 0..4).prop_map(|kv| AnyValue {
                value: Some(any_value::Value::KvlistValue(KeyValueList {
                    values: kv
                        .into_iter()
                        .map(|(key, v)| KeyValue {
                            key,
                            value: Some(v),
                            ..Default::default()
                        })
                        .collect(),
                }))
            }),
        ]
    })
}

/// Attributes: repeated keys, reserved names, any values.
pub fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
    let key = prop_oneof![
        name(),
        Just("service.name".to_owned()),
        Just("service.instance.id".to_owned()),
        Just("__name__".to_owned()),
        Just("le".to_owned()),
        Just("job".to_owned()),
    ];
    vec(
        (key, proptest::option::of(any_value())).prop_map(|(key, value)| KeyValue {
            key,
            value,
            ..Default::default()
        }),
        0..6,
    )
}

fn resource() -> impl Strategy<Value = Option<Resource>> {
    proptest::option::of(attributes().prop_map(|attributes| Resource {
        attributes,
        ..Default::default()
    }))
}

fn number_point() -> impl Strategy<Value = NumberDataPoint> {
    (
        attributes(),
        hostile_time_ns(),
        hostile_time_ns(),
        prop_oneof![
            hostile_f64().prop_map(number_data_point::Value::AsDouble),
            any::<i64>().prop_map(number_data_point::Value::AsInt),
        ],
        any::<u32>(),
    )
        .prop_map(|(attributes, start, time, value, flags)| NumberDataPoint {
            attributes,
            start_time_unix_nano: start,
            time_unix_nano: time,
            value: Some(value),
            flags,
            ..Default::default()
        })
}

fn histogram_point() -> impl Strategy<Value = HistogramDataPoint> {
    (
        attributes(),
        hostile_time_ns(),
        vec(hostile_f64(), 0..6),
        vec(0u64..1_000, 0..8),
        any::<u64>(),
        proptest::option::of(hostile_f64()),
    )
        .prop_map(
            |(attributes, time, explicit_bounds, bucket_counts, count, sum)| HistogramDataPoint {
                attributes,
                time_unix_nano: time,
                explicit_bounds,
                bucket_counts,
                count,
                sum,
                ..Default::default()
            },
        )
}

fn exp_histogram_point() -> impl Strategy<Value = ExponentialHistogramDataPoint> {
    let buckets =
        (any::<i32>(), vec(0u64..1_000, 0..6)).prop_map(|(offset, bucket_counts)| Buckets {
            offset,
            bucket_counts,
        });
    (
        attributes(),
        hostile_time_ns(),
        prop_oneof![any::<i32>(), -10i32..25],
        any::<u64>(),
        proptest::option::of(buckets.clone()),
        proptest::option::of(buckets),
        proptest::option::of(hostile_f64()),
    )
        .prop_map(
            |(attributes, time, scale, zero_count, positive, negative, sum)| {
                ExponentialHistogramDataPoint {
                    attributes,
                    time_unix_nano: time,
                    scale,
                    zero_count,
                    positive,
                    negative,
                    sum,
                    ..Default::default()
                }
            },
        )
}

fn summary_point() -> impl Strategy<Value = SummaryDataPoint> {
    (
        attributes(),
        hostile_time_ns(),
        vec((hostile_f64(), hostile_f64()), 0..4),
        any::<u64>(),
        hostile_f64(),
    )
        .prop_map(|(attributes, time, q, count, sum)| SummaryDataPoint {
            attributes,
            time_unix_nano: time,
            quantile_values: q
                .into_iter()
                .map(|(quantile, value)| ValueAtQuantile { quantile, value })
                .collect(),
            count,
            sum,
            ..Default::default()
        })
}

fn temporality() -> impl Strategy<Value = i32> {
    prop_oneof![
        Just(AggregationTemporality::Delta as i32),
        Just(AggregationTemporality::Cumulative as i32),
        any::<i32>(),
    ]
}

/// One metric of any kind, with hostile points.
pub fn metric() -> impl Strategy<Value = Metric> {
    let data = prop_oneof![
        vec(number_point(), 0..4).prop_map(|data_points| Data::Gauge(Gauge { data_points })),
        (vec(number_point(), 0..4), temporality(), any::<bool>()).prop_map(
            |(data_points, t, m)| {
                Data::Sum(Sum {
                    data_points,
                    aggregation_temporality: t,
                    is_monotonic: m,
                })
            }
        ),
        (vec(histogram_point(), 0..3), temporality()).prop_map(|(data_points, t)| {
            Data::Histogram(Histogram {
                data_points,
                aggregation_temporality: t,
            })
        }),
        (vec(exp_histogram_point(), 0..3), temporality()).prop_map(|(data_points, t)| {
            Data::ExponentialHistogram(ExponentialHistogram {
                data_points,
                aggregation_temporality: t,
            })
        }),
        vec(summary_point(), 0..3).prop_map(|data_points| Data::Summary(Summary { data_points })),
    ];
    (name(), name(), proptest::option::of(data)).prop_map(|(name, unit, data)| Metric {
        name,
        unit,
        data,
        ..Default::default()
    })
}

/// An OTLP metrics export.
pub fn metrics_request() -> impl Strategy<Value = ExportMetricsServiceRequest> {
    vec((resource(), vec(metric(), 0..4)), 0..3).prop_map(|rs| ExportMetricsServiceRequest {
        resource_metrics: rs
            .into_iter()
            .map(|(resource, metrics)| ResourceMetrics {
                resource,
                scope_metrics: vec![ScopeMetrics {
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    })
}

/// Trace and span ids of any length (valid ones are 16 and 8 bytes).
fn id() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..20),
        vec(any::<u8>(), 16),
        vec(any::<u8>(), 8),
        Just(vec![0u8; 16])
    ]
}

/// An OTLP logs export.
pub fn logs_request() -> impl Strategy<Value = ExportLogsServiceRequest> {
    let record = (
        hostile_time_ns(),
        hostile_time_ns(),
        any::<i32>(),
        name(),
        proptest::option::of(any_value()),
        attributes(),
        id(),
        id(),
    )
        .prop_map(
            |(t, observed, sev, sev_text, body, attributes, trace_id, span_id)| LogRecord {
                time_unix_nano: t,
                observed_time_unix_nano: observed,
                severity_number: sev,
                severity_text: sev_text,
                body,
                attributes,
                trace_id,
                span_id,
                ..Default::default()
            },
        );
    vec((resource(), vec(record, 0..5)), 0..3).prop_map(|rl| ExportLogsServiceRequest {
        resource_logs: rl
            .into_iter()
            .map(|(resource, log_records)| ResourceLogs {
                resource,
                scope_logs: vec![ScopeLogs {
                    log_records,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    })
}

/// An OTLP traces export.
pub fn traces_request() -> impl Strategy<Value = ExportTraceServiceRequest> {
    let span = (
        id(),
        id(),
        id(),
        name(),
        any::<i32>(),
        hostile_time_ns(),
        hostile_time_ns(),
        attributes(),
        vec((hostile_time_ns(), name(), attributes()), 0..3),
        (any::<i32>(), name()),
    )
        .prop_map(
            |(
                trace_id,
                span_id,
                parent,
                name,
                kind,
                start,
                end,
                attributes,
                events,
                (code, message),
            )| Span {
                trace_id,
                span_id,
                parent_span_id: parent,
                name,
                kind,
                start_time_unix_nano: start,
                end_time_unix_nano: end,
                attributes,
                events: events
                    .into_iter()
                    .map(|(t, name, attributes)| Event {
                        time_unix_nano: t,
                        name,
                        attributes,
                        ..Default::default()
                    })
                    .collect(),
                status: Some(Status { code, message }),
                ..Default::default()
            },
        );
    vec((resource(), vec(span, 0..5)), 0..3).prop_map(|rs| ExportTraceServiceRequest {
        resource_spans: rs
            .into_iter()
            .map(|(resource, spans)| ResourceSpans {
                resource,
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    })
}

/// A JSON value of any kind, nested.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        any::<String>().prop_map(Value::String),
        "[0-9a-f]{16,32}".prop_map(Value::String),
        "20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})".prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 12, 3, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..3).prop_map(Value::Array),
            vec((name(), inner), 0..3).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A body of JSON lines: objects with the recognised fields (and others)
/// holding values of every kind, and lines that are not JSON objects.
pub fn json_lines() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("timestamp"),
        Just("time"),
        Just("ts"),
        Just("level"),
        Just("severity"),
        Just("service"),
        Just("host"),
        Just("trace_id"),
        Just("span_id"),
        Just("message"),
        Just("msg"),
        Just("extra"),
    ]
    .prop_map(str::to_owned);
    let object = vec((key, json_value()), 0..8)
        .prop_map(|kv| serde_json::Value::Object(kv.into_iter().collect()).to_string());
    let line = prop_oneof![4 => object, 1 => any::<String>(), 1 => Just("[1,2]".to_owned()), 1 => Just(String::new())];
    vec(line, 0..8).prop_map(|lines| lines.join("\n"))
}
