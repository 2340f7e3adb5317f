//! Notifications: each rule evaluation's alerts are routed by severity
//! ([`route`]) and pages are sent by email over SMTP (lettre: plain,
//! STARTTLS or TLS, with auth). A page that cannot be sent is retried
//! with doubling backoff on the injected clock until it is delivered —
//! in order, never dropped — and every attempt is recorded for
//! `GET /api/v1/notifications`; P2 tickets are listed by
//! `GET /api/v1/tickets`.

pub mod am_api;
pub mod api;
pub mod email;
pub mod persist;
pub mod received;
pub mod route;
mod send;
pub mod silence;
pub mod to_alertmanager;
pub mod webhook;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_core::clock::SharedClock;
use serde::{Deserialize, Serialize};

pub use email::{EmailConfig, Security};
pub use route::{AlertView, BusinessHours, Kind, Page, Router, Ticket};
pub use silence::{InhibitRule, Matcher, Silence};

/// The `collector.notify` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Email over SMTP (no `to`: no email).
    pub email: EmailConfig,
    /// Labels whose values group alerts into one page (`[...]`: every
    /// alert pages alone; `[]`: one group per severity).
    pub group_by: Vec<String>,
    /// From a P0 group's first alert to its first page.
    #[serde(with = "keel_core::duration")]
    pub p0_group_wait: Duration,
    /// Least time between pages of a P0 group as alerts join or resolve.
    #[serde(with = "keel_core::duration")]
    pub p0_group_interval: Duration,
    /// A P0 group pages again this often while it fires unchanged.
    #[serde(with = "keel_core::duration")]
    pub p0_repeat_interval: Duration,
    /// From a P1 group's first alert to its first page (in business hours).
    #[serde(with = "keel_core::duration")]
    pub p1_group_wait: Duration,
    /// Least time between pages of a P1 group as alerts join or resolve.
    #[serde(with = "keel_core::duration")]
    pub p1_group_interval: Duration,
    /// A P1 group pages again this often while it fires, in business hours.
    #[serde(with = "keel_core::duration")]
    pub p1_repeat_interval: Duration,
    /// When P1 may page.
    pub business_hours: BusinessHours,
    /// First wait after a failed send; doubles up to `retry_max`.
    #[serde(with = "keel_core::duration")]
    pub retry_initial: Duration,
    /// Longest wait between attempts.
    #[serde(with = "keel_core::duration")]
    pub retry_max: Duration,
    /// Base URL of the dashboard, linked from every page ("": none).
    pub dashboard_url: String,
    /// Inhibition: while a source alert fires, matching targets with the
    /// same `equal` labels are muted.
    pub inhibit: Vec<InhibitRule>,
    /// Webhook URLs that get every page as Alertmanager's webhook JSON.
    pub webhooks: Vec<String>,
    /// TLS for `https://` webhooks: a CA bundle trusted besides the
    /// system's.
    pub webhook_tls: keel_tls::TlsConfig,
    /// Alertmanagers (base URLs, `http://am:9093`) that get every firing
    /// and resolved alert over API v2, as Prometheus sends them.
    pub alertmanagers: Vec<String>,
    /// How often a firing alert is sent to them again.
    #[serde(with = "keel_core::duration")]
    pub alertmanager_resend_delay: Duration,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            email: EmailConfig::default(),
            group_by: vec!["alertname".into(), "job".into()],
            p0_group_wait: Duration::ZERO,
            p0_group_interval: Duration::from_secs(10),
            p0_repeat_interval: Duration::from_secs(30 * 60),
            p1_group_wait: Duration::from_secs(30),
            p1_group_interval: Duration::from_secs(5 * 60),
            p1_repeat_interval: Duration::from_secs(4 * 3600),
            business_hours: BusinessHours::default(),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            dashboard_url: String::new(),
            inhibit: InhibitRule::defaults(),
            webhooks: Vec::new(),
            webhook_tls: keel_tls::TlsConfig::default(),
            alertmanagers: Vec::new(),
            alertmanager_resend_delay: Duration::from_secs(60),
        }
    }
}

