//! Prometheus' rule and alert APIs over the collector's rules:
//! `GET /api/v1/rules`, `GET /api/v1/alerts`, and `POST /-/reload`
//! (400 with every problem when the files do not load; the last good
//! rules keep running). Shapes are Prometheus' (`state`, `activeAt`,
//! `health`, `lastError`, …) with Keel's `severity` beside them and the
//! last reload under `data.reload`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::engine::{Alert, State as AlertState};
use super::file::{Condition, Rule};
use super::manager::RuleManager;

/// The routes.
pub fn routes(manager: Arc<RuleManager>) -> keel_http::Routes {
    keel_http::Routes::new()
        .route("/api/v1/rules", get(rules))
        .route("/api/v1/alerts", get(alerts))
        .route("/-/reload", post(reload))
        .map(|r| r.with_state(manager))
}

fn time(ms: i64) -> String {
    humantime::format_rfc3339_millis(keel_core::clock::from_unix_ms(ms)).to_string()
}

fn alert_json(a: &Alert) -> Value {
    json!({
        "labels": a.labels,
        "annotations": a.annotations,
        "state": match a.state {
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Resolved => "inactive",
        },
        "severity": a.severity.as_str(),
        "flapping": a.flapping,
        "activeAt": time(a.active_at_ms),
        "firedAt": a.fired_at_ms.map(time),
        "resolvedAt": a.resolved_at_ms.map(time),
        "value": keel_promql::format_value(a.value),
    })
}

/// The filters of `GET /api/v1/rules`, as Prometheus takes them.
struct RuleFilter {
    /// `type=alert|record` (none: both).
    alerting: Option<bool>,
    names: Vec<String>,
    groups: Vec<String>,
    files: Vec<String>,
    /// `exclude_alerts=true`: rules without their active alerts.
    exclude_alerts: bool,
}

impl RuleFilter {
    fn parse(q: Option<&str>) -> Result<Self, String> {
        let pairs: Vec<(String, String)> = match q {
            Some(q) => {
                serde_urlencoded::from_str(q).map_err(|e| format!("bad query string: {e}"))?
            }
            None => Vec::new(),
        };
        let all = |k: &str| -> Vec<String> {
            pairs
                .iter()
                .filter(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .collect()
        };
        let one = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let alerting = match one("type").map(str::to_ascii_lowercase).as_deref() {
            None | Some("") => None,
            Some("alert") => Some(true),
            Some("record") => Some(false),
            Some(t) => {
                return Err(format!(
                    "unsupported rule type {t:?}: type must be alert or record"
                ));
            }
        };
        let exclude_alerts = match one("exclude_alerts") {
            None | Some("") | Some("false") => false,
            Some("true") => true,
            Some(v) => return Err(format!("exclude_alerts: {v:?} is not a boolean")),
        };
        Ok(Self {
            alerting,
            names: all("rule_name[]"),
            groups: all("rule_group[]"),
            files: all("file[]"),
            exclude_alerts,
        })
    }

    fn keeps_group(&self, name: &str, file: &str) -> bool {
        (self.groups.is_empty() || self.groups.iter().any(|g| g == name))
            && (self.files.is_empty() || self.files.iter().any(|f| f == file))
    }

    fn keeps_rule(&self, r: &Rule) -> bool {
        let (alerting, name) = match r {
            Rule::Record { name, .. } => (false, name),
            Rule::Alert(a) => (true, &a.name),
        };
        self.alerting.is_none_or(|want| want == alerting)
            && (self.names.is_empty() || self.names.iter().any(|n| n == name))
    }

    fn filters(&self) -> bool {
        self.alerting.is_some()
            || !self.names.is_empty()
            || !self.groups.is_empty()
            || !self.files.is_empty()
    }
}

async fn rules(State(m): State<Arc<RuleManager>>, RawQuery(q): RawQuery) -> Response {
    let filter = match RuleFilter::parse(q.as_deref()) {
        Ok(f) => f,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"status": "error", "errorType": "bad_data", "error": e})),
            )
                .into_response();
        }
    };
    let data = m.with_groups(|groups, reload| {
        let groups: Vec<Value> = groups
            .iter()
            .filter(|g| filter.keeps_group(&g.group.name, &g.group.file.display().to_string()))
            .filter_map(|g| {
                let rules: Vec<Value> = g
                    .group
                    .rules
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| filter.keeps_rule(r))
                    .map(|(i, r)| {
                        let h = &g.health[i];
                        let health = match (h.at_ms, &h.error) {
                            (0, _) => "unknown",
                            (_, Some(_)) => "err",
                            _ => "ok",
                        };
                        let last = (h.at_ms != 0).then(|| time(h.at_ms));
                        match r {
                            Rule::Record { name, expr, labels } => json!({
                                "type": "recording", "name": name, "query": expr, "labels": labels,
                                "health": health, "lastError": h.error.clone().unwrap_or_default(),
                                "lastEvaluation": last,
                            }),
                            Rule::Alert(a) => {
                                let alerts: Vec<&Alert> = g.rule_alerts(i).collect();
                                let state = if alerts.iter().any(|a| a.state == AlertState::Firing) {
                                    "firing"
                                } else if alerts.iter().any(|a| a.state == AlertState::Pending) {
                                    "pending"
                                } else {
                                    "inactive"
                                };
                                let query = match &a.condition {
                                    Condition::PromQl(e) => e.clone(),
                                    Condition::Logs { query, .. } => format!("logs: {query}"),
                                };
                                json!({
                                    "type": "alerting", "name": a.name, "query": query,
                                    "duration": a.for_.as_secs_f64(),
                                    "keepFiringFor": a.keep_firing_for.as_secs_f64(),
                                    "severity": a.severity.as_str(), "source": a.source,
                                    "labels": a.labels.iter().map(|(k, v)| (k.clone(), v.source())).collect::<BTreeMap<_, _>>(),
                                    "annotations": a.annotations.iter().map(|(k, v)| (k.clone(), v.source())).collect::<BTreeMap<_, _>>(),
                                    "state": state,
                                    "alerts": if filter.exclude_alerts { Vec::new() } else { alerts.iter().map(|x| alert_json(x)).collect::<Vec<_>>() },
                                    "health": health, "lastError": h.error.clone().unwrap_or_default(),
                                    "lastEvaluation": last,
                                })
                            }
                        }
                    })
                    .collect();
                // A filter that leaves a group no rule leaves the group out.
                if rules.is_empty() && filter.filters() {
                    return None;
                }
                Some(json!({
                    "name": g.group.name,
                    "file": g.group.file.display().to_string(),
                    "interval": g.group.interval.as_secs_f64(),
                    "limit": g.group.limit,
                    "rules": rules,
                }))
            })
            .collect();
        json!({
            "groups": groups,
            "reload": {
                "success": reload.success,
                "error": reload.error,
                "at": time(reload.at_ms),
            },
        })
    });
    axum::Json(json!({"status": "success", "data": data})).into_response()
}

