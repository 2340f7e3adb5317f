//! What one log record or span may make the collector hold
//! (`collector.limits`): a log line over `max_log_line_bytes` is refused
//! by name (Loki's `max_line_size`); attributes past
//! `max_span_attributes` are dropped and string values past
//! `max_attribute_value_bytes` cut, as OpenTelemetry's own attribute
//! limits do, so one record's size stays bounded whatever is sent.

use serde_json::{Map, Value};

use crate::logs::record::LogRecord;
use crate::traces::SpanRecord;

/// The limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecordLimits {
    /// Longest log message, bytes.
    pub max_log_line_bytes: usize,
    /// Most attributes a span or log record keeps.
    pub max_span_attributes: usize,
    /// Longest string attribute value, bytes.
    pub max_attribute_value_bytes: usize,
}

impl Default for RecordLimits {
    fn default() -> Self {
        Self {
            max_log_line_bytes: 256 * 1024,
            max_span_attributes: 128,
            max_attribute_value_bytes: 4096,
        }
    }
}

impl RecordLimits {
    /// Keep at most `max_span_attributes` of `attrs` and cut longer string
    /// values, inside arrays and maps too (each holding at most as many
    /// elements); how many values were dropped or cut.
    fn attributes(&self, attrs: &mut Map<String, Value>) -> usize {
        let mut changed = self.keep_first(attrs);
        for v in attrs.values_mut() {
            changed += self.bound(v);
        }
        changed
    }

    /// Drop the keys of `m` past `max_span_attributes`; how many.
    fn keep_first(&self, m: &mut Map<String, Value>) -> usize {
        if m.len() <= self.max_span_attributes {
            return 0;
        }
        let extra: Vec<String> = m.keys().skip(self.max_span_attributes).cloned().collect();
        for k in &extra {
            m.remove(k);
        }
        extra.len()
    }

    /// Bound one value: strings cut, arrays and maps shortened, nested
    /// ones alike; how many values were dropped or cut.
    fn bound(&self, v: &mut Value) -> usize {
        match v {
            Value::String(s) if s.len() > self.max_attribute_value_bytes => {
                let mut end = self.max_attribute_value_bytes;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                s.truncate(end);
                1
            }
            Value::Array(a) => {
                let cut = a.len().saturating_sub(self.max_span_attributes);
                a.truncate(self.max_span_attributes);
                cut + a.iter_mut().map(|x| self.bound(x)).sum::<usize>()
            }
            Value::Object(m) => {
                let cut = self.keep_first(m);
                cut + m.values_mut().map(|x| self.bound(x)).sum::<usize>()
            }
            _ => 0,
        }
    }

    /// Records within the limits (their attributes bounded), and one
    /// problem for each refused (`place(i)` names record `i`).
    pub fn logs(
        &self,
        records: Vec<LogRecord>,
        place: impl Fn(usize) -> String,
    ) -> (Vec<LogRecord>, Vec<String>) {
        let mut kept = Vec::with_capacity(records.len());
        let mut problems = Vec::new();
        for (i, mut r) in records.into_iter().enumerate() {
            if r.message.len() > self.max_log_line_bytes {
                problems.push(format!(
                    "{}: a message of {} bytes, over collector.limits.max_log_line_bytes ({})",
                    place(i),
                    r.message.len(),
                    self.max_log_line_bytes
                ));
                continue;
            }
            self.attributes(&mut r.attributes);
            kept.push(r);
        }
        (kept, problems)
    }

    /// Bound every span's attributes; how many attributes were dropped
    /// or cut.
    pub fn spans(&self, spans: &mut [SpanRecord]) -> usize {
        spans
            .iter_mut()
            .map(|s| self.attributes(&mut s.attributes))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_refused_by_name_and_attributes_bounded() {
        let l = RecordLimits {
            max_log_line_bytes: 10,
            max_span_attributes: 2,
            max_attribute_value_bytes: 3,
        };
        let mut attrs = Map::new();
        for k in ["a", "b", "c"] {
            attrs.insert(k.into(), Value::String("ééé".into()));
        }
        let ok = LogRecord {
            message: "short".into(),
            attributes: attrs,
            ..LogRecord::default()
        };
        let long = LogRecord {
            message: "x".repeat(11),
            ..LogRecord::default()
        };
        let (kept, problems) = l.logs(vec![ok, long], |i| format!("line {}", i + 1));
        assert_eq!(kept.len(), 1);
        assert_eq!(
            problems,
            ["line 2: a message of 11 bytes, over collector.limits.max_log_line_bytes (10)"]
        );
        let a = &kept[0].attributes;
        assert_eq!(a.len(), 2);
        // Cut at a character boundary: "é" is 2 bytes, 3 bytes hold one.
        assert!(a.values().all(|v| v == "é"), "{a:?}");
        let mut spans = vec![SpanRecord {
            attributes: kept[0].attributes.clone(),
            ..SpanRecord::default()
        }];
        assert_eq!(l.spans(&mut spans), 0, "already within");
        // Nested: an array of three long strings inside a map.
        let nested = serde_json::json!({"k": {"list": ["abcd", "efgh", "ijkl"]}});
        let mut spans = vec![SpanRecord {
            attributes: nested.as_object().cloned().unwrap_or_default(),
            ..SpanRecord::default()
        }];
        // One element dropped, two strings cut.
        assert_eq!(l.spans(&mut spans), 3);
        assert_eq!(
            Value::Object(spans[0].attributes.clone()),
            serde_json::json!({"k": {"list": ["abc", "efg"]}})
        );
    }
}
