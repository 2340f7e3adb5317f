//! A process's state, CPU time and resident memory, read from Linux'
//! `/proc/<pid>` (`pid` a number, or `self`): one reader for the
//! collector's own metrics, the failover role's check of the
//! postmaster, and the benches and tests that watch a server process.
//! `None` where `/proc` is missing or the process is gone.

/// The fields of `/proc/<pid>/stat` after the command name, which sits in
/// parentheses and may hold spaces: field 3 (the state) first.
fn stat_fields(pid: &str) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// The process's state letter (`R`, `S`, `T` stopped, `Z` zombie, …).
pub fn state(pid: &str) -> Option<char> {
    stat_fields(pid)?.first()?.chars().next()
}

/// User plus system CPU seconds the process has used.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let f = stat_fields(pid)?;
    // utime and stime are fields 14 and 15 of the line; `f` starts at 3.
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    Some(ticks / hz)
}

/// Resident memory in bytes (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_bytes(pid: &str) -> Option<u64> {
    status_bytes(pid, "VmRSS:")
}

/// The resident memory of `pid` that is its own (`RssAnon`: heap and
/// stacks), without the pages of its binary and libraries the kernel
/// shares and can drop.
pub fn anon_bytes(pid: &str) -> Option<u64> {
    status_bytes(pid, "RssAnon:")
}

/// A `kB` line of `/proc/<pid>/status`, in bytes.
fn status_bytes(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_runs_uses_cpu_and_memory_and_a_missing_one_reads_as_none() {
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert_ne!(x, 1);
        assert!(
            state("self").is_some_and(|c| "RS".contains(c)),
            "{:?}",
            state("self")
        );
        // A stopped child reads as stopped.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let pid = child.id().to_string();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGSTOP,
        );
        let started = std::time::Instant::now();
        while state(&pid) != Some('T') && started.elapsed().as_secs() < 10 {
            std::thread::yield_now();
        }
        let stopped = state(&pid);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(stopped, Some('T'));
        assert!(cpu_seconds("self").is_some_and(|s| s >= 0.0));
        assert!(rss_bytes("self").is_some_and(|b| b > 1 << 20));
        assert_eq!(state("999999999"), None);
        assert_eq!(cpu_seconds("999999999"), None);
    }
}
