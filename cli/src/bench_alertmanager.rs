//! `keel bench alertmanager`: how many alerts a second Keel and
//! Prometheus each send to a real Alertmanager (Debian's
//! `prometheus-alertmanager`) before either side falls behind, in the
//! same run.
//!
//! An exporter serves `bench_load{i}` for N series; each system scrapes
//! it every second, evaluates `bench_load > 1` every second and resends
//! every firing alert every second (Keel: `alertmanager_resend_delay:
//! 1s`; Prometheus: `--rules.alert.resend-delay=1s`), so it should send
//! N alerts a second. Over a measured window each system's own counters
//! (`prometheus_notifications_sent_total`, `_dropped_total`, and
//! `_queue_length`) and a fresh Alertmanager's
//! `alertmanager_alerts_received_total` say whether it kept up: it did
//! when it sent at least 95 % of N a second, dropped nothing, and the
//! Alertmanager received what it sent.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use keel_alerting::notify::NotifyConfig;
use keel_alerting::rules::RulesConfig;
use keel_collector::server::CollectorConfig;
use keel_core::clock::{SharedClock, SystemClock};
use keel_testkit::free_port;

/// Flags of `keel bench alertmanager`.
#[derive(clap::Args)]
pub struct AlertmanagerBenchArgs {
    /// Firing alerts, one run each (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,20000")]
    alerts: Vec<usize>,
    /// The measured window, after every alert fires.
    #[arg(long, default_value = "10s", value_parser = keel_core::duration::parse)]
    window: Duration,
}

/// The exporter: `n` series above the threshold.
async fn exporter(n: usize) -> anyhow::Result<u16> {
    let body: Arc<String> = Arc::new({
        let mut out = String::from("# TYPE bench_load gauge\n");
        for i in 0..n {
            out.push_str(&format!("bench_load{{i=\"{i}\"}} 2\n"));
        }
        out
    });
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let body = body.clone();
            async move { (*body).clone() }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = l.local_addr()?.port();
    tokio::spawn(async move { axum::serve(l, app).await });
    Ok(port)
}

/// A fresh Alertmanager with a receiver that sends nothing.
async fn alertmanager(dir: &Path) -> anyhow::Result<keel_testkit::server::Server> {
    std::fs::create_dir_all(dir)?;
    let port = free_port()?;
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        "route:\n  receiver: none\n  group_by: [alertname]\nreceivers:\n  - name: none\n",
    )?;
    Ok(keel_testkit::server::Server::start(
        "prometheus-alertmanager",
        &[
            format!("--config.file={}", config.display()),
            format!("--storage.path={}", dir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--cluster.listen-address=".into(),
        ],
        port,
        "/-/ready",
        &dir.join("alertmanager.stderr"),
    )
    .await?)
}

