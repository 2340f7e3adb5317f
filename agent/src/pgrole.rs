//! The agent's failover role on a PostgreSQL host: the controller's hands
//! there. It runs the local postmaster as its own child (so it reaps it,
//! and a node that dies takes both), answers the role endpoints load
//! balancers check (`GET /primary` is 200 only on the primary, like
//! Patroni's), and carries out the controller's actions:
//!
//! - `stop`: a fast shutdown (immediate if that fails); the answer holds
//!   the shutdown checkpoint's lsn, from `pg_controldata`.
//! - `start`: the postmaster, as the data directory says (primary, or a
//!   standby when `standby.signal` is there).
//! - `follow`: a running standby gets a new `primary_conninfo` (`ALTER
//!   SYSTEM` through `psql`) and reloads.
//! - `rejoin`: stop, `pg_rewind -R` from the new primary (which also runs
//!   crash recovery on a member that was killed), start as its standby.
//!
//! The agent never starts a former primary by itself: at start it starts
//! PostgreSQL only if it is a standby (or `start: always`), and a stopped
//! primary waits for the controller, which rejoins it or, if it is still
//! the primary, starts it. Nothing here links a database client: SQL goes
//! through `psql`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

/// The `failover` section of the agent's config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgRoleConfig {
    /// This member's name in the controller's `controller.failover`
    /// target (its `application_name` when it streams).
    pub member: String,
    /// The data directory.
    pub data_directory: PathBuf,
    /// Where `postgres`, `pg_ctl`, `pg_rewind`, `pg_controldata` and `psql` are.
    #[serde(default = "default_bin")]
    pub bin_directory: PathBuf,
    /// `postgresql.conf` when it is not in the data directory (Debian's
    /// `/etc/postgresql/15/main/postgresql.conf`).
    #[serde(default)]
    pub config_file: Option<PathBuf>,
    /// The port it listens on (given to `postgres -c port=`, and used by `psql`).
    #[serde(default = "default_port")]
    pub port: u16,
    /// The host `psql` connects to.
    #[serde(default = "default_host")]
    pub host: String,
    /// The superuser `psql` connects as.
    #[serde(default = "default_user")]
    pub user: String,
    /// Run PostgreSQL's programs as this OS user (it refuses root); ""
    /// runs them as the agent's user.
    #[serde(default)]
    pub run_as: String,
    /// Where the postmaster's output goes (none: `<data_directory>.log`,
    /// beside the data directory rather than in it, since `pg_rewind` and
    /// `pg_basebackup` copy a data directory's files over).
    #[serde(default)]
    pub log_file: Option<PathBuf>,
    /// When the agent starts: `standby` starts PostgreSQL only if it is a
    /// standby; `always` starts it whatever it is (first bring-up);
    /// `never` leaves it to the controller.
    #[serde(default = "default_start")]
    pub start: StartPolicy,
    /// The token the controller presents (`Authorization: Bearer …`) to
    /// act (stop, start, follow, rejoin, promote); the controller's
    /// `controller.failover[].agent_token`. Required when `agent.listen`
    /// is reachable from other machines. Give this or `token_file`.
    #[serde(default)]
    pub token: keel_core::secret::Secret,
    /// A file whose first line is the token.
    #[serde(default)]
    pub token_file: PathBuf,
}

/// What the agent starts by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartPolicy {
    /// Only a standby.
    Standby,
    /// Whatever it is.
    Always,
    /// Nothing.
    Never,
}

fn default_bin() -> PathBuf {
    PathBuf::from("/usr/lib/postgresql/15/bin")
}
fn default_port() -> u16 {
    5432
}
fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_user() -> String {
    "postgres".into()
}
fn default_start() -> StartPolicy {
    StartPolicy::Standby
}

impl PgRoleConfig {
    /// The token actions need, from the config or its file (none: open,
    /// as on a loopback-only agent).
    pub fn token(&self) -> Result<Option<String>, String> {
        self.token.token_or_file(&self.token_file, "token")
    }

