//! The `postgres` failover driver: each member probed over one SQL
//! connection kept open (role from `pg_is_in_recovery()`, position from
//! `pg_current_wal_lsn()` / `pg_last_wal_receive_lsn()` in bytes, the
//! timeline as the epoch, whether the standby still streams from
//! `pg_stat_wal_receiver`), promoted with `pg_promote()`. In synchronous
//! mode the promoted member's `synchronous_standby_names` is set (as
//! `ANY k` of the other members) before it takes a write. Host actions —
//! stop, follow, rewind and rejoin — go through each member's [`Host`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Row};

use super::config::{FailoverConfig, Mode};
use super::decide::{MemberReport, Probe};
use super::driver::Promoted;
use super::host::Host;

/// A member's `dsn`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dsn {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// User.
    pub user: String,
    /// Password, if any.
    pub password: Option<String>,
    /// Database.
    pub dbname: String,
}

impl Dsn {
    /// Parse a `postgres://user[:password]@host[:port][/dbname]` URL.
    pub fn parse(s: &str) -> Result<Self, String> {
        // Errors never echo the URL: it may hold a password.
        let u = url::Url::parse(s).map_err(|e| format!("not a postgres:// URL: {e}"))?;
        if !matches!(u.scheme(), "postgres" | "postgresql") {
            return Err(format!(
                "the scheme must be postgres:// (not {}://)",
                u.scheme()
            ));
        }
        if u.query().is_some() {
            return Err("query parameters (?…) are not supported: give host, port, user, password and database only".into());
        }
        let host = u
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("names no host")?;
        let dec = |x: &str| {
            percent_encoding::percent_decode_str(x)
                .decode_utf8_lossy()
                .into_owned()
        };
        let db = u.path().trim_start_matches('/');
        Ok(Self {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: u.port().unwrap_or(5432),
            user: if u.username().is_empty() {
                "postgres".into()
            } else {
                dec(u.username())
            },
            password: u.password().map(dec),
            dbname: if db.is_empty() {
                "postgres".into()
            } else {
                dec(db)
            },
        })
    }

    fn options(&self) -> PgConnectOptions {
        let o = PgConnectOptions::new_without_pgpass()
            .host(&self.host)
            .port(self.port)
            .username(&self.user)
            .database(&self.dbname)
            .application_name("keel-controller");
        match &self.password {
            Some(p) => o.password(p),
            None => o,
        }
    }

    /// A connection to it.
    async fn connect(&self) -> Result<PgConnection, String> {
        PgConnection::connect_with(&self.options())
            .await
            .map_err(|e| format!("cannot connect to {}: {}", self.place(), sql_error(&e)))
    }

    /// The `primary_conninfo` a member called `follower` streams from
    /// this one with (libpq key=value; the follower's name is its
    /// `application_name`, which `synchronous_standby_names` lists).
    pub fn conninfo(&self, follower: &str) -> String {
        let q = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
        let mut s = format!(
            "host={} port={} user={} dbname={} application_name={}",
            q(&self.host),
            self.port,
            q(&self.user),
            q(&self.dbname),
            q(follower)
        );
        if let Some(p) = &self.password {
            s.push_str(&format!(" password={}", q(p)));
        }
        s
    }

