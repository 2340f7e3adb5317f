//! promtool's unit-test files (`promtool test rules`), run on Keel's
//! engine, so Prometheus users bring their tests unchanged.
//!
//! Supported: `rule_files` (relative to the test file), `evaluation_interval`,
//! `input_series` with the expanding notation (`1+2x10`, `3-1x4`, `5x2`,
//! `_`, `_x3`, `stale`, `NaN`, `Inf`), `promql_expr_test` (`expr`,
//! `eval_time`, `exp_samples`) and `alert_rule_test` (`eval_time`,
//! `alertname`, `exp_alerts` with `exp_labels` and `exp_annotations`).
//! As promtool does, rules are evaluated at every evaluation interval
//! from 0, and an alert test at `eval_time` sees the evaluation at or
//! just before it; recorded series are visible to later rules and tests.
//!
//! Keel's extension, which promtool files never contain: an expected
//! alert may say `exp_state: pending` or `exp_state: resolved` (default
//! `firing`); the alerts compared are then those in any state the test
//! names, so pending and resolved states are unit-tested too.

use std::time::Duration;

use serde::Deserialize;

use crate::rules;
use keel_metricstore::{STALE_NAN, Store, StoreConfig};
use keel_promql::{Engine, Value, format_value};
use keel_series::histogram::Histogram;
use keel_series::labels::{Labels, NAME};

mod file;
mod notes;
mod values;
pub use file::*;
use notes::*;
use values::*;
pub use values::{expand_values, parse_series};

fn almost_equal(a: f64, b: f64) -> bool {
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let diff = (a - b).abs();
    diff <= 1e-6 * a.abs().max(b.abs()) || diff < 1e-300
}

/// A sample's value: a number or a native histogram.
#[derive(Debug, Clone)]
enum Got {
    Float(f64),
    Histogram(Histogram),
}

impl Got {
    fn matches(&self, other: &Got) -> bool {
        match (self, other) {
            (Got::Float(a), Got::Float(b)) => almost_equal(*a, *b),
            (Got::Histogram(a), Got::Histogram(b)) => a.close_to(b, almost_equal),
            _ => false,
        }
    }
}

