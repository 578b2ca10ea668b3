//! Builds past one machine: with the local Nix forbidden to build (`--max-jobs 0`), the profile
//! is built by Nix's own build hook on a test host acting as a remote builder, and rollout deploys
//! the result to another test host. rollout schedules nothing itself: the builders reach Nix
//! through the arguments after `--` or through the user's nix.conf.
//!
//! The profile's derivation writes the hostname of the machine that built it into its output.
//! Builds here run unsandboxed, so a build on a test host sees that host's UTS namespace (`hostI`)
//! and a local build sees the deployer's own name. Every test needs root (a `rollout_lab::Fleet`)
//! and runs under `flock -o /tmp/rollout-fleet.lock`.

mod common;

use common::{commands, ensure_agent_built, is_nix, run_rollout, system, write_flake, Run};
use rollout_lab::testing::require_root;
use rollout_lab::Fleet;
use std::path::Path;

/// Node `web` on host1 with one profile `system`, activated as root. Its closure records where it
/// was built (`built-on`); its activation appends the closure to `/tmp/builders-activated` on the
/// target (each test host has a private /tmp).
const DEPLOY: &str = r#"let
    where = builtins.derivation {
      name = "where-built";
      system = "SYSTEM";
      builder = "/bin/sh";
      PATH = "/usr/bin:/bin";
      salt = "SALT";
      args = [ "-c" ''
        mkdir $out
        cat /proc/sys/kernel/hostname > $out/built-on
        echo '#!/bin/sh' > $out/deploy-rs-activate
        echo "echo $out >> /tmp/builders-activated" >> $out/deploy-rs-activate
        chmod +x $out/deploy-rs-activate
      '' ];
    };
  in {
    sshUser = "deploy";
    user = "root";
    sshOpts = [ "-F" "SSHCONFIG" ];
    nodes.web = { hostname = "host1"; profiles.system = { path = where; remoteBuild = REMOTE; }; };
  }"#;

const PROFILE: &str = "/nix/var/nix/profiles/system";

/// A 2-host fleet and a flake (in `dir`) for it with a fresh salt, so the closure is new to every
/// store and must be built in this run; `remote_build`: the profile's `remoteBuild`.
fn setup(dir: &Path, remote_build: bool) -> Fleet {
    require_root();
    ensure_agent_built();
    let fleet = Fleet::temp(2).expect("starting a 2-host test fleet");
    let salt = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let deploy = DEPLOY
        .replace("SYSTEM", system())
        .replace("SALT", &salt)
        .replace("REMOTE", if remote_build { "true" } else { "false" })
        .replace("SSHCONFIG", &fleet.ssh_config().display().to_string());
    write_flake(dir, &deploy);
    fleet
}

/// The closure the target's profile points at, after checking that it was built on host2 (its
/// `built-on`, read on the target and on host2), that host2 only built it (its own profile is
/// untouched) and that the target activated it. `through_here`: whether the closure went through the
/// local store (a local build that the build hook sent to host2), or never reached it (a
/// `remoteBuild` that the target's Nix sent on to host2).
fn assert_built_on_host2_and_active_on_host1(fleet: &Fleet, through_here: bool) -> String {
    let here = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_ne!(here.trim(), "host2", "this machine must not share the builder's name");
    let closure = fleet.exec_ok("host1", &["readlink", "-e", PROFILE]).unwrap();
    assert!(closure.starts_with("/nix/store/"), "host1's profile: {closure:?}");
    let built_on = format!("{closure}/built-on");
    assert_eq!(
        fleet.exec_ok("host1", &["cat", &built_on]).unwrap(),
        "host2",
        "the closure on the target was built on host2"
    );
    assert_eq!(
        fleet.exec_ok("host2", &["cat", &built_on]).unwrap(),
        "host2",
        "the builder's store holds the output it built"
    );
    if through_here {
        assert_eq!(
            std::fs::read_to_string(&built_on).unwrap().trim(),
            "host2",
            "the local store got the builder's output back, not a build of its own"
        );
    } else {
        assert!(
            !Path::new(&closure).exists(),
            "{closure} must not reach the local store"
        );
    }
    let builder_profile = fleet.exec("host2", &["test", "-e", PROFILE]).unwrap();
    assert!(!builder_profile.status.success(), "nothing was deployed to the builder");
    let activated = fleet.exec_ok("host1", &["cat", "/tmp/builders-activated"]).unwrap();
    assert_eq!(activated, closure, "the target ran the closure's activation once");
    closure
}

