//! keel-auth: who may talk to Keel.
//!
//! - [`senders`]: the bearer tokens agents and other senders present on
//!   ingest (OTLP over HTTP and gRPC, Prometheus remote write, the log
//!   push API), per tenant or environment, checked by an axum middleware
//!   on those listeners and routes.
//! - People: [`role`]s (viewer, editor, admin); users with argon2
//!   [`password`]s and API tokens kept in the state store ([`directory`]);
//!   browser [`sessions`]; the [`access`] guard every route people use
//!   goes through (Host and Origin checks, who, role, CSRF, audit); and
//!   the [`api`] to log in and to manage users and tokens.
//!
//! It owns credentials and their checks only; it must never depend on
//! the metric store, the rule engine or the collector (they depend on
//! it). What each route needs is the server's to say ([`access::Classify`]).

pub mod access;
pub mod api;
pub mod config;
pub mod directory;
pub mod password;
pub mod role;
pub mod senders;
pub mod sessions;

pub use access::{Access, Need, Principal, Via};
pub use config::{AuthConfig, ProxyConfig};
pub use directory::Directory;
pub use role::Role;
pub use senders::{SenderToken, Senders};
