//! The running agent: scrape loops, the shipper, and the agent's own
//! HTTP endpoint (`/metrics`, `/status`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use keel_core::clock::SharedClock;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use serde::Serialize;

use crate::buffer::{Batch, BufferError, BufferStats, Signal};
use crate::config::AgentConfig;
use crate::lanes::Lanes;
use crate::logmetrics::RuleState;
use crate::scrape::{self, Health, Target};
use crate::ship;

/// Errors starting the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The disk buffer could not be opened.
    #[error("disk buffer: {0}")]
    Buffer(#[from] BufferError),
    /// The listen address could not be bound.
    #[error("listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP client could not be built (its TLS settings named).
    #[error("{0}")]
    Client(#[from] keel_tls::TlsError),
    /// The sender token or the listener's TLS files cannot be read.
    #[error("{0}")]
    Token(String),
}

/// What `/status` answers (and `keel agent status` prints).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Status {
    /// This host's name.
    pub hostname: String,
    /// Where batches go (the collectors, comma-separated).
    pub collector: String,
    /// Each collector's lane.
    #[serde(default)]
    pub lanes: Vec<LaneStatus>,
    /// Scrape targets and their last scrape.
    pub targets: Vec<TargetStatus>,
    /// Unsent batches on disk.
    pub buffered_batches: u64,
    /// Their bytes.
    pub buffered_bytes: u64,
    /// Records dropped because the buffer was full, all signals.
    pub dropped_records: u64,
    /// Age of the oldest unsent batch, seconds (0: none).
    pub send_lag_seconds: f64,
    /// The same per signal (each ships in its own lane), by signal name.
    #[serde(default)]
    pub send_lag_seconds_by_signal: BTreeMap<String, f64>,
    /// Records the collector acknowledged, all signals.
    pub sent_records: u64,
    /// Why the last attempt to send failed, until one succeeds (a
    /// certificate the agent does not trust says so here).
    #[serde(default)]
    pub last_send_error: Option<String>,
}

/// One collector's lane in [`Status`].
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct LaneStatus {
    /// The collector.
    pub collector: String,
    /// Batches not yet sent to it.
    pub buffered_batches: u64,
    /// Age of the oldest of them, seconds (0: none).
    pub send_lag_seconds: f64,
    /// Records it acknowledged.
    pub sent_records: u64,
    /// Why the last attempt to send to it failed, until one succeeds.
    pub last_send_error: Option<String>,
}

/// One target in [`Status`].
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct TargetStatus {
    /// The job.
    pub job: String,
    /// The URL.
    pub url: String,
    /// Whether the last scrape succeeded.
    pub up: bool,
    /// Why it failed.
    pub error: Option<String>,
    /// Seconds since the last scrape (None: not yet).
    pub last_scrape_ago_seconds: Option<f64>,
    /// Samples in the last scrape.
    pub samples: usize,
}

struct Inner {
    lanes: Arc<Lanes>,
    health: Mutex<BTreeMap<String, Health>>,
    /// Scrape loops of targets found by `file_sd`, by [`discovered_key`].
    /// Dropping a loop's sender stops it with staleness markers for its
    /// series (the target went away).
    discovered: Mutex<BTreeMap<String, (tokio::task::JoinHandle<()>, Stop)>>,
    clock: SharedClock,
    hostname: String,
}

