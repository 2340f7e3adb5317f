//! The rule engine: evaluates groups at given times (the injected
//! Clock's, or a test's) and keeps each alert's state as Prometheus does:
//! inactive → pending (condition true, `for` not yet held) → firing →
//! resolved (condition false; kept for 15 minutes so that its resolution
//! can be sent). `keep_firing_for` holds a firing alert that long after
//! its condition clears. A pending alert whose condition clears is
//! dropped. Recording rules write their results back into the metric
//! store, where the group's later rules see them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::file::{AlertRule, Condition, Group, Rule, Severity};
use super::template::Data;

/// How long a resolved alert is kept (Prometheus' `resolvedRetention`).
pub const RESOLVED_RETENTION: Duration = Duration::from_secs(15 * 60);

/// A label set by name.
pub type LabelMap = BTreeMap<String, String>;
/// An instant query's samples: labels (without `__name__`) and value.
pub type Samples = Vec<(LabelMap, f64)>;
/// An alert's identity: its sorted labels.
type AlertKey = Vec<(String, String)>;
/// Per alert, when it last changed between firing and resolved.
type Changes = BTreeMap<AlertKey, std::collections::VecDeque<i64>>;

/// A recording rule's output: labels (with `__name__`), time (ms), value.
pub type Recorded = Vec<(LabelMap, i64, f64)>;

/// Where rules read and write: the metric store and the log index, in
/// the collector; in-memory ones in rule tests.
pub trait Source {
    /// PromQL at `t_ms`: the samples (labels without `__name__`, value),
    /// or why not.
    fn instant(&self, expr: &str, t_ms: i64) -> Result<Samples, String>;
    /// Log records matching `query` in `[start_ms, end_ms]`.
    fn count_logs(&self, query: &str, start_ms: i64, end_ms: i64) -> Result<u64, String>;
    /// Store a recording rule's results: `(labels with __name__, t_ms, value)`.
    fn record(&self, samples: Recorded) -> Result<(), String>;
}

/// An alert's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// The condition holds, for less than `for`.
    Pending,
    /// Firing.
    Firing,
    /// It fired and its condition cleared.
    Resolved,
}

/// One alert: a rule's instance for one label set (serialized whole
/// into the state store).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Its labels: the sample's, the rule's, `alertname`.
    pub labels: BTreeMap<String, String>,
    /// Its annotations, rendered at the last evaluation that saw it.
    pub annotations: BTreeMap<String, String>,
    /// Where it stands.
    pub state: State,
    /// P0, P1 or P2.
    pub severity: Severity,
    /// The value at the last evaluation that saw it.
    pub value: f64,
    /// When its condition began to hold (ms).
    pub active_at_ms: i64,
    /// When it began firing (ms).
    pub fired_at_ms: Option<i64>,
    /// When it resolved (ms).
    pub resolved_at_ms: Option<i64>,
    /// Held firing by flap detection.
    pub flapping: bool,
    /// When its condition cleared while it fired (for `keep_firing_for`
    /// and flap detection).
    #[serde(default)]
    cleared_since_ms: Option<i64>,
}

/// What of an alert, once changed, must be saved: everything but its
/// value and annotations, which change at every evaluation.
pub type Fingerprint = (State, i64, Option<i64>, Option<i64>, bool, Option<i64>);

impl Alert {
    /// Its [`Fingerprint`].
    pub fn fingerprint(&self) -> Fingerprint {
        (
            self.state,
            self.active_at_ms,
            self.fired_at_ms,
            self.resolved_at_ms,
            self.flapping,
            self.cleared_since_ms,
        )
    }
}

/// The last evaluation of a rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Health {
    /// When (ms; 0: never).
    pub at_ms: i64,
    /// Its error, if it failed.
    pub error: Option<String>,
}

/// A group with the state of its rules' alerts.
#[derive(Debug)]
pub struct GroupState {
    /// The group.
    pub group: Group,
    /// Per rule (same order): its alerts by label set.
    alerts: Vec<BTreeMap<AlertKey, Alert>>,
    /// Per rule: its last evaluation.
    pub health: Vec<Health>,
    /// Per rule: when each alert last changed between firing and
    /// resolved, for flap detection (kept while alerts come and go).
    changes: Vec<Changes>,
}

impl GroupState {
    /// A group no evaluation has seen yet.
    pub fn new(group: Group) -> Self {
        let n = group.rules.len();
        Self {
            group,
            alerts: vec![BTreeMap::new(); n],
            changes: vec![BTreeMap::new(); n],
            health: vec![Health::default(); n],
        }
    }

