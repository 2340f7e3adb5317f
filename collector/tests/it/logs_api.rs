//! The log store through the collector's HTTP APIs: JSON lines and OTLP
//! logs in, search and histogram out, bad input named.

use crate::common::{collector, kv, poll_json};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde_json::Value;

fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Search until `want` records match, at most 10 s.
async fn search_until(api: std::net::SocketAddr, q: &str, want: usize) -> Value {
    let query = [
        ("q", q.to_owned()),
        ("start", (now_s() - 7200.0).to_string()),
        ("end", (now_s() + 60.0).to_string()),
    ];
    poll_json(&format!("http://{api}/api/v1/logs/search"), &query, |r| {
        r["data"]["records"].as_array().map_or(0, Vec::len) >= want
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_are_searchable_and_bad_lines_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(dir.path()).await;
    let http = reqwest::Client::new();
    let t = now_s();
    let body = format!(
        "{{\"timestamp\":{t},\"level\":\"ERROR\",\"service\":\"payment-service\",\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\",\"user_id\":456789,\"message\":\"Payment declined: upstream timeout\",\"error\":{{\"code\":\"insufficient_funds\"}}}}\n\
         {{oops\n\
         {{\"timestamp\":{t},\"level\":\"info\",\"service\":\"checkout\",\"message\":\"order placed\"}}\n\
         {{\"span_id\":\"xyz\",\"message\":\"bad id\"}}\n"
    );
    let r = http
        .post(format!("http://{}/api/v1/logs", c.api))
        .body(body)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 400);
    let answer: Value = r.json().await.expect("json");
    assert_eq!(answer["accepted"], 2);
    assert_eq!(answer["rejected"], 2);
    assert!(
        answer["errors"][0]
            .as_str()
            .unwrap_or("")
            .starts_with("line 2: not JSON"),
        "{answer}"
    );
    assert!(
        answer["errors"][1]
            .as_str()
            .unwrap_or("")
            .starts_with("line 4: span_id"),
        "{answer}"
    );

    let found = search_until(
        c.api,
        "level:error AND service:payment-service AND \"timeout\" AND attributes.error.code:insufficient_funds",
        1,
    )
    .await;
    let recs = found["data"]["records"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(recs.len(), 1, "{found}");
    assert_eq!(recs[0]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(recs[0]["attributes"]["user_id"], 456789);
    let all = search_until(c.api, "*", 2).await;
    assert_eq!(all["data"]["records"].as_array().map_or(0, Vec::len), 2);

    // Counts over time.
    let h: Value = http
        .get(format!("http://{}/api/v1/logs/histogram", c.api))
        .query(&[
            ("q", "*"),
            ("start", &(t - 60.0).to_string()),
            ("end", &(t + 60.0).to_string()),
            ("step", "1m"),
        ])
        .send()
        .await
        .expect("histogram")
        .json()
        .await
        .expect("json");
    let total: u64 = h["data"]["buckets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| b[1].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(total, 2, "{h}");

    // An invalid query names the position.
    let r = http
        .get(format!("http://{}/api/v1/logs/search", c.api))
        .query(&[("q", "level:")])
        .send()
        .await
        .expect("search");
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["error"], "invalid query at position 6: expected word");

    // A body past the limit is refused, nothing else lost.
    let answer = crate::common::post_oversized(c.api, "/api/v1/logs", "application/x-ndjson").await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(
        search_until(c.api, "*", 2).await["data"]["records"]
            .as_array()
            .map_or(0, Vec::len),
        2
    );
}

fn string(s: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(s.into())),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_logs_over_http_keep_ids_and_attributes_and_reject_bad_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(dir.path()).await;
    let t_ns = (now_s() * 1e9) as u64;
    let record = |msg: &str, trace: Vec<u8>, span: Vec<u8>| LogRecord {
        time_unix_nano: t_ns,
        severity_text: "WARN".into(),
        body: string(msg),
        attributes: vec![kv("http.route", "/checkout")],
        trace_id: trace,
        span_id: span,
        ..Default::default()
    };
    let req = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "shop"), kv("host.name", "box-1")],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: vec![
                    record("cart slow", (1..=16).collect(), (1..=8).collect()),
                    record("bad trace id", vec![1, 2, 3], vec![]),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let r = reqwest::Client::new()
        .post(format!("http://{}/v1/logs", c.otlp_http))
        .header("content-type", "application/x-protobuf")
        .body(req.encode_to_vec())
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    let answer = ExportLogsServiceResponse::decode(r.bytes().await.expect("body")).expect("decode");
    let partial = answer.partial_success.expect("partial success");
    assert_eq!(partial.rejected_log_records, 1);
    assert!(
        partial.error_message.contains("log_records[1]: trace_id"),
        "{}",
        partial.error_message
    );
    let found = search_until(
        c.api,
        "service:shop AND host:box-1 AND level:warn AND \"cart slow\"",
        1,
    )
    .await;
    let rec = &found["data"]["records"][0];
    assert_eq!(rec["trace_id"], "0102030405060708090a0b0c0d0e0f10");
    assert_eq!(rec["span_id"], "0102030405060708");
    assert_eq!(rec["attributes"]["http.route"], "/checkout");
    assert_eq!(rec["timestamp_ns"], t_ns);
}

/// Count the records matching `q` (the histogram's total, so no paging).
async fn count(api: std::net::SocketAddr, q: &str) -> u64 {
    let v: Value = reqwest::Client::new()
        .get(format!("http://{api}/api/v1/logs/histogram"))
        .query(&[
            ("q", q.to_owned()),
            ("start", (now_s() - 7200.0).to_string()),
            ("end", (now_s() + 60.0).to_string()),
            ("step", "100000".to_owned()),
        ])
        .send()
        .await
        .expect("histogram")
        .json()
        .await
        .expect("json");
    v["data"]["buckets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b[1].as_u64())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_sent_again_with_its_id_is_stored_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(dir.path()).await;
    let t_ns = (now_s() * 1e9) as u64;
    let req = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "dedupe")],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: (0..3)
                    .map(|i| LogRecord {
                        time_unix_nano: t_ns + i,
                        body: string(&format!("retried line {i}")),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let send = |id: &'static str| {
        let body = req.encode_to_vec();
        let addr = c.otlp_http;
        async move {
            reqwest::Client::new()
                .post(format!("http://{addr}/v1/logs"))
                .header("content-type", "application/x-protobuf")
                .header("keel-batch-id", id)
                .body(body)
                .send()
                .await
                .expect("post")
                .status()
                .as_u16()
        }
    };
    let id = "0123456789abcdef0123456789abcdef";
    assert_eq!(send(id).await, 200);
    assert_eq!(send(id).await, 200, "a repeat is acknowledged");
    assert_eq!(send("not-hex").await, 400);
    assert_eq!(send("ff").await, 200, "another id is stored");
    search_until(c.api, "service:dedupe", 6).await;
    assert_eq!(count(c.api, "service:dedupe").await, 6);
    assert_eq!(
        c.stats
            .duplicate_batches
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}