    /// Where it is, without the password.
    pub fn place(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// What a step on a connection returns.
type Sql<'c, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, sqlx::Error>> + Send + 'c>>;

struct PgMember {
    dsn: Dsn,
    host: Host,
    conn: tokio::sync::Mutex<Option<PgConnection>>,
    /// The newest timeline it was seen streaming on: a standby that is
    /// not streaming reports its last restartpoint's, which lags.
    streamed_tli: std::sync::atomic::AtomicU64,
}

/// The PostgreSQL members of one target.
pub struct Postgres {
    members: BTreeMap<String, PgMember>,
    mode: Mode,
    synchronous_replicas: u32,
    /// The authority the SQL actions (promotion, settings) are taken
    /// under: checked right before each.
    fencing: crate::fencing::Fencing,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("members", &self.members.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// One probe's row.
const PROBE: &str = "SELECT pg_is_in_recovery() AS recovery, \
  CASE WHEN pg_is_in_recovery() THEN NULL ELSE (pg_current_wal_lsn() - '0/0')::int8 END AS current, \
  (pg_last_wal_receive_lsn() - '0/0')::int8 AS received, \
  (pg_last_wal_replay_lsn() - '0/0')::int8 AS replayed, \
  (SELECT status FROM pg_stat_wal_receiver) AS receiver, \
  (SELECT (latest_end_lsn - '0/0')::int8 FROM pg_stat_wal_receiver) AS head, \
  CASE WHEN pg_is_in_recovery() \
    THEN COALESCE((SELECT received_tli FROM pg_stat_wal_receiver WHERE received_tli > 0), (SELECT timeline_id FROM pg_control_checkpoint())) \
    ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int4 END::int8 AS timeline, \
  CASE WHEN pg_last_wal_replay_lsn() < pg_last_wal_receive_lsn() \
    THEN (EXTRACT(epoch FROM now() - pg_last_xact_replay_timestamp()) * 1000)::int8 ELSE 0 END AS lag_ms";

fn sql_error(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Io(e) => e.to_string(),
        sqlx::Error::Database(d) => d.message().to_owned(),
        other => other.to_string(),
    }
}

impl Postgres {
    /// The driver for `cfg`'s members (their `dsn` and host checked by
    /// validation; a member missing either is skipped and fails probes).
    pub fn new(cfg: &FailoverConfig, fencing: &crate::fencing::Fencing) -> Self {
        // The agents' token on every action (validated at config load).
        let headers =
            keel_tls::bearer(cfg.agent_token().ok().flatten().as_deref()).unwrap_or_default();
        let builder = || {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(2))
                .default_headers(headers.clone())
        };
        // Validated at config load; a CA file gone since is named here,
        // and the agents' https:// then fails each call, saying why.
        let http = cfg
            .agent_tls
            .client(
                builder(),
                &format!("controller.failover {}: agent_tls", cfg.name),
            )
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "the agents' TLS settings do not load");
                builder().build().unwrap_or_default()
            });
        let members = cfg
            .members
            .iter()
            .filter_map(|m| {
                let dsn = Dsn::parse(m.dsn.as_deref()?).ok()?;
                let host = match (&m.agent, &m.exec) {
                    (Some(u), _) => Host::Agent {
                        url: u.trim_end_matches('/').to_owned(),
                        http: http.clone(),
                        fencing: fencing.clone(),
                    },
                    (None, Some(argv)) => Host::Exec {
                        argv: argv.clone(),
                        member: m.name.clone(),
                        fencing: fencing.clone(),
                    },
                    (None, None) => return None,
                };
                Some((
                    m.name.clone(),
                    PgMember {
                        dsn,
                        host,
                        conn: tokio::sync::Mutex::new(None),
                        streamed_tli: std::sync::atomic::AtomicU64::new(0),
                    },
                ))
            })
            .collect();
        Self {
            members,
            mode: cfg.mode,
            synchronous_replicas: cfg.synchronous_replicas,
            fencing: fencing.clone(),
        }
    }

    /// Every member and where it is.
    pub fn members(&self) -> BTreeMap<String, String> {
        self.members
            .iter()
            .map(|(n, m)| (n.clone(), m.dsn.place()))
            .collect()
    }

    fn member(&self, name: &str) -> Result<&PgMember, String> {
        self.members
            .get(name)
            .ok_or_else(|| format!("{name:?} is not a member"))
    }

    /// Run `f` on `name`'s probe connection (opened if need be) within
    /// `timeout`, waiting for the connection included; a connection that
    /// failed or timed out is dropped.
    async fn with_conn<T, F>(&self, name: &str, timeout: Duration, f: F) -> Result<T, String>
    where
        F: for<'c> FnOnce(&'c mut PgConnection) -> Sql<'c, T>,
    {
        let m = self.member(name)?;
        let run = async {
            let mut g = m.conn.lock().await;
            if g.is_none() {
                *g = Some(m.dsn.connect().await?);
            }
            let Some(c) = g.as_mut() else {
                return Err("no connection".to_owned());
            };
            let r = f(c).await.map_err(|e| sql_error(&e));
            if r.is_err() {
                *g = None;
            }
            r
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(r) => r,
            Err(_) => {
                // Cut off mid-query: the connection's state is unknown.
                if let Ok(mut g) = m.conn.try_lock() {
                    *g = None;
                }
                Err("timed out".into())
            }
        }
    }

    /// Run `f` on a connection of its own to `name` (promotion,
    /// `CHECKPOINT`, settings: never on the probe connection, so probes
    /// go on meanwhile), within `timeout`.
    async fn with_admin<T, F>(&self, name: &str, timeout: Duration, f: F) -> Result<T, String>
    where
        F: for<'c> FnOnce(&'c mut PgConnection) -> Sql<'c, T>,
    {
        let m = self.member(name)?;
        let run = async {
            let mut c = m.dsn.connect().await?;
            let r = f(&mut c).await.map_err(|e| sql_error(&e));
            let _ = c.close().await;
            r
        };
        tokio::time::timeout(timeout, run)
            .await
            .unwrap_or_else(|_| Err("timed out".into()))
    }

    /// Probe `name` once: SQL, or when that fails, whether its agent says
    /// PostgreSQL is stopped (role `stopped`).
    pub async fn probe(&self, name: &str, timeout: Duration) -> Probe {
        let sql = self
            .with_conn(name, timeout, |c| {
                Box::pin(async move { sqlx::query(PROBE).fetch_one(c).await })
            })
            .await;
        let row = match sql {
            Ok(r) => r,
            Err(e) => {
                let Ok(m) = self.member(name) else {
                    return Probe::Failed(e);
                };
                return match m.host.state(timeout).await {
                    Ok(s) if !s.running => Probe::Answered(MemberReport {
                        role: "stopped".into(),
                        epoch: 0,
                        last_lsn: 0,
                        wal_bytes: 0,
                        primary_ok: None,
                        lag_ms: 0,
                        primary_head_lsn: 0,
                        primary_head_bytes: 0,
                    }),
                    _ => Probe::Failed(e),
                };
            }
        };
        match report(&row) {
            Ok(mut r) => {
                if let Ok(m) = self.member(name) {
                    use std::sync::atomic::Ordering::Relaxed;
                    if r.role == "replica" {
                        if r.primary_ok == Some(true) {
                            m.streamed_tli.fetch_max(r.epoch, Relaxed);
                        } else {
                            r.epoch = r.epoch.max(m.streamed_tli.load(Relaxed));
                        }
                    } else {
                        m.streamed_tli.store(0, Relaxed);
                    }
                }
                Probe::Answered(r)
            }
            Err(e) => Probe::Failed(format!("unexpected probe answer: {}", sql_error(&e))),
        }
    }

    /// The member answering as primary, and its timeline; every member
    /// that answers must belong to one cluster (one system identifier).
    pub async fn topology(&self) -> Result<(String, u64), String> {
        let mut primaries = Vec::new();
        let mut seen = Vec::new();
        let mut system: Option<(String, i64)> = None;
        for name in self.members.keys() {
            let p = self.probe(name, Duration::from_secs(2)).await;
            let id = self
                .with_conn(name, Duration::from_secs(2), |c| {
                    Box::pin(async move {
                        sqlx::query("SELECT system_identifier FROM pg_control_system()")
                            .fetch_one(c)
                            .await
                            .and_then(|r| r.try_get::<i64, _>(0))
                    })
                })
                .await;
            if let Ok(id) = id {
                match &system {
                    None => system = Some((name.clone(), id)),
                    Some((first, other)) if *other != id => {
                        return Err(format!(
                            "{name} is not in {first}'s cluster (system identifier {id}, not {other}): check its dsn"
                        ));
                    }
                    Some(_) => {}
                }
            }
            match &p {
                Probe::Answered(r) if r.role == "primary" => {
                    primaries.push((name.clone(), r.epoch))
                }
                Probe::Answered(r) => seen.push(format!("{name}: {}", r.role)),
                Probe::Failed(e) => seen.push(format!("{name}: {e}")),
            }
        }
        match primaries.as_slice() {
            [(n, tli)] => Ok((n.clone(), *tli)),
            [] => Err(format!(
                "no member answers as primary ({})",
                seen.join("; ")
            )),
            many => Err(format!(
                "{} all answer as primary: fence all but one by hand first",
                many.iter()
                    .map(|(n, t)| format!("{n} (timeline {t})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    /// Stop `name` (the fence); the shutdown checkpoint's lsn when known.
    pub async fn fence(&self, name: &str) -> Result<Option<u64>, String> {
        let m = self.member(name)?;
        *m.conn.lock().await = None;
        m.host
            .act("stop", None, Duration::from_secs(45))
            .await
            .map(|d| d.checkpoint_lsn)
    }

    /// Start `name` again as it was (a fenced primary whose switchover
    /// could not finish).
    pub async fn start(&self, name: &str) -> Result<(), String> {
        self.member(name)?
            .host
            .act("start", None, Duration::from_secs(60))
            .await
            .map(|_| ())
    }

    /// Have `name` follow `primary`: a running standby is re-pointed and
    /// reloads (unless `rewind`); anything else is rewound and started as
    /// a standby.
    pub async fn rejoin(&self, name: &str, primary: &str, rewind: bool) -> Result<(), String> {
        let m = self.member(name)?;
        let conninfo = self.member(primary)?.dsn.conninfo(name);
        let running_standby = matches!(
            self.probe(name, Duration::from_secs(2)).await,
            Probe::Answered(r) if r.role == "replica"
        );
        let action = if running_standby && !rewind {
            "follow"
        } else {
            "rejoin"
        };
        if action == "rejoin" {
            // pg_rewind reads the source's timeline from its control file,
            // which a promoted primary updates only at its first
            // checkpoint: without one it finds "no rewind required".
            self.with_admin(primary, Duration::from_secs(60), |c| {
                Box::pin(async move { sqlx::query("CHECKPOINT").execute(c).await.map(|_| ()) })
            })
            .await
            .map_err(|e| format!("CHECKPOINT on {primary} before rewinding {name}: {e}"))?;
        }
        m.host
            .act(action, Some(&conninfo), Duration::from_secs(660))
            .await
            .map(|_| ())
    }

    /// The `synchronous_standby_names` for `primary`: any
    /// `synchronous_replicas` of the other members.
    fn standby_names(&self, primary: &str) -> String {
        let names: Vec<String> = self
            .members
            .keys()
            .filter(|n| *n != primary)
            .map(|n| format!("\"{}\"", n.replace('"', "\"\"")))
            .collect();
        format!("ANY {} ({})", self.synchronous_replicas, names.join(", "))
    }

    /// Synchronous mode: set `name`'s `synchronous_standby_names` to
    /// `ANY k` of the other members, if it differs. Kept on standbys too
    /// (where it does nothing), so a promoted member has it in force the
    /// moment it leaves recovery rather than after a reload lands.
    async fn set_standby_names(&self, name: &str) -> Result<(), String> {
        if self.mode != Mode::Synchronous {
            return Ok(());
        }
        self.fencing
            .token()
            .map_err(|e| format!("synchronous_standby_names on {name}: {e}"))?;
        let want = self.standby_names(name);
        let set = format!(
            "ALTER SYSTEM SET synchronous_standby_names = '{}'",
            want.replace('\'', "''")
        );
        self.with_admin(name, Duration::from_secs(10), move |c| {
            Box::pin(async move {
                let now: String = sqlx::query("SHOW synchronous_standby_names")
                    .fetch_one(&mut *c)
                    .await?
                    .try_get(0)?;
                if now != want {
                    sqlx::query(sqlx::AssertSqlSafe(set))
                        .execute(&mut *c)
                        .await?;
                    sqlx::query("SELECT pg_reload_conf()").execute(c).await?;
                }
                Ok(())
            })
        })
        .await
        .map_err(|e| format!("setting synchronous_standby_names on {name}: {e}"))
    }

    /// At start: every member's host agent must be that member's, and in
    /// synchronous mode the primary must hold a commit until
    /// `synchronous_replicas` of the others have it (set if not; the
    /// standbys too, where it waits for their promotion).
    pub async fn prepare(&self, primary: &str) -> Result<(), String> {
        for (name, m) in &self.members {
            if let Ok(s) = m.host.state(Duration::from_secs(2)).await
                && s.member != *name
            {
                return Err(format!(
                    "{name}'s agent runs the failover role of {:?}: check its agent URL",
                    s.member
                ));
            }
        }
        // A user who may not read pg_stat_wal_receiver's status sees it
        // NULL: every standby would seem to have lost the primary, and a
        // controller cut off alone could not be told from a dead primary.
        for (name, m) in &self.members {
            let may = self
                .with_admin(name, Duration::from_secs(5), |c| {
                    Box::pin(async move {
                        sqlx::query(
                            "SELECT rolsuper OR pg_has_role(current_user, 'pg_read_all_stats', 'MEMBER') FROM pg_roles WHERE rolname = current_user",
                        )
                        .fetch_one(c)
                        .await
                        .and_then(|r| r.try_get::<bool, _>(0))
                    })
                })
                .await;
            if let Ok(false) = may {
                return Err(format!(
                    "{name}: its dsn's user {:?} may not read the standbys' replication status (grant it pg_read_all_stats, or use a superuser): without it a partition could not be told from a dead primary",
                    m.dsn.user
                ));
            }
        }
        self.set_standby_names(primary).await?;
        for name in self.members.keys().filter(|n| *n != primary) {
            if let Err(e) = self.set_standby_names(name).await {
                tracing::warn!(member = %name, error = %e, "standby left as it is; set again when it is promoted");
            }
        }
        Ok(())
    }

    /// Promote `name`: synchronous mode first sets which standbys must
    /// hold a commit (already set at start; checked again); then
    /// `pg_promote()`, and the running standbys follow it.
    pub async fn promote(self: &Arc<Self>, name: &str) -> Result<Promoted, String> {
        self.set_standby_names(name).await?;
        // No PostgreSQL checks a fencing token: the deadline is read at
        // the last moment (a leader stalled mid-failover promotes nothing).
        self.fencing
            .token()
            .map_err(|e| format!("promote {name}: {e}"))?;
        let ok = self
            .with_admin(name, Duration::from_secs(65), |c| {
                Box::pin(async move {
                    sqlx::query("SELECT pg_promote(true, 60)")
                        .fetch_one(c)
                        .await
                        .and_then(|r| r.try_get::<bool, _>(0))
                })
            })
            .await
            .map_err(|e| format!("pg_promote() on {name}: {e}"))?;
        if !ok {
            return Err(format!("pg_promote() on {name} did not finish within 60 s"));
        }
        let promoted_at_ms = keel_core::clock::unix_ms(std::time::SystemTime::now());
        let (lsn, epoch) = match self.probe(name, Duration::from_secs(2)).await {
            Probe::Answered(r) if r.role == "primary" => (r.last_lsn, r.epoch),
            Probe::Answered(r) => {
                return Err(format!("{name} answers as {} after pg_promote()", r.role));
            }
            Probe::Failed(e) => return Err(format!("{name} after pg_promote(): {e}")),
        };
        // Running standbys are re-pointed now (a reload); a member that is
        // stopped or unreachable is rewound by the controller's tidying
        // once its host answers, so the promotion is not held up by it.
        let mut set = tokio::task::JoinSet::new();
        for other in self.members.keys().filter(|n| *n != name) {
            let (me, other, primary) = (self.clone(), other.clone(), name.to_owned());
            set.spawn(async move {
                let r = match me.probe(&other, Duration::from_secs(1)).await {
                    Probe::Answered(r) if r.role == "replica" => {
                        me.rejoin(&other, &primary, false).await
                    }
                    Probe::Answered(r) => {
                        Err(format!("{other} is {}: rejoined when tidied", r.role))
                    }
                    Probe::Failed(e) => Err(e),
                };
                (other, r)
            });
        }
        let (mut followed, mut unreachable) = (Vec::new(), Vec::new());
        while let Some(r) = set.join_next().await {
            match r {
                Ok((n, Ok(_))) => followed.push(n),
                Ok((n, Err(e))) => {
                    tracing::warn!(member = %n, error = %e, "did not follow the new primary");
                    unreachable.push(n);
                }
                Err(_) => {}
            }
        }
        followed.sort();
        unreachable.sort();
        Ok(Promoted {
            lsn,
            epoch: Some(epoch),
            followed,
            unreachable,
            promoted_at_ms,
            ..Promoted::default()
        })
    }
}

/// A probe row as a member report.
fn report(row: &sqlx::postgres::PgRow) -> Result<MemberReport, sqlx::Error> {
    let recovery: bool = row.try_get("recovery")?;
    let current: Option<i64> = row.try_get("current")?;
    let received: Option<i64> = row.try_get("received")?;
    let replayed: Option<i64> = row.try_get("replayed")?;
    let receiver: Option<String> = row.try_get("receiver")?;
    let head: Option<i64> = row.try_get("head")?;
    let timeline: Option<i64> = row.try_get("timeline")?;
    let lag_ms: Option<i64> = row.try_get("lag_ms")?;
    let pos = |v: Option<i64>| v.unwrap_or(0).max(0) as u64;
    let last = if recovery {
        pos(received).max(pos(replayed))
    } else {
        pos(current)
    };
    Ok(MemberReport {
        role: if recovery { "replica" } else { "primary" }.into(),
        epoch: pos(timeline),
        last_lsn: last,
        wal_bytes: last,
        primary_ok: recovery.then(|| receiver.as_deref() == Some("streaming")),
        lag_ms: pos(lag_ms),
        primary_head_lsn: pos(head),
        primary_head_bytes: pos(head),
    })
}
