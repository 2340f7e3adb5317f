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
    let s = t as f64 / 1000.0;
    let found = crate::common::poll_json(
        &format!("http://{}/api/v1/logs/search", c.api),
        &[
            ("q", "*".to_owned()),
            ("start", (s - 60.0).to_string()),
            ("end", (s + 60.0).to_string()),
        ],
        |r| {
            r["data"]["records"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
        },
    )
    .await;
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
