//! The words of a decision: what each rule did, in the order it acted,
//! as the event's explanation says it.

use super::*;

pub(super) fn rate_rule(dir: &str, r: &crate::behavior::Rules) -> String {
    let ps: Vec<String> = r
        .policies
        .iter()
        .map(|p| {
            let v = match p.kind {
                crate::behavior::PolicyKind::Pods => format!("{}", p.value),
                crate::behavior::PolicyKind::Percent => format!("{} %", p.value),
            };
            format!("{v}/{}", humantime::format_duration(p.period))
        })
        .collect();
    format!("{dir} rate {} ({:?})", ps.join(", "), r.select_policy)
}

/// `to` instead of `from`, by `rule`: the clamp is noted for the event.
pub(super) fn held(from: u32, to: u32, rule: String, clamps: &mut Vec<Clamp>) -> u32 {
    clamps.push(Clamp { rule, from, to });
    to
}

pub(super) fn clamp_range(n: u32, min: u32, max: u32, clamps: &mut Vec<Clamp>) -> u32 {
    if n > max {
        return held(n, max, format!("max {max}"), clamps);
    }
    if n < min {
        return held(n, min, format!("min {min}"), clamps);
    }
    n
}

/// `ms` as people read a while: `2m 30s`.
pub(super) fn ago(ms: i64) -> String {
    humantime::format_duration(Duration::from_secs((ms.max(0) / 1000) as u64)).to_string()
}

/// `scale 2 → 6` or `keep 2`.
pub(super) fn verb(current: u32, desired: u32) -> String {
    if desired == current {
        format!("keep {current}")
    } else {
        format!("scale {current} → {desired}")
    }
}

pub(super) fn explain(
    current: u32,
    desired: u32,
    parts: &[MetricPart],
    clamps: &[Clamp],
    panic: bool,
) -> String {
    let verb = verb(current, desired);
    let why: Vec<String> = parts
        .iter()
        .map(|p| match (p.value, p.proposal) {
            (Some(v), Some(n)) => format!(
                "{} {} vs {} (wants {n}{})",
                p.name,
                num(v),
                num(p.target),
                if p.note.is_empty() {
                    String::new()
                } else {
                    format!(", {}", p.note)
                }
            ),
            _ => format!("{} unreadable: {}", p.name, p.note),
        })
        .collect();
    let mut line = format!("{verb}: {}", why.join("; "));
    if panic {
        line.push_str("; panic mode");
    }
    for c in clamps {
        line.push_str(&format!("; {} → {} by {}", c.from, c.to, c.rule));
    }
    line
}

/// A number as people read it: `1,820`, `0.75`.
pub(super) fn num(v: f64) -> String {
    if v.abs() >= 1000.0 && v.fract().abs() < 1e-9 {
        let s = format!("{}", v.round() as i64);
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 && c != '-' {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{}", (v * 100.0).round() / 100.0)
    }
}
