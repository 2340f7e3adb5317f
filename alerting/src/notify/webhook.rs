//! Pages as Alertmanager's webhook JSON (version 4), so anything that
//! takes Alertmanager's webhooks (chat bridges, incident tools) takes
//! Keel's: one POST a page (a group), `status` firing or resolved, the
//! group's labels and key, and each alert with its status, labels,
//! annotations, `startsAt`/`endsAt` and a fingerprint.

use std::time::Duration;

use serde_json::{Value, json};

use std::collections::BTreeMap;

use super::Failure;
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

/// Where a page is POSTed.
pub struct Target<'a> {
    /// The receiver.
    pub url: &'a str,
    /// The dashboard's URL, for `externalURL`.
    pub external_url: &'a str,
    /// How long one attempt may take.
    pub timeout: Duration,
}

/// The header that carries a notification's idempotency key.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// POST one page as notification `id` (its `Idempotency-Key` header and
/// `notificationId`, the same on every attempt). A 2xx delivers it; a
/// 4xx other than 408, 425 and 429 is a refusal for good; anything else
/// is retried by the caller.
pub async fn send(
    http: &reqwest::Client,
    to: &Target<'_>,
    p: &Page,
    id: &str,
) -> Result<(), Failure> {
    let url = to.url;
    let mut payload = body(p, to.external_url);
    payload["notificationId"] = json!(id);
    let r = http
        .post(url)
        .timeout(to.timeout)
        .header(IDEMPOTENCY_KEY, id)
        .json(&payload)
        .send()
        .await
        .map_err(|e| Failure::transient(format!("{url}: {}", keel_tls::describe(&e))))?;
    let status = r.status();
    if status.is_success() {
        return Ok(());
    }
    let retry = matches!(status.as_u16(), 408 | 425 | 429);
    Err(Failure {
        message: format!("{url}: HTTP {status}"),
        permanent: status.is_client_error() && !retry,
    })
}
