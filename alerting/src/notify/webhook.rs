//! Pages as Alertmanager's webhook JSON (version 4), so anything that
//! takes Alertmanager's webhooks (chat bridges, incident tools) takes
//! Keel's: one POST a page (a group), `status` firing or resolved, the
//! group's labels and key, and each alert with its status, labels,
//! annotations, `startsAt`/`endsAt` and a fingerprint.

use std::time::Duration;

use serde_json::{Value, json};

use std::collections::BTreeMap;

use super::route::{Kind, Page};
use crate::rules::State;

fn time(ms: i64) -> String {
    humantime::format_rfc3339_millis(keel_core::clock::from_unix_ms(ms)).to_string()
}

/// Labels (or annotations) every map in `all` has with the same value.
fn common<'a>(
    mut all: impl Iterator<Item = &'a BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    let mut out = all.next().cloned().unwrap_or_default();
    for m in all {
        out.retain(|k, v| m.get(k) == Some(v));
    }
    out
}

/// The JSON body of a page: the group's alerts, each with its status.
pub fn body(p: &Page, external_url: &str) -> Value {
    let status = match p.kind {
        Kind::Firing => "firing",
        Kind::Resolved => "resolved",
    };
    let alerts: Vec<Value> = p
        .alerts
        .iter()
        .map(|a| {
            let fingerprint = {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                a.labels.hash(&mut h);
                format!("{:016x}", h.finish())
            };
            let (st, ends) = match a.state {
                State::Resolved => ("resolved", a.resolved_at_ms.map(time)),
                _ => ("firing", None),
            };
            json!({
                "status": st,
                "labels": a.labels,
                "annotations": a.annotations,
                "startsAt": a.fired_at_ms.map(time).unwrap_or_default(),
                "endsAt": ends.unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
                "generatorURL": external_url,
                "fingerprint": fingerprint,
            })
        })
        .collect();
    json!({
        "version": "4",
        "groupKey": p.group_key(),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "keel",
        "groupLabels": p.group,
        "commonLabels": common(p.alerts.iter().map(|a| &a.labels)),
        "commonAnnotations": common(p.alerts.iter().map(|a| &a.annotations)),
        "externalURL": external_url,
        "alerts": alerts,
    })
}

/// POST one page; any answer but 2xx is a failure (retried by the caller).
pub async fn send(
    http: &reqwest::Client,
    url: &str,
    p: &Page,
    external_url: &str,
    timeout: Duration,
) -> Result<(), String> {
    let r = http
        .post(url)
        .timeout(timeout)
        .json(&body(p, external_url))
        .send()
        .await
        .map_err(|e| format!("{url}: {}", keel_tls::describe(&e)))?;
    if r.status().is_success() {
        Ok(())
    } else {
        Err(format!("{url}: HTTP {}", r.status()))
    }
}
