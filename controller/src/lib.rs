//! Keel's controller: the reactive autoscaler — the Kubernetes HPA's
//! algorithm and `behavior` semantics ([`behavior`], [`hpa`]) with a
//! Knative-style panic mode — run on the injected clock over policies
//! ([`policy`]) against actuators ([`actuator`]: the sample app's
//! supervisor, user commands, dry run) by [`run`], which explains every
//! evaluation as an event ([`api`]: `GET /api/v1/events`); and replica
//! failover ([`failover`]): a dead primary detected, the most caught-up
//! replica promoted under a new epoch, the app repointed, every step an
//! event in the [`journal`].

pub mod actuator;
pub mod api;
pub mod behavior;
pub mod failover;
pub mod fencing;
pub mod forecast;
pub mod hpa;
pub mod journal;
pub mod policy;
pub mod run;

pub use behavior::{Behavior, Clamp, PolicyKind, RatePolicy, Rules, SelectPolicy};
pub use hpa::{
    Autoscaler, Decision, Demand, ForecastPart, Instances, Observation, Reading, Settings, Target,
};
pub use policy::{
    ActuatorConfig, ControllerConfig, MetricSpec, PanicSpec, Policy, PredictiveMode, PredictiveSpec,
};
pub use run::{Controller, Event, MetricSource};
