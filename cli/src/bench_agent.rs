//! `keel bench agent`: what the agent costs at a steady load, and its
//! ceiling from file to collector acknowledgement.
//!
//! Steady load: a `keel collector` and a `keel agent` as child processes;
//! the bench appends JSON log lines to a file at `--lines-per-second` and
//! serves `--series` series on a Prometheus endpoint the agent scrapes
//! every `--scrape-interval`; after a warm-up, the agent's CPU (from
//! /proc/<pid>/stat) over `--seconds` as a share of one core, and its peak
//! RSS. Ceiling: `--ceiling-lines` lines written before a fresh agent
//! starts, and the time and agent CPU until the collector acknowledged
//! all of them (the agent's `keel_agent_sent_records_total`).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::bench_metrics::{start_keel, usage};
use keel_testkit::Reaped;
use keel_testkit::free_port;

/// Flags of `keel bench agent`.
#[derive(clap::Args)]
pub struct AgentBenchArgs {
    /// Log lines appended per second during the steady run.
    #[arg(long, default_value_t = 5_000)]
    lines_per_second: u64,
    /// Series on the scraped endpoint.
    #[arg(long, default_value_t = 10_000)]
    series: usize,
    /// Scrape interval of the endpoint.
    #[arg(long, default_value = "10s", value_parser = keel_core::duration::parse)]
    scrape_interval: Duration,
    /// Length of the measured steady run, seconds (after a 10 s warm-up).
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Lines for the ceiling run.
    #[arg(long, default_value_t = 1_000_000)]
    ceiling_lines: u64,
}

fn line(i: u64) -> String {
    format!(
        "{{\"timestamp\":\"2026-12-01T10:00:00.{:03}Z\",\"level\":\"info\",\"service\":\"bench\",\"route\":\"/api/products/{{id}}\",\"status\":200,\"duration_ms\":{},\"user_id\":{},\"message\":\"GET /api/products/{} completed\"}}\n",
        i % 1000,
        i % 300,
        i * 7919 % 1_000_000,
        i % 1000
    )
}

pub(crate) fn start_agent(dir: &Path, config: &Path) -> anyhow::Result<(Reaped, String)> {
    let listen = free_port()?;
    let child = Command::new(std::env::current_exe()?)
        .args(["--config"])
        .arg(config)
        .args(["agent", "run", "--listen", &format!("127.0.0.1:{listen}")])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting keel agent")?;
    Ok((Reaped(child), format!("http://127.0.0.1:{listen}")))
}

