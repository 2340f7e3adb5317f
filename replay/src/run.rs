//! One replay: the bundle's samples fed into an in-memory store at their
//! recorded arrival times, the rule groups evaluated at their recorded
//! ticks (or, for a group the recording never ran, on its interval from
//! the window's start), every evaluation round's alerts routed (pages
//! captured, not sent), and the controller's policies evaluated at their
//! recorded ticks against a simulated actuator — all on the manual Clock.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use keel_alerting::notify::{AlertView, NotifyConfig, Page, Router};
use keel_alerting::rules::{Group, GroupState, Rule, RulesConfig};
use keel_controller::ControllerConfig;
use keel_controller::actuator::{Count, Simulated};
use keel_core::clock::{Clock, ManualClock};
use keel_core::marks::Mark;
use keel_incident::bundle::{AlertChange, Bundle, BundleError};
use keel_metricstore::{Store, StoreConfig};

use crate::feed::Feed;

/// Why a replay cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The bundle does not read.
    #[error("{0}")]
    Bundle(#[from] BundleError),
    /// The rules (the bundle's or `--rules`) do not load.
    #[error("rules: {0}")]
    Rules(String),
    /// The policies (the bundle's or `--policy`) do not load.
    #[error("policy: {0}")]
    Policy(String),
    /// The replay's own stores failed.
    #[error("replay: {0}")]
    Internal(String),
}

/// Count the evaluations of one schedule from `start` to `to` every
/// `every` ms into `n`, refusing past [`MAX_EVALUATIONS`].
fn planned(n: &mut usize, start: i64, to: i64, every: i64) -> Result<(), ReplayError> {
    *n += ((to - start).max(0) / every + 1) as usize;
    if *n > MAX_EVALUATIONS {
        return Err(ReplayError::Rules(format!(
            "more than {MAX_EVALUATIONS} evaluations over the window: fewer groups or longer intervals"
        )));
    }
    Ok(())
}

/// A scaling decision the replay made (or the recording holds).
#[derive(Debug, Clone, PartialEq)]
pub struct Scaling {
    /// When (ms).
    pub at_ms: i64,
    /// The policy.
    pub policy: String,
    /// The count before.
    pub from: u32,
    /// The count after.
    pub to: u32,
    /// The decision's one line.
    pub explanation: String,
}

/// Capacity against demand at one controller tick.
#[derive(Debug, Clone, PartialEq)]
pub struct Capacity {
    /// When (ms).
    pub at_ms: i64,
    /// The policy.
    pub policy: String,
    /// Instances then.
    pub instances: u32,
    /// What they handle (instances × the panic section's `per_instance`).
    pub capacity: f64,
    /// The recorded request rate (the panic section's `demand` query).
    pub demand: f64,
}

/// What a replay produced.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Alert state changes, in order.
    pub alerts: Vec<AlertChange>,
    /// Pages and tickets routing decided.
    pub pages: Vec<Page>,
    /// Scaling actions.
    pub scaling: Vec<Scaling>,
    /// Instances, and capacity against demand (NaN without a `panic`
    /// section), at every controller tick.
    pub capacity: Vec<Capacity>,
    /// Rule evaluation rounds.
    pub rounds: usize,
    /// Group evaluations.
    pub evaluations: usize,
    /// Controller ticks.
    pub ticks: usize,
    /// Samples fed.
    pub samples: usize,
    /// Rule errors, first per rule (`group/rule: error`).
    pub rule_errors: BTreeMap<String, String>,
    /// Groups evaluated on their interval because the recording has no
    /// ticks for them.
    pub scheduled_groups: Vec<String>,
    /// Whether the controller ran on its interval (no recorded ticks).
    pub scheduled_controller: bool,
    /// Failover decided again from the recorded probe rounds.
    pub failover: crate::failover::Replayed,
    /// Wall-clock time spent per part (for `--stats` only: never in
    /// the replay's output).
    pub timings: Timings,
}

/// Where a replay's wall-clock time went.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    /// Loading samples and logs.
    pub load: std::time::Duration,
    /// Feeding samples at their arrival.
    pub feed: std::time::Duration,
    /// Rule evaluation.
    pub rules: std::time::Duration,
    /// Routing.
    pub routing: std::time::Duration,
    /// Controller ticks.
    pub controller: std::time::Duration,
}

