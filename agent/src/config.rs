//! The `agent` section of `keel.yaml`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use keel_core::config::Validate;
use serde::{Deserialize, Serialize};

/// Everything the agent does, and where it sends it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// The collector's OTLP/HTTP base URL (`/v1/metrics` etc. appended).
    pub collector: String,
    /// Or several collectors (a highly available pair): every batch goes
    /// to each, each with its own disk buffer (non-empty: replaces
    /// `collector`).
    pub collectors: Vec<String>,
    /// TLS for an `https://` collector: a CA bundle trusted besides the
    /// system's.
    pub collector_tls: keel_tls::TlsConfig,
    /// The sender token the collector requires (`collector.auth.senders`),
    /// sent as `Authorization: Bearer …` with every batch ("": none).
    pub collector_token: keel_core::secret::Secret,
    /// Or a file whose first line is that token.
    pub collector_token_file: PathBuf,
    /// This host's name, sent as the `host.name` resource attribute
    /// (empty: the machine's hostname).
    pub hostname: String,
    /// Where the disk buffer lives.
    pub data_dir: PathBuf,
    /// Address of the agent's own `/metrics` and `/status` (port 0: any
    /// free), and of the failover role's endpoints.
    pub listen: String,
    /// TLS on `listen` (certificate reloaded when its files change);
    /// `client_ca_file`: callers (the controller) must present a
    /// certificate it signed.
    pub tls: keel_tls::server::ServerTlsConfig,
    /// Listen on an address other machines reach without TLS: must be
    /// said in so many words.
    pub insecure: bool,
    /// Address of the local OTLP/HTTP receiver apps on this host export
    /// to (empty: none).
    pub otlp_receiver: String,
    /// The on-disk buffer of unsent batches.
    pub buffer: BufferConfig,
    /// Retries of a batch the collector did not take.
    pub retry: RetryConfig,
    /// Prometheus endpoints to scrape.
    pub scrape: Vec<ScrapeJob>,
    /// This host's own metrics, from /proc, under node_exporter's names.
    pub host_metrics: HostMetricsConfig,
    /// Log files to tail.
    pub logs: Vec<LogSource>,
    /// How often tailed files are checked for new lines and new files.
    #[serde(with = "keel_core::duration")]
    pub log_poll_interval: Duration,
    /// The failover role on a PostgreSQL host (none: not one).
    pub failover: Option<crate::pgrole::PgRoleConfig>,
}

/// Host metrics (`job="node"`, `instance` = the hostname).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostMetricsConfig {
    /// Collect them.
    pub enabled: bool,
    /// How often.
    #[serde(with = "keel_core::duration")]
    pub interval: Duration,
    /// Mount points left out (a regex; node_exporter's
    /// `--collector.filesystem.mount-points-exclude`, Debian's default).
    pub mount_points_exclude: String,
    /// Filesystem types left out (`--collector.filesystem.fs-types-exclude`).
    pub fs_types_exclude: String,
    /// Block devices left out (`--collector.diskstats.device-exclude`).
    pub diskstats_device_exclude: String,
    /// Network devices left out of the counters
    /// (`--collector.netdev.device-exclude`).
    pub netdev_device_exclude: String,
}

impl Default for HostMetricsConfig {
    fn default() -> Self {
        let e = crate::host::Exclusions::DEFAULT;
        Self {
            enabled: true,
            interval: Duration::from_secs(10),
            mount_points_exclude: e[0].to_owned(),
            fs_types_exclude: e[1].to_owned(),
            diskstats_device_exclude: e[2].to_owned(),
            netdev_device_exclude: e[3].to_owned(),
        }
    }
}

/// Log files to tail.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSource {
    /// A glob (`/var/log/app/*.log`); files that appear later are picked up.
    pub path: String,
    /// `service.name` of the records (empty: a JSON line's own `service`
    /// field, else the file's name up to its first dot: `web-1.log.2` is
    /// `web-1`).
    #[serde(default)]
    pub service: String,
    /// A regex: a line that does not match it continues the record before
    /// it (stack traces); none: every line is a record.
    #[serde(default)]
    pub multiline_start: Option<String>,
    /// Log-to-metrics rules over this source's records (RED series from
    /// access logs; see [`LogMetricsRule`]).
    #[serde(default)]
    pub metrics: Vec<LogMetricsRule>,
}

