//! Drop-in without surprises (issue 15) on the test fleet: what needs a real host — sudo as
//! deploy-rs runs it, an activation longer than activationTimeout without magic rollback, and
//! closures signed with `LOCAL_KEY` / `--sign-key`, and the `-i` answers (which inspect the hosts
//! before asking).

mod common;

use common::*;
use serde_json::json;
use std::io::Write;
use std::process::{Command, Stdio};

/// deploy-rs runs `sudo -S` (root) for interactiveSudo without a distinct `user`; rollout
/// elevates to root too, so a system profile deploys as its users expect.
#[test]
fn interactive_sudo_without_a_user_activates_as_root() {
    let mut env = Env::new(1);
    env.flake
        .node("host1", "host1")
        .setting("sshUser", json!("deploypw"))
        .setting("interactiveSudo", json!(true))
        .profile("system", marker("system"));
    env.write();
    let target = format!("{}#host1", env.flake_dir().display());
    let out = Command::new(rollout_bin())
        .args([&target, "-s"])
        .env("ROLLOUT_SUDO_PASSWORD_HOST1", env.fleet.sudo_password())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(env.markers("host1", "system").last().unwrap().user, "root", "{err}");
    // root's profile, where a NixOS system profile belongs.
    assert_eq!(env.target_of("host1", SYSTEM), env.build("host1", "system"));
}

