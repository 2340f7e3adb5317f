//! The dashboard file format: rows of panels, each a PromQL or a log
//! query with a visualisation, units and thresholds, and variables
//! (`$service`) the queries use. Validation reports every problem,
//! each naming its field, so `load_yaml` can point it at its line.

use std::collections::{BTreeMap, BTreeSet};

use keel_core::config::Validate;
use serde::{Deserialize, Serialize};

/// One dashboard file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dashboard {
    /// Shown at the top and in the list.
    pub title: String,
    /// One line under the title.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Variables the queries use as `$name` or `${name}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variables: Vec<Variable>,
    /// The default time range (`1h`: the last hour).
    #[serde(default = "default_range", with = "keel_core::duration")]
    pub range: std::time::Duration,
    /// Rows, top to bottom.
    pub rows: Vec<Row>,
}

fn default_range() -> std::time::Duration {
    std::time::Duration::from_secs(3600)
}

/// A variable: a fixed list, or the values of a label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variable {
    /// `$name` in queries.
    pub name: String,
    /// Its values are those of this label …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// … on series matching this selector (all series without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#match: Option<String>,
    /// Or these values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// The value chosen at first (else the first value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

/// A row of panels (12 columns wide).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Row {
    /// Shown above the row.
    pub title: String,
    /// Left to right, wrapping after 12 columns.
    pub panels: Vec<Panel>,
}

/// How a panel draws its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Viz {
    /// Lines over time, with the timeline's events on them.
    Timeseries,
    /// One big number (the last value), coloured by the thresholds.
    Stat,
    /// Bars: the last value of each series.
    Bar,
    /// The last value of each series, with its labels.
    Table,
    /// A histogram's buckets over time: classic `…_bucket` series, or a
    /// native histogram series (its buckets drawn the same way).
    Heatmap,
    /// Log lines (a `logs:` query).
    Logs,
    /// The alerts firing now, by severity (no query).
    Alerts,
}

/// A value's unit, for axes and numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// A plain number (1.2k, 3.4M).
    #[default]
    Short,
    /// Per second.
    Reqps,
    /// Seconds.
    Seconds,
    /// A ratio shown as a percentage (0.05 → 5 %).
    Percentunit,
    /// A percentage already (5 → 5 %).
    Percent,
    /// Bytes (KiB, MiB, …).
    Bytes,
    /// Bytes per second.
    Bytesps,
}

/// A colour from a value on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    /// From this value up …
    pub value: f64,
    /// … this colour (`green`, `orange`, `red` or `#rrggbb`).
    pub color: String,
}

/// One PromQL query of a panel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Query {
    /// PromQL; may use the dashboard's variables, `$__interval` (the
    /// step) and `$__rate_interval` (4 steps, at least 1 minute).
    pub expr: String,
    /// The series' names: `{{label}}` is replaced by the label's value
    /// (default: the labels, as Prometheus prints them). In a table with
    /// `rows_by`, the column's title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legend: Option<String>,
    /// This query's unit, where it differs from the panel's (a table
    /// with `rows_by`: one unit a column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<Unit>,
    /// Values shown as words (`{"1": up, "0": down}`), matched on the
    /// value as a plain number.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub map: BTreeMap<String, String>,
    /// Show this label's value instead of the number (a state set such as
    /// `db_role{role="primary"} == 1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_value: Option<String>,
    /// Draw the exemplars of the series this query selects (each a point
    /// at its time and value, linking to its trace), as Grafana's
    /// per-query exemplar switch does.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exemplars: bool,
}

/// One panel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Panel {
    /// Shown at the top of the panel.
    pub title: String,
    /// How it draws.
    #[serde(rename = "type")]
    pub viz: Viz,
    /// PromQL queries (every type but `logs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queries: Vec<Query>,
    /// A log query (tantivy syntax; `logs` panels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<String>,
    /// The values' unit.
    #[serde(default)]
    pub unit: Unit,
    /// Colours from values on, ascending.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thresholds: Vec<Threshold>,
    /// Columns of 12 (default 4: three a row).
    #[serde(default = "default_width")]
    pub width: u8,
    /// Where a click on the panel leads (e.g. `logs?q=level:error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// A table: one row for each value of this label, one column for each
    /// query (titled by its `legend`) — e.g. a database's members with
    /// their role, epoch and lag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_by: Option<String>,
}

