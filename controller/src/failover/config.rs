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
//!
//! PostgreSQL: each member names how to reach it by SQL (`dsn`) and how
//! to act on its host — the Keel agent's failover role there (`agent`) or
//! a command (`exec`):
//!
//! ```yaml
//!     - name: pg
//!       driver: {type: postgres}
//!       mode: synchronous
//!       members:
//!         - {name: pg-1, dsn: "postgres://postgres@10.0.0.1:5432/postgres", agent: "http://10.0.0.1:8008"}
//!         - {name: pg-2, dsn: "postgres://postgres@10.0.0.2:5432/postgres", exec: [/usr/local/bin/pg-hook]}
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
        /// The supervisor's token (`sampleapp.supervisor.token`; empty
        /// under `keel up`: the one it made). Or `token_file`.
        #[serde(default)]
        token: keel_core::secret::Secret,
        /// A file whose first line is the supervisor's token.
        #[serde(default)]
        token_file: std::path::PathBuf,
    },
    /// PostgreSQL: members probed by SQL, promoted with `pg_promote()`;
    /// host actions (stop, rewind, follow) through each member's agent or
    /// exec hook.
    Postgres {},
}

impl DriverConfig {
    /// The sample driver through the supervisor at `url`, with `token`
    /// (none: an open supervisor).
    pub fn sample(url: &str, token: Option<&str>) -> Self {
        DriverConfig::Sample {
            supervisor: url.into(),
            token: keel_core::secret::Secret::new(token.unwrap_or_default()),
            token_file: Default::default(),
        }
    }
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
    /// PostgreSQL: how the controller connects to it (a `postgres://` URL;
    /// its host, port, user and password also make the `primary_conninfo`
    /// other members follow it with).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dsn: Option<String>,
    /// PostgreSQL: the base URL of the Keel agent's failover role on its host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// PostgreSQL: instead of an agent, a command run with the action
    /// (`stop`, `start`, `follow`, `rejoin`) and, to follow, the
    /// `primary_conninfo` as arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<Vec<String>>,
}

impl Member {
    /// A member called `name` at priority 1, nothing else set.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            priority: 1,
            dsn: None,
            agent: None,
            exec: None,
        }
    }
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
    /// Tiers given the new primary (the sample driver; absent: `web`).
    /// PostgreSQL clients find the primary themselves (multi-host
    /// connection strings, the agent's role endpoint): none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repoint: Option<Vec<String>>,
    /// Autoscaling policies paused during a failover ([]: every policy).
    #[serde(default)]
    pub pause_policies: Vec<String>,
    /// PostgreSQL: the token the members' agents want on their failover
    /// actions (their `agent.failover.token`). Give this or
    /// `agent_token_file`.
    #[serde(default)]
    pub agent_token: keel_core::secret::Secret,
    /// A file whose first line is the agents' token.
    #[serde(default)]
    pub agent_token_file: std::path::PathBuf,
    /// PostgreSQL: how to trust the agents' `https://` listeners (their
    /// `agent.tls`): a CA bundle, and a client certificate when they ask.
    #[serde(default)]
    pub agent_tls: keel_tls::TlsConfig,
}

