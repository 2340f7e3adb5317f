//! The test file's format: promtool's, plus Keel's expected states,
//! input logs, silences and expected notifications; and what a failed
//! test reports.

use super::*;

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
    /// The value (0 when the sample is a histogram).
    #[serde(default)]
    pub value: f64,
    /// A native histogram, in Prometheus' test notation
    /// (`{{schema:0 sum:5 count:4 buckets:[1 2 1]}}`).
    #[serde(default)]
    pub histogram: Option<String>,
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
