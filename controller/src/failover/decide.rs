//! Failover decisions as a pure function of what the probes saw and the
//! time they saw it: no I/O, no clock of their own, so a recorded window
//! (the probe events) decides again the same way in replay.
//!
//! - The primary is healthy when it answers as primary.
//! - Otherwise each probe counts a failure; at `failure_threshold` in a row
//!   the primary is *dead* only if the replicas lost it too: every replica
//!   that answers must report its last pull failed, and at least one must
//!   answer. One that still reaches it means the controller alone is cut
//!   off (a partition), and nothing is done.
//! - Candidates: answering replicas with a priority above 0 and a lag (the
//!   best-known primary position less theirs) within
//!   `maximum_lag_on_failover`. In synchronous mode only a replica at the
//!   highest position among at least `replicas − synchronous_replicas + 1`
//!   answering ones: an acknowledged write is on `synchronous_replicas`
//!   of them, so such a replica holds every one.
//! - The choice: priority, then position, then name.
//! - After an automatic failover, none other for `anti_flapping`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::config::{FailoverConfig, Mode};

/// What one member answered a probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberReport {
    /// `primary`, `replica`, `fenced` or `read_only`.
    pub role: String,
    /// Its epoch.
    pub epoch: u64,
    /// Its replication position: last lsn…
    pub last_lsn: u64,
    /// …and log size in bytes.
    pub wal_bytes: u64,
    /// A replica: whether its last pull from the primary succeeded.
    #[serde(default)]
    pub primary_ok: Option<bool>,
    /// A replica: how old its oldest missing record is (ms).
    #[serde(default)]
    pub lag_ms: u64,
    /// A replica: the primary's last lsn as it last saw it.
    #[serde(default)]
    pub primary_head_lsn: u64,
    /// A replica: the primary's log size as it last saw it.
    #[serde(default)]
    pub primary_head_bytes: u64,
}

/// One probe of one member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Probe {
    /// It answered.
    Answered(MemberReport),
    /// It did not, and why.
    Failed(String),
}

/// One round of probes, at one time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    /// When (ms, the injected clock).
    pub at_ms: i64,
    /// Each member's answer.
    pub members: BTreeMap<String, Probe>,
}

/// What the controller knows of a target between observations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watch {
    /// The primary, as the controller recorded it.
    pub primary: String,
    /// Its epoch.
    pub epoch: u64,
    /// Failed probes of the primary in a row.
    pub failures: u32,
    /// When the first of them was.
    pub first_failure_ms: Option<i64>,
    /// When the last automatic failover was.
    pub last_failover_ms: Option<i64>,
    /// The primary's last lsn when it last answered.
    pub primary_lsn: u64,
    /// Its log size then.
    pub primary_bytes: u64,
}

impl Watch {
    /// A watch of `primary` at `epoch`.
    pub fn new(primary: &str, epoch: u64) -> Self {
        Self {
            primary: primary.to_owned(),
            epoch,
            failures: 0,
            first_failure_ms: None,
            last_failover_ms: None,
            primary_lsn: 0,
            primary_bytes: 0,
        }
    }

    /// `primary` leads at `epoch` from `at_ms` (a failover or switchover
    /// done; `automatic` ones start the anti-flapping period).
    pub fn promoted(
        &mut self,
        primary: &str,
        epoch: u64,
        at_ms: i64,
        automatic: bool,
        report: Option<&MemberReport>,
    ) {
        self.primary = primary.to_owned();
        self.epoch = epoch;
        self.failures = 0;
        self.first_failure_ms = None;
        if automatic {
            self.last_failover_ms = Some(at_ms);
        }
        if let Some(r) = report {
            self.primary_lsn = r.last_lsn;
            self.primary_bytes = r.wal_bytes;
        }
    }
}

/// A replica considered for promotion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// Its name.
    pub name: String,
    /// Its priority.
    pub priority: u32,
    /// Its position: last lsn…
    pub last_lsn: u64,
    /// …and log bytes.
    pub wal_bytes: u64,
    /// Bytes behind the best-known primary position.
    pub lag_bytes: u64,
    /// Why it may not be promoted (none: it may).
    pub refused: Option<String>,
}

/// A failover to carry out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The member to promote.
    pub promote: String,
    /// Under this epoch.
    pub epoch: u64,
    /// Every replica considered, best first.
    pub candidates: Vec<Candidate>,
    /// The best-known primary position (lsn) when it was lost.
    pub reference_lsn: u64,
    /// Asynchronous mode: records the promoted replica lacks of that
    /// position (writes that may be lost); synchronous mode: 0.
    pub beyond_promoted: u64,
    /// One line: why this member.
    pub why: String,
}

