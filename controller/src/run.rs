//! The controller's loop: every `interval` on the injected clock, each
//! policy reads its target's count from the actuator, its metrics from
//! the metric store (PromQL), decides ([`crate::hpa`]), and — when the
//! count should change — asks the actuator, then reads the count back
//! and believes only that. Every evaluation is an event (its decision,
//! or the actuator's failure with the reason), kept in memory for
//! `GET /api/v1/events` and in the state store. A failed read or change
//! is retried at the next evaluation.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use keel_core::clock::SharedClock;
use serde::{Deserialize, Serialize};

use crate::actuator::Actuator;
use crate::hpa::{Autoscaler, Decision, Demand, Instances, Observation, Reading, Settings};
use crate::policy::{ControllerConfig, Policy};

/// An instant query's samples: labels and value.
pub type Samples = Vec<(BTreeMap<String, String>, f64)>;

/// Where the controller reads metrics.
pub trait MetricSource: Send + Sync {
    /// PromQL at `t_ms`: each sample's labels and value, or why not.
    fn instant(&self, expr: &str, t_ms: i64) -> Result<Samples, String>;

    /// PromQL over `[start_ms, end_ms]` every `step_ms`: one series'
    /// points (time, value), or why not.
    fn range(
        &self,
        expr: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<Vec<(i64, f64)>, String> {
        let _ = (expr, start_ms, end_ms, step_ms);
        Err("this metric source has no range queries".into())
    }
}

/// A fitted forecast and where its history ended.
struct Fitted {
    at_ms: i64,
    model: Result<crate::forecast::Model, String>,
    /// The time of the model's next point (the first forecast).
    next_ms: i64,
}

/// Something the controller did or saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When (ms).
    pub at_ms: i64,
    /// `scale` (the count changed), `decision` (it did not),
    /// `actuator_error`, or `not_leading` (a change this collector did
    /// not make: it no longer leads its pair).
    pub kind: String,
    /// The policy.
    pub subject: String,
    /// One line for people.
    pub explanation: String,
    /// The decision, with its inputs and clamps (none for a failed read).
    pub decision: Option<serde_json::Value>,
    /// The count read back after a change.
    pub read_back: Option<u32>,
}

struct Managed {
    policy: Policy,
    actuator: Actuator,
    scaler: Autoscaler,
    /// When each instance was first seen (for warm-up).
    first_seen: HashMap<String, i64>,
    seen_any: bool,
    fitted: Option<Fitted>,
}

/// The running controller.
pub struct Controller {
    managed: tokio::sync::Mutex<Vec<Managed>>,
    source: Arc<dyn MetricSource>,
    clock: SharedClock,
    interval: std::time::Duration,
    journal: Arc<crate::journal::Journal>,
    failovers: Vec<Arc<crate::failover::Failover>>,
    /// Where each policy evaluation is marked for incident bundles.
    marks: std::sync::OnceLock<Arc<keel_core::marks::MarkLog>>,
}

impl Controller {
    /// A controller for `config`'s policies (validated by the caller),
    /// saving events through `writer` when given.
    pub fn new(
        config: &ControllerConfig,
        source: Arc<dyn MetricSource>,
        clock: SharedClock,
        writer: Option<keel_state::Writer>,
    ) -> Arc<Self> {
        let managed = config
            .policies
            .iter()
            .map(|p| Managed {
                actuator: Actuator::new(&p.actuator),
                scaler: Autoscaler::new(Settings {
                    min: p.min,
                    max: p.max,
                    behavior: p.behavior.clone(),
                    panic_threshold: p.panic.as_ref().map_or(2.0, |x| x.threshold),
                    panic_window: p
                        .panic
                        .as_ref()
                        .map_or(std::time::Duration::from_secs(60), |x| x.window),
                }),
                policy: p.clone(),
                first_seen: HashMap::new(),
                seen_any: false,
                fitted: None,
            })
            .collect();
        let journal = Arc::new(crate::journal::Journal::new(writer));
        let policies: Vec<String> = config.policies.iter().map(|p| p.name.clone()).collect();
        let failovers = config
            .failover
            .iter()
            .map(|f| {
                Arc::new(crate::failover::Failover::new(
                    f.clone(),
                    clock.clone(),
                    journal.clone(),
                    policies.clone(),
                ))
            })
            .collect();
        Arc::new(Self {
            managed: tokio::sync::Mutex::new(managed),
            source,
            clock,
            interval: config.interval,
            journal,
            failovers,
            marks: std::sync::OnceLock::new(),
        })
    }

    /// Mark every policy evaluation (and the count it read) in `marks`.
    pub fn set_marks(&self, marks: Arc<keel_core::marks::MarkLog>) {
        for f in &self.failovers {
            f.set_marks(marks.clone());
        }
        let _ = self.marks.set(marks);
    }

