//! The `sampleapp:` section of `keel.yaml`.

use std::path::PathBuf;
use std::time::Duration;

use keel_core::config::Validate;
use serde::{Deserialize, Serialize};

/// How the whole sample app is laid out and tuned.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SampleAppConfig {
    /// Address every process binds (loopback by default).
    pub host: String,
    /// Allow a `host` other than loopback: the processes' own control
    /// routes (`/-/promote`, `/-/capacity`, `/-/faults`, …) take no
    /// token, so anyone who reaches them can fail the db over.
    pub insecure: bool,
    /// Where logs, WALs and process specs go.
    pub data_dir: PathBuf,
    /// OTLP/HTTP base URL spans are exported to (`/v1/traces` is appended);
    /// none: spans are created and propagated but not exported.
    pub otlp_endpoint: Option<String>,
    /// How often buffered spans are flushed to the OTLP endpoint.
    #[serde(with = "keel_core::duration")]
    pub otlp_flush_interval: Duration,
    /// The supervisor (actuator API).
    pub supervisor: SupervisorConfig,
    /// The load balancer.
    pub lb: LbConfig,
    /// The web tier.
    pub web: WebConfig,
    /// The cache.
    pub cache: CacheConfig,
    /// The database.
    pub db: DbConfig,
}

impl Default for SampleAppConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            insecure: false,
            data_dir: PathBuf::from("keel-data/sampleapp"),
            otlp_endpoint: None,
            otlp_flush_interval: Duration::from_secs(1),
            supervisor: SupervisorConfig::default(),
            lb: LbConfig::default(),
            web: WebConfig::default(),
            cache: CacheConfig::default(),
            db: DbConfig::default(),
        }
    }
}

/// The supervisor and its actuator API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisorConfig {
    /// Actuator API port (0 picks a free one).
    pub port: u16,
    /// Wait before restarting a crashed process.
    #[serde(with = "keel_core::duration")]
    pub restart_backoff: Duration,
    /// How long a process may take to report that it listens.
    #[serde(with = "keel_core::duration")]
    pub start_timeout: Duration,
    /// How long a stopped process may drain before it is killed.
    #[serde(with = "keel_core::duration")]
    pub stop_timeout: Duration,
    /// The bearer token every actuator API request must carry
    /// (`Authorization: Bearer …`). Give this or `token_file`; with
    /// neither, `keel up` makes a new one each start, writes it to
    /// `<data_dir>/supervisor.token` and hands it to the controller. The
    /// supervisor checks only this token: it never reads Keel's users.
    pub token: keel_core::secret::Secret,
    /// A file whose first line is the token.
    pub token_file: PathBuf,
}

impl SupervisorConfig {
    /// The token, from `token` or `token_file` (`None`: the API is open).
    pub fn token(&self) -> Result<Option<String>, String> {
        self.token.token_or_file(&self.token_file, "token")
    }
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        Self {
            port: 8079,
            restart_backoff: Duration::from_millis(500),
            start_timeout: Duration::from_secs(10),
            stop_timeout: Duration::from_secs(30),
            token: Default::default(),
            token_file: PathBuf::new(),
        }
    }
}

/// Load-balancing strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Each healthy backend in turn.
    RoundRobin,
    /// The healthy backend with the fewest requests in flight.
    LeastConnections,
}

/// Active health checking, as an ALB target group does it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Time between checks of one backend.
    #[serde(with = "keel_core::duration")]
    pub interval: Duration,
    /// A check slower than this fails.
    #[serde(with = "keel_core::duration")]
    pub timeout: Duration,
    /// Consecutive successes before an unhealthy backend gets traffic.
    pub healthy_threshold: u32,
    /// Consecutive failures before a healthy backend loses traffic.
    pub unhealthy_threshold: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(800),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }
    }
}

/// The load balancer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LbConfig {
    /// Listening port (0 picks a free one).
    pub port: u16,
    /// Port of the lb's admin API (its backend list, for the supervisor),
    /// never served on the shop port (0 picks a free one).
    pub admin_port: u16,
    /// How a backend is chosen.
    pub strategy: Strategy,
    /// Health checks.
    pub health: HealthConfig,
    /// Longest a removed backend may take to finish its in-flight requests.
    #[serde(with = "keel_core::duration")]
    pub drain_timeout: Duration,
    /// Time allowed for a backend to answer one proxied request.
    #[serde(with = "keel_core::duration")]
    pub upstream_timeout: Duration,
}

