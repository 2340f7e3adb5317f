//! OTLP/HTTP ingest end to end: hand-built requests in, PromQL out; and
//! every kind of bad input refused with a clear 4xx, nothing stored lost.

use crate::common::*;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use prost::Message;

const T0: u64 = 1_763_856_000_000; // 2025-11-23T00:00:00Z

async fn post(addr: std::net::SocketAddr, ct: &str, body: Vec<u8>) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://{addr}/v1/metrics"))
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .expect("post")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gauges_counters_deltas_and_histograms_come_back_through_promql() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(dir.path()).await;
    let mut metrics = vec![
        gauge(
            "system.memory.usage",
            "By",
            vec![point(T0, 1024.0, vec![kv("state", "used")])],
        ),
        counter(
            "http.server.requests",
            false,
            vec![point(T0, 10.0, vec![kv("http.route", "/a")])],
        ),
        counter("jobs.done", true, vec![point(T0, 3.0, vec![])]),
        histogram(
            "http.server.request.duration",
            "s",
            T0,
            vec![0.1, 0.5],
            vec![5, 3, 2],
            4.2,
        ),
    ];
    let r = post(
        c.otlp_http,
        "application/x-protobuf",
        request("shop", metrics.clone()).encode_to_vec(),
    )
    .await;
    assert_eq!(r.status(), 200);
    let resp = ExportMetricsServiceResponse::decode(r.bytes().await.expect("body"))
        .expect("response is protobuf");
    assert!(resp.partial_success.is_none(), "{resp:?}");
    // A second export one minute later: cumulative grows, delta accumulates.
    metrics[1] = counter(
        "http.server.requests",
        false,
        vec![point(T0 + 60_000, 70.0, vec![kv("http.route", "/a")])],
    );
    metrics[2] = counter("jobs.done", true, vec![point(T0 + 60_000, 4.0, vec![])]);
    let json = serde_json::to_vec(&request("shop", metrics)).expect("json");
    let r = post(c.otlp_http, "application/json", json).await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);

    let at = T0 + 60_000;
    let v = samples(&query(c.api, "system_memory_usage_bytes", at).await);
    assert_eq!(v.len(), 1);
    // Exactly Prometheus 3's labels: job/instance from the resource, the
    // point's own; host.name is on target_info only.
    let mut names: Vec<&String> = v[0].0.as_object().expect("labels").keys().collect();
    names.sort();
    assert_eq!(names, ["__name__", "instance", "job", "state"], "{v:?}");
    assert_eq!(v[0].0["job"], "shop");
    assert_eq!(v[0].0["instance"], "i-1");
    assert_eq!(v[0].0["state"], "used");
    assert_eq!(v[0].1, 1024.0);
    let info = samples(&query(c.api, "target_info", at).await);
    assert_eq!(info.len(), 1, "{info:?}");
    assert_eq!(
        (
            &info[0].0["job"],
            &info[0].0["instance"],
            &info[0].0["host_name"]
        ),
        (&"shop".into(), &"i-1".into(), &"box".into())
    );
    let v = samples(&query(c.api, "increase(http_server_requests_total[2m])", at + 1).await);
    assert_eq!(v[0].0["http_route"], "/a");
    assert!(v[0].1 > 60.0, "{v:?}");
    assert_eq!(
        samples(&query(c.api, "jobs_done_total", at).await)[0].1,
        7.0,
        "delta 3 then 4 accumulates to 7"
    );
    let buckets = samples(&query(c.api, "http_server_request_duration_seconds_bucket", at).await);
    let mut by_le: Vec<(String, f64)> = buckets
        .iter()
        .map(|(l, v)| (l["le"].as_str().unwrap_or("").to_owned(), *v))
        .collect();
    by_le.sort_by(|a, b| a.1.total_cmp(&b.1));
    assert_eq!(
        by_le,
        vec![
            ("0.1".into(), 5.0),
            ("0.5".into(), 8.0),
            ("+Inf".into(), 10.0)
        ]
    );
    assert_eq!(
        samples(&query(c.api, "http_server_request_duration_seconds_count", at).await)[0].1,
        10.0
    );
    assert_eq!(
        samples(&query(c.api, "http_server_request_duration_seconds_sum", at).await)[0].1,
        4.2
    );
    let q = samples(
        &query(
            c.api,
            "histogram_quantile(0.5, http_server_request_duration_seconds_bucket)",
            at,
        )
        .await,
    );
    assert!((q[0].1 - 0.1).abs() < 1e-9, "{q:?}");
    let info = samples(&query(c.api, "target_info", at).await);
    assert_eq!(info[0].0["host_name"], "box");

    // The metadata APIs.
    let http = reqwest::Client::new();
    let labels: serde_json::Value = http
        .get(format!("http://{}/api/v1/labels", c.api))
        .send()
        .await
        .expect("labels")
        .json()
        .await
        .expect("json");
    assert!(
        labels["data"]
            .as_array()
            .expect("list")
            .iter()
            .any(|l| l == "http_route"),
        "{labels}"
    );
    let values: serde_json::Value = http
        .get(format!("http://{}/api/v1/label/job/values", c.api))
        .send()
        .await
        .expect("values")
        .json()
        .await
        .expect("json");
    assert_eq!(values["data"], serde_json::json!(["shop"]));
    let series: serde_json::Value = http
        .get(format!("http://{}/api/v1/series", c.api))
        .query(&[("match[]", "{__name__=~\"jobs.*\"}")])
        .send()
        .await
        .expect("series")
        .json()
        .await
        .expect("json");
    assert_eq!(series["data"].as_array().map(Vec::len), Some(1), "{series}");
    let range: serde_json::Value = http
        .get(format!("http://{}/api/v1/query_range", c.api))
        .query(&[
            ("query", "jobs_done_total".to_owned()),
            ("start", format!("{}", T0 / 1000)),
            ("end", format!("{}", (T0 + 60_000) / 1000)),
            ("step", "30s".to_owned()),
        ])
        .send()
        .await
        .expect("range")
        .json()
        .await
        .expect("json");
    let values: Vec<&str> = range["data"]["result"][0]["values"]
        .as_array()
        .expect("values")
        .iter()
        .filter_map(|p| p[1].as_str())
        .collect();
    assert_eq!(values, ["3", "3", "7"], "{range}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_success_counts_rejected_points_and_keeps_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(dir.path()).await;
    let req = request(
        "shop",
        vec![gauge(
            "g",
            "",
            vec![
                point(T0, 1.0, vec![]),
                point(0, 2.0, vec![kv("k", "no-time")]),
            ],
        )],
    );
    let r = post(c.otlp_http, "application/x-protobuf", req.encode_to_vec()).await;
    assert_eq!(r.status(), 200);
    let resp =
        ExportMetricsServiceResponse::decode(r.bytes().await.expect("body")).expect("protobuf");
    let partial = resp.partial_success.expect("partial success");
    assert_eq!(partial.rejected_data_points, 1);
    assert!(
        partial.error_message.contains("without a timestamp"),
        "{}",
        partial.error_message
    );
    // Too old for the out-of-order window, and a conflicting duplicate.
    let req = request(
        "shop",
        vec![gauge(
            "g",
            "",
            vec![point(T0 - 3_600_000, 1.0, vec![]), point(T0, 5.0, vec![])],
        )],
    );
    let r = post(c.otlp_http, "application/x-protobuf", req.encode_to_vec()).await;
    let resp =
        ExportMetricsServiceResponse::decode(r.bytes().await.expect("body")).expect("protobuf");
    let partial = resp.partial_success.expect("partial success");
    assert_eq!(partial.rejected_data_points, 2, "{partial:?}");
    assert_eq!(
        samples(&query(c.api, "g", T0).await)[0].1,
        1.0,
        "the first value stays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_4xx_with_a_message_and_loses_nothing_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(dir.path()).await;
    let good = request(
        "shop",
        vec![gauge("kept", "", vec![point(T0, 42.0, vec![])])],
    )
    .encode_to_vec();
    assert_eq!(
        post(c.otlp_http, "application/x-protobuf", good.clone())
            .await
            .status(),
        200
    );

    let mut truncated = good.clone();
    truncated.truncate(good.len() / 2);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &vec![0u8; 80 << 20]).expect("gzip");
    let bomb = gz.finish().expect("gzip");
    let mut bad_utf8 = request(
        "shop",
        vec![gauge(
            "g",
            "",
            vec![point(T0, 1.0, vec![kv("k", "Xvalue")])],
        )],
    )
    .encode_to_vec();
    let at = bad_utf8
        .windows(6)
        .position(|w| w == b"Xvalue")
        .expect("marker");
    bad_utf8[at] = 0xff;
    // (content type, content encoding, body, expected status, expected message)
    type Case<'a> = (&'a str, Option<&'a str>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("application/x-protobuf", None, truncated, 400, "malformed protobuf"),
        ("application/x-protobuf", None, b"\xff\xff\xff garbage".to_vec(), 400, "malformed protobuf"),
        ("application/x-protobuf", None, bad_utf8, 400, "malformed protobuf"),
        ("application/json", None, b"{\"resourceMetrics\": [".to_vec(), 400, "line 1 column"),
        ("application/json", None, b"{\"resourceMetrics\": [{\"scopeMetrics\": [{\"metrics\": [{\"name\": \"x\", \"gauge\": {\"dataPoints\": [{\"timeUnixNano\": \"NaN\", \"asDouble\": 1}]}}]}]}]}".to_vec(), 400, "resourceMetrics[0].scopeMetrics[0].metrics[0].gauge.dataPoints[0].timeUnixNano"),
        ("text/plain", None, good.clone(), 415, "unsupported content type"),
        ("application/x-protobuf", Some("br"), good.clone(), 400, "unsupported content encoding"),
        ("application/x-protobuf", Some("gzip"), b"not gzip".to_vec(), 400, "gzip"),
        ("application/x-protobuf", Some("gzip"), bomb, 400, "decompresses to more than"),
    ];
    let http = reqwest::Client::new();
    for (i, (ct, ce, body, want, msg)) in cases.into_iter().enumerate() {
        let mut req = http
            .post(format!("http://{}/v1/metrics", c.otlp_http))
            .header("content-type", ct)
            .body(body);
        if let Some(ce) = ce {
            req = req.header("content-encoding", ce);
        }
        let r = req.send().await.expect("send");
        assert_eq!(r.status().as_u16(), want, "case {i}");
        let text = r.text().await.unwrap_or_default();
        assert!(text.contains(msg), "case {i}: {text:?}");
    }
    // A 100 MB body: refused from its Content-Length with 413 before it is
    // read (a raw client, so the answer is read however far the upload got).
    let answer =
        crate::common::post_oversized(c.otlp_http, "/v1/metrics", "application/x-protobuf").await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // Malformed traces are refused with the place named.
    let r = http
        .post(format!("http://{}/v1/traces", c.otlp_http))
        .header("content-type", "application/json")
        .body("{\"resourceSpans\": [")
        .send()
        .await
        .expect("traces");
    assert_eq!(r.status(), 400);
    let text = r.text().await.expect("text");
    assert!(
        text.contains("ExportTraceServiceRequest at line 1"),
        "{text}"
    );
    // Nothing already stored was lost.
    assert_eq!(samples(&query(c.api, "kept", T0).await)[0].1, 42.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_errors_name_what_is_wrong() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(dir.path()).await;
    let req = request(
        "shop",
        vec![gauge(
            "m",
            "",
            vec![
                point(T0, 1.0, vec![kv("a", "1")]),
                point(T0, 2.0, vec![kv("a", "2")]),
            ],
        )],
    );
    post(c.otlp_http, "application/x-protobuf", req.encode_to_vec()).await;
    let a = query(c.api, "sum(rate(m[5m]", T0).await;
    assert_eq!(a["errorType"], "bad_data", "{a}");
    assert!(
        a["error"].as_str().unwrap_or("").contains("parse error"),
        "{a}"
    );
    let a = query(c.api, "holt_winters(m[5m], 0.5, 0.5)", T0).await;
    assert_eq!(a["status"], "error", "{a}");
    // Prometheus 2.42 on the same kind of input: "found duplicate series for
    // the match group {} on the right hand-side of the operation: […];
    // many-to-many matching not allowed: matching labels must be unique on one side"
    let a = query(c.api, "m + on() m", T0).await;
    assert_eq!(a["errorType"], "execution", "{a}");
    assert!(
        a["error"]
            .as_str()
            .unwrap_or("")
            .contains("many-to-many matching not allowed"),
        "{a}"
    );
    let a = query(c.api, "label_replace(m, \"a\", \"x\", \"a\", \".*\")", T0).await;
    assert!(
        a["error"].as_str().unwrap_or("").contains("same labelset"),
        "{a}"
    );
    let r = reqwest::get(format!(
        "http://{}/api/v1/query_range?query=m&start=10&end=5&step=1",
        c.api
    ))
    .await
    .expect("range");
    assert_eq!(r.status(), 400);
    let r = reqwest::get(format!(
        "http://{}/api/v1/query?query=m&time=yesterday",
        c.api
    ))
    .await
    .expect("q");
    assert_eq!(r.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_remote_write_is_stored_and_bad_series_named() {
    use keel_collector::ingest::remote_write::{Label, Sample, TimeSeries, WriteRequest};
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(dir.path()).await;
    let label = |n: &str, v: &str| Label {
        name: n.into(),
        value: v.into(),
    };
    let req = WriteRequest {
        timeseries: vec![
            TimeSeries {
                labels: vec![label("__name__", "node_load1"), label("instance", "h1")],
                samples: vec![
                    Sample {
                        value: 0.5,
                        timestamp: T0 as i64,
                    },
                    Sample {
                        value: 0.7,
                        timestamp: T0 as i64 + 15_000,
                    },
                ],
            },
            TimeSeries {
                labels: vec![label("instance", "no-name")],
                samples: vec![Sample {
                    value: 1.0,
                    timestamp: T0 as i64,
                }],
            },
            TimeSeries {
                labels: vec![label("__name__", "x"), label("bad-name", "v")],
                samples: vec![],
            },
        ],
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .expect("snappy");
    let http = reqwest::Client::new();
    let send = |b: Vec<u8>| {
        http.post(format!("http://{}/api/v1/write", c.api))
            .header("content-type", "application/x-protobuf")
            .header("content-encoding", "snappy")
            .body(b)
            .send()
    };
    let r = send(body).await.expect("write");
    assert_eq!(r.status(), 400);
    let text = r.text().await.expect("text");
    assert!(
        text.contains("timeseries[1]: no metric name")
            && text.contains("timeseries[2]: invalid label name"),
        "{text}"
    );
    assert_eq!(
        samples(&query(c.api, "node_load1", T0 + 15_000).await)[0].1,
        0.7,
        "valid series stored"
    );
    let ok = WriteRequest {
        timeseries: vec![TimeSeries {
            labels: vec![label("__name__", "node_load1"), label("instance", "h2")],
            samples: vec![Sample {
                value: 2.0,
                timestamp: T0 as i64,
            }],
        }],
    };
    let r = send(
        snap::raw::Encoder::new()
            .compress_vec(&ok.encode_to_vec())
            .expect("snappy"),
    )
    .await
    .expect("write");
    assert_eq!(r.status(), 204);
    let r = send(b"definitely not snappy".to_vec())
        .await
        .expect("write");
    assert_eq!(r.status(), 400);
}

/// OTLP's metric kind, description and unit become each family's
/// metadata, under its Prometheus name; a bare gauge states nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_kinds_descriptions_and_units_are_served_as_metadata() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(dir.path()).await;
    let mut requests = counter("http.server.requests", false, vec![point(T0, 1.0, vec![])]);
    requests.description = "Requests served.".into();
    let mut duration = histogram(
        "http.server.request.duration",
        "s",
        T0,
        vec![0.1],
        vec![1, 0],
        0.05,
    );
    duration.description = "How long requests took.".into();
    let bare = gauge("queue.depth", "", vec![point(T0, 3.0, vec![])]);
    let resp = post(
        c.otlp_http,
        "application/x-protobuf",
        request("shop", vec![requests, duration, bare]).encode_to_vec(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let m = get(c.api, "/api/v1/metadata").await;
    assert_eq!(
        m["data"]["http_server_requests_total"],
        serde_json::json!([{"type": "counter", "help": "Requests served.", "unit": ""}]),
        "{m}"
    );
    assert_eq!(
        m["data"]["http_server_request_duration_seconds"],
        serde_json::json!([{"type": "histogram", "help": "How long requests took.", "unit": "seconds"}]),
        "{m}"
    );
    assert!(m["data"].get("queue_depth").is_none(), "{m}");
    let one = get(
        c.api,
        "/api/v1/metadata?metric=http_server_requests_total&limit=5",
    )
    .await;
    assert_eq!(one["data"].as_object().map(|o| o.len()), Some(1), "{one}");
}

/// GET `url` with `query`, the answer as JSON.
async fn get_query(
    client: &reqwest::Client,
    url: &str,
    query: &[(&str, String)],
) -> serde_json::Value {
    client
        .get(url)
        .query(query)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json")
}

/// An OTLP histogram's exemplar is kept on the bucket that holds it and
/// served by `query_exemplars` (GET and Grafana's form POST) in
/// Prometheus' shape, for any selector of the query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_exemplars_are_served_by_query_exemplars() {
    use opentelemetry_proto::tonic::metrics::v1::{Exemplar, exemplar};
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(dir.path()).await;
    let mut duration = histogram(
        "http.server.request.duration",
        "s",
        T0,
        vec![0.1, 1.0],
        vec![0, 1, 0],
        0.5,
    );
    if let Some(opentelemetry_proto::tonic::metrics::v1::metric::Data::Histogram(h)) =
        &mut duration.data
    {
        h.data_points[0].exemplars = vec![Exemplar {
            value: Some(exemplar::Value::AsDouble(0.5)),
            time_unix_nano: (T0 - 500) * 1_000_000,
            trace_id: (1..=16).collect(),
            span_id: (1..=8).collect(),
            ..Default::default()
        }];
    }
    let resp = post(
        c.otlp_http,
        "application/x-protobuf",
        request("shop", vec![duration]).encode_to_vec(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let q = "histogram_quantile(0.9, sum by (le) (rate(http_server_request_duration_seconds_bucket[5m])))";
    let want = serde_json::json!({"status": "success", "data": [{
        "seriesLabels": {
            "__name__": "http_server_request_duration_seconds_bucket",
            "instance": "i-1", "job": "shop", "le": "1",
        },
        "exemplars": [{
            "labels": {
                "trace_id": "0102030405060708090a0b0c0d0e0f10",
                "span_id": "0102030405060708",
            },
            "value": "0.5",
            "timestamp": (T0 - 500) as f64 / 1000.0,
        }],
    }]});
    let span = [
        ("query", q.to_owned()),
        ("start", format!("{}", (T0 - 60_000) as f64 / 1000.0)),
        ("end", format!("{}", T0 as f64 / 1000.0)),
    ];
    let client = reqwest::Client::new();
    let url = format!("http://{}/api/v1/query_exemplars", c.api);
    assert_eq!(get_query(&client, &url, &span).await, want);
    let posted: serde_json::Value = client
        .post(&url)
        .form(&span)
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    assert_eq!(posted, want);
    // Outside the range, or another metric: nothing.
    let before = [
        ("query", q.to_owned()),
        ("end", format!("{}", (T0 - 1000) as f64 / 1000.0)),
    ];
    let none = get_query(&client, &url, &before).await;
    assert_eq!(none["data"], serde_json::json!([]), "{none}");
    let bad = client
        .get(&url)
        .query(&[("query", "sum(")])
        .send()
        .await
        .expect("get");
    assert_eq!(bad.status(), 400);
    let bad: serde_json::Value = bad.json().await.expect("json");
    assert_eq!(bad["errorType"], "bad_data", "{bad}");
    let m = reqwest::get(format!("http://{}/metrics", c.api))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        m.contains("prometheus_tsdb_exemplar_exemplars_in_storage 1"),
        "{m}"
    );
    // A series whose samples the limits refuse (a label value over
    // 2,048 bytes) cannot be stored through its exemplars.
    let mut refused = gauge(
        "queue.depth",
        "",
        vec![point(T0, 3.0, vec![kv("long", &"x".repeat(3000))])],
    );
    if let Some(opentelemetry_proto::tonic::metrics::v1::metric::Data::Gauge(g)) = &mut refused.data
    {
        g.data_points[0].exemplars = vec![Exemplar {
            value: Some(exemplar::Value::AsDouble(3.0)),
            trace_id: vec![7; 16],
            ..Default::default()
        }];
    }
    post(
        c.otlp_http,
        "application/x-protobuf",
        request("shop", vec![refused]).encode_to_vec(),
    )
    .await;
    let none = get_query(&client, &url, &[("query", "queue_depth".to_owned())]).await;
    assert_eq!(none["data"], serde_json::json!([]), "{none}");
    let m = reqwest::get(format!("http://{}/metrics", c.api))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        m.contains("keel_exemplars_refused_total{reason=\"no_series\"} 1"),
        "{m}"
    );
}

/// Prometheus 3's OTLP path on the API port takes metrics as `/v1/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_metrics_at_prometheus_path_on_the_api_port() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(dir.path()).await;
    let body = request(
        "shop",
        vec![gauge("queue.depth", "", vec![point(T0, 3.0, vec![])])],
    )
    .encode_to_vec();
    let resp = post(c.api, "application/x-protobuf", body.clone()).await;
    assert_eq!(resp.status(), 404, "not at /v1/metrics on the API port");
    let resp = reqwest::Client::new()
        .post(format!("http://{}/api/v1/otlp/v1/metrics", c.api))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 200);
    let v = query(c.api, "queue_depth", T0).await;
    assert_eq!(samples(&v).len(), 1, "{v}");
}

/// Remote write 2.0's `Request`, as a sender encodes it.
mod rw2 {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Request {
        #[prost(string, repeated, tag = "4")]
        pub symbols: Vec<String>,
        #[prost(message, repeated, tag = "5")]
        pub timeseries: Vec<TimeSeries>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        #[prost(uint32, repeated, tag = "1")]
        pub labels_refs: Vec<u32>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
        #[prost(message, repeated, tag = "4")]
        pub exemplars: Vec<Exemplar>,
        #[prost(message, optional, tag = "5")]
        pub metadata: Option<Metadata>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Exemplar {
        #[prost(uint32, repeated, tag = "1")]
        pub labels_refs: Vec<u32>,
        #[prost(double, tag = "2")]
        pub value: f64,
        #[prost(int64, tag = "3")]
        pub timestamp: i64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(double, tag = "1")]
        pub value: f64,
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metadata {
        #[prost(int32, tag = "1")]
        pub r#type: i32,
        #[prost(uint32, tag = "3")]
        pub help_ref: u32,
        #[prost(uint32, tag = "4")]
        pub unit_ref: u32,
    }
}

/// Remote write 2.0 by its content type: stored, counted in the answer's
/// headers, its metadata kept; an unknown `proto` is a 415.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_write_2_is_stored_and_says_what_it_wrote() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(dir.path()).await;
    let req = rw2::Request {
        symbols: [
            "",
            "__name__",
            "rw2_requests_total",
            "job",
            "api",
            "Requests.",
            "code",
            "200",
            "trace_id",
            "abc",
        ]
        .map(String::from)
        .to_vec(),
        timeseries: vec![rw2::TimeSeries {
            labels_refs: vec![1, 2, 6, 7, 3, 4],
            samples: vec![
                rw2::Sample {
                    value: 1.0,
                    timestamp: T0 as i64,
                },
                rw2::Sample {
                    value: 3.0,
                    timestamp: T0 as i64 + 15_000,
                },
            ],
            metadata: Some(rw2::Metadata {
                r#type: 1,
                help_ref: 5,
                unit_ref: 0,
            }),
            exemplars: vec![rw2::Exemplar {
                labels_refs: vec![8, 9],
                value: 2.0,
                timestamp: T0 as i64 + 10_000,
            }],
        }],
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .expect("snappy");
    let send = |ct: &'static str| {
        reqwest::Client::new()
            .post(format!("http://{}/api/v1/write", c.api))
            .header("content-type", ct)
            .body(body.clone())
            .send()
    };
    let r = send("application/x-protobuf;proto=io.prometheus.write.v2.Request")
        .await
        .expect("post");
    assert_eq!(r.status(), 204);
    assert_eq!(
        r.headers()["x-prometheus-remote-write-samples-written"],
        "2"
    );
    assert_eq!(
        r.headers()["x-prometheus-remote-write-exemplars-written"],
        "1"
    );
    let e = get(c.api, "/api/v1/query_exemplars?query=rw2_requests_total").await;
    assert_eq!(
        e["data"][0]["exemplars"],
        serde_json::json!([{"labels": {"trace_id": "abc"}, "value": "2", "timestamp": (T0 + 10_000) as f64 / 1000.0}]),
        "{e}"
    );
    let v = query(c.api, "rw2_requests_total", T0 + 15_000).await;
    let s = samples(&v);
    assert_eq!(s.len(), 1, "{v}");
    assert_eq!(
        (&s[0].0["job"], &s[0].0["code"], s[0].1),
        (&"api".into(), &"200".into(), 3.0)
    );
    let m = get(c.api, "/api/v1/metadata?metric=rw2_requests_total").await;
    assert_eq!(m["data"]["rw2_requests_total"][0]["type"], "counter", "{m}");
    assert_eq!(
        m["data"]["rw2_requests_total"][0]["help"], "Requests.",
        "{m}"
    );
    let r = send("application/x-protobuf;proto=io.prometheus.write.v9.Request")
        .await
        .expect("post");
    assert_eq!(r.status(), 415);
}

/// `/api/v1/status/config` shows the collector's config as YAML with its
/// secrets redacted: an SMTP password and a webhook URL's credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_config_redacts_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = crate::common::config(dir.path());
    config.notify.email.password = keel_core::secret::Secret::new("hunter2-smtp");
    config.notify.email.to = vec!["oncall@example.com".into()];
    config.notify.webhooks = vec!["https://bot:s3cr3t-token@hooks.example.com/p".into()];
    let clock: keel_core::clock::SharedClock = std::sync::Arc::new(keel_core::clock::SystemClock);
    let c = keel_collector::server::start(&config, clock)
        .await
        .expect("collector starts");
    let got = get(c.api, "/api/v1/status/config").await;
    let yaml = got["data"]["yaml"].as_str().unwrap_or_default();
    assert!(yaml.contains("oncall@example.com"), "{yaml}");
    assert!(yaml.contains("hooks.example.com"), "{yaml}");
    for secret in ["hunter2-smtp", "s3cr3t-token"] {
        assert!(!yaml.contains(secret), "{secret} shown in:\n{yaml}");
    }
}
