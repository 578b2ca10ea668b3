//! Running child programs: `nix-env` on the profile and activation scripts in their own process group.

use std::ffi::OsString;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Directories tried after PATH: under `sudo`, `secure_path` often drops the Nix profile directories.
pub const NIX_FALLBACK_DIRS: &[&str] = &["/nix/var/nix/profiles/default/bin", "/run/current-system/sw/bin"];

/// Finds an executable `name` on `path_var`, then in the fallback directories.
pub fn find_program(name: &str, path_var: Option<OsString>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let mut dirs: Vec<PathBuf> = path_var
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(NIX_FALLBACK_DIRS.iter().map(PathBuf::from));
    dirs.into_iter()
        .filter(|d| d.is_absolute())
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

pub fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => "unknown status".into(),
    }
}

const NIX_ATTEMPTS: u32 = 5;

/// Whether nix-env's error output shows a lock-contention failure worth retrying.
pub fn is_transient(stderr: &str) -> bool {
    stderr
        .lines()
        .any(|l| l.starts_with("error:") && l.contains("SQLite database") && l.contains("is busy"))
}

/// `nix-env` on one profile. Output goes to the worker's stdout/stderr, i.e. the deploy log.
pub struct NixEnv {
    exe: PathBuf,
    debug: bool,
}

impl NixEnv {
    pub fn find(debug: bool) -> Result<NixEnv, String> {
        find_program("nix-env", std::env::var_os("PATH"))
            .map(|exe| NixEnv { exe, debug })
            .ok_or_else(|| format!("nix-env not found on PATH nor in {}", NIX_FALLBACK_DIRS.join(", ")))
    }

    /// Runs `nix-env -p PROFILE ARGS…`. A daemon-less (root) store can fail with "SQLite database … is
    /// busy" under concurrent Nix use; every operation used here is idempotent, so that case is retried.
    fn run(&self, profile: &Path, args: &[&std::ffi::OsStr]) -> Result<(), String> {
        let shown = format!(
            "{} -p {} {}",
            self.exe.display(),
            profile.display(),
            args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
        );
        for attempt in 1..=NIX_ATTEMPTS {
            if self.debug {
                crate::log(&format!("running {shown}"));
            }
            let out = Command::new(&self.exe)
                .arg("-p")
                .arg(profile)
                .args(args)
                .stdin(Stdio::null())
                .stderr(Stdio::piped())
                .output()
                .map_err(|e| format!("cannot run `{shown}`: {e}"))?;
            // Pass nix-env's messages on to the log, where they would have gone anyway.
            {
                use std::io::Write;
                let _ = std::io::stderr().write_all(&out.stderr);
            }
            if out.status.success() {
                return Ok(());
            }
            let err = String::from_utf8_lossy(&out.stderr);
            if attempt < NIX_ATTEMPTS && is_transient(&err) {
                crate::log(&format!(
                    "the Nix database is busy; retrying `{shown}` ({attempt}/{NIX_ATTEMPTS})"
                ));
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
            let last = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
            let detail = if last.is_empty() {
                String::new()
            } else {
                format!(": {last}")
            };
            return Err(format!("`{shown}` failed ({}){detail}", describe_exit(out.status)));
        }
        Err(format!("`{shown}` failed"))
    }

    pub fn set(&self, profile: &Path, closure: &Path) -> Result<(), String> {
        self.run(profile, &["--set".as_ref(), closure.as_os_str()])
    }

    pub fn switch_generation(&self, profile: &Path, generation: u64) -> Result<(), String> {
        self.run(
            profile,
            &["--switch-generation".as_ref(), generation.to_string().as_ref()],
        )
    }

    pub fn delete_generation(&self, profile: &Path, generation: u64) -> Result<(), String> {
        self.run(
            profile,
            &["--delete-generations".as_ref(), generation.to_string().as_ref()],
        )
    }
}

/// How an activation script run ended, when it did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptError {
    Missing(PathBuf),
    Spawn(PathBuf, String),
    Failed(String),
    TimedOut(u64),
}

impl std::fmt::Display for ScriptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScriptError::Missing(p) => write!(f, "{} does not exist", p.display()),
            ScriptError::Spawn(p, e) => write!(f, "cannot run {}: {e}", p.display()),
            ScriptError::Failed(how) => write!(f, "the activation script failed ({how})"),
            ScriptError::TimedOut(s) => write!(f, "the activation script did not finish within {s} s and was killed"),
        }
    }
}

