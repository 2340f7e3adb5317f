//! `keel bench alerts`: alert latency, from the moment a metric crosses
//! its threshold to the page accepted by a real SMTP server (Python's
//! aiosmtpd, which must be installed: `pip install aiosmtpd`).
//!
//! An in-process collector with one P0 rule (`for: 0`) in a group
//! evaluated every `--eval-interval`; each round writes a sample above
//! the threshold (as an OTLP or remote-write batch would land in the
//! store), waits for the page at the SMTP server, then a sample below and
//! waits for the resolution. Prometheus + Alertmanager on the same rule
//! are not measured here yet.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use keel_collector::labels::Labels;
use keel_collector::notify::{EmailConfig, NotifyConfig};
use keel_collector::rules::RulesConfig;
use keel_collector::server::CollectorConfig;
use keel_core::clock::{SharedClock, SystemClock};

/// Flags of `keel bench alerts`.
#[derive(clap::Args)]
pub struct AlertsBenchArgs {
    /// Rounds (each a page and a resolution).
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// The rule group's evaluation interval.
    #[arg(long, default_value = "1s", value_parser = keel_core::duration::parse)]
    eval_interval: Duration,
}

pub fn run(args: AlertsBenchArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(bench(args))
}

async fn bench(args: AlertsBenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut smtpd = Command::new("python3")
        .args([
            "-u",
            "-m",
            "aiosmtpd",
            "-n",
            "-c",
            "aiosmtpd.handlers.Debugging",
            "-l",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting aiosmtpd (pip install aiosmtpd)")?;
    let out = smtpd.stdout.take().context("aiosmtpd's stdout")?;
    let subjects: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let s = subjects.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(sub) = line.strip_prefix("Subject: ") {
                s.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((Instant::now(), sub.to_owned()));
            }
        }
    });
    // aiosmtpd is up when it accepts a connection.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            let _ = smtpd.kill();
            bail!("aiosmtpd did not start on port {port}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::create_dir_all(dir.path().join("rules"))?;
    std::fs::write(
        dir.path().join("rules/r.yml"),
        format!(
            "groups:\n- name: bench\n  interval: {}ms\n  rules:\n  - alert: Errors\n    expr: errors > 1\n    severity: P0\n",
            args.eval_interval.as_millis()
        ),
    )?;
    let config = CollectorConfig {
        data_dir: dir.path().join("data"),
        otlp_http_port: 0,
        otlp_grpc_port: 0,
        api_port: 0,
        rules: RulesConfig {
            files: vec![dir.path().join("rules")],
            ..RulesConfig::default()
        },
        notify: NotifyConfig {
            email: EmailConfig {
                smtp_port: port,
                to: vec!["oncall@example.com".into()],
                ..EmailConfig::default()
            },
            ..NotifyConfig::default()
        },
        ..CollectorConfig::default()
    };
    let clock: SharedClock = Arc::new(SystemClock);
    let c = keel_collector::server::start(&config, clock.clone()).await?;
    let write = |v: f64| {
        c.store.append(vec![(
            Labels::new(vec![("__name__", "errors"), ("job", "bench")]),
            vec![(clock.now_ms(), v)],
        )])
    };
    let wait = |want: &'static str, n: usize| {
        let subjects = subjects.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let got = subjects
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .filter(|(_, s)| s.contains(want))
                    .nth(n)
                    .map(|(t, _)| *t);
                if let Some(t) = got {
                    return Ok(t);
                }
                if Instant::now() > deadline {
                    bail!("no {want} page #{n} within 60 s");
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    };
    println!(
        "keel bench alerts: {} rounds, rule `errors > 1` (for: 0, P0), evaluated every {:?}, email to aiosmtpd",
        args.rounds, args.eval_interval
    );
    let mut fire = Vec::new();
    let mut resolve = Vec::new();
    for round in 0..args.rounds {
        let crossed = Instant::now();
        write(5.0)?;
        fire.push(
            wait("FIRING", round)
                .await?
                .saturating_duration_since(crossed),
        );
        // Below for longer than the lookback would not matter: a new
        // sample below replaces it at once.
        let cleared = Instant::now();
        write(0.0)?;
        resolve.push(
            wait("RESOLVED", round)
                .await?
                .saturating_duration_since(cleared),
        );
    }
    let _ = smtpd.kill();
    let _ = smtpd.wait();
    fire.sort();
    resolve.sort();
    let pct =
        |v: &[Duration], p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize].as_secs_f64();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("machine: {cores} cores, {}", std::env::consts::ARCH);
    println!("{:<44} {:>8} {:>8} {:>8}", "", "p50", "p99", "goal");
    println!(
        "{:<44} {:>7.2}s {:>7.2}s {:>8}",
        "threshold crossed → page at the SMTP server",
        pct(&fire, 0.5),
        pct(&fire, 0.99),
        "≤ 2 s"
    );
    println!(
        "{:<44} {:>7.2}s {:>7.2}s",
        "cleared → resolution at the SMTP server",
        pct(&resolve, 0.5),
        pct(&resolve, 0.99)
    );
    Ok(())
}
