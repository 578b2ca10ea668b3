//! The one place that runs external commands: logs each under `--debug-logs`, captures or
//! streams its output, turns failures into errors that show the command and its stderr, and
//! makes sure that no child outlives rollout (see [`spawn_tracked`]).

use crate::cmd::Argv;
use crate::events::{Kind, Reporter};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// What a child is for. An interrupt ends the confirming logins first (before they can
/// confirm), then the masters and everything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// nix, and agent calls through a master.
    Work,
    /// An evaluator process (`deploy::stream`): ended early when the run stops.
    Eval,
    /// An SSH master connection (long-lived, ended by the run).
    Master,
    /// The fresh SSH login that confirms activated profiles.
    Confirm,
}

/// The children that have been started and not reaped yet, and whether new ones may start.
///
/// Invariant: a pid is in `live` only while its process is not reaped, so signalling a listed pid
/// can never hit an unrelated process that reused it (pid_max is small on test machines). Waiting
/// is therefore done in two steps: wait without reaping (`WNOWAIT`), drop the pid under this lock,
/// then reap.
struct Table {
    live: Vec<(u32, Role)>,
    closed: bool,
}

static TABLE: Mutex<Table> = Mutex::new(Table {
    live: Vec::new(),
    closed: false,
});

fn table() -> std::sync::MutexGuard<'static, Table> {
    TABLE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Raise this process's soft limit on open files to its hard limit. A run keeps one SSH master
/// per host open until it is settled (fleet-wide rollback uses them), each with a pipe here, so a
/// fleet of a thousand hosts needs more than the usual soft limit of 1024. Best effort: the
/// limit stays as it was when it cannot be read or set.
pub fn raise_open_files_limit() {
    // SAFETY: getrlimit/setrlimit on a zeroed struct we own.
    unsafe {
        let mut l: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

/// Names of environment variables that carry sudo passwords: read once by the CLI, never passed
/// on to any child (nix, ssh, the password command).
pub fn is_secret_var(name: &std::ffi::OsStr) -> bool {
    let n = name.to_string_lossy();
    n.starts_with("ROLLOUT_SUDO_PASSWORD") || n.starts_with("DEPLOY_RS_SUDO_PASSWORD")
}

/// The `Command` for an argv, as every child of rollout is started: without the password
/// variables in its environment, and dying with rollout.
///
/// `PR_SET_PDEATHSIG` is SIGTERM, not SIGKILL: an SSH master that gets SIGTERM removes its control
/// socket and closes the connection properly, and nix ends its own ssh children; neither ignores
/// SIGTERM. The signal fires when the *thread* that forked the child exits, not the process, and
/// rollout runs nodes on scoped threads that end while their masters must live on (fleet-wide
/// rollback uses them); so every child is forked by one spawner thread that lives as long as the
/// process (see [`spawn_tracked`]). If rollout died between fork and `prctl`, the child has
/// already been re-parented: it checks its parent and exits instead of running orphaned.
pub fn command(argv: &Argv) -> Command {
    let mut c = argv.to_command();
    for (k, _) in std::env::vars_os() {
        if is_secret_var(&k) {
            c.env_remove(k);
        }
    }
    die_with_rollout(&mut c);
    c
}

/// Give `c` the `PR_SET_PDEATHSIG` set-up described at [`command`].
pub fn die_with_rollout(c: &mut Command) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec and only calls async-signal-safe functions
    // (prctl, getppid) and builds an io::Error from a raw code (no allocation).
    unsafe {
        c.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

type Job = (Command, Role, mpsc::Sender<std::io::Result<Child>>);

/// The long-lived thread that forks every child (see [`command`] for why).
fn spawner() -> &'static Mutex<mpsc::Sender<Job>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("rollout-spawner".into())
            .spawn(move || {
                // Never returns while the process lives: the sender is kept in a static.
                for (mut cmd, role, reply) in rx {
                    let _ = reply.send(spawn_here(&mut cmd, role));
                }
            })
            .expect("start the spawner thread");
        Mutex::new(tx)
    })
}

