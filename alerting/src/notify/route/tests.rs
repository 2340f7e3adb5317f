use super::*;

fn ms(s: &str) -> i64 {
    s.parse::<jiff::Timestamp>()
        .expect("timestamp")
        .as_millisecond()
}

fn alert(sev: Severity, state: State, fired: &str) -> AlertView {
    AlertView {
        labels: BTreeMap::from([("alertname".to_owned(), "A".to_owned())]),
        annotations: BTreeMap::new(),
        state,
        severity: sev,
        value: 1.0,
        fired_at_ms: Some(ms(fired)),
        resolved_at_ms: None,
    }
}

fn router(tz: &str) -> Router {
    let hours = BusinessHours {
        timezone: tz.into(),
        holidays: vec!["2026-12-25".into()],
        ..BusinessHours::default()
    }
    .compile()
    .expect("valid");
    Router::new(
        Policy {
            p0: Timing {
                group_wait: Duration::ZERO,
                group_interval: Duration::from_secs(1),
                repeat_interval: Duration::from_secs(1800),
            },
            p1: Timing {
                group_wait: Duration::ZERO,
                group_interval: Duration::from_secs(1),
                repeat_interval: Duration::from_secs(4 * 3600),
            },
            hours,
            group_by: vec!["alertname".into(), "job".into()],
        },
        super::super::silence::compile(&super::super::silence::InhibitRule::defaults())
            .expect("valid"),
    )
}

#[test]
fn p0_pages_at_once_at_night_repeats_and_then_resolves() {
    let mut r = router("UTC");
    let t = "2026-12-05T03:00:00Z"; // a Saturday night
    let a = alert(Severity::P0, State::Firing, t);
    let p = r.decide(ms(t), std::slice::from_ref(&a));
    assert_eq!(
        p.iter()
            .map(|p| (p.kind, p.reason.as_str()))
            .collect::<Vec<_>>(),
        vec![(Kind::Firing, "fired")]
    );
    assert!(
        r.decide(ms("2026-12-05T03:29:59Z"), std::slice::from_ref(&a))
            .is_empty(),
        "no repeat before 30m"
    );
    assert_eq!(
        r.decide(ms("2026-12-05T03:30:00Z"), std::slice::from_ref(&a))[0].reason,
        "repeat"
    );
    let done = AlertView {
        state: State::Resolved,
        ..a.clone()
    };
    assert_eq!(
        r.decide(ms("2026-12-05T03:40:00Z"), std::slice::from_ref(&done))[0].kind,
        Kind::Resolved
    );
    assert!(
        r.decide(ms("2026-12-05T03:41:00Z"), &[done]).is_empty(),
        "resolved once"
    );
    // Firing again (for: 0, so never seen pending): a new page at once.
    let again = alert(Severity::P0, State::Firing, "2026-12-05T03:42:00Z");
    let p = r.decide(ms("2026-12-05T03:42:00Z"), &[again]);
    assert_eq!(
        p.iter()
            .map(|p| (p.kind, p.reason.as_str()))
            .collect::<Vec<_>>(),
        vec![(Kind::Firing, "fired")]
    );
}

#[test]
fn p1_waits_over_the_weekend_and_pages_when_business_hours_begin() {
    let mut r = router("UTC");
    let fired = "2026-12-04T18:00:00Z"; // Friday after hours
    let a = alert(Severity::P1, State::Firing, fired);
    for t in [
        "2026-12-04T18:00:00Z",
        "2026-12-05T12:00:00Z",
        "2026-12-06T23:59:00Z",
        "2026-12-07T08:59:59Z",
    ] {
        assert!(
            r.decide(ms(t), std::slice::from_ref(&a)).is_empty(),
            "{t}: closed"
        );
    }
    let p = r.decide(ms("2026-12-07T09:00:00Z"), std::slice::from_ref(&a));
    assert_eq!(
        p.iter().map(|p| p.reason.as_str()).collect::<Vec<_>>(),
        vec!["business hours began"]
    );
    // Resolved before hours begin: never paged, so nothing to resolve.
    let mut r = router("UTC");
    assert!(
        r.decide(ms("2026-12-05T10:00:00Z"), std::slice::from_ref(&a))
            .is_empty()
    );
    let done = AlertView {
        state: State::Resolved,
        ..a
    };
    assert!(r.decide(ms("2026-12-07T09:00:00Z"), &[done]).is_empty());
}

