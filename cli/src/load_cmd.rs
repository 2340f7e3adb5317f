//! `keel load`: drive the sample app open-loop and summarise.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use keel_core::clock::{SharedClock, SystemClock};
use keel_sampleapp::load::{self, HttpTarget, Profile, ProfileKind, Report, RunOptions};

#[derive(Clone, Copy, clap::ValueEnum)]
enum Builtin {
    Steady,
    Ramp,
    Diurnal,
    Spike,
}

/// Flags of `keel load`.
#[derive(clap::Args)]
pub struct LoadArgs {
    /// steady, ramp, diurnal, spike, or a profile YAML file.
    #[arg(long)]
    profile: String,
    /// Requests per second (peak for diurnal and ramp, base for spike).
    #[arg(long)]
    rps: Option<f64>,
    /// How long, e.g. 30s, 5m.
    #[arg(long, value_parser = keel_core::duration::parse)]
    duration: Option<Duration>,
    /// Base URL of the shop API.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    target: String,
    /// Fraction of reads; the rest are writes (orders).
    #[arg(long)]
    read_ratio: Option<f64>,
    /// Per-request timeout.
    #[arg(long, default_value = "10s", value_parser = keel_core::duration::parse)]
    timeout: Duration,
    /// Requests allowed in flight before due ones are counted as dropped.
    #[arg(long, default_value_t = 10_000)]
    max_in_flight: usize,
    /// Seed of the request mix.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

fn builtin(name: &str) -> Option<ProfileKind> {
    use clap::ValueEnum;
    Builtin::from_str(name, true).ok().map(|b| match b {
        Builtin::Steady => ProfileKind::Steady,
        Builtin::Ramp => ProfileKind::Ramp,
        Builtin::Diurnal => ProfileKind::Diurnal,
        Builtin::Spike => ProfileKind::Spike,
    })
}

/// Resolve `--profile`, `--rps`, `--duration` into a profile.
fn profile(args: &LoadArgs) -> anyhow::Result<Profile> {
    match builtin(&args.profile) {
        Some(kind) => {
            let (Some(rps), Some(d)) = (args.rps, args.duration) else {
                bail!("--profile {} needs --rps and --duration", args.profile);
            };
            if !rps.is_finite() || rps <= 0.0 {
                bail!("--rps: must be a positive number, got {rps}");
            }
            if d.is_zero() {
                bail!("--duration: must be more than 0");
            }
            Ok(Profile::builtin(kind, rps, d))
        }
        None => {
            let path = PathBuf::from(&args.profile);
            if !path.is_file() {
                bail!(
                    "--profile {:?}: not steady, ramp, diurnal or spike, and no such file",
                    args.profile
                );
            }
            if args.rps.is_some() || args.duration.is_some() {
                bail!(
                    "--rps and --duration apply to built-in profiles; a profile file sets its own rates"
                );
            }
            Ok(Profile::from_file(&path)?)
        }
    }
}

pub fn run(args: LoadArgs) -> anyhow::Result<()> {
    let profile = profile(&args)?;
    let read_ratio = args.read_ratio.or(profile.read_ratio).unwrap_or(0.8);
    if !(0.0..=1.0).contains(&read_ratio) {
        bail!("--read-ratio: must be between 0 and 1, got {read_ratio}");
    }
    let opts = RunOptions {
        read_ratio,
        seed: args.seed,
        max_in_flight: args.max_in_flight,
        ..RunOptions::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let total = profile.duration();
    eprintln!(
        "keel load: {} for {} ({:.0} requests, {:.0} % reads) against {}",
        args.profile,
        humantime::format_duration(total),
        profile.expected_requests(),
        read_ratio * 100.0,
        args.target
    );
    let report = runtime.block_on(async {
        let target = Arc::new(HttpTarget::new(&args.target, args.timeout));
        let clock: SharedClock = Arc::new(SystemClock);
        let mut progress = Progress::new(total);
        let r = load::run(clock, &profile, target, opts, |r| progress.update(r)).await;
        progress.finish();
        r
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_summary(&report);
    }
    Ok(())
}

/// A progress bar on a terminal; a status line every 5 s otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    last_line: Instant,
}

impl Progress {
    fn new(total: Duration) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(total.as_millis() as u64);
            b.set_style(
                indicatif::ProgressStyle::with_template("{bar:30} {elapsed_precise} {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
        Self {
            bar,
            last_line: Instant::now(),
        }
    }

    fn line(r: &Report) -> String {
        format!(
            "sent {} ok {} err {} dropped {} in flight {} | p99 {:.1} ms",
            r.sent, r.ok, r.errors, r.dropped, r.in_flight, r.latency_ms.p99
        )
    }

    fn update(&mut self, r: &Report) {
        match &self.bar {
            Some(b) => {
                b.set_position((r.elapsed_s * 1000.0) as u64);
                b.set_message(Self::line(r));
            }
            None if self.last_line.elapsed() >= Duration::from_secs(5) => {
                self.last_line = Instant::now();
                eprintln!("keel load: {:.0}s {}", r.elapsed_s, Self::line(r));
            }
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

fn print_summary(r: &Report) {
    println!(
        "sent {} of {} scheduled ({:.1} req/s), ok {}, errors {}, dropped {}",
        r.sent, r.scheduled, r.achieved_rps, r.ok, r.errors, r.dropped
    );
    if !r.errors_by_kind.is_empty() {
        let kinds: Vec<String> = r
            .errors_by_kind
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        println!("errors by kind: {}", kinds.join(", "));
    }
    let l = &r.latency_ms;
    println!(
        "latency from intended send time: p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        l.p50, l.p95, l.p99, l.max
    );
    let g = &r.send_lag_ms;
    println!(
        "generator send lag: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        g.p50, g.p99, g.max
    );
}
