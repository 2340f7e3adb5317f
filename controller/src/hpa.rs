//! The reactive autoscaler: the Kubernetes HPA's algorithm, exactly,
//! plus a panic mode for bursts as Knative has.
//!
//! Per metric (`replica_calculator.go`): the usage ratio to the target;
//! within the tolerance nothing changes; else `ceil(ratio × ready)`.
//! Per-instance metrics follow the HPA's rules for missing and not-ready
//! instances: a missing instance counts as 100 % of the target when
//! scaling down and 0 when scaling up; an instance still warming up is
//! ignored, and counts as 0 when scaling up; a proposal that would flip
//! direction once they are counted is dropped. Over several metrics the
//! largest proposal wins; while any metric cannot be read, no scale-down.
//! Then the behaviour: stabilization, rate policies, min/max.
//!
//! Panic: when demand from the arrival rate needs at least
//! `panic_threshold` × the ready instances, jump straight to the needed
//! count (past the scale-up rate policies, never past `max`), and do not
//! scale down until `panic_window` has passed without that.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::behavior::{Behavior, Clamp, History};

/// What a metric's target means.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Each instance should see this much (HPA `AverageValue` on pod
    /// metrics): the query gives one value per instance.
    PerInstance(f64),
    /// The total divided by the instances should be this (HPA
    /// `AverageValue` on an external metric): the query gives one total.
    AverageOfTotal(f64),
    /// The total should be this (HPA `Value`): the query gives one value.
    Total(f64),
}

impl Target {
    fn value(self) -> f64 {
        match self {
            Target::PerInstance(v) | Target::AverageOfTotal(v) | Target::Total(v) => v,
        }
    }
}

/// One metric's reading at an evaluation.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    /// Per instance (by instance name): its value.
    PerInstance(BTreeMap<String, f64>),
    /// One value.
    Total(f64),
    /// It could not be read (why).
    Invalid(String),
}

/// A metric at an evaluation: its name, target and reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Its name in the policy.
    pub name: String,
    /// Its target.
    pub target: Target,
    /// What was read.
    pub reading: Reading,
}

/// The instances at an evaluation, as the actuator reported them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Instances {
    /// The count (read back from the actuator).
    pub current: u32,
    /// Names of the instances past their warm-up (ready); the rest of
    /// `all` are warming up.
    pub ready: Vec<String>,
    /// Every instance's name.
    pub all: Vec<String>,
}

/// Demand for panic mode: work arriving per second, and what one ready
/// instance handles per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Demand {
    /// Arrival rate (e.g. requests/s).
    pub rate: f64,
    /// One instance's capacity at the target (same unit).
    pub per_instance: f64,
}

/// The autoscaler's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Fewest instances.
    pub min: u32,
    /// Most instances.
    pub max: u32,
    /// HPA behaviour.
    pub behavior: Behavior,
    /// Panic when demand needs this many times the ready instances.
    pub panic_threshold: f64,
    /// Panic lasts this long after its condition was last seen.
    pub panic_window: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            min: 1,
            max: 10,
            behavior: Behavior::default(),
            panic_threshold: 2.0,
            panic_window: Duration::from_secs(60),
        }
    }
}

/// One metric's part in a decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricPart {
    /// The metric.
    pub name: String,
    /// Its value (the per-instance average, or the total).
    pub value: Option<f64>,
    /// Its target.
    pub target: f64,
    /// Value ÷ target (per instance for per-instance targets).
    pub ratio: Option<f64>,
    /// The count it asks for (none: invalid).
    pub proposal: Option<u32>,
    /// How it was reached (tolerance, missing instances, …).
    pub note: String,
}

