//! `--assert` expectations, checked against a replay's outcome so that
//! replays run in CI like tests. Forms (case-insensitive):
//!
//! - `P0 within 60s`: a P0 page within 60 s of the incident's start
//!   (`P0 page within 1m` too; P2: a ticket)
//! - `no P1 page`
//! - `at most 3 scaling actions`, `at least 1 scaling action`,
//!   `no scaling`, `scaling within 45s`
//! - `at most 2 pages`, `at most 1 P0 page`
//! - `alert HighErrorRate fires`, `alert X fires within 5m`,
//!   `alert X does not fire`
//! - `failover within 10s`, `no failover`
//!
//! The incident's start is the time the bundle names (the P0 an automatic
//! bundle was recorded for), else the window's start.

use keel_alerting::notify::Kind;

use crate::report::{offset, span};
use crate::run::Outcome;

/// One expectation.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// A page of this severity within this long of the start.
    PageWithin(String, i64),
    /// No page of this severity.
    NoPage(String),
    /// Scaling actions: at most (true) or at least (false) N.
    Scaling(bool, usize),
    /// A scaling action within this long of the start.
    ScalingWithin(i64),
    /// Pages (of a severity, or any): at most N.
    AtMostPages(Option<String>, usize),
    /// The alert fires (within this long of the start, if given).
    Fires(String, Option<i64>),
    /// The alert never fires.
    NeverFires(String),
    /// A failover decided within this long of the start.
    FailoverWithin(i64),
    /// No failover decided.
    NoFailover,
}

const FORMS: &str = "\"P0 within 60s\", \"no P1 page\", \"at most 3 scaling actions\", \"at least 1 scaling action\", \"no scaling\", \"scaling within 45s\", \"at most 2 pages\", \"at most 1 P0 page\", \"alert NAME fires [within 5m]\", \"alert NAME does not fire\", \"failover within 10s\", \"no failover\"";

fn severity(w: &str) -> Option<String> {
    let u = w.to_ascii_uppercase();
    matches!(u.as_str(), "P0" | "P1" | "P2").then_some(u)
}

fn duration(w: &str, text: &str) -> Result<i64, String> {
    humantime::parse_duration(w)
        .map(|d| d.as_millis() as i64)
        .map_err(|e| format!("--assert {text:?}: {w:?} is not a duration ({e})"))
}

