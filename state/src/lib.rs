//! Keel's state store: what the collector must not forget across a
//! restart — alert state and history, routing records (what was paged,
//! acknowledgements), silences, tickets and notifications — kept in SQL
//! through sqlx. SQLite (one file in the data directory) is the default;
//! PostgreSQL (`postgres://…`) serves teams that run several collectors.
//!
//! The store holds documents (JSON text written by their owners) by key
//! in a few tables, plus an append-only alert history. Owners keep their
//! state in memory and hand every change to a [`Writer`], whose task
//! applies queued changes in one transaction each, in order; a failed
//! write is retried, never dropped. [`Writer::flush`] waits until every
//! change sent before it is committed.
//!
//! [`lease`]: which of several collectors sharing a PostgreSQL store
//! leads, by a lease timed on the database's clock, with a fencing token
//! that every leader's write carries ([`Op::Fenced`]) and that the
//! transaction landing it checks.

pub mod migrate;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::AnyPool;
use sqlx::Row as _;
use sqlx::any::AnyPoolOptions;

/// A statement built from our own table names (never from input).
macro_rules! sql {
    ($($t:tt)*) => {
        sqlx::AssertSqlSafe(format!($($t)*))
    };
}

pub mod lease;

/// A state store failure.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The database could not be opened or its tables created.
    #[error("state store {url}: {source}")]
    Open {
        /// The URL, without a password.
        url: String,
        /// Why.
        source: sqlx::Error,
    },
    /// A statement failed.
    #[error("state store: {what}: {source}")]
    Query {
        /// What was being done.
        what: &'static str,
        /// Why.
        source: sqlx::Error,
    },
    /// The writer task is gone (the runtime is shutting down).
    #[error("state store: the writer task has stopped")]
    Stopped,
    /// The schema is not one this Keel can use.
    #[error("state store: {0}")]
    Schema(String),
    /// Changes made under a lease this collector no longer holds were
    /// dropped (how many groups).
    #[error(
        "state store: {0} change(s) made while leading were dropped: the lease has passed to another collector"
    )]
    Fenced(u64),
}

/// Which database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite (embedded).
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// The tables of documents by key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Alerts the rules hold (pending, firing, recently resolved).
    Alerts,
    /// Per alert: what was paged, when, whether acknowledged.
    Routing,
    /// Silences, expired ones included.
    Silences,
    /// P2 tickets.
    Tickets,
    /// Notifications: each page to each receiver and how sending went.
    Notifications,
    /// The controller's events (decisions, scalings, actuator failures),
    /// keyed by time.
    Events,
    /// Each failover target's primary and epoch (the controller owns them).
    Failover,
    /// People who log in: name, role, argon2 password hash (keel-auth).
    Users,
    /// API tokens: id, name, role, expiry and the token's SHA-256.
    Tokens,
    /// Changes people made (who, when, what), keyed by time.
    Audit,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Alerts => "keel_alerts",
            Table::Routing => "keel_routing",
            Table::Silences => "keel_silences",
            Table::Tickets => "keel_tickets",
            Table::Notifications => "keel_notifications",
            Table::Events => "keel_events",
            Table::Failover => "keel_failover",
            Table::Users => "keel_users",
            Table::Tokens => "keel_tokens",
            Table::Audit => "keel_audit",
        }
    }
}

/// One change.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Insert or replace the document at `key`.
    Put {
        /// Which table.
        table: Table,
        /// Its key.
        key: String,
        /// When it changed (ms).
        at_ms: i64,
        /// The document (JSON).
        doc: String,
    },
    /// Remove the document at `key`.
    Delete {
        /// Which table.
        table: Table,
        /// Its key.
        key: String,
    },
    /// Append to the alert history.
    History {
        /// When (ms).
        at_ms: i64,
        /// The alert's key.
        key: String,
        /// What happened (JSON).
        doc: String,
    },
    /// `ops`, applied only if the lease `lease` is still held with
    /// `token` when the transaction lands them (a leader's writes: a
    /// deposed leader's are dropped, and counted in
    /// [`StateStore::fenced`]).
    Fenced {
        /// The lease's name.
        lease: String,
        /// The token the writer held.
        token: i64,
        /// What to write (no `Fenced` inside).
        ops: Vec<Op>,
    },
}

