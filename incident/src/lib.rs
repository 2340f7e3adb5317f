//! keel-incident: incidents. Recording a window of what the collector
//! holds into a bundle ([`bundle`]: the format on disk), on request
//! (`keel incident record`, the dashboard's button) and automatically
//! around every P0, listing the bundles kept, and serving one to the
//! dashboard's replay mode ([`view`]). Replay itself is `keel-replay`'s.
//!
//! It reads every store (metrics, logs, spans, alerts, pages) and the
//! dashboards; it must never depend on ingest or the collector's server,
//! which wire it.

pub mod api;
pub mod bundle;
mod gather;
pub mod view;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use gather::Sources;

/// The `collector.incidents` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IncidentsConfig {
    /// Where bundles are written ("": `<data_dir>/incidents`).
    pub dir: PathBuf,
    /// Record a bundle around every P0 alert that starts firing.
    pub record_p0: bool,
    /// How much before a P0 fired the automatic bundle starts.
    #[serde(with = "keel_core::duration")]
    pub before: Duration,
    /// How long after a P0 fired the automatic bundle ends (it is written then).
    #[serde(with = "keel_core::duration")]
    pub after: Duration,
    /// Longest window one bundle may span.
    #[serde(with = "keel_core::duration")]
    pub max_window: Duration,
    /// Samples and marks from this long before the window go in too:
    /// replay evaluates through them first (unreported), so rate windows,
    /// pending alerts and the autoscaler's stabilization start as they were.
    #[serde(with = "keel_core::duration")]
    pub lead_in: Duration,
}

impl Default for IncidentsConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::new(),
            record_p0: true,
            before: Duration::from_secs(15 * 60),
            after: Duration::from_secs(15 * 60),
            max_window: Duration::from_secs(24 * 3600),
            lead_in: Duration::from_secs(10 * 60),
        }
    }
}

impl IncidentsConfig {
    /// Push one message per problem.
    pub fn validate(&self, problems: &mut Vec<String>) {
        if self.before + self.after > self.max_window {
            problems.push(
                "collector.incidents.before: before + after must be at most max_window".into(),
            );
        }
        if self.lead_in > Duration::from_secs(24 * 3600) {
            problems.push("collector.incidents.lead_in: must be at most 24h".into());
        }
        if self.max_window.is_zero() {
            problems.push("collector.incidents.max_window: must be more than 0".into());
        }
    }
}

/// Why a recording was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum IncidentError {
    /// The request is wrong (the message names the field).
    #[error("{0}")]
    Invalid(String),
    /// A bundle with that name exists.
    #[error("an incident named {0:?} exists already (pick another --name)")]
    Exists(String),
    /// Reading the stores or writing the file failed.
    #[error("{0}")]
    Failed(String),
    /// No bundle has that name.
    #[error("no incident named {0:?}")]
    NotFound(String),
}

/// What to record.
#[derive(Debug, Clone, Deserialize)]
pub struct RecordRequest {
    /// The bundle's name.
    pub name: String,
    /// Window start (ms).
    pub from_ms: i64,
    /// Window end (ms).
    pub to_ms: i64,
    /// Only this service's (`job`) data.
    #[serde(default)]
    pub service: Option<String>,
    /// Why (`manual`, `dashboard`, …).
    #[serde(default)]
    pub reason: Option<String>,
    /// When the incident began (ms), if known.
    #[serde(default)]
    pub incident_ms: Option<i64>,
    /// Keep only the log records this search matches (e.g.
    /// `level:error OR level:warn`); none: every record.
    #[serde(default)]
    pub logs: Option<String>,
    /// Keep spans (default true).
    #[serde(default)]
    pub spans: Option<bool>,
}

/// A bundle kept, as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Its name.
    pub name: String,
    /// Its file.
    pub path: PathBuf,
    /// The window.
    pub from_ms: i64,
    /// The window's end.
    pub to_ms: i64,
    /// When it was recorded.
    pub recorded_at_ms: i64,
    /// Why.
    pub reason: String,
    /// Its size on disk.
    pub bytes: u64,
    /// What it holds (known for bundles recorded by this process).
    #[serde(default)]
    pub counts: Option<Counts>,
}

