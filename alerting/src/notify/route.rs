//! Who hears about an alert, and when, by severity — decided at each
//! evaluation from the alerts' states and what was already sent, on the
//! injected clock:
//!
//! - P0 pages at once, day and night, and again every
//!   `p0_repeat_interval` while it fires;
//! - P1 pages only inside business hours (days, hours, time zone,
//!   holidays); one that fires outside them pages when they begin, if it
//!   is still firing (as PagerDuty's support hours do); it repeats every
//!   `p1_repeat_interval` inside them;
//! - P2 opens a ticket and never pages; resolution closes it.
//!
//! Pages are per group, as Alertmanager's notifications are: alerts of
//! one severity with the same values of the `group_by` labels go out
//! together — the first time `group_wait` after the group's first alert,
//! then at most every `group_interval` when alerts join or resolve, and
//! every `repeat_interval` while nothing changes but something fires
//! unacknowledged. A page that was sent is followed by a resolved notice
//! when its alerts resolve. Pending alerts are nobody's business yet.
//! Tickets are one per alert.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::rules::{Severity, State};

/// When P1 alerts may page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusinessHours {
    /// IANA time zone (`Europe/Berlin`), daylight saving included.
    pub timezone: String,
    /// Days open: `mon` … `sun`.
    pub days: Vec<String>,
    /// Opening time, `HH:MM`, local.
    pub start: String,
    /// Closing time, `HH:MM`, local (exclusive).
    pub end: String,
    /// Dates closed, `YYYY-MM-DD`, local.
    pub holidays: Vec<String>,
}

impl Default for BusinessHours {
    fn default() -> Self {
        Self {
            timezone: "UTC".into(),
            days: ["mon", "tue", "wed", "thu", "fri"]
                .map(str::to_owned)
                .to_vec(),
            start: "09:00".into(),
            end: "17:00".into(),
            holidays: Vec::new(),
        }
    }
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Business hours, checked once: the zone resolved, times parsed.
#[derive(Debug, Clone)]
pub struct Hours {
    zone: jiff::tz::TimeZone,
    days: [bool; 7],
    start: jiff::civil::Time,
    end: jiff::civil::Time,
    holidays: Vec<jiff::civil::Date>,
}

impl BusinessHours {
    /// Check every field; each problem names `collector.notify.business_hours.<field>`.
    pub fn compile(&self) -> Result<Hours, Vec<String>> {
        let at = "collector.notify.business_hours";
        let mut problems = Vec::new();
        let zone = jiff::tz::TimeZone::get(&self.timezone).unwrap_or_else(|e| {
            problems.push(format!("{at}.timezone: {:?}: {e}", self.timezone));
            jiff::tz::TimeZone::UTC
        });
        let mut days = [false; 7];
        for d in &self.days {
            match DAYS.iter().position(|x| x.eq_ignore_ascii_case(d.trim())) {
                Some(i) => days[i] = true,
                None => problems.push(format!(
                    "{at}.days: {d:?} is not one of {}",
                    DAYS.join(", ")
                )),
            }
        }
        let mut time = |s: &str, what: &str| {
            s.parse::<jiff::civil::Time>().unwrap_or_else(|e| {
                problems.push(format!("{at}.{what}: {s:?} is not HH:MM: {e}"));
                jiff::civil::Time::midnight()
            })
        };
        let start = time(&self.start, "start");
        let end = time(&self.end, "end");
        if end <= start {
            problems.push(format!("{at}.end: must be after start"));
        }
        let mut holidays = Vec::new();
        for (i, h) in self.holidays.iter().enumerate() {
            match h.parse::<jiff::civil::Date>() {
                Ok(d) => holidays.push(d),
                Err(e) => {
                    problems.push(format!("{at}.holidays[{i}]: {h:?} is not YYYY-MM-DD: {e}"))
                }
            }
        }
        if problems.is_empty() {
            Ok(Hours {
                zone,
                days,
                start,
                end,
                holidays,
            })
        } else {
            Err(problems)
        }
    }
}

impl Hours {
    /// Whether `ms` (since the epoch) falls in business hours.
    pub fn is_open(&self, ms: i64) -> bool {
        let Ok(ts) = jiff::Timestamp::from_millisecond(ms) else {
            return false;
        };
        let local = ts.to_zoned(self.zone.clone());
        let day = local.weekday().to_monday_zero_offset() as usize;
        let time = local.time();
        self.days[day]
            && !self.holidays.contains(&local.date())
            && time >= self.start
            && time < self.end
    }
}

/// What kind of message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// It fires (first time, or a repeat).
    Firing,
    /// It resolved.
    Resolved,
}

