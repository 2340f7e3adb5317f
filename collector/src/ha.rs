//! `collector.ha`: two or more collectors sharing one PostgreSQL state
//! store, one of them leading at a time.
//!
//! Every collector ingests and answers queries. Only the leader — the
//! holder of the `keel-leader` lease ([`keel_state::lease`]) — evaluates
//! rules, sends notifications, records P0 incidents and runs the
//! controller; it starts them when it first leads, from the state the
//! last leader saved, and writes every change under its fencing token. A
//! leader that loses the lease (another took it, or the store stopped
//! answering) stops the process rather than act without it: a
//! supervisor (systemd) starts it again, as a follower.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use keel_state::lease::{Leadership, Standing};
use serde::{Deserialize, Serialize};

/// The lease the collectors of one store share.
pub const LEASE: &str = "keel-leader";

/// `collector.ha`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HaConfig {
    /// Lead by lease with the other collectors of the same `state`
    /// store (a `postgres://` URL).
    pub enabled: bool,
    /// This collector's name in the lease ("": the host's name and the
    /// API port); a random suffix keeps each start apart.
    pub name: String,
    /// How long a leader's grant lasts unless renewed: a follower takes
    /// over within `lease + renew_interval` of the leader's last renewal.
    #[serde(with = "keel_core::duration")]
    pub lease: Duration,
    /// How often the lease is taken or renewed.
    #[serde(with = "keel_core::duration")]
    pub renew_interval: Duration,
}

impl Default for HaConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            name: String::new(),
            lease: Duration::from_secs(15),
            renew_interval: Duration::from_secs(3),
        }
    }
}

impl HaConfig {
    /// Every problem, each naming its field; `state` is the collector's
    /// `state` setting.
    pub fn validate(&self, state: &str, problems: &mut Vec<String>) {
        if !self.enabled {
            return;
        }
        if !state.starts_with("postgres://") && !state.starts_with("postgresql://") {
            problems.push(format!(
                "collector.ha.enabled: the collectors must share a PostgreSQL state store; collector.state is {:?}",
                if state.is_empty() { "(SQLite in data_dir)" } else { state }
            ));
        }
        if self.renew_interval < Duration::from_millis(100) {
            problems.push("collector.ha.renew_interval: must be at least 100ms".into());
        }
        if self
            .renew_interval
            .checked_mul(3)
            .is_none_or(|r| r > self.lease)
        {
            problems.push(format!(
                "collector.ha.lease: must be at least three times renew_interval ({:?}), so that a leader can miss a renewal and still step down before the lease lapses",
                self.renew_interval
            ));
        }
        if self.name.chars().any(|c| c.is_control()) {
            problems.push("collector.ha.name: no control characters".into());
        }
    }

    /// The holder name for this start: the configured name (or
    /// `host:api_port`) and a random suffix.
    pub fn holder(&self, api_port: u16) -> String {
        let base = if self.name.is_empty() {
            let host = std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "keel".into());
            format!("{host}:{api_port}")
        } else {
            self.name.clone()
        };
        // RandomState's keys are random per process: a random suffix
        // without a random-number crate.
        use std::hash::BuildHasher as _;
        let suffix = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
        format!("{base}#{suffix:016x}")
    }
}

/// Where this collector stands, for the API and the binary.
#[derive(Clone)]
pub struct Leading {
    /// The lease's task (none: `ha` is off and this collector acts alone).
    pub leadership: Option<Arc<Leadership>>,
    /// This collector's name in the lease.
    pub holder: String,
}

impl Leading {
    /// A collector alone: it always leads.
    pub fn alone() -> Self {
        Self {
            leadership: None,
            holder: String::new(),
        }
    }

    /// Wait until this collector leads (at once when alone).
    pub async fn until_leading(&self) {
        let Some(l) = &self.leadership else {
            return;
        };
        let mut w = l.watch();
        let _ = w.wait_for(|s| matches!(s, Standing::Leader(_))).await;
    }

    /// Wait until a leader stops leading: why (never when alone, nor
    /// while it has not led).
    pub async fn deposed(&self) -> String {
        match &self.leadership {
            Some(l) => l.deposed().await,
            None => std::future::pending().await,
        }
    }

