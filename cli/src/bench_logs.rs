//! `keel bench logs`: the collector's log and span stores against their
//! ceiling on this machine, in the same run.
//!
//! - **ceiling**: the same JSON lines parsed and indexed by the same index
//!   store in this process, with no HTTP and no WAL, committing as often
//!   as the collector does (every 500 ms);
//! - **Keel**: `keel collector` as a child process, the lines POSTed to
//!   `/api/v1/logs` (HTTP → WAL → index), its CPU from /proc.
//!
//! Both in documents and MB of JSON per CPU-second (per core). Also: how
//! long a record takes to become searchable while ingest runs at full
//! rate; search latency over the whole corpus; trace-by-id latency over
//! the spans sent; index size over raw JSON size.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use keel_logindex::logs::{LogConfig, LogStore};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::bench_metrics::{dir_bytes, start_keel_with, usage};

/// Flags of `keel bench logs`.
#[derive(clap::Args)]
pub struct LogsBenchArgs {
    /// Log lines sent (the search figure is over 10,000,000).
    #[arg(long, default_value_t = 1_000_000)]
    lines: usize,
    /// Lines per request.
    #[arg(long, default_value_t = 2_000)]
    batch: usize,
    /// Spans sent, in traces of 10 (the figure is over 1,000,000).
    #[arg(long, default_value_t = 200_000)]
    spans: usize,
    /// Repetitions of each search, and trace lookups.
    #[arg(long, default_value_t = 50)]
    queries: usize,
    /// Commit interval of both the collector and the ceiling.
    #[arg(long, default_value = "100ms", value_parser = keel_core::duration::parse)]
    commit_interval: Duration,
}

const SERVICES: [&str; 8] = [
    "payment",
    "checkout",
    "cart",
    "web",
    "search",
    "inventory",
    "auth",
    "email",
];
const ROUTES: [&str; 6] = [
    "/api/cart",
    "/api/checkout",
    "/api/search",
    "/api/login",
    "/api/items/{id}",
    "/health",
];

fn hex(rng: &mut SmallRng, digits: usize) -> String {
    (0..digits)
        .map(|_| char::from(b"0123456789abcdef"[rng.random_range(0..16)]))
        .collect()
}

/// One request body of `n` JSON lines, as a busy service writes them:
/// mostly info, some warnings and errors, ids, HTTP fields and a message.
fn body(rng: &mut SmallRng, first: usize, n: usize, t0_ms: i64) -> String {
    let mut out = String::with_capacity(n * 360);
    for i in first..first + n {
        let roll = rng.random_range(0..100);
        let level = match roll {
            0..=2 => "error",
            3..=9 => "warn",
            _ => "info",
        };
        let service = SERVICES[rng.random_range(0..SERVICES.len())];
        let route = ROUTES[rng.random_range(0..ROUTES.len())];
        let user = rng.random_range(1..1_000_000u32);
        let ms = rng.random_range(1..3_000u32);
        let (message, error) = match level {
            "error" if roll == 0 => (
                format!("payment declined for user {user}: insufficient funds"),
                ",\"error\":{\"code\":\"insufficient_funds\"}",
            ),
            "error" => (
                format!("upstream timeout after {ms} ms calling inventory"),
                ",\"error\":{\"code\":\"timeout\"}",
            ),
            "warn" => (format!("slow request {route} took {ms} ms"), ""),
            _ => (
                format!("GET {route} completed in {ms} ms for user {user}"),
                "",
            ),
        };
        out.push_str(&format!(
            "{{\"timestamp\":{},\"level\":\"{level}\",\"service\":\"{service}\",\"host\":\"host-{:02}\",\"trace_id\":\"{}\",\"span_id\":\"{}\",\"user_id\":{user},\"http\":{{\"method\":\"GET\",\"route\":\"{route}\",\"status\":{}}},\"duration_ms\":{ms},\"message\":\"{message}\"{error}}}\n",
            t0_ms + i as i64,
            rng.random_range(0..40),
            hex(rng, 32),
            hex(rng, 16),
            if level == "error" { 500 } else { 200 },
        ));
    }
    out
}

fn cpu_self() -> f64 {
    usage(std::process::id()).map_or(0.0, |u| u.0)
}

fn ms_hist() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)
        .unwrap_or_else(|_| unreachable!("constant bounds"))
}

