//! `keel bench alerts`: alert latency, from the moment a metric crosses
//! its threshold in an exporter to the page accepted by a real SMTP
//! server (Python's aiosmtpd: `pip install aiosmtpd`), through each
//! system's real ingest path, on the same input in the same run:
//!
//! - Keel with its shipped `keel up` settings: the agent scrapes every
//!   1 s and ships at once, the collector evaluates the P0 group every
//!   1 s, P0 pages with no group wait;
//! - Prometheus + Alertmanager (Debian's `prometheus`,
//!   `prometheus-alertmanager`) with their defaults: 1 m scrape and
//!   evaluation, 30 s `group_wait`;
//! - the same tuned: 5 s scrape and evaluation, 0 s `group_wait`.
//!
//! One exporter serves `bench_errors{round="k"}`; each round (after a
//! random pause, so crossings fall anywhere in the scrape cycles) sets a
//! new round's series above the threshold (rule `bench_errors > 1`,
//! `for: 0`) and waits for every system's email naming that round. Each
//! system groups by `[alertname, round]` (the bench's one departure from
//! Alertmanager's defaults), so every round is a new group and pays the
//! group wait, as a new outage does.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use keel_alerting::notify::{EmailConfig, NotifyConfig};
use keel_alerting::rules::RulesConfig;
use keel_collector::server::CollectorConfig;
use keel_core::clock::{SharedClock, SystemClock};
use rand::{Rng as _, SeedableRng as _};

use keel_testkit::smtp::Smtp;
use keel_testkit::{Reaped, free_port, listening};

/// Flags of `keel bench alerts`.
#[derive(clap::Args)]
pub struct AlertsBenchArgs {
    /// Rounds (each a new alert every system must page for).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Measure Keel only (no Prometheus or Alertmanager needed).
    #[arg(long)]
    keel_only: bool,
    /// Leave out Prometheus + Alertmanager at their defaults (a round
    /// then takes seconds rather than a minute and a half).
    #[arg(long)]
    no_defaults: bool,
}

/// A real SMTP server on a free port.
async fn smtp() -> anyhow::Result<Smtp> {
    Ok(Smtp::start(free_port()?).await?)
}

/// The exporter: `bench_errors{round}` at the values set.
type Values = Arc<Mutex<BTreeMap<usize, f64>>>;

