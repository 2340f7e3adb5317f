//! `keel bench autoscale`: three capacity policies on the same
//! diurnal-plus-spike load, on simulated time with a capacity model of
//! the sample app's web tier, through the real controller (its HPA
//! algorithm, panic mode and Holt-Winters forecasts; a dry-run actuator
//! whose count the model follows):
//!
//! - fixed: as many instances as the daily peak (without the spike) needs
//!   at the target;
//! - reactive: the HPA's defaults (request rate, 100/s an instance);
//! - Keel: the same, plus panic mode and predictive `forecast_and_scale`.
//!
//! The model: an instance serves 200 requests/s (the sample app's default
//! capacity: 8 at a time × 40 ms), is useful `--warm-up` after it is
//! asked for, and answers at p95 = 3 × 40 ms / (1 − utilisation)
//! (M/M/1); beyond its capacity the excess is refused (errors) and p95 is
//! the 10 s timeout. The SLO is p95 ≤ 1 s (utilisation ≤ 88 %). Days of history come first
//! (the forecasts learn from them); the figures are over the last day,
//! which has a 5× spike for 10 minutes at 15:00. One point a second.
//!
//! `--live` runs the same three policies against the real sample app
//! (`bench_autoscale_live`), and this model beside each on the same load,
//! to show how far the model holds.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_controller::{
    ActuatorConfig, Controller, ControllerConfig, MetricSpec, PanicSpec, Policy, PredictiveMode,
    PredictiveSpec,
};
use keel_core::clock::{ManualClock, SharedClock};

/// Flags of `keel bench autoscale`.
#[derive(clap::Args)]
pub struct AutoscaleBenchArgs {
    /// Days of history before the measured day.
    #[arg(long, default_value_t = 7)]
    days: u32,
    /// How long a new instance takes to serve.
    #[arg(long, default_value = "60s", value_parser = keel_core::duration::parse)]
    warm_up: Duration,
    /// Requests/s at the quietest hour of a day (peaks are 2.5–3.5×
    /// the day's base, nights a third).
    #[arg(long, default_value_t = 400.0)]
    base: f64,
    /// Where to write the plot (SVG).
    #[arg(long, default_value = "autoscale.svg")]
    plot: std::path::PathBuf,
    /// Run live against the sample app (`keel up`, real load) on a
    /// compressed cycle instead of the simulated days.
    #[arg(long)]
    live: bool,
    #[command(flatten)]
    live_args: crate::bench_autoscale_live::LiveArgs,
}

const SERVICE_S: f64 = 0.040;
pub(crate) const SLO_S: f64 = 1.0;
const TIMEOUT_S: f64 = 10.0;

/// The day's shape at `hour`: the seeds' peaks over a base of 1.
fn shape(hour: f64) -> f64 {
    if (8.0..10.0).contains(&hour) {
        3.0
    } else if (12.0..13.0).contains(&hour) {
        2.5
    } else if (18.0..20.0).contains(&hour) {
        3.5
    } else if !(6.0..23.0).contains(&hour) {
        1.0 / 3.5
    } else {
        1.0
    }
}

/// Load (requests/s) at second `t`: the shape with 5-minute ramps (its
/// mean over the last 5 minutes), and on the measured day a 5× spike
/// for 10 minutes at 15:00.
fn load(base: f64, t: u64, spike_day: bool) -> f64 {
    let hour = (t % 86_400) as f64 / 3600.0;
    let ramped = (0..5)
        .map(|k| shape((hour - f64::from(k) / 60.0).rem_euclid(24.0)))
        .sum::<f64>()
        / 5.0;
    let mut l = base * ramped;
    if spike_day && (15.0..15.0 + 10.0 / 60.0).contains(&hour) {
        l *= 5.0;
    }
    l
}

/// A load, the capacity model, and the policies' time scale: the
/// simulated days, or the live run's compressed cycles.
pub(crate) struct Scenario {
    /// Load (requests/s) at each step, history first.
    pub load: Vec<f64>,
    /// Spacing of `load`, ms.
    pub step_ms: i64,
    /// The first measured step.
    pub measured_from: usize,
    /// Every time window of the policies (evaluation interval, rate
    /// periods, stabilization, warm-up, buffer) is divided by this.
    pub compress: f64,
    /// What one instance serves (requests/s), and the policies' target.
    pub per_instance: f64,
    pub target: f64,
    /// How long a new instance takes to serve (already compressed).
    pub warm_up: Duration,
    /// The predictive season, the spacing of its history (compressed).
    pub season: Duration,
    pub forecast_step: Duration,
    /// The rate windows of the reactive and the panic queries.
    pub rate_window: Duration,
    pub burst_window: Duration,
    /// How often the metric is scraped (what panic's `irate` sees).
    pub scrape: Duration,
    pub min: u32,
    pub max: u32,
}