impl NotifyConfig {
    /// Push one message per problem.
    pub fn validate(&self, problems: &mut Vec<String>) {
        if let Err(p) = self.business_hours.compile() {
            problems.extend(p);
        }
        self.email.validate(problems);
        if self.retry_initial.is_zero() || self.retry_max < self.retry_initial {
            problems.push(
                "collector.notify.retry_initial: must be positive and at most retry_max".into(),
            );
        }
        for (i, w) in self.webhooks.iter().enumerate() {
            if reqwest::Url::parse(w).map_or(true, |u| !u.scheme().starts_with("http")) {
                problems.push(format!(
                    "collector.notify.webhooks[{i}]: {w:?} is not an http(s) URL"
                ));
            }
        }
        for (i, a) in self.alertmanagers.iter().enumerate() {
            if reqwest::Url::parse(a).map_or(true, |u| !u.scheme().starts_with("http")) {
                problems.push(format!(
                    "collector.notify.alertmanagers[{i}]: {a:?} is not an http(s) URL"
                ));
            }
        }
        if self.alertmanager_resend_delay.is_zero() {
            problems.push("collector.notify.alertmanager_resend_delay: must be positive".into());
        }
        self.webhook_tls
            .validate("collector.notify.webhook_tls", problems);
        if let Err(p) = silence::compile(&self.inhibit) {
            problems.extend(p);
        }
        for (name, d) in [
            ("p0_group_interval", self.p0_group_interval),
            ("p0_repeat_interval", self.p0_repeat_interval),
            ("p1_group_interval", self.p1_group_interval),
            ("p1_repeat_interval", self.p1_repeat_interval),
        ] {
            if d.is_zero() {
                problems.push(format!("collector.notify.{name}: must be positive"));
            }
        }
        for (i, l) in self.group_by.iter().enumerate() {
            if l != "..." && !keel_core::names::is_label_name(l) {
                problems.push(format!(
                    "collector.notify.group_by[{i}]: {l:?} is not a label name (or \"...\")"
                ));
            }
        }
    }
}

impl NotifyConfig {
    fn receivers(&self) -> Vec<Receiver> {
        let mut out = Vec::new();
        if !self.email.to.is_empty() {
            out.push(Receiver::Email);
        }
        out.extend(self.webhooks.iter().cloned().map(Receiver::Webhook));
        out
    }

    /// Who gets every page: `email` (when `email.to` names anyone) and
    /// each webhook's URL, in sending order.
    pub fn receiver_names(&self) -> Vec<String> {
        self.receivers().iter().map(Receiver::name).collect()
    }

    /// The router's timings, with `hours` compiled from `business_hours`.
    pub fn policy(&self, hours: route::Hours) -> route::Policy {
        route::Policy {
            p0: route::Timing {
                group_wait: self.p0_group_wait,
                group_interval: self.p0_group_interval,
                repeat_interval: self.p0_repeat_interval,
            },
            p1: route::Timing {
                group_wait: self.p1_group_wait,
                group_interval: self.p1_group_interval,
                repeat_interval: self.p1_repeat_interval,
            },
            hours,
            group_by: self.group_by.clone(),
        }
    }
}

/// One page to one receiver, and how its sending went.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    /// Its number: the order pages were decided in (its state-store key).
    #[serde(default)]
    pub seq: u64,
    /// Its identity on the wire, the same on every attempt and after a
    /// restart: the email's `Message-ID`, the webhook's `Idempotency-Key`
    /// header and `notificationId`, so a receiver can drop the one
    /// duplicate a crash between its acceptance and Keel's record of it
    /// causes.
    #[serde(default)]
    pub id: String,
    /// `email` or the webhook's URL.
    pub receiver: String,
    /// The page.
    pub page: Page,
    /// Attempts so far.
    pub attempts: u32,
    /// When it was delivered (ms); none: not yet.
    pub delivered_at_ms: Option<i64>,
    /// When it was given up on because the receiver refused it for good
    /// (a webhook's 4xx, an SMTP 5xx) (ms); none: not given up.
    #[serde(default)]
    pub failed_at_ms: Option<i64>,
    /// The last failure, or why it was not sent.
    pub last_error: Option<String>,
}

