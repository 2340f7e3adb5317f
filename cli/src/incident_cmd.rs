//! `keel incident record|list|score` and `keel replay`: recording a
//! window into a bundle through the collector's API, and replaying
//! bundles through the rules, routing and autoscaler on the manual Clock.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use keel_incident::bundle::Bundle;
use keel_replay::expect::Expect;
use keel_replay::report;
use keel_replay::run::{Setup, replay};
use serde_json::json;

/// `keel incident …`.
#[derive(clap::Subcommand)]
pub enum IncidentCommand {
    /// Record a window of the collector's data into a bundle.
    Record {
        /// Window start: RFC 3339, `now`, or relative (`-15m`, `-1h30m`).
        #[arg(long)]
        from: String,
        /// Window end (as --from).
        #[arg(long, default_value = "now")]
        to: String,
        /// The bundle's name (letters, digits, '.', '_', '-').
        #[arg(long)]
        name: String,
        /// Only this service's (`job`) metrics, logs and spans.
        #[arg(long)]
        service: Option<String>,
        /// When the incident began (as --from), for `--assert` and scores.
        #[arg(long)]
        start: Option<String>,
        /// Also copy the bundle here.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The collector's API.
        #[arg(long, default_value = "http://127.0.0.1:7070")]
        url: String,
    },
    /// The bundles the collector keeps.
    List {
        /// The collector's API.
        #[arg(long, default_value = "http://127.0.0.1:7070")]
        url: String,
    },
    /// Which incidents each rule of DIR caught, its lead time and its
    /// noisy firings.
    Score {
        /// The rules to score (a directory or a file).
        #[arg(long)]
        rules: PathBuf,
        /// Bundles.
        #[arg(required = true)]
        bundles: Vec<PathBuf>,
    },
}

/// `keel replay`.
#[derive(clap::Args)]
pub struct ReplayArgs {
    /// The bundle.
    bundle: PathBuf,
    /// Replay with these rules (a directory or file) instead of the bundle's.
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Replay with these policies (a `controller:` section) instead of the bundle's.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Expectations; the replay fails naming each that does not hold.
    #[arg(long = "assert", value_name = "EXPECTATION")]
    asserts: Vec<String>,
    /// Print the replay's speed (wall-clock; to standard error).
    #[arg(long)]
    stats: bool,
}

/// A time on the command line, at `now_ms`: RFC 3339, `now`, or `-15m`.
pub fn parse_time(s: &str, now_ms: i64) -> anyhow::Result<i64> {
    let t = s.trim();
    if t == "now" {
        return Ok(now_ms);
    }
    if let Some(rel) = t.strip_prefix('-').or_else(|| t.strip_prefix("now-")) {
        let d = humantime::parse_duration(rel)
            .with_context(|| format!("{s:?} is not a relative time such as -15m"))?;
        return Ok(now_ms - d.as_millis() as i64);
    }
    humantime::parse_rfc3339_weak(t)
        .map(keel_core::clock::unix_ms)
        .with_context(|| {
            format!("{s:?} is not an RFC 3339 time, `now`, or a relative time such as -15m")
        })
}

