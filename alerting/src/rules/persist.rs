//! The rules' alerts in the state store: after every evaluation (and
//! reload) each alert whose state changed is saved, each one the rules
//! no longer hold is deleted, and each state change is appended to the
//! alert history. At start the saved alerts go back to their rules, so
//! a restarted collector keeps what was pending (its `for` still counts
//! from when it began) and firing (it does not fire, or page, anew).

use std::collections::{BTreeMap, HashMap};

use keel_state::{Op, Table, Writer};
use serde::{Deserialize, Serialize};

use super::engine::{Alert, GroupState, State};

/// One saved alert, with its flap-detection history (so a restart does
/// not forget that an alert was flapping).
#[derive(Debug, Serialize, Deserialize)]
struct Doc {
    file: String,
    group: String,
    rule: String,
    alert: Alert,
    #[serde(default)]
    flap_changes: Vec<i64>,
}

/// One alert history entry.
#[derive(Debug, Serialize)]
struct Change<'a> {
    rule: &'a str,
    group: &'a str,
    labels: &'a BTreeMap<String, String>,
    severity: &'a str,
    /// `inactive` for a new alert.
    from: &'a str,
    /// `inactive` for one the rules dropped.
    to: &'a str,
    value: f64,
}

fn state_name(s: Option<State>) -> &'static str {
    match s {
        None => "inactive",
        Some(State::Pending) => "pending",
        Some(State::Firing) => "firing",
        Some(State::Resolved) => "resolved",
    }
}

/// An alert's key: its rule's file, group and name, and its labels.
fn key(file: &str, group: &str, rule: &str, labels: &BTreeMap<String, String>) -> String {
    serde_json::json!([file, group, rule, labels]).to_string()
}

/// A saved alert with its rule and group (for the history when it goes).
struct Saved {
    rule: String,
    group: String,
    alert: Alert,
}

/// What has been saved, to save only changes.
pub struct AlertPersist {
    writer: Writer,
    /// By key; none: a saved document that could not be put back (it is
    /// deleted at the next sync unless the alert is saved again).
    saved: HashMap<String, Option<Saved>>,
}