    /// Take the alerts (and health) of `old`'s rules that are still here,
    /// matched by alert name (recording rules have none): a reload does
    /// not reset `for` or re-fire what is firing.
    pub fn adopt(&mut self, mut old: GroupState) {
        for (i, r) in self.group.rules.iter().enumerate() {
            let Rule::Alert(r) = r else { continue };
            let found = old
                .group
                .rules
                .iter()
                .position(|o| matches!(o, Rule::Alert(o) if o.name == r.name));
            if let Some(j) = found {
                // Taken once: a name defined twice keeps one history.
                old.group.rules[j] = Rule::Record {
                    name: String::new(),
                    expr: String::new(),
                    labels: BTreeMap::new(),
                };
                self.alerts[i] = std::mem::take(&mut old.alerts[j]);
                self.health[i] = std::mem::take(&mut old.health[j]);
                self.changes[i] = std::mem::take(&mut old.changes[j]);
            }
        }
    }

    /// Put back an alert of the alerting rule `rule` saved before a
    /// restart; false when the group has no such rule (it was removed).
    pub fn restore(&mut self, rule: &str, alert: Alert, flap_changes: Vec<i64>) -> bool {
        let found = self
            .group
            .rules
            .iter()
            .position(|r| matches!(r, Rule::Alert(r) if r.name == rule));
        match found {
            Some(i) => {
                let key: AlertKey = alert.labels.clone().into_iter().collect();
                if !flap_changes.is_empty() {
                    self.changes[i].insert(key.clone(), flap_changes.into());
                }
                self.alerts[i].insert(key, alert);
                true
            }
            None => false,
        }
    }

    /// When `alert` of rule `rule` last changed between firing and
    /// resolved (its flap-detection history), oldest first.
    pub fn flap_changes(&self, rule: &AlertRule, alert: &Alert) -> Vec<i64> {
        let key: AlertKey = alert.labels.clone().into_iter().collect();
        self.group
            .rules
            .iter()
            .position(|r| matches!(r, Rule::Alert(r) if r.name == rule.name))
            .and_then(|i| self.changes.get(i)?.get(&key))
            .map(|h| h.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The alerts of rule `i` (none for a recording rule).
    pub fn rule_alerts(&self, i: usize) -> impl Iterator<Item = &Alert> {
        self.alerts.get(i).into_iter().flat_map(|m| m.values())
    }

    /// Every alert of the group, with its rule's name.
    pub fn alerts(&self) -> impl Iterator<Item = (&AlertRule, &Alert)> {
        self.group
            .rules
            .iter()
            .zip(&self.alerts)
            .filter_map(|(r, a)| match r {
                Rule::Alert(r) => Some(a.values().map(move |a| (r, a))),
                Rule::Record { .. } => None,
            })
            .flatten()
    }

    /// Evaluate every rule at `t_ms`; a failing rule keeps its alerts
    /// as they were and records the error. A recording rule's output is
    /// in the store before any later rule runs; the alerting rules
    /// between two recording rules read nothing another writes, so a
    /// long run of them is spread over the cores (as Prometheus'
    /// concurrent rule evaluation does), each rule still evaluated once.
    pub fn eval(
        &mut self,
        source: &(dyn Source + Sync),
        t_ms: i64,
        external: &BTreeMap<String, String>,
    ) {
        let t_query = t_ms - self.group.query_offset.as_millis() as i64;
        let limit = self.group.limit;
        let at = Times {
            t: t_ms,
            t_query,
            limit,
        };
        let n = self.group.rules.len();
        let mut i = 0;
        while i < n {
            let end = match self.group.rules[i] {
                Rule::Record { .. } => i + 1,
                Rule::Alert(_) => self.group.rules[i..]
                    .iter()
                    .position(|r| matches!(r, Rule::Record { .. }))
                    .map_or(n, |p| i + p),
            };
            let run = RuleRun {
                rules: &self.group.rules[i..end],
                alerts: &mut self.alerts[i..end],
                changes: &mut self.changes[i..end],
                health: &mut self.health[i..end],
            };
            run.eval(source, at, external);
            i = end;
        }
    }
}

/// When and how an evaluation runs.
#[derive(Clone, Copy)]
struct Times {
    t: i64,
    t_query: i64,
    limit: u64,
}

/// Consecutive rules of a group with their state: one recording rule,
/// or alerting rules only.
struct RuleRun<'a> {
    rules: &'a [Rule],
    alerts: &'a mut [BTreeMap<AlertKey, Alert>],
    changes: &'a mut [Changes],
    health: &'a mut [Health],
}

/// Fewest alerting rules worth a thread of their own.
const RULES_PER_THREAD: usize = 64;

impl RuleRun<'_> {
    fn eval(self, source: &(dyn Source + Sync), at: Times, external: &BTreeMap<String, String>) {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(self.rules.len() / RULES_PER_THREAD)
            .max(1);
        if threads == 1 {
            return self.eval_here(source, at, external);
        }
        let per = self.rules.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let parts = self
                .rules
                .chunks(per)
                .zip(self.alerts.chunks_mut(per))
                .zip(self.changes.chunks_mut(per))
                .zip(self.health.chunks_mut(per));
            for (((rules, alerts), changes), health) in parts {
                let part = RuleRun {
                    rules,
                    alerts,
                    changes,
                    health,
                };
                scope.spawn(move || part.eval_here(source, at, external));
            }
        });
    }

    fn eval_here(
        self,
        source: &(dyn Source + Sync),
        at: Times,
        external: &BTreeMap<String, String>,
    ) {
        let state = self.alerts.iter_mut().zip(self.changes.iter_mut());
        for ((rule, (alerts, changes)), health) in self.rules.iter().zip(state).zip(self.health) {
            let result = guard::isolated(|| match rule {
                Rule::Record { name, expr, labels } => {
                    record(source, name, expr, labels, at.t_query, at.limit)
                }
                Rule::Alert(a) => eval_alert(
                    source,
                    a,
                    (alerts, changes),
                    (at.t, at.t_query),
                    at.limit,
                    external,
                ),
            });
            // A panic is logged when it starts, not at every evaluation.
            if let Err(e) = &result
                && e.starts_with(guard::PANIC)
                && health.error.as_ref() != Some(e)
            {
                let name = match rule {
                    Rule::Record { name, .. } => name,
                    Rule::Alert(a) => &a.name,
                };
                tracing::error!(rule = %name, error = %e, "rule evaluation panicked; the other rules go on");
            }
            *health = Health {
                at_ms: at.t,
                error: result.err(),
            };
        }
    }
}

