//! Network devices as node_exporter's netdev (`/proc/net/dev` and each
//! device's `rx_nohandler`; `lo` left out by default, as Debian's does) and
//! netclass (`/sys/class/net/<device>/…`: link state, MTU, speed, flags,
//! carrier changes and `node_network_info`) collectors report them.

use std::path::Path;

use super::{Out, read};

/// `/proc/net/dev`'s columns, receive then transmit.
const RECEIVE: [&str; 8] = [
    "bytes",
    "packets",
    "errs",
    "drop",
    "fifo",
    "frame",
    "compressed",
    "multicast",
];
const TRANSMIT: [&str; 8] = [
    "bytes",
    "packets",
    "errs",
    "drop",
    "fifo",
    "colls",
    "carrier",
    "compressed",
];

pub(super) fn netdev(text: &str, sys: &Path, exclude: &regex::Regex, out: &mut Out<'_>) {
    for line in text.lines().skip(2) {
        let Some((dev, rest)) = line.split_once(':') else {
            continue;
        };
        let dev = dev.trim();
        if exclude.is_match(dev) {
            continue;
        }
        let n: Vec<f64> = rest
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        if n.len() < 16 {
            continue;
        }
        let d = [("device", dev)];
        for (i, what) in RECEIVE.iter().enumerate() {
            out.push(&format!("node_network_receive_{what}_total"), &d, n[i]);
        }
        for (i, what) in TRANSMIT.iter().enumerate() {
            out.push(&format!("node_network_transmit_{what}_total"), &d, n[8 + i]);
        }
        let nohandler = sys
            .join("class/net")
            .join(dev)
            .join("statistics/rx_nohandler");
        if let Ok(v) = read(&nohandler).trim().parse::<f64>() {
            out.push("node_network_receive_nohandler_total", &d, v);
        }
    }
}

/// A sysfs number: decimal, or hex with `0x` (`flags`, `dev_id`).
fn number(text: &str) -> Option<f64> {
    let t = text.trim();
    match t.strip_prefix("0x") {
        Some(hex) => i64::from_str_radix(hex, 16).ok().map(|v| v as f64),
        None => t.parse().ok(),
    }
}

/// Each netclass file, its series, and a scale.
const CLASS: [(&str, &str, f64); 16] = [
    ("addr_assign_type", "node_network_address_assign_type", 1.0),
    ("carrier", "node_network_carrier", 1.0),
    ("carrier_changes", "node_network_carrier_changes_total", 1.0),
    (
        "carrier_up_count",
        "node_network_carrier_up_changes_total",
        1.0,
    ),
    (
        "carrier_down_count",
        "node_network_carrier_down_changes_total",
        1.0,
    ),
    ("dev_id", "node_network_device_id", 1.0),
    ("dormant", "node_network_dormant", 1.0),
    ("flags", "node_network_flags", 1.0),
    ("ifindex", "node_network_iface_id", 1.0),
    ("iflink", "node_network_iface_link", 1.0),
    ("link_mode", "node_network_iface_link_mode", 1.0),
    ("mtu", "node_network_mtu_bytes", 1.0),
    ("name_assign_type", "node_network_name_assign_type", 1.0),
    ("netdev_group", "node_network_net_dev_group", 1.0),
    ("type", "node_network_protocol_type", 1.0),
    // Mbit/s as bytes a second.
    ("speed", "node_network_speed_bytes", 125_000.0),
];

pub(super) fn netclass(sys: &Path, out: &mut Out<'_>) {
    let Ok(entries) = std::fs::read_dir(sys.join("class/net")) else {
        return;
    };
    // Devices are directories (links to them); `bonding_masters` and the
    // like are files, not devices.
    let mut devs: Vec<(String, std::path::PathBuf)> = entries
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    devs.sort();
    for (dev, dir) in devs {
        let d = [("device", dev.as_str())];
        for (file, name, scale) in CLASS {
            // A file the device cannot answer (a link that is down has no
            // carrier or speed) is left out, as node_exporter leaves it.
            if let Some(v) = number(&read(&dir.join(file))) {
                out.push(name, &d, v * scale);
            }
        }
        if let Some(v) = number(&read(&dir.join("tx_queue_len"))) {
            out.push("node_network_transmit_queue_length", &d, v);
        }
        let text = |f: &str| read(&dir.join(f)).trim().to_owned();
        let operstate = text("operstate");
        out.push(
            "node_network_up",
            &d,
            if operstate == "up" { 1.0 } else { 0.0 },
        );
        out.push(
            "node_network_info",
            &[
                ("address", &text("address")),
                ("broadcast", &text("broadcast")),
                ("device", &dev),
                ("duplex", &text("duplex")),
                ("ifalias", &text("ifalias")),
                ("operstate", &operstate),
            ],
            1.0,
        );
    }
}
