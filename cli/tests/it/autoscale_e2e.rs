//! End to end with `keel up` and an overlay policy with short windows:
//! a steady load the web tier's minimum serves leaves it alone, a burst
//! on top takes it up (panic mode), and when the burst stops the
//! scale-down window brings it back to its minimum — every step an event naming its reasons, every count
//! read back from the supervisor.

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_scales_the_web_tier_up_and_the_window_brings_it_back() {
    let _turn = heavy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("overlay.yaml"), fast_web_policy("8s")).expect("write");
    let (mut child, lines) = keel_up(dir.path(), &["--config", "overlay.yaml"]).await;
    let _stop = StopOnDrop(child.id() as i32);
    let events = printed_url(&lines, "controller events");
    let scale = printed_url(&lines, "supervisor API").replace("processes", "scale/web");
    // A steady 20/s (10 an instance, under the 15 each of the policy)
    // that the controller must leave at 2, then a burst of 80/s more
    // (100/s needs 7: panic, ≥ 2× the 2 ready; max 5) held until the
    // controller has acted on it, so the test waits on what it checks
    // however far a debug build on a slow machine lags behind.
    let mut base = spawn_load(&lines, dir.path(), "steady", "20", "300s");
    let _base = StopOnDrop(base.id() as i32);
    let keep = controller_event(&events, "decision", "the controller sees 20/s", |e| {
        e["decision"]["metrics"][0]["value"].as_f64() >= Some(7.5)
    })
    .await;
    assert_eq!(keep["decision"]["desired"], 2, "20/s needs 2: {keep}");
    let (_, v) = get_json(&format!("{events}?limit=10000")).await;
    let early = v["data"].as_array().cloned().unwrap_or_default();
    assert!(
        !early.iter().any(|e| e["kind"] == "scale"),
        "20/s needs no more than the 2 web instances: {early:?}"
    );
    let mut burst = spawn_load(&lines, dir.path(), "steady", "80", "300s");
    let burst_stop = StopOnDrop(burst.id() as i32);
    let up = controller_event(&events, "scale", "the burst scales web up", |e| {
        e["read_back"].as_u64() >= Some(4)
    })
    .await;
    drop(burst_stop);
    let _ = burst.wait();
    let line = up["explanation"].as_str().unwrap_or_default();
    assert!(
        line.starts_with("web: scale 2 → ") || line.starts_with("web: scale 3 → "),
        "{up}"
    );
    let (_, s) = get_json_with(&supervisor_client(dir.path()), &scale).await;
    assert!(
        s["replicas"].as_u64() >= Some(4),
        "the supervisor holds it: {s}"
    );
    let down = controller_event(
        &events,
        "scale",
        "the window passes and web scales back to 2",
        |e| e["read_back"].as_u64() == Some(2),
    )
    .await;
    assert!(
        down["at_ms"].as_i64() > up["at_ms"].as_i64(),
        "down after up: {up} {down}"
    );
    let (_, s) = get_json_with(&supervisor_client(dir.path()), &scale).await;
    assert_eq!(s["replicas"], 2, "{s}");
    child.kill().ok();
    drop(_base);
    let _ = base.wait();
}