/// Fork `cmd` on this thread and list it, unless an interrupt has closed the table. The check and
/// the listing happen under one lock, so an interrupt either sees the child or prevents it.
fn spawn_here(cmd: &mut Command, role: Role) -> std::io::Result<Child> {
    let mut t = table();
    if t.closed {
        drop(t);
        // The interrupt handler is ending the run and will exit the process: the thread that
        // wanted this child waits for that instead of going on with a step that cannot start.
        crate::interrupt::hold();
        return Err(std::io::Error::new(
            std::io::ErrorKind::Interrupted,
            "rollout is being interrupted",
        ));
    }
    let child = cmd.spawn()?;
    t.live.push((child.id(), role));
    Ok(child)
}

/// Start `cmd` (built by [`command`]) on the spawner thread and list it under `role`. The caller
/// must end it with [`reap`] (or through [`Proc`]).
pub fn spawn_tracked(cmd: Command, role: Role) -> std::io::Result<Child> {
    let (tx, rx) = mpsc::channel();
    spawner()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, role, tx))
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?
}

/// Wait for `child` to exit without reaping it (`WNOWAIT`); with `block` false, only look.
fn exited(pid: u32, block: bool) -> std::io::Result<bool> {
    loop {
        // SAFETY: waitid(2) into a zeroed siginfo_t for our own child.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | libc::WNOWAIT | if block { 0 } else { libc::WNOHANG };
        let r = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) };
        if r == 0 {
            // SAFETY: si_pid is valid for a siginfo_t filled by waitid.
            return Ok(unsafe { info.si_pid() } != 0);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Wait for a listed child and reap it (unlisting it first, see [`Table`]).
pub fn reap(child: &mut Child) -> std::io::Result<ExitStatus> {
    exited(child.id(), true)?;
    table().live.retain(|&(p, _)| p != child.id());
    child.wait()
}

/// Reap a listed child if it has exited.
fn try_reap(child: &mut Child) -> std::io::Result<Option<ExitStatus>> {
    if !exited(child.id(), false)? {
        return Ok(None);
    }
    reap(child).map(Some)
}

/// Send `sig` to every listed child of `role` (all roles when `None`). With `close`, no child may
/// start any more (an interrupt). Listed pids are unreaped, so this hits only our own children.
pub fn signal_children(role: Option<Role>, sig: libc::c_int, close: bool) -> Vec<u32> {
    let mut t = table();
    t.closed |= close;
    let mut hit = Vec::new();
    for &(pid, r) in &t.live {
        if role.is_none_or(|want| want == r) {
            // SAFETY: kill(2) on an unreaped child of ours (at worst a zombie).
            unsafe {
                libc::kill(pid as libc::pid_t, sig);
            }
            hit.push(pid);
        }
    }
    hit
}

/// Wait up to `limit` until none of `pids` is running any more (exited or a zombie).
pub fn wait_gone(pids: &[u32], limit: Duration) {
    let deadline = Instant::now() + limit;
    let running = |pid: &u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')).map(|z| !z))
            .unwrap_or(false)
    };
    while pids.iter().any(running) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A long-lived child (an SSH master) that may be signalled by pid as long as it is not reaped.
pub struct Proc {
    child: Child,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Wrap a child started with [`spawn_tracked`].
    pub fn from_child(child: Child) -> Proc {
        Proc { child, status: None }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&mut self) -> Option<std::process::ChildStderr> {
        self.child.stderr.take()
    }

    /// The exit status once it exited (reaping it), or None while it runs.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = try_reap(&mut self.child).ok().flatten();
        }
        self.status
    }

    /// Send `sig` unless it has been reaped (its pid could belong to another process by now).
    pub fn signal(&mut self, sig: libc::c_int) {
        if self.try_wait().is_none() {
            // SAFETY: kill(2) on our own child, not reaped (try_wait just said so).
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, sig);
            }
        }
    }

    /// Wait for it to exit, at most `limit`; SIGKILL it after that.
    pub fn end_within(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.try_wait().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.signal(libc::SIGKILL);
        if self.status.is_none() {
            self.status = reap(&mut self.child).ok();
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("`{program}` was not found on PATH{hint}")]
    NotFound { program: String, hint: String },
    #[error("could not run `{argv}`: {source}")]
    Spawn { argv: String, source: std::io::Error },
    #[error("`{argv}` was not started: rollout is being interrupted")]
    Interrupted { argv: String },
    #[error("{what} failed ({status}): `{argv}`{stderr}")]
    Failed {
        what: String,
        argv: String,
        status: String,
        stderr: String,
    },
}

