//! Autoscaling policies, as written in the `controller` section of
//! `keel.yaml`: what to scale (an actuator), its bounds, its metrics
//! (PromQL with a target), the HPA behaviour, warm-up and panic.
//!
//! ```yaml
//! controller:
//!   interval: 15s
//!   policies:
//!     - name: web
//!       actuator: {type: supervisor, url: http://127.0.0.1:8079}
//!       min: 2
//!       max: 20
//!       metrics:
//!         - name: request rate
//!           query: sum(rate(http_server_request_duration_seconds_count{tier="web"}[1m]))
//!           average: 50        # per instance, from the total
//!       warm_up: 10s
//!       panic: {demand: <same query>, per_instance: 50}
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::behavior::Behavior;
use crate::hpa::Target;

/// The `controller` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControllerConfig {
    /// How often every policy is evaluated (the HPA's 15 s).
    #[serde(with = "keel_core::duration")]
    pub interval: Duration,
    /// The policies (`keel up` with none: the shipped one for the sample
    /// app's web tier).
    pub policies: Vec<Policy>,
    /// Where `GET /api/v1/events` is served.
    pub listen: String,
    /// Databases whose primary is watched and failed over (`keel up` with
    /// none: the sample app's db).
    pub failover: Vec<crate::failover::FailoverConfig>,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(15),
            policies: Vec::new(),
            listen: "127.0.0.1:7071".into(),
            failover: Vec::new(),
        }
    }
}

/// How instances are counted and changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ActuatorConfig {
    /// The sample app's supervisor (`/api/v1/scale/web`).
    Supervisor {
        /// Its base URL (empty under `keel up`: its own supervisor).
        #[serde(default)]
        url: String,
        /// The supervisor's token (`sampleapp.supervisor.token`; empty
        /// under `keel up`: the one it made). Or `token_file`.
        #[serde(default)]
        token: keel_core::secret::Secret,
        /// A file whose first line is the supervisor's token.
        #[serde(default)]
        token_file: std::path::PathBuf,
    },
    /// Commands: `read` prints the instance names (one a line) or a
    /// count; `scale` gets the wanted count in `KEEL_REPLICAS` (and as
    /// its last argument), and, when the collector leads a pair, the
    /// lease's fencing token in `KEEL_FENCING_TOKEN` (and its name in
    /// `KEEL_FENCING_LEASE`) to refuse if older than one already seen.
    Exec {
        /// Prints the current instances.
        read: Vec<String>,
        /// Changes the count.
        scale: Vec<String>,
        /// Longest a command may run.
        #[serde(with = "keel_core::duration", default = "default_exec_timeout")]
        timeout: Duration,
    },
    /// Decides and records, changes nothing (the count starts at `start`).
    DryRun {
        /// The count it reports at first.
        start: u32,
    },
}

impl ActuatorConfig {
    /// The supervisor at `url` with `token` (none: an open supervisor).
    pub fn supervisor(url: &str, token: Option<&str>) -> Self {
        ActuatorConfig::Supervisor {
            url: url.into(),
            token: keel_core::secret::Secret::new(token.unwrap_or_default()),
            token_file: Default::default(),
        }
    }
}

fn default_exec_timeout() -> Duration {
    Duration::from_secs(30)
}

/// One metric of a policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricSpec {
    /// Its name in decisions.
    pub name: String,
    /// PromQL: one value, or one a instance (an `instance` label) for
    /// `per_instance`.
    pub query: String,
    /// Each instance's value should be this.
    #[serde(default)]
    pub per_instance: Option<f64>,
    /// The total ÷ instances should be this.
    #[serde(default)]
    pub average: Option<f64>,
    /// The total should be this.
    #[serde(default)]
    pub total: Option<f64>,
}

