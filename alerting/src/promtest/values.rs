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

/// One entry of a histogram series' values.
pub type HistogramValue = Option<Histogram>;

/// Expand a native histogram series' values: `{{…}}` one sample,
/// `{{a}}x3` four equal ones, `{{a}}+{{b}}x3` a, a+b, a+2b, a+3b, `_`
/// and `_x3` missing, `stale` a staleness marker.
pub fn expand_histograms(values: &str) -> Result<Vec<HistogramValue>, String> {
    let mut out = Vec::new();
    let mut rest = values.trim_start();
    let take = |r: &str| -> Result<(Histogram, usize), String> {
        let end = r
            .find("}}")
            .ok_or_else(|| format!("unclosed {{{{ in {r:?}"))?
            + 2;
        Ok((Histogram::parse_notation(&r[..end])?, end))
    };
    let times = |r: &str| -> Result<(usize, usize), String> {
        let digits = r.len() - r.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let n = r[..digits]
            .parse()
            .map_err(|_| format!("bad repeat count at {r:?}"))?;
        Ok((n, digits))
    };
    while !rest.is_empty() {
        let token_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        if !rest.starts_with("{{") {
            let tok = &rest[..token_end];
            match tok {
                "_" => out.push(None),
                "stale" => out.push(Some(Histogram {
                    sum: f64::from_bits(STALE_NAN),
                    ..Histogram::default()
                })),
                _ => match tok.strip_prefix("_x") {
                    Some(n) => {
                        let n: usize = n.parse().map_err(|_| format!("bad repeat in {tok:?}"))?;
                        out.extend(std::iter::repeat_n(None, n));
                    }
                    None => return Err(format!("{tok:?} in a histogram series")),
                },
            }
            rest = rest[token_end..].trim_start();
            continue;
        }
        let (a, used) = take(rest)?;
        rest = &rest[used..];
        if let Some(r) = rest.strip_prefix("+{{").map(|_| &rest[1..]) {
            let (b, used) = take(r)?;
            let r = r[used..]
                .strip_prefix('x')
                .ok_or_else(|| format!("{{{{…}}}}+{{{{…}}}} needs xN after it at {r:?}"))?;
            let (n, used) = times(r)?;
            let mut cur = a.clone();
            out.push(Some(a));
            for _ in 0..n {
                let mut next = cur
                    .add(&b)
                    .map_err(|e| format!("{{{{…}}}}+{{{{…}}}}: {e}"))?;
                next.reset = b.reset;
                out.push(Some(next.clone()));
                cur = next;
            }
            rest = r[used..].trim_start();
        } else if let Some(r) = rest.strip_prefix('x') {
            let (n, used) = times(r)?;
            out.extend(std::iter::repeat_n(Some(a), n + 1));
            rest = r[used..].trim_start();
        } else {
            out.push(Some(a));
            rest = rest.trim_start();
        }
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
