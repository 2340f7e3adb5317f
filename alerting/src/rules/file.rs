//! Rule files: Prometheus' format, with Keel's severity and log rules.
//!
//! ```yaml
//! groups:
//!   - name: shop
//!     interval: 15s
//!     rules:
//!       - alert: HighErrorRate
//!         expr: sum(rate(errors_total[5m])) / sum(rate(requests_total[5m])) > 0.05
//!         for: 2m
//!         keep_firing_for: 1m
//!         severity: P1            # or labels.severity, or mapped from it
//!         labels: {team: shop}
//!         annotations:
//!           summary: "{{ $labels.instance }} fails {{ $value | humanizePercentage }}"
//!       - record: job:requests:rate5m
//!         expr: sum by (job) (rate(requests_total[5m]))
//!       - alert: PaymentTimeouts  # a log rule: matches over a window
//!         logs:
//!           query: 'service:payment AND "timeout"'
//!           window: 5m
//!           above: 10
//!         severity: P2
//! ```
//!
//! Loading checks everything a rule needs to run — PromQL and log queries
//! parse, durations are durations, templates are templates, every alert
//! has a severity — and reports every problem with file:line:column.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::template::Template;

/// The three severities.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Severity {
    /// Pages at once, day and night.
    P0,
    /// Pages within business hours.
    P1,
    /// Opens a ticket; never pages.
    P2,
}

impl Severity {
    /// `P0`, `P1` or `P2` (any case).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_uppercase().as_str() {
            "P0" => Some(Self::P0),
            "P1" => Some(Self::P1),
            "P2" => Some(Self::P2),
            _ => None,
        }
    }

    /// As written in labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::P0 => "P0",
            Self::P1 => "P1",
            Self::P2 => "P2",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    groups: Vec<Spanned<GroupSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupSpec {
    name: Spanned<String>,
    #[serde(default)]
    interval: Option<Spanned<String>>,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    query_offset: Option<Spanned<String>>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    rules: Vec<Spanned<RuleSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    #[serde(default)]
    alert: Option<String>,
    #[serde(default)]
    record: Option<String>,
    #[serde(default)]
    expr: Option<Spanned<String>>,
    #[serde(default)]
    logs: Option<Spanned<LogSpec>>,
    #[serde(default, rename = "for")]
    for_: Option<Spanned<String>>,
    #[serde(default)]
    keep_firing_for: Option<Spanned<String>>,
    /// Keel: hysteresis — a firing alert resolves only once this no longer
    /// returns its labels (a lower threshold than `expr`'s).
    #[serde(default)]
    resolve_expr: Option<Spanned<String>>,
    /// Keel: the condition must stay false this long before the alert
    /// resolves (the same as `keep_firing_for`; give one).
    #[serde(default)]
    resolve_for: Option<Spanned<String>>,
    /// Keel: flap detection.
    #[serde(default)]
    flap_detection: Option<Spanned<FlapSpec>>,
    #[serde(default)]
    severity: Option<Spanned<String>>,
    #[serde(default)]
    labels: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    annotations: BTreeMap<String, Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FlapSpec {
    max_changes: u32,
    window: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogSpec {
    query: Spanned<String>,
    window: Spanned<String>,
    #[serde(default)]
    above: Option<f64>,
    #[serde(default)]
    below: Option<f64>,
}

/// What an alert rule evaluates.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// A PromQL expression: every sample it returns is an alert.
    PromQl(String),
    /// Log records matching `query` counted over `window`, compared with
    /// a threshold.
    Logs {
        /// Tantivy query syntax, as `/api/v1/logs/search` takes it.
        query: String,
        /// The window counted.
        window: Duration,
        /// Fires when the count is above this …
        above: Option<f64>,
        /// … or below this.
        below: Option<f64>,
    },
}

/// One loaded rule.
#[derive(Debug, Clone)]
pub enum Rule {
    /// An alerting rule.
    Alert(AlertRule),
    /// A recording rule: `expr`'s result stored as series `name`.
    Record {
        /// The new series' name.
        name: String,
        /// The expression.
        expr: String,
        /// Labels added (or replaced) on every result.
        labels: BTreeMap<String, String>,
    },
}

/// An alerting rule.
#[derive(Debug, Clone)]
pub struct AlertRule {
    /// `alertname`.
    pub name: String,
    /// What is evaluated.
    pub condition: Condition,
    /// How long a condition must hold before the alert fires.
    pub for_: Duration,
    /// How long a firing alert stays firing after its condition clears
    /// (`keep_firing_for`, or Keel's `resolve_for`).
    pub keep_firing_for: Duration,
    /// Hysteresis: while firing, the alert holds as long as this returns
    /// its labels.
    pub resolve_expr: Option<String>,
    /// Flap detection: more than `max_changes` firing/resolved changes
    /// within `window` hold the alert firing, marked flapping, until it
    /// has been quiet for a whole window.
    pub flap: Option<(u32, Duration)>,
    /// P0, P1 or P2 (also in `labels` as `severity`).
    pub severity: Severity,
    /// Labels added to every alert, templates resolved per alert.
    pub labels: BTreeMap<String, Template>,
    /// Annotations, templates resolved per alert.
    pub annotations: BTreeMap<String, Template>,
    /// Where it was written (`file:line`).
    pub source: String,
}

/// A group of rules evaluated together, in order, every `interval`.
#[derive(Debug, Clone)]
pub struct Group {
    /// Its name (unique within a file).
    pub name: String,
    /// The file it came from.
    pub file: PathBuf,
    /// How often it is evaluated.
    pub interval: Duration,
    /// Evaluate this far in the past (for late data).
    pub query_offset: Duration,
    /// Most alerts (or recorded series) a rule may produce; 0: no limit.
    pub limit: u64,
    /// The rules.
    pub rules: Vec<Rule>,
}

/// How severities are found for rules that do not say `severity:`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SeverityMapping {
    /// The label consulted (`labels.severity` in Prometheus rule files).
    pub label: String,
    /// Its values and the severity each means (`critical: P0`).
    pub values: BTreeMap<String, String>,
}

