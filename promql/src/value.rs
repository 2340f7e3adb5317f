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

/// A float as Go's `%g`/`%v` prints it (shortest digits; an exponent
/// when it is below -4 or at least 6: `1.5`, `2`, `1e+06`, `1e-05`), the
/// form of the numbers in Prometheus' messages.
pub fn format_go_g(v: f64) -> String {
    if !v.is_finite() {
        return format_value(v);
    }
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..6).contains(&exp) {
        return format!("{v}");
    }
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.abs())
}

#[cfg(test)]
mod tests {
    use super::format_go_g;

    #[test]
    fn numbers_print_as_go_prints_them() {
        for (v, want) in [
            (1.5, "1.5"),
            (2.0, "2"),
            (-1.0, "-1"),
            (1e20, "1e+20"),
            (123456.0, "123456"),
            (1234567.0, "1.234567e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (9.223372036854776e18, "9.223372036854776e+18"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
        ] {
            assert_eq!(format_go_g(v), want, "{v}");
        }
    }
}
