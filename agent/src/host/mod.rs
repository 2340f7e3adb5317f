//! Host metrics from /proc and /sys under node_exporter's names, labels
//! and default exclusions (node_exporter 1.5's default collectors cpu,
//! meminfo, filesystem, diskstats, netdev, netclass, loadavg, stat,
//! filefd, uname and time), so dashboards and rules written for
//! node_exporter apply unchanged. A file that cannot be read is skipped
//! (a container may hide some), as node_exporter skips it.

use std::path::{Path, PathBuf};

use crate::scrape::Point;

mod cpu;
mod disk;
mod fs;
mod net;
mod system;

/// node_exporter's collectors these cover (`--collector.<name>`), for
/// running a node_exporter beside the agent that reports the same.
pub const NODE_EXPORTER_COLLECTORS: [&str; 11] = [
    "cpu",
    "meminfo",
    "filesystem",
    "diskstats",
    "netdev",
    "netclass",
    "loadavg",
    "stat",
    "filefd",
    "uname",
    "time",
];

/// Where the kernel's files are: `/proc`, `/sys` and udev's device data
/// (`/run/udev/data`), or copies of them in tests.
#[derive(Debug, Clone)]
pub struct Roots {
    /// procfs.
    pub proc: PathBuf,
    /// sysfs.
    pub sys: PathBuf,
    /// udev's database (disk model, serial, path).
    pub udev: PathBuf,
}

impl Roots {
    /// This host's.
    pub fn host() -> Self {
        Self {
            proc: "/proc".into(),
            sys: "/sys".into(),
            udev: "/run/udev/data".into(),
        }
    }

    /// All three under one directory (`proc/`, `sys/`, `udev/`), for tests.
    pub fn under(dir: &Path) -> Self {
        Self {
            proc: dir.join("proc"),
            sys: dir.join("sys"),
            udev: dir.join("udev"),
        }
    }
}

/// What the collectors leave out, as node_exporter's `*-exclude` flags:
/// anchored regexes, compiled once.
#[derive(Debug, Clone)]
pub struct Exclusions {
    mount_points: regex::Regex,
    fs_types: regex::Regex,
    disks: regex::Regex,
    netdev: regex::Regex,
}

impl Exclusions {
    /// The defaults (Debian's node_exporter 1.5): mount points, filesystem
    /// types, disks, network devices.
    pub const DEFAULT: [&str; 4] = [
        r"^/(dev|proc|run|sys|mnt|media|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)",
        r"^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|sysfs|tracefs)$",
        r"^(ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$",
        "^lo$",
    ];

    /// The settings' patterns compiled; the error names the field.
    pub fn new(c: &crate::config::HostMetricsConfig) -> Result<Self, String> {
        let re = |field: &str, p: &str| {
            regex::Regex::new(p)
                .map_err(|e| format!("agent.host_metrics.{field}: {p:?} is not a regex: {e}"))
        };
        Ok(Self {
            mount_points: re("mount_points_exclude", &c.mount_points_exclude)?,
            fs_types: re("fs_types_exclude", &c.fs_types_exclude)?,
            disks: re("diskstats_device_exclude", &c.diskstats_device_exclude)?,
            netdev: re("netdev_device_exclude", &c.netdev_device_exclude)?,
        })
    }
}

impl Default for Exclusions {
    fn default() -> Self {
        Self::new(&crate::config::HostMetricsConfig::default())
            .unwrap_or_else(|_| unreachable!("the default patterns compile"))
    }
}

/// A file's text, empty when it cannot be read.
fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The series of one collection, each with the `base` labels.
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
            histogram: None,
        });
    }
}

