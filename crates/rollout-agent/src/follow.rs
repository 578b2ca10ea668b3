//! Foreground side of `activate`/`revoke`: start the detached worker and follow its log and status.

use crate::statedir::{self, LOG};
use crate::status::{State, Status};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

// Short: every poll that finds nothing new adds its interval to the deploy's latency, and a stat
// of a small file costs next to nothing.
const POLL: Duration = Duration::from_millis(20);

/// Re-executes this binary as `worker --dir DIR` in a new session, stdin /dev/null, stdout and
/// stderr appended to the deploy log, SIGHUP/SIGPIPE ignored: the SSH session can vanish freely.
pub fn spawn_worker(dir: &Path) -> Result<Child, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find my own executable: {e}"))?;
    let log_path = dir.join(LOG);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
    let log2 = log
        .try_clone()
        .map_err(|e| format!("cannot duplicate log handle: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.arg("worker")
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
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
    cmd.spawn().map_err(|e| format!("cannot start the worker: {e}"))
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
    /// A tail that starts at the current end of `path` (only lines written from now on are shown).
    pub fn from_end(path: &Path) -> LogTail {
        use std::io::{Seek, SeekFrom};
        let file = File::open(path)
            .ok()
            .and_then(|mut f| f.seek(SeekFrom::End(0)).ok().map(|_| f));
        LogTail {
            file,
            pending: Vec::new(),
        }
    }

    pub fn pump(&mut self, path: &Path, flush_partial: bool) {
        if self.file.is_none() {
            self.file = File::open(path).ok();
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
pub fn follow(dir: &Path, mut child: Child) -> Status {
    let log_path = dir.join(LOG);
    let mut tail = LogTail {
        file: None,
        pending: Vec::new(),
    };
    let mut worker_gone = false;
    loop {
        tail.pump(&log_path, false);
        let status = statedir::read_status(dir);
        if let Ok(st) = &status {
            if st.state.ends_following() {
                tail.pump(&log_path, true);
                return st.clone();
            }
        }
        if worker_gone {
            // The worker exited without a final state (crashed or was killed): say so on its behalf.
            tail.pump(&log_path, true);
            let mut st = status.unwrap_or_else(|_| {
                Status::new(
                    dir.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                        .as_str(),
                    None,
                    None,
                    "",
                )
            });
            let msg = format!(
                "the worker exited before finishing (state was {}); see {}",
                st.state.as_str(),
                log_path.display()
            );
            if st.advance(State::Failed, msg.clone()).is_err() {
                st.state = State::Failed;
                st.message = msg;
            }
            let _ = statedir::write_status(dir, &mut st);
            return st;
        }
        if let Ok(Some(_)) = child.try_wait() {
            // Re-read once more before concluding: the worker may have finished just now.
            worker_gone = true;
            continue;
        }
        std::thread::sleep(POLL);
    }
}