/// An alert as routing sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertView {
    /// Labels, `alertname` and `severity` included.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// Its state.
    pub state: State,
    /// Its severity.
    pub severity: Severity,
    /// Its last value (JSON has no NaN or ±Inf: written as null, read
    /// back as NaN).
    #[serde(deserialize_with = "nan_if_null")]
    pub value: f64,
    /// When it began firing (ms).
    pub fired_at_ms: Option<i64>,
    /// When it resolved (ms).
    pub resolved_at_ms: Option<i64>,
}

fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

impl From<&crate::rules::Alert> for AlertView {
    fn from(a: &crate::rules::Alert) -> Self {
        Self {
            labels: a.labels.clone(),
            annotations: a.annotations.clone(),
            state: a.state,
            severity: a.severity,
            value: a.value,
            fired_at_ms: a.fired_at_ms,
            resolved_at_ms: a.resolved_at_ms,
        }
    }
}

/// A page to send: one group's alerts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page {
    /// Firing (something in it fires) or resolved (all of it resolved).
    pub kind: Kind,
    /// The group's severity.
    pub severity: Severity,
    /// The group's labels: the alerts' values of `group_by`.
    pub group: BTreeMap<String, String>,
    /// Its alerts: the firing ones, then the ones resolved since the
    /// last page (each with its own state).
    pub alerts: Vec<AlertView>,
    /// When it was decided (ms).
    pub at_ms: i64,
    /// Why now: `fired`, `repeat`, `business hours began`, `resolved`.
    pub reason: String,
}

impl Page {
    /// The alert names in it, sorted, without repeats.
    pub fn alertnames(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .alerts
            .iter()
            .filter_map(|a| a.labels.get("alertname").map(String::as_str))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Its group's key, as Alertmanager writes one: `{}:{a="x",b="y"}`.
    pub fn group_key(&self) -> String {
        group_key(&self.group)
    }
}

fn group_key(group: &BTreeMap<String, String>) -> String {
    let inner: Vec<String> = group.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{}}:{{{}}}", inner.join(","))
}

/// A P2 ticket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ticket {
    /// Its number.
    pub id: u64,
    /// The alert's labels.
    pub labels: BTreeMap<String, String>,
    /// Its annotations when opened.
    pub annotations: BTreeMap<String, String>,
    /// When opened (ms).
    pub opened_at_ms: i64,
    /// When the alert resolved (ms); none: open.
    pub closed_at_ms: Option<i64>,
}

/// What was sent for one alert (saved in the state store).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sent {
    last_firing_ms: Option<i64>,
    resolved_sent: bool,
    ticket: Option<usize>,
    /// Acknowledged: no more repeats this episode.
    acked: bool,
    /// When the episode this record is about began firing.
    fired_at_ms: Option<i64>,
}

/// What was sent for one group (saved in the state store).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupSent {
    /// When it first had something to send (group_wait counts from it).
    pub first_seen_ms: Option<i64>,
    /// When it was last paged.
    pub last_page_ms: Option<i64>,
}

/// A severity's grouping timings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// From a group's first alert to its first page.
    pub group_wait: Duration,
    /// Least time between pages of a group when it changes.
    pub group_interval: Duration,
    /// Pages again this often while it fires unchanged.
    pub repeat_interval: Duration,
}

/// Routing timings.
#[derive(Debug, Clone)]
pub struct Policy {
    /// P0's timings.
    pub p0: Timing,
    /// P1's timings (only inside business hours).
    pub p1: Timing,
    /// When P1 may page.
    pub hours: Hours,
    /// Labels that group alerts (`...`: every alert alone).
    pub group_by: Vec<String>,
}

impl Policy {
    /// The group labels of an alert with `labels`.
    fn group_of(&self, labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        if self.group_by.iter().any(|g| g == "...") {
            return labels.clone();
        }
        self.group_by
            .iter()
            .filter_map(|k| labels.get(k).map(|v| (k.clone(), v.clone())))
            .collect()
    }
}

