//! The fleet: start, attach to, inspect, fault-inject and tear down simulated hosts `host1..hostN`.
//! This module holds its types and lifecycle; [`start`], [`control`] and [`stop`] the rest.

mod builder;
mod control;
mod start;
mod stop;

use start::netns_turn;

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{io_err, LabError, Result};
use crate::net;
use crate::procs::{self, Recorded};
use crate::setup::{self, run, LOGIN_USERS, SYSPATH};

const META: &str = ".rollout-lab";
const HOLDER_SCRIPT: &str = r#"set -eu
h=$1; state=$2; name=$3
hostname "$name"
mount --bind "$h/nix" /nix
mount --bind "$h/etc-nix" /etc/nix
mount --bind "$h/etc-hosts" /etc/hosts
for d in /tmp /root /home; do
  src=$h$d
  case "$state" in
    "$d"/*)
      rel=${state#"$d"/}
      mkdir -p "$src/$rel"
      mount --bind "$state" "$src/$rel"
      mount --rbind "$src" "$d" ;;
    *) mount --bind "$src" "$d" ;;
  esac
done
export HOME=/root
nix-store --init
for u in root deploy deploypw hello; do
  mkdir -p "/nix/var/nix/profiles/per-user/$u" "/nix/var/nix/gcroots/per-user/$u"
  chown "$u:" "/nix/var/nix/profiles/per-user/$u" "/nix/var/nix/gcroots/per-user/$u"
done
mkdir -p /nix/var/rollout-lab
echo "$$" > "$h/pids/holder.ready"
exec sleep infinity
"#;

/// How to start a fleet.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// State directory (absolute, no whitespace). Everything of the fleet lives here.
    pub state_dir: PathBuf,
    /// Give each host its own network namespace with a veth pair (10.77.I.1 ⇄ 10.77.I.2).
    pub netns: bool,
    /// sshd port on every host (default 22). 0 picks a free port (what [`Fleet::temp`] does).
    pub port: u16,
    /// Keep the state directory after `down` (default: remove it).
    pub keep_state: bool,
}

impl LabOptions {
    /// Options with the given state dir, port 22, no netns.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        LabOptions {
            state_dir: state_dir.into(),
            netns: false,
            port: 22,
            keep_state: false,
        }
    }
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions::new("/tmp/rollout-lab")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    version: u32,
    hosts: usize,
    port: u16,
    netns: bool,
    /// pid and start time of the process that owns the fleet (tears it down on drop); 0 when detached.
    #[serde(default)]
    owner_pid: u32,
    #[serde(default)]
    owner_start: u64,
}

/// One simulated host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    /// 1-based index I.
    pub index: usize,
    /// `hostI`: the ssh_config alias, the hostname and the HostKeyAlias.
    pub name: String,
    /// Address sshd listens on: 127.0.0.(10+I), or 10.77.I.2 in netns mode.
    pub address: Ipv4Addr,
    /// sshd port.
    pub port: u16,
    /// The host's directory (its `/nix`, `/tmp`, `/root`, `/home`, logs, pids).
    pub dir: PathBuf,
}

/// Liveness of one host, as shown by `rollout-lab status`.
#[derive(Debug, Clone)]
pub struct HostStatus {
    pub host: HostInfo,
    /// Pid of the namespace holder, if alive.
    pub holder: Option<u32>,
    /// Pid of the host's nix-daemon, if alive.
    pub nix_daemon: Option<u32>,
    /// Pid of the host's sshd, if alive.
    pub sshd: Option<u32>,
    /// A socket listens on address:port (read from `/proc/PID/net/tcp`, no probe).
    pub listening: bool,
    /// netns mode: whether the host-side link is up.
    pub link_up: Option<bool>,
}

/// A running fleet of simulated hosts. Dropping a fleet started by [`Fleet::up`]/[`Fleet::temp`] tears it
/// down (also while a test panics); an attached fleet is left running unless [`Fleet::down`] is called.
pub struct Fleet {
    dir: PathBuf,
    meta: Meta,
    owned: bool,
    keep_state: bool,
    stopped: bool,
    reserved_port: Option<u16>,
    password: Option<String>,
    children: Mutex<Vec<Child>>,
    /// Held while a netns fleet of [`Fleet::temp_with`] is up: netns addresses and link names are
    /// fixed, so such fleets take turns.
    netns_turn: Option<fs::File>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("dir", &self.dir)
            .field("hosts", &self.meta.hosts)
            .field("port", &self.meta.port)
            .field("netns", &self.meta.netns)
            .finish()
    }
}

fn check_state_path(p: &Path) -> Result<()> {
    let bad = |why: &str| {
        Err(LabError::BadStateDir {
            path: p.to_path_buf(),
            why: why.into(),
        })
    };
    let s = match p.to_str() {
        Some(s) => s,
        None => return bad("not valid UTF-8"),
    };
    if !p.is_absolute() {
        return bad("must be an absolute path");
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("must not contain whitespace");
    }
    if p.components()
        .any(|c| matches!(c, std::path::Component::ParentDir | std::path::Component::CurDir))
    {
        return bad("must not contain . or .. components");
    }
    let s = s.trim_end_matches('/');
    let forbidden = [
        "", "/tmp", "/root", "/home", "/var", "/run", "/etc", "/usr", "/nix", "/proc", "/sys", "/dev", "/boot", "/bin",
        "/sbin", "/lib", "/opt", "/srv", "/work",
    ];
    if forbidden.contains(&s) {
        return bad("refusing to use a system directory as state dir");
    }
    for pre in [
        "/nix/", "/etc/", "/usr/", "/proc/", "/sys/", "/dev/", "/boot/", "/bin/", "/sbin/", "/lib/",
    ] {
        if s.starts_with(pre) {
            return bad("refusing to use a path under a system directory");
        }
    }
    Ok(())
}

fn host_index(name: &str, count: usize) -> Result<usize> {
    let err = || LabError::NoSuchHost {
        host: name.to_string(),
        count,
    };
    let i: usize = name.strip_prefix("host").ok_or_else(err)?.parse().map_err(|_| err())?;
    if i == 0 || i > count || name != format!("host{i}") {
        return Err(err());
    }
    Ok(i)
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn log_tail(path: &Path) -> String {
    let s = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
    format!("{} (see {})", tail, path.display())
}

fn mkdir(p: &Path, mode: u32) -> Result<()> {
    fs::create_dir_all(p).map_err(io_err(p))?;
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).map_err(io_err(p))
}

fn write(p: &Path, content: &str) -> Result<()> {
    fs::write(p, content).map_err(io_err(p))
}

impl Fleet {
    /// Start `n` hosts as described by `opts`. Fails if a fleet is already up in the state dir.
    pub fn up(n: usize, opts: LabOptions) -> Result<Fleet> {
        if n == 0 || n > 1000 {
            return Err(LabError::Invalid(format!("host count must be 1..=1000, got {n}")));
        }
        if opts.netns && n > 255 {
            return Err(LabError::Invalid(format!(
                "netns mode supports at most 255 hosts, got {n}"
            )));
        }
        let dir = opts.state_dir.clone();
        check_state_path(&dir)?;
        setup::preflight(opts.netns)?;
        let t0 = Instant::now();
        if dir.exists() {
            if dir.join(META).is_file() {
                let old = Fleet::attach(&dir)?;
                if old.any_alive() {
                    return Err(LabError::AlreadyUp { path: dir });
                }
                old.check_no_mounts()?;
            } else if fs::read_dir(&dir).map_err(io_err(&dir))?.next().is_some() {
                return Err(LabError::BadStateDir {
                    path: dir,
                    why: "exists, is not empty and is not a rollout-lab state dir".into(),
                });
            }
            fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
        }
        if opts.netns {
            for i in 1..=n {
                let v = net::veth_name(i);
                if net::link_exists(&v) {
                    return Err(LabError::Netns(format!(
                        "interface {v} already exists: another --netns fleet is probably up (only one at a time)"
                    )));
                }
            }
        }
        let (port, reserved) = match (opts.port, opts.netns) {
            (0, true) => (22, None),
            (0, false) => {
                let p = net::reserve_port(n)?;
                (p, Some(p))
            }
            (p, false) => {
                if !net::port_free(p, n) {
                    return Err(LabError::Invalid(format!(
                        "port {p} is already in use on 127.0.0.11..=127.0.0.{} (another fleet or sshd?); \
                         pick another with --port, or 0 for a free one",
                        10 + n
                    )));
                }
                (p, None)
            }
            (p, true) => (p, None),
        };
        mkdir(&dir.join("hosts"), 0o755)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).map_err(io_err(&dir))?;
        let me = std::process::id();
        let meta = Meta {
            version: 1,
            hosts: n,
            port,
            netns: opts.netns,
            owner_pid: me,
            owner_start: procs::start_time(me).unwrap_or(0),
        };
        write(
            &dir.join(META),
            &serde_json::to_string_pretty(&meta).expect("meta serializes"),
        )?;
        let mut fleet = Fleet {
            dir: dir.clone(),
            meta,
            owned: true,
            keep_state: opts.keep_state,
            stopped: false,
            reserved_port: reserved,
            password: None,
            children: Mutex::new(Vec::new()),
            netns_turn: None,
        };
        match fleet.start_all() {
            Ok(()) => {
                eprintln!(
                    "rollout-lab: {n} hosts up in {:.2}s (state in {})",
                    t0.elapsed().as_secs_f64(),
                    dir.display()
                );
                Ok(fleet)
            }
            Err(e) => {
                eprintln!("rollout-lab: up failed ({e}); stopping what was started");
                if let Err(e2) = fleet.down() {
                    eprintln!("rollout-lab: cleanup after failed up: {e2}");
                }
                Err(e)
            }
        }
    }

    /// Start `n` hosts in a fresh temporary state dir under /tmp on a free port (parallel tests can each
    /// have their own fleet). Torn down, and its directory removed, on drop.
    pub fn temp(n: usize) -> Result<Fleet> {
        Fleet::temp_with(n, false)
    }

    /// Like [`Fleet::temp`], optionally in netns mode (only one netns fleet can be up at a time).
    pub fn temp_with(n: usize, netns: bool) -> Result<Fleet> {
        let turn = if netns { Some(netns_turn()?) } else { None };
        let mut fleet = Fleet::temp_with_inner(n, netns)?;
        fleet.netns_turn = turn;
        Ok(fleet)
    }

    fn temp_with_inner(n: usize, netns: bool) -> Result<Fleet> {
        let td = tempfile::Builder::new()
            .prefix("rollout-lab-")
            .tempdir_in("/tmp")
            .map_err(io_err("/tmp"))?;
        let path = td.keep();
        let opts = LabOptions {
            state_dir: path,
            netns,
            port: 0,
            keep_state: false,
        };
        Fleet::up(n, opts)
    }

    /// Operate on a fleet that is already running (started by another process, e.g. the CLI). The returned
    /// handle does not tear the fleet down when dropped.
    pub fn attach(state_dir: impl AsRef<Path>) -> Result<Fleet> {
        let dir = state_dir.as_ref().to_path_buf();
        check_state_path(&dir)?;
        let mp = dir.join(META);
        let s = fs::read_to_string(&mp).map_err(|_| LabError::NotAFleet { path: dir.clone() })?;
        let meta: Meta = serde_json::from_str(&s).map_err(|e| LabError::Parse {
            what: mp.display().to_string(),
            line: e.to_string(),
            expected: "rollout-lab metadata JSON".into(),
        })?;
        Ok(Fleet {
            dir,
            meta,
            owned: false,
            keep_state: false,
            stopped: false,
            reserved_port: None,
            password: None,
            children: Mutex::new(Vec::new()),
            netns_turn: None,
        })
    }

    /// Keep (or not) the state directory when the fleet is brought down.
    pub fn set_keep_state(&mut self, keep: bool) {
        self.keep_state = keep;
    }

    /// Whether this handle tears the fleet down on drop.
    /// A fleet that is not torn down on drop is "detached": [`Fleet::gc`] never collects it.
    pub fn set_down_on_drop(&mut self, on: bool) {
        self.owned = on;
        if !on && self.meta.owner_pid != 0 {
            self.meta.owner_pid = 0;
            self.meta.owner_start = 0;
            let _ = self.write_meta();
        }
    }

    fn write_meta(&self) -> Result<()> {
        let p = self.dir.join(META);
        let tmp = self.dir.join(".rollout-lab.tmp");
        write(
            &tmp,
            &serde_json::to_string_pretty(&self.meta).expect("meta serializes"),
        )?;
        fs::rename(&tmp, &p).map_err(io_err(&p))
    }

    /// Whether the fleet's owning process (the one whose handle tears it down on drop) is gone while the
    /// fleet is not detached: a fleet leaked by a killed test process.
    pub fn is_orphaned(&self) -> bool {
        self.meta.owner_pid != 0
            && !Recorded {
                pid: self.meta.owner_pid,
                start: self.meta.owner_start,
            }
            .alive()
    }

    /// Bring down fleets leaked by killed test processes: state dirs `/tmp/rollout-lab-*` whose owner is
    /// gone ([`Fleet::is_orphaned`]). Detached fleets (started by the CLI) are left alone. Returns the
    /// state dirs collected (or that would be, with `dry_run`).
    pub fn gc(dry_run: bool) -> Result<Vec<PathBuf>> {
        let mut done = Vec::new();
        let rd = fs::read_dir("/tmp").map_err(io_err("/tmp"))?;
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("rollout-lab-") || !e.path().join(META).is_file() {
                continue;
            }
            let Ok(mut f) = Fleet::attach(e.path()) else {
                continue;
            };
            if !f.is_orphaned() {
                continue;
            }
            if !dry_run {
                f.down()?;
            }
            done.push(e.path());
        }
        Ok(done)
    }

    // ----- accessors -----

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.dir
    }
    /// `DIR/ssh_config`, usable as `ssh -F DIR/ssh_config hostI` and `NIX_SSHOPTS="-F DIR/ssh_config"`.
    pub fn ssh_config(&self) -> PathBuf {
        self.dir.join("ssh_config")
    }
    /// `DIR/known_hosts` (entries keyed by HostKeyAlias `hostI`).
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }
    /// The client private key authorised for root, deploy, deploypw and hello on every host.
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("id_ed25519")
    }
    /// `NIX_SSHOPTS` value for this fleet: `-F DIR/ssh_config`.
    pub fn nix_sshopts(&self) -> String {
        format!("-F {}", self.ssh_config().display())
    }
    /// An `ssh -F DIR/ssh_config TARGET ARGS...` command (TARGET: `hostI` or `user@hostI`).
    pub fn ssh(&self, target: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ssh");
        c.arg("-F").arg(self.ssh_config()).arg(target).args(args);
        c
    }
    /// Number of hosts.
    pub fn len(&self) -> usize {
        self.meta.hosts
    }
    /// Never true: a fleet has at least one host.
    pub fn is_empty(&self) -> bool {
        self.meta.hosts == 0
    }
    /// sshd port of every host.
    pub fn port(&self) -> u16 {
        self.meta.port
    }
    /// Whether hosts have their own network namespaces.
    pub fn netns(&self) -> bool {
        self.meta.netns
    }
    /// `host1..hostN`.
    pub fn host_names(&self) -> Vec<String> {
        (1..=self.meta.hosts).map(|i| format!("host{i}")).collect()
    }
    /// Host `i` (1-based). Panics if out of range; see [`Fleet::host_by_name`] for a checked lookup.
    pub fn host(&self, i: usize) -> HostInfo {
        assert!(
            i >= 1 && i <= self.meta.hosts,
            "host index {i} out of range 1..={}",
            self.meta.hosts
        );
        let address = if self.meta.netns {
            net::netns_addrs(i).expect("checked at up").1
        } else {
            net::loopback_addr(i)
        };
        HostInfo {
            index: i,
            name: format!("host{i}"),
            address,
            port: self.meta.port,
            dir: self.host_dir(i),
        }
    }
    /// Host by name (`hostI`).
    pub fn host_by_name(&self, name: &str) -> Result<HostInfo> {
        Ok(self.host(host_index(name, self.meta.hosts)?))
    }
    /// deploypw's sudo password (from `DIR/deploypw.password`).
    pub fn sudo_password(&self) -> String {
        if let Some(p) = &self.password {
            return p.clone();
        }
        fs::read_to_string(self.dir.join("deploypw.password"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if self.owned && !self.stopped {
            if let Err(e) = self.down() {
                eprintln!("rollout-lab: teardown of {} failed: {e}", self.dir.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn host_names_parse() {
        assert_eq!(host_index("host3", 3).unwrap(), 3);
        assert!(host_index("host4", 3).is_err());
        assert!(host_index("host0", 3).is_err());
        assert!(host_index("host03", 3).is_err());
        assert!(host_index("h1", 3).is_err());
    }
    #[test]
    fn state_paths() {
        assert!(check_state_path(Path::new("/tmp/lab")).is_ok());
        assert!(check_state_path(Path::new("/tmp")).is_err());
        assert!(check_state_path(Path::new("/tmp/")).is_err());
        assert!(check_state_path(Path::new("tmp/lab")).is_err());
        assert!(check_state_path(Path::new("/tmp/a b")).is_err());
        assert!(check_state_path(Path::new("/nix/x")).is_err());
        assert!(check_state_path(Path::new("/tmp/../etc")).is_err());
    }
}
