//! What a replay prints: the timeline, whether it reproduces the
//! recording (each difference with its likely reason), and the what-if
//! diff. Everything here is a pure function of the bundle and the
//! outcomes, so the output is the same byte for byte on every run.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use keel_alerting::notify::{Kind, Page};
use keel_incident::bundle::{AlertChange, Bundle};

use crate::run::{Outcome, Setup};

/// `+MM:SS.mmm` from the window's start (hours when past one).
pub fn offset(from_ms: i64, t: i64) -> String {
    let d = t.saturating_sub(from_ms);
    let sign = if d < 0 { "-" } else { "+" };
    let d = d.unsigned_abs();
    let (h, m, s, ms) = (d / 3_600_000, d / 60_000 % 60, d / 1000 % 60, d % 1000);
    if h > 0 {
        format!("{sign}{h}:{m:02}:{s:02}.{ms:03}")
    } else {
        format!("{sign}{m:02}:{s:02}.{ms:03}")
    }
}

/// An RFC 3339 time.
pub fn time(ms: i64) -> String {
    // humantime writes 1970 to 9999 only; anything else as a number.
    if (0..=253_402_300_799_999).contains(&ms) {
        humantime::format_rfc3339_millis(keel_core::clock::from_unix_ms(ms)).to_string()
    } else {
        format!("{ms}ms")
    }
}

/// A duration for people: `1m30s`, `250ms`.
pub fn span(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    format!(
        "{sign}{}",
        humantime::format_duration(std::time::Duration::from_millis(ms.unsigned_abs()))
    )
}

fn labels(l: &BTreeMap<String, String>) -> String {
    let inner: Vec<String> = l
        .iter()
        .filter(|(k, _)| k.as_str() != "alertname" && k.as_str() != "severity")
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn page_line(p: &Page) -> String {
    let kind = match (p.kind, p.severity) {
        (Kind::Resolved, _) => "resolved",
        (_, keel_alerting::rules::Severity::P2) => "ticket",
        _ => "page",
    };
    format!(
        "{kind} {} {} {} ({} alert{}, {})",
        p.severity.as_str(),
        p.alertnames().join(","),
        labels(&p.group),
        p.alerts.len(),
        if p.alerts.len() == 1 { "" } else { "s" },
        p.reason
    )
}

/// One line of the timeline, sortable.
struct Line {
    at: i64,
    order: u8,
    text: String,
}

/// The timeline of `outcome`, with the bundle's recorded failover events
/// (they are shown, not decided again).
pub fn timeline(bundle: &Bundle, setup: &Setup, outcome: &Outcome) -> String {
    let h = &bundle.header;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "incident {}: {} to {} ({}), recorded {} ({})",
        h.name,
        time(h.from_ms),
        time(h.to_ms),
        span(h.to_ms - h.from_ms),
        time(h.recorded_at_ms),
        h.reason
    );
    let _ = writeln!(
        s,
        "replayed with {} rules ({} groups) and {} policies: {} samples, {} rule evaluations in {} rounds, {} controller ticks",
        setup.rules_from,
        setup.groups.len(),
        setup.policy_from,
        outcome.samples,
        outcome.evaluations,
        outcome.rounds,
        outcome.ticks
    );
    for g in &outcome.scheduled_groups {
        let _ = writeln!(
            s,
            "note: group {g} has no recorded evaluations; it ran every interval from the window's start"
        );
    }
    if let Some(q) = &h.logs_query {
        let _ = writeln!(
            s,
            "note: the bundle keeps only the log records matching {q:?}; a rule counting other records counts none of them"
        );
    }
    if outcome.scheduled_controller {
        let _ = writeln!(
            s,
            "note: the controller has no recorded ticks for these policies; it ran every interval from the window's start"
        );
    }
    for (rule, e) in &outcome.rule_errors {
        let _ = writeln!(s, "rule error: {rule}: {e}");
    }
    let mut lines: Vec<Line> = Vec::new();
    for a in &outcome.alerts {
        lines.push(Line {
            at: a.at_ms,
            order: 0,
            text: format!(
                "alert    {} {}{} {} -> {}",
                a.severity,
                a.rule,
                labels(&a.labels),
                a.from,
                a.to
            ),
        });
    }
    for p in &outcome.pages {
        lines.push(Line {
            at: p.at_ms,
            order: 1,
            text: format!("notify   {}", page_line(p)),
        });
    }
    for sc in &outcome.scaling {
        lines.push(Line {
            at: sc.at_ms,
            order: 2,
            text: format!(
                "scale    {} {} -> {}: {}",
                sc.policy, sc.from, sc.to, sc.explanation
            ),
        });
    }
    for d in &outcome.failover.decided {
        lines.push(Line {
            at: d.at_ms,
            order: 3,
            text: failover_line(d),
        });
    }
    for (t, target) in &outcome.failover.overtaken {
        lines.push(Line {
            at: *t,
            order: 3,
            text: format!(
                "failover {target}: not decided before the recording failed over (what it would have done later is not in the bundle)"
            ),
        });
    }
    // A bundle without probe rounds: what the recording did, as it did it.
    if !bundle
        .marks
        .iter()
        .any(|m| matches!(m, keel_core::marks::Mark::Probe { .. }))
    {
        for e in failover_events(bundle) {
            lines.push(Line {
                at: e.0,
                order: 3,
                text: format!("failover {} (recorded)", e.1),
            });
        }
    }
    if outcome.failover.unreadable > 0 {
        let _ = writeln!(
            s,
            "note: {} probe round(s) did not read and were left out",
            outcome.failover.unreadable
        );
    }
    lines.sort_by_key(|a| (a.at, a.order));
    let _ = writeln!(s);
    if lines.is_empty() {
        let _ = writeln!(s, "(nothing fired, paged or scaled)");
    }
    for l in lines {
        let _ = writeln!(s, "{}  {}  {}", offset(h.from_ms, l.at), time(l.at), l.text);
    }
    s
}

