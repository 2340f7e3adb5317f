//! `collector.limits`: what clients can make the collector hold, split
//! into the metric store's part and the log and span index's part.

use serde::{Deserialize, Serialize};

/// `collector.limits`: what clients can make the collector hold, so a
/// cardinality explosion or a huge record is refused at the limit while
/// memory stays bounded (global until clients have an identity).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most series in the metric store's head (active series); samples
    /// of a new series past it are refused, naming this limit.
    pub max_series: usize,
    /// Most labels a series may have, its name included.
    pub max_labels_per_series: usize,
    /// Longest label name, bytes.
    pub max_label_name_bytes: usize,
    /// Longest label value, bytes.
    pub max_label_value_bytes: usize,
    /// Longest log message, bytes (longer records are refused).
    pub max_log_line_bytes: usize,
    /// Most attributes a span or log record keeps (the rest are dropped).
    pub max_span_attributes: usize,
    /// Longest string attribute value, bytes (longer ones are cut).
    pub max_attribute_value_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        let (s, r) = (
            keel_metricstore::SeriesLimits::default(),
            keel_logindex::limits::RecordLimits::default(),
        );
        Self {
            max_series: s.max_series,
            max_labels_per_series: s.max_labels_per_series,
            max_label_name_bytes: s.max_label_name_bytes,
            max_label_value_bytes: s.max_label_value_bytes,
            max_log_line_bytes: r.max_log_line_bytes,
            max_span_attributes: r.max_span_attributes,
            max_attribute_value_bytes: r.max_attribute_value_bytes,
        }
    }
}

impl Limits {
    /// The metric store's part.
    pub fn series(&self) -> keel_metricstore::SeriesLimits {
        keel_metricstore::SeriesLimits {
            max_series: self.max_series,
            max_labels_per_series: self.max_labels_per_series,
            max_label_name_bytes: self.max_label_name_bytes,
            max_label_value_bytes: self.max_label_value_bytes,
        }
    }

    /// The log and span index's part.
    pub fn records(&self) -> keel_logindex::limits::RecordLimits {
        keel_logindex::limits::RecordLimits {
            max_log_line_bytes: self.max_log_line_bytes,
            max_span_attributes: self.max_span_attributes,
            max_attribute_value_bytes: self.max_attribute_value_bytes,
        }
    }

    /// Push one problem per limit set to 0.
    pub fn validate(&self, problems: &mut Vec<String>) {
        for (name, v) in [
            ("max_series", self.max_series),
            ("max_labels_per_series", self.max_labels_per_series),
            ("max_label_name_bytes", self.max_label_name_bytes),
            ("max_label_value_bytes", self.max_label_value_bytes),
            ("max_log_line_bytes", self.max_log_line_bytes),
            ("max_span_attributes", self.max_span_attributes),
            ("max_attribute_value_bytes", self.max_attribute_value_bytes),
        ] {
            if v == 0 {
                problems.push(format!("collector.limits.{name}: must be at least 1"));
            }
        }
    }
}
