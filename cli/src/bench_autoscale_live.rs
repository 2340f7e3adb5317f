//! `keel bench autoscale --live`: the three policies of the simulated
//! benchmark, live against the sample app, on a compressed cycle.
//!
//! Each policy gets a fresh `keel up` (sample app, agent scraping every
//! 1 s, collector, controller driving the supervisor). Web instances are
//! made small and slow to start (2 requests at once × 40 ms = 50/s,
//! 4 s cold), the lb sends each request to the least busy instance, so that a few hundred requests a second — what this
//! machine drives beside everything else — need 2 to 10 of them. Time
//! is compressed `--compress` times: the controller evaluates every
//! 15 s ÷ c, every window of the HPA's behaviour, panic and warm-up is
//! divided likewise, and the load's cycle (the simulated day's three
//! peaks, and a 5× burst on the measured cycle) lasts `--cycle`. Before the measured cycle,
//! `--seasons` cycles of history (no burst) are written to the collector
//! over OTLP with past timestamps, as a running system would have them,
//! so the forecast has something to learn from.
//!
//! Measured from the client (the load generator): a second violates the
//! SLO when the p95 latency of the requests sent in it exceeds 1 s, a
//! failed request counting as slower than any; errors are failed
//! requests; replica-seconds are the supervisor's count, read every
//! 250 ms; actions are the controller's `scale` events. The model of
//! `bench_autoscale` runs beside each on the same load and windows.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use keel_controller::{ActuatorConfig, ControllerConfig};
use keel_sampleapp::load::{self, HttpTarget, Outcome, Profile, RequestKind, Segment, Target};

use crate::bench_autoscale::{Kind, Run, SLO_S, Scenario, policy, report, simulate, svg, violates};
use crate::scenario::file::Scenario as Rehearsal;

/// Flags of the live run.
#[derive(clap::Args)]
pub struct LiveArgs {
    /// How many times faster than real time the policies' windows run.
    #[arg(long, default_value_t = 15.0)]
    compress: f64,
    /// One cycle of the load (three peaks, and on the measured one a burst).
    #[arg(long, default_value = "300s", value_parser = keel_core::duration::parse)]
    cycle: Duration,
    /// Cycles of history before the measured one.
    #[arg(long, default_value_t = 7)]
    seasons: u32,
    /// Requests/s at the cycle's base (peaks 3×, 2.5×, 3.5×; burst 5×).
    #[arg(long, default_value_t = 60.0)]
    live_base: f64,
    /// Where to write the live plot (SVG).
    #[arg(long, default_value = "autoscale-live.svg")]
    live_plot: PathBuf,
    /// Measure on one rehearsed incident instead: the scenario file's
    /// load and faults (e.g. incidents/lunch-spike.yaml), with no history
    /// before it.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// After the cycle, every scenario in this directory is a load too.
    #[arg(long, default_value = "incidents")]
    scenarios: PathBuf,
    /// Only the cycle, not the scenarios.
    #[arg(long)]
    cycle_only: bool,
}

/// What one web instance serves live: 2 at once × 40 ms.
const PER_INSTANCE: f64 = 50.0;
const CONCURRENCY: u32 = 2;

/// The cycle's pieces at the default 300 s: (seconds, from, to) in
/// multiples of the base; the burst is the `None` piece (5× on the
/// measured cycle, 1× before). The simulated day compressed: its three
/// peaks (3×, 2.5×, 3.5×, as the FACTS' daily pattern) with its
/// 5-minute ramps (20 s), and the afternoon burst on base load.
const CYCLE: [(f64, Option<(f64, f64)>); 15] = [
    (15.0, Some((1.0, 1.0))),
    (20.0, Some((1.0, 3.0))),
    (35.0, Some((3.0, 3.0))),
    (20.0, Some((3.0, 1.0))),
    (15.0, Some((1.0, 1.0))),
    (20.0, Some((1.0, 2.5))),
    (15.0, Some((2.5, 2.5))),
    (20.0, Some((2.5, 1.0))),
    (10.0, Some((1.0, 1.0))),
    (40.0, None),
    (10.0, Some((1.0, 1.0))),
    (20.0, Some((1.0, 3.5))),
    (35.0, Some((3.5, 3.5))),
    (20.0, Some((3.5, 1.0))),
    (5.0, Some((1.0, 1.0))),
];