/// What a bundle holds, and how big that is uncompressed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    /// Series.
    pub series: usize,
    /// Samples.
    pub samples: usize,
    /// Log records.
    pub logs: usize,
    /// Spans.
    pub spans: usize,
    /// Marks (arrivals and ticks).
    pub marks: usize,
    /// Controller events.
    pub events: usize,
    /// Alert changes.
    pub alerts: usize,
    /// Pages and tickets.
    pub pages: usize,
    /// The raw data: 16 bytes a sample (time and value) plus the JSON
    /// of every log record and span.
    pub raw_bytes: u64,
    /// How long recording took (ms).
    pub took_ms: u64,
}

/// The collector's incident recorder.
pub struct Incidents {
    dir: PathBuf,
    sources: Sources,
    config: IncidentsConfig,
    /// P0 episodes (alert labels and fired time) already scheduled.
    scheduled: Mutex<Vec<(String, i64)>>,
    /// Held while a bundle is written.
    recording: tokio::sync::Mutex<()>,
    /// Replays for the dashboard (set by the binary).
    replayer: std::sync::OnceLock<Arc<dyn Replayer>>,
    /// The bundle the dashboard views, by name.
    viewed: Mutex<Option<(String, Arc<view::View>)>>,
    /// Held while a bundle is loaded for viewing (a page's panels ask at
    /// once: one loads, the others wait for it).
    loading: Mutex<()>,
}

/// Replays a bundle for the dashboard: the replay engine is another
/// crate's (keel-replay links the collector, not the other way), so the
/// binary hands one in. The answer is JSON: the recorded and replayed
/// timelines, the reproduction check, and the what-if's.
pub trait Replayer: Send + Sync {
    /// Replay `bundle`, with `rules` (a rule file's YAML) and `policy`
    /// (a `controller:` section's YAML) as the what-if when given.
    fn replay(
        &self,
        bundle: &bundle::Bundle,
        rules: Option<&str>,
        policy: Option<&str>,
    ) -> Result<serde_json::Value, String>;
}

/// A name a bundle may have: it is its file name.
pub fn check_name(name: &str) -> Result<(), IncidentError> {
    if name.is_empty()
        || name.len() > 100
        || name.starts_with('.')
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(IncidentError::Invalid(format!(
            "name: {name:?} must be 1 to 100 letters, digits, '.', '_' or '-' (not starting with '.')"
        )));
    }
    Ok(())
}

impl Incidents {
    /// A recorder writing under `config.dir` (or `data_dir/incidents`).
    pub fn new(config: IncidentsConfig, data_dir: &Path, sources: Sources) -> Arc<Self> {
        let dir = if config.dir.as_os_str().is_empty() {
            data_dir.join("incidents")
        } else {
            config.dir.clone()
        };
        Arc::new(Self {
            dir,
            sources,
            config,
            scheduled: Mutex::new(Vec::new()),
            recording: tokio::sync::Mutex::new(()),
            replayer: std::sync::OnceLock::new(),
            viewed: Mutex::new(None),
            loading: Mutex::new(()),
        })
    }

    /// Tell the recorder the controller's configuration (policies and
    /// failover targets), once the controller runs.
    pub fn set_controller(&self, config: serde_json::Value) {
        let _ = self.sources.controller.set(config);
    }

    /// Hand in the replay engine (for the dashboard's replay mode).
    pub fn set_replayer(&self, r: Arc<dyn Replayer>) {
        let _ = self.replayer.set(r);
    }

    /// Read the bundle named `name` (blocking).
    pub fn read(&self, name: &str) -> Result<bundle::Bundle, IncidentError> {
        self.read_only(name, true)
    }

    /// As [`Self::read`], with or without its spans.
    fn read_only(&self, name: &str, spans: bool) -> Result<bundle::Bundle, IncidentError> {
        check_name(name)?;
        let path = self.path(name);
        if !path.exists() {
            return Err(IncidentError::NotFound(name.to_owned()));
        }
        let keep = bundle::Keep {
            spans,
            ..Default::default()
        };
        bundle::Bundle::read_only(&path, &keep).map_err(|e| IncidentError::Invalid(e.to_string()))
    }

