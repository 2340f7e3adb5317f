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

/// The shipped lunch-spike scenario (its profile is read beside it).
const SCENARIO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../incidents/lunch-spike.yaml");

/// Scenario files mutated from a shipped one: parsed and checked; an
/// error names the file. (The scenario format lives in this crate, so
/// its target does too.)
fn scenario_yaml(cases: u32) -> keel_fuzz::Outcome {
    let text = include_str!("../../incidents/lunch-spike.yaml");
    keel_fuzz::check(
        "scenario_yaml",
        cases,
        keel_fuzz::targets::mutations(),
        move |ops| {
            let mutated = keel_fuzz::targets::mutate(text, &ops);
            let path = std::path::Path::new(SCENARIO);
            if let Err(e) = crate::scenario::file::Scenario::parse(path, "s.yaml", &mutated) {
                let e = e.to_string();
                if !e.contains("s.yaml") {
                    return Err(keel_fuzz::proptest::test_runner::TestCaseError::fail(
                        format!("an error that does not name the file: {e}"),
                    ));
                }
            }
            Ok(())
        },
    )
}

/// keel-fuzz's targets and this crate's.
fn targets() -> Vec<keel_fuzz::Target> {
    let mut all = keel_fuzz::all();
    all.push(keel_fuzz::Target {
        name: "scenario_yaml",
        run: scenario_yaml,
    });
    all
}

pub fn run(args: FuzzBenchArgs) -> anyhow::Result<()> {
    let targets: Vec<keel_fuzz::Target> = targets()
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

#[cfg(test)]
mod tests {
    #[test]
    fn scenario_files_survive_a_bounded_fuzz_run() {
        keel_fuzz::fix_seed(1);
        let o = super::scenario_yaml(64);
        assert_eq!(o.failure, None);
    }
}
