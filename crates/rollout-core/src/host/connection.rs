//! One SSH master connection per (user, host, options): opened once, reused by the copy, the
//! agent calls and their output, closed (by the pid we started) at the end of the run.

use crate::events::{Phase, Reporter, State};
use crate::exec::{self, ExecError, Proc, Role, Runner};
use crate::ssh::{self, Endpoint};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The socket directories of this process, removed by [`end_all_masters`] too.
static SOCKET_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// End every open master (SIGTERM, so that ssh removes its socket) and every other child that
/// is not a confirming login (those the interrupt handler has killed already), wait a moment for
/// them to go, and remove the socket directories. No child may start afterwards. Called when
/// rollout is interrupted: the agents on the targets then roll back whatever was not confirmed.
pub fn end_all_masters() {
    let mut pids = exec::signal_children(Some(Role::Master), libc::SIGTERM, true);
    pids.extend(exec::signal_children(Some(Role::Work), libc::SIGTERM, true));
    pids.extend(exec::signal_children(Some(Role::Eval), libc::SIGTERM, true));
    exec::wait_gone(&pids, Duration::from_secs(2));
    for dir in std::mem::take(&mut *SOCKET_DIRS.lock().unwrap_or_else(|e| e.into_inner())) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to {dest}: {detail}")]
    Failed { dest: String, detail: String },
    #[error(transparent)]
    Exec(#[from] ExecError),
}

/// A private directory for the control sockets of one run (mode 0700, removed on drop).
pub struct SocketDir {
    pub path: PathBuf,
}

impl SocketDir {
    /// Create this run's directory, after removing those that dead rollout processes left.
    pub fn create() -> std::io::Result<SocketDir> {
        use std::os::unix::fs::DirBuilderExt;
        // Socket paths are limited to ~100 bytes, so stay short and outside deep temp dirs.
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_dir() && p.as_os_str().len() < 40)
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        stale::clean(&base);
        let me = std::process::id();
        // The start time makes the name unique to this process, not just to its pid: a later
        // process with the same pid can tell that the directory is not its own (see `stale`).
        let path = base.join(format!(
            "rollout-{me}-{}-{}",
            stale::start_time(me).unwrap_or(0),
            &crate::deploy::agent::new_id()[1..9]
        ));
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        SOCKET_DIRS.lock().unwrap_or_else(|e| e.into_inner()).push(path.clone());
        Ok(SocketDir { path })
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        SOCKET_DIRS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| p != &self.path);
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

pub struct Master {
    pub endpoint: Endpoint,
    pub socket: String,
    /// Behind a lock so that a shared host can be asked whether it is still up and be closed.
    child: Mutex<Option<Proc>>,
}

/// Masters started ahead of their nodes, by endpoint, until a node takes its own.
#[derive(Default)]
pub struct EarlyMasters {
    started: Mutex<Vec<Starting>>,
}

impl EarlyMasters {
    pub fn add(&self, s: Starting) {
        self.started.lock().unwrap_or_else(|e| e.into_inner()).push(s);
    }

    /// The master started for `ep`, if one was.
    pub fn take(&self, ep: &Endpoint) -> Option<Starting> {
        let mut v = self.started.lock().unwrap_or_else(|e| e.into_inner());
        let i = v.iter().position(|s| &s.endpoint == ep)?;
        Some(v.swap_remove(i))
    }

    /// End the masters no node took (their node was not deployed after all).
    pub fn clear(&self) {
        let left = std::mem::take(&mut *self.started.lock().unwrap_or_else(|e| e.into_inner()));
        drop(left);
    }
}

/// A master connection that was started and may not be authenticated yet: [`Starting::wait`]
/// makes it a [`Master`]. Started ahead of its node (while the node's closures are evaluated and
/// built), a login costs the node no time of its own.
pub struct Starting {
    endpoint: Endpoint,
    socket: String,
    /// Taken by [`Starting::wait`]; ended on drop when nobody waited for it.
    child: Option<Proc>,
    started: Instant,
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.signal(libc::SIGTERM);
            c.end_within(Duration::from_secs(2));
        }
    }
}

