//! `/proc/stat`: CPU seconds per mode and guest seconds
//! (`node_cpu_seconds_total`, `node_cpu_guest_seconds_total`), interrupts,
//! boot time, context switches, forks and process counts; and from
//! /sys, thermal throttling per core and per package
//! (`node_cpu_core_throttles_total`, `node_cpu_package_throttles_total`,
//! where the CPU reports it: not on VMs).

use std::collections::BTreeMap;
use std::path::Path;

use super::{Out, read};

/// Kernel clock ticks a second in /proc/stat (USER_HZ; 100 on Linux).
const USER_HZ: f64 = 100.0;

/// The modes of a `cpuN` line, in order; then `guest` and `guest_nice`.
const CPU_MODES: [&str; 8] = [
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
];

pub(super) fn stat(text: &str, out: &mut Out<'_>) {
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let Some(key) = f.next() else { continue };
        let nums: Vec<f64> = f.filter_map(|v| v.parse().ok()).collect();
        if let Some(cpu) = key.strip_prefix("cpu").filter(|c| !c.is_empty()) {
            for (mode, ticks) in CPU_MODES.iter().zip(&nums) {
                out.push(
                    "node_cpu_seconds_total",
                    &[("cpu", cpu), ("mode", mode)],
                    ticks / USER_HZ,
                );
            }
            // Guest time is also counted in user and nice, as the
            // kernel (and node_exporter) report it.
            for (mode, ticks) in ["user", "nice"].iter().zip(nums.iter().skip(8)) {
                out.push(
                    "node_cpu_guest_seconds_total",
                    &[("cpu", cpu), ("mode", mode)],
                    ticks / USER_HZ,
                );
            }
            continue;
        }
        let name = match key {
            "btime" => "node_boot_time_seconds",
            "ctxt" => "node_context_switches_total",
            "intr" => "node_intr_total",
            "processes" => "node_forks_total",
            "procs_running" => "node_procs_running",
            "procs_blocked" => "node_procs_blocked",
            _ => continue,
        };
        if let Some(v) = nums.first() {
            out.push(name, &[], *v);
        }
    }
}

/// A sysfs file's unsigned number.
fn number(path: &Path) -> Option<u64> {
    read(path).trim().parse().ok()
}

/// Thermal throttle counts, once per (package, core) and per package, as
/// node_exporter's cpu collector reads them.
pub(super) fn throttles(sys: &Path, out: &mut Out<'_>) {
    let Ok(entries) = std::fs::read_dir(sys.join("devices/system/cpu")) else {
        return;
    };
    let mut cpus: Vec<std::path::PathBuf> = entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("cpu"))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(|e| e.path())
        .collect();
    cpus.sort();
    let mut cores: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    let mut packages: BTreeMap<u64, u64> = BTreeMap::new();
    for cpu in cpus {
        let (Some(package), Some(core)) = (
            number(&cpu.join("topology/physical_package_id")),
            number(&cpu.join("topology/core_id")),
        ) else {
            continue;
        };
        if let std::collections::btree_map::Entry::Vacant(e) = cores.entry((package, core))
            && let Some(n) = number(&cpu.join("thermal_throttle/core_throttle_count"))
        {
            e.insert(n);
        }
        if let std::collections::btree_map::Entry::Vacant(e) = packages.entry(package)
            && let Some(n) = number(&cpu.join("thermal_throttle/package_throttle_count"))
        {
            e.insert(n);
        }
    }
    for ((package, core), n) in cores {
        out.push(
            "node_cpu_core_throttles_total",
            &[
                ("core", &core.to_string()),
                ("package", &package.to_string()),
            ],
            n as f64,
        );
    }
    for (package, n) in packages {
        out.push(
            "node_cpu_package_throttles_total",
            &[("package", &package.to_string())],
            n as f64,
        );
    }
}
