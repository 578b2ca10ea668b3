//! Fleet scale on a real test fleet: parallel nodes, fleet-wide rollback, --keep-going, --canary,
//! node selection, and SSH authentications per host.

mod common;

use common::*;
use rollout_lab::profiles::Profile;
use serde_json::json;

fn hosts(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("host{i}")).collect()
}

/// Every host gets a `system` profile (root); `special` may replace one host's profile.
fn fleet_flake(env: &mut Env, n: usize, sleep: f64, special: Option<(&str, Profile)>) {
    for h in hosts(n) {
        let p = match &special {
            Some((s, p)) if *s == h => p.clone(),
            _ => marker("system").sleep(sleep),
        };
        env.flake
            .node(&h, &h)
            .profile("system", p.setting("user", json!("root")));
    }
}

#[test]
fn five_hosts_are_activated_in_parallel() {
    let mut env = Env::new(5);
    fleet_flake(&mut env, 5, 1.5, None);
    let out = env.rollout("", &["--confirm-timeout", "15"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let windows: Vec<(f64, f64)> = hosts(5)
        .iter()
        .map(|h| {
            let m = env.markers(h, "system");
            assert_eq!(m.len(), 1, "{h}: {m:?}");
            (m[0].start, m[0].end)
        })
        .collect();
    let latest_start = windows.iter().map(|w| w.0).fold(f64::MIN, f64::max);
    let earliest_end = windows.iter().map(|w| w.1).fold(f64::MAX, f64::min);
    assert!(
        latest_start < earliest_end,
        "all five activation windows overlap: {windows:?}"
    );
}

#[test]
fn one_failing_host_rolls_back_the_whole_fleet_unless_keep_going() {
    let mut env = Env::new(4);
    fleet_flake(&mut env, 4, 0.0, None);
    assert_eq!(env.rollout("", &[]).status.code(), Some(0));
    let before: Vec<String> = hosts(4).iter().map(|h| env.target_of(h, SYSTEM)).collect();

    // host3 fails (after 2 s, so the others have activated by then); the others are rolled
    // back: the fleet ends where it started.
    fleet_flake(
        &mut env,
        4,
        0.0,
        Some(("host3", Profile::failing("system").salt(salt()).sleep(2.0))),
    );
    let out = env.rollout("", &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    let after: Vec<String> = hosts(4).iter().map(|h| env.target_of(h, SYSTEM)).collect();
    assert_eq!(after, before, "{err}");
    for h in ["host1", "host2", "host4"] {
        // Either it activated and the old generation was re-activated (3 markers), or it had not
        // started activating when host3 failed and was left alone (1 marker); never half-done.
        let n = env.markers(h, "system").len();
        assert!(n == 3 || n == 1, "{h}: {n} markers: {err}");
    }
    assert!(
        hosts(4)
            .iter()
            .filter(|h| *h != "host3")
            .any(|h| env.markers(h, "system").len() == 3),
        "some node was rolled back: {err}"
    );

    // Same change with --keep-going: the others stay on the new generation; host3 is reported.
    fleet_flake(
        &mut env,
        4,
        0.0,
        Some(("host3", Profile::failing("system").salt(salt()))),
    );
    let new: Vec<String> = hosts(4).iter().map(|h| env.build(h, "system")).collect();
    let out = env.rollout("", &["--keep-going"]);
    let err = stderr(&out);
    assert_ne!(out.status.code(), Some(0), "{err}");
    for (i, h) in hosts(4).iter().enumerate() {
        if h == "host3" {
            assert_eq!(env.target_of(h, SYSTEM), before[i]);
        } else {
            assert_eq!(env.target_of(h, SYSTEM), new[i], "{h}: {err}");
        }
    }
    assert!(
        err.lines().any(|l| l.contains("host3") && l.contains("rolled back")),
        "{err}"
    );
}

#[test]
fn a_failing_canary_stops_the_run_before_the_rest() {
    let mut env = Env::new(3);
    fleet_flake(
        &mut env,
        3,
        0.0,
        Some(("host1", Profile::failing("system").salt(salt()))),
    );
    let out = env.rollout("", &["--canary", "1"]);
    let err = stderr(&out);
    assert_ne!(out.status.code(), Some(0), "{err}");
    for h in ["host2", "host3"] {
        assert!(env.markers(h, "system").is_empty(), "{h} untouched: {err}");
        assert_eq!(env.target_of(h, SYSTEM), "", "{h} has no profile");
    }
    assert!(err.contains("canary"), "{err}");
}

#[test]
fn on_and_exclude_select_exactly_the_named_nodes() {
    let mut env = Env::new(4);
    fleet_flake(&mut env, 4, 0.0, None);
    env.flake.node("host1", "host1").tags(&["web"]);
    env.flake.node("host2", "host2").tags(&["web", "eu"]);
    env.flake.node("host3", "host3").tags(&["db"]);
    let out = env.rollout("", &["--on", "@web", "--exclude", "host2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let touched: Vec<String> = hosts(4)
        .into_iter()
        .filter(|h| !env.markers(h, "system").is_empty())
        .collect();
    assert_eq!(touched, vec!["host1"]);

    let out = env.rollout("", &["--on", "host3,host4", "--exclude", "@web"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let touched: Vec<String> = hosts(4)
        .into_iter()
        .filter(|h| !env.markers(h, "system").is_empty())
        .collect();
    assert_eq!(touched, vec!["host1", "host3", "host4"]);

    // glob, through `plan` (nothing deployed)
    env.write();
    let out = run(&[
        &env.flake_dir().display().to_string(),
        "--dry-run",
        "-s",
        "--on",
        "host[12]",
    ]);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nodes: Vec<&str> = plan["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["node"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, vec!["host1", "host2"]);
}

#[test]
fn a_host_with_three_profiles_costs_at_most_two_ssh_authentications() {
    let mut env = Env::new(1);
    env.flake
        .node("host1", "host1")
        .profiles_order(&["a", "b", "c"])
        .profile("a", marker("a").setting("user", json!("root")))
        .profile("b", marker("b").setting("user", json!("hello")))
        .profile("c", marker("c").setting("user", json!("root")));
    let before = env.fleet.sshd_auth_count("host1");
    let out = env.rollout("", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let used = env.fleet.sshd_auth_count("host1") - before;
    assert!((1..=2).contains(&used), "{used} SSH authentications for 3 profiles");
    for p in ["a", "b", "c"] {
        assert_eq!(env.markers("host1", p).len(), 1);
    }
}

/// Also: the master login starts while the node is still evaluated and built (its round trips
/// overlap local work instead of following it).
#[test]
fn json_events_describe_every_phase() {
    let mut env = Env::new(1);
    fleet_flake(&mut env, 1, 0.0, None);
    let out = env.rollout("", &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect(l))
        .collect();
    let time = |phase: &str, state: &str| {
        events
            .iter()
            .find(|e| e["event"] == "phase" && e["phase"] == phase && e["state"] == state)
            .and_then(|e| e["time"].as_f64())
            .unwrap_or_else(|| panic!("no {phase} {state} event in {events:?}"))
    };
    assert!(
        time("connect", "started") < time("build", "succeeded"),
        "the master login started before the build ended: {events:?}"
    );
    assert!(time("connect", "succeeded") <= time("copy", "started"));
    let phases: Vec<String> = events
        .iter()
        .filter(|e| e["event"] == "phase" && e["state"] == "succeeded")
        .map(|e| e["phase"].as_str().unwrap().to_string())
        .collect();
    for p in ["evaluate", "build", "connect", "copy", "activate", "confirm"] {
        assert!(phases.iter().any(|x| x == p), "{p} missing in {phases:?}");
    }
    let outcome = events.iter().find(|e| e["event"] == "outcome").unwrap();
    assert_eq!(
        (
            outcome["node"].as_str(),
            outcome["profile"].as_str(),
            outcome["outcome"].as_str()
        ),
        (Some("host1"), Some("system"), Some("deployed"))
    );
    assert!(outcome["time"].as_f64().unwrap() > 1.6e9);
    let copy_msg = |events: &[serde_json::Value]| {
        events
            .iter()
            .find(|e| e["event"] == "phase" && e["phase"] == "copy" && e["state"] == "succeeded")
            .and_then(|e| e["message"].as_str().map(str::to_string))
            .unwrap_or_default()
    };
    assert!(
        copy_msg(&events).starts_with("copied 2 path(s)"),
        "closure and agent copied: {}",
        copy_msg(&events)
    );
    assert!(events
        .iter()
        .any(|e| e["event"] == "progress" && e["phase"] == "copy" && e["done"].as_u64() > Some(0)));

    // The same deploy again: nothing left to copy.
    let out = env.rollout("", &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect(l))
        .collect();
    // Whichever ends first: the copy finding everything there, or the push phase's query finding
    // the profile unchanged (which ends the copy).
    let msg = copy_msg(&events);
    assert!(
        msg == "all paths already present" || msg == "not needed: every profile already runs its closure",
        "{msg}"
    );
}
