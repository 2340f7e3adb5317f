//! Two `keel collector` processes on one real PostgreSQL state store
//! (`collector.ha`, `KEEL_TEST_POSTGRES=1`): one leads and pages, the
//! other follows, names the leader and refuses silences; SIGKILL the
//! leader and the follower takes over after its lease lapses and within
//! one renewal of it (the database's clock), from the state the leader
//! saved: the alert firing throughout is paged once across the switch.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;

const LEASE_MS: i64 = 3000;
const RENEW_MS: i64 = 500;

/// A collector of the pair: its own data directory, the shared store.
fn spawn_member(dir: &std::path::Path, state: &str, hook: &str) -> (std::process::Child, String) {
    std::fs::create_dir_all(dir.join("rules")).expect("mkdir");
    std::fs::write(
        dir.join("rules/r.yml"),
        "groups:\n- name: g\n  interval: 200ms\n  rules:\n  - alert: AlwaysOn\n    expr: vector(1)\n    severity: P0\n    annotations: {summary: 'always'}\n",
    )
    .expect("rules");
    std::fs::write(
        dir.join("keel.yaml"),
        format!(
            "collector:\n  state: \"{state}\"\n  rules: {{files: [\"{}\"]}}\n  notify: {{webhooks: [\"{hook}\"], retry_initial: 50ms, retry_max: 100ms}}\n  ha: {{enabled: true, lease: {LEASE_MS}ms, renew_interval: {RENEW_MS}ms}}\n",
            dir.join("rules").display()
        ),
    )
    .expect("config");
    let mut command = collector_command(&dir.join("keel.yaml"));
    command.stdin(Stdio::null());
    let (child, _otlp, api) = start_collector(command, dir);
    (child, api)
}

/// A fresh database on the real PostgreSQL for the pair to share, or
/// none (the test is skipped) without `KEEL_TEST_POSTGRES=1`.
async fn shared_database() -> Option<String> {
    if !keel_state::testing::postgres_enabled() {
        eprintln!("skipped: set KEEL_TEST_POSTGRES=1 to run against PostgreSQL");
        return None;
    }
    let db = keel_state::testing::fresh_postgres_database()
        .await
        .expect("database");
    Some(db)
}

/// Wait until the collector at `api` leads: its standing and when its
/// grant began (ms, PostgreSQL's clock).
async fn takes_over(api: &str) -> (serde_json::Value, i64) {
    let took = eventually("the follower takes over", Duration::from_secs(20), || {
        let api = api.to_owned();
        async move {
            let s = standing(&api).await;
            (s["standing"] == "leader").then_some(s)
        }
    })
    .await;
    let since = took["since_ms"].as_i64().expect("since_ms");
    (took, since)
}