/// Seconds of the cycle `CYCLE` describes.
const CYCLE_S: f64 = 300.0;

/// The load of one cycle, `burst`ing or not.
fn cycle_profile(args: &LiveArgs, burst: bool) -> Profile {
    let k = args.cycle.as_secs_f64() / CYCLE_S;
    let b = args.live_base;
    Profile {
        segments: CYCLE
            .iter()
            .map(|&(s, shape)| {
                let (from, to) = shape.unwrap_or(if burst { (5.0, 5.0) } else { (1.0, 1.0) });
                Segment {
                    duration: Duration::from_secs_f64(s * k),
                    from: from * b,
                    to: to * b,
                }
            })
            .collect(),
        read_ratio: None,
    }
}

/// The load to measure: the rehearsed incident's, else the cycle with
/// its burst.
fn measured_profile(args: &LiveArgs, rehearsal: Option<&Rehearsal>) -> Profile {
    rehearsal.map_or_else(|| cycle_profile(args, true), |r| r.profile.clone())
}

/// The scenario of the live run, for the model and the policies: a point
/// every 250 ms.
fn scenario(args: &LiveArgs, rehearsal: Option<&Rehearsal>) -> Scenario {
    let step = Duration::from_millis(250);
    let points = |p: &Profile| {
        let n = (p.duration().as_millis() / step.as_millis()) as usize;
        (0..n)
            .map(|i| p.rate_at(i as f64 * step.as_secs_f64()))
            .collect::<Vec<f64>>()
    };
    let mut load: Vec<f64> = Vec::new();
    if rehearsal.is_none() {
        let quiet = points(&cycle_profile(args, false));
        for _ in 0..args.seasons {
            load.extend_from_slice(&quiet);
        }
    }
    let measured_from = load.len();
    load.extend(points(&measured_profile(args, rehearsal)));
    let c = args.compress;
    let scaled = |d: Duration| Duration::from_secs_f64(d.as_secs_f64() / c);
    Scenario {
        load,
        step_ms: step.as_millis() as i64,
        measured_from,
        compress: c,
        per_instance: PER_INSTANCE,
        target: PER_INSTANCE * 0.75,
        warm_up: scaled(Duration::from_secs(60)),
        season: args.cycle,
        forecast_step: args.cycle / 48,
        // The HPA's 60 s rate window compressed, but at least 4 scrapes.
        rate_window: scaled(Duration::from_secs(60)).max(Duration::from_secs(4)),
        // Panic's irate reads the last two of these scrapes.
        burst_window: Duration::from_secs(3),
        scrape: Duration::from_secs(1),
        min: 2,
        max: 12,
    }
}

