//! Streaming, parallel evaluation on a real fleet: nodes are evaluated by several `nix eval`
//! processes at once, each node goes on to build and copy as soon as its own evaluation is done,
//! and one node's evaluation error fails that node only (the fleet policy decides the rest).
//!
//! The node that must evaluate last reads a FIFO (an impure `builtins.readFile`, hence
//! `-- --impure`): its evaluation cannot end before the test writes to it, which the test does
//! only once the other node's copy has started. The order is forced, not timed.

mod common;

use common::{ensure_agent_built, prof_fn};
use rollout_lab::Fleet;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A flake of two nodes on hosts 1 and 2, each with a `system` profile; `b_path` is the Nix
/// expression of node b's `path`.
fn flake(dir: &Path, fleet: &Fleet, b_path: &str, salt: &str) {
    let text = format!(
        r#"{{
  outputs = {{ self }}: let
  {prof}
  in {{
    deploy = {{
      sshUser = "deploy";
      sshOpts = [ "-F" "{cfg}" ];
      nodes.a = {{ hostname = "host1"; profiles.system = {{ path = prof "a-{salt}"; user = "root"; }}; }};
      nodes.b = {{ hostname = "host2"; profiles.system = {{ path = {b_path}; user = "root"; }}; }};
    }};
  }};
}}
"#,
        prof = prof_fn(),
        cfg = fleet.ssh_config().display(),
    );
    std::fs::write(dir.join("flake.nix"), text).unwrap();
}

fn salt() -> String {
    rollout_lab::profiles::fresh_salt("s")
}

/// The time of the first event of `node` in `phase` with `state`.
fn at(events: &[Value], node: &str, phase: &str, state: &str) -> Option<f64> {
    events
        .iter()
        .find(|e| e["event"] == "phase" && e["node"] == node && e["phase"] == phase && e["state"] == state)
        .and_then(|e| e["time"].as_f64())
}

fn outcome<'a>(events: &'a [Value], node: &str) -> (&'a str, &'a str) {
    events
        .iter()
        .rev()
        .find(|e| e["event"] == "outcome" && e["node"] == node)
        .map(|e| (e["outcome"].as_str().unwrap_or(""), e["message"].as_str().unwrap_or("")))
        .unwrap_or(("", ""))
}

/// Open the FIFO for writing without blocking forever: it succeeds once its reader (node b's
/// evaluator) has opened it.
fn release(fifo: &Path, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(fifo)
        {
            let _ = f.write_all(b"released");
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn profile_of(fleet: &Fleet, host: &str) -> String {
    let o = fleet
        .exec(host, &["readlink", "-e", "/nix/var/nix/profiles/system"])
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn evaluations_overlap_and_the_first_node_copies_before_the_last_is_evaluated() {
    ensure_agent_built();
    let fleet = Fleet::temp(2).expect("start test fleet");
    let dir = tempfile::tempdir().unwrap();
    let gate = tempfile::tempdir().unwrap();
    let fifo = gate.path().join("gate");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let s = salt();
    let b_path = format!(
        r#"prof ("b-{s}-" + builtins.substring 0 8 (builtins.readFile "{}"))"#,
        fifo.display()
    );
    flake(dir.path(), &fleet, &b_path, &s);
    let mut child = Command::new(common::rollout_bin())
        .current_dir(dir.path())
        .args([".", "-s", "--json", "--eval-jobs", "2", "--", "--impure"])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    // A guard: whatever happens, b's evaluator is released after a minute (the test then fails
    // on the order of events instead of hanging).
    let guard_fifo = fifo.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(60));
        release(&guard_fifo, Duration::from_secs(5));
    });
    let mut events: Vec<Value> = Vec::new();
    let mut released = false;
    for line in BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        let Ok(e) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let copy_started = e["event"] == "phase" && e["node"] == "a" && e["phase"] == "copy" && e["state"] == "started";
        events.push(e);
        if copy_started && !released {
            released = release(&fifo, Duration::from_secs(30));
        }
    }
    let status = child.wait().unwrap();
    let stderr = err.join().unwrap();
    assert!(status.success(), "rollout failed:\n{stderr}");
    assert!(
        released,
        "node a's copy never started while b was evaluating:\n{stderr}"
    );
    let t = |node: &str, phase: &str, state: &str| {
        at(&events, node, phase, state).unwrap_or_else(|| panic!("no {phase} {state} event for {node}:\n{stderr}"))
    };
    let (a0, a1) = (t("a", "evaluate", "started"), t("a", "evaluate", "succeeded"));
    let (b0, b1) = (t("b", "evaluate", "started"), t("b", "evaluate", "succeeded"));
    assert!(
        a0 < b1 && b0 < a1,
        "the evaluations of a ({a0}..{a1}) and b ({b0}..{b1}) do not overlap"
    );
    let a_copy = t("a", "copy", "started");
    assert!(
        a_copy < b1,
        "a's copy ({a_copy}) did not start before b's evaluation ended ({b1})"
    );
    assert_eq!(outcome(&events, "a").0, "deployed", "{stderr}");
    assert_eq!(outcome(&events, "b").0, "deployed", "{stderr}");
    assert!(profile_of(&fleet, "host1").ends_with(&format!("-a-{s}")));
    assert!(profile_of(&fleet, "host2").ends_with(&format!("-b-{s}-released")));
}

