//! Receiving telemetry: OTLP/HTTP and the OTLP → series mapping, and
//! Prometheus remote write; each sender's quota on what it sends.

pub mod grpc;
pub mod http;
pub mod label_cache;
pub mod otlp;
pub mod quota;
pub mod remote_write;
pub mod remote_write_v2;

/// Keep a stored batch's `exemplars` (after its samples: a failure here
/// loses no sample, and is logged rather than refused, as Prometheus
/// does not fail a write for its exemplars), counting what was kept and
/// refused. Only exemplars of series the store holds are kept, as in
/// Prometheus: a series whose samples the limits refused (its labels too
/// long, past `max_series`) cannot be stored through its exemplars.
pub(crate) fn store_exemplars(
    store: &keel_metricstore::Store,
    mut exemplars: Vec<(keel_series::Labels, keel_metricstore::exemplars::Exemplar)>,
    stats: &http::IngestStats,
) -> u64 {
    use std::sync::atomic::Ordering::Relaxed;
    if exemplars.is_empty() {
        return 0;
    }
    let before = exemplars.len();
    let held = store.holds(&exemplars.iter().map(|(s, _)| s).collect::<Vec<_>>());
    let mut held = held.into_iter();
    exemplars.retain(|_| held.next().unwrap_or(false));
    let unheld = (before - exemplars.len()) as u64;
    stats.exemplars_refused_no_series.fetch_add(unheld, Relaxed);
    match store.exemplars().append(exemplars) {
        Ok(done) => {
            stats.exemplars_appended.fetch_add(done.stored, Relaxed);
            stats
                .exemplars_out_of_order
                .fetch_add(done.out_of_order, Relaxed);
            stats.exemplars_too_long.fetch_add(done.too_long, Relaxed);
            done.stored
        }
        Err(e) => {
            stats.exemplars_not_logged.fetch_add(1, Relaxed);
            tracing::warn!(error = %e, "exemplars not kept");
            0
        }
    }
}
