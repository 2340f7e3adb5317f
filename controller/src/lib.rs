//! Keel's controller. So far its reactive autoscaler: the Kubernetes
//! HPA's algorithm and `behavior` semantics ([`behavior`], [`hpa`]) with a
//! Knative-style panic mode, deciding on any time it is given (the
//! injected clock's) and explaining each decision with its inputs, every
//! rule that changed the count, and one line for people.

pub mod behavior;
pub mod hpa;

pub use behavior::{Behavior, Clamp, PolicyKind, RatePolicy, Rules, SelectPolicy};
pub use hpa::{Autoscaler, Decision, Demand, Instances, Observation, Reading, Settings, Target};
