//! Parsing PromQL text, with a bound on how deep it nests.
//!
//! promql-parser and the engine recurse once per level of the expression
//! tree. Prometheus has no limit (Go stacks grow to 1 GB); a Rust thread's
//! stack does not grow, so a query of 30,000 nested brackets or a chain of
//! 30,000 `or`s overflowed it and aborted the collector. Every place Keel
//! parses PromQL (API, rules, dashboards, rule unit tests) goes through
//! [`parse`], which measures the text before the parser sees it.

use promql_parser::parser::{self, Expr};
use promql_parser::util::{ExprVisitor, walk_expr};

use keel_series::Matcher;

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

/// Every vector selector of an expression, as matcher sets.
struct Selectors(Vec<Vec<Matcher>>);

impl ExprVisitor for Selectors {
    type Error = String;

    fn pre_visit(&mut self, e: &Expr) -> Result<bool, String> {
        let vs = match e {
            Expr::VectorSelector(vs) => vs,
            Expr::MatrixSelector(ms) => &ms.vs,
            _ => return Ok(true),
        };
        self.0
            .push(crate::eval::matchers(vs).map_err(|e| e.to_string())?);
        Ok(true)
    }
}

/// The matcher sets of every series selector in `text` (inside ranges,
/// functions and operations too), as Prometheus' `ExtractSelectors`
/// finds them for `query_exemplars`.
pub fn selectors(text: &str) -> Result<Vec<Vec<Matcher>>, String> {
    let expr = parse(text).map_err(|e| e.to_string())?;
    let mut v = Selectors(Vec::new());
    walk_expr(&mut v, &expr)?;
    Ok(v.0)
}

/// The byte offset where `text`'s bound on its tree depth passes
/// [`MAX_NESTING`], if it does.
///
/// The bound, bottom-up: every node of a PromQL tree takes at least one
/// token that opens a bracket or is an operator, so a bracketed group
/// nests at most one (its bracket) plus the operators at its own level
/// (a chain of them is that deep) plus its deepest group inside. While
/// scanning, the sum of that over the groups still open bounds the depth
/// of everything seen. Strings and comments are skipped as the lexer
/// skips them; matchers inside `{}` and durations inside `[]` are not
/// operators. Precedence is ignored, so `a == 1 or b == 2` counts three.
fn too_deep_at(text: &str) -> Option<usize> {
    let mut open = vec![Group {
        ops: 0,
        deepest: 0,
        bracket: b' ',
    }];
    // Σ (1 + ops + deepest) over `open`.
    let mut bound = 1usize;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let inside_matchers =
            matches!(open.last(), Some(g) if g.bracket == b'{' || g.bracket == b'[');
        let mut step = 1;
        match b {
            b'"' | b'\'' | b'`' => step = string_len(&bytes[i..]),
            // A comment runs to the end of the line (\n or \r, as the
            // lexer ends it).
            b'#' => {
                step = bytes[i..]
                    .iter()
                    .position(|&c| c == b'\n' || c == b'\r')
                    .unwrap_or(bytes.len() - i)
            }
            b'(' | b'[' | b'{' => {
                open.push(Group {
                    ops: 0,
                    deepest: 0,
                    bracket: b,
                });
                bound += 1;
            }
            b')' | b']' | b'}' => {
                if open.len() > 1
                    && let Some(g) = open.pop()
                {
                    let depth = 1 + g.ops + g.deepest;
                    bound -= depth;
                    if let Some(parent) = open.last_mut()
                        && depth > parent.deepest
                    {
                        bound += depth - parent.deepest;
                        parent.deepest = depth;
                    }
                }
            }
            _ if inside_matchers => {}
            b'+' | b'-' | b'*' | b'/' | b'%' | b'^' | b'<' | b'>' | b'=' | b'!' => {
                // A two-byte operator (==, !=, >=, <=) is one.
                if matches!(bytes.get(i + 1), Some(b'=')) {
                    step = 2;
                }
                add_operator(&mut open, &mut bound);
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
                    add_operator(&mut open, &mut bound);
                }
            }
            _ => {}
        }
        if bound > MAX_NESTING {
            return Some(i);
        }
        i += step.max(1);
    }
    None
}

/// An open group: operators at its level, its deepest closed group
/// inside, and the bracket that opened it.
struct Group {
    ops: usize,
    deepest: usize,
    bracket: u8,
}

/// Count one operator at the innermost open group.
fn add_operator(open: &mut [Group], bound: &mut usize) {
    if let Some(g) = open.last_mut() {
        g.ops += 1;
        *bound += 1;
    }
}

/// Bytes of the string literal at the start of `s` (to its closing quote,
/// a backslash escaping the next byte in every kind of string, as the
/// lexer reads them; to the end when it is not closed: the parser
/// reports that).
fn string_len(s: &[u8]) -> usize {
    let quote = s[0];
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 2,
            c if c == quote => return i + 1,
            _ => i += 1,
        }
    }
    s.len()
}

#[cfg(test)]
mod tests {

    #[test]
    fn selectors_inside_ranges_functions_and_operations_are_found() {
        let sets = selectors(
            "histogram_quantile(0.99, sum by (le) (rate(lat_bucket{job=\"a\"}[5m]))) > on() up",
        )
        .expect("parses");
        let named: Vec<Vec<(String, String)>> = sets
            .iter()
            .map(|ms| {
                let mut v: Vec<(String, String)> = ms
                    .iter()
                    .map(|m| match m {
                        Matcher::Equal(n, v) => (n.clone(), v.clone()),
                        other => (other.name().to_owned(), "?".into()),
                    })
                    .collect();
                v.sort();
                v
            })
            .collect();
        let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        assert_eq!(
            named,
            vec![
                vec![pair("__name__", "lat_bucket"), pair("job", "a")],
                vec![pair("__name__", "up")]
            ]
        );
        assert!(selectors("").is_err());
        assert!(selectors("sum(").is_err());
    }
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

    /// Ways past a scan that counted only what was open (a review found
    /// them): operators after a closed group, a comment ended by `\r`,
    /// an escaped backtick.
    #[test]
    fn operators_after_a_group_comments_and_escapes_are_counted() {
        // Each level holds the one below and 40 operators after it:
        // depth 40 × 41 with never more than 41 brackets open at once.
        let mut q = "x".to_owned();
        for _ in 0..40 {
            q = format!("({q}{})", " + x".repeat(40));
        }
        assert!(too_deep_at(&q).is_some(), "depth ~1,640");
        let deep = format!("{}1{}", "(".repeat(2_000), ")".repeat(2_000));
        assert!(too_deep_at(&format!("#\r{deep}")).is_some());
        assert!(too_deep_at(&format!("#\n{deep}")).is_some());
        let escaped = format!("label_replace(up,\"a\",\"b\",\"c\",`\\`\"`) + {deep}");
        assert!(too_deep_at(&escaped).is_some());
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