fn failover_line(d: &crate::failover::Decided) -> String {
    format!(
        "failover {}: {} lost, promote {} at epoch {}{}: {}",
        d.target,
        d.from,
        d.promote,
        d.epoch,
        d.detected_after_ms
            .map(|ms| format!(" (detected after {})", span(ms)))
            .unwrap_or_default(),
        d.why
    )
}

/// The recorded automatic failovers: (target, the deciding observation's time).
fn recorded_failovers(bundle: &Bundle) -> Vec<(String, i64)> {
    bundle
        .events
        .iter()
        .filter(|e| e.get("kind").and_then(|k| k.as_str()) == Some("failover.detected"))
        .filter_map(|e| {
            let d = e.get("decision")?;
            if d.get("automatic").and_then(|a| a.as_bool()) != Some(true) {
                return None;
            }
            let at = d.get("first_failure_ms")?.as_i64()? + d.get("detection_ms")?.as_i64()?;
            Some((e.get("subject")?.as_str()?.to_owned(), at))
        })
        .collect()
}

/// The recorded failover events: (time, one line).
fn failover_events(bundle: &Bundle) -> Vec<(i64, String)> {
    bundle
        .events
        .iter()
        .filter(|e| {
            e.get("kind")
                .and_then(|k| k.as_str())
                .is_some_and(|k| k.starts_with("failover") || k.starts_with("switchover"))
        })
        .filter_map(|e| {
            Some((
                e.get("at_ms")?.as_i64()?,
                format!(
                    "{}: {}",
                    e.get("kind")?.as_str()?,
                    e.get("explanation").and_then(|x| x.as_str()).unwrap_or("")
                ),
            ))
        })
        .collect()
}

/// The scaling actions the recording holds (its `scale` events).
fn recorded_scales(bundle: &Bundle) -> impl Iterator<Item = crate::run::Scaling> + '_ {
    bundle
        .events
        .iter()
        .filter(|e| e.get("kind").and_then(|k| k.as_str()) == Some("scale"))
        .filter_map(|e| {
            Some(crate::run::Scaling {
                at_ms: e.get("at_ms")?.as_i64()?,
                policy: e.get("subject")?.as_str()?.to_owned(),
                from: e
                    .pointer("/decision/current")
                    .and_then(|f| f.as_u64())
                    .unwrap_or(0) as u32,
                to: e.get("read_back")?.as_u64()? as u32,
                explanation: e
                    .get("explanation")
                    .and_then(|m| m.as_str())
                    .unwrap_or_default()
                    .to_owned(),
            })
        })
}