/// The simulated actuator: starts at the recorded count, then takes the
/// controller's word. Instance names are the recorded ones while the
/// count agrees with the recording's, else made up past the recorded ones.
struct Actuator {
    clock: Arc<ManualClock>,
    /// (time, count, names) of the recorded evaluations, oldest first.
    recorded: Vec<(i64, u32, Vec<String>)>,
    count: Mutex<u32>,
}

impl Simulated for Actuator {
    fn read(&self) -> Count {
        let n = *self.count.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.clock.now_ms();
        let i = self.recorded.partition_point(|(t, _, _)| *t <= now);
        let recorded = i.checked_sub(1).map(|i| &self.recorded[i]);
        let instances = match recorded {
            Some((_, c, names)) if *c == n => names.clone(),
            Some((_, _, names)) if !names.is_empty() => {
                let mut v: Vec<String> = names.iter().take(n as usize).cloned().collect();
                let extra = n as usize - v.len();
                v.extend((0..extra).map(|k| format!("simulated-{}", k + 1)));
                v
            }
            _ => Vec::new(),
        };
        Count {
            replicas: n,
            instances,
        }
    }

    fn set(&self, n: u32) {
        *self.count.lock().unwrap_or_else(|e| e.into_inner()) = n;
    }
}

/// What one step of the replay does.
#[derive(Default)]
struct Step {
    groups: Vec<usize>,
    controller: bool,
}

fn state_name(s: Option<keel_alerting::rules::State>) -> &'static str {
    use keel_alerting::rules::State;
    match s {
        None => "inactive",
        Some(State::Pending) => "pending",
        Some(State::Firing) => "firing",
        Some(State::Resolved) => "resolved",
    }
}

type Snapshot = BTreeMap<(String, BTreeMap<String, String>), (keel_alerting::rules::State, String)>;

fn snapshot(g: &GroupState) -> Snapshot {
    g.alerts()
        .map(|(r, a)| {
            (
                (r.name.clone(), a.labels.clone()),
                (a.state, a.severity.as_str().to_owned()),
            )
        })
        .collect()
}

/// The file name of a path, for matching groups across machines.
fn base(file: &str) -> &str {
    file.rsplit('/').next().unwrap_or(file)
}

