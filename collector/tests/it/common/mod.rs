//! Shared helpers: a collector on free ports in a temp dir, and OTLP
//! requests built by hand.
#![allow(dead_code, missing_docs)]

use std::sync::Arc;

use keel_collector::server::{CollectorConfig, Running, start};
use keel_core::clock::{SharedClock, SystemClock};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric::Data, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

/// A collector's config on free ports with its data in `data_dir`.
pub fn config(data_dir: &std::path::Path) -> CollectorConfig {
    CollectorConfig {
        data_dir: data_dir.to_path_buf(),
        otlp_http_port: 0,
        otlp_grpc_port: 0,
        api_port: 0,
        ..CollectorConfig::default()
    }
}

/// The first notification of the collector at `api`, if any.
pub async fn first_notification(api: std::net::SocketAddr) -> Option<serde_json::Value> {
    let d: serde_json::Value = reqwest::get(format!("http://{api}/api/v1/notifications"))
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    Some(d["data"][0].clone()).filter(|v| !v.is_null())
}

pub async fn collector(dir: &std::path::Path) -> Running {
    let config = config(dir);
    let clock: SharedClock = Arc::new(SystemClock);
    start(&config, clock).await.expect("collector starts")
}

pub fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

pub fn point(t_ms: u64, v: f64, attrs: Vec<KeyValue>) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs,
        time_unix_nano: t_ms * 1_000_000,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    }
}

pub fn request(service: &str, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", service),
                    kv("service.instance.id", "i-1"),
                    kv("host.name", "box"),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

pub fn gauge(name: &str, unit: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        unit: unit.into(),
        data: Some(Data::Gauge(Gauge {
            data_points: points,
        })),
        ..Default::default()
    }
}

pub fn counter(name: &str, delta: bool, points: Vec<NumberDataPoint>) -> Metric {
    let temporality = if delta {
        AggregationTemporality::Delta
    } else {
        AggregationTemporality::Cumulative
    };
    Metric {
        name: name.into(),
        data: Some(Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: temporality as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

pub fn histogram(
    name: &str,
    unit: &str,
    t_ms: u64,
    bounds: Vec<f64>,
    counts: Vec<u64>,
    sum: f64,
) -> Metric {
    Metric {
        name: name.into(),
        unit: unit.into(),
        data: Some(Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                time_unix_nano: t_ms * 1_000_000,
                count: counts.iter().sum(),
                sum: Some(sum),
                bucket_counts: counts,
                explicit_bounds: bounds,
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        })),
        ..Default::default()
    }
}

pub async fn query(api: std::net::SocketAddr, expr: &str, t_ms: u64) -> serde_json::Value {
    let r = reqwest::Client::new()
        .get(format!("http://{api}/api/v1/query"))
        .query(&[
            ("query", expr.to_owned()),
            ("time", format!("{}", t_ms as f64 / 1000.0)),
        ])
        .send()
        .await
        .expect("query");
    r.json().await.expect("json")
}

/// The one value a query answers at `t_ms` (panics, naming the answer,
/// when it is not one sample).
pub async fn query_value(api: std::net::SocketAddr, expr: &str, t_ms: u64) -> f64 {
    let v = query(api, expr, t_ms).await;
    let s = samples(&v);
    assert_eq!(s.len(), 1, "{expr}: {v}");
    s[0].1
}

/// `[(labels, value)]` of a vector answer.
pub fn samples(answer: &serde_json::Value) -> Vec<(serde_json::Value, f64)> {
    answer["data"]["result"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        s["metric"].clone(),
                        s["value"][1]
                            .as_str()
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(f64::NAN),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// POST a body declared as 100 MB (sending only its first 64 KiB) with a
/// raw client, and return the start of the answer: read however far the
/// upload got, since the server may answer and close before it ends.
pub async fn post_oversized(addr: std::net::SocketAddr, path: &str, content_type: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: keel\r\nContent-Type: {content_type}\r\nContent-Length: 104857600\r\n\r\n"
    );
    sock.write_all(head.as_bytes()).await.expect("headers");
    let _ = sock.write_all(&vec![b'x'; 64 << 10]).await;
    let mut answer = vec![0u8; 256];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), sock.read(&mut answer))
        .await
        .expect("an answer within 10 s, before the body is read")
        .expect("answer");
    String::from_utf8_lossy(&answer[..n]).into_owned()
}

/// GET `url` with `query` until `done` holds for the JSON answer (logs and
/// spans become searchable at the next commit), for at most 10 s; returns
/// the last answer either way, for the caller to assert on.
pub async fn poll_json(
    url: &str,
    query: &[(&str, String)],
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = http.get(url).query(query).send().await.expect("get");
        let v: serde_json::Value = r.json().await.expect("json");
        if done(&v) || std::time::Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// An SDK meter provider exporting through `exporter` as `service`, on
/// demand only (its periodic reader waits an hour; tests flush it).
pub fn meter_provider(
    exporter: opentelemetry_otlp::MetricExporter,
    service: &str,
) -> opentelemetry_sdk::metrics::SdkMeterProvider {
    let reader = opentelemetry_sdk::metrics::PeriodicReader::builder(exporter)
        .with_interval(std::time::Duration::from_secs(3600))
        .build();
    opentelemetry_sdk::metrics::SdkMeterProvider::builder()
        .with_reader(reader)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service.to_owned())
                .build(),
        )
        .build()
}

/// The collector's own metrics (`GET /metrics`), as text.
pub async fn own_metrics(api: std::net::SocketAddr) -> String {
    reqwest::get(format!("http://{api}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// GET `path` of the API as JSON.
pub async fn get(api: std::net::SocketAddr, path: &str) -> serde_json::Value {
    reqwest::get(format!("http://{api}{path}"))
        .await
        .expect("request")
        .json()
        .await
        .expect("json")
}

/// Wait (in real time, for the evaluation task) until the rules API
/// shows an evaluation of every rule at `t` or later.
pub async fn evaluated_at(
    api: std::net::SocketAddr,
    t: std::time::SystemTime,
) -> serde_json::Value {
    let want = humantime::format_rfc3339_millis(t).to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let v = get(api, "/api/v1/rules").await;
        let all = v["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .all(|r| {
                r["lastEvaluation"]
                    .as_str()
                    .is_some_and(|l| l >= want.as_str())
            });
        if all {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no evaluation at {want}: {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// One sample of the series `x{instance}` at `t`, straight into the store.
pub fn x(c: &Running, instance: &str, t: std::time::SystemTime, v: f64) {
    c.store
        .append(vec![(
            keel_series::labels::Labels::new(vec![("__name__", "x"), ("instance", instance)]),
            vec![(keel_core::clock::unix_ms(t), v)],
        )])
        .expect("append");
}

/// Tests that time retries or run SDK processes take turns: the
/// integration tests are one binary, so others would otherwise run
/// beside them on two cores.
pub use keel_testkit::turn::{take as turn, take_blocking as turn_blocking};
