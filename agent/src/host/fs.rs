//! Filesystems as node_exporter's filesystem collector reports them:
//! size, free and available bytes, inodes, read-only and whether statfs
//! failed, for each mount its default exclusions keep.

use std::sync::LazyLock;

use super::Out;

/// node_exporter's default `--collector.filesystem.mount-points-exclude`
/// as Debian's package ships it (upstream's leaves `/run`, `/mnt` and
/// `/media` in, but `/run/credentials/…`): the node_exporter users of
/// these hosts run.
static MOUNT_EXCLUDE: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(
        r"^/(dev|proc|run|sys|mnt|media|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)",
    )
    .unwrap_or_else(|_| unreachable!("a constant pattern"))
});

/// node_exporter's default `--collector.filesystem.fs-types-exclude`.
pub(super) const PSEUDO_FS: [&str; 24] = [
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

/// /proc/mounts escapes spaces and tabs in paths as octal (`\040`).
fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

pub(super) fn filesystems(mounts: &str, out: &mut Out<'_>) {
    let mut done = std::collections::HashSet::new();
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [device, mountpoint, fstype, options, ..] = f[..] else {
            continue;
        };
        let (device, mountpoint) = (unescape(device), unescape(mountpoint));
        if PSEUDO_FS.contains(&fstype)
            || MOUNT_EXCLUDE.is_match(&mountpoint)
            || !done.insert(mountpoint.clone())
        {
            continue;
        }
        let l = [
            ("device", device.as_str()),
            ("fstype", fstype),
            ("mountpoint", mountpoint.as_str()),
        ];
        let Ok(s) = nix::sys::statvfs::statvfs(mountpoint.as_str()) else {
            out.push("node_filesystem_device_error", &l, 1.0);
            continue;
        };
        out.push("node_filesystem_device_error", &l, 0.0);
        let readonly = options.split(',').any(|o| o == "ro");
        out.push(
            "node_filesystem_readonly",
            &l,
            if readonly { 1.0 } else { 0.0 },
        );
        let frag = s.fragment_size() as f64;
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
        out.push("node_filesystem_files", &l, s.files() as f64);
        out.push("node_filesystem_files_free", &l, s.files_free() as f64);
    }
}