/// One alert history entry.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    /// Its sequence number (increasing).
    pub seq: i64,
    /// When (ms).
    pub at_ms: i64,
    /// The alert's key.
    pub key: String,
    /// What happened (JSON).
    pub doc: String,
}

/// An open state store.
#[derive(Debug, Clone)]
pub struct StateStore {
    pool: AnyPool,
    backend: Backend,
    /// Ops dropped because their lease had passed to another holder.
    fenced: Arc<std::sync::atomic::AtomicU64>,
    /// Which database this is, as fencing tokens are scoped: tokens
    /// start again at 1 in a new database, and an actuator must not hold
    /// the old one's against it (PostgreSQL: the database's OID; "").
    id: String,
}

/// The URL of a SQLite database file at `path` (created if missing).
pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

/// `url` with any password replaced by `***`, for messages.
pub fn redact(url: &str) -> String {
    keel_core::secret::redact_url_password(url)
}

impl StateStore {
    /// Open (creating the tables if needed) the database at `url`:
    /// `sqlite://path?mode=rwc` or `postgres://user@host/db`.
    pub async fn open(url: &str) -> Result<Self, StateError> {
        let open_err = |source| StateError::Open {
            url: redact(url),
            source,
        };
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(open_err(sqlx::Error::Configuration(
                "the state URL must start with sqlite: or postgres://".into(),
            )));
        };
        sqlx::any::install_default_drivers();
        // One connection first: an unreachable server fails at once
        // rather than after the pool's acquire timeout.
        {
            use sqlx::Connection as _;
            let conn = sqlx::AnyConnection::connect(url).await.map_err(open_err)?;
            let _ = conn.close().await;
        }
        let mut options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        if backend == Backend::Sqlite {
            // One connection: SQLite has one writer, and an in-memory
            // database lives only as long as its connection.
            options = options
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        // WAL: readers never block the writer; NORMAL
                        // sync is durable across a process crash.
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA synchronous = NORMAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA busy_timeout = 5000")
                            .execute(&mut *conn)
                            .await?;
                        Ok(())
                    })
                });
        } else {
            options = options.max_connections(4);
        }
        let pool = options.connect(url).await.map_err(open_err)?;
        let id = match backend {
            Backend::Sqlite => String::new(),
            Backend::Postgres => {
                sqlx::query("SELECT oid::text FROM pg_database WHERE datname = current_database()")
                    .fetch_one(&pool)
                    .await
                    .and_then(|r| r.try_get::<String, _>(0))
                    .map_err(open_err)?
            }
        };
        let me = Self {
            pool,
            backend,
            fenced: Arc::default(),
            id,
        };
        migrate::migrate(&me.pool, backend).await?;
        Ok(me)
    }

    /// `lease` as actuators see it: scoped to this database, whose
    /// tokens are the only ones comparable (`keel-leader@db16384`).
    pub fn scoped_lease(&self, lease: &str) -> String {
        if self.id.is_empty() {
            lease.to_owned()
        } else {
            format!("{lease}@db{}", self.id)
        }
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Every document of `table`, by key order.
    pub async fn load(&self, table: Table) -> Result<Vec<(String, String)>, StateError> {
        let rows = sqlx::query(sql!("SELECT key, doc FROM {} ORDER BY key", table.name()))
            .fetch_all(&self.pool)
            .await
            .map_err(|source| StateError::Query {
                what: "load",
                source,
            })?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|source| StateError::Query {
                what: "load",
                source,
            })
    }

    /// The document of `table` at `key`, if there is one.
    pub async fn get(&self, table: Table, key: &str) -> Result<Option<String>, StateError> {
        let row = sqlx::query(sql!("SELECT doc FROM {} WHERE key = $1", table.name()))
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .and_then(|r| r.map(|r| r.try_get::<String, _>(0)).transpose())
            .map_err(|source| StateError::Query {
                what: "get",
                source,
            })?;
        Ok(row)
    }

    /// The documents of `table` changed in `[start_ms, end_ms]`, oldest
    /// first, at most `limit` (the newest when there are more).
    pub async fn load_between(
        &self,
        table: Table,
        start_ms: i64,
        end_ms: i64,
        limit: i64,
    ) -> Result<Vec<(String, String)>, StateError> {
        let sql = sql!(
            "SELECT key, doc FROM {} WHERE updated_ms >= $1 AND updated_ms <= $2 ORDER BY updated_ms DESC, key DESC LIMIT $3",
            table.name()
        );
        self.newest_between("load_between", sql, (start_ms, end_ms, limit), |r| {
            Ok((r.try_get(0)?, r.try_get(1)?))
        })
        .await
    }

    /// The alert history in `[start_ms, end_ms]`, oldest first, at most
    /// `limit` entries (the newest when there are more).
    pub async fn history(
        &self,
        start_ms: i64,
        end_ms: i64,
        limit: i64,
    ) -> Result<Vec<HistoryEntry>, StateError> {
        self.newest_between(
            "history",
            "SELECT seq, at_ms, key, doc FROM keel_alert_history WHERE at_ms >= $1 AND at_ms <= $2 ORDER BY seq DESC LIMIT $3",
            (start_ms, end_ms, limit),
            |r| {
                Ok(HistoryEntry {
                    seq: r.try_get(0)?,
                    at_ms: r.try_get(1)?,
                    key: r.try_get(2)?,
                    doc: r.try_get(3)?,
                })
            },
        )
        .await
    }

    /// The one time-range reader: `sql` selects rows with a time in
    /// `[$1, $2]`, newest first, at most `$3`; the rows come back oldest
    /// first.
    async fn newest_between<T>(
        &self,
        what: &'static str,
        sql: impl sqlx::SqlSafeStr,
        (start_ms, end_ms, limit): (i64, i64, i64),
        row: impl Fn(&sqlx::any::AnyRow) -> Result<T, sqlx::Error>,
    ) -> Result<Vec<T>, StateError> {
        let err = |source| StateError::Query { what, source };
        let rows = sqlx::query(sql)
            .bind(start_ms)
            .bind(end_ms)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(err)?;
        let mut out = rows
            .iter()
            .map(row)
            .collect::<Result<Vec<T>, sqlx::Error>>()
            .map_err(err)?;
        out.reverse();
        Ok(out)
    }

    /// Apply `ops` in order, in one transaction: how many fenced groups
    /// were dropped (their lease had passed to another holder).
    pub async fn apply(&self, ops: &[Op]) -> Result<u64, StateError> {
        let err = |source| StateError::Query {
            what: "write",
            source,
        };
        let mut tx = self.pool.begin().await.map_err(err)?;
        let mut dropped = 0;
        for op in ops {
            match op {
                Op::Fenced { lease, token, ops } => {
                    if lease::still_held(&mut tx, self.backend, lease, *token)
                        .await
                        .map_err(err)?
                    {
                        for op in ops {
                            apply_one(&mut tx, op).await.map_err(err)?;
                        }
                    } else {
                        dropped += 1;
                        tracing::error!(
                            lease = %lease,
                            token,
                            dropped = ops.len(),
                            "a write made under a lease this collector no longer holds was dropped"
                        );
                    }
                }
                op => apply_one(&mut tx, op).await.map_err(err)?,
            }
        }
        tx.commit().await.map_err(err)?;
        // Counted once committed, not at each retry.
        self.fenced
            .fetch_add(dropped, std::sync::atomic::Ordering::Relaxed);
        Ok(dropped)
    }

    /// Groups of changes dropped so far because the lease they were made
    /// under had passed to another holder (or was not held).
    pub fn fenced(&self) -> u64 {
        self.fenced.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Delete history entries older than `before_ms`; how many.
    pub async fn prune_history(&self, before_ms: i64) -> Result<u64, StateError> {
        sqlx::query("DELETE FROM keel_alert_history WHERE at_ms < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected())
            .map_err(|source| StateError::Query {
                what: "prune history",
                source,
            })
    }

    /// Delete the documents of `table` last changed before `before_ms`
    /// (the audit's retention): how many.
    pub async fn prune_documents(&self, table: Table, before_ms: i64) -> Result<u64, StateError> {
        sqlx::query(sql!("DELETE FROM {} WHERE updated_ms < $1", table.name()))
            .bind(before_ms)
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected())
            .map_err(|source| StateError::Query {
                what: "prune documents",
                source,
            })
    }

    /// Start the writer task on the current runtime.
    pub fn writer(self: &Arc<Self>) -> Writer {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(write_loop(self.clone(), rx));
        Writer { tx, fence: None }
    }

    /// A writer for a leader's changes: each change carries the token
    /// `leadership` holds when it is sent ([`Op::Fenced`]), and lands only
    /// if the lease is still held with it; a change sent while not
    /// leading is dropped at once. Either way it is counted in
    /// [`Self::fenced`], and the next [`Writer::flush`] says so.
    pub fn writer_fenced(self: &Arc<Self>, leadership: &lease::Leadership) -> Writer {
        let mut w = self.writer();
        w.fence = Some(Arc::new(Fence {
            lease: leadership.name().to_owned(),
            acting: leadership.acting(),
            store: self.clone(),
            unsent: std::sync::atomic::AtomicU64::new(0),
        }));
        w
    }
}

