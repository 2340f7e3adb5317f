//! Receiving telemetry: OTLP/HTTP and the OTLP → series mapping, and
//! Prometheus remote write; each sender's quota on what it sends.

pub mod grpc;
pub mod http;
pub mod otlp;
pub mod quota;
pub mod remote_write;
pub mod remote_write_v2;

/// Keep a stored batch's `exemplars` (after its samples: a failure here
/// loses no sample, and is logged rather than refused, as Prometheus
/// does not fail a write for its exemplars), counting what was kept and
/// refused.
pub(crate) fn store_exemplars(
    store: &keel_metricstore::Store,
    exemplars: Vec<(keel_series::Labels, keel_metricstore::exemplars::Exemplar)>,
    stats: &http::IngestStats,
) -> u64 {
    use std::sync::atomic::Ordering::Relaxed;
    if exemplars.is_empty() {
        return 0;
    }
    match store.exemplars().append(exemplars) {
        Ok(done) => {
            stats.exemplars_appended.fetch_add(done.stored, Relaxed);
            stats
                .exemplars_refused
                .fetch_add(done.out_of_order + done.too_long, Relaxed);
            done.stored
        }
        Err(e) => {
            tracing::warn!(error = %e, "exemplars not kept");
            0
        }
    }
}
