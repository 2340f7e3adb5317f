//! Replication: the primary answers pulls from its WAL; a replica pulls,
//! applies what it gets (keeping what a new primary's history discards),
//! and holds back records younger than an injected replica lag.

use super::*;

impl Node {
    /// Serve a replica's pull: record its ack, then send what it lacks,
    /// waiting up to `wait_ms` for new records.
    pub async fn pull(&self, req: PullRequest) -> Result<PullResponse, ApiError> {
        {
            let mut g = self.lock();
            // A fenced primary still serves its log: a replica about to be
            // promoted in a switchover catches up from it.
            if !matches!(g.role, Role::Primary | Role::Fenced) {
                return Err(ApiError::Conflict("not the primary".into()));
            }
            let fenced = g.role == Role::Fenced;
            if req.last_epoch < g.epoch
                && let Some(start) = g.wal.first_lsn_after_epoch(req.last_epoch)
                && req.from > start
            {
                return Ok(PullResponse {
                    records: Vec::new(),
                    epoch: advertised(&g),
                    head_lsn: g.wal.last_lsn(),
                    head_bytes: g.wal.bytes(),
                    first_unsent_ts_ms: None,
                    truncate_to: Some(start - 1),
                    fenced,
                });
            }
            g.acks
                .insert(req.replica.clone(), req.from.saturating_sub(1));
            let k = self.config.sync_replicas.max(1) as usize;
            let mut acks: Vec<u64> = g.acks.values().copied().collect();
            acks.sort_unstable_by(|a, b| b.cmp(a));
            let confirmed = acks.get(k - 1).copied().unwrap_or(0);
            self.acked.send_if_modified(|v| {
                let changed = *v != confirmed;
                *v = confirmed;
                changed
            });
        }
        let wait = Duration::from_millis(req.wait_ms.unwrap_or(0).min(10_000));
        if !wait.is_zero() {
            let mut rx = self.head.subscribe();
            let _ = tokio::time::timeout(wait, rx.wait_for(|h| *h >= req.from)).await;
        }
        let g = self.lock();
        let records = g.wal.from_lsn(req.from, PULL_BATCH).to_vec();
        let next = req.from + records.len() as u64;
        let first_unsent_ts_ms = g.wal.from_lsn(next, 1).first().map(|r| r.ts_ms);
        Ok(PullResponse {
            records,
            epoch: advertised(&g),
            head_lsn: g.wal.last_lsn(),
            head_bytes: g.wal.bytes(),
            first_unsent_ts_ms,
            truncate_to: None,
            fenced: g.role == Role::Fenced,
        })
    }