    /// Replay the bundle named `name` for the dashboard (blocking).
    pub fn replay(
        &self,
        name: &str,
        rules: Option<&str>,
        policy: Option<&str>,
    ) -> Result<serde_json::Value, IncidentError> {
        let Some(r) = self.replayer.get() else {
            return Err(IncidentError::Failed(
                "this process cannot replay (run keel collector or keel up)".into(),
            ));
        };
        let b = self.read(name)?;
        r.replay(&b, rules, policy).map_err(IncidentError::Invalid)
    }

    /// The bundle named `name` loaded for the dashboard (blocking; the
    /// last one viewed is kept while its file is unchanged).
    pub fn view(&self, name: &str) -> Result<Arc<view::View>, IncidentError> {
        check_name(name)?;
        let modified = std::fs::metadata(self.path(name))
            .and_then(|m| m.modified())
            .ok();
        let _one = self.loading.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((n, v)) = &*self.viewed.lock().unwrap_or_else(|e| e.into_inner())
            && n == name
            && v.modified == modified
        {
            return Ok(v.clone());
        }
        let b = self.read_only(name, false)?;
        let v = Arc::new(view::View::load(&b, modified).map_err(IncidentError::Failed)?);
        *self.viewed.lock().unwrap_or_else(|e| e.into_inner()) = Some((name.to_owned(), v.clone()));
        Ok(v)
    }

