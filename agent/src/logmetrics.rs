//! Log-to-metrics rules: RED series from access logs, without
//! instrumenting the app.
//!
//! A rule on a tailed source reads each record's status and duration —
//! from a JSON line's fields, or from a regex's named groups on the raw
//! line — and keeps, per label set (`job`, `instance`, the rule's label
//! fields):
//!
//! - `<name>_requests_total{code}`: every request, by status code;
//! - `<name>_errors_total`: those with a status at or above the rule's
//!   `error_status` (500 by default), present at 0 so an error-ratio
//!   alert has a denominator and a numerator from the first request;
//! - `<name>_request_duration_seconds_bucket{le}` / `_sum` / `_count`:
//!   a histogram of the duration, when the rule names a duration field.
//!
//! Values are cumulative since the agent started (a restart is a counter
//! reset, which `rate()` handles) and are emitted every `interval`, as a
//! scrape of the agent would be. A record the rule cannot read (no match,
//! no status, a status or duration that is not a number) is counted as
//! unmatched and the first few are logged.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use regex::Regex;

use crate::config::{DurationUnit, LogMetricsRule};
use crate::scrape::Point;

/// Sorted label pairs without `__name__`.
type LabelSet = Vec<(String, String)>;

#[derive(Debug, Default)]
struct Histogram {
    /// Count per bucket (not cumulative), one more than the bounds (+Inf).
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Debug, Default)]
struct Series {
    requests: BTreeMap<u16, u64>,
    errors: u64,
    duration: Histogram,
}

/// One rule's counters.
#[derive(Debug)]
pub struct RuleState {
    rule: LogMetricsRule,
    source: Fields,
    filter: Option<Regex>,
    series: BTreeMap<LabelSet, Series>,
    next_emit_ms: i64,
    /// Records the rule could not read.
    pub unmatched: u64,
}

/// Where a rule reads its fields.
#[derive(Debug)]
enum Fields {
    /// A JSON line's fields (the record's attributes).
    Json,
    /// A regex's named groups on the raw line.
    Regex(Regex),
    /// A regex that does not compile (config validation reports it):
    /// nothing is read.
    Invalid,
}

/// What one record gave a rule.
#[derive(Debug, PartialEq)]
struct Reading {
    status: u16,
    duration_s: Option<f64>,
    labels: Vec<String>,
}

impl RuleState {
    /// A rule's empty state; its regex was checked by config validation
    /// (an invalid one here reads nothing and counts every line unmatched).
    pub fn new(rule: LogMetricsRule) -> Self {
        let source = match rule.regex.as_deref().map(Regex::new) {
            None => Fields::Json,
            Some(Ok(re)) => Fields::Regex(re),
            Some(Err(_)) => Fields::Invalid,
        };
        Self {
            source,
            filter: rule.filter.as_deref().and_then(|f| Regex::new(f).ok()),
            rule,
            series: BTreeMap::new(),
            next_emit_ms: i64::MIN,
            unmatched: 0,
        }
    }

    /// The rule's name (its series' prefix).
    pub fn name(&self) -> &str {
        &self.rule.name
    }

    /// Count one record (`text` is its raw line, `record` what it became)
    /// for `job` on `instance`; false when the rule could not read it (a
    /// line its filter skips is not counted and not an error).
    pub fn observe(&mut self, text: &str, record: &LogRecord, job: &str, instance: &str) -> bool {
        if self.filter.as_ref().is_some_and(|f| !f.is_match(text)) {
            return true;
        }
        let Some(r) = self.read(text, record) else {
            self.unmatched += 1;
            return false;
        };
        let mut key: LabelSet = vec![("job".to_owned(), job.to_owned())];
        key.extend(self.rule.labels.iter().cloned().zip(r.labels));
        if !self.rule.labels.iter().any(|l| l == "instance") {
            key.push(("instance".to_owned(), instance.to_owned()));
        }
        key.sort();
        let bounds = self.rule.buckets.len();
        let s = self.series.entry(key).or_default();
        *s.requests.entry(r.status).or_default() += 1;
        if r.status >= self.rule.error_status {
            s.errors += 1;
        }
        if let Some(d) = r.duration_s {
            let h = &mut s.duration;
            h.counts.resize(bounds + 1, 0);
            let i = self.rule.buckets.partition_point(|b| *b < d);
            h.counts[i] += 1;
            h.sum += d;
            h.count += 1;
        }
        true
    }

