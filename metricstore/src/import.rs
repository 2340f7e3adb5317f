//! Backfill from OpenMetrics text (as `promtool tsdb create-blocks-from
//! openmetrics` does): every sample must carry a timestamp (seconds), the
//! data is cut into blocks aligned to the block duration and added to the
//! store. Data newer than two block durations before now belongs to live
//! ingestion and is refused, so a backfill never overlaps the head.

use std::collections::HashMap;
use std::io::BufRead;

use crate::{SeriesSamples, Store, block};
use keel_series::labels::{Labels, NAME};

/// What an import did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Imported {
    /// Series read.
    pub series: usize,
    /// Samples read.
    pub samples: usize,
    /// Blocks written.
    pub blocks: usize,
}

/// Errors importing, naming the line.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The input is not valid OpenMetrics text.
    #[error("{file}:{line}: {reason}")]
    Parse {
        /// Input name.
        file: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// Reading or writing failed.
    #[error("{0}")]
    Io(String),
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// Parse one sample line: `name{a="b",…} value timestamp`.
pub fn parse_line(line: &str) -> Result<(Labels, i64, f64), String> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => return Err("expected `name value timestamp`".into()),
    };
    let valid_start = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if !valid_start
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return Err(format!("invalid metric name {name:?}"));
    }
    let mut pairs = vec![(NAME.to_owned(), name.to_owned())];
    let mut rest = rest;
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        let end;
        loop {
            while chars.peek().is_some_and(|(_, c)| *c == ',' || *c == ' ') {
                chars.next();
            }
            if let Some((i, '}')) = chars.peek().copied() {
                end = i + 1;
                break;
            }
            let mut key = String::new();
            while let Some((_, c)) = chars.peek().copied() {
                if c == '=' {
                    break;
                }
                key.push(c);
                chars.next();
            }
            if chars.next().is_none() || !matches!(chars.next(), Some((_, '"'))) {
                return Err(format!("label {key:?}: expected =\"value\""));
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c)) => value.push(c),
                        None => return Err("unterminated label value".into()),
                    },
                    Some((_, '"')) => break,
                    Some((_, c)) => value.push(c),
                    None => return Err("unterminated label value".into()),
                }
            }
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("invalid label name {key:?}"));
            }
            pairs.push((key, value));
        }
        rest = &after[end..];
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next().ok_or("missing value")?;
    let value = parse_value(value).ok_or_else(|| format!("invalid value {value:?}"))?;
    let ts = fields
        .next()
        .ok_or("missing timestamp: backfilled samples need one (seconds)")?;
    let ts: f64 = ts
        .parse()
        .map_err(|_| format!("invalid timestamp {ts:?}"))?;
    if !ts.is_finite() {
        return Err(format!("invalid timestamp {ts}"));
    }
    if fields.next().is_some() {
        return Err("unexpected text after the timestamp".into());
    }
    Ok((Labels::new(pairs), (ts * 1000.0).round() as i64, value))
}

/// Read OpenMetrics text from `input` (named `file` in errors) and write
/// it into `store` as blocks. `progress` is called with bytes read.
pub fn import(
    store: &Store,
    file: &str,
    input: impl BufRead,
    now_ms: i64,
    mut progress: impl FnMut(u64),
) -> Result<Imported, ImportError> {
    let dir = store
        .blocks_dir()
        .ok_or_else(|| ImportError::Io("import needs an on-disk store".into()))?;
    let block_ms = store.block_ms().max(1);
    let newest_allowed = now_ms - 2 * block_ms;
    let mut series: HashMap<Labels, Vec<(i64, f64)>> = HashMap::new();
    let mut read = 0u64;
    let mut samples = 0usize;
    for (i, line) in input.lines().enumerate() {
        let line = line.map_err(|e| ImportError::Io(format!("{file}: {e}")))?;
        read += line.len() as u64 + 1;
        if i % 10_000 == 0 {
            progress(read);
        }
        let trimmed = line.trim();
        if trimmed == "# EOF" {
            break;
        }
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let err = |reason: String| ImportError::Parse {
            file: file.to_owned(),
            line: i + 1,
            reason,
        };
        let (labels, t, v) = parse_line(trimmed).map_err(err)?;
        if t > newest_allowed {
            return Err(err(format!(
                "sample at {} is newer than two block durations before now: send recent data through live ingestion",
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_millis(t.max(0) as u64)
                )
            )));
        }
        series.entry(labels).or_default().push((t, v));
        samples += 1;
    }
    progress(read);
    // Cut into block-aligned windows.
    let mut windows: HashMap<i64, Vec<SeriesSamples>> = HashMap::new();
    let n_series = series.len();
    for (labels, mut s) in series {
        s.sort_by_key(|(t, _)| *t);
        s.dedup_by_key(|(t, _)| *t);
        let mut start = 0;
        while start < s.len() {
            let w = s[start].0.div_euclid(block_ms);
            let end = s[start..].partition_point(|(t, _)| t.div_euclid(block_ms) == w) + start;
            windows
                .entry(w)
                .or_default()
                .push((labels.clone(), s[start..end].to_vec()));
            start = end;
        }
    }
    let mut keys: Vec<i64> = windows.keys().copied().collect();
    keys.sort_unstable();
    for w in &keys {
        let mut content = windows.remove(w).unwrap_or_default();
        content.sort_by(|a, b| a.0.cmp(&b.0));
        let b = block::write(&dir, &content, w * block_ms, (w + 1) * block_ms - 1)
            .map_err(ImportError::Io)?;
        store.adopt_block(b);
    }
    Ok(Imported {
        series: n_series,
        samples,
        blocks: keys.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_with_escapes_and_special_values() {
        let (l, t, v) =
            parse_line(r#"http_requests_total{code="200",path="/a\"b"} 1027 1700000000.5"#)
                .expect("ok");
        assert_eq!(l.get("path"), "/a\"b");
        assert_eq!((t, v), (1_700_000_000_500, 1027.0));
        let (_, _, v) = parse_line("up +Inf 1").expect("ok");
        assert!(v.is_infinite());
        assert!(
            parse_line("up 1")
                .unwrap_err()
                .contains("missing timestamp")
        );
        assert!(parse_line("up{a=1} 1 1").is_err());
        assert!(parse_line("9bad 1 1").is_err());
    }
}