    /// Replace a policy's actuator (replay drives a simulated one);
    /// false when no policy has that name.
    pub async fn set_actuator(&self, policy: &str, actuator: Actuator) -> bool {
        let mut managed = self.managed.lock().await;
        match managed.iter_mut().find(|m| m.policy.name == policy) {
            Some(m) => {
                m.actuator = actuator;
                true
            }
            None => false,
        }
    }

    /// The event log and the pauses.
    pub fn journal(&self) -> &Arc<crate::journal::Journal> {
        &self.journal
    }

    /// The failover targets.
    pub fn failovers(&self) -> &[Arc<crate::failover::Failover>] {
        &self.failovers
    }

    /// The failover target named `name`.
    pub fn failover(&self, name: &str) -> Option<Arc<crate::failover::Failover>> {
        self.failovers.iter().find(|f| f.name() == name).cloned()
    }

    /// Evaluate every policy each `interval`, forever (and watch every
    /// failover target on its own task).
    pub async fn run(self: Arc<Self>) {
        for f in &self.failovers {
            tokio::spawn(f.clone().run());
        }
        let mut ticker = keel_core::clock::Ticker::new(self.clock.now(), self.interval);
        loop {
            let woke = ticker.tick(&*self.clock).await;
            self.tick(keel_core::clock::unix_ms(woke)).await;
        }
    }

    /// Evaluate every policy at `now_ms`; the events it made.
    pub async fn tick(&self, now_ms: i64) -> Vec<Event> {
        let mut managed = self.managed.lock().await;
        let mut out = Vec::new();
        for m in managed.iter_mut() {
            let e = self.evaluate(m, now_ms).await;
            out.push(e);
        }
        drop(managed);
        for e in &out {
            self.record(e.clone());
        }
        out
    }

    /// The events kept, oldest first, at or after `since_ms`, for
    /// `subject` if given, the newest `limit`.
    pub fn events(&self, since_ms: i64, subject: Option<&str>, limit: usize) -> Vec<Event> {
        self.journal.events(since_ms, subject, limit)
    }

    /// Put back events saved before a restart (oldest first).
    pub fn restore(&self, saved: Vec<Event>) {
        self.journal.restore(saved);
    }

    fn record(&self, e: Event) {
        self.journal.record(e);
    }

    /// The predictive side: refit when due, forecast over the lead time
    /// (warm-up + buffer) and add its proposal to `d`.
    fn predict(&self, m: &mut Managed, now_ms: i64, d: &mut Decision) {
        use crate::policy::PredictiveMode;
        let Some(p) = m.policy.predictive.clone() else {
            return;
        };
        if p.mode == PredictiveMode::Off {
            return;
        }
        let step = (p.step.as_millis() as i64).max(1);
        let due = m
            .fitted
            .as_ref()
            .is_none_or(|f| now_ms - f.at_ms >= p.refit.as_millis() as i64);
        if due {
            let end = now_ms - now_ms.rem_euclid(step);
            let start = end - p.history.as_millis() as i64 + step;
            let model = self
                .source
                .range(&p.query, start, end, step)
                .and_then(|points| {
                    // Evenly spaced, NaN where the history has a gap.
                    let n = ((end - start) / step + 1) as usize;
                    let mut x = vec![f64::NAN; n];
                    for (t, v) in points {
                        let i = (t - start) / step;
                        if (0..n as i64).contains(&i) {
                            x[i as usize] = v;
                        }
                    }
                    // Leading gaps (a young system) are not history.
                    let first = x.iter().position(|v| v.is_finite()).unwrap_or(n);
                    let x = &x[first..];
                    let season = crate::forecast::season_for(
                        x.len(),
                        step as u64,
                        p.season.as_millis() as u64,
                    );
                    crate::forecast::Model::fit(x, season).map_err(|e| e.to_string())
                });
            if let Err(e) = &model {
                tracing::info!(policy = %m.policy.name, reason = %e, "no forecast yet");
            }
            m.fitted = Some(Fitted {
                at_ms: now_ms,
                model,
                next_ms: end + step,
            });
        }
        let Some(Fitted {
            model: Ok(model),
            next_ms,
            ..
        }) = &m.fitted
        else {
            return;
        };
        let lead_ms = (m.policy.warm_up + p.buffer).as_millis() as i64;
        // Forecast points from the one covering now through now + lead.
        let rel = now_ms - next_ms;
        let skip = rel.max(0) / step;
        let last = (rel + lead_ms).div_euclid(step);
        let lead = (last - skip + 1).max(1) as usize;
        let skip = skip as usize;
        let f = model.forecast(skip + lead, crate::forecast::Z80);
        let skip = skip.min(f.len());
        let Some(a) = crate::forecast::ahead(&f[skip..], lead, p.per_instance) else {
            return;
        };
        let part = crate::hpa::ForecastPart {
            at_ms: next_ms + (skip + a.offset) as i64 * step,
            mean: a.point.mean,
            low: a.point.low,
            high: a.point.high,
            per_instance: p.per_instance,
            proposal: a.instances,
            applied: false,
        };
        m.scaler
            .predictive(d, part, p.mode == PredictiveMode::ForecastAndScale);
    }

