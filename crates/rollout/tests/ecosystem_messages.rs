//! What a person reads when a deploy fails for one of the common reasons, produced for real on
//! the test fleet (ssh, sshd, sudo, nix-daemon): rollout's own first line (what failed, where),
//! the tool's text indented below it, and a `hint:` line with the usual fix.

mod common;

use common::{marker, stderr, Env};
use serde_json::json;

/// The `FAILED` line of `[host1.system]` and the lines indented below it.
fn failure(err: &str) -> (String, Vec<String>) {
    let mut lines = err
        .lines()
        .skip_while(|l| !l.starts_with("rollout: [host1.system] FAILED: "));
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("no FAILED line in:\n{err}"))
        .to_string();
    let below = lines
        .take_while(|l| l.starts_with("    "))
        .map(str::to_string)
        .collect();
    (first, below)
}

/// The `hint:` lines of the summary.
fn hints(err: &str) -> Vec<&str> {
    err.lines()
        .filter_map(|l| l.trim_start().strip_prefix("hint: "))
        .collect()
}

/// Deploys host1's `system` as `user` over ssh as `ssh_user`, expecting it to fail (exit 3): stderr.
fn failing_deploy(ssh_user: &str, user: &str) -> String {
    let mut env = Env::new(1);
    env.flake
        .node("host1", "host1")
        .setting("sshUser", json!(ssh_user))
        .profile("system", marker("system").setting("user", json!(user)));
    let out = env.rollout("#host1", &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    err
}

#[test]
fn sudo_that_wants_a_password_is_explained_with_a_hint() {
    let err = failing_deploy("deploypw", "root");
    let (first, _) = failure(&err);
    assert!(
        first.starts_with("rollout: [host1.system] FAILED: sudo on host1 refused"),
        "{first}"
    );
    let h = hints(&err);
    assert_eq!(h.len(), 1, "{err}");
    assert!(h[0].starts_with("sudo on the target wants a password") && h[0].contains("interactiveSudo"));
}

#[test]
fn an_untrusted_ssh_user_gets_the_trusted_users_hint() {
    // `hello` is not in the host's trusted-users: its daemon refuses unsigned paths.
    let err = failing_deploy("hello", "hello");
    let (first, below) = failure(&err);
    assert!(
        first.starts_with("rollout: [host1.system] FAILED: copying 2 path(s) to hello@host1 failed"),
        "{first}"
    );
    assert!(
        !first.contains("error: "),
        "Nix's text is below rollout's line: {first}"
    );
    assert!(below[0].trim_start().starts_with("error: cannot add path"), "{below:?}");
    let h = hints(&err);
    assert_eq!(h.len(), 1, "{err}");
    assert!(h[0].contains("trusted-users"), "{h:?}");
}

#[test]
fn a_changed_host_key_is_named_before_sshs_banner() {
    let env = {
        let mut env = Env::new(1);
        env.flake.node("host1", "host1").profile("system", marker("system"));
        env
    };
    // Record another key for host1 (this machine's own host key), as after a reinstall.
    let other = std::fs::read_to_string("/etc/ssh/ssh_host_ed25519_key.pub").expect("a local ed25519 host key");
    let other: Vec<&str> = other.split_whitespace().take(2).collect();
    let known = std::fs::read_to_string(env.fleet.known_hosts()).unwrap();
    let changed: String = known
        .lines()
        .map(|l| match l.split_whitespace().next() {
            Some("host1") => format!("host1 {} {}\n", other[0], other[1]),
            _ => format!("{l}\n"),
        })
        .collect();
    assert_ne!(changed, known);
    std::fs::write(env.fleet.known_hosts(), changed).unwrap();
    let out = env.rollout("#host1", &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    let (first, below) = failure(&err);
    assert_eq!(
        first,
        "rollout: [host1.system] FAILED: cannot connect to deploy@host1: its ssh host key is not the one in \
         known_hosts, so ssh refused to connect"
    );
    assert!(
        below[0].trim_start().starts_with("@@@@"),
        "ssh's banner is below: {below:?}"
    );
    assert!(below
        .iter()
        .any(|l| l.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")));
    assert!(
        !err.lines().any(|l| l.starts_with('@')),
        "no line starts with the banner:\n{err}"
    );
    let h = hints(&err);
    assert_eq!(h.len(), 1, "{err}");
    assert!(h[0].contains("ssh-keygen -R"), "{h:?}");
}