/// As in deploy-rs, activationTimeout bounds the activation only while magic rollback waits for
/// it: without magic rollback a slow activation finishes and stays.
#[test]
fn a_slow_activation_without_magic_rollback_is_not_cut_short_by_activation_timeout() {
    let mut env = Env::new(1);
    env.flake
        .node("host1", "host1")
        .profile("system", marker("system").sleep(4.0).setting("user", json!("root")));
    let out = env.rollout("#host1", &["--magic-rollback", "false", "--activation-timeout", "1"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("activationTimeout has no effect without magic rollback"),
        "{err}"
    );
    assert_eq!(env.target_of("host1", SYSTEM), env.build("host1", "system"));
    assert_eq!(env.markers("host1", "system").len(), 1);
    // With magic rollback the same bound stops it and rolls back:
    // flags.rs::activation_timeout_kills_a_hanging_activation_and_rolls_back.
}

/// `rollout -i` on host1 with `answer` on stdin: (exit code, stderr).
fn interactive(env: &Env, answer: &str) -> (Option<i32>, String) {
    env.write();
    let target = format!("{}#host1", env.flake_dir().display());
    let mut child = Command::new(rollout_bin())
        .args([&target, "-i", "-s", "--no-progress"])
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(answer.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// deploy-rs goes ahead on its yes-words (`yeah`, `aye`, `Yes!` …); rollout too, asks once more
/// when a yes-word is only part of a longer answer, and cancels on anything else.
#[test]
fn interactive_mode_goes_ahead_on_deploy_rs_yes_words_and_cancels_otherwise() {
    let mut env = Env::new(1);
    for (i, yes) in ["yeah\n", "Yes!\n", "yes please\naye\n"].into_iter().enumerate() {
        env.flake
            .node("host1", "host1")
            .profile("system", marker("system").setting("user", json!("root")));
        let (code, err) = interactive(&env, yes);
        assert_eq!(code, Some(0), "{yes:?}: {err}");
        assert_eq!(env.markers("host1", "system").len(), i + 1, "{yes:?}: {err}");
        assert_eq!(err.contains("That was unclear"), yes.starts_with("yes please"), "{err}");
    }
    let deployed = env.target_of("host1", SYSTEM);
    for no in ["nope\n", "\n", "", "yes please\nmaybe\n"] {
        env.flake
            .node("host1", "host1")
            .profile("system", marker("system").setting("user", json!("root")));
        let (code, err) = interactive(&env, no);
        assert_eq!(code, Some(1), "{no:?}: {err}");
        assert!(
            err.contains("rollout: error: deployment cancelled by the user"),
            "{no:?}: {err}"
        );
        assert_eq!(env.target_of("host1", SYSTEM), deployed, "{no:?}: nothing changed");
    }
}

/// A fresh signing key pair (`nix-store --generate-binary-cache-key`, offline): (secret key file,
/// public key text, the directory holding them).
fn key_pair(name: &str) -> (String, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (sec, public) = (dir.path().join("secret"), dir.path().join("public"));
    let st = Command::new("nix-store")
        .arg("--generate-binary-cache-key")
        .args([name, &sec.display().to_string(), &public.display().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let public = std::fs::read_to_string(&public).unwrap().trim().to_string();
    (sec.display().to_string(), public, dir)
}

fn sigs_on(env: &Env, host: &str, path: &str) -> String {
    env.fleet
        .exec_ok(
            host,
            &[
                "nix",
                "--extra-experimental-features",
                "nix-command",
                "path-info",
                "--sigs",
                path,
            ],
        )
        .unwrap()
}

/// deploy-rs signs closures with `LOCAL_KEY` before copying (`nix sign-paths -r`); rollout does
/// with `--sign-key` or `LOCAL_KEY`, so the target holds them with the deployer's signature.
#[test]
fn sign_key_signs_the_closure_before_it_is_copied() {
    let mut env = Env::new(1);
    let (secret, public, _keys) = key_pair("rollout-dropin-1");
    env.flake
        .node("host1", "host1")
        .profile("system", marker("system").setting("user", json!("root")));
    let out = env.rollout("#host1", &["--sign-key", &secret]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let closure = env.build("host1", "system");
    let sigs = sigs_on(&env, "host1", &closure);
    assert!(sigs.contains("rollout-dropin-1:"), "{sigs}");
    assert_eq!(public.split(':').next(), Some("rollout-dropin-1"));
    // A key file that cannot be read is refused before anything is built or copied.
    let out = env.rollout("#host1", &["--sign-key", "/nonexistent/key"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("--sign-key (or LOCAL_KEY): expected a readable secret key file"),
        "{err}"
    );
    assert!(!err.contains("copy"), "{err}");
}

/// The case signing exists for: the ssh user is not a trusted Nix user and the target requires
/// signatures. Unsigned, the copy is refused and the profile stays; signed with a key the target
/// trusts (`LOCAL_KEY`, deploy-rs's variable), the deploy goes through.
#[test]
fn an_untrusted_ssh_user_deploys_to_a_target_requiring_signatures_with_local_key() {
    let mut env = Env::new(1);
    let (secret, public, _keys) = key_pair("rollout-dropin-2");
    let conf = format!("trusted-users = root\nrequire-sigs = true\ntrusted-public-keys = {public}\n");
    env.fleet
        .exec_with_input("host1", &["sh", "-c", "cat >> /etc/nix/nix.conf"], conf.as_bytes())
        .unwrap();
    env.fleet.restart_daemon("host1").unwrap();
    env.flake
        .node("host1", "host1")
        .profile("system", marker("system").setting("user", json!("root")));
    env.write();
    let target = format!("{}#host1", env.flake_dir().display());
    let run = |key: Option<&str>| {
        let mut c = Command::new(rollout_bin());
        c.args([&target, "-s"]).env("NO_COLOR", "1").env_remove("LOCAL_KEY");
        if let Some(k) = key {
            c.env("LOCAL_KEY", k);
        }
        c.output().unwrap()
    };
    let out = run(None);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "unsigned paths are refused: {err}");
    assert!(
        err.contains("copying") && err.contains("profiles are unchanged"),
        "{err}"
    );
    assert!(!env.exists("host1", SYSTEM), "{err}");
    let out = run(Some(&secret));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let closure = env.build("host1", "system");
    assert_eq!(env.target_of("host1", SYSTEM), closure);
    assert!(sigs_on(&env, "host1", &closure).contains("rollout-dropin-2:"));
}

/// A profile built with rollout's library (on the stub pkgs, `nix/tests/stub-pkgs.nix`) whose
/// activation appends `tag` to /tmp/dropin-shim-marks on the target; its store path.
fn lib_profile(tag: &str) -> String {
    let expr = format!(
        r#"let
          pkgs = import {stub} {{ salt = {salt}; }};
          lib = import {lib} {{ inherit pkgs; rollout = pkgs.stubRollout; }};
          base = pkgs.writeTextFile {{ name = "base"; text = {salt}; destination = "/share/base"; }};
        in lib.activate.custom base "echo {tag} >> /tmp/dropin-shim-marks""#,
        stub = repo_file("nix/tests/stub-pkgs.nix"),
        lib = repo_file("nix/lib.nix"),
        salt = rollout_core::evalexpr::nix_string(&salt()),
    );
    let o = Command::new("nix-build")
        .args(["--no-out-link", "-E", &expr])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// The remote commands deploy-rs sends (its `activate`, `wait`, confirm and `revoke` strings,
/// with `sudo -u root` as its sudo prefix).
fn deploy_rs_activate(closure: &str, confirm_timeout: u32) -> String {
    format!(
        "sudo -u root {closure}/activate-rs activate '{closure}' --profile-user root --profile-name system \
         --temp-path '/tmp' --confirm-timeout {confirm_timeout} --magic-rollback --auto-rollback"
    )
}

fn deploy_rs_wait(closure: &str) -> String {
    format!(
        "sudo -u root {closure}/activate-rs --debug-logs wait '{closure}' --temp-path '/tmp' --activation-timeout 30"
    )
}

fn deploy_rs_confirm(closure: &str) -> String {
    let hash = closure.trim_start_matches("/nix/store/").split('-').next().unwrap();
    format!("sudo -u root rm /tmp/deploy-rs-canary-{hash}")
}

fn ssh_to(env: &Env, command: &str) -> Command {
    let mut c = Command::new("ssh");
    c.arg("-F").arg(env.fleet.ssh_config()).args(["deploy@host1", command]);
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

/// One deploy-rs deployment of `closure` as deploy-rs runs it: activate, wait, then (if
/// `confirm`) the confirming `rm`; the activate call's output.
fn deploy_rs_deploys(env: &Env, closure: &str, confirm: bool, confirm_timeout: u32) -> std::process::Output {
    let activate = ssh_to(env, &deploy_rs_activate(closure, confirm_timeout))
        .spawn()
        .unwrap();
    let wait = ssh_to(env, &deploy_rs_wait(closure)).output().unwrap();
    assert!(wait.status.success(), "wait: {}", String::from_utf8_lossy(&wait.stderr));
    if confirm {
        let rm = ssh_to(env, &deploy_rs_confirm(closure)).output().unwrap();
        assert!(rm.status.success(), "confirm: {}", String::from_utf8_lossy(&rm.stderr));
    }
    activate.wait_with_output().unwrap()
}

/// Going back is possible: deploy-rs can deploy, confirm, roll back (magic rollback) and revoke
/// a profile built with rollout's library, through the `activate-rs` it carries.
#[test]
fn deploy_rs_can_deploy_confirm_and_roll_back_a_profile_built_with_rollouts_library() {
    let env = Env::new(1);
    let (a, b) = (lib_profile("gen-a"), lib_profile("gen-b"));
    for p in [&a, &b] {
        let o = rollout_lab::testing::nix_copy(&env.fleet, "ssh://deploy@host1", p);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let marks = || env.fleet.exec_ok("host1", &["cat", "/tmp/dropin-shim-marks"]).unwrap();

    // Deployed and confirmed.
    let out = deploy_rs_deploys(&env, &a, true, 30);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(env.target_of("host1", SYSTEM), a);
    assert_eq!(marks().lines().collect::<Vec<_>>(), vec!["gen-a"]);

    // Not confirmed: the target rolls back to a by itself and re-activates it.
    let out = deploy_rs_deploys(&env, &b, false, 2);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no confirmation within 2 s"));
    assert_eq!(env.target_of("host1", SYSTEM), a);
    assert_eq!(marks().lines().collect::<Vec<_>>(), vec!["gen-a", "gen-b", "gen-a"]);

    // Confirmed, then revoked (deploy-rs's rollback of earlier successes after a later failure).
    assert!(deploy_rs_deploys(&env, &b, true, 30).status.success());
    assert_eq!(env.target_of("host1", SYSTEM), b);
    let revoke = ssh_to(
        &env,
        &format!("sudo -u root {b}/activate-rs revoke --profile-user root --profile-name system"),
    )
    .output()
    .unwrap();
    assert!(revoke.status.success(), "{}", String::from_utf8_lossy(&revoke.stderr));
    assert_eq!(env.target_of("host1", SYSTEM), a);
    assert_eq!(marks().lines().last(), Some("gen-a"));
}
