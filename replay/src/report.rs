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

mod diff;
mod json;
pub use diff::{Figures, diff, diff_rows, figures};
pub use json::{events_json, recorded_json};

#[cfg(test)]
mod tests;
