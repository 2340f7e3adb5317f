//! How a failover target's members are probed and changed. The `sample`
//! driver probes each db member of the sample app directly (`GET
//! /-/status`, naming itself `keel-controller` so a partition can cut it
//! off) and acts through the sample app's supervisor: fence, promote
//! under the controller's epoch (the supervisor repoints the web tier and
//! re-attaches the other members). The controller never touches a data
//! directory.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::config::DriverConfig;
use super::decide::{MemberReport, Probe};

/// The name the controller gives itself to members it probes.
pub const PEER: &str = "keel-controller";

/// The outcome of a promotion, as the driver reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promoted {
    /// The new primary's lsn when promoted.
    pub lsn: u64,
    /// Clients (web instances) given the new primary.
    pub repointed: Vec<String>,
    /// Clients that could not be, restarted with it instead.
    pub restarted: Vec<String>,
    /// Members now following the new primary.
    pub followed: Vec<String>,
    /// Members that did not answer (they follow when they return).
    pub unreachable: Vec<String>,
    /// When the member took the promotion (ms since the epoch; 0: unknown).
    pub promoted_at_ms: i64,
    /// When every client had the new primary (0: unknown).
    pub repointed_at_ms: i64,
}

/// A failover driver.
#[derive(Debug, Clone)]
pub enum Driver {
    /// The sample app's database.
    Sample {
        /// The supervisor's base URL.
        supervisor: String,
        /// Its HTTP client.
        http: reqwest::Client,
    },
}

#[derive(Deserialize)]
struct Process {
    name: String,
    tier: String,
    addr: SocketAddr,
}

#[derive(Deserialize)]
struct Topology {
    primary_name: String,
    epoch: u64,
}

#[derive(Deserialize)]
struct Status {
    role: String,
    epoch: u64,
    last_lsn: u64,
    wal_bytes: u64,
    #[serde(default)]
    primary_ok: Option<bool>,
    #[serde(default)]
    lag_seconds: f64,
    #[serde(default)]
    primary_head_lsn: u64,
    #[serde(default)]
    primary_head_bytes: u64,
}

/// The error text of a failed request.
fn why(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "cannot connect".into()
    } else {
        e.to_string()
    }
}

impl Driver {
    /// The driver `config` describes (`default_supervisor` for an empty URL).
    pub fn new(config: &DriverConfig, default_supervisor: &str) -> Self {
        match config {
            DriverConfig::Sample { supervisor } => Driver::Sample {
                supervisor: if supervisor.is_empty() {
                    default_supervisor.trim_end_matches('/').to_owned()
                } else {
                    supervisor.trim_end_matches('/').to_owned()
                },
                http: reqwest::Client::new(),
            },
        }
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, String> {
        let Driver::Sample { supervisor, http } = self;
        let r = http
            .get(format!("{supervisor}{path}"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .map_err(|e| format!("the supervisor at {supervisor}: {}", why(&e)))?;
        if !r.status().is_success() {
            return Err(format!(
                "the supervisor at {supervisor}: HTTP {}",
                r.status().as_u16()
            ));
        }
        r.json()
            .await
            .map_err(|e| format!("the supervisor at {supervisor}: {e}"))
    }

    async fn post(
        &self,
        path: &str,
        body: serde_json::Value,
        timeout: Duration,
    ) -> Result<serde_json::Value, String> {
        let Driver::Sample { supervisor, http } = self;
        let r = http
            .post(format!("{supervisor}{path}"))
            .json(&body)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| format!("the supervisor at {supervisor}: {}", why(&e)))?;
        let status = r.status();
        let v: serde_json::Value = r.json().await.unwrap_or_default();
        if !status.is_success() {
            return Err(v["error"]
                .as_str()
                .map_or_else(|| format!("HTTP {}", status.as_u16()), str::to_owned));
        }
        Ok(v)
    }

    /// Every member the driver knows, and where it is.
    pub async fn members(&self) -> Result<BTreeMap<String, SocketAddr>, String> {
        let procs: Vec<Process> = self.get("/api/v1/processes").await?;
        Ok(procs
            .into_iter()
            .filter(|p| p.tier == "db")
            .map(|p| (p.name, p.addr))
            .collect())
    }

    /// The primary and epoch the database runs with now.
    pub async fn topology(&self) -> Result<(String, u64), String> {
        let t: Topology = self.get("/api/v1/db/topology").await?;
        Ok((t.primary_name, t.epoch))
    }

    /// Probe the member at `addr` once, within `timeout`.
    pub async fn probe(&self, addr: SocketAddr, timeout: Duration) -> Probe {
        let Driver::Sample { http, .. } = self;
        let r = http
            .get(format!("http://{addr}/-/status"))
            .header("x-peer-name", PEER)
            .timeout(timeout)
            .send()
            .await;
        let r = match r {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => return Probe::Failed(format!("HTTP {}", r.status().as_u16())),
            Err(e) => return Probe::Failed(why(&e)),
        };
        match r.json::<Status>().await {
            Ok(s) => Probe::Answered(MemberReport {
                role: s.role,
                epoch: s.epoch,
                last_lsn: s.last_lsn,
                wal_bytes: s.wal_bytes,
                primary_ok: s.primary_ok,
                lag_ms: (s.lag_seconds.max(0.0) * 1000.0) as u64,
                primary_head_lsn: s.primary_head_lsn,
                primary_head_bytes: s.primary_head_bytes,
            }),
            Err(e) => Probe::Failed(format!("not a status: {e}")),
        }
    }

    /// Have `member` follow the current primary (a member that came back
    /// read-only, or was fenced, and missed being re-attached).
    pub async fn rejoin(&self, member: &str) -> Result<(), String> {
        self.post(
            "/api/v1/db/rejoin",
            serde_json::json!({"name": member}),
            Duration::from_secs(5),
        )
        .await
        .map(|_| ())
    }

    /// Stop `member` taking writes at `epoch`.
    pub async fn fence(&self, member: &str, epoch: u64) -> Result<(), String> {
        self.post(
            "/api/v1/db/fence",
            serde_json::json!({"name": member, "epoch": epoch}),
            Duration::from_secs(2),
        )
        .await
        .map(|_| ())
    }

    /// Promote `member` at `epoch`; the `repoint` tiers are given the new
    /// primary and the other members re-attached.
    pub async fn promote(
        &self,
        member: &str,
        epoch: u64,
        repoint: &[String],
    ) -> Result<Promoted, String> {
        let v = self
            .post(
                "/api/v1/db/promote",
                serde_json::json!({"name": member, "epoch": epoch, "repoint": repoint}),
                Duration::from_secs(30),
            )
            .await?;
        let list = |k: &str| -> Vec<String> {
            v[k].as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        Ok(Promoted {
            lsn: v["lsn"].as_u64().unwrap_or(0),
            repointed: list("repointed"),
            restarted: list("restarted"),
            followed: list("followed"),
            unreachable: list("unreachable"),
            promoted_at_ms: v["promoted_at_ms"].as_i64().unwrap_or(0),
            repointed_at_ms: v["repointed_at_ms"].as_i64().unwrap_or(0),
        })
    }
}
