//! `keel bench host`: what the agent costs on a host beside the tools it
//! replaces, each measured alone in the same run (CPU as a share of one
//! core from /proc/<pid>/stat, peak resident memory):
//!
//! The agent is `keel-agent`, the lean binary the .deb runs.
//!
//! - host metrics: the agent with its node_exporter-compatible collectors
//!   (shipping to a `keel collector`) against a real node_exporter with
//!   the same collectors, scraped at the same interval;
//! - scraping: the agent scraping an endpoint of `--series` series and
//!   shipping it, against a real `vmagent` scraping the same endpoint and
//!   remote-writing it to the same collector.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::bench_agent::serve_metrics;
use crate::bench_metrics::{start_keel, usage};
use keel_agent::host::NODE_EXPORTER_COLLECTORS as COLLECTORS;
use keel_testkit::{Reaped, free_port};

/// Flags of `keel bench host`.
#[derive(clap::Args)]
pub struct HostBenchArgs {
    /// Series on the scraped endpoint.
    #[arg(long, default_value_t = 10_000)]
    series: usize,
    /// How often host metrics are collected and the endpoint scraped.
    #[arg(long, default_value = "2s", value_parser = keel_core::duration::parse)]
    interval: Duration,
    /// Measured seconds of each run (after a 10 s warm-up).
    #[arg(long, default_value_t = 40)]
    seconds: u64,
}

/// One process's cost over a run.
struct Cost {
    /// Share of one core.
    cpu: f64,
    /// Peak resident memory, MiB.
    rss_mib: f64,
    /// Peak resident memory of its own (heap, stacks: not its binary's
    /// pages), MiB.
    anon_mib: f64,
}

/// `pid`'s cost over `seconds` after a 10 s warm-up; `tick` runs every
/// `every` meanwhile (a scrape of node_exporter).
async fn measure(
    pid: u32,
    seconds: u64,
    every: Duration,
    mut tick: impl AsyncFnMut(),
) -> anyhow::Result<Cost> {
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_secs(10) {
        tick().await;
        tokio::time::sleep(every).await;
    }
    let (cpu0, _) = usage(pid)?;
    let t0 = Instant::now();
    let (mut peak, mut peak_anon) = (0f64, 0f64);
    let id = pid.to_string();
    while t0.elapsed() < Duration::from_secs(seconds) {
        tick().await;
        tokio::time::sleep(every).await;
        let (_, rss) = usage(pid)?;
        peak = peak.max(rss);
        peak_anon = peak_anon.max(keel_core::procfs::anon_bytes(&id).unwrap_or(0) as f64);
    }
    let (cpu1, _) = usage(pid)?;
    const MIB: f64 = 1024.0 * 1024.0;
    Ok(Cost {
        cpu: (cpu1 - cpu0) / t0.elapsed().as_secs_f64(),
        rss_mib: peak / MIB,
        anon_mib: peak_anon / MIB,
    })
}

/// The lean agent binary, `keel-agent`, built beside this one, running
/// `config` (as the .deb's unit runs it).
fn start_agent(dir: &Path, config: &Path) -> anyhow::Result<Reaped> {
    let bin = std::env::current_exe()?.with_file_name("keel-agent");
    let listen = format!("127.0.0.1:{}", free_port()?);
    spawn(
        &bin.display().to_string(),
        &[
            "--config".to_owned(),
            config.display().to_string(),
            "run".to_owned(),
            "--listen".to_owned(),
            listen,
        ],
        dir,
    )
}

/// Start `bin args` quietly, in `dir`.
fn spawn(bin: &str, args: &[String], dir: &Path) -> anyhow::Result<Reaped> {
    let child = Command::new(bin)
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| {
            format!("{bin} (apt install prometheus-node-exporter victoria-metrics)")
        })?;
    Ok(Reaped(child))
}

/// Series the collector holds under `selector` now.
async fn count(client: &reqwest::Client, api: &str, selector: &str) -> f64 {
    let q = format!("count({selector})");
    let Ok(r) = client
        .get(format!("{api}/api/v1/query"))
        .query(&[("query", q.as_str())])
        .send()
        .await
    else {
        return 0.0;
    };
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    v["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0)
}

/// Run `keel bench host`.
pub fn run(args: HostBenchArgs) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?
        .block_on(bench(args))
}

