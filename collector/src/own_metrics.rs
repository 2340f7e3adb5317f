//! `GET /metrics` on the API port: the collector's own counters in
//! Prometheus' text format, for the Prometheus (or Keel agent) that
//! watches the watcher.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use keel_alerting::notify::Notifier;
use keel_promql::QueryGate;

/// What the counters are read from.
#[derive(Clone)]
pub struct Own {
    /// Pages and their failures.
    pub notifier: Arc<Notifier>,
    /// Queries running.
    pub gate: QueryGate,
    /// Ingest counters.
    pub stats: Arc<crate::ingest::http::IngestStats>,
    /// The metric store (its head's series).
    pub store: Arc<keel_metricstore::Store>,
    /// The sender tokens (their refusals).
    pub senders: keel_auth::Senders,
    /// Forwarding's queues.
    pub forward: Arc<crate::forward::Forwarding>,
    /// The rule groups (how long each takes).
    pub rules: Arc<keel_alerting::rules::RuleManager>,
}

/// The route.
pub fn routes(own: Own) -> keel_http::Routes {
    keel_http::Routes::new()
        .route("/metrics", get(metrics))
        .map(|r| r.with_state(own))
}

/// Escape a label value for the text format.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A family's `# HELP` and `# TYPE` lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The text of every family.
pub fn render(own: &Own) -> String {
    let (notifier, gate) = (&own.notifier, &own.gate);
    let mut out = String::new();
    family(
        &mut out,
        "keel_notifications_failed_total",
        "counter",
        "Notifications given up on because their receiver refused them for good (a webhook's 4xx, an SMTP 5xx).",
    );
    for (receiver, n) in notifier.failed_total() {
        let _ = writeln!(
            out,
            "keel_notifications_failed_total{{receiver=\"{}\"}} {n}",
            escape(&keel_core::secret::redact_url_path(&receiver))
        );
    }
    family(
        &mut out,
        "keel_rule_evaluation_panics_total",
        "counter",
        "Rule evaluations that panicked (the rule is health: err; the others go on).",
    );
    let _ = writeln!(
        out,
        "keel_rule_evaluation_panics_total {}",
        keel_alerting::rules::engine::guard::panics()
    );
    family(
        &mut out,
        "keel_queries_running",
        "gauge",
        "API and dashboard queries being evaluated now.",
    );
    let _ = writeln!(out, "keel_queries_running {}", gate.running());
    family(
        &mut out,
        "keel_head_series",
        "gauge",
        "Series in the metric store's head (collector.limits.max_series bounds them).",
    );
    let _ = writeln!(out, "keel_head_series {}", own.store.stats().series);
    family(
        &mut out,
        "keel_ingest_samples_over_limits_total",
        "counter",
        "Samples refused by collector.limits (the series limit, label limits) and by senders' max_series.",
    );
    let _ = writeln!(
        out,
        "keel_ingest_samples_over_limits_total {}",
        own.stats
            .samples_over_limits
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    let ex = own.store.exemplars();
    for (name, kind, help, v) in [
        (
            "prometheus_tsdb_exemplar_exemplars_appended_total",
            "counter",
            "Exemplars kept.",
            own.stats
                .exemplars_appended
                .load(std::sync::atomic::Ordering::Relaxed),
        ),
        (
            "prometheus_tsdb_exemplar_out_of_order_exemplars_total",
            "counter",
            "Exemplars refused: older than their series' newest.",
            own.stats
                .exemplars_out_of_order
                .load(std::sync::atomic::Ordering::Relaxed),
        ),
        (
            "prometheus_tsdb_exemplar_exemplars_in_storage",
            "gauge",
            "Exemplars held (collector.max_exemplars bounds them).",
            ex.len() as u64,
        ),
        (
            "prometheus_tsdb_exemplar_max_exemplars",
            "gauge",
            "Most exemplars held (collector.max_exemplars).",
            ex.capacity() as u64,
        ),
    ] {
        family(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {v}");
    }
    family(
        &mut out,
        "keel_exemplars_refused_total",
        "counter",
        "Exemplars not kept, by reason: out_of_order, too_long (labels over 128 characters), no_series (their samples were refused), not_logged (batches the exemplar log could not take).",
    );
    for (reason, n) in [
        ("out_of_order", &own.stats.exemplars_out_of_order),
        ("too_long", &own.stats.exemplars_too_long),
        ("no_series", &own.stats.exemplars_refused_no_series),
        ("not_logged", &own.stats.exemplars_not_logged),
    ] {
        let _ = writeln!(
            out,
            "keel_exemplars_refused_total{{reason=\"{reason}\"}} {}",
            n.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
    family(
        &mut out,
        "keel_ingest_unauthorized_total",
        "counter",
        "Ingest requests refused for their sender token (collector.auth.senders), by reason.",
    );
    for (why, n) in own.senders.refused() {
        let _ = writeln!(
            out,
            "keel_ingest_unauthorized_total{{reason=\"{}\"}} {n}",
            why.name()
        );
    }
    let quotas: Vec<_> = own.senders.quotas().collect();
    if !quotas.is_empty() {
        family(
            &mut out,
            "keel_sender_refused_total",
            "counter",
            "Samples, spans and log records refused by a sender's limits (collector.auth.senders[].limits), by sender and limit.",
        );
        for q in &quotas {
            for (limit, n) in q.refused() {
                let _ = writeln!(
                    out,
                    "keel_sender_refused_total{{sender=\"{}\",limit=\"{}\"}} {n}",
                    escape(q.sender()),
                    limit.name()
                );
            }
        }
        family(
            &mut out,
            "keel_sender_series",
            "gauge",
            "Active series a sender with max_series holds (idle ones count until its limit is reached).",
        );
        for q in quotas.iter().filter(|q| q.limits().max_series > 0) {
            let _ = writeln!(
                out,
                "keel_sender_series{{sender=\"{}\"}} {}",
                escape(q.sender()),
                q.series_held()
            );
        }
    }
    crate::forward::render(&own.forward.status(), &mut out);
    limits_coming(own, &mut out);
    prometheus_names(own, &mut out);
    out
}

/// The figures Prometheus exports under its own names, for dashboards
/// and alerts written against a Prometheus server: its head's series,
/// the samples appended, readiness, and its Alertmanager notifier's
/// queue, sends, errors and drops.
fn prometheus_names(own: &Own, out: &mut String) {
    use std::sync::atomic::Ordering::Relaxed;
    let (ams, dropped, queued) = own.notifier.alertmanager_stats();
    let gauges = [
        (
            "prometheus_tsdb_head_series",
            "Series in the head block.",
            own.store.stats().series,
        ),
        (
            "prometheus_ready",
            "Whether the server is ready to take traffic.",
            1,
        ),
        (
            "prometheus_notifications_queue_length",
            "Alerts waiting to be sent to Alertmanagers.",
            queued as u64,
        ),
        (
            "prometheus_notifications_queue_capacity",
            "How many alerts the queue holds.",
            keel_alerting::notify::to_alertmanager::QUEUE_CAPACITY as u64,
        ),
        (
            "prometheus_notifications_alertmanagers_discovered",
            "Alertmanagers alerts are sent to.",
            ams.len() as u64,
        ),
    ];
    for (name, help, v) in gauges {
        family(out, name, "gauge", help);
        let _ = writeln!(out, "{name} {v}");
    }
    let counters = [
        (
            "prometheus_tsdb_head_samples_appended_total",
            "Samples appended, every ingest path.",
            own.stats.samples_accepted.load(Relaxed),
        ),
        (
            "prometheus_notifications_dropped_total",
            "Alerts dropped: the queue was full, or no Alertmanager took them.",
            dropped,
        ),
    ];
    for (name, help, v) in counters {
        family(out, name, "counter", help);
        let _ = writeln!(out, "{name} {v}");
    }
    type Pick = fn(&(String, u64, u64)) -> u64;
    let per_am: [(&str, &str, Pick); 2] = [
        (
            "prometheus_notifications_sent_total",
            "Alerts sent to each Alertmanager.",
            |a| a.1,
        ),
        (
            "prometheus_notifications_errors_total",
            "Requests to each Alertmanager that failed.",
            |a| a.2,
        ),
    ];
    for (name, help, pick) in per_am {
        family(out, name, "counter", help);
        for a in &ams {
            let _ = writeln!(
                out,
                "{name}{{alertmanager=\"{}\"}} {}",
                escape(&a.0),
                pick(a)
            );
        }
    }
}

/// The families that show a limit coming (docs/SCALING.md): samples
/// taken and refused, each rule group's evaluation time beside its
/// interval, and this process's CPU and memory (Prometheus' process
/// collector's names).
fn limits_coming(own: &Own, out: &mut String) {
    use std::sync::atomic::Ordering::Relaxed;
    let counters = [
        (
            "keel_ingest_samples_accepted_total",
            "Samples stored, every ingest path.",
            own.stats.samples_accepted.load(Relaxed),
        ),
        (
            "keel_ingest_samples_rejected_total",
            "Samples refused (malformed, too old, duplicate, over a limit).",
            own.stats.samples_rejected.load(Relaxed),
        ),
    ];
    for (name, help, v) in counters {
        family(out, name, "counter", help);
        let _ = writeln!(out, "{name} {v}");
    }
    // (group, interval seconds, last duration seconds)
    type Group = (String, f64, f64);
    type Pick = fn(&Group) -> f64;
    let groups = own.rules.group_durations();
    let per_group: [(&str, &str, Pick); 2] = [
        (
            "keel_rule_group_last_duration_seconds",
            "How long the group's last evaluation took.",
            |g| g.2,
        ),
        (
            "keel_rule_group_interval_seconds",
            "The group's evaluation interval.",
            |g| g.1,
        ),
    ];
    for (name, help, pick) in per_group {
        family(out, name, "gauge", help);
        for g in &groups {
            let _ = writeln!(out, "{name}{{rule_group=\"{}\"}} {}", escape(&g.0), pick(g));
        }
    }
    let (cpu, rss) = (
        keel_core::procfs::cpu_seconds("self"),
        keel_core::procfs::rss_bytes("self"),
    );
    if let (Some(cpu), Some(rss)) = (cpu, rss) {
        family(
            out,
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time of this process.",
        );
        let _ = writeln!(out, "process_cpu_seconds_total {cpu}");
        family(
            out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory of this process.",
        );
        let _ = writeln!(out, "process_resident_memory_bytes {rss}");
    }
}

async fn metrics(State(own): State<Own>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        render(&own),
    )
        .into_response()
}
