//! A failover target as written in `controller.failover` of `keel.yaml`.
//!
//! ```yaml
//! controller:
//!   failover:
//!     - name: shop-db
//!       driver: {type: sample, supervisor: ""}   # "": keel up's supervisor
//!       members: [{name: db-1}, {name: db-2}, {name: db-3, priority: 0}]
//!       probe_interval: 250ms
//!       failure_threshold: 3
//!       maximum_lag_on_failover: 1048576
//!       mode: asynchronous
//!       anti_flapping: 5m
//!       repoint: [web]
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How members are probed and changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum DriverConfig {
    /// The sample app's database: members probed directly, actions
    /// through its supervisor.
    Sample {
        /// The supervisor's base URL ("" under `keel up`: its own).
        #[serde(default)]
        supervisor: String,
    },
}

/// Whether an acknowledged write is on replicas before it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Replicas follow; a failover may lose what they had not received
    /// (the event says how much).
    Asynchronous,
    /// A write is acknowledged once `synchronous_replicas` replicas have
    /// it; a failover never loses one.
    Synchronous,
}

/// One member of a target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Its name as the driver knows it.
    pub name: String,
    /// Higher is promoted first among equals; 0 never.
    #[serde(default = "default_priority")]
    pub priority: u32,
}

fn default_priority() -> u32 {
    1
}

/// One database whose primary the controller watches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverConfig {
    /// Its name (events' subject).
    pub name: String,
    /// How it is probed and changed.
    pub driver: DriverConfig,
    /// Its members, primary included.
    pub members: Vec<Member>,
    /// How often every member is probed.
    #[serde(with = "keel_core::duration", default = "default_probe_interval")]
    pub probe_interval: Duration,
    /// A probe slower than this failed.
    #[serde(with = "keel_core::duration", default = "default_probe_timeout")]
    pub probe_timeout: Duration,
    /// Failed probes in a row before the primary is taken for dead (and
    /// then only if the replicas lost it too).
    #[serde(default = "default_threshold")]
    pub failure_threshold: u32,
    /// A replica further behind than this many bytes is never promoted
    /// (Patroni's default, 1 MiB).
    #[serde(default = "default_max_lag")]
    pub maximum_lag_on_failover: u64,
    /// A replica whose oldest missing record is older than this is never
    /// promoted (FACTS: consider failover beyond 30 s of lag, not a
    /// replica that far behind).
    #[serde(with = "keel_core::duration", default = "default_max_lag_time")]
    pub maximum_lag_seconds_on_failover: Duration,
    /// Asynchronous or synchronous replication (as the database runs it).
    #[serde(default = "default_mode")]
    pub mode: Mode,
    /// Synchronous mode: replicas that hold a write before it is
    /// acknowledged (as the database is configured).
    #[serde(default = "default_sync_replicas")]
    pub synchronous_replicas: u32,
    /// After an automatic failover, none other for this long.
    #[serde(with = "keel_core::duration", default = "default_anti_flapping")]
    pub anti_flapping: Duration,
    /// Tiers given the new primary (the sample driver: `web`).
    #[serde(default = "default_repoint")]
    pub repoint: Vec<String>,
    /// Autoscaling policies paused during a failover ([]: every policy).
    #[serde(default)]
    pub pause_policies: Vec<String>,
}

fn default_probe_interval() -> Duration {
    Duration::from_millis(250)
}

fn default_probe_timeout() -> Duration {
    Duration::from_millis(200)
}

fn default_threshold() -> u32 {
    3
}

fn default_max_lag() -> u64 {
    1 << 20
}

fn default_max_lag_time() -> Duration {
    Duration::from_secs(30)
}

fn default_mode() -> Mode {
    Mode::Asynchronous
}

fn default_sync_replicas() -> u32 {
    1
}

fn default_anti_flapping() -> Duration {
    Duration::from_secs(300)
}

fn default_repoint() -> Vec<String> {
    vec!["web".into()]
}

/// Tiers the sample driver can repoint.
const REPOINTABLE: [&str; 1] = ["web"];

impl FailoverConfig {
    /// Every problem under `at` (`controller.failover[i]`); `policies` are
    /// the autoscaling policies' names.
    pub fn validate(&self, at: &str, policies: &[&str], problems: &mut Vec<String>) {
        if self.name.trim().is_empty() {
            problems.push(format!("{at}.name: must not be empty"));
        }
        if self.members.len() < 2 {
            problems.push(format!(
                "{at}.members: at least two (a primary and a replica to promote)"
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, m) in self.members.iter().enumerate() {
            if m.name.trim().is_empty() {
                problems.push(format!("{at}.members[{i}].name: must not be empty"));
            } else if !seen.insert(m.name.as_str()) {
                problems.push(format!(
                    "{at}.members[{i}].name: {:?} is listed twice",
                    m.name
                ));
            }
        }
        if self.members.iter().all(|m| m.priority == 0) && !self.members.is_empty() {
            problems.push(format!(
                "{at}.members: every priority is 0, so no member could ever be promoted"
            ));
        }
        if self.probe_interval.is_zero() {
            problems.push(format!("{at}.probe_interval: must be positive"));
        }
        if self.probe_timeout.is_zero() || self.probe_timeout > self.probe_interval * 4 {
            problems.push(format!(
                "{at}.probe_timeout: must be positive and at most 4 probe intervals"
            ));
        }
        if self.failure_threshold == 0 {
            problems.push(format!("{at}.failure_threshold: must be at least 1"));
        }
        if self.mode == Mode::Synchronous
            && (self.synchronous_replicas == 0
                || self.synchronous_replicas as usize >= self.members.len().max(1))
        {
            problems.push(format!(
                "{at}.synchronous_replicas: must be at least 1 and fewer than the members ({})",
                self.members.len()
            ));
        }
        for (i, t) in self.repoint.iter().enumerate() {
            if !REPOINTABLE.contains(&t.as_str()) {
                problems.push(format!(
                    "{at}.repoint[{i}]: {t:?} is not a tier the driver repoints ({})",
                    REPOINTABLE.join(", ")
                ));
            }
        }
        for (i, p) in self.pause_policies.iter().enumerate() {
            if !policies.contains(&p.as_str()) {
                problems.push(format!(
                    "{at}.pause_policies[{i}]: no autoscaling policy is named {p:?}"
                ));
            }
        }
    }

    /// A member's priority (0 for one not listed).
    pub fn priority(&self, name: &str) -> u32 {
        self.members
            .iter()
            .find(|m| m.name == name)
            .map_or(0, |m| m.priority)
    }

    /// Whether `policy` pauses while this target fails over.
    pub fn pauses(&self, policy: &str) -> bool {
        self.pause_policies.is_empty() || self.pause_policies.iter().any(|p| p == policy)
    }
}
