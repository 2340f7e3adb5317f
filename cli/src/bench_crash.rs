//! `keel bench crash`: a collector SIGKILLed again and again at random
//! moments under mixed ingest — metrics (OTLP), logs (JSON lines) and
//! spans (OTLP) at once — and after every restart, every record it ever
//! acknowledged is counted back. The figure is acknowledged records lost
//! (the goal: 0), with the kills, the records, and the restart time
//! (open and WAL replay until the API answers) beside it. Samples and log
//! lines are counted whole after every restart; spans by trace id: every
//! span acknowledged since the previous restart (the ones a kill put at
//! risk) and 20 older ones at random.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use keel_testkit::Reaped;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric::Data, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message as _;

/// Flags of `keel bench crash`.
#[derive(clap::Args)]
pub struct CrashBenchArgs {
    /// SIGKILLs.
    #[arg(long, default_value_t = 200)]
    kills: u32,
    /// Longest time a collector runs under ingest before its kill (each
    /// kill comes at a random moment up to this).
    #[arg(long, default_value = "600ms", value_parser = keel_core::duration::parse)]
    max_uptime: Duration,
}

/// What the writers had acknowledged.
#[derive(Default)]
struct Acked {
    samples: AtomicU64,
    lines: AtomicU64,
    spans: AtomicU64,
    /// The batch numbers of the acknowledged spans, in order.
    span_ids: std::sync::Mutex<Vec<u64>>,
}

/// The trace id of span batch `n`.
fn trace_id(n: u64) -> Vec<u8> {
    let mut id = vec![0xc0; 8];
    id.extend_from_slice(&(n + 1).to_be_bytes());
    id
}

/// A string attribute (the security bench's too).
pub(crate) fn kv(k: &str, v: String) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v)),
        }),
        ..Default::default()
    }
}

fn resource() -> Option<Resource> {
    Some(Resource {
        attributes: vec![kv("service.name", "crash".into())],
        ..Default::default()
    })
}

/// Metric batch `n`: one new series `crash_n{n="…"}`, one sample.
fn metrics(n: u64, t_ms: u64) -> Vec<u8> {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "crash_n".into(),
                    data: Some(Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint {
                            attributes: vec![kv("n", n.to_string())],
                            time_unix_nano: t_ms * 1_000_000,
                            value: Some(number_data_point::Value::AsDouble(n as f64)),
                            ..Default::default()
                        }],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// Span batch `n`: one root span of its own trace.
fn spans(n: u64, t_ms: u64) -> Vec<u8> {
    let trace_id = trace_id(n);
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id,
                    span_id: (n + 1).to_be_bytes().to_vec(),
                    name: "crash".into(),
                    start_time_unix_nano: t_ms * 1_000_000,
                    end_time_unix_nano: t_ms * 1_000_000 + 1_000_000,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A collector on `dir` and the two ports.
fn spawn(dir: &Path, otlp: u16, api: u16) -> anyhow::Result<Reaped> {
    let child = Command::new(std::env::current_exe()?)
        .args([
            "collector",
            "--otlp-port",
            &otlp.to_string(),
            "--api-port",
            &api.to_string(),
            "--grpc-port",
            "0",
            "--data-dir",
        ])
        .arg(dir)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("collector.stderr"))?)
        .spawn()
        .context("spawn keel collector")?;
    Ok(Reaped(child))
}

/// Send batches of every signal, counting what was acknowledged, until
/// the collector stops answering.
async fn ingest(
    http: reqwest::Client,
    otlp: u16,
    api: u16,
    acked: Arc<Acked>,
    next: Arc<AtomicU64>,
) {
    let metrics_w = {
        let (http, acked, next) = (http.clone(), acked.clone(), next.clone());
        async move {
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                let r = http
                    .post(format!("http://127.0.0.1:{otlp}/v1/metrics"))
                    .header("content-type", "application/x-protobuf")
                    .body(metrics(n, now_ms()))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => acked.samples.fetch_add(1, Ordering::SeqCst),
                    _ => return,
                };
            }
        }
    };
    let logs_w = {
        let (http, acked) = (http.clone(), acked.clone());
        async move {
            loop {
                let r = http
                    .post(format!("http://127.0.0.1:{api}/api/v1/logs"))
                    .body("{\"service\":\"crash\",\"message\":\"one line\"}\n")
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => acked.lines.fetch_add(1, Ordering::SeqCst),
                    _ => return,
                };
            }
        }
    };
    let spans_w = async move {
        loop {
            let n = next.fetch_add(1, Ordering::SeqCst);
            let r = http
                .post(format!("http://127.0.0.1:{otlp}/v1/traces"))
                .header("content-type", "application/x-protobuf")
                .body(spans(n, now_ms()))
                .send()
                .await;
            match r {
                Ok(r) if r.status() == 200 => {
                    acked.spans.fetch_add(1, Ordering::SeqCst);
                    acked
                        .span_ids
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(n);
                }
                _ => return,
            }
        }
    };
    tokio::join!(metrics_w, logs_w, spans_w);
}

