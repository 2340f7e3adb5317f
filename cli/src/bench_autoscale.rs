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
}

const PER_INSTANCE: f64 = 200.0;
/// The target: 150/s an instance, 75 % of its capacity (the HPA's
/// common utilisation target).
const TARGET: f64 = 150.0;
const SERVICE_S: f64 = 0.040;
const SLO_S: f64 = 1.0;
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

/// The load history the controller queries, as a store would hold it:
/// `requests_total`'s rate.
struct Sim {
    /// Load a second, from the start.
    history: Mutex<Vec<f64>>,
    start_ms: i64,
}

impl Sim {
    fn mean(&self, from_s: i64, to_s: i64) -> Option<f64> {
        let h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let (a, b) = (from_s.max(0) as usize, (to_s.max(0) as usize).min(h.len()));
        (b > a).then(|| h[a..b].iter().sum::<f64>() / (b - a) as f64)
    }
}

/// The range of a query's `rate(…[Ns])`, in seconds (60 without one).
fn window_s(query: &str) -> i64 {
    query
        .split_once('[')
        .and_then(|(_, r)| r.split_once("s]"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or(60)
}

impl keel_controller::MetricSource for Sim {
    fn instant(&self, query: &str, t_ms: i64) -> Result<keel_controller::run::Samples, String> {
        // rate(…[window]) at t.
        let t = (t_ms - self.start_ms) / 1000;
        self.mean(t - window_s(query), t)
            .map(|v| vec![(BTreeMap::new(), v)])
            .ok_or_else(|| "no data".into())
    }

    fn range(&self, _: &str, start: i64, end: i64, step: i64) -> Result<Vec<(i64, f64)>, String> {
        Ok((0..=(end - start) / step)
            .filter_map(|k| {
                let t = start + k * step;
                let s = (t - self.start_ms) / 1000;
                self.mean(s - 60, s).map(|v| (t, v))
            })
            .collect())
    }
}

/// One policy's run.
struct Run {
    name: &'static str,
    violation_s: u64,
    errors: f64,
    replica_s: u64,
    actions: u32,
    /// (second of the measured day, replicas, p95 s), every 60 s.
    trace: Vec<(u64, u32, f64)>,
}

fn policy(name: &str, warm_up: Duration, keel: bool) -> Policy {
    let q = "sum(rate(http_server_request_duration_seconds_count{tier=\"web\"}[60s]))";
    // Panic reads a short window (Knative's panic window is 6 s).
    let burst = "sum(rate(http_server_request_duration_seconds_count{tier=\"web\"}[10s]))";
    Policy {
        name: name.into(),
        actuator: ActuatorConfig::DryRun { start: 2 },
        min: 2,
        max: 100,
        metrics: vec![MetricSpec {
            name: "request rate".into(),
            query: q.into(),
            per_instance: None,
            average: Some(TARGET),
            total: None,
        }],
        behavior: if keel {
            keel_behavior()
        } else {
            Default::default()
        },
        warm_up,
        panic: keel.then(|| PanicSpec {
            demand: burst.into(),
            per_instance: TARGET,
            threshold: 2.0,
            window: Duration::from_secs(60),
        }),
        predictive: keel.then(|| PredictiveSpec {
            mode: PredictiveMode::ForecastAndScale,
            query: q.into(),
            per_instance: TARGET,
            step: Duration::from_secs(300),
            history: Duration::from_secs(14 * 86_400),
            refit: Duration::from_secs(3600),
            buffer: Duration::from_secs(300),
        }),
    }
}

/// Keel's policy scales in sooner than the HPA (a 2-minute window):
/// the forecast brings capacity back before the next peak, and panic
/// covers bursts, so holding capacity 5 minutes "just in case" buys
/// less. Scaling up is the HPA's.
fn keel_behavior() -> keel_controller::Behavior {
    let mut b = keel_controller::Behavior::default();
    b.scale_down.stabilization_window = Duration::from_secs(120);
    b
}

/// Run one policy over `days` + 1 days; `fixed`: a constant count.
fn simulate(
    args: &AutoscaleBenchArgs,
    name: &'static str,
    mode: Option<bool>,
    fixed: u32,
) -> anyhow::Result<Run> {
    let start_ms: i64 = 1_796_083_200_000; // a midnight, UTC
    let sim = Arc::new(Sim {
        history: Mutex::new(Vec::new()),
        start_ms,
    });
    let clock = ManualClock::new(keel_core::clock::from_unix_ms(start_ms));
    let shared: SharedClock = Arc::new(clock.clone());
    let controller = mode.map(|keel| {
        Controller::new(
            &ControllerConfig {
                policies: vec![policy(name, args.warm_up, keel)],
                ..ControllerConfig::default()
            },
            sim.clone(),
            shared.clone(),
            None,
        )
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let total_s = u64::from(args.days + 1) * 86_400;
    let measured_from = u64::from(args.days) * 86_400;
    let warm = args.warm_up.as_secs();
    // When each instance was asked for (seconds); the model's capacity.
    let mut instances: VecDeque<u64> = (0..fixed.max(2)).map(|_| 0).collect();
    let mut run = Run {
        name,
        violation_s: 0,
        errors: 0.0,
        replica_s: 0,
        actions: 0,
        trace: Vec::new(),
    };
    for t in 0..total_s {
        let l = load(args.base, t, t >= measured_from);
        sim.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(l);
        if let Some(c) = &controller
            && t % 15 == 0
        {
            let now = start_ms + t as i64 * 1000;
            clock.set(keel_core::clock::from_unix_ms(now));
            for e in rt.block_on(c.tick(now)) {
                if let Some(n) = e.read_back {
                    let n = n as usize;
                    if t >= measured_from {
                        run.actions += 1;
                    }
                    while instances.len() < n {
                        instances.push_back(t);
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
            .filter(|s| t >= **s + warm || **s == 0)
            .count();
        let cap = ready as f64 * PER_INSTANCE;
        let rho = if cap > 0.0 { l / cap } else { f64::INFINITY };
        let p95 = if rho < 1.0 {
            (3.0 * SERVICE_S / (1.0 - rho)).min(TIMEOUT_S)
        } else {
            TIMEOUT_S
        };
        if t >= measured_from {
            if p95 > SLO_S {
                run.violation_s += 1;
            }
            run.errors += (l - cap).max(0.0);
            run.replica_s += instances.len() as u64;
            if t % 60 == 0 {
                run.trace
                    .push((t - measured_from, instances.len() as u32, p95));
            }
        }
        if t % 86_400 == 0 && t > 0 {
            eprintln!("  {name}: day {} of {}", t / 86_400, args.days + 1);
        }
    }
    Ok(run)
}

pub fn run(args: AutoscaleBenchArgs) -> anyhow::Result<()> {
    // Fixed: the daily peak (3.5 × base) at the target.
    let fixed = (3.5 * args.base / TARGET).ceil() as u32;
    println!(
        "keel bench autoscale: {} days of history + 1 measured (5× spike at 15:00 for 10 min); base {}/s; an instance serves {PER_INSTANCE}/s, warm-up {}; SLO p95 ≤ {SLO_S} s",
        args.days,
        args.base,
        humantime::format_duration(args.warm_up)
    );
    let runs = vec![
        simulate(&args, "fixed", None, fixed)?,
        simulate(&args, "reactive (HPA defaults)", Some(false), 0)?,
        simulate(&args, "Keel (predictive + reactive + panic)", Some(true), 0)?,
    ];
    println!(
        "{:<40} {:>14} {:>12} {:>16} {:>8}",
        "policy", "SLO-violation s", "errors", "replica-seconds", "actions"
    );
    for r in &runs {
        println!(
            "{:<40} {:>14} {:>12.0} {:>16} {:>8}",
            r.name, r.violation_s, r.errors, r.replica_s, r.actions
        );
    }
    let (hpa, keel) = (&runs[1], &runs[2]);
    println!(
        "Keel / HPA: SLO-violation seconds {:.2} (goal ≤ 0.50), replica-seconds {:.2} (goal ≤ 1.00)",
        keel.violation_s as f64 / (hpa.violation_s.max(1)) as f64,
        keel.replica_s as f64 / hpa.replica_s.max(1) as f64
    );
    if std::env::var_os("KEEL_BENCH_HOURLY").is_some() {
        for h in 0..24u64 {
            let avg = |r: &Run| {
                let v: Vec<f64> = r
                    .trace
                    .iter()
                    .filter(|p| p.0 / 3600 == h)
                    .map(|p| f64::from(p.1))
                    .collect();
                v.iter().sum::<f64>() / v.len().max(1) as f64
            };
            eprintln!(
                "{h:02}h  hpa {:6.2}  keel {:6.2}",
                avg(&runs[1]),
                avg(&runs[2])
            );
        }
    }
    std::fs::write(&args.plot, svg(&runs))?;
    println!("plot: {}", args.plot.display());
    Ok(())
}

/// Replicas (top) and p95 latency (bottom, log scale) over the measured
/// day, one line a policy.
fn svg(runs: &[Run]) -> String {
    let (w, h, pad) = (1000.0, 600.0, 50.0);
    let colours = ["#888888", "#d62728", "#1f77b4"];
    let max_r = runs
        .iter()
        .flat_map(|r| r.trace.iter().map(|p| p.1))
        .max()
        .unwrap_or(1) as f64;
    let x = |s: u64| pad + s as f64 / 86_400.0 * (w - 2.0 * pad);
    let top = |r: u32| pad + (1.0 - f64::from(r) / max_r) * (h / 2.0 - 1.5 * pad);
    let bottom = |p: f64| {
        let lo = 0.1f64.log10();
        let hi = TIMEOUT_S.log10();
        h / 2.0 + pad / 2.0 + (1.0 - (p.max(0.1).log10() - lo) / (hi - lo)) * (h / 2.0 - 1.5 * pad)
    };
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{pad}\" y=\"30\">replicas over the measured day (max {max_r})</text>\n<text x=\"{pad}\" y=\"{}\">p95 latency, log scale 0.1–10 s; dashed: SLO {SLO_S} s</text>\n",
        h / 2.0 + 10.0
    );
    let slo = bottom(SLO_S);
    out.push_str(&format!(
        "<line x1=\"{pad}\" x2=\"{}\" y1=\"{slo}\" y2=\"{slo}\" stroke=\"black\" stroke-dasharray=\"4 4\"/>\n",
        w - pad
    ));
    for hour in (0..=24).step_by(3) {
        let xx = x(hour * 3600);
        out.push_str(&format!(
            "<text x=\"{}\" y=\"{}\">{hour:02}:00</text>\n",
            xx - 15.0,
            h - 10.0
        ));
    }
    for (i, r) in runs.iter().enumerate() {
        let c = colours[i % colours.len()];
        let pts = |f: &dyn Fn(&(u64, u32, f64)) -> f64| {
            r.trace
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
