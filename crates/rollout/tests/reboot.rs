//! The reboot-safe confirmation window on the test fleet: a host that reboots (every process
//! killed, `/tmp` emptied, daemons and boot steps started again) before a deploy is confirmed comes
//! back on the previous generation; one that reboots after the confirmation keeps the new one.

mod common;

use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

/// The boot step a NixOS host gets from rollout's module: `rollout-agent recover --all`, here with
/// the agent the deploys copied to the host.
fn install_boot_step(env: &Env) {
    let script = "#!/bin/sh\nfor a in /nix/store/*/bin/rollout-agent; do exec \"$a\" recover --all; done\n";
    env.fleet
        .exec_ok(
            "host1",
            &[
                "sh",
                "-c",
                &format!(
                    "mkdir -p /nix/var/rollout-lab/boot.d && printf '%s' '{script}' > /nix/var/rollout-lab/boot.d/rollout && chmod 0755 /nix/var/rollout-lab/boot.d/rollout"
                ),
            ],
        )
        .unwrap();
}

fn system_at(env: &mut Env) {
    env.flake
        .node("host1", "host1")
        .profile("system", marker("system").setting("user", json!("root")));
}

/// Start a deploy and kill the deployer once the target waits for the confirmation.
fn deploy_and_leave_it_unconfirmed(env: &Env) {
    let mut child = env.spawn("#host1", &["--confirm-timeout", "120"]);
    let t0 = Instant::now();
    loop {
        let waiting = env
            .fleet
            .exec(
                "host1",
                &[
                    "sh",
                    "-c",
                    "grep -lE '\"state\": *\"awaiting-confirmation\"' /tmp/rollout-0/*/status.json",
                ],
            )
            .unwrap()
            .status
            .success();
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the deploy never waited for its confirmation"
        );
        if waiting {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL of the process this test started: nobody will confirm
    let _ = child.wait();
}

#[test]
fn a_host_rebooted_before_the_confirmation_comes_back_on_the_previous_generation() {
    let mut env = Env::new(1);
    system_at(&mut env);
    assert_eq!(env.rollout("#host1", &[]).status.code(), Some(0));
    let v1 = env.target_of("host1", SYSTEM);
    install_boot_step(&env);

    system_at(&mut env);
    let v2 = env.build("host1", "system");
    deploy_and_leave_it_unconfirmed(&env);
    assert_eq!(
        env.target_of("host1", SYSTEM),
        v2,
        "activated, waiting for a confirmation"
    );
    env.fleet.reboot("host1").unwrap();

    assert_eq!(
        env.target_of("host1", SYSTEM),
        v1,
        "back on the previous generation after the reboot"
    );
    assert_eq!(env.link("host1", SYSTEM), "system-1-link");
    let markers = env.markers("host1", "system");
    assert_eq!(
        markers.last().map(|m| m.out.as_str()),
        Some(v1.as_str()),
        "v1 re-activated at boot: {markers:?}"
    );
    let (_, status) = env.json("status", "#host1", &[]);
    let last = &status[0]["last_deploy"];
    assert_eq!(last["origin"]["action"], "recover", "{status:#}");
    assert_eq!(last["state"], "rolled-back", "{status:#}");
    assert!(
        last["message"].as_str().unwrap().contains("never confirmed"),
        "{status:#}"
    );
}

#[test]
fn a_host_rebooted_after_the_confirmation_keeps_the_new_generation() {
    let mut env = Env::new(1);
    system_at(&mut env);
    assert_eq!(env.rollout("#host1", &[]).status.code(), Some(0));
    install_boot_step(&env);
    system_at(&mut env);
    assert_eq!(env.rollout("#host1", &[]).status.code(), Some(0));
    let v2 = env.target_of("host1", SYSTEM);
    env.fleet.reboot("host1").unwrap();
    assert_eq!(env.target_of("host1", SYSTEM), v2, "the confirmed generation stays");
    assert_eq!(env.link("host1", SYSTEM), "system-2-link");
    // The markers lived in /tmp, which the reboot emptied: none means no activation at boot.
    assert!(
        env.markers("host1", "system").is_empty(),
        "nothing re-activated at boot"
    );
}

#[test]
fn an_unconfirmed_deploy_whose_agent_was_killed_is_undone_before_the_next_deploy() {
    let mut env = Env::new(1);
    system_at(&mut env);
    assert_eq!(env.rollout("#host1", &[]).status.code(), Some(0));
    system_at(&mut env);
    deploy_and_leave_it_unconfirmed(&env);
    // The agent's worker dies too (not a reboot: nothing runs the boot step). Only this host's
    // processes are looked at (the lab's namespace scan), and only its agent worker is killed.
    let mut killed = 0;
    for pid in env.fleet.host_processes("host1").unwrap() {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let words: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_worker = words.iter().any(|w| w.ends_with(b"rollout-agent")) && words.iter().any(|w| *w == b"worker");
        if is_worker {
            // SAFETY: kill(2) on a pid of this test's own simulated host.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            killed += 1;
        }
    }
    assert_eq!(killed, 1, "one agent worker was waiting for the confirmation");
    system_at(&mut env);
    let v3 = env.build("host1", "system");
    let out = env.rollout("#host1", &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("was never confirmed"),
        "the stale deploy was undone first: {err}"
    );
    assert_eq!(env.target_of("host1", SYSTEM), v3);
    let (_, history) = env.json("history", "#host1", &[]);
    let gens: Vec<u64> = history[0]["generations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["number"].as_u64().unwrap())
        .collect();
    assert_eq!(gens, [1, 2], "the unconfirmed generation was deleted: {history:#}");
}
