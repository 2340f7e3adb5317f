//! `keel bench replay`: how fast a recorded hour replays, how big its
//! bundle is against the raw data it holds, and how long recording an
//! hour takes.
//!
//! The hour comes from `keel up` (shipped rules and policies) under a
//! spike load, recorded for `--minutes` through the collector's API,
//! then repeated (`--hours` × 60 / minutes times) with every time shifted
//! and counters carried on, so it holds the sample app's real series,
//! arrivals and ticks at the recorded rate. Recording the hour is timed
//! on a collector store that holds it (written through its WAL).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use keel_core::clock::Clock as _;
use keel_core::marks::Mark;
use keel_incident::bundle::Bundle;

use crate::bench_autoscale_live::KeelUp;

/// Flags of `keel bench replay`.
#[derive(clap::Args)]
pub struct ReplayBenchArgs {
    /// Minutes of `keel up` under load to record.
    #[arg(long, default_value_t = 3)]
    minutes: u64,
    /// Hours the recording is repeated to.
    #[arg(long, default_value_t = 1)]
    hours: u64,
    /// The load's base rate (the spike profile: 3x for a while).
    #[arg(long, default_value_t = 20)]
    rps: u32,
    /// Replays timed (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Skip the peer (Debian's vmalert in replay mode over VictoriaMetrics).
    #[arg(long)]
    keel_only: bool,
    /// Keep the hour's bundle here (to replay or profile it again).
    #[arg(long)]
    save: Option<std::path::PathBuf>,
    /// Measure this bundle (one `--save` kept) instead of recording one.
    #[arg(long)]
    bundle: Option<std::path::PathBuf>,
}

/// Counter-like series (never decreasing) carry on across repeats.
fn monotonic(s: &[(i64, f64)]) -> bool {
    s.windows(2).all(|w| w[1].1 >= w[0].1 || w[1].1.is_nan())
}

/// `b` repeated `n` times back to back, every time shifted by the window.
pub fn repeat(b: &Bundle, n: i64) -> Bundle {
    let w = b.header.to_ms - b.header.from_ms;
    let mut out = b.clone();
    out.header.to_ms = b.header.from_ms + n * w;
    out.header.name = format!("{}-x{n}", b.header.name);
    for (s, o) in b.series.iter().zip(out.series.iter_mut()) {
        // Only the window's samples repeat (the lead-in stays once).
        let inside: Vec<(i64, f64)> = s
            .samples
            .iter()
            .copied()
            .filter(|(t, _)| *t >= b.header.from_ms && *t < b.header.to_ms)
            .collect();
        let carry = monotonic(&inside);
        let mut add = 0.0;
        for k in 1..n {
            if carry && let (Some(first), Some(last)) = (inside.first(), inside.last()) {
                add += last.1 - first.1;
            }
            o.samples
                .extend(inside.iter().map(|(t, v)| (t + k * w, v + add)));
        }
        o.samples.sort_by_key(|(t, _)| *t);
        o.samples.dedup_by_key(|(t, _)| *t);
    }
    let inside: Vec<&Mark> = b
        .marks
        .iter()
        .filter(|m| (b.header.from_ms..b.header.to_ms).contains(&m.at_ms()))
        .collect();
    for k in 1..n {
        out.marks.extend(inside.iter().map(|m| shifted(m, k * w)));
    }
    out.marks.sort_by_key(Mark::at_ms);
    for k in 1..n {
        out.logs.extend(b.logs.iter().map(|l| {
            let mut l = l.clone();
            l.timestamp_ns += k * w * 1_000_000;
            l
        }));
    }
    out
}

/// A mark moved by `d` ms (its sample times and observation too).
fn shifted(m: &Mark, d: i64) -> Mark {
    match m.clone() {
        Mark::Arrival { at_ms, sources } => Mark::Arrival {
            at_ms: at_ms + d,
            sources: sources.into_iter().map(|(j, i, t)| (j, i, t + d)).collect(),
        },
        Mark::RuleEval { at_ms, file, group } => Mark::RuleEval {
            at_ms: at_ms + d,
            file,
            group,
        },
        Mark::PolicyEval {
            at_ms,
            policy,
            replicas,
            instances,
        } => Mark::PolicyEval {
            at_ms: at_ms + d,
            policy,
            replicas,
            instances,
        },
        Mark::Probe {
            at_ms,
            target,
            watch,
            mut observation,
        } => {
            if let Some(t) = observation.get_mut("at_ms") {
                *t = serde_json::json!(at_ms + d);
            }
            Mark::Probe {
                at_ms: at_ms + d,
                target,
                watch,
                observation,
            }
        }
    }
}