    async fn evaluate(&self, m: &mut Managed, now_ms: i64) -> Event {
        let name = m.policy.name.clone();
        let event = |kind: &str, explanation: String, d: Option<&Decision>, read_back| Event {
            at_ms: now_ms,
            kind: kind.into(),
            subject: name.clone(),
            explanation,
            decision: d.and_then(|d| serde_json::to_value(d).ok()),
            read_back,
        };
        if let Some(why) = self.journal.paused(&name) {
            return event(
                "paused",
                format!("{name}: not scaled while {why}"),
                None,
                None,
            );
        }
        let count = match m.actuator.read().await {
            Ok(c) => c,
            Err(e) => {
                return event(
                    "actuator_error",
                    format!("cannot read {name}'s count ({e}); retried at the next evaluation"),
                    None,
                    None,
                );
            }
        };
        if let Some(marks) = self.marks.get() {
            marks.write(&keel_core::marks::Mark::PolicyEval {
                at_ms: now_ms,
                policy: name.clone(),
                replicas: count.replicas,
                instances: count.instances.clone(),
            });
        }
        let names: Vec<String> = if count.instances.is_empty() {
            (0..count.replicas).map(|i| format!("{name}-{i}")).collect()
        } else {
            count.instances.clone()
        };
        // Instances there at the first look are taken as warm.
        let warm_ms = m.policy.warm_up.as_millis() as i64;
        let first = !m.seen_any;
        m.seen_any = true;
        for n in &names {
            m.first_seen
                .entry(n.clone())
                .or_insert(if first { i64::MIN / 2 } else { now_ms });
        }
        m.first_seen.retain(|k, _| names.contains(k));
        let inst = Instances {
            current: count.replicas,
            ready: names
                .iter()
                .filter(|n| m.first_seen.get(*n).is_some_and(|t| now_ms - t >= warm_ms))
                .cloned()
                .collect(),
            all: names.clone(),
        };
        let metrics: Vec<Observation> = m
            .policy
            .metrics
            .iter()
            .filter_map(|spec| {
                let target = spec.target()?;
                let reading = match (self.source.instant(&spec.query, now_ms), target) {
                    (Err(e), _) => Reading::Invalid(e),
                    (Ok(samples), crate::hpa::Target::PerInstance(_)) => Reading::PerInstance(
                        samples
                            .into_iter()
                            .filter_map(|(l, v)| Some((l.get("instance")?.clone(), v)))
                            .collect(),
                    ),
                    (Ok(samples), _) => match samples.as_slice() {
                        [(_, v)] => Reading::Total(*v),
                        [] => Reading::Invalid("no data".into()),
                        more => Reading::Invalid(format!(
                            "{} series where one is needed (aggregate the query)",
                            more.len()
                        )),
                    },
                };
                Some(Observation {
                    name: spec.name.clone(),
                    target,
                    reading,
                })
            })
            .collect();
        let demand = m.policy.panic.as_ref().and_then(|p| {
            let samples = self.source.instant(&p.demand, now_ms).ok()?;
            let rate = samples.iter().map(|(_, v)| v).sum::<f64>();
            Some(Demand {
                rate,
                per_instance: p.per_instance,
            })
        });
        let mut d = m.scaler.evaluate(now_ms, &inst, &metrics, demand);
        self.predict(m, now_ms, &mut d);
        if d.desired == count.replicas {
            return event(
                "decision",
                format!("{name}: {}", d.explanation),
                Some(&d),
                None,
            );
        }
        if let Err(e) = m.actuator.set(d.desired, &self.journal.fencing()).await {
            return event(
                if matches!(e, crate::actuator::ActuatorError::NotLeading(_)) {
                    "not_leading"
                } else {
                    "actuator_error"
                },
                format!(
                    "{name}: {}; the change failed ({e}); retried at the next evaluation",
                    d.explanation
                ),
                Some(&d),
                None,
            );
        }
        match m.actuator.read().await {
            Ok(after) => {
                m.scaler.scaled(now_ms, count.replicas, after.replicas);
                let note = if after.replicas == d.desired {
                    String::new()
                } else {
                    format!(" (read back {}, not {})", after.replicas, d.desired)
                };
                event(
                    "scale",
                    format!("{name}: {}{note}", d.explanation),
                    Some(&d),
                    Some(after.replicas),
                )
            }
            Err(e) => event(
                "actuator_error",
                format!(
                    "{name}: {}; asked for {} but cannot read the count back ({e})",
                    d.explanation, d.desired
                ),
                Some(&d),
                None,
            ),
        }
    }
}
