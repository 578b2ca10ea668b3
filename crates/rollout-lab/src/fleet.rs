//! The fleet: start, attach to, inspect, fault-inject and tear down simulated hosts `host1..hostN`.

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

    fn host_dir(&self, i: usize) -> PathBuf {
        self.dir.join("hosts").join(format!("host{i}"))
    }
    fn pidfile(&self, i: usize, name: &str) -> PathBuf {
        self.host_dir(i).join("pids").join(name)
    }
    fn holder(&self, i: usize) -> Option<Recorded> {
        Recorded::read_alive(&self.pidfile(i, "holder"))
    }
    fn live_holder(&self, i: usize) -> Result<u32> {
        self.holder(i).map(|r| r.pid).ok_or_else(|| LabError::Host {
            host: format!("host{i}"),
            what: "namespace holder is not running (fleet down?)".into(),
        })
    }

    // ----- start -----

    fn start_all(&mut self) -> Result<()> {
        self.password = Some(setup::ensure_users()?);
        setup::write_private(
            &self.dir.join("deploypw.password"),
            &format!("{}\n", self.password.as_deref().unwrap_or("")),
        )?;
        let key = self.client_key();
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "rollout-lab-client", "-f"])
            .arg(&key))?;
        let _ = fs::create_dir_all("/run/sshd");
        let n = self.meta.hosts;
        let this = &*self;
        let results = this.on_each_host(n, "host start", |i| this.start_host(i));
        results.into_iter().collect::<Result<Vec<()>>>()?;
        self.write_client_files()
    }

    fn write_host_files(&self, i: usize) -> Result<()> {
        let h = self.host_dir(i);
        let name = format!("host{i}");
        for d in ["nix", "etc-nix", "pids", "log", "home"] {
            mkdir(&h.join(d), 0o755)?;
        }
        mkdir(&h.join("tmp"), 0o1777)?;
        mkdir(&h.join("root"), 0o700)?;
        let pubkey = fs::read_to_string(self.client_key().with_extension("pub"))
            .map_err(io_err(self.client_key().with_extension("pub")))?;
        for u in LOGIN_USERS {
            let home = if u == "root" {
                h.join("root")
            } else {
                h.join("home").join(u)
            };
            mkdir(&home.join(".ssh"), 0o700)?;
            if u != "root" {
                fs::set_permissions(&home, fs::Permissions::from_mode(0o755)).map_err(io_err(&home))?;
            }
            let ak = home.join(".ssh/authorized_keys");
            write(&ak, &pubkey)?;
            fs::set_permissions(&ak, fs::Permissions::from_mode(0o600)).map_err(io_err(&ak))?;
            setup::chown_r(&home, u)?;
        }
        // the host's own /etc/nix: the machine's files, then our settings (later lines win)
        if let Ok(rd) = fs::read_dir("/etc/nix") {
            for e in rd.flatten() {
                if e.path().is_file() {
                    let _ = fs::copy(e.path(), h.join("etc-nix").join(e.file_name()));
                }
            }
        }
        let base = fs::read_to_string("/etc/nix/nix.conf").unwrap_or_default();
        write(
            &h.join("etc-nix/nix.conf"),
            &format!(
                "{base}\n# rollout-lab {name}\ntrusted-users = root deploy deploypw\nexperimental-features = nix-command flakes\nsubstituters =\nsandbox = false\n"
            ),
        )?;
        let addr = self.host(i).address;
        let hosts = fs::read_to_string("/etc/hosts").unwrap_or_else(|_| "127.0.0.1 localhost\n".into());
        write(&h.join("etc-hosts"), &format!("{}\n{addr} {name}\n", hosts.trim_end()))?;
        let hk = h.join("ssh_host_ed25519_key");
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", &name, "-f"])
            .arg(&hk))?;
        write(
            &h.join("sshd_config"),
            &format!(
                "# sshd of simulated {name} (generated by rollout-lab)\n\
                 ListenAddress {addr}:{port}\n\
                 HostKey {hk}\n\
                 PidFile none\n\
                 AuthorizedKeysFile .ssh/authorized_keys\n\
                 PermitRootLogin prohibit-password\n\
                 PubkeyAuthentication yes\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 UsePAM yes\n\
                 UseDNS no\n\
                 AllowUsers root deploy deploypw hello\n\
                 PrintMotd no\n\
                 MaxStartups 200:30:400\n\
                 MaxSessions 100\n\
                 MaxAuthTries 10\n\
                 AcceptEnv LANG LC_*\n\
                 Subsystem sftp /usr/lib/openssh/sftp-server\n\
                 LogLevel INFO\n",
                port = self.meta.port,
                hk = hk.display()
            ),
        )
    }

    fn start_host(&self, i: usize) -> Result<()> {
        let host = format!("host{i}");
        let herr = |what: String| LabError::Host {
            host: host.clone(),
            what,
        };
        self.write_host_files(i)?;
        let h = self.host_dir(i);
        let log = h.join("log/holder.log");
        let logf = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io_err(&log))?;
        let mut cmd = Command::new("setsid");
        cmd.args(["unshare", "--mount", "--uts", "--propagation", "private"]);
        if self.meta.netns {
            cmd.arg("--net");
        }
        cmd.args(["--", "/bin/sh", "-c", HOLDER_SCRIPT, "rollout-lab-holder"])
            .arg(&h)
            .arg(&self.dir)
            .arg(&host)
            .env_clear()
            .env("PATH", SYSPATH)
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null())
            .stdout(logf.try_clone().map_err(io_err(&log))?)
            .stderr(logf);
        let mut child = cmd
            .spawn()
            .map_err(|e| herr(format!("cannot start namespace holder: {e}")))?;
        let pid = child.id();
        let rec = Recorded::of(pid).ok_or_else(|| herr(format!("holder exited at once: {}", log_tail(&log))))?;
        rec.write(&self.pidfile(i, "holder"))?;
        let ready = self.pidfile(i, "holder.ready");
        let mut exited = None;
        let ok = wait_until(Duration::from_secs(60), || {
            if let Ok(Some(st)) = child.try_wait() {
                exited = Some(st);
                return true;
            }
            fs::read_to_string(&ready)
                .map(|s| s.trim() == pid.to_string())
                .unwrap_or(false)
        });
        self.children.lock().unwrap_or_else(|e| e.into_inner()).push(child);
        if let Some(st) = exited {
            return Err(herr(format!("namespace setup failed ({st}): {}", log_tail(&log))));
        }
        if !ok {
            return Err(herr(format!("namespace setup timed out: {}", log_tail(&log))));
        }
        let key = procs::nix_mount_key(pid).ok_or_else(|| herr("no /nix mount in the holder's namespace".into()))?;
        if !key.ends_with(&format!("/hosts/host{i}/nix")) {
            return Err(herr(format!("unexpected /nix mount in holder: {key}")));
        }
        write(&self.pidfile(i, "nix.mount"), &format!("{key}\n"))?;
        for (kind, file) in [("mnt", "holder.mntns"), ("net", "holder.netns")] {
            if let Some(id) = procs::ns_id(pid, kind) {
                write(&self.pidfile(i, file), &format!("{id}\n"))?;
            }
        }
        if self.meta.netns {
            let v = net::setup_veth(i, pid)?;
            write(&self.pidfile(i, "veth"), &format!("{v}\n"))?;
            write(
                &h.join("nix/var/rollout-lab/netns-iface"),
                &format!("{}\n", net::HOST_IFACE),
            )?;
        }
        self.start_daemon(i)?;
        self.start_sshd(i)
    }

    /// Start argv detached inside host i's namespaces with a clean environment; record it in pids/NAME.
    fn spawn_in_host(&self, i: usize, name: &str, argv: &[&str]) -> Result<Recorded> {
        let holder = self.live_holder(i)?;
        let h = self.host_dir(i);
        let log = h.join("log").join(format!("{name}.log"));
        let logf = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io_err(&log))?;
        let mut cmd = Command::new("setsid");
        cmd.args(self.enter_host(holder))
            .args(argv)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().map_err(io_err(&log))?)
            .stderr(logf);
        let child = cmd.spawn().map_err(|e| LabError::Host {
            host: format!("host{i}"),
            what: format!("cannot start {name}: {e}"),
        })?;
        let rec = Recorded::of(child.id());
        self.children.lock().unwrap_or_else(|e| e.into_inner()).push(child);
        let rec = rec.ok_or_else(|| LabError::Host {
            host: format!("host{i}"),
            what: format!("{name} exited at once: {}", log_tail(&log)),
        })?;
        rec.write(&self.pidfile(i, name))?;
        Ok(rec)
    }

    fn start_daemon(&self, i: usize) -> Result<()> {
        let h = self.host_dir(i);
        let sock = h.join("nix/var/nix/daemon-socket/socket");
        let _ = fs::remove_file(&sock);
        let rec = self.spawn_in_host(i, "nix-daemon", &["nix-daemon"])?;
        if !wait_until(Duration::from_secs(30), || sock.exists() || !rec.alive()) || !rec.alive() {
            return Err(LabError::Host {
                host: format!("host{i}"),
                what: format!("nix-daemon did not start: {}", log_tail(&h.join("log/nix-daemon.log"))),
            });
        }
        Ok(())
    }

    fn start_sshd(&self, i: usize) -> Result<()> {
        let h = self.host_dir(i);
        let cfg = h.join("sshd_config");
        let log = h.join("log/sshd.log");
        let (cfg_s, log_s) = (cfg.to_string_lossy().into_owned(), log.to_string_lossy().into_owned());
        let rec = self.spawn_in_host(i, "sshd", &["/usr/sbin/sshd", "-D", "-f", &cfg_s, "-E", &log_s])?;
        let info = self.host(i);
        let holder = self.live_holder(i)?;
        if !wait_until(Duration::from_secs(30), || {
            net::is_listening(Some(holder), info.address, info.port) || !rec.alive()
        }) || !rec.alive()
        {
            return Err(LabError::Host {
                host: info.name,
                what: format!(
                    "sshd not listening on {}:{}: {}",
                    info.address,
                    info.port,
                    log_tail(&log)
                ),
            });
        }
        write(&h.join("nix/var/rollout-lab/sshd.pid"), &format!("{}\n", rec.pid))
    }

    fn write_client_files(&self) -> Result<()> {
        let mut kh = String::new();
        let mut cfg = String::from("# rollout-lab fleet: ssh -F THIS_FILE hostI\n");
        for i in 1..=self.meta.hosts {
            let info = self.host(i);
            let pubf = info.dir.join("ssh_host_ed25519_key.pub");
            let p = fs::read_to_string(&pubf).map_err(io_err(&pubf))?;
            let key: Vec<&str> = p.split_whitespace().take(2).collect();
            kh.push_str(&format!("{} {}\n", info.name, key.join(" ")));
            cfg.push_str(&format!(
                "\nHost {name}\n  HostName {addr}\n  Port {port}\n  HostKeyAlias {name}\n  IdentityFile {key}\n  IdentitiesOnly yes\n  UserKnownHostsFile {kh}\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  UpdateHostKeys no\n  BatchMode yes\n  ConnectTimeout 5\n  LogLevel ERROR\n",
                name = info.name,
                addr = info.address,
                port = info.port,
                key = self.client_key().display(),
                kh = self.known_hosts().display()
            ));
        }
        write(&self.known_hosts(), &kh)?;
        write(&self.ssh_config(), &cfg)
    }

    // ----- operate -----

    /// Run `argv` as root inside the host's mount+UTS (and net) namespaces via nsenter, with a clean
    /// environment. Works even when the host's sshd is dead.
    pub fn exec(&self, host: &str, argv: &[&str]) -> Result<Output> {
        self.exec_cmd(host, argv, None)
    }

    /// Like [`Fleet::exec`] with bytes on stdin.
    pub fn exec_with_input(&self, host: &str, argv: &[&str], input: &[u8]) -> Result<Output> {
        self.exec_cmd(host, argv, Some(input))
    }

    fn exec_cmd(&self, host: &str, argv: &[&str], input: Option<&[u8]>) -> Result<Output> {
        if argv.is_empty() {
            return Err(LabError::Invalid("exec needs a command".into()));
        }
        let i = host_index(host, self.meta.hosts)?;
        let holder = self.live_holder(i)?;
        let enter = self.enter_host(holder);
        let mut cmd = Command::new(&enter[0]);
        cmd.args(&enter[1..]).args(argv);
        match input {
            None => setup::output(&mut cmd),
            Some(inp) => {
                use std::io::Write;
                let err = |e: std::io::Error| LabError::Command {
                    cmd: format!("exec on {host}: {}", argv.join(" ")),
                    detail: e.to_string(),
                };
                let mut c = cmd
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(err)?;
                let _ = c.stdin.take().expect("piped").write_all(inp);
                c.wait_with_output().map_err(err)
            }
        }
    }

    /// Run `argv` in the host and return its stdout (trimmed); error if it exits non-zero.
    pub fn exec_ok(&self, host: &str, argv: &[&str]) -> Result<String> {
        let out = self.exec(host, argv)?;
        if !out.status.success() {
            return Err(LabError::Command {
                cmd: format!("exec on {host}: {}", argv.join(" ")),
                detail: format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn reap(&self) {
        let mut ch = self.children.lock().unwrap_or_else(|e| e.into_inner());
        ch.retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_)) | Err(_)));
    }

    fn stop_recorded(&self, rec: Recorded) {
        let protected = procs::protected(&procs::table());
        procs::signal(&rec, libc::SIGTERM, &protected);
        if !wait_until(Duration::from_secs(5), || {
            self.reap();
            !rec.alive()
        }) {
            procs::signal(&rec, libc::SIGKILL, &protected);
            wait_until(Duration::from_secs(2), || {
                self.reap();
                !rec.alive()
            });
        }
        self.reap();
    }

    /// Stop the host's sshd listener (sessions already open stay). Nothing happens if it is not running.
    pub fn kill_sshd(&self, host: &str) -> Result<()> {
        let i = host_index(host, self.meta.hosts)?;
        if let Some(rec) = Recorded::read_alive(&self.pidfile(i, "sshd")) {
            self.stop_recorded(rec);
        }
        Ok(())
    }

    /// (Re)start the host's sshd: stops it first if running.
    pub fn restart_sshd(&self, host: &str) -> Result<()> {
        self.kill_sshd(host)?;
        let i = host_index(host, self.meta.hosts)?;
        self.start_sshd(i)
    }

    /// Restart the host's nix-daemon if it is dead.
    pub fn ensure_daemon(&self, host: &str) -> Result<()> {
        let i = host_index(host, self.meta.hosts)?;
        if Recorded::read_alive(&self.pidfile(i, "nix-daemon")).is_none() {
            self.start_daemon(i)?;
        }
        Ok(())
    }

    fn netns_holder(&self, host: &str) -> Result<(usize, u32)> {
        if !self.meta.netns {
            return Err(LabError::Netns(format!(
                "{host}: the fleet in {} is not in netns mode (start it with --netns)",
                self.dir.display()
            )));
        }
        let i = host_index(host, self.meta.hosts)?;
        Ok((i, self.live_holder(i)?))
    }

    /// netns mode: set the host's link down; ssh to it then fails (existing connections stall).
    pub fn cut(&self, host: &str) -> Result<()> {
        let (i, holder) = self.netns_holder(host)?;
        net::set_link(holder, &net::veth_name(i), false)
    }

    /// netns mode: bring the host's link up again.
    pub fn heal(&self, host: &str) -> Result<()> {
        let (i, holder) = self.netns_holder(host)?;
        net::set_link(holder, &net::veth_name(i), true)
    }

    /// Number of successful SSH authentications ("Accepted publickey" lines) in the host's sshd log.
    pub fn sshd_auth_count(&self, host: &str) -> usize {
        let Ok(i) = host_index(host, self.meta.hosts) else {
            return 0;
        };
        fs::read_to_string(self.host_dir(i).join("log/sshd.log"))
            .map(|s| s.lines().filter(|l| l.contains("Accepted publickey")).count())
            .unwrap_or(0)
    }

    /// Sum of [`Fleet::sshd_auth_count`] over all hosts.
    pub fn total_auth_count(&self) -> usize {
        self.host_names().iter().map(|h| self.sshd_auth_count(h)).sum()
    }

    /// Path of the host's sshd log.
    pub fn sshd_log(&self, host: &str) -> Result<PathBuf> {
        Ok(self.host_dir(host_index(host, self.meta.hosts)?).join("log/sshd.log"))
    }

    /// Liveness of every host.
    pub fn status(&self) -> Vec<HostStatus> {
        (1..=self.meta.hosts)
            .map(|i| {
                let host = self.host(i);
                let holder = self.holder(i).map(|r| r.pid);
                let listening = match holder {
                    Some(p) => net::is_listening(Some(p), host.address, host.port),
                    None => !self.meta.netns && net::is_listening(None, host.address, host.port),
                };
                let link_up = if self.meta.netns {
                    holder.and_then(net::link_is_up)
                } else {
                    None
                };
                HostStatus {
                    holder,
                    nix_daemon: Recorded::read_alive(&self.pidfile(i, "nix-daemon")).map(|r| r.pid),
                    sshd: Recorded::read_alive(&self.pidfile(i, "sshd")).map(|r| r.pid),
                    listening,
                    link_up,
                    host,
                }
            })
            .collect()
    }

    /// Whether any recorded process of the fleet is still alive.
    pub fn any_alive(&self) -> bool {
        (1..=self.meta.hosts).any(|i| {
            ["holder", "sshd", "nix-daemon"]
                .iter()
                .any(|n| Recorded::read_alive(&self.pidfile(i, n)).is_some())
        })
    }

    /// Every recorded process (holder, nix-daemon, sshd of each host) as (pid, start time), alive or not.
    pub fn recorded_processes(&self) -> Vec<(u32, u64)> {
        (1..=self.meta.hosts)
            .flat_map(|i| {
                ["holder", "sshd", "nix-daemon"]
                    .into_iter()
                    .filter_map(move |n| Recorded::read(&self.pidfile(i, n)))
            })
            .map(|r| (r.pid, r.start))
            .collect()
    }

    /// Processes currently belonging to the host (by namespace, /nix mount or descent).
    pub fn host_processes(&self, host: &str) -> Result<Vec<u32>> {
        let i = host_index(host, self.meta.hosts)?;
        Ok(self.scan_members(i).into_iter().collect())
    }

    // ----- stop -----

    /// Run `f` for hosts 1..=n at once (one thread each), returning each host's result in order.
    fn on_each_host(&self, n: usize, what: &str, f: impl Fn(usize) -> Result<()> + Sync) -> Vec<Result<()>> {
        std::thread::scope(|s| {
            let f = &f;
            let hs: Vec<_> = (1..=n).map(|i| s.spawn(move || f(i))).collect();
            hs.into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(LabError::Invalid(format!("{what} thread panicked"))))
                })
                .collect()
        })
    }

    /// `nsenter … -- env -i …`: the words that run a command as root inside a host's namespaces
    /// with a clean environment.
    fn enter_host(&self, holder: u32) -> Vec<String> {
        let mut v = vec![
            "nsenter".to_string(),
            format!("--target={holder}"),
            "--mount".into(),
            "--uts".into(),
        ];
        if self.meta.netns {
            v.push("--net".into());
        }
        v.extend(["--", "env", "-i"].map(String::from));
        v.extend([format!("PATH={SYSPATH}"), "HOME=/root".into(), "LANG=C.UTF-8".into()]);
        v
    }

    fn mount_key(&self, i: usize) -> Option<String> {
        let s = fs::read_to_string(self.pidfile(i, "nix.mount")).ok()?;
        let k = s.trim().to_string();
        let (dev, root) = k.split_once(' ')?;
        let dev_ok = dev.split_once(':').is_some_and(|(a, b)| {
            !a.is_empty() && !b.is_empty() && (a.to_owned() + b).bytes().all(|c| c.is_ascii_digit())
        });
        (dev_ok && root.ends_with(&format!("/hosts/host{i}/nix")) && !root.contains(char::is_whitespace)).then_some(k)
    }

    /// Processes of host i now. Namespace ids are taken only from recorded processes that are alive
    /// for the whole scan (a namespace id can be reused once its last process is gone), and the scan is
    /// repeated if one of them died meanwhile.
    fn scan_members(&self, i: usize) -> BTreeSet<u32> {
        let me = std::process::id();
        let mine: HashSet<String> = ["mnt", "net", "uts"]
            .iter()
            .filter_map(|k| procs::ns_id(me, k))
            .collect();
        let key = self.mount_key(i);
        for attempt in 0..4 {
            let roots: Vec<Recorded> = ["holder", "nix-daemon", "sshd"]
                .iter()
                .filter_map(|n| Recorded::read_alive(&self.pidfile(i, n)))
                .collect();
            let mut ns = HashSet::new();
            if attempt < 3 {
                for r in &roots {
                    for k in ["mnt", "net"] {
                        if let Some(id) = procs::ns_id(r.pid, k) {
                            ns.insert(id);
                        }
                    }
                }
                ns.retain(|id| !mine.contains(id));
            }
            let table = procs::table();
            let members = procs::host_members(&table, &ns, &roots, key.as_deref());
            if ns.is_empty() || roots.iter().all(|r| r.alive()) {
                return members;
            }
        }
        unreachable!("the last attempt uses no namespace ids")
    }

    fn stop_host(&self, i: usize) -> Result<()> {
        let host = format!("host{i}");
        let protected = procs::protected(&procs::table());
        let members = self.scan_members(i);
        let bad: Vec<u32> = members.iter().copied().filter(|p| protected.contains(p)).collect();
        if !bad.is_empty() {
            return Err(LabError::Protected { host, pids: bad });
        }
        // stop accepting new work first
        for name in ["sshd", "nix-daemon"] {
            if let Some(r) = Recorded::read_alive(&self.pidfile(i, name)) {
                procs::signal(&r, libc::SIGTERM, &protected);
            }
        }
        let snapshot: Vec<Recorded> = members.iter().filter_map(|&p| Recorded::of(p)).collect();
        let still = || -> BTreeSet<Recorded> {
            let mut s: BTreeSet<Recorded> = snapshot.iter().copied().filter(|r| r.alive()).collect();
            for p in self.scan_members(i) {
                if let Some(r) = Recorded::of(p) {
                    s.insert(r);
                }
            }
            s.retain(|r| !protected.contains(&r.pid));
            s
        };
        let mut deadline = Instant::now() + Duration::from_secs(5);
        let mut sig = libc::SIGTERM;
        loop {
            self.reap();
            let left = still();
            if left.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                if sig == libc::SIGKILL {
                    let pids: Vec<u32> = left.iter().map(|r| r.pid).collect();
                    return Err(LabError::Teardown {
                        path: self.dir.clone(),
                        what: format!("{host}: processes still alive after SIGKILL: {pids:?}"),
                    });
                }
                sig = libc::SIGKILL;
                deadline = Instant::now() + Duration::from_secs(3);
            }
            for r in &left {
                procs::signal(r, sig, &protected);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn check_no_mounts(&self) -> Result<()> {
        let s = fs::read_to_string("/proc/self/mountinfo").map_err(io_err("/proc/self/mountinfo"))?;
        let d = self.dir.to_string_lossy().into_owned();
        let hit = s.lines().find(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            f.len() > 4 && (f[4] == d || f[4].starts_with(&format!("{d}/")))
        });
        match hit {
            Some(l) => Err(LabError::Teardown {
                path: self.dir.clone(),
                what: format!("a mount below the state dir remains: {l}"),
            }),
            None => Ok(()),
        }
    }

    /// Stop exactly what `up` started (and processes found inside the hosts), remove the veths, verify no
    /// mount or process is left, and remove the state dir unless asked to keep it. Idempotent.
    pub fn down(&mut self) -> Result<()> {
        if self.stopped {
            return Ok(());
        }
        if !self.dir.join(META).is_file() {
            self.stopped = true;
            return Ok(());
        }
        let n = self.meta.hosts;
        let this = &*self;
        let results = this.on_each_host(n, "stop", |i| this.stop_host(i));
        self.reap();
        let mut first_err = results.into_iter().find_map(|r| r.err());
        if self.meta.netns {
            for i in 1..=n {
                if let Ok(v) = fs::read_to_string(self.pidfile(i, "veth")) {
                    let v = v.trim();
                    if v == net::veth_name(i) {
                        // the pair vanishes with the host's net namespace; delete it if it is still there
                        wait_until(Duration::from_secs(2), || !net::link_exists(v));
                        if let Err(e) = net::delete_link(v) {
                            first_err.get_or_insert(e);
                        }
                    }
                }
            }
        }
        // verify: nothing of any host is left
        for i in 1..=n {
            if let Ok(p) = self.host_processes(&format!("host{i}")) {
                if !p.is_empty() {
                    first_err.get_or_insert(LabError::Teardown {
                        path: self.dir.clone(),
                        what: format!("host{i}: processes left: {p:?}"),
                    });
                }
            }
        }
        if let Err(e) = self.check_no_mounts() {
            first_err.get_or_insert(e);
        }
        if let Some(p) = self.reserved_port.take() {
            net::release_port(p);
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        for i in 1..=n {
            for f in ["holder", "holder.ready", "sshd", "nix-daemon"] {
                let _ = fs::remove_file(self.pidfile(i, f));
            }
        }
        self.stopped = true;
        if !self.keep_state {
            fs::remove_dir_all(&self.dir).map_err(io_err(&self.dir))?;
        }
        Ok(())
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

/// Wait (up to 5 minutes) for this machine's one netns-fleet turn: a lock on a file in /run.
fn netns_turn() -> Result<fs::File> {
    let path = Path::new("/run/rollout-lab-netns.lock");
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err(path))?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(f),
            Err(fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200))
            }
            Err(_) => {
                return Err(LabError::Netns(format!(
                    "another netns fleet held {} for 5 minutes (only one netns fleet can be up at a time)",
                    path.display()
                )))
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