    /// Every problem, under `agent.failover`.
    pub fn validate(&self, problems: &mut Vec<String>) {
        if self.member.trim().is_empty() {
            problems.push("agent.failover.member: must not be empty".into());
        }
        if !self.data_directory.is_absolute() {
            problems.push(format!(
                "agent.failover.data_directory: {:?} must be an absolute path",
                self.data_directory
            ));
        }
        for tool in ["postgres", "pg_ctl", "pg_rewind", "pg_controldata", "psql"] {
            if !self.bin_directory.join(tool).exists() {
                problems.push(format!(
                    "agent.failover.bin_directory: {} has no {tool}",
                    self.bin_directory.display()
                ));
                break;
            }
        }
        if self.port == 0 {
            problems.push("agent.failover.port: must not be 0".into());
        }
        match self.token() {
            Err(e) => problems.push(format!("agent.failover.{e}")),
            Ok(Some(t)) if t.len() < 16 => problems
                .push("agent.failover.token: the token is shorter than 16 characters".into()),
            Ok(_) => {}
        }
        if !self.run_as.is_empty()
            && nix::unistd::User::from_name(&self.run_as)
                .ok()
                .flatten()
                .is_none()
        {
            problems.push(format!(
                "agent.failover.run_as: there is no user {:?}",
                self.run_as
            ));
        }
    }
}

/// What the role endpoint and the controller are told.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PgState {
    /// The member.
    pub member: String,
    /// Whether a postmaster runs.
    pub running: bool,
    /// `primary`, `replica`, `starting` or `stopped`.
    pub role: String,
}

/// The role, running.
pub struct PgRole {
    cfg: PgRoleConfig,
    /// The token actions need (none: open); an error if its file could
    /// not be read at start, and then every action is refused.
    token: Result<Option<String>, String>,
    /// One action at a time.
    acting: tokio::sync::Mutex<()>,
    /// The newest fencing token of each lease seen ([`keel_core::fencing`]).
    newest: keel_core::fencing::Newest,
}

#[derive(Deserialize)]
struct ActBody {
    #[serde(default)]
    primary_conninfo: Option<String>,
}

#[derive(Debug, thiserror::Error)]
enum ActError {
    #[error("{0}")]
    Failed(String),
    #[error("unknown action {0:?} (stop, start, follow, rejoin)")]
    Unknown(String),
    #[error("{0} needs primary_conninfo")]
    NoConninfo(&'static str),
}

impl PgRole {
    /// The role for `cfg`; starts PostgreSQL now if its start policy says so.
    pub async fn start(cfg: PgRoleConfig) -> Arc<Self> {
        let me = Arc::new(Self {
            token: cfg.token(),
            cfg,
            acting: tokio::sync::Mutex::new(()),
            newest: keel_core::fencing::Newest::default(),
        });
        let standby = me.cfg.data_directory.join("standby.signal").exists();
        let go = match me.cfg.start {
            StartPolicy::Always => true,
            StartPolicy::Standby => standby,
            StartPolicy::Never => false,
        };
        if go && !me.state().running {
            let _turn = me.acting.lock().await;
            match me.start_postgres().await {
                Ok(()) => tracing::info!(member = %me.cfg.member, standby, "postgres started"),
                Err(e) => {
                    tracing::error!(member = %me.cfg.member, error = %e, "postgres did not start")
                }
            }
        } else if !standby && !me.state().running {
            tracing::info!(member = %me.cfg.member, "postgres is not a standby and stays stopped until the controller starts or rejoins it");
        }
        me
    }

    /// The routes: `/primary`, `/replica`, `/health` and the controller's
    /// `/api/v1/failover/{state,ACTION}`.
    pub fn routes(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/primary", get(primary))
            .route("/read-write", get(primary))
            .route("/replica", get(replica))
            .route("/health", get(health))
            .route("/api/v1/failover/state", get(state))
            .route(
                "/api/v1/failover/{action}",
                post(act).route_layer(axum::middleware::from_fn_with_state(
                    self.clone(),
                    require_token,
                )),
            )
            .with_state(self.clone())
    }

    /// The pid `postmaster.pid` names, and the file's text.
    fn pid_file(&self) -> Option<(i32, String)> {
        let text = std::fs::read_to_string(self.cfg.data_directory.join("postmaster.pid")).ok()?;
        let pid = text.lines().next()?.trim().parse().ok()?;
        Some((pid, text))
    }

    /// The postmaster's status line (`ready`, `standby`, `starting`…), if
    /// one runs: a pid file whose process is gone, a zombie, or another
    /// program is stale.
    fn postmaster(&self) -> Option<String> {
        let (pid, text) = self.pid_file()?;
        if matches!(process_state(pid)?, 'Z' | 'X') {
            return None;
        }
        // A pid file that outlived a reboot can name another process now.
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let program = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        if !(program.ends_with(b"postgres") || program.ends_with(b"postmaster")) {
            return None;
        }
        Some(text.lines().nth(7).unwrap_or("").trim().to_owned())
    }

