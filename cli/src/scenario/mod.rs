//! `keel scenario run|replay|list`: rehearsed incidents. A scenario file
//! (see [`file`]) is a load profile plus timed faults and what Keel
//! should do; `run` plays it against `keel up`, records the window and
//! checks the expectations on what happened live and on its replay;
//! `replay` checks committed bundles without a live app.

pub mod file;
pub mod live;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use keel_incident::bundle::Bundle;
use keel_replay::report;
use keel_replay::run::{Outcome, replay};

use file::Scenario;

/// `keel scenario …`.
#[derive(clap::Subcommand)]
pub enum ScenarioCommand {
    /// Play a scenario against the running `keel up`, record it as an
    /// incident bundle, and check its expectations live and in replay.
    Run {
        /// The scenario file (e.g. incidents/web-error-burst.yaml).
        file: PathBuf,
        /// The bundle's name (default: the scenario's, with the time).
        #[arg(long)]
        name: Option<String>,
        /// Also write the bundle beside the scenario (NAME.keelinc), as
        /// the committed ones are made.
        #[arg(long)]
        save: bool,
        /// The collector's API.
        #[arg(long, default_value = "http://127.0.0.1:7070")]
        url: String,
        /// The sample app's supervisor API.
        #[arg(long, default_value = "http://127.0.0.1:8079")]
        supervisor: String,
        /// The file holding the supervisor's token (`keel up` writes it
        /// to `<sampleapp.data_dir>/supervisor.token`). Without it:
        /// `KEEL_SUPERVISOR_TOKEN`, else that file under
        /// keel-data/sampleapp when it exists.
        #[arg(long)]
        supervisor_token_file: Option<PathBuf>,
        /// The shop API (the lb).
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        shop: String,
    },
    /// Replay scenarios' committed bundles and check their expectations
    /// (every scenario in incidents/ by default).
    Replay {
        /// Scenario files.
        files: Vec<PathBuf>,
    },
    /// The scenarios in a directory.
    List {
        /// Where the scenario files are.
        #[arg(default_value = "incidents")]
        dir: PathBuf,
    },
}

/// The supervisor's token: the file named, `KEEL_SUPERVISOR_TOKEN`, or
/// the one `keel up` wrote under its default data directory (none there:
/// an open supervisor).
fn supervisor_token(file: Option<PathBuf>) -> anyhow::Result<Option<String>> {
    if let Some(f) = file {
        return live::read_token_file(&f).map(Some);
    }
    if let Ok(t) = std::env::var("KEEL_SUPERVISOR_TOKEN")
        && !t.trim().is_empty()
    {
        return Ok(Some(t.trim().to_owned()));
    }
    let default = keel_sampleapp::supervisor::Supervisor::token_file(
        &keel_sampleapp::config::SampleAppConfig::default().data_dir,
    );
    if default.exists() {
        return live::read_token_file(&default).map(Some);
    }
    Ok(None)
}