fn record(
    source: &dyn Source,
    name: &str,
    expr: &str,
    labels: &BTreeMap<String, String>,
    t: i64,
    limit: u64,
) -> Result<(), String> {
    let samples = source.instant(expr, t)?;
    if limit > 0 && samples.len() as u64 > limit {
        return Err(format!(
            "{} series exceed the group's limit of {limit}",
            samples.len()
        ));
    }
    let out = samples
        .into_iter()
        .map(|(mut l, v)| {
            l.extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
            l.insert("__name__".into(), name.to_owned());
            (l, t, v)
        })
        .collect();
    source.record(out)
}

/// The rule's samples at `t`: PromQL results, or the one log count.
fn samples(source: &dyn Source, rule: &AlertRule, t: i64) -> Result<Samples, String> {
    match &rule.condition {
        Condition::PromQl(expr) => source.instant(expr, t),
        Condition::Logs {
            query,
            window,
            above,
            below,
        } => {
            // Left-open, as PromQL's range windows: (t - window, t].
            let n = source.count_logs(query, t - window.as_millis() as i64 + 1, t)? as f64;
            let holds = above.is_some_and(|a| n > a) || below.is_some_and(|b| n < b);
            Ok(if holds {
                vec![(BTreeMap::new(), n)]
            } else {
                Vec::new()
            })
        }
    }
}

