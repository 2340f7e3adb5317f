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
        // Per group: its severity, labels, and the alerts to tell of.
        let mut buckets: BTreeMap<String, Bucket> = BTreeMap::new();
        for (a, labels) in alerts.iter().zip(&matched) {
            let key: Vec<(String, String)> = a.labels.clone().into_iter().collect();
            live.insert(key.clone());
            let muted = self.silences.iter().any(|s| s.mutes(now_ms, labels))
                || self
                    .inhibit
                    .iter()
                    .any(|i| i.mutes(labels, firing.iter().copied()));
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
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        s.parse::<jiff::Timestamp>()
            .expect("timestamp")
            .as_millisecond()
    }

    fn alert(sev: Severity, state: State, fired: &str) -> AlertView {
        AlertView {
            labels: BTreeMap::from([("alertname".to_owned(), "A".to_owned())]),
            annotations: BTreeMap::new(),
            state,
            severity: sev,
            value: 1.0,
            fired_at_ms: Some(ms(fired)),
            resolved_at_ms: None,
        }
    }

    fn router(tz: &str) -> Router {
        let hours = BusinessHours {
            timezone: tz.into(),
            holidays: vec!["2026-12-25".into()],
            ..BusinessHours::default()
        }
        .compile()
        .expect("valid");
        Router::new(
            Policy {
                p0: Timing {
                    group_wait: Duration::ZERO,
                    group_interval: Duration::from_secs(1),
                    repeat_interval: Duration::from_secs(1800),
                },
                p1: Timing {
                    group_wait: Duration::ZERO,
                    group_interval: Duration::from_secs(1),
                    repeat_interval: Duration::from_secs(4 * 3600),
                },
                hours,
                group_by: vec!["alertname".into(), "job".into()],
            },
            super::super::silence::compile(&super::super::silence::InhibitRule::defaults())
                .expect("valid"),
        )
    }

    #[test]
    fn p0_pages_at_once_at_night_repeats_and_then_resolves() {
        let mut r = router("UTC");
        let t = "2026-12-05T03:00:00Z"; // a Saturday night
        let a = alert(Severity::P0, State::Firing, t);
        let p = r.decide(ms(t), std::slice::from_ref(&a));
        assert_eq!(
            p.iter()
                .map(|p| (p.kind, p.reason.as_str()))
                .collect::<Vec<_>>(),
            vec![(Kind::Firing, "fired")]
        );
        assert!(
            r.decide(ms("2026-12-05T03:29:59Z"), std::slice::from_ref(&a))
                .is_empty(),
            "no repeat before 30m"
        );
        assert_eq!(
            r.decide(ms("2026-12-05T03:30:00Z"), std::slice::from_ref(&a))[0].reason,
            "repeat"
        );
        let done = AlertView {
            state: State::Resolved,
            ..a.clone()
        };
        assert_eq!(
            r.decide(ms("2026-12-05T03:40:00Z"), std::slice::from_ref(&done))[0].kind,
            Kind::Resolved
        );
        assert!(
            r.decide(ms("2026-12-05T03:41:00Z"), &[done]).is_empty(),
            "resolved once"
        );
        // Firing again (for: 0, so never seen pending): a new page at once.
        let again = alert(Severity::P0, State::Firing, "2026-12-05T03:42:00Z");
        let p = r.decide(ms("2026-12-05T03:42:00Z"), &[again]);
        assert_eq!(
            p.iter()
                .map(|p| (p.kind, p.reason.as_str()))
                .collect::<Vec<_>>(),
            vec![(Kind::Firing, "fired")]
        );
    }

    #[test]
    fn p1_waits_over_the_weekend_and_pages_when_business_hours_begin() {
        let mut r = router("UTC");
        let fired = "2026-12-04T18:00:00Z"; // Friday after hours
        let a = alert(Severity::P1, State::Firing, fired);
        for t in [
            "2026-12-04T18:00:00Z",
            "2026-12-05T12:00:00Z",
            "2026-12-06T23:59:00Z",
            "2026-12-07T08:59:59Z",
        ] {
            assert!(
                r.decide(ms(t), std::slice::from_ref(&a)).is_empty(),
                "{t}: closed"
            );
        }
        let p = r.decide(ms("2026-12-07T09:00:00Z"), std::slice::from_ref(&a));
        assert_eq!(
            p.iter().map(|p| p.reason.as_str()).collect::<Vec<_>>(),
            vec!["business hours began"]
        );
        // Resolved before hours begin: never paged, so nothing to resolve.
        let mut r = router("UTC");
        assert!(
            r.decide(ms("2026-12-05T10:00:00Z"), std::slice::from_ref(&a))
                .is_empty()
        );
        let done = AlertView {
            state: State::Resolved,
            ..a
        };
        assert!(r.decide(ms("2026-12-07T09:00:00Z"), &[done]).is_empty());
    }

    #[test]
    fn business_hours_follow_the_time_zone_across_dst_and_holidays() {
        let h = BusinessHours {
            timezone: "Europe/Berlin".into(),
            holidays: vec!["2026-12-25".into()],
            ..BusinessHours::default()
        }
        .compile()
        .expect("valid");
        // Summer (CEST, UTC+2): 09:00 local is 07:00Z.
        assert!(!h.is_open(ms("2026-03-30T06:59:59Z")));
        assert!(
            h.is_open(ms("2026-03-30T07:00:00Z")),
            "Monday after the spring change"
        );
        // Winter (CET, UTC+1): 09:00 local is 08:00Z.
        assert!(
            !h.is_open(ms("2026-10-26T07:00:00Z")),
            "Monday after the autumn change: 08:00 local"
        );
        assert!(h.is_open(ms("2026-10-26T08:00:00Z")));
        assert!(!h.is_open(ms("2026-10-26T16:00:00Z")), "17:00 local closes");
        assert!(!h.is_open(ms("2026-12-25T10:00:00Z")), "a holiday");
        let bad = BusinessHours {
            timezone: "Mars/Olympus".into(),
            days: vec!["funday".into()],
            start: "9am".into(),
            ..BusinessHours::default()
        }
        .compile()
        .unwrap_err();
        assert_eq!(bad.len(), 3, "{bad:?}");
    }

    #[test]
    fn silences_inhibition_and_acks_mute_what_they_match_and_no_more() {
        use super::super::silence::{Matcher, Silence};
        let mut r = router("UTC");
        let t = ms("2026-12-07T10:00:00Z");
        let mut p0 = alert(Severity::P0, State::Firing, "2026-12-07T10:00:00Z");
        p0.labels.insert("job".into(), "shop-web".into());
        let mut p1 = alert(Severity::P1, State::Firing, "2026-12-07T10:00:00Z");
        p1.labels.insert("alertname".into(), "Slow".into());
        p1.labels.insert("job".into(), "shop-web".into());
        // The firing P0 inhibits its job's P1.
        let pages = r.decide(t, &[p0.clone(), p1.clone()]);
        assert_eq!(
            pages
                .iter()
                .map(|p| p.alerts[0].labels["alertname"].as_str())
                .collect::<Vec<_>>(),
            vec!["A"]
        );
        // With the P0 resolved, the P1 pages.
        let p0_done = AlertView {
            state: State::Resolved,
            ..p0.clone()
        };
        let pages = r.decide(t + 1000, &[p0_done, p1.clone()]);
        let got: Vec<(&str, Kind)> = pages
            .iter()
            .map(|p| (p.alerts[0].labels["alertname"].as_str(), p.kind))
            .collect();
        assert_eq!(got, vec![("A", Kind::Resolved), ("Slow", Kind::Firing)]);
        // An ack stops the P1's repeats.
        assert_eq!(r.ack(&[Matcher::parse("alertname=Slow").expect("m")]), 1);
        assert!(
            r.decide(t + 5 * 3600 * 1000, std::slice::from_ref(&p1))
                .is_empty(),
            "acked: no repeat"
        );
        // A silence mutes a new P0 while active, and it pages after.
        let mut other = alert(Severity::P0, State::Firing, "2026-12-07T11:00:00Z");
        other.labels.insert("alertname".into(), "Other".into());
        r.silences.push(Silence {
            id: 1,
            matchers: vec![Matcher::parse(r#"alertname=~"Oth.*""#).expect("m")],
            starts_at_ms: t,
            ends_at_ms: t + 3_600_000,
            created_by: "me".into(),
            comment: "maintenance".into(),
        });
        assert!(
            r.decide(t + 60_000, std::slice::from_ref(&other))
                .is_empty(),
            "silenced"
        );
        let pages = r.decide(t + 3_600_000, std::slice::from_ref(&other));
        assert_eq!(pages.len(), 1, "the silence ended");
    }

    fn instance(a: &AlertView, i: &str) -> AlertView {
        let mut a = a.clone();
        a.labels.insert("instance".into(), i.into());
        a
    }

    fn summary(pages: &[Page]) -> Vec<(Kind, &str, Vec<&str>)> {
        pages
            .iter()
            .map(|p| {
                (
                    p.kind,
                    p.reason.as_str(),
                    p.alerts
                        .iter()
                        .map(|a| a.labels.get("instance").map_or("", String::as_str))
                        .collect(),
                )
            })
            .collect()
    }

    #[test]
    fn a_group_pages_once_for_its_alerts_then_at_group_intervals_as_they_change() {
        let mut r = router("UTC");
        r.policy.p0.group_interval = Duration::from_secs(10);
        let t = ms("2026-12-05T03:00:00Z");
        let base = alert(Severity::P0, State::Firing, "2026-12-05T03:00:00Z");
        let (a, b) = (instance(&base, "a"), instance(&base, "b"));
        // Two at once: one page holding both.
        let p = r.decide(t, &[a.clone(), b.clone()]);
        assert_eq!(summary(&p), vec![(Kind::Firing, "fired", vec!["a", "b"])]);
        // A third joins: it waits for the group interval, then all three.
        let mut c = instance(&base, "c");
        c.fired_at_ms = Some(t + 2000);
        let all = [a.clone(), b.clone(), c.clone()];
        assert!(r.decide(t + 2000, &all).is_empty(), "within group_interval");
        assert!(r.decide(t + 9999, &all).is_empty());
        let p = r.decide(t + 10_000, &all);
        assert_eq!(
            summary(&p),
            vec![(Kind::Firing, "fired", vec!["a", "b", "c"])]
        );
        // Nothing changes: nothing until the repeat.
        assert!(r.decide(t + 20_000, &all).is_empty());
        // One resolves: told at the next interval beside the firing ones.
        let b_done = AlertView {
            state: State::Resolved,
            resolved_at_ms: Some(t + 25_000),
            ..b.clone()
        };
        let now = [a.clone(), b_done.clone(), c.clone()];
        let p = r.decide(t + 25_000, &now);
        assert_eq!(
            summary(&p),
            vec![(Kind::Firing, "resolved", vec!["a", "c", "b"])]
        );
        assert!(r.decide(t + 40_000, &now).is_empty(), "b told once");
        // All resolve: one resolved page.
        let done: Vec<AlertView> = [a, c]
            .into_iter()
            .map(|x| AlertView {
                state: State::Resolved,
                resolved_at_ms: Some(t + 50_000),
                ..x
            })
            .chain([b_done])
            .collect();
        let p = r.decide(t + 50_000, &done);
        assert_eq!(
            summary(&p),
            vec![(Kind::Resolved, "resolved", vec!["a", "c"])]
        );
        assert!(r.decide(t + 60_000, &done).is_empty());
    }

    #[test]
    fn group_wait_gathers_what_fires_soon_after_and_group_by_splits_groups() {
        let mut r = router("UTC");
        r.policy.p1.group_wait = Duration::from_secs(30);
        let t = ms("2026-12-07T10:00:00Z"); // Monday, open
        let base = alert(Severity::P1, State::Firing, "2026-12-07T10:00:00Z");
        let a = instance(&base, "a");
        let mut b = instance(&base, "b");
        b.fired_at_ms = Some(t + 10_000);
        assert!(
            r.decide(t, std::slice::from_ref(&a)).is_empty(),
            "group_wait"
        );
        assert!(r.decide(t + 10_000, &[a.clone(), b.clone()]).is_empty());
        let p = r.decide(t + 30_000, &[a.clone(), b.clone()]);
        assert_eq!(summary(&p), vec![(Kind::Firing, "fired", vec!["a", "b"])]);
        // Another job is another group, with its own wait.
        let mut other = instance(&base, "x");
        other.labels.insert("job".into(), "db".into());
        other.fired_at_ms = Some(t + 40_000);
        let all = [a.clone(), b.clone(), other.clone()];
        assert!(r.decide(t + 40_000, &all).is_empty());
        let p = r.decide(t + 70_000, &all);
        assert_eq!(summary(&p), vec![(Kind::Firing, "fired", vec!["x"])]);
        assert_eq!(p[0].group.get("job").map(String::as_str), Some("db"));
        // `...`: every alert alone.
        let mut r = router("UTC");
        r.policy.group_by = vec!["...".into()];
        let p = r.decide(t, &[a, b]);
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn p2_opens_a_ticket_once_and_closes_it_never_paging() {
        let mut r = router("UTC");
        let a = alert(Severity::P2, State::Firing, "2026-12-07T10:00:00Z");
        assert!(
            r.decide(ms("2026-12-07T10:00:00Z"), std::slice::from_ref(&a))
                .is_empty()
        );
        assert!(
            r.decide(ms("2026-12-07T11:00:00Z"), std::slice::from_ref(&a))
                .is_empty()
        );
        assert_eq!(r.tickets.len(), 1);
        let done = AlertView {
            state: State::Resolved,
            ..a
        };
        assert!(
            r.decide(ms("2026-12-07T12:00:00Z"), &[done]).is_empty(),
            "no page for P2"
        );
        assert_eq!(r.tickets[0].closed_at_ms, Some(ms("2026-12-07T12:00:00Z")));
    }
}
