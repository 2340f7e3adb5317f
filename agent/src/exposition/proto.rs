//! The messages of Prometheus' protobuf exposition format
//! (`io.prometheus.client`, client_model's `metrics.proto`), as prost
//! reads them. Only the fields a scrape uses are declared; prost skips
//! the rest (created timestamps among them). Proto2 and proto3 builds of
//! the file write the same bytes, and prost reads repeated numbers packed
//! or not, so both are understood.

/// A label's name and value.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelPair {
    /// Its name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its value.
    #[prost(string, tag = "2")]
    pub value: String,
}

impl LabelPair {
    /// A label named `name` valued `value`.
    pub fn new(name: &str, value: &str) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// A gauge's or an untyped metric's value.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Value {
    /// The value.
    #[prost(double, tag = "1")]
    pub value: f64,
}

/// A counter's value and its exemplar.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Counter {
    /// The value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// The exemplar, if any.
    #[prost(message, optional, tag = "2")]
    pub exemplar: Option<Exemplar>,
}

/// One quantile of a summary.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Quantile {
    /// Which quantile (0..1).
    #[prost(double, tag = "1")]
    pub quantile: f64,
    /// Its value.
    #[prost(double, tag = "2")]
    pub value: f64,
}

/// A summary.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    /// Observations.
    #[prost(uint64, tag = "1")]
    pub sample_count: u64,
    /// Their sum.
    #[prost(double, tag = "2")]
    pub sample_sum: f64,
    /// The quantiles.
    #[prost(message, repeated, tag = "3")]
    pub quantile: Vec<Quantile>,
}

/// A histogram: classic buckets, native (sparse) buckets, or both.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Histogram {
    /// Observations (integer histograms).
    #[prost(uint64, tag = "1")]
    pub sample_count: u64,
    /// Observations (float histograms; overrides `sample_count` if > 0).
    #[prost(double, tag = "4")]
    pub sample_count_float: f64,
    /// Their sum.
    #[prost(double, tag = "2")]
    pub sample_sum: f64,
    /// Classic buckets, ascending upper bound; `+Inf` optional.
    #[prost(message, repeated, tag = "3")]
    pub bucket: Vec<Bucket>,
    /// Native: the bucket schema, -4..=8.
    #[prost(sint32, tag = "5")]
    pub schema: i32,
    /// Native: the zero bucket's half-width.
    #[prost(double, tag = "6")]
    pub zero_threshold: f64,
    /// Native: observations in the zero bucket.
    #[prost(uint64, tag = "7")]
    pub zero_count: u64,
    /// Native: the same for float histograms (overrides if > 0).
    #[prost(double, tag = "8")]
    pub zero_count_float: f64,
    /// Native: negative buckets' spans.
    #[prost(message, repeated, tag = "9")]
    pub negative_span: Vec<BucketSpan>,
    /// Native: negative buckets' counts, each a delta to the one before.
    #[prost(sint64, repeated, tag = "10")]
    pub negative_delta: Vec<i64>,
    /// Native: negative buckets' counts, absolute (float histograms).
    #[prost(double, repeated, tag = "11")]
    pub negative_count: Vec<f64>,
    /// Native: positive buckets' spans (a no-op span marks a native
    /// histogram that has seen nothing yet).
    #[prost(message, repeated, tag = "12")]
    pub positive_span: Vec<BucketSpan>,
    /// Native: positive buckets' counts, each a delta to the one before.
    #[prost(sint64, repeated, tag = "13")]
    pub positive_delta: Vec<i64>,
    /// Native: positive buckets' counts, absolute (float histograms).
    #[prost(double, repeated, tag = "14")]
    pub positive_count: Vec<f64>,
    /// Native: exemplars (each with a timestamp).
    #[prost(message, repeated, tag = "16")]
    pub exemplars: Vec<Exemplar>,
}

/// A classic bucket.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Bucket {
    /// Observations at or below the bound.
    #[prost(uint64, tag = "1")]
    pub cumulative_count: u64,
    /// The same for float histograms (overrides if > 0).
    #[prost(double, tag = "4")]
    pub cumulative_count_float: f64,
    /// The bound (inclusive).
    #[prost(double, tag = "2")]
    pub upper_bound: f64,
    /// The exemplar, if any.
    #[prost(message, optional, tag = "3")]
    pub exemplar: Option<Exemplar>,
}

/// Consecutive native buckets: the gap after the previous span (the
/// first's: its start index) and how many.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BucketSpan {
    /// Gap, or start index for the first span.
    #[prost(sint32, tag = "1")]
    pub offset: i32,
    /// Buckets in it.
    #[prost(uint32, tag = "2")]
    pub length: u32,
}

/// An exemplar.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Exemplar {
    /// Its labels.
    #[prost(message, repeated, tag = "1")]
    pub label: Vec<LabelPair>,
    /// The value it saw.
    #[prost(double, tag = "2")]
    pub value: f64,
    /// When.
    #[prost(message, optional, tag = "3")]
    pub timestamp: Option<Timestamp>,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Timestamp {
    /// Seconds since the epoch.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds within it.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// One series of a family.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metric {
    /// Its labels.
    #[prost(message, repeated, tag = "1")]
    pub label: Vec<LabelPair>,
    /// A gauge's value.
    #[prost(message, optional, tag = "2")]
    pub gauge: Option<Value>,
    /// A counter's.
    #[prost(message, optional, tag = "3")]
    pub counter: Option<Counter>,
    /// A summary's.
    #[prost(message, optional, tag = "4")]
    pub summary: Option<Summary>,
    /// An untyped metric's.
    #[prost(message, optional, tag = "5")]
    pub untyped: Option<Value>,
    /// A histogram's (or gauge histogram's).
    #[prost(message, optional, tag = "7")]
    pub histogram: Option<Histogram>,
    /// The target's own time for it (ms; 0: none, as Prometheus reads it).
    #[prost(int64, tag = "6")]
    pub timestamp_ms: i64,
}

/// A metric family: its name, help, type, unit and series.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricFamily {
    /// The family's name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its help text.
    #[prost(string, tag = "2")]
    pub help: String,
    /// Its type (see [`kind`]).
    #[prost(int32, tag = "3")]
    pub r#type: i32,
    /// Its series.
    #[prost(message, repeated, tag = "4")]
    pub metric: Vec<Metric>,
    /// Its unit.
    #[prost(string, tag = "5")]
    pub unit: String,
}

impl MetricFamily {
    /// A family of `kind` (see [`kind`]) with `metric`, its help text
    /// saying its name.
    pub fn new(name: &str, kind: i32, metric: Vec<Metric>) -> Self {
        Self {
            name: name.into(),
            help: format!("The {name}."),
            r#type: kind,
            metric,
            unit: String::new(),
        }
    }
}

/// The `MetricType` numbers.
pub mod kind {
    /// A counter.
    pub const COUNTER: i32 = 0;
    /// A gauge.
    pub const GAUGE: i32 = 1;
    /// A summary.
    pub const SUMMARY: i32 = 2;
    /// Untyped.
    pub const UNTYPED: i32 = 3;
    /// A histogram.
    pub const HISTOGRAM: i32 = 4;
    /// A gauge histogram.
    pub const GAUGE_HISTOGRAM: i32 = 5;
}
