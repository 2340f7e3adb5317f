//! Notifications in a test: the router a test file configures, the
//! pages and tickets it produces on the test's clock, and the log store
//! its input logs are written to.

use super::*;

/// A page or ticket the run produced.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Note {
    pub(super) t: i64,
    pub(super) receiver: String,
    pub(super) alertname: String,
    pub(super) kind: String,
    pub(super) severity: String,
    pub(super) group: std::collections::BTreeMap<String, String>,
    pub(super) alerts: usize,
}

impl Note {
    pub(super) fn show(&self) -> String {
        let group: Vec<String> = self
            .group
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        format!(
            "{} {} {} {} {{{}}} x{} to {}",
            show_ms(self.t),
            self.alertname,
            self.kind,
            self.severity,
            group.join(","),
            self.alerts,
            self.receiver
        )
    }

    /// Whether expected `e` (at `t`) describes it.
    pub(super) fn is(&self, t: i64, e: &ExpNotification) -> bool {
        self.t == t
            && self.alertname == e.alertname
            && self.kind == e.kind
            && self.severity == e.severity.to_ascii_uppercase()
            && e.group.as_ref().is_none_or(|g| *g == self.group)
            && e.alerts.is_none_or(|n| n == self.alerts)
            && e.receiver.as_ref().is_none_or(|r| *r == self.receiver)
    }
}

pub(super) fn show_expected(t: i64, e: &ExpNotification) -> String {
    let mut out = format!(
        "{} {} {} {}",
        show_ms(t),
        e.alertname,
        e.kind,
        e.severity.to_ascii_uppercase()
    );
    if let Some(g) = &e.group {
        let g: Vec<String> = g.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        out.push_str(&format!(" {{{}}}", g.join(",")));
    }
    if let Some(n) = e.alerts {
        out.push_str(&format!(" x{n}"));
    }
    if let Some(r) = &e.receiver {
        out.push_str(&format!(" to {r}"));
    }
    out
}

/// A log store in a temporary directory, removed when dropped.
pub(super) struct TempDir(pub(super) std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The test's log lines in a fresh log store (none without lines).
pub(super) fn input_logs(
    group: &str,
    lines: &[InputLog],
    base_ms: i64,
) -> Result<Option<(std::sync::Arc<keel_logindex::logs::LogStore>, TempDir)>, TestFileError> {
    if lines.is_empty() {
        return Ok(None);
    }
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = TempDir(std::env::temp_dir().join(format!(
        "keel-rule-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )));
    let mut records = Vec::new();
    let mut last = base_ms;
    for (i, l) in lines.iter().enumerate() {
        let at = format!("{group}.input_logs[{i}]");
        let obj: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&l.line)
            .map_err(|e| TestFileError::Invalid(format!("{at}.line: not a JSON object: {e}")))?;
        let start = duration_ms(&l.at, &format!("{at}.at"))?;
        let every = match &l.every {
            Some(e) => duration_ms(e, &format!("{at}.every"))?,
            None => 0,
        };
        for k in 0..l.times.unwrap_or(1) as i64 {
            let t = base_ms + start + k * every;
            last = last.max(t);
            for _ in 0..l.count.unwrap_or(1) {
                let mut r = keel_logindex::logs::record::from_json(obj.clone(), t * 1_000_000)
                    .map_err(|e| TestFileError::Invalid(format!("{at}.line: {e}")))?;
                r.timestamp_ns = t * 1_000_000;
                records.push(r);
            }
        }
    }
    let fail = |e: keel_logindex::index_store::IndexError| {
        TestFileError::Invalid(format!("{group}.input_logs: {e}"))
    };
    let store = keel_logindex::logs::LogStore::open(
        &dir.0,
        keel_logindex::index_store::IndexConfig::default(),
        last,
    )
    .map_err(fail)?;
    store.append(records, last).map_err(fail)?;
    store.commit().map_err(fail)?;
    Ok(Some((std::sync::Arc::new(store), dir)))
}

/// A router for a test group: its notify settings, its silences placed
/// on the test's clock.
pub(super) fn test_router(
    group: &str,
    notify: crate::notify::NotifyConfig,
    silences: &[TestSilence],
    base_ms: i64,
) -> Result<crate::notify::Router, TestFileError> {
    let invalid = |m: String| TestFileError::Invalid(format!("{group}.notify: {m}"));
    let hours = notify
        .business_hours
        .compile()
        .map_err(|p| invalid(p.join("; ")))?;
    let inhibit =
        crate::notify::silence::compile(&notify.inhibit).map_err(|p| invalid(p.join("; ")))?;
    let mut r = crate::notify::Router::new(notify.policy(hours), inhibit);
    for (i, s) in silences.iter().enumerate() {
        let at = format!("{group}.silences[{i}]");
        let start =
            base_ms + duration_ms(s.start.as_deref().unwrap_or("0s"), &format!("{at}.start"))?;
        let length = duration_ms(&s.duration, &format!("{at}.duration"))?;
        let matchers = s
            .matchers
            .iter()
            .map(|m| crate::notify::Matcher::parse(m))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TestFileError::Invalid(format!("{at}.matchers: {e}")))?;
        r.silences.push(crate::notify::Silence {
            id: i as u64 + 1,
            matchers,
            starts_at_ms: start,
            ends_at_ms: start + length,
            created_by: "test".into(),
            comment: String::new(),
        });
    }
    Ok(r)
}

/// Route the alerts after the evaluation at `ts` and note every page
/// and new ticket.
pub(super) fn record_notifications(
    r: &mut crate::notify::Router,
    states: &[rules::GroupState],
    (base_ms, ts): (i64, i64),
    receivers: &[String],
    out: &mut Vec<Note>,
) {
    let views: Vec<crate::notify::AlertView> = states
        .iter()
        .flat_map(|g| g.alerts())
        .map(|(_, a)| crate::notify::AlertView::from(a))
        .collect();
    let tickets = r.tickets.len();
    for p in r.decide(base_ms + ts, &views) {
        let kind = match p.kind {
            crate::notify::Kind::Firing => "firing",
            crate::notify::Kind::Resolved => "resolved",
        };
        for receiver in receivers {
            out.push(Note {
                t: ts,
                receiver: receiver.clone(),
                alertname: p.alertnames().join(","),
                kind: kind.into(),
                severity: p.severity.as_str().into(),
                group: p.group.clone(),
                alerts: p.alerts.len(),
            });
        }
    }
    for t in &r.tickets[tickets..] {
        out.push(Note {
            t: ts,
            receiver: "tickets".into(),
            alertname: t.labels.get("alertname").cloned().unwrap_or_default(),
            kind: "ticket".into(),
            severity: "P2".into(),
            group: std::collections::BTreeMap::new(),
            alerts: 1,
        });
    }
}

/// An alert as a test compares it: state, labels, annotations.
pub(super) type AlertView = (
    rules::State,
    std::collections::BTreeMap<String, String>,
    std::collections::BTreeMap<String, String>,
);
