//! Foreground side of `activate`/`revoke`: start the detached worker and follow its log and status.

use crate::statedir::{DeployDir, LOG};
use rollout_protocol::status::{State, Status};
use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

// Short: every poll that finds nothing new adds its interval to the deploy's latency, and a stat
// of a small file costs next to nothing.
const POLL: Duration = Duration::from_millis(20);

/// How long the foreground waits for a worker started through systemd-run to show up.
const STARTUP_GRACE: Duration = Duration::from_secs(30);

/// The started worker: our own child (setsid) or a transient systemd unit (no child of ours).
pub struct Spawned {
    child: Option<Child>,
    since: Instant,
}

/// Environment a worker started by systemd (which does not inherit ours) still needs.
const PASSED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LOCALE_ARCHIVE",
    "TZDIR",
    "NIX_REMOTE",
    "NIX_PATH",
];

/// The worker's own argv after the program: it finds its deploy again from these two.
fn worker_args(temp_path: &Path, id: &str) -> Vec<OsString> {
    vec![
        "worker".into(),
        "--temp-path".into(),
        temp_path.into(),
        "--id".into(),
        id.into(),
    ]
}

/// `systemd-run` that starts the worker in its own transient unit: outside the SSH session's scope,
/// so logind's `KillUserProcesses=yes` or a session cleanup cannot end it half-way (nixos-rebuild-ng
/// runs switch-to-configuration the same way). `--service-type=exec` returns once the worker is
/// executing; no `--wait`: the foreground follows the deploy through its state directory instead.
pub fn systemd_run_argv(exe: &Path, temp_path: &Path, id: &str, user: bool, env: &[(String, String)]) -> Vec<OsString> {
    let mut argv: Vec<OsString> = vec!["systemd-run".into()];
    if user {
        argv.push("--user".into());
    }
    for a in [
        format!("--unit=rollout-agent-{id}"),
        format!("--description=rollout-agent worker for deploy {id}"),
        "--collect".into(),
        "--quiet".into(),
        "--no-ask-password".into(),
        "--service-type=exec".into(),
        "--property=KillMode=mixed".into(),
    ] {
        argv.push(a.into());
    }
    for (k, v) in env {
        argv.push(format!("--setenv={k}={v}").into());
    }
    argv.push("--".into());
    argv.push(exe.into());
    argv.extend(worker_args(temp_path, id));
    argv
}

/// systemd is running (the check sd_booted(3) makes) and systemd-run is on PATH.
fn systemd_run_path() -> Option<PathBuf> {
    if !Path::new("/run/systemd/system").is_dir() {
        return None;
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("systemd-run"))
        .find(|p| p.is_file())
}

/// Runs systemd-run, bounded in time (a hung D-Bus must not hang the deploy); true when it started the unit.
fn try_systemd_run(prog: &Path, dir: &DeployDir, temp_path: &Path) -> bool {
    let Ok(exe) = std::env::current_exe() else { return false };
    let env: Vec<(String, String)> = PASSED_ENV
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect();
    let argv = systemd_run_argv(&exe, temp_path, dir.id(), crate::statedir::euid() != 0, &env);
    let mut cmd = Command::new(prog);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let Ok(mut child) = cmd.spawn() else { return false };
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return true,
            Ok(Some(_)) | Err(_) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                crate::log(&format!(
                    "note: systemd-run could not start the worker ({}); detaching it with setsid instead",
                    err.trim()
                ));
                return false;
            }
            Ok(None) if Instant::now() < end => std::thread::sleep(POLL),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                crate::log("note: systemd-run did not answer in 30 s; detaching the worker with setsid instead");
                return false;
            }
        }
    }
}