/// What the recording itself holds, as an [`Outcome`]: its alert
/// changes, pages, scaling actions and automatic failovers, so that
/// expectations are checked against what happened live exactly as
/// against a replay.
pub fn recorded_outcome(bundle: &Bundle) -> Outcome {
    let scaling = recorded_scales(bundle).collect();
    // Each automatic failover with the promotion that followed it.
    let promoted = |target: &str, after: i64| {
        bundle.events.iter().find(|e| {
            e.get("kind").and_then(|k| k.as_str()) == Some("failover.promoted")
                && e.get("subject").and_then(|k| k.as_str()) == Some(target)
                && e.get("at_ms").and_then(|t| t.as_i64()) >= Some(after)
        })
    };
    let decided = recorded_failovers(bundle)
        .into_iter()
        .map(|(target, at_ms)| {
            let p = promoted(&target, at_ms);
            crate::failover::Decided {
                at_ms,
                from: String::new(),
                promote: p
                    .and_then(|e| e.pointer("/decision/primary")?.as_str())
                    .unwrap_or("(not promoted)")
                    .to_owned(),
                epoch: p
                    .and_then(|e| e.pointer("/decision/epoch")?.as_u64())
                    .unwrap_or(0),
                detected_after_ms: None,
                why: p
                    .and_then(|e| e.get("explanation")?.as_str())
                    .unwrap_or("recorded")
                    .to_owned(),
                target,
            }
        })
        .collect();
    Outcome {
        alerts: bundle.alerts.clone(),
        pages: bundle.pages.clone(),
        scaling,
        failover: crate::failover::Replayed {
            decided,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// How long after an incident's start Keel responded (ms), where it did.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Response {
    /// The first alert firing.
    pub alert: Option<i64>,
    /// The first page (P0, or P1 in business hours; P2 is a ticket).
    pub page: Option<i64>,
    /// The first corrective action: a scaling action or a failover decided.
    pub action: Option<i64>,
}

/// From `start_ms`: the first alert firing, page and corrective action.
pub fn first_response(outcome: &Outcome, start_ms: i64) -> Response {
    let alert = outcome
        .alerts
        .iter()
        .filter(|a| a.to == "firing" && a.at_ms >= start_ms)
        .map(|a| a.at_ms - start_ms)
        .min();
    let page = outcome
        .pages
        .iter()
        .filter(|p| {
            p.kind == keel_alerting::notify::Kind::Firing
                && matches!(p.severity.as_str(), "P0" | "P1")
                && p.at_ms >= start_ms
        })
        .map(|p| p.at_ms - start_ms)
        .min();
    let action = outcome
        .scaling
        .iter()
        .map(|s| s.at_ms)
        .chain(outcome.failover.decided.iter().map(|d| d.at_ms))
        .filter(|t| *t >= start_ms)
        .map(|t| t - start_ms)
        .min();
    Response {
        alert,
        page,
        action,
    }
}

fn page_key(p: &Page) -> (i64, String) {
    (p.at_ms, page_line(p))
}

/// Each side's items the other lacks, as lines with their reasons.
fn differences(
    out: &mut Vec<String>,
    from: i64,
    recorded: &[(i64, String)],
    replayed: &[(i64, String)],
    reason: impl Fn(i64) -> &'static str,
) {
    for (side, a, b) in [
        ("recorded, not replayed", recorded, replayed),
        ("replayed, not recorded", replayed, recorded),
    ] {
        for (at, what) in minus(a, b) {
            out.push(format!(
                "{}  {side}: {what} ({})",
                offset(from, at),
                reason(at)
            ));
        }
    }
}

/// Items in `a` not in `b` (as multisets).
fn minus<T: Ord + Clone>(a: &[T], b: &[T]) -> Vec<T> {
    let mut left: BTreeMap<&T, usize> = BTreeMap::new();
    for x in b {
        *left.entry(x).or_default() += 1;
    }
    let mut out = Vec::new();
    for x in a {
        match left.get_mut(x) {
            Some(n) if *n > 0 => *n -= 1,
            _ => out.push(x.clone()),
        }
    }
    out
}

/// Whether the replay reproduced what was recorded: `Ok(summary)` when it
/// did, else every difference with its likely reason.
pub fn reproduction(
    bundle: &Bundle,
    setup: &Setup,
    outcome: &Outcome,
) -> Result<String, Vec<String>> {
    let h = &bundle.header;
    // Alert state from before the window is not in the bundle: an alert
    // pending or firing when the window began cannot be reproduced until
    // its rule's `for` and an interval have passed.
    let settle = setup
        .groups
        .iter()
        .flat_map(|g| {
            g.rules.iter().filter_map(move |r| match r {
                keel_alerting::rules::Rule::Alert(a) => {
                    Some((a.for_ + a.keep_firing_for + g.interval).as_millis() as i64)
                }
                _ => None,
            })
        })
        .max()
        .unwrap_or(0);
    let reason = |at: i64| -> &'static str {
        if at - h.from_ms + h.lead_in_ms <= settle {
            "what came before the bundle's lead-in is not in it (an alert already pending or firing, or a rate window reaching back further)"
        } else if bundle.marks.is_empty() {
            "the bundle has no arrival or tick marks: samples were made visible at their own time and rules ran on their interval"
        } else {
            "the rule saw different data at this evaluation (a sample recorded after its arrival mark, or a log record not yet indexed)"
        }
    };
    let mut diffs = Vec::new();
    let alert_item = |a: &AlertChange| {
        (
            a.at_ms,
            format!(
                "alert {} {}{} {} -> {}",
                a.severity,
                a.rule,
                labels(&a.labels),
                a.from,
                a.to
            ),
        )
    };
    let rec_alerts: Vec<(i64, String)> = bundle.alerts.iter().map(alert_item).collect();
    let rep_alerts: Vec<(i64, String)> = outcome.alerts.iter().map(alert_item).collect();
    differences(&mut diffs, h.from_ms, &rec_alerts, &rep_alerts, reason);
    let rec_pages: Vec<(i64, String)> = bundle.pages.iter().map(page_key).collect();
    let rep_pages: Vec<(i64, String)> = outcome.pages.iter().map(page_key).collect();
    differences(&mut diffs, h.from_ms, &rec_pages, &rep_pages, reason);
    let rec_scale: Vec<(i64, String)> = recorded_scales(bundle)
        .map(|s| (s.at_ms, format!("scale {} to {}", s.policy, s.to)))
        .collect();
    let rep_scale: Vec<(i64, String)> = outcome
        .scaling
        .iter()
        .map(|s| (s.at_ms, format!("scale {} to {}", s.policy, s.to)))
        .collect();
    differences(
        &mut diffs,
        h.from_ms,
        &rec_scale,
        &rep_scale,
        |_| "the autoscaler's history before the bundle's lead-in (stabilization, rate-limit periods, panic) is not in it, or the count was changed by something other than the controller",
    );
    // Failover: the recording's automatic ones, by the observation that
    // decided them (only where its probe rounds are in the bundle).
    let probed: std::collections::BTreeSet<&str> = bundle
        .marks
        .iter()
        .filter_map(|m| match m {
            keel_core::marks::Mark::Probe { target, .. } => Some(target.as_str()),
            _ => None,
        })
        .collect();
    let rec_fo: Vec<(i64, String)> = recorded_failovers(bundle)
        .into_iter()
        .filter(|(t, at)| probed.contains(t.as_str()) && *at >= h.from_ms)
        .map(|(t, at)| (at, format!("failover {t}")))
        .collect();
    let rep_fo: Vec<(i64, String)> = outcome
        .failover
        .decided
        .iter()
        .map(|d| (d.at_ms, format!("failover {}", d.target)))
        .collect();
    differences(
        &mut diffs,
        h.from_ms,
        &rec_fo,
        &rep_fo,
        |_| "the probe rounds before the window, or a failover asked for by hand, are not decided again",
    );
    if diffs.is_empty() {
        Ok(format!(
            "reproduced: {} alert changes, {} pages, {} scaling actions and {} failovers, as recorded",
            rec_alerts.len(),
            rec_pages.len(),
            rec_scale.len(),
            rec_fo.len()
        ))
    } else {
        diffs.sort();
        Err(diffs)
    }
}

/// Figures compared side by side in a what-if.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    /// First page (not ticket, not resolved) per severity: time.
    pub first_page: BTreeMap<String, i64>,
    /// Pages (firing) per severity.
    pub pages: BTreeMap<String, usize>,
    /// Firing episodes per alert name.
    pub fired: BTreeMap<String, usize>,
    /// Scaling actions.
    pub scaling: usize,
    /// Most instances at any tick, per policy.
    pub peak: BTreeMap<String, u32>,
    /// Time demand exceeded capacity (ms), per policy.
    pub under_capacity_ms: BTreeMap<String, i64>,
    /// Per failover target: its first failover (time, detection ms).
    pub failover: BTreeMap<String, (i64, Option<i64>)>,
}

