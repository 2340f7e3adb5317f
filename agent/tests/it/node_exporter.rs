//! The agent's host metrics beside a real node_exporter 1.5 on the same
//! host, with node_exporter's default collectors that the agent covers
//! (cpu, meminfo, filesystem, diskstats, netdev, netclass, loadavg, stat,
//! filefd, uname, time): the same series names, the same label sets, and
//! the same values where they do not move between two reads.
//!
//! Gated on `KEEL_TEST_NODE_EXPORTER` (Debian's
//! `prometheus-node-exporter`; `.ci/run` installs it and sets it).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use keel_agent::exposition;
use keel_agent::host::{Exclusions, NODE_EXPORTER_COLLECTORS as COLLECTORS, Roots, collect};

/// Series that do not move between two reads a moment apart.
const STABLE: [&str; 17] = [
    "node_memory_MemTotal_bytes",
    "node_memory_SwapTotal_bytes",
    "node_filesystem_size_bytes",
    "node_filesystem_readonly",
    "node_filesystem_device_error",
    "node_filesystem_files",
    "node_filefd_maximum",
    "node_boot_time_seconds",
    "node_network_mtu_bytes",
    "node_network_iface_id",
    "node_network_flags",
    "node_network_speed_bytes",
    "node_network_up",
    "node_network_info",
    "node_disk_info",
    "node_uname_info",
    "node_time_zone_offset_seconds",
];

/// `name{labels}` of each series, and its value.
fn keyed(samples: impl Iterator<Item = (Vec<(String, String)>, f64)>) -> BTreeMap<String, f64> {
    samples
        .map(|(mut labels, v)| {
            labels.sort();
            let name = labels
                .iter()
                .find(|(k, _)| k == "__name__")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            let rest: Vec<String> = labels
                .iter()
                .filter(|(k, _)| k != "__name__")
                .map(|(k, v)| format!("{k}={v:?}"))
                .collect();
            (format!("{name}{{{}}}", rest.join(",")), v)
        })
        .collect()
}

#[tokio::test]
async fn host_metrics_match_a_real_node_exporter() {
    if std::env::var_os("KEEL_TEST_NODE_EXPORTER").is_none() {
        eprintln!(
            "skipped: set KEEL_TEST_NODE_EXPORTER=1 with prometheus-node-exporter installed (.ci/run does)"
        );
        return;
    }
    let port = keel_testkit::proc::free_port().expect("port");
    let mut cmd = std::process::Command::new("prometheus-node-exporter");
    cmd.arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--collector.disable-defaults")
        .args(COLLECTORS.iter().map(|c| format!("--collector.{c}")))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let _node = keel_testkit::proc::Reaped(cmd.spawn().expect("prometheus-node-exporter"));
    let url = format!("http://127.0.0.1:{port}/metrics");
    let body = keel_testkit::wait::until(
        "node_exporter answers",
        Duration::from_secs(20),
        async || reqwest::get(&url).await.ok()?.text().await.ok(),
    )
    .await;
    let theirs = keyed(
        exposition::parse(&body)
            .samples
            .into_iter()
            .filter(|s| {
                let name = &s.labels[0].1;
                // Its own figures, not the host's.
                name.starts_with("node_")
                    && !name.starts_with("node_scrape_collector")
                    && !name.starts_with("node_exporter_")
            })
            .map(|s| (s.labels, s.value)),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let ours = keyed(
        collect(&Roots::host(), &Exclusions::default(), &[], now, true)
            .into_iter()
            .map(|p| (p.labels, p.value)),
    );
    let names = |m: &BTreeMap<String, f64>| -> BTreeSet<String> {
        m.keys()
            .map(|k| k.split('{').next().unwrap_or_default().to_owned())
            .collect()
    };
    let (their_names, our_names) = (names(&theirs), names(&ours));
    assert_eq!(
        their_names.difference(&our_names).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "node_exporter has these names, the agent does not"
    );
    assert_eq!(
        our_names.difference(&their_names).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "the agent has these names, node_exporter does not"
    );
    let (their_series, our_series): (BTreeSet<&String>, BTreeSet<&String>) =
        (theirs.keys().collect(), ours.keys().collect());
    assert_eq!(
        their_series.difference(&our_series).collect::<Vec<_>>(),
        Vec::<&&String>::new(),
        "node_exporter has these series (label sets), the agent does not"
    );
    assert_eq!(
        our_series.difference(&their_series).collect::<Vec<_>>(),
        Vec::<&&String>::new(),
        "the agent has these series, node_exporter does not"
    );
    let mut compared = 0;
    for (k, v) in &theirs {
        if STABLE.iter().any(|n| k.starts_with(&format!("{n}{{"))) {
            compared += 1;
            assert_eq!(ours.get(k), Some(v), "{k}");
        }
    }
    assert!(compared >= 8, "only {compared} stable series compared");
    // Moving ones agree to within what moves between the two reads.
    let close = |name: &str, tolerance: f64| {
        for (k, v) in theirs
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{name}{{")))
        {
            let o = ours[k];
            assert!(
                (o - v).abs() <= tolerance,
                "{k}: agent {o}, node_exporter {v}"
            );
        }
    };
    // The two reads are well under a second apart: seconds that a unit
    // error (ticks for seconds) would put far off.
    close("node_time_seconds", 5.0);
    close("node_cpu_seconds_total", 2.0);
    close("node_cpu_guest_seconds_total", 2.0);
    close("node_load1", 1.0);
}