impl Default for SeverityMapping {
    fn default() -> Self {
        let values = [
            ("critical", "P0"),
            ("page", "P0"),
            ("error", "P1"),
            ("warning", "P1"),
            ("info", "P2"),
            ("ticket", "P2"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        Self {
            label: "severity".into(),
            values,
        }
    }
}

/// Why rule files could not be loaded: every problem, each with its place.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[error("{}", problems.join("\n"))]
pub struct RuleErrors {
    /// `file:line:column: what is wrong`, one per problem.
    pub problems: Vec<String>,
}

/// Prometheus' duration syntax (`30s`, `5m`, `1h30m`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    // promql-parser refuses a zero duration; rule files write `for: 0s`.
    if t.starts_with('0')
        && t.trim_start_matches('0')
            .chars()
            .all(|c| c.is_ascii_alphabetic())
    {
        return Ok(Duration::ZERO);
    }
    promql_parser::util::parse_duration(t).map_err(|e| format!("{s:?} is not a duration: {e}"))
}

fn at<T>(file: &str, s: &Spanned<T>) -> String {
    format!("{file}:{}:{}", s.referenced.line(), s.referenced.column())
}

/// Every rule file in `paths`: files as given, directories for their
/// `*.yml`/`*.yaml` (sorted, not recursing).
pub fn rule_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, RuleErrors> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for p in paths {
        if p.is_dir() {
            match std::fs::read_dir(p) {
                Ok(entries) => {
                    let mut files: Vec<PathBuf> = entries
                        .flatten()
                        .map(|e| e.path())
                        .filter(|f| {
                            f.is_file()
                                && matches!(
                                    f.extension().and_then(|e| e.to_str()),
                                    Some("yml" | "yaml")
                                )
                        })
                        .collect();
                    files.sort();
                    out.extend(files);
                }
                Err(e) => problems.push(format!("{}: {e}", p.display())),
            }
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            problems.push(format!("{}: no such file or directory", p.display()));
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(RuleErrors { problems })
    }
}

/// Load every rule file in `paths` (see [`rule_files`]), reporting every
/// problem in all of them at once.
pub fn load(
    paths: &[PathBuf],
    default_interval: Duration,
    mapping: &SeverityMapping,
) -> Result<Vec<Group>, RuleErrors> {
    let files = rule_files(paths)?;
    let mut groups = Vec::new();
    let mut problems = Vec::new();
    for f in files {
        match std::fs::read_to_string(&f) {
            Ok(text) => match parse(&f, &text, default_interval, mapping) {
                Ok(g) => groups.extend(g),
                Err(e) => problems.extend(e.problems),
            },
            Err(e) => problems.push(format!("{}: {e}", f.display())),
        }
    }
    if problems.is_empty() {
        Ok(groups)
    } else {
        Err(RuleErrors { problems })
    }
}

/// Parse one rule file's text.
pub fn parse(
    path: &Path,
    text: &str,
    default_interval: Duration,
    mapping: &SeverityMapping,
) -> Result<Vec<Group>, RuleErrors> {
    let file = path.display().to_string();
    let spec: FileSpec = keel_core::config::parse_yaml(&file, text).map_err(|e| RuleErrors {
        problems: vec![e.to_string()],
    })?;
    let mut problems = Vec::new();
    let mut groups = Vec::new();
    let mut names = std::collections::HashSet::new();
    for g in spec.groups {
        let g_at = at(&file, &g);
        let g = g.value;
        if g.name.value.trim().is_empty() {
            problems.push(format!(
                "{}: group name must not be empty",
                at(&file, &g.name)
            ));
        } else if !names.insert(g.name.value.clone()) {
            problems.push(format!(
                "{}: group {:?} is defined twice",
                at(&file, &g.name),
                g.name.value
            ));
        }
        let mut duration = |d: &Option<Spanned<String>>, default: Duration, what: &str| match d {
            None => default,
            Some(s) => parse_duration(&s.value).unwrap_or_else(|e| {
                problems.push(format!("{}: {what}: {e}", at(&file, s)));
                default
            }),
        };
        let interval = duration(&g.interval, default_interval, "interval");
        let query_offset = duration(&g.query_offset, Duration::ZERO, "query_offset");
        if interval.is_zero() {
            problems.push(format!("{g_at}: interval must be positive"));
        }
        let mut rules = Vec::new();
        for r in g.rules {
            let r_at = at(&file, &r);
            if let Some(rule) = rule(&file, &r_at, r.value, &g.labels, mapping, &mut problems) {
                rules.push(rule);
            }
        }
        groups.push(Group {
            name: g.name.value,
            file: path.to_path_buf(),
            interval,
            query_offset,
            limit: g.limit.unwrap_or(0),
            rules,
        });
    }
    if problems.is_empty() {
        Ok(groups)
    } else {
        Err(RuleErrors { problems })
    }
}

/// Check a PromQL expression, pointing a parse error at the expression.
fn check_promql(file: &str, e: &Spanned<String>, problems: &mut Vec<String>) {
    if let Err(m) = keel_promql::parse(&e.value) {
        problems.push(format!("{}: expr: {m}", at(file, e)));
    }
}

use keel_core::names::is_label_name as valid_label_name;

fn rule(
    file: &str,
    r_at: &str,
    r: RuleSpec,
    group_labels: &BTreeMap<String, String>,
    mapping: &SeverityMapping,
    problems: &mut Vec<String>,
) -> Option<Rule> {
    let before = problems.len();
    for (k, v) in &r.labels {
        if !valid_label_name(k) {
            problems.push(format!(
                "{}: labels: {k:?} is not a label name",
                at(file, v)
            ));
        }
    }
    let mut templates =
        |m: &BTreeMap<String, Spanned<String>>, what: &str| -> BTreeMap<String, Template> {
            let mut out = BTreeMap::new();
            for (k, v) in m {
                match Template::parse(&v.value) {
                    Ok(t) => {
                        out.insert(k.clone(), t);
                    }
                    Err(e) => problems.push(format!("{}: {what}.{k}: {e}", at(file, v))),
                }
            }
            out
        };
    let mut labels = templates(&r.labels, "labels");
    let annotations = templates(&r.annotations, "annotations");
    for (k, v) in group_labels {
        labels
            .entry(k.clone())
            .or_insert_with(|| Template::literal(v));
    }
    let duration = |d: &Option<Spanned<String>>, what: &str, problems: &mut Vec<String>| match d {
        None => Duration::ZERO,
        Some(s) => parse_duration(&s.value).unwrap_or_else(|e| {
            problems.push(format!("{}: {what}: {e}", at(file, s)));
            Duration::ZERO
        }),
    };
    let for_ = duration(&r.for_, "for", problems);
    let mut keep_firing_for = duration(&r.keep_firing_for, "keep_firing_for", problems);
    if let Some(rf) = &r.resolve_for {
        if r.keep_firing_for.is_some() {
            problems.push(format!(
                "{}: resolve_for: give keep_firing_for or resolve_for, not both",
                at(file, rf)
            ));
        }
        keep_firing_for = duration(&r.resolve_for, "resolve_for", problems);
    }
    if let Some(e) = &r.resolve_expr {
        check_promql(file, e, problems);
    }
    let flap = r.flap_detection.as_ref().map(|f| {
        let w = parse_duration(&f.value.window).unwrap_or_else(|e| {
            problems.push(format!("{}: flap_detection.window: {e}", at(file, f)));
            Duration::ZERO
        });
        if f.value.max_changes == 0 || w.is_zero() {
            problems.push(format!(
                "{}: flap_detection: max_changes and window must be positive",
                at(file, f)
            ));
        }
        (f.value.max_changes, w)
    });
    match (r.alert.clone(), r.record.clone()) {
        (Some(_), Some(_)) => {
            problems.push(format!("{r_at}: a rule is an alert or a record, not both"));
            None
        }
        (None, None) => {
            problems.push(format!("{r_at}: a rule needs `alert:` or `record:`"));
            None
        }
        (None, Some(name)) => {
            match &r.expr {
                Some(e) => check_promql(file, e, problems),
                None => problems.push(format!("{r_at}: record {name:?} needs `expr:`")),
            }
            if r.logs.is_some()
                || r.for_.is_some()
                || !r.annotations.is_empty()
                || r.resolve_expr.is_some()
                || r.flap_detection.is_some()
            {
                problems.push(format!(
                    "{r_at}: record {name:?}: `logs`, `for` and `annotations` are for alerts"
                ));
            }
            if !keel_core::names::is_metric_name(&name) {
                problems.push(format!("{r_at}: record: {name:?} is not a metric name"));
            }
            (problems.len() == before).then(|| Rule::Record {
                name,
                expr: r.expr.map(|e| e.value).unwrap_or_default(),
                labels: r.labels.into_iter().map(|(k, v)| (k, v.value)).collect(),
            })
        }
        (Some(name), None) => {
            if name.trim().is_empty() {
                problems.push(format!("{r_at}: alert name must not be empty"));
            }
            let condition = match (&r.expr, &r.logs) {
                (Some(e), None) => {
                    check_promql(file, e, problems);
                    Condition::PromQl(e.value.clone())
                }
                (None, Some(l)) => {
                    let l_at = at(file, l);
                    let spec = &l.value;
                    if let Err(e) = keel_logindex::logs::check_query(&spec.query.value) {
                        problems.push(format!("{}: logs.query: {e}", at(file, &spec.query)));
                    }
                    let window = parse_duration(&spec.window.value).unwrap_or_else(|e| {
                        problems.push(format!("{}: logs.window: {e}", at(file, &spec.window)));
                        Duration::ZERO
                    });
                    if spec.above.is_none() == spec.below.is_none() {
                        problems.push(format!("{l_at}: logs: give one of `above` or `below`"));
                    }
                    Condition::Logs {
                        query: spec.query.value.clone(),
                        window,
                        above: spec.above,
                        below: spec.below,
                    }
                }
                (Some(_), Some(_)) => {
                    problems.push(format!(
                        "{r_at}: alert {name:?}: `expr` or `logs`, not both"
                    ));
                    Condition::PromQl(String::new())
                }
                (None, None) => {
                    problems.push(format!("{r_at}: alert {name:?} needs `expr:` (or `logs:`)"));
                    Condition::PromQl(String::new())
                }
            };
            let severity = severity(file, r_at, &name, &r, mapping, problems);
            (problems.len() == before).then(|| {
                let severity = severity.unwrap_or(Severity::P2);
                // A Prometheus file's own `severity` label stays as written
                // (so its promtool tests pass unchanged); `severity: P1`
                // becomes the label.
                labels
                    .entry(mapping.label.clone())
                    .or_insert_with(|| Template::literal(severity.as_str()));
                Rule::Alert(AlertRule {
                    name,
                    condition,
                    for_,
                    keep_firing_for,
                    resolve_expr: r.resolve_expr.as_ref().map(|e| e.value.clone()),
                    flap,
                    severity,
                    labels,
                    annotations,
                    source: r_at
                        .rsplit_once(':')
                        .map_or(r_at.to_owned(), |(l, _)| l.to_owned()),
                })
            })
        }
    }
}

/// An alert's severity: `severity:`, else `labels.severity` as P0–P2,
/// else that label mapped by `mapping`; none is an error.
fn severity(
    file: &str,
    r_at: &str,
    name: &str,
    r: &RuleSpec,
    mapping: &SeverityMapping,
    problems: &mut Vec<String>,
) -> Option<Severity> {
    if let Some(s) = &r.severity {
        let got = Severity::parse(&s.value);
        if got.is_none() {
            problems.push(format!(
                "{}: severity: {:?} is not P0, P1 or P2",
                at(file, s),
                s.value
            ));
        }
        return got;
    }
    if let Some(v) = r.labels.get(&mapping.label) {
        if let Some(s) = Severity::parse(&v.value) {
            return Some(s);
        }
        if let Some(s) = mapping
            .values
            .get(&v.value.to_ascii_lowercase())
            .and_then(|m| Severity::parse(m))
        {
            return Some(s);
        }
        let known: Vec<&str> = mapping.values.keys().map(String::as_str).collect();
        problems.push(format!(
            "{}: alert {name:?}: labels.{}: {:?} is not P0–P2 nor a mapped value ({})",
            at(file, v),
            mapping.label,
            v.value,
            known.join(", ")
        ));
        return None;
    }
    problems.push(format!(
        "{r_at}: alert {name:?} has no severity: add `severity: P0|P1|P2` (or labels.{})",
        mapping.label
    ));
    None
}

#[cfg(test)]
mod tests;
