//! `keel bench security`: what authentication and TLS cost. Two
//! collectors in this process, on loopback: one plain (no TLS, no login,
//! no sender token) and one with everything on (`collector.tls` with a
//! throwaway CA and client certificates required on ingest,
//! `collector.auth.login`, a sender token with limits that never bind,
//! so each batch pays for its quota). After a warm-up round on
//! each (not counted), rounds alternate which goes first, the same load
//! on each:
//!
//! - ingest: `--senders` concurrent OTLP/HTTP clients (kept-alive
//!   connections, as agents keep them) posting protobuf batches of
//!   `--points` gauge points for `--duration`: points stored per second;
//! - queries: `--queries` instant queries one after another (a viewer's
//!   API token on the secure one), `sum(bench_gauge{series="7"})` (one
//!   series per sender: small, so that what TLS and the token check cost
//!   is not hidden under the store's work): p50 and p99 latency.
//!
//! The goal (#25): with TLS and authentication on, ≥ 90 % of the
//! throughput and ≤ 1.1× the query p99 of the plain collector.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric::Data, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;

use crate::bench_crash::kv;

/// Flags of `keel bench security`.
#[derive(clap::Args)]
pub struct SecurityBenchArgs {
    /// How long each ingest round lasts.
    #[arg(long, default_value = "10s", value_parser = keel_core::duration::parse)]
    duration: Duration,
    /// Rounds on each collector (alternating; the medians are compared).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Concurrent senders.
    #[arg(long, default_value_t = 8)]
    senders: usize,
    /// Points per batch (each a series of its own).
    #[arg(long, default_value_t = 1_000)]
    points: usize,
    /// Queries per round (1,000: a p99 of 300 is the third slowest,
    /// which one scheduler hiccup on 2 cores moves by 60 %).
    #[arg(long, default_value_t = 1_000)]
    queries: usize,
}

const SENDER_TOKEN: &str = "bench-sender-token-0123456789";

/// One collector under test and how to reach it.
struct Side {
    name: &'static str,
    running: keel_collector::server::Running,
    http: reqwest::Client,
    /// The sender token (ingest) and a viewer's API token (queries).
    tokens: Option<(String, String)>,
}

