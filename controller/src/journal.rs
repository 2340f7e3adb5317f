//! Where the controller's events go: kept in memory for `GET
//! /api/v1/events` (the newest [`KEEP`]) and saved to the state store,
//! each under a key of its own (time, subject, and a sequence number, so
//! two events of one subject in one millisecond never overwrite each
//! other). Also which autoscaling policies are paused, and why (a
//! failover in progress).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::run::Event;

/// Most events kept in memory.
pub const KEEP: usize = 10_000;

/// The event log and the pauses.
pub struct Journal {
    events: Mutex<VecDeque<Event>>,
    writer: Option<keel_state::Writer>,
    /// Sequence numbers restart with the process: this keeps a restarted
    /// one's keys apart from the last one's (replay restarts the clock).
    nonce: u32,
    seq: AtomicU64,
    paused: Mutex<BTreeMap<String, String>>,
}

/// A number unlikely to repeat across processes (no RNG dependency: the
/// time and the process id, mixed).
fn rand_nonce() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let x = t ^ (u64::from(std::process::id()) << 32);
    (x ^ (x >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15) as u32
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Journal {
    /// A journal saving through `writer` when given.
    pub fn new(writer: Option<keel_state::Writer>) -> Self {
        Self {
            events: Mutex::new(VecDeque::new()),
            writer,
            nonce: rand_nonce(),
            seq: AtomicU64::new(0),
            paused: Mutex::new(BTreeMap::new()),
        }
    }

    /// Keep `e` (logged, in memory, in the state store).
    pub fn record(&self, e: Event) {
        tracing::info!(subject = %e.subject, kind = %e.kind, "{}", e.explanation);
        if let Some(w) = &self.writer
            && let Ok(doc) = serde_json::to_string(&e)
        {
            let n = self.seq.fetch_add(1, Ordering::Relaxed);
            w.send(keel_state::Op::Put {
                table: keel_state::Table::Events,
                key: format!("{:016}-{}-{:08x}{n:08}", e.at_ms, e.subject, self.nonce),
                at_ms: e.at_ms,
                doc,
            });
        }
        let mut all = lock(&self.events);
        all.push_back(e);
        while all.len() > KEEP {
            all.pop_front();
        }
    }

    /// The authority actions are taken under now (the writer's lease).
    pub fn fencing(&self) -> crate::fencing::Fencing {
        crate::fencing::Fencing::new(self.writer.clone())
    }

    /// Save a document of `table` (a failover target's state).
    pub fn save(&self, table: keel_state::Table, key: &str, at_ms: i64, doc: String) {
        if let Some(w) = &self.writer {
            w.send(keel_state::Op::Put {
                table,
                key: key.to_owned(),
                at_ms,
                doc,
            });
        }
    }

    /// The events kept, oldest first, at or after `since_ms`, for
    /// `subject` if given, the newest `limit`.
    pub fn events(&self, since_ms: i64, subject: Option<&str>, limit: usize) -> Vec<Event> {
        let all = lock(&self.events);
        let hits: Vec<&Event> = all
            .iter()
            .filter(|e| e.at_ms >= since_ms && subject.is_none_or(|s| e.subject == s))
            .collect();
        hits[hits.len().saturating_sub(limit)..]
            .iter()
            .map(|e| (*e).clone())
            .collect()
    }

    /// Put back events saved before a restart (oldest first).
    pub fn restore(&self, saved: Vec<Event>) {
        let mut all = lock(&self.events);
        for e in saved {
            all.push_back(e);
        }
        while all.len() > KEEP {
            all.pop_front();
        }
    }

    /// Pause `policy` for `why` (until [`Self::resume`]).
    pub fn pause(&self, policy: &str, why: &str) {
        lock(&self.paused).insert(policy.to_owned(), why.to_owned());
    }

    /// Let `policy` act again.
    pub fn resume(&self, policy: &str) {
        lock(&self.paused).remove(policy);
    }

    /// Why `policy` is paused, if it is.
    pub fn paused(&self, policy: &str) -> Option<String> {
        lock(&self.paused).get(policy).cloned()
    }
}