/// A log-to-metrics rule: request rate, errors and a duration histogram
/// from access log records, as `<name>_requests_total{code}`,
/// `<name>_errors_total` and `<name>_request_duration_seconds`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogMetricsRule {
    /// The series' name prefix (a metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`).
    pub name: String,
    /// A regex whose named groups are the fields (`(?P<status>\d{3})`),
    /// matched against each raw line; none: a JSON line's own fields
    /// (nested ones by dotted path, `http.status`).
    #[serde(default)]
    pub regex: Option<String>,
    /// A regex a raw line must match for the rule to read it (like Loki's
    /// `|~` line filter): other lines are skipped, not counted as
    /// unmatched. None: every line.
    #[serde(default)]
    pub filter: Option<String>,
    /// The field (or group) with the HTTP status code.
    #[serde(default = "default_status_field")]
    pub status_field: String,
    /// The field (or group) with the request's duration; none: no histogram.
    #[serde(default)]
    pub duration_field: Option<String>,
    /// The duration's unit: `s`, `ms`, `us` or `ns`.
    #[serde(default)]
    pub duration_unit: DurationUnit,
    /// A status at or above this is an error.
    #[serde(default = "default_error_status")]
    pub error_status: u16,
    /// Fields (or groups) that become labels of the same name (keep them
    /// low-cardinality: a method or a route, never a raw path or a user).
    /// `instance` may be one (else it is this host's name).
    #[serde(default)]
    pub labels: Vec<String>,
    /// The histogram's bucket upper bounds in seconds, increasing
    /// (default: OpenTelemetry's for `http.server.request.duration`).
    #[serde(default = "LogMetricsRule::default_buckets")]
    pub buckets: Vec<f64>,
    /// How often the series are sent.
    #[serde(default = "default_log_metrics_interval", with = "keel_core::duration")]
    pub interval: Duration,
}

/// The unit of a log's duration field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurationUnit {
    /// Seconds.
    #[default]
    S,
    /// Milliseconds.
    Ms,
    /// Microseconds.
    Us,
    /// Nanoseconds.
    Ns,
}

fn default_status_field() -> String {
    "status".into()
}

fn default_error_status() -> u16 {
    500
}

impl LogMetricsRule {
    /// OpenTelemetry's buckets for `http.server.request.duration`, seconds.
    pub fn default_buckets() -> Vec<f64> {
        vec![
            0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
        ]
    }
}

fn default_log_metrics_interval() -> Duration {
    Duration::from_secs(10)
}

/// Problems with one log-to-metrics rule at `at`.
fn validate_log_metrics(at: &str, r: &LogMetricsRule, problems: &mut Vec<String>) {
    if !keel_core::names::is_metric_name(&r.name) {
        problems.push(format!("{at}.name: {:?} is not a metric name", r.name));
    }
    if let Some(p) = &r.regex {
        match regex::Regex::new(p) {
            Err(e) => problems.push(format!("{at}.regex: {e}")),
            Ok(re) => {
                let groups: Vec<&str> = re.capture_names().flatten().collect();
                let wanted = std::iter::once(&r.status_field)
                    .chain(&r.duration_field)
                    .chain(&r.labels);
                for f in wanted.filter(|f| !groups.contains(&f.as_str())) {
                    problems.push(format!(
                        "{at}.regex: has no group named {f:?} (write (?P<{f}>…))"
                    ));
                }
            }
        }
    }
    if let Some(Err(e)) = r.filter.as_deref().map(regex::Regex::new) {
        problems.push(format!("{at}.filter: {e}"));
    }
    for (i, l) in r.labels.iter().enumerate() {
        if !valid_label_name(l) || l.starts_with("__") {
            problems.push(format!("{at}.labels[{i}]: {l:?} is not a label name"));
        } else if ["job", "code", "le"].contains(&l.as_str()) {
            problems.push(format!(
                "{at}.labels[{i}]: {l:?} is a label the rule sets itself"
            ));
        }
    }
    if r.buckets.is_empty()
        || r.buckets.iter().any(|b| !b.is_finite() || *b <= 0.0)
        || r.buckets.windows(2).any(|w| w[0] >= w[1])
    {
        problems.push(format!(
            "{at}.buckets: must be positive, finite and increasing"
        ));
    }
    if r.interval.is_zero() {
        problems.push(format!("{at}.interval: must be positive"));
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            collector: "http://127.0.0.1:4318".into(),
            collectors: Vec::new(),
            collector_tls: keel_tls::TlsConfig::default(),
            collector_token: keel_core::secret::Secret::default(),
            collector_token_file: PathBuf::new(),
            hostname: String::new(),
            data_dir: PathBuf::from("keel-data/agent"),
            listen: "127.0.0.1:9465".into(),
            tls: Default::default(),
            insecure: false,
            otlp_receiver: "127.0.0.1:4319".into(),
            buffer: BufferConfig::default(),
            retry: RetryConfig::default(),
            scrape: Vec::new(),
            host_metrics: HostMetricsConfig::default(),
            logs: Vec::new(),
            log_poll_interval: Duration::from_millis(500),
            failover: None,
        }
    }
}

