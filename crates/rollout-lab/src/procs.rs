//! Process bookkeeping: start times, recorded pids, the process table, and host-member discovery by exact
//! namespace ids, the host's `/nix` mount, or descent from recorded pids. Never matches by name.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::Path;

use crate::error::{io_err, Result};

/// A process as recorded when it was started: pid plus its start time (field 22 of `/proc/PID/stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Recorded {
    pub pid: u32,
    pub start: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct ProcInfo {
    pub ppid: u32,
    pub state: char,
    pub start: u64,
}

fn parse_stat(s: &str) -> Option<ProcInfo> {
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcInfo {
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        start: f.get(19)?.parse().ok()?,
    })
}

pub(crate) fn info(pid: u32) -> Option<ProcInfo> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&s)
}

/// Start time of a live (non-zombie) process.
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let i = info(pid)?;
    if i.state == 'Z' || i.state == 'X' {
        return None;
    }
    Some(i.start)
}

impl Recorded {
    pub fn of(pid: u32) -> Option<Recorded> {
        Some(Recorded {
            pid,
            start: start_time(pid)?,
        })
    }
    pub fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start)
    }
    pub fn write(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, format!("{} {}\n", self.pid, self.start)).map_err(io_err(&tmp))?;
        fs::rename(&tmp, path).map_err(io_err(path))
    }
    pub fn read(path: &Path) -> Option<Recorded> {
        let s = fs::read_to_string(path).ok()?;
        let mut it = s.split_whitespace();
        let pid: u32 = it.next()?.parse().ok()?;
        let start: u64 = it.next()?.parse().ok()?;
        (pid > 2).then_some(Recorded { pid, start })
    }
    /// The recorded process if it is still the same live process.
    pub fn read_alive(path: &Path) -> Option<Recorded> {
        Recorded::read(path).filter(|r| r.alive())
    }
}

/// All processes: pid -> (ppid, state, start time).
pub(crate) fn table() -> HashMap<u32, ProcInfo> {
    let mut t = HashMap::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(i) = info(pid) {
                t.insert(pid, i);
            }
        }
    }
    t
}

/// `mnt:[4026531841]`-style id of a namespace, if readable.
pub(crate) fn ns_id(pid: u32, kind: &str) -> Option<String> {
    let l = fs::read_link(format!("/proc/{pid}/ns/{kind}")).ok()?;
    let s = l.to_str()?.to_string();
    valid_ns_id(&s).then_some(s)
}

pub(crate) fn valid_ns_id(s: &str) -> bool {
    let Some((kind, rest)) = s.split_once(":[") else {
        return false;
    };
    matches!(kind, "mnt" | "net" | "uts")
        && rest.ends_with(']')
        && rest.len() > 1
        && rest[..rest.len() - 1].bytes().all(|b| b.is_ascii_digit())
}

/// The "MAJ:MIN ROOT" key of the mount on `/nix` in a process's mountinfo.
pub(crate) fn nix_mount_key(pid: u32) -> Option<String> {
    let s = fs::read_to_string(format!("/proc/{pid}/mountinfo")).ok()?;
    s.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.len() > 4 && f[4] == "/nix").then(|| format!("{} {}", f[2], f[3]))
    })
}

/// Whether the process has exactly the given `/nix` mount (device and source root).
pub(crate) fn has_nix_mount(pid: u32, key: &str) -> bool {
    let Some((dev, root)) = key.split_once(' ') else {
        return false;
    };
    let Ok(s) = fs::read_to_string(format!("/proc/{pid}/mountinfo")) else {
        return false;
    };
    s.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        f.len() > 4 && f[4] == "/nix" && f[2] == dev && f[3] == root
    })
}

/// This process, its ancestors, pid 1 and 2: never signalled.
pub(crate) fn protected(table: &HashMap<u32, ProcInfo>) -> HashSet<u32> {
    let mut p = HashSet::from([0, 1, 2]);
    let mut cur = std::process::id();
    while cur > 0 && p.insert(cur) {
        cur = match table.get(&cur) {
            Some(i) => i.ppid,
            None => break,
        };
    }
    p
}

/// Processes belonging to a host: those whose mount or net namespace is exactly one of `nslist`, those that
/// have the host's `/nix` mount (`mount_key`), the live `roots`, and all descendants of these. Never pid 1/2,
/// kernel threads or zombies.
pub(crate) fn host_members(
    table: &HashMap<u32, ProcInfo>,
    nslist: &HashSet<String>,
    roots: &[Recorded],
    mount_key: Option<&str>,
) -> BTreeSet<u32> {
    let mut kids: HashMap<u32, Vec<u32>> = HashMap::new();
    for (&pid, i) in table {
        kids.entry(i.ppid).or_default().push(pid);
    }
    let eligible = |pid: u32| -> bool {
        match table.get(&pid) {
            Some(i) => pid > 2 && i.ppid != 2 && i.state != 'Z' && i.state != 'X',
            None => false,
        }
    };
    let mut queue: Vec<u32> = Vec::new();
    for &pid in table.keys() {
        if !eligible(pid) {
            continue;
        }
        let ns_hit = !nslist.is_empty()
            && ["mnt", "net"]
                .iter()
                .any(|k| ns_id(pid, k).is_some_and(|id| nslist.contains(&id)));
        if ns_hit || mount_key.is_some_and(|k| has_nix_mount(pid, k)) {
            queue.push(pid);
        }
    }
    for r in roots {
        if table.get(&r.pid).is_some_and(|i| i.start == r.start) {
            queue.push(r.pid);
        }
    }
    let mut out = BTreeSet::new();
    while let Some(p) = queue.pop() {
        if !eligible(p) || !out.insert(p) {
            continue;
        }
        if let Some(k) = kids.get(&p) {
            queue.extend(k.iter().copied());
        }
    }
    out
}

/// Send `sig` to a recorded process, only if it is still the same process and not protected.
pub(crate) fn signal(r: &Recorded, sig: i32, protected: &HashSet<u32>) -> bool {
    if r.pid <= 2 || protected.contains(&r.pid) || !r.alive() {
        return false;
    }
    // SAFETY: kill(2) on a positive pid that we verified (pid + start time) just now.
    unsafe { libc::kill(r.pid as libc::pid_t, sig) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn stat_parsing() {
        let s = "123 (a b) c) S 1 123 123 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 4242 1000 10";
        let i = parse_stat(s).unwrap();
        assert_eq!(i.state, 'S');
        assert_eq!(i.ppid, 1);
        assert_eq!(i.start, 4242);
    }
    #[test]
    fn ns_ids() {
        assert!(valid_ns_id("mnt:[4026531841]"));
        assert!(!valid_ns_id("mnt:[]"));
        assert!(!valid_ns_id("pid:[1]"));
        assert!(!valid_ns_id("mnt:[12a]"));
    }
    #[test]
    fn self_is_protected() {
        let t = table();
        let p = protected(&t);
        assert!(p.contains(&std::process::id()));
        assert!(p.contains(&1));
    }
}
