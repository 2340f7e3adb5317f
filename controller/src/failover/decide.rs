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
mod tests {
    use super::*;
    use crate::failover::config::{DriverConfig, Member};
    use std::time::Duration;

    fn cfg(mode: Mode) -> FailoverConfig {
        FailoverConfig {
            name: "db".into(),
            driver: DriverConfig::Sample {
                supervisor: String::new(),
            },
            members: ["db-1", "db-2", "db-3"]
                .iter()
                .map(|n| Member::named(n))
                .collect(),
            probe_interval: Duration::from_millis(250),
            probe_timeout: Duration::from_millis(200),
            failure_threshold: 3,
            maximum_lag_on_failover: 1000,
            maximum_lag_seconds_on_failover: Duration::from_secs(30),
            mode,
            synchronous_replicas: 1,
            anti_flapping: Duration::from_secs(300),
            repoint: None,
            pause_policies: Vec::new(),
        }
    }

    fn primary(lsn: u64) -> Probe {
        Probe::Answered(MemberReport {
            role: "primary".into(),
            epoch: 1,
            last_lsn: lsn,
            wal_bytes: lsn * 100,
            primary_ok: None,
            lag_ms: 0,
            primary_head_lsn: 0,
            primary_head_bytes: 0,
        })
    }

    fn replica(lsn: u64, sees_primary: bool) -> Probe {
        Probe::Answered(MemberReport {
            role: "replica".into(),
            epoch: 1,
            last_lsn: lsn,
            wal_bytes: lsn * 100,
            primary_ok: Some(sees_primary),
            lag_ms: 0,
            primary_head_lsn: 0,
            primary_head_bytes: 0,
        })
    }

    fn at_epoch(p: Probe, epoch: u64) -> Probe {
        match p {
            Probe::Answered(r) => Probe::Answered(MemberReport { epoch, ..r }),
            failed => failed,
        }
    }

    #[test]
    fn a_replica_left_on_an_older_epoch_is_never_promoted_nor_counted() {
        let c = cfg(Mode::Synchronous);
        let mut w = Watch::new("db-1", 2);
        // db-3 did not follow the last failover: further ahead in numbers,
        // but on epoch 1's history.
        let m = || {
            [
                ("db-1", down()),
                ("db-2", at_epoch(replica(50, false), 2)),
                ("db-3", replica(90, false)),
            ]
        };
        let Verdict::Hold { why } = feed(&c, &mut w, 0, 3, m) else {
            panic!("synchronous mode needs both replicas on epoch 2")
        };
        assert!(
            why.contains("only 1 of 2 replicas answer on the current epoch"),
            "{why}"
        );
        let err = plan(&cfg(Mode::Asynchronous), &w, &obs(1000, m()), Some("db-3")).unwrap_err();
        assert!(err.contains("on epoch 1 (the primary's is 2)"), "{err}");
        let p = plan(&cfg(Mode::Asynchronous), &w, &obs(1000, m()), None).expect("db-2 may be");
        assert_eq!(p.promote, "db-2");
    }

    fn down() -> Probe {
        Probe::Failed("connection refused".into())
    }

    fn obs(at_ms: i64, m: [(&str, Probe); 3]) -> Observation {
        Observation {
            at_ms,
            members: m.into_iter().map(|(n, p)| (n.to_owned(), p)).collect(),
        }
    }

