//! What a replay runs with: the rules, routing and policy recorded in
//! the bundle, or a rule directory or policy file in their place, checked
//! before anything runs.

use super::*;

/// What a replay runs: rules, routing and policies.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The rule groups.
    pub groups: Vec<Group>,
    /// Intervals, severity mapping, external labels.
    pub rules: RulesConfig,
    /// Routing.
    pub notify: NotifyConfig,
    /// The autoscaler's policies (none: no controller ran).
    pub controller: Option<ControllerConfig>,
    /// Where the rules came from, for the report.
    pub rules_from: String,
    /// Where the policies came from, for the report.
    pub policy_from: String,
}

pub(super) fn from_json<T: serde::de::DeserializeOwned + Default>(
    v: &serde_json::Value,
    what: &str,
    path: &str,
) -> Result<T, ReplayError> {
    if v.is_null() {
        return Ok(T::default());
    }
    serde_json::from_value(v.clone()).map_err(|e| {
        ReplayError::Bundle(BundleError::Missing {
            path: path.into(),
            why: format!("its {what} configuration does not read: {e}"),
        })
    })
}

impl Setup {
    /// The rules, routing and policies in force when `bundle` was recorded.
    pub fn recorded(bundle: &Bundle, path: &str) -> Result<Self, ReplayError> {
        let rules: RulesConfig = from_json(&bundle.config.rules, "rules", path)?;
        let notify: NotifyConfig = from_json(&bundle.config.notify, "notify", path)?;
        let controller = match &bundle.config.controller {
            None => None,
            Some(v) => Some(from_json::<ControllerConfig>(v, "controller", path)?),
        };
        Self::parse(bundle, path, rules, notify, controller)
    }

    /// Every rule file the recording evaluated is in the bundle (else
    /// the replay would silently lack rules): checked unless `--rules`
    /// replaces them.
    pub fn check_rule_files(bundle: &Bundle, path: &str) -> Result<(), ReplayError> {
        let held: BTreeSet<&str> = bundle.rule_files().map(|f| f.name.as_str()).collect();
        let named: Vec<String> = bundle
            .marks
            .iter()
            .filter_map(|m| match m {
                Mark::RuleEval { file, .. } => Some(file.clone()),
                _ => None,
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|f| !held.contains(f.as_str()))
            .collect();
        if let Some(missing) = named.first() {
            return Err(ReplayError::Bundle(BundleError::Missing {
                path: path.into(),
                why: format!(
                    "the recording evaluated rules from {missing}, which the bundle does not hold ({} rule file(s) missing); replay it with --rules DIR",
                    named.len()
                ),
            }));
        }
        Ok(())
    }

    fn parse(
        bundle: &Bundle,
        path: &str,
        rules: RulesConfig,
        notify: NotifyConfig,
        controller: Option<ControllerConfig>,
    ) -> Result<Self, ReplayError> {
        let mut groups = Vec::new();
        let mut problems = Vec::new();
        for f in bundle.rule_files() {
            match keel_alerting::rules::file::parse(
                Path::new(&f.name),
                &f.text,
                rules.evaluation_interval,
                &rules.severity_mapping,
            ) {
                Ok(g) => groups.extend(g),
                Err(e) => problems.push(format!("{path}: {e}")),
            }
        }
        if !problems.is_empty() {
            return Err(ReplayError::Rules(problems.join("\n")));
        }
        Ok(Self {
            groups,
            rules,
            notify,
            controller,
            rules_from: "the bundle's".into(),
            policy_from: "the bundle's".into(),
        })
    }

    /// The same, with the rules of `dir` (a directory or a file).
    pub fn with_rules(mut self, dir: &Path) -> Result<Self, ReplayError> {
        self.groups = keel_alerting::rules::file::load(
            &[dir.to_owned()],
            self.rules.evaluation_interval,
            &self.rules.severity_mapping,
        )
        .map_err(|e| ReplayError::Rules(e.to_string()))?;
        self.rules_from = dir.display().to_string();
        Ok(self)
    }

    /// The same, with the policies of `file`: a `controller:` section as
    /// in keel.yaml, or the section's contents.
    pub fn with_policy(mut self, file: &Path) -> Result<Self, ReplayError> {
        /// keel.yaml's shape: validation problems point at their lines.
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Wrapped {
            controller: ControllerConfig,
        }
        impl keel_core::config::Validate for Wrapped {
            fn validate(&self, problems: &mut Vec<String>) {
                self.controller.validate(problems);
            }
        }
        /// The section's contents alone.
        #[derive(serde::Deserialize)]
        #[serde(transparent)]
        struct Bare(ControllerConfig);
        impl keel_core::config::Validate for Bare {
            fn validate(&self, problems: &mut Vec<String>) {
                self.0.validate(problems);
            }
        }
        let text = std::fs::read_to_string(file)
            .map_err(|e| ReplayError::Policy(format!("{}: {e}", file.display())))?;
        let config = if text.lines().any(|l| l.starts_with("controller:")) {
            keel_core::config::load_yaml::<Wrapped>(file).map(|w| w.controller)
        } else {
            keel_core::config::load_yaml::<Bare>(file).map(|b| b.0)
        }
        .map_err(|e| ReplayError::Policy(e.to_string()))?;
        self.controller = Some(config);
        self.policy_from = file.display().to_string();
        Ok(self)
    }
}

/// True when a rule of `groups` counts logs.
pub(super) fn reads_logs(groups: &[Group]) -> bool {
    groups.iter().flat_map(|g| &g.rules).any(|r| {
        matches!(
            r,
            Rule::Alert(a) if matches!(a.condition, keel_alerting::rules::Condition::Logs { .. })
        )
    })
}

/// What a replay reads of a bundle: never its spans, and its logs only
/// when a rule (the bundle's, or those of `rules` when given) counts them.
pub fn keep(rules: Option<&Path>) -> keel_incident::bundle::Keep {
    let rules = rules.map(Path::to_owned);
    keel_incident::bundle::Keep {
        spans: false,
        // The recorded rules run too (a what-if's baseline).
        logs: Box::new(move |b: &Bundle| match Setup::recorded(b, "bundle") {
            Ok(s) => {
                reads_logs(&s.groups)
                    || rules.as_ref().is_some_and(|dir| {
                        s.with_rules(dir).map_or(true, |w| reads_logs(&w.groups))
                    })
            }
            // Unknown: keep them (the error shows at replay).
            Err(_) => true,
        }),
    }
}

/// Most group and controller evaluations one replay runs (an hour of
/// 1 s groups is 3,600 each).
pub(super) const MAX_EVALUATIONS: usize = 5_000_000;