impl Scenario {
    /// `d` compressed.
    pub fn scaled(&self, d: Duration) -> Duration {
        Duration::from_secs_f64(d.as_secs_f64() / self.compress)
    }

    /// The controller's evaluation interval: the HPA's 15 s, compressed.
    pub fn interval(&self) -> Duration {
        self.scaled(Duration::from_secs(15))
    }

    /// Fixed capacity: the history's peak (without a burst), at the
    /// target; with no history, the measured load's peak.
    pub fn fixed(&self) -> u32 {
        let history = if self.measured_from == 0 {
            &self.load[..]
        } else {
            &self.load[..self.measured_from]
        };
        let peak = history.iter().cloned().fold(0.0, f64::max);
        ((peak / self.target).ceil() as u32).max(self.min)
    }
}

/// The load history the controller queries, as a store would hold it:
/// `requests_total`'s rate.
struct Sim {
    /// Load a step, from the start.
    history: Mutex<Vec<f64>>,
    start_ms: i64,
    step_ms: i64,
    /// The scrape interval: `irate` reads the load over the last one.
    scrape_ms: i64,
}

impl Sim {
    /// The mean load over (from_ms, to_ms] after the start.
    fn mean(&self, from_ms: i64, to_ms: i64) -> Option<f64> {
        let h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let idx = |ms: i64| ((ms.max(0) / self.step_ms) as usize).min(h.len());
        let (a, b) = (idx(from_ms), idx(to_ms));
        (b > a).then(|| h[a..b].iter().sum::<f64>() / (b - a) as f64)
    }
}

impl Sim {
    /// The span of load a query reads: the range of its `rate(…[N…])`
    /// (60 s without one), or for `irate` the last scrape interval (its
    /// last two samples).
    fn window_ms(&self, query: &str) -> i64 {
        if query.contains("irate(") {
            return self.scrape_ms;
        }
        query
            .split_once('[')
            .and_then(|(_, r)| r.split_once(']'))
            .and_then(|(d, _)| keel_core::duration::parse(d).ok())
            .map_or(60_000, |d| d.as_millis() as i64)
    }
}

impl keel_controller::MetricSource for Sim {
    fn instant(&self, query: &str, t_ms: i64) -> Result<keel_controller::run::Samples, String> {
        // rate(…[window]) at t.
        let t = t_ms - self.start_ms;
        self.mean(t - self.window_ms(query), t)
            .map(|v| vec![(BTreeMap::new(), v)])
            .ok_or_else(|| "no data".into())
    }

    fn range(
        &self,
        query: &str,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<Vec<(i64, f64)>, String> {
        let w = self.window_ms(query);
        Ok((0..=(end - start) / step)
            .filter_map(|k| {
                let t = start + k * step;
                let s = t - self.start_ms;
                self.mean(s - w, s).map(|v| (t, v))
            })
            .collect())
    }
}

/// One policy's run.
pub(crate) struct Run {
    pub name: &'static str,
    /// Seconds whose p95 exceeded the SLO or more than 1 % of whose
    /// requests failed.
    pub violation_s: f64,
    /// Failed requests, and by cause.
    pub failed: f64,
    pub causes: BTreeMap<String, f64>,
    pub replica_s: f64,
    pub actions: u32,
    /// Direction changes inside the stabilization window of the move
    /// before, and those of them panic made (allowed).
    pub reversals: u32,
    pub panic_reversals: u32,
    /// (seconds into the measured part, replicas, p95 s, failed requests).
    pub trace: Vec<Point>,
}

impl Run {
    /// An empty run of policy `name`.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            violation_s: 0.0,
            failed: 0.0,
            causes: BTreeMap::new(),
            replica_s: 0.0,
            actions: 0,
            reversals: 0,
            panic_reversals: 0,
            trace: Vec::new(),
        }
    }
}

/// The share of a second's requests that may fail before the second
/// violates the SLO (a failed request counts as infinitely slow).
pub(crate) const SLO_FAILED: f64 = 0.01;

/// Whether a second with this p95 and this share failed violates the SLO.
pub(crate) fn violates(p95: f64, failed_share: f64) -> bool {
    p95 > SLO_S || failed_share > SLO_FAILED
}