    /// Feed `n` identical observations 250 ms apart from `t0`; the last verdict.
    fn feed(
        c: &FailoverConfig,
        w: &mut Watch,
        t0: i64,
        n: usize,
        m: impl Fn() -> [(&'static str, Probe); 3],
    ) -> Verdict {
        let mut v = Verdict::Healthy;
        for i in 0..n {
            v = observe(c, w, &obs(t0 + i as i64 * 250, m()));
        }
        v
    }

    #[test]
    fn a_dead_primary_is_failed_over_only_after_the_threshold_to_the_most_caught_up_replica() {
        let c = cfg(Mode::Asynchronous);
        let mut w = Watch::new("db-1", 1);
        assert_eq!(
            observe(
                &c,
                &mut w,
                &obs(
                    0,
                    [
                        ("db-1", primary(50)),
                        ("db-2", replica(48, true)),
                        ("db-3", replica(50, true))
                    ]
                )
            ),
            Verdict::Healthy
        );
        let dead = || {
            [
                ("db-1", down()),
                ("db-2", replica(48, false)),
                ("db-3", replica(50, false)),
            ]
        };
        assert!(matches!(
            feed(&c, &mut w, 250, 2, dead),
            Verdict::Suspect { failures: 2, .. }
        ));
        let Verdict::Failover(p) = feed(&c, &mut w, 750, 1, dead) else {
            panic!("the third failure fails over")
        };
        assert_eq!((p.promote.as_str(), p.epoch), ("db-3", 2));
        assert_eq!(p.candidates[1].name, "db-2");
        assert_eq!(
            p.beyond_promoted, 0,
            "db-3 had lsn 50, all the primary was seen with"
        );
    }

    #[test]
    fn a_partition_of_the_controller_alone_never_fails_over() {
        let c = cfg(Mode::Asynchronous);
        let mut w = Watch::new("db-1", 1);
        let cut = || {
            [
                ("db-1", down()),
                ("db-2", replica(50, true)),
                ("db-3", replica(50, false)),
            ]
        };
        let v = feed(&c, &mut w, 0, 20, cut);
        let Verdict::Hold { why } = v else {
            panic!("{v:?}")
        };
        assert!(why.contains("db-2 still reaches it"), "{why}");
        assert!(why.contains("partition"), "{why}");
        // No replica answers at all: nothing to confirm with either.
        let mut w = Watch::new("db-1", 1);
        let alone = || [("db-1", down()), ("db-2", down()), ("db-3", down())];
        let Verdict::Hold { why } = feed(&c, &mut w, 0, 5, alone) else {
            panic!()
        };
        assert!(why.contains("no replica answers"), "{why}");
    }

    #[test]
    fn a_replica_beyond_the_lag_limit_is_never_promoted() {
        let c = cfg(Mode::Asynchronous);
        let mut w = Watch::new("db-1", 1);
        observe(
            &c,
            &mut w,
            &obs(
                0,
                [
                    ("db-1", primary(100)),
                    ("db-2", replica(100, true)),
                    ("db-3", replica(20, true)),
                ],
            ),
        );
        // db-2 (the caught-up one) has priority 0: db-3 is 8,000 bytes behind.
        let mut c2 = c.clone();
        c2.members[1].priority = 0;
        let dead = || {
            [
                ("db-1", down()),
                ("db-2", replica(100, false)),
                ("db-3", replica(20, false)),
            ]
        };
        let Verdict::Hold { why } = feed(&c2, &mut w, 250, 3, dead) else {
            panic!()
        };
        assert!(why.contains("beyond maximum_lag_on_failover"), "{why}");
        assert!(why.contains("priority 0"), "{why}");
        // A manual failover to it is refused with the same reason.
        let err = plan(&c, &w, &obs(1000, dead()), Some("db-3")).unwrap_err();
        assert!(err.contains("8000 bytes behind"), "{err}");
    }

    #[test]
    fn a_replica_more_than_30_seconds_behind_is_never_promoted() {
        let c = cfg(Mode::Asynchronous);
        let mut w = Watch::new("db-1", 1);
        let stale = |lag_ms| match replica(50, false) {
            Probe::Answered(r) => Probe::Answered(MemberReport { lag_ms, ..r }),
            p => p,
        };
        let dead = || {
            [
                ("db-1", down()),
                ("db-2", stale(31_000)),
                ("db-3", stale(29_000)),
            ]
        };
        let Verdict::Failover(p) = feed(&c, &mut w, 0, 3, dead) else {
            panic!()
        };
        assert_eq!(p.promote, "db-3");
        let refused = p.candidates[1].refused.clone().unwrap_or_default();
        assert!(
            refused.contains("31.0 s behind, beyond maximum_lag_seconds_on_failover (30 s)"),
            "{refused}"
        );
    }

    #[test]
    fn priority_comes_before_position_and_async_loss_is_counted() {
        let mut c = cfg(Mode::Asynchronous);
        c.maximum_lag_on_failover = 10_000;
        c.members[1].priority = 2;
        let mut w = Watch::new("db-1", 1);
        observe(
            &c,
            &mut w,
            &obs(
                0,
                [
                    ("db-1", primary(60)),
                    ("db-2", replica(55, true)),
                    ("db-3", replica(58, true)),
                ],
            ),
        );
        let dead = || {
            [
                ("db-1", down()),
                ("db-2", replica(55, false)),
                ("db-3", replica(58, false)),
            ]
        };
        let Verdict::Failover(p) = feed(&c, &mut w, 250, 3, dead) else {
            panic!()
        };
        assert_eq!(p.promote, "db-2");
        assert_eq!(
            p.beyond_promoted, 5,
            "the primary was seen at 60, db-2 has 55"
        );
        assert!(p.why.contains("5 record(s)"), "{}", p.why);
    }

    #[test]
    fn synchronous_mode_promotes_only_the_highest_of_a_quorum() {
        let c = cfg(Mode::Synchronous);
        let mut w = Watch::new("db-1", 1);
        observe(
            &c,
            &mut w,
            &obs(
                0,
                [
                    ("db-1", primary(60)),
                    ("db-2", replica(60, true)),
                    ("db-3", replica(58, true)),
                ],
            ),
        );
        // One replica down: 1 of 2 answer, 2 needed (an acknowledged write
        // may be only on the one that does not answer).
        let one = || {
            [
                ("db-1", down()),
                ("db-2", down()),
                ("db-3", replica(58, false)),
            ]
        };
        let Verdict::Hold { why } = feed(&c, &mut w, 250, 3, one) else {
            panic!()
        };
        assert!(why.contains("2 are needed"), "{why}");
        // Both answer: the highest, and the lower one is refused by name.
        let mut w = Watch::new("db-1", 1);
        let both = || {
            [
                ("db-1", down()),
                ("db-2", replica(60, false)),
                ("db-3", replica(58, false)),
            ]
        };
        let Verdict::Failover(p) = feed(&c, &mut w, 250, 3, both) else {
            panic!()
        };
        assert_eq!(p.promote, "db-2");
        assert!(
            p.candidates[1]
                .refused
                .as_deref()
                .is_some_and(|r| r.contains("not known to be synchronous"))
        );
        let err = plan(&c, &w, &obs(1000, both()), Some("db-3")).unwrap_err();
        assert!(err.contains("not known to be synchronous"), "{err}");
    }

    #[test]
    fn anti_flapping_blocks_a_second_automatic_failover() {
        let c = cfg(Mode::Asynchronous);
        let mut w = Watch::new("db-1", 1);
        w.promoted("db-2", 2, 10_000, true, None);
        // Both replicas followed db-2 to epoch 2.
        let dead = || {
            [
                ("db-1", at_epoch(replica(50, false), 2)),
                ("db-2", down()),
                ("db-3", at_epoch(replica(50, false), 2)),
            ]
        };
        let Verdict::Hold { why } = feed(&c, &mut w, 20_000, 3, dead) else {
            panic!()
        };
        assert!(why.contains("anti-flapping"), "{why}");
        // After the period, it may.
        let mut w2 = w.clone();
        w2.failures = 0;
        let v = feed(&c, &mut w2, 10_000 + 300_000, 3, dead);
        assert!(
            matches!(v, Verdict::Failover(ref p) if p.epoch == 3),
            "{v:?}"
        );
    }

    #[test]
    fn a_restarted_read_only_primary_is_still_a_failure_and_not_a_candidate() {
        let c = cfg(Mode::Asynchronous);
        let mut w = Watch::new("db-1", 1);
        let ro = Probe::Answered(MemberReport {
            role: "read_only".into(),
            epoch: 1,
            last_lsn: 70,
            wal_bytes: 7000,
            primary_ok: None,
            lag_ms: 0,
            primary_head_lsn: 0,
            primary_head_bytes: 0,
        });
        let back = || {
            [
                ("db-1", ro.clone()),
                ("db-2", replica(50, false)),
                ("db-3", replica(50, false)),
            ]
        };
        let Verdict::Failover(p) = feed(&c, &mut w, 0, 3, back) else {
            panic!()
        };
        assert!(p.why.contains("answers as read_only"), "{}", p.why);
        assert_ne!(p.promote, "db-1");
    }

    #[test]
    fn a_manual_failover_names_what_is_wrong_with_the_member() {
        let c = cfg(Mode::Asynchronous);
        let w = Watch::new("db-1", 1);
        let o = obs(
            0,
            [
                ("db-1", primary(5)),
                ("db-2", down()),
                ("db-3", replica(5, true)),
            ],
        );
        assert!(
            plan(&c, &w, &o, Some("db-9"))
                .unwrap_err()
                .contains("not a member")
        );
        assert!(
            plan(&c, &w, &o, Some("db-1"))
                .unwrap_err()
                .contains("primary already")
        );
        assert!(
            plan(&c, &w, &o, Some("db-2"))
                .unwrap_err()
                .contains("does not answer")
        );
        assert_eq!(
            plan(&c, &w, &o, Some("db-3")).map(|p| p.promote),
            Ok("db-3".into())
        );
    }
}
