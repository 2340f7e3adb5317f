//! Sender tokens (`collector.auth.senders`): OTLP over HTTP and gRPC,
//! remote write and the log push API refuse a missing or wrong token and
//! take the right one; reading stays open.

use std::sync::Arc;

use crate::common::{config, gauge, point, query, request, samples};
use keel_auth::{AuthConfig, SenderToken};
use keel_collector::ingest::remote_write::{Label, Sample, TimeSeries, WriteRequest};
use keel_collector::server::{Running, start};
use keel_core::clock::{SharedClock, SystemClock};
use keel_core::secret::Secret;
use opentelemetry::metrics::MeterProvider;
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use prost::Message;

const TOKEN: &str = "edge-fleet-token-7f3a9c1e";

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn guarded(dir: &std::path::Path) -> Running {
    let mut c = config(dir);
    c.auth = AuthConfig {
        senders: vec![SenderToken {
            name: "edge".into(),
            token: Secret::new(TOKEN),
            ..Default::default()
        }],
        ..Default::default()
    };
    let clock: SharedClock = Arc::new(SystemClock);
    start(&c, clock).await.expect("collector starts")
}

/// The three ways a sender can present itself, and whether each is taken.
fn attempts() -> [(Option<String>, bool); 3] {
    [
        (None, false),
        (Some("Bearer wrong-token-of-16-chars".into()), false),
        (Some(format!("Bearer {TOKEN}")), true),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_http_remote_write_and_log_push_need_the_token_and_reads_do_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = guarded(dir.path()).await;
    let http = reqwest::Client::new();
    let t = now_ms();
    for (i, (auth, taken)) in attempts().into_iter().enumerate() {
        // OTLP/HTTP: a gauge whose value says which attempt sent it.
        let body = request(
            "edge-shop",
            vec![gauge("otlp_attempt", "", vec![point(t, i as f64, vec![])])],
        )
        .encode_to_vec();
        let mut r = http
            .post(format!("http://{}/v1/metrics", c.otlp_http))
            .header("content-type", "application/x-protobuf")
            .body(body);
        if let Some(a) = &auth {
            r = r.header("authorization", a);
        }
        let r = r.send().await.expect("otlp");
        assert_eq!(
            r.status() == 200,
            taken,
            "OTLP/HTTP {auth:?}: {}",
            r.status()
        );
        if !taken {
            assert_eq!(r.status(), 401);
            assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"keel\"");
        }

        // Remote write.
        let rw = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![
                    Label {
                        name: "__name__".into(),
                        value: "rw_attempt".into(),
                    },
                    Label {
                        name: "i".into(),
                        value: i.to_string(),
                    },
                ],
                samples: vec![Sample {
                    value: 1.0,
                    timestamp: t as i64,
                }],
            }],
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&rw.encode_to_vec())
            .expect("snappy");
        let mut r = http
            .post(format!("http://{}/api/v1/write", c.api))
            .header("content-type", "application/x-protobuf")
            .header("content-encoding", "snappy")
            .body(body);
        if let Some(a) = &auth {
            r = r.header("authorization", a);
        }
        let status = r.send().await.expect("write").status();
        assert_eq!(
            status.is_success(),
            taken,
            "remote write {auth:?}: {status}"
        );

        // The log push API.
        let line = format!(
            "{{\"timestamp\":{t},\"level\":\"info\",\"service\":\"edge\",\"message\":\"attempt {i}\"}}\n"
        );
        let mut r = http
            .post(format!("http://{}/api/v1/logs", c.api))
            .body(line);
        if let Some(a) = &auth {
            r = r.header("authorization", a);
        }
        let status = r.send().await.expect("logs").status();
        assert_eq!(status.is_success(), taken, "log push {auth:?}: {status}");
    }
    // Only the third attempt of each was stored; reading needs no token.
    let at = t + 1000;
    let otlp = samples(&query(c.api, "otlp_attempt", at).await);
    assert_eq!(
        otlp.iter().map(|s| s.1).collect::<Vec<_>>(),
        [2.0],
        "{otlp:?}"
    );
    let rw = samples(&query(c.api, "rw_attempt", at).await);
    assert_eq!(rw.len(), 1, "{rw:?}");
    assert_eq!(rw[0].0["i"], "2");
    let found = logs_around(c.api, t, 1).await;
    let lines: Vec<&str> = found["data"]["records"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["message"].as_str())
        .collect();
    assert_eq!(lines, ["attempt 2"], "{found}");
}

