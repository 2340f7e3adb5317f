//! Forwarding: the path from one collector to a cluster on an engine
//! users already run. Every sample the metric store takes is also sent
//! with Prometheus remote write to each `collector.forward.remote_write`
//! target (VictoriaMetrics, Mimir, Thanos receive), and logs and spans
//! over OTLP to each `collector.forward.otlp` endpoint (another
//! collector, any OTLP receiver). Each target has an on-disk queue of
//! its own, the agent's ([`keel_agent::buffer`], shipped by
//! [`keel_agent::ship`]): what was stored is queued before the sender is
//! answered, sent oldest first, and leaves the queue only when the
//! target took it, so a target that is down loses nothing (up to the
//! queue's `max_bytes`) and catches up when it is back. Each queue's lag
//! is a metric and on `keel status`. [`remote_query`] answers the ranges
//! older than local retention from the remote store's Prometheus API.

pub mod histograms;
pub mod remote_query;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keel_agent::buffer::{Batch, DiskBuffer, Signal};
use keel_agent::config::RetryConfig;
use keel_agent::ship::{Protocol, Shared};
use keel_core::clock::SharedClock;
use keel_series::labels::Labels;
use prost::Message;
use serde::{Deserialize, Serialize};

/// The `collector.forward` section.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardConfig {
    /// Prometheus remote write targets: every stored sample goes to each.
    pub remote_write: Vec<Target>,
    /// A remote store's Prometheus query API, asked for what is older
    /// than `collector.retention` (url "": none).
    pub remote_query: QueryTarget,
    /// OTLP/HTTP endpoints logs and spans are sent to.
    pub otlp: Vec<Target>,
}

/// One target and its queue.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Target {
    /// Its name in metrics and on `keel status`, and its queue's folder
    /// (`<data_dir>/forward/<name>`); "": from the URL's host and port.
    pub name: String,
    /// Remote write: the full URL (`http://vm:8428/api/v1/write`); OTLP:
    /// the base URL (`/v1/logs`, `/v1/traces` appended).
    pub url: String,
    /// OTLP only: which signals (`logs`, `traces`; default both).
    pub signals: Vec<String>,
    /// A bearer token the target wants ("": none).
    pub token: keel_core::secret::Secret,
    /// Or a file whose first line is that token.
    pub token_file: PathBuf,
    /// TLS for an `https://` target.
    pub tls: keel_tls::TlsConfig,
    /// Most bytes queued on disk; past it the oldest batches are dropped
    /// (and counted).
    pub max_bytes: u64,
    /// Retries with jittered exponential backoff (and each request's
    /// timeout).
    pub retry: RetryConfig,
    /// Remote write only: send native histogram samples too (remote
    /// write 1.0 histograms), as Prometheus' option of the same name;
    /// off by default, as there: a receiver without native histograms
    /// may refuse them with an error that would hold up its queue.
    pub send_native_histograms: bool,
}

impl Default for Target {
    fn default() -> Self {
        Self {
            name: String::new(),
            url: String::new(),
            signals: Vec::new(),
            token: Default::default(),
            token_file: PathBuf::new(),
            tls: Default::default(),
            max_bytes: 1 << 30,
            // Prometheus' remote write backs off to 5 s at most: a target
            // back from an outage is found within seconds.
            retry: RetryConfig {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(5),
                timeout: Duration::from_secs(30),
            },
            send_native_histograms: false,
        }
    }
}

/// The remote store's query API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QueryTarget {
    /// Its base URL (`http://vm:8428`: `/api/v1/query_range` appended);
    /// "": none.
    pub url: String,
    /// A bearer token it wants ("": none).
    pub token: keel_core::secret::Secret,
    /// Or a file whose first line is that token.
    pub token_file: PathBuf,
    /// TLS for an `https://` URL.
    pub tls: keel_tls::TlsConfig,
    /// How long one query may take.
    #[serde(with = "keel_core::duration")]
    pub timeout: Duration,
}

