//! The agent's own counters, exposed on its `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::buffer::{BufferStats, Signal};

/// Counters per signal of one collector's lane.
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
}

impl Stats {
    /// Add `n` to a per-signal counter.
    pub fn add(counter: &[AtomicU64; 3], s: Signal, n: u64) {
        counter[s.index()].fetch_add(n, Ordering::Relaxed);
    }
}

/// One lane as the agent's `/metrics` shows it.
pub struct LaneView<'a> {
    /// The collector's URL (the `collector` label).
    pub collector: &'a str,
    /// The lane's counters.
    pub stats: &'a Stats,
    /// Its buffer's state.
    pub buffer: BufferStats,
    /// Each signal's send lag, in [`Signal::index`] order.
    pub send_lag_seconds: [f64; 3],
}

/// Prometheus text of every lane's counters and buffer (labelled by
/// `collector` and `signal`) and of the agent's own counters.
pub fn render(lanes: &[LaneView], invalid_scrape_lines: u64, log_metrics_unmatched: u64) -> String {
    let mut out = String::new();
    type Pick = fn(&LaneView, Signal) -> String;
    let families: [(&str, &str, &str, Pick); 6] = [
        (
            "keel_agent_sent_records_total",
            "Records the collector acknowledged.",
            "counter",
            |l, s| count(&l.stats.sent, s),
        ),
        (
            "keel_agent_send_failures_total",
            "Failed attempts to send a batch (retried).",
            "counter",
            |l, s| count(&l.stats.failed, s),
        ),
        (
            "keel_agent_rejected_records_total",
            "Records the collector rejected as invalid.",
            "counter",
            |l, s| count(&l.stats.rejected, s),
        ),
        (
            "keel_agent_buffered_records_total",
            "Records written to the collector's disk buffer.",
            "counter",
            |l, s| count(&l.stats.buffered, s),
        ),
        (
            "keel_agent_dropped_records_total",
            "Records dropped because the collector's disk buffer was full.",
            "counter",
            |l, s| l.buffer.dropped_records[s.index()].to_string(),
        ),
        (
            "keel_agent_send_lag_seconds",
            "Age of the signal's oldest batch not yet sent to the collector (0: none).",
            "gauge",
            |l, s| l.send_lag_seconds[s.index()].to_string(),
        ),
    ];
    for (name, help, kind, pick) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for lane in lanes {
            for s in Signal::ALL {
                let _ = writeln!(
                    out,
                    "{name}{{collector=\"{}\",signal=\"{}\"}} {}",
                    escape(lane.collector),
                    s.name(),
                    pick(lane, s)
                );
            }
        }
    }
    type Gauge = fn(&BufferStats) -> u64;
    let gauges: [(&str, &str, Gauge); 2] = [
        (
            "keel_agent_buffer_bytes",
            "Bytes of unsent batches on disk.",
            |b| b.bytes,
        ),
        (
            "keel_agent_buffer_batches",
            "Unsent batches on disk.",
            |b| b.batches,
        ),
    ];
    for (name, help, pick) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for lane in lanes {
            let _ = writeln!(
                out,
                "{name}{{collector=\"{}\"}} {}",
                escape(lane.collector),
                pick(&lane.buffer)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP keel_agent_invalid_scrape_lines_total Scrape lines that could not be parsed.\n# TYPE keel_agent_invalid_scrape_lines_total counter\nkeel_agent_invalid_scrape_lines_total {invalid_scrape_lines}"
    );
    let _ = writeln!(
        out,
        "# HELP keel_agent_log_metrics_unmatched_total Log records a log-to-metrics rule could not read.\n# TYPE keel_agent_log_metrics_unmatched_total counter\nkeel_agent_log_metrics_unmatched_total {log_metrics_unmatched}"
    );
    out
}

fn count(c: &[AtomicU64; 3], s: Signal) -> String {
    c[s.index()].load(Ordering::Relaxed).to_string()
}

/// A label value as the text format writes it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_lane_is_labelled_by_collector_and_the_text_parses() {
        let a = Stats::default();
        Stats::add(&a.sent, Signal::Logs, 7);
        let b = Stats::default();
        let view = |collector, stats, lag| LaneView {
            collector,
            stats,
            buffer: BufferStats::default(),
            send_lag_seconds: lag,
        };
        let text = render(
            &[
                view("http://a:4318", &a, [0.0, 2.5, 0.0]),
                view("http://b:4318", &b, [1.0, 0.0, 0.0]),
            ],
            3,
            0,
        );
        let lines: Vec<&str> = text.lines().collect();
        for want in [
            r#"keel_agent_send_lag_seconds{collector="http://a:4318",signal="logs"} 2.5"#,
            r#"keel_agent_send_lag_seconds{collector="http://a:4318",signal="metrics"} 0"#,
            r#"keel_agent_send_lag_seconds{collector="http://b:4318",signal="metrics"} 1"#,
            r#"keel_agent_sent_records_total{collector="http://a:4318",signal="logs"} 7"#,
            r#"keel_agent_sent_records_total{collector="http://b:4318",signal="logs"} 0"#,
            r#"keel_agent_buffer_batches{collector="http://b:4318"} 0"#,
            "keel_agent_invalid_scrape_lines_total 3",
        ] {
            assert!(lines.contains(&want), "{want} missing from\n{text}");
        }
        let parsed = prometheus_parse::Scrape::parse(lines.iter().map(|l| Ok(l.to_string())))
            .expect("the agent's own text parses");
        let lag: Vec<_> = parsed
            .samples
            .iter()
            .filter(|s| s.metric == "keel_agent_send_lag_seconds")
            .collect();
        assert_eq!(lag.len(), 6, "one a signal a collector");
        assert_eq!(escape("a\"b\\c"), "a\\\"b\\\\c");
    }
}
