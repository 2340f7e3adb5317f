//! Native histograms leave Keel as a real Prometheus (native histograms
//! on) takes them: forwarded — a collector with a remote write target
//! sends on every native histogram sample it stores, as remote write 1.0
//! histograms — and federated — `/federate` answers a scraper that asks
//! for protobuf with them. Either way Prometheus then answers them as
//! Keel does.
//!
//! Gated on `KEEL_TEST_PROMETHEUS` (Debian's `prometheus`; `.ci/run`
//! installs it and sets it).

use std::time::Duration;

use keel_testkit::Reaped;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, ExponentialHistogram, ExponentialHistogramDataPoint, Metric,
    ResourceMetrics, ScopeMetrics, metric::Data,
};
use prost::Message;

use crate::common::{collector_command, eventually, kv, start_collector};
use crate::native_scrape::{answer, same};

/// Two cumulative exponential histogram points of `rpc_seconds`, 15 s
/// apart, ending a minute ago.
fn request(now_ms: u64) -> ExportMetricsServiceRequest {
    let point = |k: u64| ExponentialHistogramDataPoint {
        attributes: vec![kv("path", "/a")],
        time_unix_nano: (now_ms - 60_000 - 15_000 * (1 - k)) * 1_000_000,
        count: 10 + 5 * k,
        sum: Some(4.0 + k as f64),
        scale: 2,
        zero_count: 1,
        zero_threshold: 0.001,
        positive: Some(Buckets {
            offset: -3,
            bucket_counts: vec![2, 0, 3 + 2 * k, 1 + k],
        }),
        negative: Some(Buckets {
            offset: 0,
            bucket_counts: vec![3 + 2 * k],
        }),
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(opentelemetry_proto::tonic::resource::v1::Resource {
                attributes: vec![kv("service.name", "api")],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "rpc_seconds".into(),
                    data: Some(Data::ExponentialHistogram(ExponentialHistogram {
                        data_points: vec![point(0), point(1)],
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Send [`request`] to the collector's OTLP endpoint; the time it used.
async fn send(otlp: &str) -> u64 {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_millis() as u64;
    let r = reqwest::Client::new()
        .post(format!("{otlp}/v1/metrics"))
        .header("content-type", "application/x-protobuf")
        .body(request(now_ms).encode_to_vec())
        .send()
        .await
        .expect("ingest");
    assert_eq!(r.status(), 200);
    now_ms
}

/// `expr` answered by Prometheus at `prom` (waited for) and by Keel at
/// `keel`: the same series and the same histograms.
async fn answered_alike(keel: &str, prom: &str, expr: &str) {
    let theirs = eventually(
        &format!("Prometheus answers {expr}"),
        Duration::from_secs(60),
        || async move {
            let a = answer(prom, expr).await;
            (!a.is_empty()).then_some(a)
        },
    )
    .await;
    let ours = answer(keel, expr).await;
    assert!(
        ours.len() == theirs.len()
            && ours
                .iter()
                .zip(&theirs)
                .all(|(k, p)| k.0 == p.0 && same(k.1, p.1)),
        "{expr}: Keel's\n{ours:?}\nthen Prometheus'\n{theirs:?}"
    );
}

fn gated() -> bool {
    let on = std::env::var_os("KEEL_TEST_PROMETHEUS").is_some();
    if !on {
        eprintln!(
            "skipped: set KEEL_TEST_PROMETHEUS=1 with Debian's prometheus installed (.ci/run does)"
        );
    }
    on
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federation_gives_native_histograms_to_a_real_prometheus() {
    if !gated() {
        return;
    }
    let _heavy = crate::common::heavy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let keel_dir = dir.path().join("keel");
    std::fs::create_dir_all(&keel_dir).expect("mkdir");
    let (collector, otlp, keel) = crate::common::spawn_collector(&keel_dir, 0, 0);
    let _collector = Reaped(collector);
    send(&otlp).await;
    let target = keel.trim_start_matches("http://").to_owned();
    let prom_server = keel_testkit::server::Server::prometheus(
        dir.path(),
        |_| format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: federate\n    honor_labels: true\n    metrics_path: /federate\n    params:\n      'match[]': ['{{job=\"api\"}}']\n    static_configs:\n      - targets: ['{target}']\n"
        ),
        &["--enable-feature=native-histograms"],
    )
    .await
    .expect("KEEL_TEST_PROMETHEUS is set but prometheus does not start");
    // Prometheus adds the federating target's `instance`.
    answered_alike(
        &keel,
        &prom_server.url,
        r#"sum without (instance) (rpc_seconds{job="api"})"#,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_native_histograms_reach_a_real_prometheus_by_remote_write() {
    if !gated() {
        return;
    }
    let _heavy = crate::common::heavy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let prom_server = keel_testkit::server::Server::prometheus(
        dir.path(),
        |_| "global:\n  scrape_interval: 1m\n".to_owned(),
        &[
            "--web.enable-remote-write-receiver",
            "--enable-feature=native-histograms",
        ],
    )
    .await
    .expect("KEEL_TEST_PROMETHEUS is set but prometheus does not start");
    let prom = prom_server.url.clone();

    let keel_dir = dir.path().join("keel");
    std::fs::create_dir_all(&keel_dir).expect("mkdir");
    std::fs::write(
        keel_dir.join("keel.yaml"),
        format!(
            "collector:\n  forward:\n    remote_write:\n    - url: {prom}/api/v1/write\n      send_native_histograms: true\n      retry: {{initial: 50ms, max: 500ms, timeout: 5s}}\n"
        ),
    )
    .expect("config");
    let (collector, otlp, keel) =
        start_collector(collector_command(&keel_dir.join("keel.yaml")), &keel_dir);
    let _collector = Reaped(collector);

    let now_ms = send(&otlp).await;
    let expr = r#"rpc_seconds{job="api"}"#;
    answered_alike(&keel, &prom, expr).await;
    let ours = answer(&keel, expr).await;
    assert_eq!(
        ours.values().next().map(|h| h["count"].clone()),
        Some("15".into())
    );
    // Both samples went: at the first one's time, both answer it.
    let first = (now_ms - 70_000) as f64 / 1000.0;
    let at = |api: String| async move {
        crate::common::query(
            &api,
            r#"histogram_count(rpc_seconds{job="api"})"#,
            Some(first),
        )
        .await
        .into_iter()
        .map(|s| s["value"][1].clone())
        .collect::<Vec<_>>()
    };
    let (k, p) = (at(keel.clone()).await, at(prom.clone()).await);
    assert_eq!(p, vec![serde_json::json!("10")], "Prometheus' first sample");
    assert_eq!(k, p);

    // A float histogram (fractional counts), a gauge histogram, sent by
    // remote write: forwarded with float counts.
    let float = keel_series::histogram::Histogram {
        schema: 0,
        zero_threshold: 0.001,
        zero_count: 0.5,
        count: 3.0,
        sum: 2.25,
        positive: vec![(1, 1.5), (3, 1.0)],
        negative: Vec::new(),
        reset: keel_series::histogram::CounterReset::Gauge,
        custom_values: Default::default(),
    };
    let labels = keel_series::labels::Labels::new(vec![("__name__", "queue_depth"), ("job", "rw")]);
    let req = keel_collector::forward::histograms::request(&[(
        labels,
        vec![((now_ms - 30_000) as i64, float)],
    )]);
    let body = snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .expect("snappy");
    let r = reqwest::Client::new()
        .post(format!("{keel}/api/v1/write"))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "snappy")
        .header("x-prometheus-remote-write-version", "0.1.0")
        .body(body)
        .send()
        .await
        .expect("remote write");
    assert_eq!(r.status(), 204, "{:?}", r.text().await);
    answered_alike(&keel, &prom, r#"queue_depth{job="rw"}"#).await;
}