impl ExecError {
    /// The tail of the command's stderr, for messages that quote Nix's own words.
    pub fn stderr(&self) -> &str {
        match self {
            ExecError::Failed { stderr, .. } => stderr,
            _ => "",
        }
    }
}

/// SIGKILL child `pid` (not yet reaped) and the children it started. Its work is not needed,
/// so nothing half-done matters; a polite SIGTERM would let it close its connection first, and a
/// child left alive (`nix copy`'s ssh) would close it when it sees its input end: network round
/// trips for nothing.
fn kill_with_children(pid: u32) {
    // SAFETY: kill(2) on our own child, not reaped before the caller reaps it. Stopped, it cannot
    // reap its own children either, so their pids stay theirs until it is killed.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) };
    for child in children_of(pid) {
        // SAFETY: a child of our stopped child (see above).
        unsafe { libc::kill(child as libc::pid_t, libc::SIGKILL) };
    }
    // SAFETY: as above.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
}

/// The children of process `pid`, from every thread's `/proc/PID/task/TID/children`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect::<Vec<u32>>()
        })
        .filter(|&c| c > 1)
        .collect()
}

/// A child started by [`Runner::hold`]. Dropped without [`Held::release`], its stdin is closed
/// and it is killed and reaped: it never gets its input.
pub struct Held {
    argv: String,
    stdin: Option<std::process::ChildStdin>,
    child: Option<Child>,
    lines: mpsc::Receiver<(bool, String)>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Held {
    /// Write `input` and close stdin, then pass each line of stdout and stderr to `on_line` until
    /// the child ends. Returns its exit status and the last lines of its stderr.
    pub fn release(mut self, input: &str, on_line: &dyn Fn(&str)) -> Result<(ExitStatus, String), ExecError> {
        if let Some(mut w) = self.stdin.take() {
            // A closed pipe only means the child did not read it; the exit status tells more.
            let _ = w.write_all(input.as_bytes());
        }
        let mut kept: Vec<String> = Vec::new();
        // Ends once both readers have ended (every sender is dropped).
        for r in std::mem::take(&mut self.readers) {
            while !r.is_finished() {
                match self.lines.recv_timeout(Duration::from_millis(20)) {
                    Ok(l) => handle_line(l, on_line, &mut kept),
                    Err(_) => continue,
                }
            }
        }
        while let Ok(l) = self.lines.try_recv() {
            handle_line(l, on_line, &mut kept);
        }
        let mut child = self.child.take().expect("a held child is released once");
        let status = reap(&mut child).map_err(|e| ExecError::Spawn {
            argv: self.argv.clone(),
            source: e,
        })?;
        Ok((status, kept.join("\n")))
    }
}

fn handle_line((is_err, line): (bool, String), on_line: &dyn Fn(&str), kept: &mut Vec<String>) {
    on_line(&line);
    if is_err {
        kept.push(line);
        if kept.len() > 40 {
            kept.remove(0);
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if let Some(mut child) = self.child.take() {
            // Killed, not waited for: a remote command would end only a network round trip later
            // (when its end of input arrives); the connection going away ends it just the same.
            // SAFETY: kill(2) on our own child, not reaped yet.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
            let _ = reap(&mut child);
        }
        // Not joined: a reader may wait for descriptors an ssh master holds a round trip longer.
        self.readers.clear();
    }
}

#[derive(Debug)]
pub struct Captured {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs commands on behalf of one deployment run.
#[derive(Clone)]
pub struct Runner {
    pub reporter: Reporter,
}

fn status_text(s: &ExitStatus) -> String {
    match s.code() {
        Some(c) => format!("exit code {c}"),
        None => "killed by a signal".to_string(),
    }
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    let start = v.len().saturating_sub(lines);
    v[start..].join("\n")
}

impl Runner {
    pub fn new(reporter: Reporter) -> Self {
        Runner { reporter }
    }

    fn announce(&self, argv: &Argv) {
        self.reporter.emit(Kind::Command { argv: argv.to_string() });
    }

    fn spawn_error(argv: &Argv, e: std::io::Error) -> ExecError {
        if e.kind() == std::io::ErrorKind::Interrupted {
            return ExecError::Interrupted { argv: argv.to_string() };
        }
        if e.kind() == std::io::ErrorKind::NotFound {
            let hint = match argv.program.as_str() {
                "nix" | "nix-build" | "nix-instantiate" | "nix-store" => {
                    "; rollout needs Nix 2.4 or newer (https://nixos.org/download)".to_string()
                }
                "ssh" => "; rollout needs the OpenSSH client".to_string(),
                _ => String::new(),
            };
            ExecError::NotFound {
                program: argv.program.clone(),
                hint,
            }
        } else {
            ExecError::Spawn {
                argv: argv.to_string(),
                source: e,
            }
        }
    }

    /// Run to completion, capturing stdout and stderr.
    pub fn capture(&self, argv: &Argv) -> Result<Captured, ExecError> {
        self.announce(argv);
        let mut cmd = command(argv);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = spawn_tracked(cmd, Role::Work).map_err(|e| Self::spawn_error(argv, e))?;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        std::thread::scope(|s| {
            s.spawn(|| stderr.map(|mut e| e.read_to_end(&mut err)));
            stdout.map(|mut o| o.read_to_end(&mut out));
        });
        let status = reap(&mut child).map_err(|e| ExecError::Spawn {
            argv: argv.to_string(),
            source: e,
        })?;
        Ok(Captured {
            status,
            stdout: String::from_utf8_lossy(&out).into_owned(),
            stderr: String::from_utf8_lossy(&err).into_owned(),
        })
    }

    /// Run to completion; a non-zero exit is an error that quotes the command and its stderr.
    pub fn checked(&self, argv: &Argv, what: &str) -> Result<String, ExecError> {
        let c = self.capture(argv)?;
        if c.status.success() {
            Ok(c.stdout)
        } else {
            Err(Self::failed(what, argv, &c.status, &c.stderr))
        }
    }

    /// Run, feeding `stdin` (then closing it), calling `on_line` for every line of stdout and of
    /// stderr as it arrives. Returns the exit status and the last lines of stderr.
    pub fn stream(
        &self,
        argv: &Argv,
        stdin: Option<&str>,
        on_line: &(dyn Fn(&str) + Sync),
    ) -> Result<(ExitStatus, String), ExecError> {
        self.stream_as(Role::Work, argv, stdin, on_line)
    }

    /// [`Runner::stream`] for a child of the given role: the confirming login is
    /// [`Role::Confirm`], so that an interrupt ends it before anything else.
    pub fn stream_as(
        &self,
        role: Role,
        argv: &Argv,
        stdin: Option<&str>,
        on_line: &(dyn Fn(&str) + Sync),
    ) -> Result<(ExitStatus, String), ExecError> {
        self.announce(argv);
        let mut cmd = command(argv);
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = spawn_tracked(cmd, role).map_err(|e| Self::spawn_error(argv, e))?;
        if let (Some(data), Some(mut w)) = (stdin, child.stdin.take()) {
            // A closed pipe only means the remote side did not read it; the exit status tells more.
            let _ = w.write_all(data.as_bytes());
        }
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let err_tail = std::thread::scope(|s| {
            let h = s.spawn(move || {
                let mut kept = Vec::new();
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    on_line(&line);
                    kept.push(line);
                    if kept.len() > 40 {
                        kept.remove(0);
                    }
                }
                kept.join("\n")
            });
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                on_line(&line);
            }
            h.join().unwrap_or_default()
        });
        let status = reap(&mut child).map_err(|e| ExecError::Spawn {
            argv: argv.to_string(),
            source: e,
        })?;
        Ok((status, err_tail))
    }

    /// [`Runner::stream_as`] that kills the child and the children it started once `stop` is set:
    /// work that turned out not to be needed (a copy to a target that has it all). It does not
    /// wait for their output to end then: an `ssh` multiplexed over a master handed its
    /// descriptors to the master, which closes them only a network round trip later.
    pub fn stream_until(
        &self,
        role: Role,
        argv: &Argv,
        stdin: Option<&str>,
        on_line: &(dyn Fn(&str) + Sync),
        stop: Option<&std::sync::atomic::AtomicBool>,
    ) -> Result<(ExitStatus, String), ExecError> {
        let Some(stop) = stop else {
            return self.stream_as(role, argv, stdin, on_line);
        };
        let (mut child, lines, readers) = self.spawn_reading(role, argv)?;
        if let (Some(data), Some(mut w)) = (stdin, child.stdin.take()) {
            let _ = w.write_all(data.as_bytes());
        }
        drop(child.stdin.take());
        let mut kept = Vec::new();
        loop {
            match lines.recv_timeout(Duration::from_millis(5)) {
                Ok(l) => handle_line(l, on_line, &mut kept),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if stop.load(std::sync::atomic::Ordering::SeqCst) {
                kill_with_children(child.id());
                break;
            }
        }
        while let Ok(l) = lines.try_recv() {
            handle_line(l, on_line, &mut kept);
        }
        // Readers still blocked on descriptors someone else holds end by themselves later.
        drop(readers);
        let status = reap(&mut child).map_err(|e| ExecError::Spawn {
            argv: argv.to_string(),
            source: e,
        })?;
        Ok((status, kept.join("\n")))
    }

    /// Spawn with stdin, stdout and stderr piped; two detached threads send every line of stdout
    /// (`false`) and stderr (`true`) to the returned channel, which disconnects when both end.
    #[allow(clippy::type_complexity)]
    fn spawn_reading(
        &self,
        role: Role,
        argv: &Argv,
    ) -> Result<(Child, mpsc::Receiver<(bool, String)>, Vec<std::thread::JoinHandle<()>>), ExecError> {
        self.announce(argv);
        let mut cmd = command(argv);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = spawn_tracked(cmd, role).map_err(|e| Self::spawn_error(argv, e))?;
        let (tx, lines) = mpsc::channel();
        let mut readers = Vec::new();
        let out = child.stdout.take().map(|o| Box::new(o) as Box<dyn Read + Send>);
        let err = child.stderr.take().map(|e| Box::new(e) as Box<dyn Read + Send>);
        for (is_err, pipe) in [(false, out), (true, err)] {
            let Some(pipe) = pipe else { continue };
            let tx = tx.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let _ = tx.send((is_err, line));
                }
            }));
        }
        Ok((child, lines, readers))
    }

    /// Start a child whose input is held back: it runs with stdin open and nothing written until
    /// [`Held::release`] (a remote command opened early, waiting for its go).
    pub fn hold(&self, argv: &Argv) -> Result<Held, ExecError> {
        let (mut child, lines, readers) = self.spawn_reading(Role::Work, argv)?;
        Ok(Held {
            argv: argv.to_string(),
            stdin: child.stdin.take(),
            child: Some(child),
            lines,
            readers,
        })
    }

    /// Start a long-lived child (an SSH master); the caller owns it and ends it by pid.
    pub fn spawn(&self, argv: &Argv) -> Result<Proc, ExecError> {
        self.announce(argv);
        let mut cmd = command(argv);
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        spawn_tracked(cmd, Role::Master)
            .map(|child| Proc { child, status: None })
            .map_err(|e| Self::spawn_error(argv, e))
    }

    pub fn failed(what: &str, argv: &Argv, status: &ExitStatus, stderr: &str) -> ExecError {
        ExecError::Failed {
            what: what.to_string(),
            argv: argv.to_string(),
            status: status_text(status),
            stderr: if stderr.trim().is_empty() {
                String::new()
            } else {
                format!("\n{}", tail(stderr.trim_end(), 40))
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn a_held_command_runs_only_once_released() {
        let r = Runner::new(Reporter::silent());
        let dir = tempfile::tempdir().unwrap();
        let mark = dir.path().join("ran");
        let script = format!("read -r _ && touch {} && echo ran", mark.display());
        let argv = Argv::new("sh").args(["-c", script.as_str()]);
        drop(r.hold(&argv).unwrap());
        assert!(!mark.exists(), "dropped unreleased: it never ran");
        let held = r.hold(&argv).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(!mark.exists(), "held: not run yet");
        let seen = Mutex::new(Vec::new());
        let (st, _) = held
            .release("go\n", &|l| seen.lock().unwrap().push(l.to_string()))
            .unwrap();
        assert!(st.success());
        assert!(mark.exists());
        assert_eq!(seen.into_inner().unwrap(), vec!["ran"]);
    }

    #[test]
    fn unneeded_work_is_killed_with_the_children_it_started() {
        let r = Runner::new(Reporter::silent());
        let stop = std::sync::atomic::AtomicBool::new(false);
        // The background sleep keeps stdout open: only killing it too ends the output.
        let argv = Argv::new("sh").args(["-c", "sleep 60 & echo started; wait"]);
        let started = Instant::now();
        let (st, _) = r
            .stream_until(
                Role::Work,
                &argv,
                None,
                &|_| stop.store(true, std::sync::atomic::Ordering::SeqCst),
                Some(&stop),
            )
            .unwrap();
        assert!(!st.success(), "killed");
        assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
    }

    #[test]
    fn missing_program_is_a_clear_error() {
        let r = Runner::new(Reporter::silent());
        let e = r.capture(&Argv::new("nix-build-does-not-exist-xyz")).unwrap_err();
        assert!(matches!(e, ExecError::NotFound { .. }));
    }

    #[test]
    fn failure_quotes_command_and_stderr() {
        let r = Runner::new(Reporter::silent());
        let e = r
            .checked(&Argv::new("sh").args(["-c", "echo boom >&2; exit 3"]), "test step")
            .unwrap_err();
        let m = e.to_string();
        assert!(m.contains("test step failed (exit code 3)"), "{m}");
        assert!(m.contains("boom"), "{m}");
    }

    #[test]
    fn children_never_see_the_password_variables() {
        std::env::set_var("ROLLOUT_SUDO_PASSWORD_EXECTEST", "pw-exectest-1");
        std::env::set_var("DEPLOY_RS_SUDO_PASSWORD_EXECTEST", "pw-exectest-2");
        let r = Runner::new(Reporter::silent());
        let env = r.checked(&Argv::new("env"), "env").unwrap();
        assert!(env.contains("PATH="), "{env}");
        assert!(!env.contains("pw-exectest"), "{env}");
        std::env::remove_var("ROLLOUT_SUDO_PASSWORD_EXECTEST");
        std::env::remove_var("DEPLOY_RS_SUDO_PASSWORD_EXECTEST");
    }

    #[test]
    fn children_outlive_the_thread_that_asked_for_them() {
        // PR_SET_PDEATHSIG fires when the forking *thread* ends: the spawner thread forks, so a
        // child asked for by a short-lived (node worker) thread keeps running.
        let r = Runner::new(Reporter::silent());
        let mut p = std::thread::spawn(move || r.spawn(&Argv::new("sleep").arg("30")).unwrap())
            .join()
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            p.try_wait().is_none(),
            "the child was killed when the asking thread ended"
        );
        p.signal(libc::SIGTERM);
        p.end_within(Duration::from_secs(5));
        assert!(p.try_wait().is_some());
    }

    #[test]
    fn stream_feeds_stdin_and_reports_lines() {
        let r = Runner::new(Reporter::silent());
        let seen = Mutex::new(Vec::new());
        let (st, _) = r
            .stream(
                &Argv::new("sh").args(["-c", "read x; echo got $x; echo err >&2"]),
                Some("pw\n"),
                &|l| seen.lock().unwrap().push(l.to_string()),
            )
            .unwrap();
        assert!(st.success());
        let mut v = seen.into_inner().unwrap();
        v.sort();
        assert_eq!(v, vec!["err", "got pw"]);
    }
}
