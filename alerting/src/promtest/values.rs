//! promtool's value notation: `input_series` labels and the expanding
//! values (`1+2x10`, `_x3`, `stale`), and durations.

use super::*;

pub(super) fn duration_ms(s: &str, what: &str) -> Result<i64, TestFileError> {
    rules::file::parse_duration(s)
        .map(|d| d.as_millis() as i64)
        .map_err(|e| TestFileError::Invalid(format!("{what}: {e}")))
}

pub(super) fn number(tok: &str) -> Option<f64> {
    match tok.to_ascii_lowercase().as_str() {
        "inf" | "+inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        "nan" => Some(f64::NAN),
        _ => tok.parse().ok(),
    }
}

/// Expand promtool's value notation into one entry per interval (None =
/// missing sample).
pub fn expand_values(values: &str) -> Result<Vec<Option<f64>>, String> {
    let mut out = Vec::new();
    for tok in values.split_whitespace() {
        if tok == "_" {
            out.push(None);
            continue;
        }
        if tok == "stale" {
            out.push(Some(f64::from_bits(STALE_NAN)));
            continue;
        }
        if let Some(n) = tok.strip_prefix("_x") {
            let n: usize = n.parse().map_err(|_| format!("bad repeat in {tok:?}"))?;
            out.extend(std::iter::repeat_n(None, n));
            continue;
        }
        if let Some(x) = tok.rfind('x') {
            let (head, count) = (&tok[..x], &tok[x + 1..]);
            let n: usize = count
                .parse()
                .map_err(|_| format!("bad repeat count in {tok:?}"))?;
            // Find the + or - operator: not at the start, not an exponent sign.
            let bytes = head.as_bytes();
            let op = (1..bytes.len()).rev().find(|&i| {
                (bytes[i] == b'+' || bytes[i] == b'-') && !matches!(bytes[i - 1], b'e' | b'E')
            });
            let (start, step) = match op {
                Some(i) => {
                    let a = number(&head[..i]).ok_or_else(|| format!("bad start in {tok:?}"))?;
                    let b = number(&head[i + 1..]).ok_or_else(|| format!("bad step in {tok:?}"))?;
                    (a, if bytes[i] == b'-' { -b } else { b })
                }
                None => (
                    number(head).ok_or_else(|| format!("bad value in {tok:?}"))?,
                    0.0,
                ),
            };
            for k in 0..=n {
                out.push(Some(start + step * k as f64));
            }
            continue;
        }
        out.push(Some(
            number(tok).ok_or_else(|| format!("bad value {tok:?}"))?,
        ));
    }
    Ok(out)
}

/// Labels of a selector written as `metric{a="b"}` or `{a="b"}`.
pub fn parse_series(s: &str) -> Result<Labels, String> {
    let s = s.trim();
    if s.is_empty() || s == "{}" {
        return Ok(Labels::default());
    }
    let expr = keel_promql::parse(s).map_err(|e| format!("{s:?}: {e}"))?;
    let promql_parser::parser::Expr::VectorSelector(vs) = expr else {
        return Err(format!("{s:?} is not a series"));
    };
    let mut pairs = Vec::new();
    if let Some(n) = vs.name {
        pairs.push((NAME.to_owned(), n));
    }
    for m in vs.matchers.matchers {
        pairs.push((m.name, m.value));
    }
    Ok(Labels::new(pairs))
}