    fn read(&self, text: &str, record: &LogRecord) -> Option<Reading> {
        let rule = &self.rule;
        let names = std::iter::once(&rule.status_field)
            .chain(&rule.duration_field)
            .chain(&rule.labels);
        let fields: Vec<Option<String>> = match &self.source {
            Fields::Regex(re) => {
                let caps = re.captures(text)?;
                names
                    .map(|n| caps.name(n).map(|m| m.as_str().to_owned()))
                    .collect()
            }
            Fields::Json => names.map(|n| attribute(record, n)).collect(),
            Fields::Invalid => return None,
        };
        let mut fields = fields.into_iter();
        let status = fields.next().flatten()?.trim().parse::<u16>().ok()?;
        let duration_s = match &rule.duration_field {
            Some(_) => {
                let raw = fields.next().flatten()?.trim().parse::<f64>().ok()?;
                let s = raw * rule.duration_unit.seconds();
                Some((s.is_finite() && s >= 0.0).then_some(s)?)
            }
            None => None,
        };
        let labels = fields.map(Option::unwrap_or_default).collect();
        Some(Reading {
            status,
            duration_s,
            labels,
        })
    }

    /// The rule's series at `now_ms`, if its interval has come round
    /// (always on the first call, so series appear at once).
    pub fn due(&mut self, now_ms: i64) -> Option<Vec<Point>> {
        if now_ms < self.next_emit_ms {
            return None;
        }
        let every = i64::try_from(self.rule.interval.as_millis()).unwrap_or(i64::MAX);
        self.next_emit_ms = now_ms.saturating_add(every.max(1));
        Some(self.points(now_ms))
    }

    /// Every series' current value as points at `t_ms`.
    fn points(&self, t_ms: i64) -> Vec<Point> {
        let name = &self.rule.name;
        let mut out = Vec::new();
        let point =
            |metric: String, labels: &LabelSet, extra: Option<(&str, String)>, value: f64| {
                let mut l: Vec<(String, String)> = labels.clone();
                l.push(("__name__".to_owned(), metric));
                if let Some((k, v)) = extra {
                    l.push((k.to_owned(), v));
                }
                l.sort();
                Point {
                    labels: l,
                    t_ms,
                    value,
                    exemplar: None,
                    histogram: None,
                }
            };
        for (labels, s) in &self.series {
            for (code, n) in &s.requests {
                out.push(point(
                    format!("{name}_requests_total"),
                    labels,
                    Some(("code", code.to_string())),
                    *n as f64,
                ));
            }
            out.push(point(
                format!("{name}_errors_total"),
                labels,
                None,
                s.errors as f64,
            ));
            if self.rule.duration_field.is_some() {
                let h = &s.duration;
                let metric = format!("{name}_request_duration_seconds");
                let mut cumulative = 0;
                for (i, bound) in self.rule.buckets.iter().map(Some).chain([None]).enumerate() {
                    cumulative += h.counts.get(i).copied().unwrap_or(0);
                    let le = bound.map_or_else(|| "+Inf".to_owned(), |b| format_bound(*b));
                    out.push(point(
                        format!("{metric}_bucket"),
                        labels,
                        Some(("le", le)),
                        cumulative as f64,
                    ));
                }
                out.push(point(format!("{metric}_sum"), labels, None, h.sum));
                out.push(point(
                    format!("{metric}_count"),
                    labels,
                    None,
                    h.count as f64,
                ));
            }
        }
        out
    }
}

