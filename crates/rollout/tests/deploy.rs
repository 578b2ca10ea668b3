//! deploy-rs parity on a real test fleet: push, the agent, auto and magic rollback, sudo, flags.

mod common;

use common::*;
use rollout_lab::profiles::Profile;
use serde_json::json;
use std::time::{Duration, Instant};

#[test]
fn root_and_hello_profiles_are_deployed_through_sudo() {
    let mut env = Env::new(1);
    env.flake
        .node("host1", "host1")
        .profiles_order(&["system", "app"])
        .profile("system", marker("system").setting("user", json!("root")))
        .profile("app", marker("app").setting("user", json!("hello")));
    let out = env.rollout("#host1", &["--confirm-timeout", "10"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(env.target_of("host1", SYSTEM), env.build("host1", "system"));
    assert_eq!(env.target_of("host1", HELLO_APP), env.build("host1", "app"));
    let sys = env.markers("host1", "system");
    assert_eq!(sys.len(), 1);
    assert_eq!(
        (
            sys[0].user.as_str(),
            sys[0].profile.as_str(),
            sys[0].dry.as_str(),
            sys[0].boot.as_str()
        ),
        ("root", SYSTEM, "0", "0")
    );
    let app = env.markers("host1", "app");
    assert_eq!(app.len(), 1);
    assert_eq!((app[0].user.as_str(), app[0].profile.as_str()), ("hello", HELLO_APP));
    // the hello profile belongs to hello
    let owner = env.fleet.exec_ok("host1", &["stat", "-c", "%U", HELLO_APP]).unwrap();
    assert_eq!(owner.trim(), "hello");
}

#[test]
fn failing_activation_restores_previous_generation_and_reactivates_it() {
    let mut env = Env::new(1);
    env.flake
        .node("host1", "host1")
        .profile("system", marker("system").setting("user", json!("root")));
    let out = env.rollout("#host1", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let good = env.target_of("host1", SYSTEM);
    assert_eq!(env.link("host1", SYSTEM), "system-1-link");

    env.flake.node("host1", "host1").profile(
        "system",
        Profile::failing("system").salt(salt()).setting("user", json!("root")),
    );
    let out = env.rollout("#host1", &[]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "a rolled-back deploy exits 4: {}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("rolled back"), "{}", stderr(&out));
    assert_eq!(env.link("host1", SYSTEM), "system-1-link");
    assert_eq!(env.target_of("host1", SYSTEM), good);
    assert!(
        !env.exists("host1", "/nix/var/nix/profiles/system-2-link"),
        "the failed generation is deleted"
    );
    let m = env.markers("host1", "system");
    // good activation, failing one, then the good one again
    assert_eq!(m.len(), 3, "{m:?}");
    assert_eq!(m[2].out, good, "the previous generation was re-activated");
}

#[test]
fn activation_that_cuts_the_host_off_is_rolled_back_by_the_target() {
    let mut env = Env::new(1);
    env.flake
        .node("host1", "host1")
        .profile("system", marker("system").setting("user", json!("root")));
    assert_eq!(env.rollout("#host1", &[]).status.code(), Some(0));
    let good = env.target_of("host1", SYSTEM);

    env.flake.node("host1", "host1").profile(
        "system",
        Profile::cut_off("system").salt(salt()).setting("user", json!("root")),
    );
    let started = Instant::now();
    let out = env.rollout("#host1", &["--confirm-timeout", "3"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains("roll") && err.contains("back"),
        "says the target rolls back: {err}"
    );
    // The target is back on the previous generation within confirmTimeout plus a few seconds.
    let deadline = started + Duration::from_secs(3 + 10);
    while env.target_of("host1", SYSTEM) != good && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(env.target_of("host1", SYSTEM), good);
    assert_eq!(env.link("host1", SYSTEM), "system-1-link");
    env.fleet.restart_sshd("host1").unwrap();
}

#[test]
fn killed_deployer_leaves_the_target_to_roll_back_and_a_redeploy_of_the_same_closure_confirms() {
    let mut env = Env::new(1);
    env.flake
        .node("host1", "host1")
        .profile("system", marker("system").setting("user", json!("root")));
    assert_eq!(env.rollout("#host1", &[]).status.code(), Some(0));
    let good = env.target_of("host1", SYSTEM);

    // The new activation takes 2 s; the deployer is killed as soon as it has started.
    env.flake
        .node("host1", "host1")
        .profile("system", marker("system").sleep(2.0).setting("user", json!("root")));
    let new = env.build("host1", "system");
    let mut child = env.spawn("#host1", &["--confirm-timeout", "3"]);
    let t0 = Instant::now();
    loop {
        // the detached worker has taken over once it reports `activating`
        let started = env
            .fleet
            .exec(
                "host1",
                &[
                    "sh",
                    "-c",
                    "grep -lE '\"state\": *\"activating\"' /tmp/rollout-0/*/status.json",
                ],
            )
            .unwrap()
            .status
            .success();
        assert!(t0.elapsed() < Duration::from_secs(30), "the activation never started");
        if started {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL of the process this test started
    let _ = child.wait();
    // activation (2 s) + confirm timeout (3 s) + slack
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut saw_new = false;
    while Instant::now() < deadline {
        let now = env.target_of("host1", SYSTEM);
        saw_new |= now == new;
        if now == good && env.markers("host1", "system").len() >= 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(env.target_of("host1", SYSTEM), good, "the target rolled back by itself");
    assert!(saw_new, "the new generation was activated after the deployer died");

    // The same closure again, right away: confirmed (no stale canary of the timed-out deploy).
    let out = env.rollout("#host1", &["--confirm-timeout", "5"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(env.target_of("host1", SYSTEM), new);
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        env.target_of("host1", SYSTEM),
        new,
        "still on the new closure after the confirm timeout"
    );
}

#[test]
fn dry_activate_changes_nothing_and_boot_sets_the_profile_without_waiting() {
    let mut env = Env::new(1);
    env.flake
        .node("host1", "host1")
        .profile("system", marker("system").setting("user", json!("root")));
    assert_eq!(env.rollout("#host1", &[]).status.code(), Some(0));
    let good = env.target_of("host1", SYSTEM);

    env.flake
        .node("host1", "host1")
        .profile("system", marker("system").setting("user", json!("root")));
    let new = env.build("host1", "system");
    let out = env.rollout("#host1", &["--dry-activate"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        env.target_of("host1", SYSTEM),
        good,
        "dry activation leaves the profile alone"
    );
    let m = env.markers("host1", "system");
    assert!(m.last().unwrap().is_dry() && m.last().unwrap().out == new, "{m:?}");

    // A failing dry activation is a failure.
    env.flake.node("host1", "host1").profile(
        "system",
        Profile::failing("system").salt(salt()).setting("user", json!("root")),
    );
    let out = env.rollout("#host1", &["--dry-activate"]);
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(env.target_of("host1", SYSTEM), good);

    env.flake
        .node("host1", "host1")
        .profile("system", marker("system").setting("user", json!("root")));
    let boot = env.build("host1", "system");
    let t = Instant::now();
    let out = env.rollout("#host1", &["--boot", "--confirm-timeout", "30"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        t.elapsed() < Duration::from_secs(25),
        "no magic rollback wait with --boot"
    );
    assert_eq!(env.target_of("host1", SYSTEM), boot);
    assert!(env.markers("host1", "system").last().unwrap().is_boot());
}

#[test]
fn remote_build_builds_on_the_target_only() {
    let mut env = Env::new(1);
    env.flake.node("host1", "host1").profile(
        "system",
        marker("system")
            .setting("user", json!("root"))
            .setting("remoteBuild", json!(true)),
    );
    env.write();
    let out = env.rollout("#host1", &["--debug-logs"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("--store ssh-ng://deploy@host1"),
        "built through ssh-ng: {err}"
    );
    let on_target = env.target_of("host1", SYSTEM);
    assert!(on_target.starts_with("/nix/store/"), "{on_target}");
    // nothing was built locally
    let local = std::process::Command::new("nix-store")
        .args(["--check-validity", &on_target])
        .status()
        .unwrap();
    assert!(!local.success(), "{on_target} must not exist in the local store");
}

#[test]
fn interactive_sudo_with_a_password_user() {
    let mut env = Env::new(1);
    env.flake
        .node("host1", "host1")
        .setting("sshUser", json!("deploypw"))
        .setting("interactiveSudo", json!(true))
        .profile("system", marker("system").setting("user", json!("root")));
    env.write();
    let target = format!("{}#host1", env.flake_dir().display());
    let out = std::process::Command::new(rollout_bin())
        .args([&target, "-s"])
        .env("ROLLOUT_SUDO_PASSWORD_HOST1", env.fleet.sudo_password())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(env.markers("host1", "system").last().unwrap().user, "root");
    assert!(
        !err.contains(&env.fleet.sudo_password()),
        "the password never appears in output"
    );
    // Without the password, sudo fails and nothing changes.
    let before = env.target_of("host1", SYSTEM);
    env.flake
        .node("host1", "host1")
        .profile("system", marker("system").setting("user", json!("root")));
    env.write();
    let out = std::process::Command::new(rollout_bin())
        .args([&target, "-s", "--sudo-password-command", "echo wrong-password"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "failed, target unchanged: {err}");
    assert!(
        err.contains("sudo on host1 refused") && err.contains("the activation never started"),
        "a wrong password is an authentication failure, not a failed activation: {err}"
    );
    assert!(!err.contains("activation failed"), "{err}");
    assert_eq!(env.target_of("host1", SYSTEM), before);
}

#[test]
fn third_profile_failing_rolls_back_the_first_two_in_reverse_order() {
    let mut env = Env::new(1);
    let node = |env: &mut Env, third: Profile| {
        env.flake
            .node("host1", "host1")
            .profiles_order(&["a", "b", "c"])
            .profile("a", marker("a").setting("user", json!("root")))
            .profile("b", marker("b").setting("user", json!("root")))
            .profile("c", third.setting("user", json!("root")));
    };
    node(&mut env, marker("c"));
    assert_eq!(env.rollout("#host1", &[]).status.code(), Some(0));
    let pa = "/nix/var/nix/profiles/per-user/root/a";
    let pb = "/nix/var/nix/profiles/per-user/root/b";
    let (a1, b1) = (env.target_of("host1", pa), env.target_of("host1", pb));

    node(&mut env, Profile::failing("c").salt(salt()));
    let out = env.rollout("#host1", &[]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_eq!(env.target_of("host1", pa), a1);
    assert_eq!(env.target_of("host1", pb), b1);
    // the re-activations of the old generations: b's before a's
    let ma = env.markers("host1", "a");
    let mb = env.markers("host1", "b");
    let ra = ma.last().unwrap();
    let rb = mb.last().unwrap();
    assert_eq!((ra.out.as_str(), rb.out.as_str()), (a1.as_str(), b1.as_str()));
    assert!(rb.start < ra.start, "b rolled back before a: {rb:?} {ra:?}");
}

#[test]
fn deploy_rs_style_profile_deploys_unchanged() {
    let mut env = Env::new(1);
    env.flake.node("host1", "host1").profile(
        "system",
        Profile::deploy_rs_style("system")
            .salt(salt())
            .setting("user", json!("root")),
    );
    let out = env.rollout("#host1", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(env.target_of("host1", SYSTEM), env.build("host1", "system"));
    assert_eq!(env.markers("host1", "system").last().unwrap().user, "root");
}

#[test]
fn an_agent_that_cannot_run_on_the_target_is_a_clear_error_and_changes_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let mut env = Env::new(1);
    env.flake
        .node("host1", "host1")
        .profile("system", marker("system").setting("user", json!("root")));
    // An "agent" built for another system: the target's kernel refuses to execute it.
    let bogus = env.flake_dir().join("foreign-agent");
    std::fs::write(&bogus, format!("\x7fELF-not-for-this-machine {}", salt())).unwrap();
    std::fs::set_permissions(&bogus, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = env.rollout("#host1", &["--agent", &bogus.display().to_string()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("could not run on host1") && err.contains("--agent"),
        "{err}"
    );
    assert_eq!(env.target_of("host1", SYSTEM), "", "nothing changed on the target");
}

#[test]
fn an_agent_of_another_protocol_version_is_refused_before_anything_changes() {
    use std::os::unix::fs::PermissionsExt;
    let mut env = Env::new(1);
    env.flake
        .node("host1", "host1")
        .profile("system", marker("system").setting("user", json!("root")));
    // A newer agent refuses the deployer's protocol; an agent from before protocol versions refuses the word.
    let newer = "echo \"rollout-agent: error: protocol mismatch: the deployer speaks agent protocol $2, this rollout-agent speaks protocol 99\" >&2; exit 5";
    let older = "echo \"rollout-agent: error: unknown command '$1'; try --help\" >&2; exit 2";
    for (name, body) in [("newer-agent", newer), ("older-agent", older)] {
        let agent = env.flake_dir().join(name);
        std::fs::write(&agent, format!("#!/bin/sh\n# {}\n{body}\n", salt())).unwrap();
        std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = env.rollout("#host1", &["--agent", &agent.display().to_string()]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{name}: {err}");
        assert!(
            err.contains(&format!(
                "does not speak this rollout's agent protocol {}",
                rollout_protocol::PROTOCOL_VERSION
            )) && err.contains("nothing was changed"),
            "{name}: {err}"
        );
        assert_eq!(
            env.target_of("host1", SYSTEM),
            "",
            "{name}: nothing changed on the target"
        );
    }
}

/// Processes whose command line mentions `needle` (read-only scan of /proc; nothing is signalled).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if !e.file_name().to_string_lossy().chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if let Ok(raw) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
            if cmd.contains(needle) {
                found.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
            }
        }
    }
    found
}

#[test]
fn sigterm_ends_the_ssh_masters_and_the_target_rolls_back() {
    let mut env = Env::new(1);
    env.flake
        .node("host1", "host1")
        .profile("system", marker("system").setting("user", json!("root")));
    assert_eq!(env.rollout("#host1", &[]).status.code(), Some(0));
    let good = env.target_of("host1", SYSTEM);

    env.flake
        .node("host1", "host1")
        .profile("system", marker("system").sleep(2.0).setting("user", json!("root")));
    let mut child = env.spawn("#host1", &["--confirm-timeout", "3"]);
    let t0 = Instant::now();
    while !env
        .fleet
        .exec(
            "host1",
            &[
                "sh",
                "-c",
                "grep -lE '\"state\": *\"activating\"' /tmp/rollout-0/*/status.json",
            ],
        )
        .unwrap()
        .status
        .success()
    {
        assert!(t0.elapsed() < Duration::from_secs(30), "the activation never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = child.id();
    // SAFETY: SIGTERM to the rollout process this test started.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "exits as interrupted");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("interrupted"), "{err}");
    // Its SSH master (and anything else using its control sockets) is gone, and so is the directory.
    let needle = format!("/rollout-{pid}-");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_mentioning(&needle).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        processes_mentioning(&needle).is_empty(),
        "{:?}",
        processes_mentioning(&needle)
    );
    // The target rolls back by itself: no confirmation ever comes.
    let deadline = Instant::now() + Duration::from_secs(20);
    while env.target_of("host1", SYSTEM) != good && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(env.target_of("host1", SYSTEM), good);
}
