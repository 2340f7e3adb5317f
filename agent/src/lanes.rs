//! One shipping lane a collector. An agent configured with several
//! collectors (`agent.collectors`: a highly available pair) writes each
//! batch to every collector's own disk buffer and ships each buffer on
//! its own, as Prometheus HA pairs each scrape everything: both
//! collectors hold all the data, and one that is down or slow holds up
//! nothing but its own lane, which catches up when it is back.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use crate::buffer::{Batch, BufferError, DiskBuffer};
use crate::config::AgentConfig;
use crate::ship::Shared;
use crate::stats::Stats;

/// Every collector's lane, and the counters that belong to the agent
/// rather than to a lane.
#[derive(Debug)]
pub struct Lanes {
    /// In `agent.collectors` order; never empty.
    pub lanes: Vec<Arc<Shared>>,
    /// Scrape lines that could not be parsed.
    pub invalid_scrape_lines: AtomicU64,
    /// Log records a log-to-metrics rule could not read.
    pub log_metrics_unmatched: AtomicU64,
}

/// Where the buffer of the `i`th of `collectors` lives: the first keeps
/// `<data_dir>/buffer` (where a single collector's buffer always was, so
/// adding a second collector keeps what is unsent); the others get
/// `buffer-<host_port>` named after their URL, so reordering the list
/// never hands one collector's backlog to another.
pub fn buffer_dir(data_dir: &Path, collectors: &[String], i: usize) -> PathBuf {
    if i == 0 {
        return data_dir.join("buffer");
    }
    let name: String = collectors[i]
        .split("://")
        .last()
        .unwrap_or_default()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    data_dir.join(format!("buffer-{}", name.trim_matches('_')))
}

impl Lanes {
    /// Open a buffer for each collector `config` names.
    pub fn open(config: &AgentConfig) -> Result<Self, BufferError> {
        let collectors = config.collector_urls();
        let mut lanes = Vec::with_capacity(collectors.len());
        for (i, url) in collectors.iter().enumerate() {
            let buffer = DiskBuffer::open(
                &buffer_dir(&config.data_dir, &collectors, i),
                config.buffer.max_bytes,
                config.buffer.fsync,
            )?;
            lanes.push(Arc::new(Shared::new(buffer, Stats::default(), url.clone())));
        }
        Ok(Self {
            lanes,
            invalid_scrape_lines: AtomicU64::new(0),
            log_metrics_unmatched: AtomicU64::new(0),
        })
    }

    /// Write a batch to every lane. A lane that cannot take it is logged
    /// and the others still get it; the batch counts as buffered if any
    /// lane took it (the error of the first lane that failed otherwise).
    pub fn push(&self, b: &Batch) -> Result<(), BufferError> {
        let mut first_error = None;
        let mut taken = false;
        for lane in &self.lanes {
            match lane.push(b) {
                Ok(()) => taken = true,
                Err(e) => {
                    if self.lanes.len() > 1 {
                        tracing::error!(collector = %lane.collector, error = %e, "disk buffer: a lane cannot take a batch; the other collectors still get it");
                    }
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if !taken => Err(e),
            _ => Ok(()),
        }
    }

    /// Where tailing resumes: the first lane's positions (every lane is
    /// written the same batches).
    pub fn cursors(&self) -> Vec<crate::buffer::Cursor> {
        self.lanes[0]
            .buffer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .cursors()
            .to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::Signal;

    #[test]
    fn each_collector_gets_every_batch_in_its_own_buffer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = AgentConfig {
            data_dir: dir.path().to_path_buf(),
            collectors: vec![
                "http://10.0.0.1:4318".into(),
                "https://collector-b.example:4318/".into(),
            ],
            ..AgentConfig::default()
        };
        let lanes = Lanes::open(&config).expect("open");
        assert_eq!(lanes.lanes.len(), 2);
        for id in 1..=3 {
            lanes
                .push(&Batch {
                    id,
                    signal: Signal::Metrics,
                    records: 1,
                    created_ms: 0,
                    cursor: None,
                    body: vec![1; 8],
                })
                .expect("push");
        }
        for lane in &lanes.lanes {
            let b = lane.buffer.lock().expect("lock");
            assert_eq!(b.stats().batches, 3, "{}", lane.collector);
        }
        assert!(dir.path().join("buffer").is_dir());
        assert!(
            dir.path().join("buffer-collector_b_example_4318").is_dir(),
            "{:?}",
            std::fs::read_dir(dir.path())
                .expect("ls")
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Vec<_>>()
        );
        // Acknowledged by one collector, still owed to the other.
        lanes.lanes[0]
            .buffer
            .lock()
            .expect("lock")
            .ack(1)
            .expect("ack");
        drop(lanes);
        let again = Lanes::open(&config).expect("reopen");
        let left: Vec<u64> = again
            .lanes
            .iter()
            .map(|l| l.buffer.lock().expect("lock").stats().batches)
            .collect();
        assert_eq!(left, vec![2, 3]);
    }
}