    /// Where bundles are written.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Record a window into `<dir>/<name>.keelinc`.
    pub async fn record(&self, req: RecordRequest) -> Result<Summary, IncidentError> {
        check_name(&req.name)?;
        // 1970 to 9999: what RFC 3339 and the bundle's readers can write.
        const LAST_MS: i64 = 253_402_300_799_999;
        for (field, t) in [("from_ms", req.from_ms), ("to_ms", req.to_ms)]
            .into_iter()
            .chain(req.incident_ms.map(|t| ("incident_ms", t)))
        {
            if !(0..=LAST_MS).contains(&t) {
                return Err(IncidentError::Invalid(format!(
                    "{field}: {t} is not a time between 1970 and 9999 (ms since the epoch)"
                )));
            }
        }
        // One recording at a time: the name's check and the write are one step.
        let _one = self.recording.lock().await;
        if req.to_ms <= req.from_ms {
            return Err(IncidentError::Invalid(format!(
                "to: the window ends ({}) at or before it starts ({})",
                req.to_ms, req.from_ms
            )));
        }
        if req.to_ms - req.from_ms > self.config.max_window.as_millis() as i64 {
            return Err(IncidentError::Invalid(format!(
                "from: the window is longer than collector.incidents.max_window ({})",
                humantime::format_duration(self.config.max_window)
            )));
        }
        let path = self.path(&req.name);
        if path.exists() {
            return Err(IncidentError::Exists(req.name));
        }
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| IncidentError::Failed(format!("{}: {e}", self.dir.display())))?;
        let started = std::time::Instant::now();
        let lead_in = self.config.lead_in.as_millis() as i64;
        let (bundle, mut counts) = self.sources.gather(&req, lead_in).await?;
        let p = path.clone();
        let bytes = tokio::task::spawn_blocking(move || bundle.write(&p).map(|n| (n, bundle)))
            .await
            .map_err(|e| IncidentError::Failed(e.to_string()))?
            .map_err(|e| IncidentError::Failed(e.to_string()))?;
        counts.took_ms = started.elapsed().as_millis() as u64;
        let (bytes, bundle) = bytes;
        tracing::info!(name = %req.name, bytes, took_ms = counts.took_ms, "incident recorded");
        Ok(Summary {
            name: req.name,
            path,
            from_ms: bundle.header.from_ms,
            to_ms: bundle.header.to_ms,
            recorded_at_ms: bundle.header.recorded_at_ms,
            reason: bundle.header.reason,
            bytes,
            counts: Some(counts),
        })
    }

    /// The file a bundle named `name` has.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.{}", bundle::EXTENSION))
    }

    /// The bundles kept, newest first (a file that is not a readable
    /// bundle is listed with its problem as its reason).
    pub fn list(&self) -> Vec<Summary> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<Summary> = entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == bundle::EXTENSION))
            .map(|e| {
                let path = e.path();
                let bytes = e.metadata().map(|m| m.len()).unwrap_or(0);
                let name = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                match bundle::read_header(&path) {
                    Ok(h) => Summary {
                        name,
                        path,
                        from_ms: h.from_ms,
                        to_ms: h.to_ms,
                        recorded_at_ms: h.recorded_at_ms,
                        reason: h.reason,
                        bytes,
                        counts: None,
                    },
                    Err(e) => Summary {
                        name,
                        path,
                        from_ms: 0,
                        to_ms: 0,
                        recorded_at_ms: 0,
                        reason: format!("unreadable: {e}"),
                        bytes,
                        counts: None,
                    },
                }
            })
            .collect();
        out.sort_by(|a, b| {
            b.recorded_at_ms
                .cmp(&a.recorded_at_ms)
                .then(a.name.cmp(&b.name))
        });
        out
    }

    /// Record around every P0 that starts firing: checked every few
    /// seconds on the clock; a bundle is written `after` past the first
    /// firing of an episode, spanning `before` to `after` around it. P0s
    /// firing within one pending window share its bundle.
    pub async fn run_p0(self: Arc<Self>, rules: Arc<keel_alerting::rules::RuleManager>) {
        if !self.config.record_p0 {
            return;
        }
        let clock = self.sources.clock.clone();
        let mut ticker = keel_core::clock::Ticker::new(clock.now(), Duration::from_secs(5));
        let after_ms = self.config.after.as_millis() as i64;
        let before_ms = self.config.before.as_millis() as i64;
        // (alertname, fired) of the episodes whose bundle is pending.
        let mut pending: Vec<(String, i64)> = Vec::new();
        loop {
            ticker.tick(&*clock).await;
            let fired: Vec<(String, String, i64)> = rules.with_groups(|groups, _| {
                groups
                    .iter()
                    .flat_map(|g| g.alerts())
                    // Resolved ones too: a P0 that fired and cleared
                    // between two looks still gets its bundle.
                    .filter(|(_, a)| {
                        a.severity == keel_alerting::rules::Severity::P0 && a.fired_at_ms.is_some()
                    })
                    .filter_map(|(_, a)| {
                        let key = serde_json::to_string(&a.labels).ok()?;
                        let name = a.labels.get("alertname").cloned().unwrap_or_default();
                        Some((key, name, a.fired_at_ms?))
                    })
                    .collect()
            });
            {
                let mut seen = self.scheduled.lock().unwrap_or_else(|e| e.into_inner());
                // An episode is forgotten once it no longer fires (never
                // by age: a long P0 would be recorded again and again).
                seen.retain(|(k, t)| fired.iter().any(|(fk, _, ft)| fk == k && ft == t));
                for (key, name, at) in fired {
                    if seen.iter().any(|(k, t)| *k == key && *t == at) {
                        continue;
                    }
                    seen.push((key, at));
                    let covered = pending
                        .iter()
                        .any(|(_, t)| (*t..=*t + after_ms).contains(&at));
                    if !covered {
                        pending.push((name, at));
                    }
                }
            }
            let now = clock.now_ms();
            let due: Vec<(String, i64)> = pending
                .iter()
                .filter(|(_, t)| t + after_ms <= now)
                .cloned()
                .collect();
            pending.retain(|(_, t)| t + after_ms > now);
            for (name, at) in due {
                let stamp = humantime::format_rfc3339_seconds(keel_core::clock::from_unix_ms(at))
                    .to_string()
                    .replace(':', "");
                let safe: String = name
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .take(60)
                    .collect();
                let req = RecordRequest {
                    name: format!("p0-{safe}-{stamp}"),
                    from_ms: at - before_ms,
                    to_ms: at + after_ms,
                    service: None,
                    reason: Some(format!("p0 {name}")),
                    incident_ms: Some(at),
                    logs: None,
                    spans: None,
                };
                match self.record(req).await {
                    Ok(s) => tracing::info!(name = %s.name, "P0 incident recorded"),
                    Err(e) => tracing::error!(error = %e, "P0 incident not recorded"),
                }
            }
        }
    }
}
