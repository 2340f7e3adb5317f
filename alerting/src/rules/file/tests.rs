use super::*;

fn load_text(text: &str) -> Result<Vec<Group>, RuleErrors> {
    parse(
        Path::new("r.yml"),
        text,
        Duration::from_secs(15),
        &SeverityMapping::default(),
    )
}

#[test]
fn a_prometheus_rule_file_loads_with_severities_mapped() {
    let g = load_text(
        "groups:\n- name: g\n  interval: 30s\n  rules:\n  - alert: Down\n    expr: up == 0\n    for: 1m\n    labels: {severity: critical}\n    annotations: {summary: '{{ $labels.instance }} is down'}\n  - alert: Slow\n    expr: x > 1\n    severity: p1\n  - record: job:x:sum\n    expr: sum by (job) (x)\n",
    )
    .expect("loads");
    assert_eq!(g[0].interval, Duration::from_secs(30));
    let Rule::Alert(a) = &g[0].rules[0] else {
        panic!("alert")
    };
    assert_eq!(
        (a.severity, a.for_),
        (Severity::P0, Duration::from_secs(60))
    );
    assert_eq!(a.source, "r.yml:5");
    let Rule::Alert(b) = &g[0].rules[1] else {
        panic!("alert")
    };
    assert_eq!(b.severity, Severity::P1);
    assert!(matches!(&g[0].rules[2], Rule::Record { name, .. } if name == "job:x:sum"));
}

#[test]
fn every_problem_is_reported_with_file_line_and_column() {
    let err = load_text(
        "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: sum(rate(x[5m])\n    severity: P0\n  - alert: B\n    expr: up == 0\n  - alert: C\n    expr: up\n    for: 5 minutes\n    severity: P9\n  - alert: D\n    expr: up\n    labels: {severity: loud}\n    annotations: {s: '{{ $value'}\n",
    )
    .unwrap_err();
    let p = &err.problems;
    assert!(
        p.iter().any(|m| m.starts_with("r.yml:5:11: expr:")),
        "{p:#?}"
    );
    assert!(
        p.iter()
            .any(|m| m.starts_with("r.yml:7:") && m.contains("no severity")),
        "{p:#?}"
    );
    assert!(
        p.iter()
            .any(|m| m.starts_with("r.yml:11:") && m.contains("for")),
        "{p:#?}"
    );
    assert!(
        p.iter()
            .any(|m| m.starts_with("r.yml:12:") && m.contains("P9")),
        "{p:#?}"
    );
    assert!(
        p.iter()
            .any(|m| m.starts_with("r.yml:15:") && m.contains("loud")),
        "{p:#?}"
    );
    assert!(
        p.iter()
            .any(|m| m.starts_with("r.yml:16:") && m.contains("annotations.s")),
        "{p:#?}"
    );
    assert_eq!(p.len(), 6, "{p:#?}");
    let typo = load_text("groups:\n- name: g\n  rules:\n  - alert: A\n    exp: up\n").unwrap_err();
    assert!(typo.problems[0].starts_with("r.yml:5:"), "{typo}");
}