/// The figures of an outcome.
pub fn figures(outcome: &Outcome) -> Figures {
    let mut f = Figures {
        first_page: BTreeMap::new(),
        pages: BTreeMap::new(),
        fired: BTreeMap::new(),
        scaling: outcome.scaling.len(),
        peak: BTreeMap::new(),
        under_capacity_ms: BTreeMap::new(),
        failover: BTreeMap::new(),
    };
    for d in &outcome.failover.decided {
        f.failover
            .entry(d.target.clone())
            .or_insert((d.at_ms, d.detected_after_ms));
    }
    for p in &outcome.pages {
        if p.kind == Kind::Firing && p.reason != "repeat" {
            let sev = p.severity.as_str().to_owned();
            f.first_page.entry(sev.clone()).or_insert(p.at_ms);
            *f.pages.entry(sev).or_default() += 1;
        }
    }
    for a in &outcome.alerts {
        if a.to == "firing" {
            *f.fired.entry(a.rule.clone()).or_default() += 1;
        }
    }
    let mut last: BTreeMap<&str, i64> = BTreeMap::new();
    for c in &outcome.capacity {
        let peak = f.peak.entry(c.policy.clone()).or_default();
        *peak = (*peak).max(c.instances);
        if c.capacity.is_finite() && c.demand.is_finite() {
            let under = f.under_capacity_ms.entry(c.policy.clone()).or_default();
            if let Some(prev) = last.get(c.policy.as_str())
                && c.demand > c.capacity
            {
                *under += c.at_ms - prev;
            }
        }
        last.insert(&c.policy, c.at_ms);
    }
    f
}

