//! CLI tests: the real `rollout-lab` binary on bad input (exit 1, clear message) and a full round trip.

use rollout_lab::testing as common;

use std::process::{Command, Output};

fn lab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rollout-lab"))
        .args(args)
        .output()
        .unwrap()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn bad_input_exits_1() {
    for (args, want) in [
        (&["up", "0", "--state", "/tmp/rollout-lab-cli-x"][..], "host count"),
        (&["up", "2", "--state", "relative/dir"][..], "absolute"),
        (&["up", "2", "--state", "/tmp"][..], "system directory"),
        (&["up", "two", "--state", "/tmp/rollout-lab-cli-x"][..], "invalid value"),
        (
            &["status", "--state", "/tmp/rollout-lab-cli-absent"][..],
            "not a rollout-lab state dir",
        ),
        (
            &["exec", "host1", "--state", "/tmp/rollout-lab-cli-absent", "--", "true"][..],
            "not a rollout-lab state dir",
        ),
        (&["frobnicate"][..], "unrecognized subcommand"),
        (&["up", "2"][..], "--state"),
    ] {
        let o = lab(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", err(&o));
        assert!(err(&o).contains(want), "{args:?}: {}", err(&o));
    }
    assert_eq!(lab(&["--help"]).status.code(), Some(0));
}

#[test]
fn round_trip() {
    common::require_root();
    let td = tempfile::Builder::new()
        .prefix("rollout-lab-cli-")
        .tempdir_in("/tmp")
        .unwrap();
    let state = td.path().join("fleet");
    let st = state.to_str().unwrap();
    let o = lab(&["up", "2", "--state", st, "--port", "0"]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(err(&o).contains("2 hosts up in"), "{}", err(&o));
    let again = lab(&["up", "1", "--state", st, "--port", "0"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(err(&again).contains("already up"), "{}", err(&again));
    let s = lab(&["status", "--state", st]);
    let out = String::from_utf8_lossy(&s.stdout);
    assert!(out.contains("2/2 hosts listening"), "{out}");
    let e = lab(&["exec", "host2", "--state", st, "--", "hostname"]);
    assert_eq!(String::from_utf8_lossy(&e.stdout).trim(), "host2");
    let e = lab(&["exec", "host3", "--state", st, "--", "hostname"]);
    assert_eq!(e.status.code(), Some(1));
    assert!(err(&e).contains("no such host"), "{}", err(&e));
    let c = lab(&["cut", "host1", "--state", st]);
    assert_eq!(c.status.code(), Some(1));
    assert!(err(&c).contains("not in netns mode"));
    let env = lab(&["env", "--state", st]);
    assert!(String::from_utf8_lossy(&env.stdout).contains(&format!("export NIX_SSHOPTS=\"-F {st}/ssh_config\"")));
    let ssh = Command::new("ssh")
        .args(["-F", &format!("{st}/ssh_config"), "host1", "hostname"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&ssh.stdout).trim(), "host1");
    // an attached handle started by the CLI is not collected by gc
    assert!(!rollout_lab::Fleet::attach(&state).unwrap().is_orphaned());
    let d = lab(&["down", "--state", st]);
    assert!(d.status.success(), "{}", err(&d));
    assert!(!state.exists());
    assert!(common::mounted_below(&state).is_empty());
}
