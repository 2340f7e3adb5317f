//! Alerts other evaluators send to Keel as to an Alertmanager
//! (`POST /api/v2/alerts`: Prometheus, vmalert, `amtool alert add`),
//! held as Alertmanager holds them: an alert is active until its
//! `endsAt`, which the sender moves on with every resend (Prometheus
//! every minute, 4 resend intervals ahead), or `resolve_timeout` after
//! it was last received when it gave none. They are routed with Keel's
//! own alerts: the same grouping, silences, inhibition and receivers.
//! Held in memory: senders resend active alerts, so a restart loses
//! them only until the next resend.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::route::AlertView;
use crate::rules::engine::State;
use crate::rules::file::{Severity, SeverityMapping};

/// Alertmanager's default `resolve_timeout`: an alert sent without
/// `endsAt` resolves this long after it was last received.
pub const RESOLVE_TIMEOUT_MS: i64 = 5 * 60 * 1000;

/// How long a resolved alert is still listed and routed (its resolution
/// paged) before it is forgotten.
const KEEP_RESOLVED_MS: i64 = 15 * 60 * 1000;

/// Most alerts held: a sender cannot grow this without end.
const MOST: usize = 100_000;

/// One alert as a sender posts it (Alertmanager's `PostableAlert`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Posted {
    /// Its identity.
    pub labels: BTreeMap<String, String>,
    /// Its description.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// When it began (RFC 3339; absent: now).
    #[serde(default)]
    pub starts_at: Option<String>,
    /// When it ends (absent: `resolve_timeout` after now).
    #[serde(default)]
    pub ends_at: Option<String>,
    /// Where it came from.
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
}

/// A held alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    /// Its identity.
    pub labels: BTreeMap<String, String>,
    /// Its description.
    pub annotations: BTreeMap<String, String>,
    /// When this episode began (ms).
    pub starts_at_ms: i64,
    /// When it ends or ended (ms).
    pub ends_at_ms: i64,
    /// When it was last received (ms).
    pub updated_at_ms: i64,
    /// Where it came from.
    pub generator_url: String,
    /// Its severity, from its `severity` label.
    pub severity: Severity,
}

impl Held {
    /// Whether it is still active at `now_ms`.
    pub fn active(&self, now_ms: i64) -> bool {
        self.ends_at_ms > now_ms
    }
}

/// Every alert received, by label set.
#[derive(Debug, Default)]
pub struct Received {
    held: Mutex<BTreeMap<BTreeMap<String, String>, Held>>,
    /// The rules' `severity_mapping` (default: Keel's defaults).
    mapping: std::sync::OnceLock<SeverityMapping>,
}

/// Go's zero time (`0001-01-01T00:00:00Z`, in whatever precision), which
/// Alertmanager's clients send for "not set" (ms).
const GO_ZERO_TIME_MS: i64 = -62_135_596_800_000;

fn time(s: &Option<String>, field: &str, i: usize) -> Result<Option<i64>, String> {
    match s.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(t) => match t.parse::<jiff::Timestamp>().map(|t| t.as_millisecond()) {
            Ok(GO_ZERO_TIME_MS) => Ok(None),
            Ok(ms) if ms < 0 => Err(format!("alert {i}: {field}: {t:?} is before 1970")),
            Ok(ms) => Ok(Some(ms)),
            Err(e) => Err(format!(
                "alert {i}: {field}: {t:?} is not an RFC 3339 time: {e}"
            )),
        },
    }
}

impl Received {
    /// Severity of a received alert: its `severity` label as P0–P2 or a
    /// value Keel's rules map (`critical` → P0, `warning` → P1, `info`
    /// → P2); anything else pages in business hours (P1).
    fn severity(&self, labels: &BTreeMap<String, String>) -> Severity {
        let mapping = self.mapping.get_or_init(SeverityMapping::default);
        labels
            .get(&mapping.label)
            .and_then(|v| {
                Severity::parse(v).or_else(|| {
                    mapping
                        .values
                        .get(&v.to_ascii_lowercase())
                        .and_then(|m| Severity::parse(m))
                })
            })
            .unwrap_or(Severity::P1)
    }

