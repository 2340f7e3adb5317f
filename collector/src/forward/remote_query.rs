//! Ranges older than local retention, from the remote store's Prometheus
//! query API (`collector.forward.remote_query`): a range query whose
//! start is older than the retention cutoff asks the remote for the
//! steps before it and evaluates the rest here, and the two are joined
//! series by series; an instant query at a time before it goes to the
//! remote whole. A remote that fails leaves the local part, with a
//! warning saying what is missing (Prometheus' `warnings`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value as Json, json};

/// The remote query API.
#[derive(Debug, Clone)]
pub struct RemoteQuery {
    url: String,
    http: reqwest::Client,
    timeout: Duration,
}

impl RemoteQuery {
    /// The remote `cfg` names (none without a URL).
    pub fn new(cfg: &super::QueryTarget) -> Result<Option<Self>, super::ForwardError> {
        if cfg.url.is_empty() {
            return Ok(None);
        }
        let at = "collector.forward.remote_query";
        let token = cfg
            .token
            .token_or_file(&cfg.token_file, "token")
            .map_err(|e| super::ForwardError::Config(format!("{at}.{e}")))?;
        let headers = keel_tls::bearer(token.as_deref())
            .map_err(|e| super::ForwardError::Config(format!("{at}.token: {e}")))?;
        let http = cfg.tls.client(
            reqwest::Client::builder().default_headers(headers),
            &format!("{at}.tls"),
        )?;
        Ok(Some(Self {
            url: cfg.url.trim_end_matches('/').to_owned(),
            http,
            timeout: cfg.timeout,
        }))
    }

    /// Where it answers.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `GET <url><path>` with `params`: its `data`, or why not.
    async fn get(&self, path: &str, params: &[(&str, String)]) -> Result<Json, String> {
        let url = format!("{}{path}", self.url);
        let r = self
            .http
            .get(&url)
            .query(params)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| format!("{url}: {}", keel_tls::describe(&e)))?;
        let status = r.status();
        let v: Json = r
            .json()
            .await
            .map_err(|e| format!("{url}: not a Prometheus API answer ({e})"))?;
        if !status.is_success() || v["status"] != "success" {
            return Err(format!(
                "{url}: HTTP {}: {}",
                status.as_u16(),
                v["error"].as_str().unwrap_or("no error given")
            ));
        }
        Ok(v["data"].clone())
    }

    /// The matrix of `expr` over `start..=end` every `step` (ms): only
    /// points within the range (a store that aligns or caches answers by
    /// its own grid — VictoriaMetrics does unless told `nocache=1` — may
    /// hand back more).
    pub async fn range(
        &self,
        expr: &str,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<Vec<Json>, String> {
        let secs = |ms: i64| format!("{:.3}", ms as f64 / 1000.0);
        let data = self
            .get(
                "/api/v1/query_range",
                &[
                    ("query", expr.to_owned()),
                    ("start", secs(start)),
                    ("end", secs(end)),
                    ("step", secs(step)),
                    ("nocache", "1".to_owned()),
                ],
            )
            .await?;
        if data["resultType"] != "matrix" {
            return Err(format!(
                "{}: a range query answered {} rather than a matrix",
                self.url, data["resultType"]
            ));
        }
        let (lo, hi) = (start as f64 / 1000.0, end as f64 / 1000.0);
        Ok(data["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                let values: Vec<Json> = s["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| {
                        p[0].as_f64()
                            .is_some_and(|t| t >= lo - 1e-3 && t <= hi + 1e-3)
                    })
                    .cloned()
                    .collect();
                json!({ "metric": s["metric"], "values": values })
            })
            .filter(|s| s["values"].as_array().is_some_and(|v| !v.is_empty()))
            .collect())
    }

    /// `expr` at `t` (ms), the remote's `data` as it is.
    pub async fn instant(&self, expr: &str, t: i64) -> Result<Json, String> {
        self.get(
            "/api/v1/query",
            &[
                ("query", expr.to_owned()),
                ("time", format!("{:.3}", t as f64 / 1000.0)),
            ],
        )
        .await
    }
}

/// The last step of `start, start + step, …` before `cutoff` (ms), if
/// any is.
pub fn last_step_before(start: i64, step: i64, cutoff: i64) -> Option<i64> {
    if start >= cutoff || step <= 0 {
        return None;
    }
    Some(start + (cutoff - 1 - start) / step * step)
}

/// Two matrices (`older` first) as one: a series in both gets the points
/// of each, in time order.
pub fn join(older: Vec<Json>, newer: Vec<Json>) -> Vec<Json> {
    let mut by_metric: BTreeMap<String, (Json, Vec<Json>)> = BTreeMap::new();
    for s in older.into_iter().chain(newer) {
        let key = s["metric"].to_string();
        let values = s["values"].as_array().cloned().unwrap_or_default();
        by_metric
            .entry(key)
            .or_insert_with(|| (s["metric"].clone(), Vec::new()))
            .1
            .extend(values);
    }
    by_metric
        .into_values()
        .map(|(metric, mut values)| {
            values.sort_by(|a, b| {
                a[0].as_f64()
                    .unwrap_or(0.0)
                    .total_cmp(&b[0].as_f64().unwrap_or(0.0))
            });
            values.dedup_by(|a, b| a[0] == b[0]);
            json!({ "metric": metric, "values": values })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_split_at_the_cutoff_and_series_join_in_time_order() {
        assert_eq!(last_step_before(0, 10, 35), Some(30));
        assert_eq!(last_step_before(0, 10, 30), Some(20));
        assert_eq!(last_step_before(40, 10, 35), None);
        let older = vec![
            json!({"metric": {"a": "1"}, "values": [[1.0, "1"], [2.0, "2"]]}),
            json!({"metric": {"a": "2"}, "values": [[1.0, "5"]]}),
        ];
        let newer = vec![json!({"metric": {"a": "1"}, "values": [[3.0, "3"]]})];
        let joined = join(older, newer);
        assert_eq!(joined.len(), 2);
        assert_eq!(
            joined[0]["values"],
            json!([[1.0, "1"], [2.0, "2"], [3.0, "3"]])
        );
        assert_eq!(joined[1]["values"], json!([[1.0, "5"]]));
    }
}
