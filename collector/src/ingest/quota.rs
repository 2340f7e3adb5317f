//! A sender's quota (`collector.auth.senders[].limits`) applied to a
//! decoded metrics batch: its items against the ingestion rate, its
//! series against the active-series cap.

use std::hash::BuildHasher as _;

use keel_core::quota::Quota;
use keel_metricstore::wal::Batch;

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
