//! Fleet tests' set-up: a fleet, a flake that targets it, and the real `rollout` binary run on it.

use rollout_lab::profiles::{fresh_salt, read_markers, FlakeBuilder, Marker, Profile};
use rollout_lab::Fleet;
use serde_json::json;
use std::path::Path;
use std::process::{Command, Output, Stdio};

pub struct Env {
    pub fleet: Fleet,
    pub dir: tempfile::TempDir,
    pub flake: FlakeBuilder,
}

impl Env {
    /// `n` hosts and a flake whose top level points at them as ssh user `deploy`.
    pub fn new(n: usize) -> Env {
        Env::with_fleet(Fleet::temp(n).expect("start test fleet"))
    }

    /// A flake whose top level points at `fleet` (one started with special options) as user `deploy`.
    pub fn with_fleet(fleet: Fleet) -> Env {
        let (dir, flake) = flake_for(&fleet);
        Env { fleet, dir, flake }
    }

    /// Another flake, in a directory of its own, whose top level points at the same fleet
    /// (for two deployers at once).
    pub fn another_flake(&self) -> (tempfile::TempDir, FlakeBuilder) {
        flake_for(&self.fleet)
    }

    pub fn flake_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self) {
        self.flake.write().expect("write flake");
    }

    /// `rollout <flake-relative target> args…` with the flake written first.
    pub fn rollout(&self, target: &str, args: &[&str]) -> Output {
        self.write();
        let t = format!("{}{}", self.flake_dir().display(), target);
        let mut all = vec![t.as_str(), "-s"];
        all.extend_from_slice(args);
        run(&all)
    }

    /// `rollout <subcommand> <flake-relative target> -s args…` with the flake written first.
    pub fn command(&self, sub: &str, target: &str, args: &[&str]) -> Output {
        self.write();
        let t = format!("{}{}", self.flake_dir().display(), target);
        let mut all = vec![sub, t.as_str(), "-s"];
        all.extend_from_slice(args);
        run(&all)
    }

    /// [`Env::command`] with `--json`, its stdout parsed.
    pub fn json(&self, sub: &str, target: &str, args: &[&str]) -> (Option<i32>, serde_json::Value) {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.command(sub, target, &all);
        let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{sub}: stdout is not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        (out.status.code(), v)
    }

    pub fn spawn(&self, target: &str, args: &[&str]) -> std::process::Child {
        self.write();
        let t = format!("{}{}", self.flake_dir().display(), target);
        Command::new(super::rollout_bin())
            .arg(&t)
            .arg("-s")
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// `readlink PATH` inside a host (e.g. `system-3-link`), or "" when absent.
    pub fn link(&self, host: &str, path: &str) -> String {
        let o = self.fleet.exec(host, &["readlink", path]).unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// The store path a profile points at on a host, or "" when absent.
    pub fn target_of(&self, host: &str, path: &str) -> String {
        let o = self.fleet.exec(host, &["readlink", "-e", path]).unwrap();
        if !o.status.success() {
            return String::new();
        }
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    pub fn exists(&self, host: &str, path: &str) -> bool {
        self.fleet.exec(host, &["test", "-e", path]).unwrap().status.success()
            || self.fleet.exec(host, &["test", "-L", path]).unwrap().status.success()
    }

    pub fn markers(&self, host: &str, name: &str) -> Vec<Marker> {
        read_markers(&self.fleet, host, name).unwrap()
    }

    /// Build one profile locally and return its store path (to compare with what the host has).
    pub fn build(&self, node: &str, profile: &str) -> String {
        self.write();
        self.flake.build(node, profile).unwrap().display().to_string()
    }
}

/// A flake in a fresh directory whose top level reaches `fleet` as ssh user `deploy`.
fn flake_for(fleet: &Fleet) -> (tempfile::TempDir, FlakeBuilder) {
    let dir = tempfile::Builder::new()
        .prefix("rollout-test-flake-")
        .tempdir()
        .unwrap();
    let mut flake = FlakeBuilder::new(dir.path());
    flake.top_setting("sshUser", json!("deploy"));
    flake.top_setting("sshOpts", json!(["-F", fleet.ssh_config().display().to_string()]));
    (dir, flake)
}

/// `rollout ARGS` (stdin closed, `NO_COLOR`), its stderr echoed for the test log.
pub fn run(args: &[&str]) -> Output {
    rollout_lab::testing::run_program(&super::rollout_bin(), None, args, &[])
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn salt() -> String {
    fresh_salt("t")
}

pub fn marker(name: &str) -> Profile {
    Profile::marker(name).salt(salt())
}

pub const SYSTEM: &str = "/nix/var/nix/profiles/system";
pub const HELLO_APP: &str = "/nix/var/nix/profiles/per-user/hello/app";
