//! Marks: when each batch of samples was acknowledged and when each rule
//! group and controller loop ran, so that an incident bundle can replay
//! data at its recorded arrival time and evaluate at the recorded ticks.
//!
//! One JSON object a line, in one file an hour (`<dir>/<hour start ms>.jsonl`,
//! named by the injected clock's time of the write). Files older than the
//! retention are deleted as new hours start. A write failure is logged
//! once and never fails what it marks: marks serve replay, not ingest.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::clock::SharedClock;

const HOUR_MS: i64 = 3_600_000;

/// One thing that happened at a recorded time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Mark {
    /// A batch of samples was acknowledged: per source (`job`,
    /// `instance`) the newest sample time it held.
    Arrival {
        /// When (ms).
        at_ms: i64,
        /// `(job, instance, newest sample ms)`.
        sources: Vec<(String, String, i64)>,
    },
    /// A rule group was evaluated.
    RuleEval {
        /// When (ms): the evaluation time.
        at_ms: i64,
        /// The group's file (as configured).
        file: String,
        /// The group's name.
        group: String,
    },
    /// A controller policy was evaluated; the instances its actuator
    /// reported (names, or none when it reports only a count).
    PolicyEval {
        /// When (ms).
        at_ms: i64,
        /// The policy.
        policy: String,
        /// The count read.
        replicas: u32,
        /// The instances' names, when the actuator gives them.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        instances: Vec<String>,
    },
    /// A failover target's members were probed: what the controller knew
    /// before (its watch) and what each member answered, so replay can
    /// decide failover again (with another configuration too).
    Probe {
        /// When (ms): the observation's time.
        at_ms: i64,
        /// The failover target.
        target: String,
        /// The watch before this observation.
        watch: serde_json::Value,
        /// The observation.
        observation: serde_json::Value,
    },
}

impl Mark {
    /// When it happened (ms).
    pub fn at_ms(&self) -> i64 {
        match self {
            Mark::Arrival { at_ms, .. }
            | Mark::RuleEval { at_ms, .. }
            | Mark::PolicyEval { at_ms, .. }
            | Mark::Probe { at_ms, .. } => *at_ms,
        }
    }
}

/// A problem reading marks.
#[derive(Debug, thiserror::Error)]
pub enum MarksError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

struct Open {
    hour: i64,
    file: std::fs::File,
}

/// The append-only mark log of one collector.
pub struct MarkLog {
    dir: PathBuf,
    clock: SharedClock,
    retention_ms: i64,
    open: Mutex<Option<Open>>,
    failed: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for MarkLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MarkLog").field("dir", &self.dir).finish()
    }
}

impl MarkLog {
    /// Marks under `dir` (created on the first write), kept for `retention`.
    pub fn new(dir: &Path, clock: SharedClock, retention: std::time::Duration) -> Self {
        Self {
            dir: dir.to_owned(),
            clock,
            retention_ms: retention.as_millis() as i64,
            open: Mutex::new(None),
            failed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The clock's time now (ms): what a mark made now carries.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Append a mark (in the file of the hour of the clock's time now).
    pub fn write(&self, mark: &Mark) {
        let Ok(mut line) = serde_json::to_vec(mark) else {
            return;
        };
        line.push(b'\n');
        let hour = self.now_ms().div_euclid(HOUR_MS) * HOUR_MS;
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let result = (|| -> std::io::Result<()> {
            if open.as_ref().is_none_or(|o| o.hour != hour) {
                std::fs::create_dir_all(&self.dir)?;
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.join(format!("{hour}.jsonl")))?;
                *open = Some(Open { hour, file });
                self.expire(hour);
            }
            if let Some(o) = open.as_mut() {
                o.file.write_all(&line)?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            *open = None;
            if !self.failed.swap(true, std::sync::atomic::Ordering::Relaxed) {
                eprintln!(
                    "keel: cannot write marks under {} ({e}); incident bundles will lack arrival and tick times",
                    self.dir.display()
                );
            }
        }
    }

    /// Delete the files of hours wholly past the retention.
    fn expire(&self, hour_now: i64) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(hour) = hour_of(&name.to_string_lossy()) else {
                continue;
            };
            if hour + HOUR_MS < hour_now - self.retention_ms {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Every mark with a time in `[from_ms, to_ms]`, in the order written
    /// (a torn last line, from a crash mid-write, is skipped).
    pub fn read(&self, from_ms: i64, to_ms: i64) -> Result<Vec<Mark>, MarksError> {
        read_dir(&self.dir, from_ms, to_ms)
    }
}

fn hour_of(name: &str) -> Option<i64> {
    name.strip_suffix(".jsonl")?.parse().ok()
}

/// The marks in `dir` with times in `[from_ms, to_ms]`.
pub fn read_dir(dir: &Path, from_ms: i64, to_ms: i64) -> Result<Vec<Mark>, MarksError> {
    let mut hours: Vec<(i64, PathBuf)> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .filter_map(|e| Some((hour_of(&e.file_name().to_string_lossy())?, e.path())))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(MarksError::Io {
                path: dir.to_owned(),
                source,
            });
        }
    };
    hours.sort();
    let mut out = Vec::new();
    // A mark is filed by the hour it was written in, which is at or after
    // its time: the hour before `from` can hold none of the window's.
    for (hour, path) in hours {
        if hour.saturating_add(HOUR_MS) <= from_ms || hour > to_ms.saturating_add(HOUR_MS) {
            continue;
        }
        let file = std::fs::File::open(&path).map_err(|source| MarksError::Io {
            path: path.clone(),
            source,
        })?;
        for line in std::io::BufReader::new(file).lines() {
            let line = line.map_err(|source| MarksError::Io {
                path: path.clone(),
                source,
            })?;
            if let Ok(m) = serde_json::from_str::<Mark>(&line)
                && (from_ms..=to_ms).contains(&m.at_ms())
            {
                out.push(m);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn marks_are_read_back_by_window_across_hours_and_old_hours_expire() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(3600)));
        let log = MarkLog::new(dir.path(), clock.clone(), Duration::from_secs(3600));
        let eval = |at_ms| Mark::RuleEval {
            at_ms,
            file: "a.yaml".into(),
            group: "g".into(),
        };
        log.write(&eval(3_600_000));
        clock.advance(Duration::from_secs(3599));
        log.write(&Mark::Arrival {
            at_ms: 7_199_000,
            sources: vec![("web".into(), "w1".into(), 7_198_500)],
        });
        clock.advance(Duration::from_secs(2));
        log.write(&eval(7_201_000));
        let all = log.read(0, i64::MAX).expect("read");
        assert_eq!(all.len(), 3);
        let window = log.read(7_000_000, 7_200_000).expect("read");
        assert_eq!(window.len(), 1);
        assert!(matches!(window[0], Mark::Arrival { .. }));
        // A torn line (a crash mid-write) is skipped, not an error.
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("7200000.jsonl"))
            .and_then(|mut f| f.write_all(b"{\"kind\":\"rule_e"))
            .expect("tear");
        assert_eq!(log.read(0, i64::MAX).expect("read").len(), 3);
        // Two hours later the first hour is wholly past the retention,
        // the second not yet.
        clock.advance(Duration::from_secs(2 * 3600));
        log.write(&eval(clock.now_ms()));
        assert!(!dir.path().join("3600000.jsonl").exists());
        assert!(dir.path().join("7200000.jsonl").exists());
    }
}
