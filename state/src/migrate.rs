//! Versioned schema migrations, the same on SQLite and PostgreSQL.
//!
//! `keel_schema` records each version applied, when, and what it did.
//! Opening a store applies every newer migration in order, each in its
//! own transaction with its version row, so a crash leaves the schema at
//! a whole version. On PostgreSQL a transaction-scoped advisory lock keeps
//! two collectors opening one database from migrating at once. Version 1
//! is the schema from before migrations existed, written `IF NOT EXISTS`
//! so that a store created then is adopted as it is. A store whose schema
//! is newer than this Keel knows is refused (a downgrade would misread it).

use sqlx::Row as _;

use crate::{Backend, StateError, Table};

/// One schema change.
struct Migration {
    version: i64,
    what: &'static str,
    statements: fn(Backend) -> Vec<String>,
}

/// The document tables of version 1.
const V1_TABLES: [Table; 6] = [
    Table::Alerts,
    Table::Routing,
    Table::Silences,
    Table::Tickets,
    Table::Notifications,
    Table::Events,
];

fn document_table(t: Table) -> [String; 2] {
    [
        format!(
            "CREATE TABLE IF NOT EXISTS {} (key TEXT PRIMARY KEY, updated_ms BIGINT NOT NULL, doc TEXT NOT NULL)",
            t.name()
        ),
        // Time-range reads (the timeline's events).
        format!(
            "CREATE INDEX IF NOT EXISTS {0}_updated ON {0} (updated_ms)",
            t.name()
        ),
    ]
}

fn v1(backend: Backend) -> Vec<String> {
    let mut out: Vec<String> = V1_TABLES.into_iter().flat_map(document_table).collect();
    let seq = match backend {
        Backend::Sqlite => "seq INTEGER PRIMARY KEY",
        Backend::Postgres => "seq BIGSERIAL PRIMARY KEY",
    };
    out.push(format!(
        "CREATE TABLE IF NOT EXISTS keel_alert_history ({seq}, at_ms BIGINT NOT NULL, key TEXT NOT NULL, doc TEXT NOT NULL)"
    ));
    out.push(
        "CREATE INDEX IF NOT EXISTS keel_alert_history_at ON keel_alert_history (at_ms)".into(),
    );
    out
}

fn v2(_: Backend) -> Vec<String> {
    document_table(Table::Failover).into()
}

fn v3(_: Backend) -> Vec<String> {
    [Table::Users, Table::Tokens, Table::Audit]
        .into_iter()
        .flat_map(document_table)
        .collect()
}

fn v4(_: Backend) -> Vec<String> {
    // Times are milliseconds of the database's own clock, so that two
    // collectors whose clocks disagree still agree on who holds a lease.
    vec![
        "CREATE TABLE IF NOT EXISTS keel_leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, token BIGINT NOT NULL, since_ms BIGINT NOT NULL, renewed_ms BIGINT NOT NULL, expires_ms BIGINT NOT NULL)".into(),
    ]
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        what: "alerts, routing, silences, tickets, notifications, events, alert history",
        statements: v1,
    },
    Migration {
        version: 2,
        what: "failover: each database target's primary and epoch",
        statements: v2,
    },
    Migration {
        version: 3,
        what: "people: users, API tokens, and the audit of their changes",
        statements: v3,
    },
    Migration {
        version: 4,
        what: "leases: which collector leads, with a fencing token",
        statements: v4,
    },
];

/// The newest schema version this Keel knows.
pub fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

fn query_err(what: &'static str) -> impl Fn(sqlx::Error) -> StateError {
    move |source| StateError::Query { what, source }
}

/// Bring the schema of `pool` up to [`latest`]: the versions applied now.
pub async fn migrate(pool: &sqlx::AnyPool, backend: Backend) -> Result<Vec<i64>, StateError> {
    let mut applied = Vec::new();
    for m in MIGRATIONS {
        let mut tx = pool.begin().await.map_err(query_err("migration"))?;
        if backend == Backend::Postgres {
            // One migrating collector at a time (the key spells "keel").
            sqlx::query("SELECT pg_advisory_xact_lock(1801807212)")
                .execute(&mut *tx)
                .await
                .map_err(query_err("locking for a migration"))?;
        }
        // Under the lock: two PostgreSQL sessions creating one table at
        // once can collide even with IF NOT EXISTS.
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS keel_schema (version BIGINT PRIMARY KEY, applied_ms BIGINT NOT NULL, what TEXT NOT NULL)",
        )
        .execute(&mut *tx)
        .await
        .map_err(query_err("creating keel_schema"))?;
        let current: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM keel_schema")
            .fetch_one(&mut *tx)
            .await
            .and_then(|r| r.try_get::<i64, _>(0))
            .map_err(query_err("reading the schema version"))?;
        if current > latest() {
            return Err(StateError::Schema(format!(
                "the state store's schema is version {current}, newer than this Keel knows ({}): run the newer Keel",
                latest()
            )));
        }
        if current >= m.version {
            continue;
        }
        for s in (m.statements)(backend) {
            sqlx::query(sqlx::AssertSqlSafe(s))
                .execute(&mut *tx)
                .await
                .map_err(query_err("applying a migration"))?;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        sqlx::query("INSERT INTO keel_schema (version, applied_ms, what) VALUES ($1, $2, $3)")
            .bind(m.version)
            .bind(now)
            .bind(m.what)
            .execute(&mut *tx)
            .await
            .map_err(query_err("recording a migration"))?;
        tx.commit()
            .await
            .map_err(query_err("committing a migration"))?;
        tracing::info!(version = m.version, what = m.what, "state store migrated");
        applied.push(m.version);
    }
    Ok(applied)
}