impl MetricSpec {
    /// Its target; none when not exactly one kind is given.
    pub fn target(&self) -> Option<Target> {
        match (self.per_instance, self.average, self.total) {
            (Some(v), None, None) => Some(Target::PerInstance(v)),
            (None, Some(v), None) => Some(Target::AverageOfTotal(v)),
            (None, None, Some(v)) => Some(Target::Total(v)),
            _ => None,
        }
    }
}

/// Panic mode's input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PanicSpec {
    /// PromQL giving the arrival rate (one value).
    pub demand: String,
    /// What one instance handles at its target, in the same unit.
    pub per_instance: f64,
    /// Panic when demand needs this many times the ready instances.
    #[serde(default = "default_panic_threshold")]
    pub threshold: f64,
    /// Panic lasts this long after its condition was last seen.
    #[serde(with = "keel_core::duration", default = "default_panic_window")]
    pub window: Duration,
}

fn default_panic_threshold() -> f64 {
    2.0
}

fn default_panic_window() -> Duration {
    Duration::from_secs(60)
}

/// One autoscaling policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Its name (events' subject).
    pub name: String,
    /// What it scales.
    pub actuator: ActuatorConfig,
    /// Fewest instances.
    pub min: u32,
    /// Most instances.
    pub max: u32,
    /// Its metrics (the largest proposal wins).
    pub metrics: Vec<MetricSpec>,
    /// HPA behaviour (Kubernetes' defaults).
    #[serde(default)]
    pub behavior: Behavior,
    /// A new instance's metrics are discounted this long.
    #[serde(with = "keel_core::duration", default)]
    pub warm_up: Duration,
    /// Panic mode (none: off).
    #[serde(default)]
    pub panic: Option<PanicSpec>,
    /// Predictive scaling (none: off).
    #[serde(default)]
    pub predictive: Option<PredictiveSpec>,
}

/// What predictive scaling does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictiveMode {
    /// Nothing.
    Off,
    /// Forecasts are recorded in the decisions, not acted on.
    ForecastOnly,
    /// Capacity follows the forecast ahead of time (never scaling in).
    ForecastAndScale,
}

/// Predictive scaling's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictiveSpec {
    /// Off, forecast_only (the default, as AWS's), forecast_and_scale.
    #[serde(default = "default_mode")]
    pub mode: PredictiveMode,
    /// PromQL of the load to forecast (one value, e.g. requests/s).
    pub query: String,
    /// What one instance handles, in the same unit.
    pub per_instance: f64,
    /// Spacing of the history read.
    #[serde(with = "keel_core::duration", default = "default_step")]
    pub step: Duration,
    /// How much history is read (two days at least; two weeks learn weeks).
    #[serde(with = "keel_core::duration", default = "default_history")]
    pub history: Duration,
    /// How often the model is fitted again.
    #[serde(with = "keel_core::duration", default = "default_refit")]
    pub refit: Duration,
    /// Capacity is in place this long before the forecast load, on top
    /// of `warm_up`.
    #[serde(with = "keel_core::duration", default = "default_buffer")]
    pub buffer: Duration,
    /// The length of the load's cycle (a day; a week is learnt as seven
    /// of them once fourteen are in the history). Shorter only for
    /// compressed replays and benchmarks.
    #[serde(with = "keel_core::duration", default = "default_season")]
    pub season: Duration,
}

fn default_season() -> Duration {
    Duration::from_secs(86_400)
}

fn default_mode() -> PredictiveMode {
    PredictiveMode::ForecastOnly
}

fn default_step() -> Duration {
    Duration::from_secs(300)
}

fn default_history() -> Duration {
    Duration::from_secs(14 * 86_400)
}

fn default_refit() -> Duration {
    Duration::from_secs(3600)
}

fn default_buffer() -> Duration {
    Duration::from_secs(300)
}

