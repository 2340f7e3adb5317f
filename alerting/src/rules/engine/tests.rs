use super::*;
use crate::rules::file::{SeverityMapping, parse};
use std::sync::{Mutex, MutexGuard};

/// A `RefCell` look-alike that is `Sync`, as sources must be.
#[derive(Default)]
struct RefCell<T>(Mutex<T>);

impl<T> RefCell<T> {
    fn new(v: T) -> Self {
        Self(Mutex::new(v))
    }
    fn borrow(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn borrow_mut(&self) -> MutexGuard<'_, T> {
        self.borrow()
    }
}
use std::path::Path;

/// A source whose PromQL answer is set by the test.
#[derive(Default)]
struct Fake {
    now: RefCell<Samples>,
    recorded: RefCell<Recorded>,
    logs: RefCell<u64>,
}

impl Source for Fake {
    fn instant(&self, _: &str, _: i64) -> Result<Samples, String> {
        Ok(self.now.borrow().clone())
    }
    fn count_logs(&self, _: &str, _: i64, _: i64) -> Result<u64, String> {
        Ok(*self.logs.borrow())
    }
    fn record(&self, s: Recorded) -> Result<(), String> {
        self.recorded.borrow_mut().extend(s);
        Ok(())
    }
}

fn group(rules: &str) -> GroupState {
    let text = format!("groups:\n- name: g\n  rules:\n{rules}");
    let g = parse(
        Path::new("r.yml"),
        &text,
        Duration::from_secs(15),
        &SeverityMapping::default(),
    )
    .expect("rules load");
    GroupState::new(g.into_iter().next().expect("a group"))
}

fn series(instance: &str, v: f64) -> (BTreeMap<String, String>, f64) {
    (
        BTreeMap::from([("instance".to_owned(), instance.to_owned())]),
        v,
    )
}

fn states(g: &GroupState) -> Vec<(String, State)> {
    g.alerts()
        .map(|(_, a)| {
            (
                a.labels.get("instance").cloned().unwrap_or_default(),
                a.state,
            )
        })
        .collect()
}

#[test]
fn rules_spread_over_threads_still_see_the_recording_rules_before_them() {
    /// Answers `r > 0` only once `r` was recorded; the rest always.
    #[derive(Default)]
    struct Ordered {
        recorded: RefCell<bool>,
        early: RefCell<usize>,
    }
    impl Source for Ordered {
        fn instant(&self, expr: &str, _: i64) -> Result<Samples, String> {
            if expr.starts_with("r ") && !*self.recorded.borrow() {
                *self.early.borrow_mut() += 1;
                return Ok(vec![]);
            }
            Ok(vec![series("a", 1.0)])
        }
        fn count_logs(&self, _: &str, _: i64, _: i64) -> Result<u64, String> {
            Ok(0)
        }
        fn record(&self, _: Recorded) -> Result<(), String> {
            *self.recorded.borrow_mut() = true;
            Ok(())
        }
    }
    let n = 3 * RULES_PER_THREAD;
    let mut rules = String::new();
    for k in 0..n {
        rules.push_str(&format!(
            "  - alert: Before{k}\n    expr: x > 0\n    severity: P2\n"
        ));
    }
    rules.push_str("  - record: r\n    expr: x\n");
    for k in 0..n {
        rules.push_str(&format!(
            "  - alert: After{k}\n    expr: r > 0\n    severity: P2\n"
        ));
    }
    let mut g = group(&rules);
    let src = Ordered::default();
    g.eval(&src, 1_000, &BTreeMap::new());
    assert_eq!(*src.early.borrow(), 0, "a rule after `r` ran before it");
    assert_eq!(g.alerts().count(), 2 * n, "every rule ran once");
    assert!(
        g.health
            .iter()
            .all(|h| h.at_ms == 1_000 && h.error.is_none())
    );
}