impl Starting {
    /// Wait until the master is authenticated (its control socket exists), it failed, or 60 s
    /// have passed since it was started.
    pub fn wait(mut self, rep: &Reporter) -> Result<Master, ConnectError> {
        let (endpoint, socket, started) = (self.endpoint.clone(), self.socket.clone(), self.started);
        let Some(mut child) = self.child.take() else {
            unreachable!("a Starting is waited for once, by value");
        };
        let failed = |detail: String| {
            rep.phase(Phase::Connect, State::Failed, None);
            Err(ConnectError::Failed {
                dest: endpoint.destination(),
                detail,
            })
        };
        loop {
            if let Some(status) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr() {
                    let _ = e.read_to_string(&mut err);
                }
                return failed(match err.trim() {
                    "" => format!("ssh exited with {status}"),
                    e => e.to_string(),
                });
            }
            // OpenSSH creates the control socket (under a temporary name, then renamed) only
            // after authentication, so its existence means the master is ready.
            if Path::new(&socket).exists() {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                child.end_within(Duration::ZERO);
                return failed("timed out after 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Its stderr is read only when it fails to start: close our end now rather than hold one
        // descriptor per host until the run ends (ssh ignores SIGPIPE; a late message is lost).
        drop(child.stderr());
        rep.phase(Phase::Connect, State::Succeeded, None);
        Ok(Master {
            endpoint,
            socket,
            child: Mutex::new(Some(child)),
        })
    }
}

impl Master {
    /// Start the master (socket `m<index>` in `dir`) without waiting for it.
    pub fn start(
        runner: &Runner,
        rep: &Reporter,
        ep: &Endpoint,
        dir: &Path,
        index: usize,
    ) -> Result<Starting, ConnectError> {
        let socket = dir.join(format!("m{index}")).display().to_string();
        rep.phase(
            Phase::Connect,
            State::Started,
            Some(format!("connecting to {}", ep.destination())),
        );
        let child = runner.spawn(&ssh::master(ep, &socket))?;
        Ok(Starting {
            endpoint: ep.clone(),
            socket,
            child: Some(child),
            started: Instant::now(),
        })
    }

    /// Open the master and wait until it is authenticated.
    pub fn open(
        runner: &Runner,
        rep: &Reporter,
        ep: &Endpoint,
        dir: &Path,
        index: usize,
    ) -> Result<Master, ConnectError> {
        Master::start(runner, rep, ep, dir, index)?.wait(rep)
    }

    /// Is the connection still up? (It goes down when the target cut itself off.)
    pub fn alive(&self) -> bool {
        self.child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
            .is_some_and(|c| c.try_wait().is_none())
    }

    pub fn close(&self) {
        let child = self.child.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut c) = child {
            // SIGTERM lets ssh remove its socket; `Proc` never signals a reaped pid.
            c.signal(libc::SIGTERM);
            c.end_within(Duration::from_secs(2));
        }
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        self.close();
    }
}

/// Socket directories (and masters) that a dead rollout process left behind: a SIGKILLed run
/// cannot clean up after itself, so the next run does.
mod stale {
    use crate::cmd::Argv;
    use crate::exec::{self, Role};
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    use std::path::Path;
    use std::time::Duration;

    /// The start time of process `pid` (clock ticks since boot, field 22 of /proc/PID/stat).
    pub fn start_time(pid: u32) -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name may contain spaces and parentheses: fields follow the last ')'.
        stat[stat.rfind(')')? + 2..].split(' ').nth(19)?.parse().ok()
    }

    /// The pid and (when the name records it) start time of the process that made a directory
    /// named `rollout-<pid>-<start>-<8 hex>` or, before start times were recorded,
    /// `rollout-<pid>-<8 hex>`. None for any other name.
    pub fn owner(name: &str) -> Option<(u32, Option<u64>)> {
        let parts: Vec<&str> = name.strip_prefix("rollout-")?.split('-').collect();
        let hex8 = |s: &str| s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit());
        match parts[..] {
            [pid, start, rand] if hex8(rand) => Some((pid.parse().ok()?, Some(start.parse().ok()?))),
            [pid, rand] if hex8(rand) => Some((pid.parse().ok()?, None)),
            _ => None,
        }
    }

    /// Is the process that made the directory gone? A live process with the same pid but
    /// another start time is somebody else (the pid was reused). A directory of the older
    /// format whose pid is alive is left alone: nothing tells whose it is.
    pub fn abandoned(recorded: Option<u64>, now: Option<u64>) -> bool {
        match (now, recorded) {
            (None, _) => true,
            (Some(now), Some(rec)) => now != rec,
            (Some(_), None) => false,
        }
    }

    /// Remove the abandoned socket directories of this user under `base`, ending any master
    /// still listening on a socket in them first. Only real directories (not symlinks) owned by
    /// our effective uid are considered; `remove_dir_all` does not follow symlinks inside them.
    pub fn clean(base: &Path) {
        // SAFETY: geteuid(2) cannot fail.
        let uid = unsafe { libc::geteuid() };
        let Ok(entries) = std::fs::read_dir(base) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some((pid, recorded)) = owner(&name.to_string_lossy()) else {
                continue;
            };
            let path = e.path();
            let Ok(md) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if !md.file_type().is_dir() || md.uid() != uid || pid == std::process::id() {
                continue;
            }
            if !abandoned(recorded, start_time(pid)) {
                continue;
            }
            end_masters(&path);
            let _ = std::fs::remove_dir_all(&path);
        }
    }

    /// Ask the master behind each control socket in `dir` to exit (`ssh -O exit`), at most 2 s each.
    fn end_masters(dir: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_socket()) {
                continue;
            }
            let argv = Argv::new("ssh").args([
                "-S",
                &e.path().display().to_string(),
                "-O",
                "exit",
                "rollout-stale-master",
            ]);
            let mut cmd = exec::command(&argv);
            cmd.stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            let Ok(child) = exec::spawn_tracked(cmd, Role::Work) else {
                continue;
            };
            exec::Proc::from_child(child).end_within(Duration::from_secs(2));
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn directory_names_give_pid_and_start_time() {
            assert_eq!(owner("rollout-123-456-0a1b2c3d"), Some((123, Some(456))));
            assert_eq!(owner("rollout-123-0a1b2c3d"), Some((123, None)));
            assert_eq!(owner("rollout-0"), None);
            assert_eq!(owner("rollout-abc-0a1b2c3d"), None);
            assert_eq!(owner("rollout-1-2-xyz"), None);
            assert_eq!(owner("other-1-0a1b2c3d"), None);
        }

        #[test]
        fn a_directory_is_abandoned_when_its_process_is_gone_or_the_pid_was_reused() {
            assert!(abandoned(Some(5), None), "no such process");
            assert!(abandoned(Some(5), Some(6)), "same pid, another process");
            assert!(!abandoned(Some(5), Some(5)), "still running");
            assert!(!abandoned(None, Some(5)), "old name, live pid: cannot tell");
            assert!(abandoned(None, None));
        }

        #[test]
        fn our_own_start_time_is_readable() {
            assert!(start_time(std::process::id()).is_some_and(|t| t > 0));
        }
    }
}