/// Run `keel incident …`.
pub fn run(command: IncidentCommand) -> anyhow::Result<()> {
    let http = crate::api_client::client();
    let now = keel_core::clock::unix_ms(std::time::SystemTime::now());
    match command {
        IncidentCommand::Record {
            from,
            to,
            name,
            service,
            start,
            out,
            url,
        } => {
            let url = url.trim_end_matches('/');
            let from_ms = parse_time(&from, now).context("--from")?;
            let to_ms = parse_time(&to, now).context("--to")?;
            let incident_ms = start
                .map(|s| parse_time(&s, now).context("--start"))
                .transpose()?;
            eprintln!(
                "recording {name}: {} to {} …",
                report::time(from_ms),
                report::time(to_ms)
            );
            let v = crate::silence_cmd::call(http.post(format!("{url}/api/v1/incidents")).json(
                &json!({
                    "name": name, "from_ms": from_ms, "to_ms": to_ms,
                    "service": service, "incident_ms": incident_ms, "reason": "manual",
                }),
            ))?;
            let s = &v["data"];
            let c = &s["counts"];
            println!(
                "{}: {} bytes ({} series, {} samples, {} log records, {} spans, {} events, {} alert changes, {} pages; {} raw bytes), recorded in {} ms",
                s["path"].as_str().unwrap_or(""),
                s["bytes"],
                c["series"],
                c["samples"],
                c["logs"],
                c["spans"],
                c["events"],
                c["alerts"],
                c["pages"],
                c["raw_bytes"],
                c["took_ms"]
            );
            if let Some(out) = out {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let bytes = rt.block_on(async {
                    let r = http
                        .get(format!("{url}/api/v1/incidents/{name}/bundle"))
                        .send()
                        .await?
                        .error_for_status()?;
                    r.bytes().await
                })?;
                std::fs::write(&out, &bytes).with_context(|| out.display().to_string())?;
                println!("copied to {}", out.display());
            }
            Ok(())
        }
        IncidentCommand::List { url } => {
            let v = crate::silence_cmd::call(
                http.get(format!("{}/api/v1/incidents", url.trim_end_matches('/'))),
            )?;
            let list = v["data"].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                eprintln!("no incident bundles");
            }
            for s in list {
                println!(
                    "{:<40} {} to {}  {:>10} bytes  {}",
                    s["name"].as_str().unwrap_or(""),
                    crate::silence_cmd::time(s["from_ms"].as_i64().unwrap_or(0)),
                    crate::silence_cmd::time(s["to_ms"].as_i64().unwrap_or(0)),
                    s["bytes"],
                    s["reason"].as_str().unwrap_or("")
                );
            }
            Ok(())
        }
        IncidentCommand::Score { rules, bundles } => score(&rules, &bundles),
    }
}

/// A bundle (what replay needs of it) and its recorded setup; unless
/// `rules` replace them, every rule file the recording ran must be in it.
fn load(path: &Path, rules: Option<&Path>) -> anyhow::Result<(Bundle, Setup)> {
    let bundle = Bundle::read_only(path, &keel_replay::run::keep(rules))?;
    let shown = path.display().to_string();
    if rules.is_none() {
        Setup::check_rule_files(&bundle, &shown)?;
    }
    let setup = Setup::recorded(&bundle, &shown)?;
    Ok((bundle, setup))
}

/// Run `keel replay`.
pub fn replay_cmd(a: ReplayArgs) -> anyhow::Result<()> {
    // Expectations are checked before anything runs.
    let expects: Vec<Expect> = a
        .asserts
        .iter()
        .map(|e| Expect::parse(e))
        .collect::<Result<_, _>>()
        .map_err(anyhow::Error::msg)?;
    let started = std::time::Instant::now();
    let (bundle, recorded) = load(&a.bundle, a.rules.as_deref())?;
    let what_if = a.rules.is_some() || a.policy.is_some();
    let mut setup = recorded.clone();
    if let Some(r) = &a.rules {
        setup = setup.with_rules(r)?;
    }
    if let Some(p) = &a.policy {
        setup = setup.with_policy(p)?;
    }
    let outcome = replay(&bundle, &setup)?;
    let mut out = String::new();
    out.push_str(&report::timeline(&bundle, &setup, &outcome));
    out.push('\n');
    let mut replayed_ms = bundle.header.to_ms - bundle.header.from_ms;
    if what_if {
        let base = replay(&bundle, &recorded)?;
        replayed_ms *= 2;
        out.push_str(&report::diff(&bundle, &base, &outcome, &setup));
    } else {
        match report::reproduction(&bundle, &setup, &outcome) {
            Ok(s) => {
                out.push_str(&s);
                out.push('\n');
            }
            Err(diffs) => {
                out.push_str(&format!(
                    "not reproduced exactly: {} difference(s)\n",
                    diffs.len()
                ));
                for d in diffs {
                    out.push_str(&format!("  {d}\n"));
                }
            }
        }
    }
    let start = bundle.start_ms();
    let mut failed = Vec::new();
    for (text, e) in a.asserts.iter().zip(&expects) {
        match e.check(&outcome, start) {
            Ok(()) => out.push_str(&format!("assert ok: {text}\n")),
            Err(why) => {
                out.push_str(&format!("assert FAILED: {text}: {why}\n"));
                failed.push(format!("{text:?} ({why})"));
            }
        }
    }
    std::io::stdout().write_all(out.as_bytes())?;
    if a.stats {
        let wall = started.elapsed().as_secs_f64();
        let t = &outcome.timings;
        eprintln!(
            "replayed {} of recorded time in {:.3} s: {:.0} recorded seconds per wall second (load {:.2} s, feed {:.2} s, rules {:.2} s, routing {:.2} s, controller {:.2} s)",
            report::span(replayed_ms),
            wall,
            replayed_ms as f64 / 1000.0 / wall.max(1e-9),
            t.load.as_secs_f64(),
            t.feed.as_secs_f64(),
            t.rules.as_secs_f64(),
            t.routing.as_secs_f64(),
            t.controller.as_secs_f64()
        );
    }
    if !failed.is_empty() {
        bail!(
            "{} expectation(s) failed: {}",
            failed.len(),
            failed.join("; ")
        );
    }
    Ok(())
}

