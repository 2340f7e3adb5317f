//! What the supervisor tells one child process to be: the process spec.
//!
//! The supervisor writes it as JSON to `<data_dir>/run/<name>.json` and starts
//! `keel sampleapp run --spec <file>`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{CacheConfig, Capacity, DbConfig, LbConfig};

/// Where the database is: which node takes writes, under which epoch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Fencing epoch of the current primary.
    pub epoch: u64,
    /// The node that takes writes.
    pub primary: SocketAddr,
    /// Nodes that serve reads.
    pub replicas: Vec<SocketAddr>,
}

/// A load-balancer backend.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackendSpec {
    /// Process name, e.g. `web-1`.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// A database node's role.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum DbRole {
    /// Takes writes.
    Primary,
    /// Follows `primary`.
    Replica {
        /// Where the primary listens.
        primary: SocketAddr,
    },
    /// A primary restarted after a crash: reads only, until told to follow
    /// or promoted.
    ReadOnly,
}

/// Tier-specific part of a spec.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "tier", deny_unknown_fields)]
pub enum TierSpec {
    /// Load balancer.
    Lb {
        /// Strategy, health checks, timeouts.
        config: LbConfig,
        /// Initial backends.
        backends: Vec<BackendSpec>,
        /// Where the admin API (the backend list) listens.
        admin_listen: SocketAddr,
    },
    /// Web instance.
    Web {
        /// Capacity knobs.
        capacity: Capacity,
        /// The cache.
        cache: SocketAddr,
        /// The database.
        db: Topology,
        /// Session lifetime.
        #[serde(with = "keel_core::duration")]
        session_ttl: Duration,
        /// Product cache lifetime.
        #[serde(with = "keel_core::duration")]
        product_ttl: Duration,
        /// How long after start the instance reports itself not ready.
        #[serde(with = "keel_core::duration", default)]
        warm_up: Duration,
    },
    /// Cache.
    Cache {
        /// Memory bound and default TTL.
        config: CacheConfig,
    },
    /// Database node.
    Db {
        /// Replication, fsync, seeding.
        config: DbConfig,
        /// Role at start.
        role: DbRole,
        /// Epoch at start (a node never goes below the epoch in its own state).
        epoch: u64,
        /// Where its WAL lives.
        data_dir: PathBuf,
    },
}

impl TierSpec {
    /// The tier's name as used in labels (`lb`, `web`, `cache`, `db`).
    pub fn tier(&self) -> &'static str {
        match self {
            TierSpec::Lb { .. } => "lb",
            TierSpec::Web { .. } => "web",
            TierSpec::Cache { .. } => "cache",
            TierSpec::Db { .. } => "db",
        }
    }
}

/// Everything one child process needs to run.
// No deny_unknown_fields here: serde cannot combine it with `flatten`; the
// tier variants deny unknown fields themselves.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessSpec {
    /// Instance name, e.g. `web-2`.
    pub name: String,
    /// Address to bind (port 0 picks a free one, reported back on stdout).
    pub listen: SocketAddr,
    /// JSON log file.
    pub log_file: PathBuf,
    /// OTLP/HTTP base URL for spans.
    pub otlp_endpoint: Option<String>,
    /// Span flush period.
    #[serde(with = "keel_core::duration")]
    pub otlp_flush_interval: Duration,
    /// The tier and its settings.
    #[serde(flatten)]
    pub tier: TierSpec,
}
