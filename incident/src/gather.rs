//! Gathering a window from the collector's stores into a bundle.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use super::bundle::{AlertChange, Bundle, Config, File, Header, Series};
use super::{Counts, IncidentError, RecordRequest};
use keel_logindex::logs::LogStore;
use keel_logindex::traces::SpanStore;
use keel_metricstore::{Matcher, Store};

/// Records read from the log and span stores per page.
const PAGE: usize = 10_000;

/// Everything a bundle is gathered from.
pub struct Sources {
    /// The metric store.
    pub store: Arc<Store>,
    /// The log index.
    pub logs: Arc<LogStore>,
    /// The span index.
    pub spans: Arc<SpanStore>,
    /// Arrivals and ticks.
    pub marks: Arc<keel_core::marks::MarkLog>,
    /// Alert history, notifications and controller events (none: only
    /// what the notifier holds in memory).
    pub state: Option<Arc<keel_state::StateStore>>,
    /// The notifier, for its deliveries when there is no state store.
    pub notifier: Arc<keel_alerting::notify::Notifier>,
    /// The rules' configuration (its files are read when recording).
    pub rules: keel_alerting::rules::RulesConfig,
    /// The notification configuration.
    pub notify: keel_alerting::notify::NotifyConfig,
    /// The dashboards' directory.
    pub dashboards: PathBuf,
    /// The controller's configuration, once it runs.
    pub controller: OnceLock<serde_json::Value>,
    /// The injected clock.
    pub clock: keel_core::clock::SharedClock,
}

fn failed(e: impl std::fmt::Display) -> IncidentError {
    IncidentError::Failed(e.to_string())
}

impl Sources {
    /// The window's bundle and what it holds.
    pub(super) async fn gather(
        &self,
        req: &RecordRequest,
        lead_in_ms: i64,
    ) -> Result<(Bundle, Counts), IncidentError> {
        let (from, to) = (req.from_ms, req.to_ms);
        let early = (from - lead_in_ms).max(0);
        let service = req.service.clone();
        let (logs_query, keep_spans) = (req.logs.clone(), req.spans != Some(false));
        let (store, logs, spans, marks) = (
            self.store.clone(),
            self.logs.clone(),
            self.spans.clone(),
            self.marks.clone(),
        );
        let bulk = tokio::task::spawn_blocking(move || -> Result<_, IncidentError> {
            let matchers: Vec<Matcher> = service
                .iter()
                .map(|s| Matcher::Equal("job".into(), s.clone()))
                .collect();
            let mut series: Vec<Series> = store
                .select(&matchers, early, to)
                .into_iter()
                .map(|(labels, samples)| Series {
                    labels: labels
                        .pairs()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect(),
                    samples,
                })
                .collect();
            series.sort_by(|a, b| a.labels.cmp(&b.labels));
            let query = service
                .as_deref()
                .map(|s| format!("service:\"{}\"", s.replace('"', "\\\"")))
                .unwrap_or_default();
            let log_query = match (&logs_query, query.is_empty()) {
                (None, _) => query.clone(),
                (Some(l), true) => l.clone(),
                (Some(l), false) => format!("({query}) AND ({l})"),
            };
            if let Some(l) = &logs_query {
                logs.search(&log_query, from, from, 1, None)
                    .map_err(|e| IncidentError::Invalid(format!("logs: {l:?}: {e}")))?;
            }
            let log_records = all_records(&logs, &log_query, from, to)?;
            let span_records = if keep_spans {
                all_records(&spans, &query, from, to)?
            } else {
                Vec::new()
            };
            // Samples near the window's end arrive after it; nothing
            // else past it belongs.
            let marks: Vec<keel_core::marks::Mark> = marks
                .read(early, to + 60_000)
                .map_err(failed)?
                .into_iter()
                .filter(|m| m.at_ms() <= to || matches!(m, keel_core::marks::Mark::Arrival { .. }))
                .collect();
            Ok((series, log_records, span_records, marks))
        })
        .await
        .map_err(failed)??;
        let (series, logs, spans, marks) = bulk;
        let (events, alerts, pages) = self.history(from, to).await?;
        let files = self.files()?;
        let mut notify = serde_json::to_value(&self.notify).map_err(failed)?;
        // A bundle is shared: no password, no webhook URL (they may hold tokens).
        if let Some(e) = notify.get_mut("email").and_then(|e| e.as_object_mut()) {
            e.insert("password".into(), serde_json::Value::String(String::new()));
        }
        if let Some(w) = notify.get_mut("webhooks").and_then(|w| w.as_array_mut()) {
            for (i, u) in w.iter_mut().enumerate() {
                *u = serde_json::Value::String(format!("webhook-{i}"));
            }
        }
        let config = Config {
            rules: serde_json::to_value(&self.rules).map_err(failed)?,
            notify,
            controller: self.controller.get().cloned().map(|mut c| {
                redact_dsns(&mut c);
                c
            }),
        };
        let bundle = Bundle {
            header: Header {
                name: req.name.clone(),
                from_ms: from,
                to_ms: to,
                recorded_at_ms: self.clock.now_ms(),
                reason: req.reason.clone().unwrap_or_else(|| "manual".into()),
                service: req.service.clone(),
                incident_ms: req.incident_ms,
                lead_in_ms: from - early,
                logs_query: req.logs.clone(),
                no_spans: req.spans == Some(false),
                keel_version: env!("CARGO_PKG_VERSION").into(),
            },
            config,
            files,
            series,
            logs,
            spans,
            marks,
            events,
            alerts,
            pages,
        };
        let counts = Counts {
            series: bundle.series.len(),
            samples: bundle.series.iter().map(|s| s.samples.len()).sum(),
            logs: bundle.logs.len(),
            spans: bundle.spans.len(),
            marks: bundle.marks.len(),
            events: bundle.events.len(),
            alerts: bundle.alerts.len(),
            pages: bundle.pages.len(),
            raw_bytes: bundle.raw_bytes(),
            took_ms: 0,
        };
        Ok((bundle, counts))
    }

