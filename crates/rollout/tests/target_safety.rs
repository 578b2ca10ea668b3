//! Target-side safety on a real test fleet: another local user squatting or sharing the state
//! directory, two deploys of one profile through different temp paths, and the worker's systemd unit.

mod common;

use common::*;
use rollout_lab::profiles::Profile;
use serde_json::json;
use std::time::{Duration, Instant};

fn root_profile(p: Profile) -> Profile {
    p.setting("user", json!("root"))
}

/// Runs `script` on host1 as the unprivileged local user `hello`.
fn as_hello(env: &Env, script: &str) -> String {
    let o = env
        .fleet
        .exec("host1", &["runuser", "-u", "hello", "--", "sh", "-c", script])
        .unwrap();
    assert!(
        o.status.success(),
        "as hello: {script}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn sh(env: &Env, script: &str) -> String {
    env.fleet.exec_ok("host1", &["sh", "-c", script]).unwrap()
}

/// A first, good deploy of host1's root-owned `system` profile; returns the store path it set.
fn deploy_first(env: &mut Env) -> String {
    env.flake
        .node("host1", "host1")
        .profile("system", root_profile(marker("system")));
    let out = env.rollout("#host1", &["--confirm-timeout", "10"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    env.target_of("host1", SYSTEM)
}

#[test]
fn a_state_root_another_user_created_first_neither_blocks_nor_touches_a_root_deploy() {
    let mut env = Env::new(1);
    env.flake
        .node("host1", "host1")
        .profile("system", root_profile(marker("system")));
    // hello takes root's state-root name first, world-writable, with something planted in it.
    as_hello(&env, "mkdir -m 0777 /tmp/rollout-0 && touch /tmp/rollout-0/planted");
    let out = env.rollout("#host1", &["--confirm-timeout", "10"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(env.target_of("host1", SYSTEM), env.build("host1", "system"));
    assert_eq!(env.markers("host1", "system").len(), 1);
    // Nothing of root's went into hello's directory; root's state is in a root-only root of its own.
    assert_eq!(sh(&env, "ls -A /tmp/rollout-0").trim(), "planted");
    assert_eq!(sh(&env, "stat -c '%U %a' /tmp/rollout-0").trim(), "hello 777");
    assert_eq!(sh(&env, "stat -c '%U %a' /tmp/rollout-0.*").trim(), "root 700");
}

#[test]
fn a_temp_path_other_users_can_rewrite_is_refused_before_the_profile_changes() {
    let mut env = Env::new(1);
    let good = deploy_first(&mut env);

    // A shared directory without the sticky bit: hello could swap root's state root in it (and
    // confirm a deploy, or redirect a write); hello prepares exactly that.
    sh(&env, "mkdir -m 0777 /tmp/shared");
    as_hello(
        &env,
        "mkdir -m 0700 /tmp/shared/rollout-0 && ln -s /etc/passwd /tmp/shared/rollout-0/status.json",
    );
    env.flake
        .node("host1", "host1")
        .profile("system", root_profile(marker("system")));
    let out = env.rollout("#host1", &["--confirm-timeout", "10", "--temp-path", "/tmp/shared"]);
    let err = stderr(&out);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("without the sticky bit"), "{err}");
    assert_eq!(env.target_of("host1", SYSTEM), good, "the profile must not change");
    assert_eq!(env.markers("host1", "system").len(), 1, "no second activation");
    assert_eq!(sh(&env, "ls -A /tmp/shared/rollout-0").trim(), "status.json");
    assert_eq!(
        sh(&env, "readlink /tmp/shared/rollout-0/status.json").trim(),
        "/etc/passwd"
    );
}

/// Waits until some deploy under `temp` on host1 is in `state`.
fn wait_for_state(env: &Env, temp: &str, state: &str) {
    let probe = format!("grep -lE '\"state\": *\"{state}\"' {temp}/rollout-0*/*/status.json");
    let end = Instant::now() + Duration::from_secs(60);
    while !env.fleet.exec("host1", &["sh", "-c", &probe]).unwrap().status.success() {
        assert!(Instant::now() < end, "no deploy under {temp} reached {state}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn two_deploys_of_one_profile_through_different_temp_paths_take_turns() {
    let mut env = Env::new(1);
    let first = deploy_first(&mut env);

    // Run A: an activation that fails after 4 s, rolled back; run B: a good one, started while A runs.
    env.flake.node("host1", "host1").profile(
        "system",
        root_profile(Profile::failing("system").sleep(4.0).salt(salt())),
    );
    let a = env.spawn("#host1", &["--confirm-timeout", "10", "--temp-path", "/tmp/ta"]);
    wait_for_state(&env, "/tmp/ta", "activating");

    let (dir_b, mut flake_b) = env.another_flake();
    flake_b
        .node("host1", "host1")
        .profile("system", root_profile(marker("system")));
    flake_b.write().unwrap();
    let b_target = format!("{}#host1", dir_b.path().display());
    let b = run(&[&b_target, "-s", "--confirm-timeout", "10", "--temp-path", "/tmp/tb"]);
    let a = a.wait_with_output().unwrap();

    let (a_err, b_err) = (stderr(&a), stderr(&b));
    assert_eq!(a.status.code(), Some(4), "A fails and is rolled back: {a_err}");
    assert_eq!(b.status.code(), Some(0), "B is deployed after A: {b_err}");
    assert!(
        b_err.contains("waiting for deploy"),
        "B says that it waits, and for whom: {b_err}"
    );
    let b_path = flake_b.build("host1", "system").unwrap().display().to_string();
    assert_ne!(b_path, first);
    assert_eq!(env.target_of("host1", SYSTEM), b_path, "A's rollback must not undo B");
    // A's activation ran (and failed), then the rollback re-activated the first one, then B.
    let m = env.markers("host1", "system");
    let outs: Vec<&str> = m.iter().map(|m| m.out.as_str()).collect();
    assert_eq!(outs.len(), 4, "{outs:?}");
    assert_eq!((outs[2], outs[3]), (first.as_str(), b_path.as_str()), "{outs:?}");
}

/// A stand-in `systemd-run` on host1: records its arguments, then starts the command after `--`
/// the way systemd would (clean environment plus --setenv, new session, not a child of the caller).
const FAKE_SYSTEMD_RUN: &str = r#"#!/bin/sh
printf '%s\n' "$*" >> /nix/var/rollout-lab/systemd-run.calls
[ -e /nix/var/rollout-lab/systemd-run.fail ] && { echo "Failed to connect to bus" >&2; exit 1; }
envs=""
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  case "$1" in --setenv=*) envs="$envs ${1#--setenv=}" ;; esac
  shift
done
shift
env -i $envs setsid "$@" < /dev/null > /dev/null 2>&1 &
exit 0
"#;

#[test]
fn where_systemd_runs_the_worker_gets_its_own_unit_and_falls_back_to_setsid_without_it() {
    let mut env = Env::new(1);
    // Only inside host1's mount namespace: systemd "is running", and the first systemd-run on
    // sudo's PATH (/usr/local/sbin comes first) is our stand-in.
    std::fs::create_dir_all("/run/systemd").unwrap();
    let o = env
        .fleet
        .exec_with_input(
            "host1",
            &[
                "sh",
                "-c",
                "mount -t tmpfs tmpfs /usr/local/sbin && cat > /usr/local/sbin/systemd-run && \
                 chmod 0755 /usr/local/sbin/systemd-run && \
                 mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/system",
            ],
            FAKE_SYSTEMD_RUN.as_bytes(),
        )
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    env.flake
        .node("host1", "host1")
        .profile("system", root_profile(marker("system")));
    let out = env.rollout("#host1", &["--confirm-timeout", "10"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(env.target_of("host1", SYSTEM), env.build("host1", "system"));
    let calls = sh(&env, "cat /nix/var/rollout-lab/systemd-run.calls");
    assert!(calls.contains("--unit=rollout-agent-"), "{calls}");
    assert!(calls.contains("--service-type=exec"), "{calls}");
    assert!(calls.contains("worker --temp-path /tmp --id "), "{calls}");

    // systemd-run that cannot reach systemd: the worker is detached with setsid, the deploy works.
    sh(&env, "touch /nix/var/rollout-lab/systemd-run.fail");
    env.flake
        .node("host1", "host1")
        .profile("system", root_profile(marker("system")));
    let out = env.rollout("#host1", &["--confirm-timeout", "10", "--debug-logs"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("detaching it with setsid instead"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.target_of("host1", SYSTEM), env.build("host1", "system"));
    assert_eq!(sh(&env, "wc -l < /nix/var/rollout-lab/systemd-run.calls").trim(), "2");
}