#[test]
fn pending_then_firing_exactly_at_for_then_resolved_and_kept_15_minutes() {
    let mut g = group(
        "  - alert: High\n    expr: x > 1\n    for: 1m\n    severity: P1\n    labels: {team: '{{ $labels.instance }}-team'}\n    annotations: {summary: '{{ $labels.instance }} at {{ $value }}'}\n",
    );
    let src = Fake::default();
    let ext = BTreeMap::new();
    *src.now.borrow_mut() = vec![series("a", 5.0)];
    g.eval(&src, 0, &ext);
    assert_eq!(states(&g), vec![("a".into(), State::Pending)]);
    g.eval(&src, 59_999, &ext);
    assert_eq!(
        states(&g),
        vec![("a".into(), State::Pending)],
        "not before `for`"
    );
    *src.now.borrow_mut() = vec![series("a", 7.0)];
    g.eval(&src, 60_000, &ext);
    let (_, a) = g.alerts().next().expect("alert");
    assert_eq!(
        (a.state, a.fired_at_ms, a.active_at_ms),
        (State::Firing, Some(60_000), 0)
    );
    assert_eq!(a.annotations["summary"], "a at 7");
    assert_eq!(a.labels["team"], "a-team");
    assert_eq!(a.labels["alertname"], "High");
    assert_eq!(a.labels["severity"], "P1");
    *src.now.borrow_mut() = vec![];
    g.eval(&src, 75_000, &ext);
    let (_, a) = g.alerts().next().expect("alert");
    assert_eq!((a.state, a.resolved_at_ms), (State::Resolved, Some(75_000)));
    g.eval(&src, 75_000 + 15 * 60_000, &ext);
    assert_eq!(states(&g).len(), 1, "kept for 15 minutes");
    g.eval(&src, 75_001 + 15 * 60_000, &ext);
    assert!(states(&g).is_empty(), "then forgotten");
}

#[test]
fn a_pending_alert_that_clears_is_dropped_and_for_zero_fires_at_once() {
    let mut g = group(
        "  - alert: A\n    expr: x\n    for: 5m\n    severity: P0\n  - alert: B\n    expr: x\n    severity: P0\n",
    );
    let src = Fake::default();
    let ext = BTreeMap::new();
    *src.now.borrow_mut() = vec![series("a", 1.0)];
    g.eval(&src, 0, &ext);
    let got: Vec<(String, State)> = g.alerts().map(|(r, a)| (r.name.clone(), a.state)).collect();
    assert_eq!(
        got,
        vec![("A".into(), State::Pending), ("B".into(), State::Firing)]
    );
    *src.now.borrow_mut() = vec![];
    g.eval(&src, 15_000, &ext);
    let got: Vec<(String, State)> = g.alerts().map(|(r, a)| (r.name.clone(), a.state)).collect();
    assert_eq!(
        got,
        vec![("B".into(), State::Resolved)],
        "the pending one is gone"
    );
    // Back again: a new alert, active from now.
    *src.now.borrow_mut() = vec![series("a", 1.0)];
    g.eval(&src, 30_000, &ext);
    let b = g
        .alerts()
        .find(|(r, _)| r.name == "B")
        .map(|(_, a)| a.clone())
        .expect("B");
    assert_eq!((b.state, b.active_at_ms), (State::Firing, 30_000));
}

#[test]
fn keep_firing_for_holds_a_cleared_alert_then_resolves_it() {
    let mut g = group("  - alert: A\n    expr: x\n    keep_firing_for: 1m\n    severity: P0\n");
    let src = Fake::default();
    let ext = BTreeMap::new();
    *src.now.borrow_mut() = vec![series("a", 1.0)];
    g.eval(&src, 0, &ext);
    *src.now.borrow_mut() = vec![];
    g.eval(&src, 15_000, &ext);
    g.eval(&src, 74_999, &ext);
    assert_eq!(
        states(&g),
        vec![("a".into(), State::Firing)],
        "held 1m from when it cleared"
    );
    g.eval(&src, 75_000, &ext);
    assert_eq!(states(&g), vec![("a".into(), State::Resolved)]);
}

