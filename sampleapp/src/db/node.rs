//! One database node: its role, epoch, WAL and data, and the rules that keep
//! two primaries from ever accepting writes under the same epoch.
//!
//! - A write carries the epoch its writer believes current. A primary
//!   accepts it only at its own epoch; a higher writer epoch proves this
//!   node was deposed, so it fences itself and refuses.
//! - Promotion raises the epoch and writes an `Epoch` record; replicas pull
//!   it like any other record.
//! - A former primary that rejoins sends the epoch of its last record; if
//!   it holds records the new primary never had, it is told to truncate to
//!   where the new epoch began and then catches up. What it drops is kept
//!   in `discarded.jsonl` beside its WAL (never read back: evidence of what
//!   was lost, for the operator and the fault tests).
//! - A primary restarted after a crash comes back read-only: it serves
//!   reads and takes no writes until told to follow (or promoted), so a
//!   failover that happened while it was down never meets two primaries.
//! - A partition is a node that stops answering named peers
//!   ([`PEER_HEADER`]): their requests hang until the peer gives up.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use super::wal::{Op, Record, Wal, WalError};
use crate::api::ApiError;
use crate::config::{DbConfig, FsyncPolicy, ReplicationMode};
use crate::fault::Faults;

/// Records sent per pull at most.
pub const PULL_BATCH: usize = 1000;

/// Header naming who is asking (a replica's pulls carry its name; any
/// client may name itself), for partitions.
pub const PEER_HEADER: &str = "x-peer-name";

/// The node's role now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "role")]
pub enum Role {
    /// Accepts writes.
    Primary,
    /// Pulls from `primary`.
    Replica {
        /// The primary it follows.
        primary: SocketAddr,
    },
    /// Deposed: saw a higher epoch, refuses writes until told to follow.
    Fenced,
    /// Restarted after a crash as primary: serves reads, refuses writes and
    /// replicates from no one until told to follow or promoted.
    ReadOnly,
}

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    epoch: u64,
}

/// What a replica asks for.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PullRequest {
    /// First lsn wanted; everything before it is acknowledged.
    pub from: u64,
    /// Epoch of the replica's last record.
    pub last_epoch: u64,
    /// Replica name, for ack tracking.
    pub replica: String,
    /// Long-poll: how long to wait for new records.
    pub wait_ms: Option<u64>,
}

/// What the primary answers.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct PullResponse {
    /// Records from `from` on.
    pub records: Vec<Record>,
    /// The primary's epoch.
    pub epoch: u64,
    /// The primary's last lsn.
    pub head_lsn: u64,
    /// The primary's WAL size.
    pub head_bytes: u64,
    /// Time of the first record not in this answer, when some remain.
    pub first_unsent_ts_ms: Option<u64>,
    /// The replica's log diverges: drop everything after this lsn first.
    pub truncate_to: Option<u64>,
    /// The answering node is fenced: its log is whole but it takes no
    /// writes, so the replica has no working primary (and must not take
    /// the fence's epoch for one).
    #[serde(default)]
    pub fenced: bool,
}