    /// The replication loop: while a replica, pull from the primary and
    /// append what arrives. Runs for the life of the process.
    pub async fn replicate(self, client: reqwest::Client) {
        const WAIT_MS: u64 = 1000;
        loop {
            let notified = self.role_changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let following = {
                let g = self.lock();
                match g.role {
                    Role::Replica { primary } => {
                        Some((primary, g.wal.last_lsn() + 1, g.wal.last_epoch()))
                    }
                    _ => None,
                }
            };
            let Some((primary, from, last_epoch)) = following else {
                notified.await;
                continue;
            };
            let url = format!("http://{primary}/repl/pull");
            let req = PullRequest {
                from,
                last_epoch,
                replica: self.name.clone(),
                wait_ms: Some(WAIT_MS),
            };
            let answer = client
                .get(&url)
                .query(&req)
                .header(PEER_HEADER, &self.name)
                .timeout(Duration::from_millis(WAIT_MS + 2000))
                .send()
                .await;
            let resp = match answer {
                Ok(r) if r.status().is_success() => r.json::<PullResponse>().await,
                Ok(r) => {
                    tracing::debug!(status = r.status().as_u16(), %primary, "pull refused");
                    self.lock().follow.ok = false;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Err(e) => Err(e),
            };
            let resp = match resp {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, %primary, "pull failed");
                    self.lock().follow.ok = false;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let mut resp = resp;
            let wait = hold_back(&mut resp, self.faults.apply_delay(), now_ms());
            if let Err(e) = self.apply_pull(primary, from, resp) {
                tracing::error!(error = %e, "applying replicated records failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            if let Some(w) = wait {
                tokio::time::sleep(w).await;
            }
        }
    }

    pub(super) fn apply_pull(
        &self,
        primary: SocketAddr,
        from: u64,
        resp: PullResponse,
    ) -> Result<(), ApiError> {
        let mut g = self.lock();
        if g.role != (Role::Replica { primary }) || g.wal.last_lsn() + 1 != from {
            return Ok(()); // role or log changed while we waited: ask again
        }
        if let Some(t) = resp.truncate_to {
            tracing::warn!(
                from = t + 1,
                to = g.wal.last_lsn(),
                "dropping records the new primary never had"
            );
            let dropped: Vec<Record> = g.wal.from_lsn(t + 1, usize::MAX).to_vec();
            keep_discarded(&self.dir, &dropped)?;
            g.wal.truncate_after(t).map_err(wal_err)?;
            let mut data = HashMap::new();
            for r in g.wal.records() {
                apply(&mut data, r);
            }
            g.data = data;
            return Ok(());
        }
        if !resp.records.is_empty() {
            g.wal.append(&resp.records).map_err(wal_err)?;
            if self.config.fsync == FsyncPolicy::Always {
                g.wal.sync().map_err(wal_err)?;
            } else {
                g.dirty = true;
            }
            for r in &resp.records {
                apply(&mut g.data, r);
            }
        }
        g.epoch = g.epoch.max(resp.epoch);
        g.follow = Follow {
            head_bytes: resp.head_bytes,
            head_lsn: resp.head_lsn,
            first_unsent_ts_ms: resp.first_unsent_ts_ms,
            last_contact: Some(Instant::now()),
            // A fenced primary's log still comes, but it is no primary.
            ok: !resp.fenced,
        };
        Ok(())
    }
}

/// Under an apply delay (a replica lagging on purpose), keep only the
/// pulled records at least `delay` old at `now`; the rest are pulled again
/// later, and the lag counts from the first of them. When nothing is left
/// to apply, returns how long to wait before asking again.
pub(super) fn hold_back(resp: &mut PullResponse, delay: Duration, now: u64) -> Option<Duration> {
    if delay.is_zero() {
        return None;
    }
    let cut = now.saturating_sub(delay.as_millis() as u64);
    let due = resp
        .records
        .iter()
        .position(|r| r.ts_ms > cut)
        .unwrap_or(resp.records.len());
    let held = resp.records.get(due)?.ts_ms;
    resp.records.truncate(due);
    resp.first_unsent_ts_ms = Some(held);
    (due == 0).then(|| Duration::from_millis((held - cut).clamp(1, 200)))
}

/// Append records a rejoining node drops to `discarded.jsonl` in `dir`
/// (synced before the WAL loses them).
pub(super) fn keep_discarded(dir: &Path, records: &[Record]) -> Result<(), ApiError> {
    use std::io::Write as _;
    if records.is_empty() {
        return Ok(());
    }
    let mut text = String::new();
    for r in records {
        let line = serde_json::to_string(r).map_err(|e| ApiError::Internal(e.to_string()))?;
        text.push_str(&line);
        text.push('\n');
    }
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("discarded.jsonl"))?;
        f.write_all(text.as_bytes())?;
        f.sync_data()
    };
    write().map_err(|e| ApiError::Internal(format!("keeping discarded records: {e}")))
}

/// The records a node dropped when it rejoined a newer epoch, oldest first
/// (`discarded.jsonl` in its data directory; none when it never did).
pub fn discarded(dir: &Path) -> Result<Vec<Record>, ApiError> {
    let text = match std::fs::read_to_string(dir.join("discarded.jsonl")) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ApiError::Internal(e.to_string())),
    };
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| ApiError::Internal(format!("discarded.jsonl:{}: {e}", i + 1)))
        })
        .collect()
}