    /// Take `alerts` at `now_ms`, as Alertmanager does: each valid one
    /// held (a repeat extends its episode; one after its episode ended
    /// starts a new one), each invalid one named in the errors (the
    /// valid ones are kept either way). How many were taken.
    pub fn post(&self, now_ms: i64, alerts: Vec<Posted>) -> (usize, Vec<String>) {
        let mut errors = Vec::new();
        let mut taken = 0;
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        for (i, a) in alerts.into_iter().enumerate() {
            let (starts, ends) = match (
                time(&a.starts_at, "startsAt", i),
                time(&a.ends_at, "endsAt", i),
            ) {
                (Ok(s), Ok(e)) => (s, e),
                (Err(e), _) | (_, Err(e)) => {
                    errors.push(e);
                    continue;
                }
            };
            let labels: BTreeMap<String, String> = a
                .labels
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .collect();
            if labels.is_empty() {
                errors.push(format!("alert {i}: at least one label pair required"));
                continue;
            }
            if let Some(bad) = labels.keys().find(|k| !keel_core::names::is_label_name(k)) {
                errors.push(format!("alert {i}: invalid label name {bad:?}"));
                continue;
            }
            // Only an end in the past: it began and ended then (as
            // Alertmanager takes it).
            let starts = starts.unwrap_or(match ends {
                Some(e) if e < now_ms => e,
                _ => now_ms,
            });
            let ends = ends.unwrap_or(now_ms.saturating_add(RESOLVE_TIMEOUT_MS));
            if ends < starts {
                errors.push(format!("alert {i}: start time must be before end time"));
                continue;
            }
            if !held.contains_key(&labels) && held.len() >= MOST {
                errors.push(format!("alert {i}: {MOST} alerts are held already"));
                continue;
            }
            let severity = self.severity(&labels);
            let next = Held {
                labels: labels.clone(),
                annotations: a.annotations,
                starts_at_ms: starts,
                ends_at_ms: ends,
                updated_at_ms: now_ms,
                generator_url: a.generator_url,
                severity,
            };
            match held.get_mut(&labels) {
                // The same episode (it had not ended when this began):
                // it began at the earlier start.
                Some(h) if h.ends_at_ms >= starts => {
                    let began = h.starts_at_ms.min(starts);
                    *h = next;
                    h.starts_at_ms = began;
                }
                _ => {
                    held.insert(labels, next);
                }
            }
            taken += 1;
        }
        (taken, errors)
    }