/// One row of the what-if diff: what, as recorded, what-if, a note.
pub type Row = [String; 4];

/// The what-if diff's rows: `base` (the bundle's own rules and
/// policies) beside `what_if`.
pub fn diff_rows(bundle: &Bundle, base: &Outcome, what_if: &Outcome) -> Vec<Row> {
    let from = bundle.header.from_ms;
    let (a, b) = (figures(base), figures(what_if));
    let mut rows: Vec<Row> = Vec::new();
    let mut row = |what: String, l: String, r: String, note: String| rows.push([what, l, r, note]);
    let sevs: std::collections::BTreeSet<&String> =
        a.first_page.keys().chain(b.first_page.keys()).collect();
    for sev in sevs {
        let (l, r) = (a.first_page.get(sev), b.first_page.get(sev));
        let note = match (l, r) {
            (Some(l), Some(r)) if r < l => format!("{} earlier", span(l - r)),
            (Some(l), Some(r)) if r > l => format!("{} later", span(r - l)),
            (Some(_), Some(_)) => "same time".into(),
            (Some(_), None) => "no longer pages".into(),
            (None, Some(_)) => "new page".into(),
            (None, None) => String::new(),
        };
        let show = |t: Option<&i64>| t.map_or("-".to_owned(), |t| offset(from, *t));
        row(format!("first {sev} page"), show(l), show(r), note);
    }
    let sevs: std::collections::BTreeSet<&String> = a.pages.keys().chain(b.pages.keys()).collect();
    for sev in sevs {
        let (l, r) = (
            a.pages.get(sev).copied().unwrap_or(0),
            b.pages.get(sev).copied().unwrap_or(0),
        );
        let note = if r < l {
            format!("{} page(s) avoided", l - r)
        } else if r > l {
            format!("{} more", r - l)
        } else {
            String::new()
        };
        row(format!("{sev} pages"), l.to_string(), r.to_string(), note);
    }
    let names: std::collections::BTreeSet<&String> = a.fired.keys().chain(b.fired.keys()).collect();
    for n in names {
        let (l, r) = (
            a.fired.get(n).copied().unwrap_or(0),
            b.fired.get(n).copied().unwrap_or(0),
        );
        let note = match (l, r) {
            (0, _) => "new alert".into(),
            (_, 0) => "missing (no longer fires)".into(),
            _ => String::new(),
        };
        row(
            format!("alert {n} fired"),
            l.to_string(),
            r.to_string(),
            note,
        );
    }
    row(
        "scaling actions".into(),
        a.scaling.to_string(),
        b.scaling.to_string(),
        String::new(),
    );
    let policies: std::collections::BTreeSet<&String> =
        a.peak.keys().chain(b.peak.keys()).collect();
    for p in policies {
        row(
            format!("{p}: peak instances"),
            a.peak.get(p).map_or("-".into(), |n| n.to_string()),
            b.peak.get(p).map_or("-".into(), |n| n.to_string()),
            String::new(),
        );
        row(
            format!("{p}: under capacity"),
            a.under_capacity_ms.get(p).map_or("-".into(), |n| span(*n)),
            b.under_capacity_ms.get(p).map_or("-".into(), |n| span(*n)),
            "demand above instances x per_instance".into(),
        );
    }
    let targets: std::collections::BTreeSet<&String> =
        a.failover.keys().chain(b.failover.keys()).collect();
    for t in targets {
        let (l, r) = (a.failover.get(t), b.failover.get(t));
        let note = match (l, r) {
            (Some(l), Some(r)) if r.0 < l.0 => format!("{} earlier", span(l.0 - r.0)),
            (Some(l), Some(r)) if r.0 > l.0 => format!("{} later", span(r.0 - l.0)),
            (Some(_), Some(_)) => "same time".into(),
            (Some(_), None) => "no failover".into(),
            (None, Some(_)) => "new failover".into(),
            (None, None) => String::new(),
        };
        let show = |x: Option<&(i64, Option<i64>)>| {
            x.map_or("-".to_owned(), |(at, det)| match det {
                Some(d) => format!("{} ({})", offset(from, *at), span(*d)),
                None => offset(from, *at),
            })
        };
        row(format!("failover {t}"), show(l), show(r), note);
    }
    rows
}