/// What a node's data directory says about it, read without starting it:
/// `(epoch of its last record, its last lsn, highest epoch it has seen)`.
pub fn inspect(dir: &Path) -> Result<Option<(u64, u64, u64)>, ApiError> {
    let path = dir.join("wal.jsonl");
    if !path.exists() {
        return Ok(None);
    }
    let (wal, _) = Wal::open(&path).map_err(wal_err)?;
    let meta = std::fs::read(dir.join("meta.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Meta>(&b).ok())
        .map(|m| m.epoch)
        .unwrap_or(0);
    Ok(Some((
        wal.last_epoch(),
        wal.last_lsn(),
        meta.max(wal.last_epoch()),
    )))
}

/// Status of a node, as `GET /-/status` reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// Node name.
    pub name: String,
    /// Current role.
    #[serde(flatten)]
    pub role: Role,
    /// Current epoch.
    pub epoch: u64,
    /// Last lsn in the WAL.
    pub last_lsn: u64,
    /// WAL size.
    pub wal_bytes: u64,
    /// Bytes behind the primary (replicas).
    pub lag_bytes: u64,
    /// Seconds behind the primary (replicas).
    pub lag_seconds: f64,
    /// Last lsn each replica acknowledged (primary).
    pub replica_acks: HashMap<String, u64>,
    /// Epoch of the last record in the WAL.
    pub last_epoch: u64,
    /// Replicas: whether the last pull from the primary succeeded.
    pub primary_ok: Option<bool>,
    /// Replicas: milliseconds since the last successful pull.
    pub primary_contact_ms: Option<u64>,
    /// Replicas: the primary's last lsn as last seen.
    pub primary_head_lsn: u64,
    /// Replicas: the primary's WAL size as last seen.
    pub primary_head_bytes: u64,
    /// Peers whose requests this node does not answer (a partition).
    pub partitioned_from: Vec<String>,
}

#[derive(Debug, Default)]
struct Follow {
    head_bytes: u64,
    head_lsn: u64,
    first_unsent_ts_ms: Option<u64>,
    last_contact: Option<Instant>,
    /// Whether the last pull attempt succeeded.
    ok: bool,
}

#[derive(Debug)]
struct Inner {
    role: Role,
    epoch: u64,
    wal: Wal,
    data: HashMap<String, (serde_json::Value, u64)>,
    acks: HashMap<String, u64>,
    follow: Follow,
    dirty: bool,
}

/// A database node. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Node {
    name: String,
    config: DbConfig,
    dir: PathBuf,
    inner: Arc<Mutex<Inner>>,
    head: watch::Sender<u64>,
    acked: watch::Sender<u64>,
    role_changed: Arc<Notify>,
    blocked: Arc<Mutex<Vec<String>>>,
    faults: Faults,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn wal_err(e: WalError) -> ApiError {
    ApiError::Internal(e.to_string())
}

impl Node {
    /// Open the node's WAL in `dir` and start it in `role` at (at least) `epoch`.
    pub fn open(
        name: &str,
        config: DbConfig,
        role: Role,
        epoch: u64,
        dir: &Path,
    ) -> Result<Self, ApiError> {
        std::fs::create_dir_all(dir).map_err(|e| ApiError::Internal(e.to_string()))?;
        let (wal, torn) = Wal::open(&dir.join("wal.jsonl")).map_err(wal_err)?;
        if torn > 0 {
            tracing::warn!(
                torn_bytes = torn,
                "cut a torn record from the end of the WAL"
            );
        }
        let meta_epoch = std::fs::read(dir.join("meta.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Meta>(&b).ok())
            .map(|m| m.epoch)
            .unwrap_or(0);
        let epoch = epoch.max(meta_epoch).max(wal.last_epoch()).max(1);
        let mut wal = wal;
        if role == Role::Primary && wal.last_lsn() > 0 && epoch > wal.last_epoch() {
            // Leading under a new epoch: mark where it begins, so that a
            // node holding records of the old epoch beyond this point is
            // told to drop them when it rejoins.
            let rec = Record {
                lsn: wal.last_lsn() + 1,
                epoch,
                ts_ms: now_ms(),
                op: Op::Epoch,
            };
            wal.append(std::slice::from_ref(&rec)).map_err(wal_err)?;
            wal.sync().map_err(wal_err)?;
        }
        let mut data = HashMap::new();
        for r in wal.records() {
            apply(&mut data, r);
        }
        let last = wal.last_lsn();
        let node = Self {
            name: name.to_owned(),
            config,
            dir: dir.to_path_buf(),
            inner: Arc::new(Mutex::new(Inner {
                role,
                epoch,
                wal,
                data,
                acks: HashMap::new(),
                follow: Follow::default(),
                dirty: false,
            })),
            head: watch::Sender::new(last),
            acked: watch::Sender::new(0),
            role_changed: Arc::new(Notify::new()),
            blocked: Arc::new(Mutex::new(Vec::new())),
            faults: Faults::db(),
        };
        node.persist_meta(epoch)?;
        Ok(node)
    }

    /// The faults injected into this node.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn persist_meta(&self, epoch: u64) -> Result<(), ApiError> {
        let tmp = self.dir.join("meta.json.tmp");
        let body =
            serde_json::to_vec(&Meta { epoch }).map_err(|e| ApiError::Internal(e.to_string()))?;
        std::fs::write(&tmp, body)
            .and_then(|_| std::fs::rename(&tmp, self.dir.join("meta.json")))
            .map_err(|e| ApiError::Internal(format!("persisting epoch: {e}")))
    }

    /// On first start as primary: write the epoch record and seed products.
    pub fn seed_if_empty(&self) -> Result<(), ApiError> {
        let mut g = self.lock();
        if g.role != Role::Primary || g.wal.last_lsn() > 0 {
            return Ok(());
        }
        let epoch = g.epoch;
        let ts = now_ms();
        let mut recs = vec![Record {
            lsn: 1,
            epoch,
            ts_ms: ts,
            op: Op::Epoch,
        }];
        for id in 1..=u64::from(self.config.products) {
            recs.push(Record {
                lsn: id + 1,
                epoch,
                ts_ms: ts,
                op: Op::Put {
                    key: format!("product:{id}"),
                    value: serde_json::json!({
                        "id": id,
                        "name": format!("Product {id}"),
                        "price_cents": 100 + (id * 37) % 9900,
                    }),
                },
            });
        }
        g.wal.append(&recs).map_err(wal_err)?;
        g.wal.sync().map_err(wal_err)?;
        for r in &recs {
            apply(&mut g.data, r);
        }
        let last = g.wal.last_lsn();
        drop(g);
        self.head.send_replace(last);
        Ok(())
    }

    /// Read a key: its value and the lsn that wrote it.
    pub fn get(&self, key: &str) -> Option<(serde_json::Value, u64)> {
        self.lock().data.get(key).cloned()
    }

    /// Write `key` as a writer at `writer_epoch`. Returns the lsn once the
    /// write is acknowledged under the replication mode.
    pub async fn put(
        &self,
        key: String,
        value: serde_json::Value,
        writer_epoch: u64,
    ) -> Result<u64, ApiError> {
        let lsn = {
            let mut g = self.lock();
            match &g.role {
                Role::Primary => {}
                Role::Replica { primary } => {
                    return Err(ApiError::Conflict(format!(
                        "not the primary (epoch {}); the primary is {primary}",
                        g.epoch
                    )));
                }
                Role::Fenced => {
                    return Err(ApiError::Conflict(format!(
                        "fenced: this node was deposed (epoch {})",
                        g.epoch
                    )));
                }
                Role::ReadOnly => {
                    return Err(ApiError::Conflict(format!(
                        "read-only: restarted after a crash, waiting to follow a primary (epoch {})",
                        g.epoch
                    )));
                }
            }
            if writer_epoch > g.epoch {
                g.role = Role::Fenced;
                tracing::warn!(
                    writer_epoch,
                    epoch = g.epoch,
                    "fenced by a writer from a newer epoch"
                );
                self.role_changed.notify_waiters();
                return Err(ApiError::Conflict(format!(
                    "fenced: writer epoch {writer_epoch} is newer than this primary's epoch {}",
                    g.epoch
                )));
            }
            if writer_epoch < g.epoch {
                return Err(ApiError::Conflict(format!(
                    "stale epoch: writer epoch {writer_epoch} is older than the primary's epoch {}",
                    g.epoch
                )));
            }
            let rec = Record {
                lsn: g.wal.last_lsn() + 1,
                epoch: g.epoch,
                ts_ms: now_ms(),
                op: Op::Put { key, value },
            };
            g.wal.append(std::slice::from_ref(&rec)).map_err(wal_err)?;
            if self.config.fsync == FsyncPolicy::Always {
                g.wal.sync().map_err(wal_err)?;
            } else {
                g.dirty = true;
            }
            apply(&mut g.data, &rec);
            rec.lsn
        };
        self.head.send_replace(lsn);
        if self.config.replication == ReplicationMode::Sync {
            let mut rx = self.acked.subscribe();
            let waited =
                tokio::time::timeout(self.config.sync_timeout, rx.wait_for(|a| *a >= lsn)).await;
            if !matches!(waited, Ok(Ok(_))) {
                return Err(ApiError::Unavailable(format!(
                    "write at lsn {lsn} not confirmed by {} replica(s) within {:?}; not acknowledged",
                    self.config.sync_replicas, self.config.sync_timeout
                )));
            }
        }
        Ok(lsn)
    }

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

    /// Become primary under `epoch` (must be newer than the node's).
    pub fn promote(&self, epoch: u64) -> Result<u64, ApiError> {
        let mut g = self.lock();
        if epoch <= g.epoch {
            return Err(ApiError::Conflict(format!(
                "promotion epoch {epoch} must be greater than the current epoch {}",
                g.epoch
            )));
        }
        let rec = Record {
            lsn: g.wal.last_lsn() + 1,
            epoch,
            ts_ms: now_ms(),
            op: Op::Epoch,
        };
        g.wal.append(std::slice::from_ref(&rec)).map_err(wal_err)?;
        g.wal.sync().map_err(wal_err)?;
        self.persist_meta(epoch)?;
        g.epoch = epoch;
        g.role = Role::Primary;
        g.acks.clear();
        g.follow = Follow::default();
        drop(g);
        self.head.send_replace(rec.lsn);
        self.acked.send_replace(0);
        self.role_changed.notify_waiters();
        tracing::info!(epoch, lsn = rec.lsn, "promoted to primary");
        Ok(rec.lsn)
    }

    /// Stop taking writes at `epoch` (never lower than the node's): a
    /// deposed or about-to-be-deposed primary, before another is promoted.
    pub fn fence(&self, epoch: u64) -> Result<(), ApiError> {
        self.take_role(Role::Fenced, epoch, "fence")?;
        tracing::warn!(epoch, "fenced: takes no writes");
        Ok(())
    }

    /// Take `role` (not primary) at `epoch`, never lower than the node's
    /// (`what` names the request in the refusal).
    fn take_role(&self, role: Role, epoch: u64, what: &str) -> Result<(), ApiError> {
        let mut g = self.lock();
        if epoch < g.epoch {
            return Err(ApiError::Conflict(format!(
                "{what} epoch {epoch} is older than the current epoch {}",
                g.epoch
            )));
        }
        self.persist_meta(epoch)?;
        g.epoch = epoch;
        g.role = role;
        g.follow = Follow::default();
        drop(g);
        self.role_changed.notify_waiters();
        Ok(())
    }

    /// Stop answering `peers` (a partition; empty heals it).
    pub fn partition(&self, peers: Vec<String>) {
        tracing::warn!(?peers, "partitioned from these peers");
        *self.blocked.lock().unwrap_or_else(|e| e.into_inner()) = peers;
    }

    /// True when requests from `peer` go unanswered.
    pub fn is_partitioned_from(&self, peer: &str) -> bool {
        self.blocked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|p| p == peer)
    }

    /// Follow `primary` as a replica at `epoch` (never lower than the node's).
    pub fn follow(&self, primary: SocketAddr, epoch: u64) -> Result<(), ApiError> {
        self.take_role(Role::Replica { primary }, epoch, "follow")?;
        tracing::info!(%primary, epoch, "following");
        Ok(())
    }

    /// Current status.
    pub fn status(&self) -> Status {
        let g = self.lock();
        let (lag_bytes, lag_seconds) = lag(&g, self.config.sync_timeout);
        let replica = matches!(g.role, Role::Replica { .. });
        Status {
            name: self.name.clone(),
            role: g.role.clone(),
            epoch: g.epoch,
            last_lsn: g.wal.last_lsn(),
            wal_bytes: g.wal.bytes(),
            lag_bytes,
            lag_seconds,
            replica_acks: g.acks.clone(),
            last_epoch: g.wal.last_epoch(),
            primary_ok: replica.then_some(g.follow.ok),
            primary_contact_ms: g
                .follow
                .last_contact
                .filter(|_| replica)
                .map(|c| c.elapsed().as_millis() as u64),
            primary_head_lsn: g.follow.head_lsn,
            primary_head_bytes: g.follow.head_bytes,
            partitioned_from: self
                .blocked
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    /// Flush the WAL if the policy is `interval` and anything was written.
    pub fn flush_if_dirty(&self) {
        let mut g = self.lock();
        if g.dirty {
            if let Err(e) = g.wal.sync() {
                tracing::error!(error = %e, "WAL fsync failed");
            }
            g.dirty = false;
        }
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

    fn apply_pull(
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
fn hold_back(resp: &mut PullResponse, delay: Duration, now: u64) -> Option<Duration> {
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
fn keep_discarded(dir: &Path, records: &[Record]) -> Result<(), ApiError> {
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

/// The epoch a pull answer carries: a primary's own; a fenced node's is
/// its fence token, not an epoch it led, so it gives its last record's.
fn advertised(g: &Inner) -> u64 {
    if g.role == Role::Fenced {
        g.wal.last_epoch()
    } else {
        g.epoch
    }
}

fn apply(data: &mut HashMap<String, (serde_json::Value, u64)>, r: &Record) {
    if let Op::Put { key, value } = &r.op {
        data.insert(key.clone(), (value.clone(), r.lsn));
    }
}

/// Replication lag of a replica: bytes behind the primary's WAL as last
/// seen, and seconds since the oldest record it lacks was written (or since
/// it last heard from the primary, if that is longer ago than a pull takes).
fn lag(g: &Inner, pull_budget: Duration) -> (u64, f64) {
    if !matches!(g.role, Role::Replica { .. }) {
        return (0, 0.0);
    }
    let Some(contact) = g.follow.last_contact else {
        return (0, 0.0);
    };
    let bytes = g.follow.head_bytes.saturating_sub(g.wal.bytes());
    let behind = match g.follow.first_unsent_ts_ms {
        Some(ts) => (now_ms().saturating_sub(ts)) as f64 / 1000.0,
        None => 0.0,
    };
    let silent = contact.elapsed();
    let stale = if silent > pull_budget + Duration::from_secs(1) {
        silent.as_secs_f64()
    } else {
        0.0
    };
    (bytes, behind.max(stale))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> DbConfig {
        DbConfig {
            products: 3,
            fsync: FsyncPolicy::Never,
            ..DbConfig::default()
        }
    }

    fn addr() -> SocketAddr {
        ([127, 0, 0, 1], 9).into()
    }

    /// `db-2`, opened in `dir` as a replica of [`addr`] at epoch 1.
    fn replica_db2(dir: &Path) -> Node {
        Node::open("db-2", cfg(), Role::Replica { primary: addr() }, 1, dir).expect("open")
    }

    #[test]
    fn an_apply_delay_holds_back_records_younger_than_it() {
        let rec = |lsn, ts_ms| Record {
            lsn,
            epoch: 1,
            ts_ms,
            op: Op::Epoch,
        };
        let pulled = PullResponse {
            records: vec![rec(1, 1_000), rec(2, 5_000), rec(3, 9_000)],
            epoch: 1,
            head_lsn: 3,
            head_bytes: 300,
            first_unsent_ts_ms: None,
            truncate_to: None,
            fenced: false,
        };
        let mut r = pulled.clone();
        assert_eq!(hold_back(&mut r, Duration::ZERO, 10_000), None);
        assert_eq!(r.records.len(), 3, "no delay, no change");
        let mut r = pulled.clone();
        assert_eq!(hold_back(&mut r, Duration::from_secs(4), 10_000), None);
        assert_eq!(r.records.iter().map(|r| r.lsn).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(
            r.first_unsent_ts_ms,
            Some(9_000),
            "the lag counts from the first held"
        );
        let mut r = pulled;
        let wait = hold_back(&mut r, Duration::from_secs(30), 10_000);
        assert!(r.records.is_empty());
        assert_eq!(r.first_unsent_ts_ms, Some(1_000));
        assert_eq!(
            wait,
            Some(Duration::from_millis(200)),
            "asks again soon, not in a hot loop"
        );
    }

    #[tokio::test]
    async fn a_writer_from_a_newer_epoch_fences_the_old_primary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let n = Node::open("db-1", cfg(), Role::Primary, 1, dir.path()).expect("open");
        n.seed_if_empty().expect("seed");
        assert!(n.put("a".into(), 1.into(), 1).await.is_ok());
        let err = n.put("b".into(), 2.into(), 2).await.unwrap_err();
        assert!(err.to_string().contains("fenced"), "{err}");
        // Once fenced, not even writers of its own epoch get through.
        let err = n.put("c".into(), 3.into(), 1).await.unwrap_err();
        assert!(err.to_string().contains("fenced"), "{err}");
        assert_eq!(n.status().role, Role::Fenced);
        assert!(n.get("b").is_none() && n.get("c").is_none());
    }

    #[tokio::test]
    async fn a_writer_from_an_older_epoch_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let n = replica_db2(dir.path());
        n.promote(2).expect("promote");
        let err = n.put("a".into(), 1.into(), 1).await.unwrap_err();
        assert!(err.to_string().contains("stale epoch"), "{err}");
        assert!(n.put("a".into(), 1.into(), 2).await.is_ok());
        assert!(n.promote(2).is_err(), "an epoch is never reused");
    }

    #[tokio::test]
    async fn epoch_survives_restart_and_never_goes_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let n = replica_db2(dir.path());
            n.promote(3).expect("promote");
        }
        // Restarted with a stale spec that says epoch 1: it stays at 3.
        let n = replica_db2(dir.path());
        assert_eq!(n.status().epoch, 3);
        assert!(n.follow(addr(), 2).is_err());
    }

    #[tokio::test]
    async fn a_rejoining_old_primary_is_told_to_drop_its_divergent_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The new primary: replica of the old one up to lsn 4 (epoch 1
        // record + 3 products), then promoted at lsn 5 to epoch 2.
        let new = replica_db2(dir.path());
        let old_dir = tempfile::tempdir().expect("tempdir");
        let old = Node::open("db-1", cfg(), Role::Primary, 1, old_dir.path()).expect("open");
        old.seed_if_empty().expect("seed");
        let first = old
            .pull(PullRequest {
                from: 1,
                last_epoch: 0,
                replica: "db-2".into(),
                wait_ms: None,
            })
            .await
            .expect("pull");
        new.apply_pull(addr(), 1, first).expect("apply");
        assert_eq!(new.status().last_lsn, 4);
        // The old primary takes two writes that never replicate…
        old.put("lost-1".into(), 1.into(), 1).await.expect("w");
        old.put("lost-2".into(), 2.into(), 1).await.expect("w");
        new.promote(2).expect("promote");
        // …and rejoins: it has lsn 1..=6 at epoch 1, the new epoch began at 5.
        let answer = new
            .pull(PullRequest {
                from: 7,
                last_epoch: 1,
                replica: "db-1".into(),
                wait_ms: None,
            })
            .await
            .expect("pull");
        assert_eq!(answer.truncate_to, Some(4));
        old.follow(addr(), 2).expect("follow");
        old.apply_pull(addr(), 7, answer).expect("truncate");
        assert_eq!(old.status().last_lsn, 4);
        assert!(old.get("lost-1").is_none(), "divergent writes are gone");
        // …but kept beside the WAL, as evidence of what was lost.
        let kept = discarded(old_dir.path()).expect("discarded");
        assert_eq!(kept.iter().map(|r| r.lsn).collect::<Vec<_>>(), vec![5, 6]);
        let rest = new
            .pull(PullRequest {
                from: 5,
                last_epoch: 1,
                replica: "db-1".into(),
                wait_ms: None,
            })
            .await
            .expect("pull");
        assert_eq!(rest.truncate_to, None);
        old.apply_pull(addr(), 5, rest).expect("catch up");
        assert_eq!(old.status().last_lsn, new.status().last_lsn);
    }

    #[tokio::test]
    async fn a_fenced_primary_still_serves_its_log_but_lends_no_epoch_and_is_no_primary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = Node::open("db-1", cfg(), Role::Primary, 1, dir.path()).expect("open");
        old.seed_if_empty().expect("seed");
        old.put("k".into(), 1.into(), 1).await.expect("write");
        old.fence(2).expect("fence");
        let rdir = tempfile::tempdir().expect("tempdir");
        let r = replica_db2(rdir.path());
        let answer = old
            .pull(PullRequest {
                from: 1,
                last_epoch: 0,
                replica: "db-2".into(),
                wait_ms: None,
            })
            .await
            .expect("a fenced node serves its log");
        assert!(answer.fenced);
        assert_eq!(answer.epoch, 1, "the fence's epoch is not lent");
        r.apply_pull(addr(), 1, answer).expect("apply");
        let s = r.status();
        assert_eq!((s.last_lsn, s.epoch), (old.status().last_lsn, 1));
        assert_eq!(
            s.primary_ok,
            Some(false),
            "a fenced node is no working primary"
        );
        // So the replica can still be promoted at the fence's epoch.
        assert!(r.promote(2).is_ok());
    }

    #[tokio::test]
    async fn sync_write_waits_for_a_replica_ack_and_fails_without_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = DbConfig {
            replication: ReplicationMode::Sync,
            sync_timeout: Duration::from_millis(50),
            ..cfg()
        };
        let n = Node::open("db-1", c, Role::Primary, 1, dir.path()).expect("open");
        n.seed_if_empty().expect("seed");
        let err = n.put("a".into(), 1.into(), 1).await.unwrap_err();
        assert!(err.to_string().contains("not acknowledged"), "{err}");
        // A replica that has everything up to lsn 6 acks it by asking for 7…
        let n2 = n.clone();
        let write = tokio::spawn(async move { n2.put("b".into(), 2.into(), 1).await });
        let mut head = n.head.subscribe();
        head.wait_for(|h| *h >= 6).await.expect("write appended");
        n.pull(PullRequest {
            from: 7,
            last_epoch: 1,
            replica: "db-2".into(),
            wait_ms: None,
        })
        .await
        .expect("pull");
        assert_eq!(write.await.expect("join").expect("acknowledged"), 6);
    }
}