fn default_width() -> u8 {
    4
}

/// `$name`, `${name}` and the built-ins replaced by `values` (name →
/// value) in `expr`.
pub fn substitute(expr: &str, values: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, len) = if let Some(inner) = after.strip_prefix('{') {
            match inner.find('}') {
                Some(j) => (&inner[..j], j + 2),
                None => ("", 0),
            }
        } else {
            let n = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..n], n)
        };
        match (len > 0).then(|| values(name)).flatten() {
            Some(v) => {
                out.push_str(&v);
                rest = &after[len..];
            }
            None => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The names `$…` refers to in `expr`.
pub fn references(expr: &str) -> BTreeSet<String> {
    let seen = std::cell::RefCell::new(BTreeSet::new());
    substitute(expr, &|n| {
        seen.borrow_mut().insert(n.to_owned());
        Some(String::new())
    });
    seen.into_inner()
}

const BUILTINS: [&str; 2] = ["__interval", "__rate_interval"];

impl Validate for Dashboard {
    fn validate(&self, problems: &mut Vec<String>) {
        if self.title.trim().is_empty() {
            problems.push("title: must not be empty".into());
        }
        let mut names = BTreeSet::new();
        for (i, v) in self.variables.iter().enumerate() {
            let at = format!("variables[{i}]");
            if v.name.is_empty()
                || !v
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                problems.push(format!(
                    "{at}.name: {:?} must be letters, digits and _",
                    v.name
                ));
            }
            if !names.insert(v.name.clone()) {
                problems.push(format!("{at}.name: {:?} is defined twice", v.name));
            }
            if v.label.is_none() == v.values.is_empty() {
                problems.push(format!("{at}: needs either label or values"));
            }
            if let Some(m) = &v.r#match
                && let Err(e) = keel_promql::parse(m)
            {
                problems.push(format!("{at}.match: {e}"));
            }
        }
        if self.rows.is_empty() {
            problems.push("rows: a dashboard needs at least one row".into());
        }
        for (r, row) in self.rows.iter().enumerate() {
            for (p, panel) in row.panels.iter().enumerate() {
                panel.validate_at(&format!("rows[{r}].panels[{p}]"), &names, problems);
            }
        }
    }
}

