//! Secrets on the test fleet: keys land with the requested owner, group and mode, before or after
//! activation; their content is in no store path, command line, log, event or plan; a failing
//! `keyCommand` stops the node before anything changes; `upload-keys` touches no profile.

mod common;

use common::*;
use serde_json::{json, Value};

const SECRET_A: &str = "s3cret-text-1f0e2d";
const SECRET_B: &str = "s3cret-command-77aa";

fn with_keys(env: &mut Env, keys: Value) {
    env.flake
        .node("host1", "host1")
        .setting("keys", keys)
        .profile("system", marker("system").setting("user", json!("root")));
}

/// A text key, and a key whose command prints a file of this machine (as `pass show` would: the
/// secret is never on a command line).
fn keys(env: &Env) -> Value {
    let secret_file = env.flake_dir().join("tls-secret");
    std::fs::write(&secret_file, SECRET_B).unwrap();
    json!({
        "db": { "text": SECRET_A, "user": "hello", "group": "hello", "permissions": "0640", "destDir": "/tmp/rollout-keys" },
        "tls": { "keyCommand": ["cat", secret_file.display().to_string()], "name": "tls.pem",
                 "uploadAt": "post-activation", "destDir": "/tmp/rollout-keys" }
    })
}

fn stat(env: &Env, path: &str) -> String {
    env.fleet.exec_ok("host1", &["stat", "-c", "%U %G %a", path]).unwrap()
}

#[test]
fn keys_land_with_owner_group_and_mode_before_and_after_activation_and_nowhere_else() {
    let mut env = Env::new(1);
    let k = keys(&env);
    with_keys(&mut env, k);
    let out = env.rollout("#host1", &["--json", "-d"]);
    let (stdout, err) = (String::from_utf8_lossy(&out.stdout).into_owned(), stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(stat(&env, "/tmp/rollout-keys/db"), "hello hello 640");
    assert_eq!(stat(&env, "/tmp/rollout-keys/tls.pem"), "root root 600");
    let cat = |p: &str| env.fleet.exec_ok("host1", &["cat", p]).unwrap();
    assert_eq!(cat("/tmp/rollout-keys/db"), SECRET_A);
    assert_eq!(cat("/tmp/rollout-keys/tls.pem"), SECRET_B);

    // Nowhere else: not in the events (stdout), the debug log with every command line (stderr),
    // the plan, or any store path on the target.
    for secret in [SECRET_A, SECRET_B] {
        let leaks: Vec<&str> = stdout
            .lines()
            .chain(err.lines())
            .filter(|l| l.contains(secret))
            .collect();
        assert!(leaks.is_empty(), "{secret} in the events or the -d output: {leaks:#?}");
    }
    let plan = env.command("plan", "#host1", &[]);
    assert!(!String::from_utf8_lossy(&plan.stdout).contains(SECRET_A), "plan");
    assert!(
        String::from_utf8_lossy(&plan.stdout).contains("<redacted>"),
        "the plan says a text key is there"
    );
    let in_store = env
        .fleet
        .exec("host1", &["grep", "-rlF", "-e", SECRET_A, "-e", SECRET_B, "/nix/store"])
        .unwrap();
    assert!(
        in_store.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&in_store.stdout)
    );

    // Pre-activation keys before the activation, post-activation ones after it.
    let phases: Vec<String> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == "phase" && e["state"] == "started")
        .filter_map(|e| e["phase"].as_str().map(String::from))
        .filter(|p| p == "keys" || p == "activate")
        .collect();
    assert_eq!(phases, ["keys", "activate", "keys"], "{stdout}");
}

#[test]
fn a_failing_key_command_stops_the_node_before_anything_changes() {
    let mut env = Env::new(1);
    with_keys(&mut env, json!({}));
    assert_eq!(env.rollout("#host1", &[]).status.code(), Some(0));
    let before = (env.target_of("host1", SYSTEM), env.markers("host1", "system").len());
    let logins = env.fleet.total_auth_count();
    with_keys(
        &mut env,
        json!({ "db": { "keyCommand": ["sh", "-c", "echo vault sealed >&2; exit 1"] } }),
    );
    let out = env.rollout("#host1", &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("key `db`: keyCommand `sh` failed") && err.contains("vault sealed"),
        "{err}"
    );
    assert_eq!(
        (env.target_of("host1", SYSTEM), env.markers("host1", "system").len()),
        before
    );
    assert_eq!(env.fleet.total_auth_count(), logins, "the host was not even contacted");
}

#[test]
fn upload_keys_writes_the_keys_and_touches_no_profile() {
    let mut env = Env::new(1);
    with_keys(&mut env, json!({}));
    assert_eq!(env.rollout("#host1", &[]).status.code(), Some(0));
    let markers = env.markers("host1", "system").len();
    let k = keys(&env);
    with_keys(&mut env, k);
    let out = env.command("upload-keys", "#host1", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stat(&env, "/tmp/rollout-keys/db"), "hello hello 640");
    assert_eq!(stat(&env, "/tmp/rollout-keys/tls.pem"), "root root 600");
    assert_eq!(env.markers("host1", "system").len(), markers, "no activation");
    assert_eq!(env.link("host1", SYSTEM), "system-1-link", "no new generation");
}