impl Default for LbConfig {
    fn default() -> Self {
        Self {
            port: 8080,
            admin_port: 0,
            strategy: Strategy::RoundRobin,
            health: HealthConfig::default(),
            drain_timeout: Duration::from_secs(30),
            upstream_timeout: Duration::from_secs(30),
        }
    }
}

/// A web instance's capacity and fault knobs (settable at run time).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Capacity {
    /// Requests served at once; more wait in the queue.
    pub max_concurrency: u32,
    /// Requests allowed to wait; beyond that the answer is 503.
    pub queue_limit: u32,
    /// Simulated service time per request, on top of cache and db calls.
    #[serde(with = "keel_core::duration")]
    pub service_time: Duration,
    /// Real CPU burned per request.
    #[serde(with = "keel_core::duration")]
    pub cpu_cost: Duration,
    /// Fraction of API requests answered 500 on purpose (0..=1).
    pub error_rate: f64,
}

impl Default for Capacity {
    fn default() -> Self {
        // 8 at once x 40 ms = 200 req/s per instance, the guides' sizing of
        // one web server.
        Self {
            max_concurrency: 8,
            queue_limit: 256,
            service_time: Duration::from_millis(40),
            cpu_cost: Duration::ZERO,
            error_rate: 0.0,
        }
    }
}

impl Capacity {
    /// Push a problem per invalid field, prefixed by `at`.
    pub fn validate_at(&self, at: &str, problems: &mut Vec<String>) {
        if self.max_concurrency == 0 {
            problems.push(format!("{at}.max_concurrency: must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.error_rate) {
            problems.push(format!(
                "{at}.error_rate: must be between 0 and 1, got {}",
                self.error_rate
            ));
        }
    }
}

/// The web tier.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Instances started by `keel up`.
    pub instances: u32,
    /// Upper bound for scaling through the actuator API.
    pub max_instances: u32,
    /// Per-instance capacity.
    pub capacity: Capacity,
    /// How long a login session lives in the cache.
    #[serde(with = "keel_core::duration")]
    pub session_ttl: Duration,
    /// How long a product read from the db stays cached.
    #[serde(with = "keel_core::duration")]
    pub product_ttl: Duration,
    /// How long a new instance is cold (reports not ready) after it
    /// starts; instances added by scaling join the lb when warm.
    #[serde(with = "keel_core::duration")]
    pub warm_up: Duration,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            instances: 2,
            max_instances: 50,
            capacity: Capacity::default(),
            session_ttl: Duration::from_secs(1800),
            product_ttl: Duration::from_secs(60),
            warm_up: Duration::ZERO,
        }
    }
}

/// The cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Memory bound: keys + values above this evict least-recently-used.
    pub max_bytes: u64,
    /// TTL when a write names none.
    #[serde(with = "keel_core::duration")]
    pub default_ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_bytes: 64 << 20,
            default_ttl: Duration::from_secs(300),
        }
    }
}

/// How writes reach replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicationMode {
    /// Acknowledge once in the primary's WAL; replicas follow.
    Async,
    /// Acknowledge once at least `sync_replicas` replicas have it in their WAL.
    Sync,
}

/// When the WAL is flushed to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// Before every acknowledgement: survives power loss; slowest.
    Always,
    /// Every `fsync_interval`: a power loss may lose that much.
    Interval,
    /// Left to the OS: survives a process crash, not a power loss.
    Never,
}

/// The database.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DbConfig {
    /// Replicas beside the primary.
    pub replicas: u32,
    /// Async or sync replication.
    pub replication: ReplicationMode,
    /// In sync mode, replicas that must hold a write before it is acknowledged.
    pub sync_replicas: u32,
    /// In sync mode, how long a write waits for replicas before failing with 503.
    #[serde(with = "keel_core::duration")]
    pub sync_timeout: Duration,
    /// WAL flush policy.
    pub fsync: FsyncPolicy,
    /// Flush period with `fsync: interval`.
    #[serde(with = "keel_core::duration")]
    pub fsync_interval: Duration,
    /// Products seeded into an empty primary (ids 1..=products).
    pub products: u32,
    /// What a primary restarted after a crash (or started after a stop)
    /// comes back as: `read_only` (reads only, until told to follow or
    /// promoted — a failover that happened meanwhile never meets two
    /// primaries) or `primary` (takes writes again at once, as Patroni
    /// restarting in place).
    pub restart_primary_as: RestartPrimaryAs,
}

