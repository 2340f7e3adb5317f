//! Replica failover: watch each configured database's primary, and when
//! it is dead — its probes fail `failure_threshold` times in a row *and*
//! the replicas lost it too — fence it, promote the most caught-up
//! eligible replica under a new epoch, and repoint the app, in seconds.
//!
//! - [`config`]: the `controller.failover` section.
//! - [`decide`]: the decisions, a pure function of the probes and their
//!   times (table tests; replay decides again from the recorded probes).
//! - [`driver`]: probing and acting: the sample app's db, or PostgreSQL
//!   ([`postgres`], acting on hosts through [`host`]: the Keel agent's
//!   failover role or an exec hook).
//! - [`Failover`] (here): the loop on the injected clock, manual failover
//!   and switchover, and the events: `failover.probe` (each change of
//!   verdict, with the observation), `failover.detected`,
//!   `failover.candidates`, `failover.fenced`, `failover.promoted`,
//!   `failover.repointed`, `failover.first_write`, `failover.error`, and
//!   `scaling.paused` / `scaling.resumed` for the autoscaling policies
//!   held while it runs. The primary and epoch are saved in the state
//!   store (`keel_failover`).

pub mod config;
pub mod decide;
pub mod driver;
pub mod host;
pub mod postgres;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use keel_core::clock::SharedClock;
use serde::{Deserialize, Serialize};

pub use config::{DriverConfig, FailoverConfig, Member, Mode};
pub use decide::{Candidate, MemberReport, Observation, Plan, Probe, Verdict, Watch};
pub use driver::{Driver, Promoted};

use crate::journal::Journal;
use crate::run::Event;

/// What `GET /api/v1/failover` says of a target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// The target.
    pub name: String,
    /// The primary and epoch the controller records.
    pub primary: String,
    /// Its epoch.
    pub epoch: u64,
    /// `healthy`, `suspect`, `hold`, `failing_over` or `starting`.
    pub state: String,
    /// Why, when not healthy.
    pub why: Option<String>,
    /// The last probe of each member.
    pub members: BTreeMap<String, Probe>,
    /// When the last automatic failover was.
    pub last_failover_ms: Option<i64>,
    /// When the members were last probed.
    pub observed_at_ms: Option<i64>,
}

struct Inner {
    watch: Option<Watch>,
    /// Where each member is, as the driver says.
    addrs: BTreeMap<String, String>,
    last: Option<Observation>,
    /// The last verdict recorded (kind and why), so an unchanged one is
    /// not recorded again every probe.
    recorded: Option<String>,
    state: String,
    why: Option<String>,
    /// After a failover that failed: not again before this (ms), and the
    /// next wait (doubling to 30 s).
    retry_after_ms: i64,
    backoff_ms: i64,
    /// When each member was last asked to rejoin or fenced (ms), and how
    /// many times in a row.
    tidied: BTreeMap<String, (i64, u32)>,
}

/// Resumes the paused policies when dropped, whatever ends the failover.
struct Paused {
    journal: Arc<Journal>,
    policies: Vec<String>,
}

impl Drop for Paused {
    fn drop(&mut self) {
        for p in &self.policies {
            self.journal.resume(p);
        }
    }
}

/// Clears the tidying flag however a round of tidying ends.
struct Tidying<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for Tidying<'_> {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Release);
    }
}

/// The first wait before a failed failover is tried again.
const RETRY_MS: i64 = 1_000;

