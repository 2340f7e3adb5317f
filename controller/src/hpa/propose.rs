//! What each metric proposes: the HPA's ratio with its tolerance, over
//! the instances that count (ready, warming, missing), per instance or
//! averaged.

use super::*;

/// One metric's proposal (`GetMetricReplicas` and friends).
pub(super) fn propose(o: &Observation, inst: &Instances, up_tol: f64, down_tol: f64) -> MetricPart {
    let target = o.target.value();
    let current = inst.current;
    let mut part = MetricPart {
        name: o.name.clone(),
        value: None,
        target,
        ratio: None,
        proposal: None,
        note: String::new(),
    };
    let within = |ratio: f64| {
        if ratio > 1.0 {
            ratio - 1.0 <= up_tol
        } else {
            1.0 - ratio <= down_tol
        }
    };
    if target.is_nan() || target <= 0.0 {
        part.note = "target must be positive".into();
        return part;
    }
    match (&o.reading, o.target) {
        (Reading::Invalid(why), _) => part.note = why.clone(),
        (Reading::Total(v), Target::Total(_)) => {
            let ratio = v / target;
            let ready = inst.ready.len().max(1) as f64;
            part.value = Some(*v);
            part.ratio = Some(ratio);
            part.proposal = Some(if within(ratio) {
                part.note = "within tolerance".into();
                current
            } else {
                (ratio * ready).ceil() as u32
            });
        }
        (Reading::Total(v), Target::AverageOfTotal(_)) => {
            let ratio = v / (target * f64::from(current.max(1)));
            part.value = Some(v / f64::from(current.max(1)));
            part.ratio = Some(ratio);
            part.proposal = Some(if within(ratio) {
                part.note = "within tolerance".into();
                current
            } else {
                (v / target).ceil() as u32
            });
        }
        (Reading::PerInstance(values), Target::PerInstance(_)) => {
            per_instance(values, target, inst, within, &mut part);
        }
        (Reading::PerInstance(_), _) | (Reading::Total(_), Target::PerInstance(_)) => {
            part.note = "the query's shape does not fit its target type".into();
        }
    }
    part
}

/// `calcPlainMetricReplicas`: missing and warming-up instances.
pub(super) fn per_instance(
    values: &BTreeMap<String, f64>,
    target: f64,
    inst: &Instances,
    within: impl Fn(f64) -> bool,
    part: &mut MetricPart,
) {
    let current = inst.current;
    // Readings of instances the actuator does not list are ignored.
    let known: BTreeMap<&str, f64> = values
        .iter()
        .filter(|(k, _)| inst.all.iter().any(|a| a == *k))
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    let ready: BTreeMap<&str, f64> = known
        .iter()
        .filter(|(k, _)| inst.ready.iter().any(|r| r == *k))
        .map(|(k, v)| (*k, *v))
        .collect();
    let unready: Vec<&str> = inst
        .all
        .iter()
        .filter(|a| !inst.ready.contains(a))
        .map(String::as_str)
        .collect();
    let missing: Vec<&str> = inst
        .ready
        .iter()
        .filter(|r| !known.contains_key(r.as_str()))
        .map(String::as_str)
        .collect();
    if ready.is_empty() {
        part.note = "no ready instance has a value".into();
        return;
    }
    let avg = |m: &BTreeMap<&str, f64>| m.values().sum::<f64>() / m.len() as f64;
    let ratio = avg(&ready) / target;
    part.value = Some(avg(&ready));
    part.ratio = Some(ratio);
    let up_with_unready = !unready.is_empty() && ratio > 1.0;
    if !up_with_unready && missing.is_empty() {
        part.proposal = Some(if within(ratio) {
            part.note = "within tolerance".into();
            current
        } else {
            (ratio * ready.len() as f64).ceil() as u32
        });
        return;
    }
    let mut filled = ready.clone();
    let mut notes = Vec::new();
    if !missing.is_empty() {
        // Scaling down: a missing instance is at the target; up: at 0.
        let fill = if ratio < 1.0 { target } else { 0.0 };
        for m in &missing {
            filled.insert(m, fill);
        }
        notes.push(format!(
            "{} missing counted as {}",
            missing.len(),
            if ratio < 1.0 { "100 %" } else { "0" }
        ));
    }
    if up_with_unready {
        for u in &unready {
            filled.insert(u, 0.0);
        }
        notes.push(format!("{} warming up counted as 0", unready.len()));
    }
    let new_ratio = avg(&filled) / target;
    let flips = (ratio < 1.0 && new_ratio > 1.0) || (ratio > 1.0 && new_ratio < 1.0);
    let proposal = (new_ratio * filled.len() as f64).ceil() as u32;
    part.note = notes.join(", ");
    part.proposal = Some(if within(new_ratio) || flips {
        part.note.push_str("; no change once they count");
        current
    } else if (new_ratio < 1.0 && proposal > current) || (new_ratio > 1.0 && proposal < current) {
        current
    } else {
        proposal
    });
}