impl Default for QueryTarget {
    fn default() -> Self {
        Self {
            url: String::new(),
            token: Default::default(),
            token_file: PathBuf::new(),
            tls: Default::default(),
            timeout: Duration::from_secs(30),
        }
    }
}

fn is_url(u: &str) -> bool {
    u.starts_with("http://") || u.starts_with("https://")
}

impl Target {
    /// Its name: as given, or the URL's host and port.
    pub fn name(&self) -> String {
        if !self.name.is_empty() {
            return self.name.clone();
        }
        let host = self
            .url
            .split("://")
            .nth(1)
            .unwrap_or_default()
            .split('/')
            .next()
            .unwrap_or_default();
        host.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect()
    }

    fn wants(&self, s: Signal) -> bool {
        self.signals.is_empty() || self.signals.iter().any(|x| x == s.name())
    }

    fn validate(&self, at: &str, otlp: bool, problems: &mut Vec<String>) {
        if !is_url(&self.url) {
            problems.push(format!(
                "{at}.url: {:?} is not an http:// or https:// URL",
                self.url
            ));
        }
        if keel_core::secret::url_has_credentials(&self.url) {
            problems.push(format!(
                "{at}.url: credentials in the URL would be shown in metrics and status; use token or token_file"
            ));
        }
        self.retry.validate(&format!("{at}.retry"), problems);
        if !self
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            problems.push(format!(
                "{at}.name: {:?} may hold only letters, digits, _ and -",
                self.name
            ));
        }
        if otlp && self.send_native_histograms {
            problems.push(format!(
                "{at}.send_native_histograms: for remote_write targets; otlp targets get logs and spans"
            ));
        }
        for s in &self.signals {
            if !otlp {
                problems.push(format!(
                    "{at}.signals: remote write sends metrics only; signals are for otlp targets"
                ));
                break;
            }
            if s != "logs" && s != "traces" {
                problems.push(format!(
                    "{at}.signals: {s:?} is not logs or traces (metrics go by remote_write)"
                ));
            }
        }
        if self.max_bytes < 1 << 20 {
            problems.push(format!("{at}.max_bytes: must be at least 1 MiB"));
        }
        if let Err(e) = self.token.token_or_file(&self.token_file, "token") {
            problems.push(format!("{at}.{e}"));
        }
        self.tls.validate(&format!("{at}.tls"), problems);
    }

    /// The HTTP client: its token on every request, its TLS.
    fn client(&self, at: &str) -> Result<reqwest::Client, ForwardError> {
        let token = self
            .token
            .token_or_file(&self.token_file, "token")
            .map_err(|e| ForwardError::Config(format!("{at}.{e}")))?;
        let headers = keel_tls::bearer(token.as_deref())
            .map_err(|e| ForwardError::Config(format!("{at}.token: {e}")))?;
        let builder = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(30))
            .default_headers(headers);
        Ok(self.tls.client(builder, &format!("{at}.tls"))?)
    }
}

impl ForwardConfig {
    /// Every problem, each named by its place.
    pub fn validate(&self, problems: &mut Vec<String>) {
        let mut names = std::collections::BTreeSet::new();
        for (kind, targets) in [("remote_write", &self.remote_write), ("otlp", &self.otlp)] {
            for (i, t) in targets.iter().enumerate() {
                let at = format!("collector.forward.{kind}[{i}]");
                t.validate(&at, kind == "otlp", problems);
                if !names.insert(t.name()) {
                    problems.push(format!(
                        "{at}: another target is named {:?} (its queue's folder): set name",
                        t.name()
                    ));
                }
            }
        }
        let q = &self.remote_query;
        if !q.url.is_empty() && !is_url(&q.url) {
            problems.push(format!(
                "collector.forward.remote_query.url: {:?} is not an http:// or https:// URL",
                q.url
            ));
        }
        if keel_core::secret::url_has_credentials(&q.url) {
            problems.push(
                "collector.forward.remote_query.url: credentials in the URL would be shown in status; use token or token_file".into(),
            );
        }
        if let Err(e) = q.token.token_or_file(&q.token_file, "token") {
            problems.push(format!("collector.forward.remote_query.{e}"));
        }
        q.tls
            .validate("collector.forward.remote_query.tls", problems);
        if q.timeout.is_zero() {
            problems.push("collector.forward.remote_query.timeout: must be positive".into());
        }
    }
}