/// One collection from `roots`, with `base` labels (`job`, `instance`)
/// on every series. Filesystem space is read only when `statfs` is set
/// (tests of a copied /proc leave it off).
pub fn collect(
    roots: &Roots,
    exclude: &Exclusions,
    base: &[(String, String)],
    t_ms: i64,
    statfs: bool,
) -> Vec<Point> {
    let mut out = Out {
        points: Vec::new(),
        base,
        t_ms,
    };
    let proc = |f: &str| read(&roots.proc.join(f));
    cpu::stat(&proc("stat"), &mut out);
    cpu::throttles(&roots.sys, &mut out);
    system::loadavg(&proc("loadavg"), &mut out);
    system::meminfo(&proc("meminfo"), &mut out);
    system::filefd(&proc("sys/fs/file-nr"), &mut out);
    disk::diskstats(&proc("diskstats"), &roots.udev, &exclude.disks, &mut out);
    net::netdev(&proc("net/dev"), &roots.sys, &exclude.netdev, &mut out);
    net::netclass(&roots.sys, &mut out);
    system::time(&roots.sys, t_ms, &mut out);
    system::uname(&mut out);
    if statfs {
        fs::filesystems(
            &proc("mounts"),
            &exclude.mount_points,
            &exclude.fs_types,
            &mut out,
        );
    }
    out.points
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
            let p = dir.path().join("proc").join(f);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        };
        w(
            "stat",
            "cpu  10 0 5 100 1 0 0 0 0 0\ncpu0 250 1 50 1000 3 0 2 7 40 5\nintr 555 1 2\nctxt 999\nbtime 1700000000\nprocesses 42\nprocs_running 3\nprocs_blocked 1\n",
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
        let put = |f: &str, text: &str| {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        };
        put(
            "udev/b8:0",
            "S:disk/by-id/x\nE:ID_MODEL=QEMU_HARDDISK\nE:ID_SERIAL_SHORT=QM001\nE:ID_FS_TYPE=ext4\nE:ID_FS_UUID=u-1\nE:ID_ATA=1\nE:ID_ATA_ROTATION_RATE_RPM=7200\nE:ID_ATA_WRITE_CACHE=1\n",
        );
        for (f, v) in [
            ("mtu", "1500\n"),
            ("operstate", "up\n"),
            ("address", "02:fc:00:00:00:01\n"),
            ("speed", "1000\n"),
            ("flags", "0x1003\n"),
            ("statistics/rx_nohandler", "6\n"),
        ] {
            put(&format!("sys/class/net/eth0/{f}"), v);
        }
        put("sys/class/net/bonding_masters", "bond0\n");
        for (cpu, core) in [("cpu0", "0"), ("cpu1", "0"), ("cpu2", "1")] {
            put(
                &format!("sys/devices/system/cpu/{cpu}/topology/physical_package_id"),
                "0\n",
            );
            put(
                &format!("sys/devices/system/cpu/{cpu}/topology/core_id"),
                &format!("{core}\n"),
            );
            put(
                &format!("sys/devices/system/cpu/{cpu}/thermal_throttle/core_throttle_count"),
                &format!("{}{core}\n", 1),
            );
            put(
                &format!("sys/devices/system/cpu/{cpu}/thermal_throttle/package_throttle_count"),
                "9\n",
            );
        }
        let base = vec![("job".to_owned(), "node".to_owned())];
        let p = collect(
            &Roots::under(dir.path()),
            &Exclusions::default(),
            &base,
            5,
            false,
        );
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
        assert_eq!(
            value(
                &p,
                "node_cpu_guest_seconds_total",
                &[("cpu", "0"), ("mode", "nice")]
            ),
            Some(0.05)
        );
        assert_eq!(value(&p, "node_intr_total", &[]), Some(555.0));
        // Two threads of core 0 count once; core 1 apart; the package once.
        assert_eq!(
            value(
                &p,
                "node_cpu_core_throttles_total",
                &[("package", "0"), ("core", "0")]
            ),
            Some(10.0)
        );
        assert_eq!(
            value(
                &p,
                "node_cpu_core_throttles_total",
                &[("package", "0"), ("core", "1")]
            ),
            Some(11.0)
        );
        assert_eq!(
            p.iter()
                .filter(|x| x
                    .labels
                    .iter()
                    .any(|(k, v)| k == "__name__" && v == "node_cpu_package_throttles_total"))
                .count(),
            1
        );
        assert_eq!(
            value(
                &p,
                "node_disk_info",
                &[
                    ("device", "sda"),
                    ("model", "QEMU_HARDDISK"),
                    ("serial", "QM001"),
                    ("major", "8")
                ]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &p,
                "node_disk_io_time_weighted_seconds_total",
                &[("device", "sda")]
            ),
            Some(0.0)
        );
        assert_eq!(
            value(
                &p,
                "node_disk_filesystem_info",
                &[("device", "sda"), ("type", "ext4"), ("uuid", "u-1")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(&p, "node_disk_ata_rotation_rate_rpm", &[("device", "sda")]),
            Some(7200.0)
        );
        assert_eq!(
            value(&p, "node_disk_ata_write_cache", &[("device", "sda")]),
            Some(1.0)
        );
        assert_eq!(
            value(&p, "node_disk_device_mapper_info", &[]),
            None,
            "no DM_NAME, no series"
        );
        assert_eq!(
            value(
                &p,
                "node_network_receive_nohandler_total",
                &[("device", "eth0")]
            ),
            Some(6.0)
        );
        assert_eq!(
            value(&p, "node_network_mtu_bytes", &[("device", "eth0")]),
            Some(1500.0)
        );
        assert_eq!(
            value(&p, "node_network_speed_bytes", &[("device", "eth0")]),
            Some(125_000_000.0)
        );
        assert_eq!(
            value(&p, "node_network_flags", &[("device", "eth0")]),
            Some(4099.0)
        );
        assert_eq!(
            value(&p, "node_network_up", &[("device", "eth0")]),
            Some(1.0)
        );
        assert_eq!(
            value(
                &p,
                "node_network_info",
                &[
                    ("device", "eth0"),
                    ("address", "02:fc:00:00:00:01"),
                    ("operstate", "up")
                ]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(&p, "node_network_carrier", &[("device", "eth0")]),
            None,
            "no file, no series"
        );
        assert_eq!(
            value(&p, "node_network_up", &[("device", "bonding_masters")]),
            None,
            "a file in /sys/class/net is not a device"
        );
        assert_eq!(value(&p, "node_context_switches_total", &[]), Some(999.0));
        assert!(
            p.iter()
                .all(|p| p.labels.contains(&("job".into(), "node".into())) && p.t_ms == 5)
        );
    }

    #[test]
    fn exclusions_are_the_settings_and_a_bad_pattern_names_its_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("proc/net/dev");
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(
            &p,
            "h\nh\n    lo: 1 1 0 0 0 0 0 0 1 1 0 0 0 0 0 0\n  eth0: 2 2 0 0 0 0 0 0 2 2 0 0 0 0 0 0\n",
        )
        .expect("write");
        let devices = |c: &crate::config::HostMetricsConfig| -> Vec<String> {
            let ex = Exclusions::new(c).expect("valid");
            collect(&Roots::under(dir.path()), &ex, &[], 1, false)
                .iter()
                .filter(|p| {
                    p.labels
                        .iter()
                        .any(|(k, v)| k == "__name__" && v == "node_network_receive_bytes_total")
                })
                .filter_map(|p| {
                    p.labels
                        .iter()
                        .find(|(k, _)| k == "device")
                        .map(|(_, v)| v.clone())
                })
                .collect()
        };
        let default = crate::config::HostMetricsConfig::default();
        assert_eq!(devices(&default), ["eth0"]);
        let mine = crate::config::HostMetricsConfig {
            netdev_device_exclude: "^eth".into(),
            ..default.clone()
        };
        assert_eq!(devices(&mine), ["lo"]);
        let bad = crate::config::HostMetricsConfig {
            mount_points_exclude: "(".into(),
            ..default
        };
        let e = Exclusions::new(&bad).expect_err("not a regex");
        assert!(
            e.starts_with("agent.host_metrics.mount_points_exclude:"),
            "{e}"
        );
    }

    #[test]
    fn this_machine_reports_cpu_memory_and_its_root_filesystem() {
        let p = collect(&Roots::host(), &Exclusions::default(), &[], 1, true);
        assert!(value(&p, "node_cpu_seconds_total", &[("mode", "idle")]).is_some_and(|v| v > 0.0));
        assert!(value(&p, "node_memory_MemTotal_bytes", &[]).is_some_and(|v| v > 0.0));
        let root = value(&p, "node_filesystem_size_bytes", &[("mountpoint", "/")]);
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let root_is_real = mounts.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 2 && f[1] == "/" && !Exclusions::default().fs_types.is_match(f[2])
        });
        assert_eq!(
            root.is_some_and(|v| v > 0.0),
            root_is_real,
            "/ is measured when it is a real filesystem"
        );
    }
}