    /// Every alert held at `now_ms` (resolved ones for a while after),
    /// those resolved long ago forgotten.
    pub fn alerts(&self, now_ms: i64) -> Vec<Held> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.retain(|_, h| h.ends_at_ms.saturating_add(KEEP_RESOLVED_MS) > now_ms);
        held.values().cloned().collect()
    }

    /// The held alerts as the router sees alerts.
    pub fn views(&self, now_ms: i64) -> Vec<AlertView> {
        self.alerts(now_ms)
            .into_iter()
            .map(|h| {
                let active = h.active(now_ms);
                AlertView {
                    labels: h.labels,
                    annotations: h.annotations,
                    state: if active {
                        State::Firing
                    } else {
                        State::Resolved
                    },
                    severity: h.severity,
                    value: f64::NAN,
                    fired_at_ms: Some(h.starts_at_ms),
                    resolved_at_ms: (!active).then_some(h.ends_at_ms),
                }
            })
            .collect()
    }

    /// Read severities as the rules do (`collector.rules.severity_mapping`);
    /// only the first call counts.
    pub fn set_mapping(&self, mapping: SeverityMapping) {
        let _ = self.mapping.set(mapping);
    }

    /// Whether any alert is held.
    pub fn any(&self) -> bool {
        !self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn posted(labels: &[(&str, &str)], starts: Option<&str>, ends: Option<&str>) -> Posted {
        Posted {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: BTreeMap::new(),
            starts_at: starts.map(str::to_owned),
            ends_at: ends.map(str::to_owned),
            generator_url: String::new(),
        }
    }

    const T: i64 = 1_800_000_000_000;

    #[test]
    fn an_alert_without_ends_at_resolves_after_the_resolve_timeout_and_resends_extend_it() {
        let r = Received::default();
        let a = || {
            vec![posted(
                &[("alertname", "Down"), ("severity", "critical")],
                None,
                None,
            )]
        };
        assert_eq!(r.post(T, a()), (1, vec![]));
        // Go's zero time is "not set", in any precision.
        let zero = posted(
            &[("alertname", "Z")],
            Some("0001-01-01T00:00:00.000Z"),
            Some("0001-01-01T00:00:00Z"),
        );
        let other = Received::default();
        assert_eq!(other.post(T, vec![zero]), (1, vec![]));
        assert_eq!(other.views(T)[0].fired_at_ms, Some(T));
        assert_eq!(
            other.views(T + RESOLVE_TIMEOUT_MS)[0].state,
            State::Resolved
        );
        let v = r.views(T + 1000);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].state, State::Firing);
        assert_eq!(v[0].severity, Severity::P0, "critical maps to P0");
        assert_eq!(v[0].fired_at_ms, Some(T));
        // A resend a minute on keeps its start and moves its end.
        r.post(T + 60_000, a());
        let v = r.views(T + RESOLVE_TIMEOUT_MS + 1000);
        assert_eq!(v[0].state, State::Firing, "still active: resent");
        assert_eq!(v[0].fired_at_ms, Some(T));
        let v = r.views(T + 60_000 + RESOLVE_TIMEOUT_MS);
        assert_eq!(v[0].state, State::Resolved);
        assert_eq!(v[0].resolved_at_ms, Some(T + 60_000 + RESOLVE_TIMEOUT_MS));
        // Long after, forgotten.
        assert!(
            r.views(T + 60_000 + RESOLVE_TIMEOUT_MS + KEEP_RESOLVED_MS)
                .is_empty()
        );
    }

    #[test]
    fn an_explicit_end_resolves_and_a_later_start_is_a_new_episode() {
        let r = Received::default();
        r.post(
            T,
            vec![posted(
                &[("alertname", "Slow")],
                Some("2027-01-15T08:00:00Z"),
                Some("2027-01-15T08:05:00Z"),
            )],
        );
        let start = "2027-01-15T08:00:00Z"
            .parse::<jiff::Timestamp>()
            .expect("t")
            .as_millisecond();
        let v = r.views(start + 6 * 60_000);
        assert_eq!(v[0].state, State::Resolved);
        assert_eq!(v[0].severity, Severity::P1, "no severity: P1");
        r.post(
            start + 7 * 60_000,
            vec![posted(
                &[("alertname", "Slow")],
                Some("2027-01-15T08:07:00Z"),
                None,
            )],
        );
        let v = r.views(start + 8 * 60_000);
        assert_eq!(v[0].state, State::Firing);
        assert_eq!(v[0].fired_at_ms, Some(start + 7 * 60_000), "a new episode");
    }

    #[test]
    fn invalid_alerts_are_named_and_the_valid_ones_kept() {
        let r = Received::default();
        let (taken, errors) = r.post(
            T,
            vec![
                posted(&[], None, None),
                posted(&[("bad-name", "x")], None, None),
                posted(
                    &[("a", "1")],
                    Some("2027-01-15T08:05:00Z"),
                    Some("2027-01-15T08:00:00Z"),
                ),
                posted(&[("a", "2")], Some("yesterday"), None),
                posted(&[("a", "3")], None, None),
            ],
        );
        assert_eq!(taken, 1);
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(
            errors[0].contains("alert 0") && errors[0].contains("label pair"),
            "{errors:?}"
        );
        assert!(errors[1].contains("bad-name"), "{errors:?}");
        assert!(errors[2].contains("before end"), "{errors:?}");
        assert!(errors[3].contains("startsAt"), "{errors:?}");
        assert_eq!(r.views(T).len(), 1);
        // Before 1970: refused, not held (its time could not be written).
        let (taken, errors) = r.post(
            T,
            vec![posted(&[("a", "4")], Some("1969-12-31T23:59:59Z"), None)],
        );
        assert_eq!(taken, 0);
        assert!(errors[0].contains("before 1970"), "{errors:?}");
    }

    #[test]
    fn an_alert_with_only_a_past_end_began_and_ended_then() {
        let r = Received::default();
        let end = "2027-01-15T08:00:00Z"
            .parse::<jiff::Timestamp>()
            .expect("t")
            .as_millisecond();
        assert_eq!(
            r.post(
                end + 60_000,
                vec![posted(&[("a", "1")], None, Some("2027-01-15T08:00:00Z"))]
            ),
            (1, vec![])
        );
        let v = r.views(end + 60_000);
        assert_eq!(
            (v[0].state, v[0].fired_at_ms, v[0].resolved_at_ms),
            (State::Resolved, Some(end), Some(end))
        );
    }
}
