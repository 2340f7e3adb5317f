//! PromQL values and how they print.

use keel_series::histogram::Histogram;
use keel_series::labels::Labels;

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series' labels.
    pub labels: Labels,
    /// Its value at the evaluation time.
    pub value: f64,
}

/// One native histogram element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSample {
    /// The series' labels.
    pub labels: Labels,
    /// Its histogram at the evaluation time.
    pub histogram: Histogram,
}

/// One element of a range vector.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeSeries {
    /// The series' labels.
    pub labels: Labels,
    /// Samples in the range, in time order (ms, value).
    pub points: Vec<(i64, f64)>,
    /// Native histogram samples in the range, in time order.
    pub histograms: Vec<(i64, Histogram)>,
}

impl RangeSeries {
    /// A series of float samples.
    pub fn floats(labels: Labels, points: Vec<(i64, f64)>) -> Self {
        Self {
            labels,
            points,
            histograms: Vec::new(),
        }
    }
}

/// The result of evaluating an expression at one time.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number.
    Scalar(f64),
    /// A set of series, one value each.
    Vector(Vec<Sample>),
    /// A set of native histogram series, one histogram each (an instant
    /// vector, as Prometheus has it; Keel holds its floats and
    /// histograms apart).
    Histograms(Vec<HistogramSample>),
    /// A set of series, a range of values each.
    Matrix(Vec<RangeSeries>),
    /// A string literal.
    String(String),
}

impl Value {
    /// The type name, as Prometheus' API and errors spell it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Scalar(_) => "scalar",
            Value::Vector(_) | Value::Histograms(_) => "vector",
            Value::Matrix(_) => "matrix",
            Value::String(_) => "string",
        }
    }
}

pub use keel_series::float_text::{format_api, format_go_g, format_value};