/// How a leader's writer stamps its changes.
#[derive(Debug)]
struct Fence {
    lease: String,
    acting: lease::Acting,
    store: Arc<StateStore>,
    /// Groups dropped at send (not leading) since the last flush.
    unsent: std::sync::atomic::AtomicU64,
}

/// One op (not `Fenced`) inside a write transaction.
async fn apply_one(tx: &mut sqlx::AnyConnection, op: &Op) -> Result<(), sqlx::Error> {
    match op {
        Op::Put {
            table,
            key,
            at_ms,
            doc,
        } => {
            sqlx::query(sql!(
                "INSERT INTO {} (key, updated_ms, doc) VALUES ($1, $2, $3) ON CONFLICT (key) DO UPDATE SET updated_ms = excluded.updated_ms, doc = excluded.doc",
                table.name()
            ))
            .bind(key.as_str())
            .bind(*at_ms)
            .bind(doc.as_str())
            .execute(tx)
            .await?;
        }
        Op::Delete { table, key } => {
            sqlx::query(sql!("DELETE FROM {} WHERE key = $1", table.name()))
                .bind(key.as_str())
                .execute(tx)
                .await?;
        }
        Op::History { at_ms, key, doc } => {
            sqlx::query("INSERT INTO keel_alert_history (at_ms, key, doc) VALUES ($1, $2, $3)")
                .bind(*at_ms)
                .bind(key.as_str())
                .bind(doc.as_str())
                .execute(tx)
                .await?;
        }
        // Never nested: one lease check guards a group.
        Op::Fenced { .. } => {
            return Err(sqlx::Error::Protocol(
                "a fenced op inside a fenced op".into(),
            ));
        }
    }
    Ok(())
}

