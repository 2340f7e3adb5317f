//! Sending the buffer to the collector, oldest batch first.
//!
//! One request a batch: OTLP/HTTP protobuf, `Content-Encoding: gzip`,
//! and the batch's id in `Keel-Batch-Id` on every attempt, so the
//! collector can drop a repeat after an answer was lost. A 2xx answer
//! acknowledges the batch; 429 and 503 are retried after their
//! `Retry-After` when they give one; other 5xx answers and network errors
//! are retried with jittered exponential backoff; a 4xx other than 429
//! means the collector will never take the batch, so it is counted as
//! rejected and dropped (retrying would wedge the buffer).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_core::clock::SharedClock;
use rand::Rng;
use tokio::sync::Notify;

use crate::buffer::{Batch, BufferError, DiskBuffer};
use crate::config::RetryConfig;
use crate::stats::Stats;

/// The header carrying a batch's id.
pub const BATCH_ID_HEADER: &str = "keel-batch-id";

/// The buffer shared by the producers and the shipper.
#[derive(Debug)]
pub struct Shared {
    /// The buffer.
    pub buffer: Mutex<DiskBuffer>,
    /// Woken when a batch is pushed.
    pub pushed: Notify,
    /// The agent's counters.
    pub stats: Stats,
}

impl Shared {
    /// Write a batch to the buffer and wake the shipper.
    pub fn push(&self, b: &Batch) -> Result<(), BufferError> {
        self.buffer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(b)?;
        Stats::add(&self.stats.buffered, b.signal, u64::from(b.records));
        self.pushed.notify_one();
        Ok(())
    }
}

/// How one attempt ended.
#[derive(Debug, PartialEq)]
pub enum Attempt {
    /// The collector took it.
    Accepted,
    /// Try again, after this long if the collector said.
    Retry(Option<Duration>, String),
    /// The collector will never take it.
    Rejected(String),
}

/// Send one batch once.
pub async fn send(client: &reqwest::Client, base: &str, b: &Batch, timeout: Duration) -> Attempt {
    let url = format!("{}{}", base.trim_end_matches('/'), b.signal.path());
    let resp = client
        .post(&url)
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "gzip")
        .header(BATCH_ID_HEADER, format!("{:032x}", b.id))
        .timeout(timeout)
        .body(b.body.clone())
        .send()
        .await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) => return Attempt::Retry(None, format!("{url}: {e}")),
    };
    let status = resp.status();
    if status.is_success() {
        return Attempt::Accepted;
    }
    let after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = resp.text().await.unwrap_or_default();
    let why = format!(
        "{url}: HTTP {status}: {}",
        body.chars().take(300).collect::<String>()
    );
    if status.as_u16() == 429 || status.is_server_error() {
        Attempt::Retry(after, why)
    } else {
        Attempt::Rejected(why)
    }
}

/// The wait before attempt `n + 1` after `n` failures: doubling from
/// `initial`, capped at `max`, jittered to between half and all of it.
pub fn backoff(cfg: &RetryConfig, failures: u32, rng: &mut impl Rng) -> Duration {
    let full = cfg
        .initial
        .saturating_mul(1u32 << failures.min(20))
        .min(cfg.max);
    let half = full / 2;
    half + full.mul_f64(rng.random_range(0.0..=0.5))
}

/// Ship the buffer forever (until the task is dropped).
pub async fn run(
    shared: Arc<Shared>,
    client: reqwest::Client,
    base: String,
    retry: RetryConfig,
    clock: SharedClock,
) {
    let mut rng = rand::rngs::SmallRng::from_os_rng();
    let mut failures = 0u32;
    loop {
        let next = shared
            .buffer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .peek();
        let b = match next {
            Ok(Some(b)) => b,
            Ok(None) => {
                shared.pushed.notified().await;
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "disk buffer: cannot read the next batch");
                clock.sleep(backoff(&retry, failures, &mut rng)).await;
                failures = failures.saturating_add(1);
                continue;
            }
        };
        match send(&client, &base, &b, retry.timeout).await {
            Attempt::Accepted => {
                failures = 0;
                Stats::add(&shared.stats.sent, b.signal, u64::from(b.records));
                let acked = shared
                    .buffer
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .ack(b.id);
                if let Err(e) = acked {
                    tracing::error!(error = %e, "disk buffer: cannot record an acknowledgement");
                }
            }
            Attempt::Rejected(why) => {
                failures = 0;
                Stats::add(&shared.stats.rejected, b.signal, u64::from(b.records));
                tracing::warn!(records = b.records, signal = b.signal.name(), %why, "the collector rejected a batch; dropped");
                let _ = shared
                    .buffer
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .ack(b.id);
            }
            Attempt::Retry(after, why) => {
                Stats::add(&shared.stats.failed, b.signal, 1);
                let wait = after.unwrap_or_else(|| backoff(&retry, failures, &mut rng));
                if failures == 0 || failures.is_power_of_two() {
                    tracing::warn!(%why, retry_in = ?wait, failures = failures + 1, "sending a batch failed; it stays buffered");
                }
                failures = failures.saturating_add(1);
                clock.sleep(wait).await;
            }
        }
    }
}

use rand::SeedableRng;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_in_the_upper_half() {
        let cfg = RetryConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
        };
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        for (failures, full) in [(0, 100), (1, 200), (3, 800), (5, 2000), (30, 2000)] {
            for _ in 0..50 {
                let d = backoff(&cfg, failures, &mut rng).as_millis() as u64;
                assert!(
                    (full / 2..=full).contains(&d),
                    "{failures}: {d} not in {full}/2..={full}"
                );
            }
        }
    }
}
