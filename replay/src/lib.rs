//! keel-replay: a recorded incident bundle through Keel's own rule
//! engine, notification routing and autoscaler on the manual Clock.
//!
//! - [`feed`]: each recorded sample made visible at its recorded arrival.
//! - [`failover`]: failover decided again from the recorded probe rounds.
//! - [`run`]: one replay ([`run::replay`]) with the bundle's rules and
//!   policies or changed ones ([`run::Setup`]).
//! - [`report`]: the timeline, the check that a replay reproduces what
//!   was recorded, and the what-if diff.
//! - [`expect`]: `--assert` expectations.
//! - [`StoreMetrics`]: the collector's store as the controller's metric
//!   source (also what `keel up` runs the controller on).

pub mod expect;
pub mod failover;
pub mod feed;
pub mod report;
pub mod run;

/// PromQL for the controller, from a collector store.
pub struct StoreMetrics(pub keel_alerting::rules::source::StoreSource);

impl StoreMetrics {
    /// The sum of an instant query's samples (a request rate).
    pub fn demand(&self, expr: &str, t_ms: i64) -> Result<f64, String> {
        use keel_alerting::rules::engine::Source as _;
        Ok(self.0.instant(expr, t_ms)?.iter().map(|(_, v)| v).sum())
    }
}

impl keel_controller::MetricSource for StoreMetrics {
    fn instant(&self, expr: &str, t_ms: i64) -> Result<keel_controller::run::Samples, String> {
        use keel_alerting::rules::engine::Source as _;
        self.0.instant(expr, t_ms)
    }

    fn range(
        &self,
        expr: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<Vec<(i64, f64)>, String> {
        let series = keel_promql::Engine::new(&self.0.store)
            .range(
                expr,
                keel_promql::QueryRange {
                    start: start_ms,
                    end: end_ms,
                    step: step_ms,
                },
            )
            .map_err(|e| e.to_string())?;
        match series.as_slice() {
            [] => Ok(Vec::new()),
            [one] => Ok(one.points.clone()),
            more => Err(format!(
                "{} series where one is needed (aggregate the query)",
                more.len()
            )),
        }
    }
}

/// The replay engine as the collector's dashboard uses it.
pub struct Replayer;

impl keel_incident::Replayer for Replayer {
    fn replay(
        &self,
        bundle: &keel_incident::bundle::Bundle,
        rules: Option<&str>,
        policy: Option<&str>,
    ) -> Result<serde_json::Value, String> {
        let name = format!("{}.keelinc", bundle.header.name);
        let recorded = run::Setup::recorded(bundle, &name).map_err(|e| e.to_string())?;
        let base = run::replay(bundle, &recorded).map_err(|e| e.to_string())?;
        let mut text = report::timeline(bundle, &recorded, &base);
        let reproduction = match report::reproduction(bundle, &recorded, &base) {
            Ok(s) => {
                text.push_str(&s);
                serde_json::json!({"ok": true, "summary": s, "differences": []})
            }
            Err(d) => {
                serde_json::json!({"ok": false, "summary": format!("not reproduced exactly: {} difference(s)", d.len()), "differences": d})
            }
        };
        let what_if = if rules.is_some() || policy.is_some() {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let mut setup = recorded.clone();
            if let Some(r) = rules {
                let d = dir.path().join("rules");
                std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
                std::fs::write(d.join("what-if.yml"), r).map_err(|e| e.to_string())?;
                setup = setup.with_rules(&d).map_err(|e| e.to_string())?;
                setup.rules_from = "from the page".into();
            }
            if let Some(p) = policy {
                let f = dir.path().join("policy.yaml");
                std::fs::write(&f, p).map_err(|e| e.to_string())?;
                setup = setup.with_policy(&f).map_err(|e| e.to_string())?;
                setup.policy_from = "from the page".into();
            }
            let o = run::replay(bundle, &setup).map_err(|e| e.to_string())?;
            serde_json::json!({
                "rows": report::diff_rows(bundle, &base, &o),
                "replayed": report::events_json(bundle, &o),
                "text": report::diff(bundle, &base, &o, &setup),
            })
        } else {
            serde_json::Value::Null
        };
        Ok(serde_json::json!({
            "header": bundle.header,
            // The page's what-if starts from the recorded rules.
            "rules_text": bundle.rule_files().next().map(|f| f.text.clone()),
            "recorded": report::recorded_json(bundle),
            "replayed": report::events_json(bundle, &base),
            "reproduction": reproduction,
            "what_if": what_if,
            "text": text,
        }))
    }
}
