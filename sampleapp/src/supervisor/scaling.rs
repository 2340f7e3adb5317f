//! Scaling the web tier: instances started warm and joined to the lb, or
//! drained by the lb and stopped; and the capacity knobs of every web.

use super::*;

impl Supervisor {
    pub(super) fn lb_admin(&self) -> Result<SocketAddr, ApiError> {
        lock(&self.s.lb_admin).ok_or_else(|| ApiError::Unavailable("lb not started".into()))
    }

    pub(super) fn webs(&self) -> Vec<ProcInfo> {
        let mut v: Vec<ProcInfo> = self
            .processes()
            .into_iter()
            .filter(|p| p.tier == "web")
            .collect();
        v.sort_by_key(|p| web_index(&p.name));
        v
    }

    /// Set the number of web instances. New ones join the lb once healthy;
    /// removed ones are drained by the lb first, then stopped.
    pub async fn scale_web(&self, replicas: u32) -> Result<ScaleStatus, ApiError> {
        let max = self.s.config.web.max_instances;
        if replicas == 0 || replicas > max {
            return Err(ApiError::BadRequest(format!(
                "replicas: must be between 1 and {max}, got {replicas}"
            )));
        }
        let _guard = self.s.scale_lock.lock().await;
        let lb = self.lb_admin()?;
        let current = self.webs();
        let have = current.len() as u32;
        if replicas > have {
            let first = current
                .iter()
                .map(|p| web_index(&p.name))
                .max()
                .unwrap_or(0)
                + 1;
            for index in first..first + (replicas - have) {
                let name = format!("web-{index}");
                let spec = self
                    .web_spec(&name, self.addr(0))
                    .map_err(|e| ApiError::Internal(e.to_string()))?;
                let addr = self
                    .launch(spec)
                    .await
                    .map_err(|e| ApiError::Internal(format!("{e:#}")))?;
                if self.s.config.web.warm_up.is_zero() {
                    self.join_lb(lb, &name, addr).await?;
                } else {
                    // A cold instance joins when warm, as a Kubernetes
                    // pod joins its Service when ready: the count asked
                    // for is there at once, the capacity after warm-up.
                    let sup = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = sup.join_lb(lb, &name, addr).await {
                            tracing::warn!(%name, error = %e, "web instance did not join the lb");
                        }
                    });
                }
            }
        } else {
            for p in current.iter().rev().take((have - replicas) as usize) {
                let r = self
                    .s
                    .client
                    .delete(format!("http://{lb}/-/backends/{}", p.name))
                    .send()
                    .await
                    .map_err(|e| ApiError::Upstream(format!("lb: {e}")))?;
                if !r.status().is_success() && r.status() != StatusCode::NOT_FOUND {
                    return Err(ApiError::Upstream(format!(
                        "lb refused to remove {}: HTTP {}",
                        p.name,
                        r.status().as_u16()
                    )));
                }
                if p.pid.is_some() {
                    self.signal(&p.name, Signal::SIGTERM, false).await?;
                }
                lock(&self.s.procs).remove(&p.name);
                self.write_targets();
                tracing::info!(name = %p.name, "web instance removed");
            }
        }
        Ok(self.scale_status())
    }

    /// Wait until the web instance at `addr` is healthy, then add it to
    /// the lb (unless it was removed meanwhile).
    pub(super) async fn join_lb(
        &self,
        lb: SocketAddr,
        name: &str,
        addr: SocketAddr,
    ) -> Result<(), ApiError> {
        self.wait_healthy(addr)
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))?;
        if !lock(&self.s.procs).contains_key(name) {
            return Ok(());
        }
        let r = self
            .s
            .client
            .post(format!("http://{lb}/-/backends"))
            .json(&BackendSpec {
                name: name.to_owned(),
                addr,
            })
            .send()
            .await
            .map_err(|e| ApiError::Upstream(format!("lb: {e}")))?;
        if !r.status().is_success() {
            return Err(ApiError::Upstream(format!(
                "lb refused {name}: HTTP {}",
                r.status().as_u16()
            )));
        }
        tracing::info!(%name, "web instance added");
        Ok(())
    }

    /// Web instances wanted and running.
    pub fn scale_status(&self) -> ScaleStatus {
        let webs = self.webs();
        ScaleStatus {
            replicas: webs.len() as u32,
            running: webs
                .iter()
                .filter(|p| p.state == ProcState::Running)
                .count() as u32,
            instances: webs.into_iter().map(|p| p.name).collect(),
        }
    }

    /// Set capacity knobs on every web instance (and for new ones).
    pub async fn set_capacity(&self, cap: Capacity) -> Result<Capacity, ApiError> {
        let mut problems = Vec::new();
        cap.validate_at("capacity", &mut problems);
        if !problems.is_empty() {
            return Err(ApiError::BadRequest(problems.join("; ")));
        }
        *lock(&self.s.capacity) = cap.clone();
        for p in self.webs().into_iter().filter(|p| p.pid.is_some()) {
            let r = self
                .s
                .client
                .put(format!("http://{}/-/capacity", p.addr))
                .json(&cap)
                .send()
                .await;
            if let Err(e) = r {
                tracing::warn!(name = %p.name, error = %e, "could not set capacity");
            }
        }
        Ok(cap)
    }
}

/// The web tier's size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScaleStatus {
    /// Instances wanted.
    pub replicas: u32,
    /// Instances running now.
    pub running: u32,
    /// Their names.
    pub instances: Vec<String>,
}
