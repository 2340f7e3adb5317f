//! Keel's alerts sent to Alertmanagers (`collector.notify.alertmanagers`)
//! as Prometheus sends them: every firing alert when it starts firing and
//! again every `alertmanager_resend_delay` (1 m) while it fires, with
//! `endsAt` four resend delays ahead (so Alertmanager resolves it by
//! itself if Keel stops); a resolved alert at once, with `endsAt` its
//! resolution, and again every resend delay while the rules hold it
//! (15 minutes). Alerts wait in one queue of at most 10,000 (the oldest
//! dropped past it) and go in batches of at most 64, up to 8 batches in
//! flight, to every Alertmanager at once, over API v2. A batch an Alertmanager refuses or
//! does not answer is dropped for it, not retried: the next resend
//! carries the alert again. Pending alerts are not sent (Prometheus does
//! not send them either). Counted under Prometheus' own names.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value as Json, json};

use super::AlertView;
use crate::rules::engine::State;

/// Most alerts queued (Prometheus' `--alertmanager.notification-queue-capacity`).
pub const QUEUE_CAPACITY: usize = 10_000;

/// Most alerts a request carries (Prometheus' batch size).
pub const BATCH: usize = 64;

/// Batches sent at once (Prometheus sends one at a time).
pub const IN_FLIGHT: usize = 8;

/// What was last sent of an alert.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sent {
    fired_at_ms: Option<i64>,
    last_ms: i64,
    resolved: bool,
}

/// Counters of one Alertmanager.
#[derive(Debug, Default)]
pub struct Counts {
    /// Alerts it took.
    pub sent: AtomicU64,
    /// Requests that failed.
    pub errors: AtomicU64,
}

/// The queue, what was sent, and the counters.
#[derive(Debug)]
pub struct ToAlertmanagers {
    /// Base URLs (`http://am:9093`).
    pub urls: Vec<String>,
    resend_ms: i64,
    generator_url: String,
    queue: Mutex<VecDeque<Json>>,
    sent: Mutex<HashMap<Vec<(String, String)>, Sent>>,
    /// Woken when alerts are queued.
    pub wake: tokio::sync::Notify,
    /// Per Alertmanager, in `urls` order.
    pub counts: Vec<std::sync::Arc<Counts>>,
    /// Alerts dropped: the queue was full, or every Alertmanager failed
    /// their batch.
    pub dropped: AtomicU64,
}

/// `ms` as RFC 3339 with milliseconds (UTC); a time no calendar holds
/// is clamped, never a panic.
pub fn rfc3339(ms: i64) -> String {
    let t = jiff::Timestamp::from_millisecond(ms).unwrap_or(if ms < 0 {
        jiff::Timestamp::MIN
    } else {
        jiff::Timestamp::MAX
    });
    format!("{t:.3}")
}

impl ToAlertmanagers {
    /// Sending to `urls` (none: nothing is queued), each firing alert
    /// again every `resend_ms`; `generator_url` links each alert back
    /// (the dashboard, or empty).
    pub fn new(urls: Vec<String>, resend_ms: i64, generator_url: String) -> Self {
        let counts = urls.iter().map(|_| std::sync::Arc::default()).collect();
        Self {
            urls: urls
                .into_iter()
                .map(|u| u.trim_end_matches('/').to_owned())
                .collect(),
            resend_ms: resend_ms.max(1),
            generator_url,
            queue: Mutex::new(VecDeque::new()),
            sent: Mutex::new(HashMap::new()),
            wake: tokio::sync::Notify::new(),
            counts,
            dropped: AtomicU64::new(0),
        }
    }

