//! Pages as Alertmanager's webhook JSON (version 4), so anything that
//! takes Alertmanager's webhooks (chat bridges, incident tools) takes
//! Keel's: one POST a page, `status` firing or resolved, the alert with
//! its labels, annotations, `startsAt`/`endsAt` and a fingerprint.

use std::time::Duration;

use serde_json::{Value, json};

use super::route::{Kind, Page};

fn time(ms: i64) -> String {
    humantime::format_rfc3339_millis(keel_core::clock::from_unix_ms(ms)).to_string()
}

/// The JSON body of a page.
pub fn body(p: &Page, external_url: &str) -> Value {
    let a = &p.alert;
    let status = match p.kind {
        Kind::Firing => "firing",
        Kind::Resolved => "resolved",
    };
    let fingerprint = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        a.labels.hash(&mut h);
        format!("{:016x}", h.finish())
    };
    let ends = match p.kind {
        Kind::Resolved => a.resolved_at_ms.map(time),
        Kind::Firing => None,
    };
    let alertname = a.labels.get("alertname").cloned().unwrap_or_default();
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{alertname}\"}}"),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "keel",
        "groupLabels": {"alertname": alertname},
        "commonLabels": a.labels,
        "commonAnnotations": a.annotations,
        "externalURL": external_url,
        "alerts": [{
            "status": status,
            "labels": a.labels,
            "annotations": a.annotations,
            "startsAt": a.fired_at_ms.map(time).unwrap_or_default(),
            "endsAt": ends.unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
            "generatorURL": external_url,
            "fingerprint": fingerprint,
        }],
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
        .map_err(|e| format!("{url}: {e}"))?;
    if r.status().is_success() {
        Ok(())
    } else {
        Err(format!("{url}: HTTP {}", r.status()))
    }
}