/// One failover target, running.
pub struct Failover {
    cfg: FailoverConfig,
    driver: Driver,
    clock: SharedClock,
    journal: Arc<Journal>,
    policies: Vec<String>,
    inner: std::sync::Mutex<Inner>,
    /// One failover or switchover at a time.
    acting: tokio::sync::Mutex<()>,
    /// Whether a round of tidying runs.
    tidying: std::sync::atomic::AtomicBool,
    /// Where every probe round is marked for incident bundles.
    marks: std::sync::OnceLock<Arc<keel_core::marks::MarkLog>>,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Failover {
    /// A target from `cfg` (its driver's URL filled in), recording into
    /// `journal` and pausing `policies` it names (or all) while it acts.
    pub fn new(
        cfg: FailoverConfig,
        clock: SharedClock,
        journal: Arc<Journal>,
        policies: Vec<String>,
    ) -> Self {
        Self {
            driver: Driver::new(&cfg, "", journal.fencing()),
            cfg,
            clock,
            journal,
            policies,
            inner: std::sync::Mutex::new(Inner {
                watch: None,
                addrs: BTreeMap::new(),
                last: None,
                recorded: None,
                state: "starting".into(),
                why: None,
                retry_after_ms: 0,
                backoff_ms: RETRY_MS,
                tidied: BTreeMap::new(),
            }),
            acting: tokio::sync::Mutex::new(()),
            tidying: std::sync::atomic::AtomicBool::new(false),
            marks: std::sync::OnceLock::new(),
        }
    }

    /// Mark every probe round (watch and observation) in `marks`.
    pub fn set_marks(&self, marks: Arc<keel_core::marks::MarkLog>) {
        let _ = self.marks.set(marks);
    }

    /// The target's name.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// Check the driver answers and knows every configured member (`at`
    /// names the section in errors); then start watching from what the
    /// database runs now and `saved` (the state store's record), taking
    /// the newer epoch.
    pub async fn start(&self, at: &str, saved: Option<Watch>) -> Result<(), String> {
        let members = self
            .driver
            .members()
            .await
            .map_err(|e| format!("{at}.driver: {e}"))?;
        let unknown: Vec<String> = self
            .cfg
            .members
            .iter()
            .enumerate()
            .filter(|(_, m)| !members.contains_key(&m.name))
            .map(|(i, m)| {
                format!(
                    "{at}.members[{i}].name: {:?} is not a member the driver knows ({})",
                    m.name,
                    members.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            })
            .collect();
        if !unknown.is_empty() {
            return Err(unknown.join("\n"));
        }
        let (primary, epoch) = match self.driver.topology().await {
            Ok(t) => t,
            // Every member down after a whole-cluster restart: the primary
            // the state store remembers, if its host says it is merely
            // stopped, is started again (a standby starts by itself).
            Err(e) => {
                let stopped = match &saved {
                    Some(w) => match members.get(&w.primary) {
                        Some(at) => matches!(
                            self.driver.probe(&w.primary, at, Duration::from_secs(2)).await,
                            Probe::Answered(r) if r.role == "stopped"
                        ),
                        None => false,
                    },
                    None => false,
                };
                let Some(w) = saved.as_ref().filter(|_| stopped) else {
                    return Err(format!("{at}.driver: {e}"));
                };
                tracing::warn!(target = %self.cfg.name, primary = %w.primary, "no member answers as primary; starting the one the state store remembers");
                self.driver
                    .lead_again(&w.primary, w.epoch, &[])
                    .await
                    .map_err(|e2| {
                        format!("{at}.driver: {e}; starting {} failed: {e2}", w.primary)
                    })?;
                self.driver
                    .topology()
                    .await
                    .map_err(|e| format!("{at}.driver: {e}"))?
            }
        };
        if !self.cfg.members.iter().any(|m| m.name == primary) {
            return Err(format!(
                "{at}.members: the primary, {primary:?}, is not listed"
            ));
        }
        self.driver
            .prepare(&primary)
            .await
            .map_err(|e| format!("{at}.driver: {e}"))?;
        // What the database runs now is the truth; the saved record only
        // keeps when the last automatic failover was (anti-flapping).
        let mut watch = Watch::new(&primary, epoch);
        if let Some(saved) = saved {
            if saved.epoch > epoch {
                tracing::warn!(target = %self.cfg.name, saved = saved.epoch, live = epoch, "the state store remembers a newer epoch than the database runs (its data was reset?); following the database");
            }
            watch.last_failover_ms = saved.last_failover_ms;
        }
        let mut g = lock(&self.inner);
        g.addrs = members;
        g.watch = Some(watch);
        g.state = "healthy".into();
        Ok(())
    }

    /// The target's state now.
    pub fn status(&self) -> Status {
        let g = lock(&self.inner);
        let w = g.watch.clone().unwrap_or_else(|| Watch::new("", 0));
        Status {
            name: self.cfg.name.clone(),
            primary: w.primary,
            epoch: w.epoch,
            state: g.state.clone(),
            why: g.why.clone(),
            members: g
                .last
                .as_ref()
                .map(|o| o.members.clone())
                .unwrap_or_default(),
            last_failover_ms: w.last_failover_ms,
            observed_at_ms: g.last.as_ref().map(|o| o.at_ms),
        }
    }

    fn event(&self, kind: &str, explanation: String, detail: serde_json::Value) {
        self.journal.record(Event {
            at_ms: self.clock.now_ms(),
            kind: kind.into(),
            subject: self.cfg.name.clone(),
            explanation,
            decision: Some(detail),
            read_back: None,
        });
    }

    /// Probe every member once, concurrently. Members' addresses are read
    /// from the driver again only after a round in which one did not
    /// answer (a restart keeps its address; a move shows as a failure).
    async fn observe_now(&self) -> Observation {
        let stale = {
            let g = lock(&self.inner);
            g.addrs.is_empty()
                || g.last
                    .as_ref()
                    .is_none_or(|o| o.members.values().any(|p| matches!(p, Probe::Failed(_))))
        };
        if stale && let Ok(m) = self.driver.members().await {
            lock(&self.inner).addrs = m;
        }
        let addrs = lock(&self.inner).addrs.clone();
        let mut set = tokio::task::JoinSet::new();
        for m in &self.cfg.members {
            let driver = self.driver.clone();
            let name = m.name.clone();
            let addr = addrs.get(&m.name).cloned();
            let timeout = self.cfg.probe_timeout;
            set.spawn(async move {
                let p = match addr {
                    Some(a) => driver.probe(&name, &a, timeout).await,
                    None => Probe::Failed("the driver does not list it".into()),
                };
                (name, p)
            });
        }
        let mut members = BTreeMap::new();
        while let Some(r) = set.join_next().await {
            if let Ok((n, p)) = r {
                members.insert(n, p);
            }
        }
        Observation {
            at_ms: self.clock.now_ms(),
            members,
        }
    }

    /// Watch the primary every probe interval, forever.
    pub async fn run(self: Arc<Self>) {
        let mut ticker = keel_core::clock::Ticker::new(self.clock.now(), self.cfg.probe_interval);
        loop {
            ticker.tick(&*self.clock).await;
            if lock(&self.inner).watch.is_none() {
                continue;
            }
            // Probed under the lock manual actions take, so an
            // observation never predates a failover it is judged after.
            let Ok(_turn) = self.acting.try_lock() else {
                continue;
            };
            let obs = self.observe_now().await;
            let (verdict, before) = {
                let mut g = lock(&self.inner);
                let Some(w) = g.watch.as_mut() else { continue };
                let before = w.clone();
                let v = decide::observe(&self.cfg, w, &obs);
                g.last = Some(obs.clone());
                (v, before)
            };
            if let Some(m) = self.marks.get() {
                m.write(&keel_core::marks::Mark::Probe {
                    at_ms: obs.at_ms,
                    target: self.cfg.name.clone(),
                    watch: serde_json::to_value(&before).unwrap_or_default(),
                    observation: serde_json::to_value(&obs).unwrap_or_default(),
                });
            }
            self.note(&verdict, &obs, &before);
            match verdict {
                // Tidying (a rewind can take minutes) runs beside the
                // probes, one round at a time.
                Verdict::Healthy
                    if !self.tidying.swap(true, std::sync::atomic::Ordering::AcqRel) =>
                {
                    let me = self.clone();
                    tokio::spawn(async move {
                        let _done = Tidying(&me.tidying);
                        me.tidy(&obs, &before).await;
                    });
                }
                Verdict::Failover(plan) => {
                    let retry_after = lock(&self.inner).retry_after_ms;
                    if obs.at_ms < retry_after {
                        continue;
                    }
                    // (first failed probe, time to detection); with a
                    // threshold of 1 this very probe was the first.
                    let first = before.first_failure_ms.unwrap_or(obs.at_ms);
                    let failed = self
                        .carry_out(plan, true, &before, Some((first, obs.at_ms - first)))
                        .await
                        .is_err();
                    let mut g = lock(&self.inner);
                    if failed {
                        g.retry_after_ms = self.clock.now_ms() + g.backoff_ms;
                        g.backoff_ms = (g.backoff_ms * 2).min(30_000);
                    } else {
                        g.backoff_ms = RETRY_MS;
                    }
                }
                _ => {}
            }
        }
    }

    /// With the primary healthy: a member that came back read-only (or
    /// fenced) and missed being re-attached is told to follow it, and one
    /// still answering as primary at an older epoch is fenced — each at
    /// most every 2 s, each an event.
    async fn tidy(&self, obs: &Observation, w: &Watch) {
        for (name, p) in &obs.members {
            let Probe::Answered(r) = p else { continue };
            if *name == w.primary {
                continue;
            }
            // Any other member answering as primary at this epoch or an
            // older one (a promotion that went on after it was given up,
            // a restart as primary) is fenced.
            let stray = r.role == "primary" && r.epoch <= w.epoch;
            // A member stopped (PostgreSQL), read-only or fenced, or a
            // replica still on an older epoch (following a deposed primary).
            let idle = matches!(r.role.as_str(), "read_only" | "fenced" | "stopped")
                || (r.role == "replica" && r.epoch < w.epoch);
            if !stray && !idle {
                lock(&self.inner).tidied.remove(name);
                continue;
            }
            let tries = {
                let mut g = lock(&self.inner);
                let (last, tries) = g.tidied.get(name).copied().unwrap_or((i64::MIN / 2, 0));
                if obs.at_ms < last + 2_000 {
                    continue;
                }
                g.tidied.insert(name.clone(), (obs.at_ms, tries + 1));
                tries
            };
            // Only if no failover changed the primary since this
            // observation (tidying runs beside the probes, without the
            // lock failovers take, so a rewind never stops the watch; a
            // member being rewound or fenced is no candidate meanwhile).
            if lock(&self.inner)
                .watch
                .as_ref()
                .map(|x| (x.primary.as_str(), x.epoch))
                != Some((w.primary.as_str(), w.epoch))
            {
                return;
            }
            let target = &self.cfg.name;
            if stray {
                let done = self.driver.fence(name, w.epoch).await.map(|_| ());
                self.event(
                    "failover.fenced",
                    match &done {
                        Ok(()) => format!(
                            "{target}: {name} still answered as primary at epoch {} (the primary is {} at {}): fenced",
                            r.epoch, w.primary, w.epoch
                        ),
                        Err(e) => format!(
                            "{target}: {name} still answers as primary at epoch {} and could not be fenced ({e}); tried again in 2 s",
                            r.epoch
                        ),
                    },
                    serde_json::json!({"member": name, "epoch": w.epoch, "stray": true, "error": done.as_ref().err()}),
                );
            } else {
                // A replica told to follow twice that still runs on an
                // older epoch has diverged: rewind it.
                let rewind = r.role == "replica" && tries >= 2;
                let done = self.driver.rejoin(name, &w.primary, rewind).await;
                self.event(
                    "failover.rejoined",
                    match &done {
                        Ok(()) => format!(
                            "{target}: {name} was {} and now follows {} at epoch {}",
                            r.role, w.primary, w.epoch
                        ),
                        Err(e) => format!(
                            "{target}: {name} is {} and could not be re-attached ({e}); tried again in 2 s",
                            r.role
                        ),
                    },
                    serde_json::json!({"member": name, "was": r.role, "error": done.as_ref().err()}),
                );
            }
        }
    }

    /// Record a verdict that differs from the last one recorded.
    fn note(&self, v: &Verdict, obs: &Observation, before: &Watch) {
        let (state, why) = match v {
            Verdict::Healthy => ("healthy", None),
            Verdict::Suspect { why, .. } => ("suspect", Some(why.clone())),
            Verdict::Hold { why } => ("hold", Some(why.clone())),
            Verdict::Failover(p) => ("failing_over", Some(p.why.clone())),
        };
        let key = format!("{state}\u{0}{}", why.as_deref().unwrap_or(""));
        let mut g = lock(&self.inner);
        g.state = state.into();
        g.why = why.clone();
        if g.recorded.as_deref() == Some(&key) || (state == "healthy" && g.recorded.is_none()) {
            return;
        }
        g.recorded = Some(key);
        drop(g);
        let explanation = match (state, &why) {
            ("healthy", _) => format!(
                "{}: {} answers as primary again",
                self.cfg.name, before.primary
            ),
            (_, Some(w)) => format!("{}: {w}", self.cfg.name),
            _ => self.cfg.name.clone(),
        };
        self.event(
            "failover.probe",
            explanation,
            serde_json::json!({"observation": obs, "watch": before, "verdict": v}),
        );
    }
}

fn join(v: &[&String]) -> String {
    v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
}

mod act;