    /// Queue what is due of the rules' `alerts` at `now_ms`: firing ones
    /// new or not sent for a resend delay, resolved ones not yet sent
    /// resolved. Alerts no longer held are forgotten.
    pub fn offer(&self, now_ms: i64, alerts: &[AlertView]) {
        if self.urls.is_empty() {
            return;
        }
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        let mut due = Vec::new();
        let mut held = std::collections::HashSet::new();
        for a in alerts {
            let key: Vec<(String, String)> = a.labels.clone().into_iter().collect();
            held.insert(key.clone());
            let before = sent.get(&key).copied();
            let ends = match a.state {
                State::Pending => continue,
                State::Firing => {
                    let fresh = before.is_none_or(|s| s.fired_at_ms != a.fired_at_ms || s.resolved);
                    if !fresh && before.is_some_and(|s| now_ms - s.last_ms < self.resend_ms) {
                        continue;
                    }
                    now_ms.saturating_add(4 * self.resend_ms)
                }
                State::Resolved => {
                    // Never sent firing (it resolved between resends
                    // before its first send): nothing to resolve. Sent
                    // resolved: again every resend delay while the rules
                    // hold it (15 minutes, as Prometheus resends
                    // resolved alerts), for an Alertmanager that missed it.
                    if before.is_none_or(|s| s.resolved && now_ms - s.last_ms < self.resend_ms) {
                        continue;
                    }
                    a.resolved_at_ms.unwrap_or(now_ms)
                }
            };
            sent.insert(
                key,
                Sent {
                    fired_at_ms: a.fired_at_ms,
                    last_ms: now_ms,
                    resolved: a.state == State::Resolved,
                },
            );
            due.push(json!({
                "labels": a.labels,
                "annotations": a.annotations,
                "startsAt": rfc3339(a.fired_at_ms.unwrap_or(now_ms)),
                "endsAt": rfc3339(ends),
                "generatorURL": self.generator_url,
            }));
        }
        sent.retain(|k, _| held.contains(k));
        drop(sent);
        if due.is_empty() {
            return;
        }
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        for a in due {
            if q.len() >= QUEUE_CAPACITY {
                q.pop_front();
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            q.push_back(a);
        }
        drop(q);
        self.wake.notify_one();
    }

    /// The next batch (at most [`BATCH`]), oldest first.
    pub fn next_batch(&self) -> Vec<Json> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let n = q.len().min(BATCH);
        q.drain(..n).collect()
    }