pub fn run(args: &LiveArgs) -> anyhow::Result<()> {
    if args.compress.is_nan()
        || args.compress < 1.0
        || args.live_base.is_nan()
        || args.live_base <= 0.0
        || args.seasons < 2
    {
        bail!("--compress must be ≥ 1, --live-base positive, --seasons at least 2");
    }
    // The loads: one scenario if named; else the cycle, then every
    // shipped scenario (unless --cycle-only).
    let mut loads: Vec<Option<Rehearsal>> = Vec::new();
    match &args.scenario {
        Some(f) => loads.push(Some(Rehearsal::load(f)?)),
        None => {
            loads.push(None);
            if !args.cycle_only && args.scenarios.is_dir() {
                for f in crate::scenario::scenario_files(&args.scenarios)? {
                    loads.push(Some(Rehearsal::load(&f)?));
                }
            }
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    for rehearsal in &loads {
        measure(args, &rt, rehearsal.as_ref())?;
    }
    Ok(())
}

/// The three policies live (and in the model) on one load.
fn measure(
    args: &LiveArgs,
    rt: &tokio::runtime::Runtime,
    rehearsal: Option<&Rehearsal>,
) -> anyhow::Result<()> {
    let sc = scenario(args, rehearsal);
    match rehearsal {
        Some(r) => println!(
            "keel bench autoscale --live, scenario {}: {} ({}, {} fault(s), no history); web instances serve {PER_INSTANCE}/s and are cold {}; windows ÷ {}; SLO p95 ≤ {SLO_S} s and ≤ 1 % failed",
            r.name,
            r.description,
            humantime::format_duration(r.length()),
            r.faults.len(),
            humantime::format_duration(sc.warm_up),
            args.compress
        ),
        None => println!(
            "keel bench autoscale --live: a {} cycle ({} of history, then one with a 5× burst), base {}/s; web instances serve {PER_INSTANCE}/s and are cold {}; windows ÷ {}; SLO p95 ≤ {SLO_S} s and ≤ 1 % failed",
            humantime::format_duration(args.cycle),
            args.seasons,
            args.live_base,
            humantime::format_duration(sc.warm_up),
            args.compress
        ),
    }
    let kinds = [
        ("fixed", Kind::Fixed(sc.fixed())),
        ("reactive (HPA defaults)", Kind::Reactive),
        ("Keel (predictive + reactive + panic)", Kind::Keel),
    ];
    let mut live = Vec::new();
    let mut model = Vec::new();
    for (name, kind) in kinds {
        eprintln!("  {name}: live…");
        live.push(rt.block_on(live_run(args, rehearsal, &sc, name, kind))?);
        model.push(simulate(&sc, name, kind)?);
    }
    println!("live:");
    report(&live);
    println!("model, same load and windows:");
    report(&model);
    let plot = match rehearsal {
        Some(r) => args.live_plot.with_file_name(format!(
            "{}-{}.svg",
            args.live_plot
                .file_stem()
                .map_or("autoscale-live".into(), |s| s.to_string_lossy()),
            r.name
        )),
        None => args.live_plot.clone(),
    };
    std::fs::write(
        &plot,
        svg(
            &live,
            measured_profile(args, rehearsal).duration().as_secs_f64(),
            if rehearsal.is_some() {
                "the scenario, live"
            } else {
                "the measured cycle, live"
            },
        ),
    )?;
    println!("plot: {}", plot.display());
    Ok(())
}

/// `keel up`, stopped with SIGINT (as Ctrl-C) and reaped when dropped
/// (its directory removed unless `keep`).
pub(crate) struct KeelUp {
    child: Child,
    dir: PathBuf,
    urls: BTreeMap<String, String>,
    /// Leave the directory when stopped (to start again on its data).
    pub keep: bool,
}

impl KeelUp {
    /// Start `keel up` in `dir` with `overlay` as its config, on free
    /// ports; wait for it to print where it listens.
    pub(crate) fn start(dir: &Path, overlay: &str, web: u32) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let config = dir.join("bench.yaml");
        std::fs::write(&config, overlay)?;
        let exe = std::env::current_exe().context("locating the keel binary")?;
        let mut child = Command::new(exe)
            .arg("--config")
            .arg(&config)
            .args(["up", "--lb-port", "0", "--supervisor-port", "0", "--web"])
            .arg(web.to_string())
            .arg("--data-dir")
            .arg(dir)
            // The collector's data and state (relative by default) too.
            .current_dir(dir)
            .envs(keel_testkit::free_ports::ENV)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("keel-up.stderr"))?)
            .spawn()
            .context("starting keel up")?;
        let stdout = child.stdout.take().context("keel up's stdout")?;
        let mut up = KeelUp {
            child,
            dir: dir.to_owned(),
            urls: BTreeMap::new(),
            keep: false,
        };
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            if line.starts_with("Press Ctrl-C") {
                return Ok(up);
            }
            // "  name of it        http://…"
            if let Some((name, rest)) = line.trim().split_once("http://") {
                let url = rest.split_whitespace().next().unwrap_or_default();
                up.urls
                    .insert(name.trim().to_owned(), format!("http://{url}"));
            }
        }
        // Keep its directory: the reason is in its stderr.
        up.keep = true;
        bail!(
            "keel up stopped before it was ready; see {}",
            dir.join("keel-up.stderr").display()
        )
    }

    /// Its process id (the collector, agent and controller run in it).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The token `keel up` made for its supervisor (in its data dir).
    pub(crate) fn supervisor_token(&self) -> anyhow::Result<String> {
        crate::scenario::live::read_token_file(&keel_sampleapp::supervisor::Supervisor::token_file(
            &self.dir,
        ))
    }

    pub(crate) fn url(&self, name: &str) -> anyhow::Result<&str> {
        self.urls
            .get(name)
            .map(String::as_str)
            .with_context(|| format!("keel up printed no {name:?} URL"))
    }
}