/// What one observation means.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// The primary answers as primary.
    Healthy,
    /// The primary failed `failures` probes in a row (fewer than the threshold).
    Suspect {
        /// Failures so far.
        failures: u32,
        /// The last one.
        why: String,
    },
    /// The primary is not answering, and nothing is done: why.
    Hold {
        /// Why not.
        why: String,
    },
    /// Fail over.
    Failover(Plan),
}

fn role_of(p: Option<&Probe>) -> Result<&MemberReport, String> {
    match p {
        Some(Probe::Answered(r)) => Ok(r),
        Some(Probe::Failed(e)) => Err(e.clone()),
        None => Err("not probed".into()),
    }
}

/// Update `w` with `obs` and say what it means under `cfg`.
pub fn observe(cfg: &FailoverConfig, w: &mut Watch, obs: &Observation) -> Verdict {
    let primary = role_of(obs.members.get(&w.primary));
    let why = match primary {
        Ok(r) if r.role == "primary" => {
            w.failures = 0;
            w.first_failure_ms = None;
            w.epoch = w.epoch.max(r.epoch);
            w.primary_lsn = r.last_lsn;
            w.primary_bytes = r.wal_bytes;
            return Verdict::Healthy;
        }
        Ok(r) => format!("{} answers as {} (epoch {})", w.primary, r.role, r.epoch),
        Err(e) => format!("{} does not answer: {e}", w.primary),
    };
    w.failures += 1;
    w.first_failure_ms.get_or_insert(obs.at_ms);
    if w.failures < cfg.failure_threshold {
        return Verdict::Suspect {
            failures: w.failures,
            why,
        };
    }
    let replicas: Vec<(&String, &MemberReport)> = obs
        .members
        .iter()
        .filter(|(n, _)| **n != w.primary)
        .filter_map(|(n, p)| match p {
            Probe::Answered(r) if r.role == "replica" => Some((n, r)),
            _ => None,
        })
        .collect();
    // Only replicas of the current epoch speak for the current primary
    // (one still following a deposed primary reaches that one).
    let still: Vec<&str> = replicas
        .iter()
        .filter(|(_, r)| r.primary_ok == Some(true) && r.epoch >= w.epoch)
        .map(|(n, _)| n.as_str())
        .collect();
    if !still.is_empty() {
        return Verdict::Hold {
            why: format!(
                "{why}, but {} still reach{} it: the controller alone lost sight of it (a partition), no failover",
                still.join(", "),
                if still.len() == 1 { "es" } else { "" }
            ),
        };
    }
    if replicas.is_empty() {
        return Verdict::Hold {
            why: format!("{why}, and no replica answers to confirm it is gone: no failover"),
        };
    }
    if let Some(last) = w.last_failover_ms
        && obs.at_ms < last + cfg.anti_flapping.as_millis() as i64
    {
        return Verdict::Hold {
            why: format!(
                "{why}; anti-flapping: the last failover was {} s ago, the next may come {} s after it",
                (obs.at_ms - last) / 1000,
                cfg.anti_flapping.as_secs()
            ),
        };
    }
    match plan(cfg, w, obs, None) {
        Ok(p) => Verdict::Failover(Plan {
            why: format!(
                "{why}, and every replica that answers lost it too; {}",
                p.why
            ),
            ..p
        }),
        Err(e) => Verdict::Hold {
            why: format!("{why}; {e}"),
        },
    }
}

