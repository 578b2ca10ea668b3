//! One SSH master connection per (user, host, options): opened once, reused by the copy, the
//! agent calls and their output, closed (by the pid we started) at the end of the run.

use crate::events::{Phase, Reporter, State};
use crate::exec::{ExecError, Runner};
use crate::ssh::{self, Endpoint};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Pids of the SSH masters that are open, so that an interrupted run can end them (see
/// [`end_all_masters`]); a master outlives nothing of rollout's.
static OPEN_MASTERS: Mutex<Vec<u32>> = Mutex::new(Vec::new());
/// The socket directories of this process, removed by [`end_all_masters`] too.
static SOCKET_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// End every open master (by the pid we started it with). Called when rollout is interrupted:
/// the agents on the targets then roll back whatever was not confirmed.
pub fn end_all_masters() {
    let pids = std::mem::take(&mut *OPEN_MASTERS.lock().unwrap_or_else(|e| e.into_inner()));
    for pid in pids {
        // A worker thread may have reaped it a moment ago: only signal a process that is still a
        // child of ours.
        if parent_of(pid) != Some(std::process::id()) {
            continue;
        }
        // SAFETY: kill(2) on a live child of this process.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
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
    pub fn create() -> std::io::Result<SocketDir> {
        use std::os::unix::fs::DirBuilderExt;
        // Socket paths are limited to ~100 bytes, so stay short and outside deep temp dirs.
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_dir() && p.as_os_str().len() < 40)
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        let path = base.join(format!(
            "rollout-{}-{}",
            std::process::id(),
            &super::agent::new_id()[1..9]
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
    child: Option<Child>,
}

impl Master {
    /// Open the master and wait until it is authenticated.
    pub fn open(
        runner: &Runner,
        rep: &Reporter,
        ep: &Endpoint,
        dir: &Path,
        index: usize,
    ) -> Result<Master, ConnectError> {
        let socket = dir.join(format!("m{index}")).display().to_string();
        rep.phase(
            Phase::Connect,
            State::Started,
            Some(format!("connecting to {}", ep.destination())),
        );
        let mut child = runner.spawn(&ssh::master(ep, &socket))?;
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                rep.phase(Phase::Connect, State::Failed, None);
                let detail = if err.trim().is_empty() {
                    format!("ssh exited with {status}")
                } else {
                    err.trim().to_string()
                };
                return Err(ConnectError::Failed {
                    dest: ep.destination(),
                    detail,
                });
            }
            // OpenSSH creates the control socket (under a temporary name, then renamed) only
            // after authentication, so its existence means the master is ready.
            if Path::new(&socket).exists() {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                let _ = child.wait();
                rep.phase(Phase::Connect, State::Failed, None);
                return Err(ConnectError::Failed {
                    dest: ep.destination(),
                    detail: "timed out after 60 s".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        rep.phase(Phase::Connect, State::Succeeded, None);
        OPEN_MASTERS.lock().unwrap_or_else(|e| e.into_inner()).push(child.id());
        Ok(Master {
            endpoint: ep.clone(),
            socket,
            child: Some(child),
        })
    }

    /// Is the connection still up? (It goes down when the target cut itself off.)
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => match c.try_wait() {
                Ok(None) => true,
                _ => {
                    // Reaped: its pid may be reused by anyone from now on, so forget it.
                    forget_pid(c.id());
                    false
                }
            },
            None => false,
        }
    }

    pub fn close(&mut self) {
        if let Some(mut c) = self.child.take() {
            forget_pid(c.id());
            // Only a child that has not been reaped may be signalled by its pid (a reaped one's
            // pid can already belong to another process); std remembers a reaped status.
            if !matches!(c.try_wait(), Ok(None)) {
                return;
            }
            // End the master we started, by its pid (SIGTERM lets ssh remove its socket).
            // SAFETY: kill(2) on our own child, not reaped yet (at worst a zombie).
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn forget_pid(pid: u32) {
    OPEN_MASTERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|&p| p != pid);
}

/// The parent pid of `pid`, from /proc (None if it is gone).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(1)?.parse().ok()
}

impl Drop for Master {
    fn drop(&mut self) {
        self.close();
    }
}