/// Forwarding could not start.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// A queue could not be opened.
    #[error("collector.forward: queue {name}: {source}")]
    Queue {
        /// The target.
        name: String,
        /// Why.
        source: keel_agent::buffer::BufferError,
    },
    /// A client could not be built (its TLS files).
    #[error("{0}")]
    Tls(#[from] keel_tls::TlsError),
    /// A setting is wrong.
    #[error("{0}")]
    Config(String),
}

/// One target's queue, shipped by its own task.
struct Lane {
    name: String,
    target: Target,
    shared: Arc<Shared>,
}

/// The running forwarding: a queue and a shipper a target.
pub struct Forwarding {
    remote_write: Vec<Lane>,
    otlp: Vec<Lane>,
    clock: SharedClock,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Forwarding {
    /// Open each target's queue under `data_dir/forward` and start
    /// shipping it (a queue left by the last run is sent first); `fsync`:
    /// each batch is synced before the sender is answered (the
    /// collector's `fsync: batch`).
    pub fn start(
        config: &ForwardConfig,
        data_dir: &Path,
        fsync: bool,
        clock: SharedClock,
    ) -> Result<Self, ForwardError> {
        let mut tasks = Vec::new();
        let mut open = |kind: &str, targets: &[Target], protocol: Protocol| {
            let mut lanes = Vec::new();
            for (i, t) in targets.iter().enumerate() {
                let name = t.name();
                let buffer =
                    DiskBuffer::open(&data_dir.join("forward").join(&name), t.max_bytes, fsync)
                        .map_err(|source| ForwardError::Queue {
                            name: name.clone(),
                            source,
                        })?;
                let mut shared = Shared::new(buffer, Default::default(), t.url.clone());
                shared.protocol = protocol;
                let shared = Arc::new(shared);
                let client = t.client(&format!("collector.forward.{kind}[{i}]"))?;
                tasks.push(tokio::spawn(keel_agent::ship::run(
                    shared.clone(),
                    client,
                    t.retry.clone(),
                    Duration::from_secs(300),
                    clock.clone(),
                )));
                lanes.push(Lane {
                    name,
                    target: t.clone(),
                    shared,
                });
            }
            Ok::<_, ForwardError>(lanes)
        };
        let remote_write = open("remote_write", &config.remote_write, Protocol::RemoteWrite)?;
        let otlp = open("otlp", &config.otlp, Protocol::Otlp)?;
        Ok(Self {
            remote_write,
            otlp,
            clock,
            tasks,
        })
    }

    /// Whether stored samples are forwarded.
    pub fn forwards_metrics(&self) -> bool {
        !self.remote_write.is_empty()
    }

    /// Whether stored native histograms are forwarded (to a target that
    /// sets `send_native_histograms`).
    pub fn forwards_histograms(&self) -> bool {
        self.remote_write
            .iter()
            .any(|l| l.target.send_native_histograms)
    }

    /// Queue samples just stored for every remote write target.
    pub fn metrics(&self, stored: &[(Labels, Vec<(i64, f64)>)]) {
        if self.remote_write.is_empty() {
            return;
        }
        let records: usize = stored.iter().map(|(_, s)| s.len()).sum();
        let raw = crate::ingest::remote_write::WriteRequest::from_batch(stored).encode_to_vec();
        let body = match snap::raw::Encoder::new().compress_vec(&raw) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "remote write: cannot compress a batch; not forwarded");
                return;
            }
        };
        self.push(&self.remote_write, Signal::Metrics, records, body);
    }

    /// Queue native histogram samples just stored for every remote write
    /// target (remote write 1.0's histograms, as Prometheus forwards
    /// them).
    pub fn histograms(&self, stored: &[keel_series::SeriesHistograms]) {
        if !self.forwards_histograms() {
            return;
        }
        let records: usize = stored.iter().map(|(_, s)| s.len()).sum();
        let raw = histograms::request(stored).encode_to_vec();
        let lanes = self
            .remote_write
            .iter()
            .filter(|l| l.target.send_native_histograms);
        match snap::raw::Encoder::new().compress_vec(&raw) {
            Ok(body) => self.push(lanes, Signal::Metrics, records, body),
            Err(e) => {
                tracing::error!(error = %e, "remote write: cannot compress histograms; not forwarded");
            }
        }
    }

    /// Queue an OTLP request of `signal` (logs or traces) just stored for
    /// every OTLP target that wants it.
    pub fn otlp<M: Message>(&self, signal: Signal, records: usize, req: &M) {
        if !self.otlp.iter().any(|l| l.target.wants(signal)) {
            return;
        }
        let body = keel_agent::otlp::gzip_request(req);
        let lanes = self.otlp.iter().filter(|l| l.target.wants(signal));
        self.push(lanes, signal, records, body);
    }

    /// One batch of `body`, queued on each of `lanes`.
    fn push<'a>(
        &self,
        lanes: impl IntoIterator<Item = &'a Lane>,
        signal: Signal,
        records: usize,
        body: Vec<u8>,
    ) {
        let batch = Batch {
            id: rand::random(),
            signal,
            records: u32::try_from(records).unwrap_or(u32::MAX),
            created_ms: self.clock.now_ms(),
            cursor: None,
            body,
        };
        for lane in lanes {
            if let Err(e) = lane.shared.push(&batch) {
                tracing::error!(target = %lane.name, error = %e, "forwarding: cannot queue a batch; it is stored here but not forwarded");
            }
        }
    }

    /// Each target's queue now.
    pub fn status(&self) -> Vec<TargetStatus> {
        let now = self.clock.now_ms();
        self.remote_write
            .iter()
            .map(|l| ("remote_write", l))
            .chain(self.otlp.iter().map(|l| ("otlp", l)))
            .map(|(kind, l)| {
                let b = l.shared.buffer.lock().unwrap_or_else(|e| e.into_inner());
                let stats = b.stats();
                let oldest = Signal::ALL
                    .iter()
                    .filter_map(|s| b.oldest_created_ms(*s))
                    .min();
                let load = |c: &[std::sync::atomic::AtomicU64; 3]| -> u64 {
                    c.iter()
                        .map(|x| x.load(std::sync::atomic::Ordering::Relaxed))
                        .sum()
                };
                TargetStatus {
                    name: l.name.clone(),
                    kind: kind.into(),
                    url: l.target.url.clone(),
                    queued_batches: stats.batches,
                    queued_bytes: stats.bytes,
                    lag_seconds: oldest.map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0),
                    sent_records: load(&l.shared.stats.sent),
                    failed_sends: load(&l.shared.stats.failed),
                    rejected_records: load(&l.shared.stats.rejected),
                    dropped_records: stats.dropped_records.iter().sum(),
                    last_error: l
                        .shared
                        .last_send_error
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone(),
                }
            })
            .collect()
    }
}