/// The sum of every sample of `name` in an exposition.
fn total(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn metrics(client: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    Ok(client
        .get(format!("{url}/metrics"))
        .send()
        .await?
        .text()
        .await?)
}

/// One system's window: alerts sent, dropped, and received by its
/// Alertmanager, a second.
#[derive(Debug, Default, Clone, Copy)]
struct Rates {
    sent: f64,
    dropped: f64,
    received: f64,
}

/// Wait until `sender` has sent `n` alerts, then measure over `window`.
async fn measure(
    client: &reqwest::Client,
    sender: &str,
    am: &str,
    n: usize,
    window: Duration,
) -> anyhow::Result<Rates> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let m = metrics(client, sender).await?;
        if total(&m, "prometheus_notifications_sent_total") >= n as f64 {
            break;
        }
        if Instant::now() > deadline {
            anyhow::bail!("{sender} did not send {n} alerts in 120 s");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let read = async || -> anyhow::Result<(f64, f64, f64, Instant)> {
        let m = metrics(client, sender).await?;
        let a = metrics(client, am).await?;
        Ok((
            total(&m, "prometheus_notifications_sent_total"),
            total(&m, "prometheus_notifications_dropped_total"),
            total(&a, "alertmanager_alerts_received_total"),
            Instant::now(),
        ))
    };
    let (s0, d0, r0, t0) = read().await?;
    tokio::time::sleep(window).await;
    let (s1, d1, r1, t1) = read().await?;
    let secs = (t1 - t0).as_secs_f64();
    Ok(Rates {
        sent: (s1 - s0) / secs,
        dropped: (d1 - d0) / secs,
        received: (r1 - r0) / secs,
    })
}

/// Keel, in this process: a collector whose rule fires `n` alerts, fed
/// by an agent scraping the exporter every second.
async fn keel(
    dir: &Path,
    exporter: u16,
    am: &str,
    n: usize,
    window: Duration,
) -> anyhow::Result<Rates> {
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules)?;
    std::fs::write(
        rules.join("bench.yml"),
        "groups:\n- name: bench\n  interval: 1s\n  rules:\n  - alert: BenchLoad\n    expr: bench_load > 1\n    severity: P2\n",
    )?;
    let config = CollectorConfig {
        data_dir: dir.join("collector"),
        otlp_http_port: 0,
        otlp_grpc_port: 0,
        api_port: 0,
        rules: RulesConfig {
            files: vec![rules],
            ..RulesConfig::default()
        },
        notify: NotifyConfig {
            alertmanagers: vec![am.to_owned()],
            alertmanager_resend_delay: Duration::from_secs(1),
            ..NotifyConfig::default()
        },
        ..CollectorConfig::default()
    };
    let clock: SharedClock = Arc::new(SystemClock);
    let collector = keel_collector::server::start(&config, clock.clone()).await?;
    let agent = keel_agent::run::Agent::start(
        keel_agent::config::AgentConfig {
            collector: format!("http://{}", collector.otlp_http),
            data_dir: dir.join("agent"),
            listen: "127.0.0.1:0".into(),
            otlp_receiver: String::new(),
            host_metrics: keel_agent::config::HostMetricsConfig {
                enabled: false,
                ..Default::default()
            },
            scrape: vec![keel_agent::config::ScrapeJob {
                job: "bench".into(),
                targets: vec![format!("http://127.0.0.1:{exporter}/metrics")],
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
                ..Default::default()
            }],
            ..Default::default()
        },
        clock,
    )
    .await?;
    let client = reqwest::Client::new();
    let rates = measure(&client, &format!("http://{}", collector.api), am, n, window).await;
    drop(agent);
    drop(collector);
    rates
}

/// Prometheus, scraping the exporter every second and evaluating the
/// same rule every second.
async fn prometheus(
    dir: &Path,
    exporter: u16,
    am: &str,
    n: usize,
    window: Duration,
) -> anyhow::Result<Rates> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("rules.yml"),
        "groups:\n- name: bench\n  rules:\n  - alert: BenchLoad\n    expr: bench_load > 1\n",
    )?;
    let rules = dir.join("rules.yml");
    let am_host = am.trim_start_matches("http://").to_owned();
    let prom = keel_testkit::server::Server::prometheus(
        dir,
        |_| {
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: ['{}']\nalerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{am_host}']\nscrape_configs:\n  - job_name: bench\n    static_configs:\n      - targets: ['127.0.0.1:{exporter}']\n",
                rules.display()
            )
        },
        &["--rules.alert.resend-delay=1s"],
    )
    .await?;
    let client = reqwest::Client::new();
    measure(&client, &prom.url, am, n, window).await
}

pub fn run(args: AlertmanagerBenchArgs) -> anyhow::Result<()> {
    for bin in ["prometheus-alertmanager", "prometheus"] {
        Command::new(bin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .with_context(|| format!("{bin} (apt install prometheus-alertmanager prometheus)"))?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        println!(
            "keel bench alertmanager: N firing alerts, each resent every second to a real Alertmanager; {} window",
            humantime::format_duration(args.window)
        );
        println!(
            "{:>8} {:>32} {:>32}",
            "alerts", "Keel sent/s dropped/s AM got/s", "Prometheus sent/s dropped/s AM got/s"
        );
        for &n in &args.alerts {
            let dir = tempfile::tempdir()?;
            let port = exporter(n).await?;
            let mut row = Vec::new();
            for who in ["keel", "prometheus"] {
                let am = alertmanager(&dir.path().join(format!("am-{who}"))).await?;
                let r = if who == "keel" {
                    keel(&dir.path().join("keel"), port, &am.url, n, args.window).await
                } else {
                    prometheus(&dir.path().join("prometheus"), port, &am.url, n, args.window).await
                };
                row.push(match r {
                    Ok(r) => format!("{:>10.0} {:>10.0} {:>10.0}", r.sent, r.dropped, r.received),
                    Err(e) => format!("{:>32}", format!("failed: {e}")),
                });
                drop(am);
            }
            println!("{n:>8} {:>32} {:>32}", row[0], row[1]);
        }
        println!("kept up: sent ≥ 95 % of N a second, nothing dropped, the Alertmanager got what was sent");
        Ok::<(), anyhow::Error>(())
    })?;
    Ok(())
}