/// `b` with every time moved by `d` ms.
pub fn shift(b: &mut Bundle, d: i64) {
    let h = &mut b.header;
    h.from_ms += d;
    h.to_ms += d;
    h.recorded_at_ms += d;
    h.incident_ms = h.incident_ms.map(|t| t + d);
    for s in &mut b.series {
        for (t, _) in &mut s.samples {
            *t += d;
        }
    }
    for m in &mut b.marks {
        *m = shifted(m, d);
    }
    for l in &mut b.logs {
        l.timestamp_ns += d * 1_000_000;
    }
    for s in &mut b.spans {
        s.start_ns += d * 1_000_000;
        s.end_ns += d * 1_000_000;
    }
    for e in &mut b.events {
        if let Some(t) = e.get("at_ms").and_then(|t| t.as_i64()) {
            e["at_ms"] = serde_json::json!(t + d);
        }
    }
    for a in &mut b.alerts {
        a.at_ms += d;
    }
    for p in &mut b.pages {
        p.at_ms += d;
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Run the bench.
pub fn run(a: ReplayBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.minutes > 0 && a.hours > 0 && a.runs > 0,
        "--minutes, --hours and --runs must be positive"
    );
    let dir = tempfile::tempdir()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!(
        "keel bench replay: keel up under a spike for {} min, recorded, repeated to {} h",
        a.minutes, a.hours
    );
    let hour = match &a.bundle {
        Some(p) => {
            println!("(the bundle {}, not a new recording)", p.display());
            Bundle::read(p)?
        }
        None => record_and_repeat(&a, dir.path(), &rt)?,
    };
    let path = dir.path().join("hour.keelinc");
    let size = hour.write(&path)?;
    if let Some(s) = &a.save {
        std::fs::copy(&path, s).with_context(|| s.display().to_string())?;
    }
    let samples: usize = hour.series.iter().map(|s| s.samples.len()).sum();
    let raw = hour.raw_bytes();
    let recorded_s = (hour.header.to_ms - hour.header.from_ms) as f64 / 1000.0;
    println!(
        "bundle of {:.2} h: {} series, {} samples, {} log records, {} marks; {} bytes against {} raw bytes ({:.1}x smaller, {:.2} bytes a sample)",
        recorded_s / 3600.0,
        hour.series.len(),
        samples,
        hour.logs.len(),
        hour.marks.len(),
        size,
        raw,
        raw as f64 / size.max(1) as f64,
        size as f64 / samples.max(1) as f64
    );
    let setup = keel_replay::run::Setup::recorded(&hour, "hour.keelinc")?;
    let mut speeds = Vec::new();
    let mut read_s = Vec::new();
    for i in 0..a.runs {
        let t = Instant::now();
        let b = Bundle::read_only(&path, &keel_replay::run::keep(None))?;
        read_s.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let o = keel_replay::run::replay(&b, &setup)?;
        let wall = t.elapsed().as_secs_f64();
        speeds.push(recorded_s / wall);
        let tm = &o.timings;
        eprintln!(
            "  replay {}: {:.2} s ({} evaluations, {} controller ticks, {} alert changes, {} pages, {} scalings; load {:.2} s, feed {:.2} s, rules {:.2} s, routing {:.2} s, controller {:.2} s)",
            i + 1,
            wall,
            o.evaluations,
            o.ticks,
            o.alerts.len(),
            o.pages.len(),
            o.scaling.len(),
            tm.load.as_secs_f64(),
            tm.feed.as_secs_f64(),
            tm.rules.as_secs_f64(),
            tm.routing.as_secs_f64(),
            tm.controller.as_secs_f64()
        );
    }
    println!(
        "replay: {:.0} recorded seconds per wall second (median of {}; reading the bundle: {:.2} s more)",
        median(speeds),
        a.runs,
        median(read_s)
    );
    // The rules alone, as the peer runs them (no routing, no controller).
    let mut rules_only = setup.clone();
    rules_only.controller = None;
    let mut rule_speeds = Vec::new();
    for _ in 0..a.runs {
        let t = Instant::now();
        let o = keel_replay::run::replay(&hour, &rules_only)?;
        rule_speeds.push(recorded_s / t.elapsed().as_secs_f64());
        let _ = o;
    }
    let keel_rules = median(rule_speeds);
    println!("replay, rules only: {keel_rules:.0} recorded seconds per wall second");
    if !a.keel_only {
        match rt.block_on(vmalert_replay(&hour, dir.path())) {
            Ok(secs) => println!(
                "peer: vmalert -replay (Debian's, over VictoriaMetrics; the same rules and hour): {:.0} recorded seconds per wall second; Keel's rules-only replay is {:.2}x its speed",
                recorded_s / secs,
                keel_rules / (recorded_s / secs)
            ),
            Err(e) => println!("peer: vmalert not measured: {e:#}"),
        }
    }
    let took = rt.block_on(record_hour(&hour, dir.path()))?;
    println!(
        "recording the hour from a collector store: {:.2} s",
        took.as_secs_f64()
    );
    Ok(())
}

/// The bundle's rule files as vmalert reads them: `severity:` becomes
/// the `severity` label; log rules (Keel's own kind) and keys vmalert
/// does not know are left out.
fn vmalert_rules(hour: &Bundle) -> anyhow::Result<String> {
    let mut groups = Vec::new();
    for f in hour.rule_files() {
        let doc: serde_json::Value = keel_core::config::parse_yaml(&f.name, &f.text)?;
        for g in doc["groups"].as_array().cloned().unwrap_or_default() {
            let mut rules = Vec::new();
            for r in g["rules"].as_array().cloned().unwrap_or_default() {
                let Some(expr) = r["expr"].as_str() else {
                    continue;
                };
                let mut out = serde_json::Map::new();
                for k in ["alert", "record", "for", "labels", "annotations"] {
                    if !r[k].is_null() {
                        out.insert(k.into(), r[k].clone());
                    }
                }
                out.insert("expr".into(), expr.into());
                if let Some(sev) = r["severity"].as_str() {
                    let labels = out.entry("labels").or_insert_with(|| serde_json::json!({}));
                    labels["severity"] = sev.into();
                }
                rules.push(serde_json::Value::Object(out));
            }
            groups.push(
                serde_json::json!({"name": g["name"], "interval": g["interval"], "rules": rules}),
            );
        }
    }
    // JSON is YAML.
    Ok(serde_json::to_string_pretty(
        &serde_json::json!({ "groups": groups }),
    )?)
}

/// `keel up` under a spike for `--minutes`, recorded through the API and
/// repeated to `--hours`.
fn record_and_repeat(
    a: &ReplayBenchArgs,
    dir: &Path,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<Bundle> {
    let up = KeelUp::start(&dir.join("up"), "", 2)?;
    let api = up.url("dashboard")?.replace("/ui/", "");
    let shop = up.url("shop API (lb)")?.replace("/api/products/1", "");
    let exe = std::env::current_exe()?;
    let from = keel_core::clock::unix_ms(std::time::SystemTime::now());
    let mut load = std::process::Command::new(exe)
        .args(["load", "--profile", "spike", "--rps", &a.rps.to_string()])
        .args([
            "--duration",
            &format!("{}s", a.minutes * 60),
            "--target",
            &shop,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("keel load")?;
    let started = Instant::now();
    let total = Duration::from_secs(a.minutes * 60);
    while started.elapsed() < total {
        std::thread::sleep(Duration::from_secs(15).min(total.saturating_sub(started.elapsed())));
        eprintln!(
            "  recording: {:>4.0} s of {} s",
            started.elapsed().as_secs_f64(),
            total.as_secs()
        );
    }
    let _ = load.wait();
    let to = keel_core::clock::unix_ms(std::time::SystemTime::now());
    let http = reqwest::Client::new();
    let (summary, bytes) = rt.block_on(async {
        let s: serde_json::Value = http
            .post(format!("{api}/api/v1/incidents"))
            .json(&serde_json::json!({"name": "bench", "from_ms": from, "to_ms": to}))
            .send()
            .await?
            .json()
            .await?;
        let b = http
            .get(format!("{api}/api/v1/incidents/bench/bundle"))
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        anyhow::Ok((s, b))
    })?;
    drop(up);
    let short = Bundle::read_from(&bytes[..], "bench.keelinc")?;
    let c = &summary["data"]["counts"];
    println!(
        "recorded {} s: {} series, {} samples, {} log records, {} spans, {} marks; {} bytes in {} ms",
        (to - from) / 1000,
        c["series"],
        c["samples"],
        c["logs"],
        c["spans"],
        c["marks"],
        summary["data"]["bytes"],
        c["took_ms"]
    );
    let n = ((a.hours * 3_600_000) as i64 / (to - from).max(1)).max(1);
    let mut hour = repeat(&short, n);
    // Copies go after the recording; the hour is moved back to end where
    // it did (stores refuse or hide data from the future).
    let back = hour.header.to_ms - short.header.to_ms;
    shift(&mut hour, -back);
    println!(
        "repeated {n}x to {:.2} h",
        (hour.header.to_ms - hour.header.from_ms) as f64 / 3.6e6
    );
    Ok(hour)
}

/// vmalert's replay of the hour's rules over VictoriaMetrics holding its
/// samples: the wall seconds it took.
async fn vmalert_replay(hour: &Bundle, dir: &Path) -> anyhow::Result<f64> {
    use std::process::{Command, Stdio};
    let port = keel_testkit::free_port()?;
    let vm_dir = dir.join("vm");
    let _vm = keel_testkit::Reaped(
        Command::new("victoria-metrics")
            .arg(format!("-storageDataPath={}", vm_dir.display()))
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .args(["-retentionPeriod=100y", "-search.disableCache"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("vm.log"))?)
            .spawn()
            .context("victoria-metrics (apt install victoria-metrics)")?,
    );
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    crate::bench_metrics::wait_ready(&http, &format!("{url}/health")).await?;
    // One JSON line a series (VictoriaMetrics' import format).
    let mut body = Vec::new();
    for s in &hour.series {
        let (ts, vs): (Vec<i64>, Vec<f64>) = s
            .samples
            .iter()
            .filter(|(_, v)| v.is_finite())
            .copied()
            .unzip();
        if ts.is_empty() {
            continue;
        }
        serde_json::to_writer(
            &mut body,
            &serde_json::json!({"metric": s.labels, "values": vs, "timestamps": ts}),
        )?;
        body.push(b'\n');
    }
    http.post(format!("{url}/api/v1/import"))
        .body(body)
        .send()
        .await?
        .error_for_status()?;
    http.get(format!("{url}/internal/force_flush"))
        .send()
        .await?;
    let rules = dir.join("vmalert-rules.yml");
    std::fs::write(&rules, vmalert_rules(hour)?)?;
    let time =
        |ms: i64| humantime::format_rfc3339_seconds(keel_core::clock::from_unix_ms(ms)).to_string();
    let t = Instant::now();
    let out = tokio::process::Command::new("vmalert")
        .arg(format!("-rule={}", rules.display()))
        .arg(format!("-datasource.url={url}"))
        .arg(format!("-remoteWrite.url={url}"))
        .arg(format!("-replay.timeFrom={}", time(hour.header.from_ms)))
        .arg(format!("-replay.timeTo={}", time(hour.header.to_ms)))
        // Each group at its own interval (the default step is 5m).
        .args([
            "-replay.disableProgressBar",
            "-replay.rulesDelay=0s",
            "-datasource.queryStep=0s",
        ])
        .output()
        .await
        .context("vmalert")?;
    let secs = t.elapsed().as_secs_f64();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(dir.join("vmalert.log"), &said)?;
    anyhow::ensure!(
        out.status.success(),
        "vmalert failed: {}",
        said.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
    );
    // What it did, in its own words (its last lines).
    for l in said
        .lines()
        .filter(|l| l.contains("replay") || l.contains("samples"))
        .take(6)
    {
        eprintln!("  vmalert: {l}");
    }
    Ok(secs)
}

/// Store the hour in a fresh collector's stores, then time recording it.
async fn record_hour(hour: &Bundle, dir: &Path) -> anyhow::Result<Duration> {
    use keel_incident::{Incidents, IncidentsConfig, RecordRequest, Sources};
    use keel_series::labels::Labels;
    let clock = Arc::new(keel_core::clock::ManualClock::new(
        keel_core::clock::from_unix_ms(hour.header.to_ms + 60_000),
    ));
    let shared: keel_core::clock::SharedClock = clock.clone();
    let config = keel_collector::server::CollectorConfig {
        data_dir: dir.join("collector"),
        out_of_order_window: Duration::from_secs(3 * 3600),
        block_duration: Duration::from_secs(8 * 3600),
        ..Default::default()
    };
    let store = Arc::new(config.open_store()?);
    for chunk in hour.series.chunks(200) {
        store.append(
            chunk
                .iter()
                .map(|s| (Labels::new(s.labels.iter().collect()), s.samples.clone()))
                .collect(),
        )?;
    }
    let now = clock.now_ms();
    let logs = Arc::new(config.open_logs(now)?);
    logs.append(hour.logs.clone(), now)?;
    logs.commit()?;
    let spans = Arc::new(config.open_spans(now)?);
    let marks = Arc::new(keel_core::marks::MarkLog::new(
        &config.data_dir.join("marks"),
        shared.clone(),
        Duration::from_secs(86_400),
    ));
    for m in &hour.marks {
        clock.set(keel_core::clock::from_unix_ms(m.at_ms()));
        marks.write(m);
    }
    clock.set(keel_core::clock::from_unix_ms(now));
    let notifier = keel_alerting::notify::Notifier::start(Default::default(), shared.clone())
        .map_err(|p| anyhow::anyhow!(p.join("; ")))?;
    let incidents = Incidents::new(
        IncidentsConfig::default(),
        &config.data_dir,
        Sources {
            store,
            logs,
            spans,
            marks,
            state: None,
            notifier,
            rules: Default::default(),
            notify: Default::default(),
            dashboards: dir.join("none"),
            controller: Default::default(),
            clock: shared,
        },
    );
    let t = Instant::now();
    incidents
        .record(RecordRequest {
            name: "hour".into(),
            from_ms: hour.header.from_ms,
            to_ms: hour.header.to_ms,
            service: None,
            reason: None,
            incident_ms: None,
            logs: None,
            spans: None,
        })
        .await?;
    Ok(t.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_bundle_shifts_time_and_carries_counters_on() {
        let r = repeat(&tiny(), 3);
        assert_eq!(r.header.to_ms - r.header.from_ms, 3 * 60_000);
        let s = &r.series[0].samples;
        assert_eq!(s.len(), 6);
        assert_eq!(s[2], (60_000, 12.0));
        assert_eq!(s[5], (150_000, 16.0));
        assert_eq!(r.marks.len(), 3);
        assert_eq!(r.marks[2].at_ms(), 120_100);
    }

    fn tiny() -> Bundle {
        use keel_incident::bundle::{Config, Header, Series};
        Bundle {
            header: Header {
                name: "t".into(),
                from_ms: 0,
                to_ms: 60_000,
                recorded_at_ms: 60_000,
                reason: "manual".into(),
                service: None,
                incident_ms: None,
                lead_in_ms: 0,
                logs_query: None,
                no_spans: false,
                keel_version: "test".into(),
            },
            config: Config::default(),
            files: Vec::new(),
            series: vec![Series {
                labels: [("__name__".to_owned(), "c_total".to_owned())].into(),
                samples: vec![(0, 10.0), (30_000, 12.0)],
            }],
            logs: Vec::new(),
            spans: Vec::new(),
            marks: vec![Mark::RuleEval {
                at_ms: 100,
                file: "r".into(),
                group: "g".into(),
            }],
            events: Vec::new(),
            alerts: Vec::new(),
            pages: Vec::new(),
        }
    }
}