/// One target in [`Forwarding::status`] (and `keel status`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetStatus {
    /// Its name.
    pub name: String,
    /// `remote_write` or `otlp`.
    pub kind: String,
    /// Where it sends.
    pub url: String,
    /// Batches not yet taken.
    pub queued_batches: u64,
    /// Their bytes.
    pub queued_bytes: u64,
    /// Age of the oldest (0: none).
    pub lag_seconds: f64,
    /// Samples or records the target took.
    pub sent_records: u64,
    /// Failed attempts (each retried).
    pub failed_sends: u64,
    /// Records the target refused as invalid (not retried).
    pub rejected_records: u64,
    /// Records dropped because the queue was full.
    pub dropped_records: u64,
    /// Why the last attempt failed, until one succeeds.
    pub last_error: Option<String>,
}

/// The forwarding families of the collector's `/metrics`.
pub fn render(status: &[TargetStatus], out: &mut String) {
    use std::fmt::Write as _;
    type Pick = fn(&TargetStatus) -> String;
    let families: [(&str, &str, &str, Pick); 6] = [
        (
            "keel_forward_queued_batches",
            "gauge",
            "Batches queued on disk for the target, not yet taken.",
            |s| s.queued_batches.to_string(),
        ),
        (
            "keel_forward_queued_bytes",
            "gauge",
            "Bytes queued on disk for the target.",
            |s| s.queued_bytes.to_string(),
        ),
        (
            "keel_forward_lag_seconds",
            "gauge",
            "Age of the oldest batch the target has not taken (0: none).",
            |s| s.lag_seconds.to_string(),
        ),
        (
            "keel_forward_sent_records_total",
            "counter",
            "Samples (remote write) or records (OTLP) the target took.",
            |s| s.sent_records.to_string(),
        ),
        (
            "keel_forward_failed_sends_total",
            "counter",
            "Attempts to send to the target that failed (each retried).",
            |s| s.failed_sends.to_string(),
        ),
        (
            "keel_forward_dropped_records_total",
            "counter",
            "Records dropped: the target's queue was full, or it refused them as invalid.",
            |s| (s.dropped_records + s.rejected_records).to_string(),
        ),
    ];
    for (name, kind, help, pick) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for s in status {
            let _ = writeln!(
                out,
                "{name}{{target=\"{}\",kind=\"{}\"}} {}",
                s.name,
                s.kind,
                pick(s)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_named_by_its_place() {
        let yaml = "remote_write:\n- url: vm:8428/api/v1/write\n  signals: [logs]\n- url: http://a:1/w\n  name: \"a b\"\n  max_bytes: 10\n- url: http://u:pw@vm:1/w\n  retry: {initial: 0s}\nremote_query: {url: \"ftp://x\", timeout: 0s}\notlp:\n- url: http://a:1\n  signals: [metrics]\n  send_native_histograms: true\n- url: http://a:1/x\n";
        let c: ForwardConfig = keel_core::config::parse_yaml("forward", yaml).expect("parses");
        let mut problems = Vec::new();
        c.validate(&mut problems);
        let all = problems.join("\n");
        for want in [
            "collector.forward.remote_write[0].url: \"vm:8428/api/v1/write\" is not an http",
            "collector.forward.remote_write[0].signals: remote write sends metrics only",
            "collector.forward.remote_write[1].name: \"a b\" may hold only",
            "collector.forward.remote_write[1].max_bytes: must be at least 1 MiB",
            "collector.forward.remote_query.url: \"ftp://x\"",
            "collector.forward.remote_query.timeout: must be positive",
            "collector.forward.otlp[0].signals: \"metrics\" is not logs or traces",
            "collector.forward.otlp[1]: another target is named \"a_1\"",
            "collector.forward.remote_write[2].url: credentials in the URL",
            "collector.forward.remote_write[2].retry: initial must be positive",
            "collector.forward.otlp[0].send_native_histograms: for remote_write targets",
        ] {
            assert!(all.contains(want), "{want} missing from:\n{all}");
        }
        assert_eq!(problems.len(), 11, "{all}");
        assert!(
            !c.remote_write.iter().any(|t| t.send_native_histograms),
            "histograms are not forwarded unless asked, as in Prometheus"
        );
        let mut none = Vec::new();
        ForwardConfig::default().validate(&mut none);
        assert!(none.is_empty(), "{none:?}");
    }
}
