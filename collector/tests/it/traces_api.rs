//! The span store through the collector: OTLP spans in; a trace's tree
//! with its logs, trace search and span RED metrics out.

use crate::common::{collector, kv, poll_json};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use serde_json::Value;

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_comes_back_as_a_tree_with_its_logs_search_finds_it_and_red_metrics_appear() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(dir.path()).await;
    let t0 = now_ns() - 1_000_000_000;
    let trace: Vec<u8> = (0xa0..0xb0).collect();
    let trace_hex: String = trace.iter().map(|b| format!("{b:02x}")).collect();
    let span = |id: u8,
                parent: Option<u8>,
                name: &str,
                kind: i32,
                start_ms: u64,
                end_ms: u64,
                error: bool| Span {
        trace_id: trace.clone(),
        span_id: vec![0, 0, 0, 0, 0, 0, 0, id],
        parent_span_id: parent
            .map(|p| vec![0, 0, 0, 0, 0, 0, 0, p])
            .unwrap_or_default(),
        name: name.into(),
        kind,
        start_time_unix_nano: t0 + start_ms * 1_000_000,
        end_time_unix_nano: t0 + end_ms * 1_000_000,
        attributes: vec![kv("http.route", "/checkout")],
        status: error.then(|| Status {
            code: 2,
            message: "card declined".into(),
        }),
        ..Default::default()
    };
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "shop")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![
                    span(3, Some(2), "SELECT orders", 3, 20, 340, true),
                    span(1, None, "POST /checkout", 2, 0, 400, true),
                    span(2, Some(1), "charge card", 1, 10, 350, false),
                    Span {
                        span_id: vec![1, 2],
                        ..span(9, None, "bad", 2, 0, 1, false)
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let http = reqwest::Client::new();
    let r = http
        .post(format!("http://{}/v1/traces", c.otlp_http))
        .header("content-type", "application/x-protobuf")
        .body(req.encode_to_vec())
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    let answer =
        ExportTraceServiceResponse::decode(r.bytes().await.expect("body")).expect("decode");
    let partial = answer.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 1);
    assert!(
        partial.error_message.contains("spans[3]: span_id"),
        "{}",
        partial.error_message
    );
    // A log written under the trace.
    let line = format!(
        "{{\"level\":\"error\",\"service\":\"shop\",\"trace_id\":\"{trace_hex}\",\"span_id\":\"0000000000000003\",\"message\":\"deadlock detected\"}}\n"
    );
    let r = http
        .post(format!("http://{}/api/v1/logs", c.api))
        .body(line)
        .send()
        .await
        .expect("logs");
    assert_eq!(r.status(), 200);

    let url = format!("http://{}/api/v1/traces/{trace_hex}", c.api);
    let t = poll_json(&url, &[], |v| {
        v["data"]["spans"].as_array().map_or(0, Vec::len) == 3
            && v["data"]["logs"].as_array().map_or(0, Vec::len) == 1
    })
    .await;
    let spans = t["data"]["spans"].as_array().cloned().unwrap_or_default();
    let tree: Vec<(String, u64, String)> = spans
        .iter()
        .map(|s| {
            (
                s["operation"].as_str().unwrap_or("").to_owned(),
                s["depth"].as_u64().unwrap_or(99),
                s["parent_span_id"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        tree,
        [
            ("POST /checkout".to_owned(), 0, String::new()),
            ("charge card".to_owned(), 1, "0000000000000001".to_owned()),
            ("SELECT orders".to_owned(), 2, "0000000000000002".to_owned()),
        ]
    );
    assert_eq!(t["data"]["duration_ns"], 400_000_000);
    assert_eq!(spans[0]["attributes"]["http.route"], "/checkout");
    assert_eq!(spans[0]["status_message"], "card declined");
    assert_eq!(t["data"]["logs"][0]["message"], "deadlock detected");

    // Search: by service, minimum duration and error.
    let search = format!("http://{}/api/v1/traces/search", c.api);
    let found = poll_json(
        &search,
        &[
            ("service", "shop".into()),
            ("min_duration", "300ms".into()),
            ("error", "true".into()),
        ],
        |v| v["data"]["traces"].as_array().map_or(0, Vec::len) == 1,
    )
    .await;
    let t0j = &found["data"]["traces"][0];
    assert_eq!(t0j["trace_id"], trace_hex.as_str());
    assert_eq!(t0j["root_operation"], "POST /checkout");
    assert_eq!(t0j["spans"], 3);
    assert_eq!(t0j["errors"], 2);
    let none = poll_json(
        &search,
        &[("service", "shop".into()), ("min_duration", "1s".into())],
        |_| true,
    )
    .await;
    assert_eq!(
        none["data"]["traces"].as_array().map_or(99, Vec::len),
        0,
        "{none}"
    );

    // RED metrics from the spans, through PromQL.
    let q: Value = http
        .get(format!("http://{}/api/v1/query", c.api))
        .query(&[(
            "query",
            "sum by (status_code) (traces_span_metrics_calls_total{job=\"shop\"})",
        )])
        .send()
        .await
        .expect("query")
        .json()
        .await
        .expect("json");
    let mut got: Vec<(String, String)> = q["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["metric"]["status_code"].as_str().unwrap_or("").to_owned(),
                s["value"][1].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("STATUS_CODE_ERROR".to_owned(), "2".to_owned()),
            ("STATUS_CODE_UNSET".to_owned(), "1".to_owned())
        ]
    );

    // Bad ids are 400; unknown ones 404.
    let r = http
        .get(format!("http://{}/api/v1/traces/xyz", c.api))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 400);
    let r = http
        .get(format!("http://{}/api/v1/traces/{}", c.api, "f".repeat(32)))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 404);
}
