//! Host metrics from /proc, under node_exporter's names, so dashboards
//! and rules written for node_exporter apply unchanged.
//!
//! CPU seconds per mode (`node_cpu_seconds_total{cpu,mode}`), load
//! (`node_load1/5/15`), every `/proc/meminfo` line
//! (`node_memory_<Field>_bytes`, swap included), filesystem space
//! (`node_filesystem_{size,free,avail}_bytes{device,fstype,mountpoint}`,
//! pseudo filesystems left out as node_exporter does), disk I/O
//! (`node_disk_{reads,writes}_completed_total`,
//! `node_disk_{read,written}_bytes_total`, `node_disk_io_time_seconds_total`),
//! network per interface (`node_network_{receive,transmit}_{bytes,packets,errs,drop}_total`),
//! file descriptors (`node_filefd_allocated`, `node_filefd_maximum`),
//! and `node_boot_time_seconds`, `node_context_switches_total`,
//! `node_forks_total`, `node_procs_running`, `node_procs_blocked`.
//! A file that cannot be read is skipped (a container may hide some).

use std::path::Path;

use crate::scrape::Point;

/// Kernel clock ticks a second in /proc/stat (USER_HZ; 100 on Linux).
const USER_HZ: f64 = 100.0;

const CPU_MODES: [&str; 8] = [
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
];

/// Filesystem types node_exporter leaves out by default.
const PSEUDO_FS: [&str; 24] = [
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "fusectl",
    "hugetlbfs",
    "iso9660",
    "mqueue",
    "nsfs",
    "overlay",
    "proc",
    "procfs",
    "pstore",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tracefs",
];

struct Out<'a> {
    points: Vec<Point>,
    base: &'a [(String, String)],
    t_ms: i64,
}

impl Out<'_> {
    fn push(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let mut l: Vec<(String, String)> = self.base.to_vec();
        l.push(("__name__".into(), name.into()));
        l.extend(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        l.sort();
        self.points.push(Point {
            labels: l,
            t_ms: self.t_ms,
            value,
            exemplar: None,
        });
    }
}

/// One collection from `proc` (normally `/proc`), with `base` labels
/// (`job`, `instance`) on every series. Filesystem space is read only
/// when `statfs` is set (tests of a copied /proc leave it off).
pub fn collect(proc: &Path, base: &[(String, String)], t_ms: i64, statfs: bool) -> Vec<Point> {
    let mut out = Out {
        points: Vec::new(),
        base,
        t_ms,
    };
    let read = |f: &str| std::fs::read_to_string(proc.join(f)).unwrap_or_default();
    stat(&read("stat"), &mut out);
    let load = read("loadavg");
    for (name, v) in ["node_load1", "node_load5", "node_load15"]
        .iter()
        .zip(load.split_whitespace())
    {
        if let Ok(v) = v.parse() {
            out.push(name, &[], v);
        }
    }
    meminfo(&read("meminfo"), &mut out);
    diskstats(&read("diskstats"), &mut out);
    netdev(&read("net/dev"), &mut out);
    let fds: Vec<f64> = read("sys/fs/file-nr")
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    if let [allocated, _, maximum] = fds[..] {
        out.push("node_filefd_allocated", &[], allocated);
        out.push("node_filefd_maximum", &[], maximum);
    }
    if statfs {
        filesystems(&read("mounts"), &mut out);
    }
    out.points
}

fn stat(text: &str, out: &mut Out<'_>) {
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
            continue;
        }
        let name = match key {
            "btime" => "node_boot_time_seconds",
            "ctxt" => "node_context_switches_total",
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

fn meminfo(text: &str, out: &mut Out<'_>) {
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let Some(Ok(v)) = f.next().map(str::parse::<f64>) else {
            continue;
        };
        let kb = f.next() == Some("kB");
        // `Active(anon)` is `Active_anon`, as node_exporter spells it;
        // counts (`HugePages_Total`) have no `_bytes`.
        let key: String = key
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect::<String>()
            .trim_end_matches('_')
            .to_owned();
        if kb {
            out.push(&format!("node_memory_{key}_bytes"), &[], v * 1024.0);
        } else {
            out.push(&format!("node_memory_{key}"), &[], v);
        }
    }
}

fn diskstats(text: &str, out: &mut Out<'_>) {
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 14 {
            continue;
        }
        let dev = f[2];
        // node_exporter's default: no ram, loop, fd and partition-less
        // virtual devices.
        if dev.starts_with("loop") || dev.starts_with("ram") || dev.starts_with("fd") {
            continue;
        }
        let n = |i: usize| f[i].parse::<f64>().unwrap_or(0.0);
        let d = [("device", dev)];
        out.push("node_disk_reads_completed_total", &d, n(3));
        out.push("node_disk_read_bytes_total", &d, n(5) * 512.0);
        out.push("node_disk_writes_completed_total", &d, n(7));
        out.push("node_disk_written_bytes_total", &d, n(9) * 512.0);
        out.push("node_disk_io_time_seconds_total", &d, n(12) / 1000.0);
    }
}

fn netdev(text: &str, out: &mut Out<'_>) {
    for line in text.lines().skip(2) {
        let Some((dev, rest)) = line.split_once(':') else {
            continue;
        };
        let dev = dev.trim();
        let n: Vec<f64> = rest
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        if n.len() < 16 {
            continue;
        }
        let d = [("device", dev)];
        for (i, what) in ["bytes", "packets", "errs", "drop"].iter().enumerate() {
            out.push(&format!("node_network_receive_{what}_total"), &d, n[i]);
            out.push(&format!("node_network_transmit_{what}_total"), &d, n[8 + i]);
        }
    }
}

