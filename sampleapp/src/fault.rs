//! Faults a cache or db process injects into itself on request (for
//! rehearsed incidents): network latency before every data request, a
//! slow query time inside it (the db), and a replica taking what it
//! pulls only once it is a given age (replication lag grown on purpose:
//! a replica that cannot keep up. Unlike PostgreSQL's
//! `recovery_min_apply_delay`, the held records are neither stored nor
//! acknowledged, so in synchronous mode a write waiting for this
//! replica's ack waits too).
//!
//! `GET /-/faults` shows them; `PUT /-/faults` changes the fields it
//! names (`"0s"` heals one). They live in the process: a restart heals
//! them all.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use crate::api::{ApiError, Json};

/// The longest delay a fault may add (beyond it, clients time out anyway).
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// The longest apply delay of a replica.
pub const MAX_APPLY_DELAY: Duration = Duration::from_secs(3600);

/// The faults in force, shared by a process's handlers. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    latency_ms: Arc<AtomicU64>,
    query_time_ms: Arc<AtomicU64>,
    apply_delay_ms: Arc<AtomicU64>,
    /// Whether this process has a query time and an apply delay (a db).
    db: bool,
}

/// The faults as `GET /-/faults` shows them and `PUT` sets them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FaultSettings {
    /// Added before every data request is handled (not health checks,
    /// not replication): a slow network link.
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub latency: Option<Duration>,
    /// Added inside every db read and write (it shows in the db's own
    /// server spans): slow queries.
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub query_time: Option<Duration>,
    /// A replica applies a pulled record only once it is this old.
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub replica_lag: Option<Duration>,
}

mod opt_duration {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => keel_core::duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        keel_core::duration::deserialize(d).map(Some)
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

impl Faults {
    /// Faults of a cache (latency only).
    pub fn cache() -> Self {
        Self::default()
    }

    /// Faults of a db node (latency, query time, replica lag).
    pub fn db() -> Self {
        Self {
            db: true,
            ..Self::default()
        }
    }

    /// Network latency before each data request.
    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms.load(Ordering::Relaxed))
    }

    /// Time added to each query.
    pub fn query_time(&self) -> Duration {
        Duration::from_millis(self.query_time_ms.load(Ordering::Relaxed))
    }

    /// How old a pulled record must be before a replica applies it.
    pub fn apply_delay(&self) -> Duration {
        Duration::from_millis(self.apply_delay_ms.load(Ordering::Relaxed))
    }

    /// The faults in force, every field shown.
    pub fn settings(&self) -> FaultSettings {
        FaultSettings {
            latency: Some(self.latency()),
            query_time: self.db.then(|| self.query_time()),
            replica_lag: self.db.then(|| self.apply_delay()),
        }
    }

    /// Change the fields `s` names; every problem reported at once, and
    /// nothing changed unless all are valid.
    pub fn set(&self, s: &FaultSettings) -> Result<FaultSettings, ApiError> {
        let mut problems = Vec::new();
        for (field, v, max, db_only) in [
            ("latency", s.latency, MAX_DELAY, false),
            ("query_time", s.query_time, MAX_DELAY, true),
            ("replica_lag", s.replica_lag, MAX_APPLY_DELAY, true),
        ] {
            match v {
                Some(_) if db_only && !self.db => {
                    problems.push(format!("{field}: only a db process has it"))
                }
                Some(d) if d > max => problems.push(format!(
                    "{field}: at most {}, got {}",
                    humantime::format_duration(max),
                    humantime::format_duration(d)
                )),
                _ => {}
            }
        }
        if !problems.is_empty() {
            return Err(ApiError::BadRequest(problems.join("; ")));
        }
        for (v, cell) in [
            (s.latency, &self.latency_ms),
            (s.query_time, &self.query_time_ms),
            (s.replica_lag, &self.apply_delay_ms),
        ] {
            if let Some(d) = v {
                cell.store(ms(d), Ordering::Relaxed);
            }
        }
        if s != &FaultSettings::default() {
            tracing::warn!(faults = ?self.settings(), "faults changed");
        }
        Ok(self.settings())
    }
}

/// Data routes as a cache or db serves them: each in a server span (with
/// the RED histogram), and the injected latency outside it — the
/// network's time, not the process's own.
pub fn data_routes<S: Clone + Send + Sync + 'static>(
    routes: axum::Router<S>,
    metrics: Arc<crate::telemetry::Metrics>,
    faults: &Faults,
) -> axum::Router<S> {
    routes
        .route_layer(axum::middleware::from_fn_with_state(
            metrics,
            crate::telemetry::traced_route,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            faults.clone(),
            delayed,
        ))
}

/// Middleware: wait the injected latency, then handle the request.
pub async fn delayed(State(f): State<Faults>, req: Request, next: Next) -> Response {
    let d = f.latency();
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
    next.run(req).await
}

/// `GET` and `PUT /-/faults` for `faults`.
pub fn router(faults: Faults) -> axum::Router {
    axum::Router::new()
        .route("/-/faults", axum::routing::get(get_faults).put(put_faults))
        .with_state(faults)
}

/// `GET /-/faults`.
async fn get_faults(State(f): State<Faults>) -> axum::Json<FaultSettings> {
    axum::Json(f.settings())
}

/// `PUT /-/faults`.
async fn put_faults(
    State(f): State<Faults>,
    Json(s): Json<FaultSettings>,
) -> Result<axum::Json<FaultSettings>, ApiError> {
    f.set(&s).map(axum::Json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_change_only_the_fields_named_and_bad_ones_change_nothing() {
        let f = Faults::db();
        let s: FaultSettings = serde_json::from_str(r#"{"latency":"200ms"}"#).unwrap();
        f.set(&s).unwrap();
        let s: FaultSettings = serde_json::from_str(r#"{"query_time":"500ms"}"#).unwrap();
        f.set(&s).unwrap();
        assert_eq!(f.latency(), Duration::from_millis(200));
        assert_eq!(f.query_time(), Duration::from_millis(500));
        let bad: FaultSettings =
            serde_json::from_str(r#"{"latency":"0s","query_time":"2m","replica_lag":"2h"}"#)
                .unwrap();
        let e = f.set(&bad).unwrap_err().to_string();
        assert!(e.contains("query_time: at most 1m"), "{e}");
        assert!(e.contains("replica_lag: at most 1h"), "{e}");
        assert_eq!(f.latency(), Duration::from_millis(200), "nothing changed");
        let cache = Faults::cache();
        let e = cache.set(&bad).unwrap_err().to_string();
        assert!(e.contains("query_time: only a db process"), "{e}");
        assert!(
            serde_json::from_str::<FaultSettings>(r#"{"lag":"1s"}"#).is_err(),
            "unknown fields are refused"
        );
        assert!(serde_json::from_str::<FaultSettings>(r#"{"latency":"soon"}"#).is_err());
    }
}