/// The routing state: what was sent for which alert, the tickets, the
/// silences and the inhibition rules.
#[derive(Debug)]
pub struct Router {
    policy: Policy,
    /// Per alert (by its labels): what was sent.
    pub sent: BTreeMap<Vec<(String, String)>, Sent>,
    /// Per group (severity and group labels): what was sent.
    pub groups: BTreeMap<String, GroupSent>,
    /// Every ticket opened, oldest first.
    pub tickets: Vec<Ticket>,
    /// Every silence made, expired ones included.
    pub silences: Vec<super::silence::Silence>,
    inhibit: Vec<super::silence::Inhibit>,
}

impl Router {
    /// The firing alert (of `firing`, labels with `severity` as P0–P2)
    /// whose inhibition mutes `target`, if one does.
    pub fn inhibited_by<'a>(
        &self,
        target: &BTreeMap<String, String>,
        sources: &[super::silence::Sources<'a>],
    ) -> Option<&'a BTreeMap<String, String>> {
        self.inhibit
            .iter()
            .zip(sources)
            .find_map(|(i, s)| i.muted_among(target, s))
    }

    /// Each inhibition rule's sources among `firing`, for
    /// [`Self::inhibited_by`] (built once for all targets).
    pub fn inhibitions<'a>(
        &self,
        firing: &[&'a BTreeMap<String, String>],
    ) -> Vec<super::silence::Sources<'a>> {
        self.inhibit
            .iter()
            .map(|i| i.sources(firing.iter().copied()))
            .collect()
    }

    /// A router with nothing sent.
    pub fn new(policy: Policy, inhibit: Vec<super::silence::Inhibit>) -> Self {
        Self {
            policy,
            sent: BTreeMap::new(),
            groups: BTreeMap::new(),
            tickets: Vec::new(),
            silences: Vec::new(),
            inhibit,
        }
    }

    /// Stop the repeats of every firing alert all `matchers` match, until
    /// it resolves; how many were acknowledged.
    pub fn ack(&mut self, matchers: &[super::silence::Matcher]) -> usize {
        let mut n = 0;
        for (key, s) in &mut self.sent {
            let labels: BTreeMap<String, String> = key.iter().cloned().collect();
            if s.last_firing_ms.is_some()
                && !s.resolved_sent
                && matchers.iter().all(|m| m.matches(&labels))
            {
                s.acked = true;
                n += 1;
            }
        }
        n
    }

    /// The pages due at `now_ms` for `alerts` (every alert the rules
    /// hold now); alerts no longer held are forgotten.
    pub fn decide(&mut self, now_ms: i64, alerts: &[AlertView]) -> Vec<Page> {
        let mut live = std::collections::HashSet::new();
        // Matchers see `severity` as Keel's P0–P2, whatever the rule's
        // own label says (`critical` in a Prometheus file).
        let matched: Vec<BTreeMap<String, String>> = alerts
            .iter()
            .map(|a| {
                let mut l = a.labels.clone();
                l.insert("severity".into(), a.severity.as_str().into());
                l
            })
            .collect();
        let firing: Vec<&BTreeMap<String, String>> = alerts
            .iter()
            .zip(&matched)
            .filter(|(a, _)| a.state == State::Firing)
            .map(|(_, l)| l)
            .collect();
        let sources = self.inhibitions(&firing);
        // Per group: its severity, labels, and the alerts to tell of.
        let mut buckets: BTreeMap<String, Bucket> = BTreeMap::new();
        for (a, labels) in alerts.iter().zip(&matched) {
            let key: Vec<(String, String)> = a.labels.clone().into_iter().collect();
            live.insert(key.clone());
            let muted = self.silences.iter().any(|s| s.mutes(now_ms, labels))
                || self.inhibited_by(labels, &sources).is_some();
            let s = self.sent.entry(key.clone()).or_default();
            if a.state == State::Pending {
                // A new episode: what was sent for the last one is done.
                *s = Sent::default();
                continue;
            }
            // Firing again after a resolution (with `for: 0` it is never
            // seen pending): a new episode.
            if a.state == State::Firing && s.fired_at_ms != a.fired_at_ms {
                *s = Sent {
                    fired_at_ms: a.fired_at_ms,
                    ..Sent::default()
                };
            }
            if muted {
                continue;
            }
            let tell = match (a.state, a.severity) {
                (State::Pending, _) => false,
                (State::Firing, Severity::P2) => {
                    if s.ticket.is_none() {
                        s.ticket = Some(self.tickets.len());
                        self.tickets.push(Ticket {
                            id: self.tickets.len() as u64 + 1,
                            labels: a.labels.clone(),
                            annotations: a.annotations.clone(),
                            opened_at_ms: now_ms,
                            closed_at_ms: None,
                        });
                    }
                    false
                }
                (State::Firing, _) => true,
                (State::Resolved, _) => {
                    if let Some(i) = s.ticket.take() {
                        self.tickets[i].closed_at_ms = Some(now_ms);
                    }
                    s.last_firing_ms.is_some() && !s.resolved_sent
                }
            };
            if tell {
                let group = self.policy.group_of(&a.labels);
                let gk = format!("{}{}", a.severity.as_str(), group_key(&group));
                let b = buckets.entry(gk).or_insert_with(|| Bucket {
                    severity: a.severity,
                    group,
                    alerts: Vec::new(),
                });
                b.alerts.push((key, a));
            }
        }
        let mut pages = Vec::new();
        for (gk, b) in &buckets {
            if let Some(p) = self.flush(now_ms, gk, b) {
                pages.push(p);
            }
        }
        self.sent.retain(|k, _| live.contains(k));
        self.groups.retain(|k, _| buckets.contains_key(k));
        pages
    }

    /// The page group `gk` owes at `now_ms`, if any, marking it sent.
    fn flush(&mut self, now_ms: i64, gk: &str, b: &Bucket<'_>) -> Option<Page> {
        let timing = match b.severity {
            Severity::P0 => self.policy.p0,
            _ => self.policy.p1,
        };
        let ms = |d: Duration| d.as_millis() as i64;
        let (firing, resolved): (Vec<_>, Vec<_>) =
            b.alerts.iter().partition(|(_, a)| a.state == State::Firing);
        let sent = |k: &Vec<(String, String)>| self.sent.get(k).cloned().unwrap_or_default();
        let new = firing.iter().any(|(k, _)| sent(k).last_firing_ms.is_none());
        let unacked = firing.iter().any(|(k, _)| !sent(k).acked);
        let open = b.severity == Severity::P0 || self.policy.hours.is_open(now_ms);
        let g = self.groups.entry(gk.to_owned()).or_default();
        let first_seen = *g.first_seen_ms.get_or_insert(now_ms);
        if !open && !firing.is_empty() {
            return None;
        }
        let reason = match g.last_page_ms {
            None if now_ms - first_seen >= ms(timing.group_wait) => {
                let hours = &self.policy.hours;
                let waited = b.severity == Severity::P1
                    && firing
                        .iter()
                        .any(|(_, a)| a.fired_at_ms.is_some_and(|f| !hours.is_open(f)));
                if waited {
                    "business hours began"
                } else if firing.is_empty() {
                    "resolved"
                } else {
                    "fired"
                }
            }
            None => return None,
            Some(last) if new || !resolved.is_empty() => {
                if now_ms - last < ms(timing.group_interval) {
                    return None;
                }
                if new { "fired" } else { "resolved" }
            }
            Some(last) => {
                if firing.is_empty() || !unacked || now_ms - last < ms(timing.repeat_interval) {
                    return None;
                }
                "repeat"
            }
        };
        g.last_page_ms = Some(now_ms);
        for (k, a) in &b.alerts {
            if let Some(s) = self.sent.get_mut(k) {
                if a.state == State::Firing {
                    s.last_firing_ms = Some(now_ms);
                    s.resolved_sent = false;
                } else {
                    s.resolved_sent = true;
                }
            }
        }
        Some(Page {
            kind: if firing.is_empty() {
                Kind::Resolved
            } else {
                Kind::Firing
            },
            severity: b.severity,
            group: b.group.clone(),
            alerts: firing
                .iter()
                .chain(&resolved)
                .map(|(_, a)| (*a).clone())
                .collect(),
            at_ms: now_ms,
            reason: reason.into(),
        })
    }
}

/// One group's alerts to tell of at one decision.
struct Bucket<'a> {
    severity: Severity,
    group: BTreeMap<String, String>,
    alerts: Vec<(Vec<(String, String)>, &'a AlertView)>,
}

#[cfg(test)]
mod tests;