impl Drop for KeelUp {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                if !self.keep {
                    let _ = std::fs::remove_dir_all(&self.dir);
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The config `keel up` runs a policy with: small, cold web instances
/// and the policy's controller.
fn overlay(sc: &Scenario, name: &str, kind: Kind) -> anyhow::Result<String> {
    let controller = ControllerConfig {
        interval: sc.interval(),
        policies: vec![policy(sc, name, kind, ActuatorConfig::supervisor("", None))],
        ..ControllerConfig::default()
    };
    // JSON is YAML.
    Ok(serde_json::to_string_pretty(&serde_json::json!({
        "controller": controller,
        "sampleapp": {
            "web": {
                "max_instances": sc.max.max(20),
                "warm_up": format!("{}ms", sc.warm_up.as_millis()),
                "capacity": {"max_concurrency": CONCURRENCY},
            },
            // A burst's backlog stays queued in the instances that were
            // there; round robin would keep sending each its share, so p95
            // would stay high until their queues drained whatever capacity
            // was added. Least connections sends new requests to the new
            // instances, as a load balancer in front of an autoscaled
            // tier is usually set to.
            "lb": {"strategy": "least_connections"},
        },
    }))?)
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as i64
}

/// The history cycles, as the web tier's request counter, sent to the
/// collector over OTLP/HTTP JSON: a point a second ending `gap` before
/// `t0`.
async fn send_history(otlp: &str, sc: &Scenario, t0_ms: i64, gap: Duration) -> anyhow::Result<()> {
    let step_s = sc.step_ms as f64 / 1000.0;
    let per_s = (1000 / sc.step_ms).max(1) as usize;
    let n = sc.measured_from;
    let mut total = 0.0;
    let mut points = Vec::new();
    for (i, l) in sc.load[..n].iter().enumerate() {
        total += l * step_s;
        let t_ms = t0_ms - ((n - i - 1) as i64 * sc.step_ms);
        if i % per_s == per_s - 1 && t_ms <= t0_ms - gap.as_millis() as i64 {
            points.push(serde_json::json!({
                "timeUnixNano": (t_ms * 1_000_000).to_string(),
                "asDouble": total,
                "attributes": [{"key": "tier", "value": {"stringValue": "web"}}],
            }));
        }
    }
    let body = serde_json::json!({"resourceMetrics": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "shop-web-history"}}]},
        "scopeMetrics": [{"metrics": [{
            "name": "http_server_request_duration_seconds_count",
            "gauge": {"dataPoints": points},
        }]}],
    }]});
    let r = reqwest::Client::new()
        .post(otlp)
        .json(&body)
        .send()
        .await
        .context("sending the history")?;
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    // OTLP's partial success names what it refused.
    let rejected = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| {
            let n = &v["partialSuccess"]["rejectedDataPoints"];
            n.as_u64().or_else(|| n.as_str()?.parse().ok())
        })
        .unwrap_or(0);
    if !status.is_success() || rejected > 0 {
        bail!("the collector refused the history: HTTP {status}: {text}");
    }
    Ok(())
}