async fn exporter(values: Values) -> anyhow::Result<u16> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let v = values.clone();
            async move {
                let mut out = String::from("# TYPE bench_errors gauge\n");
                for (round, value) in v.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                    out.push_str(&format!("bench_errors{{round=\"{round}\"}} {value}\n"));
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

/// One system under test: its name, its SMTP server, what keeps it up.
struct System {
    name: &'static str,
    smtp: Smtp,
    latencies: Vec<Duration>,
    _keep: Vec<Reaped>,
}

/// Keel as `keel up` ships it: agent scraping every 1 s, the P0 group
/// evaluated every 1 s, Keel's default notify settings.
async fn keel(
    dir: &Path,
    exporter: u16,
) -> anyhow::Result<(System, std::net::SocketAddr, Box<dyn std::any::Any>)> {
    let smtp = smtp().await?;
    let rules = dir.join("keel-rules");
    std::fs::create_dir_all(&rules)?;
    std::fs::write(
        rules.join("bench.yml"),
        format!(
            "groups:\n- name: bench\n  interval: {}\n  rules:\n  - alert: BenchErrors\n    expr: bench_errors > 1\n    severity: P0\n    annotations: {{summary: 'bench round {{{{ $labels.round }}}}.'}}\n",
            humantime::format_duration(crate::up::shipped_p0_interval()?)
        ),
    )?;
    let config = CollectorConfig {
        data_dir: dir.join("keel-collector"),
        otlp_http_port: 0,
        otlp_grpc_port: 0,
        api_port: 0,
        rules: RulesConfig {
            files: vec![rules],
            ..RulesConfig::default()
        },
        notify: NotifyConfig {
            email: EmailConfig {
                smtp_port: smtp.port,
                to: vec!["oncall@example.com".into()],
                ..EmailConfig::default()
            },
            group_by: vec!["alertname".into(), "round".into()],
            ..NotifyConfig::default()
        },
        ..CollectorConfig::default()
    };
    let clock: SharedClock = Arc::new(SystemClock);
    let collector = keel_collector::server::start(&config, clock.clone()).await?;
    let agent_config = keel_agent::config::AgentConfig {
        collector: format!("http://{}", collector.otlp_http),
        data_dir: dir.join("keel-agent"),
        listen: "127.0.0.1:0".into(),
        otlp_receiver: "127.0.0.1:0".into(),
        host_metrics: keel_agent::config::HostMetricsConfig {
            enabled: false,
            ..Default::default()
        },
        scrape: vec![keel_agent::config::ScrapeJob {
            job: "bench".into(),
            targets: vec![format!("http://127.0.0.1:{exporter}/metrics")],
            interval: crate::up::SCRAPE_INTERVAL,
            timeout: crate::up::SCRAPE_INTERVAL,
            ..Default::default()
        }],
        ..Default::default()
    };
    let agent = keel_agent::run::Agent::start(agent_config, clock).await?;
    let api = collector.api;
    Ok((
        System {
            name: "Keel (keel up's shipped settings: 1 s scrape, 1 s P0 evaluation, no P0 group wait)",
            smtp,
            latencies: Vec::new(),
            _keep: Vec::new(),
        },
        api,
        Box::new((collector, agent)),
    ))
}

/// Prometheus + Alertmanager; `tuned`: 5 s scrape and evaluation, 0 s
/// group wait; else their defaults.
async fn prometheus(dir: &Path, exporter: u16, tuned: bool) -> anyhow::Result<System> {
    let smtp = smtp().await?;
    let tag = if tuned { "tuned" } else { "defaults" };
    let dir = dir.join(format!("prometheus-{tag}"));
    std::fs::create_dir_all(&dir)?;
    let (am_port, prom_port) = (free_port()?, free_port()?);
    let group_wait = if tuned { "\n  group_wait: 0s" } else { "" };
    std::fs::write(
        dir.join("alertmanager.yml"),
        format!(
            "route:\n  receiver: mail\n  group_by: [alertname, round]{group_wait}\nreceivers:\n- name: mail\n  email_configs:\n  - to: oncall@example.com\n    from: alertmanager@example.com\n    smarthost: 127.0.0.1:{}\n    require_tls: false\n    send_resolved: false\n    headers: {{Subject: 'bench round {{{{ .GroupLabels.round }}}}.'}}\n",
            smtp.port
        ),
    )?;
    let global = if tuned {
        "global:\n  scrape_interval: 5s\n  evaluation_interval: 5s\n"
    } else {
        ""
    };
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "{global}rule_files: [rules.yml]\nalerting:\n  alertmanagers:\n  - static_configs: [{{targets: ['127.0.0.1:{am_port}']}}]\nscrape_configs:\n- job_name: bench\n  static_configs: [{{targets: ['127.0.0.1:{exporter}']}}]\n"
        ),
    )?;
    std::fs::write(
        dir.join("rules.yml"),
        "groups:\n- name: bench\n  rules:\n  - alert: BenchErrors\n    expr: bench_errors > 1\n    labels: {severity: critical}\n",
    )?;
    // Each one's log in its directory, for when a round times out.
    let quiet = |c: &mut Command| {
        let name = c.get_program().to_string_lossy().into_owned();
        let log = std::fs::File::create(dir.join(format!("{name}.log")))
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null());
        c.stdout(Stdio::null()).stderr(log);
    };
    let mut am = Command::new("prometheus-alertmanager");
    am.arg(format!(
        "--config.file={}",
        dir.join("alertmanager.yml").display()
    ))
    .arg(format!("--storage.path={}", dir.join("am-data").display()))
    .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
    .arg("--cluster.listen-address=");
    quiet(&mut am);
    let am =
        Reaped(am.spawn().context(
            "starting prometheus-alertmanager (apt-get install prometheus-alertmanager)",
        )?);
    let mut prom = Command::new("prometheus");
    prom.arg(format!(
        "--config.file={}",
        dir.join("prometheus.yml").display()
    ))
    .arg(format!(
        "--storage.tsdb.path={}",
        dir.join("data").display()
    ))
    .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"));
    quiet(&mut prom);
    let prom = Reaped(
        prom.spawn()
            .context("starting prometheus (apt-get install prometheus)")?,
    );
    listening("alertmanager", am_port, Duration::from_secs(30)).await?;
    listening("prometheus", prom_port, Duration::from_secs(30)).await?;
    Ok(System {
        name: if tuned {
            "Prometheus + Alertmanager tuned (5 s scrape and evaluation, 0 s group_wait)"
        } else {
            "Prometheus + Alertmanager defaults (1 m scrape and evaluation, 30 s group_wait)"
        },
        smtp,
        latencies: Vec::new(),
        _keep: vec![prom, am],
    })
}