/// The Rust OpenTelemetry SDK over gRPC: refused (UNAUTHENTICATED)
/// without the token in its metadata, taken with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_grpc_needs_the_token_in_metadata() {
    let _turn = crate::common::turn().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let c = guarded(dir.path()).await;
    let export = |token: Option<&'static str>, attempt: &'static str| {
        let endpoint = format!("http://{}", c.otlp_grpc);
        async move {
            let mut metadata = tonic::metadata::MetadataMap::new();
            if let Some(t) = token {
                metadata.insert(
                    "authorization",
                    format!("Bearer {t}").parse().expect("metadata value"),
                );
            }
            let exporter = opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_metadata(metadata)
                .build()
                .expect("exporter");
            let provider = crate::common::meter_provider(exporter, "grpc-edge");
            provider
                .meter("keel-test")
                .u64_counter("grpc.attempts")
                .build()
                .add(1, &[opentelemetry::KeyValue::new("attempt", attempt)]);
            tokio::task::spawn_blocking(move || {
                let r = provider.force_flush();
                let _ = provider.shutdown();
                r
            })
            .await
            .expect("flush thread")
        }
    };
    // The SDK reports only that its export failed; the collector's
    // refusals say why, and nothing of those attempts is stored.
    assert!(export(None, "none").await.is_err(), "no token: refused");
    assert!(
        export(Some("wrong-token-of-16-chars"), "wrong")
            .await
            .is_err(),
        "a wrong token: refused"
    );
    export(Some(TOKEN), "right")
        .await
        .expect("the right token: taken");
    let got = samples(&query(c.api, "grpc_attempts_total", now_ms() + 1000).await);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0["attempt"], "right", "{got:?}");
    let metrics = crate::common::own_metrics(c.api).await;
    for reason in ["missing", "wrong"] {
        let line = format!("keel_ingest_unauthorized_total{{reason=\"{reason}\"}} ");
        let n: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert!(n >= 1, "{reason}: {metrics}");
    }
}

/// The real OpenTelemetry Python SDK sends with its token header
/// (`OTEL_EXPORTER_OTLP_HEADERS`, as users configure it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_sends_with_a_token_header() {
    if std::env::var_os("KEEL_TEST_PYTHON_OTEL").is_none() {
        eprintln!("skipped: set KEEL_TEST_PYTHON_OTEL=1 (.ci/run does)");
        return;
    }
    let _turn = crate::common::turn().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let c = guarded(dir.path()).await;
    let header = format!("authorization=Bearer%20{TOKEN}");
    for transport in ["http", "grpc"] {
        crate::otel_sdks::run_python_with(
            "otel_python.py",
            transport,
            &c,
            &[("OTEL_EXPORTER_OTLP_HEADERS", header.as_str())],
        )
        .await;
    }
    let orders = samples(
        &query(
            c.api,
            "sum(orders_placed_total{job=\"py-shop\"})",
            now_ms() + 1000,
        )
        .await,
    );
    // Two runs (HTTP, gRPC) of 5 + 2 orders each, one series per region:
    // the second run's cumulative points overwrite the first's.
    assert_eq!(orders.len(), 1, "{orders:?}");
    assert_eq!(orders[0].1, 7.0, "{orders:?}");
}

/// The log search over the minute either side of `t_ms`, once it finds
/// at least `n` records (or gives up waiting).
async fn logs_around(api: std::net::SocketAddr, t_ms: u64, n: usize) -> serde_json::Value {
    let s = t_ms as f64 / 1000.0;
    crate::common::poll_json(
        &format!("http://{api}/api/v1/logs/search"),
        &[
            ("q", "*".to_owned()),
            ("start", (s - 60.0).to_string()),
            ("end", (s + 60.0).to_string()),
        ],
        |r| {
            r["data"]["records"]
                .as_array()
                .is_some_and(|a| a.len() >= n)
        },
    )
    .await
}

/// A remote-write body: one sample at `t_ms` for each `series` name.
fn remote_write(series: &[&str], t_ms: u64) -> Vec<u8> {
    let rw = WriteRequest {
        timeseries: series
            .iter()
            .map(|s| TimeSeries {
                labels: vec![Label {
                    name: "__name__".into(),
                    value: (*s).into(),
                }],
                samples: vec![Sample {
                    value: 1.0,
                    timestamp: t_ms as i64,
                }],
            })
            .collect(),
    };
    snap::raw::Encoder::new()
        .compress_vec(&rw.encode_to_vec())
        .expect("snappy")
}

