//! Keel's PromQL engine.
//!
//! Expressions are parsed by the `promql-parser` crate; evaluation is ours.
//! Semantics follow Prometheus 3.x: a 5-minute lookback for instant
//! selectors, left-open range windows `(t - range, t]`, staleness markers
//! end a series, `rate`/`increase`/`delta` extrapolate as Prometheus does.
//! A function or feature the engine does not implement is an error naming
//! it, never a silently wrong answer.

pub mod aggregate;
pub mod annotations;
pub mod binary;
pub mod eval;
pub mod float;
pub mod functions;
pub mod gate;
pub mod limits;
pub mod native;
pub mod parse;
pub mod value;

pub use annotations::Annotations;
pub use eval::{Answer, Engine, QueryRange};
pub use gate::QueryGate;
pub use limits::{Budget, QueryLimits};
pub use parse::{MAX_NESTING, parse, selectors};
pub use value::{
    HistogramSample, RangeSeries, Sample, Value, format_api, format_go_g, format_value,
};

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
    /// The query would hold more samples at once than its limit (where).
    #[error("query processing would load too many samples into memory in {0}")]
    TooManySamples(&'static str),
    /// The query ran past its timeout (where).
    #[error("query timed out in {0}")]
    Timeout(&'static str),
    /// The query's caller went away (where it stopped).
    #[error("query was canceled in {0}")]
    Canceled(&'static str),
    /// The evaluation itself failed (a bug in Keel, reported, not hidden).
    #[error("internal error: {0}")]
    Internal(String),
}