    /// The controller's events, the alert changes and the pages of the window.
    async fn history(
        &self,
        from: i64,
        to: i64,
    ) -> Result<
        (
            Vec<serde_json::Value>,
            Vec<AlertChange>,
            Vec<keel_alerting::notify::Page>,
        ),
        IncidentError,
    > {
        let mut pages: Vec<keel_alerting::notify::Page> = Vec::new();
        let mut add_page = |p: keel_alerting::notify::Page| {
            // One page goes to every receiver: keep it once.
            if (from..=to).contains(&p.at_ms) && !pages.contains(&p) {
                pages.push(p);
            }
        };
        let Some(st) = &self.state else {
            // No state store: the notifier's memory (its last 1,000).
            for d in self.notifier.deliveries() {
                add_page(d.page);
            }
            pages.sort_by(|a, b| {
                a.at_ms
                    .cmp(&b.at_ms)
                    .then(a.group_key().cmp(&b.group_key()))
            });
            return Ok((Vec::new(), Vec::new(), pages));
        };
        let events = st
            .load_between(keel_state::Table::Events, from, to, i64::MAX)
            .await
            .map_err(failed)?
            .into_iter()
            .filter_map(|(_, d)| serde_json::from_str::<serde_json::Value>(&d).ok())
            .filter(|e| {
                e.get("at_ms")
                    .and_then(|t| t.as_i64())
                    .is_some_and(|t| (from..=to).contains(&t))
            })
            .collect();
        #[derive(serde::Deserialize)]
        struct Change {
            rule: String,
            group: String,
            labels: std::collections::BTreeMap<String, String>,
            severity: String,
            from: String,
            to: String,
        }
        let alerts = st
            .history(from, to, i64::MAX)
            .await
            .map_err(failed)?
            .into_iter()
            .filter_map(|h| {
                let c: Change = serde_json::from_str(&h.doc).ok()?;
                Some(AlertChange {
                    at_ms: h.at_ms,
                    rule: c.rule,
                    group: c.group,
                    labels: c.labels,
                    severity: c.severity,
                    from: c.from,
                    to: c.to,
                })
            })
            .collect();
        // A delivery is saved when queued and again as it goes: the page
        // inside is the same.
        for (_, d) in st
            .load_between(keel_state::Table::Notifications, from, i64::MAX, i64::MAX)
            .await
            .map_err(failed)?
        {
            if let Ok(d) = serde_json::from_str::<keel_alerting::notify::Delivery>(&d) {
                add_page(d.page);
            }
        }
        pages.sort_by(|a, b| {
            a.at_ms
                .cmp(&b.at_ms)
                .then(a.group_key().cmp(&b.group_key()))
        });
        Ok((events, alerts, pages))
    }

    /// The rule files and dashboards in force.
    fn files(&self) -> Result<Vec<File>, IncidentError> {
        let mut out = Vec::new();
        if !self.rules.files.is_empty() {
            let paths =
                keel_alerting::rules::file::rule_files(&self.rules.files).map_err(failed)?;
            for p in paths {
                let text = std::fs::read_to_string(&p)
                    .map_err(|e| IncidentError::Failed(format!("{}: {e}", p.display())))?;
                out.push(File {
                    kind: "rules".into(),
                    name: p.display().to_string(),
                    text,
                });
            }
        }
        if let Ok(entries) = std::fs::read_dir(&self.dashboards) {
            let mut paths: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            paths.sort();
            for p in paths {
                if let (Ok(text), Some(name)) = (std::fs::read_to_string(&p), p.file_name()) {
                    out.push(File {
                        kind: "dashboard".into(),
                        name: name.to_string_lossy().into_owned(),
                        text,
                    });
                }
            }
        }
        Ok(out)
    }
}

/// Failover members' DSNs without their passwords (a bundle is shared).
fn redact_dsns(controller: &mut serde_json::Value) {
    let Some(targets) = controller
        .get_mut("failover")
        .and_then(|f| f.as_array_mut())
    else {
        return;
    };
    for t in targets {
        let Some(members) = t.get_mut("members").and_then(|m| m.as_array_mut()) else {
            continue;
        };
        for m in members {
            for key in ["dsn", "agent"] {
                if let Some(d) = m.get_mut(key)
                    && let Some(s) = d.as_str()
                {
                    *d = serde_json::Value::String(keel_state::redact(s));
                }
            }
        }
    }
}

/// Every record of an index in the window matching `query`, oldest first.
fn all_records<R: keel_logindex::index_store::Record>(
    index: &keel_logindex::index_store::IndexStore<R>,
    query: &str,
    from: i64,
    to: i64,
) -> Result<Vec<R>, IncidentError> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = index
            .search(query, from, to, PAGE, cursor.as_deref())
            .map_err(failed)?;
        out.extend(page.records.into_iter().map(|(_, r)| r));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    out.reverse();
    Ok(out)
}