/// Starts the worker for `dir`: in its own systemd unit where systemd runs, else re-executed in a
/// new session, stdin /dev/null, SIGHUP/SIGPIPE ignored. Either way the worker writes its own log
/// and no SSH session, logind cleanup or killed deployer can stop it.
pub fn spawn_worker(dir: &DeployDir, temp_path: &Path) -> Result<Spawned, String> {
    if let Some(prog) = systemd_run_path() {
        if try_systemd_run(&prog, dir, temp_path) {
            return Ok(Spawned {
                child: None,
                since: Instant::now(),
            });
        }
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find my own executable: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.args(worker_args(temp_path, dir.id()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // A daemon-like process must not keep the SSH user's cwd (maybe an unmountable home) busy.
    cmd.current_dir("/");
    // SAFETY: only async-signal-safe calls (setsid, signal) between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| format!("cannot start the worker: {e}"))?;
    Ok(Spawned {
        child: Some(child),
        since: Instant::now(),
    })
}

impl Spawned {
    /// Whether the worker may still be running: its lock says so once it has started; before that,
    /// our setsid child is the worker itself, and a systemd unit gets a grace period to start.
    fn alive(&mut self, dir: &DeployDir) -> bool {
        if let Some(c) = &mut self.child {
            // Reap it in any case, so no zombie stays behind.
            if let Ok(Some(_)) = c.try_wait() {
                return dir.worker_running() == Some(true);
            }
        }
        match dir.worker_running() {
            Some(running) => running,
            None => self.child.is_some() || self.since.elapsed() < STARTUP_GRACE,
        }
    }
}

/// Writes to our stdout, ignoring errors: if the SSH channel is gone, the worker carries on anyway.
pub fn out(data: &[u8]) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(data);
    let _ = o.flush();
}

/// Copies complete new lines of the log to stdout; `flush_partial` also emits an unterminated tail.
pub struct LogTail {
    file: Option<File>,
    pending: Vec<u8>,
}

impl LogTail {
    /// A tail that starts at the current end of the log (only lines written from now on are shown).
    pub fn from_end(dir: &DeployDir) -> LogTail {
        use std::io::{Seek, SeekFrom};
        let file = dir
            .open_log_read()
            .and_then(|mut f| f.seek(SeekFrom::End(0)).ok().map(|_| f));
        LogTail {
            file,
            pending: Vec::new(),
        }
    }

    pub fn pump(&mut self, dir: &DeployDir, flush_partial: bool) {
        if self.file.is_none() {
            self.file = dir.open_log_read();
        }
        if let Some(f) = &mut self.file {
            let _ = f.read_to_end(&mut self.pending);
        }
        if let Some(pos) = self.pending.iter().rposition(|b| *b == b'\n') {
            let rest = self.pending.split_off(pos + 1);
            out(&self.pending);
            self.pending = rest;
        }
        if flush_partial && !self.pending.is_empty() {
            self.pending.push(b'\n');
            out(&self.pending);
            self.pending.clear();
        }
    }
}

/// Follows until the deploy is awaiting confirmation or over; returns the status to report.
pub fn follow(dir: &DeployDir, mut worker: Spawned) -> Status {
    let mut tail = LogTail {
        file: None,
        pending: Vec::new(),
    };
    let mut worker_gone = false;
    loop {
        tail.pump(dir, false);
        let status = dir.read_status();
        if let Ok(st) = &status {
            if st.state.ends_following() {
                tail.pump(dir, true);
                return st.clone();
            }
        }
        if worker_gone {
            // The worker exited without a final state (crashed or was killed): say so on its behalf.
            tail.pump(dir, true);
            let mut st = status.unwrap_or_else(|_| Status::new(dir.id(), None, None, ""));
            let msg = format!(
                "the worker exited before finishing (state was {}); see {}",
                st.state.as_str(),
                dir.display(LOG)
            );
            if st.advance(State::Failed, msg.clone()).is_err() {
                st.state = State::Failed;
                st.message = msg;
            }
            let _ = dir.write_status(&mut st);
            return st;
        }
        if !worker.alive(dir) {
            // Re-read once more before concluding: the worker may have finished just now.
            worker_gone = true;
            continue;
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_run_gets_its_own_unit_and_the_worker_finds_its_deploy_by_id() {
        let argv = systemd_run_argv(
            Path::new("/nix/store/x-agent/bin/rollout-agent"),
            Path::new("/tmp"),
            "abcdefgh",
            false,
            &[("PATH".into(), "/run/current-system/sw/bin".into())],
        );
        let argv: Vec<String> = argv.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(argv[0], "systemd-run");
        assert!(argv.contains(&"--unit=rollout-agent-abcdefgh".to_string()));
        assert!(argv.contains(&"--service-type=exec".to_string()));
        assert!(argv.contains(&"--collect".to_string()));
        assert!(argv.contains(&"--setenv=PATH=/run/current-system/sw/bin".to_string()));
        assert!(!argv.contains(&"--user".to_string()));
        let dashdash = argv.iter().position(|a| a == "--").unwrap();
        assert_eq!(
            argv[dashdash + 1..],
            [
                "/nix/store/x-agent/bin/rollout-agent",
                "worker",
                "--temp-path",
                "/tmp",
                "--id",
                "abcdefgh"
            ]
        );
        let user = systemd_run_argv(Path::new("/a"), Path::new("/tmp"), "abcdefgh", true, &[]);
        assert_eq!(user[1], "--user");
    }
}
