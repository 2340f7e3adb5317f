//! The rules the collector runs: loaded from `collector.rules.files`,
//! evaluated each group on its own interval on the injected Clock, and
//! reloaded when a file changes (checked every `reload_interval`) or on
//! `POST /-/reload`. A reload that fails leaves the last good rules
//! running, and its error is shown in `/api/v1/rules`. Alerts of a rule
//! that is still there after a reload (same group, same alert name) keep
//! their state, as in Prometheus.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use keel_core::clock::SharedClock;
use serde::{Deserialize, Serialize};

use super::engine::{GroupState, Source};
use super::file::{self, SeverityMapping};

/// The `collector.rules` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Rule files and directories (their `*.yml`/`*.yaml`); none: no rules.
    pub files: Vec<PathBuf>,
    /// A group's interval when it gives none.
    #[serde(with = "keel_core::duration")]
    pub evaluation_interval: Duration,
    /// How often the files are checked for changes (0: only on
    /// `POST /-/reload`).
    #[serde(with = "keel_core::duration")]
    pub reload_interval: Duration,
    /// Severities of rules that do not say `severity:`.
    pub severity_mapping: SeverityMapping,
    /// Labels templates see as `$externalLabels`.
    pub external_labels: BTreeMap<String, String>,
    /// Also evaluate a group when new samples arrive: at once if at least
    /// half its interval has passed since its last evaluation, else half
    /// an interval after it. A crossing is seen within half an interval
    /// of landing rather than a whole one, for at most twice the
    /// evaluations.
    pub evaluate_on_arrival: bool,
}

impl Default for RulesConfig {
    fn default() -> Self {
        Self {
            files: Vec::new(),
            evaluation_interval: Duration::from_secs(15),
            reload_interval: Duration::from_secs(2),
            severity_mapping: SeverityMapping::default(),
            external_labels: BTreeMap::new(),
            evaluate_on_arrival: true,
        }
    }
}

impl RulesConfig {
    /// Push a message per problem (named `collector.rules.…`).
    pub fn validate(&self, problems: &mut Vec<String>) {
        if self.evaluation_interval.is_zero() {
            problems.push("collector.rules.evaluation_interval: must be positive".into());
        }
        for (k, v) in &self.severity_mapping.values {
            if file::Severity::parse(v).is_none() {
                problems.push(format!(
                    "collector.rules.severity_mapping.values.{k}: {v:?} is not P0, P1 or P2"
                ));
            }
        }
    }
}

/// The last reload.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadStatus {
    /// Whether it loaded.
    pub success: bool,
    /// Why not (every problem, file:line:column).
    pub error: Option<String>,
    /// When (ms).
    pub at_ms: i64,
}

struct Scheduled {
    state: GroupState,
    next_ms: i64,
    /// When it was last evaluated.
    last_ms: Option<i64>,
    /// How long its last evaluation took (wall time, for the operator:
    /// a group near its interval is a limit coming).
    last_duration: std::time::Duration,
}

struct Inner {
    groups: Vec<Scheduled>,
    reload: ReloadStatus,
    /// The files' modification times when last loaded.
    stamps: Vec<(PathBuf, Option<SystemTime>)>,
    /// Where alert state is saved (none: it is not).
    persist: Option<super::persist::AlertPersist>,
}

impl Inner {
    fn save(&mut self, now_ms: i64) {
        if let Some(p) = &mut self.persist {
            p.sync(now_ms, self.groups.iter().map(|g| &g.state));
        }
    }
}

/// The collector's rules.
pub struct RuleManager {
    config: RulesConfig,
    source: Box<dyn Source + Send + Sync>,
    clock: SharedClock,
    inner: Mutex<Inner>,
    changed: tokio::sync::Notify,
    notifier: std::sync::OnceLock<Arc<crate::notify::Notifier>>,
    /// Signalled when samples arrive (see `evaluate_on_arrival`).
    arrivals: std::sync::OnceLock<Arc<tokio::sync::Notify>>,
    /// Where each group's evaluation is marked for incident bundles.
    marks: std::sync::OnceLock<Arc<keel_core::marks::MarkLog>>,
}

fn stamps(config: &RulesConfig) -> Vec<(PathBuf, Option<SystemTime>)> {
    let mut out: Vec<(PathBuf, Option<SystemTime>)> = config
        .files
        .iter()
        .map(|p| {
            (
                p.clone(),
                std::fs::metadata(p).and_then(|m| m.modified()).ok(),
            )
        })
        .collect();
    if let Ok(files) = file::rule_files(&config.files) {
        out.extend(files.into_iter().map(|f| {
            let t = std::fs::metadata(&f).and_then(|m| m.modified()).ok();
            (f, t)
        }));
    }
    out
}