/// The on-disk buffer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BufferConfig {
    /// Most bytes of unsent batches kept; past it the oldest are dropped
    /// (and counted as dropped).
    pub max_bytes: u64,
    /// Sync each batch to disk before it counts as buffered (off: a power
    /// loss can lose the last batches; a crash of the agent cannot).
    pub fsync: bool,
    /// While a backlog drains, every other send is the newest batch, so
    /// fresh data keeps flowing; a metrics batch goes ahead only while
    /// the oldest unsent metrics are at most this much older. Keep it
    /// under the collector's `out_of_order_window` (10m), or the older
    /// samples sent after it would be rejected.
    #[serde(with = "keel_core::duration")]
    pub metrics_reorder_window: Duration,
}

impl Default for BufferConfig {
    fn default() -> Self {
        Self {
            max_bytes: 256 << 20,
            fsync: false,
            metrics_reorder_window: Duration::from_secs(300),
        }
    }
}

/// Backoff between attempts at one batch: doubles from `initial` up to
/// `max`, each wait jittered to between half and all of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// First wait after a failure.
    #[serde(with = "keel_core::duration")]
    pub initial: Duration,
    /// Longest wait (a `Retry-After` from the collector may be longer).
    #[serde(with = "keel_core::duration")]
    pub max: Duration,
    /// How long one request may take.
    #[serde(with = "keel_core::duration")]
    pub timeout: Duration,
}

impl RetryConfig {
    /// Its problems, named at `at`.
    pub fn validate(&self, at: &str, problems: &mut Vec<String>) {
        if self.initial.is_zero() || self.max < self.initial {
            problems.push(format!("{at}: initial must be positive and at most max"));
        }
        if self.timeout.is_zero() {
            problems.push(format!("{at}.timeout: must be positive"));
        }
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
        }
    }
}

