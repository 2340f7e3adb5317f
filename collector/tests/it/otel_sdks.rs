//! Real OpenTelemetry SDK clients export to the collector unchanged, and
//! the values come back through PromQL.

use crate::common::*;
use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_opentelemetry_otlp_exporter_sends_and_promql_reads_back() {
    let _turn = crate::common::turn().await;
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
        let provider = crate::common::meter_provider(exporter, "rust-shop");
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
    let _turn = crate::common::turn().await;
    python_sdk_roundtrip("http").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_opentelemetry_sdk_over_grpc_sends_and_promql_reads_back() {
    let _turn = crate::common::turn().await;
    python_sdk_roundtrip("grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_sends_a_trace_and_its_log_over_http() {
    let _turn = crate::common::turn().await;
    python_trace_roundtrip("http").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_sends_a_trace_and_its_log_over_grpc() {
    let _turn = crate::common::turn().await;
    python_trace_roundtrip("grpc").await;
}

/// The Python SDK sends a two-span trace and a log inside it over
/// `transport`; the trace API returns both spans, linked, and the log.
async fn python_trace_roundtrip(transport: &str) {
    if std::env::var_os("KEEL_TEST_PYTHON_OTEL").is_none() {
        eprintln!("skipped: set KEEL_TEST_PYTHON_OTEL=1 (.ci/run does)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(dir.path()).await;
    let out = run_python("otel_python_traces.py", transport, &c).await;
    let ids: Vec<&str> = out.split_whitespace().collect();
    let (trace_id, linked_trace, linked_span) = (ids[0].to_owned(), ids[1], ids[2]);
    let t = trace_when_complete(c.api, &trace_id, 2, 1).await;
    let spans = t["data"]["spans"].as_array().cloned().unwrap_or_default();
    assert_eq!(spans[0]["operation"], "POST /checkout");
    assert_eq!(spans[0]["span_kind"], "server");
    assert_eq!(spans[0]["service"], format!("py-{transport}"));
    assert_eq!(spans[0]["attributes"]["http.route"], "/checkout");
    assert_eq!(spans[1]["operation"], "charge card");
    assert_eq!(spans[1]["parent_span_id"], spans[0]["span_id"]);
    assert_eq!(spans[1]["status"], "error");
    assert_eq!(spans[1]["status_message"], "card declined");
    let log = &t["data"]["logs"][0];
    assert_eq!(log["message"], "payment failed");
    assert_eq!(log["level"], "error");
    assert_eq!(log["span_id"], spans[1]["span_id"]);
    assert_eq!(log["host"], "py-host");
    assert_eq!(log["attributes"]["order_id"], 42);
    // The scope (tracer name and version; the logger's name) and the
    // link, stored and read back.
    assert_eq!(spans[0]["attributes"]["otel.scope.name"], "keel-test");
    assert_eq!(spans[0]["attributes"]["otel.scope.version"], "1.2.3");
    assert_eq!(
        spans[0]["links"],
        serde_json::json!([{
            "trace_id": linked_trace,
            "span_id": linked_span,
            "attributes": {"link.kind": "follows"},
        }]),
        "{}",
        spans[0]
    );
    assert_eq!(log["attributes"]["otel.scope.name"], "shop", "{log}");
    // And searchable: the logger's name, the link's trace.
    let found = get(
        c.api,
        &format!(
            "/api/v1/logs/search?q={}&start=0",
            "attributes.otel%5C.scope%5C.name:shop"
        ),
    )
    .await;
    assert_eq!(
        found["data"]["records"].as_array().map(Vec::len),
        Some(1),
        "{found}"
    );
    let search = get(
        c.api,
        &format!("/api/v1/traces/search?q=attributes.links.trace_id:{linked_trace}&start=0"),
    )
    .await;
    assert!(search.to_string().contains(&trace_id), "{search}");
    // The query narrows: the linked (producer) trace links to nothing.
    assert!(!search.to_string().contains(linked_trace), "{search}");
}

/// A series' label names, `__name__` aside, sorted.
fn label_names(metric: &serde_json::Value) -> Vec<String> {
    let mut names: Vec<String> = metric
        .as_object()
        .map(|m| m.keys().filter(|k| *k != "__name__").cloned().collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// Run a Python SDK script from `tests/` against the collector over
/// `transport` (`http` or `grpc`); returns what it printed.
async fn run_python(script: &str, transport: &str, c: &keel_collector::server::Running) -> String {
    run_python_with(script, transport, c, &[]).await
}

/// [`run_python`] with extra environment (e.g. `OTEL_EXPORTER_OTLP_HEADERS`).
pub(crate) async fn run_python_with(
    script: &str,
    transport: &str,
    c: &keel_collector::server::Running,
    env: &[(&str, &str)],
) -> String {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(script);
    let target = match transport {
        "grpc" => c.otlp_grpc.to_string(),
        _ => format!("http://{}", c.otlp_http),
    };
    let out = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(transport)
        .arg(&target)
        .envs(env.iter().copied())
        .output()
        .await
        .expect("python3");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
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
    let out = run_python("otel_python.py", transport, &c).await;
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
    // Exactly the labels Prometheus 3 gives: job and instance from the
    // resource, the point's own attributes, and nothing else.
    assert_eq!(
        label_names(&orders[0].0),
        ["instance", "job", "region"],
        "{orders:?}"
    );
    // The rest of the resource (the SDK's telemetry.sdk.*) is on
    // target_info, joined on job/instance.
    let info = samples(&query(c.api, "target_info{job=\"py-shop\",instance=\"py-1\"}", t).await);
    assert_eq!(info.len(), 1, "{info:?}");
    assert_eq!(info[0].0["telemetry_sdk_language"], "python", "{info:?}");
    assert_eq!(
        label_names(&info[0].0),
        [
            "instance",
            "job",
            "telemetry_sdk_language",
            "telemetry_sdk_name",
            "telemetry_sdk_version"
        ],
        "{info:?}"
    );
    // And it joins as in Prometheus: orders by SDK language.
    let joined = samples(
        &query(
            c.api,
            "sum by (telemetry_sdk_language) (orders_placed_total * on (job, instance) group_left (telemetry_sdk_language) target_info)",
            t,
        )
        .await,
    );
    assert_eq!(joined.len(), 1, "{joined:?}");
    assert_eq!(joined[0].0["telemetry_sdk_language"], "python");
    assert_eq!(joined[0].1, 7.0);
    assert_eq!(
        samples(&query(c.api, "queue_depth{queue=\"emails\"}", t).await)[0].1,
        7.0
    );
    // The SDK's default buckets are 0, 5, 10, 25, …: four observations
    // fall in (0, 5] and one (7) in (5, 10], so Prometheus interpolates
    // the median (rank 2.5 of 5) to 5 × 2.5/4.
    let p50 = samples(
        &query(
            c.api,
            "histogram_quantile(0.5, checkout_duration_seconds_bucket)",
            t,
        )
        .await,
    );
    assert_eq!(p50[0].1, 3.125, "{p50:?}");
    assert_eq!(
        samples(&query(c.api, "checkout_duration_seconds_count", t).await)[0].1,
        5.0
    );
    // The exponential histogram is one native histogram series: its
    // median (300, the third of five) lies in the SDK's bucket that holds
    // 300, less than one bucket width (a factor 2^(2^-scale)) below it.
    let n = samples(&query(c.api, "histogram_count(payload_size_bytes)", t).await);
    assert_eq!(n.iter().map(|s| s.1).collect::<Vec<_>>(), [5.0], "{n:?}");
    let p50 = samples(&query(c.api, "histogram_quantile(0.5, payload_size_bytes)", t).await);
    assert!(p50[0].1 > 280.0 && p50[0].1 <= 300.0, "{p50:?}");
    assert!(
        samples(&query(c.api, "payload_size_bytes_bucket", t).await).is_empty(),
        "no classic buckets are made of it"
    );
    // The observation made inside a span is an exemplar on the bucket
    // that holds 7 (5, 10], carrying that span's trace and span ids.
    let ids: Vec<&str> = out.split_whitespace().skip(1).collect();
    let (trace, span) = (ids[0], ids[1]);
    let e = get(
        c.api,
        "/api/v1/query_exemplars?query=histogram_quantile(0.9,rate(checkout_duration_seconds_bucket[5m]))",
    )
    .await;
    let all = e["data"].as_array().cloned().unwrap_or_default();
    let traced: Vec<&serde_json::Value> = all
        .iter()
        .flat_map(|s| {
            s["exemplars"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |x| (s, x))
        })
        .filter(|(_, x)| x["labels"]["trace_id"] == trace)
        .map(|(s, x)| {
            assert_eq!(s["seriesLabels"]["le"], "10", "{e}");
            assert_eq!(
                (&x["labels"]["span_id"], &x["value"]),
                (&span.into(), &"7".into()),
                "{e}"
            );
            x
        })
        .collect();
    assert_eq!(traced.len(), 1, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_sdk_sends_a_trace_and_its_log() {
    let _turn = crate::common::turn().await;
    use opentelemetry::logs::{LogRecord as _, Logger as _, LoggerProvider as _, Severity};
    use opentelemetry::trace::{TraceContextExt as _, Tracer as _, TracerProvider as _};
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(dir.path()).await;
    let base = format!("http://{}", c.otlp_http);
    let trace_id = tokio::task::spawn_blocking(move || {
        let resource = Resource::builder().with_service_name("rust-shop").build();
        let spans = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_simple_exporter(
                opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_endpoint(format!("{base}/v1/traces"))
                    .build()
                    .expect("span exporter"),
            )
            .with_resource(resource.clone())
            .build();
        let logs = opentelemetry_sdk::logs::SdkLoggerProvider::builder()
            .with_simple_exporter(
                opentelemetry_otlp::LogExporter::builder()
                    .with_http()
                    .with_endpoint(format!("{base}/v1/logs"))
                    .build()
                    .expect("log exporter"),
            )
            .with_resource(resource)
            .build();
        let tracer = spans.tracer("keel-test");
        let logger = logs.logger("keel-test");
        let trace_id = tracer.in_span("GET /cart", |cx| {
            cx.span()
                .set_attribute(KeyValue::new("http.route", "/cart"));
            tracer.in_span("load cart", |inner| {
                let sc = inner.span().span_context().clone();
                let mut rec = logger.create_log_record();
                rec.set_body("cart loaded".into());
                rec.set_severity_text("WARN");
                rec.set_severity_number(Severity::Warn);
                rec.add_attribute("items", 3);
                rec.set_trace_context(sc.trace_id(), sc.span_id(), None);
                logger.emit(rec);
            });
            cx.span().span_context().trace_id().to_string()
        });
        spans.force_flush().expect("flush spans");
        logs.force_flush().expect("flush logs");
        let _ = spans.shutdown();
        let _ = logs.shutdown();
        trace_id
    })
    .await
    .expect("sdk thread");
    let t = trace_when_complete(c.api, &trace_id, 2, 1).await;
    let spans = t["data"]["spans"].as_array().cloned().unwrap_or_default();
    assert_eq!(spans[0]["operation"], "GET /cart");
    assert_eq!(spans[0]["service"], "rust-shop");
    assert_eq!(spans[0]["attributes"]["http.route"], "/cart");
    assert_eq!(spans[1]["parent_span_id"], spans[0]["span_id"]);
    assert_eq!(t["data"]["logs"][0]["message"], "cart loaded");
    assert_eq!(t["data"]["logs"][0]["level"], "warn");
    assert_eq!(t["data"]["logs"][0]["span_id"], spans[1]["span_id"]);
    assert_eq!(t["data"]["logs"][0]["attributes"]["items"], 3);
}

/// Poll the trace API until the trace has `spans` spans and `logs` logs
/// (spans and logs become searchable at the next commit), at most 10 s.
async fn trace_when_complete(
    api: std::net::SocketAddr,
    trace_id: &str,
    spans: usize,
    logs: usize,
) -> serde_json::Value {
    let n = |v: &serde_json::Value, k: &str| v["data"][k].as_array().map_or(0, Vec::len);
    let v = poll_json(
        &format!("http://{api}/api/v1/traces/{trace_id}"),
        &[],
        |v| n(v, "spans") >= spans && n(v, "logs") >= logs,
    )
    .await;
    assert_eq!((n(&v, "spans"), n(&v, "logs")), (spans, logs), "{v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_exporter_over_grpc_with_gzip_sends_and_promql_reads_back() {
    let _turn = crate::common::turn().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(dir.path()).await;
    let endpoint = format!("http://{}", c.otlp_grpc);
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .with_compression(opentelemetry_otlp::Compression::Gzip)
        .build()
        .expect("exporter");
    let provider = crate::common::meter_provider(exporter, "grpc-shop");
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