impl RuleManager {
    /// Load the rules (a failure is the caller's: the collector does not
    /// start on bad rules, as Prometheus does not).
    pub fn new(
        config: RulesConfig,
        source: Box<dyn Source + Send + Sync>,
        clock: SharedClock,
    ) -> Result<Arc<Self>, file::RuleErrors> {
        let groups = Self::load(&config)?;
        let now = clock.now_ms();
        let inner = Inner {
            groups: groups
                .into_iter()
                .map(|g| Scheduled {
                    state: GroupState::new(g),
                    next_ms: now,
                    last_ms: None,
                    last_duration: Default::default(),
                })
                .collect(),
            reload: ReloadStatus {
                success: true,
                error: None,
                at_ms: now,
            },
            stamps: stamps(&config),
            persist: None,
        };
        Ok(Arc::new(Self {
            config,
            source,
            clock,
            inner: Mutex::new(inner),
            changed: tokio::sync::Notify::new(),
            notifier: std::sync::OnceLock::new(),
            arrivals: std::sync::OnceLock::new(),
            marks: std::sync::OnceLock::new(),
        }))
    }

    fn load(config: &RulesConfig) -> Result<Vec<file::Group>, file::RuleErrors> {
        if config.files.is_empty() {
            return Ok(Vec::new());
        }
        file::load(
            &config.files,
            config.evaluation_interval,
            &config.severity_mapping,
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Load the files again; on success the new rules replace the old
    /// (keeping the state of alerts that are still defined), on failure
    /// the old ones keep running and the error is kept for the API.
    pub fn reload(&self) -> Result<(), file::RuleErrors> {
        let now = self.clock.now_ms();
        let loaded = Self::load(&self.config);
        let mut inner = self.lock();
        inner.stamps = stamps(&self.config);
        match loaded {
            Err(e) => {
                tracing::error!(error = %e, "rule reload failed; the last good rules keep running");
                inner.reload = ReloadStatus {
                    success: false,
                    error: Some(e.to_string()),
                    at_ms: now,
                };
                Err(e)
            }
            Ok(groups) => {
                let mut old: Vec<Scheduled> = std::mem::take(&mut inner.groups);
                inner.groups = groups
                    .into_iter()
                    .map(|g| {
                        let mut state = GroupState::new(g);
                        let mut next_ms = now;
                        let mut last_ms = None;
                        let mut last_duration = Default::default();
                        if let Some(i) = old.iter().position(|o| {
                            o.state.group.name == state.group.name
                                && o.state.group.file == state.group.file
                        }) {
                            let o = old.swap_remove(i);
                            state.adopt(o.state);
                            next_ms = o.next_ms;
                            last_ms = o.last_ms;
                            last_duration = o.last_duration;
                        }
                        Scheduled {
                            state,
                            next_ms,
                            last_ms,
                            last_duration,
                        }
                    })
                    .collect();
                inner.reload = ReloadStatus {
                    success: true,
                    error: None,
                    at_ms: now,
                };
                inner.save(now);
                tracing::info!(groups = inner.groups.len(), "rules reloaded");
                drop(inner);
                self.changed.notify_one();
                Ok(())
            }
        }
    }

    /// Reload if a rule file changed, appeared or went away.
    pub fn reload_if_changed(&self) {
        let changed = self.lock().stamps != stamps(&self.config);
        if changed {
            let _ = self.reload();
        }
    }

    /// Put back the alerts saved in the state store (`docs`: the alerts
    /// table) and save every change from now on through `writer`.
    pub fn keep_state(&self, writer: keel_state::Writer, docs: Vec<(String, String)>) {
        let mut inner = self.lock();
        let p = super::persist::AlertPersist::restore(
            writer,
            docs,
            inner.groups.iter_mut().map(|g| &mut g.state),
        );
        inner.persist = Some(p);
    }

    /// Send each evaluation's alerts to `n` from now on.
    pub fn set_notifier(&self, n: Arc<crate::notify::Notifier>) {
        let _ = self.notifier.set(n);
    }

    /// Evaluate groups when `n` signals new samples (if
    /// `evaluate_on_arrival`), from now on.
    pub fn set_arrivals(&self, n: Arc<tokio::sync::Notify>) {
        let _ = self.arrivals.set(n);
    }

    /// Mark every group evaluation in `marks` from now on.
    pub fn set_marks(&self, marks: Arc<keel_core::marks::MarkLog>) {
        let _ = self.marks.set(marks);
    }

    /// Evaluate every group due at `now_ms`, then hand every alert held
    /// to the notifier; the earliest next due time.
    pub fn eval_due(&self, now_ms: i64) -> Option<i64> {
        self.eval(now_ms, false)
    }

    /// As [`eval_due`](Self::eval_due), after samples arrived: also each
    /// group whose last evaluation is at least half its interval ago.
    pub fn eval_arrived(&self, now_ms: i64) -> Option<i64> {
        self.eval(now_ms, true)
    }

    fn eval(&self, now_ms: i64, arrived: bool) -> Option<i64> {
        let mut inner = self.lock();
        let mut any = false;
        for g in &mut inner.groups {
            let every = (g.state.group.interval.as_millis() as i64).max(1);
            let early = arrived && g.last_ms.is_some_and(|l| now_ms - l >= every / 2);
            if g.next_ms > now_ms && !early {
                if let (true, Some(l)) = (arrived, g.last_ms) {
                    // Too soon after the last evaluation: the new samples
                    // are seen half an interval after it, not a whole one
                    // (an agent scraping in step with the evaluations
                    // would otherwise always land just after one).
                    g.next_ms = g.next_ms.min(l + every / 2);
                }
                continue;
            }
            any = true;
            let took = std::time::Instant::now();
            g.state
                .eval(&*self.source, now_ms, &self.config.external_labels);
            g.last_duration = took.elapsed();
            g.last_ms = Some(now_ms);
            if let Some(m) = self.marks.get() {
                m.write(&keel_core::marks::Mark::RuleEval {
                    at_ms: now_ms,
                    file: g.state.group.file.display().to_string(),
                    group: g.state.group.name.clone(),
                });
            }
            g.next_ms = if early && g.next_ms > now_ms {
                // Evaluated ahead: the schedule starts again from now.
                now_ms + every
            } else {
                // Missed iterations are skipped, not run late in a burst.
                g.next_ms + every * ((now_ms - g.next_ms) / every + 1)
            };
        }
        if any {
            inner.save(now_ms);
        }
        if let (true, Some(n)) = (any, self.notifier.get()) {
            let views: Vec<crate::notify::AlertView> = inner
                .groups
                .iter()
                .flat_map(|g| g.state.alerts())
                .map(|(_, a)| crate::notify::AlertView::from(a))
                .collect();
            n.offer(now_ms, &views);
        }
        inner.groups.iter().map(|g| g.next_ms).min()
    }

    /// Each group's name, interval and last evaluation's duration
    /// (seconds), for the collector's own metrics.
    pub fn group_durations(&self) -> Vec<(String, f64, f64)> {
        self.lock()
            .groups
            .iter()
            .map(|g| {
                (
                    g.state.group.name.clone(),
                    g.state.group.interval.as_secs_f64(),
                    g.last_duration.as_secs_f64(),
                )
            })
            .collect()
    }

    /// A view for the API: the groups (rules, alerts, health) and the
    /// last reload, under the lock.
    pub fn with_groups<T>(&self, f: impl FnOnce(&[&GroupState], &ReloadStatus) -> T) -> T {
        let inner = self.lock();
        let states: Vec<&GroupState> = inner.groups.iter().map(|g| &g.state).collect();
        f(&states, &inner.reload)
    }

    /// Run forever: evaluate groups as they come due (on the clock), and
    /// reload on file changes every `reload_interval`.
    pub async fn run(self: Arc<Self>) {
        if !self.config.reload_interval.is_zero() {
            let me = self.clone();
            tokio::spawn(async move {
                // On a fixed schedule, not "interval after the last
                // check": a clock that jumped while a check ran must not
                // push the next one later.
                let every = me.config.reload_interval;
                let mut ticker = keel_core::clock::Ticker::new(me.clock.now() + every, every);
                loop {
                    ticker.tick(&*me.clock).await;
                    let m = me.clone();
                    let _ = tokio::task::spawn_blocking(move || m.reload_if_changed()).await;
                }
            });
        }
        let arrivals = self
            .arrivals
            .get()
            .filter(|_| self.config.evaluate_on_arrival)
            .cloned();
        let mut arrived = false;
        loop {
            let now = self.clock.now_ms();
            let me = self.clone();
            let next = tokio::task::spawn_blocking(move || me.eval(now, arrived))
                .await
                .ok()
                .flatten();
            let wait = match next {
                Some(t) => self.clock.sleep_until(keel_core::clock::from_unix_ms(t)),
                None => Box::pin(std::future::pending()),
            };
            let arrival = async {
                match &arrivals {
                    Some(n) => n.notified().await,
                    None => std::future::pending().await,
                }
            };
            arrived = false;
            tokio::select! {
                () = wait => {}
                () = self.changed.notified() => {}
                () = arrival => arrived = true,
            }
        }
    }
}