fn eval_alert(
    source: &dyn Source,
    rule: &AlertRule,
    (alerts, changes): (&mut BTreeMap<AlertKey, Alert>, &mut Changes),
    (t, t_query): (i64, i64),
    limit: u64,
    external: &BTreeMap<String, String>,
) -> Result<(), String> {
    let samples = samples(source, rule, t_query)?;
    let written_before = alerts_series(alerts);
    let mut seen = std::collections::HashSet::new();
    for (sample_labels, value) in samples {
        let data = Data {
            labels: &sample_labels,
            value,
            external,
        };
        let mut labels = sample_labels.clone();
        for (k, tpl) in &rule.labels {
            labels.insert(k.clone(), tpl.render(data));
        }
        labels.insert("alertname".into(), rule.name.clone());
        let annotations: BTreeMap<String, String> = rule
            .annotations
            .iter()
            .map(|(k, tpl)| (k.clone(), tpl.render(data)))
            .collect();
        let key: Vec<(String, String)> = labels.clone().into_iter().collect();
        if !seen.insert(key.clone()) {
            return Err(format!("two samples give the same alert labels {labels:?}"));
        }
        match alerts.get_mut(&key) {
            Some(a) if a.state != State::Resolved => {
                a.value = value;
                a.annotations = annotations;
                a.cleared_since_ms = None;
            }
            _ => {
                alerts.insert(
                    key,
                    Alert {
                        labels,
                        annotations,
                        state: State::Pending,
                        severity: rule.severity,
                        value,
                        active_at_ms: t,
                        fired_at_ms: None,
                        resolved_at_ms: None,
                        flapping: false,
                        cleared_since_ms: None,
                    },
                );
            }
        }
    }
    if limit > 0 && seen.len() as u64 > limit {
        return Err(format!(
            "{} alerts exceed the group's limit of {limit}",
            seen.len()
        ));
    }
    let hold = rule.for_.as_millis() as i64;
    let keep = rule.keep_firing_for.as_millis() as i64;
    // Hysteresis: the label sets the resolve condition still holds for.
    let holding: Vec<BTreeMap<String, String>> = match &rule.resolve_expr {
        Some(e) if alerts.values().any(|a| a.state == State::Firing) => source
            .instant(e, t_query)?
            .into_iter()
            .map(|(l, _)| l)
            .collect(),
        _ => Vec::new(),
    };
    let still_holds = |a: &Alert| {
        holding
            .iter()
            .any(|h| h.iter().all(|(k, v)| a.labels.get(k) == Some(v)))
    };
    alerts.retain(|key, a| {
        if !seen.contains(key) {
            match a.state {
                State::Pending => return false,
                State::Resolved => {
                    return a
                        .resolved_at_ms
                        .is_some_and(|r| t - r <= RESOLVED_RETENTION.as_millis() as i64);
                }
                State::Firing => {
                    if still_holds(a) {
                        a.cleared_since_ms = None;
                        return true;
                    }
                    let since = *a.cleared_since_ms.get_or_insert(t);
                    if keep > 0 && t - since < keep {
                        return true;
                    }
                    if let Some((max, window)) = rule.flap {
                        let window = window.as_millis() as i64;
                        let h = changes.entry(key.clone()).or_default();
                        while h.front().is_some_and(|c| t - c > window) {
                            h.pop_front();
                        }
                        // Resolving now would be one change too many:
                        // hold it until quiet for a whole window.
                        if a.flapping || h.len() >= max as usize {
                            a.flapping = true;
                            if t - since < window {
                                return true;
                            }
                        }
                        h.push_back(t);
                    }
                    a.state = State::Resolved;
                    a.resolved_at_ms = Some(t);
                    a.flapping = false;
                    return true;
                }
            }
        }
        if a.state == State::Pending && t - a.active_at_ms >= hold {
            a.state = State::Firing;
            a.fired_at_ms = Some(t);
            if rule.flap.is_some() {
                changes.entry(key.clone()).or_default().push_back(t);
            }
        }
        true
    });
    // Histories of alerts long gone are dropped.
    if let Some((_, window)) = rule.flap {
        let window = window.as_millis() as i64;
        changes.retain(|k, h| alerts.contains_key(k) || h.back().is_some_and(|c| t - c <= window));
    }
    write_alerts_series(source, alerts, written_before, t);
    Ok(())
}

/// The `ALERTS` and `ALERTS_FOR_STATE` series the pending and firing
/// `alerts` are written as (Prometheus' names): `ALERTS{…, alertstate}`
/// 1, and `ALERTS_FOR_STATE{…}` the time it became active (s).
fn alerts_series(alerts: &BTreeMap<AlertKey, Alert>) -> BTreeMap<LabelMap, f64> {
    let mut out = BTreeMap::new();
    for a in alerts.values() {
        let state = match a.state {
            State::Pending => "pending",
            State::Firing => "firing",
            State::Resolved => continue,
        };
        let mut l = a.labels.clone();
        l.insert("__name__".into(), "ALERTS_FOR_STATE".into());
        out.insert(l.clone(), a.active_at_ms as f64 / 1000.0);
        l.insert("__name__".into(), "ALERTS".into());
        l.insert("alertstate".into(), state.into());
        out.insert(l, 1.0);
    }
    out
}

/// Write the alerts' series at `t`, and a staleness marker for each one
/// written at the evaluation before that is gone (an alert that fired,
/// resolved or went away), as Prometheus does. A store that refuses
/// them loses the series, not the rule's evaluation.
fn write_alerts_series(
    source: &dyn Source,
    alerts: &BTreeMap<AlertKey, Alert>,
    before: BTreeMap<LabelMap, f64>,
    t: i64,
) {
    let now = alerts_series(alerts);
    let mut out: Recorded = before
        .into_keys()
        .filter(|l| !now.contains_key(l))
        .map(|l| (l, t, keel_core::stale::marker()))
        .collect();
    out.extend(now.into_iter().map(|(l, v)| (l, t, v)));
    if out.is_empty() {
        return;
    }
    if let Err(e) = source.record(out) {
        tracing::debug!(error = %e, "ALERTS series not stored");
    }
}

pub mod guard;

#[cfg(test)]
mod tests;
