//! Filesystems as node_exporter's filesystem collector reports them:
//! size, free and available bytes, inodes, read-only and whether statfs
//! failed, for each mount the exclusions keep (node_exporter's defaults
//! as Debian ships them, unless `agent.host_metrics` says otherwise).

use super::Out;

/// /proc/mounts escapes spaces and tabs in paths as octal (`\040`).
fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

pub(super) fn filesystems(
    mounts: &str,
    mount_points: &regex::Regex,
    fs_types: &regex::Regex,
    out: &mut Out<'_>,
) {
    let mut done = std::collections::HashSet::new();
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [device, mountpoint, fstype, options, ..] = f[..] else {
            continue;
        };
        let (device, mountpoint) = (unescape(device), unescape(mountpoint));
        if fs_types.is_match(fstype)
            || mount_points.is_match(&mountpoint)
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
