//! The collector as a running service: its configuration and listeners.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use keel_core::clock::SharedClock;
use serde::{Deserialize, Serialize};

use crate::ingest::http::{IngestLimits, IngestStats};
pub use crate::limits::Limits;
use keel_logindex::logs::{LogConfig, LogError, LogStore};
use keel_logindex::traces::SpanStore;
use keel_logindex::traces::red::SpanMetrics;
use keel_metricstore::{Fsync, Store, StoreConfig, StoreError};

/// The `collector:` section of `keel.yaml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// Address to bind.
    pub host: String,
    /// Where the metric store keeps its write-ahead log.
    pub data_dir: PathBuf,
    /// OTLP/HTTP port (0 picks a free one).
    pub otlp_http_port: u16,
    /// OTLP/gRPC port (0 picks a free one).
    pub otlp_grpc_port: u16,
    /// API port: PromQL and series APIs, and Prometheus remote write at
    /// `/api/v1/write` (0 picks a free one).
    pub api_port: u16,
    /// WAL fsync policy: `batch` (before each acknowledgement) or `never`
    /// (the OS flushes; a process crash loses nothing acknowledged, a power
    /// loss may).
    pub fsync: Fsync,
    /// How far behind a series' newest sample a sample may still arrive.
    #[serde(with = "keel_core::duration")]
    pub out_of_order_window: std::time::Duration,
    /// Time range of one on-disk block; the in-memory head holds about
    /// 1.5 of these before the oldest is cut into a block.
    #[serde(with = "keel_core::duration")]
    pub block_duration: std::time::Duration,
    /// Blocks whose newest sample is older than this are deleted.
    #[serde(with = "keel_core::duration")]
    pub retention: std::time::Duration,
    /// Exemplars kept across all series, newest first (Prometheus'
    /// `storage.exemplars.max_exemplars`; 0: none are kept).
    pub max_exemplars: usize,
    /// Largest OTLP request body, as sent.
    pub max_body_bytes: usize,
    /// Largest OTLP request body after decompression.
    pub max_decoded_bytes: usize,
    /// OTLP batches processed at once; beyond, 503 with Retry-After.
    pub max_concurrent_batches: usize,
    /// How often new log records are committed to the index (made
    /// searchable). Each commit costs a segment flush; 100 ms keeps a
    /// record searchable within a second.
    #[serde(with = "keel_core::duration")]
    pub log_commit_interval: std::time::Duration,
    /// Time span of one log partition (by arrival).
    #[serde(with = "keel_core::duration")]
    pub log_partition: std::time::Duration,
    /// Log partitions whose newest record is older than this are deleted.
    #[serde(with = "keel_core::duration")]
    pub log_retention: std::time::Duration,
    /// How long the ids of stored batches are kept, so that a batch an
    /// agent sends again after a lost acknowledgement is dropped.
    #[serde(with = "keel_core::duration")]
    pub batch_id_retention: std::time::Duration,
    /// Where alert state, history, silences, acks, notifications and
    /// tickets are kept: empty for SQLite at `<data_dir>/state.db`, a
    /// `sqlite:` or `postgres://` URL, or `none` (kept in memory only).
    pub state: String,
    /// How long alert history is kept.
    #[serde(with = "keel_core::duration")]
    pub alert_history_retention: std::time::Duration,
    /// How long a delivered (or given-up) notification is kept; one not
    /// yet delivered is kept until it is.
    #[serde(with = "keel_core::duration")]
    pub notification_retention: std::time::Duration,
    /// Alerting and recording rules.
    pub rules: keel_alerting::rules::RulesConfig,
    /// Who hears of alerts, when, and how.
    pub notify: keel_alerting::notify::NotifyConfig,
    /// How OTLP metrics' resource attributes become labels (Prometheus
    /// 3's `otlp:` settings): `job`/`instance` always, `target_info` for the
    /// rest, labels only for what is promoted here.
    pub otlp: crate::ingest::otlp::Translation,
    /// The directory of dashboard files (hot-reloaded). The default,
    /// `dashboards`, when it does not exist: the shipped dashboards,
    /// written to `<data_dir>/dashboards` (files already there are kept).
    pub dashboards: PathBuf,
    /// Incident bundles: where they go, and recording around every P0.
    pub incidents: keel_incident::IncidentsConfig,
    /// What one query may cost (Prometheus' `--query.*` flags): the API's,
    /// the dashboards' and the rules'.
    pub query: keel_promql::QueryLimits,
    /// What clients can make the collector hold.
    pub limits: Limits,
    /// Who may send (the tokens ingest requires; none: ingest is open)
    /// and how people log in to the API and the pages.
    pub auth: keel_auth::AuthConfig,
    /// TLS on all three listeners (certificate reloaded when its files
    /// change); `client_ca_file`: agents on the OTLP listeners must
    /// present a certificate it signed (mutual TLS).
    pub tls: keel_tls::server::ServerTlsConfig,
    /// Bind an address other machines reach without TLS or without
    /// `auth.login`: must be said in so many words.
    pub insecure: bool,
    /// A highly available pair: collectors sharing one PostgreSQL state
    /// store, one leading at a time by lease.
    pub ha: crate::ha::HaConfig,
    /// Forwarding to a clustered store (remote write, OTLP) and asking it
    /// for what is older than `retention`.
    pub forward: crate::forward::ForwardConfig,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        let limits = IngestLimits::default();
        Self {
            host: "127.0.0.1".into(),
            data_dir: PathBuf::from("keel-data/collector"),
            otlp_http_port: 4318,
            otlp_grpc_port: 4317,
            api_port: 7070,
            fsync: Fsync::Never,
            out_of_order_window: std::time::Duration::from_secs(600),
            block_duration: std::time::Duration::from_secs(2 * 3600),
            retention: std::time::Duration::from_secs(15 * 24 * 3600),
            max_exemplars: keel_metricstore::exemplars::DEFAULT_CAPACITY,
            max_body_bytes: limits.max_body_bytes,
            max_decoded_bytes: limits.max_decoded_bytes,
            max_concurrent_batches: limits.max_concurrent_batches,
            log_commit_interval: std::time::Duration::from_millis(100),
            log_partition: std::time::Duration::from_secs(24 * 3600),
            log_retention: std::time::Duration::from_secs(7 * 24 * 3600),
            batch_id_retention: std::time::Duration::from_secs(24 * 3600),
            state: String::new(),
            alert_history_retention: std::time::Duration::from_secs(90 * 24 * 3600),
            notification_retention: std::time::Duration::from_secs(90 * 24 * 3600),
            rules: keel_alerting::rules::RulesConfig::default(),
            notify: keel_alerting::notify::NotifyConfig::default(),
            dashboards: PathBuf::from("dashboards"),
            otlp: crate::ingest::otlp::Translation::default(),
            incidents: keel_incident::IncidentsConfig::default(),
            query: keel_promql::QueryLimits::default(),
            limits: Limits::default(),
            auth: keel_auth::AuthConfig::default(),
            tls: keel_tls::server::ServerTlsConfig::default(),
            insecure: false,
            ha: crate::ha::HaConfig::default(),
            forward: crate::forward::ForwardConfig::default(),
        }
    }
}

