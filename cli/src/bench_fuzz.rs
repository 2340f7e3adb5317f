//! `keel bench fuzz`: every keel-fuzz target for a while — cases run,
//! cases per second, and any failure as proptest's minimized input. A
//! failure's seed is saved in `fuzz/regressions/<target>.txt`, which the
//! bounded run in `cargo test` replays first, so it stays a regression
//! test until fixed.

use std::time::Duration;

use anyhow::bail;

/// Flags of `keel bench fuzz`.
#[derive(clap::Args)]
pub struct FuzzBenchArgs {
    /// How long each target runs.
    #[arg(long, default_value = "30s", value_parser = keel_core::duration::parse)]
    per_target: Duration,
    /// Only the targets whose name contains this.
    #[arg(long)]
    only: Option<String>,
}

pub fn run(args: FuzzBenchArgs) -> anyhow::Result<()> {
    let targets: Vec<keel_fuzz::Target> = keel_fuzz::all()
        .into_iter()
        .filter(|t| args.only.as_deref().is_none_or(|o| t.name.contains(o)))
        .collect();
    if targets.is_empty() {
        bail!("no fuzz target matches --only");
    }
    println!(
        "keel bench fuzz: {} targets, {} each (structure-aware, proptest)",
        targets.len(),
        humantime::format_duration(args.per_target)
    );
    println!("{:<16} {:>10} {:>10}  result", "target", "cases", "cases/s");
    let mut failed = Vec::new();
    for t in &targets {
        let r = keel_fuzz::run_for(t, args.per_target, 100);
        let rate = r.cases as f64 / r.elapsed.as_secs_f64().max(1e-9);
        println!(
            "{:<16} {:>10} {:>10.0}  {}",
            r.name,
            r.cases,
            rate,
            if r.failure.is_some() { "FAILED" } else { "ok" }
        );
        if let Some(f) = r.failure {
            failed.push(format!("{}: {f}", r.name));
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} target(s) failed (seeds saved in fuzz/regressions/):\n{}",
            failed.len(),
            failed.join("\n\n")
        );
    }
    Ok(())
}