fn p(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// Index the bodies in this process: parse, index, commit as often as the
/// collector does,
/// no HTTP and no WAL. Returns (wall s, CPU s).
fn ceiling(
    bodies: &[String],
    dir: &std::path::Path,
    commit: Duration,
) -> anyhow::Result<(f64, f64)> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
    let config = LogConfig {
        write_ahead: false,
        commit_interval_ms: commit.as_millis() as i64,
        ..LogConfig::default()
    };
    let commit_ms = config.commit_interval_ms.max(1) as u64;
    let store = Arc::new(LogStore::open(dir, config, now)?);
    let done = Arc::new(AtomicBool::new(false));
    let committer = {
        let (store, done) = (store.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(commit_ms));
                let _ = store.commit();
            }
        })
    };
    let (cpu0, t) = (cpu_self(), Instant::now());
    for b in bodies {
        let (records, bad) =
            keel_logindex::logs::record::parse_json_lines(b.as_bytes(), now * 1_000_000);
        if !bad.is_empty() {
            bail!("the generator wrote bad lines: {}", bad[0]);
        }
        store.append(records, now)?;
    }
    store.commit()?;
    let (secs, cpu) = (t.elapsed().as_secs_f64(), cpu_self() - cpu0);
    done.store(true, Ordering::Relaxed);
    let _ = committer.join();
    Ok((secs, cpu))
}

async fn search(
    client: &reqwest::Client,
    api: &str,
    q: &str,
    start: f64,
    end: f64,
) -> anyhow::Result<usize> {
    let r: serde_json::Value = client
        .get(format!("{api}/api/v1/logs/search"))
        .query(&[
            ("q", q.to_owned()),
            ("start", format!("{start:.3}")),
            ("end", format!("{end:.3}")),
            ("limit", "100".to_owned()),
        ])
        .send()
        .await?
        .json()
        .await?;
    if r["status"] != "success" {
        bail!("search {q:?} failed: {r}");
    }
    Ok(r["data"]["records"].as_array().map_or(0, Vec::len))
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// Traces of 10 spans each (a server span and nine children), as OTLP
/// requests of `per_request` traces; returns the bodies and the trace ids.
fn traces(
    rng: &mut SmallRng,
    spans: usize,
    per_request: usize,
    t0_ns: u64,
) -> (Vec<Vec<u8>>, Vec<String>) {
    let n_traces = spans.div_ceil(10);
    let mut ids = Vec::with_capacity(n_traces);
    let mut bodies = Vec::new();
    let mut current: Vec<Span> = Vec::new();
    for t in 0..n_traces {
        let trace_id: Vec<u8> = (0..16).map(|_| rng.random()).collect();
        ids.push(trace_id.iter().map(|b| format!("{b:02x}")).collect());
        let root: Vec<u8> = (0..8).map(|_| rng.random()).collect();
        let start = t0_ns + t as u64 * 1_000_000;
        for s in 0..10u64 {
            let span_id = if s == 0 {
                root.clone()
            } else {
                (0..8).map(|_| rng.random()).collect()
            };
            current.push(Span {
                trace_id: trace_id.clone(),
                span_id,
                parent_span_id: if s == 0 { Vec::new() } else { root.clone() },
                name: if s == 0 {
                    "GET /api/cart".into()
                } else {
                    format!("SELECT items {s}")
                },
                kind: if s == 0 { 2 } else { 3 },
                start_time_unix_nano: start + s * 100_000,
                end_time_unix_nano: start + s * 100_000 + rng.random_range(50_000..5_000_000),
                attributes: vec![kv("db.system", "postgresql")],
                ..Default::default()
            });
        }
        if (t + 1) % per_request == 0 || t + 1 == n_traces {
            let req = ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![kv("service.name", SERVICES[t % SERVICES.len()])],
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        spans: std::mem::take(&mut current),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            };
            bodies.push(req.encode_to_vec());
        }
    }
    (bodies, ids)
}