impl keel_core::config::Validate for CollectorConfig {
    fn validate(&self, problems: &mut Vec<String>) {
        match self.host.parse::<std::net::IpAddr>() {
            Err(_) => problems.push(format!(
                "collector.host: {:?} is not an IP address",
                self.host
            )),
            // Safe by default: another machine reaching the API needs a
            // login, and passwords and tokens need TLS.
            Ok(ip) if !ip.is_loopback() && !self.insecure => {
                let missing: Vec<&str> = [
                    (!self.auth.login).then_some("collector.auth.login: true"),
                    (!self.tls.enabled()).then_some("collector.tls (cert_file, key_file)"),
                    self.auth
                        .senders
                        .is_empty()
                        .then_some("collector.auth.senders (or ingest takes anyone's data)"),
                ]
                .into_iter()
                .flatten()
                .collect();
                if !missing.is_empty() {
                    problems.push(format!(
                        "collector.host: {} is reachable from other machines, which needs {}: \
                         bind 127.0.0.1, or set collector.insecure: true to accept that",
                        self.host,
                        missing.join(" and ")
                    ));
                }
            }
            Ok(_) => {}
        }
        if self.max_body_bytes == 0 || self.max_decoded_bytes < self.max_body_bytes {
            problems
                .push("collector.max_decoded_bytes: must be at least max_body_bytes (> 0)".into());
        }
        if self.block_duration.as_secs() < 60 {
            problems.push("collector.block_duration: must be at least 1m".into());
        }
        if self.out_of_order_window * 2 >= self.block_duration {
            problems.push(
                "collector.out_of_order_window: must be less than half of block_duration".into(),
            );
        }
        if self.retention < self.block_duration {
            problems.push("collector.retention: must be at least block_duration".into());
        }
        self.otlp.validate("collector.otlp", problems);
        self.ha.validate(&self.state, problems);
        self.forward.validate(problems);
        if self.max_concurrent_batches == 0 {
            problems.push("collector.max_concurrent_batches: must be at least 1".into());
        }
        if self.log_commit_interval.is_zero() || self.log_commit_interval.as_secs() > 60 {
            problems.push("collector.log_commit_interval: must be between 1ms and 1m".into());
        }
        if self.log_partition.as_secs() < 60 {
            problems.push("collector.log_partition: must be at least 1m".into());
        }
        if self.log_retention < self.log_partition {
            problems.push("collector.log_retention: must be at least log_partition".into());
        }
        let st = self.state.as_str();
        if !(st.is_empty()
            || st == "none"
            || st.starts_with("sqlite:")
            || st.starts_with("postgres://")
            || st.starts_with("postgresql://"))
        {
            problems.push(format!(
                "collector.state: {:?} is not a sqlite: or postgres:// URL, \"\" or \"none\"",
                keel_state::redact(st)
            ));
        }
        self.rules.validate(problems);
        self.notify.validate(problems);
        self.incidents.validate(problems);
        self.query.validate("collector.query", problems);
        self.limits.validate(problems);
        self.auth.validate("collector.auth", problems);
        self.tls.validate("collector.tls", problems);
        if self.auth.login && self.state == "none" {
            problems.push(
                "collector.auth.login: users and tokens are kept in the state store, and collector.state is none".into(),
            );
        }
    }
}

