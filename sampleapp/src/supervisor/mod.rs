//! The supervisor: starts every sample-app process, restarts the ones that
//! crash (not the ones stopped on purpose), and serves the actuator API
//! that scaling and failover drive.
//!
//! Each process is the same executable run as `sampleapp run --spec FILE`.
//! A child reports `KEEL_READY <addr>` on stdout once it listens, and exits
//! when its stdin closes, so nothing outlives the supervisor. A restarted
//! process keeps the address it first bound.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::watch;

use crate::api::{ApiError, Json, Path as UrlPath, Query};
use crate::config::{Capacity, RestartPrimaryAs, SampleAppConfig};
use crate::process::{READY_PREFIX, SUPERVISED_ENV};
use crate::spec::{BackendSpec, DbRole, ProcessSpec, TierSpec, Topology};

/// Where a process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcState {
    /// Serving.
    Running,
    /// Exited unexpectedly; a restart is scheduled.
    Crashed,
    /// Stopped on purpose; stays down until started.
    Stopped,
}

/// A process as `GET /api/v1/processes` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcInfo {
    /// Name, e.g. `web-2`.
    pub name: String,
    /// `lb`, `web`, `cache` or `db`.
    pub tier: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// OS process id while running.
    pub pid: Option<u32>,
    /// Running, crashed or stopped.
    pub state: ProcState,
    /// Restarts after crashes.
    pub restarts: u32,
    /// Its JSON log file.
    pub log_file: PathBuf,
}

struct Proc {
    info: ProcInfo,
    /// Bumped at each start so that a stale monitor never acts.
    generation: u64,
    wanted: bool,
    exited: watch::Receiver<bool>,
}

/// The db topology plus which process is the primary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DbTopology {
    /// Name of the primary process.
    pub primary_name: String,
    /// Epoch and addresses.
    #[serde(flatten)]
    pub topology: Topology,
}

struct Shared {
    config: SampleAppConfig,
    exe: PathBuf,
    procs: Mutex<BTreeMap<String, Proc>>,
    db: Mutex<DbTopology>,
    capacity: Mutex<Capacity>,
    cache_addr: Mutex<Option<SocketAddr>>,
    lb_addr: Mutex<Option<SocketAddr>>,
    /// The lb's admin API (its backend list).
    lb_admin: Mutex<Option<SocketAddr>>,
    shutting_down: AtomicBool,
    scale_lock: tokio::sync::Mutex<()>,
    client: reqwest::Client,
}

/// Handle to a running sample app. Cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    s: Arc<Shared>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What `keel up` prints and tests need: where everything listens.
#[derive(Debug, Clone, Serialize)]
pub struct Endpoints {
    /// The shop API through the lb.
    pub lb: SocketAddr,
    /// The lb's admin API (`/-/backends`), never on the shop port.
    pub lb_admin: SocketAddr,
    /// The actuator API.
    pub supervisor: SocketAddr,
    /// Every process.
    pub processes: Vec<ProcInfo>,
    /// Where logs go.
    pub log_dir: PathBuf,
}