impl Panel {
    fn validate_at(&self, at: &str, vars: &BTreeSet<String>, problems: &mut Vec<String>) {
        if self.title.trim().is_empty() {
            problems.push(format!("{at}.title: must not be empty"));
        }
        if !(1..=12).contains(&self.width) {
            problems.push(format!(
                "{at}.width: must be 1 to 12 columns, got {}",
                self.width
            ));
        }
        match (self.viz, self.queries.is_empty(), &self.logs) {
            (Viz::Alerts, true, None) => {}
            (Viz::Alerts, _, _) => problems.push(format!("{at}: an alerts panel takes no query")),
            (Viz::Logs, _, None) => {
                problems.push(format!("{at}.logs: a logs panel needs a log query"))
            }
            (Viz::Logs, false, _) => problems.push(format!(
                "{at}.queries: a logs panel takes a log query, not PromQL"
            )),
            (v, true, _) if v != Viz::Logs => {
                problems.push(format!("{at}.queries: needs at least one PromQL query"))
            }
            (v, _, Some(_)) if v != Viz::Logs => {
                problems.push(format!("{at}.logs: only a logs panel takes a log query"))
            }
            _ => {}
        }
        let known = |n: &str| vars.contains(n) || BUILTINS.contains(&n);
        for (q, query) in self.queries.iter().enumerate() {
            for n in references(&query.expr) {
                if !known(&n) {
                    problems.push(format!(
                        "{at}.queries[{q}].expr: ${n} is not a variable of this dashboard"
                    ));
                }
            }
            // Parse with every variable standing in as a plain word, as
            // it will be once chosen.
            let probe = substitute(&query.expr, &|n| {
                Some(match n {
                    "__interval" | "__rate_interval" => "1m".into(),
                    _ => "x".into(),
                })
            });
            if let Err(e) = keel_promql::parse(&probe) {
                problems.push(format!("{at}.queries[{q}].expr: {e}"));
            }
        }
        if let Some(label) = &self.rows_by {
            if self.viz != Viz::Table {
                problems.push(format!("{at}.rows_by: only a table takes rows_by"));
            }
            if !keel_core::names::is_label_name(label) {
                problems.push(format!("{at}.rows_by: {label:?} is not a label name"));
            }
            for (q, query) in self.queries.iter().enumerate() {
                if query.legend.as_deref().is_none_or(|l| l.trim().is_empty()) {
                    problems.push(format!(
                        "{at}.queries[{q}].legend: a table with rows_by titles each column by its query's legend"
                    ));
                }
            }
        }
        let mut last = f64::NEG_INFINITY;
        for (t, th) in self.thresholds.iter().enumerate() {
            if !th.value.is_finite() || th.value < last {
                problems.push(format!(
                    "{at}.thresholds[{t}].value: must be a number, ascending"
                ));
            }
            last = th.value;
            if !valid_colour(&th.color) {
                problems.push(format!(
                    "{at}.thresholds[{t}].color: {:?} is not a colour name or #rrggbb",
                    th.color
                ));
            }
        }
    }
}

/// The colours thresholds may name.
pub const COLOURS: [&str; 6] = ["green", "orange", "red", "blue", "yellow", "grey"];

fn valid_colour(c: &str) -> bool {
    COLOURS.contains(&c)
        || (c.len() == 7 && c.starts_with('#') && c[1..].chars().all(|x| x.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_substituted_in_both_spellings() {
        let v = |n: &str| (n == "service").then(|| "shop-web".to_owned());
        assert_eq!(
            substitute(r#"up{service="$service", x="${service}"} $other"#, &v),
            r#"up{service="shop-web", x="shop-web"} $other"#
        );
        assert_eq!(
            references("rate(x[$__rate_interval]) + $a + ${b}"),
            ["__rate_interval", "a", "b"]
                .into_iter()
                .map(String::from)
                .collect()
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let d: Dashboard = keel_core::config::parse_yaml(
            "d.yaml",
            r#"
title: ""
rows:
  - title: r
    panels:
      - {title: a, type: timeseries, queries: [{expr: "rate(x[5m]"}]}
      - {title: b, type: logs}
      - {title: c, type: stat, queries: [{expr: "up{s=\"$nope\"}"}], width: 13,
         thresholds: [{value: 2, color: red}, {value: 1, color: mauve}]}
      - {title: d, type: stat, rows_by: instance, queries: [{expr: up}]}
      - {title: e, type: table, rows_by: "not a label", queries: [{expr: up, legend: up}]}
"#,
        )
        .expect("parses");
        let mut p = Vec::new();
        d.validate(&mut p);
        let joined = p.join("\n");
        for want in [
            "title: must not be empty",
            "rows[0].panels[0].queries[0].expr:",
            "rows[0].panels[1].logs: a logs panel needs a log query",
            "rows[0].panels[2].queries[0].expr: $nope is not a variable",
            "rows[0].panels[2].width: must be 1 to 12",
            "rows[0].panels[2].thresholds[1].value: must be a number, ascending",
            "rows[0].panels[2].thresholds[1].color: \"mauve\"",
            "rows[0].panels[3].rows_by: only a table takes rows_by",
            "rows[0].panels[3].queries[0].legend: a table with rows_by titles each column",
            "rows[0].panels[4].rows_by: \"not a label\" is not a label name",
        ] {
            assert!(joined.contains(want), "missing {want:?} in:\n{joined}");
        }
    }
}
