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
use keel_series::labels::{Labels, NAME};

/// A test file.
#[derive(Debug, Deserialize)]
pub struct TestFile {
    /// Rule files under test, relative to the test file.
    #[serde(default)]
    pub rule_files: Vec<String>,
    /// Rule evaluation interval.
    #[serde(default)]
    pub evaluation_interval: Option<String>,
    /// Test groups.
    pub tests: Vec<TestGroup>,
}

/// One group: input series and the expressions to check.
#[derive(Debug, Deserialize)]
pub struct TestGroup {
    /// Optional name.
    #[serde(default)]
    pub name: Option<String>,
    /// Time between input samples (default 1m).
    #[serde(default)]
    pub interval: Option<String>,
    /// Input series.
    #[serde(default)]
    pub input_series: Vec<InputSeries>,
    /// Expression tests.
    #[serde(default)]
    pub promql_expr_test: Vec<ExprTest>,
    /// Alert tests.
    #[serde(default)]
    pub alert_rule_test: Vec<AlertTest>,
    /// External labels (not supported yet).
    #[serde(default)]
    pub external_labels: Option<serde_json::Value>,
    /// Keel: log lines for log rules.
    #[serde(default)]
    pub input_logs: Vec<InputLog>,
    /// Keel: the wall-clock time of 0s (RFC 3339; default the Unix
    /// epoch), so business hours and time zones can be tested.
    #[serde(default)]
    pub start_time: Option<String>,
    /// Keel: the notification settings routing is tested with.
    #[serde(default)]
    pub notify: Option<crate::notify::NotifyConfig>,
    /// Keel: silences in force during the test.
    #[serde(default)]
    pub silences: Vec<TestSilence>,
    /// Keel: every page and ticket the run must produce, in any order.
    #[serde(default)]
    pub exp_notifications: Option<Vec<ExpNotification>>,
}

/// Log records for a test's log rules: `line` (a JSON object, as
/// `POST /api/v1/logs` takes it) `count` times at `at`, and again every
/// `every`, `times` times in all.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputLog {
    /// The record, a JSON object.
    pub line: String,
    /// When (a duration from 0).
    pub at: String,
    /// Copies at each time (default 1).
    #[serde(default)]
    pub count: Option<u32>,
    /// Time between repeats.
    #[serde(default)]
    pub every: Option<String>,
    /// Times in all (default 1).
    #[serde(default)]
    pub times: Option<u32>,
}

/// A silence in a test.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestSilence {
    /// Matchers (`alertname="X"`).
    pub matchers: Vec<String>,
    /// When it starts (a duration from 0).
    #[serde(default)]
    pub start: Option<String>,
    /// How long it lasts.
    pub duration: String,
}

/// An expected page or ticket.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(deny_unknown_fields)]
pub struct ExpNotification {
    /// When (a duration from 0: the evaluation that produced it).
    pub eval_time: String,
    /// The alert.
    pub alertname: String,
    /// `firing`, `resolved` or `ticket`.
    pub kind: String,
    /// `P0`, `P1` or `P2`.
    pub severity: String,
    /// The page's group labels (not compared when absent).
    #[serde(default)]
    pub group: Option<std::collections::BTreeMap<String, String>>,
    /// How many alerts the page holds (not compared when absent).
    #[serde(default)]
    pub alerts: Option<usize>,
    /// Who gets it: `email`, a webhook's URL, `tickets` (not compared
    /// when absent; a page goes to every receiver `notify` configures,
    /// `none` when it configures none).
    #[serde(default)]
    pub receiver: Option<String>,
}

/// A page or ticket the run produced.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Note {
    t: i64,
    receiver: String,
    alertname: String,
    kind: String,
    severity: String,
    group: std::collections::BTreeMap<String, String>,
    alerts: usize,
}

impl Note {
    fn show(&self) -> String {
        let group: Vec<String> = self
            .group
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        format!(
            "{} {} {} {} {{{}}} x{} to {}",
            show_ms(self.t),
            self.alertname,
            self.kind,
            self.severity,
            group.join(","),
            self.alerts,
            self.receiver
        )
    }

    /// Whether expected `e` (at `t`) describes it.
    fn is(&self, t: i64, e: &ExpNotification) -> bool {
        self.t == t
            && self.alertname == e.alertname
            && self.kind == e.kind
            && self.severity == e.severity.to_ascii_uppercase()
            && e.group.as_ref().is_none_or(|g| *g == self.group)
            && e.alerts.is_none_or(|n| n == self.alerts)
            && e.receiver.as_ref().is_none_or(|r| *r == self.receiver)
    }
}