/// One scrape job: targets scraped alike.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeJob {
    /// The `job` label of every series scraped.
    pub job: String,
    /// URLs of the targets' metrics endpoints.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Prometheus `file_sd` files (globs) listing more targets: JSON or
    /// YAML target groups, `[{"targets": ["host:port"], "labels": {…}}]`,
    /// re-read every `refresh_interval`. A group's `job` label names the
    /// job of its targets, `__metrics_path__` and `__scheme__` shape the
    /// URL (`/metrics`, `http`), other labels are target labels.
    #[serde(default)]
    pub file_sd: Vec<String>,
    /// How often `file_sd` files are re-read.
    #[serde(with = "keel_core::duration", default = "default_refresh_interval")]
    pub refresh_interval: Duration,
    /// How often each target is scraped.
    #[serde(with = "keel_core::duration", default = "default_interval")]
    pub interval: Duration,
    /// How long a scrape may take before the target counts as down.
    #[serde(with = "keel_core::duration", default = "default_timeout")]
    pub timeout: Duration,
    /// Keep the target's own `job`/`instance`/... labels on a collision
    /// (otherwise they are kept as `exported_<name>`), as in Prometheus.
    #[serde(default)]
    pub honor_labels: bool,
    /// Extra labels on every series of the job.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// TLS for `https` targets: a CA bundle trusted besides the system's.
    #[serde(default)]
    pub tls_config: keel_tls::TlsConfig,
    /// Ingest native histograms, as Prometheus'
    /// `scrape_native_histograms`: the protobuf format is asked for first
    /// and a histogram that carries native buckets is stored as one
    /// native histogram series (its classic `_bucket` series are not).
    #[serde(default)]
    pub scrape_native_histograms: bool,
    /// The formats asked for, most wanted first (Prometheus'
    /// `scrape_protocols`). Empty: `PrometheusProto` first when
    /// `scrape_native_histograms` is on, then the text formats.
    #[serde(default)]
    pub scrape_protocols: Vec<ScrapeProtocol>,
    /// Store a histogram's classic buckets besides its native ones (or
    /// besides its custom-bucket conversion).
    #[serde(default)]
    pub always_scrape_classic_histograms: bool,
    /// Store each classic histogram (`_bucket{le}`, `_count`, `_sum` of
    /// a `histogram` family) as one native histogram with custom buckets
    /// under the family's name, as Prometheus'
    /// `convert_classic_histograms_to_nhcb`.
    #[serde(default)]
    pub convert_classic_histograms_to_nhcb: bool,
    /// At most this many buckets a native histogram: its resolution is
    /// halved until it fits (0: no limit).
    #[serde(default)]
    pub native_histogram_bucket_limit: u32,
    /// Native histograms' resolution lowered until each bucket is at
    /// least this factor wider than the one before (0: no limit).
    #[serde(default)]
    pub native_histogram_min_bucket_factor: f64,
    /// A scrape whose body is larger than this many bytes fails (`up`
    /// 0), as Prometheus' `body_size_limit` (0: no limit).
    #[serde(default)]
    pub body_size_limit: u64,
    /// A scrape with more samples than this fails, none of its samples
    /// stored, as Prometheus' `sample_limit` (0: no limit).
    #[serde(default)]
    pub sample_limit: usize,
}

/// A scrape format, by Prometheus' `scrape_protocols` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ScrapeProtocol {
    /// Prometheus' protobuf format: the one that carries native histograms.
    PrometheusProto,
    /// OpenMetrics 1.0.0 text.
    #[serde(rename = "OpenMetricsText1.0.0")]
    OpenMetricsText1_0_0,
    /// OpenMetrics 0.0.1 text.
    #[serde(rename = "OpenMetricsText0.0.1")]
    OpenMetricsText0_0_1,
    /// Prometheus' text format 1.0.0.
    #[serde(rename = "PrometheusText1.0.0")]
    PrometheusText1_0_0,
    /// Prometheus' text format 0.0.4.
    #[serde(rename = "PrometheusText0.0.4")]
    PrometheusText0_0_4,
}

impl ScrapeProtocol {
    /// Every protocol.
    pub const ALL: [ScrapeProtocol; 5] = [
        ScrapeProtocol::PrometheusProto,
        ScrapeProtocol::OpenMetricsText1_0_0,
        ScrapeProtocol::OpenMetricsText0_0_1,
        ScrapeProtocol::PrometheusText1_0_0,
        ScrapeProtocol::PrometheusText0_0_4,
    ];

    /// Its name in a config (Prometheus' name).
    pub fn name(self) -> &'static str {
        match self {
            Self::PrometheusProto => "PrometheusProto",
            Self::OpenMetricsText1_0_0 => "OpenMetricsText1.0.0",
            Self::OpenMetricsText0_0_1 => "OpenMetricsText0.0.1",
            Self::PrometheusText1_0_0 => "PrometheusText1.0.0",
            Self::PrometheusText0_0_4 => "PrometheusText0.0.4",
        }
    }

    /// Its media type, as an Accept header names it.
    pub fn media_type(self) -> &'static str {
        match self {
            Self::PrometheusProto => {
                "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited"
            }
            Self::OpenMetricsText1_0_0 => "application/openmetrics-text;version=1.0.0",
            Self::OpenMetricsText0_0_1 => "application/openmetrics-text;version=0.0.1",
            Self::PrometheusText1_0_0 => "text/plain;version=1.0.0",
            Self::PrometheusText0_0_4 => "text/plain;version=0.0.4",
        }
    }
}