    /// Alerts waiting.
    pub fn queued(&self) -> usize {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The counters as `(alertmanager URL, sent, errors)`.
    pub fn stats(&self) -> Vec<(String, u64, u64)> {
        self.urls
            .iter()
            .zip(&self.counts)
            .map(|(u, c)| {
                (
                    keel_core::secret::without_userinfo(&format!("{u}/api/v2/alerts")),
                    c.sent.load(Ordering::Relaxed),
                    c.errors.load(Ordering::Relaxed),
                )
            })
            .collect()
    }
}

/// Send `batch` to every Alertmanager at once; count what each took and
/// refused, and the batch as dropped if none took it.
pub async fn send(to: &ToAlertmanagers, http: &reqwest::Client, batch: &[Json]) {
    let body = Json::Array(batch.to_vec());
    let n = batch.len() as u64;
    let mut posts = tokio::task::JoinSet::new();
    for (url, counts) in to.urls.iter().zip(&to.counts) {
        let request = http
            .post(format!("{url}/api/v2/alerts"))
            .timeout(std::time::Duration::from_secs(10))
            .json(&body);
        let (url, counts) = (keel_core::secret::without_userinfo(url), counts.clone());
        posts.spawn(async move {
            match request.send().await {
                Ok(r) if r.status().is_success() => {
                    counts.sent.fetch_add(n, Ordering::Relaxed);
                    true
                }
                Ok(r) => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    tracing::warn!(alertmanager = %url, %status, answer = %text.chars().take(200).collect::<String>(), "Alertmanager refused alerts; they go again at the next resend");
                    counts.errors.fetch_add(1, Ordering::Relaxed);
                    false
                }
                Err(e) => {
                    tracing::warn!(alertmanager = %url, error = %keel_tls::describe(&e), "sending alerts to Alertmanager failed; they go again at the next resend");
                    counts.errors.fetch_add(1, Ordering::Relaxed);
                    false
                }
            }
        });
    }
    let mut any = false;
    while let Some(ok) = posts.join_next().await {
        any |= ok.unwrap_or(false);
    }
    if !any {
        to.dropped.fetch_add(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::file::Severity;
    use std::collections::BTreeMap;

    fn alert(name: &str, state: State, fired: i64, resolved: Option<i64>) -> AlertView {
        AlertView {
            labels: [("alertname".to_owned(), name.to_owned())].into(),
            annotations: BTreeMap::new(),
            state,
            severity: Severity::P1,
            value: 1.0,
            fired_at_ms: Some(fired),
            resolved_at_ms: resolved,
        }
    }

    fn names(batch: &[Json]) -> Vec<String> {
        batch
            .iter()
            .map(|a| {
                format!(
                    "{} {}",
                    a["labels"]["alertname"].as_str().unwrap_or(""),
                    a["endsAt"].as_str().unwrap_or("")
                )
            })
            .collect()
    }

    const T: i64 = 1_800_000_000_000;

    #[test]
    fn firing_alerts_go_at_once_then_every_resend_delay_and_resolved_ones_once() {
        let to = ToAlertmanagers::new(vec!["http://am:9093/".into()], 60_000, String::new());
        let firing = alert("A", State::Firing, T, None);
        to.offer(T, &[firing.clone(), alert("P", State::Pending, T, None)]);
        let b = to.next_batch();
        assert_eq!(b.len(), 1, "pending alerts are not sent: {b:?}");
        assert_eq!(b[0]["endsAt"], rfc3339(T + 4 * 60_000));
        // Within the resend delay: nothing again.
        to.offer(T + 30_000, std::slice::from_ref(&firing));
        assert!(to.next_batch().is_empty());
        to.offer(T + 60_000, std::slice::from_ref(&firing));
        assert_eq!(
            names(&to.next_batch()),
            [format!("A {}", rfc3339(T + 5 * 60_000))]
        );
        // Resolved: once, ending at its resolution.
        let resolved = alert("A", State::Resolved, T, Some(T + 70_000));
        to.offer(T + 75_000, std::slice::from_ref(&resolved));
        assert_eq!(
            names(&to.next_batch()),
            [format!("A {}", rfc3339(T + 70_000))]
        );
        to.offer(T + 100_000, std::slice::from_ref(&resolved));
        assert!(to.next_batch().is_empty(), "not within the resend delay");
        // Again after a resend delay, while the rules hold it.
        to.offer(T + 200_000, &[resolved]);
        assert_eq!(to.next_batch().len(), 1);
        // Never sent firing: no resolution to send.
        to.offer(
            T + 201_000,
            &[alert("B", State::Resolved, T, Some(T + 1000))],
        );
        assert!(to.next_batch().is_empty());
        // Firing again: a new episode goes at once.
        to.offer(T + 210_000, &[alert("A", State::Firing, T + 205_000, None)]);
        assert_eq!(to.next_batch().len(), 1);
        assert_eq!(to.urls, ["http://am:9093"]);
    }

    #[test]
    fn the_queue_keeps_the_newest_ten_thousand_and_batches_sixty_four() {
        let to = ToAlertmanagers::new(vec!["http://am:9093".into()], 60_000, String::new());
        let many: Vec<AlertView> = (0..QUEUE_CAPACITY + 5)
            .map(|i| alert(&format!("a{i}"), State::Firing, T, None))
            .collect();
        to.offer(T, &many);
        assert_eq!(to.queued(), QUEUE_CAPACITY);
        assert_eq!(to.dropped.load(Ordering::Relaxed), 5);
        assert_eq!(to.next_batch().len(), BATCH);
        let none = ToAlertmanagers::new(vec![], 60_000, String::new());
        none.offer(T, &many);
        assert_eq!(none.queued(), 0, "no Alertmanager: nothing queued");
    }
}
