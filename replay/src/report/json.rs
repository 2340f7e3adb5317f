//! A replay's events as JSON for the dashboard's replay mode: the
//! recorded timeline and the replayed one, in offsets from the start.

use super::*;

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

pub(super) fn alert_json(from: i64, a: &AlertChange) -> serde_json::Value {
    serde_json::json!({
        "at_ms": a.at_ms, "offset": offset(from, a.at_ms), "kind": "alert", "subject": a.rule,
        "severity": a.severity, "state": a.to, "labels": a.labels,
        "explanation": format!("{} {}{} {} -> {}", a.severity, a.rule, labels(&a.labels), a.from, a.to),
    })
}

pub(super) fn page_json(from: i64, p: &Page) -> serde_json::Value {
    serde_json::json!({
        "at_ms": p.at_ms, "offset": offset(from, p.at_ms), "kind": "page",
        "subject": p.alertnames().join(","), "severity": p.severity.as_str(),
        "explanation": page_line(p),
    })
}
