//! How a failover target's members are probed and changed. The `sample`
//! driver probes each db member of the sample app directly (`GET
//! /-/status`, naming itself `keel-controller` so a partition can cut it
//! off) and acts through the sample app's supervisor: fence, promote
//! under the controller's epoch (the supervisor repoints the web tier and
//! re-attaches the other members). The `postgres` driver is in
//! [`super::postgres`]. The controller never touches a data directory.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::config::{DriverConfig, FailoverConfig};
use super::decide::{MemberReport, Probe};
use super::postgres::Postgres;

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
    /// The epoch the new primary runs at, when the database chooses it
    /// (PostgreSQL's timeline); none: the one asked for.
    #[serde(default)]
    pub epoch: Option<u64>,
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
        /// The authority actions are asked under (its token sent).
        fencing: crate::fencing::Fencing,
    },
    /// PostgreSQL.
    Postgres(Arc<Postgres>),
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
pub(super) fn why(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "cannot connect".into()
    } else {
        e.to_string()
    }
}

impl Driver {
    /// The driver `cfg` describes (`default_supervisor` for an empty
    /// URL), acting under `fencing`'s authority.
    pub fn new(
        cfg: &FailoverConfig,
        default_supervisor: &str,
        fencing: crate::fencing::Fencing,
    ) -> Self {
        match &cfg.driver {
            DriverConfig::Postgres {} => Driver::Postgres(Arc::new(Postgres::new(cfg, &fencing))),
            DriverConfig::Sample {
                supervisor,
                token,
                token_file,
            } => Driver::Sample {
                supervisor: if supervisor.is_empty() {
                    default_supervisor.trim_end_matches('/').to_owned()
                } else {
                    supervisor.trim_end_matches('/').to_owned()
                },
                http: crate::actuator::supervisor_client(token.token_or_file(token_file, "token")),
                fencing,
            },
        }
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, String> {
        let Driver::Sample {
            supervisor, http, ..
        } = self
        else {
            return Err("not the sample driver".into());
        };
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
        let Driver::Sample {
            supervisor,
            http,
            fencing,
        } = self
        else {
            return Err("not the sample driver".into());
        };
        let req = http.post(format!("{supervisor}{path}"));
        let r = fencing
            .stamp(req)
            .map_err(|e| e.to_string())?
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
    pub async fn members(&self) -> Result<BTreeMap<String, String>, String> {
        if let Driver::Postgres(pg) = self {
            return Ok(pg.members());
        }
        let procs: Vec<Process> = self.get("/api/v1/processes").await?;
        Ok(procs
            .into_iter()
            .filter(|p| p.tier == "db")
            .map(|p| (p.name, p.addr.to_string()))
            .collect())
    }

    /// The primary and epoch the database runs with now.
    pub async fn topology(&self) -> Result<(String, u64), String> {
        if let Driver::Postgres(pg) = self {
            return pg.topology().await;
        }
        let t: Topology = self.get("/api/v1/db/topology").await?;
        Ok((t.primary_name, t.epoch))
    }

    /// Ready `primary` for the mode the target runs in (PostgreSQL in
    /// synchronous mode: its `synchronous_standby_names`).
    pub async fn prepare(&self, primary: &str) -> Result<(), String> {
        match self {
            Driver::Postgres(pg) => pg.prepare(primary).await,
            Driver::Sample { .. } => Ok(()),
        }
    }

    /// Probe `member` (found at `at`, as [`Self::members`] says) once,
    /// within `timeout`.
    pub async fn probe(&self, member: &str, at: &str, timeout: Duration) -> Probe {
        let http = match self {
            Driver::Postgres(pg) => return pg.probe(member, timeout).await,
            Driver::Sample { http, .. } => http,
        };
        let Ok(addr) = at.parse::<SocketAddr>() else {
            return Probe::Failed(format!("{at:?} is not an address"));
        };
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

    /// Have `member` follow `primary` (a member that came back read-only,
    /// stopped, or was fenced, and missed being re-attached); `rewind`: it
    /// was told to follow before and did not (PostgreSQL: rewind it).
    pub async fn rejoin(&self, member: &str, primary: &str, rewind: bool) -> Result<(), String> {
        if let Driver::Postgres(pg) = self {
            return pg.rejoin(member, primary, rewind).await;
        }
        self.post(
            "/api/v1/db/rejoin",
            serde_json::json!({"name": member}),
            Duration::from_secs(5),
        )
        .await
        .map(|_| ())
    }

    /// Stop `member` taking writes at `epoch`; the last position it
    /// wrote, when the driver learns it (PostgreSQL's shutdown checkpoint).
    pub async fn fence(&self, member: &str, epoch: u64) -> Result<Option<u64>, String> {
        if let Driver::Postgres(pg) = self {
            return pg.fence(member).await;
        }
        self.post(
            "/api/v1/db/fence",
            serde_json::json!({"name": member, "epoch": epoch}),
            Duration::from_secs(2),
        )
        .await
        .map(|_| None)
    }

    /// After a switchover that could not finish: `member`, fenced, leads
    /// again at `epoch` (PostgreSQL: started again as it was).
    pub async fn lead_again(
        &self,
        member: &str,
        epoch: u64,
        repoint: &[String],
    ) -> Result<(), String> {
        if let Driver::Postgres(pg) = self {
            return pg.start(member).await;
        }
        self.promote(member, epoch, repoint).await.map(|_| ())
    }

    /// Promote `member` at `epoch`; the `repoint` tiers are given the new
    /// primary and the other members re-attached.
    pub async fn promote(
        &self,
        member: &str,
        epoch: u64,
        repoint: &[String],
    ) -> Result<Promoted, String> {
        if let Driver::Postgres(pg) = self {
            return pg.promote(member).await;
        }
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
            epoch: None,
        })
    }
}
