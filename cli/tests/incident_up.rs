//! `keel up` under a load spike: the spike fires an alert and scales
//! the web tier up and back; the window is recorded with `keel incident
//! record`, and three replays print the same bytes and reproduce the
//! recorded alert changes, pages and scaling actions.

mod common;

use std::process::Command;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_spike_replays_identically_and_reproduces_what_happened() {
    let _turn = heavy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("spike.yml"),
        r#"groups:
  - name: spike
    interval: 1s
    rules:
      - alert: WebRequestSpike
        expr: sum(rate(http_server_request_duration_seconds_count{tier="web"}[5s])) > 50
        for: 2s
        severity: P0
        labels: {job: shop-web}
"#,
    )
    .expect("rules");
    std::fs::write(
        dir.path().join("overlay.yaml"),
        format!(
            "{}collector:\n  rules:\n    files: [spike.yml]\n",
            fast_web_policy("8s")
        ),
    )
    .expect("overlay");
    let from = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let (mut child, lines) = keel_up(dir.path(), &["--config", "overlay.yaml"]).await;
    let _stop = StopOnDrop(child.id() as i32);
    let events = printed_url(&lines, "controller events");
    let api = printed_url(&lines, "dashboard").replace("/ui/", "");
    let mut base = spawn_load(&lines, dir.path(), "steady", "20", "300s");
    let _base = StopOnDrop(base.id() as i32);
    let mut burst = spawn_load(&lines, dir.path(), "steady", "80", "300s");
    let burst_stop = StopOnDrop(burst.id() as i32);
    controller_event(&events, "scale", "the spike scales web up", |e| {
        e["read_back"].as_u64() >= Some(4)
    })
    .await;
    let alerts = format!("{api}/api/v1/alerts");
    eventually(
        "the spike alert fires",
        std::time::Duration::from_secs(90),
        || {
            let alerts = alerts.clone();
            async move {
                let (_, v) = get_json(&alerts).await;
                v["data"]["alerts"]
                    .as_array()?
                    .iter()
                    .find(|a| {
                        a["labels"]["alertname"] == "WebRequestSpike" && a["state"] == "firing"
                    })
                    .cloned()
            }
        },
    )
    .await;
    drop(burst_stop);
    let _ = burst.wait();
    controller_event(&events, "scale", "web scales back to 2", |e| {
        e["read_back"].as_u64() == Some(2)
    })
    .await;
    let bundle = dir.path().join("spike.keelinc");
    let out = Command::new(KEEL)
        .args([
            "incident", "record", "--from", &from, "--to", "now", "--name", "spike",
        ])
        .args(["--url", &api, "--out"])
        .arg(&bundle)
        .output()
        .expect("keel incident record");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    child.kill().ok();
    drop(_base);
    let _ = base.wait();
    let run = || {
        let o = Command::new(KEEL)
            .arg("replay")
            .arg(&bundle)
            .output()
            .expect("keel replay");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (o.stdout, o.stderr)
    };
    let first = run();
    assert_eq!(run(), first, "the second replay differs");
    assert_eq!(run(), first, "the third replay differs");
    let text = String::from_utf8_lossy(&first.0);
    assert!(text.contains("alert    P0 WebRequestSpike"), "{text}");
    assert!(text.contains("scale    web 2 -> "), "{text}");
    let reproduced = text
        .lines()
        .find(|l| l.starts_with("reproduced: "))
        .unwrap_or_else(|| panic!("not reproduced:\n{text}"));
    // Alert changes, pages and scaling actions were recorded and
    // reproduced; no failover happened.
    let counts: Vec<u64> = reproduced
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(
        counts.len() == 4 && counts[..3].iter().all(|n| *n > 0) && counts[3] == 0,
        "{reproduced}"
    );
}
