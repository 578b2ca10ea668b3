//! Helpers shared by the integration tests (real nix, ssh, sshd; need root).
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

use rollout_lab::Fleet;

/// Skip (return true) when not root.
pub fn skip() -> bool {
    if !rollout_lab::is_root() {
        eprintln!("skipping: rollout-lab integration tests need root");
        return true;
    }
    false
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
    std::fs::write(&f, rollout_lab::profiles::fresh_salt(tag)).unwrap();
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