fn filesystems(mounts: &str, out: &mut Out<'_>) {
    let mut done = std::collections::HashSet::new();
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [device, mountpoint, fstype, ..] = f[..] else {
            continue;
        };
        let skip_mount = [
            "/dev",
            "/proc",
            "/sys",
            "/run/credentials",
            "/var/lib/docker",
        ]
        .iter()
        .any(|p| mountpoint == *p || mountpoint.starts_with(&format!("{p}/")));
        if PSEUDO_FS.contains(&fstype) || skip_mount || !done.insert(mountpoint.to_owned()) {
            continue;
        }
        let Ok(s) = nix::sys::statvfs::statvfs(mountpoint) else {
            continue;
        };
        let frag = s.fragment_size() as f64;
        let l = [
            ("device", device),
            ("fstype", fstype),
            ("mountpoint", mountpoint),
        ];
        out.push("node_filesystem_size_bytes", &l, s.blocks() as f64 * frag);
        out.push(
            "node_filesystem_free_bytes",
            &l,
            s.blocks_free() as f64 * frag,
        );
        out.push(
            "node_filesystem_avail_bytes",
            &l,
            s.blocks_available() as f64 * frag,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(p: &[Point], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        p.iter()
            .find(|p| {
                p.labels.iter().any(|(k, v)| k == "__name__" && v == name)
                    && labels
                        .iter()
                        .all(|(k, v)| p.labels.iter().any(|(pk, pv)| pk == k && pv == v))
            })
            .map(|p| p.value)
    }

    #[test]
    fn proc_files_become_node_exporter_series() {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = |f: &str, text: &str| {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        };
        w(
            "stat",
            "cpu  10 0 5 100 1 0 0 0 0 0\ncpu0 250 1 50 1000 3 0 2 7 0 0\nctxt 999\nbtime 1700000000\nprocesses 42\nprocs_running 3\nprocs_blocked 1\n",
        );
        w("loadavg", "0.50 0.25 0.10 2/300 1234\n");
        w(
            "meminfo",
            "MemTotal:       1000 kB\nActive(anon):     10 kB\nHugePages_Total:       0\n",
        );
        w(
            "diskstats",
            "   8       0 sda 100 0 2000 0 50 0 4000 0 0 1500 0 0 0 0 0 0 0\n   7       0 loop0 1 0 1 0 1 0 1 0 0 1 0 0 0 0 0 0 0\n",
        );
        w(
            "net/dev",
            "Inter-|\n face |\n  eth0: 1000 10 1 2 0 0 0 0 2000 20 3 4 0 0 0 0\n",
        );
        w("sys/fs/file-nr", "1200\t0\t2466126\n");
        let base = vec![("job".to_owned(), "node".to_owned())];
        let p = collect(dir.path(), &base, 5, false);
        assert_eq!(
            value(
                &p,
                "node_cpu_seconds_total",
                &[("cpu", "0"), ("mode", "user")]
            ),
            Some(2.5)
        );
        assert_eq!(
            value(
                &p,
                "node_cpu_seconds_total",
                &[("cpu", "0"), ("mode", "steal")]
            ),
            Some(0.07)
        );
        assert_eq!(
            value(&p, "node_cpu_seconds_total", &[("cpu", "")]),
            None,
            "the total line is not a cpu"
        );
        assert_eq!(value(&p, "node_load5", &[]), Some(0.25));
        assert_eq!(
            value(&p, "node_memory_MemTotal_bytes", &[]),
            Some(1_024_000.0)
        );
        assert_eq!(
            value(&p, "node_memory_Active_anon_bytes", &[]),
            Some(10_240.0)
        );
        assert_eq!(value(&p, "node_memory_HugePages_Total", &[]), Some(0.0));
        assert_eq!(
            value(&p, "node_disk_read_bytes_total", &[("device", "sda")]),
            Some(1_024_000.0)
        );
        assert_eq!(
            value(&p, "node_disk_io_time_seconds_total", &[("device", "sda")]),
            Some(1.5)
        );
        assert_eq!(
            value(
                &p,
                "node_disk_reads_completed_total",
                &[("device", "loop0")]
            ),
            None
        );
        assert_eq!(
            value(
                &p,
                "node_network_transmit_drop_total",
                &[("device", "eth0")]
            ),
            Some(4.0)
        );
        assert_eq!(value(&p, "node_filefd_maximum", &[]), Some(2_466_126.0));
        assert_eq!(value(&p, "node_context_switches_total", &[]), Some(999.0));
        assert!(
            p.iter()
                .all(|p| p.labels.contains(&("job".into(), "node".into())) && p.t_ms == 5)
        );
    }

    #[test]
    fn this_machine_reports_cpu_memory_and_its_root_filesystem() {
        let p = collect(Path::new("/proc"), &[], 1, true);
        assert!(value(&p, "node_cpu_seconds_total", &[("mode", "idle")]).is_some_and(|v| v > 0.0));
        assert!(value(&p, "node_memory_MemTotal_bytes", &[]).is_some_and(|v| v > 0.0));
        let root = value(&p, "node_filesystem_size_bytes", &[("mountpoint", "/")]);
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let root_is_real = mounts.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 2 && f[1] == "/" && !PSEUDO_FS.contains(&f[2])
        });
        assert_eq!(
            root.is_some_and(|v| v > 0.0),
            root_is_real,
            "/ is measured when it is a real filesystem"
        );
    }
}