/// Latency (s) of every request, by the second it was sent in; a
/// failure is `INFINITY`.
type Seconds = Arc<Mutex<Vec<Vec<f64>>>>;

/// The shop API, timing every request into `Seconds`.
struct Timed {
    inner: HttpTarget,
    start: Instant,
    seconds: Seconds,
}

impl Target for Timed {
    fn send(&self, kind: RequestKind) -> Pin<Box<dyn Future<Output = Outcome> + Send + 'static>> {
        let sent = Instant::now();
        let second = sent.duration_since(self.start).as_secs() as usize;
        let fut = self.inner.send(kind);
        let seconds = self.seconds.clone();
        Box::pin(async move {
            let outcome = fut.await;
            let latency = match outcome {
                Outcome::Ok => sent.elapsed().as_secs_f64(),
                Outcome::Error(_) => f64::INFINITY,
            };
            let mut s = seconds.lock().unwrap_or_else(|e| e.into_inner());
            if s.len() <= second {
                s.resize(second + 1, Vec::new());
            }
            s[second].push(latency);
            outcome
        })
    }
}

/// A failed request's cause, from the load generator's error kind.
fn cause(kind: &str) -> &'static str {
    match kind {
        "http_503" => "shed (queue full, or no instance ready)",
        "http_502" | "connect" => "refused (connection or upstream)",
        "timeout" => "timed out",
        "http_500" => "failed (500)",
        _ => "other",
    }
}

/// The `q` quantile of `v` (sorted in place).
fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1]
}

