//! Machine-level setup shared by all fleets: tool checks, the test users (root, deploy, deploypw, hello),
//! their sudoers entries and deploypw's password, and a small helper to run commands with clear errors.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::error::{io_err, LabError, Result};

/// PATH given to everything started inside a host.
pub(crate) const SYSPATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Non-root users created on the machine (kept after `down`).
pub(crate) const USERS: [&str; 3] = ["deploy", "deploypw", "hello"];
/// All users that can log in to a host.
pub(crate) const LOGIN_USERS: [&str; 4] = ["root", "deploy", "deploypw", "hello"];

const SUDOERS_DEPLOY: &str = "/etc/sudoers.d/rollout-lab-deploy";
const SUDOERS_DEPLOYPW: &str = "/etc/sudoers.d/rollout-lab-deploypw";
const PW_DIR: &str = "/etc/rollout-lab";
const PW_FILE: &str = "/etc/rollout-lab/deploypw.password";
const LOCK_FILE: &str = "/run/rollout-lab.lock";

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Run a command to completion; error (with its stderr) unless it exits 0.
pub(crate) fn run(cmd: &mut Command) -> Result<Output> {
    let out = output(cmd)?;
    if !out.status.success() {
        return Err(LabError::Command {
            cmd: describe(cmd),
            detail: format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()),
        });
    }
    Ok(out)
}

/// Run a command to completion and return its output whatever the exit status.
pub(crate) fn output(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(Stdio::null()).output().map_err(|e| LabError::Command {
        cmd: describe(cmd),
        detail: e.to_string(),
    })
}

/// Run with the given bytes on stdin.
pub(crate) fn run_stdin(cmd: &mut Command, input: &[u8]) -> Result<Output> {
    let d = describe(cmd);
    let err = |e: std::io::Error| LabError::Command {
        cmd: d.clone(),
        detail: e.to_string(),
    };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(err)?;
    child.stdin.take().expect("piped").write_all(input).map_err(err)?;
    let out = child.wait_with_output().map_err(err)?;
    if !out.status.success() {
        return Err(LabError::Command {
            cmd: d.clone(),
            detail: format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()),
        });
    }
    Ok(out)
}

pub(crate) fn find_tool(tool: &str) -> Option<std::path::PathBuf> {
    if tool.contains('/') {
        return Path::new(tool).is_file().then(|| tool.into());
    }
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(SYSPATH.split(':'))
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

/// Check we are root and every external tool is present.
pub(crate) fn preflight(netns: bool) -> Result<()> {
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    if uid != 0 {
        return Err(LabError::NotRoot { uid });
    }
    let mut tools = vec![
        ("unshare", "util-linux"),
        ("nsenter", "util-linux"),
        ("setsid", "util-linux"),
        ("mount", "mount"),
        ("hostname", "hostname"),
        ("useradd", "passwd"),
        ("chpasswd", "passwd"),
        ("visudo", "sudo"),
        ("sudo", "sudo"),
        ("ssh", "openssh-client"),
        ("ssh-keygen", "openssh-client"),
        ("/usr/sbin/sshd", "openssh-server"),
        ("nix-store", "nix-bin"),
        ("nix-daemon", "nix-bin"),
        ("sleep", "coreutils"),
    ];
    if netns {
        tools.push(("ip", "iproute2"));
    }
    for (t, pkg) in tools {
        if find_tool(t).is_none() {
            return Err(LabError::MissingTool {
                tool: t.into(),
                hint: format!("apt-get install {pkg}"),
            });
        }
    }
    Ok(())
}

/// An exclusive machine-wide lock (flock), released on drop.
pub(crate) struct Lock(#[allow(dead_code)] fs::File);

impl Lock {
    pub(crate) fn take() -> Result<Lock> {
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK_FILE)
            .map_err(io_err(LOCK_FILE))?;
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a valid, owned fd.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(LabError::Io {
                path: LOCK_FILE.into(),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Lock(f))
    }
}

fn user_exists(name: &str) -> bool {
    fs::read_to_string("/etc/passwd")
        .map(|s| s.lines().any(|l| l.split(':').next() == Some(name)))
        .unwrap_or(false)
}

fn write_sudoers(path: &str, content: &str) -> Result<()> {
    if fs::read_to_string(path).ok().as_deref() == Some(content) {
        return Ok(());
    }
    let tmp = format!("{path}.tmp");
    fs::write(&tmp, content).map_err(io_err(&tmp))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o440)).map_err(io_err(&tmp))?;
    if let Err(e) = run(Command::new("visudo").args(["-cqf", &tmp])) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, path).map_err(io_err(path))
}

/// Create the test users and sudoers entries if missing, and (re)set deploypw's password. Returns it.
pub(crate) fn ensure_users() -> Result<String> {
    let _lock = Lock::take()?;
    for u in USERS {
        if !user_exists(u) {
            eprintln!("rollout-lab: creating user {u}");
            run(Command::new("useradd").args([
                "--no-create-home",
                "--home-dir",
                &format!("/home/{u}"),
                "--shell",
                "/bin/bash",
                u,
            ]))?;
        }
    }
    write_sudoers(
        SUDOERS_DEPLOY,
        "# rollout-lab: passwordless sudo for the deploy test user\ndeploy ALL=(ALL:ALL) NOPASSWD: ALL\n",
    )?;
    write_sudoers(
        SUDOERS_DEPLOYPW,
        "# rollout-lab: deploypw needs its password for sudo (sudo -S works without a tty)\n\
         Defaults:deploypw !requiretty, lecture=never, timestamp_timeout=0\n\
         deploypw ALL=(ALL:ALL) ALL\n",
    )?;
    fs::create_dir_all(PW_DIR).map_err(io_err(PW_DIR))?;
    fs::set_permissions(PW_DIR, fs::Permissions::from_mode(0o700)).map_err(io_err(PW_DIR))?;
    let pw = match fs::read_to_string(PW_FILE) {
        Ok(s) if s.trim().len() >= 12 => s.trim().to_string(),
        _ => {
            let pw = rollout_protocol::id::random_hex(12);
            write_private(Path::new(PW_FILE), &format!("{pw}\n"))?;
            pw
        }
    };
    // Same password every time: concurrent fleets never invalidate each other's password file.
    run_stdin(&mut Command::new("chpasswd"), format!("deploypw:{pw}\n").as_bytes())?;
    Ok(pw)
}

/// Write a file with mode 0600.
pub(crate) fn write_private(path: &Path, content: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = fs::remove_file(path);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(content.as_bytes()).map_err(io_err(path))
}

/// chown path to user (by name) via the `chown` tool, recursively.
pub(crate) fn chown_r(path: &Path, user: &str) -> Result<()> {
    run(Command::new("chown").arg("-R").arg(format!("{user}:")).arg(path)).map(|_| ())
}