/// Run `keel bench logs`.
pub fn run(args: LogsBenchArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut rng = SmallRng::seed_from_u64(7);
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
        // One line a millisecond, ending now.
        let t0 = now_ms - args.lines as i64;
        eprintln!("keel bench logs: generating {} lines", args.lines);
        let bodies: Vec<String> = (0..args.lines)
            .step_by(args.batch.max(1))
            .map(|first| body(&mut rng, first, args.batch.min(args.lines - first), t0))
            .collect();
        let raw_bytes: usize = bodies.iter().map(String::len).sum();

        // The ceiling runs before and after Keel; the better run counts
        // (these machines are noisy, and the better ceiling is the stricter).
        let run_ceiling = |bodies: &[String]| -> anyhow::Result<(f64, f64)> {
            eprintln!("  ceiling: indexing in process, no HTTP, no WAL");
            let dir = tempfile::tempdir()?;
            tokio::task::block_in_place(|| ceiling(bodies, dir.path(), args.commit_interval))
        };
        let first_ceiling = run_ceiling(&bodies)?;

        eprintln!("  Keel: POST /api/v1/logs to keel collector");
        let dir = tempfile::tempdir()?;
        let client = reqwest::Client::new();
        // The child reads its commit interval from the environment.
        let keel = start_keel_with(
            dir.path(),
            &client,
            &[(
                "KEEL_COLLECTOR__LOG_COMMIT_INTERVAL",
                humantime::format_duration(args.commit_interval).to_string(),
            )],
        )
        .await?;
        let api = keel.api.clone();
        let pid = keel.child.id();
        // Freshness probe: while ingest runs, a marker line every 250 ms and
        // the time until a search finds it.
        let running = Arc::new(AtomicBool::new(true));
        let probe = {
            let (client, api, running) = (client.clone(), api.clone(), running.clone());
            tokio::spawn(async move {
                let mut hist = ms_hist();
                let mut i = 0u64;
                while running.load(Ordering::Relaxed) {
                    i += 1;
                    let marker = format!("freshness{i}");
                    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
                    let sent = Instant::now();
                    let line = format!("{{\"message\":\"{marker}\",\"service\":\"probe\"}}\n");
                    if client.post(format!("{api}/api/v1/logs")).body(line).send().await.is_err() {
                        break;
                    }
                    while search(&client, &api, &marker, now - 60.0, now + 60.0).await.unwrap_or(0) == 0 {
                        if sent.elapsed() > Duration::from_secs(30) {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    hist.saturating_record(sent.elapsed().as_micros() as u64);
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                hist
            })
        };
        let (cpu0, _) = usage(pid)?;
        let t = Instant::now();
        let mut sends = tokio::task::JoinSet::new();
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let bodies = Arc::new(bodies);
        for _ in 0..2 {
            let (client, api, next, bodies) = (client.clone(), api.clone(), next.clone(), bodies.clone());
            sends.spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(b) = bodies.get(i) else { return Ok::<(), anyhow::Error>(()) };
                    let r = client.post(format!("{api}/api/v1/logs")).body(b.clone()).send().await?;
                    if !r.status().is_success() {
                        bail!("a batch was refused: {} {}", r.status(), r.text().await.unwrap_or_default());
                    }
                }
            });
        }
        while let Some(r) = sends.join_next().await {
            r??;
        }
        let k_secs = t.elapsed().as_secs_f64();
        running.store(false, Ordering::Relaxed);
        let fresh = probe.await?;
        // Everything searchable before the latency figures.
        let (start_s, end_s) = (t0 as f64 / 1000.0 - 1.0, now_ms as f64 / 1000.0 + 1.0);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let n: u64 = {
                let r: serde_json::Value = client
                    .get(format!("{api}/api/v1/logs/histogram"))
                    .query(&[("q", "-service:probe"), ("start", &format!("{start_s:.3}")), ("end", &format!("{end_s:.3}")), ("step", &format!("{}", (end_s - start_s).ceil() as u64 + 1))])
                    .send()
                    .await?
                    .json()
                    .await?;
                r["data"]["buckets"].as_array().into_iter().flatten().map(|b| b[1].as_u64().unwrap_or(0)).sum()
            };
            if n >= args.lines as u64 {
                break;
            }
            // (CPU is read once all is searchable, so it includes the last
            // commit, as the ceiling's does.)
            if Instant::now() > deadline {
                bail!("only {n} of {} lines searchable after 60 s", args.lines);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (cpu1, _) = usage(pid)?;
        let k_cpu = cpu1 - cpu0;
        let index_bytes = dir_bytes(&dir.path().join("logs"));

        eprintln!("  searching");
        let window_end = t0 as f64 / 1000.0 + args.lines as f64 / 1000.0;
        let queries: [(&str, &str, f64); 5] = [
            ("term", "level:error", start_s),
            ("phrase", "\"upstream timeout\"", start_s),
            ("boolean", "level:error AND service:payment AND \"timeout\"", start_s),
            ("attribute", "attributes.error.code:insufficient_funds", start_s),
            ("5-minute window", "*", window_end - 300.0),
        ];
        let mut all = ms_hist();
        let mut rows = Vec::new();
        for (kind, q, from) in queries {
            let mut h = ms_hist();
            let mut hits = 0;
            for _ in 0..args.queries {
                let t = Instant::now();
                hits = search(&client, &api, q, from, end_s).await?;
                let us = t.elapsed().as_micros() as u64;
                h.saturating_record(us);
                all.saturating_record(us);
            }
            rows.push((kind, q, hits, p(&h, 0.5), p(&h, 0.99)));
        }

        eprintln!("  sending {} spans", args.spans);
        let (trace_bodies, ids) = traces(&mut rng, args.spans, 100, (t0 as u64) * 1_000_000);
        for b in &trace_bodies {
            let r = client
                .post(format!("{}/v1/traces", keel.otlp))
                .header("content-type", "application/x-protobuf")
                .body(b.clone())
                .send()
                .await?;
            if !r.status().is_success() {
                bail!("spans refused: {}", r.status());
            }
        }
        // The last trace searchable, then lookups of random ones.
        let last = ids.last().context("no traces")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while client.get(format!("{api}/api/v1/traces/{last}")).send().await?.status() != 200 {
            if Instant::now() > deadline {
                bail!("the last trace never became searchable");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut th = ms_hist();
        for _ in 0..args.queries * 4 {
            let id = &ids[rng.random_range(0..ids.len())];
            let t = Instant::now();
            let r: serde_json::Value = client.get(format!("{api}/api/v1/traces/{id}")).send().await?.json().await?;
            th.saturating_record(t.elapsed().as_micros() as u64);
            if r["data"]["spans"].as_array().map_or(0, Vec::len) != 10 {
                bail!("trace {id} came back incomplete: {r}");
            }
        }
        drop(keel);
        let second_ceiling = run_ceiling(&bodies)?;
        let (c_secs, c_cpu) = if second_ceiling.1 < first_ceiling.1 {
            second_ceiling
        } else {
            first_ceiling
        };

        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let mb = raw_bytes as f64 / 1e6;
        let n = args.lines as f64;
        println!("machine: {cores} cores, {}; {} lines, {:.0} MB of JSON ({:.0} B a line)", std::env::consts::ARCH, args.lines, mb, raw_bytes as f64 / n);
        println!("{:<44} {:>14} {:>14} {:>8}", "", "Keel", "ceiling", "ratio");
        let row = |name: &str, k: f64, c: f64| println!("{name:<44} {k:>14.0} {c:>14.0} {:>7.0}%", 100.0 * k / c.max(1e-9));
        row("docs / CPU-second (per core)", n / k_cpu.max(1e-9), n / c_cpu.max(1e-9));
        row("KB of JSON / CPU-second (per core)", raw_bytes as f64 / 1e3 / k_cpu.max(1e-9), raw_bytes as f64 / 1e3 / c_cpu.max(1e-9));
        row("docs / wall second", n / k_secs, n / c_secs);
        println!("searchable after (ms), at full ingest rate: p50 {:.0}, p99 {:.0}, max {:.0} ({} probes)", p(&fresh, 0.5), p(&fresh, 0.99), fresh.max() as f64 / 1000.0, fresh.len());
        println!("search over {} lines, limit 100 (ms):", args.lines);
        for (kind, q, hits, p50, p99) in rows {
            println!("  {kind:<16} p50 {p50:>7.1}  p99 {p99:>7.1}  ({hits} shown)  {q}");
        }
        println!("  all searches     p99 {:.1}", p(&all, 0.99));
        println!("trace by id over {} spans (ms): p50 {:.1}, p99 {:.1}", ids.len() * 10, p(&th, 0.5), p(&th, 0.99));
        println!("log index on disk: {:.0} MB = {:.2} of the raw JSON", index_bytes as f64 / 1e6, index_bytes as f64 / raw_bytes as f64);
        Ok(())
    })
}