impl ScrapeJob {
    /// The formats this job asks for, most wanted first: its own list, or
    /// Prometheus' default (protobuf first when it scrapes native
    /// histograms).
    pub fn protocols(&self) -> Vec<ScrapeProtocol> {
        use ScrapeProtocol::*;
        if !self.scrape_protocols.is_empty() {
            return self.scrape_protocols.clone();
        }
        let text = [
            OpenMetricsText1_0_0,
            OpenMetricsText0_0_1,
            PrometheusText0_0_4,
        ];
        if self.scrape_native_histograms {
            std::iter::once(PrometheusProto).chain(text).collect()
        } else {
            text.to_vec()
        }
    }

    /// The Accept header of this job's scrapes, weighted as Prometheus
    /// weighs `scrape_protocols`, anything else last.
    pub fn accept(&self) -> String {
        let mut weight = ScrapeProtocol::ALL.len() + 1;
        let mut parts = Vec::new();
        for p in self.protocols() {
            parts.push(format!("{};q=0.{weight}", p.media_type()));
            weight = weight.saturating_sub(1).max(1);
        }
        parts.push(format!("*/*;q=0.{weight}"));
        parts.join(",")
    }

    /// This job's limits on one scrape.
    pub fn scrape_limits(&self) -> crate::scrape::Limits {
        crate::scrape::Limits {
            body_size: self.body_size_limit,
            samples: self.sample_limit,
        }
    }

    /// How this job reads native histograms.
    pub fn native_histograms(&self) -> crate::exposition::NativeHistograms {
        crate::exposition::NativeHistograms {
            enabled: self.scrape_native_histograms,
            always_classic: self.always_scrape_classic_histograms,
            convert_classic: self.convert_classic_histograms_to_nhcb,
            bucket_limit: self.native_histogram_bucket_limit,
            min_bucket_factor: self.native_histogram_min_bucket_factor,
        }
    }
}

impl Default for ScrapeJob {
    fn default() -> Self {
        Self {
            job: String::new(),
            targets: Vec::new(),
            file_sd: Vec::new(),
            refresh_interval: default_refresh_interval(),
            interval: default_interval(),
            timeout: default_timeout(),
            honor_labels: false,
            labels: BTreeMap::new(),
            tls_config: keel_tls::TlsConfig::default(),
            scrape_native_histograms: false,
            scrape_protocols: Vec::new(),
            always_scrape_classic_histograms: false,
            convert_classic_histograms_to_nhcb: false,
            native_histogram_bucket_limit: 0,
            native_histogram_min_bucket_factor: 0.0,
            body_size_limit: 0,
            sample_limit: 0,
        }
    }
}