async fn standing(api: &str) -> serde_json::Value {
    let (_, v) = get_json(&format!("{api}/api/v1/status/leader")).await;
    v["data"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_follower_takes_over_from_a_killed_leader_and_pages_nothing_twice() {
    let Some(db) = shared_database().await else {
        return;
    };
    let _turn = heavy().await;
    // The webhook: every firing page, by alert name.
    let pages: Arc<Mutex<Vec<String>>> = Arc::default();
    let p = pages.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(v): axum::Json<serde_json::Value>| {
            let p = p.clone();
            async move {
                if v["status"] == "firing" {
                    for a in v["alerts"].as_array().into_iter().flatten() {
                        let name = a["labels"]["alertname"].as_str().unwrap_or_default();
                        p.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(name.into());
                    }
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hook = format!("http://{}/hook", l.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(l, app).await });

    let (da, db_dir) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let (mut a, api_a) = spawn_member(da.path(), &db, &hook);
    let _stop_a = StopOnDrop(a.id() as i32);
    let first = eventually("the first collector leads", Duration::from_secs(20), || {
        let api = api_a.clone();
        async move { (standing(&api).await["standing"] == "leader").then_some(()) }
    })
    .await;
    let () = first;
    let (b, api_b) = spawn_member(db_dir.path(), &db, &hook);
    let _stop_b = StopOnDrop(b.id() as i32);
    let sa = standing(&api_a).await;
    let sb = standing(&api_b).await;
    assert_eq!(sb["standing"], "follower", "{sb}");
    assert_eq!(
        sb["leader"], sa["name"],
        "the follower names the leader: {sa} {sb}"
    );
    // keel status says the same, in words.
    let out = std::process::Command::new(KEEL)
        .args(["status", "--url", &api_b])
        .output()
        .expect("keel status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "leading    no: {} follows {}",
            sb["name"].as_str().unwrap_or_default(),
            sa["name"].as_str().unwrap_or_default()
        )),
        "{text}"
    );

    // The leader pages once; the follower evaluates nothing and refuses
    // a silence it could not keep.
    eventually("the leader pages", Duration::from_secs(20), || {
        let pages = pages.clone();
        async move {
            let n = pages.lock().unwrap_or_else(|e| e.into_inner()).len();
            (n >= 1).then_some(())
        }
    })
    .await;
    let r = reqwest::Client::new()
        .post(format!("{api_b}/api/v1/silences"))
        .json(&serde_json::json!({
            "matchers": [{"name": "alertname", "value": "AlwaysOn"}],
            "startsAt": "2026-01-01T00:00:00Z", "endsAt": "2099-01-01T00:00:00Z",
            "createdBy": "test", "comment": "no"
        }))
        .send()
        .await
        .expect("silence");
    assert_eq!(r.status(), 503);
    let why = r.text().await.unwrap_or_default();
    assert!(why.contains("this collector follows"), "{why}");
    let (_, notes_b) = get_json(&format!("{api_b}/api/v1/notifications")).await;
    assert_eq!(
        notes_b["data"].as_array().map(Vec::len),
        Some(0),
        "{notes_b}"
    );

    // SIGKILL the leader: no release, the lease lapses.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(a.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    let _ = a.wait();
    let store = keel_state::StateStore::open(&db).await.expect("store");
    let last = store
        .lease_holder("keel-leader")
        .await
        .expect("read")
        .expect("held");
    assert_eq!(last.holder, sa["name"].as_str().unwrap_or_default());
    let (took, since) = takes_over(&api_b).await;
    assert!(
        since >= last.grant.expires_ms,
        "not before the lapse: {took} {last:?}"
    );
    // One renewal, and a second for the query and a busy 2-core machine.
    assert!(
        since - last.grant.expires_ms <= RENEW_MS + 1000,
        "within one renewal of the lapse: {} ms",
        since - last.grant.expires_ms
    );
    assert!(took["token"].as_i64() > Some(last.grant.token));

    // The new leader restored the page the old one sent, and after it
    // has evaluated the firing alert, it has paged nothing again.
    eventually(
        "the new leader evaluates the alert",
        Duration::from_secs(20),
        || {
            let api = api_b.clone();
            async move {
                let (_, r) = get_json(&format!("{api}/api/v1/rules")).await;
                let rule = r["data"]["groups"][0]["rules"][0].clone();
                let last = rule["lastEvaluation"].as_str()?;
                let at = humantime::parse_rfc3339(last).ok()?;
                let at_ms = keel_core::clock::unix_ms(at);
                // Several evaluations (every 200 ms) after it led.
                (rule["state"] == "firing" && at_ms > since + 1500).then_some(())
            }
        },
    )
    .await;
    let (_, notes_b) = get_json(&format!("{api_b}/api/v1/notifications")).await;
    let restored = notes_b["data"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        restored.len(),
        1,
        "the old leader's page, restored: {notes_b}"
    );
    let seen = pages.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(seen, ["AlwaysOn"], "paged once across the switch");
}

/// A TCP proxy to the local PostgreSQL that can be cut: its address and
/// the switch (every connection and the listener go when it is called).
async fn cuttable_postgres() -> (u16, impl FnOnce()) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
    let c = conns.clone();
    let accept = tokio::spawn(async move {
        while let Ok((mut inbound, _)) = l.accept().await {
            let task = tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect("127.0.0.1:5432").await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
            c.lock().unwrap_or_else(|e| e.into_inner()).push(task);
        }
    });
    let cut = move || {
        accept.abort();
        for t in conns.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            t.abort();
        }
    };
    (port, cut)
}

/// A leader that loses PostgreSQL gives up before its lease lapses and
/// says so (its process exits), and the follower takes over after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_loses_postgres_stops_before_the_follower_leads() {
    let Some(db) = shared_database().await else {
        return;
    };
    let _turn = heavy().await;
    let (port, cut) = cuttable_postgres().await;
    let via_proxy = db.replacen("127.0.0.1:5432", &format!("127.0.0.1:{port}"), 1);
    assert_ne!(
        via_proxy, db,
        "the test database is on 127.0.0.1:5432: {db}"
    );
    let hook = "http://127.0.0.1:9/hook";
    let (da, db_dir) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let (mut a, api_a) = spawn_member(da.path(), &via_proxy, hook);
    let _stop_a = StopOnDrop(a.id() as i32);
    eventually("the first collector leads", Duration::from_secs(20), || {
        let api = api_a.clone();
        async move { (standing(&api).await["standing"] == "leader").then_some(()) }
    })
    .await;
    let (b, api_b) = spawn_member(db_dir.path(), &db, hook);
    let _stop_b = StopOnDrop(b.id() as i32);
    eventually("the second follows", Duration::from_secs(20), || {
        let api = api_b.clone();
        async move { (standing(&api).await["standing"] == "follower").then_some(()) }
    })
    .await;

    cut();
    // The leader exits on its own, saying why, before the follower leads.
    let exited = tokio::task::spawn_blocking(move || a.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(!exited.success(), "{exited:?}");
    let err = std::fs::read_to_string(da.path().join("collector.stderr")).unwrap_or_default();
    assert!(
        err.contains("no longer leading")
            && err.contains("stopping so that nothing acts without the lease"),
        "{err}"
    );
    // When it gave up, by its own log (the same machine's clock as
    // PostgreSQL's): before the follower's grant began.
    let gave_up_ms = err
        .lines()
        .find(|l| l.contains("gave up leading"))
        .and_then(|l| {
            let plain = strip_ansi(l);
            let ts = plain.split_whitespace().next()?.to_owned();
            humantime::parse_rfc3339(&ts).ok()
        })
        .map(keel_core::clock::unix_ms)
        .unwrap_or_else(|| panic!("no 'gave up leading' line: {err}"));
    let (_, since) = takes_over(&api_b).await;
    assert!(
        gave_up_ms < since,
        "the old leader gave up at {gave_up_ms}, the new one led from {since}"
    );
}

/// `line` without its terminal colour codes.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ … up to the final letter.
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