impl Delivery {
    /// Delivered or given up on: nothing more will be sent.
    pub fn finished(&self) -> bool {
        self.delivered_at_ms.is_some() || self.failed_at_ms.is_some()
    }
}

/// Why one attempt to send failed, and whether trying again can help.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// What happened (the receiver named).
    pub message: String,
    /// The receiver refused it for good: not retried.
    pub permanent: bool,
}

impl Failure {
    /// A failure worth retrying.
    pub fn transient(message: String) -> Self {
        Self {
            message,
            permanent: false,
        }
    }
}

/// Most deliveries kept for the API.
const KEEP: usize = 1000;

/// The longest a send waits for its intent to be durable in the state
/// store; past it, the page goes out anyway (paging beats exactly-once).
const INTENT_WAIT: Duration = Duration::from_secs(10);

/// While the state store is slow (a wait timed out), each wait is this
/// short, until one succeeds: a queue of pages is not held 10 s each.
const SLOW_WAIT: Duration = Duration::from_millis(100);

/// Routes alerts and sends pages.
pub struct Notifier {
    router: Mutex<Router>,
    /// Every delivery, in `seq` order.
    deliveries: Mutex<Vec<Delivery>>,
    /// Deliveries given up on since start, by receiver.
    failed: Mutex<std::collections::BTreeMap<String, u64>>,
    /// The last wait for the state store timed out.
    store_slow: Arc<std::sync::atomic::AtomicBool>,
    /// The webhooks' HTTP client (built at start: a bad CA file stops it).
    http: reqwest::Client,
    /// Where routing state and notifications are saved (none: nowhere).
    persist: Mutex<Option<persist::NotifyPersist>>,
    /// One queue a receiver, so a dead webhook never holds up email.
    queues: Vec<(Receiver, tokio::sync::mpsc::UnboundedSender<u64>)>,
    /// Alerts other evaluators sent (Alertmanager's API), routed with
    /// the rules' own.
    received: received::Received,
    /// The rules' alerts as last offered, routed again with received
    /// alerts between evaluations.
    rule_alerts: Mutex<Vec<AlertView>>,
    /// When it started (ms).
    started_ms: i64,
    /// Keel's alerts on their way to Alertmanagers.
    to_alertmanagers: to_alertmanager::ToAlertmanagers,
    config: NotifyConfig,
    clock: SharedClock,
}

/// Where pages go.
#[derive(Debug, Clone, PartialEq)]
enum Receiver {
    Email,
    Webhook(String),
}

impl Receiver {
    fn name(&self) -> String {
        match self {
            Receiver::Email => "email".into(),
            Receiver::Webhook(u) => u.clone(),
        }
    }
}

/// How long an ended silence is kept (listed by `amtool silence query
/// --expired`, restorable by an update): Alertmanager's default
/// `--data.retention`, 120 h.
pub const SILENCE_RETENTION_MS: i64 = 120 * 3600 * 1000;

/// Why a silence cannot be made, if it cannot.
fn check_silence(matchers: &[Matcher], starts_at_ms: i64, ends_at_ms: i64) -> Result<(), String> {
    if matchers.is_empty() {
        return Err("a silence needs at least one matcher".into());
    }
    if ends_at_ms <= starts_at_ms {
        return Err("a silence must end after it starts".into());
    }
    if starts_at_ms < 0 {
        return Err("a silence cannot start before 1970".into());
    }
    Ok(())
}

