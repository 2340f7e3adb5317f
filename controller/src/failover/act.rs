//! Acting on a verdict: fence the old primary, promote the chosen replica,
//! repoint every client, save the watch; every step an event. A manual
//! failover or switchover takes the same path, and a switchover that
//! cannot finish gives the old primary its role back.

use super::*;

impl Failover {
    /// Carry out `plan`: fence, promote, repoint, save; every step an
    /// event. `before` is the watch the plan was made from.
    pub(super) async fn carry_out(
        &self,
        plan: Plan,
        automatic: bool,
        before: &Watch,
        detected: Option<(i64, i64)>,
    ) -> Result<Promoted, String> {
        let t0 = self.clock.now_ms();
        let old = before.primary.clone();
        let name = &self.cfg.name;
        // The candidate must still answer as a replica right before the
        // old primary is fenced: fencing for a member that died since the
        // plan was made would take the primary down for nothing.
        let at = lock(&self.inner).addrs.get(&plan.promote).cloned();
        let still = match &at {
            Some(at) => {
                self.driver
                    .probe(&plan.promote, at, self.cfg.probe_timeout * 4)
                    .await
            }
            None => Probe::Failed("the driver does not list it".into()),
        };
        if !matches!(&still, Probe::Answered(r) if r.role == "replica") {
            let e = format!(
                "{} no longer answers as a replica ({}); nothing was fenced or promoted",
                plan.promote,
                match still {
                    Probe::Answered(r) => r.role,
                    Probe::Failed(e) => e,
                }
            );
            self.event(
                "failover.error",
                format!("{name}: {e}"),
                serde_json::json!({"member": plan.promote, "error": e}),
            );
            return Err(e);
        }
        self.event(
            "failover.detected",
            format!(
                "{name}: {} — {}",
                if automatic { "primary lost" } else { "failover asked for" },
                plan.why
            ),
            serde_json::json!({"primary": old, "epoch": before.epoch, "automatic": automatic, "detection_ms": detected.map(|d| d.1), "first_failure_ms": detected.map(|d| d.0)}),
        );
        let paused: Vec<&String> = self
            .policies
            .iter()
            .filter(|p| self.cfg.pauses(p))
            .collect();
        for p in &paused {
            self.journal.pause(p, &format!("{name} fails over"));
        }
        let guard = Paused {
            journal: self.journal.clone(),
            policies: paused.iter().map(|p| (*p).clone()).collect(),
        };
        if !paused.is_empty() {
            self.event(
                "scaling.paused",
                format!(
                    "{name}: autoscaling of {} paused during the failover",
                    join(&paused)
                ),
                serde_json::json!({"policies": paused}),
            );
        }
        self.event(
            "failover.candidates",
            format!(
                "{name}: {}",
                plan.candidates
                    .iter()
                    .map(|c| format!(
                        "{} (priority {}, lsn {}, {} B behind{})",
                        c.name,
                        c.priority,
                        c.last_lsn,
                        c.lag_bytes,
                        c.refused.as_ref().map(|r| format!("; refused: {r}")).unwrap_or_default()
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            serde_json::json!({"candidates": plan.candidates, "reference_lsn": plan.reference_lsn, "chosen": plan.promote, "why": plan.why}),
        );
        let fenced = self.driver.fence(&old, plan.epoch).await;
        self.event(
            "failover.fenced",
            match &fenced {
                Ok(_) => format!("{name}: {old} fenced at epoch {}: it takes no writes", plan.epoch),
                Err(e) => format!("{name}: {old} could not be fenced ({e}); promoting anyway — if it answers again as primary at the old epoch it is fenced then, and if it restarts it comes back read-only"),
            },
            serde_json::json!({"member": old, "epoch": plan.epoch, "fenced": fenced.is_ok(), "error": fenced.as_ref().err()}),
        );
        let t_promote = self.clock.now_ms();
        let outcome = self
            .driver
            .promote(&plan.promote, plan.epoch, &self.cfg.repoint())
            .await;
        let result = match outcome {
            Err(e) => {
                self.event(
                    "failover.error",
                    format!("{name}: promoting {} failed: {e}; the primary stays {old} and the next probe decides again", plan.promote),
                    serde_json::json!({"member": plan.promote, "epoch": plan.epoch, "error": e}),
                );
                Err(e)
            }
            Ok(p) => {
                let now = self.clock.now_ms();
                let watch = {
                    let mut g = lock(&self.inner);
                    let mut w = g.watch.clone().unwrap_or_else(|| before.clone());
                    let report = g
                        .last
                        .as_ref()
                        .and_then(|o| match o.members.get(&plan.promote) {
                            Some(Probe::Answered(r)) => Some(r.clone()),
                            _ => None,
                        });
                    w.promoted(
                        &plan.promote,
                        p.epoch.unwrap_or(plan.epoch),
                        now,
                        automatic,
                        report.as_ref(),
                    );
                    g.watch = Some(w.clone());
                    g.recorded = None;
                    g.state = "healthy".into();
                    g.why = None;
                    w
                };
                if let Ok(doc) = serde_json::to_string(&watch) {
                    self.journal
                        .save(keel_state::Table::Failover, name, now, doc);
                }
                self.event(
                    "failover.promoted",
                    format!("{name}: {} promoted to primary at epoch {} (lsn {}); {}", plan.promote, plan.epoch, p.lsn, match self.cfg.mode {
                        Mode::Asynchronous if plan.beyond_promoted > 0 => format!("{} record(s) the old primary was seen with are not on it", plan.beyond_promoted),
                        Mode::Asynchronous => "nothing the old primary was seen with is missing".into(),
                        Mode::Synchronous => "synchronous mode: no acknowledged write is lost".into(),
                    }),
                    serde_json::json!({"primary": plan.promote, "epoch": plan.epoch, "lsn": p.lsn, "beyond_promoted": plan.beyond_promoted, "mode": self.cfg.mode, "promote_ms": now - t_promote, "since_detected_ms": now - t0}),
                );
                self.event(
                    "failover.repointed",
                    format!(
                        "{name}: {} now write to {}{}; {} follow it{}",
                        if p.repointed.is_empty() { "no client".into() } else { p.repointed.join(", ") },
                        plan.promote,
                        if p.restarted.is_empty() { String::new() } else { format!(" ({} restarted to take the new topology)", p.restarted.join(", ")) },
                        if p.followed.is_empty() { "no member".into() } else { p.followed.join(", ") },
                        if p.unreachable.is_empty() { String::new() } else { format!("; {} did not answer and follow when back", p.unreachable.join(", ")) },
                    ),
                    serde_json::json!({"repointed": p.repointed, "restarted": p.restarted, "followed": p.followed, "unreachable": p.unreachable, "promoted_at_ms": p.promoted_at_ms, "repointed_at_ms": p.repointed_at_ms}),
                );
                Ok(p)
            }
        };
        drop(guard);
        if !paused.is_empty() {
            self.event(
                "scaling.resumed",
                format!("{name}: autoscaling of {} resumed", join(&paused)),
                serde_json::json!({"policies": paused}),
            );
        }
        if let Ok(p) = &result {
            self.first_write(plan.promote.clone(), p.lsn, t0);
        }
        result
    }

    /// Record, on a task of its own, when the new primary accepts its
    /// first write (its lsn passes the promotion's), within 60 s.
    pub(super) fn first_write(&self, member: String, promoted_lsn: u64, t0: i64) {
        let addr = lock(&self.inner).addrs.get(&member).cloned();
        let (driver, clock, journal, name, timeout) = (
            self.driver.clone(),
            self.clock.clone(),
            self.journal.clone(),
            self.cfg.name.clone(),
            self.cfg.probe_timeout,
        );
        let Some(addr) = addr else { return };
        tokio::spawn(async move {
            let deadline = clock.now_ms() + 60_000;
            while clock.now_ms() < deadline {
                if let Probe::Answered(r) = driver.probe(&member, &addr, timeout).await
                    && r.role == "primary"
                    && r.last_lsn > promoted_lsn
                {
                    let now = clock.now_ms();
                    journal.record(Event {
                        at_ms: now,
                        kind: "failover.first_write".into(),
                        subject: name.clone(),
                        explanation: format!("{name}: {member} accepted its first write {} ms after the failover began", now - t0),
                        decision: Some(serde_json::json!({"member": member, "lsn": r.last_lsn, "since_detected_ms": now - t0})),
                        read_back: None,
                    });
                    return;
                }
                clock.sleep(Duration::from_millis(50)).await;
            }
        });
    }

    /// Fail over now to `to` (or the best replica), whatever the primary's
    /// state; refused, changing nothing, when the member may not be
    /// promoted.
    pub async fn failover(&self, to: Option<&str>) -> Result<Promoted, String> {
        let _turn = self.acting.lock().await;
        let obs = self.observe_now().await;
        let before = lock(&self.inner)
            .watch
            .clone()
            .ok_or_else(|| format!("{}: not started", self.cfg.name))?;
        let plan = decide::plan(&self.cfg, &before, &obs, to)?;
        lock(&self.inner).last = Some(obs);
        self.carry_out(plan, false, &before, None).await
    }

    /// A planned switchover to `to` (or the best replica) that loses
    /// nothing: the primary must be healthy; it is fenced, the candidate
    /// must catch up with it (10 s at most, else the old primary leads
    /// again under a newer epoch), then it is promoted.
    pub async fn switchover(&self, to: Option<&str>) -> Result<Promoted, String> {
        let _turn = self.acting.lock().await;
        let obs = self.observe_now().await;
        let before = lock(&self.inner)
            .watch
            .clone()
            .ok_or_else(|| format!("{}: not started", self.cfg.name))?;
        let Some(Probe::Answered(p)) = obs.members.get(&before.primary).cloned() else {
            return Err(format!(
                "{} does not answer: a switchover needs a healthy primary (use failover)",
                before.primary
            ));
        };
        if p.role != "primary" {
            return Err(format!(
                "{} answers as {}: a switchover needs a healthy primary (use failover)",
                before.primary, p.role
            ));
        }
        let mut w = before.clone();
        w.primary_lsn = p.last_lsn;
        w.primary_bytes = p.wal_bytes;
        // A switchover waits for the candidate to reach the fenced
        // primary's last position before promoting it, so a standby a few
        // bytes behind another under load is fine: synchronous mode's
        // "only the most advanced" rule is for a primary that is gone.
        let relaxed = FailoverConfig {
            mode: Mode::Asynchronous,
            ..self.cfg.clone()
        };
        let plan = decide::plan(&relaxed, &w, &obs, to)?;
        lock(&self.inner).last = Some(obs);
        let final_lsn = self
            .driver
            .fence(&before.primary, plan.epoch)
            .await
            .map_err(|e| format!("fencing {}: {e}; nothing changed", before.primary))?;
        // PostgreSQL: without the shutdown checkpoint's position (an
        // immediate shutdown, a hook that did not say) nothing proves the
        // candidate has every commit: the old primary starts again.
        if final_lsn.is_none() && matches!(self.driver, Driver::Postgres(_)) {
            let why = format!(
                "{} stopped without a clean shutdown checkpoint, so {} cannot be shown to hold every commit",
                before.primary, plan.promote
            );
            return Err(self.give_back(&before.primary, before.epoch, why).await);
        }
        // The last lsn it took, now that it takes no more: past its
        // shutdown checkpoint (PostgreSQL), or as it answers (sample).
        let addrs = lock(&self.inner).addrs.clone();
        let old_lsn = match (final_lsn, addrs.get(&before.primary)) {
            (Some(l), _) => l + 1,
            (None, Some(a)) => match self
                .driver
                .probe(&before.primary, a, self.cfg.probe_timeout * 4)
                .await
            {
                Probe::Answered(r) => r.last_lsn,
                Probe::Failed(_) => p.last_lsn,
            },
            (None, None) => p.last_lsn,
        };
        let deadline = self.clock.now_ms() + 10_000;
        let caught_up = loop {
            if let Some(a) = addrs.get(&plan.promote)
                && let Probe::Answered(r) = self
                    .driver
                    .probe(&plan.promote, a, self.cfg.probe_timeout * 4)
                    .await
                && r.last_lsn >= old_lsn
            {
                break true;
            }
            if self.clock.now_ms() >= deadline {
                break false;
            }
            self.clock.sleep(Duration::from_millis(20)).await;
        };
        if !caught_up {
            let why = format!(
                "{} did not catch up with {} (lsn {old_lsn}) within 10 s",
                plan.promote, before.primary
            );
            return Err(self.give_back(&before.primary, plan.epoch + 1, why).await);
        }
        let plan = Plan {
            why: format!(
                "switchover (planned, nothing lost: {} fenced at lsn {old_lsn} and {} caught up): promote {} at epoch {}",
                before.primary, plan.promote, plan.promote, plan.epoch
            ),
            beyond_promoted: 0,
            ..plan
        };
        self.carry_out(plan, false, &before, None).await
    }

    /// A switchover that cannot finish (`why`): the fenced `primary` leads
    /// again at `epoch`; the error, also recorded as an event.
    pub(super) async fn give_back(&self, primary: &str, epoch: u64, why: String) -> String {
        let back = self
            .driver
            .lead_again(primary, epoch, &self.cfg.repoint())
            .await;
        let e = format!(
            "{why}; {}",
            match back {
                Ok(()) => format!("{primary} leads again at epoch {epoch}"),
                Err(e) => format!("and {primary} could not lead again ({e}): fail over by hand"),
            }
        );
        self.event(
            "failover.error",
            format!("{}: switchover: {e}", self.cfg.name),
            serde_json::json!({"error": e}),
        );
        e
    }
}