/// A bucket bound as Prometheus writes `le` (`0.005`, `1`, `2.5`).
fn format_bound(b: f64) -> String {
    if b.fract() == 0.0 && b.abs() < 1e15 {
        format!("{b:.0}")
    } else {
        b.to_string()
    }
}

/// A record attribute as text: the key itself, else a dotted path into
/// nested objects (`http.status` in `{"http":{"status":500}}`).
fn attribute(record: &LogRecord, name: &str) -> Option<String> {
    if let Some(v) = record.attributes.iter().find(|a| a.key == name) {
        return v.value.as_ref().and_then(text);
    }
    let mut parts = name.split('.');
    let first = parts.next()?;
    let mut value = record
        .attributes
        .iter()
        .find(|a| a.key == first)?
        .value
        .as_ref()?;
    for part in parts {
        let Some(any_value::Value::KvlistValue(list)) = &value.value else {
            return None;
        };
        value = list.values.iter().find(|a| a.key == part)?.value.as_ref()?;
    }
    text(value)
}

fn text(v: &AnyValue) -> Option<String> {
    match v.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::DoubleValue(d) => Some(d.to_string()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        _ => None,
    }
}

impl DurationUnit {
    /// Seconds in one of this unit.
    pub fn seconds(self) -> f64 {
        match self {
            DurationUnit::S => 1.0,
            DurationUnit::Ms => 1e-3,
            DurationUnit::Us => 1e-6,
            DurationUnit::Ns => 1e-9,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rule(regex: Option<&str>) -> LogMetricsRule {
        LogMetricsRule {
            name: "shop_access".into(),
            regex: regex.map(str::to_owned),
            filter: None,
            status_field: "status".into(),
            duration_field: Some("duration".into()),
            duration_unit: DurationUnit::Ms,
            error_status: 500,
            labels: vec!["method".into()],
            buckets: vec![0.01, 0.1, 1.0],
            interval: Duration::from_secs(10),
        }
    }

    fn value(points: &[Point], name: &str, extra: &[(&str, &str)]) -> Option<f64> {
        points
            .iter()
            .find(|p| {
                p.labels.iter().any(|(k, v)| k == "__name__" && v == name)
                    && extra
                        .iter()
                        .all(|(k, v)| p.labels.iter().any(|(a, b)| a == k && b == v))
            })
            .map(|p| p.value)
    }

    #[test]
    fn json_access_lines_become_requests_errors_and_a_histogram() {
        let mut s = RuleState::new(rule(None));
        for (line, ok) in [
            (
                r#"{"msg":"req","status":200,"duration":5,"method":"GET"}"#,
                true,
            ),
            (
                r#"{"msg":"req","status":"503","duration":50.5,"method":"GET"}"#,
                true,
            ),
            (
                r#"{"msg":"req","status":200,"duration":2000,"method":"POST"}"#,
                true,
            ),
            (
                r#"{"msg":"req","status":"abc","duration":1,"method":"GET"}"#,
                false,
            ),
            (r#"{"msg":"req","duration":1}"#, false),
            ("plain text", false),
        ] {
            let r = crate::logline::record(line, 1, line.starts_with('{'));
            assert_eq!(s.observe(line, &r, "shop", "h1"), ok, "{line}");
        }
        assert_eq!(s.unmatched, 3);
        let p = s.due(1_000).expect("first emission is immediate");
        assert!(s.due(5_000).is_none(), "not again within the interval");
        let get = |n, l: &[(&str, &str)]| value(&p, n, l);
        assert_eq!(
            get(
                "shop_access_requests_total",
                &[("code", "200"), ("method", "GET")]
            ),
            Some(1.0)
        );
        assert_eq!(
            get("shop_access_requests_total", &[("code", "503")]),
            Some(1.0)
        );
        assert_eq!(
            get("shop_access_errors_total", &[("method", "GET")]),
            Some(1.0)
        );
        assert_eq!(
            get("shop_access_errors_total", &[("method", "POST")]),
            Some(0.0)
        );
        let b = "shop_access_request_duration_seconds_bucket";
        assert_eq!(get(b, &[("method", "GET"), ("le", "0.01")]), Some(1.0));
        assert_eq!(get(b, &[("method", "GET"), ("le", "0.1")]), Some(2.0));
        assert_eq!(get(b, &[("method", "POST"), ("le", "1")]), Some(0.0));
        assert_eq!(get(b, &[("method", "POST"), ("le", "+Inf")]), Some(1.0));
        let sum = get(
            "shop_access_request_duration_seconds_sum",
            &[("method", "GET")],
        )
        .expect("sum");
        assert!((sum - 0.0555).abs() < 1e-9, "{sum}");
        assert_eq!(
            get(
                "shop_access_request_duration_seconds_count",
                &[("job", "shop"), ("instance", "h1"), ("method", "GET")]
            ),
            Some(2.0)
        );
        assert!(p.iter().all(|pt| pt.t_ms == 1_000));
        assert_eq!(s.due(11_000).map(|p| p.len()), Some(p.len()));
    }

    #[test]
    fn a_regex_reads_combined_log_format_lines() {
        let re = r#"^\S+ \S+ \S+ \[[^\]]+\] "(?P<method>[A-Z]+) [^"]*" (?P<status>\d{3}) \S+ (?P<duration>[0-9.]+)$"#;
        let mut r = rule(Some(re));
        r.labels = vec!["method".into(), "missing".into()];
        let mut s = RuleState::new(r);
        let none = LogRecord::default();
        let line = r#"10.0.0.1 - - [01/Dec/2026:10:00:00 +0000] "GET /a HTTP/1.1" 404 12 0.3"#;
        assert!(s.observe(line, &none, "nginx", "h"));
        assert!(!s.observe("garbage", &none, "nginx", "h"));
        let p = s.due(0).expect("points");
        assert_eq!(
            value(
                &p,
                "shop_access_requests_total",
                &[("code", "404"), ("method", "GET"), ("missing", "")]
            ),
            Some(1.0),
            "an optional group that did not take part is an empty label"
        );
        assert_eq!(
            value(
                &p,
                "shop_access_request_duration_seconds_bucket",
                &[("le", "0.01")]
            ),
            Some(1.0),
            "0.3 ms"
        );
    }

    #[test]
    fn a_filter_skips_other_lines_and_instance_may_come_from_a_field() {
        let mut r = rule(None);
        r.filter = Some(r#""target":"access""#.into());
        r.labels = vec!["instance".into()];
        let mut s = RuleState::new(r);
        for line in [
            r#"{"target":"access","status":200,"duration":1,"instance":"web-1"}"#,
            r#"{"target":"app","message":"backend healthy"}"#,
        ] {
            assert!(s.observe(
                line,
                &crate::logline::record(line, 1, true),
                "shop-web",
                "host"
            ));
        }
        assert_eq!(s.unmatched, 0, "the filtered-out line is not unmatched");
        let p = s.due(0).expect("points");
        assert_eq!(
            value(&p, "shop_access_requests_total", &[("instance", "web-1")]),
            Some(1.0)
        );
        assert!(
            p.iter()
                .all(|pt| !pt.labels.iter().any(|(_, v)| v == "host"))
        );
    }

    #[test]
    fn nested_fields_are_read_by_dotted_path() {
        let mut r = rule(None);
        r.status_field = "http.status".into();
        r.duration_field = None;
        r.labels = vec![];
        let mut s = RuleState::new(r);
        let line = r#"{"http":{"status":502}}"#;
        assert!(s.observe(line, &crate::logline::record(line, 1, true), "j", "i"));
        let p = s.due(0).expect("points");
        assert_eq!(value(&p, "shop_access_errors_total", &[]), Some(1.0));
        assert!(
            value(&p, "shop_access_request_duration_seconds_count", &[]).is_none(),
            "no duration field, no histogram"
        );
    }
}
