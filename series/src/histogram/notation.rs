//! Prometheus' test notation for native histograms (promqltest and
//! promtool's `input_series`/`exp_samples`):
//! `{{schema:0 sum:5 count:4 z_bucket:1 z_bucket_w:0.001 offset:1 buckets:[1 2] n_offset:0 n_buckets:[1] counter_reset_hint:gauge}}`.
//! `offset` is the index of the first bucket in `buckets`. Custom
//! buckets (`schema:-53`) list their bounds in `custom_values:[5 10]`.

use super::{CounterReset, Histogram};

fn number(s: &str) -> Option<f64> {
    match s.to_ascii_lowercase().as_str() {
        "inf" | "+inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        "nan" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

impl Histogram {
    /// Parse `{{…}}`; the error names the field that is wrong.
    pub fn parse_notation(s: &str) -> Result<Histogram, String> {
        let inner = s
            .trim()
            .strip_prefix("{{")
            .and_then(|x| x.strip_suffix("}}"))
            .ok_or_else(|| format!("{s:?}: a histogram is written {{{{schema:… buckets:[…]}}}}"))?;
        let mut h = Histogram::default();
        let (mut pos, mut neg) = (Vec::new(), Vec::new());
        let (mut offset, mut n_offset) = (0i32, 0i32);
        let mut rest = inner.trim();
        while !rest.is_empty() {
            let (key, after) = rest
                .split_once(':')
                .ok_or_else(|| format!("{s:?}: expected key:value at {rest:?}"))?;
            let key = key.trim();
            let after = after.trim_start();
            let (value, next) = if let Some(list) = after.strip_prefix('[') {
                let (l, n) = list
                    .split_once(']')
                    .ok_or_else(|| format!("{s:?}: {key}: unclosed ["))?;
                (l, n)
            } else {
                after.split_once(char::is_whitespace).unwrap_or((after, ""))
            };
            let num = |v: &str| {
                number(v.trim()).ok_or_else(|| format!("{s:?}: {key}: {v:?} is not a number"))
            };
            let list =
                |v: &str| -> Result<Vec<f64>, String> { v.split_whitespace().map(num).collect() };
            match key {
                "schema" => h.schema = num(value)? as i32,
                "sum" => h.sum = num(value)?,
                "count" => h.count = num(value)?,
                "z_bucket" => h.zero_count = num(value)?,
                "z_bucket_w" => h.zero_threshold = num(value)?,
                "offset" => offset = num(value)? as i32,
                "n_offset" => n_offset = num(value)? as i32,
                "buckets" => pos = list(value)?,
                "n_buckets" => neg = list(value)?,
                "custom_values" => h.custom_values = list(value)?.into(),
                "counter_reset_hint" => {
                    h.reset = match value.trim() {
                        "unknown" => CounterReset::Unknown,
                        "reset" => CounterReset::Reset,
                        "not_reset" => CounterReset::NotReset,
                        "gauge" => CounterReset::Gauge,
                        other => return Err(format!("{s:?}: counter_reset_hint: {other:?}")),
                    }
                }
                other => return Err(format!("{s:?}: unknown field {other:?}")),
            }
            rest = next.trim_start();
        }
        let place = |offset: i32, counts: Vec<f64>| -> Result<Vec<(i32, f64)>, String> {
            counts
                .into_iter()
                .enumerate()
                .map(|(k, c)| {
                    i32::try_from(k)
                        .ok()
                        .and_then(|k| offset.checked_add(k))
                        .map(|i| (i, c))
                        .ok_or_else(|| format!("{s:?}: bucket index out of range"))
                })
                .collect()
        };
        h.positive = place(offset, pos)?;
        h.negative = place(n_offset, neg)?;
        if h.is_custom() {
            // Counts may be negative here (a gauge histogram's delta).
            h.validate_custom().map_err(|e| format!("{s:?}: {e}"))?;
        } else if !(super::MIN_SCHEMA..=super::MAX_SCHEMA).contains(&h.schema) {
            return Err(format!(
                "{s:?}: schema {} is outside -4..=8 (or -53, custom buckets)",
                h.schema
            ));
        } else if !h.custom_values.is_empty() {
            return Err(format!("{s:?}: custom_values need schema:-53"));
        }
        Ok(h.compact())
    }

    /// The histogram in the same notation (buckets written sparse, one
    /// `offset` a run, so it reads back equal).
    pub fn notation(&self) -> String {
        let side = |b: &[(i32, f64)]| {
            b.iter()
                .map(|(i, c)| format!("{i}:{c}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        format!(
            "{{{{schema:{} sum:{} count:{} z_bucket:{} z_bucket_w:{} buckets:[{}] n_buckets:[{}]{}{}}}}}",
            self.schema,
            self.sum,
            self.count,
            self.zero_count,
            self.zero_threshold,
            side(&self.positive),
            side(&self.negative),
            if self.is_custom() {
                let cv: Vec<String> = self.custom_values.iter().map(f64::to_string).collect();
                format!(" custom_values:[{}]", cv.join(" "))
            } else {
                String::new()
            },
            match self.reset {
                CounterReset::Gauge => " counter_reset_hint:gauge",
                CounterReset::Reset => " counter_reset_hint:reset",
                _ => "",
            }
        )
    }

    /// Equal as test expectations compare: the same schema and buckets,
    /// every number within `close` of the other's.
    pub fn close_to(&self, other: &Histogram, close: impl Fn(f64, f64) -> bool) -> bool {
        let (a, b) = (self.clone().compact(), other.clone().compact());
        let same_side = |x: &[(i32, f64)], y: &[(i32, f64)]| {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.0 == q.0 && close(p.1, q.1))
        };
        a.schema == b.schema
            && a.custom_values == b.custom_values
            && close(a.count, b.count)
            && close(a.sum, b.sum)
            && close(a.zero_count, b.zero_count)
            && (a.zero_count == 0.0 || close(a.zero_threshold, b.zero_threshold))
            && same_side(&a.positive, &b.positive)
            && same_side(&a.negative, &b.negative)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_notation_reads_as_promqltest_writes_it() {
        let h = Histogram::parse_notation(
            "{{schema:1 sum:-0.3 count:3.1 z_bucket:7.1 z_bucket_w:0.05 buckets:[5.1 10 7] offset:-3 n_buckets:[4.1 5] n_offset:-5 counter_reset_hint:gauge}}",
        )
        .expect("parses");
        assert_eq!(h.schema, 1);
        assert_eq!(
            (h.sum, h.count, h.zero_count, h.zero_threshold),
            (-0.3, 3.1, 7.1, 0.05)
        );
        assert_eq!(h.positive, vec![(-3, 5.1), (-2, 10.0), (-1, 7.0)]);
        assert_eq!(h.negative, vec![(-5, 4.1), (-4, 5.0)]);
        assert_eq!(h.reset, CounterReset::Gauge);
        assert!(
            Histogram::parse_notation("{{schema:x}}")
                .unwrap_err()
                .contains("schema")
        );
        assert!(
            Histogram::parse_notation("{{bogus:1}}")
                .unwrap_err()
                .contains("bogus")
        );
        assert!(Histogram::parse_notation("schema:1").is_err());
        assert!(h.close_to(&h.clone(), |a, b| a == b));
    }
}
