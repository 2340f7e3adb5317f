//! Keel's PromQL engine.
//!
//! Expressions are parsed by the `promql-parser` crate; evaluation is ours.
//! Semantics follow Prometheus 3.x: a 5-minute lookback for instant
//! selectors, left-open range windows `(t - range, t]`, staleness markers
//! end a series, `rate`/`increase`/`delta` extrapolate as Prometheus does.
//! A function or feature the engine does not implement is an error naming
//! it, never a silently wrong answer.

pub mod aggregate;
pub mod binary;
pub mod eval;
pub mod functions;
pub mod value;

pub use eval::{Engine, QueryRange};
pub use value::{RangeSeries, Sample, Value, format_value};

/// Why a query failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum EvalError {
    /// The expression does not parse (the message names the position).
    #[error("parse error: {0}")]
    Parse(String),
    /// Valid PromQL that Keel does not implement yet.
    #[error("not supported by Keel yet: {0}")]
    Unsupported(String),
    /// The expression is well-formed but cannot be evaluated on this data.
    #[error("{0}")]
    Execution(String),
}