impl ControllerConfig {
    /// Push one message per problem, each naming its field.
    pub fn validate(&self, problems: &mut Vec<String>) {
        if self.interval.is_zero() {
            problems.push("controller.interval: must be positive".into());
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(format!(
                "controller.listen: {:?} is not host:port",
                self.listen
            ));
        }
        let policies: Vec<&str> = self.policies.iter().map(|p| p.name.as_str()).collect();
        let mut targets = std::collections::HashSet::new();
        for (i, f) in self.failover.iter().enumerate() {
            let at = format!("controller.failover[{i}]");
            f.validate(&at, &policies, problems);
            if !targets.insert(f.name.as_str()) {
                problems.push(format!("{at}.name: {:?} is used twice", f.name));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, p) in self.policies.iter().enumerate() {
            let at = format!("controller.policies[{i}]");
            if p.name.trim().is_empty() {
                problems.push(format!("{at}.name: must not be empty"));
            } else if !names.insert(p.name.as_str()) {
                problems.push(format!("{at}.name: {:?} is used twice", p.name));
            }
            if p.min > p.max || p.max == 0 {
                problems.push(format!(
                    "{at}.max: must be at least min ({}) and positive",
                    p.min
                ));
            }
            if p.metrics.is_empty() && p.panic.is_none() {
                problems.push(format!("{at}.metrics: at least one is needed"));
            }
            for (j, m) in p.metrics.iter().enumerate() {
                let at = format!("{at}.metrics[{j}]");
                match m.target() {
                    None => problems.push(format!(
                        "{at}: give exactly one of per_instance, average, total"
                    )),
                    Some(t) if !positive(t_value(t)) => {
                        problems.push(format!("{at}: the target must be positive"))
                    }
                    Some(_) => {}
                }
                if m.query.trim().is_empty() {
                    problems.push(format!("{at}.query: must not be empty"));
                }
            }
            if let Some(pn) = &p.panic {
                if !positive(pn.per_instance) {
                    problems.push(format!("{at}.panic.per_instance: must be positive"));
                }
                if !positive(pn.threshold - 1.0) {
                    problems.push(format!("{at}.panic.threshold: must be above 1"));
                }
            }
            if let Some(pr) = &p.predictive {
                if !positive(pr.per_instance) {
                    problems.push(format!("{at}.predictive.per_instance: must be positive"));
                }
                if pr.step.is_zero() || pr.history < 2 * pr.step {
                    problems.push(format!(
                        "{at}.predictive: step must be positive and history at least two steps"
                    ));
                }
                if pr.query.trim().is_empty() {
                    problems.push(format!("{at}.predictive.query: must not be empty"));
                }
                let (season, step) = (pr.season.as_millis(), pr.step.as_millis());
                if step > 0 && (season < 2 * step || season % step != 0) {
                    problems.push(format!(
                        "{at}.predictive.season: must be a whole number of steps, at least two ({} is not, with step {})",
                        humantime::format_duration(pr.season),
                        humantime::format_duration(pr.step)
                    ));
                }
            }
            match &p.actuator {
                ActuatorConfig::Supervisor {
                    url,
                    token,
                    token_file,
                } => {
                    if !url.is_empty() && !url.starts_with("http") {
                        problems.push(format!("{at}.actuator.url: {url:?} is not an http URL"));
                    }
                    if let Err(e) = token.token_or_file(token_file, "token") {
                        problems.push(format!("{at}.actuator.{e}"));
                    }
                }
                ActuatorConfig::Exec {
                    read,
                    scale,
                    timeout,
                } => {
                    if read.is_empty() || scale.is_empty() {
                        problems.push(format!("{at}.actuator: exec needs read and scale commands"));
                    }
                    if timeout.is_zero() {
                        problems.push(format!("{at}.actuator.timeout: must be positive"));
                    }
                }
                _ => {}
            }
            p.behavior.validate(&format!("{at}.behavior"), problems);
        }
    }
}

/// Above zero (NaN is not).
fn positive(x: f64) -> bool {
    x > 0.0
}

fn t_value(t: Target) -> f64 {
    match t {
        Target::PerInstance(v) | Target::AverageOfTotal(v) | Target::Total(v) => v,
    }
}