    /// A postmaster that was killed leaves its pid file, and its pid
    /// stays taken while it is a zombie (until init reaps it), which the
    /// new postmaster's socket lock takes for a live one: wait (10 s at
    /// most) for that pid to be gone, then remove the stale file.
    async fn clear_dead_postmaster(&self) {
        let Some((pid, _)) = self.pid_file() else {
            let _ = std::fs::remove_file(self.cfg.data_directory.join("postmaster.pid"));
            return;
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline && process_state(pid) == Some('Z') {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = std::fs::remove_file(self.cfg.data_directory.join("postmaster.pid"));
    }

    /// What runs now.
    pub fn state(&self) -> PgState {
        let (running, role) = match self.postmaster() {
            None => (false, "stopped"),
            Some(status) => match status.as_str() {
                "ready" | "standby" => {
                    if self.cfg.data_directory.join("standby.signal").exists() {
                        (true, "replica")
                    } else {
                        (true, "primary")
                    }
                }
                _ => (true, "starting"),
            },
        };
        PgState {
            member: self.cfg.member.clone(),
            running,
            role: role.into(),
        }
    }

    /// The `run_as` user (none: the agent's own).
    fn run_as(&self) -> Result<Option<nix::unistd::User>, String> {
        if self.cfg.run_as.is_empty() {
            return Ok(None);
        }
        nix::unistd::User::from_name(&self.cfg.run_as)
            .ok()
            .flatten()
            .map(Some)
            .ok_or_else(|| format!("no user {:?}", self.cfg.run_as))
    }

    /// A PostgreSQL program, as `run_as`.
    fn command(&self, program: &str) -> Result<tokio::process::Command, String> {
        let mut c = tokio::process::Command::new(self.cfg.bin_directory.join(program));
        if let Some(u) = self.run_as()? {
            c.uid(u.uid.as_raw()).gid(u.gid.as_raw());
            c.env("HOME", &u.dir).env("USER", &self.cfg.run_as);
        }
        // English messages: pg_controldata's fields are read by name.
        c.env("LC_ALL", "C").env("LANG", "C");
        c.stdin(std::process::Stdio::null()).kill_on_drop(false);
        Ok(c)
    }

    /// Run `program args`, within `timeout`; its stdout and stderr, or
    /// its stderr's last lines as the error.
    async fn run(&self, program: &str, args: &[&str], timeout: Duration) -> Result<String, String> {
        let mut c = self.command(program)?;
        c.args(args).kill_on_drop(true);
        let out = tokio::time::timeout(timeout, c.output())
            .await
            .map_err(|_| format!("{program}: no answer within {timeout:?}"))?
            .map_err(|e| format!("{program}: {e}"))?;
        if out.status.success() {
            // Both streams: PostgreSQL's tools say what they did on stderr.
            Ok(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            let last: Vec<&str> = err.lines().rev().take(3).collect();
            Err(format!(
                "{program} {}: {}",
                out.status,
                last.into_iter().rev().collect::<Vec<_>>().join(" / ")
            ))
        }
    }

    fn data(&self) -> &str {
        self.cfg.data_directory.to_str().unwrap_or("")
    }

    /// Start the postmaster as this agent's child (reaped by a task of
    /// its own) and wait until it takes connections (a minute at most).
    async fn start_postgres(&self) -> Result<(), String> {
        if self.state().running {
            return Ok(());
        }
        self.clear_dead_postmaster().await;
        let log = self.cfg.log_file.clone().unwrap_or_else(|| {
            let mut p = self.cfg.data_directory.clone().into_os_string();
            p.push(".log");
            PathBuf::from(p)
        });
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .map_err(|e| format!("{}: {e}", log.display()))
        };
        let (out, err) = (open()?, open()?);
        if let Some(u) = self.run_as()? {
            let _ = nix::unistd::chown(&log, Some(u.uid), Some(u.gid));
        }
        let mut c = self.command("postgres")?;
        // The port on the command line: pg_rewind copies the source's
        // postgresql.conf, port included, into a data directory.
        c.arg("-D")
            .arg(&self.cfg.data_directory)
            .arg("-c")
            .arg(format!("port={}", self.cfg.port));
        if let Some(f) = &self.cfg.config_file {
            c.arg("-c").arg(format!("config_file={}", f.display()));
        }
        c.stdout(out).stderr(err);
        let mut child = c.spawn().map_err(|e| format!("postgres: {e}"))?;
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let _ = tx.send(child.wait().await);
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(done) = rx.try_recv() {
                return Err(format!(
                    "postgres exited ({}): see {}",
                    done.map(|s| s.to_string())
                        .unwrap_or_else(|e| e.to_string()),
                    log.display()
                ));
            }
            if matches!(self.state().role.as_str(), "primary" | "replica") {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "postgres did not take connections within 60 s: see {}",
                    log.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Fast shutdown (immediate if that fails); the shutdown checkpoint's
    /// lsn when it shut down cleanly.
    async fn stop_postgres(&self) -> Result<Option<u64>, String> {
        if self.state().running {
            let d = self.data().to_owned();
            if let Err(e) = self
                .run(
                    "pg_ctl",
                    &["stop", "-D", &d, "-m", "fast", "-w", "-t", "10"],
                    Duration::from_secs(15),
                )
                .await
            {
                tracing::warn!(member = %self.cfg.member, error = %e, "fast shutdown failed; immediate");
                self.run(
                    "pg_ctl",
                    &["stop", "-D", &d, "-m", "immediate", "-w", "-t", "10"],
                    Duration::from_secs(15),
                )
                .await?;
            }
        }
        let control = self
            .run(
                "pg_controldata",
                &["-D", self.data()],
                Duration::from_secs(10),
            )
            .await?;
        Ok(checkpoint_lsn(&control))
    }

    /// SQL through `psql` on the local server.
    async fn psql(&self, sql: &str) -> Result<String, String> {
        let port = self.cfg.port.to_string();
        self.run(
            "psql",
            &[
                "-X",
                "-A",
                "-t",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                &self.cfg.host,
                "-p",
                &port,
                "-U",
                &self.cfg.user,
                "-d",
                "postgres",
                "-c",
                sql,
            ],
            Duration::from_secs(10),
        )
        .await
    }

    async fn follow(&self, conninfo: &str) -> Result<(), String> {
        let s = self.state();
        if s.role != "replica" {
            return Err(format!(
                "{} is {}, not a running standby: rejoin it",
                s.member, s.role
            ));
        }
        self.psql(&format!(
            "ALTER SYSTEM SET primary_conninfo = '{}'",
            conninfo.replace('\'', "''")
        ))
        .await?;
        self.psql("SELECT pg_reload_conf()").await.map(|_| ())
    }

    async fn rejoin(&self, conninfo: &str) -> Result<String, String> {
        self.stop_postgres().await?;
        self.clear_dead_postmaster().await;
        let source = format!("--source-server={conninfo}");
        let mut args = vec!["-D", self.data(), &source, "-R"];
        let config;
        if let Some(f) = &self.cfg.config_file {
            config = format!("--config-file={}", f.display());
            args.push(&config);
        }
        let out = self
            .run("pg_rewind", &args, Duration::from_secs(600))
            .await?;
        tracing::info!(member = %self.cfg.member, output = %out.trim(), "pg_rewind");
        let rewound = !out.contains("no rewind required");
        self.start_postgres().await?;
        // -R wrote the source's connection; make sure the follower's own
        // name is its application_name.
        self.follow(conninfo).await?;
        Ok(if rewound {
            "rewound and following".into()
        } else {
            "following (no rewind needed)".into()
        })
    }

    async fn act(
        &self,
        action: &str,
        conninfo: Option<&str>,
    ) -> Result<serde_json::Value, ActError> {
        let _turn = self.acting.lock().await;
        let f = ActError::Failed;
        tracing::info!(member = %self.cfg.member, action, "failover action");
        match action {
            "stop" => {
                let lsn = self.stop_postgres().await.map_err(f)?;
                Ok(serde_json::json!({"checkpoint_lsn": lsn, "detail": "stopped"}))
            }
            "start" => {
                self.start_postgres().await.map_err(f)?;
                Ok(serde_json::json!({"detail": "started"}))
            }
            "follow" => {
                self.follow(conninfo.ok_or(ActError::NoConninfo("follow"))?)
                    .await
                    .map_err(f)?;
                Ok(serde_json::json!({"detail": "following"}))
            }
            "rejoin" => {
                let d = self
                    .rejoin(conninfo.ok_or(ActError::NoConninfo("rejoin"))?)
                    .await
                    .map_err(f)?;
                Ok(serde_json::json!({"detail": d}))
            }
            other => Err(ActError::Unknown(other.into())),
        }
    }
}

/// The state letter of process `pid` (`R`, `S`, `Z`…), if it exists.
fn process_state(pid: i32) -> Option<char> {
    keel_core::procfs::state(&pid.to_string())
}

/// "Latest checkpoint location: 0/3000028" in a cleanly shut down
/// cluster's `pg_controldata`, in bytes.
fn checkpoint_lsn(control: &str) -> Option<u64> {
    let field = |name: &str| {
        control
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
    };
    let state = field("Database cluster state:")?;
    if state != "shut down" && state != "shut down in recovery" {
        return None;
    }
    parse_lsn(&field("Latest checkpoint location:")?)
}

/// `X/Y` (hex) as one number.
fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

fn answer(ok: bool, s: PgState) -> Response {
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(s)).into_response()
}

async fn primary(State(r): State<Arc<PgRole>>) -> Response {
    let s = r.state();
    answer(s.role == "primary", s)
}

async fn replica(State(r): State<Arc<PgRole>>) -> Response {
    let s = r.state();
    answer(s.role == "replica", s)
}

async fn health(State(r): State<Arc<PgRole>>) -> Response {
    let s = r.state();
    answer(matches!(s.role.as_str(), "primary" | "replica"), s)
}

async fn state(State(r): State<Arc<PgRole>>) -> Json<PgState> {
    Json(r.state())
}

/// An action needs the configured token (none configured: open), and
/// never comes from a browser: a page on any site could otherwise POST
/// to a loopback agent.
async fn require_token(
    State(r): State<Arc<PgRole>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let refuse = |why: String| {
        tracing::warn!(member = %r.cfg.member, %why, "a failover action was refused");
        (
            StatusCode::UNAUTHORIZED,
            [(
                axum::http::header::WWW_AUTHENTICATE,
                "Bearer realm=\"keel-agent\"",
            )],
            Json(serde_json::json!({ "error": why })),
        )
            .into_response()
    };
    if ["origin", "sec-fetch-site"]
        .iter()
        .any(|h| req.headers().contains_key(*h))
    {
        return refuse("failover actions are not taken from a browser".into());
    }
    let want = match &r.token {
        Ok(None) => return fenced(&r, req, next).await,
        Ok(Some(t)) => t,
        Err(e) => {
            return refuse(format!(
                "the agent's token could not be read at start ({e})"
            ));
        }
    };
    let given = keel_core::secret::bearer(
        req.headers()
            .get(axum::http::header::AUTHORIZATION)
            .map(|v| v.as_bytes()),
    );
    let same = given.is_ok_and(|g| keel_core::secret::same_token(g.as_bytes(), want.as_bytes()));
    if same {
        fenced(&r, req, next).await
    } else {
        refuse(
            "this agent's failover actions need its token (controller.failover[].agent_token)"
                .into(),
        )
    }
}

/// An action sent under a fencing token older than one already seen (a
/// deposed leader of a collector pair, late) is refused: 409.
async fn fenced(r: &PgRole, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let admitted = r
        .newest
        .admit_headers(|h| req.headers().get(h).and_then(|v| v.to_str().ok()));
    match admitted {
        Ok(()) => next.run(req).await,
        Err(e) => {
            tracing::warn!(member = %r.cfg.member, error = %e, "a failover action from a deposed leader was refused");
            (
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::CONFLICT),
                Json(serde_json::json!({ "error": e.to_string() })),
            )
                .into_response()
        }
    }
}

async fn act(
    State(r): State<Arc<PgRole>>,
    UrlPath(action): UrlPath<String>,
    body: Option<Json<ActBody>>,
) -> Response {
    let conninfo = body.and_then(|b| b.0.primary_conninfo);
    // On a task of its own: a controller that stops waiting (its request
    // dropped) must not cut pg_rewind off halfway through a data directory.
    let role = r.clone();
    let a = action.clone();
    let done = tokio::spawn(async move { role.act(&a, conninfo.as_deref()).await }).await;
    let done = done.unwrap_or_else(|e| Err(ActError::Failed(format!("the action failed: {e}"))));
    match done {
        Ok(v) => Json(v).into_response(),
        Err(e) => {
            let code = match e {
                ActError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::BAD_REQUEST,
            };
            tracing::warn!(member = %r.cfg.member, action, error = %e, "failover action failed");
            (code, Json(serde_json::json!({"error": e.to_string()}))).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checkpoint_of_a_clean_shutdown_is_read_and_a_crashed_one_is_not() {
        let clean = "pg_control version number:            1300\nDatabase cluster state:               shut down\nLatest checkpoint location:           1/3000028\n";
        assert_eq!(checkpoint_lsn(clean), Some((1 << 32) | 0x3000028));
        let crashed = clean.replace("shut down", "in production");
        assert_eq!(checkpoint_lsn(&crashed), None);
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("zz/1"), None);
        assert_eq!(parse_lsn("17"), None);
    }
}
