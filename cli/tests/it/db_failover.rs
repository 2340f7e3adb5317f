//! Synchronous replication, promotion, fencing and catch-up with real
//! database processes.

use std::time::Duration;

use crate::common::*;
use keel_sampleapp::config::ReplicationMode;
use nix::sys::signal::Signal;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_write_survives_primary_sigkill_and_promotion_and_the_old_primary_is_fenced_then_catches_up()
 {
    let _turn = heavy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.db.replication = ReplicationMode::Sync;
    config.db.sync_replicas = 1;
    let (sup, ep) = start(config).await;
    let http = reqwest::Client::new();
    let lb = ep.lb;

    // A write acknowledged in sync mode…
    let r = http
        .post(format!("http://{lb}/api/orders"))
        .json(&serde_json::json!({ "product_id": 7, "quantity": 3 }))
        .send()
        .await
        .expect("order");
    assert_eq!(r.status(), 201);
    let first: serde_json::Value = r.json().await.expect("json");
    let id1 = first["id"].as_str().expect("id").to_owned();

    // …survives SIGKILL of the primary and promotion of a replica.
    sup.signal("db-1", Signal::SIGKILL, false)
        .await
        .expect("kill primary");
    let report = sup.promote(None, None).await.expect("promote");
    assert_eq!(report.epoch, 2);
    assert_ne!(report.primary, "db-1");
    let topo = sup.db_topology();
    let (s, v) = get_json(&format!("http://{}/kv/order:{id1}", topo.topology.primary)).await;
    assert_eq!(s, 200, "acknowledged write lost by promotion: {v}");
    let (s, v) = get_json(&format!("http://{lb}/api/orders/{id1}")).await;
    assert_eq!((s, v["quantity"].as_u64()), (200, Some(3)), "{v}");

    // Writes go on under the new epoch.
    let r = http
        .post(format!("http://{lb}/api/orders"))
        .json(&serde_json::json!({ "product_id": 8, "quantity": 1 }))
        .send()
        .await
        .expect("order");
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let second: serde_json::Value = r.json().await.expect("json");
    let id2 = second["id"].as_str().expect("id").to_owned();

    // The old primary returns: it refuses writes from the old epoch and the new.
    let old = sup.start_process("db-1").await.expect("restart db-1");
    for epoch in [1, 2] {
        let r = http
            .put(format!("http://{}/kv/split-brain", old.addr))
            .header("x-keel-epoch", epoch)
            .json(&serde_json::json!({ "value": "must not land" }))
            .send()
            .await
            .expect("put");
        assert_eq!(
            r.status(),
            409,
            "old primary accepted a write at epoch {epoch}"
        );
    }
    // …and catches up as a replica of the new primary.
    let addr = old.addr;
    eventually(
        "old primary has the write made after promotion",
        Duration::from_secs(10),
        || {
            let id2 = id2.clone();
            async move {
                let (s, _) = get_json(&format!("http://{addr}/kv/order:{id2}")).await;
                (s == 200).then_some(())
            }
        },
    )
    .await;
    let (_, st) = get_json(&format!("http://{addr}/-/status")).await;
    assert_eq!(st["role"], "replica", "{st}");
    assert_eq!(st["epoch"], 2, "{st}");
    let (s, _) = get_json(&format!("http://{}/kv/split-brain", topo.topology.primary)).await;
    assert_eq!(s, 404);
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_keel_up_after_a_failover_resumes_with_the_data_under_a_new_epoch() {
    let _turn = heavy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let http = reqwest::Client::new();
    let order = |lb: std::net::SocketAddr| {
        let http = http.clone();
        async move {
            let r = http
                .post(format!("http://{lb}/api/orders"))
                .json(&serde_json::json!({ "product_id": 1, "quantity": 1 }))
                .send()
                .await
                .expect("order");
            assert_eq!(r.status(), 201, "{:?}", r.text().await);
            r.json::<serde_json::Value>().await.expect("json")["id"]
                .as_str()
                .expect("id")
                .to_owned()
        }
    };
    let mut config = test_config(dir.path());
    config.db.replication = ReplicationMode::Sync;
    let (sup, ep) = start(config.clone()).await;
    let before = order(ep.lb).await;
    sup.signal("db-1", Signal::SIGKILL, false)
        .await
        .expect("kill");
    let promoted = sup.promote(None, None).await.expect("promote");
    let during = order(ep.lb).await;
    sup.shutdown().await;

    let (sup, ep) = start(config).await;
    let topo = sup.db_topology();
    assert_eq!(
        topo.primary_name, promoted.primary,
        "the most caught-up node leads"
    );
    assert_eq!(
        topo.topology.epoch, 3,
        "a fresh epoch above every epoch on disk"
    );
    for id in [&before, &during] {
        let (s, v) = get_json(&format!("http://{}/api/orders/{id}", ep.lb)).await;
        assert_eq!(s, 200, "order {id} lost across restarts: {v}");
    }
    order(ep.lb).await;
    sup.shutdown().await;
}

/// PUT `body` to the supervisor's faults API for `name`: (status, body).
async fn put_faults(
    sup: std::net::SocketAddr,
    name: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .put(format!("http://{sup}/api/v1/faults/{name}"))
        .json(&body)
        .send()
        .await
        .expect("faults");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_latency_query_time_and_replica_lag_slow_what_they_name_and_heal() {
    let _turn = heavy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (sup, ep) = start(test_config(dir.path())).await;
    let http = reqwest::Client::new();
    let addr = |name: &str| {
        sup.processes()
            .into_iter()
            .find(|p| p.name == name)
            .map(|p| p.addr)
            .unwrap_or_else(|| panic!("no {name}"))
    };
    let timed = |url: String| {
        let http = http.clone();
        async move {
            let t = std::time::Instant::now();
            let r = http.get(url).send().await.expect("get");
            (r.status().as_u16(), t.elapsed())
        }
    };
    // Latency before every cache request (a lower bound: never flaky).
    let (s, v) = put_faults(
        ep.supervisor,
        "cache",
        serde_json::json!({"latency": "300ms"}),
    )
    .await;
    assert_eq!((s, v["latency"].as_str()), (200, Some("300ms")), "{v}");
    let (_, took) = timed(format!("http://{}/cache/nothing", addr("cache"))).await;
    assert!(took >= Duration::from_millis(300), "{took:?}");
    let (_, took) = timed(format!("http://{}/health", addr("cache"))).await;
    assert!(
        took < Duration::from_millis(300),
        "health checks are not delayed: {took:?}"
    );
    // Query time inside every db read; the cache takes none of it.
    let (s, v) = put_faults(
        ep.supervisor,
        "cache",
        serde_json::json!({"query_time": "1s"}),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap_or("").contains("only latency"),
        "{v}"
    );
    let (s, _) = put_faults(
        ep.supervisor,
        "db-2",
        serde_json::json!({"query_time": "250ms"}),
    )
    .await;
    assert_eq!(s, 200);
    let (status, took) = timed(format!("http://{}/kv/product:1", addr("db-2"))).await;
    assert_eq!(status, 200);
    assert!(took >= Duration::from_millis(250), "{took:?}");
    let (s, v) = put_faults(ep.supervisor, "web-1", serde_json::json!({"latency": "1s"})).await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = put_faults(ep.supervisor, "db-2", serde_json::json!({"lag": "1s"})).await;
    assert_eq!(s, 400, "unknown fields are refused: {v}");

    // Replica lag: db-3 applies a write only once it is 5 s old.
    let (s, _) = put_faults(
        ep.supervisor,
        "db-3",
        serde_json::json!({"replica_lag": "5s"}),
    )
    .await;
    assert_eq!(s, 200);
    let r = http
        .post(format!("http://{}/api/orders", ep.lb))
        .json(&serde_json::json!({ "product_id": 7, "quantity": 1 }))
        .send()
        .await
        .expect("order");
    assert_eq!(r.status(), 201);
    let id = r.json::<serde_json::Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let key = format!("http://{}/kv/order:{id}", addr("db-3"));
    let (s, _) = get_json(&key).await;
    assert_eq!(s, 404, "not applied yet");
    let status = format!("http://{}/-/status", addr("db-3"));
    eventually("db-3 reports 3 s of lag", Duration::from_secs(10), || {
        let status = status.clone();
        async move {
            let (_, v) = get_json(&status).await;
            (v["lag_seconds"].as_f64()? >= 3.0).then_some(())
        }
    })
    .await;
    let (s, _) = get_json(&key).await;
    assert_eq!(
        s, 404,
        "3 s old and still held: the delay is not shorter than asked"
    );
    eventually(
        "db-3 applies the write once it is 5 s old",
        Duration::from_secs(15),
        || {
            let key = key.clone();
            async move { (get_json(&key).await.0 == 200).then_some(()) }
        },
    )
    .await;
    let (s, v) = put_faults(
        ep.supervisor,
        "db-3",
        serde_json::json!({"replica_lag": "0s"}),
    )
    .await;
    assert_eq!(
        (s, v["replica_lag"].as_str()),
        (200, Some("0s")),
        "healed: {v}"
    );
    sup.shutdown().await;
}