/// Rank the replicas of `obs` and choose one (`to` when given): the plan,
/// or why none may be promoted.
pub fn plan(
    cfg: &FailoverConfig,
    w: &Watch,
    obs: &Observation,
    to: Option<&str>,
) -> Result<Plan, String> {
    let answering: Vec<(&String, &MemberReport)> = obs
        .members
        .iter()
        .filter(|(n, _)| **n != w.primary)
        .filter_map(|(n, p)| match p {
            Probe::Answered(r) if r.role == "replica" => Some((n, r)),
            _ => None,
        })
        .collect();
    let reference_lsn = answering
        .iter()
        .map(|(_, r)| r.primary_head_lsn)
        .fold(w.primary_lsn, u64::max);
    let reference_bytes = answering
        .iter()
        .map(|(_, r)| r.primary_head_bytes)
        .fold(w.primary_bytes, u64::max);
    // Only replicas of the current epoch hold this epoch's writes: they
    // alone make the quorum and the top position.
    let current = answering.iter().filter(|(_, r)| r.epoch >= w.epoch);
    let top_lsn = current.clone().map(|(_, r)| r.last_lsn).max().unwrap_or(0);
    let current = current.count();
    let replicas = cfg.members.len().saturating_sub(1);
    let quorum = replicas.saturating_sub(cfg.synchronous_replicas as usize) + 1;
    let mut candidates: Vec<Candidate> = answering
        .iter()
        .map(|(n, r)| {
            let priority = cfg.priority(n);
            let lag_bytes = reference_bytes.saturating_sub(r.wal_bytes);
            let refused = if priority == 0 {
                Some("priority 0: never promoted".to_owned())
            } else if r.epoch < w.epoch {
                Some(format!(
                    "on epoch {} (the primary's is {}): it did not follow the last failover, and its position means nothing on this one",
                    r.epoch, w.epoch
                ))
            } else if lag_bytes > cfg.maximum_lag_on_failover {
                Some(format!(
                    "{lag_bytes} bytes behind, beyond maximum_lag_on_failover ({})",
                    cfg.maximum_lag_on_failover
                ))
            } else if r.lag_ms > cfg.maximum_lag_seconds_on_failover.as_millis() as u64 {
                Some(format!(
                    "{:.1} s behind, beyond maximum_lag_seconds_on_failover ({} s)",
                    r.lag_ms as f64 / 1000.0,
                    cfg.maximum_lag_seconds_on_failover.as_secs()
                ))
            } else if cfg.mode == Mode::Synchronous && current < quorum {
                Some(format!(
                    "synchronous mode: only {current} of {replicas} replicas answer on the current epoch; {quorum} are needed to be sure one holds every acknowledged write"
                ))
            } else if cfg.mode == Mode::Synchronous && r.last_lsn < top_lsn {
                Some(format!(
                    "not known to be synchronous: at lsn {}, another replica is at {top_lsn}",
                    r.last_lsn
                ))
            } else {
                None
            };
            Candidate {
                name: (*n).clone(),
                priority,
                last_lsn: r.last_lsn,
                wal_bytes: r.wal_bytes,
                lag_bytes,
                refused,
            }
        })
        .collect();
    candidates.sort_by(|a, b| {
        (
            a.refused.is_some(),
            std::cmp::Reverse(a.priority),
            std::cmp::Reverse(a.last_lsn),
            &a.name,
        )
            .cmp(&(
                b.refused.is_some(),
                std::cmp::Reverse(b.priority),
                std::cmp::Reverse(b.last_lsn),
                &b.name,
            ))
    });
    let chosen = match to {
        Some(name) => {
            if !cfg.members.iter().any(|m| m.name == name) {
                return Err(format!("{name:?} is not a member of {}", cfg.name));
            }
            if name == w.primary {
                return Err(format!("{name} is the primary already"));
            }
            let Some(c) = candidates.iter().find(|c| c.name == name) else {
                return Err(format!(
                    "{name} cannot be promoted: {}",
                    match obs.members.get(name) {
                        Some(Probe::Failed(e)) => format!("it does not answer ({e})"),
                        Some(Probe::Answered(r)) => format!("it is {}, not a replica", r.role),
                        None => "it was not probed".into(),
                    }
                ));
            };
            if let Some(r) = &c.refused {
                return Err(format!("{name} cannot be promoted: {r}"));
            }
            c
        }
        None => match candidates.first() {
            Some(c) if c.refused.is_none() => c,
            Some(_) => {
                let reasons: Vec<String> = candidates
                    .iter()
                    .map(|c| format!("{}: {}", c.name, c.refused.as_deref().unwrap_or("")))
                    .collect();
                return Err(format!(
                    "no replica may be promoted ({})",
                    reasons.join("; ")
                ));
            }
            None => return Err("no replica answers".into()),
        },
    };
    let epoch = obs
        .members
        .values()
        .filter_map(|p| match p {
            Probe::Answered(r) => Some(r.epoch),
            Probe::Failed(_) => None,
        })
        .fold(w.epoch, u64::max)
        + 1;
    let beyond = match cfg.mode {
        Mode::Asynchronous => reference_lsn.saturating_sub(chosen.last_lsn),
        Mode::Synchronous => 0,
    };
    let why = format!(
        "promote {} (priority {}, lsn {}, {} bytes behind) at epoch {epoch}{}",
        chosen.name,
        chosen.priority,
        chosen.last_lsn,
        chosen.lag_bytes,
        match cfg.mode {
            Mode::Asynchronous if beyond > 0 => format!(
                "; asynchronous mode: {beyond} record(s) the primary had (lsn {reference_lsn}) are not on it and are lost"
            ),
            Mode::Asynchronous =>
                "; asynchronous mode: it has every record the primary was seen with".into(),
            Mode::Synchronous => "; synchronous mode: it holds every acknowledged write".into(),
        }
    );
    Ok(Plan {
        promote: chosen.name.clone(),
        epoch,
        candidates: candidates.clone(),
        reference_lsn,
        beyond_promoted: beyond,
        why,
    })
}

#[cfg(test)]
mod tests;
