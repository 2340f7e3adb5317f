//! `keel rules check` and `keel rules test`: validate rule files and run
//! their unit tests (promtool's `test rules` format) before they page.

use std::path::PathBuf;

use anyhow::bail;
use keel_alerting::rules::{self, Rule, SeverityMapping};

/// `keel rules …`.
#[derive(clap::Subcommand)]
pub enum RulesCommand {
    /// Validate rule files (files or directories of *.yml/*.yaml): YAML,
    /// PromQL, log queries, durations, templates, severities; every
    /// problem with file:line:column.
    Check {
        /// Rule files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Run rule unit tests in promtool's `test rules` format.
    Test {
        /// Test files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Evaluate Prometheus' experimental PromQL functions (`limitk`,
        /// `sort_by_label`, `mad_over_time`, …), as promtool's
        /// `--enable-feature=promql-experimental-functions`.
        #[arg(long)]
        experimental_functions: bool,
    },
}

pub fn run(command: RulesCommand) -> anyhow::Result<()> {
    match command {
        RulesCommand::Check { paths } => check(&paths),
        RulesCommand::Test {
            files,
            experimental_functions,
        } => test(&files, experimental_functions),
    }
}

fn check(paths: &[PathBuf]) -> anyhow::Result<()> {
    let groups = rules::file::load(
        paths,
        std::time::Duration::from_secs(15),
        &SeverityMapping::default(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (mut alerts, mut records) = (0, 0);
    for g in &groups {
        for r in &g.rules {
            match r {
                Rule::Alert(_) => alerts += 1,
                Rule::Record { .. } => records += 1,
            }
        }
    }
    println!(
        "SUCCESS: {} group(s), {alerts} alerting and {records} recording rule(s)",
        groups.len()
    );
    Ok(())
}

fn test(files: &[PathBuf], experimental: bool) -> anyhow::Result<()> {
    let mut failed = 0;
    let mut checks = 0;
    for f in files {
        let shown = f.display().to_string();
        let text = std::fs::read_to_string(f).map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
        let (n, failures) = keel_alerting::promtest::run(&shown, &text, experimental)?;
        checks += n;
        if failures.is_empty() {
            println!("  {shown}: SUCCESS ({n} checks)");
        } else {
            println!("  {shown}: FAILED ({} of {n} checks)", failures.len());
            for x in &failures {
                println!("    {}", x.to_string().replace('\n', "\n    "));
            }
            failed += failures.len();
        }
    }
    if failed > 0 {
        bail!("{failed} of {checks} rule test checks failed");
    }
    println!("SUCCESS: {checks} checks");
    Ok(())
}
