//! Sending: one task per receiver takes its queue of deliveries in
//! order, makes each page's intent durable first, sends it (retrying
//! what can be retried, giving up on what the receiver refuses for good),
//! and records the outcome at once.

use std::sync::Arc;

use super::{Delivery, INTENT_WAIT, Notifier, Receiver, SLOW_WAIT, email, lock, persist, webhook};

impl Notifier {
    /// Wait (at most [`INTENT_WAIT`]) until every change saved so far is
    /// durable in the state store; no store: at once. False when the
    /// store refused the changes because this collector no longer leads
    /// (`collector.ha`): the page is the new leader's to send, not ours.
    pub(super) async fn durable(&self, what: &str) -> bool {
        let writer = lock(&self.persist)
            .as_ref()
            .map(persist::NotifyPersist::writer);
        let Some(w) = writer else { return true };
        use std::sync::atomic::Ordering::Relaxed;
        let slow = self.store_slow.load(Relaxed);
        let wait = if slow { SLOW_WAIT } else { INTENT_WAIT };
        let mut flush = tokio::spawn(async move { w.flush().await });
        match tokio::time::timeout(wait, &mut flush).await {
            Ok(Ok(Ok(()))) => {
                self.store_slow.store(false, Relaxed);
            }
            Ok(Ok(Err(e @ keel_state::StateError::Fenced(_)))) => {
                tracing::error!(error = %e, what, "not sending: this collector no longer leads");
                return false;
            }
            Ok(Ok(Err(e))) => {
                tracing::error!(error = %e, what, "the state store did not take a notification's record");
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, what, "waiting for the state store failed");
            }
            Err(_) => {
                if !slow {
                    tracing::warn!(
                        what,
                        "the state store is slow: paging on without durable records until it answers"
                    );
                }
                self.store_slow.store(true, Relaxed);
                // Slow mode ends when this flush completes, however long
                // the store takes, not only when one fits in SLOW_WAIT.
                let flag = self.store_slow.clone();
                tokio::spawn(async move {
                    if matches!(flush.await, Ok(Ok(()))) {
                        flag.store(false, Relaxed);
                    }
                });
            }
        }
        true
    }

    /// Whether this collector may send now (`collector.ha`: it leads
    /// within its lease; otherwise always).
    pub(super) fn may_act(&self) -> bool {
        lock(&self.persist)
            .as_ref()
            .is_none_or(|p| p.writer().may_act())
    }

    /// The task of one receiver: its deliveries, in order.
    pub(super) async fn send_loop(
        self: Arc<Self>,
        receiver: Receiver,
        mut rx: tokio::sync::mpsc::UnboundedReceiver<u64>,
    ) {
        let http = self.http.clone();
        while let Some(seq) = rx.recv().await {
            let found = {
                let all = lock(&self.deliveries);
                find(&all, seq).map(|d| (d.page.clone(), d.id.clone()))
            };
            let Some((page, id)) = found else { continue };
            // The intent (and the routing that decided it) is durable
            // before anything is sent: a crash from here on sends it again
            // after the restart, as the same message, and never twice
            // otherwise.
            if !self.durable("a page's intent").await {
                continue;
            }
            keel_core::crash::point("after_page_intent");
            let mut wait = self.config.retry_initial;
            loop {
                // No receiver checks a fencing token: a leader stalled
                // past its lease (a pause between the intent and here)
                // leaves the page to the new leader, which restored it.
                if !self.may_act() {
                    tracing::error!(receiver = %receiver.name(), "not sending a page: this collector no longer leads; the leader sends it");
                    break;
                }
                let result = match &receiver {
                    Receiver::Email => {
                        email::send(&self.config.email, &page, &id, &self.config.dashboard_url)
                            .await
                    }
                    Receiver::Webhook(url) => {
                        let to = webhook::Target {
                            url,
                            external_url: &self.config.dashboard_url,
                            timeout: self.config.email.timeout,
                        };
                        webhook::send(&http, &to, &page, &id).await
                    }
                };
                if result.is_ok() {
                    keel_core::crash::point(match receiver {
                        Receiver::Email => "after_smtp_accept",
                        Receiver::Webhook(_) => "after_webhook_accept",
                    });
                }
                let now = self.clock.now_ms();
                let finished = {
                    let mut all = lock(&self.deliveries);
                    let Some(d) = find_mut(&mut all, seq) else {
                        break;
                    };
                    d.attempts += 1;
                    match &result {
                        Ok(()) => {
                            d.delivered_at_ms = Some(now);
                            d.last_error = None;
                        }
                        Err(f) => {
                            d.last_error = Some(f.message.clone());
                            if f.permanent {
                                d.failed_at_ms = Some(now);
                            }
                        }
                    }
                    self.save_delivery(now, d);
                    d.finished()
                };
                if finished {
                    if let Err(f) = &result {
                        *lock(&self.failed).entry(receiver.name()).or_default() += 1;
                        tracing::error!(receiver = %receiver.name(), error = %f.message, "a receiver refused a page for good; not retried");
                    }
                    // The outcome is recorded at once.
                    let _ = self.durable("a page's outcome").await;
                    keel_core::crash::point("after_page_recorded");
                    break;
                }
                tracing::warn!(receiver = %receiver.name(), error = ?result.err(), retry_in = ?wait, "sending a page failed; it will be retried");
                self.clock.sleep(wait).await;
                wait = (wait * 2).min(self.config.retry_max);
            }
        }
    }
}

/// Delivery `seq` of `all` (in `seq` order).
fn find(all: &[Delivery], seq: u64) -> Option<&Delivery> {
    all.binary_search_by_key(&seq, |d| d.seq)
        .ok()
        .map(|i| &all[i])
}

/// Delivery `seq` of `all`, to change.
fn find_mut(all: &mut [Delivery], seq: u64) -> Option<&mut Delivery> {
    all.binary_search_by_key(&seq, |d| d.seq)
        .ok()
        .map(|i| &mut all[i])
}
