//! Prometheus 3's annotations reach users: `warnings` and `infos` in the
//! query API's answers (instant and range) and on a dashboard panel's
//! data; experimental functions are refused unless the collector's
//! `query.experimental_functions` is on.

use std::sync::Arc;

use keel_collector::server::{CollectorConfig, Running, start};
use keel_core::clock::{ManualClock, SharedClock};
use keel_promql::QueryLimits;
use keel_series::labels::Labels;
use serde_json::{Value, json};

/// The data's last sample (ms).
const NOW: i64 = 1_800_000_000_000;

const NOT_A_COUNTER: &str = "PromQL info: metric might not be a counter, name does not end in _total/_sum/_count/_bucket: \"requests\" (1:6)";

/// A collector at `NOW` holding a counter named as one (`requests_total`)
/// and one that is not (`requests`), ten minutes of samples every 10 s.
async fn collector(dir: &std::path::Path, query: QueryLimits) -> Running {
    let config = CollectorConfig {
        query,
        ..crate::common::config(&dir.join("data"))
    };
    let start_at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(NOW as u64);
    let clock: SharedClock = Arc::new(ManualClock::new(start_at));
    let c = start(&config, clock).await.expect("collector starts");
    for name in ["requests", "requests_total"] {
        let samples: Vec<(i64, f64)> = (0..60)
            .map(|k| (NOW - 590_000 + k * 10_000, (k * 30) as f64))
            .collect();
        c.store
            .append(vec![(
                Labels::new(vec![("__name__", name), ("tier", "web")]),
                samples,
            )])
            .expect("append");
    }
    c
}

async fn get(c: &Running, path: &str, q: &[(&str, String)]) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(format!("http://{}{path}", c.api))
        .query(q)
        .send()
        .await
        .expect("request");
    (r.status().as_u16(), r.json().await.expect("json"))
}

fn secs(ms: i64) -> String {
    format!("{}", ms as f64 / 1000.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_carry_prometheus_infos_and_warnings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(dir.path(), QueryLimits::default()).await;
    let instant = |expr: &str| [("query", expr.to_owned()), ("time", secs(NOW))];

    let (status, v) = get(&c, "/api/v1/query", &instant("rate(requests[5m])")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["infos"], json!([NOT_A_COUNTER]), "{v}");
    assert!(v.get("warnings").is_none(), "{v}");
    assert_eq!(v["data"]["result"].as_array().map(Vec::len), Some(1), "{v}");

    // A counter's name says so: nothing to add.
    let (_, v) = get(&c, "/api/v1/query", &instant("rate(requests_total[5m])")).await;
    assert!(
        v.get("infos").is_none() && v.get("warnings").is_none(),
        "{v}"
    );

    let (_, v) = get(&c, "/api/v1/query", &instant("quantile(2, requests)")).await;
    assert_eq!(
        v["warnings"],
        json!(["PromQL warning: quantile value should be between 0 and 1, got 2"]),
        "{v}"
    );

    let range = [
        ("query", "rate(requests[1m])".to_owned()),
        ("start", secs(NOW - 300_000)),
        ("end", secs(NOW)),
        ("step", "60".to_owned()),
    ];
    let (status, v) = get(&c, "/api/v1/query_range", &range).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["infos"].as_array().map(Vec::len),
        Some(1),
        "said once: {v}"
    );

    // A dashboard panel gets them beside its series, per query.
    let panel = json!({
        "title": "Mixed", "type": "timeseries",
        "queries": [
            {"expr": "sum(rate(requests_total[1m]))"},
            {"expr": "sum(rate(requests[1m]))"},
        ],
    });
    let v: Value = reqwest::Client::new()
        .post(format!(
            "http://{}/api/v1/panels/data?start={}&end={}&step=60",
            c.api,
            (NOW - 300_000) / 1000,
            NOW / 1000
        ))
        .json(&panel)
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    let notes = &v["data"]["annotations"];
    assert_eq!(notes.as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(notes[0]["query"], 1, "{v}");
    assert_eq!(notes[0]["level"], "info", "{v}");
    assert!(
        notes[0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("\"requests\"")),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn experimental_functions_follow_the_setting() {
    let q = |expr: &str| [("query", expr.to_owned()), ("time", secs(NOW))];
    let dir = tempfile::tempdir().expect("tempdir");
    let off = collector(dir.path(), QueryLimits::default()).await;
    let (status, v) = get(
        &off,
        "/api/v1/query",
        &q("sort_by_label(requests, \"tier\")"),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["errorType"], "bad_data", "{v}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("\"sort_by_label\" is not enabled")),
        "{v}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let on = collector(
        dir.path(),
        QueryLimits {
            experimental_functions: true,
            ..QueryLimits::default()
        },
    )
    .await;
    let (status, v) = get(&on, "/api/v1/query", &q("limitk(1, requests)")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["result"].as_array().map(Vec::len), Some(1), "{v}");
    // 30 samples 30 apart: the median deviation from the median is 225.
    let (status, v) = get(&on, "/api/v1/query", &q("mad_over_time(requests[5m])")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["result"][0]["value"][1], "225", "{v}");
}