fn show(samples: &[(Labels, Got)]) -> String {
    if samples.is_empty() {
        return "nil".into();
    }
    samples
        .iter()
        .map(|(l, v)| {
            let inner: Vec<String> = l.pairs().map(|(k, v)| format!("{k}={v:?}")).collect();
            let v = match v {
                Got::Float(v) => format_value(*v),
                Got::Histogram(h) => h.notation(),
            };
            format!("{{{}}} {v}", inner.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Run every expression test in `text` (a test file read from `path`),
/// with Prometheus' experimental functions evaluated or refused as
/// `experimental` says (promtool's `--enable-feature=promql-experimental-functions`).
/// Returns the number of checks run and the failures.
pub fn run(
    path: &str,
    text: &str,
    experimental: bool,
) -> Result<(usize, Vec<Failure>), TestFileError> {
    let limits = keel_promql::QueryLimits {
        experimental_functions: experimental,
        ..keel_promql::QueryLimits::default()
    };
    let file: TestFile = keel_core::config::parse_yaml(path, text)?;
    let eval_interval = duration_ms(
        file.evaluation_interval.as_deref().unwrap_or("1m"),
        &format!("{path}: evaluation_interval"),
    )?;
    if eval_interval <= 0 {
        return Err(TestFileError::Invalid(format!(
            "{path}: evaluation_interval must be positive"
        )));
    }
    let base = std::path::Path::new(path)
        .parent()
        .unwrap_or(std::path::Path::new("."));
    let rule_paths: Vec<std::path::PathBuf> =
        file.rule_files.iter().map(|f| base.join(f)).collect();
    let groups = if rule_paths.is_empty() {
        Vec::new()
    } else {
        rules::file::load(
            &rule_paths,
            Duration::from_millis(eval_interval as u64),
            &rules::SeverityMapping::default(),
        )
        .map_err(|e| TestFileError::Invalid(e.to_string()))?
    };
    let mut checks = 0;
    let mut failures = Vec::new();
    for (gi, g) in file.tests.iter().enumerate() {
        let group = g
            .name
            .clone()
            .unwrap_or_else(|| format!("{path}: tests[{gi}]"));
        let external: std::collections::BTreeMap<String, String> = match &g.external_labels {
            None => Default::default(),
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| TestFileError::Invalid(format!("{group}.external_labels: {e}")))?,
        };
        let interval = duration_ms(
            g.interval.as_deref().unwrap_or("1m"),
            &format!("{group}.interval"),
        )?;
        let base_ms = match g.start_time.as_deref() {
            None => 0,
            Some(t) => t
                .parse::<jiff::Timestamp>()
                .map(|t| t.as_millisecond())
                .map_err(|e| TestFileError::Invalid(format!("{group}.start_time: {t:?}: {e}")))?,
        };
        let store = Store::in_memory(StoreConfig::default());
        let mut batch = Vec::new();
        let mut native = Vec::new();
        for (si, s) in g.input_series.iter().enumerate() {
            let at = format!("{group}.input_series[{si}]");
            let labels = parse_series(&s.series)
                .map_err(|e| TestFileError::Invalid(format!("{at}.series: {e}")))?;
            if s.values.contains("{{") {
                let values = expand_histograms(&s.values)
                    .map_err(|e| TestFileError::Invalid(format!("{at}.values: {e}")))?;
                let samples: Vec<(i64, Histogram)> = values
                    .into_iter()
                    .enumerate()
                    .filter_map(|(i, v)| v.map(|v| (base_ms + i as i64 * interval, v)))
                    .collect();
                native.push((labels, samples));
                continue;
            }
            let values = expand_values(&s.values)
                .map_err(|e| TestFileError::Invalid(format!("{at}.values: {e}")))?;
            let samples: Vec<(i64, f64)> = values
                .into_iter()
                .enumerate()
                .filter_map(|(i, v)| v.map(|v| (base_ms + i as i64 * interval, v)))
                .collect();
            batch.push((labels, samples));
        }
        store
            .append(batch)
            .map_err(|e| TestFileError::Invalid(format!("{group}: {e}")))?;
        store
            .append_histograms(native)
            .map_err(|e| TestFileError::Invalid(format!("{group}: {e}")))?;
        // Rules run at every evaluation interval up to the last time a
        // test looks at, alert tests checked as their time comes.
        let mut alert_tests: Vec<(i64, usize)> = Vec::new();
        for (ai, t) in g.alert_rule_test.iter().enumerate() {
            let at = duration_ms(
                &t.eval_time,
                &format!("{group}.alert_rule_test[{ai}].eval_time"),
            )?;
            alert_tests.push((at, ai));
        }
        alert_tests.sort();
        let mut exp_notes: Vec<(i64, ExpNotification)> = Vec::new();
        for (ni, n) in g.exp_notifications.iter().flatten().enumerate() {
            let at = duration_ms(
                &n.eval_time,
                &format!("{group}.exp_notifications[{ni}].eval_time"),
            )?;
            exp_notes.push((at, n.clone()));
        }
        let notify = g.notify.clone().unwrap_or_default();
        let mut receivers = notify.receiver_names();
        if receivers.is_empty() {
            receivers.push("none".into());
        }
        let mut router = match (&g.exp_notifications, &g.notify) {
            (None, None) => None,
            _ => Some(test_router(&group, notify, &g.silences, base_ms)?),
        };
        let mut got_notes: Vec<Note> = Vec::new();
        let last = alert_tests
            .iter()
            .map(|(t, _)| *t)
            .chain(exp_notes.iter().map(|(t, _)| *t))
            .chain(
                g.promql_expr_test
                    .iter()
                    .filter_map(|t| duration_ms(&t.eval_time, "").ok()),
            )
            .max()
            .unwrap_or(0);
        let mut states: Vec<rules::GroupState> =
            groups.iter().cloned().map(rules::GroupState::new).collect();
        let store = std::sync::Arc::new(store);
        let logs = input_logs(&group, &g.input_logs, base_ms)?;
        let mut source =
            rules::source::StoreSource::new(store.clone(), logs.as_ref().map(|(l, _)| l.clone()));
        source.limits = limits.clone();
        let mut next_test = alert_tests.iter().peekable();
        let mut ts = 0;
        if !states.is_empty() {
            while ts <= last {
                for st in &mut states {
                    st.eval(&source, base_ms + ts, &external);
                }
                if let Some(r) = router.as_mut() {
                    record_notifications(r, &states, (base_ms, ts), &receivers, &mut got_notes);
                }
                while let Some(&&(at, ai)) = next_test.peek() {
                    if at >= ts + eval_interval {
                        break;
                    }
                    next_test.next();
                    checks += 1;
                    if let Some(f) = check_alerts(&group, &g.alert_rule_test[ai], &states) {
                        failures.push(f);
                    }
                }
                ts += eval_interval;
            }
        }
        for (_, ai) in next_test {
            checks += 1;
            if let Some(f) = check_alerts(&group, &g.alert_rule_test[*ai], &states) {
                failures.push(f);
            }
        }
        if g.exp_notifications.is_some() {
            checks += 1;
            exp_notes.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
            got_notes.sort();
            // Each expected note takes one produced note it describes;
            // anything left over on either side is a difference.
            let mut left = got_notes.clone();
            let mut missing = Vec::new();
            for (t, e) in &exp_notes {
                match left.iter().position(|n| n.is(*t, e)) {
                    Some(i) => {
                        left.remove(i);
                    }
                    None => missing.push((*t, e)),
                }
            }
            if !missing.is_empty() || !left.is_empty() {
                let join = |v: Vec<String>| {
                    if v.is_empty() {
                        "[]".to_owned()
                    } else {
                        v.join(", ")
                    }
                };
                failures.push(Failure {
                    group: group.clone(),
                    what: "exp_notifications".into(),
                    eval_time: "whole run".into(),
                    expected: join(
                        exp_notes
                            .iter()
                            .map(|(t, e)| show_expected(*t, e))
                            .collect(),
                    ),
                    got: join(got_notes.iter().map(Note::show).collect()),
                });
            }
        }
        let engine = Engine::with_budget(&store, limits.budget(None));
        for (ei, t) in g.promql_expr_test.iter().enumerate() {
            checks += 1;
            let at = duration_ms(
                &t.eval_time,
                &format!("{group}.promql_expr_test[{ei}].eval_time"),
            )?;
            let mut expected = Vec::new();
            for e in &t.exp_samples {
                let l = parse_series(e.labels.as_deref().unwrap_or("{}")).map_err(|m| {
                    TestFileError::Invalid(format!("{group}.promql_expr_test[{ei}]: {m}"))
                })?;
                let v = match &e.histogram {
                    Some(h) => Got::Histogram(Histogram::parse_notation(h).map_err(|m| {
                        TestFileError::Invalid(format!(
                            "{group}.promql_expr_test[{ei}].histogram: {m}"
                        ))
                    })?),
                    None => Got::Float(e.value),
                };
                expected.push((l, v));
            }
            let got: Result<Vec<(Labels, Got)>, String> =
                match engine.instant(&t.expr, base_ms + at) {
                    Ok(Value::Vector(v)) => Ok(v
                        .into_iter()
                        .map(|s| (s.labels, Got::Float(s.value)))
                        .collect()),
                    Ok(Value::Histograms(v)) => Ok(v
                        .into_iter()
                        .map(|s| (s.labels, Got::Histogram(s.histogram)))
                        .collect()),
                    Ok(Value::Scalar(x)) => Ok(vec![(Labels::default(), Got::Float(x))]),
                    Ok(other) => Err(format!("unexpected {} result", other.type_name())),
                    Err(e) => Err(format!("error: {e}")),
                };
            let fail = |got: String| Failure {
                group: group.clone(),
                what: format!("expr {:?}", t.expr),
                eval_time: t.eval_time.clone(),
                expected: show(&expected),
                got,
            };
            match got {
                Err(e) => failures.push(fail(e)),
                Ok(got) => {
                    // Match each expected sample to a distinct computed one.
                    let mut unmatched = got.clone();
                    let same = got.len() == expected.len()
                        && expected.iter().all(|(l, v)| {
                            match unmatched
                                .iter()
                                .position(|(gl, gv)| gl == l && gv.matches(v))
                            {
                                Some(i) => {
                                    unmatched.swap_remove(i);
                                    true
                                }
                                None => false,
                            }
                        });
                    if !same {
                        failures.push(fail(show(&got)));
                    }
                }
            }
        }
    }
    Ok((checks, failures))
}

/// A time from the test's start as a duration (`1h30m`, `0s`).
pub fn show_ms(ms: i64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    humantime::format_duration(Duration::from_millis(ms.max(0) as u64))
        .to_string()
        .replace(' ', "")
}

/// Compare one alert test with the alerts now; a failure says what differed.
fn check_alerts(group: &str, t: &AlertTest, states: &[rules::GroupState]) -> Option<Failure> {
    use std::collections::BTreeMap;
    let state_of = |s: Option<&str>| match s.unwrap_or("firing") {
        "pending" => Ok(rules::State::Pending),
        "firing" => Ok(rules::State::Firing),
        "resolved" => Ok(rules::State::Resolved),
        other => Err(format!(
            "exp_state {other:?} is not pending, firing or resolved"
        )),
    };
    let mut wanted_states = vec![rules::State::Firing];
    let mut expected: Vec<AlertView> = Vec::new();
    for e in &t.exp_alerts {
        let st = match state_of(e.exp_state.as_deref()) {
            Ok(s) => s,
            Err(m) => {
                return Some(Failure {
                    group: group.to_owned(),
                    what: format!("alertname {:?}", t.alertname),
                    eval_time: t.eval_time.clone(),
                    expected: m,
                    got: String::new(),
                });
            }
        };
        if !wanted_states.contains(&st) {
            wanted_states.push(st);
        }
        let mut labels = e.exp_labels.clone();
        labels.insert("alertname".into(), t.alertname.clone());
        expected.push((st, labels, e.exp_annotations.clone()));
    }
    let mut got: Vec<AlertView> = states
        .iter()
        .flat_map(|g| g.alerts())
        .filter(|(r, a)| r.name == t.alertname && wanted_states.contains(&a.state))
        .map(|(_, a)| (a.state, a.labels.clone(), a.annotations.clone()))
        .collect();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    got.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    if got == expected_sorted {
        return None;
    }
    let show = |v: &[AlertView]| {
        if v.is_empty() {
            return "[]".to_owned();
        }
        let items: Vec<String> = v
            .iter()
            .enumerate()
            .map(|(i, (st, l, a))| {
                let fmt = |m: &BTreeMap<String, String>| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={v:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let state = if *st == rules::State::Firing {
                    String::new()
                } else {
                    format!(" State:{st:?}")
                };
                format!(
                    "{i}: Labels:{{{}}} Annotations:{{{}}}{state}",
                    fmt(l),
                    fmt(a)
                )
            })
            .collect();
        format!("[\n        {}\n    ]", items.join("\n        "))
    };
    Some(Failure {
        group: group.to_owned(),
        what: format!("alertname {:?}", t.alertname),
        eval_time: t.eval_time.clone(),
        expected: show(&expected_sorted),
        got: show(&got),
    })
}

#[cfg(test)]
mod tests;
