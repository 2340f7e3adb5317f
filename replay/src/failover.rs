//! Failover decided again from the recorded probe rounds: each round's
//! observation goes through `decide::observe` under the (recorded or
//! what-if) target configuration. The recorded watch is adopted at the
//! start and whenever the recording's primary or epoch changed (a real
//! failover or switchover happened: what came after it was observed of
//! the new topology); between those, the replay's own watch counts the
//! failures, so a changed `failure_threshold` decides at another probe.
//! A decision is made once per outage (until the primary answers again).

use keel_controller::failover::FailoverConfig;
use keel_controller::failover::decide::{self, Observation, Verdict, Watch};
use keel_core::marks::Mark;
use keel_incident::bundle::Bundle;

/// A failover the replay decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    /// When (ms): the observation that decided it.
    pub at_ms: i64,
    /// The target.
    pub target: String,
    /// The primary lost.
    pub from: String,
    /// The member to promote.
    pub promote: String,
    /// Under this epoch.
    pub epoch: u64,
    /// From the first failed probe to the decision (ms).
    pub detected_after_ms: Option<i64>,
    /// Why this member.
    pub why: String,
}

/// What failover replay found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Replayed {
    /// Failovers decided (at or after the window's start).
    pub decided: Vec<Decided>,
    /// Outages the recording failed over from before the replay decided
    /// (a slower what-if): (the recorded change's time, target). What it
    /// would have done later cannot be known: the topology had changed.
    pub overtaken: Vec<(i64, String)>,
    /// Probe rounds that did not read (a mark of another Keel version).
    pub unreadable: usize,
}

/// The failovers `targets` decide over the bundle's probe rounds.
pub fn replay(bundle: &Bundle, targets: &[FailoverConfig], report_from: i64) -> Replayed {
    let mut r = Replayed::default();
    for cfg in targets {
        let mut w: Option<Watch> = None;
        let mut decided = false;
        for m in &bundle.marks {
            let Mark::Probe {
                target,
                watch,
                observation,
                ..
            } = m
            else {
                continue;
            };
            if *target != cfg.name {
                continue;
            }
            let (Ok(recorded), Ok(obs)) = (
                serde_json::from_value::<Watch>(watch.clone()),
                serde_json::from_value::<Observation>(observation.clone()),
            ) else {
                r.unreadable += 1;
                continue;
            };
            let w = match &mut w {
                Some(w)
                    if (w.primary.as_str(), w.epoch)
                        == (recorded.primary.as_str(), recorded.epoch) =>
                {
                    w
                }
                slot => {
                    if let Some(old) = slot.as_ref()
                        && old.failures > 0
                        && !decided
                        && obs.at_ms >= report_from
                    {
                        r.overtaken.push((obs.at_ms, cfg.name.clone()));
                    }
                    decided = false;
                    slot.insert(recorded)
                }
            };
            let before = w.clone();
            match decide::observe(cfg, w, &obs) {
                Verdict::Failover(plan) if !decided => {
                    decided = true;
                    // Anti-flapping counts from here, as after the live one.
                    w.last_failover_ms = Some(obs.at_ms);
                    if obs.at_ms >= report_from {
                        r.decided.push(Decided {
                            at_ms: obs.at_ms,
                            target: cfg.name.clone(),
                            from: before.primary.clone(),
                            promote: plan.promote,
                            epoch: plan.epoch,
                            // With a threshold of 1 this probe was the first.
                            detected_after_ms: Some(
                                obs.at_ms - before.first_failure_ms.unwrap_or(obs.at_ms),
                            ),
                            why: plan.why,
                        });
                    }
                }
                Verdict::Healthy => decided = false,
                _ => {}
            }
        }
    }
    r.decided
        .sort_by(|a, b| (a.at_ms, &a.target).cmp(&(b.at_ms, &b.target)));
    r.overtaken.sort();
    r
}
