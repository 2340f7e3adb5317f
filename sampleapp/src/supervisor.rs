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
        let app = api(sup.clone());
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

    /// Spawn a process, wait for its readiness line, start its monitor.
    /// Boxed because the monitor calls it again to restart (a recursive
    /// future must have a known, `Send` type).
    fn launch(
        &self,
        spec: ProcessSpec,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<SocketAddr>> + Send + '_>>
    {
        Box::pin(self.launch_now(spec))
    }

    async fn launch_now(&self, spec: ProcessSpec) -> anyhow::Result<SocketAddr> {
        let (child, stdin, addr) = self.spawn(&spec).await?;
        let (tx, rx) = watch::channel(false);
        let generation = {
            let mut procs = lock(&self.s.procs);
            let entry = procs.entry(spec.name.clone()).or_insert_with(|| Proc {
                info: ProcInfo {
                    name: spec.name.clone(),
                    tier: spec.tier.tier().to_owned(),
                    addr,
                    pid: None,
                    state: ProcState::Running,
                    restarts: 0,
                    log_file: spec.log_file.clone(),
                },
                generation: 0,
                wanted: true,
                exited: rx.clone(),
            });
            entry.generation += 1;
            entry.wanted = true;
            entry.exited = rx;
            entry.info.addr = addr;
            entry.info.pid = child.id();
            entry.info.state = ProcState::Running;
            entry.generation
        };
        self.write_targets();
        tokio::spawn(
            self.clone()
                .monitor(spec.name.clone(), generation, child, stdin, tx),
        );
        tracing::info!(name = %spec.name, %addr, "process started");
        Ok(addr)
    }

    async fn spawn(&self, spec: &ProcessSpec) -> anyhow::Result<(Child, ChildStdin, SocketAddr)> {
        let dir = self.s.config.data_dir.join("run");
        let spec_path = dir.join(format!("{}.json", spec.name));
        std::fs::write(&spec_path, serde_json::to_vec_pretty(spec)?)
            .with_context(|| format!("writing {}", spec_path.display()))?;
        let stderr = std::fs::OpenOptions::new().create(true).append(true).open(
            self.s
                .config
                .data_dir
                .join("logs")
                .join(format!("{}.stderr", spec.name)),
        )?;
        let mut child = Command::new(&self.s.exe)
            .args(["sampleapp", "run", "--spec"])
            .arg(&spec_path)
            .env(SUPERVISED_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} ({})", spec.name, self.s.exe.display()))?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin pipe"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no stdout pipe"))?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(self.s.config.supervisor.start_timeout, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(a) = line.strip_prefix(READY_PREFIX) {
                    return Ok::<_, std::io::Error>(Some(a.trim().to_owned()));
                }
            }
            Ok(None)
        })
        .await;
        let addr = match ready {
            Ok(Ok(Some(a))) => a
                .parse::<SocketAddr>()
                .with_context(|| format!("{}: bad address {a:?}", spec.name))?,
            Ok(Ok(None)) | Ok(Err(_)) => {
                let status = child.wait().await.ok();
                bail!(
                    "{} exited before it was ready ({}); see {}",
                    spec.name,
                    status.map(|s| s.to_string()).unwrap_or_default(),
                    self.s
                        .config
                        .data_dir
                        .join("logs")
                        .join(format!("{}.stderr", spec.name))
                        .display()
                );
            }
            Err(_) => {
                let _ = child.kill().await;
                bail!(
                    "{} did not report ready within {:?}",
                    spec.name,
                    self.s.config.supervisor.start_timeout
                );
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok((child, stdin, addr))
    }

    /// Wait for a child to exit; restart it if it crashed and is wanted.
    async fn monitor(
        self,
        name: String,
        generation: u64,
        mut child: Child,
        stdin: ChildStdin,
        exited: watch::Sender<bool>,
    ) {
        let status = child.wait().await;
        drop(stdin);
        let _ = exited.send(true);
        let restart = {
            let mut procs = lock(&self.s.procs);
            let Some(p) = procs.get_mut(&name) else {
                return;
            };
            if p.generation != generation {
                return;
            }
            p.info.pid = None;
            if p.wanted && !self.s.shutting_down.load(Ordering::Relaxed) {
                p.info.state = ProcState::Crashed;
                tracing::warn!(%name, status = ?status.ok(), "process exited unexpectedly; restarting");
                Some(p.info.clone())
            } else {
                p.info.state = ProcState::Stopped;
                None
            }
        };
        let Some(info) = restart else { return };
        tokio::time::sleep(self.s.config.supervisor.restart_backoff).await;
        // Stopped, or restarted by someone else, while we waited?
        {
            let procs = lock(&self.s.procs);
            match procs.get(&name) {
                Some(p)
                    if p.generation == generation
                        && p.wanted
                        && p.info.state == ProcState::Crashed => {}
                _ => return,
            }
        }
        if self.s.shutting_down.load(Ordering::Relaxed) {
            return;
        }
        let result = match self.respec(&info) {
            Ok(spec) => self.launch(spec).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(_) => {
                if let Some(p) = lock(&self.s.procs).get_mut(&name) {
                    p.info.restarts += 1;
                }
            }
            Err(e) => tracing::error!(%name, error = %e, "restart failed"),
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

    fn lb_admin(&self) -> Result<SocketAddr, ApiError> {
        lock(&self.s.lb_admin).ok_or_else(|| ApiError::Unavailable("lb not started".into()))
    }

    fn webs(&self) -> Vec<ProcInfo> {
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
    async fn join_lb(&self, lb: SocketAddr, name: &str, addr: SocketAddr) -> Result<(), ApiError> {
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
    async fn node_call(
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScaleBody {
    replicas: u32,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PromoteBody {
    name: Option<String>,
    epoch: Option<u64>,
    /// Tiers given the new primary (default: `["web"]`).
    repoint: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FenceBody {
    name: String,
    epoch: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartitionBody {
    member: String,
    peers: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignalParams {
    restart: Option<bool>,
}

/// The actuator API.
fn api(sup: Supervisor) -> Router {
    Router::new()
        .route("/api/v1/processes", get(|State(s): State<Supervisor>| async move { axum::Json(s.processes()) }))
        .route("/api/v1/processes/{name}/{action}", post(process_action))
        .route("/api/v1/scale/web", get(|State(s): State<Supervisor>| async move { axum::Json(s.scale_status()) }).put(scale))
        .route("/api/v1/web/capacity", get(|State(s): State<Supervisor>| async move { axum::Json(lock(&s.s.capacity).clone()) }).put(capacity))
        .route("/api/v1/db/topology", get(|State(s): State<Supervisor>| async move { axum::Json(s.db_topology()) }))
        .route("/api/v1/db/promote", post(promote))
        .route("/api/v1/db/fence", post(fence))
        .route("/api/v1/db/rejoin", post(rejoin))
        .route("/api/v1/faults/partition", axum::routing::put(partition))
        .route("/api/v1/faults/{name}", get(get_faults).put(put_faults))
        .fallback(crate::api::not_found)
        .with_state(sup)
}

async fn process_action(
    State(s): State<Supervisor>,
    UrlPath((name, action)): UrlPath<(String, String)>,
    Query(p): Query<SignalParams>,
) -> Result<axum::Json<ProcInfo>, ApiError> {
    let info = match action.as_str() {
        "stop" => s.signal(&name, Signal::SIGTERM, false).await?,
        "kill" => {
            s.signal(&name, Signal::SIGKILL, p.restart.unwrap_or(true))
                .await?
        }
        "start" => s.start_process(&name).await?,
        other => {
            return Err(ApiError::BadRequest(format!(
                "unknown action {other:?}: use stop, kill or start"
            )));
        }
    };
    Ok(axum::Json(info))
}

async fn scale(
    State(s): State<Supervisor>,
    Json(b): Json<ScaleBody>,
) -> Result<axum::Json<ScaleStatus>, ApiError> {
    s.scale_web(b.replicas).await.map(axum::Json)
}

async fn capacity(
    State(s): State<Supervisor>,
    Json(c): Json<Capacity>,
) -> Result<axum::Json<Capacity>, ApiError> {
    s.set_capacity(c).await.map(axum::Json)
}

async fn promote(
    State(s): State<Supervisor>,
    body: axum::body::Bytes,
) -> Result<axum::Json<PromoteReport>, ApiError> {
    let b: PromoteBody = if body.iter().all(u8::is_ascii_whitespace) {
        PromoteBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?
    };
    let webs = match &b.repoint {
        None => true,
        Some(tiers) => {
            if let Some(t) = tiers.iter().find(|t| *t != "web") {
                return Err(ApiError::BadRequest(format!(
                    "repoint: {t:?} is not a tier that follows the db (web)"
                )));
            }
            !tiers.is_empty()
        }
    };
    s.promote_repointing(b.name, b.epoch, webs)
        .await
        .map(axum::Json)
}

async fn fence(
    State(s): State<Supervisor>,
    Json(b): Json<FenceBody>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    s.fence(&b.name, b.epoch).await.map(axum::Json)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RejoinBody {
    name: String,
}

async fn rejoin(
    State(s): State<Supervisor>,
    Json(b): Json<RejoinBody>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    s.rejoin(&b.name).await.map(axum::Json)
}

async fn partition(
    State(s): State<Supervisor>,
    Json(b): Json<PartitionBody>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    s.partition(&b.member, b.peers).await.map(axum::Json)
}

async fn put_faults(
    State(s): State<Supervisor>,
    UrlPath(name): UrlPath<String>,
    Json(b): Json<crate::fault::FaultSettings>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    s.faults(&name, b).await.map(axum::Json)
}

async fn get_faults(
    State(s): State<Supervisor>,
    UrlPath(name): UrlPath<String>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    s.faults(&name, crate::fault::FaultSettings::default())
        .await
        .map(axum::Json)
}
