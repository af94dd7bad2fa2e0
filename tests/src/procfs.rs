//! Small readers of /proc: children of a daemon, open fds, memfds.

use std::path::Path;

/// `(ppid, comm)` of a process, from /proc/PID/stat.
fn stat(pid: i32) -> Option<(i32, String)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ..."; comm may hold spaces or ')', so split at the last ')'.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let mut rest = text.get(close + 1..)?.split_whitespace();
    let _state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((ppid, comm))
}

/// Pids whose parent is `ppid` and whose command name is `comm`
/// (the kernel keeps the first 15 bytes of the executable name).
pub fn children_named(ppid: i32, comm: &str) -> Vec<i32> {
    let comm: String = comm.chars().take(15).collect();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&pid| matches!(stat(pid), Some((p, c)) if p == ppid && c == comm))
        .collect();
    pids.sort_unstable();
    pids
}

/// CPU time a process has used (utime + stime), in clock ticks.
pub fn cpu_ticks(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after "(comm)": state is field 3; utime and stime are 14 and 15.
    let rest = text.get(text.rfind(')')? + 1..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Clock ticks per second (the unit of [`cpu_ticks`]).
pub fn ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100, |t| t as u64)
}

pub fn is_alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Targets of a process's open fds (`/dev/null`, `socket:[..]`, `/memfd:x (deleted)`...).
pub fn fd_targets(pid: i32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|t| t.to_string_lossy().into_owned())
        .collect()
}

pub fn fd_count(pid: i32) -> usize {
    fd_targets(pid).len()
}

/// Open memfds (shared-memory segments) of a process.
pub fn memfd_count(pid: i32) -> usize {
    fd_targets(pid)
        .iter()
        .filter(|t| t.starts_with("/memfd:"))
        .count()
}

/// Memory mappings of memfds (a segment can stay mapped after its fd is closed).
pub fn memfd_mappings(pid: i32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("/memfd:"))
        .count()
}

/// Resident memory of `pid` in KiB (VmRSS), 0 if unreadable.
pub fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn finds_own_child_by_name() {
        let mut child = Command::new("sleep").arg("5").spawn().unwrap();
        let me = std::process::id() as i32;
        let found = children_named(me, "sleep");
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(found.contains(&(child.id() as i32)), "{found:?}");
    }

    #[test]
    fn own_cpu_time_grows_with_work() {
        let me = std::process::id() as i32;
        let before = cpu_ticks(me).unwrap();
        let t0 = std::time::Instant::now();
        let mut x = 0u64;
        while cpu_ticks(me).unwrap() == before && t0.elapsed().as_secs() < 10 {
            x = x.wrapping_mul(31).wrapping_add(1);
        }
        assert!(cpu_ticks(me).unwrap() > before, "{x}");
        assert!(ticks_per_second() > 0);
    }

    #[test]
    fn lists_own_fds() {
        let me = std::process::id() as i32;
        let path = std::env::temp_dir().join(format!("ethflow-fd-probe-{me}"));
        let f = std::fs::File::create(&path).unwrap();
        let targets = fd_targets(me);
        drop(f);
        let _ = std::fs::remove_file(&path);
        assert!(
            targets.iter().any(|t| *t == path.to_string_lossy()),
            "{targets:?}"
        );
        assert!(is_alive(me));
    }
}
