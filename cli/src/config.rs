//! `keel.yaml`: one section per part of Keel.

use std::path::Path;

use keel_agent::config::AgentConfig;
use keel_collector::server::CollectorConfig;
use keel_core::config::{Validate, apply_env_overrides, find_config_file, load_yaml};
use keel_sampleapp::config::SampleAppConfig;
use serde::{Deserialize, Serialize};

/// The whole configuration file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeelConfig {
    /// The host agent: scraping, buffering, shipping.
    pub agent: AgentConfig,
    /// The collector: OTLP ingest, metric store, PromQL API.
    pub collector: CollectorConfig,
    /// The sample multi-tier app `keel up` runs.
    pub sampleapp: SampleAppConfig,
    /// The controller: autoscaling policies.
    pub controller: keel_controller::ControllerConfig,
}

impl Validate for KeelConfig {
    fn validate(&self, problems: &mut Vec<String>) {
        self.agent.validate(problems);
        self.collector.validate(problems);
        self.sampleapp.validate(problems);
        self.controller.validate(problems);
    }
}

/// Load `keel.yaml` (explicit path, ./keel.yaml, /etc/keel/keel.yaml, or
/// built-in defaults), then apply `KEEL_<SECTION>__<KEY>` overrides and
/// validate the result, reporting every problem at once.
pub fn load(explicit: Option<&Path>) -> anyhow::Result<KeelConfig> {
    let (config, source) = match find_config_file(explicit) {
        Some(path) => (load_yaml::<KeelConfig>(&path)?, path.display().to_string()),
        None => (KeelConfig::default(), "<defaults>".to_owned()),
    };
    let config = apply_env_overrides(config, std::env::vars())?;
    config.check(&format!("{source} (after environment overrides)"))?;
    Ok(config)
}