/// `rollout TARGET… -s --debug-logs --confirm-timeout 10 [-- PASSED…]` in `dir`, with `env` added.
fn deploy(dir: &Path, target: &[&str], passed: &[&str], env: &[(&str, &str)]) -> Run {
    let mut args = target.to_vec();
    args.extend(["-s", "--debug-logs", "--confirm-timeout", "10"]);
    if !passed.is_empty() {
        args.push("--");
        args.extend_from_slice(passed);
    }
    run_rollout(dir, &args, env)
}

#[test]
fn a_profile_built_on_the_builder_given_after_double_dash_is_deployed_to_another_host() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = setup(dir.path(), false);
    let builders = fleet.builder_line("host2", "deploy", false, system()).unwrap();
    let sshopts = fleet.nix_sshopts();
    // Control: with no builder, `--max-jobs 0` leaves nothing that may build, so Nix refuses and
    // nothing is deployed; the run below builds only because the builder is there.
    let out = deploy(
        dir.path(),
        &[".#web"],
        &["--max-jobs", "0"],
        &[("NIX_SSHOPTS", &sshopts)],
    );
    assert_ne!(out.code, 0, "built with no builder and --max-jobs 0:\n{}", out.stderr);
    assert!(
        out.stderr.contains("unable to start any build"),
        "Nix's reason is shown:\n{}",
        out.stderr
    );
    assert!(!fleet.exec("host1", &["test", "-e", PROFILE]).unwrap().status.success());
    let out = deploy(
        dir.path(),
        &[".#web"],
        &["--max-jobs", "0", "--builders", &builders],
        &[("NIX_SSHOPTS", &sshopts)],
    );
    assert_eq!(out.code, 0, "rollout failed:\n{}", out.stderr);
    assert_built_on_host2_and_active_on_host1(&fleet, true);

    // The arguments reached the build as given, and no command of rollout's own went to the
    // builder: Nix's build hook did (rollout schedules no build).
    let cmds = commands(&out.stderr);
    let builds: Vec<_> = cmds.iter().filter(|c| is_nix(c, &["build"])).collect();
    assert!(!builds.is_empty(), "a local nix build ran:\n{}", out.stderr);
    for b in &builds {
        assert!(
            b.windows(2).any(|w| w == ["--max-jobs", "0"])
                && b.windows(2).any(|w| w[0] == "--builders" && w[1] == builders),
            "every nix build carries the arguments after --: {b:?}"
        );
    }
    for c in &cmds {
        assert!(
            !c.iter().any(|w| *w != builders && w.contains("host2")),
            "rollout itself ran a command against the builder: {c:?}"
        );
    }
}

#[test]
fn builders_from_the_users_nix_conf_take_the_build_to_the_builder() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = setup(dir.path(), false);
    // The user's nix.conf ($XDG_CONFIG_HOME/nix/nix.conf), this time with an ssh-ng builder;
    // the machine's /etc/nix/nix.conf is left alone.
    let conf = tempfile::tempdir().unwrap();
    std::fs::create_dir(conf.path().join("nix")).unwrap();
    let line = fleet.builder_line("host2", "deploy", true, system()).unwrap();
    std::fs::write(
        conf.path().join("nix/nix.conf"),
        format!("builders = {line}\nmax-jobs = 0\n"),
    )
    .unwrap();
    let xdg = conf.path().display().to_string();
    let sshopts = fleet.nix_sshopts();
    let out = deploy(
        dir.path(),
        &[".#web"],
        &[],
        &[("NIX_SSHOPTS", &sshopts), ("XDG_CONFIG_HOME", &xdg)],
    );
    assert_eq!(out.code, 0, "rollout failed:\n{}", out.stderr);
    assert_built_on_host2_and_active_on_host1(&fleet, true);
}