#[test]
fn a_resolve_threshold_holds_a_firing_alert_until_it_is_crossed_too() {
    let mut g =
        group("  - alert: A\n    expr: x > 10\n    resolve_expr: x > 5\n    severity: P0\n");
    // The fake answers every query alike: "x > 10" and "x > 5" both
    // hold while the sample is there; then only the resolve one.
    struct Two {
        high: RefCell<bool>,
        low: RefCell<bool>,
    }
    impl Source for Two {
        fn instant(&self, e: &str, _: i64) -> Result<Samples, String> {
            let on = if e.contains("> 10") {
                *self.high.borrow()
            } else {
                *self.low.borrow()
            };
            Ok(if on { vec![series("a", 1.0)] } else { vec![] })
        }
        fn count_logs(&self, _: &str, _: i64, _: i64) -> Result<u64, String> {
            Ok(0)
        }
        fn record(&self, _: Recorded) -> Result<(), String> {
            Ok(())
        }
    }
    let src = Two {
        high: RefCell::new(true),
        low: RefCell::new(true),
    };
    let ext = BTreeMap::new();
    g.eval(&src, 0, &ext);
    *src.high.borrow_mut() = false;
    g.eval(&src, 15_000, &ext);
    assert_eq!(
        states(&g),
        vec![("a".into(), State::Firing)],
        "between the thresholds: held"
    );
    *src.low.borrow_mut() = false;
    g.eval(&src, 30_000, &ext);
    assert_eq!(states(&g), vec![("a".into(), State::Resolved)]);
}

#[test]
fn a_flapping_alert_is_held_firing_and_marked_until_quiet() {
    let mut g = group(
        "  - alert: A\n    expr: x\n    severity: P0\n    flap_detection: {max_changes: 3, window: 10m}\n",
    );
    let src = Fake::default();
    let ext = BTreeMap::new();
    let on = |v: bool| *src.now.borrow_mut() = if v { vec![series("a", 1.0)] } else { vec![] };
    let mut t = 0;
    let mut step = |v: bool, g: &mut GroupState| {
        on(v);
        g.eval(&src, t, &ext);
        t += 15_000;
        g.alerts().next().map(|(_, a)| (a.state, a.flapping))
    };
    // fire, resolve, fire: three changes.
    assert_eq!(step(true, &mut g), Some((State::Firing, false)));
    assert_eq!(step(false, &mut g), Some((State::Resolved, false)));
    assert_eq!(step(true, &mut g), Some((State::Firing, false)));
    // The next resolution would be the fourth: held, flapping.
    assert_eq!(step(false, &mut g), Some((State::Firing, true)));
    assert_eq!(step(true, &mut g), Some((State::Firing, true)));
    // Quiet (false) for a whole window: resolved at last.
    let mut last = None;
    for _ in 0..41 {
        last = step(false, &mut g);
    }
    assert_eq!(last, Some((State::Resolved, false)));
}

#[test]
fn recording_rules_write_their_series_and_log_rules_count() {
    let mut g = group(
        "  - record: job:x:sum\n    expr: sum(x)\n    labels: {env: prod}\n  - alert: Timeouts\n    logs: {query: 'timeout', window: 5m, above: 10}\n    severity: P2\n",
    );
    let src = Fake::default();
    let ext = BTreeMap::new();
    *src.now.borrow_mut() = vec![series("a", 3.0)];
    *src.logs.borrow_mut() = 10;
    g.eval(&src, 1_000, &ext);
    let rec = src.recorded.borrow().clone();
    assert_eq!(rec.len(), 1);
    assert_eq!(
        (
            rec[0].0["__name__"].as_str(),
            rec[0].0["env"].as_str(),
            rec[0].1,
            rec[0].2
        ),
        ("job:x:sum", "prod", 1_000, 3.0)
    );
    assert_eq!(g.alerts().count(), 0, "10 is not above 10");
    *src.logs.borrow_mut() = 11;
    g.eval(&src, 2_000, &ext);
    let (_, a) = g.alerts().next().expect("fires");
    assert_eq!((a.state, a.value), (State::Firing, 11.0));
}