impl Supervisor {
    /// Start the whole app (db primary, replicas, cache, web, lb) with
    /// `exe` as the process binary, then the actuator API. Returns once
    /// everything is serving.
    pub async fn start(config: SampleAppConfig, exe: PathBuf) -> anyhow::Result<(Self, Endpoints)> {
        for d in ["run", "logs", "db"] {
            std::fs::create_dir_all(config.data_dir.join(d))
                .with_context(|| format!("creating {}", config.data_dir.join(d).display()))?;
        }
        let token = config
            .supervisor
            .token()
            .map_err(|e| anyhow!("sampleapp.supervisor.{e}"))?;
        let placeholder: SocketAddr = ([127, 0, 0, 1], 0).into();
        let sup = Supervisor {
            s: Arc::new(Shared {
                capacity: Mutex::new(config.web.capacity.clone()),
                config,
                exe,
                procs: Mutex::new(BTreeMap::new()),
                db: Mutex::new(DbTopology {
                    primary_name: "db-1".into(),
                    topology: Topology {
                        epoch: 1,
                        primary: placeholder,
                        replicas: Vec::new(),
                    },
                }),
                cache_addr: Mutex::new(None),
                lb_addr: Mutex::new(None),
                lb_admin: Mutex::new(None),
                shutting_down: AtomicBool::new(false),
                scale_lock: tokio::sync::Mutex::new(()),
                client: reqwest::Client::builder()
                    .timeout(Duration::from_secs(60))
                    .build()
                    .unwrap_or_default(),
            }),
        };
        match sup.start_all().await {
            Ok(()) => {}
            Err(e) => {
                sup.shutdown().await;
                return Err(e);
            }
        }
        let listener = tokio::net::TcpListener::bind((sup.host(), sup.s.config.supervisor.port))
            .await
            .with_context(|| {
                format!(
                    "supervisor API: cannot listen on port {}",
                    sup.s.config.supervisor.port
                )
            })?;
        let api_addr = listener.local_addr()?;
        let app = api(sup.clone(), token);
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "supervisor API stopped");
            }
        });
        let endpoints = Endpoints {
            lb: lock(&sup.s.lb_addr).unwrap_or(placeholder),
            lb_admin: lock(&sup.s.lb_admin).unwrap_or(placeholder),
            supervisor: api_addr,
            processes: sup.processes(),
            log_dir: sup.s.config.data_dir.join("logs"),
        };
        Ok((sup, endpoints))
    }

    /// Where `keel up` keeps the token it made for the supervisor under
    /// the sample app's data directory.
    pub fn token_file(data_dir: &std::path::Path) -> PathBuf {
        data_dir.join("supervisor.token")
    }

    fn host(&self) -> std::net::IpAddr {
        self.s.config.host.parse().unwrap_or([127, 0, 0, 1].into())
    }

    fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.host(), port)
    }

    /// Choose who leads the db at start. With a fresh data dir, `db-1` at
    /// epoch 1. With data from an earlier run, the most caught-up node
    /// (latest epoch, then most records) leads under an epoch above every
    /// epoch on disk, so a writer from the last run is never taken for a
    /// current one.
    fn choose_db_primary(&self, names: &[String]) -> anyhow::Result<(String, u64)> {
        let mut best: Option<(String, (u64, u64))> = None;
        let mut max_epoch = 0;
        for name in names {
            let dir = self.s.config.data_dir.join("db").join(name);
            let Some((last_epoch, last_lsn, seen)) = crate::db::node::inspect(&dir)
                .with_context(|| format!("reading {}", dir.display()))?
            else {
                continue;
            };
            max_epoch = max_epoch.max(seen);
            if best
                .as_ref()
                .is_none_or(|(_, b)| (last_epoch, last_lsn) > *b)
            {
                best = Some((name.clone(), (last_epoch, last_lsn)));
            }
        }
        Ok(match best {
            Some((name, _)) => (name, max_epoch + 1),
            None => (names[0].clone(), 1),
        })
    }

    async fn start_all(&self) -> anyhow::Result<()> {
        let c = &self.s.config;
        let names: Vec<String> = (1..=c.db.replicas + 1).map(|i| format!("db-{i}")).collect();
        let (primary_name, epoch) = self.choose_db_primary(&names)?;
        if epoch > 1 {
            tracing::info!(primary = %primary_name, epoch, "resuming the database from an earlier run");
        }
        {
            let mut db = lock(&self.s.db);
            db.primary_name = primary_name.clone();
            db.topology.epoch = epoch;
        }
        let primary = self
            .launch(self.db_spec(&primary_name, self.addr(0), true)?)
            .await?;
        lock(&self.s.db).topology.primary = primary;
        for name in names.iter().filter(|n| **n != primary_name) {
            let addr = self.launch(self.db_spec(name, self.addr(0), true)?).await?;
            lock(&self.s.db).topology.replicas.push(addr);
        }
        let cache = self
            .launch(self.spec(
                "cache",
                self.addr(0),
                TierSpec::Cache {
                    config: c.cache.clone(),
                },
            ))
            .await?;
        *lock(&self.s.cache_addr) = Some(cache);
        let mut backends = Vec::new();
        for i in 1..=c.web.instances {
            let name = format!("web-{i}");
            let addr = self.launch(self.web_spec(&name, self.addr(0))?).await?;
            self.wait_healthy(addr).await?;
            backends.push(BackendSpec { name, addr });
        }
        let admin_listen = match c.lb.admin_port {
            0 => std::net::TcpListener::bind(self.addr(0))
                .and_then(|l| l.local_addr())
                .context("choosing the lb's admin port")?,
            port => self.addr(port),
        };
        *lock(&self.s.lb_admin) = Some(admin_listen);
        let lb = self
            .launch(self.spec(
                "lb",
                self.addr(c.lb.port),
                TierSpec::Lb {
                    config: c.lb.clone(),
                    backends,
                    admin_listen,
                },
            ))
            .await?;
        *lock(&self.s.lb_addr) = Some(lb);
        Ok(())
    }

    fn spec(&self, name: &str, listen: SocketAddr, tier: TierSpec) -> ProcessSpec {
        let c = &self.s.config;
        ProcessSpec {
            name: name.to_owned(),
            listen,
            log_file: c.data_dir.join("logs").join(format!("{name}.log")),
            otlp_endpoint: c.otlp_endpoint.clone(),
            otlp_flush_interval: c.otlp_flush_interval,
            tier,
        }
    }

    /// A db node's spec from the current topology: everyone but the
    /// primary follows it at the current epoch; the primary leads at first
    /// start, and comes back read-only (by default) when it returns after
    /// a crash or a stop — whoever watches the database may have promoted
    /// another meanwhile, or be about to.
    fn db_spec(&self, name: &str, listen: SocketAddr, first: bool) -> anyhow::Result<ProcessSpec> {
        let db = lock(&self.s.db).clone();
        let role = if db.primary_name == name {
            let returning = self.s.config.db.restart_primary_as == RestartPrimaryAs::ReadOnly;
            if first || !returning {
                DbRole::Primary
            } else {
                DbRole::ReadOnly
            }
        } else {
            DbRole::Replica {
                primary: db.topology.primary,
            }
        };
        Ok(self.spec(
            name,
            listen,
            TierSpec::Db {
                config: self.s.config.db.clone(),
                role,
                epoch: db.topology.epoch,
                data_dir: self.s.config.data_dir.join("db").join(name),
            },
        ))
    }

    fn web_spec(&self, name: &str, listen: SocketAddr) -> anyhow::Result<ProcessSpec> {
        let cache = lock(&self.s.cache_addr).ok_or_else(|| anyhow!("cache not started"))?;
        let c = &self.s.config;
        Ok(self.spec(
            name,
            listen,
            TierSpec::Web {
                capacity: lock(&self.s.capacity).clone(),
                cache,
                db: lock(&self.s.db).topology.clone(),
                session_ttl: c.web.session_ttl,
                product_ttl: c.web.product_ttl,
                warm_up: c.web.warm_up,
            },
        ))
    }

    /// The spec to restart `name` with, rebuilt from the current state so a
    /// returning db node takes its current role and a web the current db.
    fn respec(&self, info: &ProcInfo) -> anyhow::Result<ProcessSpec> {
        match info.tier.as_str() {
            "db" => self.db_spec(&info.name, info.addr, false),
            "web" => self.web_spec(&info.name, info.addr),
            "cache" => Ok(self.spec(
                &info.name,
                info.addr,
                TierSpec::Cache {
                    config: self.s.config.cache.clone(),
                },
            )),
            "lb" => {
                let backends = self
                    .processes()
                    .into_iter()
                    .filter(|p| p.tier == "web" && p.state == ProcState::Running)
                    .map(|p| BackendSpec {
                        name: p.name,
                        addr: p.addr,
                    })
                    .collect();
                let admin_listen = lock(&self.s.lb_admin)
                    .ok_or_else(|| anyhow!("the lb's admin address is not chosen"))?;
                Ok(self.spec(
                    &info.name,
                    info.addr,
                    TierSpec::Lb {
                        config: self.s.config.lb.clone(),
                        backends,
                        admin_listen,
                    },
                ))
            }
            other => bail!("unknown tier {other}"),
        }
    }

    /// Where the Prometheus file_sd list of every process's metrics
    /// endpoint is kept.
    pub fn targets_file(data_dir: &std::path::Path) -> PathBuf {
        data_dir.join("targets.json")
    }

    /// Rewrite the targets file (atomically: a scraper never reads half
    /// of it): one group a process, `job` its service (`shop-<tier>`),
    /// `instance` its name (`web-2`), so a restart on a new port or a
    /// scaled-in instance is scraped and a removed one is not.
    fn write_targets(&self) {
        // Written under the lock, so two writers never interleave.
        let procs = lock(&self.s.procs);
        let groups: Vec<serde_json::Value> = procs
            .values()
            .map(|p| {
                serde_json::json!({
                    "targets": [p.info.addr.to_string()],
                    "labels": {
                        "job": format!("shop-{}", p.info.tier),
                        "tier": p.info.tier,
                        "instance": p.info.name,
                    },
                })
            })
            .collect();
        let path = Self::targets_file(&self.s.config.data_dir);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::Value::Array(groups).to_string();
        if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &path)) {
            tracing::warn!(error = %e, file = %path.display(), "cannot write the scrape targets file");
        }
        drop(procs);
    }

    /// Every process, in name order.
    pub fn processes(&self) -> Vec<ProcInfo> {
        lock(&self.s.procs)
            .values()
            .map(|p| p.info.clone())
            .collect()
    }

    fn get(&self, name: &str) -> Result<(ProcInfo, watch::Receiver<bool>), ApiError> {
        lock(&self.s.procs)
            .get(name)
            .map(|p| (p.info.clone(), p.exited.clone()))
            .ok_or_else(|| ApiError::NotFound(format!("no process {name:?}")))
    }

    /// Send `signal` to `name`. With `restart: false` the process is marked
    /// stopped on purpose first, so the supervisor leaves it down.
    pub async fn signal(
        &self,
        name: &str,
        signal: Signal,
        restart: bool,
    ) -> Result<ProcInfo, ApiError> {
        let (info, mut exited) = self.get(name)?;
        if !restart && let Some(p) = lock(&self.s.procs).get_mut(name) {
            p.wanted = false;
        }
        let Some(pid) = info.pid else {
            return Err(ApiError::Conflict(format!("{name} is not running")));
        };
        kill(Pid::from_raw(pid as i32), signal)
            .map_err(|e| ApiError::Internal(format!("signal {name}: {e}")))?;
        let deadline = self.s.config.supervisor.stop_timeout;
        if tokio::time::timeout(deadline, exited.wait_for(|e| *e))
            .await
            .is_err()
        {
            tracing::warn!(%name, "did not exit in time; killing");
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            let _ = exited.wait_for(|e| *e).await;
        }
        Ok(self.get(name)?.0)
    }

    /// Start a stopped process again (a db node in its current role).
    pub async fn start_process(&self, name: &str) -> Result<ProcInfo, ApiError> {
        let (info, _) = self.get(name)?;
        if info.pid.is_some() {
            return Err(ApiError::Conflict(format!("{name} is already running")));
        }
        let spec = self
            .respec(&info)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        self.launch(spec)
            .await
            .map_err(|e| ApiError::Internal(format!("{e:#}")))?;
        Ok(self.get(name)?.0)
    }

    async fn wait_healthy(&self, addr: SocketAddr) -> anyhow::Result<()> {
        // A web instance may be cold for `warm_up` after it starts.
        let within = self.s.config.supervisor.start_timeout + self.s.config.web.warm_up;
        let deadline = Instant::now() + within;
        let url = format!("http://{addr}/health");
        loop {
            match self
                .s
                .client
                .get(&url)
                .timeout(Duration::from_secs(1))
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => return Ok(()),
                _ if Instant::now() > deadline => bail!("{addr} not healthy within {within:?}"),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Stop everything: lb first (no new traffic), then web, cache, db;
    /// each gets `stop_timeout` to drain before it is killed.
    pub async fn shutdown(&self) {
        self.s.shutting_down.store(true, Ordering::Relaxed);
        for tier in ["lb", "web", "cache", "db"] {
            let names: Vec<String> = self
                .processes()
                .into_iter()
                .filter(|p| p.tier == tier && p.pid.is_some())
                .map(|p| p.name)
                .collect();
            let mut stops = tokio::task::JoinSet::new();
            for n in names {
                let s = self.clone();
                stops.spawn(async move { s.signal(&n, Signal::SIGTERM, false).await });
            }
            while let Some(r) = stops.join_next().await {
                if let Ok(Err(e)) = r {
                    tracing::warn!(error = %e, "stop failed");
                }
            }
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn web_index(name: &str) -> u32 {
    name.strip_prefix("web-")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

mod db;
mod http;
mod lifecycle;
mod scaling;
pub use db::PromoteReport;
use http::api;
pub use scaling::ScaleStatus;
