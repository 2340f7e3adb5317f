use super::*;

#[test]
fn the_recorded_outcome_and_first_response_read_what_happened_live() {
    use keel_incident::bundle::{Config, Header};
    let ev = |at: i64, kind: &str, extra: serde_json::Value| {
        let mut e = serde_json::json!({"at_ms": at, "kind": kind, "subject": if kind == "scale" { "web" } else { "shop-db" }, "explanation": "why"});
        if let (Some(o), Some(x)) = (e.as_object_mut(), extra.as_object()) {
            o.extend(x.clone());
        }
        e
    };
    let bundle = Bundle {
        header: Header {
            name: "t".into(),
            from_ms: 0,
            to_ms: 100_000,
            recorded_at_ms: 0,
            reason: "test".into(),
            service: None,
            incident_ms: Some(10_000),
            lead_in_ms: 0,
            logs_query: None,
            no_spans: false,
            keel_version: "0".into(),
        },
        config: Config {
            rules: serde_json::Value::Null,
            notify: serde_json::Value::Null,
            controller: None,
        },
        files: Vec::new(),
        series: Vec::new(),
        logs: Vec::new(),
        spans: Vec::new(),
        marks: Vec::new(),
        events: vec![
            ev(
                5_000,
                "scale",
                serde_json::json!({"read_back": 3, "decision": {"current": 2}}),
            ),
            ev(
                20_000,
                "failover.detected",
                serde_json::json!({"decision": {"automatic": true, "first_failure_ms": 19_000, "detection_ms": 700}}),
            ),
            ev(
                20_100,
                "failover.promoted",
                serde_json::json!({"decision": {"primary": "db-2", "epoch": 2}}),
            ),
            ev(
                30_000,
                "scale",
                serde_json::json!({"read_back": 4, "decision": {"current": 3}}),
            ),
        ],
        alerts: Vec::new(),
        pages: Vec::new(),
    };
    let o = recorded_outcome(&bundle);
    assert_eq!(
        o.scaling
            .iter()
            .map(|s| (s.at_ms, s.from, s.to))
            .collect::<Vec<_>>(),
        [(5_000, 2, 3), (30_000, 3, 4)]
    );
    let f = &o.failover.decided[0];
    assert_eq!((f.at_ms, f.promote.as_str(), f.epoch), (19_700, "db-2", 2));
    let r = first_response(&o, 10_000);
    assert_eq!(
        r.action,
        Some(9_700),
        "the failover, not the scaling before the start"
    );
    assert_eq!((r.alert, r.page), (None, None));
}

#[test]
fn offsets_and_spans_read_as_people_write_them() {
    assert_eq!(offset(1000, 1000), "+00:00.000");
    assert_eq!(offset(0, 90_250), "+01:30.250");
    assert_eq!(offset(0, 3_723_004), "+1:02:03.004");
    assert_eq!(offset(5000, 4000), "-00:01.000");
    assert_eq!(span(90_000), "1m 30s");
    assert_eq!(span(-15_000), "-15s");
}

#[test]
fn minus_is_a_multiset_difference() {
    assert_eq!(minus(&[1, 1, 2, 3], &[1, 3, 4]), vec![1, 2]);
}
