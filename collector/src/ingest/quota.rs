//! A sender's quota (`collector.auth.senders[].limits`) applied to a
//! decoded metrics batch: its items against the ingestion rate, its
//! series against the active-series cap.

use std::hash::BuildHasher as _;

use std::sync::atomic::Ordering;

use keel_core::quota::{OverRate, Quota};
use keel_metricstore::wal::Batch;

use super::http::IngestStats;

/// Charge a metrics batch to the sender's quota, if it has one: its
/// samples against the rate (over it: refused whole, nothing taken),
/// then its new series past the cap dropped from `batch` and counted in
/// `stats`. The samples dropped and why, when any were.
pub fn charge(
    quota: Option<&Quota>,
    batch: &mut Batch,
    now_ms: i64,
    stats: &IngestStats,
) -> Result<Option<(u64, String)>, OverRate> {
    take(quota, samples(batch), now_ms)?;
    let Some(q) = quota else {
        return Ok(None);
    };
    let dropped = admit_series(q, batch, now_ms);
    if let Some((n, _)) = &dropped {
        stats.samples_over_limits.fetch_add(*n, Ordering::Relaxed);
    }
    Ok(dropped)
}

/// Take `items` (spans, log records) against the sender's quota, if it
/// has one.
pub fn take(quota: Option<&Quota>, items: u64, now_ms: i64) -> Result<(), OverRate> {
    quota.map_or(Ok(()), |q| q.take(items, now_ms))
}

/// Give `items` back to the sender's quota: its batch was not stored
/// after all (the store failed, or it was a resend already stored).
pub fn refund(quota: Option<&Quota>, items: u64) {
    if let Some(q) = quota {
        q.refund(items);
    }
}

/// Native histogram samples in `series`.
pub fn histogram_samples(series: &[keel_series::SeriesHistograms]) -> u64 {
    series.iter().map(|(_, s)| s.len() as u64).sum()
}

/// Samples in `batch`.
pub fn samples(batch: &Batch) -> u64 {
    batch.iter().map(|(_, s)| s.len() as u64).sum()
}

/// Drop from `batch` the series `quota` refuses (new ones past its
/// `max_series`): the samples dropped and why, or `None` when none was.
pub fn admit_series(quota: &Quota, batch: &mut Batch, now_ms: i64) -> Option<(u64, String)> {
    if quota.limits().max_series == 0 {
        return None;
    }
    // A fixed hasher: the fingerprints live in this process only.
    let hasher = std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default();
    let keys: Vec<(u64, u64)> = batch
        .iter()
        .map(|(l, s)| (hasher.hash_one(l), s.len() as u64))
        .collect();
    let admitted = quota.admit(&keys, now_ms);
    let mut refused = 0;
    let mut i = 0;
    batch.retain(|(_, s)| {
        let keep = admitted[i];
        i += 1;
        if !keep {
            refused += s.len() as u64;
        }
        keep
    });
    (refused > 0).then(|| (refused, quota.series_message(refused)))
}