    /// A clean stop: give the lease up (when leading), so a follower
    /// takes over at its next try rather than after the lease lapses.
    pub async fn release(&self) {
        if let Some(l) = &self.leadership {
            l.release().await;
        }
    }

    /// The standing as the API shows it.
    pub fn json(&self) -> serde_json::Value {
        let Some(l) = &self.leadership else {
            return serde_json::json!({ "ha": false, "standing": "leader" });
        };
        let (standing, extra) = match l.standing() {
            Standing::Starting => ("starting", serde_json::json!({})),
            // Past its own deadline it may not act, whatever the last
            // renewal said: the API says so at once.
            Standing::Leader(_) if !l.acting().may_act() => (
                "lost",
                serde_json::json!({ "error": "the lease was not renewed before this collector's own deadline" }),
            ),
            Standing::Leader(g) => (
                "leader",
                serde_json::json!({ "token": g.token, "since_ms": g.since_ms, "leader": self.holder }),
            ),
            Standing::Follower(who) => ("follower", serde_json::json!({ "leader": who })),
            Standing::Lost(why) => ("lost", serde_json::json!({ "error": why })),
        };
        let mut v = serde_json::json!({ "ha": true, "standing": standing, "name": self.holder });
        if let (Some(o), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
            o.extend(e);
        }
        v
    }
}

impl Leading {
    /// Whether this collector leads now (always, when alone).
    pub fn leads(&self) -> bool {
        self.leadership
            .as_ref()
            .is_none_or(|l| l.standing().token().is_some())
    }
}

/// Routes whose changes only the leader keeps (its notifier holds the
/// silences and acknowledgements, and saves them under its token).
const LEADER_CHANGES: [&str; 6] = [
    "/api/v1/silences",
    "/api/v1/silences/{id}",
    "/api/v1/alerts/ack",
    // Alertmanager's API: received alerts are routed (paged) by the
    // leader, and silences kept in its state store.
    "/api/v2/alerts",
    "/api/v2/silences",
    "/api/v2/silence/{id}",
];

/// Middleware for the people's routes: a follower refuses changes only
/// the leader keeps (503, naming the leader), where they would be lost.
pub async fn followers_refuse_changes(
    State(l): State<Leading>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let read = matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let leader_only = route
        .as_deref()
        .is_some_and(|r| LEADER_CHANGES.contains(&r));
    if read || !leader_only || l.leads() {
        return next.run(req).await;
    }
    let leader = match l.leadership.as_ref().map(|x| x.standing()) {
        Some(Standing::Follower(Some(who))) => who,
        _ => "unknown".into(),
    };
    (
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(serde_json::json!({
            "status": "error",
            "errorType": "unavailable",
            "error": format!("this collector follows (collector.ha); send silences and acknowledgements to the leader, {leader}"),
        })),
    )
        .into_response()
}

/// `GET /api/v1/status/leader`: who leads.
pub fn routes(leading: Leading) -> keel_http::Routes {
    keel_http::Routes::new()
        .route("/api/v1/status/leader", get(status))
        .map(|r| r.with_state(leading))
}

async fn status(State(l): State<Leading>) -> Response {
    axum::Json(serde_json::json!({ "status": "success", "data": l.json() })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ha_needs_postgres_and_a_lease_three_times_the_renewal() {
        let mut p = Vec::new();
        HaConfig::default().validate("", &mut p);
        assert!(p.is_empty(), "off: nothing to check");
        let on = HaConfig {
            enabled: true,
            lease: Duration::from_secs(4),
            renew_interval: Duration::from_secs(3),
            ..HaConfig::default()
        };
        on.validate("", &mut p);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].starts_with("collector.ha.enabled: the collectors must share a PostgreSQL"));
        assert!(
            p[1].starts_with("collector.ha.lease: must be at least three times renew_interval")
        );
        p.clear();
        HaConfig {
            lease: Duration::from_secs(9),
            ..on
        }
        .validate("postgres://keel@db/keel", &mut p);
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn each_start_has_a_name_of_its_own() {
        let c = HaConfig {
            name: "east".into(),
            ..HaConfig::default()
        };
        let name = c.holder(7070);
        assert!(name.starts_with("east#"), "{name}");
        assert_ne!(name, c.holder(7070), "each start differs");
        assert!(HaConfig::default().holder(7070).contains(":7070#"));
    }
}
