//! Comparing two outcomes of one bundle: the figures of each (time to
//! first alert and page, pages, scaling, failovers) and the table of
//! what a rule or policy change would have changed.

use super::*;

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
