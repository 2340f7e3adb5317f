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

mod replication;
pub use replication::discarded;

#[cfg(test)]
mod tests;
