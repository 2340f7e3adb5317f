//! The agent's own counters, exposed on its `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::buffer::{BufferStats, Signal};

/// Counters per signal, shared by the parts of the agent.
#[derive(Debug, Default)]
pub struct Stats {
    /// Records the collector acknowledged.
    pub sent: [AtomicU64; 3],
    /// Failed attempts to send a batch (each retried).
    pub failed: [AtomicU64; 3],
    /// Records the collector rejected as invalid (not retried).
    pub rejected: [AtomicU64; 3],
    /// Records written to the disk buffer.
    pub buffered: [AtomicU64; 3],
    /// Scrape lines that could not be parsed.
    pub invalid_scrape_lines: AtomicU64,
    /// Log records a log-to-metrics rule could not read.
    pub log_metrics_unmatched: AtomicU64,
}

impl Stats {
    /// Add `n` to a per-signal counter.
    pub fn add(counter: &[AtomicU64; 3], s: Signal, n: u64) {
        counter[s.index()].fetch_add(n, Ordering::Relaxed);
    }

    /// Prometheus text of the counters and the buffer's state.
    /// `send_lag_seconds` is each signal's, in [`Signal::index`] order.
    pub fn render(&self, buffer: &BufferStats, send_lag_seconds: [f64; 3]) -> String {
        let mut out = String::new();
        let per_signal: [(&str, &str, &[AtomicU64; 3]); 4] = [
            (
                "keel_agent_sent_records_total",
                "Records the collector acknowledged.",
                &self.sent,
            ),
            (
                "keel_agent_send_failures_total",
                "Failed attempts to send a batch (retried).",
                &self.failed,
            ),
            (
                "keel_agent_rejected_records_total",
                "Records the collector rejected as invalid.",
                &self.rejected,
            ),
            (
                "keel_agent_buffered_records_total",
                "Records written to the disk buffer.",
                &self.buffered,
            ),
        ];
        for (name, help, c) in per_signal {
            let values = Signal::ALL.map(|s| c[s.index()].load(Ordering::Relaxed));
            per_signal_family(&mut out, name, help, "counter", values);
        }
        per_signal_family(
            &mut out,
            "keel_agent_dropped_records_total",
            "Records dropped because the disk buffer was full.",
            "counter",
            buffer.dropped_records,
        );
        let _ = writeln!(
            out,
            "# HELP keel_agent_buffer_bytes Bytes of unsent batches on disk.\n# TYPE keel_agent_buffer_bytes gauge\nkeel_agent_buffer_bytes {}",
            buffer.bytes
        );
        let _ = writeln!(
            out,
            "# HELP keel_agent_buffer_batches Unsent batches on disk.\n# TYPE keel_agent_buffer_batches gauge\nkeel_agent_buffer_batches {}",
            buffer.batches
        );
        per_signal_family(
            &mut out,
            "keel_agent_send_lag_seconds",
            "Age of the signal's oldest unsent batch (0: none).",
            "gauge",
            send_lag_seconds,
        );
        let _ = writeln!(
            out,
            "# HELP keel_agent_invalid_scrape_lines_total Scrape lines that could not be parsed.\n# TYPE keel_agent_invalid_scrape_lines_total counter\nkeel_agent_invalid_scrape_lines_total {}",
            self.invalid_scrape_lines.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP keel_agent_log_metrics_unmatched_total Log records a log-to-metrics rule could not read.\n# TYPE keel_agent_log_metrics_unmatched_total counter\nkeel_agent_log_metrics_unmatched_total {}",
            self.log_metrics_unmatched.load(Ordering::Relaxed)
        );
        out
    }
}

/// A metric family with one sample a signal (`values` in [`Signal::index`] order).
fn per_signal_family<T: std::fmt::Display>(
    out: &mut String,
    name: &str,
    help: &str,
    kind: &str,
    values: [T; 3],
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for s in Signal::ALL {
        let _ = writeln!(
            out,
            "{name}{{signal=\"{}\"}} {}",
            s.name(),
            values[s.index()]
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_send_lag_is_per_signal_and_the_text_parses() {
        let stats = Stats::default();
        Stats::add(&stats.sent, Signal::Logs, 7);
        let text = stats.render(&BufferStats::default(), [0.0, 2.5, 0.0]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.contains(&r#"keel_agent_send_lag_seconds{signal="logs"} 2.5"#));
        assert!(lines.contains(&r#"keel_agent_send_lag_seconds{signal="metrics"} 0"#));
        assert!(lines.contains(&r#"keel_agent_sent_records_total{signal="logs"} 7"#));
        let parsed = prometheus_parse::Scrape::parse(lines.iter().map(|l| Ok(l.to_string())))
            .expect("the agent's own text parses");
        let lag: Vec<_> = parsed
            .samples
            .iter()
            .filter(|s| s.metric == "keel_agent_send_lag_seconds")
            .collect();
        assert_eq!(lag.len(), 3, "one a signal");
    }
}
