//! `/proc/stat`: CPU seconds per mode and guest seconds
//! (`node_cpu_seconds_total`, `node_cpu_guest_seconds_total`), interrupts,
//! boot time, context switches, forks and process counts.

use super::Out;

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