fn show_expected(t: i64, e: &ExpNotification) -> String {
    let mut out = format!(
        "{} {} {} {}",
        show_ms(t),
        e.alertname,
        e.kind,
        e.severity.to_ascii_uppercase()
    );
    if let Some(g) = &e.group {
        let g: Vec<String> = g.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        out.push_str(&format!(" {{{}}}", g.join(",")));
    }
    if let Some(n) = e.alerts {
        out.push_str(&format!(" x{n}"));
    }
    if let Some(r) = &e.receiver {
        out.push_str(&format!(" to {r}"));
    }
    out
}

/// One input series.
#[derive(Debug, Deserialize)]
pub struct InputSeries {
    /// Series in selector notation: `metric{label="value"}`.
    pub series: String,
    /// Values in expanding notation.
    pub values: String,
}

/// One expression check.
#[derive(Debug, Deserialize)]
pub struct ExprTest {
    /// The PromQL expression.
    pub expr: String,
    /// When to evaluate it (a duration from 0).
    pub eval_time: String,
    /// The samples expected, in any order.
    #[serde(default)]
    pub exp_samples: Vec<ExpSample>,
}

/// One alert check.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertTest {
    /// When to look (a duration from 0).
    pub eval_time: String,
    /// The alert rule's name.
    pub alertname: String,
    /// The alerts expected (firing, unless they say otherwise).
    #[serde(default)]
    pub exp_alerts: Vec<ExpAlert>,
}

/// An expected alert.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpAlert {
    /// Its labels (`alertname` is added).
    #[serde(default)]
    pub exp_labels: std::collections::BTreeMap<String, String>,
    /// Its annotations, exactly.
    #[serde(default)]
    pub exp_annotations: std::collections::BTreeMap<String, String>,
    /// Keel: `pending`, `firing` (the default) or `resolved`.
    #[serde(default)]
    pub exp_state: Option<String>,
}

/// An expected sample.
#[derive(Debug, Deserialize)]
pub struct ExpSample {
    /// Labels in selector notation (`{a="b"}` or `metric{a="b"}`).
    #[serde(default)]
    pub labels: Option<String>,
    /// The value.
    pub value: f64,
}

/// One failed check, saying what differed.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// Test group (name or index).
    pub group: String,
    /// What was checked: `expr "…"` or `alertname "…"`.
    pub what: String,
    /// Its evaluation time as written.
    pub eval_time: String,
    /// What was expected, formatted as promtool prints it.
    pub expected: String,
    /// What Keel computed (or its error).
    pub got: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}, time {}:\n    exp: {}\n    got: {}",
            self.group, self.what, self.eval_time, self.expected, self.got
        )
    }
}

