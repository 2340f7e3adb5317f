//! PromQL values and how they print.

use keel_series::labels::Labels;

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series' labels.
    pub labels: Labels,
    /// Its value at the evaluation time.
    pub value: f64,
}

/// One element of a range vector.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeSeries {
    /// The series' labels.
    pub labels: Labels,
    /// Samples in the range, in time order (ms, value).
    pub points: Vec<(i64, f64)>,
}

/// The result of evaluating an expression at one time.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number.
    Scalar(f64),
    /// A set of series, one value each.
    Vector(Vec<Sample>),
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
            Value::Vector(_) => "vector",
            Value::Matrix(_) => "matrix",
            Value::String(_) => "string",
        }
    }
}

/// A float as Prometheus prints it (`strconv.FormatFloat(f, 'f', -1, 64)`).
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}