/// Per rule across bundles: which caught their incident, how early, how noisy.
fn score(rules: &Path, bundles: &[PathBuf]) -> anyhow::Result<()> {
    #[derive(Default)]
    struct Score {
        caught: Vec<String>,
        leads: Vec<i64>,
        noisy: usize,
    }
    let mut scores: std::collections::BTreeMap<String, Score> = Default::default();
    let mut names = Vec::new();
    for path in bundles {
        let (bundle, recorded) = load(path, Some(rules))?;
        let setup = recorded.with_rules(rules)?;
        for g in &setup.groups {
            for r in &g.rules {
                if let keel_alerting::rules::Rule::Alert(a) = r {
                    scores.entry(a.name.clone()).or_default();
                }
            }
        }
        let outcome = replay(&bundle, &setup)?;
        // The incident began when it says, else at its first recorded P0 page.
        let start = bundle.header.incident_ms.unwrap_or_else(|| {
            bundle
                .pages
                .iter()
                .find(|p| p.severity == keel_alerting::rules::Severity::P0)
                .map_or(bundle.header.from_ms, |p| p.at_ms)
        });
        names.push(bundle.header.name.clone());
        let mut fired: std::collections::BTreeMap<(String, String), i64> = Default::default();
        for a in &outcome.alerts {
            let key = (a.rule.clone(), format!("{:?}", a.labels));
            match a.to.as_str() {
                "firing" => {
                    let s = scores.entry(a.rule.clone()).or_default();
                    if !s.caught.contains(&bundle.header.name) {
                        s.caught.push(bundle.header.name.clone());
                        s.leads.push(start - a.at_ms);
                    }
                    fired.insert(key, a.at_ms);
                }
                "resolved" | "inactive" => {
                    // Fired and cleared within five minutes: a flap.
                    if let Some(t) = fired.remove(&key)
                        && a.at_ms - t < 300_000
                    {
                        scores.entry(a.rule.clone()).or_default().noisy += 1;
                    }
                }
                _ => {}
            }
        }
    }
    println!(
        "{:<32} {:>8}  {:>14}  {:>6}  caught",
        "rule", "incidents", "median lead", "noisy"
    );
    for (rule, s) in &scores {
        let mut leads = s.leads.clone();
        leads.sort();
        let median = leads
            .get(leads.len() / 2)
            .map_or("-".to_owned(), |l| report::span(*l));
        println!(
            "{:<32} {:>4}/{:<4}  {:>14}  {:>6}  {}",
            rule,
            s.caught.len(),
            names.len(),
            median,
            s.noisy,
            s.caught.join(",")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_now_or_relative() {
        let now = 1_800_000_000_000;
        assert_eq!(parse_time("now", now).expect("now"), now);
        assert_eq!(parse_time("-15m", now).expect("rel"), now - 900_000);
        assert_eq!(
            parse_time("2026-12-06T10:00:00Z", now).expect("abs"),
            1_796_551_200_000
        );
        let e = parse_time("yesterday", now).expect_err("bad").to_string();
        assert!(e.contains("\"yesterday\""), "{e}");
    }
}