/// Run `keel scenario …`.
pub fn run(command: ScenarioCommand) -> anyhow::Result<()> {
    match command {
        ScenarioCommand::Run {
            file,
            name,
            save,
            url,
            supervisor,
            supervisor_token_file,
            shop,
        } => {
            let s = Scenario::load(&file)?;
            let name = name.unwrap_or_else(|| {
                format!(
                    "{}-{}",
                    s.name,
                    humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                        .to_string()
                        .replace(':', "")
                        .trim_end_matches('Z')
                )
            });
            let ep = live::Endpoints {
                collector: url,
                supervisor,
                supervisor_token: supervisor_token(supervisor_token_file)?,
                shop,
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let bytes = rt.block_on(async {
                live::check_name(&ep, &name).await?;
                let shop = keel_sampleapp::load::HttpTarget::new(&ep.shop, Duration::from_secs(10));
                let played = live::play(&s, &ep, std::sync::Arc::new(shop)).await?;
                live::record(&s, &ep, &name, &played).await
            })?;
            let bundle = Bundle::read_from(std::io::Cursor::new(&bytes), &name)?;
            if save {
                let path = s.bundle_path();
                std::fs::write(&path, &bytes).with_context(|| path.display().to_string())?;
                eprintln!("  saved {}", path.display());
            }
            check(&s, &bundle, &s.path.display().to_string())
        }
        ScenarioCommand::Replay { files } => {
            let files = if files.is_empty() {
                scenario_files(Path::new("incidents"))?
            } else {
                files
            };
            // Every scenario is checked; every failure is reported.
            let mut failed = Vec::new();
            for f in &files {
                let done = Scenario::load(f)
                    .map_err(anyhow::Error::from)
                    .and_then(|s| {
                        let path = s.bundle_path();
                        if !path.is_file() {
                            bail!(
                                "{}: no committed bundle {} (record one with keel scenario run {} --save)",
                                f.display(),
                                path.display(),
                                f.display()
                            );
                        }
                        let bundle = Bundle::read(&path)?;
                        // The expectations are timed from the scenario's
                        // start: the bundle must have been recorded with it.
                        let h = &bundle.header;
                        let recorded = h.incident_ms.map(|t| t - h.from_ms);
                        let wanted = s.start.as_millis() as i64;
                        if recorded.is_none_or(|r| (r - wanted).abs() > 1000) {
                            bail!(
                                "{}: recorded with the incident starting at {}, but the scenario says start {}; record it again (keel scenario run {} --save)",
                                path.display(),
                                recorded.map_or("(none)".into(), report::span),
                                report::span(wanted),
                                f.display()
                            );
                        }
                        check(&s, &bundle, &path.display().to_string())
                    });
                if let Err(e) = done {
                    failed.push(format!("{e:#}"));
                }
            }
            if !failed.is_empty() {
                bail!("{}", failed.join("\n"));
            }
            Ok(())
        }
        ScenarioCommand::List { dir } => {
            let files = scenario_files(&dir)?;
            let mut broken = 0;
            if files.is_empty() {
                eprintln!("no scenarios in {}", dir.display());
            }
            for f in files {
                match Scenario::load(&f) {
                    Ok(s) => {
                        let faults: Vec<String> = s
                            .faults
                            .iter()
                            .map(|x| {
                                format!(
                                    "{} {} at {}",
                                    x.kind.name(),
                                    x.target,
                                    report::span(x.at.as_millis() as i64)
                                )
                            })
                            .collect();
                        println!(
                            "{:<22} {:>5}  {}{}",
                            s.name,
                            report::span(s.length().as_millis() as i64),
                            s.description,
                            if s.bundle_path().is_file() {
                                ""
                            } else {
                                "  (no bundle)"
                            }
                        );
                        println!(
                            "{:<22}        faults: {}",
                            "",
                            if faults.is_empty() {
                                "none".into()
                            } else {
                                faults.join("; ")
                            }
                        );
                        println!("{:<22}        expect: {}", "", s.expect.join("; "));
                    }
                    Err(e) => {
                        eprintln!("{e}");
                        broken += 1;
                    }
                }
            }
            if broken > 0 {
                bail!("{broken} scenario file(s) in {} do not load", dir.display());
            }
            Ok(())
        }
    }
}

/// The `*.yaml` files directly in `dir` (profiles live in a subdirectory).
pub fn scenario_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| dir.display().to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    v.sort();
    Ok(v)
}

/// Check `s`'s expectations on what `bundle` recorded (live) and on its
/// replay; print both with the response times; fail naming the scenario
/// and each expectation that did not hold on either.
fn check(s: &Scenario, bundle: &Bundle, shown: &str) -> anyhow::Result<()> {
    let setup = keel_replay::run::Setup::recorded(bundle, shown)?;
    let replayed = replay(bundle, &setup)?;
    let live = report::recorded_outcome(bundle);
    let start = bundle.start_ms();
    let mut out = format!(
        "scenario {}: {}\n",
        s.name,
        if s.description.is_empty() {
            "-"
        } else {
            &s.description
        }
    );
    let mut failed = Vec::new();
    for (text, e) in s.expect.iter().zip(&s.expectations) {
        let l = e.check(&live, start);
        let r = e.check(&replayed, start);
        let mark = |x: &Result<(), String>| if x.is_ok() { "ok" } else { "FAILED" };
        out.push_str(&format!(
            "  {:<48} live {:<6} replay {}\n",
            text,
            mark(&l),
            mark(&r)
        ));
        for (side, x) in [("live", l), ("replay", r)] {
            if let Err(why) = x {
                out.push_str(&format!("      {side}: {why}\n"));
                failed.push(format!("{text:?} {side} ({why})"));
            }
        }
    }
    out.push_str(&format!(
        "  from the incident's start: {}\n",
        responses(&live, &replayed, start)
    ));
    std::io::stdout().write_all(out.as_bytes())?;
    if failed.is_empty() {
        Ok(())
    } else {
        bail!(
            "scenario {} ({}): {} expectation(s) failed: {}",
            s.name,
            s.path.display(),
            failed.len(),
            failed.join("; ")
        )
    }
}

/// "first alert firing +29.0s live, +29.0s replay; first page …".
fn responses(live: &Outcome, replayed: &Outcome, start: i64) -> String {
    let l = report::first_response(live, start);
    let r = report::first_response(replayed, start);
    let f = |x: Option<i64>| {
        x.map_or("none".to_owned(), |ms| {
            format!("+{:.1}s", ms as f64 / 1000.0)
        })
    };
    format!(
        "first alert firing {} live, {} replay; first page {} live, {} replay; first corrective action (scale or failover) {} live, {} replay",
        f(l.alert),
        f(r.alert),
        f(l.page),
        f(r.page),
        f(l.action),
        f(r.action)
    )
}
