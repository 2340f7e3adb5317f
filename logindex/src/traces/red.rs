//! RED metrics derived from spans, so services that only send traces still
//! get rate, error and duration panels. Named and labelled as Grafana
//! Tempo's span metrics (`traces_spanmetrics_*` there, `traces_span_metrics_*`
//! here, so they never double-count a service's own request metrics):
//!
//! - `traces_span_metrics_calls_total{job, span_name, span_kind, status_code}`
//!   (`job` is the span's service, as Prometheus 3 maps `service.name` of
//!   the OpenTelemetry Collector's span metrics)
//! - `traces_span_metrics_duration_seconds_bucket{…, le}`, `_sum`, `_count`
//!
//! Counters are cumulative from the collector's start (a restart is a
//! counter reset, which `rate()` handles); each batch of spans appends
//! the touched series' values at the ingest time.

use std::sync::Mutex;

use super::SpanRecord;
use keel_metricstore::{Store, StoreError};
use keel_series::FastMap;
use keel_series::labels::Labels;

/// Upper bounds (seconds) of the duration histogram: Prometheus' defaults.
pub const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    service: String,
    span_name: String,
    span_kind: String,
    status_code: String,
}

#[derive(Debug, Default)]
struct Acc {
    calls: u64,
    /// Counts at or below each bound (cumulative), then +Inf.
    buckets: [u64; BUCKETS.len() + 1],
    sum_seconds: f64,
    /// Last sample time written, so the next is strictly later.
    last_ms: i64,
}

/// The accumulated span metrics.
#[derive(Debug, Default)]
pub struct SpanMetrics {
    acc: Mutex<FastMap<Key, Acc>>,
}

fn tempo_kind(kind: &str) -> String {
    format!("SPAN_KIND_{}", kind.to_ascii_uppercase())
}

fn tempo_status(status: &str) -> String {
    format!("STATUS_CODE_{}", status.to_ascii_uppercase())
}

impl SpanMetrics {
    /// Count `spans`, then store the touched series at `now_ms`.
    pub fn record(
        &self,
        spans: &[SpanRecord],
        store: &Store,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        if spans.is_empty() {
            return Ok(());
        }
        let mut acc = self.acc.lock().unwrap_or_else(|e| e.into_inner());
        let mut touched: Vec<Key> = Vec::new();
        for s in spans {
            let key = Key {
                service: s.service.clone(),
                span_name: s.operation.clone(),
                span_kind: tempo_kind(&s.span_kind),
                status_code: tempo_status(&s.status),
            };
            let a = acc.entry(key.clone()).or_default();
            let secs = s.duration_ns() as f64 / 1e9;
            a.calls += 1;
            a.sum_seconds += secs;
            for (i, le) in BUCKETS.iter().enumerate() {
                if secs <= *le {
                    a.buckets[i] += 1;
                }
            }
            a.buckets[BUCKETS.len()] += 1;
            if !touched.contains(&key) {
                touched.push(key);
            }
        }
        let mut batch = Vec::with_capacity(touched.len() * (BUCKETS.len() + 4));
        for key in touched {
            let Some(a) = acc.get_mut(&key) else { continue };
            let t = now_ms.max(a.last_ms + 1);
            a.last_ms = t;
            let labels = |name: &str, le: Option<String>| {
                let mut pairs = vec![
                    ("__name__", name.to_owned()),
                    ("job", key.service.clone()),
                    ("span_name", key.span_name.clone()),
                    ("span_kind", key.span_kind.clone()),
                    ("status_code", key.status_code.clone()),
                ];
                if let Some(le) = le {
                    pairs.push(("le", le));
                }
                Labels::new(pairs)
            };
            batch.push((
                labels("traces_span_metrics_calls_total", None),
                vec![(t, a.calls as f64)],
            ));
            for (i, le) in BUCKETS.iter().enumerate() {
                batch.push((
                    labels(
                        "traces_span_metrics_duration_seconds_bucket",
                        Some(le.to_string()),
                    ),
                    vec![(t, a.buckets[i] as f64)],
                ));
            }
            batch.push((
                labels(
                    "traces_span_metrics_duration_seconds_bucket",
                    Some("+Inf".into()),
                ),
                vec![(t, a.buckets[BUCKETS.len()] as f64)],
            ));
            batch.push((
                labels("traces_span_metrics_duration_seconds_sum", None),
                vec![(t, a.sum_seconds)],
            ));
            batch.push((
                labels("traces_span_metrics_duration_seconds_count", None),
                vec![(t, a.calls as f64)],
            ));
        }
        drop(acc);
        store.append(batch).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_metricstore::{Matcher, StoreConfig};

    fn span(service: &str, op: &str, ms: i64, error: bool) -> SpanRecord {
        SpanRecord {
            trace_id: "0".repeat(31) + "1",
            span_id: "0".repeat(15) + "1",
            service: service.into(),
            operation: op.into(),
            span_kind: "server".into(),
            start_ns: 0,
            end_ns: ms * 1_000_000,
            status: if error { "error" } else { "unset" }.into(),
            ..SpanRecord::default()
        }
    }

    #[test]
    fn calls_errors_and_durations_accumulate_per_service_and_operation() {
        let store = Store::in_memory(StoreConfig::default());
        let m = SpanMetrics::default();
        m.record(
            &[
                span("api", "GET /", 3, false),
                span("api", "GET /", 300, false),
                span("api", "GET /", 20, true),
            ],
            &store,
            1_000,
        )
        .expect("record");
        // The same instant again still gets a later sample, not a duplicate.
        m.record(&[span("api", "GET /", 7, false)], &store, 1_000)
            .expect("record");
        let get = |name: &str, extra: Vec<Matcher>| {
            let mut ms = vec![Matcher::Equal("__name__".into(), name.into())];
            ms.extend(extra);
            store.select(&ms, 0, i64::MAX)
        };
        let ok = Matcher::Equal("status_code".into(), "STATUS_CODE_UNSET".into());
        let calls = get("traces_span_metrics_calls_total", vec![ok.clone()]);
        assert_eq!(calls[0].1, vec![(1_000, 2.0), (1_001, 3.0)]);
        let errors = get(
            "traces_span_metrics_calls_total",
            vec![Matcher::Equal(
                "status_code".into(),
                "STATUS_CODE_ERROR".into(),
            )],
        );
        assert_eq!(errors[0].1, vec![(1_000, 1.0)]);
        let le10ms = get(
            "traces_span_metrics_duration_seconds_bucket",
            vec![ok, Matcher::Equal("le".into(), "0.01".into())],
        );
        assert_eq!(le10ms[0].1.last().map(|x| x.1), Some(2.0));
        assert_eq!(le10ms[0].0.get("span_kind"), "SPAN_KIND_SERVER");
    }
}
