//! `keel load`: an open-loop load generator for the sample app.
//!
//! Requests are sent on a fixed schedule derived from a load [`profile`]
//! whatever the latency (no coordinated omission): latency is measured from
//! the *intended* send time into an HDR histogram, so a stalled target shows
//! up as latency, not as fewer requests.

pub mod profile;
pub mod run;

pub use profile::{Profile, ProfileKind, Segment};
pub use run::{HttpTarget, Outcome, Report, RequestKind, RunOptions, Target, run};