/// Errors reading a test file.
#[derive(Debug, thiserror::Error)]
pub enum TestFileError {
    /// YAML or schema error, with file:line:column.
    #[error(transparent)]
    Config(#[from] keel_core::config::ConfigError),
    /// A value that cannot be used, naming where.
    #[error("{0}")]
    Invalid(String),
}

fn duration_ms(s: &str, what: &str) -> Result<i64, TestFileError> {
    rules::file::parse_duration(s)
        .map(|d| d.as_millis() as i64)
        .map_err(|e| TestFileError::Invalid(format!("{what}: {e}")))
}

fn number(tok: &str) -> Option<f64> {
    match tok.to_ascii_lowercase().as_str() {
        "inf" | "+inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        "nan" => Some(f64::NAN),
        _ => tok.parse().ok(),
    }
}

/// Expand promtool's value notation into one entry per interval (None =
/// missing sample).
pub fn expand_values(values: &str) -> Result<Vec<Option<f64>>, String> {
    let mut out = Vec::new();
    for tok in values.split_whitespace() {
        if tok == "_" {
            out.push(None);
            continue;
        }
        if tok == "stale" {
            out.push(Some(f64::from_bits(STALE_NAN)));
            continue;
        }
        if let Some(n) = tok.strip_prefix("_x") {
            let n: usize = n.parse().map_err(|_| format!("bad repeat in {tok:?}"))?;
            out.extend(std::iter::repeat_n(None, n));
            continue;
        }
        if let Some(x) = tok.rfind('x') {
            let (head, count) = (&tok[..x], &tok[x + 1..]);
            let n: usize = count
                .parse()
                .map_err(|_| format!("bad repeat count in {tok:?}"))?;
            // Find the + or - operator: not at the start, not an exponent sign.
            let bytes = head.as_bytes();
            let op = (1..bytes.len()).rev().find(|&i| {
                (bytes[i] == b'+' || bytes[i] == b'-') && !matches!(bytes[i - 1], b'e' | b'E')
            });
            let (start, step) = match op {
                Some(i) => {
                    let a = number(&head[..i]).ok_or_else(|| format!("bad start in {tok:?}"))?;
                    let b = number(&head[i + 1..]).ok_or_else(|| format!("bad step in {tok:?}"))?;
                    (a, if bytes[i] == b'-' { -b } else { b })
                }
                None => (
                    number(head).ok_or_else(|| format!("bad value in {tok:?}"))?,
                    0.0,
                ),
            };
            for k in 0..=n {
                out.push(Some(start + step * k as f64));
            }
            continue;
        }
        out.push(Some(
            number(tok).ok_or_else(|| format!("bad value {tok:?}"))?,
        ));
    }
    Ok(out)
}

/// Labels of a selector written as `metric{a="b"}` or `{a="b"}`.
pub fn parse_series(s: &str) -> Result<Labels, String> {
    let s = s.trim();
    if s.is_empty() || s == "{}" {
        return Ok(Labels::default());
    }
    let expr = promql_parser::parser::parse(s).map_err(|e| format!("{s:?}: {e}"))?;
    let promql_parser::parser::Expr::VectorSelector(vs) = expr else {
        return Err(format!("{s:?} is not a series"));
    };
    let mut pairs = Vec::new();
    if let Some(n) = vs.name {
        pairs.push((NAME.to_owned(), n));
    }
    for m in vs.matchers.matchers {
        pairs.push((m.name, m.value));
    }
    Ok(Labels::new(pairs))
}

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

fn show(samples: &[(Labels, f64)]) -> String {
    if samples.is_empty() {
        return "nil".into();
    }
    samples
        .iter()
        .map(|(l, v)| {
            let inner: Vec<String> = l.pairs().map(|(k, v)| format!("{k}={v:?}")).collect();
            format!("{{{}}} {}", inner.join(", "), format_value(*v))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Run every expression test in `text` (a test file read from `path`).
/// Returns the number of checks run and the failures.
pub fn run(path: &str, text: &str) -> Result<(usize, Vec<Failure>), TestFileError> {
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
        for (si, s) in g.input_series.iter().enumerate() {
            let at = format!("{group}.input_series[{si}]");
            let labels = parse_series(&s.series)
                .map_err(|e| TestFileError::Invalid(format!("{at}.series: {e}")))?;
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
        let source = rules::source::StoreSource {
            store: store.clone(),
            logs: logs.as_ref().map(|(l, _)| l.clone()),
        };
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
        let engine = Engine::new(&store);
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
                expected.push((l, e.value));
            }
            let got: Result<Vec<(Labels, f64)>, String> = match engine
                .instant(&t.expr, base_ms + at)
            {
                Ok(Value::Vector(v)) => Ok(v.into_iter().map(|s| (s.labels, s.value)).collect()),
                Ok(Value::Scalar(x)) => Ok(vec![(Labels::default(), x)]),
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
                                .position(|(gl, gv)| gl == l && almost_equal(*gv, *v))
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

/// A log store in a temporary directory, removed when dropped.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The test's log lines in a fresh log store (none without lines).
fn input_logs(
    group: &str,
    lines: &[InputLog],
    base_ms: i64,
) -> Result<Option<(std::sync::Arc<keel_logindex::logs::LogStore>, TempDir)>, TestFileError> {
    if lines.is_empty() {
        return Ok(None);
    }
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = TempDir(std::env::temp_dir().join(format!(
        "keel-rule-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )));
    let mut records = Vec::new();
    let mut last = base_ms;
    for (i, l) in lines.iter().enumerate() {
        let at = format!("{group}.input_logs[{i}]");
        let obj: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&l.line)
            .map_err(|e| TestFileError::Invalid(format!("{at}.line: not a JSON object: {e}")))?;
        let start = duration_ms(&l.at, &format!("{at}.at"))?;
        let every = match &l.every {
            Some(e) => duration_ms(e, &format!("{at}.every"))?,
            None => 0,
        };
        for k in 0..l.times.unwrap_or(1) as i64 {
            let t = base_ms + start + k * every;
            last = last.max(t);
            for _ in 0..l.count.unwrap_or(1) {
                let mut r = keel_logindex::logs::record::from_json(obj.clone(), t * 1_000_000)
                    .map_err(|e| TestFileError::Invalid(format!("{at}.line: {e}")))?;
                r.timestamp_ns = t * 1_000_000;
                records.push(r);
            }
        }
    }
    let fail = |e: keel_logindex::index_store::IndexError| {
        TestFileError::Invalid(format!("{group}.input_logs: {e}"))
    };
    let store = keel_logindex::logs::LogStore::open(
        &dir.0,
        keel_logindex::index_store::IndexConfig::default(),
        last,
    )
    .map_err(fail)?;
    store.append(records, last).map_err(fail)?;
    store.commit().map_err(fail)?;
    Ok(Some((std::sync::Arc::new(store), dir)))
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

/// A router for a test group: its notify settings, its silences placed
/// on the test's clock.
fn test_router(
    group: &str,
    notify: crate::notify::NotifyConfig,
    silences: &[TestSilence],
    base_ms: i64,
) -> Result<crate::notify::Router, TestFileError> {
    let invalid = |m: String| TestFileError::Invalid(format!("{group}.notify: {m}"));
    let hours = notify
        .business_hours
        .compile()
        .map_err(|p| invalid(p.join("; ")))?;
    let inhibit =
        crate::notify::silence::compile(&notify.inhibit).map_err(|p| invalid(p.join("; ")))?;
    let mut r = crate::notify::Router::new(notify.policy(hours), inhibit);
    for (i, s) in silences.iter().enumerate() {
        let at = format!("{group}.silences[{i}]");
        let start =
            base_ms + duration_ms(s.start.as_deref().unwrap_or("0s"), &format!("{at}.start"))?;
        let length = duration_ms(&s.duration, &format!("{at}.duration"))?;
        let matchers = s
            .matchers
            .iter()
            .map(|m| crate::notify::Matcher::parse(m))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TestFileError::Invalid(format!("{at}.matchers: {e}")))?;
        r.silences.push(crate::notify::Silence {
            id: i as u64 + 1,
            matchers,
            starts_at_ms: start,
            ends_at_ms: start + length,
            created_by: "test".into(),
            comment: String::new(),
        });
    }
    Ok(r)
}

/// Route the alerts after the evaluation at `ts` and note every page
/// and new ticket.
fn record_notifications(
    r: &mut crate::notify::Router,
    states: &[rules::GroupState],
    (base_ms, ts): (i64, i64),
    receivers: &[String],
    out: &mut Vec<Note>,
) {
    let views: Vec<crate::notify::AlertView> = states
        .iter()
        .flat_map(|g| g.alerts())
        .map(|(_, a)| crate::notify::AlertView::from(a))
        .collect();
    let tickets = r.tickets.len();
    for p in r.decide(base_ms + ts, &views) {
        let kind = match p.kind {
            crate::notify::Kind::Firing => "firing",
            crate::notify::Kind::Resolved => "resolved",
        };
        for receiver in receivers {
            out.push(Note {
                t: ts,
                receiver: receiver.clone(),
                alertname: p.alertnames().join(","),
                kind: kind.into(),
                severity: p.severity.as_str().into(),
                group: p.group.clone(),
                alerts: p.alerts.len(),
            });
        }
    }
    for t in &r.tickets[tickets..] {
        out.push(Note {
            t: ts,
            receiver: "tickets".into(),
            alertname: t.labels.get("alertname").cloned().unwrap_or_default(),
            kind: "ticket".into(),
            severity: "P2".into(),
            group: std::collections::BTreeMap::new(),
            alerts: 1,
        });
    }
}

/// An alert as a test compares it: state, labels, annotations.
type AlertView = (
    rules::State,
    std::collections::BTreeMap<String, String>,
    std::collections::BTreeMap<String, String>,
);

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
mod tests {
    use super::*;

    #[test]
    fn expanding_notation_matches_promtool_docs() {
        let v = |s: &str| expand_values(s).expect("valid");
        assert_eq!(v("-2+4x3"), [Some(-2.0), Some(2.0), Some(6.0), Some(10.0)]);
        assert_eq!(v("1-2x2"), [Some(1.0), Some(-1.0), Some(-3.0)]);
        assert_eq!(v("5x2"), [Some(5.0), Some(5.0), Some(5.0)]);
        assert_eq!(v("1 _x3 2"), [Some(1.0), None, None, None, Some(2.0)]);
        assert_eq!(v("1e3+1e1x1"), [Some(1000.0), Some(1010.0)]);
        assert!(v("stale")[0].is_some_and(|x| x.to_bits() == STALE_NAN));
        assert!(expand_values("1+x").is_err());
    }
}