/// One policy live: keel up, history, the measured cycle's load.
async fn live_run(
    args: &LiveArgs,
    rehearsal: Option<&Rehearsal>,
    sc: &Scenario,
    name: &'static str,
    kind: Kind,
) -> anyhow::Result<Run> {
    let dir = std::env::temp_dir().join(format!(
        "keel-bench-autoscale-{}-{}",
        std::process::id(),
        name.split_whitespace().next().unwrap_or("run")
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let start = match kind {
        Kind::Fixed(n) => n,
        _ => sc.min,
    };
    let overlay = overlay(sc, name, kind)?;
    let up = tokio::task::spawn_blocking(move || KeelUp::start(&dir, &overlay, start)).await??;
    let otlp = up.url("collector OTLP/HTTP")?.to_owned();
    let shop = up.url("shop API (lb)")?.replace("/api/products/1", "");
    let scale = up
        .url("supervisor API")?
        .replace("/api/v1/processes", "/api/v1/scale/web");
    let events = up.url("controller events")?.to_owned();
    // The measured cycle starts 2 s from now; history ends one burst
    // window before, so the two never overlap in a rate.
    let t0 = SystemTime::now() + Duration::from_secs(2);
    if sc.measured_from > 0 {
        send_history(&otlp, sc, unix_ms(t0), sc.burst_window).await?;
    }
    tokio::time::sleep(t0.duration_since(SystemTime::now()).unwrap_or_default()).await;
    let started = Instant::now();
    let seconds: Seconds = Arc::default();
    let target = Arc::new(Timed {
        inner: HttpTarget::new(&shop, Duration::from_secs(10)),
        start: started,
        seconds: seconds.clone(),
    });
    let profile = measured_profile(args, rehearsal);
    // The supervisor's count every 250 ms while the load runs.
    let counts = Arc::new(Mutex::new(Vec::<(f64, u32)>::new()));
    let poll = {
        let (counts, scale) = (counts.clone(), scale.clone());
        let span = profile.duration();
        let client = reqwest::Client::builder()
            .default_headers(
                keel_tls::bearer(Some(&up.supervisor_token()?)).map_err(anyhow::Error::msg)?,
            )
            .build()?;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            while started.elapsed() < span {
                tick.tick().await;
                let n = async {
                    let v: serde_json::Value =
                        client.get(&scale).send().await.ok()?.json().await.ok()?;
                    v["replicas"].as_u64()
                }
                .await;
                if let Some(n) = n {
                    counts
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((started.elapsed().as_secs_f64(), n as u32));
                }
            }
        })
    };
    let clock: keel_core::clock::SharedClock = Arc::new(keel_core::clock::SystemClock);
    let report = match rehearsal {
        // The scenario's faults at their times, beside its load.
        Some(r) => {
            let ep = crate::scenario::live::Endpoints {
                collector: up.url("dashboard")?.replace("/ui/", ""),
                supervisor: up.url("supervisor API")?.replace("/api/v1/processes", ""),
                supervisor_token: Some(up.supervisor_token()?),
                shop: shop.clone(),
            };
            crate::scenario::live::play(r, &ep, target).await?.load
        }
        None => load::run(clock, &profile, target, load::RunOptions::default(), |_| {}).await,
    };
    poll.await?;
    let t0_ms = unix_ms(t0);
    let end_ms = t0_ms + profile.duration().as_millis() as i64;
    let v: serde_json::Value = reqwest::get(format!("{events}?limit=100000"))
        .await?
        .json()
        .await?;
    // Every change, as the controller explained it (before the cycle too:
    // what the history made it do), oldest first.
    let mut actions = 0;
    let mut moves = Vec::new();
    let mut events: Vec<&serde_json::Value> = v["data"].as_array().into_iter().flatten().collect();
    events.sort_by_key(|e| e["at_ms"].as_i64().unwrap_or(0));
    for e in events {
        let at = e["at_ms"].as_i64().unwrap_or(0);
        if e["kind"] == "scale" {
            eprintln!(
                "    {:+7.1} s  {}",
                (at - t0_ms) as f64 / 1000.0,
                e["explanation"].as_str().unwrap_or_default()
            );
            if (t0_ms..end_ms).contains(&at) {
                actions += 1;
                let from = e["decision"]["current"].as_u64().unwrap_or(0) as u32;
                let to = e["read_back"].as_u64().unwrap_or(0) as u32;
                moves.push((at, from, to, e["decision"]["panic"] == true));
            }
        }
    }
    let behavior = &policy(sc, name, kind, ActuatorConfig::DryRun { start }).behavior;
    let (reversals, panic_reversals) = crate::bench_autoscale::reversals(
        &moves,
        behavior.scale_up.stabilization_window.as_millis() as i64,
        behavior.scale_down.stabilization_window.as_millis() as i64,
    );
    let counts = counts.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut seconds = seconds.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut run = Run::new(name);
    run.actions = actions;
    run.reversals = reversals;
    run.panic_reversals = panic_reversals;
    run.replica_s = counts.iter().map(|c| f64::from(c.1) * 0.25).sum();
    for (kind, n) in &report.errors_by_kind {
        *run.causes.entry(cause(kind).into()).or_default() += *n as f64;
    }
    if report.dropped > 0 {
        *run.causes
            .entry("not sent (the generator fell behind)".into())
            .or_default() += report.dropped as f64;
    }
    run.failed = run.causes.values().fold(0.0, |a, b| a + b);
    for (s, lat) in seconds.iter_mut().enumerate() {
        let failed = lat.iter().filter(|l| l.is_infinite()).count();
        let share = failed as f64 / lat.len().max(1) as f64;
        let p95 = quantile(lat, 0.95);
        if violates(p95, share) {
            run.violation_s += 1.0;
        }
        let replicas = counts
            .iter()
            .rev()
            .find(|c| c.0 <= s as f64 + 1.0)
            .map_or(start, |c| c.1);
        run.trace
            .push((s as f64, replicas, p95.min(10.0), failed as f64));
    }
    eprintln!(
        "  {name}: {} sent, {} failed, p95 {:.0} ms",
        report.sent, report.errors, report.latency_ms.p95
    );
    drop(up);
    Ok(run)
}