/// How a returning primary starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartPrimaryAs {
    /// Reads only until told to follow or promoted.
    ReadOnly,
    /// Takes writes again.
    Primary,
}

impl Default for DbConfig {
    fn default() -> Self {
        Self {
            replicas: 2,
            replication: ReplicationMode::Async,
            sync_replicas: 1,
            sync_timeout: Duration::from_secs(2),
            fsync: FsyncPolicy::Interval,
            fsync_interval: Duration::from_millis(100),
            products: 1000,
            restart_primary_as: RestartPrimaryAs::ReadOnly,
        }
    }
}

impl Validate for SampleAppConfig {
    fn validate(&self, problems: &mut Vec<String>) {
        match self.host.parse::<std::net::IpAddr>() {
            Err(_) => problems.push(format!(
                "sampleapp.host: {:?} is not an IP address",
                self.host
            )),
            // The actuator API kills and promotes: never open to a network;
            // and the processes' control routes take no token at all.
            Ok(ip) if !ip.is_loopback() => {
                if !self.insecure {
                    problems.push(format!(
                        "sampleapp.host: {ip} is not loopback, and the sample app's processes take control requests (/-/promote, /-/capacity, /-/faults) without a token; keep it on loopback or set sampleapp.insecure: true"
                    ));
                }
                if matches!(self.supervisor.token(), Ok(None)) {
                    problems.push(format!(
                        "sampleapp.supervisor.token: the supervisor listens on {ip}, not loopback; give it a token (or token_file)"
                    ));
                }
            }
            Ok(_) => {}
        }
        if let Err(e) = self.supervisor.token() {
            problems.push(format!("sampleapp.supervisor.{e}"));
        }
        if let Some(ep) = &self.otlp_endpoint
            && !(ep.starts_with("http://") || ep.starts_with("https://"))
        {
            problems.push(format!(
                "sampleapp.otlp_endpoint: {ep:?} must be an http(s) URL"
            ));
        }
        let h = &self.lb.health;
        if h.interval.is_zero() {
            problems.push("sampleapp.lb.health.interval: must be more than 0".into());
        }
        if h.timeout > h.interval {
            problems.push("sampleapp.lb.health.timeout: must not exceed the interval".into());
        }
        if h.healthy_threshold == 0 || h.unhealthy_threshold == 0 {
            problems.push("sampleapp.lb.health: thresholds must be at least 1".into());
        }
        if self.web.instances == 0 {
            problems.push("sampleapp.web.instances: must be at least 1".into());
        }
        if self.web.max_instances < self.web.instances {
            problems.push("sampleapp.web.max_instances: must be at least web.instances".into());
        }
        self.web
            .capacity
            .validate_at("sampleapp.web.capacity", problems);
        if self.db.replication == ReplicationMode::Sync && self.db.sync_replicas > self.db.replicas
        {
            problems.push(format!(
                "sampleapp.db.sync_replicas: {} exceeds db.replicas ({}): no write could ever be acknowledged",
                self.db.sync_replicas, self.db.replicas
            ));
        }
        if self.db.fsync == FsyncPolicy::Interval && self.db.fsync_interval.is_zero() {
            problems.push(
                "sampleapp.db.fsync_interval: must be more than 0 with fsync: interval".into(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(c: &SampleAppConfig) -> Vec<String> {
        let mut p = Vec::new();
        c.validate(&mut p);
        p
    }

    #[test]
    fn an_open_supervisor_is_for_loopback_only() {
        let mut c = SampleAppConfig::default();
        assert_eq!(problems(&c), Vec::<String>::new());
        c.host = "0.0.0.0".into();
        let p = problems(&c);
        assert!(
            p.iter()
                .any(|m| m
                    .starts_with("sampleapp.supervisor.token: the supervisor listens on 0.0.0.0")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|m| m.starts_with("sampleapp.host: 0.0.0.0 is not loopback")
                    && m.ends_with("set sampleapp.insecure: true")),
            "{p:?}"
        );
        c.supervisor.token = keel_core::secret::Secret::new("a-long-enough-token");
        c.insecure = true;
        assert_eq!(problems(&c), Vec::<String>::new());
        assert_eq!(
            c.supervisor.token().expect("token").as_deref(),
            Some("a-long-enough-token")
        );
        c.supervisor.token_file = "/etc/keel/supervisor.token".into();
        let p = problems(&c);
        assert!(
            p.iter()
                .any(|m| m == "sampleapp.supervisor.token: give token or token_file, not both"),
            "{p:?}"
        );
    }
}