impl CollectorConfig {
    /// Open the metric store this configuration describes
    /// (`<data_dir>/metrics`), as the collector and `keel import` do.
    pub fn open_store(&self) -> Result<Store, StoreError> {
        let config = StoreConfig {
            out_of_order_window_ms: self.out_of_order_window.as_millis() as i64,
            fsync: self.fsync,
            block_ms: self.block_duration.as_millis() as i64,
            retention_ms: self.retention.as_millis() as i64,
            batch_id_retention_ms: self.batch_id_retention.as_millis() as i64,
            limits: self.limits.series(),
            max_exemplars: self.max_exemplars,
        };
        Store::open(&self.data_dir.join("metrics"), config)
    }

    fn index_config(&self) -> LogConfig {
        LogConfig {
            commit_interval_ms: self.log_commit_interval.as_millis() as i64,
            partition_ms: self.log_partition.as_millis() as i64,
            retention_ms: self.log_retention.as_millis() as i64,
            batch_id_retention_ms: self.batch_id_retention.as_millis() as i64,
            fsync: self.fsync,
            ..LogConfig::default()
        }
    }

    /// Prometheus' command-line flags that have a counterpart here, with
    /// this config's values (`/api/v1/status/flags`), `api` the address
    /// the API listens on.
    pub fn prometheus_flags(&self, api: SocketAddr) -> BTreeMap<String, String> {
        let d = keel_core::duration::format;
        [
            ("web.listen-address", api.to_string()),
            ("storage.tsdb.path", self.data_dir.display().to_string()),
            ("storage.tsdb.retention.time", d(self.retention)),
            ("storage.tsdb.min-block-duration", d(self.block_duration)),
            ("storage.tsdb.max-block-duration", d(self.block_duration)),
            ("query.max-samples", self.query.max_samples.to_string()),
            ("query.timeout", d(self.query.timeout)),
            (
                "query.max-concurrency",
                self.query.max_concurrency.to_string(),
            ),
            (
                "query.lookback-delta",
                d(std::time::Duration::from_millis(
                    keel_promql::eval::LOOKBACK_MS as u64,
                )),
            ),
            ("web.enable-remote-write-receiver", "true".to_owned()),
            ("web.enable-lifecycle", "true".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// The state store's URL (none: state is kept in memory only).
    pub fn state_url(&self) -> Option<String> {
        match self.state.as_str() {
            "none" => None,
            "" => Some(keel_state::sqlite_url(&self.data_dir.join("state.db"))),
            url => Some(url.to_owned()),
        }
    }

    /// Where the dashboards are read from: `dashboards`, or when the
    /// default directory is absent, the shipped ones written under the
    /// data directory (missing files only, so edits there are kept).
    pub fn dashboards_dir(&self) -> PathBuf {
        if self.dashboards.is_dir() || self.dashboards != Self::default().dashboards {
            return self.dashboards.clone();
        }
        let dir = self.data_dir.join("dashboards");
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot write the shipped dashboards");
        }
        for (name, text) in keel_dashboards::SHIPPED {
            let f = dir.join(name);
            if !f.exists()
                && let Err(e) = std::fs::write(&f, text)
            {
                tracing::warn!(file = %f.display(), error = %e, "cannot write a shipped dashboard");
            }
        }
        dir
    }

    /// Open the log store this configuration describes (`<data_dir>/logs`).
    pub fn open_logs(&self, now_ms: i64) -> Result<LogStore, LogError> {
        LogStore::open(&self.data_dir.join("logs"), self.index_config(), now_ms)
    }

    /// Open the span store (`<data_dir>/traces`); the log settings apply.
    pub fn open_spans(&self, now_ms: i64) -> Result<SpanStore, LogError> {
        SpanStore::open(&self.data_dir.join("traces"), self.index_config(), now_ms)
    }
}

/// Background work on the injected clock: commit new log records every
/// commit interval; once a minute, cut the metric head into blocks and
/// apply both retentions.
fn housekeeping(store: Arc<Store>, logs: Arc<LogStore>, spans: Arc<SpanStore>, clock: SharedClock) {
    let every = std::time::Duration::from_millis(logs.commit_interval_ms().max(1) as u64);
    let c = clock.clone();
    let (l, sp) = (logs.clone(), spans.clone());
    tokio::spawn(async move {
        loop {
            c.sleep(every).await;
            let (l, sp) = (l.clone(), sp.clone());
            match tokio::task::spawn_blocking(move || (l.commit(), sp.commit())).await {
                Ok((Ok(()), Ok(()))) => {}
                Ok((Err(e), _)) => tracing::error!(error = %e, "committing logs failed"),
                Ok((_, Err(e))) => tracing::error!(error = %e, "committing spans failed"),
                Err(e) => tracing::error!(error = %e, "the commit task failed"),
            }
        }
    });
    tokio::spawn(async move {
        loop {
            clock.sleep(std::time::Duration::from_secs(60)).await;
            let now = clock.now_ms();
            let (s, l, sp) = (store.clone(), logs.clone(), spans.clone());
            let done = tokio::task::spawn_blocking(move || {
                if let Err(e) = s.compact(now) {
                    tracing::error!(error = %e, "metric compaction failed");
                }
                if let Err(e) = l.apply_retention(now) {
                    tracing::error!(error = %e, "log retention failed");
                }
                if let Err(e) = sp.apply_retention(now) {
                    tracing::error!(error = %e, "span retention failed");
                }
            })
            .await;
            if let Err(e) = done {
                tracing::error!(error = %e, "the housekeeping task failed");
            }
        }
    });
}

/// Alert state and notifications as the state store holds them, put
/// back into the rules and the notifier, which save every change through
/// `writer` from now on.
async fn restore_alerting(
    st: &keel_state::StateStore,
    writer: &keel_state::Writer,
    rules: &keel_alerting::rules::RuleManager,
    notifier: &keel_alerting::notify::Notifier,
) -> Result<(), keel_state::StateError> {
    let alerts = st.load(keel_state::Table::Alerts).await?;
    let saved = keel_alerting::notify::persist::Saved::load(st).await?;
    rules.keep_state(writer.clone(), alerts);
    notifier.keep_state(writer.clone(), &saved);
    Ok(())
}

/// With `collector.ha`, take part in the lease: returns once the store
/// has answered the first try (an error if it cannot), leading or not.
async fn lead(
    config: &CollectorConfig,
    url: &str,
    clock: &SharedClock,
) -> Result<crate::ha::Leading, ServeError> {
    use keel_state::lease::{LeaseConfig, Standing};
    if !config.ha.enabled {
        return Ok(crate::ha::Leading::alone());
    }
    let holder = config.ha.holder(config.api_port);
    // The lease has connections of its own: a backlog of writes (alert
    // state, events) never delays a renewal past the lease.
    let st = Arc::new(keel_state::StateStore::open(url).await?);
    let l = st.lead(
        LeaseConfig {
            name: crate::ha::LEASE.into(),
            holder: holder.clone(),
            ttl: config.ha.lease,
            every: config.ha.renew_interval,
        },
        clock.clone(),
    );
    let mut w = l.watch();
    let first = tokio::time::timeout(
        config.ha.lease,
        w.wait_for(|s| !matches!(s, Standing::Starting)),
    )
    .await
    .map_err(|_| ServeError::Lease("the state store did not answer the lease in time".into()))?
    .map_err(|_| ServeError::Lease("the lease task stopped".into()))?
    .clone();
    match first {
        Standing::Lost(why) => return Err(ServeError::Lease(why)),
        Standing::Leader(_) => tracing::info!(name = %holder, "collector.ha: this collector leads"),
        other => {
            tracing::info!(name = %holder, standing = ?other, "collector.ha: this collector follows")
        }
    }
    Ok(crate::ha::Leading {
        leadership: Some(Arc::new(l)),
        holder,
    })
}

/// Errors starting the collector.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The store would not open.
    #[error("metric store: {0}")]
    Store(#[from] StoreError),
    /// The log store would not open.
    #[error("log store: {0}")]
    Logs(#[from] LogError),
    /// A port would not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Where.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The notification settings are invalid.
    #[error("notify: {0}")]
    Notify(String),
    /// The rule files do not load (every problem, file:line:column).
    #[error("rules: {0}")]
    Rules(keel_alerting::rules::RuleErrors),
    /// The state store does not open.
    #[error("{0}")]
    State(#[from] keel_state::StateError),
    /// Forwarding does not start (a queue, a TLS file).
    #[error("{0}")]
    Forward(#[from] crate::forward::ForwardError),
    /// The ingest worker threads would not start.
    #[error("cannot start the ingest worker threads: {0}")]
    Workers(std::io::Error),
    /// A sender token cannot be read.
    #[error("{0}")]
    Auth(String),
    /// The TLS certificate or key does not load.
    #[error("{0}")]
    Tls(#[from] keel_tls::server::ServerTlsError),
    /// `collector.ha`: the lease could not be asked for.
    #[error("collector.ha: {0}")]
    Lease(String),
}

/// A running collector.
pub struct Running {
    /// OTLP/HTTP address.
    pub otlp_http: SocketAddr,
    /// OTLP/gRPC address.
    pub otlp_grpc: SocketAddr,
    /// API address.
    pub api: SocketAddr,
    /// The store, for in-process users (the controller, later).
    pub store: Arc<Store>,
    /// The log store.
    pub logs: Arc<LogStore>,
    /// The span store.
    pub spans: Arc<SpanStore>,
    /// Ingest counters.
    pub stats: Arc<IngestStats>,
    /// The rules it evaluates.
    pub rules: Arc<keel_alerting::rules::RuleManager>,
    /// Who it pages.
    pub notifier: Arc<keel_alerting::notify::Notifier>,
    /// Arrivals and ticks, for incident bundles.
    pub marks: Arc<keel_core::marks::MarkLog>,
    /// The incident recorder.
    pub incidents: Arc<keel_incident::Incidents>,
    /// The state store and its writer (none: `collector.state: none`).
    pub state: Option<(Arc<keel_state::StateStore>, keel_state::Writer)>,
    /// Whether this collector leads (`collector.ha`), and how to wait
    /// for it to start or stop leading.
    pub leading: crate::ha::Leading,
    /// The API listener's routes people use (behind the people guard).
    pub people_routes: Vec<String>,
    /// The API listener's ingest routes (behind the sender check).
    pub ingest_routes: Vec<String>,
    /// The people guard (its users, sessions and audit), for other
    /// listeners of the same process (the controller's API).
    pub access: keel_auth::Access,
    /// The API listener's TLS (none: plain HTTP), for other listeners of
    /// the same process.
    pub api_tls: Option<Arc<keel_tls::server::Acceptor>>,
}

impl Running {
    /// `https` when the listeners serve TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.api_tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

/// Serve `router` on `listener` (over TLS when `tls` is given), the
/// peer's address as `ConnectInfo`; `what` names it in the log.
pub fn spawn_listener(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    tls: Option<Arc<keel_tls::server::Acceptor>>,
    what: &'static str,
) {
    tokio::spawn(async move {
        match tls {
            Some(t) => keel_tls::server::serve(listener, router, t).await,
            None => {
                let app = router.into_make_service_with_connect_info::<SocketAddr>();
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, listener = what, "listener stopped");
                }
            }
        }
    });
}

/// The API's and ingest's TLS (ingest asks agents for certificates when
/// a client CA is set), reloaded every 2 s on `clock` when a file changed.
type Acceptors = (
    Option<Arc<keel_tls::server::Acceptor>>,
    Option<Arc<keel_tls::server::Acceptor>>,
);

fn tls(config: &CollectorConfig, clock: &SharedClock) -> Result<Acceptors, ServeError> {
    if !config.tls.enabled() {
        return Ok((None, None));
    }
    let api = keel_tls::server::Acceptor::new(&config.tls, "collector.tls", false)?;
    let ingest = keel_tls::server::Acceptor::new(&config.tls, "collector.tls", true)?;
    let clock = clock.clone();
    tokio::spawn(keel_tls::server::reload_forever(
        vec![api.clone(), ingest.clone()],
        move || clock.sleep(std::time::Duration::from_secs(2)),
    ));
    Ok((Some(api), Some(ingest)))
}

async fn bind(host: &str, port: u16) -> Result<tokio::net::TcpListener, ServeError> {
    let addr = format!("{host}:{port}");
    tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// Past a file size limit (`ulimit -f`) the kernel sends SIGXFSZ, whose
/// default ends the process. Handled, the write fails with EFBIG instead:
/// the WAL rewinds and ingest answers 503 until the limit is raised.
fn survive_file_size_limit() {
    let xfsz = tokio::signal::unix::SignalKind::from_raw(nix::sys::signal::Signal::SIGXFSZ as i32);
    match tokio::signal::unix::signal(xfsz) {
        Ok(mut s) => {
            tokio::spawn(async move {
                while s.recv().await.is_some() {
                    tracing::warn!(
                        "a file reached the process' size limit (SIGXFSZ): writes fail until it is raised"
                    );
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot handle SIGXFSZ"),
    }
}

/// Open the store and start both listeners on the current runtime.
pub async fn start(config: &CollectorConfig, clock: SharedClock) -> Result<Running, ServeError> {
    survive_file_size_limit();
    let store = Arc::new(tokio::task::block_in_place(|| config.open_store())?);
    // What is stored is queued for each remote write target before the
    // sender is answered.
    let forwarding = Arc::new(crate::forward::Forwarding::start(
        &config.forward,
        &config.data_dir,
        config.fsync == keel_metricstore::wal::Fsync::Batch,
        clock.clone(),
    )?);
    if forwarding.forwards_metrics() {
        let f = forwarding.clone();
        store.forward_to(keel_metricstore::Forward(Arc::new(move |stored| {
            f.metrics(stored);
        })));
    }
    if forwarding.forwards_histograms() {
        let f = forwarding.clone();
        store.forward_histograms_to(keel_metricstore::ForwardHistograms(Arc::new(
            move |stored| f.histograms(stored),
        )));
    }
    let older = crate::api::Older {
        remote: crate::forward::remote_query::RemoteQuery::new(&config.forward.remote_query)?,
        retention_ms: i64::try_from(config.retention.as_millis()).unwrap_or(i64::MAX),
    };
    let logs = Arc::new(tokio::task::block_in_place(|| {
        config.open_logs(clock.now_ms())
    })?);
    let spans = Arc::new(tokio::task::block_in_place(|| {
        config.open_spans(clock.now_ms())
    })?);
    let telemetry = crate::ingest::http::Telemetry {
        logs: logs.clone(),
        spans: spans.clone(),
        span_metrics: Arc::new(SpanMetrics::default()),
        clock: clock.clone(),
        translation: Arc::new(config.otlp.clone()),
        records: config.limits.records(),
        forward: forwarding.clone(),
    };
    let rules = keel_alerting::rules::RuleManager::new(
        config.rules.clone(),
        Box::new(keel_alerting::rules::source::StoreSource {
            store: store.clone(),
            logs: Some(logs.clone()),
            limits: config.query.clone(),
        }),
        clock.clone(),
    )
    .map_err(ServeError::Rules)?;
    let notifier = keel_alerting::notify::Notifier::start(config.notify.clone(), clock.clone())
        .map_err(|p| ServeError::Notify(p.join("; ")))?;
    notifier.set_severity_mapping(config.rules.severity_mapping.clone());
    let (state, leading) = match config.state_url() {
        None => (None, crate::ha::Leading::alone()),
        Some(url) => {
            // The metric store, opened first, made the data directory.
            let st = Arc::new(keel_state::StateStore::open(&url).await?);
            let leading = lead(config, &url, &clock).await?;
            // What only the leader does is written under its token.
            let writer = match &leading.leadership {
                Some(l) => st.writer_fenced(l),
                None => st.writer(),
            };
            (Some((st, writer)), leading)
        }
    };
    // Alerting acts once this collector leads (at once when alone), from
    // the state the last leader saved.
    if leading.leadership.is_none()
        && let Some((st, writer)) = &state
    {
        restore_alerting(st, writer, &rules, &notifier).await?;
    }
    prune(
        state.as_ref().map(|(s, _)| s.clone()),
        notifier.clone(),
        (
            config.alert_history_retention,
            config.notification_retention,
        ),
        clock.clone(),
    );
    rules.set_notifier(notifier.clone());
    rules.set_arrivals(store.appended());
    let dashboards_dir = config.dashboards_dir();
    // Arrivals and ticks are kept as long as the samples they time.
    let marks = Arc::new(keel_core::marks::MarkLog::new(
        &config.data_dir.join("marks"),
        clock.clone(),
        config.retention,
    ));
    store.set_marks(marks.clone());
    rules.set_marks(marks.clone());
    let incidents = keel_incident::Incidents::new(
        config.incidents.clone(),
        &config.data_dir,
        keel_incident::Sources {
            store: store.clone(),
            logs: logs.clone(),
            spans: spans.clone(),
            marks: marks.clone(),
            state: state.as_ref().map(|(s, _)| s.clone()),
            notifier: notifier.clone(),
            rules: config.rules.clone(),
            notify: config.notify.clone(),
            dashboards: dashboards_dir.clone(),
            controller: Default::default(),
            clock: clock.clone(),
        },
    );
    if leading.leadership.is_none() {
        tokio::spawn(incidents.clone().run_p0(rules.clone()));
        tokio::spawn(rules.clone().run());
    } else {
        let (leading, incidents, rules, notifier, state) = (
            leading.clone(),
            incidents.clone(),
            rules.clone(),
            notifier.clone(),
            state.clone(),
        );
        tokio::spawn(async move {
            leading.until_leading().await;
            tracing::info!(name = %leading.holder, "leading: restoring alert state, then evaluating rules and sending notifications");
            if let Some((st, writer)) = &state {
                let mut wait = std::time::Duration::from_millis(200);
                // A store that answers the lease but not these reads:
                // retried, never acting on half a state.
                while let Err(e) = restore_alerting(st, writer, &rules, &notifier).await {
                    tracing::error!(error = %e, retry_in = ?wait, "restoring alert state failed");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_secs(10));
                }
            }
            tokio::spawn(incidents.run_p0(rules.clone()));
            tokio::spawn(rules.run());
        });
    }
    housekeeping(store.clone(), logs.clone(), spans.clone(), clock.clone());
    let stats = Arc::new(IngestStats::default());
    let limits = IngestLimits {
        max_body_bytes: config.max_body_bytes,
        max_decoded_bytes: config.max_decoded_bytes,
        max_concurrent_batches: config.max_concurrent_batches,
    };
    let senders = config.auth.senders().map_err(ServeError::Auth)?;
    // One check for every ingest route: the OTLP listeners and, on the
    // API listener, remote write and log push.
    let sender_check =
        axum::middleware::from_fn_with_state(senders.clone(), keel_auth::senders::require_sender);
    let (api_tls, ingest_tls) = tls(config, &clock)?;
    let otlp_listener = bind(&config.host, config.otlp_http_port).await?;
    let grpc_listener = bind(&config.host, config.otlp_grpc_port).await?;
    let otlp_grpc = grpc_listener
        .local_addr()
        .map_err(|source| ServeError::Bind {
            addr: "grpc".into(),
            source,
        })?;
    let workers =
        keel_http::workers::Workers::per_core("keel-ingest").map_err(ServeError::Workers)?;
    let grpc = crate::ingest::grpc::routes(
        store.clone(),
        &limits,
        stats.clone(),
        workers.clone(),
        telemetry.clone(),
    )
    .layer(sender_check.clone());
    spawn_listener(grpc_listener, grpc, ingest_tls.clone(), "OTLP/gRPC");
    let api_listener = bind(&config.host, config.api_port).await?;
    let (otlp_http, api) = (
        otlp_listener
            .local_addr()
            .map_err(|source| ServeError::Bind {
                addr: "otlp".into(),
                source,
            })?,
        api_listener
            .local_addr()
            .map_err(|source| ServeError::Bind {
                addr: "api".into(),
                source,
            })?,
    );
    let otlp_on_api = crate::ingest::http::prometheus_path(
        store.clone(),
        limits.clone(),
        stats.clone(),
        workers.clone(),
        telemetry.clone(),
    );
    let ingest = crate::ingest::http::routes(
        store.clone(),
        limits.clone(),
        stats.clone(),
        workers.clone(),
        telemetry,
    )
    .layer(sender_check.clone());
    let library = keel_dashboards::Library::open(&dashboards_dir);
    library.watch(clock.clone(), std::time::Duration::from_secs(2));
    let gate = keel_promql::QueryGate::new(config.query.clone());
    let dashboards = keel_dashboards::api::DashboardApi {
        library,
        gate: gate.clone(),
        store: store.clone(),
        logs: logs.clone(),
        state: state.as_ref().map(|(s, _)| s.clone()),
        clock: clock.clone(),
    };
    let log_routes = keel_logindex::logs::api::routes(
        logs.clone(),
        clock.clone(),
        workers.clone(),
        config.max_body_bytes,
        config.limits.records(),
    );
    let access = keel_auth::Access::new(
        &config.auth,
        state
            .as_ref()
            .map(|(s, _)| keel_auth::Directory::new(s.clone())),
        clock.clone(),
        crate::access::need,
    )
    .map_err(ServeError::Auth)?;
    if api_tls.is_some() {
        access.serving_tls();
    }
    // Every route people use goes through one guard (a route_layer, so
    // it sees each route's pattern): Host, Origin, who, role, audit.
    let people = crate::api::routes(
        store.clone(),
        clock.clone(),
        gate.clone(),
        older,
        forwarding.clone(),
    )
    .merge(crate::own_metrics::routes(crate::own_metrics::Own {
        notifier: notifier.clone(),
        gate,
        stats: stats.clone(),
        store: store.clone(),
        senders: senders.clone(),
        forward: forwarding.clone(),
        rules: rules.clone(),
    }))
    .merge(crate::read_out::routes(crate::read_out::ReadOut {
        store: store.clone(),
        clock: clock.clone(),
        external_labels: Arc::new(config.rules.external_labels.clone()),
        max_samples: config.query.max_samples,
        max_decoded: config.max_decoded_bytes,
    }))
    .merge(crate::exemplars_api::routes(store.clone()))
    .merge(crate::status_api::routes(crate::status_api::Status {
        store: store.clone(),
        rules: rules.clone(),
        config: Arc::new(
            keel_core::secret::shown(config)
                .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() })),
        ),
        flags: Arc::new(config.prometheus_flags(api)),
        started_ms: clock.now_ms(),
        data_dir: config.data_dir.display().to_string(),
        clock: clock.clone(),
    }))
    .merge(keel_dashboards::api::routes(dashboards))
    .merge(keel_dashboards::assets::routes())
    .merge(log_routes.read)
    .merge(keel_logindex::traces::api::routes(
        spans.clone(),
        logs.clone(),
        clock.clone(),
    ))
    .merge(keel_alerting::rules::api::routes(rules.clone()))
    .merge(keel_incident::api::routes(incidents.clone()))
    .merge(keel_alerting::notify::api::routes(notifier.clone()))
    .merge(keel_alerting::notify::am_api::routes(notifier.clone()))
    .merge(keel_alerting::rules::api::history_routes(
        state.as_ref().map(|(s, _)| s.clone()),
        clock.clone(),
    ))
    .merge(keel_auth::api::routes(access.clone()))
    .merge(crate::ha::routes(leading.clone()))
    .map(|r| {
        r.route_layer(axum::middleware::from_fn_with_state(
            leading.clone(),
            crate::ha::followers_refuse_changes,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            access.clone(),
            keel_auth::access::guard,
        ))
    });
    // Remote write and log push are ingest: they take a sender token as
    // OTLP does, not a person's login.
    let ingest_api = crate::ingest::remote_write::routes(
        store.clone(),
        config.max_body_bytes,
        config.max_decoded_bytes,
        workers.clone(),
        stats.clone(),
        clock.clone(),
    )
    .merge(log_routes.push)
    .merge(otlp_on_api)
    .map(|r| r.route_layer(sender_check));
    let people_routes = people.paths().to_vec();
    let ingest_routes = ingest_api.paths().to_vec();
    let api_routes: axum::Router = people
        .merge(ingest_api)
        // JSON gzipped for clients that accept it, as Prometheus does
        // (Grafana's range queries and the pages' panels are mostly
        // repetition); the pages' files come compressed already.
        .map(|r| r.layer(axum::middleware::from_fn(keel_http::gzip::json)))
        .into();
    spawn_listener(otlp_listener, ingest, ingest_tls, "OTLP/HTTP");
    // The peer's address: whether a proxy's SSO header is believed.
    spawn_listener(api_listener, api_routes, api_tls.clone(), "API");
    tracing::info!(%otlp_http, %otlp_grpc, %api, "collector listening");
    Ok(Running {
        otlp_http,
        otlp_grpc,
        api,
        store,
        logs,
        spans,
        stats,
        rules,
        notifier,
        marks,
        incidents,
        state,
        leading: leading.clone(),
        people_routes,
        ingest_routes,
        access,
        api_tls,
    })
}

/// Hourly: delete alert history older than the first retention, and
/// notifications finished before the second (in memory and saved).
fn prune(
    st: Option<Arc<keel_state::StateStore>>,
    notifier: Arc<keel_alerting::notify::Notifier>,
    (history, notifications): (std::time::Duration, std::time::Duration),
    clock: SharedClock,
) {
    tokio::spawn(async move {
        loop {
            let now = clock.now_ms();
            // The audit of people's changes is kept as long as the alert
            // history it explains.
            let before = now.saturating_sub(i64::try_from(history.as_millis()).unwrap_or(i64::MAX));
            if let Some(st) = &st {
                if let Err(e) = st.prune_history(before).await {
                    tracing::error!(error = %e, "pruning alert history failed");
                }
                if let Err(e) = st.prune_documents(keel_state::Table::Audit, before).await {
                    tracing::error!(error = %e, "pruning the audit failed");
                }
            }
            let keep = i64::try_from(notifications.as_millis()).unwrap_or(i64::MAX);
            let gone = notifier.prune(now.saturating_sub(keep));
            if gone > 0 {
                tracing::info!(
                    notifications = gone,
                    "notifications past their retention forgotten"
                );
            }
            let gone = notifier.prune_silences(now);
            if gone > 0 {
                tracing::info!(silences = gone, "silences ended over 120 h ago forgotten");
            }
            clock.sleep(std::time::Duration::from_secs(3600)).await;
        }
    });
}
