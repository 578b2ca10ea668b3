//! The test harness every test crate shares: talk to a lab fleet's hosts (ssh, nix copy), make
//! store paths, check mounts, learn the local system, and run the `rollout` binary of the calling
//! crate (`run`, `Run`) with the environment the tests expect.

use crate::Fleet;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// Fleet tests need root (namespaces, a private /nix per host): fail, never skip, without it, so
/// that a run without root cannot pass by testing nothing.
pub fn require_root() {
    assert!(
        crate::is_root(),
        "this test starts a rollout-lab fleet and needs root (namespaces, a private /nix per host)"
    );
}

pub fn ssh(fleet: &Fleet, target: &str, args: &[&str]) -> Output {
    Command::new("ssh")
        .arg("-F")
        .arg(fleet.ssh_config())
        .arg(target)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ssh")
}

pub fn ssh_input(fleet: &Fleet, target: &str, args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut c = Command::new("ssh")
        .arg("-F")
        .arg(fleet.ssh_config())
        .arg(target)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ssh");
    c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    c.wait_with_output().unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

pub fn nix() -> Command {
    let mut c = Command::new("nix");
    c.args(["--extra-experimental-features", "nix-command flakes"]);
    c
}

pub fn nix_copy(fleet: &Fleet, to: &str, path: &str) -> Output {
    nix()
        .env("NIX_SSHOPTS", fleet.nix_sshopts())
        .args(["copy", "--to", to, path])
        .stdin(Stdio::null())
        .output()
        .expect("run nix copy")
}

/// `nix-store --add` a fresh file with unique content; returns its store path.
pub fn fresh_store_path(tag: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join(format!("rollout-lab-{tag}"));
    std::fs::write(&f, crate::profiles::fresh_salt(tag)).unwrap();
    let o = Command::new("nix-store").arg("--add").arg(&f).output().unwrap();
    assert!(
        o.status.success(),
        "nix-store --add: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    stdout(&o)
}

pub fn mounted_below(dir: &Path) -> Vec<String> {
    let d = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| {
            l.split(' ')
                .nth(4)
                .is_some_and(|m| m == d || m.starts_with(&format!("{d}/")))
        })
        .map(String::from)
        .collect()
}

/// `builtins.currentSystem` of the local Nix (e.g. `x86_64-linux`), asked once per process.
pub fn current_system() -> &'static str {
    static SYS: OnceLock<String> = OnceLock::new();
    SYS.get_or_init(|| {
        let out = nix()
            .args(["eval", "--impure", "--raw", "--expr", "builtins.currentSystem"])
            .stdin(Stdio::null())
            .output()
            .expect("running nix to learn builtins.currentSystem");
        assert!(
            out.status.success(),
            "nix eval builtins.currentSystem failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    })
}

/// One finished run of a program under test.
#[derive(Debug)]
pub struct Run {
    /// Exit code; -1 when ended by a signal.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Run `program ARGS` in `cwd` with extra environment variables, stdin closed and `NO_COLOR`
/// set (messages without escape codes); stderr is echoed for the test log.
pub fn run_program(program: &Path, cwd: Option<&Path>, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null()).env("NO_COLOR", "1");
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running the program under test");
    eprintln!(
        "--- {} {}\nexit: {:?}\n{}",
        program.display(),
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl From<Output> for Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}