async fn bench(args: HostBenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let client = reqwest::Client::new();
    let data = dir.path().join("collector");
    std::fs::create_dir_all(&data)?;
    let collector = start_keel(&data, &client).await?;
    let every = keel_core::duration::format(args.interval);
    println!(
        "keel bench host: each measured alone for {} s after a 10 s warm-up, every {every}",
        args.seconds
    );

    // Host metrics: the agent's collectors against node_exporter's.
    let config = dir.path().join("host.yaml");
    std::fs::write(
        &config,
        format!(
            "agent:\n  collector: {}\n  data_dir: {}\n  otlp_receiver: \"\"\n  host_metrics:\n    enabled: true\n    interval: {every}\n",
            collector.otlp,
            dir.path().join("agent-host").display()
        ),
    )?;
    let agent = start_agent(dir.path(), &config)?;
    let agent_host = measure(agent.0.id(), args.seconds, args.interval, async || {}).await?;
    drop(agent);
    if count(&client, &collector.api, "node_network_info").await < 1.0 {
        bail!("the agent's host metrics did not reach the collector");
    }
    let port = free_port()?;
    let mut node_args = vec![
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--collector.disable-defaults".to_owned(),
    ];
    node_args.extend(COLLECTORS.iter().map(|c| format!("--collector.{c}")));
    let node = spawn("prometheus-node-exporter", &node_args, dir.path())?;
    let url = format!("http://127.0.0.1:{port}/metrics");
    let mut scraped = 0u64;
    let node_host = measure(node.0.id(), args.seconds, args.interval, async || {
        if let Ok(r) = client.get(&url).send().await
            && r.text().await.is_ok()
        {
            scraped += 1;
        }
    })
    .await?;
    drop(node);
    if scraped == 0 {
        bail!("node_exporter was never scraped");
    }

    // Scraping: the agent against vmagent, the same endpoint and collector.
    let target = serve_metrics(args.series).await?;
    let config = dir.path().join("scrape.yaml");
    std::fs::write(
        &config,
        format!(
            "agent:\n  collector: {}\n  data_dir: {}\n  otlp_receiver: \"\"\n  host_metrics:\n    enabled: false\n  scrape:\n    - job: agent\n      targets: [http://127.0.0.1:{target}/metrics]\n      interval: {every}\n      timeout: {every}\n",
            collector.otlp,
            dir.path().join("agent-scrape").display()
        ),
    )?;
    let agent = start_agent(dir.path(), &config)?;
    let agent_scrape = measure(agent.0.id(), args.seconds, args.interval, async || {}).await?;
    drop(agent);
    let vm_config = dir.path().join("vmagent.yml");
    std::fs::write(
        &vm_config,
        format!(
            "scrape_configs:\n  - job_name: vmagent\n    scrape_interval: {every}\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
        ),
    )?;
    let vm_port = free_port()?;
    let vm = spawn(
        "vmagent",
        &[
            format!("-promscrape.config={}", vm_config.display()),
            format!("-remoteWrite.url={}/api/v1/write", collector.api),
            format!("-httpListenAddr=127.0.0.1:{vm_port}"),
            format!(
                "-remoteWrite.tmpDataPath={}",
                dir.path().join("vmagent-data").display()
            ),
            "-loggerLevel=ERROR".to_owned(),
        ],
        dir.path(),
    )?;
    let vm_scrape = measure(vm.0.id(), args.seconds, args.interval, async || {}).await?;
    drop(vm);
    for job in ["agent", "vmagent"] {
        let n = count(
            &client,
            &collector.api,
            &format!("bench_requests_total{{job=\"{job}\"}}"),
        )
        .await;
        if n < args.series as f64 {
            bail!(
                "the collector holds {n} of {} series from {job}: it did not ship them all",
                args.series
            );
        }
    }
    drop(collector);

    println!(
        "  {:<44} {:>10} {:>10} {:>14}",
        "", "CPU (core)", "peak RSS", "of it its own"
    );
    for (what, c) in [
        ("host metrics: keel agent", &agent_host),
        ("host metrics: node_exporter 1.5", &node_host),
        (
            &format!("{} series scraped: keel agent", args.series) as &str,
            &agent_scrape,
        ),
        (
            &format!("{} series scraped: vmagent", args.series),
            &vm_scrape,
        ),
    ] {
        println!(
            "  {what:<44} {:>10.4} {:>6.1} MiB {:>10.1} MiB",
            c.cpu, c.rss_mib, c.anon_mib
        );
    }
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    println!(
        "  ratios (agent / peer, goal ≤ 1): host CPU {:.2}, RSS {:.2} (own {:.2}); scrape CPU {:.2}, RSS {:.2} (own {:.2})",
        ratio(agent_host.cpu, node_host.cpu),
        ratio(agent_host.rss_mib, node_host.rss_mib),
        ratio(agent_host.anon_mib, node_host.anon_mib),
        ratio(agent_scrape.cpu, vm_scrape.cpu),
        ratio(agent_scrape.rss_mib, vm_scrape.rss_mib),
        ratio(agent_scrape.anon_mib, vm_scrape.anon_mib),
    );
    Ok(())
}
