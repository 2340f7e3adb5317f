//! One sender's share of the collector (`collector.auth.senders[].limits`):
//! an ingestion rate (samples, spans and log records a second, with a
//! burst) and a cap on the active series it may hold, as Mimir's
//! `ingestion_rate` and `max_global_series_per_user` are per tenant.
//!
//! The quota is checked where a batch is decoded (OTLP over HTTP and
//! gRPC, remote write, log push), after the sender's token: a batch over
//! the rate is refused whole and retryable (HTTP 429 with `Retry-After`,
//! gRPC `UNAVAILABLE`), nothing of it stored; samples of series past the
//! cap are refused and named, the rest of the batch stored.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Longest `Retry-After` a sender is told (it asks again then, and is
/// told again if it must still wait).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// A series the sender has not written for this long no longer counts
/// against its `max_series` (the head keeps about this much).
pub const SERIES_IDLE: Duration = Duration::from_secs(3600);

/// `limits:` of one sender (0: no limit of that kind).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaLimits {
    /// Most active series the sender may hold (a series it wrote within
    /// the last hour); samples of new series past it are refused.
    pub max_series: usize,
    /// Samples, spans and log records a second, on average.
    pub ingestion_rate: f64,
    /// Most taken at once after a quiet spell (0: one second's worth of
    /// `ingestion_rate`).
    pub ingestion_burst: f64,
}

impl QuotaLimits {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.max_series > 0 || self.ingestion_rate > 0.0
    }

    /// Every problem, each naming its place under `at`.
    pub fn validate(&self, at: &str, problems: &mut Vec<String>) {
        for (name, v) in [
            ("ingestion_rate", self.ingestion_rate),
            ("ingestion_burst", self.ingestion_burst),
        ] {
            if !v.is_finite() || v < 0.0 {
                problems.push(format!("{at}.{name}: must be a number of 0 or more"));
            } else if v > 0.0 && v < 1.0 {
                problems.push(format!(
                    "{at}.{name}: must be at least 1 (items a second; 0: no limit)"
                ));
            }
        }
        if self.ingestion_burst > 0.0 && self.ingestion_rate == 0.0 {
            problems.push(format!(
                "{at}.ingestion_burst: only with ingestion_rate (a burst of an unlimited rate)"
            ));
        }
    }

    fn burst(&self) -> f64 {
        if self.ingestion_burst > 0.0 {
            self.ingestion_burst
        } else {
            self.ingestion_rate
        }
    }
}

/// Which limit refused data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Limit {
    /// `ingestion_rate`: a whole batch, retryable.
    Rate,
    /// `max_series`: samples of new series.
    Series,
}

impl Limit {
    /// Both, in the order [`Quota::refused`] counts them.
    pub const ALL: [Limit; 2] = [Limit::Rate, Limit::Series];

    /// The setting's name, as a label value.
    pub fn name(self) -> &'static str {
        match self {
            Limit::Rate => "ingestion_rate",
            Limit::Series => "max_series",
        }
    }
}

/// A batch over the sender's rate: retry after `retry_after`.
#[derive(Debug, Clone, PartialEq)]
pub struct OverRate {
    /// When enough of the rate will have come back (at most
    /// [`MAX_RETRY_AFTER`]).
    pub retry_after: Duration,
    /// What to tell the sender.
    pub message: String,
}

impl OverRate {
    /// `retry_after` in whole seconds, at least 1: a `Retry-After` value.
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_secs().max(1)
    }
}

struct Bucket {
    /// Items that may be taken now; negative after a batch larger than
    /// what was left (the debt, at most one burst, is repaid at the rate
    /// before the next).
    tokens: f64,
    at_ms: i64,
}

/// One sender's quota and what it has refused.
pub struct Quota {
    sender: String,
    limits: QuotaLimits,
    bucket: Mutex<Bucket>,
    /// Series (by fingerprint) the sender wrote, and when last.
    series: Mutex<HashMap<u64, i64>>,
    refused: [AtomicU64; 2],
}

impl Quota {
    /// The quota of `sender` (named in refusals as
    /// `collector.auth.senders[…]` with its name).
    pub fn new(sender: &str, limits: QuotaLimits) -> Self {
        Self {
            sender: sender.to_owned(),
            limits,
            bucket: Mutex::new(Bucket {
                tokens: limits.burst(),
                at_ms: i64::MIN,
            }),
            series: Mutex::new(HashMap::new()),
            refused: Default::default(),
        }
    }