#[test]
fn a_rule_that_panics_is_marked_err_and_the_others_keep_firing() {
    /// Panics on the rule reading `boom`; answers the rest.
    struct Boom;
    impl Source for Boom {
        fn instant(&self, expr: &str, _: i64) -> Result<Samples, String> {
            if expr.contains("boom") {
                panic!("histogram bounds merged to one");
            }
            Ok(vec![series("a", 5.0)])
        }
        fn count_logs(&self, _: &str, _: i64, _: i64) -> Result<u64, String> {
            Ok(0)
        }
        fn record(&self, _: Recorded) -> Result<(), String> {
            Ok(())
        }
    }
    let mut g = group(
        "  - alert: Before\n    expr: x > 1\n    severity: P0\n  - alert: Broken\n    expr: boom > 1\n    severity: P0\n  - alert: After\n    expr: y > 1\n    severity: P0\n",
    );
    let before = guard::panics();
    for t in [0, 15_000] {
        g.eval(&Boom, t, &BTreeMap::new());
    }
    let firing: Vec<&str> = g
        .alerts()
        .filter(|(_, a)| a.state == State::Firing)
        .map(|(_, a)| a.labels["alertname"].as_str())
        .collect();
    assert_eq!(firing, ["Before", "After"], "the rules on either side page");
    let broken = g.health[1].error.as_deref().unwrap_or_default();
    assert!(
        broken.starts_with(guard::PANIC) && broken.contains("histogram bounds merged"),
        "{broken}"
    );
    assert_eq!(g.health[1].at_ms, 15_000);
    assert_eq!((&g.health[0].error, &g.health[2].error), (&None, &None));
    assert!(guard::panics() >= before + 2, "each panic is counted");
}

#[test]
fn alerts_are_written_as_alerts_series_with_stale_markers_when_they_change() {
    let mut g = group("  - alert: High\n    expr: x > 1\n    for: 1m\n    severity: P1\n");
    let src = Fake::default();
    let ext = BTreeMap::new();
    let written = |src: &Fake, t: i64| -> Vec<(String, String, f64)> {
        let mut v: Vec<(String, String, f64)> = src
            .recorded
            .borrow()
            .iter()
            .filter(|(_, at, _)| *at == t)
            .map(|(l, _, v)| {
                (
                    l["__name__"].clone(),
                    l.get("alertstate").cloned().unwrap_or_default(),
                    *v,
                )
            })
            .collect();
        v.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        v
    };
    *src.now.borrow_mut() = vec![series("a", 5.0)];
    g.eval(&src, 10_000, &ext);
    assert_eq!(
        written(&src, 10_000),
        [
            ("ALERTS".into(), "pending".into(), 1.0),
            ("ALERTS_FOR_STATE".into(), String::new(), 10.0)
        ]
    );
    let labels = src.recorded.borrow()[0].0.clone();
    assert_eq!(
        (labels["alertname"].as_str(), labels["instance"].as_str()),
        ("High", "a")
    );
    g.eval(&src, 70_000, &ext);
    let fired = written(&src, 70_000);
    assert_eq!(fired.len(), 3, "{fired:?}");
    assert!(fired.contains(&("ALERTS".into(), "firing".into(), 1.0)));
    assert!(
        fired
            .iter()
            .any(|(n, s, v)| n == "ALERTS" && s == "pending" && keel_core::stale::is_stale(*v)),
        "the pending series ends with a staleness marker: {fired:?}"
    );
    assert!(fired.contains(&("ALERTS_FOR_STATE".into(), String::new(), 10.0)));
    // Resolved: both series end.
    *src.now.borrow_mut() = vec![];
    g.eval(&src, 85_000, &ext);
    let ended = written(&src, 85_000);
    assert_eq!(ended.len(), 2, "{ended:?}");
    assert!(
        ended.iter().all(|(_, _, v)| keel_core::stale::is_stale(*v)),
        "{ended:?}"
    );
    g.eval(&src, 100_000, &ext);
    assert!(written(&src, 100_000).is_empty(), "nothing more once ended");
}