enum Msg {
    Op(Op),
    /// Ops committed in one transaction together.
    Ops(Vec<Op>),
    /// Answered with how many fenced groups were dropped in the
    /// transactions since the previous flush.
    Flush(tokio::sync::oneshot::Sender<u64>),
}

/// Under what authority an action is taken ([`Writer::act_as`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActAs {
    /// No lease: a single collector acts on its own.
    Alone,
    /// As the leader, under this lease's fencing token.
    Leader {
        /// The lease's name.
        lease: String,
        /// The token: whoever the action reaches may refuse one older
        /// than the newest it has seen.
        token: i64,
    },
    /// Not leading (or past its own deadline): do nothing.
    NotLeading,
}

/// Queues changes for the store; cheap to clone, usable from sync code.
#[derive(Debug, Clone)]
pub struct Writer {
    tx: tokio::sync::mpsc::UnboundedSender<Msg>,
    /// A leader's writer: its lease and standing.
    fence: Option<Arc<Fence>>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Op(op) => op.fmt(f),
            Msg::Ops(ops) => ops.fmt(f),
            Msg::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl Writer {
    /// Queue `op` (applied after every op queued before it).
    pub fn send(&self, op: Op) {
        let Some(m) = self.stamp(vec![op]) else {
            return;
        };
        if self.tx.send(m).is_err() {
            tracing::error!("state store writer stopped; a change was not saved");
        }
    }

    /// Queue `ops` to be committed in one transaction (with others, never
    /// split): changes that must not be saved one without the other.
    pub fn send_all(&self, ops: Vec<Op>) {
        if ops.is_empty() {
            return;
        }
        let Some(m) = self.stamp(ops) else {
            return;
        };
        if self.tx.send(m).is_err() {
            tracing::error!("state store writer stopped; changes were not saved");
        }
    }

    /// Under what authority this writer's owner acts now: alone (not a
    /// leader's writer), as the leader under its token, or not at all.
    pub fn act_as(&self) -> ActAs {
        match &self.fence {
            None => ActAs::Alone,
            Some(f) => match f.acting.token() {
                Some(token) => ActAs::Leader {
                    lease: f.store.scoped_lease(&f.lease),
                    token,
                },
                None => ActAs::NotLeading,
            },
        }
    }

    /// Whether what this writer's changes stand for may be done now: a
    /// leader's writer only while it leads within its own deadline
    /// ([`lease::Acting`]); any other writer always. Asked at the moment
    /// of an action the store cannot fence (an email, a webhook).
    pub fn may_act(&self) -> bool {
        self.fence.as_ref().is_none_or(|f| f.acting.may_act())
    }

    /// `ops` as sent: as they are, or under the lease's token now (none
    /// while not leading: dropped and counted).
    fn stamp(&self, mut ops: Vec<Op>) -> Option<Msg> {
        let Some(f) = &self.fence else {
            return Some(if ops.len() == 1 {
                Msg::Op(ops.remove(0))
            } else {
                Msg::Ops(ops)
            });
        };
        let token = f.acting.token();
        match token {
            Some(token) => Some(Msg::Op(Op::Fenced {
                lease: f.lease.clone(),
                token,
                ops,
            })),
            None => {
                use std::sync::atomic::Ordering::Relaxed;
                f.unsent.fetch_add(1, Relaxed);
                f.store.fenced.fetch_add(1, Relaxed);
                tracing::error!(
                    dropped = ops.len(),
                    "a change was not saved: this collector does not lead"
                );
                None
            }
        }
    }

    /// Wait until every op queued before this call is committed: an
    /// error if the store stopped, or if changes of a leader's writer
    /// were dropped since the last flush (its lease had passed on).
    pub async fn flush(&self) -> Result<(), StateError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(Msg::Flush(tx))
            .map_err(|_| StateError::Stopped)?;
        let dropped = rx.await.map_err(|_| StateError::Stopped)?;
        let unsent = self.fence.as_ref().map_or(0, |f| {
            f.unsent.swap(0, std::sync::atomic::Ordering::Relaxed)
        });
        match dropped + unsent {
            0 => Ok(()),
            n => Err(StateError::Fenced(n)),
        }
    }
}

