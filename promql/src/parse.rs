//! Parsing PromQL text, with a bound on how deep it nests.
//!
//! promql-parser and the engine recurse once per level of the expression
//! tree. Prometheus has no limit (Go stacks grow to 1 GB); a Rust thread's
//! stack does not grow, so a query of 30,000 nested brackets or a chain of
//! 30,000 `or`s overflowed it and aborted the collector. Every place Keel
//! parses PromQL (API, rules, dashboards, rule unit tests) goes through
//! [`parse`], which measures the text before the parser sees it.

use promql_parser::parser::{self, Expr};

/// Deepest expression tree a query may build: brackets plus operators
/// chained at one level. Real queries stay under 50; 1,000 keeps the
/// parser under a tenth of a 2 MiB thread stack even in a debug build.
pub const MAX_NESTING: usize = 1_000;

/// Parse `text`, refusing it (with the byte offset where it got too deep)
/// when its expression tree could nest deeper than [`MAX_NESTING`].
pub fn parse(text: &str) -> Result<Expr, String> {
    if let Some(at) = too_deep_at(text) {
        return Err(format!(
            "the query nests deeper than {MAX_NESTING} levels of brackets and \
             operators (at byte {at}); split it or use recording rules"
        ));
    }
    parser::parse(text)
}

/// The byte offset where `text`'s bound on its tree depth passes
/// [`MAX_NESTING`], if it does.
///
/// The bound: every node of a PromQL tree takes at least one token that
/// opens a bracket or is an operator, so along any path the depth is at
/// most, for every bracket still open (and the top level), one plus the
/// operators met so far inside it. Strings and comments are skipped;
/// matchers inside `{}` and durations inside `[]` are not operators.
fn too_deep_at(text: &str) -> Option<usize> {
    // Operators seen at each open level (the top level first) and the
    // bracket that opened it.
    let mut levels: Vec<(usize, u8)> = vec![(0, b' ')];
    let mut depth = 1usize;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let inside_matchers = matches!(levels.last(), Some((_, b'{' | b'[')));
        let mut step = 1;
        match b {
            b'"' | b'\'' | b'`' => {
                step = string_len(&bytes[i..]);
            }
            b'#' => {
                step = bytes[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .unwrap_or(bytes.len() - i);
            }
            b'(' | b'[' | b'{' => {
                levels.push((0, b));
                depth += 1;
            }
            b')' | b']' | b'}' => {
                if levels.len() > 1
                    && let Some((ops, _)) = levels.pop()
                {
                    depth -= 1 + ops;
                }
            }
            _ if inside_matchers => {}
            b'+' | b'-' | b'*' | b'/' | b'%' | b'^' | b'<' | b'>' | b'=' | b'!' => {
                // A two-byte operator (==, !=, >=, <=) is one.
                if matches!(bytes.get(i + 1), Some(b'=')) {
                    step = 2;
                }
                add_operator(&mut levels, &mut depth);
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                step = bytes[i..]
                    .iter()
                    .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_' || *c == b':'))
                    .unwrap_or(bytes.len() - i);
                let word = &text[i..i + step];
                if ["and", "or", "unless", "atan2"]
                    .iter()
                    .any(|k| word.eq_ignore_ascii_case(k))
                {
                    add_operator(&mut levels, &mut depth);
                }
            }
            _ => {}
        }
        if depth > MAX_NESTING {
            return Some(i);
        }
        i += step.max(1);
    }
    None
}

/// Count one operator at the innermost open level.
fn add_operator(levels: &mut [(usize, u8)], depth: &mut usize) {
    if let Some((ops, _)) = levels.last_mut() {
        *ops += 1;
        *depth += 1;
    }
}

/// Bytes of the string literal at the start of `s` (to its closing quote,
/// escapes skipped; to the end when it is not closed: the parser reports
/// that).
fn string_len(s: &[u8]) -> usize {
    let quote = s[0];
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'\\' if quote != b'`' => i += 2,
            c if c == quote => return i + 1,
            _ => i += 1,
        }
    }
    s.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_of_every_shape_under_the_bound_parse() {
        for q in [
            "sum by (job) (rate(http_requests_total{code=~\"5..\", path!=\"/x\"}[5m])) / sum by (job) (rate(http_requests_total[5m])) > 0.05",
            "histogram_quantile(0.95, sum by (le) (rate(h_bucket[5m:1m] offset 1h)))",
            "a or b unless c and d",
            "-1 ^ 2 ^ 3",
            "label_replace(up, \"x\", \"$1\", \"job\", \"(.*)((((\")",
            "up # a comment with ((((( brackets\n + 1",
        ] {
            assert!(parse(q).is_ok(), "{q}: {:?}", parse(q).err());
        }
    }

    #[test]
    fn the_bound_counts_brackets_and_chained_operators() {
        let parens = |n: usize| format!("{}1{}", "(".repeat(n), ")".repeat(n));
        // The top level counts one: n brackets make a depth of n + 1.
        assert!(too_deep_at(&parens(MAX_NESTING - 1)).is_none());
        assert_eq!(too_deep_at(&parens(MAX_NESTING)), Some(MAX_NESTING - 1));
        let chain = |n: usize| vec!["m"; n + 1].join(" or ");
        assert!(too_deep_at(&chain(MAX_NESTING - 1)).is_none());
        assert!(too_deep_at(&chain(MAX_NESTING)).is_some());
        // Many shallow terms side by side are not deep.
        let wide = vec!["sum(rate(m[5m]))"; 400].join(" + ");
        assert!(too_deep_at(&wide).is_none(), "400 terms: depth ~402");
        // Brackets inside strings, comments and matchers do not count.
        let quoted = format!("m{{a=\"{}\"}}", "(".repeat(5_000));
        assert!(too_deep_at(&quoted).is_none());
    }

    /// The queries that overflowed a 2 MiB thread (30,000 brackets, a
    /// chain of 30,000 `or`s) are refused with where, on such a thread.
    #[test]
    fn queries_that_overflowed_the_stack_are_refused_naming_the_place() {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(|| {
                let deep = format!("{}1{}", "(".repeat(30_000), ")".repeat(30_000));
                let err = parse(&deep).expect_err("too deep");
                assert!(
                    err.contains("deeper than 1000") && err.contains("at byte 999"),
                    "{err}"
                );
                let chain = vec!["m"; 30_000].join(" or ");
                let err = parse(&chain).expect_err("too deep");
                assert!(err.contains("deeper than 1000"), "{err}");
            })
            .expect("thread")
            .join()
            .expect("no overflow");
    }
}