/// Add a (checked) silence to the router, its id after the highest held
/// (pruning keeps the highest, so an id is never given twice).
fn push_silence(
    r: &mut Router,
    matchers: Vec<Matcher>,
    starts_at_ms: i64,
    ends_at_ms: i64,
    created_by: &str,
    comment: &str,
) -> Silence {
    let id = r.silences.iter().map(|s| s.id).max().unwrap_or(0) + 1;
    let s = Silence {
        id,
        matchers,
        starts_at_ms,
        ends_at_ms,
        created_by: created_by.to_owned(),
        comment: comment.to_owned(),
    };
    r.silences.push(s.clone());
    s
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Notifier {
    /// A notifier, and its sending task started on the current runtime.
    pub fn start(config: NotifyConfig, clock: SharedClock) -> Result<Arc<Self>, Vec<String>> {
        let mut problems = Vec::new();
        config.validate(&mut problems);
        let hours = config.business_hours.compile().map_err(|p| {
            problems.extend(p);
            problems.clone()
        })?;
        if !problems.is_empty() {
            return Err(problems);
        }
        let http = config
            .webhook_tls
            .client(reqwest::Client::builder(), "collector.notify.webhook_tls")
            .map_err(|e| vec![e.to_string()])?;
        let policy = config.policy(hours);
        let receivers = config.receivers();
        let mut queues = Vec::new();
        let mut inboxes = Vec::new();
        for r in receivers {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            queues.push((r.clone(), tx));
            inboxes.push((r, rx));
        }
        let me = Arc::new(Self {
            router: Mutex::new(Router::new(
                policy,
                silence::compile(&config.inhibit).unwrap_or_default(),
            )),
            deliveries: Mutex::new(Vec::new()),
            failed: Mutex::new(Default::default()),
            store_slow: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            http,
            persist: Mutex::new(None),
            queues,
            received: received::Received::default(),
            rule_alerts: Mutex::new(Vec::new()),
            started_ms: clock.now_ms(),
            to_alertmanagers: to_alertmanager::ToAlertmanagers::new(
                config.alertmanagers.clone(),
                i64::try_from(config.alertmanager_resend_delay.as_millis()).unwrap_or(i64::MAX),
                config.dashboard_url.clone(),
            ),
            config,
            clock,
        });
        for (r, rx) in inboxes {
            tokio::spawn(me.clone().send_loop(r, rx));
        }
        tokio::spawn(Self::received_loop(Arc::downgrade(&me)));
        if !me.config.alertmanagers.is_empty() {
            tokio::spawn(me.clone().alertmanager_loop());
        }
        Ok(me)
    }

    /// Route the rules' alerts held at `now_ms`, with the alerts received
    /// from other evaluators, and queue the pages due.
    pub fn offer(&self, now_ms: i64, alerts: &[AlertView]) {
        *lock(&self.rule_alerts) = alerts.to_vec();
        self.to_alertmanagers.offer(now_ms, alerts);
        self.route(Some(now_ms));
    }

    /// Send queued alerts to the Alertmanagers, a batch at a time, while
    /// this collector may act (a follower's queue is dropped: the leader
    /// sends).
    async fn alertmanager_loop(self: Arc<Self>) {
        let to = &self.to_alertmanagers;
        loop {
            to.wake.notified().await;
            loop {
                // Up to IN_FLIGHT batches at once: one request at a time
                // would cap a burst at one round trip a batch.
                let batches: Vec<Vec<serde_json::Value>> = (0..to_alertmanager::IN_FLIGHT)
                    .map(|_| to.next_batch())
                    .filter(|b| !b.is_empty())
                    .collect();
                if batches.is_empty() {
                    break;
                }
                if !self.may_act() {
                    let n: usize = batches.iter().map(Vec::len).sum();
                    to.dropped
                        .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                    continue;
                }
                let mut sends = tokio::task::JoinSet::new();
                for batch in batches {
                    let me = self.clone();
                    sends.spawn(async move {
                        to_alertmanager::send(&me.to_alertmanagers, &me.http, &batch).await;
                    });
                }
                while sends.join_next().await.is_some() {}
            }
        }
    }

    /// The Alertmanager sender's counters: per Alertmanager `(URL,
    /// alerts sent, failed requests)`, alerts dropped, alerts queued.
    pub fn alertmanager_stats(&self) -> (Vec<(String, u64, u64)>, u64, usize) {
        let to = &self.to_alertmanagers;
        (
            to.stats(),
            to.dropped.load(std::sync::atomic::Ordering::Relaxed),
            to.queued(),
        )
    }

    /// Take alerts another evaluator sent (Alertmanager's API v2) and
    /// route them at once; how many were taken and why the others were
    /// not.
    pub fn receive(&self, alerts: Vec<received::Posted>) -> (usize, Vec<String>) {
        let now = self.clock.now_ms();
        let out = self.received.post(now, alerts);
        if out.0 > 0 {
            self.route(None);
        }
        out
    }

    /// Map received alerts' severity labels as the rules' mapping does.
    pub fn set_severity_mapping(&self, mapping: crate::rules::SeverityMapping) {
        self.received.set_mapping(mapping);
    }

    /// Every alert received from other evaluators, resolved ones for a
    /// while after they end.
    pub fn received(&self) -> Vec<received::Held> {
        self.received.alerts(self.clock.now_ms())
    }

    /// Every second while received alerts are held: route them again,
    /// so one whose `endsAt` passed resolves and group timers run
    /// between rule evaluations. Ends with the notifier.
    async fn received_loop(me: std::sync::Weak<Self>) {
        let weak = me;
        loop {
            let Some(me) = weak.upgrade() else {
                return;
            };
            if me.received.any() {
                me.route(None);
            }
            let clock = me.clock.clone();
            drop(me);
            clock.sleep(Duration::from_secs(1)).await;
        }
    }

    /// Route the rules' last alerts and the received ones at `now` (the
    /// rules' evaluation time), or, without one, at the clock's now.
    fn route(&self, now: Option<i64>) {
        // The router first: concurrent routings decide one after another
        // on inputs (and a time) read after the one before finished.
        let mut r = lock(&self.router);
        let now_ms = now.unwrap_or_else(|| self.clock.now_ms());
        let mut alerts = lock(&self.rule_alerts).clone();
        alerts.extend(self.received.views(now_ms));
        let pages = r.decide(now_ms, &alerts);
        let mut d = lock(&self.deliveries);
        let first_new = d.len();
        let mut sends = Vec::new();
        for page in pages {
            tracing::info!(
                group = %page.group_key(), alerts = page.alerts.len(),
                severity = page.severity.as_str(), kind = ?page.kind, reason = page.reason,
                "page due"
            );
            let mut record = |receiver: String, failed: Option<String>| {
                let seq = d.last().map_or(0, |l| l.seq + 1);
                d.push(Delivery {
                    seq,
                    id: format!("{}.{seq}", page.at_ms),
                    receiver,
                    page: page.clone(),
                    attempts: 0,
                    delivered_at_ms: None,
                    // Nobody to send it to: it is finished as it is.
                    failed_at_ms: failed.as_ref().map(|_| now_ms),
                    last_error: failed,
                });
                seq
            };
            if self.queues.is_empty() {
                record(
                    String::new(),
                    Some("no receiver: collector.notify.email.to and webhooks are empty".into()),
                );
                continue;
            }
            for (i, (r, _)) in self.queues.iter().enumerate() {
                sends.push((i, record(r.name(), None)));
            }
        }
        // The routing that decided the pages and their intents are saved
        // in one transaction: a crash never leaves one without the other.
        if let Some(p) = lock(&self.persist).as_mut() {
            p.sync_with(now_ms, &r, &d[first_new..]);
        }
        drop(d);
        drop(r);
        for (i, seq) in sends {
            let _ = self.queues[i].1.send(seq);
        }
    }

    /// Put back the routing state and notifications saved in the state
    /// store, queue again every notification not yet delivered, and save
    /// every change from now on through `writer`.
    pub fn keep_state(&self, writer: keel_state::Writer, saved: &persist::Saved) {
        let now = self.clock.now_ms();
        let mut r = lock(&self.router);
        let mut p = persist::NotifyPersist::restore(writer, saved, &mut r);
        let mut d = lock(&self.deliveries);
        let mut requeued = 0;
        for (k, doc) in &saved.notifications {
            let Ok(mut delivery) = serde_json::from_str::<Delivery>(doc) else {
                tracing::warn!(key = %k, "a saved notification does not parse; dropped");
                continue;
            };
            // Records from before `seq` was saved are numbered by their key.
            if delivery.seq == 0 {
                delivery.seq = k.parse().unwrap_or(0);
            }
            if delivery.id.is_empty() {
                delivery.id = format!("{}.{}", delivery.page.at_ms, delivery.seq);
            }
            if delivery.finished() {
                d.push(delivery);
                continue;
            }
            // An intent without an acceptance: sent again, as the same
            // message; one whose receiver is gone is finished as failed
            // (so retention can forget it).
            match self
                .queues
                .iter()
                .find(|(r, _)| r.name() == delivery.receiver)
            {
                Some((_, q)) => {
                    let _ = q.send(delivery.seq);
                    requeued += 1;
                }
                None => {
                    tracing::warn!(receiver = %delivery.receiver, "an undelivered notification's receiver is no longer configured; not sent");
                    delivery.failed_at_ms = Some(now);
                    delivery
                        .last_error
                        .get_or_insert_with(|| "its receiver is no longer configured".into());
                    p.notification(now, &delivery);
                }
            }
            d.push(delivery);
        }
        d.sort_by_key(|x| x.seq);
        if requeued > 0 {
            tracing::info!(
                notifications = requeued,
                "undelivered notifications queued again"
            );
        }
        p.sync(now, &r);
        *lock(&self.persist) = Some(p);
    }

    fn save_routing(&self, now_ms: i64, r: &Router) {
        if let Some(p) = lock(&self.persist).as_mut() {
            p.sync(now_ms, r);
        }
    }

    fn save_delivery(&self, now_ms: i64, d: &Delivery) {
        if let Some(p) = lock(&self.persist).as_ref() {
            p.notification(now_ms, d);
        }
    }

    /// Deliveries given up on since start, by receiver.
    pub fn failed_total(&self) -> std::collections::BTreeMap<String, u64> {
        lock(&self.failed).clone()
    }

    /// Forget finished deliveries decided before `before_ms` (in memory
    /// and in the state store); unfinished ones are kept whatever their
    /// age. How many were forgotten.
    pub fn prune(&self, before_ms: i64) -> usize {
        let mut d = lock(&self.deliveries);
        let old: Vec<u64> = d
            .iter()
            .filter(|x| x.finished() && x.page.at_ms < before_ms)
            .map(|x| x.seq)
            .collect();
        d.retain(|x| !(x.finished() && x.page.at_ms < before_ms));
        if let Some(p) = lock(&self.persist).as_ref() {
            for seq in &old {
                p.forget_notification(*seq);
            }
        }
        old.len()
    }

    /// Forget silences that ended more than [`SILENCE_RETENTION_MS`]
    /// before `now_ms` (in memory and in the state store), as
    /// Alertmanager forgets them after its `--data.retention`; how many.
    pub fn prune_silences(&self, now_ms: i64) -> usize {
        let mut r = lock(&self.router);
        let before = r.silences.len();
        let cutoff = now_ms.saturating_sub(SILENCE_RETENTION_MS);
        // The newest is kept whatever its age: its id is where the next
        // one's count from, across restarts too.
        let newest = r.silences.iter().map(|s| s.id).max().unwrap_or(0);
        r.silences
            .retain(|s| s.ends_at_ms >= cutoff || s.id == newest);
        let gone = before - r.silences.len();
        if gone > 0 {
            self.save_routing(now_ms, &r);
        }
        gone
    }

    /// Every delivery, oldest first (the newest [`KEEP`]).
    pub fn deliveries(&self) -> Vec<Delivery> {
        let d = lock(&self.deliveries);
        d[d.len().saturating_sub(KEEP)..].to_vec()
    }

    /// Silence what `matchers` match from `starts_at_ms` (default now) for
    /// `duration`; the new silence.
    pub fn silence(
        &self,
        matchers: &[String],
        starts_at_ms: Option<i64>,
        duration: Duration,
        created_by: &str,
        comment: &str,
    ) -> Result<Silence, String> {
        let matchers = matchers
            .iter()
            .map(|m| Matcher::parse(m))
            .collect::<Result<Vec<_>, _>>()?;
        if duration.is_zero() {
            return Err("a silence must last longer than 0s".into());
        }
        let start = starts_at_ms.unwrap_or_else(|| self.clock.now_ms());
        let end = start.saturating_add(duration.as_millis() as i64);
        self.add_silence(matchers, start, end, created_by, comment)
    }

    /// Silence what `matchers` match over `[starts_at_ms, ends_at_ms)`;
    /// the new silence.
    pub fn add_silence(
        &self,
        matchers: Vec<Matcher>,
        starts_at_ms: i64,
        ends_at_ms: i64,
        created_by: &str,
        comment: &str,
    ) -> Result<Silence, String> {
        check_silence(&matchers, starts_at_ms, ends_at_ms)?;
        let mut r = lock(&self.router);
        let s = push_silence(
            &mut r,
            matchers,
            starts_at_ms,
            ends_at_ms,
            created_by,
            comment,
        );
        self.save_routing(starts_at_ms.max(self.clock.now_ms()), &r);
        tracing::info!(id = s.id, until = s.ends_at_ms, "silence created");
        Ok(s)
    }

    /// End silence `id` now; false when there is none.
    pub fn expire(&self, id: u64) -> bool {
        let now = self.clock.now_ms();
        let mut r = lock(&self.router);
        match r.silences.iter_mut().find(|s| s.id == id) {
            Some(s) => {
                s.ends_at_ms = s.ends_at_ms.min(now);
                self.save_routing(now, &r);
                true
            }
            None => false,
        }
    }

    /// Change silence `id` as Alertmanager does (`amtool silence
    /// update`): in place, keeping its id, when its matchers are the
    /// same and it is active (same start, ending after now) or pending
    /// (starting after now); otherwise it ends now and a new one takes its
    /// place (starting now at the earliest). `None` when there is no
    /// silence `id`.
    pub fn update_silence(
        &self,
        id: u64,
        matchers: Vec<Matcher>,
        starts_at_ms: i64,
        ends_at_ms: i64,
        created_by: &str,
        comment: &str,
    ) -> Option<Result<Silence, String>> {
        let now = self.clock.now_ms();
        {
            let mut r = lock(&self.router);
            let old = r.silences.iter_mut().find(|s| s.id == id)?;
            let in_place = old.matchers == matchers
                && ends_at_ms > starts_at_ms
                && if old.ends_at_ms <= now {
                    false
                } else if old.starts_at_ms <= now {
                    starts_at_ms == old.starts_at_ms && ends_at_ms > now
                } else {
                    starts_at_ms >= now
                };
            if in_place {
                old.starts_at_ms = starts_at_ms;
                old.ends_at_ms = ends_at_ms;
                old.created_by = created_by.to_owned();
                old.comment = comment.to_owned();
                let s = old.clone();
                self.save_routing(now, &r);
                tracing::info!(id, until = ends_at_ms, "silence updated");
                return Some(Ok(s));
            }
        }
        // Checked before the old one ends: an invalid update changes
        // nothing; the old one's end and its successor are saved together.
        let start = starts_at_ms.max(now);
        if let Err(e) = check_silence(&matchers, start, ends_at_ms) {
            return Some(Err(e));
        }
        let mut r = lock(&self.router);
        let old = r.silences.iter_mut().find(|s| s.id == id)?;
        old.ends_at_ms = old.ends_at_ms.min(now);
        let s = push_silence(&mut r, matchers, start, ends_at_ms, created_by, comment);
        self.save_routing(now, &r);
        tracing::info!(old = id, id = s.id, until = ends_at_ms, "silence replaced");
        Some(Ok(s))
    }

    /// Every silence, expired ones included.
    pub fn silences(&self) -> Vec<Silence> {
        lock(&self.router).silences.clone()
    }

    /// Acknowledge the firing alerts `matchers` match (no more repeats
    /// until they resolve); how many.
    pub fn ack(&self, matchers: &[String]) -> Result<usize, String> {
        let matchers = matchers
            .iter()
            .map(|m| Matcher::parse(m))
            .collect::<Result<Vec<_>, _>>()?;
        let mut r = lock(&self.router);
        let n = r.ack(&matchers);
        self.save_routing(self.clock.now_ms(), &r);
        Ok(n)
    }

    /// Every P2 ticket.
    pub fn tickets(&self) -> Vec<Ticket> {
        lock(&self.router).tickets.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_core::clock::{Clock as _, ManualClock};

    #[tokio::test]
    async fn silences_ended_over_the_retention_are_forgotten_and_live_ones_kept() {
        let clock = ManualClock::new(std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        let shared: SharedClock = Arc::new(clock.clone());
        let n = Notifier::start(NotifyConfig::default(), shared).expect("notifier");
        let m = ["alertname=\"A\"".to_owned()];
        let short = n
            .silence(&m, None, Duration::from_secs(3600), "t", "short")
            .expect("silence");
        let long = n
            .silence(&m, None, Duration::from_secs(200 * 3600), "t", "long")
            .expect("silence");
        // 121 h later: the short one ended 120 h ago and a bit, the long
        // one runs on.
        clock.advance(Duration::from_secs(121 * 3600 + 1));
        assert_eq!(n.prune_silences(clock.now_ms()), 1);
        let ids: Vec<u64> = n.silences().iter().map(|s| s.id).collect();
        assert_eq!(ids, vec![long.id]);
        assert_ne!(short.id, long.id);
        assert_eq!(n.prune_silences(clock.now_ms()), 0);
        // The next silence's id is after the highest held: never reused
        // while its holder lives.
        let next = n
            .silence(&m, None, Duration::from_secs(60), "t", "next")
            .expect("silence");
        assert_eq!(next.id, long.id + 1);
        // Much later both have ended long ago: the newest stays, so the
        // next id never repeats one given before (across restarts too).
        clock.advance(Duration::from_secs(200 * 3600));
        assert_eq!(n.prune_silences(clock.now_ms()), 1);
        let ids: Vec<u64> = n.silences().iter().map(|s| s.id).collect();
        assert_eq!(ids, vec![next.id]);
        let after = n
            .silence(&m, None, Duration::from_secs(60), "t", "after")
            .expect("silence");
        assert_eq!(after.id, next.id + 1);
    }

    #[tokio::test]
    async fn an_update_keeps_the_id_when_alertmanager_would_and_replaces_it_otherwise() {
        let clock = ManualClock::new(std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        let shared: SharedClock = Arc::new(clock.clone());
        let n = Notifier::start(NotifyConfig::default(), shared).expect("notifier");
        let m = ["alertname=\"A\"".to_owned()];
        let s = n
            .silence(&m, None, Duration::from_secs(3600), "t", "first")
            .expect("silence");
        clock.advance(Duration::from_secs(60));
        let parse = |ms: &[&str]| -> Vec<Matcher> {
            ms.iter()
                .map(|x| Matcher::parse(x).expect("matcher"))
                .collect()
        };
        let same = n
            .update_silence(
                s.id,
                parse(&["alertname=\"A\""]),
                s.starts_at_ms,
                s.ends_at_ms + 1,
                "t",
                "longer",
            )
            .expect("found")
            .expect("valid");
        assert_eq!((same.id, same.comment.as_str()), (s.id, "longer"));
        // Other matchers: the old one ends now, a new one takes over.
        let other = n
            .update_silence(
                s.id,
                parse(&["alertname=\"B\""]),
                s.starts_at_ms,
                s.ends_at_ms,
                "t",
                "b",
            )
            .expect("found")
            .expect("valid");
        assert_ne!(other.id, s.id);
        let now = clock.now_ms();
        let all = n.silences();
        let old = all.iter().find(|x| x.id == s.id).expect("kept, ended");
        assert_eq!(old.ends_at_ms, now);
        assert_eq!(other.starts_at_ms, now);
        assert!(
            n.update_silence(999, parse(&["a=\"b\""]), now, now + 1, "t", "")
                .is_none()
        );
    }
}
