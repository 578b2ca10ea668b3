//! Working with running hosts: run commands in them, fault injection (kill/restart sshd, cut/heal the
//! network), and what they report (auth counts, status, processes).

use super::*;

impl Fleet {
    /// Run `argv` as root inside the host's mount+UTS (and net) namespaces via nsenter, with a clean
    /// environment. Works even when the host's sshd is dead.
    pub fn exec(&self, host: &str, argv: &[&str]) -> Result<Output> {
        self.exec_cmd(host, argv, None)
    }

    /// Like [`Fleet::exec`] with bytes on stdin.
    pub fn exec_with_input(&self, host: &str, argv: &[&str], input: &[u8]) -> Result<Output> {
        self.exec_cmd(host, argv, Some(input))
    }

    pub(super) fn exec_cmd(&self, host: &str, argv: &[&str], input: Option<&[u8]>) -> Result<Output> {
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

    pub(super) fn reap(&self) {
        let mut ch = self.children.lock().unwrap_or_else(|e| e.into_inner());
        ch.retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_)) | Err(_)));
    }

    pub(super) fn stop_recorded(&self, rec: Recorded) {
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

    /// Reboot a host as far as a simulation can: every process of the host but its namespace holder
    /// is killed at once (SIGKILL: a reboot does not ask), its `/tmp` is emptied (but for the lab's
    /// own state), nix-daemon and sshd start again, and then the host's boot steps run: every
    /// executable in `/nix/var/rollout-lab/boot.d/`, as root, in name order. The host's store,
    /// profiles and `/nix/var` survive, as a disk would.
    pub fn reboot(&self, host: &str) -> Result<()> {
        let i = host_index(host, self.meta.hosts)?;
        let holder = self.live_holder(i)?;
        let protected = procs::protected(&procs::table());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let others: Vec<Recorded> = self
                .scan_members(i)
                .into_iter()
                .filter(|&p| p != holder)
                .filter_map(Recorded::of)
                .collect();
            if others.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                return Err(LabError::Command {
                    cmd: format!("reboot {host}"),
                    detail: format!("{} processes survived SIGKILL", others.len()),
                });
            }
            for r in &others {
                procs::signal(r, libc::SIGKILL, &protected);
            }
            self.reap();
            std::thread::sleep(Duration::from_millis(50));
        }
        self.exec_ok(
            host,
            &[
                "sh",
                "-c",
                "find /tmp -mindepth 1 -maxdepth 1 ! -name 'rollout-lab-*' -exec rm -rf {} +",
            ],
        )?;
        self.start_daemon(i)?;
        self.start_sshd(i)?;
        self.exec_ok(
            host,
            &[
                "sh",
                "-c",
                "for f in /nix/var/rollout-lab/boot.d/*; do if [ -x \"$f\" ]; then \"$f\" || echo \"boot step $f failed\" >&2; fi; done",
            ],
        )?;
        Ok(())
    }

    /// Stop the host's nix-daemon and start a new one.
    pub fn restart_daemon(&self, host: &str) -> Result<()> {
        let i = host_index(host, self.meta.hosts)?;
        if let Some(rec) = Recorded::read_alive(&self.pidfile(i, "nix-daemon")) {
            self.stop_recorded(rec);
        }
        self.start_daemon(i)
    }

    /// Restart the host's nix-daemon if it is dead.
    pub fn ensure_daemon(&self, host: &str) -> Result<()> {
        let i = host_index(host, self.meta.hosts)?;
        if Recorded::read_alive(&self.pidfile(i, "nix-daemon")).is_none() {
            self.start_daemon(i)?;
        }
        Ok(())
    }

    pub(super) fn netns_holder(&self, host: &str) -> Result<(usize, u32)> {
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
    pub(super) fn on_each_host(&self, n: usize, what: &str, f: impl Fn(usize) -> Result<()> + Sync) -> Vec<Result<()>> {
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
    pub(super) fn enter_host(&self, holder: u32) -> Vec<String> {
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
}