/// `rollout ARGS --json` in `dir`: exit code, events, stderr.
fn deploy(dir: &Path, args: &[&str]) -> (i32, Vec<Value>, String) {
    let out = Command::new(common::rollout_bin())
        .current_dir(dir)
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let events = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("{stderr}");
    (out.status.code().unwrap_or(-1), events, stderr)
}

#[test]
fn one_nodes_evaluation_error_fails_that_node_only() {
    ensure_agent_built();
    let fleet = Fleet::temp(2).expect("start test fleet");
    let dir = tempfile::tempdir().unwrap();
    let s = salt();
    flake(dir.path(), &fleet, r#"throw "node b is broken""#, &s);

    // With --keep-going, a is deployed and b fails with Nix's message; host2 sees no login.
    let (code, events, stderr) = deploy(dir.path(), &[".", "-s", "--json", "--keep-going"]);
    assert_eq!(code, 3, "{stderr}");
    assert_eq!(outcome(&events, "a").0, "deployed", "{stderr}");
    let (b, why) = outcome(&events, "b");
    assert_eq!(b, "failed", "{stderr}");
    assert!(
        why.contains("evaluating node `b` failed") && why.contains("node b is broken"),
        "{why}"
    );
    assert!(at(&events, "b", "evaluate", "failed").is_some(), "{stderr}");
    assert!(profile_of(&fleet, "host1").ends_with(&format!("-a-{s}")));
    // The master login starts early only once a node's evaluation succeeded.
    assert_eq!(fleet.sshd_auth_count("host2"), 0, "b's host was contacted");

    // Without it, the fleet policy applies: nothing of the new run stays on host1.
    let s2 = salt();
    flake(dir.path(), &fleet, r#"throw "node b is broken""#, &s2);
    let (code, events, stderr) = deploy(dir.path(), &[".", "-s", "--json"]);
    assert!(code == 3 || code == 4, "exit {code}:\n{stderr}");
    assert!(matches!(outcome(&events, "a").0, "rolled-back" | "skipped"), "{stderr}");
    assert!(
        profile_of(&fleet, "host1").ends_with(&format!("-a-{s}")),
        "host1 kept the new profile"
    );
}

#[test]
fn a_path_that_is_not_a_store_path_fails_its_node_before_any_login_and_plan_refuses_it() {
    let fleet = Fleet::temp(1).expect("start test fleet");
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"{{ outputs = {{ self }}: {{ deploy = {{ sshUser = "deploy"; sshOpts = [ "-F" "{}" ];
          nodes.a = {{ hostname = "host1"; profiles.system.path = "result"; }}; }}; }}; }}"#,
        fleet.ssh_config().display()
    );
    std::fs::write(dir.path().join("flake.nix"), text).unwrap();
    let want = "deploy.nodes.a.profiles.system.path: expected an absolute store path, found `result`";

    let (code, events, stderr) = deploy(dir.path(), &[".", "-s", "--json"]);
    assert_eq!(code, 3, "{stderr}");
    let (a, why) = outcome(&events, "a");
    assert_eq!(a, "failed");
    assert!(why.contains(want), "{why}");
    assert_eq!(fleet.total_auth_count(), 0, "a host was contacted");

    let (code, _, stderr) = deploy(dir.path(), &["plan", ".", "-s"]);
    assert_eq!(code, 1, "{stderr}");
    let first = stderr.lines().find(|l| l.starts_with("rollout: error: ")).unwrap_or("");
    assert!(first.contains(want), "{stderr}");
}

#[test]
fn a_build_that_fails_fails_only_its_node() {
    ensure_agent_built();
    let fleet = Fleet::temp(2).expect("start test fleet");
    let dir = tempfile::tempdir().unwrap();
    let s = salt();
    let broken = format!(
        r#"builtins.derivation {{ name = "broken-{s}"; system = "{}"; builder = "/bin/sh"; args = [ "-c" "echo the build of b breaks >&2; exit 1" ]; }}"#,
        common::system()
    );
    flake(dir.path(), &fleet, &broken, &s);
    let (code, events, stderr) = deploy(dir.path(), &[".", "-s", "--json", "--keep-going", "--debug-logs"]);
    assert_eq!(code, 3, "{stderr}");
    assert_eq!(outcome(&events, "a").0, "deployed", "{stderr}");
    let (b, why) = outcome(&events, "b");
    assert_eq!(b, "failed", "{stderr}");
    assert!(why.contains("the build of b breaks"), "{why}");
    assert!(profile_of(&fleet, "host1").ends_with(&format!("-a-{s}")));
    // Its master login started early, while it built (and was ended): nothing reached its profile.
    assert_eq!(profile_of(&fleet, "host2"), "", "b's host got a profile");
}