/// A sender's limits (`collector.auth.senders[].limits`) are its own: the
/// edge fleet's series cap and ingestion rate refuse its data, named and
/// retryable, on every ingest path, while another sender's goes on; time
/// (the manual clock) gives the rate back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sender_has_its_own_series_cap_and_ingestion_rate() {
    const CORE: &str = "core-services-token-55e1d0";
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    cfg.auth = AuthConfig {
        senders: vec![
            SenderToken {
                name: "edge".into(),
                token: Secret::new(TOKEN),
                limits: keel_core::quota::QuotaLimits {
                    max_series: 2,
                    ingestion_rate: 10.0,
                    ingestion_burst: 10.0,
                },
                ..Default::default()
            },
            SenderToken {
                name: "core".into(),
                token: Secret::new(CORE),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let t0 = std::time::SystemTime::now();
    let clock = Arc::new(keel_core::clock::ManualClock::new(t0));
    let c = start(&cfg, clock.clone()).await.expect("collector starts");
    let t = keel_core::clock::unix_ms(t0) as u64;
    let http = reqwest::Client::new();
    let write = |token: &'static str, series: &'static [&'static str]| {
        http.post(format!("http://{}/api/v1/write", c.api))
            .header("content-type", "application/x-protobuf")
            .header("content-encoding", "snappy")
            .bearer_auth(token)
            .body(remote_write(series, t))
            .send()
    };

    // Edge's first series over OTLP/HTTP (1 of its 10 a second).
    let body = request(
        "edge",
        vec![gauge("edge_a", "", vec![point(t, 2.0, vec![])])],
    );
    let otlp = |token: &'static str| {
        http.post(format!("http://{}/v1/metrics", c.otlp_http))
            .header("content-type", "application/x-protobuf")
            .bearer_auth(token)
            .body(body.encode_to_vec())
            .send()
    };
    let r = otlp(TOKEN).await.expect("otlp");
    assert_eq!(r.status(), 200);
    // Its third series is past its cap of 2: refused and named, the
    // second stored (2 more taken: 7 left).
    let r = write(TOKEN, &["edge_b", "edge_c"]).await.expect("rw");
    assert_eq!(r.status(), 400);
    let text = r.text().await.expect("text");
    assert!(
        text.contains("1 samples of new series refused: sender \"edge\" holds its limit of 2 active series (collector.auth.senders[].limits.max_series)"),
        "{text}"
    );
    // Core has no limits of its own.
    let r = write(CORE, &["core_a", "core_b", "core_c"])
        .await
        .expect("rw");
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap_or_default());
    let held = |q: serde_json::Value| samples(&q).len();
    assert_eq!(held(query(c.api, "{__name__=~\"edge_.\"}", t).await), 2);
    assert_eq!(held(query(c.api, "{__name__=~\"core_.\"}", t).await), 3);

    // Seven log records spend the rest of its second.
    // Seven records, each saying which push it came in.
    let lines = |push: &str| -> String {
        (0..7)
            .map(|i| {
                format!("{{\"timestamp\":{t},\"level\":\"info\",\"message\":\"{push} {i}\"}}\n")
            })
            .collect()
    };
    let push = |token: &'static str, body: String| {
        http.post(format!("http://{}/api/v1/logs", c.api))
            .bearer_auth(token)
            .body(body)
            .send()
    };
    let r = push(TOKEN, lines("first")).await.expect("push");
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());

    // Its rate is spent: every path refuses it, retryable, storing nothing.
    let r = otlp(TOKEN).await.expect("otlp");
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let r = push(TOKEN, lines("refused")).await.expect("push");
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let text = r.text().await.expect("text");
    assert!(
        text.contains("sender \\\"edge\\\" is over its ingestion rate (10/s, burst 10"),
        "{text}"
    );
    let r = write(TOKEN, &["edge_a"]).await.expect("rw");
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let mut grpc = opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient::connect(format!("http://{}", c.otlp_grpc))
        .await
        .expect("grpc connects");
    let mut req = tonic::Request::new(body.clone());
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {TOKEN}").parse().expect("metadata"),
    );
    let e = grpc.export(req).await.expect_err("over its rate");
    assert_eq!(e.code(), tonic::Code::Unavailable, "retryable: {e:?}");
    assert!(e.message().contains("ingestion rate"), "{e:?}");
    // Core goes on meanwhile.
    let r = otlp(CORE).await.expect("otlp");
    assert_eq!(r.status(), 200);

    // A second later edge's rate is back.
    clock.advance(std::time::Duration::from_secs(1));
    let r = push(TOKEN, lines("last")).await.expect("push");
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    // The log index commits on the clock; commit now rather than race
    // its timer.
    c.logs.commit().expect("commit");

    // What the rate refused was not stored: the first 7 records and the
    // last 7, not the 7 refused between them.
    let found = logs_around(c.api, t, 14).await;
    let mut kept: Vec<&str> = found["data"]["records"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["message"].as_str()?.split(' ').next())
        .collect();
    kept.dedup();
    assert_eq!(kept, ["last", "first"], "{found}");
    assert_eq!(
        found["data"]["records"].as_array().map(Vec::len),
        Some(14),
        "{found}"
    );
    let edge_a = samples(&query(c.api, "edge_a", t).await);
    assert_eq!(
        edge_a.len(),
        1,
        "the refused OTLP/gRPC batches stored nothing: {edge_a:?}"
    );
    assert_eq!(edge_a[0].1, 2.0);

    let metrics = crate::common::own_metrics(c.api).await;
    for want in [
        "keel_sender_refused_total{sender=\"edge\",limit=\"max_series\"} 1",
        "keel_sender_series{sender=\"edge\"} 2",
    ] {
        assert!(metrics.lines().any(|l| l == want), "{want}: {metrics}");
    }
    let rate: u64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("keel_sender_refused_total{sender=\"edge\",limit=\"ingestion_rate\"} ")
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert_eq!(rate, 1 + 7 + 1 + 1, "the refused items: {metrics}");
    assert!(!metrics.contains("sender=\"core\""), "core has no limits");
}
