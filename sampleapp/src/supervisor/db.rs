//! The database tier's actuator: promotion (fence, promote, repoint every
//! web), rejoining, fencing, network partitions and faults.

use super::*;

impl Supervisor {
    /// The current db topology.
    pub fn db_topology(&self) -> DbTopology {
        lock(&self.s.db).clone()
    }

    /// Promote a replica (the named one, or the most caught-up reachable
    /// one) under `epoch` (default: the current one + 1; a given one must
    /// be newer), repoint the other db nodes and every web instance, and
    /// demote the old primary if it still answers. A web instance that
    /// cannot be repointed is restarted (it comes back with the new
    /// topology), so none keeps writing to the old primary.
    pub async fn promote(
        &self,
        name: Option<String>,
        epoch: Option<u64>,
    ) -> Result<PromoteReport, ApiError> {
        self.promote_repointing(name, epoch, true).await
    }

    /// [`Self::promote`], repointing the web tier only when `webs`. The
    /// current primary may be named: it leads again under the new epoch
    /// (a switchover that could not complete). Serialized with scaling, so
    /// no web starts with the old topology meanwhile.
    pub async fn promote_repointing(
        &self,
        name: Option<String>,
        epoch: Option<u64>,
        webs: bool,
    ) -> Result<PromoteReport, ApiError> {
        let _guard = self.s.scale_lock.lock().await;
        let old = self.db_topology();
        let epoch = epoch.unwrap_or(old.topology.epoch + 1);
        if epoch <= old.topology.epoch {
            return Err(ApiError::Conflict(format!(
                "epoch {epoch} is not newer than the current epoch {}",
                old.topology.epoch
            )));
        }
        if let Some(n) = &name
            && !self
                .processes()
                .iter()
                .any(|p| p.tier == "db" && p.name == *n)
        {
            return Err(ApiError::NotFound(format!("no db member {n:?}")));
        }
        let candidates: Vec<ProcInfo> = self
            .processes()
            .into_iter()
            .filter(|p| {
                p.tier == "db"
                    && p.pid.is_some()
                    && (p.name != old.primary_name || name.as_deref() == Some(p.name.as_str()))
            })
            .filter(|p| name.as_ref().is_none_or(|n| *n == p.name))
            .collect();
        let mut best: Option<(ProcInfo, u64)> = None;
        for p in candidates {
            let st = self
                .s
                .client
                .get(format!("http://{}/-/status", p.addr))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            let lsn = match st {
                Ok(r) if r.status().is_success() => r
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|v| v["last_lsn"].as_u64()),
                _ => None,
            };
            if let Some(lsn) = lsn
                && best.as_ref().is_none_or(|(_, b)| lsn > *b)
            {
                best = Some((p, lsn));
            }
        }
        let Some((target, lsn)) = best else {
            return Err(ApiError::Unavailable(match name {
                Some(n) => format!("{n} is not a reachable replica"),
                None => "no reachable replica to promote".into(),
            }));
        };
        let r = self
            .s
            .client
            .post(format!("http://{}/-/promote", target.addr))
            .json(&serde_json::json!({ "epoch": epoch }))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| ApiError::Upstream(format!("{}: {e}", target.name)))?;
        if !r.status().is_success() {
            let body = r.text().await.unwrap_or_default();
            return Err(ApiError::Upstream(format!(
                "{} refused promotion: {body}",
                target.name
            )));
        }
        // The lsn of its epoch record: writes under the new epoch follow it.
        let lsn = r
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| v["last_lsn"].as_u64())
            .unwrap_or(lsn);
        let promoted_at = now_ms();
        let replicas: Vec<ProcInfo> = self
            .processes()
            .into_iter()
            .filter(|p| p.tier == "db" && p.name != target.name)
            .collect();
        let topology = Topology {
            epoch,
            primary: target.addr,
            replicas: replicas.iter().map(|p| p.addr).collect(),
        };
        *lock(&self.s.db) = DbTopology {
            primary_name: target.name.clone(),
            topology: topology.clone(),
        };
        // Webs first: they carry the writes.
        let mut repointed = Vec::new();
        let mut restarted = Vec::new();
        for w in self.webs().into_iter().filter(|p| webs && p.pid.is_some()) {
            let r = self
                .s
                .client
                .put(format!("http://{}/-/topology", w.addr))
                .json(&topology)
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if matches!(&r, Ok(r) if r.status().is_success()) {
                repointed.push(w.name);
            } else {
                tracing::warn!(name = %w.name, "could not repoint web: restarting it with the new topology");
                if let Err(e) = self.signal(&w.name, Signal::SIGKILL, true).await {
                    tracing::error!(name = %w.name, error = %e, "could not restart web");
                }
                restarted.push(w.name);
            }
        }
        let repointed_at = now_ms();
        let mut followed = Vec::new();
        let mut unreachable = Vec::new();
        for p in replicas.iter().filter(|p| p.pid.is_some()) {
            let r = self
                .s
                .client
                .post(format!("http://{}/-/follow", p.addr))
                .json(&serde_json::json!({ "primary": target.addr, "epoch": epoch }))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if matches!(&r, Ok(r) if r.status().is_success()) {
                followed.push(p.name.clone());
            } else {
                tracing::warn!(name = %p.name, "could not repoint; it will follow when restarted");
                unreachable.push(p.name.clone());
            }
        }
        let explanation = format!(
            "promoted {} (lsn {lsn}) to primary at epoch {epoch}; {} was primary at epoch {}",
            target.name, old.primary_name, old.topology.epoch
        );
        tracing::info!("{explanation}");
        Ok(PromoteReport {
            primary: target.name,
            epoch,
            lsn,
            explanation,
            repointed,
            restarted,
            followed,
            unreachable,
            promoted_at_ms: promoted_at,
            repointed_at_ms: repointed_at,
        })
    }

    /// Have db member `name` follow the current primary at the current
    /// epoch (one that came back read-only after a crash and missed the
    /// promotion's re-attachment, or a fenced one).
    pub async fn rejoin(&self, name: &str) -> Result<serde_json::Value, ApiError> {
        let (info, _) = self.get(name)?;
        let db = self.db_topology();
        if info.tier != "db" {
            return Err(ApiError::BadRequest(format!("{name} is not a db member")));
        }
        if db.primary_name == name {
            return Err(ApiError::Conflict(format!("{name} is the primary")));
        }
        self.node_call(
            &info,
            "/-/follow",
            serde_json::json!({ "primary": db.topology.primary, "epoch": db.topology.epoch }),
            true,
        )
        .await
    }

    /// Fence db member `name` at `epoch`: it takes no writes from then on
    /// (before another is promoted, when it still answers).
    pub async fn fence(&self, name: &str, epoch: u64) -> Result<serde_json::Value, ApiError> {
        let (info, _) = self.get(name)?;
        if info.tier != "db" {
            return Err(ApiError::BadRequest(format!("{name} is not a db member")));
        }
        self.node_call(
            &info,
            "/-/fence",
            serde_json::json!({ "epoch": epoch }),
            true,
        )
        .await
    }

    /// Partition db member `name` from `peers` (the names clients give in
    /// their `x-peer-name` header; a replica's pulls carry its name): it
    /// stops answering them. An empty list heals it.
    pub async fn partition(
        &self,
        name: &str,
        peers: Vec<String>,
    ) -> Result<serde_json::Value, ApiError> {
        let (info, _) = self.get(name)?;
        if info.tier != "db" {
            return Err(ApiError::BadRequest(format!(
                "{name} is not a db member (partitions are between db members and their peers)"
            )));
        }
        self.node_call(
            &info,
            "/-/partition",
            serde_json::json!({ "peers": peers }),
            false,
        )
        .await
    }

    /// Inject (or heal, with `"0s"`) latency, query time or replica lag
    /// into cache or db process `name`; the faults in force come back.
    pub async fn faults(
        &self,
        name: &str,
        faults: crate::fault::FaultSettings,
    ) -> Result<serde_json::Value, ApiError> {
        let (info, _) = self.get(name)?;
        let db_only = faults.query_time.is_some() || faults.replica_lag.is_some();
        match info.tier.as_str() {
            "db" => {}
            "cache" if !db_only => {}
            "cache" => {
                return Err(ApiError::BadRequest(format!(
                    "{name} is the cache: only latency can be injected into it (query_time and replica_lag are the db's)"
                )));
            }
            t => {
                return Err(ApiError::BadRequest(format!(
                    "{name} is a {t} process: latency, query_time and replica_lag are injected into the cache or a db member (the web tier has error_rate and service_time at PUT /api/v1/web/capacity)"
                )));
            }
        }
        self.node_call(
            &info,
            "/-/faults",
            serde_json::to_value(&faults).map_err(|e| ApiError::Internal(e.to_string()))?,
            false,
        )
        .await
    }

    /// POST (or PUT) `body` to a db node's admin `path`; its status back.
    pub(super) async fn node_call(
        &self,
        info: &ProcInfo,
        path: &str,
        body: serde_json::Value,
        post: bool,
    ) -> Result<serde_json::Value, ApiError> {
        let url = format!("http://{}{path}", info.addr);
        let req = if post {
            self.s.client.post(url)
        } else {
            self.s.client.put(url)
        };
        let r = req
            .json(&body)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .map_err(|e| ApiError::Upstream(format!("{}: {e}", info.name)))?;
        let ok = r.status().is_success();
        let text = r.text().await.unwrap_or_default();
        if !ok {
            return Err(ApiError::Upstream(format!("{}: {text}", info.name)));
        }
        serde_json::from_str(&text).map_err(|e| ApiError::Upstream(format!("{}: {e}", info.name)))
    }
}

/// The outcome of a promotion.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PromoteReport {
    /// The new primary.
    pub primary: String,
    /// The new epoch.
    pub epoch: u64,
    /// The new primary's last lsn when chosen.
    pub lsn: u64,
    /// One line saying what happened and why.
    pub explanation: String,
    /// Web instances given the new topology.
    #[serde(default)]
    pub repointed: Vec<String>,
    /// Web instances that could not be, restarted with it instead.
    #[serde(default)]
    pub restarted: Vec<String>,
    /// Other db members now following the new primary.
    #[serde(default)]
    pub followed: Vec<String>,
    /// Other db members that did not answer (they follow when restarted).
    #[serde(default)]
    pub unreachable: Vec<String>,
    /// When the node accepted the promotion (ms since the epoch).
    #[serde(default)]
    pub promoted_at_ms: u64,
    /// When every web had the new topology.
    #[serde(default)]
    pub repointed_at_ms: u64,
}