#[test]
fn business_hours_follow_the_time_zone_across_dst_and_holidays() {
    let h = BusinessHours {
        timezone: "Europe/Berlin".into(),
        holidays: vec!["2026-12-25".into()],
        ..BusinessHours::default()
    }
    .compile()
    .expect("valid");
    // Summer (CEST, UTC+2): 09:00 local is 07:00Z.
    assert!(!h.is_open(ms("2026-03-30T06:59:59Z")));
    assert!(
        h.is_open(ms("2026-03-30T07:00:00Z")),
        "Monday after the spring change"
    );
    // Winter (CET, UTC+1): 09:00 local is 08:00Z.
    assert!(
        !h.is_open(ms("2026-10-26T07:00:00Z")),
        "Monday after the autumn change: 08:00 local"
    );
    assert!(h.is_open(ms("2026-10-26T08:00:00Z")));
    assert!(!h.is_open(ms("2026-10-26T16:00:00Z")), "17:00 local closes");
    assert!(!h.is_open(ms("2026-12-25T10:00:00Z")), "a holiday");
    let bad = BusinessHours {
        timezone: "Mars/Olympus".into(),
        days: vec!["funday".into()],
        start: "9am".into(),
        ..BusinessHours::default()
    }
    .compile()
    .unwrap_err();
    assert_eq!(bad.len(), 3, "{bad:?}");
}

