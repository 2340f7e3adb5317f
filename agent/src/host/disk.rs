//! `/proc/diskstats` as node_exporter's diskstats collector reads it:
//! every counter of a whole disk (partitions, ram, loop and floppy
//! devices left out by the default pattern) and `node_disk_info` with
//! udev's model, serial, path, revision and WWN.

use std::path::Path;

use super::{Out, read};

/// Sectors in /proc/diskstats are 512 bytes whatever the device's.
const SECTOR: f64 = 512.0;

/// The counters after major, minor and name, by position: name, scale.
const FIELDS: [(&str, f64); 17] = [
    ("node_disk_reads_completed_total", 1.0),
    ("node_disk_reads_merged_total", 1.0),
    ("node_disk_read_bytes_total", SECTOR),
    ("node_disk_read_time_seconds_total", 0.001),
    ("node_disk_writes_completed_total", 1.0),
    ("node_disk_writes_merged_total", 1.0),
    ("node_disk_written_bytes_total", SECTOR),
    ("node_disk_write_time_seconds_total", 0.001),
    ("node_disk_io_now", 1.0),
    ("node_disk_io_time_seconds_total", 0.001),
    ("node_disk_io_time_weighted_seconds_total", 0.001),
    ("node_disk_discards_completed_total", 1.0),
    ("node_disk_discards_merged_total", 1.0),
    ("node_disk_discarded_sectors_total", 1.0),
    ("node_disk_discard_time_seconds_total", 0.001),
    ("node_disk_flush_requests_total", 1.0),
    ("node_disk_flush_requests_time_seconds_total", 0.001),
];

/// udev's properties of block device `major:minor` (`E:KEY=value`).
fn udev(dir: &Path, major: &str, minor: &str) -> std::collections::HashMap<String, String> {
    read(&dir.join(format!("b{major}:{minor}")))
        .lines()
        .filter_map(|l| l.strip_prefix("E:")?.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

pub(super) fn diskstats(text: &str, udev_dir: &Path, exclude: &regex::Regex, out: &mut Out<'_>) {
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 14 {
            continue;
        }
        let (major, minor, dev) = (f[0], f[1], f[2]);
        if exclude.is_match(dev) {
            continue;
        }
        let d = [("device", dev)];
        for ((name, scale), v) in FIELDS.iter().zip(&f[3..]) {
            if let Ok(v) = v.parse::<f64>() {
                out.push(name, &d, v * scale);
            }
        }
        let props = udev(udev_dir, major, minor);
        let get = |k: &str| props.get(k).map_or("", String::as_str);
        let serial = props
            .get("ID_SERIAL_SHORT")
            .or_else(|| props.get("SCSI_IDENT_SERIAL"))
            .map_or("", String::as_str);
        udev_series(dev, &props, out);
        out.push(
            "node_disk_info",
            &[
                ("device", dev),
                ("major", major),
                ("minor", minor),
                ("model", get("ID_MODEL")),
                ("path", get("ID_PATH")),
                ("revision", get("ID_REVISION")),
                ("serial", serial),
                ("wwn", get("ID_WWN")),
            ],
            1.0,
        );
    }
}

/// What node_exporter derives from udev beyond `node_disk_info`: the
/// filesystem on the device, its device-mapper names, and for ATA disks
/// the write cache and rotation rate.
fn udev_series(dev: &str, props: &std::collections::HashMap<String, String>, out: &mut Out<'_>) {
    let get = |k: &str| props.get(k).map_or("", String::as_str);
    if props.contains_key("ID_FS_TYPE") {
        out.push(
            "node_disk_filesystem_info",
            &[
                ("device", dev),
                ("type", get("ID_FS_TYPE")),
                ("usage", get("ID_FS_USAGE")),
                ("uuid", get("ID_FS_UUID")),
                ("version", get("ID_FS_VERSION")),
            ],
            1.0,
        );
    }
    if props.contains_key("DM_NAME") {
        out.push(
            "node_disk_device_mapper_info",
            &[
                ("device", dev),
                ("lv_layer", get("DM_LV_LAYER")),
                ("lv_name", get("DM_LV_NAME")),
                ("name", get("DM_NAME")),
                ("uuid", get("DM_UUID")),
                ("vg_name", get("DM_VG_NAME")),
            ],
            1.0,
        );
    }
    if props.contains_key("ID_ATA") {
        for (key, name) in [
            ("ID_ATA_WRITE_CACHE", "node_disk_ata_write_cache"),
            (
                "ID_ATA_WRITE_CACHE_ENABLED",
                "node_disk_ata_write_cache_enabled",
            ),
            (
                "ID_ATA_ROTATION_RATE_RPM",
                "node_disk_ata_rotation_rate_rpm",
            ),
        ] {
            if let Some(v) = props.get(key).and_then(|v| v.parse::<f64>().ok()) {
                out.push(name, &[("device", dev)], v);
            }
        }
    }
}