/// A scaling action: when, from, to, and whether panic made it.
pub(crate) type Move = (i64, u32, u32, bool);

/// Moves that reverse the move before them inside that move's
/// stabilization window (`up` and `down` windows, ms), not counting
/// those panic made (the rule allows them): (reversals, by panic).
pub(crate) fn reversals(moves: &[Move], up_ms: i64, down_ms: i64) -> (u32, u32) {
    let mut out = (0, 0);
    for w in moves.windows(2) {
        let (t0, a0, b0, _) = w[0];
        let (t1, a1, b1, panic) = w[1];
        let (up0, up1) = (b0 > a0, b1 > a1);
        if up0 != up1 && t1 - t0 < if up0 { up_ms } else { down_ms } {
            if panic {
                out.1 += 1;
            } else {
                out.0 += 1;
            }
        }
    }
    out
}

/// Which controller a run has.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    /// A constant count.
    Fixed(u32),
    /// The HPA's defaults.
    Reactive,
    /// Predictive + reactive + panic.
    Keel,
}

/// A policy for `kind` on the web tier's request rate, its windows
/// compressed as the scenario says.
pub(crate) fn policy(sc: &Scenario, name: &str, kind: Kind, actuator: ActuatorConfig) -> Policy {
    let secs = |d: Duration| format!("{}ms", d.as_millis());
    let q = format!(
        "sum(rate(http_server_request_duration_seconds_count{{tier=\"web\"}}[{}]))",
        secs(sc.rate_window)
    );
    // Panic reads what arrives at the lb (counted on arrival: a burst
    // still queued shows) between the last two scrapes (irate), the
    // soonest a scraped counter shows a burst; a rate over a short
    // window (Knative's panic window is 6 s) would see only part of it
    // for the window's length.
    let arrivals = |rate: &str, window: Duration| {
        format!(
            "sum({rate}(lb_requests_received_total{{tier=\"lb\"}}[{}]))",
            secs(window)
        )
    };
    let burst = arrivals("irate", sc.burst_window);
    let keel = matches!(kind, Kind::Keel);
    // Keel's reactive rule reads demand too: requests arriving at the lb
    // over the rate window. The web tier's completions (the HPA's metric,
    // as an HPA on an ingress' request count is usually set) cannot
    // exceed what the instances serve, so they hide a burst's size while
    // it lasts and overstate demand while its backlog drains after it.
    let reactive = if keel {
        arrivals("rate", sc.rate_window)
    } else {
        q.clone()
    };
    let (min, max) = match kind {
        Kind::Fixed(n) => (n, n),
        _ => (sc.min, sc.max),
    };
    let mut behavior = keel_controller::Behavior::hpa();
    if keel {
        keel_behavior(&mut behavior);
    }
    for rules in [&mut behavior.scale_up, &mut behavior.scale_down] {
        rules.stabilization_window = sc.scaled(rules.stabilization_window);
        rules.burst_memory = sc.scaled(rules.burst_memory);
        for p in &mut rules.policies {
            p.period = sc.scaled(p.period);
        }
    }
    Policy {
        name: name.into(),
        actuator,
        min,
        max,
        metrics: vec![MetricSpec {
            name: "request rate".into(),
            query: reactive,
            per_instance: None,
            average: Some(sc.target),
            total: None,
        }],
        behavior,
        warm_up: sc.warm_up,
        panic: keel.then(|| PanicSpec {
            demand: burst,
            per_instance: sc.target,
            threshold: 2.0,
            window: sc.scaled(Duration::from_secs(60)),
        }),
        predictive: keel.then(|| PredictiveSpec {
            mode: PredictiveMode::ForecastAndScale,
            query: q,
            per_instance: sc.target,
            step: sc.forecast_step,
            history: sc.season * 14,
            refit: sc.season / 24,
            buffer: sc.scaled(Duration::from_secs(300)),
            season: sc.season,
        }),
    }
}

/// Keel's policy scales in a little sooner than the HPA (a 4-minute
/// window): the forecast brings capacity back before the next peak, and
/// panic covers bursts, so holding capacity 5 minutes "just in case"
/// buys less. A 2-minute window saved 0.5 % of replica-seconds but met
/// the live cycle's burst, 150 window-seconds after a peak, at the
/// minimum (2 instances; the HPA had 3), and failed more requests than
/// the HPA. It never reverses inside a window and remembers bursts for
/// 10 minutes (Keel's defaults). Scaling up is the HPA's.
const KEEL_SCALE_DOWN_WINDOW_S: u64 = 240;