/// After the timeout, SIGTERM to the group; SIGKILL if it is still there after this grace.
const KILL_GRACE: Duration = Duration::from_secs(3);

/// Has child `pid` exited? Leaves it unreaped.
fn exited_unreaped(pid: i32) -> bool {
    // SAFETY: waitid(2) into a zeroed siginfo we own; WNOWAIT leaves the child waitable.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let r = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        r == 0 && info.si_pid() != 0
    }
}

fn kill_group(pgid: i32, sig: i32) {
    // SAFETY: plain syscall; a stale group id only yields ESRCH.
    unsafe {
        libc::kill(-pgid, sig);
    }
}

/// How an activation script is run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mode {
    pub dry: bool,
    pub boot: bool,
    /// A confirmation will follow (magic rollback): `ROLLOUT_CONFIRM_PENDING=1`, so that a
    /// profile can make itself live without making itself the boot default yet (NixOS: `test`
    /// now, `boot` in its `rollout-confirmed` hook).
    pub pending: bool,
}

/// Runs `<dir>/deploy-rs-activate` with deploy-rs's environment, cwd `dir`, in a new process group
/// that is killed as a whole on timeout. stdout/stderr are inherited (the deploy log).
pub fn run_activation(dir: &Path, mode: Mode, timeout_secs: u64) -> Result<(), ScriptError> {
    run_script(dir, "deploy-rs-activate", mode, timeout_secs)
}

/// Runs the profile's `rollout-confirmed` hook, if it has one, once its deploy is confirmed.
pub fn run_confirmed_hook(dir: &Path, timeout_secs: u64) -> Result<bool, ScriptError> {
    match run_script(dir, "rollout-confirmed", Mode::default(), timeout_secs) {
        Ok(()) => Ok(true),
        Err(ScriptError::Missing(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

fn run_script(dir: &Path, name: &str, mode: Mode, timeout_secs: u64) -> Result<(), ScriptError> {
    let script = dir.join(name);
    if std::fs::symlink_metadata(&script).is_err() {
        return Err(ScriptError::Missing(script));
    }
    let flag = |b: bool| if b { "1" } else { "0" };
    let mut child = Command::new(&script)
        .current_dir(dir)
        .env("PROFILE", dir)
        .env("DRY_ACTIVATE", flag(mode.dry))
        .env("BOOT", flag(mode.boot))
        .env("ROLLOUT_CONFIRM_PENDING", flag(mode.pending))
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| ScriptError::Spawn(script.clone(), e.to_string()))?;
    let pgid = child.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    loop {
        match child.try_wait() {
            Ok(Some(s)) if s.success() => return Ok(()),
            Ok(Some(s)) => return Err(ScriptError::Failed(describe_exit(s))),
            Ok(None) => {}
            Err(e) => return Err(ScriptError::Spawn(script, e.to_string())),
        }
        if Instant::now() >= deadline {
            crate::log(&format!(
                "activation timed out after {timeout_secs} s; terminating its process group {pgid}"
            ));
            kill_group(pgid, libc::SIGTERM);
            let grace_end = Instant::now() + KILL_GRACE;
            while Instant::now() < grace_end {
                // Not reaped (WNOWAIT): the leader's zombie keeps the group id from being reused
                // by another process before the SIGKILL below.
                if exited_unreaped(pgid) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            // Also catches grandchildren that ignored SIGTERM after the leader exited.
            kill_group(pgid, libc::SIGKILL);
            let _ = child.wait();
            return Err(ScriptError::TimedOut(timeout_secs));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors() {
        assert!(is_transient(
            "error: SQLite database '/nix/var/nix/db/db.sqlite' is busy\n"
        ));
        // Nix's own retry warnings are not failures.
        assert!(!is_transient("warning: error: SQLite database '/nix/var/nix/db/db.sqlite' is busy\nerror: path '/nix/store/x' is not valid"));
        assert!(!is_transient("error: profile version 7 does not exist"));
    }

    #[test]
    fn finds_programs_on_path_only_if_executable() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("prog");
        std::fs::write(&f, "").unwrap();
        let path = Some(d.path().as_os_str().to_owned());
        assert_eq!(find_program("prog", path.clone()), None);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_program("prog", path), Some(f));
        assert_eq!(find_program("prog", Some("relative/dir".into())), None);
    }
}