#[test]
fn file_mode_builds_on_the_builder_given_with_option_after_double_dash() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = setup(dir.path(), false);
    // The same `deploy` value, read with --file (nix-instantiate, nix-build) instead of a flake.
    std::fs::write(
        dir.path().join("default.nix"),
        "(import ./flake.nix).outputs { self = null; }\n",
    )
    .unwrap();
    let builders = fleet.builder_line("host2", "deploy", false, system()).unwrap();
    let sshopts = fleet.nix_sshopts();
    let file = dir.path().display().to_string();
    let out = deploy(
        dir.path(),
        &["--file", &file, "web.system"],
        &["-j0", "--option", "builders", &builders],
        &[("NIX_SSHOPTS", &sshopts)],
    );
    assert_eq!(out.code, 0, "rollout failed:\n{}", out.stderr);
    assert_built_on_host2_and_active_on_host1(&fleet, true);
}

#[test]
fn a_remote_build_target_offloads_to_its_own_builder_and_activates_the_result() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = setup(dir.path(), true);
    // host1's own nix-daemon gets host2 as a builder (its /etc/nix/machines and root's ssh): the
    // deployer passes nothing, the target's Nix decides where its build runs.
    fleet.add_builder("host1", "host2", "deploy", system()).unwrap();
    let out = deploy(dir.path(), &[".#web"], &[], &[]);
    assert_eq!(out.code, 0, "rollout failed:\n{}", out.stderr);
    assert!(
        out.stderr.contains("--store ssh-ng://deploy@host1"),
        "built through the target's store:\n{}",
        out.stderr
    );
    assert_built_on_host2_and_active_on_host1(&fleet, false);
}

/// A nix-daemon of this machine's store on a socket of its own (nothing else here uses it), with
/// `env` added to its environment; killed and reaped on drop, through its own handle.
struct Daemon {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl Daemon {
    fn start(env: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let mut cmd = std::process::Command::new("nix-daemon");
        cmd.env("NIX_DAEMON_SOCKET_PATH", dir.path().join("socket"))
            .env_remove("NIX_SSHOPTS")
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // If this test process dies first, the daemon goes with it.
        rollout_core::exec::die_with_rollout(&mut cmd);
        let daemon = Daemon {
            child: cmd.spawn().expect("starting nix-daemon"),
            dir,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !daemon.dir.path().join("socket").exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "nix-daemon did not open its socket"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        daemon
    }

    /// The environment that sends a client's store operations (and builds) to this daemon.
    fn client_env(&self) -> [(&'static str, String); 2] {
        [
            ("NIX_REMOTE", "daemon".to_string()),
            (
                "NIX_DAEMON_SOCKET_PATH",
                self.dir.path().join("socket").display().to_string(),
            ),
        ]
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn through_a_nix_daemon_the_builder_is_reached_with_the_daemons_ssh_settings_not_the_deployers() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = setup(dir.path(), false);
    let builders = fleet.builder_line("host2", "deploy", false, system()).unwrap();
    let sshopts = fleet.nix_sshopts();
    let with = |daemon: &Daemon, extra: &[(&str, &str)]| {
        let env = daemon.client_env();
        let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        all.extend_from_slice(extra);
        deploy(
            dir.path(),
            &[".#web"],
            &["--max-jobs", "0", "--builders", &builders],
            &all,
        )
    };

    // The daemon runs the build hook with its own environment: NIX_SSHOPTS given to rollout does
    // not reach it, so the builder's alias cannot be resolved and nothing may build.
    let bare = Daemon::start(&[]);
    let out = with(&bare, &[("NIX_SSHOPTS", &sshopts)]);
    assert_ne!(
        out.code, 0,
        "the daemon reached the builder without ssh settings:\n{}",
        out.stderr
    );
    assert!(!fleet.exec("host1", &["test", "-e", PROFILE]).unwrap().status.success());
    drop(bare);

    // With the ssh settings in the daemon's environment (a trusted client's --builders is taken),
    // the build runs on host2 and rollout deploys it.
    let configured = Daemon::start(&[("NIX_SSHOPTS", &sshopts)]);
    let out = with(&configured, &[]);
    assert_eq!(out.code, 0, "rollout failed:\n{}", out.stderr);
    assert_built_on_host2_and_active_on_host1(&fleet, true);
    let log = std::fs::read_to_string(configured.dir.path().join("log")).unwrap();
    assert!(
        log.contains("(trusted)"),
        "rollout's nix calls went through this daemon: {log}"
    );
}