async fn sent_logs(client: &reqwest::Client, agent: &str) -> u64 {
    let Ok(r) = client.get(format!("{agent}/metrics")).send().await else {
        return 0;
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("keel_agent_sent_records_total{") && l.contains("signal=\"logs\"}"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Serve `series` series in the text format; values move every scrape.
pub(crate) async fn serve_metrics(series: usize) -> anyhow::Result<u16> {
    let scrapes = Arc::new(AtomicU64::new(0));
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let n = scrapes.fetch_add(1, Ordering::Relaxed);
            async move {
                let mut out = String::with_capacity(series * 90);
                out.push_str("# TYPE bench_requests_total counter\n");
                for i in 0..series {
                    out.push_str(&format!(
                        "bench_requests_total{{instance_id=\"i-{:05}\",route=\"/r{}\",code=\"{}\"}} {}\n",
                        i / 50,
                        i % 25,
                        if i % 2 == 0 { 200 } else { 500 },
                        n * (i as u64 % 97 + 1)
                    ));
                }
                out
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = l.local_addr()?.port();
    tokio::spawn(async move { axum::serve(l, app).await });
    Ok(port)
}

fn write_config(
    path: &Path,
    collector: &str,
    data: &Path,
    logs: &Path,
    scrape: Option<(u16, Duration)>,
) -> anyhow::Result<()> {
    let mut y = format!(
        "agent:\n  collector: {collector}\n  data_dir: {}\n  otlp_receiver: \"\"\n  host_metrics:\n    enabled: false\n  logs:\n    - path: {}\n",
        data.display(),
        logs.display()
    );
    if let Some((port, every)) = scrape {
        y.push_str(&format!(
            "  scrape:\n    - job: bench\n      targets: [http://127.0.0.1:{port}/metrics]\n      interval: {}\n      timeout: {}\n",
            keel_core::duration::format(every),
            keel_core::duration::format(every.min(Duration::from_secs(5)))
        ));
    }
    std::fs::write(path, y).with_context(|| format!("writing {}", path.display()))
}

pub fn run(args: AgentBenchArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(bench(args))
}

async fn bench(args: AgentBenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let client = reqwest::Client::new();
    println!("keel bench agent: collector and agent as child processes");
    let collector = start_keel(dir.path(), &client).await?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    // Steady load.
    let log = dir.path().join("steady.log");
    std::fs::File::create(&log)?;
    let port = serve_metrics(args.series).await?;
    let config = dir.path().join("steady.yaml");
    write_config(
        &config,
        &collector.otlp,
        &dir.path().join("agent-steady"),
        &log,
        Some((port, args.scrape_interval)),
    )?;
    let (agent, agent_url) = start_agent(dir.path(), &config)?;
    let pid = agent.0.id();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let log = log.clone();
        let rate = args.lines_per_second;
        std::thread::spawn(move || -> anyhow::Result<u64> {
            let mut f = std::fs::OpenOptions::new().append(true).open(&log)?;
            let start = Instant::now();
            let mut i = 0u64;
            // Every 10 ms, the lines due by then.
            while !stop.load(Ordering::Relaxed) {
                let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
                let mut chunk = String::new();
                while i < due {
                    chunk.push_str(&line(i));
                    i += 1;
                }
                f.write_all(chunk.as_bytes())?;
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(i)
        })
    };
    println!(
        "  steady: {} lines/s and {} series every {}, 10 s warm-up, {} s measured",
        args.lines_per_second,
        args.series,
        keel_core::duration::format(args.scrape_interval),
        args.seconds
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (cpu0, _) = usage(pid)?;
    let t0 = Instant::now();
    let mut peak_rss = 0f64;
    while t0.elapsed() < Duration::from_secs(args.seconds) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (_, rss) = usage(pid)?;
        peak_rss = peak_rss.max(rss);
    }
    let (cpu1, _) = usage(pid)?;
    let wall = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let written = writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))??;
    let deadline = Instant::now() + Duration::from_secs(60);
    while sent_logs(&client, &agent_url).await < written {
        if Instant::now() > deadline {
            bail!("the agent did not ship every steady line");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(agent);
    let steady_cpu = (cpu1 - cpu0) / wall;

    // Ceiling.
    let big = dir.path().join("ceiling.log");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&big)?);
        for i in 0..args.ceiling_lines {
            f.write_all(line(i).as_bytes())?;
        }
        f.flush()?;
    }
    let bytes = std::fs::metadata(&big)?.len();
    let config = dir.path().join("ceiling.yaml");
    write_config(
        &config,
        &collector.otlp,
        &dir.path().join("agent-ceiling"),
        &big,
        None,
    )?;
    println!(
        "  ceiling: {} lines ({} MB) in a file before the agent starts",
        args.ceiling_lines,
        bytes / 1_000_000
    );
    let t0 = Instant::now();
    let (agent, agent_url) = start_agent(dir.path(), &config)?;
    let pid = agent.0.id();
    let mut cpu = 0.0;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Ok((c, _)) = usage(pid) {
            cpu = c;
        }
        if sent_logs(&client, &agent_url).await >= args.ceiling_lines {
            break;
        }
        if Instant::now() > deadline {
            bail!("the ceiling run did not finish in 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    drop(agent);
    drop(collector);

    println!("machine: {cores} cores, {}", std::env::consts::ARCH);
    println!("{:<52} {:>12} {:>12}", "", "Keel agent", "goal");
    println!(
        "{:<52} {:>11.2}% {:>12}",
        "CPU, share of one core (steady)",
        steady_cpu * 100.0,
        "≤ 2 %"
    );
    println!(
        "{:<52} {:>10.1}MB {:>12}",
        "peak RSS (steady)",
        peak_rss / 1e6,
        "≤ 40 MB"
    );
    println!(
        "{:<52} {:>12.0}",
        "ceiling: lines / CPU-second of the agent",
        args.ceiling_lines as f64 / cpu.max(1e-9)
    );
    println!(
        "{:<52} {:>12.1}",
        "ceiling: MB / CPU-second of the agent",
        bytes as f64 / 1e6 / cpu.max(1e-9)
    );
    println!(
        "{:<52} {:>12.0}",
        "ceiling: lines / wall second, file to acknowledgement",
        args.ceiling_lines as f64 / secs
    );
    println!(
        "note: no Vector or OpenTelemetry Collector package is in Debian, PyPI or npm here; published anchors: the OpenTelemetry Collector sizes 10,000 log records/s per core, Grafana Alloy one core and 120 MiB per 1 MiB/s of logs, Vector's harness 77 MiB/s file-to-TCP on 2 vCPU"
    );
    Ok(())
}