pub fn run(args: AlertsBenchArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(bench(args))
}

async fn bench(args: AlertsBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = keel_sampleapp::telemetry::init_stderr_logging();
    }
    let dir = tempfile::tempdir()?;
    let values: Values = Arc::default();
    let port = exporter(values.clone()).await?;
    let (keel_system, keel_api, _keel) = keel(dir.path(), port).await?;
    let mut systems = vec![keel_system];
    if !args.keel_only {
        systems.push(prometheus(dir.path(), port, true).await?);
        if !args.no_defaults {
            systems.push(prometheus(dir.path(), port, false).await?);
        }
    }
    let limit = if systems.len() == 3 {
        Duration::from_secs(300)
    } else {
        Duration::from_secs(60)
    };
    println!(
        "keel bench alerts: {} rounds; rule `bench_errors > 1` (for: 0), email to aiosmtpd; {} systems on one exporter",
        args.rounds,
        systems.len()
    );
    let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
    let started = Instant::now();
    for round in 0..args.rounds {
        // A random phase against every scrape and evaluation cycle (the
        // slowest system's: 1 m with Prometheus' defaults).
        let cycle_ms = if systems.len() == 3 { 60_000 } else { 5_000 };
        let pause = Duration::from_millis(rng.random_range(500..500 + cycle_ms));
        tokio::time::sleep(pause).await;
        let crossed = {
            let mut v = values.lock().unwrap_or_else(|e| e.into_inner());
            v.clear();
            v.insert(round, 5.0);
            Instant::now()
        };
        let want = format!("bench round {round}.");
        let deadline = crossed + limit;
        let mut pending: Vec<usize> = (0..systems.len()).collect();
        while !pending.is_empty() {
            pending.retain(|&i| match systems[i].smtp.got(&want) {
                Some(t) => {
                    systems[i]
                        .latencies
                        .push(t.saturating_duration_since(crossed));
                    false
                }
                None => true,
            });
            if Instant::now() > deadline {
                let late: Vec<&str> = pending.iter().map(|&i| systems[i].name).collect();
                let mut state = String::new();
                for path in [
                    "/api/v1/query?query=bench_errors",
                    "/api/v1/alerts",
                    "/api/v1/notifications",
                ] {
                    if let Ok(r) = reqwest::get(format!("http://{keel_api}{path}")).await {
                        state.push_str(&format!(
                            "\n  Keel {path}: {}",
                            r.text().await.unwrap_or_default()
                        ));
                    }
                }
                bail!("round {round}: no page within {limit:?} from {late:?}{state}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let got: Vec<String> = systems
            .iter()
            .map(|s| {
                s.latencies
                    .last()
                    .map_or("-".into(), |d| format!("{:.2}s", d.as_secs_f64()))
            })
            .collect();
        eprintln!(
            "  round {}/{} ({:.0} s in): {}",
            round + 1,
            args.rounds,
            started.elapsed().as_secs_f64(),
            got.join("  ")
        );
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("machine: {cores} cores, {}", std::env::consts::ARCH);
    println!(
        "{:<84} {:>7} {:>7} {:>7} {:>8}",
        "threshold crossed → page at the SMTP server", "min", "p50", "max", "vs Keel"
    );
    let p50 = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64()
    };
    let keel_p50 = p50(&mut systems[0].latencies);
    for s in &mut systems {
        let mid = p50(&mut s.latencies);
        let (min, max) = (s.latencies[0], s.latencies[s.latencies.len() - 1]);
        println!(
            "{:<84} {:>6.2}s {:>6.2}s {:>6.2}s {:>7.1}×",
            s.name,
            min.as_secs_f64(),
            mid,
            max.as_secs_f64(),
            mid / keel_p50.max(1e-9)
        );
    }
    println!("goal: Keel ≤ 2 s");
    Ok(())
}