/// Most ops applied in one transaction.
const BATCH: usize = 512;

async fn write_loop(store: Arc<StateStore>, mut rx: tokio::sync::mpsc::UnboundedReceiver<Msg>) {
    let mut ops = Vec::new();
    let mut flushes = Vec::new();
    let mut dropped = 0;
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(m) = next.take() {
            match m {
                Msg::Op(op) => ops.push(op),
                Msg::Ops(v) => ops.extend(v),
                Msg::Flush(done) => flushes.push(done),
            }
            if ops.len() < BATCH {
                next = rx.try_recv().ok();
            }
        }
        coalesce(&mut ops);
        let mut wait = Duration::from_millis(100);
        // Test builds only: release builds skip even the scan.
        #[cfg(debug_assertions)]
        if ops.iter().any(|o| matches!(o, Op::Fenced { .. })) {
            keel_core::crash::point("before_fenced_write");
        }
        while !ops.is_empty() {
            match store.apply(&ops).await {
                Ok(n) => {
                    dropped += n;
                    ops.clear();
                }
                Err(e) => {
                    // Kept and retried: a full disk or a restarting
                    // database must not lose alert state.
                    tracing::error!(error = %e, pending = ops.len(), retry_in = ?wait, "saving state failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
            }
        }
        for f in flushes.drain(..) {
            let _ = f.send(std::mem::take(&mut dropped));
        }
    }
}

/// Adjacent groups under one lease and token become one group: one
/// lease check a run, not one a change.
fn coalesce(ops: &mut Vec<Op>) {
    let mut out: Vec<Op> = Vec::with_capacity(ops.len());
    for op in ops.drain(..) {
        match (out.last_mut(), op) {
            (
                Some(Op::Fenced {
                    lease: l1,
                    token: t1,
                    ops: group,
                }),
                Op::Fenced {
                    lease,
                    token,
                    ops: more,
                },
            ) if *l1 == lease && *t1 == token => group.extend(more),
            (_, op) => out.push(op),
        }
    }
    *ops = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact("postgres://keel:secret@db:5432/keel"),
            "postgres://keel:***@db:5432/keel"
        );
        assert_eq!(redact("postgres://keel@db/keel"), "postgres://keel@db/keel");
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
    }

    #[tokio::test]
    async fn an_unknown_scheme_is_refused_by_name() {
        let e = StateStore::open("mysql://x").await.unwrap_err().to_string();
        assert!(e.contains("mysql://x") && e.contains("sqlite:"), "{e}");
    }
}