impl FailoverConfig {
    /// The token for the members' agents, from the config or its file.
    pub fn agent_token(&self) -> Result<Option<String>, String> {
        self.agent_token
            .token_or_file(&self.agent_token_file, "token")
    }
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

/// Tiers the sample driver can repoint.
const REPOINTABLE: [&str; 1] = ["web"];

impl FailoverConfig {
    /// Every problem under `at` (`controller.failover[i]`); `policies` are
    /// the autoscaling policies' names.
    pub fn validate(&self, at: &str, policies: &[&str], problems: &mut Vec<String>) {
        if let Err(e) = self.agent_token() {
            problems.push(format!("{at}.agent_{e}"));
        }
        self.agent_tls
            .validate(&format!("{at}.agent_tls"), problems);
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
        match &self.driver {
            DriverConfig::Sample {
                token, token_file, ..
            } => {
                if let Err(e) = token.token_or_file(token_file, "token") {
                    problems.push(format!("{at}.driver.{e}"));
                }
                for (i, t) in self.repoint().iter().enumerate() {
                    if !REPOINTABLE.contains(&t.as_str()) {
                        problems.push(format!(
                            "{at}.repoint[{i}]: {t:?} is not a tier the driver repoints ({})",
                            REPOINTABLE.join(", ")
                        ));
                    }
                }
                for (i, m) in self.members.iter().enumerate() {
                    for (field, set) in [
                        ("dsn", m.dsn.is_some()),
                        ("agent", m.agent.is_some()),
                        ("exec", m.exec.is_some()),
                    ] {
                        if set {
                            problems.push(format!(
                                "{at}.members[{i}].{field}: only for the postgres driver (the sample driver finds its members through the supervisor)"
                            ));
                        }
                    }
                }
            }
            DriverConfig::Postgres {} => {
                if self.repoint.as_ref().is_some_and(|r| !r.is_empty()) {
                    problems.push(format!(
                        "{at}.repoint: the postgres driver repoints no tier: clients find the primary with a multi-host connection string (target_session_attrs=read-write) or the agent's /primary endpoint"
                    ));
                }
                let mut places = std::collections::HashMap::new();
                for (i, m) in self.members.iter().enumerate() {
                    let at = format!("{at}.members[{i}]");
                    match &m.dsn {
                        None => problems.push(format!(
                            "{at}.dsn: required by the postgres driver (postgres://user@host:port/dbname)"
                        )),
                        Some(d) => match super::postgres::Dsn::parse(d) {
                            Err(e) => problems.push(format!("{at}.dsn: {e}")),
                            Ok(d) => {
                                if let Some(other) = places.insert(d.place(), m.name.clone()) {
                                    problems.push(format!(
                                        "{at}.dsn: {} is {other:?}'s server too",
                                        d.place()
                                    ));
                                }
                            }
                        },
                    }
                    match (&m.agent, &m.exec) {
                        (None, None) => problems.push(format!(
                            "{at}: the postgres driver acts on a member's host through its Keel agent (agent: URL) or a command (exec: [...]); neither is set"
                        )),
                        (Some(_), Some(_)) => problems.push(format!(
                            "{at}: agent and exec are both set; choose one"
                        )),
                        (Some(u), None) => {
                            if !(u.starts_with("http://") || u.starts_with("https://"))
                                || u.len() <= "https://".len()
                            {
                                problems.push(format!(
                                    "{at}.agent: {u:?} is not an http(s):// URL"
                                ));
                            }
                        }
                        (None, Some(e)) => {
                            if e.first().is_none_or(|c| c.trim().is_empty()) {
                                problems.push(format!("{at}.exec: names no command"));
                            }
                        }
                    }
                }
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

    /// The tiers given the new primary.
    pub fn repoint(&self) -> Vec<String> {
        match (&self.repoint, &self.driver) {
            (Some(r), _) => r.clone(),
            (None, DriverConfig::Sample { .. }) => vec!["web".into()],
            (None, DriverConfig::Postgres {}) => Vec::new(),
        }
    }

    /// The member called `name`.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> FailoverConfig {
        serde_saphyr::from_str(yaml).expect("parses")
    }

    #[test]
    fn a_postgres_target_reports_every_member_problem_at_once() {
        let f = parse(
            "name: pg\ndriver: {type: postgres}\nrepoint: [web]\nmembers:\n  - {name: a, dsn: 'postgres://postgres@127.0.0.1:5433/postgres', agent: 'http://127.0.0.1:8008'}\n  - {name: b, dsn: 'mysql://x@h/db', exec: [hook]}\n  - {name: c, agent: 'http://h:1', exec: [hook]}\n  - {name: d, dsn: 'postgres://h', agent: 'h:8008'}\n",
        );
        let mut problems = Vec::new();
        f.validate("controller.failover[0]", &[], &mut problems);
        let want = [
            "controller.failover[0].repoint: the postgres driver repoints no tier",
            "controller.failover[0].members[1].dsn: the scheme must be postgres://",
            "controller.failover[0].members[2].dsn: required by the postgres driver",
            "controller.failover[0].members[2]: agent and exec are both set",
            "controller.failover[0].members[3].agent: \"h:8008\" is not an http(s):// URL",
        ];
        for w in want {
            assert!(
                problems.iter().any(|p| p.starts_with(w)),
                "missing {w:?} in {problems:#?}"
            );
        }
        assert_eq!(problems.len(), want.len(), "{problems:#?}");
    }

    #[test]
    fn the_sample_driver_refuses_postgres_fields_and_repoints_web_by_default() {
        let f = parse(
            "name: db\ndriver: {type: sample}\nmembers: [{name: db-1, dsn: 'postgres://h'}, {name: db-2}]\n",
        );
        let mut problems = Vec::new();
        f.validate("controller.failover[0]", &[], &mut problems);
        assert_eq!(
            problems,
            vec!["controller.failover[0].members[0].dsn: only for the postgres driver (the sample driver finds its members through the supervisor)".to_owned()]
        );
        assert_eq!(f.repoint(), vec!["web".to_owned()]);
    }

    #[test]
    fn a_dsn_becomes_the_conninfo_a_follower_streams_with() {
        let d = super::super::postgres::Dsn::parse(
            "postgres://rep%40l:p'w%2Bx+y%26z@db.example:6543/app",
        )
        .expect("parses");
        assert_eq!(
            (d.host.as_str(), d.port, d.user.as_str(), d.dbname.as_str()),
            ("db.example", 6543, "rep@l", "app")
        );
        assert_eq!(
            d.conninfo("pg-2"),
            "host='db.example' port=6543 user='rep@l' dbname='app' application_name='pg-2' password='p\\'w+x+y&z'"
        );
        let d = super::super::postgres::Dsn::parse("postgres://10.0.0.1").expect("parses");
        assert_eq!(
            (d.port, d.user.as_str(), d.dbname.as_str()),
            (5432, "postgres", "postgres")
        );
        assert!(super::super::postgres::Dsn::parse("postgres:///db").is_err());
        let e = super::super::postgres::Dsn::parse("postgres://u:secret@h/db?sslmode=require")
            .expect_err("query parameters are refused");
        assert!(!e.contains("secret"), "errors never echo the password: {e}");
    }
}