/// The what-if diff as text: its rows in columns.
pub fn diff(bundle: &Bundle, base: &Outcome, what_if: &Outcome, setup: &Setup) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "what-if: rules {}, policies {} (left: as recorded; right: what-if)",
        setup.rules_from, setup.policy_from
    );
    let header: Row = [
        String::new(),
        "recorded".into(),
        "what-if".into(),
        String::new(),
    ];
    for [what, l, r, note] in std::iter::once(header).chain(diff_rows(bundle, base, what_if)) {
        let _ = writeln!(s, "  {what:<28} {l:<16} {r:<16} {note}");
    }
    for (t, target) in &what_if.failover.overtaken {
        let _ = writeln!(
            s,
            "  failover {target}: the what-if had not decided when the recording failed over at {}",
            offset(bundle.header.from_ms, *t)
        );
    }
    s
}

/// The timeline as the dashboard draws it (the shape of
/// `/api/v1/events`): alert changes, pages and scaling actions of an
/// outcome, oldest first.
pub fn events_json(bundle: &Bundle, outcome: &Outcome) -> Vec<serde_json::Value> {
    let from = bundle.header.from_ms;
    let mut out: Vec<(i64, u8, serde_json::Value)> = Vec::new();
    for a in &outcome.alerts {
        out.push((a.at_ms, 0, alert_json(from, a)));
    }
    for p in &outcome.pages {
        out.push((p.at_ms, 1, page_json(from, p)));
    }
    for d in &outcome.failover.decided {
        out.push((
            d.at_ms,
            3,
            serde_json::json!({
                "at_ms": d.at_ms, "offset": offset(from, d.at_ms), "kind": "failover",
                "subject": d.target, "explanation": failover_line(d),
            }),
        ));
    }
    for sc in &outcome.scaling {
        out.push((
            sc.at_ms,
            2,
            serde_json::json!({
                "at_ms": sc.at_ms, "offset": offset(from, sc.at_ms), "kind": "scale",
                "subject": sc.policy, "from": sc.from, "to": sc.to, "explanation": sc.explanation,
            }),
        ));
    }
    out.sort_by_key(|(t, o, _)| (*t, *o));
    out.into_iter().map(|(_, _, v)| v).collect()
}

/// What the bundle recorded, in the same shape as [`events_json`].
pub fn recorded_json(bundle: &Bundle) -> Vec<serde_json::Value> {
    let from = bundle.header.from_ms;
    let mut out: Vec<(i64, u8, serde_json::Value)> = Vec::new();
    for a in &bundle.alerts {
        out.push((a.at_ms, 0, alert_json(from, a)));
    }
    for p in &bundle.pages {
        out.push((p.at_ms, 1, page_json(from, p)));
    }
    for e in &bundle.events {
        if e.get("kind").and_then(|k| k.as_str()) == Some("decision") {
            continue;
        }
        if let Some(t) = e.get("at_ms").and_then(|t| t.as_i64()) {
            let mut e = e.clone();
            if let Some(o) = e.as_object_mut() {
                o.insert("offset".into(), serde_json::Value::String(offset(from, t)));
            }
            out.push((t, 2, e));
        }
    }
    out.sort_by_key(|(t, o, _)| (*t, *o));
    out.into_iter().map(|(_, _, v)| v).collect()
}