/// What one evaluation decided, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// When (ms).
    pub at_ms: i64,
    /// The count read back before deciding.
    pub current: u32,
    /// Ready (warm) instances.
    pub ready: u32,
    /// Each metric's reading and proposal.
    pub metrics: Vec<MetricPart>,
    /// The largest proposal (or the current count when none may apply).
    pub proposed: u32,
    /// Each rule that changed the count on the way to the result.
    pub clamps: Vec<Clamp>,
    /// Whether panic mode held.
    pub panic: bool,
    /// The predictive side's part, when it has one.
    pub forecast: Option<ForecastPart>,
    /// The count to apply.
    pub desired: u32,
    /// One line for people.
    pub explanation: String,
}

/// What predictive scaling saw and asked for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForecastPart {
    /// The largest forecast within the lead time: when (ms) …
    pub at_ms: i64,
    /// … its expected value …
    pub mean: f64,
    /// … and its interval.
    pub low: f64,
    /// The interval's high end.
    pub high: f64,
    /// What one instance handles (the policy's `per_instance`).
    pub per_instance: f64,
    /// The count it asks for.
    pub proposal: u32,
    /// Whether it was acted on (`forecast_and_scale`) or only recorded.
    pub applied: bool,
}

/// The reactive autoscaler of one target, with what it remembers.
#[derive(Debug, Clone)]
pub struct Autoscaler {
    /// Its settings.
    pub settings: Settings,
    history: History,
    panic_until_ms: Option<i64>,
    /// The last change the actuator confirmed: when, and whether up.
    last_move: Option<(i64, bool)>,
    /// What each burst (panic) needed, and when: the scale-down floor
    /// within `burst_memory`.
    bursts: VecDeque<(i64, u32)>,
    /// The forecast last acted on: its mean and proposal.
    last_forecast: Option<(f64, u32)>,
}