    /// The sender's name.
    pub fn sender(&self) -> &str {
        &self.sender
    }

    /// Its limits.
    pub fn limits(&self) -> QuotaLimits {
        self.limits
    }

    /// Take `items` (samples, spans or log records) at `now_ms`. A batch
    /// is taken whole while any of the rate is left, even one larger
    /// than what is left (so a batch larger than the burst still goes
    /// through, once, rather than never): the sender then waits until
    /// the debt is repaid, a debt of at most one burst, so one huge
    /// batch never locks a sender out for long.
    pub fn take(&self, items: u64, now_ms: i64) -> Result<(), OverRate> {
        let rate = self.limits.ingestion_rate;
        if rate <= 0.0 || items == 0 {
            return Ok(());
        }
        let burst = self.limits.burst();
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        if b.at_ms != i64::MIN {
            let elapsed = (now_ms - b.at_ms).max(0) as f64 / 1000.0;
            b.tokens = (b.tokens + elapsed * rate).min(burst);
        }
        b.at_ms = now_ms.max(b.at_ms);
        if b.tokens <= 0.0 {
            self.refused[Limit::Rate as usize].fetch_add(items, Ordering::Relaxed);
            // Whole seconds, at least one: Retry-After carries seconds.
            let wait = ((-b.tokens + 1.0) / rate)
                .ceil()
                .clamp(1.0, MAX_RETRY_AFTER.as_secs_f64());
            return Err(OverRate {
                retry_after: Duration::try_from_secs_f64(wait).unwrap_or(MAX_RETRY_AFTER),
                message: format!(
                    "sender {:?} is over its ingestion rate ({rate}/s, burst {burst}; \
                     collector.auth.senders[].limits.ingestion_rate): retry in {wait} s",
                    self.sender
                ),
            });
        }
        b.tokens = (b.tokens - items as f64).max(-burst);
        Ok(())
    }

    /// Give back `items` taken for a batch that was not stored after all
    /// (the store could not write, or it was a resend already stored).
    pub fn refund(&self, items: u64) {
        if self.limits.ingestion_rate <= 0.0 || items == 0 {
            return;
        }
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        b.tokens = (b.tokens + items as f64).min(self.limits.burst());
    }

    /// Which of `series` (fingerprints, one per series of a batch) the
    /// sender may write at `now_ms`: those it holds already, and new ones
    /// while it holds fewer than `max_series`. The admitted ones count
    /// from now; the refused are counted in [`Self::refused`] by the
    /// `samples` each carries.
    pub fn admit(&self, series: &[(u64, u64)], now_ms: i64) -> Vec<bool> {
        let max = self.limits.max_series;
        if max == 0 {
            return vec![true; series.len()];
        }
        let mut held = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let mut pruned = false;
        let mut refused = 0;
        let out = series
            .iter()
            .map(|&(fp, samples)| {
                if let Some(t) = held.get_mut(&fp) {
                    *t = (*t).max(now_ms);
                    return true;
                }
                if held.len() >= max && !pruned {
                    // Forget what went idle, once a batch, only when full.
                    let idle = now_ms - SERIES_IDLE.as_millis() as i64;
                    held.retain(|_, t| *t >= idle);
                    pruned = true;
                }
                if held.len() < max {
                    held.insert(fp, now_ms);
                    true
                } else {
                    refused += samples;
                    false
                }
            })
            .collect();
        self.refused[Limit::Series as usize].fetch_add(refused, Ordering::Relaxed);
        out
    }

    /// Why series were refused, for the sender.
    pub fn series_message(&self, refused_samples: u64) -> String {
        format!(
            "{refused_samples} samples of new series refused: sender {:?} holds its limit of {} active series (collector.auth.senders[].limits.max_series)",
            self.sender, self.limits.max_series
        )
    }