fn alert_json(from: i64, a: &AlertChange) -> serde_json::Value {
    serde_json::json!({
        "at_ms": a.at_ms, "offset": offset(from, a.at_ms), "kind": "alert", "subject": a.rule,
        "severity": a.severity, "state": a.to, "labels": a.labels,
        "explanation": format!("{} {}{} {} -> {}", a.severity, a.rule, labels(&a.labels), a.from, a.to),
    })
}

fn page_json(from: i64, p: &Page) -> serde_json::Value {
    serde_json::json!({
        "at_ms": p.at_ms, "offset": offset(from, p.at_ms), "kind": "page",
        "subject": p.alertnames().join(","), "severity": p.severity.as_str(),
        "explanation": page_line(p),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recorded_outcome_and_first_response_read_what_happened_live() {
        use keel_incident::bundle::{Config, Header};
        let ev = |at: i64, kind: &str, extra: serde_json::Value| {
            let mut e = serde_json::json!({"at_ms": at, "kind": kind, "subject": if kind == "scale" { "web" } else { "shop-db" }, "explanation": "why"});
            if let (Some(o), Some(x)) = (e.as_object_mut(), extra.as_object()) {
                o.extend(x.clone());
            }
            e
        };
        let bundle = Bundle {
            header: Header {
                name: "t".into(),
                from_ms: 0,
                to_ms: 100_000,
                recorded_at_ms: 0,
                reason: "test".into(),
                service: None,
                incident_ms: Some(10_000),
                lead_in_ms: 0,
                logs_query: None,
                no_spans: false,
                keel_version: "0".into(),
            },
            config: Config {
                rules: serde_json::Value::Null,
                notify: serde_json::Value::Null,
                controller: None,
            },
            files: Vec::new(),
            series: Vec::new(),
            logs: Vec::new(),
            spans: Vec::new(),
            marks: Vec::new(),
            events: vec![
                ev(
                    5_000,
                    "scale",
                    serde_json::json!({"read_back": 3, "decision": {"current": 2}}),
                ),
                ev(
                    20_000,
                    "failover.detected",
                    serde_json::json!({"decision": {"automatic": true, "first_failure_ms": 19_000, "detection_ms": 700}}),
                ),
                ev(
                    20_100,
                    "failover.promoted",
                    serde_json::json!({"decision": {"primary": "db-2", "epoch": 2}}),
                ),
                ev(
                    30_000,
                    "scale",
                    serde_json::json!({"read_back": 4, "decision": {"current": 3}}),
                ),
            ],
            alerts: Vec::new(),
            pages: Vec::new(),
        };
        let o = recorded_outcome(&bundle);
        assert_eq!(
            o.scaling
                .iter()
                .map(|s| (s.at_ms, s.from, s.to))
                .collect::<Vec<_>>(),
            [(5_000, 2, 3), (30_000, 3, 4)]
        );
        let f = &o.failover.decided[0];
        assert_eq!((f.at_ms, f.promote.as_str(), f.epoch), (19_700, "db-2", 2));
        let r = first_response(&o, 10_000);
        assert_eq!(
            r.action,
            Some(9_700),
            "the failover, not the scaling before the start"
        );
        assert_eq!((r.alert, r.page), (None, None));
    }

    #[test]
    fn offsets_and_spans_read_as_people_write_them() {
        assert_eq!(offset(1000, 1000), "+00:00.000");
        assert_eq!(offset(0, 90_250), "+01:30.250");
        assert_eq!(offset(0, 3_723_004), "+1:02:03.004");
        assert_eq!(offset(5000, 4000), "-00:01.000");
        assert_eq!(span(90_000), "1m 30s");
        assert_eq!(span(-15_000), "-15s");
    }

    #[test]
    fn minus_is_a_multiset_difference() {
        assert_eq!(minus(&[1, 1, 2, 3], &[1, 3, 4]), vec![1, 2]);
    }
}
