//! Tearing hosts down: find every process of a host, stop it by recorded pid, check that no mount
//! is left, remove the state.

use super::*;

impl Fleet {
    pub(super) fn mount_key(&self, i: usize) -> Option<String> {
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
    pub(super) fn scan_members(&self, i: usize) -> BTreeSet<u32> {
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

    pub(super) fn stop_host(&self, i: usize) -> Result<()> {
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

    pub(super) fn check_no_mounts(&self) -> Result<()> {
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
