//! What one client can make the collector hold is bounded
//! (`collector.limits`): past the series limit new series are refused
//! with an answer naming the limit while the existing ones go on and the
//! head stays at the limit; an over-long label, log line or attribute is
//! refused or cut the same way.

use std::sync::Arc;

use keel_collector::server::{CollectorConfig, Limits, Running, start};
use keel_core::clock::{SharedClock, SystemClock};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use prost::Message;
use serde_json::Value;

use crate::common::{gauge, kv, point, request};

const T0: u64 = 1_763_856_000_000;

async fn collector(dir: &std::path::Path) -> Running {
    let config = CollectorConfig {
        limits: Limits {
            max_series: 100,
            max_log_line_bytes: 1000,
            max_span_attributes: 8,
            ..Limits::default()
        },
        ..crate::common::config(dir)
    };
    let clock: SharedClock = Arc::new(SystemClock);
    start(&config, clock).await.expect("collector starts")
}

/// `n` series of `m` (labels `i` from `from`), one point each at `t`.
fn series(m: &str, from: usize, n: usize, t: u64) -> Vec<u8> {
    let points = (from..from + n)
        .map(|i| point(t, 1.0, vec![kv("i", &i.to_string())]))
        .collect();
    request("shop", vec![gauge(m, "", points)]).encode_to_vec()
}

async fn post(c: &Running, path: &str, ct: &str, body: Vec<u8>) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://{}{path}", c.otlp_http))
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .expect("post")
}

async fn head_series(c: &Running) -> u64 {
    let v = crate::common::get(c.api, "/api/v1/status/keel").await;
    v["data"]["store"]["series"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cardinality_explosion_is_refused_at_the_series_limit_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(dir.path()).await;
    let pb = "application/x-protobuf";
    // 80 series fit. (target_info is one more.)
    assert_eq!(
        post(&c, "/v1/metrics", pb, series("m", 0, 80, T0))
            .await
            .status(),
        200
    );
    let before = head_series(&c).await;
    assert!(before > 80 && before < 100, "{before}");
    // 50 more: those up to the limit are stored, the rest refused by name.
    let r = post(&c, "/v1/metrics", pb, series("m", 80, 50, T0)).await;
    assert_eq!(r.status(), 200, "partly stored: OTLP's partial success");
    let resp = ExportMetricsServiceResponse::decode(r.bytes().await.expect("body")).expect("pb");
    let partial = resp.partial_success.expect("partial success");
    assert_eq!(partial.rejected_data_points as u64, 50 - (100 - before));
    assert!(
        partial
            .error_message
            .contains("collector.limits.max_series"),
        "{}",
        partial.error_message
    );
    assert_eq!(head_series(&c).await, 100);
    // Only new series: refused whole, a 4xx naming the limit.
    let r = post(&c, "/v1/metrics", pb, series("other", 0, 10, T0)).await;
    assert_eq!(r.status(), 400);
    let text = String::from_utf8_lossy(&r.bytes().await.expect("body")).to_string();
    assert!(text.contains("limit of 100 active series"), "{text}");
    assert_eq!(head_series(&c).await, 100, "the head stays at the limit");
    // The series already held take samples as before.
    assert_eq!(
        post(&c, "/v1/metrics", pb, series("m", 0, 10, T0 + 1000))
            .await
            .status(),
        200
    );
    let metrics = crate::common::own_metrics(c.api).await;
    assert!(metrics.contains("keel_head_series 100"), "{metrics}");
    let over: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("keel_ingest_samples_over_limits_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert_eq!(over, partial.rejected_data_points as u64 + 10);
    // What shows a limit coming (docs/SCALING.md): samples taken and
    // refused, and this process's CPU and memory; the text parses.
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1.0)
    };
    assert!(
        value("keel_ingest_samples_accepted_total") >= 100.0,
        "{metrics}"
    );
    assert!(
        value("keel_ingest_samples_rejected_total") >= over as f64,
        "{metrics}"
    );
    assert!(value("process_cpu_seconds_total") > 0.0, "{metrics}");
    assert!(value("process_resident_memory_bytes") > 1e6, "{metrics}");
    prometheus_parse::Scrape::parse(metrics.lines().map(|l| Ok(l.to_owned())))
        .expect("the collector's own text parses");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_long_labels_and_log_lines_are_refused_by_name_and_attributes_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(dir.path()).await;
    let long = "v".repeat(3000);
    let body = request(
        "shop",
        vec![gauge(
            "m",
            "",
            vec![point(T0, 1.0, vec![kv("path", &long)])],
        )],
    );
    let r = post(
        &c,
        "/v1/metrics",
        "application/x-protobuf",
        body.encode_to_vec(),
    )
    .await;
    assert_eq!(r.status(), 400);
    let text = String::from_utf8_lossy(&r.bytes().await.expect("body")).to_string();
    assert!(
        text.contains("collector.limits.max_label_value_bytes (2048)"),
        "{text}"
    );
    // JSON lines: the long line is refused by its number, the other kept.
    let lines = format!(
        "{{\"message\":\"fine\"}}\n{{\"message\":\"{}\"}}\n",
        "x".repeat(1001)
    );
    let r = reqwest::Client::new()
        .post(format!("http://{}/api/v1/logs", c.api))
        .body(lines)
        .send()
        .await
        .expect("logs");
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["accepted"], 1, "{v}");
    assert_eq!(
        v["errors"][0],
        "line 2: a message of 1001 bytes, over collector.limits.max_log_line_bytes (1000)"
    );
    // A span with 20 attributes keeps 8.
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    let span = Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: "GET /".into(),
        start_time_unix_nano: T0 * 1_000_000,
        end_time_unix_nano: T0 * 1_000_000 + 1_000,
        attributes: (0..20).map(|i| kv(&format!("a{i:02}"), "v")).collect(),
        ..Default::default()
    };
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(opentelemetry_proto::tonic::resource::v1::Resource {
                attributes: vec![kv("service.name", "shop")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![span],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let r = post(
        &c,
        "/v1/traces",
        "application/x-protobuf",
        req.encode_to_vec(),
    )
    .await;
    assert_eq!(r.status(), 200);
    c.spans.commit().expect("commit");
    let v: Value = reqwest::get(format!("http://{}/api/v1/traces/{}", c.api, hex(&[1; 16])))
        .await
        .expect("trace")
        .json()
        .await
        .expect("json");
    let attrs = v["data"]["spans"][0]["attributes"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    // The span's own 20 and the resource's: 8 kept.
    assert_eq!(attrs.len(), 8, "{v}");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