/// A running agent; dropping it stops every task.
pub struct Agent {
    /// The address of `/metrics` and `/status`.
    pub addr: SocketAddr,
    /// The local OTLP/HTTP receiver's address, if it runs.
    pub otlp_addr: Option<SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    inner: Arc<Inner>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Bind `addr` and serve `app` there in a task added to `tasks`; the
/// address bound (port 0 becomes a free one).
async fn serve(
    addr: &str,
    app: Router,
    tls: Option<Arc<keel_tls::server::Acceptor>>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Result<SocketAddr, AgentError> {
    let listen_error = |source| AgentError::Listen {
        addr: addr.to_owned(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(listen_error)?;
    let bound = listener.local_addr().map_err(listen_error)?;
    tasks.push(tokio::spawn(async move {
        match tls {
            Some(t) => keel_tls::server::serve(listener, app, t).await,
            None => {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, addr = %bound, "agent HTTP listener stopped");
                }
            }
        }
    }));
    Ok(bound)
}

/// `agent.tls` for `listen`, reloaded every 2 s on `clock` when a file
/// changed (the task pushed on `tasks`).
fn listen_tls(
    config: &AgentConfig,
    clock: &SharedClock,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Result<Option<Arc<keel_tls::server::Acceptor>>, AgentError> {
    if !config.tls.enabled() {
        return Ok(None);
    }
    let acceptor = keel_tls::server::Acceptor::new(&config.tls, "agent.tls", true)
        .map_err(|e| AgentError::Token(e.to_string()))?;
    let clock = clock.clone();
    tasks.push(tokio::spawn(keel_tls::server::reload_forever(
        vec![acceptor.clone()],
        move || clock.sleep(std::time::Duration::from_secs(2)),
    )));
    Ok(Some(acceptor))
}

/// This machine's hostname.
pub fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

impl Agent {
    /// Open the buffer and start scraping, shipping and serving.
    pub async fn start(config: AgentConfig, clock: SharedClock) -> Result<Self, AgentError> {
        let lanes = Arc::new(Lanes::open(&config)?);
        let hostname = if config.hostname.is_empty() {
            local_hostname()
        } else {
            config.hostname.clone()
        };
        let inner = Arc::new(Inner {
            lanes: lanes.clone(),
            health: Mutex::new(BTreeMap::new()),
            discovered: Mutex::new(BTreeMap::new()),
            clock: clock.clone(),
            hostname: hostname.clone(),
        });
        // Named as Prometheus names itself to targets and collectors.
        let builder = || {
            reqwest::Client::builder()
                .pool_idle_timeout(Duration::from_secs(30))
                .user_agent(concat!("keel-agent/", env!("CARGO_PKG_VERSION")))
        };
        // Every batch carries the sender token, when the collector wants one.
        let token = config.collector_token().map_err(AgentError::Token)?;
        let ship_builder = builder().default_headers(
            keel_tls::bearer(token.as_deref())
                .map_err(|e| AgentError::Token(format!("agent.collector_token: {e}")))?,
        );
        let ship_client = config
            .collector_tls
            .client(ship_builder, "agent.collector_tls")?;
        let mut tasks = Vec::new();
        for lane in &lanes.lanes {
            tasks.push(tokio::spawn(ship::run(
                lane.clone(),
                ship_client.clone(),
                config.retry.clone(),
                config.buffer.metrics_reorder_window,
                clock.clone(),
            )));
        }
        for (i, job) in config.scrape.iter().enumerate() {
            let client = job
                .tls_config
                .client(builder(), &format!("agent.scrape[{i}].tls_config"))?;
            for t in Target::of(job) {
                tasks.push(tokio::spawn(scrape_loop(
                    inner.clone(),
                    client.clone(),
                    t,
                    None,
                )));
            }
            if !job.file_sd.is_empty() {
                tasks.push(tokio::spawn(discovery_loop(
                    inner.clone(),
                    client.clone(),
                    job.clone(),
                )));
            }
        }
        if config.host_metrics.enabled {
            // Checked with the config: the patterns compile.
            let exclude = crate::host::Exclusions::new(&config.host_metrics).unwrap_or_default();
            tasks.push(tokio::spawn(host_loop(
                inner.clone(),
                config.host_metrics.interval,
                exclude,
            )));
        }
        for source in &config.logs {
            let cursors = lanes.cursors();
            let tailer = crate::tail::Tailer::new(source.clone(), &cursors);
            tasks.push(tokio::spawn(tail_loop(
                inner.clone(),
                tailer,
                source.clone(),
                config.log_poll_interval,
            )));
        }
        let mut app = Router::new()
            .route("/metrics", get(metrics))
            .route("/status", get(status))
            .with_state(inner.clone());
        if let Some(role) = &config.failover {
            let role = crate::pgrole::PgRole::start(role.clone()).await;
            app = app.merge(role.routes());
        }
        let tls = listen_tls(&config, &clock, &mut tasks)?;
        let addr = serve(&config.listen, app, tls, &mut tasks).await?;
        let mut otlp_addr = None;
        if !config.otlp_receiver.is_empty() {
            let app = crate::receive::routes(lanes.clone(), hostname.clone(), clock.clone());
            otlp_addr = Some(serve(&config.otlp_receiver, app, None, &mut tasks).await?);
        }
        tracing::info!(%addr, otlp = ?otlp_addr, collectors = %config.collector_urls().join(", "), host = %hostname, "keel agent started");
        Ok(Self {
            addr,
            otlp_addr,
            tasks,
            inner,
        })
    }

    /// Stop every task and wait until each has stopped (dropping the
    /// agent stops them too, without waiting): after this, nothing of
    /// this agent touches its buffer.
    pub async fn stop(mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
        // Stopped as Prometheus stops at shutdown: no end-of-run
        // staleness markers, so a restart leaves no gap.
        let discovered = std::mem::take(&mut *lock(&self.inner.discovered));
        for (t, _) in discovered.values() {
            t.abort();
        }
        for (_, (t, _)) in discovered {
            let _ = t.await;
        }
    }

    /// The agent's status now.
    pub fn status(&self) -> Status {
        self.inner.status()
    }
}

impl Inner {
    /// Buffer one collection's points as a metrics batch (a resource a
    /// `job`/`instance` pair, see [`crate::otlp::resource_metrics`]).
    fn push_points(&self, points: Vec<scrape::Point>, now: i64) {
        self.push_described(points, &crate::exposition::Families::new(), now);
    }

    /// As [`Self::push_points`], each metric with its family's type, help
    /// and unit from `families` (see [`crate::otlp::resource_metrics`]).
    fn push_described(
        &self,
        points: Vec<scrape::Point>,
        families: &crate::exposition::Families,
        now: i64,
    ) {
        if points.is_empty() {
            return;
        }
        let records = points.len() as u32;
        let batch = Batch {
            id: rand::random(),
            signal: Signal::Metrics,
            records,
            created_ms: now,
            cursor: None,
            body: crate::otlp::gzip_request(&ExportMetricsServiceRequest {
                resource_metrics: crate::otlp::resource_metrics(points, families),
            }),
        };
        if let Err(e) = self.lanes.push(&batch) {
            tracing::error!(error = %e, records, "disk buffer: cannot write metrics; they are lost");
        }
    }

    /// Count a file batch's records (`texts` and what they became) into
    /// `rule`, as the job of each record's service; the first unreadable
    /// records of a rule are logged, every one is counted.
    fn observe_log_metrics(
        &self,
        rule: &mut RuleState,
        texts: &[String],
        records: &[opentelemetry_proto::tonic::logs::v1::LogRecord],
        default_service: &str,
        file: &std::path::Path,
    ) {
        for (text, record) in texts.iter().zip(records) {
            let job = crate::otlp::own_service(record).unwrap_or(default_service);
            if !rule.observe(text, record, job, &self.hostname) {
                self.lanes
                    .log_metrics_unmatched
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if rule.unmatched <= 3 {
                    tracing::warn!(
                        rule = %rule.name(), file = %file.display(), line = %text.chars().take(200).collect::<String>(),
                        "log-to-metrics: a record the rule cannot read (status or duration missing or not a number)"
                    );
                }
            }
        }
    }

    /// Each lane's buffer, and the age of each signal's oldest batch
    /// not yet sent (seconds, 0: none; in [`Signal::index`] order).
    fn buffer_stats(&self) -> Vec<(BufferStats, [f64; 3])> {
        let now = self.clock.now_ms();
        self.lanes
            .lanes
            .iter()
            .map(|lane| {
                let b = lane.buffer.lock().unwrap_or_else(|e| e.into_inner());
                let lag = Signal::ALL.map(|s| {
                    b.oldest_created_ms(s)
                        .map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0)
                });
                (b.stats(), lag)
            })
            .collect()
    }

    fn status(&self) -> Status {
        let buffers = self.buffer_stats();
        let now = self.clock.now_ms();
        let targets = self
            .health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|h| TargetStatus {
                job: h.job.clone(),
                url: h.url.clone(),
                up: h.up,
                error: h.error.clone(),
                last_scrape_ago_seconds: (h.last_scrape_ms > 0)
                    .then(|| (now - h.last_scrape_ms).max(0) as f64 / 1000.0),
                samples: h.samples,
            })
            .collect();
        let lanes: Vec<LaneStatus> = self
            .lanes
            .lanes
            .iter()
            .zip(&buffers)
            .map(|(lane, (b, lag))| LaneStatus {
                collector: lane.collector.clone(),
                buffered_batches: b.batches,
                send_lag_seconds: lag.iter().copied().fold(0.0, f64::max),
                sent_records: lane
                    .stats
                    .sent
                    .iter()
                    .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
                    .sum(),
                last_send_error: lane
                    .last_send_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone(),
            })
            .collect();
        // The agent's figures are its slowest lane's: what is behind or
        // lost anywhere, and what every collector has acknowledged.
        let lag: [f64; 3] = Signal::ALL.map(|s| {
            buffers
                .iter()
                .map(|(_, l)| l[s.index()])
                .fold(0.0, f64::max)
        });
        Status {
            hostname: self.hostname.clone(),
            collector: lanes
                .iter()
                .map(|l| l.collector.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            targets,
            buffered_batches: buffers.iter().map(|(b, _)| b.batches).max().unwrap_or(0),
            buffered_bytes: buffers.iter().map(|(b, _)| b.bytes).max().unwrap_or(0),
            dropped_records: buffers
                .iter()
                .map(|(b, _)| b.dropped_records.iter().sum::<u64>())
                .max()
                .unwrap_or(0),
            send_lag_seconds: lag.iter().copied().fold(0.0, f64::max),
            send_lag_seconds_by_signal: Signal::ALL
                .iter()
                .map(|s| (s.name().to_owned(), lag[s.index()]))
                .collect(),
            sent_records: lanes.iter().map(|l| l.sent_records).min().unwrap_or(0),
            last_send_error: lanes.iter().find_map(|l| l.last_send_error.clone()),
            lanes,
        }
    }
}

async fn metrics(State(inner): State<Arc<Inner>>) -> impl IntoResponse {
    let buffers = inner.buffer_stats();
    let views: Vec<crate::stats::LaneView> = inner
        .lanes
        .lanes
        .iter()
        .zip(buffers)
        .map(
            |(lane, (buffer, send_lag_seconds))| crate::stats::LaneView {
                collector: &lane.collector,
                stats: &lane.stats,
                buffer,
                send_lag_seconds,
            },
        )
        .collect();
    let own = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    (
        [("content-type", "text/plain; version=0.0.4")],
        crate::stats::render(
            &views,
            own(&inner.lanes.invalid_scrape_lines),
            own(&inner.lanes.log_metrics_unmatched),
        ),
    )
}

async fn status(State(inner): State<Arc<Inner>>) -> axum::Json<Status> {
    axum::Json(inner.status())
}

/// Collect host metrics every `every` (on the injected clock).
async fn host_loop(inner: Arc<Inner>, every: Duration, exclude: crate::host::Exclusions) {
    let base = vec![
        ("job".to_owned(), "node".to_owned()),
        ("instance".to_owned(), inner.hostname.clone()),
    ];
    let mut next = inner.clock.now();
    // A disk unmounted or an interface removed: its series go stale.
    let mut stale = scrape::Staleness::default();
    loop {
        inner.clock.sleep_until(next).await;
        next += every;
        let now = inner.clock.now_ms();
        let mut points =
            crate::host::collect(&crate::host::Roots::host(), &exclude, &base, now, true);
        let gone = stale.track(&points, now);
        points.extend(gone);
        inner.push_points(points, now);
    }
}

/// Poll a tailer every `every` (on the injected clock), buffering each
/// batch of lines with the file's position after them, and counting
/// them into the source's log-to-metrics rules.
async fn tail_loop(
    inner: Arc<Inner>,
    mut tailer: crate::tail::Tailer,
    source: crate::config::LogSource,
    every: Duration,
) {
    let mut rules: Vec<RuleState> = source.metrics.iter().cloned().map(RuleState::new).collect();
    let mut request = crate::logwire::LogsWriter::default();
    loop {
        for b in tailer.poll() {
            let now = inner.clock.now_ms();
            let observed_ns = (now.max(0) as u64) * 1_000_000;
            let n = b.records.len() as u32;
            // The name before its first dot, so a rotated `app.log.1`
            // is still `app`.
            let stem = b
                .path
                .file_name()
                .map(|s| {
                    s.to_string_lossy()
                        .split('.')
                        .next()
                        .unwrap_or_default()
                        .to_owned()
                })
                .unwrap_or_default();
            let default_service = if source.service.is_empty() {
                &stem
            } else {
                &source.service
            };
            if !rules.is_empty() {
                // The rules read records as structs (a second parse, only
                // for files with log-to-metrics rules).
                let records = crate::tail::to_records(&b.records, observed_ns);
                for rule in &mut rules {
                    inner.observe_log_metrics(rule, &b.records, &records, default_service, &b.path);
                }
            }
            for text in &b.records {
                request.push(text, observed_ns, default_service);
            }
            let batch = Batch {
                id: rand::random(),
                signal: Signal::Logs,
                records: n,
                created_ms: now,
                cursor: Some(b.cursor),
                body: request.gzip_request(&inner.hostname, &b.path.display().to_string()),
            };
            if let Err(e) = inner.lanes.push(&batch) {
                // Not buffered, so the buffered position did not move:
                // this run skips the lines, a restart reads them again.
                tracing::error!(error = %e, file = %b.path.display(), "disk buffer: cannot write log lines");
                break;
            }
        }
        let now = inner.clock.now_ms();
        for rule in &mut rules {
            if let Some(points) = rule.due(now) {
                inner.push_points(points, now);
            }
        }
        inner.clock.sleep(every).await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The key of a discovered target's scrape loop: its scrape job in the
/// config, then what makes it a distinct target.
fn discovered_key(config_job: &str, t: &Target) -> String {
    format!(
        "{config_job}\u{0}{}\u{0}{}\u{0}{:?}",
        t.job, t.url, t.labels
    )
}

/// Keep one scrape loop running for each target `job`'s `file_sd` files
/// list, re-reading them every `refresh_interval` (on the injected
/// clock): new targets start, gone ones stop and leave the status. A
/// file that fails to read keeps its last good targets.
async fn discovery_loop(inner: Arc<Inner>, client: reqwest::Client, job: crate::config::ScrapeJob) {
    let mut last: BTreeMap<std::path::PathBuf, Vec<Target>> = BTreeMap::new();
    let mut reported: BTreeMap<std::path::PathBuf, String> = BTreeMap::new();
    let prefix = format!("{}\u{0}", job.job);
    loop {
        let crate::discovery::Found {
            targets: mut found,
            failed,
        } = crate::discovery::read(&job);
        let failing: Vec<std::path::PathBuf> = failed.iter().map(|(p, _)| p.clone()).collect();
        // An error is logged once, until the file reads again.
        reported.retain(|p, _| failing.contains(p));
        for (path, e) in failed {
            let e = e.to_string();
            if reported.get(&path) != Some(&e) {
                tracing::warn!(job = %job.job, error = %e, "file_sd: cannot read targets; keeping the last good ones");
                reported.insert(path.clone(), e);
            }
            if let Some(t) = last.remove(&path) {
                found.insert(path, t);
            }
        }
        last = found;
        let want: BTreeMap<String, &Target> = last
            .values()
            .flatten()
            .map(|t| (discovered_key(&job.job, t), t))
            .collect();
        {
            let mut running = lock(&inner.discovered);
            let gone: Vec<String> = running
                .keys()
                .filter(|k| k.starts_with(&prefix) && !want.contains_key(*k))
                .cloned()
                .collect();
            for k in gone {
                // Dropping its sender ends the loop with staleness
                // markers for the target's series.
                running.remove(&k);
                let mut parts = k.split('\u{0}').skip(1);
                if let (Some(j), Some(url)) = (parts.next(), parts.next()) {
                    lock(&inner.health).remove(&format!("{j}\u{0}{url}"));
                    tracing::info!(job = %j, %url, "file_sd: target gone; no longer scraped");
                }
            }
            for (k, t) in want {
                if let std::collections::btree_map::Entry::Vacant(e) = running.entry(k) {
                    tracing::info!(job = %t.job, url = %t.url, "file_sd: new target");
                    let (stop, stopped) = tokio::sync::oneshot::channel();
                    e.insert((
                        tokio::spawn(scrape_loop(
                            inner.clone(),
                            client.clone(),
                            t.clone(),
                            Some(stopped),
                        )),
                        stop,
                    ));
                }
            }
        }
        inner.clock.sleep(job.refresh_interval).await;
    }
}

/// The sending half that keeps a discovered target's scrape loop going.
type Stop = tokio::sync::oneshot::Sender<()>;

/// Resolves when a discovered target's [`Stop`] is dropped; never for a
/// target from the config.
async fn gone(stop: &mut Option<tokio::sync::oneshot::Receiver<()>>) {
    match stop {
        Some(r) => {
            let _ = r.await;
        }
        None => std::future::pending().await,
    }
}

/// Scrape `t` every interval (on the injected clock), buffering each
/// scrape as one batch with its staleness markers, until the sender of
/// `stop` (a discovered target's) is dropped — the target went away: its
/// series are marked stale — or the task is aborted (the agent stops).
/// How often a target's families' metadata is sent along (ms).
const METADATA_EVERY_MS: i64 = 60_000;

async fn scrape_loop(
    inner: Arc<Inner>,
    client: reqwest::Client,
    t: Target,
    mut stop: Option<tokio::sync::oneshot::Receiver<()>>,
) {
    let mut next = inner.clock.now();
    let mut was_up: Option<bool> = None;
    let mut stale = scrape::Staleness::default();
    let mut metadata_sent: Option<i64> = None;
    loop {
        tokio::select! {
            // A target that went away is not scraped once more.
            biased;
            () = gone(&mut stop) => {
                let now = inner.clock.now_ms();
                inner.push_points(scrape::end_of_run(&t, &mut stale, now), now);
                tracing::debug!(job = %t.job, url = %t.url, "target gone: its series are stale");
                return;
            }
            _ = inner.clock.sleep_until(next) => {}
        }
        next += t.interval;
        let mut o = scrape::scrape(&client, &t).await;
        let now = inner.clock.now_ms();
        let up = o.error.is_none();
        // Logged when a target goes down and when it comes back.
        match &o.error {
            Some(e) if was_up != Some(false) => {
                tracing::warn!(job = %t.job, url = %t.url, error = %e, "scrape failed: up 0");
            }
            None if was_up == Some(false) => {
                tracing::info!(job = %t.job, url = %t.url, "target is up again");
            }
            _ => {}
        }
        was_up = Some(up);
        if o.invalid_lines > 0 {
            inner
                .lanes
                .invalid_scrape_lines
                .fetch_add(o.invalid_lines as u64, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(
                job = %t.job, url = %t.url, lines = o.invalid_lines,
                first = ?o.first_invalid, "scrape: unparseable lines skipped"
            );
        }
        let samples = o.samples.len();
        let points = scrape::points(&t, &mut o, &mut stale, now);
        // The families' metadata goes with the first scrape and then once
        // a minute (as Prometheus' remote write sends it): the collector
        // holds it in memory.
        if o.families.is_empty() || metadata_sent.is_some_and(|at| now - at < METADATA_EVERY_MS) {
            inner.push_points(points, now);
        } else {
            inner.push_described(points, &o.families, now);
            metadata_sent = Some(now);
        }
        inner
            .health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                format!("{}\u{0}{}", t.job, t.url),
                Health {
                    url: t.url.clone(),
                    job: t.job.clone(),
                    up,
                    error: o.error.clone(),
                    last_scrape_ms: now,
                    duration_seconds: o.duration.as_secs_f64(),
                    samples,
                    invalid_lines: o.invalid_lines,
                },
            );
    }
}