async fn alerts(State(m): State<Arc<RuleManager>>) -> Response {
    let list = m.with_groups(|groups, _| {
        groups
            .iter()
            .flat_map(|g| g.alerts().map(|(_, a)| a))
            .filter(|a| a.state != AlertState::Resolved)
            .map(alert_json)
            .collect::<Vec<_>>()
    });
    axum::Json(json!({"status": "success", "data": {"alerts": list}})).into_response()
}

/// `GET /api/v1/alerts/history?start=&end=&limit=`: alert state changes
/// from the state store, oldest first (default: the last day, at most
/// 1,000, the newest when there are more).
pub fn history_routes(
    store: Option<Arc<keel_state::StateStore>>,
    clock: keel_core::clock::SharedClock,
) -> keel_http::Routes {
    keel_http::Routes::new()
        .route("/api/v1/alerts/history", get(history))
        .map(|r| r.with_state((store, clock)))
}

type HistoryState = (
    Option<Arc<keel_state::StateStore>>,
    keel_core::clock::SharedClock,
);

async fn history(
    State((store, clock)): State<HistoryState>,
    axum::extract::RawQuery(q): axum::extract::RawQuery,
) -> Response {
    use keel_http::{bad, param, parse_time};
    let Some(store) = store else {
        return keel_http::fail(
            StatusCode::NOT_FOUND,
            "unavailable",
            "no state store (collector.state: none): alert history is not kept".into(),
        );
    };
    let p: Vec<(String, String)> =
        serde_urlencoded::from_str(q.as_deref().unwrap_or("")).unwrap_or_default();
    let now = clock.now_ms();
    let at = |name: &str, default: i64| match param(&p, name) {
        None => Ok(default),
        Some(v) => parse_time(v).map_err(|e| format!("{name}: {e}")),
    };
    let (start, end) = match (at("start", now - 86_400_000), at("end", now)) {
        (Ok(s), Ok(e)) => (s, e),
        (Err(e), _) | (_, Err(e)) => return bad(e),
    };
    let limit = match param(&p, "limit").map(str::parse::<i64>) {
        None => 1000,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => return bad("limit: must be a positive integer".into()),
    };
    match store.history(start, end, limit).await {
        Ok(entries) => {
            let list: Vec<Value> = entries
                .iter()
                .map(|e| {
                    let mut doc: Value = serde_json::from_str(&e.doc).unwrap_or(Value::Null);
                    if let Some(o) = doc.as_object_mut() {
                        o.insert("at".into(), json!(time(e.at_ms)));
                    }
                    doc
                })
                .collect();
            axum::Json(json!({"status": "success", "data": list})).into_response()
        }
        Err(e) => keel_http::fail(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

async fn reload(State(m): State<Arc<RuleManager>>) -> Response {
    let result = tokio::task::spawn_blocking(move || m.reload()).await;
    match result {
        Ok(Ok(())) => (StatusCode::OK, "rules reloaded\n").into_response(),
        Ok(Err(e)) => (
            StatusCode::BAD_REQUEST,
            format!("rules not reloaded; the last good rules keep running:\n{e}\n"),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
