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

/// The file in a buffer's folder naming the collector it ships to.
const MARKER: &str = "collector";

/// A collector's URL as lanes compare them.
fn normalized(url: &str) -> String {
    url.trim_end_matches('/').to_ascii_lowercase()
}

/// Where the buffer of the `i`th of `collectors` lives: a single
/// collector's in `<data_dir>/buffer`, as always; with several, each in
/// `buffer-<host_port>-<hash of its URL>`, named by its own URL, so
/// reordering the list never hands one collector's backlog to another
/// and no two URLs share a folder.
pub fn buffer_dir(data_dir: &Path, collectors: &[String], i: usize) -> PathBuf {
    if collectors.len() == 1 {
        return data_dir.join("buffer");
    }
    let url = normalized(&collectors[i]);
    let name: String = url
        .split("://")
        .last()
        .unwrap_or_default()
        .split('/')
        .next()
        .unwrap_or_default()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    // FNV-1a: stable across builds and platforms.
    let hash = url.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    data_dir.join(format!("buffer-{name}-{:08x}", hash >> 32))
}

/// Going from one collector to several: the single collector's folder
/// (`buffer`) becomes its lane's, when its marker names one of
/// `collectors` and that lane has no folder yet; a backlog whose
/// collector is not listed any more is left where it is, and said.
fn adopt_single_buffer(data_dir: &Path, collectors: &[String]) {
    let single = data_dir.join("buffer");
    if collectors.len() < 2 || !single.is_dir() {
        return;
    }
    let owner = std::fs::read_to_string(single.join(MARKER)).unwrap_or_default();
    let owner = normalized(owner.trim());
    match collectors.iter().position(|c| normalized(c) == owner) {
        Some(i) => {
            let to = buffer_dir(data_dir, collectors, i);
            if to.exists() {
                return;
            }
            match std::fs::rename(&single, &to) {
                Ok(()) => {
                    tracing::info!(collector = %collectors[i], dir = %to.display(), "the single collector's buffer is now its lane's")
                }
                Err(e) => {
                    tracing::error!(error = %e, from = %single.display(), "cannot move the single collector's buffer to its lane")
                }
            }
        }
        None => tracing::warn!(
            dir = %single.display(), collector = %owner,
            "batches buffered for a collector no longer listed stay in this folder, unsent"
        ),
    }
}

impl Lanes {
    /// Open a buffer for each collector `config` names.
    pub fn open(config: &AgentConfig) -> Result<Self, BufferError> {
        let collectors = config.collector_urls();
        adopt_single_buffer(&config.data_dir, &collectors);
        let mut lanes = Vec::with_capacity(collectors.len());
        for (i, url) in collectors.iter().enumerate() {
            let dir = buffer_dir(&config.data_dir, &collectors, i);
            let buffer = DiskBuffer::open(&dir, config.buffer.max_bytes, config.buffer.fsync)?;
            // Which collector this folder's batches are for (read when
            // the list grows).
            if let Err(e) = std::fs::write(dir.join(MARKER), format!("{url}\n")) {
                tracing::warn!(error = %e, dir = %dir.display(), "cannot write the buffer's collector marker");
            }
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

    fn batch(id: u128) -> Batch {
        Batch {
            id,
            signal: Signal::Metrics,
            records: 1,
            created_ms: 0,
            cursor: None,
            body: vec![1; 8],
        }
    }

    fn batches(lanes: &Lanes) -> Vec<(String, u64)> {
        lanes
            .lanes
            .iter()
            .map(|l| {
                let b = l.buffer.lock().expect("lock").stats().batches;
                (l.collector.clone(), b)
            })
            .collect()
    }

    /// Each collector's backlog follows its URL: from one collector to
    /// two (the single buffer becomes its lane's), through a reordered
    /// list, and two URLs that read alike keep apart.
    #[test]
    fn each_collector_gets_every_batch_in_its_own_buffer_that_follows_its_url() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = ("http://10.0.0.1:4318", "https://collector-b.example:4318/");
        let one = AgentConfig {
            data_dir: dir.path().to_path_buf(),
            collector: a.into(),
            ..AgentConfig::default()
        };
        let lanes = Lanes::open(&one).expect("open");
        lanes.push(&batch(1)).expect("push");
        drop(lanes);
        assert!(dir.path().join("buffer").is_dir(), "one collector: buffer/");

        let two = AgentConfig {
            collector: AgentConfig::default().collector,
            collectors: vec![a.into(), b.into()],
            ..one.clone()
        };
        let lanes = Lanes::open(&two).expect("open");
        assert_eq!(
            batches(&lanes),
            [(a.to_owned(), 1), (b.to_owned(), 0)],
            "the single backlog is the first collector's lane now"
        );
        assert!(!dir.path().join("buffer").exists());
        for id in 2..=3 {
            lanes.push(&batch(id)).expect("push");
        }
        // Acknowledged by one collector, still owed to the other.
        for id in [1, 2] {
            lanes.lanes[0]
                .buffer
                .lock()
                .expect("lock")
                .ack(id)
                .expect("ack");
        }
        drop(lanes);
        let reordered = AgentConfig {
            collectors: vec![b.into(), a.into()],
            ..two.clone()
        };
        let again = Lanes::open(&reordered).expect("reopen");
        assert_eq!(batches(&again), [(b.to_owned(), 2), (a.to_owned(), 1)]);
        drop(again);

        // http:// and https:// of one host, and hosts that sanitize alike.
        let urls = [
            "http://c:4318",
            "https://c:4318",
            "http://a.b:1",
            "http://a_b:1",
        ];
        let all: Vec<String> = urls.iter().map(|u| (*u).to_owned()).collect();
        let dirs: std::collections::BTreeSet<PathBuf> = (0..all.len())
            .map(|i| buffer_dir(dir.path(), &all, i))
            .collect();
        assert_eq!(dirs.len(), urls.len(), "{dirs:?}");
    }
}
