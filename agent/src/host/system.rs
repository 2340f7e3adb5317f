//! Load, memory, file descriptors, time and uname.

use std::path::Path;

use super::{Out, read};

pub(super) fn loadavg(text: &str, out: &mut Out<'_>) {
    for (name, v) in ["node_load1", "node_load5", "node_load15"]
        .iter()
        .zip(text.split_whitespace())
    {
        if let Ok(v) = v.parse() {
            out.push(name, &[], v);
        }
    }
}

/// Every `/proc/meminfo` line: `node_memory_<Field>_bytes` (`Active(anon)`
/// as `Active_anon`), counts (`HugePages_Total`) without `_bytes`.
pub(super) fn meminfo(text: &str, out: &mut Out<'_>) {
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let Some(Ok(v)) = f.next().map(str::parse::<f64>) else {
            continue;
        };
        let kb = f.next() == Some("kB");
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

/// `/proc/sys/fs/file-nr`: allocated and maximum file handles.
pub(super) fn filefd(text: &str, out: &mut Out<'_>) {
    let fds: Vec<f64> = text
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    if let [allocated, _, maximum] = fds[..] {
        out.push("node_filefd_allocated", &[], allocated);
        out.push("node_filefd_maximum", &[], maximum);
    }
}

/// The time of the collection, the local zone's offset, and the clock
/// sources (`node_time_*`, node_exporter's time collector).
pub(super) fn time(sys: &Path, t_ms: i64, out: &mut Out<'_>) {
    out.push("node_time_seconds", &[], t_ms as f64 / 1000.0);
    if let Ok(ts) = jiff::Timestamp::from_millisecond(t_ms) {
        let tz = jiff::tz::TimeZone::system();
        let info = tz.to_offset_info(ts);
        out.push(
            "node_time_zone_offset_seconds",
            &[("time_zone", info.abbreviation())],
            f64::from(info.offset().seconds()),
        );
    }
    let Ok(dirs) = std::fs::read_dir(sys.join("devices/system/clocksource")) else {
        return;
    };
    let mut dirs: Vec<_> = dirs.flatten().collect();
    dirs.sort_by_key(|d| d.file_name());
    for d in dirs {
        let name = d.file_name().to_string_lossy().into_owned();
        let Some(n) = name.strip_prefix("clocksource") else {
            continue;
        };
        for s in read(&d.path().join("available_clocksource")).split_whitespace() {
            out.push(
                "node_time_clocksource_available_info",
                &[("clocksource", s), ("device", n)],
                1.0,
            );
        }
        let current = read(&d.path().join("current_clocksource"));
        if let Some(s) = current.split_whitespace().next() {
            out.push(
                "node_time_clocksource_current_info",
                &[("clocksource", s), ("device", n)],
                1.0,
            );
        }
    }
}

/// `node_uname_info`: the kernel's uname(2).
pub(super) fn uname(out: &mut Out<'_>) {
    let Ok(u) = nix::sys::utsname::uname() else {
        return;
    };
    let s = |v: &std::ffi::OsStr| v.to_string_lossy().into_owned();
    let (sysname, nodename, release, version, machine, domain) = (
        s(u.sysname()),
        s(u.nodename()),
        s(u.release()),
        s(u.version()),
        s(u.machine()),
        s(u.domainname()),
    );
    out.push(
        "node_uname_info",
        &[
            ("domainname", &domain),
            ("machine", &machine),
            ("nodename", &nodename),
            ("release", &release),
            ("sysname", &sysname),
            ("version", &version),
        ],
        1.0,
    );
}
