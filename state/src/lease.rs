//! Leases: which of several collectors sharing one state store leads
//! (evaluates rules, sends notifications, runs the controller), with a
//! fencing token.
//!
//! A lease is one row of `keel_leases`, taken and renewed by one
//! statement timed by the database's own clock (PostgreSQL's `now()`),
//! so collectors whose clocks disagree still agree on who holds it. The
//! holder renews it before it expires; anyone may take it once it has.
//! Each new holder gets a larger token. Writes a leader makes are
//! wrapped in [`Op::Fenced`](crate::Op::Fenced): the transaction that
//! lands them first checks, under the lease row's lock, that the token
//! still holds and has not expired, and drops them if not — so a deposed
//! leader that wakes up late changes nothing.

use std::time::Duration;

use sqlx::Row as _;

use crate::{Backend, StateError, StateStore};

/// The database's clock, in milliseconds since the epoch.
pub(crate) fn now_ms(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "CAST(EXTRACT(EPOCH FROM now()) * 1000 AS BIGINT)",
        Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
    }
}

/// A lease held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// The fencing token: larger for each new holder.
    pub token: i64,
    /// Since when this holder has held it (ms, the database's clock).
    pub since_ms: i64,
    /// When it expires unless renewed (ms, the database's clock).
    pub expires_ms: i64,
}

/// Who holds a lease, as anyone may read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The holder's name.
    pub holder: String,
    /// Its grant.
    pub grant: Grant,
    /// The database's clock when this was read (ms): the lease has
    /// lapsed when `grant.expires_ms <= now_ms`.
    pub now_ms: i64,
}

impl StateStore {
    /// Take the lease `name` for `holder` for `ttl`, or renew it if
    /// `holder` holds it: the grant, or `None` while another holds it
    /// unexpired. A holder whose own lease lapsed gets a new token, as
    /// anyone taking it would.
    pub async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Grant>, StateError> {
        let now = now_ms(self.backend);
        // `excluded` is the row proposed; `keel_leases` the one there.
        let held =
            "keel_leases.holder = excluded.holder AND keel_leases.expires_ms > excluded.renewed_ms";
        let row = sqlx::query(sql!(
            "INSERT INTO keel_leases (name, holder, token, since_ms, renewed_ms, expires_ms) \
             VALUES ($1, $2, 1, {now}, {now}, {now} + $3) \
             ON CONFLICT (name) DO UPDATE SET \
               token = CASE WHEN {held} THEN keel_leases.token ELSE keel_leases.token + 1 END, \
               since_ms = CASE WHEN {held} THEN keel_leases.since_ms ELSE excluded.since_ms END, \
               holder = excluded.holder, \
               renewed_ms = excluded.renewed_ms, \
               expires_ms = excluded.expires_ms \
             WHERE keel_leases.holder = excluded.holder OR keel_leases.expires_ms <= excluded.renewed_ms \
             RETURNING token, since_ms, expires_ms"
        ))
        .bind(name)
        .bind(holder)
        .bind(ttl.as_millis().min(i64::MAX as u128) as i64)
        .fetch_optional(&self.pool)
        .await
        .map_err(|source| StateError::Query {
            what: "take the lease",
            source,
        })?;
        row.map(|r| {
            Ok(Grant {
                token: r.try_get(0)?,
                since_ms: r.try_get(1)?,
                expires_ms: r.try_get(2)?,
            })
        })
        .transpose()
        .map_err(|source| StateError::Query {
            what: "read the lease",
            source,
        })
    }

    /// Give up the lease `name` if `holder` holds it with `token` (a
    /// clean stop: the next holder need not wait for it to expire).
    pub async fn release_lease(
        &self,
        name: &str,
        holder: &str,
        token: i64,
    ) -> Result<bool, StateError> {
        let now = now_ms(self.backend);
        sqlx::query(sql!(
            "UPDATE keel_leases SET expires_ms = {now} \
             WHERE name = $1 AND holder = $2 AND token = $3 AND expires_ms > {now}"
        ))
        .bind(name)
        .bind(holder)
        .bind(token)
        .execute(&self.pool)
        .await
        .map(|r| r.rows_affected() == 1)
        .map_err(|source| StateError::Query {
            what: "release the lease",
            source,
        })
    }

    /// Who holds the lease `name` (or held it last), if anyone ever did.
    pub async fn lease_holder(&self, name: &str) -> Result<Option<Holder>, StateError> {
        let now = now_ms(self.backend);
        let row = sqlx::query(sql!(
            "SELECT holder, token, since_ms, expires_ms, {now} FROM keel_leases WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(|source| StateError::Query {
            what: "read the lease",
            source,
        })?;
        row.map(|r| {
            Ok(Holder {
                holder: r.try_get(0)?,
                grant: Grant {
                    token: r.try_get(1)?,
                    since_ms: r.try_get(2)?,
                    expires_ms: r.try_get(3)?,
                },
                now_ms: r.try_get(4)?,
            })
        })
        .transpose()
        .map_err(|source| StateError::Query {
            what: "read the lease",
            source,
        })
    }
}

/// Inside a write transaction: whether the lease `name` is still held
/// with `token` and unexpired. On PostgreSQL the row stays locked until
/// the transaction ends, so no one can take the lease in between.
pub(crate) async fn still_held(
    tx: &mut sqlx::AnyConnection,
    backend: Backend,
    name: &str,
    token: i64,
) -> Result<bool, sqlx::Error> {
    let now = now_ms(backend);
    sqlx::query(sql!(
        "UPDATE keel_leases SET token = token WHERE name = $1 AND token = $2 AND expires_ms > {now}"
    ))
    .bind(name)
    .bind(token)
    .execute(tx)
    .await
    .map(|r| r.rows_affected() == 1)
}