/// One sender's batch at `t_ms`: `points` series of `bench_gauge`.
fn batch(sender: usize, points: usize, t_ms: i64) -> Vec<u8> {
    let data_points = (0..points)
        .map(|i| NumberDataPoint {
            attributes: vec![kv("series", i.to_string())],
            time_unix_nano: (t_ms as u64).saturating_mul(1_000_000),
            value: Some(number_data_point::Value::AsDouble(i as f64)),
            ..Default::default()
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "bench".into()),
                    kv("service.instance.id", format!("sender-{sender}")),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "bench_gauge".into(),
                    data: Some(Data::Gauge(Gauge { data_points })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

async fn start(
    dir: &std::path::Path,
    secure: Option<&keel_testkit::https::Pki>,
) -> anyhow::Result<Side> {
    let mut c = keel_collector::server::CollectorConfig {
        data_dir: dir.to_path_buf(),
        otlp_http_port: 0,
        otlp_grpc_port: 0,
        api_port: 0,
        ..Default::default()
    };
    let clock: keel_core::clock::SharedClock = Arc::new(keel_core::clock::SystemClock);
    let Some(pki) = secure else {
        let running = keel_collector::server::start(&c, clock).await?;
        return Ok(Side {
            name: "plain",
            running,
            http: reqwest::Client::new(),
            tokens: None,
        });
    };
    c.tls = keel_tls::server::ServerTlsConfig {
        cert_file: pki.cert_file.clone(),
        key_file: pki.key_file.clone(),
        client_ca_file: pki.ca_file.clone(),
    };
    c.auth.login = true;
    c.auth.senders = vec![keel_auth::SenderToken {
        name: "bench".into(),
        token: keel_core::secret::Secret::new(SENDER_TOKEN),
        // Limits that never bind, so every batch pays for its quota
        // (the rate taken, each series looked up).
        limits: keel_core::quota::QuotaLimits {
            max_series: 100_000_000,
            ingestion_rate: 1e12,
            ingestion_burst: 0.0,
        },
        ..Default::default()
    }];
    let running = keel_collector::server::start(&c, clock.clone()).await?;
    let store = running
        .state
        .as_ref()
        .context("the secure collector has a state store")?
        .0
        .clone();
    let (viewer, _) = keel_auth::Directory::new(store)
        .create_token(
            "bench",
            keel_auth::Role::Viewer,
            None,
            "bench",
            clock.now_ms(),
        )
        .await?;
    let http = keel_tls::TlsConfig {
        ca_file: Some(pki.ca_file.clone()),
        cert_file: Some(pki.client_cert_file.clone()),
        key_file: Some(pki.client_key_file.clone()),
    }
    .client(reqwest::Client::builder(), "bench")?;
    Ok(Side {
        name: "TLS + auth",
        running,
        http,
        tokens: Some((SENDER_TOKEN.to_owned(), viewer)),
    })
}

/// Points stored per second by `senders` clients for `duration`.
async fn ingest(side: &Side, args: &SecurityBenchArgs, round: usize) -> anyhow::Result<f64> {
    let url = format!(
        "{}://{}/v1/metrics",
        side.running.scheme(),
        side.running.otlp_http
    );
    let stored = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + args.duration;
    let mut tasks = tokio::task::JoinSet::new();
    // Each round writes later timestamps than the last.
    let t0 = keel_core::clock::unix_ms(std::time::SystemTime::now()) + (round as i64) * 1_000;
    for s in 0..args.senders {
        let (http, url, stored) = (side.http.clone(), url.clone(), stored.clone());
        let token = side.tokens.as_ref().map(|(s, _)| s.clone());
        let points = args.points;
        tasks.spawn(async move {
            let mut k = 0i64;
            while Instant::now() < deadline {
                let mut r = http
                    .post(&url)
                    .header("content-type", "application/x-protobuf")
                    .body(batch(s, points, t0 + k));
                if let Some(t) = &token {
                    r = r.bearer_auth(t);
                }
                let status = r.send().await?.status();
                if !status.is_success() {
                    bail!("{url}: {status}");
                }
                stored.fetch_add(points as u64, Ordering::Relaxed);
                k += 1;
            }
            anyhow::Ok(())
        });
    }
    let started = Instant::now();
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(stored.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// p50 and p99 (ms) of `n` instant queries, one after another.
async fn queries(side: &Side, n: usize) -> anyhow::Result<(f64, f64)> {
    let url = format!(
        "{}://{}/api/v1/query?query=sum(bench_gauge%7Bseries%3D%227%22%7D)",
        side.running.scheme(),
        side.running.api
    );
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for _ in 0..n {
        let mut r = side.http.get(&url);
        if let Some((_, viewer)) = &side.tokens {
            r = r.bearer_auth(viewer);
        }
        let t = Instant::now();
        let status = r.send().await?.status();
        hist.saturating_record(t.elapsed().as_micros() as u64);
        if !status.is_success() {
            bail!("{url}: {status}");
        }
    }
    Ok((
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
    ))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn run(args: SecurityBenchArgs) -> anyhow::Result<()> {
    if args.rounds == 0 || args.senders == 0 || args.points == 0 || args.queries == 0 {
        bail!("--rounds, --senders, --points and --queries must be at least 1");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let dir = tempfile::tempdir()?;
        let pki_dir = dir.path().join("pki");
        std::fs::create_dir_all(&pki_dir)?;
        let pki = keel_testkit::https::Pki::new(&pki_dir)?;
        let plain = start(&dir.path().join("plain"), None).await?;
        let secure = start(&dir.path().join("secure"), Some(&pki)).await?;
        println!(
            "keel bench security: {} senders × {} points per batch for {:?}, {} queries, {} rounds each, alternating",
            args.senders, args.points, args.duration, args.queries, args.rounds
        );
        let mut figures: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> =
            vec![(Vec::new(), Vec::new(), Vec::new()); 2];
        // Round 0 warms both up and is not counted; then the order
        // alternates, so neither always runs on the other's leftovers.
        for round in 0..=args.rounds {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                let side = [&plain, &secure][i];
                let rate = ingest(side, &args, round * 2 + i).await?;
                let (p50, p99) = queries(side, args.queries).await?;
                if round == 0 {
                    continue;
                }
                println!(
                    "  round {round} {:<11} ingest {:>10.0} points/s   query p50 {:>6.2} ms  p99 {:>6.2} ms",
                    side.name, rate, p50, p99
                );
                figures[i].0.push(rate);
                figures[i].1.push(p50);
                figures[i].2.push(p99);
            }
        }
        let [p, s] = [&figures[0], &figures[1]].map(|(r, q50, q99)| {
            (median(r.clone()), median(q50.clone()), median(q99.clone()))
        });
        println!(
            "median: plain {:.0} points/s, p99 {:.2} ms; TLS + auth {:.0} points/s, p99 {:.2} ms",
            p.0, p.2, s.0, s.2
        );
        println!(
            "TLS + auth ÷ plain: throughput {:.3} (goal ≥ 0.90), query p50 {:.2}×, p99 {:.2}× (goal ≤ 1.1)",
            s.0 / p.0,
            s.1 / p.1,
            s.2 / p.2
        );
        anyhow::Ok(())
    })
}
