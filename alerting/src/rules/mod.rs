//! Alerting and recording rules: Prometheus-compatible rule files with
//! P0–P2 severities and log rules ([`file`]), their templates
//! ([`template`]), and the engine that evaluates them and keeps alert
//! state ([`engine`]); in the collector, [`manager`] runs them on the
//! clock over the stores ([`source`]), [`persist`] keeps their alerts in
//! the state store, and [`api`] shows them.

pub mod api;
pub mod engine;
pub mod file;
pub mod manager;
pub mod persist;
pub mod source;
pub mod template;

pub use engine::{Alert, GroupState, Source, State};
pub use file::{AlertRule, Condition, Group, Rule, RuleErrors, Severity, SeverityMapping};
pub use manager::{RuleManager, RulesConfig};