/// What the collector holds now: (samples of crash_n, log lines).
async fn stored(http: &reqwest::Client, api: u16) -> anyhow::Result<(u64, u64)> {
    let base = format!("http://127.0.0.1:{api}");
    let now = now_ms() as f64 / 1000.0;
    let q: serde_json::Value = http
        .get(format!("{base}/api/v1/query"))
        .query(&[
            ("query", "count(count_over_time(crash_n[1d]))".to_owned()),
            ("time", now.to_string()),
        ])
        .send()
        .await?
        .json()
        .await?;
    let samples = q["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0) as u64;
    let h: serde_json::Value = http
        .get(format!("{base}/api/v1/logs/histogram"))
        .query(&[
            ("q", "service:crash".to_owned()),
            ("start", (now - 86_400.0).to_string()),
            ("end", (now + 60.0).to_string()),
            ("step", "3600".to_owned()),
        ])
        .send()
        .await?
        .json()
        .await?;
    let lines = h["data"]["buckets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b[1].as_u64())
        .sum();
    Ok((samples, lines))
}

/// The collector's log store commits every 100 ms: wait until what is
/// acknowledged is searchable, or the deadline.
async fn counted(http: &reqwest::Client, api: u16, want: (u64, u64)) -> anyhow::Result<(u64, u64)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = stored(http, api).await?;
        if (got.0 >= want.0 && got.1 >= want.1) || Instant::now() > deadline {
            return Ok(got);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many of span batches `ns` the collector cannot show by trace id
/// (searchable at the span store's next commit: each is waited for).
async fn spans_missing(http: &reqwest::Client, api: u16, ns: &[u64]) -> anyhow::Result<u64> {
    let mut missing = 0;
    for n in ns {
        let id: String = trace_id(*n).iter().map(|b| format!("{b:02x}")).collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = http
                .get(format!("http://127.0.0.1:{api}/api/v1/traces/{id}"))
                .send()
                .await?;
            if r.status() == 200 {
                break;
            }
            if Instant::now() > deadline {
                missing += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(missing)
}

/// Acknowledged records the collector at `api` does not hold: every
/// sample and line; the spans acknowledged since `checked_to` and 20
/// older ones at random.
async fn verify(
    http: &reqwest::Client,
    api: u16,
    acked: &Acked,
    checked_to: &mut usize,
) -> anyhow::Result<u64> {
    let want = (
        acked.samples.load(Ordering::SeqCst),
        acked.lines.load(Ordering::SeqCst),
    );
    let got = counted(http, api, want).await?;
    let ids = acked
        .span_ids
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut check: Vec<u64> = ids[(*checked_to).min(ids.len())..].to_vec();
    if *checked_to > 0 {
        for _ in 0..20 {
            check.push(ids[rand::random_range(0..*checked_to)]);
        }
    }
    *checked_to = ids.len();
    let spans = spans_missing(http, api, &check).await?;
    Ok(want.0.saturating_sub(got.0) + want.1.saturating_sub(got.1) + spans)
}

pub fn run(args: CrashBenchArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(crash(args))
}

async fn crash(args: CrashBenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (otlp, api) = (keel_testkit::free_port()?, keel_testkit::free_port()?);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let acked = Arc::new(Acked::default());
    let next = Arc::new(AtomicU64::new(0));
    let mut restarts = Vec::new();
    let mut lost = 0u64;
    let mut checked_to = 0usize;
    println!(
        "keel bench crash: {} SIGKILLs, each at a random moment up to {} under metrics + logs + spans ingest",
        args.kills,
        humantime::format_duration(args.max_uptime)
    );
    for k in 1..=args.kills {
        let started = Instant::now();
        let mut child = spawn(dir.path(), otlp, api)?;
        keel_testkit::listening("the collector's API", api, Duration::from_secs(60)).await?;
        keel_testkit::listening("the collector's OTLP port", otlp, Duration::from_secs(60)).await?;
        restarts.push(started.elapsed());
        // Everything acknowledged before this start is here.
        let missing = verify(&http, api, &acked, &mut checked_to).await?;
        if missing > 0 {
            eprintln!(
                "  after kill {}: {missing} acknowledged records missing",
                k - 1
            );
        }
        lost += missing;
        let writers = tokio::spawn(ingest(http.clone(), otlp, api, acked.clone(), next.clone()));
        let uptime = Duration::from_millis(rand::random_range(
            10..=args.max_uptime.as_millis().max(11) as u64,
        ));
        tokio::time::sleep(uptime).await;
        child.0.kill()?;
        let _ = child.0.wait();
        writers.await?;
        if k % 20 == 0 || k == args.kills {
            eprintln!(
                "  {k}/{} kills: acknowledged {} samples, {} lines, {} spans; lost {lost}",
                args.kills,
                acked.samples.load(Ordering::SeqCst),
                acked.lines.load(Ordering::SeqCst),
                acked.spans.load(Ordering::SeqCst)
            );
        }
    }
    // The last kill's acknowledgements, checked on one more start.
    let mut child = spawn(dir.path(), otlp, api)?;
    keel_testkit::listening("the collector's API", api, Duration::from_secs(60)).await?;
    lost += verify(&http, api, &acked, &mut checked_to).await?;
    let want = (
        acked.samples.load(Ordering::SeqCst),
        acked.lines.load(Ordering::SeqCst),
        acked.spans.load(Ordering::SeqCst),
    );
    let got = stored(&http, api).await?;
    child.0.kill()?;
    let _ = child.0.wait();
    restarts.sort();
    let pct = |p: f64| restarts[((restarts.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "acknowledged: {} samples, {} log lines, {} spans; after the last restart: {} samples, {} lines",
        want.0, want.1, want.2, got.0, got.1
    );
    println!(
        "restart to serving: p50 {:?}, p99 {:?}, max {:?}",
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    println!("acknowledged records lost: {lost}");
    if lost > 0 {
        bail!("{lost} acknowledged records lost");
    }
    Ok(())
}