fn default_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_refresh_interval() -> Duration {
    Duration::from_secs(5)
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

use keel_core::names::is_label_name as valid_label_name;

impl Validate for AgentConfig {
    fn validate(&self, problems: &mut Vec<String>) {
        let is_url = |u: &str| u.starts_with("http://") || u.starts_with("https://");
        if !is_url(&self.collector) {
            problems.push(format!(
                "agent.collector: {:?} is not an http:// or https:// URL",
                self.collector
            ));
        }
        for (at, url) in std::iter::once(("agent.collector".to_owned(), &self.collector)).chain(
            self.collectors
                .iter()
                .enumerate()
                .map(|(i, u)| (format!("agent.collectors[{i}]"), u)),
        ) {
            if keel_core::secret::url_has_credentials(url) {
                problems.push(format!(
                    "{at}: credentials in the URL would be shown in metrics and status; use agent.collector_token"
                ));
            }
        }
        if !self.collectors.is_empty() && self.collector != AgentConfig::default().collector {
            problems
                .push("agent.collectors: set agent.collector or agent.collectors, not both".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, url) in self.collectors.iter().enumerate() {
            if !is_url(url) {
                problems.push(format!(
                    "agent.collectors[{i}]: {url:?} is not an http:// or https:// URL"
                ));
            } else if !seen.insert(url.trim_end_matches('/')) {
                problems.push(format!(
                    "agent.collectors[{i}]: {url:?} is listed twice (each batch would go to it twice)"
                ));
            }
        }
        self.collector_tls.validate("agent.collector_tls", problems);
        self.tls.validate("agent.tls", problems);
        if let Err(e) = self.collector_token() {
            problems.push(e);
        }
        match self.listen.parse::<std::net::SocketAddr>() {
            Err(_) => problems.push(format!(
                "agent.listen: {:?} is not an address such as 127.0.0.1:9465",
                self.listen
            )),
            // Safe by default: the failover role's actions stop, start and
            // promote PostgreSQL, and cleartext needs saying so.
            Ok(a) if !a.ip().is_loopback() => {
                if let Some(f) = &self.failover
                    && matches!(f.token(), Ok(None))
                {
                    problems.push(format!(
                        "agent.failover.token: agent.listen {} is reachable from other machines, \
                         so the failover actions need a token (and the controller's \
                         controller.failover[].agent_token the same)",
                        self.listen
                    ));
                }
                if !self.insecure && !self.tls.enabled() {
                    problems.push(format!(
                        "agent.listen: {} is reachable from other machines, which needs agent.tls \
                         (cert_file, key_file): listen on 127.0.0.1, or set agent.insecure: true \
                         to accept that",
                        self.listen
                    ));
                }
            }
            Ok(_) => {}
        }
        // The local receiver is plain HTTP and forwards with the agent's
        // own token and certificate: for this host's apps only.
        if let Ok(a) = self.otlp_receiver.parse::<std::net::SocketAddr>()
            && !a.ip().is_loopback()
            && !self.insecure
        {
            problems.push(format!(
                "agent.otlp_receiver: {} is reachable from other machines, and anything sent \
                 there goes on with this agent's token: listen on 127.0.0.1, or set \
                 agent.insecure: true to accept that",
                self.otlp_receiver
            ));
        }
        if !self.otlp_receiver.is_empty()
            && self.otlp_receiver.parse::<std::net::SocketAddr>().is_err()
        {
            problems.push(format!(
                "agent.otlp_receiver: {:?} is not an address such as 127.0.0.1:4319 (or \"\" for none)",
                self.otlp_receiver
            ));
        }
        if self.buffer.max_bytes < 1 << 20 {
            problems.push("agent.buffer.max_bytes: must be at least 1048576 (1 MiB)".into());
        }
        self.retry.validate("agent.retry", problems);
        if let Some(f) = &self.failover {
            f.validate(problems);
        }
        for (i, l) in self.logs.iter().enumerate() {
            let at = format!("agent.logs[{i}]");
            if let Err(e) = glob::Pattern::new(&l.path) {
                problems.push(format!("{at}.path: {:?} is not a glob: {e}", l.path));
            }
            if let Some(p) = &l.multiline_start
                && let Err(e) = regex::Regex::new(p)
            {
                problems.push(format!("{at}.multiline_start: {e}"));
            }
            for (j, r) in l.metrics.iter().enumerate() {
                validate_log_metrics(&format!("{at}.metrics[{j}]"), r, problems);
            }
        }
        if let Err(e) = crate::host::Exclusions::new(&self.host_metrics) {
            problems.push(e);
        }
        if self.host_metrics.interval.is_zero() {
            problems.push("agent.host_metrics.interval: must be positive".into());
        }
        if self.log_poll_interval.is_zero() {
            problems.push("agent.log_poll_interval: must be positive".into());
        }
        let mut jobs = std::collections::HashSet::new();
        for (i, j) in self.scrape.iter().enumerate() {
            let at = format!("agent.scrape[{i}]");
            if j.job.is_empty() {
                problems.push(format!("{at}.job: must not be empty"));
            } else if !jobs.insert(&j.job) {
                problems.push(format!("{at}.job: {:?} is used twice", j.job));
            }
            j.tls_config.validate(&format!("{at}.tls_config"), problems);
            if j.targets.is_empty() && j.file_sd.is_empty() {
                problems.push(format!(
                    "{at}.targets: list at least one URL (or file_sd files)"
                ));
            }
            for (k, f) in j.file_sd.iter().enumerate() {
                if let Err(e) = glob::Pattern::new(f) {
                    problems.push(format!("{at}.file_sd[{k}]: {f:?} is not a glob: {e}"));
                }
            }
            if j.refresh_interval.is_zero() {
                problems.push(format!("{at}.refresh_interval: must be positive"));
            }
            for (k, t) in j.targets.iter().enumerate() {
                if reqwest::Url::parse(t).map_or(true, |u| !u.scheme().starts_with("http")) {
                    problems.push(format!("{at}.targets[{k}]: {t:?} is not an http(s) URL"));
                }
            }
            if j.interval.is_zero() {
                problems.push(format!("{at}.interval: must be positive"));
            }
            if j.timeout.is_zero() || j.timeout > j.interval {
                problems.push(format!(
                    "{at}.timeout: must be positive and at most the interval ({})",
                    keel_core::duration::format(j.interval)
                ));
            }
            for name in j.labels.keys() {
                if !valid_label_name(name) {
                    problems.push(format!("{at}.labels: {name:?} is not a valid label name"));
                }
            }
            let mut seen = std::collections::HashSet::new();
            for (k, p) in j.scrape_protocols.iter().enumerate() {
                if !seen.insert(p) {
                    problems.push(format!(
                        "{at}.scrape_protocols[{k}]: {} is listed twice",
                        p.name()
                    ));
                }
            }
            if j.scrape_native_histograms
                && !j.protocols().contains(&ScrapeProtocol::PrometheusProto)
            {
                problems.push(format!(
                    "{at}.scrape_protocols: scrape_native_histograms is on but PrometheusProto, the only format that carries them, is not listed"
                ));
            }
            let f = j.native_histogram_min_bucket_factor;
            if !(f == 0.0 || f >= 1.0 && f.is_finite()) {
                problems.push(format!(
                    "{at}.native_histogram_min_bucket_factor: {f} must be 0 (no limit) or at least 1"
                ));
            }
        }
    }
}

impl AgentConfig {
    /// The collectors to ship to: `collectors`, else `collector`.
    pub fn collector_urls(&self) -> Vec<String> {
        if self.collectors.is_empty() {
            vec![self.collector.clone()]
        } else {
            self.collectors.clone()
        }
    }

    /// The sender token to present, if any: `collector_token` or the
    /// first line of `collector_token_file` (not both).
    pub fn collector_token(&self) -> Result<Option<String>, String> {
        self.collector_token
            .token_or_file(&self.collector_token_file, "collector_token")
            .map_err(|e| format!("agent.{e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_reported_at_once_with_its_line() {
        let yaml = "collector: localhost:4318\nscrape:\n  - job: web\n    targets: [\"ftp://x\"]\n    interval: 5s\n    timeout: 10s\n  - job: web\n    targets: []\n    labels: {\"bad-name\": x}\n";
        let c: AgentConfig = keel_core::config::parse_yaml("agent.yaml", yaml).expect("parses");
        let err = c.check("agent.yaml").expect_err("invalid").to_string();
        for want in [
            "agent.collector",
            "agent.scrape[0].targets[0]",
            "agent.scrape[0].timeout",
            "agent.scrape[1].job: \"web\" is used twice",
            "agent.scrape[1].targets: list at least one URL",
            "\"bad-name\" is not a valid label name",
        ] {
            assert!(err.contains(want), "{want} missing from {err}");
        }
        let unknown = keel_core::config::parse_yaml::<AgentConfig>(
            "agent.yaml",
            "collector: http://x\nscrape:\n  - job: a\n    targets: [http://h/metrics]\n    intervl: 5s\n",
        )
        .expect_err("unknown key");
        let msg = unknown.to_string();
        assert!(
            msg.contains("agent.yaml:5") && msg.contains("intervl"),
            "{msg}"
        );
    }

    #[test]
    fn native_histogram_scrapes_ask_for_protobuf_first_and_bad_options_are_named() {
        let yaml = "collector: http://c:4318\nscrape:\n  - job: a\n    targets: [http://h/metrics]\n    scrape_native_histograms: true\n  - job: b\n    targets: [http://h/metrics]\n    scrape_native_histograms: true\n    scrape_protocols: [OpenMetricsText1.0.0, PrometheusText0.0.4, OpenMetricsText1.0.0]\n    native_histogram_min_bucket_factor: 0.5\n";
        let c: AgentConfig = keel_core::config::parse_yaml("agent.yaml", yaml).expect("parses");
        assert_eq!(
            c.scrape[0].accept(),
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.6,\
             application/openmetrics-text;version=1.0.0;q=0.5,\
             application/openmetrics-text;version=0.0.1;q=0.4,\
             text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
        );
        assert!(
            ScrapeJob::default()
                .accept()
                .starts_with("application/openmetrics-text;version=1.0.0;q=0.6,"),
            "text first without native histograms"
        );
        assert!(c.scrape[0].native_histograms().enabled);
        let err = c.check("agent.yaml").expect_err("invalid").to_string();
        for want in [
            "agent.scrape[1].scrape_protocols[2]: OpenMetricsText1.0.0 is listed twice",
            "agent.scrape[1].scrape_protocols: scrape_native_histograms is on but PrometheusProto",
            "agent.scrape[1].native_histogram_min_bucket_factor: 0.5 must be 0",
        ] {
            assert!(err.contains(want), "{want} missing from {err}");
        }
        assert!(!err.contains("agent.scrape[0]"), "{err}");
        let unknown = keel_core::config::parse_yaml::<AgentConfig>(
            "agent.yaml",
            "collector: http://x\nscrape:\n  - job: a\n    targets: [http://h/metrics]\n    scrape_protocols: [PrometheusProtobuf]\n",
        )
        .expect_err("unknown protocol");
        let msg = unknown.to_string();
        assert!(
            msg.contains("agent.yaml:5") && msg.contains("PrometheusProtobuf"),
            "{msg}"
        );
    }

    #[test]
    fn the_sender_token_comes_from_the_config_or_its_file_never_both() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("token");
        std::fs::write(&file, "from-the-file\nignored\n").expect("write");
        let mut c = AgentConfig::default();
        assert_eq!(c.collector_token(), Ok(None));
        c.collector_token_file = file.clone();
        assert_eq!(c.collector_token(), Ok(Some("from-the-file".into())));
        c.collector_token = keel_core::secret::Secret::new("inline");
        assert!(c.collector_token().expect_err("both").contains("not both"));
        c.collector_token_file = PathBuf::new();
        assert_eq!(c.collector_token(), Ok(Some("inline".into())));
        c.collector_token_file = dir.path().join("missing");
        c.collector_token = keel_core::secret::Secret::default();
        let err = c.check("agent.yaml").expect_err("unreadable").to_string();
        assert!(
            err.contains("agent.collector_token_file: cannot read"),
            "{err}"
        );
        // `keel config` and logs never show it.
        c.collector_token = keel_core::secret::Secret::new("inline");
        let json = keel_core::secret::redacted(|| serde_json::to_string(&c)).expect("json");
        assert!(
            !json.contains("inline") && json.contains("<redacted>"),
            "{json}"
        );
    }

    #[test]
    fn a_listen_address_others_reach_needs_insecure_and_a_failover_token() {
        let mut c = AgentConfig {
            listen: "0.0.0.0:9465".into(),
            ..AgentConfig::default()
        };
        let mut problems = Vec::new();
        c.validate(&mut problems);
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("agent.listen: 0.0.0.0:9465 is reachable")
                    && p.contains("agent.insecure: true")),
            "{problems:?}"
        );
        c.insecure = true;
        let role = |token: &str| crate::pgrole::PgRoleConfig {
            member: "pg-1".into(),
            data_directory: "/var/lib/postgresql/15/main".into(),
            bin_directory: "/".into(),
            config_file: None,
            port: 5432,
            host: "127.0.0.1".into(),
            user: "postgres".into(),
            run_as: String::new(),
            log_file: None,
            start: crate::pgrole::StartPolicy::Never,
            token: keel_core::secret::Secret::new(token),
            token_file: PathBuf::new(),
        };
        c.failover = Some(role(""));
        let mut problems = Vec::new();
        c.validate(&mut problems);
        let about_listen: Vec<&String> = problems
            .iter()
            .filter(|p| p.contains("listen") || p.contains("token"))
            .collect();
        assert_eq!(about_listen.len(), 1, "{problems:?}");
        assert!(
            about_listen[0].starts_with("agent.failover.token: agent.listen 0.0.0.0:9465"),
            "{problems:?}"
        );
        c.failover = Some(role("short"));
        let mut problems = Vec::new();
        c.validate(&mut problems);
        assert!(
            problems.iter().any(|p| p.contains("shorter than 16")),
            "{problems:?}"
        );
        c.failover = Some(role("a-long-enough-agent-token"));
        let mut problems = Vec::new();
        c.validate(&mut problems);
        assert!(
            !problems
                .iter()
                .any(|p| p.contains("listen") || p.contains("token")),
            "{problems:?}"
        );
    }
}