fn keel_behavior(b: &mut keel_controller::Behavior) {
    let keel = keel_controller::Behavior::default();
    b.allow_reversal = keel.allow_reversal;
    b.scale_down.burst_memory = keel.scale_down.burst_memory;
    b.scale_down.stabilization_window = Duration::from_secs(KEEL_SCALE_DOWN_WINDOW_S);
}

/// Erlang C: the probability that an arrival waits, at `c` servers
/// offered `a` erlangs (a < c).
fn erlang_c(c: u32, a: f64) -> f64 {
    // Σ a^k/k! for k < c, and a^c/c!, by running terms.
    let (mut sum, mut term) = (0.0, 1.0);
    for k in 0..c {
        sum += term;
        term *= a / f64::from(k + 1);
    }
    let top = term * f64::from(c) / (f64::from(c) - a);
    top / (sum + top)
}

/// The model's p95 latency (s) of `load` spread over `ready` instances,
/// each M/M/c with c = its concurrency (what it serves ÷ 1/service
/// time): the service time's 95th percentile (3 × the mean of an
/// exponential) plus the 95th percentile of the wait; the timeout at or
/// beyond capacity.
fn model_p95(sc: &Scenario, load: f64, ready: usize) -> f64 {
    if ready == 0 {
        return TIMEOUT_S;
    }
    let mu = 1.0 / SERVICE_S;
    let c = (sc.per_instance / mu).round().max(1.0) as u32;
    let lambda = load / ready as f64;
    let a = lambda / mu;
    if a >= f64::from(c) {
        return TIMEOUT_S;
    }
    let wait = erlang_c(c, a);
    let wait_p95 = if wait > 0.05 {
        (wait / 0.05).ln() / (f64::from(c) * mu - lambda)
    } else {
        0.0
    };
    (3.0 * SERVICE_S + wait_p95).min(TIMEOUT_S)
}