/// Create the database `name` (letters, digits and `_`) afresh on the
/// PostgreSQL server `admin_url` names (as a user that may): its URL.
/// For benches that need a store of their own.
pub async fn create_postgres_database(admin_url: &str, name: &str) -> Result<String, StateError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(StateError::Schema(format!(
            "{name:?} is not a database name of lowercase letters, digits and _"
        )));
    }
    sqlx::any::install_default_drivers();
    let open_err = |source| StateError::Open {
        url: redact(admin_url),
        source,
    };
    let pool = AnyPoolOptions::new()
        .max_connections(1)
        .connect(admin_url)
        .await
        .map_err(open_err)?;
    for statement in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&pool)
            .await
            .map_err(|source| StateError::Query {
                what: "create the database",
                source,
            })?;
    }
    let base = admin_url.rsplit_once('/').map_or(admin_url, |(b, _)| b);
    Ok(format!("{base}/{name}"))
}

/// Helpers for tests that run against a real PostgreSQL server.
#[doc(hidden)]
pub mod testing {
    use std::sync::atomic::{AtomicU32, Ordering};

    /// `KEEL_TEST_POSTGRES_URL` or the local server (trust auth).
    pub fn admin_url() -> String {
        std::env::var("KEEL_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
    }

    /// Whether PostgreSQL tests run (`KEEL_TEST_POSTGRES=1`).
    pub fn postgres_enabled() -> bool {
        std::env::var("KEEL_TEST_POSTGRES").is_ok_and(|v| v == "1")
    }

    /// Create an empty database of its own for one test; its URL.
    pub async fn fresh_postgres_database() -> Result<String, sqlx::Error> {
        static N: AtomicU32 = AtomicU32::new(0);
        sqlx::any::install_default_drivers();
        let admin = admin_url();
        let name = format!(
            "keel_test_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect(&admin)
            .await?;
        // Databases earlier test runs left behind go first.
        let mine = format!("keel_test_{}_%", std::process::id());
        let old: Vec<String> = sqlx::query(
            "SELECT datname::text FROM pg_database WHERE datname LIKE 'keel_test_%' AND datname NOT LIKE $1",
        )
        .bind(mine)
        .fetch_all(&pool)
        .await?
        .iter()
        .map(|r| sqlx::Row::try_get(r, 0))
        .collect::<Result<_, _>>()?;
        for db in old.iter().chain([&name]) {
            sqlx::query(sql!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                .execute(&pool)
                .await?;
        }
        sqlx::query(sql!("CREATE DATABASE {name}"))
            .execute(&pool)
            .await?;
        pool.close().await;
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        Ok(format!("{base}/{name}"))
    }
}