/// Replay `bundle` with `setup`.
pub fn replay(bundle: &Bundle, setup: &Setup) -> Result<Outcome, ReplayError> {
    let from = bundle.header.from_ms;
    let to = bundle.header.to_ms;
    // Through the lead-in first: evaluated, not reported.
    let start = from - bundle.header.lead_in_ms;
    let clock = Arc::new(ManualClock::new(keel_core::clock::from_unix_ms(start)));
    let window = (to - start).max(0);
    let store = Arc::new(Store::in_memory(StoreConfig {
        out_of_order_window_ms: window + 3_600_000,
        ..StoreConfig::default()
    }));
    // Logs for log rules: counted by their own time.
    let log_dir = tempfile::tempdir().map_err(|e| ReplayError::Internal(e.to_string()))?;
    let logs = if bundle.logs.is_empty() || !reads_logs(&setup.groups) {
        None
    } else {
        let l = bundle
            .log_index(log_dir.path())
            .map_err(ReplayError::Internal)?;
        Some(Arc::new(l))
    };
    let source = keel_alerting::rules::source::StoreSource::new(store.clone(), logs);
    // Recording rules' outputs are computed again, not fed.
    let recorded_names: BTreeSet<&str> = setup
        .groups
        .iter()
        .flat_map(|g| &g.rules)
        .filter_map(|r| match r {
            Rule::Record { name, .. } => Some(name.as_str()),
            Rule::Alert(_) => None,
        })
        .collect();
    let loading = std::time::Instant::now();
    let mut feed = Feed::new(&bundle.series, &bundle.marks, |s| {
        s.labels
            .get("__name__")
            .is_some_and(|n| recorded_names.contains(n.as_str()))
    });
    let mut out = Outcome {
        samples: feed.len(),
        ..Outcome::default()
    };
    out.timings.load = loading.elapsed();

    // The schedule.
    let mut steps: BTreeMap<i64, Step> = BTreeMap::new();
    let mut recorded_groups: BTreeMap<(String, String), Vec<i64>> = BTreeMap::new();
    let mut recorded_policy: BTreeMap<String, Vec<(i64, u32, Vec<String>)>> = BTreeMap::new();
    for m in &bundle.marks {
        match m {
            Mark::RuleEval { at_ms, file, group } => recorded_groups
                .entry((base(file).to_owned(), group.clone()))
                .or_default()
                .push(*at_ms),
            Mark::PolicyEval {
                at_ms,
                policy,
                replicas,
                instances,
            } => recorded_policy.entry(policy.clone()).or_default().push((
                *at_ms,
                *replicas,
                instances.clone(),
            )),
            Mark::Arrival { .. } | Mark::Probe { .. } => {}
        }
    }
    // Evaluations put on an interval so far (bounded before they are made).
    let mut scheduled = 0usize;
    let recorded_setup = Setup::recorded(bundle, "bundle").ok();
    let recorded_interval = |file: &str, group: &str| {
        recorded_setup.as_ref().and_then(|s| {
            s.groups
                .iter()
                .find(|g| base(&g.file.display().to_string()) == file && g.name == group)
                .map(|g| g.interval)
        })
    };
    for (i, g) in setup.groups.iter().enumerate() {
        let key = (
            base(&g.file.display().to_string()).to_owned(),
            g.name.clone(),
        );
        let ticks = recorded_groups
            .get(&key)
            .filter(|_| recorded_interval(&key.0, &key.1).is_none_or(|iv| iv == g.interval));
        match ticks {
            Some(ticks) => {
                for t in ticks {
                    steps.entry(*t).or_default().groups.push(i);
                }
            }
            None => {
                out.scheduled_groups.push(format!("{}/{}", key.0, key.1));
                let every = (g.interval.as_millis() as i64).max(1000);
                planned(&mut scheduled, start, to, every)?;
                let mut t = start;
                while t <= to {
                    steps.entry(t).or_default().groups.push(i);
                    t += every;
                }
            }
        }
    }
    // Failover is decided from the recorded probe rounds, not by the
    // controller's own probing.
    out.failover = crate::failover::replay(
        bundle,
        setup
            .controller
            .as_ref()
            .map_or(&[][..], |c| c.failover.as_slice()),
        from,
    );
    let controller = setup.controller.clone().map(|mut c| {
        c.failover.clear();
        c
    });
    if let Some(c) = &controller {
        let recorded_iv = bundle
            .config
            .controller
            .as_ref()
            .and_then(|v| serde_json::from_value::<ControllerConfig>(v.clone()).ok())
            .map(|r| r.interval);
        let mut ticks: BTreeSet<i64> = c
            .policies
            .iter()
            .filter_map(|p| recorded_policy.get(&p.name))
            .flatten()
            .map(|(t, _, _)| *t)
            .collect();
        if ticks.is_empty() || recorded_iv.is_some_and(|iv| iv != c.interval) {
            out.scheduled_controller = true;
            ticks.clear();
            let every = (c.interval.as_millis() as i64).max(1000);
            planned(&mut scheduled, start, to, every)?;
            let mut t = start;
            while t <= to {
                ticks.insert(t);
                t += every;
            }
        }
        for t in ticks {
            steps.entry(t).or_default().controller = true;
        }
    }

    // Marks of arrivals reach past the window's end; ticks must not.
    steps.retain(|t, _| *t <= to);
    let evaluations: usize = steps
        .values()
        .map(|s| s.groups.len() + usize::from(s.controller))
        .sum();
    if evaluations > MAX_EVALUATIONS {
        return Err(ReplayError::Rules(format!(
            "{evaluations} evaluations over the window (more than {MAX_EVALUATIONS}): fewer groups or longer intervals"
        )));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| ReplayError::Internal(e.to_string()))?;
    let ctl = match &controller {
        None => None,
        Some(c) => {
            let metrics = Arc::new(crate::StoreMetrics(source.clone()));
            let shared: keel_core::clock::SharedClock = clock.clone();
            let ctl = keel_controller::Controller::new(c, metrics, shared, None);
            for p in &c.policies {
                let rec = recorded_policy.get(&p.name).cloned().unwrap_or_default();
                // A recorded count is believed up to the policy's bounds.
                let start = rec
                    .first()
                    .map_or(p.min, |(_, n, _)| (*n).clamp(p.min, p.max.max(p.min)));
                let a = Arc::new(Actuator {
                    clock: clock.clone(),
                    recorded: rec,
                    count: Mutex::new(start),
                });
                rt.block_on(
                    ctl.set_actuator(&p.name, keel_controller::actuator::Actuator::Simulated(a)),
                );
            }
            Some(ctl)
        }
    };

    let hours = setup
        .notify
        .business_hours
        .compile()
        .map_err(|p| ReplayError::Rules(format!("notify.business_hours: {}", p.join("; "))))?;
    let inhibit = keel_alerting::notify::silence::compile(&setup.notify.inhibit)
        .map_err(|p| ReplayError::Rules(format!("notify.inhibit: {}", p.join("; "))))?;
    let mut router = Router::new(setup.notify.policy(hours), inhibit);
    let mut groups: Vec<GroupState> = setup.groups.iter().cloned().map(GroupState::new).collect();

    for (t, step) in steps {
        clock.set(keel_core::clock::from_unix_ms(t));
        let report = t >= from;
        let clock_feed = std::time::Instant::now();
        let batch = feed.until(t);
        if !batch.is_empty() {
            store
                .append(batch)
                .map_err(|e| ReplayError::Internal(e.to_string()))?;
        }
        out.timings.feed += clock_feed.elapsed();
        if !step.groups.is_empty() {
            let clock_rules = std::time::Instant::now();
            out.rounds += 1;
            for i in step.groups {
                let g = &mut groups[i];
                let before = snapshot(g);
                g.eval(&source, t, &setup.rules.external_labels);
                out.evaluations += 1;
                let after = snapshot(g);
                if report {
                    changes(&before, &after, g, t, &mut out.alerts);
                }
                for (rule, h) in g.group.rules.iter().zip(&g.health) {
                    if let Some(e) = &h.error {
                        let name = match rule {
                            Rule::Alert(a) => &a.name,
                            Rule::Record { name, .. } => name,
                        };
                        out.rule_errors
                            .entry(format!("{}/{name}", g.group.name))
                            .or_insert_with(|| e.clone());
                    }
                }
            }
            out.timings.rules += clock_rules.elapsed();
            let clock_routing = std::time::Instant::now();
            let views: Vec<AlertView> = groups
                .iter()
                .flat_map(|g| g.alerts())
                .map(|(_, a)| AlertView::from(a))
                .collect();
            let pages = router.decide(t, &views);
            if report {
                out.pages.extend(pages);
            }
            out.timings.routing += clock_routing.elapsed();
        }
        if let (true, Some(ctl), Some(c)) = (step.controller, &ctl, &controller) {
            let clock_ctl = std::time::Instant::now();
            out.ticks += 1;
            for e in rt.block_on(ctl.tick(t)) {
                let d = e.decision.as_ref();
                let num = |k: &str| {
                    d.and_then(|d| d.get(k))
                        .and_then(|v| v.as_u64())
                        .map(|v| v as u32)
                };
                if e.kind == "scale" && report {
                    out.scaling.push(Scaling {
                        at_ms: t,
                        policy: e.subject.clone(),
                        from: num("current").unwrap_or(0),
                        to: e.read_back.unwrap_or(0),
                        explanation: e.explanation.clone(),
                    });
                }
                if let Some(p) = c.policies.iter().find(|p| p.name == e.subject)
                    && report
                {
                    let instances = e.read_back.or(num("current")).unwrap_or(0);
                    // The capacity model needs the panic section's demand
                    // query and what one instance handles.
                    let (capacity, demand) = match &p.panic {
                        Some(panic) => (
                            instances as f64 * panic.per_instance,
                            crate::StoreMetrics(source.clone())
                                .demand(&panic.demand, t)
                                .unwrap_or(f64::NAN),
                        ),
                        None => (f64::NAN, f64::NAN),
                    };
                    out.capacity.push(Capacity {
                        at_ms: t,
                        policy: p.name.clone(),
                        instances,
                        capacity,
                        demand,
                    });
                }
            }
            out.timings.controller += clock_ctl.elapsed();
        }
    }
    Ok(out)
}

/// Append the changes between two snapshots of a group.
fn changes(
    before: &Snapshot,
    after: &Snapshot,
    g: &GroupState,
    t: i64,
    out: &mut Vec<AlertChange>,
) {
    let group = g.group.name.clone();
    for (k, (state, sev)) in after {
        let old = before.get(k).map(|(s, _)| *s);
        if old != Some(*state) {
            out.push(AlertChange {
                at_ms: t,
                rule: k.0.clone(),
                group: group.clone(),
                labels: k.1.clone(),
                severity: sev.clone(),
                from: state_name(old).into(),
                to: state_name(Some(*state)).into(),
            });
        }
    }
    for (k, (state, sev)) in before {
        if !after.contains_key(k) {
            out.push(AlertChange {
                at_ms: t,
                rule: k.0.clone(),
                group: group.clone(),
                labels: k.1.clone(),
                severity: sev.clone(),
                from: state_name(Some(*state)).into(),
                to: "inactive".into(),
            });
        }
    }
}

mod setup;
use setup::*;
pub use setup::{Setup, keep};