/// Run one policy over the scenario through the real controller (a
/// dry-run actuator whose count the model follows).
pub(crate) fn simulate(sc: &Scenario, name: &'static str, kind: Kind) -> anyhow::Result<Run> {
    let start_ms: i64 = 1_796_083_200_000; // a midnight, UTC
    let sim = Arc::new(Sim {
        history: Mutex::new(Vec::with_capacity(sc.load.len())),
        start_ms,
        step_ms: sc.step_ms,
        scrape_ms: sc.scrape.as_millis() as i64,
    });
    let clock = ManualClock::new(keel_core::clock::from_unix_ms(start_ms));
    let shared: SharedClock = Arc::new(clock.clone());
    let start = match kind {
        Kind::Fixed(n) => n,
        _ => sc.min,
    };
    let controller = Controller::new(
        &ControllerConfig {
            interval: sc.interval(),
            policies: vec![policy(sc, name, kind, ActuatorConfig::DryRun { start })],
            ..ControllerConfig::default()
        },
        sim.clone(),
        shared.clone(),
        None,
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let tick_every = (sc.interval().as_millis() as i64 / sc.step_ms).max(1) as usize;
    let warm = (sc.warm_up.as_millis() as i64 / sc.step_ms) as usize;
    let step_s = sc.step_ms as f64 / 1000.0;
    let day = (86_400_000 / sc.step_ms) as usize;
    // When each instance was asked for (steps; None: there from the start).
    let mut instances: VecDeque<Option<usize>> = (0..start).map(|_| None).collect();
    let mut run = Run::new(name);
    let behavior = policy(sc, name, kind, ActuatorConfig::DryRun { start }).behavior;
    let mut moves: Vec<Move> = Vec::new();
    for (t, &l) in sc.load.iter().enumerate() {
        sim.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(l);
        if t % tick_every == 0 {
            let now = start_ms + t as i64 * sc.step_ms;
            clock.set(keel_core::clock::from_unix_ms(now));
            for e in rt.block_on(controller.tick(now)) {
                if let Some(n) = e.read_back {
                    let n = n as usize;
                    if t >= sc.measured_from && n != instances.len() {
                        run.actions += 1;
                        let panic = e.decision.as_ref().is_some_and(|d| d["panic"] == true);
                        moves.push((now, instances.len() as u32, n as u32, panic));
                    }
                    while instances.len() < n {
                        instances.push_back(Some(t));
                    }
                    // Scale-in removes the newest first.
                    while instances.len() > n {
                        instances.pop_back();
                    }
                }
            }
        }
        let ready = instances
            .iter()
            .filter(|s| s.is_none_or(|s| t >= s + warm))
            .count();
        let p95 = model_p95(sc, l, ready);
        if t >= sc.measured_from {
            // Beyond what the ready instances serve, requests are shed;
            // the part the instances still warming up would have served
            // is their cause.
            let failed = (l - ready as f64 * sc.per_instance).max(0.0) * step_s;
            let cold = (instances.len() - ready) as f64 * sc.per_instance * step_s;
            let by_cold = failed.min(cold);
            for (cause, n) in [
                ("cold instance (warming up)", by_cold),
                ("shed (over capacity)", failed - by_cold),
            ] {
                if n > 0.0 {
                    *run.causes.entry(cause.into()).or_default() += n;
                }
            }
            let share = if l > 0.0 { failed / (l * step_s) } else { 0.0 };
            if violates(p95, share) {
                run.violation_s += step_s;
            }
            run.failed += failed;
            run.replica_s += instances.len() as f64 * step_s;
            run.trace.push((
                (t - sc.measured_from) as f64 * step_s,
                instances.len() as u32,
                p95,
                failed,
            ));
        }
        if t % day == 0 && t > 0 {
            eprintln!(
                "  {name}: day {} of {}",
                t / day,
                sc.load.len().div_ceil(day)
            );
        }
    }
    (run.reversals, run.panic_reversals) = reversals(
        &moves,
        behavior.scale_up.stabilization_window.as_millis() as i64,
        behavior.scale_down.stabilization_window.as_millis() as i64,
    );
    Ok(run)
}

/// The simulated days: `days` of history, then the measured day with its
/// spike, a point a second.
fn days_scenario(args: &AutoscaleBenchArgs) -> Scenario {
    let total_s = u64::from(args.days + 1) * 86_400;
    let measured_from = u64::from(args.days) * 86_400;
    Scenario {
        load: (0..total_s)
            .map(|t| load(args.base, t, t >= measured_from))
            .collect(),
        step_ms: 1000,
        measured_from: measured_from as usize,
        compress: 1.0,
        per_instance: 200.0,
        // 150/s an instance, 75 % of its capacity (the HPA's common
        // utilisation target).
        target: 150.0,
        warm_up: args.warm_up,
        season: Duration::from_secs(86_400),
        forecast_step: Duration::from_secs(300),
        rate_window: Duration::from_secs(60),
        // Two 15 s scrapes and some: panic's irate reads the last two.
        burst_window: Duration::from_secs(45),
        scrape: Duration::from_secs(15),
        min: 2,
        max: 100,
    }
}

/// Print the four figures of each run and the Keel/HPA ratios.
pub(crate) fn report(runs: &[Run]) {
    println!(
        "{:<40} {:>15} {:>10} {:>16} {:>8} {:>10} {:>9}",
        "policy",
        "SLO-violation s",
        "failed",
        "replica-seconds",
        "actions",
        "reversals",
        "by panic"
    );
    for r in runs {
        println!(
            "{:<40} {:>15.1} {:>10.0} {:>16.0} {:>8} {:>10} {:>9}",
            r.name, r.violation_s, r.failed, r.replica_s, r.actions, r.reversals, r.panic_reversals
        );
    }
    for r in runs.iter().filter(|r| !r.causes.is_empty()) {
        let causes: Vec<String> = r
            .causes
            .iter()
            .map(|(c, n)| format!("{c} {n:.0}"))
            .collect();
        println!("  failed by cause, {}: {}", r.name, causes.join(", "));
    }
    let (hpa, keel) = (&runs[1], &runs[2]);
    println!(
        "Keel / HPA: SLO-violation seconds {:.2} (goal ≤ 0.30), failed requests {:.2} (goal ≤ 1.00), replica-seconds {:.2} (goal ≤ 1.00); Keel's reversals inside a window, panic's aside: {} (goal 0)",
        keel.violation_s / hpa.violation_s.max(1.0),
        keel.failed / hpa.failed.max(1.0),
        keel.replica_s / hpa.replica_s.max(1.0),
        keel.reversals
    );
}

pub fn run(args: AutoscaleBenchArgs) -> anyhow::Result<()> {
    if args.live {
        return crate::bench_autoscale_live::run(&args.live_args);
    }
    let sc = days_scenario(&args);
    println!(
        "keel bench autoscale: {} days of history + 1 measured (5× spike at 15:00 for 10 min); base {}/s; an instance serves {}/s, warm-up {}; SLO p95 ≤ {SLO_S} s",
        args.days,
        args.base,
        sc.per_instance,
        humantime::format_duration(args.warm_up)
    );
    let runs = vec![
        simulate(&sc, "fixed", Kind::Fixed(sc.fixed()))?,
        simulate(&sc, "reactive (HPA defaults)", Kind::Reactive)?,
        simulate(&sc, "Keel (predictive + reactive + panic)", Kind::Keel)?,
    ];
    report(&runs);
    std::fs::write(&args.plot, svg(&runs, 86_400.0, "the measured day"))?;
    println!("plot: {}", args.plot.display());
    Ok(())
}

/// A point of a run's trace: (seconds, replicas, p95 s, failed requests).
type Point = (f64, u32, f64, f64);

/// Replicas (top) and p95 latency (bottom, log scale) over the measured
/// part (`span_s` long), one line a policy.
pub(crate) fn svg(runs: &[Run], span_s: f64, what: &str) -> String {
    let (w, h, pad) = (1000.0, 600.0, 50.0);
    let colours = ["#888888", "#d62728", "#1f77b4"];
    let max_r = runs
        .iter()
        .flat_map(|r| r.trace.iter().map(|p| p.1))
        .max()
        .unwrap_or(1) as f64;
    let x = |s: f64| pad + s / span_s * (w - 2.0 * pad);
    let top = |r: u32| pad + (1.0 - f64::from(r) / max_r) * (h / 2.0 - 1.5 * pad);
    let bottom = |p: f64| {
        let lo = 0.01f64.log10();
        let hi = TIMEOUT_S.log10();
        h / 2.0 + pad / 2.0 + (1.0 - (p.max(0.01).log10() - lo) / (hi - lo)) * (h / 2.0 - 1.5 * pad)
    };
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{pad}\" y=\"30\">replicas over {what} (max {max_r})</text>\n<text x=\"{pad}\" y=\"{}\">p95 latency, log scale 0.01–10 s; dashed: SLO {SLO_S} s; ticks below: seconds with failed requests</text>\n",
        h / 2.0 + 10.0
    );
    let slo = bottom(SLO_S);
    out.push_str(&format!(
        "<line x1=\"{pad}\" x2=\"{}\" y1=\"{slo}\" y2=\"{slo}\" stroke=\"black\" stroke-dasharray=\"4 4\"/>\n",
        w - pad
    ));
    // Eight ticks along the time axis: hours of a day, else seconds.
    for k in 0..=8 {
        let at = span_s * f64::from(k) / 8.0;
        let label = if span_s >= 86_400.0 {
            format!("{:02}:00", (at / 3600.0).round() as u32)
        } else {
            format!("{at:.0} s")
        };
        out.push_str(&format!(
            "<text x=\"{}\" y=\"{}\">{label}</text>\n",
            x(at) - 15.0,
            h - 10.0
        ));
    }
    for (i, r) in runs.iter().enumerate() {
        let c = colours[i % colours.len()];
        // At most ~2,000 points a line: the worst p95 and the most
        // replicas of each stretch, so short spikes still show.
        let stride = r.trace.len().div_ceil(2000).max(1);
        let thinned: Vec<Point> = r
            .trace
            .chunks(stride)
            .map(|c| {
                let worst = c.iter().map(|p| p.2).fold(0.0, f64::max);
                let most = c.iter().map(|p| p.1).max().unwrap_or(0);
                let failed = c.iter().map(|p| p.3).sum::<f64>();
                (c[0].0, most, worst, failed)
            })
            .collect();
        // Failed requests: a tick under the p95 panel, one row a policy.
        let row = h - 30.0 - 6.0 * i as f64;
        for p in thinned.iter().filter(|p| p.3 > 0.0) {
            out.push_str(&format!(
                "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1:.1}\" y2=\"{2:.1}\" stroke=\"{c}\" stroke-width=\"2\"/>\n",
                x(p.0),
                row,
                row - 5.0
            ));
        }
        let pts = |f: &dyn Fn(&Point) -> f64| {
            thinned
                .iter()
                .map(|p| format!("{:.1},{:.1}", x(p.0), f(p)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        out.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"1.5\" points=\"{}\"/>\n",
            pts(&|p| top(p.1))
        ));
        out.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"1\" points=\"{}\"/>\n",
            pts(&|p| bottom(p.2))
        ));
        out.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" fill=\"{c}\">{}</text>\n",
            w - 330.0,
            30.0 + 16.0 * i as f64,
            r.name
        ));
    }
    out.push_str("</svg>\n");
    out
}