impl AlertPersist {
    /// Put the saved alerts `docs` (key, JSON) back into `groups`; the
    /// ones whose rule is gone (or that do not parse) are deleted at the
    /// next [`sync`](Self::sync).
    pub fn restore<'a>(
        writer: Writer,
        docs: Vec<(String, String)>,
        groups: impl Iterator<Item = &'a mut GroupState>,
    ) -> Self {
        let mut by_group: HashMap<(String, String), &mut GroupState> = groups
            .map(|g| {
                (
                    (g.group.file.display().to_string(), g.group.name.clone()),
                    g,
                )
            })
            .collect();
        let mut saved = HashMap::new();
        let mut restored = 0usize;
        for (k, doc) in docs {
            let parsed: Option<Doc> = match serde_json::from_str(&doc) {
                Ok(d) => Some(d),
                Err(e) => {
                    tracing::warn!(key = %k, error = %e, "a saved alert does not parse; dropped");
                    None
                }
            };
            let kept = parsed.and_then(|d| {
                let g = by_group.get_mut(&(d.file.clone(), d.group.clone()))?;
                let alert = d.alert.clone();
                g.restore(&d.rule, d.alert, d.flap_changes)
                    .then_some((d.rule, d.group, alert))
            });
            let entry = kept.map(|(rule, group, alert)| {
                restored += 1;
                Saved { rule, group, alert }
            });
            saved.insert(k, entry);
        }
        if restored > 0 {
            tracing::info!(
                alerts = restored,
                "alert state restored from the state store"
            );
        }
        Self { writer, saved }
    }

    /// Save what changed in `groups` since the last call, at `now_ms`.
    pub fn sync<'a>(&mut self, now_ms: i64, groups: impl Iterator<Item = &'a GroupState>) {
        let mut live = std::collections::HashSet::new();
        for g in groups {
            let file = g.group.file.display().to_string();
            for (rule, a) in g.alerts() {
                let k = key(&file, &g.group.name, &rule.name, &a.labels);
                let before = self.saved.get(&k).and_then(Option::as_ref);
                if before.map(|s| s.alert.fingerprint()) != Some(a.fingerprint()) {
                    let from = before.map(|s| s.alert.state);
                    if from != Some(a.state) {
                        self.history(
                            now_ms,
                            &k,
                            &rule.name,
                            &g.group.name,
                            a,
                            from,
                            Some(a.state),
                        );
                    }
                    let doc = Doc {
                        file: file.clone(),
                        group: g.group.name.clone(),
                        rule: rule.name.clone(),
                        alert: a.clone(),
                        flap_changes: g.flap_changes(rule, a),
                    };
                    match serde_json::to_string(&doc) {
                        Ok(doc) => self.writer.send(Op::Put {
                            table: Table::Alerts,
                            key: k.clone(),
                            at_ms: now_ms,
                            doc,
                        }),
                        Err(e) => tracing::error!(error = %e, "an alert does not serialize"),
                    }
                    self.saved.insert(
                        k.clone(),
                        Some(Saved {
                            rule: rule.name.clone(),
                            group: g.group.name.clone(),
                            alert: a.clone(),
                        }),
                    );
                }
                live.insert(k);
            }
        }
        let gone: Vec<String> = self
            .saved
            .keys()
            .filter(|k| !live.contains(*k))
            .cloned()
            .collect();
        for k in gone {
            // A resolved alert aging out is no change of state.
            if let Some(Some(s)) = self.saved.remove(&k)
                && s.alert.state != State::Resolved
            {
                let a = &s.alert;
                self.history(now_ms, &k, &s.rule, &s.group, a, Some(a.state), None);
            }
            self.writer.send(Op::Delete {
                table: Table::Alerts,
                key: k,
            });
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn history(
        &self,
        now_ms: i64,
        k: &str,
        rule: &str,
        group: &str,
        a: &Alert,
        from: Option<State>,
        to: Option<State>,
    ) {
        let change = Change {
            rule,
            group,
            labels: &a.labels,
            severity: a.severity.as_str(),
            from: state_name(from),
            to: state_name(to),
            value: a.value,
        };
        if let Ok(doc) = serde_json::to_string(&change) {
            self.writer.send(Op::History {
                at_ms: now_ms,
                key: k.to_owned(),
                doc,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;
    use crate::rules::engine::{Recorded, Samples, Source};
    use crate::rules::file::{SeverityMapping, parse};

    /// `x` on instance `a` while the switch is on.
    struct Switch(Mutex<bool>);

    impl Source for Switch {
        fn instant(&self, _: &str, _: i64) -> Result<Samples, String> {
            let on = *self.0.lock().unwrap_or_else(|e| e.into_inner());
            Ok(if on {
                vec![(
                    BTreeMap::from([("instance".to_owned(), "a".to_owned())]),
                    1.0,
                )]
            } else {
                vec![]
            })
        }
        fn count_logs(&self, _: &str, _: i64, _: i64) -> Result<u64, String> {
            Ok(0)
        }
        fn record(&self, _: Recorded) -> Result<(), String> {
            Ok(())
        }
    }

    fn group() -> GroupState {
        let text = "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: x\n    severity: P0\n    flap_detection: {max_changes: 3, window: 10m}\n";
        let g = parse(
            Path::new("r.yml"),
            text,
            Duration::from_secs(15),
            &SeverityMapping::default(),
        )
        .expect("rules load");
        GroupState::new(g.into_iter().next().expect("a group"))
    }

    #[tokio::test]
    async fn a_restart_keeps_the_flap_history_so_the_fourth_change_is_still_held() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = keel_state::sqlite_url(&dir.path().join("state.db"));
        let store = Arc::new(
            keel_state::StateStore::open(&url)
                .await
                .expect("state store"),
        );
        let src = Switch(Mutex::new(false));
        let ext = BTreeMap::new();
        let set = |v: bool| *src.0.lock().unwrap_or_else(|e| e.into_inner()) = v;
        // fire, resolve, fire: three changes, saved as they happen.
        let mut g = group();
        let writer = store.writer();
        let mut p = AlertPersist::restore(writer.clone(), Vec::new(), std::iter::once(&mut g));
        for (i, v) in [true, false, true].into_iter().enumerate() {
            set(v);
            let t = i as i64 * 15_000;
            g.eval(&src, t, &ext);
            p.sync(t, std::iter::once(&g));
        }
        writer.flush().await.expect("flushed");
        drop(p);
        // A restart: the rules come back from the state store alone.
        let docs = store.load(Table::Alerts).await.expect("load");
        let mut after = group();
        let _p = AlertPersist::restore(store.writer(), docs, std::iter::once(&mut after));
        // The next resolution would be the fourth change: held, flapping,
        // as without the restart.
        set(false);
        after.eval(&src, 45_000, &ext);
        let (_, a) = after.alerts().next().expect("the alert came back");
        assert_eq!((a.state, a.flapping), (State::Firing, true));
    }
}