#[test]
fn silences_inhibition_and_acks_mute_what_they_match_and_no_more() {
    use super::super::silence::{Matcher, Silence};
    let mut r = router("UTC");
    let t = ms("2026-12-07T10:00:00Z");
    let mut p0 = alert(Severity::P0, State::Firing, "2026-12-07T10:00:00Z");
    p0.labels.insert("job".into(), "shop-web".into());
    let mut p1 = alert(Severity::P1, State::Firing, "2026-12-07T10:00:00Z");
    p1.labels.insert("alertname".into(), "Slow".into());
    p1.labels.insert("job".into(), "shop-web".into());
    // The firing P0 inhibits its job's P1.
    let pages = r.decide(t, &[p0.clone(), p1.clone()]);
    assert_eq!(
        pages
            .iter()
            .map(|p| p.alerts[0].labels["alertname"].as_str())
            .collect::<Vec<_>>(),
        vec!["A"]
    );
    // With the P0 resolved, the P1 pages.
    let p0_done = AlertView {
        state: State::Resolved,
        ..p0.clone()
    };
    let pages = r.decide(t + 1000, &[p0_done, p1.clone()]);
    let got: Vec<(&str, Kind)> = pages
        .iter()
        .map(|p| (p.alerts[0].labels["alertname"].as_str(), p.kind))
        .collect();
    assert_eq!(got, vec![("A", Kind::Resolved), ("Slow", Kind::Firing)]);
    // An ack stops the P1's repeats.
    assert_eq!(r.ack(&[Matcher::parse("alertname=Slow").expect("m")]), 1);
    assert!(
        r.decide(t + 5 * 3600 * 1000, std::slice::from_ref(&p1))
            .is_empty(),
        "acked: no repeat"
    );
    // A silence mutes a new P0 while active, and it pages after.
    let mut other = alert(Severity::P0, State::Firing, "2026-12-07T11:00:00Z");
    other.labels.insert("alertname".into(), "Other".into());
    r.silences.push(Silence {
        id: 1,
        matchers: vec![Matcher::parse(r#"alertname=~"Oth.*""#).expect("m")],
        starts_at_ms: t,
        ends_at_ms: t + 3_600_000,
        created_by: "me".into(),
        comment: "maintenance".into(),
    });
    assert!(
        r.decide(t + 60_000, std::slice::from_ref(&other))
            .is_empty(),
        "silenced"
    );
    let pages = r.decide(t + 3_600_000, std::slice::from_ref(&other));
    assert_eq!(pages.len(), 1, "the silence ended");
}

fn instance(a: &AlertView, i: &str) -> AlertView {
    let mut a = a.clone();
    a.labels.insert("instance".into(), i.into());
    a
}

fn summary(pages: &[Page]) -> Vec<(Kind, &str, Vec<&str>)> {
    pages
        .iter()
        .map(|p| {
            (
                p.kind,
                p.reason.as_str(),
                p.alerts
                    .iter()
                    .map(|a| a.labels.get("instance").map_or("", String::as_str))
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn a_group_pages_once_for_its_alerts_then_at_group_intervals_as_they_change() {
    let mut r = router("UTC");
    r.policy.p0.group_interval = Duration::from_secs(10);
    let t = ms("2026-12-05T03:00:00Z");
    let base = alert(Severity::P0, State::Firing, "2026-12-05T03:00:00Z");
    let (a, b) = (instance(&base, "a"), instance(&base, "b"));
    // Two at once: one page holding both.
    let p = r.decide(t, &[a.clone(), b.clone()]);
    assert_eq!(summary(&p), vec![(Kind::Firing, "fired", vec!["a", "b"])]);
    // A third joins: it waits for the group interval, then all three.
    let mut c = instance(&base, "c");
    c.fired_at_ms = Some(t + 2000);
    let all = [a.clone(), b.clone(), c.clone()];
    assert!(r.decide(t + 2000, &all).is_empty(), "within group_interval");
    assert!(r.decide(t + 9999, &all).is_empty());
    let p = r.decide(t + 10_000, &all);
    assert_eq!(
        summary(&p),
        vec![(Kind::Firing, "fired", vec!["a", "b", "c"])]
    );
    // Nothing changes: nothing until the repeat.
    assert!(r.decide(t + 20_000, &all).is_empty());
    // One resolves: told at the next interval beside the firing ones.
    let b_done = AlertView {
        state: State::Resolved,
        resolved_at_ms: Some(t + 25_000),
        ..b.clone()
    };
    let now = [a.clone(), b_done.clone(), c.clone()];
    let p = r.decide(t + 25_000, &now);
    assert_eq!(
        summary(&p),
        vec![(Kind::Firing, "resolved", vec!["a", "c", "b"])]
    );
    assert!(r.decide(t + 40_000, &now).is_empty(), "b told once");
    // All resolve: one resolved page.
    let done: Vec<AlertView> = [a, c]
        .into_iter()
        .map(|x| AlertView {
            state: State::Resolved,
            resolved_at_ms: Some(t + 50_000),
            ..x
        })
        .chain([b_done])
        .collect();
    let p = r.decide(t + 50_000, &done);
    assert_eq!(
        summary(&p),
        vec![(Kind::Resolved, "resolved", vec!["a", "c"])]
    );
    assert!(r.decide(t + 60_000, &done).is_empty());
}

#[test]
fn group_wait_gathers_what_fires_soon_after_and_group_by_splits_groups() {
    let mut r = router("UTC");
    r.policy.p1.group_wait = Duration::from_secs(30);
    let t = ms("2026-12-07T10:00:00Z"); // Monday, open
    let base = alert(Severity::P1, State::Firing, "2026-12-07T10:00:00Z");
    let a = instance(&base, "a");
    let mut b = instance(&base, "b");
    b.fired_at_ms = Some(t + 10_000);
    assert!(
        r.decide(t, std::slice::from_ref(&a)).is_empty(),
        "group_wait"
    );
    assert!(r.decide(t + 10_000, &[a.clone(), b.clone()]).is_empty());
    let p = r.decide(t + 30_000, &[a.clone(), b.clone()]);
    assert_eq!(summary(&p), vec![(Kind::Firing, "fired", vec!["a", "b"])]);
    // Another job is another group, with its own wait.
    let mut other = instance(&base, "x");
    other.labels.insert("job".into(), "db".into());
    other.fired_at_ms = Some(t + 40_000);
    let all = [a.clone(), b.clone(), other.clone()];
    assert!(r.decide(t + 40_000, &all).is_empty());
    let p = r.decide(t + 70_000, &all);
    assert_eq!(summary(&p), vec![(Kind::Firing, "fired", vec!["x"])]);
    assert_eq!(p[0].group.get("job").map(String::as_str), Some("db"));
    // `...`: every alert alone.
    let mut r = router("UTC");
    r.policy.group_by = vec!["...".into()];
    let p = r.decide(t, &[a, b]);
    assert_eq!(p.len(), 2);
}

#[test]
fn p2_opens_a_ticket_once_and_closes_it_never_paging() {
    let mut r = router("UTC");
    let a = alert(Severity::P2, State::Firing, "2026-12-07T10:00:00Z");
    assert!(
        r.decide(ms("2026-12-07T10:00:00Z"), std::slice::from_ref(&a))
            .is_empty()
    );
    assert!(
        r.decide(ms("2026-12-07T11:00:00Z"), std::slice::from_ref(&a))
            .is_empty()
    );
    assert_eq!(r.tickets.len(), 1);
    let done = AlertView {
        state: State::Resolved,
        ..a
    };
    assert!(
        r.decide(ms("2026-12-07T12:00:00Z"), &[done]).is_empty(),
        "no page for P2"
    );
    assert_eq!(r.tickets[0].closed_at_ms, Some(ms("2026-12-07T12:00:00Z")));
}