    /// Active series held now (idle ones may still count until pruned).
    pub fn series_held(&self) -> usize {
        self.series.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Items refused so far, by limit.
    pub fn refused(&self) -> [(Limit, u64); 2] {
        Limit::ALL.map(|l| (l, self.refused[l as usize].load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(rate: f64, burst: f64) -> Quota {
        Quota::new(
            "edge",
            QuotaLimits {
                ingestion_rate: rate,
                ingestion_burst: burst,
                ..Default::default()
            },
        )
    }

    #[test]
    fn the_rate_refuses_a_batch_once_the_burst_is_spent_and_refills_with_time() {
        let q = rate(100.0, 200.0);
        q.take(150, 0).expect("within the burst");
        q.take(100, 0).expect("some left: taken whole, into debt");
        let e = q.take(1, 0).expect_err("in debt");
        assert_eq!(e.retry_after, Duration::from_secs(1), "51 owed at 100/s");
        assert!(e.message.contains("ingestion_rate"), "{}", e.message);
        assert!(e.message.contains("\"edge\""), "{}", e.message);
        q.take(1, 499).expect_err("still 1 owed at 499 ms");
        q.take(10, 600).expect("repaid by 600 ms");
        assert_eq!(q.refused()[0], (Limit::Rate, 2));
        // A long quiet spell refills to the burst, no further.
        q.take(200, 3_600_000).expect("the burst");
        q.take(1, 3_600_000).expect_err("not beyond it");
    }

    #[test]
    fn a_huge_batch_owes_at_most_one_burst_and_a_refund_gives_back() {
        let q = rate(10.0, 50.0);
        q.take(1_000_000, 0).expect("some left: taken");
        let e = q.take(1, 0).expect_err("in debt");
        assert_eq!(
            e.retry_after,
            Duration::from_secs(6),
            "50 owed (+1) at 10/s"
        );
        assert_eq!(e.retry_after_secs(), 6);
        q.take(1, 4_990).expect_err("0.1 still owed");
        q.take(1, 5_100).expect("repaid after 5.1 s");
        // A batch not stored after all is given back (up to the burst).
        q.refund(1);
        q.take(1, 5_100).expect("refunded");
        let slow = rate(1.0, 1e15);
        slow.take(u64::MAX, 0).expect("taken");
        let e = slow.take(1, 0).expect_err("in debt");
        assert_eq!(e.retry_after, MAX_RETRY_AFTER, "capped, never a panic");
    }

    #[test]
    fn no_rate_takes_everything() {
        let q = rate(0.0, 0.0);
        for t in 0..10 {
            q.take(u64::MAX / 16, t).expect("unlimited");
        }
        assert_eq!(q.refused()[0].1, 0);
    }

    #[test]
    fn series_past_the_cap_are_refused_until_held_ones_go_idle() {
        let q = Quota::new(
            "edge",
            QuotaLimits {
                max_series: 2,
                ..Default::default()
            },
        );
        assert_eq!(q.admit(&[(1, 5), (2, 5), (3, 7)], 0), [true, true, false]);
        assert_eq!(q.refused()[1], (Limit::Series, 7));
        assert_eq!(
            q.admit(&[(2, 1), (1, 1)], 1000),
            [true, true],
            "held ones pass"
        );
        assert_eq!(q.series_held(), 2);
        // Series 1 written at 1 s, series 2 rewritten at 30 min: an hour
        // after 1 s, series 1 is idle and its place goes to series 3.
        q.admit(&[(2, 1)], 1_800_000);
        assert_eq!(q.admit(&[(3, 1)], 3_601_001), [true]);
        assert_eq!(q.admit(&[(1, 1)], 3_601_002), [false], "1 lost its place");
        assert!(q.series_message(3).contains("limit of 2 active series"));
    }

    #[test]
    fn bad_limits_are_named() {
        let mut p = Vec::new();
        QuotaLimits {
            ingestion_rate: -1.0,
            ingestion_burst: f64::NAN,
            ..Default::default()
        }
        .validate("x", &mut p);
        assert_eq!(
            p,
            [
                "x.ingestion_rate: must be a number of 0 or more",
                "x.ingestion_burst: must be a number of 0 or more"
            ]
        );
        p.clear();
        QuotaLimits {
            ingestion_rate: 0.001,
            ..Default::default()
        }
        .validate("x", &mut p);
        assert_eq!(
            p,
            ["x.ingestion_rate: must be at least 1 (items a second; 0: no limit)"]
        );
        p.clear();
        QuotaLimits {
            ingestion_burst: 10.0,
            ..Default::default()
        }
        .validate("x", &mut p);
        assert_eq!(
            p,
            ["x.ingestion_burst: only with ingestion_rate (a burst of an unlimited rate)"]
        );
    }
}
