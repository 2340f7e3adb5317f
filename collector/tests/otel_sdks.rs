//! Real OpenTelemetry SDK clients export to the collector unchanged, and
//! the values come back through PromQL.

mod common;

use std::time::Duration;

use common::*;
use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_opentelemetry_otlp_exporter_sends_and_promql_reads_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(dir.path()).await;
    let endpoint = format!("http://{}/v1/metrics", c.otlp_http);
    // The SDK's HTTP client is blocking: run it off the async runtime.
    tokio::task::spawn_blocking(move || {
        let exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_endpoint(endpoint)
            .build()
            .expect("exporter");
        let reader = PeriodicReader::builder(exporter)
            .with_interval(Duration::from_secs(3600))
            .build();
        let provider = SdkMeterProvider::builder()
            .with_reader(reader)
            .with_resource(Resource::builder().with_service_name("rust-shop").build())
            .build();
        let meter = provider.meter("keel-test");
        let counter = meter.u64_counter("orders.placed").build();
        counter.add(3, &[KeyValue::new("region", "eu")]);
        let hist = meter
            .f64_histogram("checkout.duration")
            .with_unit("s")
            .build();
        for v in [0.01, 0.02, 3.0] {
            hist.record(v, &[]);
        }
        provider.force_flush().expect("flush");
        provider.shutdown().expect("shutdown");
    })
    .await
    .expect("sdk thread");
    let t = now_ms() + 1000;
    let orders = samples(&query(c.api, "orders_placed_total{job=\"rust-shop\"}", t).await);
    assert_eq!(orders.len(), 1, "{orders:?}");
    assert_eq!(orders[0].1, 3.0);
    assert_eq!(orders[0].0["region"], "eu");
    let count = samples(&query(c.api, "checkout_duration_seconds_count", t).await);
    assert_eq!(count[0].1, 3.0);
    let sum = samples(&query(c.api, "checkout_duration_seconds_sum", t).await);
    assert!((sum[0].1 - 3.03).abs() < 1e-9, "{sum:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_opentelemetry_sdk_over_http_sends_and_promql_reads_back() {
    python_sdk_roundtrip("http").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_opentelemetry_sdk_over_grpc_sends_and_promql_reads_back() {
    python_sdk_roundtrip("grpc").await;
}

/// The Python SDK (from PyPI) exports over `transport`; PromQL reads back.
async fn python_sdk_roundtrip(transport: &str) {
    if std::env::var_os("KEEL_TEST_PYTHON_OTEL").is_none() {
        eprintln!(
            "skipped: set KEEL_TEST_PYTHON_OTEL=1 with opentelemetry-sdk and opentelemetry-exporter-otlp-proto-{{http,grpc}} installed (.ci/run does)"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(dir.path()).await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/otel_python.py");
    let target = match transport {
        "grpc" => c.otlp_grpc.to_string(),
        _ => format!("http://{}", c.otlp_http),
    };
    let out = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(transport)
        .arg(&target)
        .output()
        .await
        .expect("python3");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let t = now_ms() + 1000;
    let mut orders = samples(
        &query(
            c.api,
            "orders_placed_total{job=\"py-shop\",instance=\"py-1\"}",
            t,
        )
        .await,
    );
    orders.sort_by(|a, b| a.1.total_cmp(&b.1));
    assert_eq!(
        orders.iter().map(|o| o.1).collect::<Vec<_>>(),
        [2.0, 5.0],
        "{orders:?}"
    );
    assert_eq!(
        samples(&query(c.api, "queue_depth{queue=\"emails\"}", t).await)[0].1,
        7.0
    );
    // The SDK's default buckets are 0, 5, 10, 25, …: all four observations
    // fall in (0, 5], so Prometheus interpolates the median to 5 × 2/4.
    let p50 = samples(
        &query(
            c.api,
            "histogram_quantile(0.5, checkout_duration_seconds_bucket)",
            t,
        )
        .await,
    );
    assert_eq!(p50[0].1, 2.5, "{p50:?}");
    assert_eq!(
        samples(&query(c.api, "checkout_duration_seconds_count", t).await)[0].1,
        4.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_exporter_over_grpc_with_gzip_sends_and_promql_reads_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(dir.path()).await;
    let endpoint = format!("http://{}", c.otlp_grpc);
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .with_compression(opentelemetry_otlp::Compression::Gzip)
        .build()
        .expect("exporter");
    let reader = PeriodicReader::builder(exporter)
        .with_interval(Duration::from_secs(3600))
        .build();
    let provider = SdkMeterProvider::builder()
        .with_reader(reader)
        .with_resource(Resource::builder().with_service_name("grpc-shop").build())
        .build();
    let meter = provider.meter("keel-test");
    meter
        .u64_counter("payments.failed")
        .build()
        .add(4, &[KeyValue::new("code", "insufficient_funds")]);
    meter
        .f64_gauge("pool.in.use")
        .with_unit("1")
        .build()
        .record(0.75, &[]);
    // The periodic reader flushes on its own thread; wait for it there.
    let flushed = tokio::task::spawn_blocking(move || {
        let r = provider.force_flush();
        let _ = provider.shutdown();
        r
    })
    .await
    .expect("flush thread");
    flushed.expect("export over gRPC succeeds");
    let t = now_ms() + 1000;
    let failed = samples(&query(c.api, "payments_failed_total{job=\"grpc-shop\"}", t).await);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].1, 4.0);
    assert_eq!(failed[0].0["code"], "insufficient_funds");
    assert_eq!(
        samples(&query(c.api, "pool_in_use_ratio", t).await)[0].1,
        0.75
    );
}
