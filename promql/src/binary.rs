//! Binary operators between scalars and vectors, with vector matching
//! (`on`, `ignoring`, `group_left`, `group_right`, `bool`) and set
//! operators (`and`, `or`, `unless`).

use std::collections::{HashMap, HashSet};

use super::EvalError;
use super::value::Sample;
use keel_series::labels::Labels;

/// How two vectors are matched.
#[derive(Debug, Clone, Default)]
pub struct Matching {
    /// `on(…)` (true) or `ignoring(…)` (false).
    pub on: bool,
    /// The labels of `on`/`ignoring`.
    pub labels: Vec<String>,
    /// `group_left` (Some(true)), `group_right` (Some(false)), or one-to-one.
    pub group_left: Option<bool>,
    /// Extra labels copied from the "one" side.
    pub include: Vec<String>,
    /// `bool` modifier on a comparison.
    pub return_bool: bool,
}

/// Is `op` a comparison?
pub fn is_comparison(op: &str) -> bool {
    matches!(op, "==" | "!=" | ">" | "<" | ">=" | "<=")
}

/// Is `op` a set operator?
pub fn is_set(op: &str) -> bool {
    matches!(op, "and" | "or" | "unless")
}

/// Apply an arithmetic or comparison operator to two numbers. For a
/// comparison the result is `(lhs, whether it holds)`.
pub fn apply(op: &str, l: f64, r: f64) -> Result<(f64, bool), EvalError> {
    Ok(match op {
        "+" => (l + r, true),
        "-" => (l - r, true),
        "*" => (l * r, true),
        "/" => (l / r, true),
        "%" => (l % r, true),
        "^" => (l.powf(r), true),
        "atan2" => (l.atan2(r), true),
        "==" => (l, l == r),
        "!=" => (l, l != r),
        ">" => (l, l > r),
        "<" => (l, l < r),
        ">=" => (l, l >= r),
        "<=" => (l, l <= r),
        other => return Err(EvalError::Unsupported(format!("operator {other}"))),
    })
}

fn signature(l: &Labels, m: &Matching) -> Labels {
    if m.on {
        l.project(&m.labels, true)
    } else {
        l.without_name().project(&m.labels, false)
    }
}

/// Vector ⊕ scalar (or scalar ⊕ vector when `scalar_left`).
pub fn vector_scalar(
    op: &str,
    v: Vec<Sample>,
    s: f64,
    scalar_left: bool,
    return_bool: bool,
) -> Result<Vec<Sample>, EvalError> {
    let mut out = Vec::with_capacity(v.len());
    for smp in v {
        let (l, r) = if scalar_left {
            (s, smp.value)
        } else {
            (smp.value, s)
        };
        let (val, keep) = apply(op, l, r)?;
        if is_comparison(op) {
            if return_bool {
                out.push(Sample {
                    labels: smp.labels.without_name(),
                    value: if keep { 1.0 } else { 0.0 },
                });
            } else if keep {
                // A filter keeps the vector's own value and labels.
                out.push(Sample {
                    labels: smp.labels,
                    value: smp.value,
                });
            }
        } else {
            out.push(Sample {
                labels: smp.labels.without_name(),
                value: val,
            });
        }
    }
    // Where the name was dropped, series that differed only by it collide.
    if !is_comparison(op) || return_bool {
        check_unique(&out)?;
    }
    Ok(out)
}

/// Vector ⊕ vector with matching.
pub fn vector_vector(
    op: &str,
    lhs: Vec<Sample>,
    rhs: Vec<Sample>,
    m: &Matching,
) -> Result<Vec<Sample>, EvalError> {
    if is_set(op) {
        return Ok(set_op(op, lhs, rhs, m));
    }
    // The "many" side is iterated; the "one" side is looked up.
    let (many, one, swapped) = match m.group_left {
        Some(false) => (rhs, lhs, true),
        _ => (lhs, rhs, false),
    };
    let mut one_by_sig: HashMap<Labels, &Sample> = HashMap::new();
    for s in &one {
        if one_by_sig.insert(signature(&s.labels, m), s).is_some() {
            let side = if swapped { "left" } else { "right" };
            return Err(EvalError::Execution(format!(
                "found duplicate series for the match group {} on the {side} hand-side of the operation: many-to-many matching not allowed: matching labels must be unique on one side",
                signature(&s.labels, m)
            )));
        }
    }
    let mut seen_many: HashSet<Labels> = HashSet::new();
    let mut out_labels: HashSet<Labels> = HashSet::new();
    let mut out = Vec::new();
    for s in &many {
        let sig = signature(&s.labels, m);
        let Some(o) = one_by_sig.get(&sig) else {
            continue;
        };
        if m.group_left.is_none() && !seen_many.insert(sig.clone()) {
            return Err(EvalError::Execution(format!(
                "found duplicate series for the match group {sig} on the left hand-side of the operation: many-to-many matching not allowed: matching labels must be unique on one side"
            )));
        }
        let (l, r) = if swapped {
            (o.value, s.value)
        } else {
            (s.value, o.value)
        };
        let (val, keep) = apply(op, l, r)?;
        let comparison = is_comparison(op);
        if comparison && !m.return_bool && !keep {
            continue;
        }
        let mut labels = s.labels.clone();
        if !comparison || m.return_bool {
            labels = labels.without_name();
        }
        if m.group_left.is_none() {
            labels = if m.on {
                labels.project(&m.labels, true)
            } else {
                labels.project(&m.labels, false)
            };
        }
        for name in &m.include {
            labels = labels.with(name, o.labels.get(name));
        }
        let value = if comparison && m.return_bool {
            if keep { 1.0 } else { 0.0 }
        } else {
            val
        };
        if !out_labels.insert(labels.clone()) {
            return Err(EvalError::Execution(format!(
                "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right); duplicate output {labels}"
            )));
        }
        out.push(Sample { labels, value });
    }
    Ok(out)
}

fn set_op(op: &str, lhs: Vec<Sample>, rhs: Vec<Sample>, m: &Matching) -> Vec<Sample> {
    let rhs_sigs: HashSet<Labels> = rhs.iter().map(|s| signature(&s.labels, m)).collect();
    match op {
        "and" => lhs
            .into_iter()
            .filter(|s| rhs_sigs.contains(&signature(&s.labels, m)))
            .collect(),
        "unless" => lhs
            .into_iter()
            .filter(|s| !rhs_sigs.contains(&signature(&s.labels, m)))
            .collect(),
        _ => {
            let lhs_sigs: HashSet<Labels> = lhs.iter().map(|s| signature(&s.labels, m)).collect();
            let mut out = lhs;
            out.extend(
                rhs.into_iter()
                    .filter(|s| !lhs_sigs.contains(&signature(&s.labels, m))),
            );
            out
        }
    }
}

/// Check a vector for two samples with the same labels.
pub fn check_unique(v: &[Sample]) -> Result<(), EvalError> {
    unique_by(v, |s| &s.labels)
}

/// [`check_unique`] over anything with labels (native histogram samples
/// too).
pub fn unique_by<T>(v: &[T], labels: impl Fn(&T) -> &Labels) -> Result<(), EvalError> {
    if v.len() < 2 {
        return Ok(());
    }
    // Checked at every node that drops names: a fast hasher, not SipHash.
    let mut seen: keel_series::FastMap<&Labels, ()> = keel_series::FastMap::default();
    seen.reserve(v.len());
    for s in v {
        if seen.insert(labels(s), ()).is_some() {
            return Err(EvalError::Execution(format!(
                "vector cannot contain metrics with the same labelset: {}",
                labels(s)
            )));
        }
    }
    Ok(())
}