impl Autoscaler {
    /// One with no history.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            history: History::default(),
            panic_until_ms: None,
            last_move: None,
            bursts: VecDeque::new(),
            last_forecast: None,
        }
    }

    /// The actuator confirmed the count went `from` → `to` at `now_ms`.
    pub fn scaled(&mut self, now_ms: i64, from: u32, to: u32) {
        self.history.scaled(now_ms, from, to);
        if from != to {
            self.last_move = Some((now_ms, to > from));
        }
    }

    /// The last move, if it was the other way from `current` → `out` and
    /// within the stabilization window of its own direction: (when, up,
    /// the window).
    fn reversal(&self, now_ms: i64, current: u32, out: u32) -> Option<(i64, bool, Duration)> {
        let (t, up) = self.last_move?;
        let b = &self.settings.behavior;
        let w = if up {
            b.scale_up.stabilization_window
        } else {
            b.scale_down.stabilization_window
        };
        let reverses = if up { out < current } else { out > current };
        (reverses && now_ms < t + w.as_millis() as i64).then_some((t, up, w))
    }

    /// Decide at `now_ms` from the instances and metrics read then.
    pub fn evaluate(
        &mut self,
        now_ms: i64,
        inst: &Instances,
        metrics: &[Observation],
        demand: Option<Demand>,
    ) -> Decision {
        let s = &self.settings;
        let b = &s.behavior;
        let current = inst.current;
        let mut clamps = Vec::new();
        let parts: Vec<MetricPart> = metrics
            .iter()
            .map(|o| propose(o, inst, b.scale_up.tolerance, b.scale_down.tolerance))
            .collect();
        let invalid = parts.iter().filter(|p| p.proposal.is_none()).count();
        let best = parts.iter().filter_map(|p| p.proposal).max();
        let mut proposed = match best {
            None => current,
            // Some metric unreadable: up only.
            Some(p) if invalid > 0 && p < current => held(
                p,
                current,
                format!("no scale-down while {invalid} metric(s) cannot be read"),
                &mut clamps,
            ),
            Some(p) => p,
        };
        // Panic: demand against ready capacity.
        let ready = inst.ready.len() as u32;
        let mut panic = self.panic_until_ms.is_some_and(|u| now_ms < u);
        let mut needed = None;
        if let Some(d) = demand.filter(|d| d.per_instance > 0.0) {
            let n = (d.rate / d.per_instance).ceil().max(0.0) as u32;
            if f64::from(n) >= s.panic_threshold * f64::from(ready.max(1)) {
                panic = true;
                self.panic_until_ms = Some(now_ms + s.panic_window.as_millis() as i64);
                needed = Some(n);
                self.bursts.push_back((now_ms, n));
            }
        }
        let desired = if current > s.max || (current < s.min && current > 0) {
            // Outside min/max: straight to the bound, as the HPA does.
            let to = current.clamp(s.min, s.max);
            let bound = if current > s.max { "max" } else { "min" };
            held(current, to, format!("{bound} {to}"), &mut clamps)
        } else if current == 0 && s.min > 0 {
            // As the HPA: a target scaled to 0 by hand is left alone.
            held(
                proposed,
                0,
                "scaled to 0 by hand: autoscaling off".into(),
                &mut clamps,
            )
        } else if panic {
            let want = needed.unwrap_or(0).max(proposed).max(current);
            if want != proposed {
                let reverses = self
                    .reversal(now_ms, current, want)
                    .map(|(t, _, w)| {
                        format!(
                            "; reverses the scale-down {} ago, inside its {} window",
                            ago(now_ms - t),
                            humantime::format_duration(w)
                        )
                    })
                    .unwrap_or_default();
                let rule = format!(
                    "panic: demand needs {} (≥ {}× the {ready} ready); no scale-down{reverses}",
                    needed.map_or("more".into(), |n| n.to_string()),
                    s.panic_threshold
                );
                held(proposed, want, rule, &mut clamps);
            }
            proposed = want;
            // The stabilization history still hears of it.
            let _ = self
                .history
                .stabilize(b, now_ms, current, want, &mut Vec::new());
            clamp_range(want, s.min, s.max, &mut clamps)
        } else {
            let stable = self
                .history
                .stabilize(b, now_ms, current, proposed, &mut clamps);
            let up_rate = self.history.up_limit(&b.scale_up, now_ms, current);
            let down_rate = self.history.down_limit(&b.scale_down, now_ms, current);
            let (up, down) = (up_rate.min(s.max), down_rate.max(s.min));
            let mut out = stable;
            // The rate policies, or the bounds where they reach past them.
            if out > up {
                let rule = if up_rate <= s.max {
                    rate_rule("scale-up", &b.scale_up)
                } else {
                    format!("max {}", s.max)
                };
                out = held(out, up, rule, &mut clamps);
            }
            if out < down {
                let rule = if down_rate >= s.min {
                    rate_rule("scale-down", &b.scale_down)
                } else {
                    format!("min {}", s.min)
                };
                out = held(out, down, rule, &mut clamps);
            }
            // Keel: no reversal inside the last move's window.
            if !b.allow_reversal
                && let Some((t, up, w)) = self.reversal(now_ms, current, out)
            {
                let rule = format!(
                    "no reversal: scaled {} {} ago, inside the scale-{} stabilization window {} (only panic reverses)",
                    if up { "up" } else { "down" },
                    ago(now_ms - t),
                    if up { "up" } else { "down" },
                    humantime::format_duration(w)
                );
                out = held(out, current, rule, &mut clamps);
            }
            // Keel: never below what the last burst needed, for a while.
            let memory = b.scale_down.burst_memory.as_millis() as i64;
            while self
                .bursts
                .front()
                .is_some_and(|(t, _)| *t <= now_ms - memory)
            {
                self.bursts.pop_front();
            }
            if out < current
                && let Some(&(t, n)) = self.bursts.iter().max_by_key(|(_, n)| *n)
                && out < n.min(current)
            {
                let rule = format!(
                    "burst memory: a burst needed {n} {} ago (within {})",
                    ago(now_ms - t),
                    humantime::format_duration(b.scale_down.burst_memory)
                );
                out = held(out, n.min(current), rule, &mut clamps);
            }
            clamp_range(out, s.min, s.max, &mut clamps)
        };
        self.history.prune(b, now_ms);
        let explanation = explain(current, desired, &parts, &clamps, panic);
        Decision {
            at_ms: now_ms,
            current,
            ready,
            metrics: parts,
            proposed,
            clamps,
            panic,
            forecast: None,
            desired,
            explanation,
        }
    }

    /// Add the predictive side to `d`: the applied count is the larger
    /// of the two (predictive never scales in, nor past max) when
    /// `apply`; else the forecast is only recorded.
    pub fn predictive(&mut self, d: &mut Decision, mut f: ForecastPart, apply: bool) {
        // The scale-up tolerance holds here too: enough instances for
        // the forecast at up to (1 + tolerance) × the target, the count
        // the reactive side would settle on rather than one more.
        let tol = self.settings.behavior.scale_up.tolerance;
        let settle = (f.mean.max(0.0) / (f.per_instance * (1.0 + tol))).ceil() as u32;
        f.proposal = f.proposal.min(settle.max(1));
        // The forecast's own jitter is no reason to act: a mean that moved
        // less than its interval keeps the proposal last acted on.
        let mut jitter = String::new();
        match self.last_forecast {
            Some((m, p)) if (f.mean - m).abs() <= (f.high - f.mean).max(0.0) && p != f.proposal => {
                jitter = format!(
                    " (moved {} from {}, inside its interval: keeps {p})",
                    num((f.mean - m).abs()),
                    num(m)
                );
                f.proposal = p;
            }
            Some((m, _)) if (f.mean - m).abs() <= (f.high - f.mean).max(0.0) => {}
            _ => self.last_forecast = Some((f.mean, f.proposal)),
        }
        let mut want = f.proposal.min(self.settings.max);
        // The forecast does not reverse a scale-down inside its window
        // either (only panic does).
        if apply
            && !d.panic
            && !self.settings.behavior.allow_reversal
            && let Some((t, _, w)) = self.reversal(d.at_ms, d.current, want.max(d.desired))
        {
            jitter.push_str(&format!(
                " (held at {}: scaled down {} ago, inside the scale-down stabilization window {})",
                d.current.max(d.desired),
                ago(d.at_ms - t),
                humantime::format_duration(w)
            ));
            want = want.min(d.current.max(d.desired));
        }
        f.applied = apply && want > d.desired;
        // Scaling down: not below what the forecast needs within the
        // horizon (warm-up plus buffer), or it would come straight back.
        if apply && d.desired < d.current && want > d.desired {
            let to = want.min(d.current);
            let rule = "forecast: the next warm-up plus buffer needs them";
            self.retarget(d, to, rule, true);
            f.applied = want > to;
        }
        let when = humantime::format_rfc3339_seconds(keel_core::clock::from_unix_ms(f.at_ms));
        let mut line = format!(
            "; forecast {} at {} ± {} wants {}",
            num(f.mean),
            when.to_string().get(11..16).unwrap_or(""),
            num((f.high - f.mean).max(0.0)),
            f.proposal
        );
        line.push_str(&jitter);
        if f.applied {
            self.retarget(d, want, "predictive: capacity ahead of the forecast", false);
        } else if !apply {
            line.push_str(" (forecast only)");
        }
        d.explanation.push_str(&line);
        d.forecast = Some(f);
    }

    /// The forecast moves the decision to `to` by `rule`: the clamp is
    /// noted, the stabilization history hears of it, and the explanation's
    /// verb (and, when `say`, the rule) follows.
    fn retarget(&mut self, d: &mut Decision, to: u32, rule: &str, say: bool) {
        if let Some(i) = d.explanation.find(':') {
            let by = if say {
                format!("; {} → {to} by {rule}", d.desired)
            } else {
                String::new()
            };
            d.explanation = format!("{}{}{by}", verb(d.current, to), &d.explanation[i..]);
        }
        held(d.desired, to, rule.into(), &mut d.clamps);
        d.desired = to;
        self.history.note(d.at_ms, to);
    }
}

mod explain;
mod propose;
use explain::*;
use propose::*;