impl Expect {
    /// Parse one expectation; the error names it and the forms accepted.
    pub fn parse(text: &str) -> Result<Self, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let lower: Vec<String> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
        let l: Vec<&str> = lower.iter().map(String::as_str).collect();
        let count = |w: &str| {
            w.parse::<usize>()
                .map_err(|_| format!("--assert {text:?}: {w:?} is not a count"))
        };
        let bad = || format!("--assert {text:?}: not understood; write one of {FORMS}");
        match l.as_slice() {
            [sev, "within", d] | [sev, "page", "within", d] if severity(sev).is_some() => Ok(
                Expect::PageWithin(severity(sev).unwrap_or_default(), duration(d, text)?),
            ),
            ["no", sev, "page" | "pages"] if severity(sev).is_some() => {
                Ok(Expect::NoPage(severity(sev).unwrap_or_default()))
            }
            [
                "at",
                m @ ("most" | "least"),
                n,
                "scaling",
                "action" | "actions",
            ] => Ok(Expect::Scaling(*m == "most", count(n)?)),
            ["no", "scaling"] => Ok(Expect::Scaling(true, 0)),
            ["scaling", "within", d] => Ok(Expect::ScalingWithin(duration(d, text)?)),
            ["at", "most", n, "page" | "pages"] => Ok(Expect::AtMostPages(None, count(n)?)),
            ["at", "most", n, sev, "page" | "pages"] if severity(sev).is_some() => {
                Ok(Expect::AtMostPages(severity(sev), count(n)?))
            }
            ["alert", _, "fires"] => Ok(Expect::Fires(words[1].to_owned(), None)),
            ["alert", _, "fires", "within", d] => {
                Ok(Expect::Fires(words[1].to_owned(), Some(duration(d, text)?)))
            }
            ["alert", _, "does", "not", "fire"] => Ok(Expect::NeverFires(words[1].to_owned())),
            ["failover", "within", d] => Ok(Expect::FailoverWithin(duration(d, text)?)),
            ["no", "failover" | "failovers"] => Ok(Expect::NoFailover),
            _ => Err(bad()),
        }
    }

    /// Check it: `Err(why)` naming what happened instead.
    pub fn check<'a>(&'a self, outcome: &'a Outcome, start_ms: i64) -> Result<(), String> {
        let firing = |sev: &'a str| {
            outcome
                .pages
                .iter()
                .filter(move |p| p.kind == Kind::Firing && p.severity.as_str() == sev)
        };
        match self {
            Expect::PageWithin(sev, d) => match firing(sev).next() {
                Some(p) if p.at_ms - start_ms <= *d => Ok(()),
                Some(p) => Err(format!(
                    "the first {sev} page came {} after the start ({}), later than {}",
                    span(p.at_ms - start_ms),
                    offset(start_ms, p.at_ms),
                    span(*d)
                )),
                None => Err(format!("no {sev} page at all")),
            },
            Expect::NoPage(sev) => {
                let n = firing(sev).count();
                match firing(sev).next() {
                    None => Ok(()),
                    Some(p) => Err(format!(
                        "{n} {sev} page(s), the first at {} ({})",
                        offset(start_ms, p.at_ms),
                        p.alertnames().join(",")
                    )),
                }
            }
            Expect::Scaling(most, n) => {
                let got = outcome.scaling.len();
                if (*most && got <= *n) || (!*most && got >= *n) {
                    Ok(())
                } else {
                    Err(format!("{got} scaling action(s)"))
                }
            }
            Expect::ScalingWithin(d) => {
                match outcome.scaling.iter().find(|s| s.at_ms >= start_ms) {
                    Some(s) if s.at_ms - start_ms <= *d => Ok(()),
                    Some(s) => Err(format!(
                        "the first scaling action ({} to {}) came {} after the start, later than {}",
                        s.policy,
                        s.to,
                        span(s.at_ms - start_ms),
                        span(*d)
                    )),
                    None => Err("no scaling action after the start".into()),
                }
            }
            Expect::AtMostPages(sev, n) => {
                let got = outcome
                    .pages
                    .iter()
                    .filter(|p| p.kind == Kind::Firing)
                    .filter(|p| sev.as_deref().is_none_or(|s| p.severity.as_str() == s))
                    .count();
                if got <= *n {
                    Ok(())
                } else {
                    Err(format!("{got} page(s)"))
                }
            }
            Expect::Fires(name, within) => {
                let first = outcome
                    .alerts
                    .iter()
                    .find(|a| a.rule == *name && a.to == "firing");
                match (first, within) {
                    (None, _) => Err(format!("{name} never fired")),
                    (Some(a), Some(d)) if a.at_ms - start_ms > *d => Err(format!(
                        "{name} first fired {} after the start, later than {}",
                        span(a.at_ms - start_ms),
                        span(*d)
                    )),
                    _ => Ok(()),
                }
            }
            Expect::FailoverWithin(d) => match outcome.failover.decided.first() {
                Some(f) if f.at_ms - start_ms <= *d => Ok(()),
                Some(f) => Err(format!(
                    "the first failover ({}) was decided {} after the start, later than {}",
                    f.target,
                    span(f.at_ms - start_ms),
                    span(*d)
                )),
                None => Err("no failover was decided".into()),
            },
            Expect::NoFailover => match outcome.failover.decided.first() {
                None => Ok(()),
                Some(f) => Err(format!(
                    "{} failed over at {} (promote {})",
                    f.target,
                    offset(start_ms, f.at_ms),
                    f.promote
                )),
            },
            Expect::NeverFires(name) => match outcome
                .alerts
                .iter()
                .find(|a| a.rule == *name && a.to == "firing")
            {
                None => Ok(()),
                Some(a) => Err(format!("{name} fired at {}", offset(start_ms, a.at_ms))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations_parse_and_bad_ones_name_themselves() {
        assert_eq!(
            Expect::parse("P0 within 60s"),
            Ok(Expect::PageWithin("P0".into(), 60_000))
        );
        assert_eq!(Expect::parse("no p1 page"), Ok(Expect::NoPage("P1".into())));
        assert_eq!(
            Expect::parse("at most 3 scaling actions"),
            Ok(Expect::Scaling(true, 3))
        );
        assert_eq!(Expect::parse("no scaling"), Ok(Expect::Scaling(true, 0)));
        assert_eq!(
            Expect::parse("scaling within 45s"),
            Ok(Expect::ScalingWithin(45_000))
        );
        assert_eq!(
            Expect::parse("alert HighErrorRate fires within 2m"),
            Ok(Expect::Fires("HighErrorRate".into(), Some(120_000)))
        );
        let e = Expect::parse("P0 soon").expect_err("bad");
        assert!(
            e.contains("\"P0 soon\"") && e.contains("P0 within 60s"),
            "{e}"
        );
        let e = Expect::parse("P0 within ages").expect_err("bad");
        assert!(e.contains("\"ages\" is not a duration"), "{e}");
    }

    #[test]
    fn a_failed_expectation_says_what_happened() {
        let o = Outcome::default();
        let e = Expect::PageWithin("P0".into(), 1000)
            .check(&o, 0)
            .expect_err("no page");
        assert_eq!(e, "no P0 page at all");
        assert!(Expect::NoPage("P0".into()).check(&o, 0).is_ok());
        assert!(Expect::Scaling(true, 0).check(&o, 0).is_ok());
        assert!(Expect::Scaling(false, 1).check(&o, 0).is_err());
    }

    #[test]
    fn scaling_within_counts_only_actions_after_the_start() {
        let scale = |at_ms| crate::run::Scaling {
            at_ms,
            policy: "web".into(),
            from: 2,
            to: 3,
            explanation: String::new(),
        };
        let mut o = Outcome {
            scaling: vec![scale(5_000)],
            ..Outcome::default()
        };
        let e = Expect::ScalingWithin(45_000).check(&o, 10_000).unwrap_err();
        assert_eq!(
            e, "no scaling action after the start",
            "one before it does not count"
        );
        o.scaling.push(scale(60_000));
        let e = Expect::ScalingWithin(45_000).check(&o, 10_000).unwrap_err();
        assert!(
            e.contains("came 50s after the start, later than 45s"),
            "{e}"
        );
        assert!(Expect::ScalingWithin(50_000).check(&o, 10_000).is_ok());
    }
}
