//! Operating a fleet on the test fleet: `status`, `history`, `rollback` and `diff` against real
//! nix, ssh and sshd, the deploy records they read, and `--local` on this machine.

mod common;

use common::*;
use rollout_lab::profiles::Profile;
use serde_json::{json, Value};

fn system(salt: &str, packages: &[(&str, &str)]) -> Profile {
    Profile::marker("system")
        .salt(salt)
        .packages(packages)
        .setting("user", json!("root"))
}

fn row<'a>(rows: &'a Value, node: &str) -> &'a Value {
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["node"] == node)
        .unwrap_or_else(|| panic!("no row for {node} in {rows:#}"))
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{} {}", p["name"].as_str().unwrap(), p["version"].as_str().unwrap()))
        .collect()
}

/// Make the flake's directory a git repository with one commit; its revision.
fn commit_flake(env: &Env) -> String {
    env.write();
    let git = |args: &[&str]| {
        let o = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid", "-C"])
            .arg(env.flake_dir())
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    git(&["init", "-q"]);
    git(&["add", "flake.nix"]);
    git(&["commit", "-qm", "v2"]);
    git(&["rev-parse", "HEAD"])
}

/// Each host's status row: at generation 2 on `paths[i]`, in sync, confirmed by a deploy of `rev`.
fn assert_all_in_sync(status: &Value, hosts: &[&str], paths: &[String], rev: &str) {
    for (i, h) in hosts.iter().enumerate() {
        let r = row(status, h);
        assert_eq!(r["path"], paths[i], "{r:#}");
        let got = (
            r["generation"].as_u64(),
            r["in_sync"].as_bool(),
            r["reachable"].as_bool(),
        );
        assert_eq!(got, (Some(2), Some(true), Some(true)));
        let last = &r["last_deploy"];
        assert_eq!(
            (last["state"].as_str(), last["origin"]["action"].as_str()),
            (Some("confirmed"), Some("deploy"))
        );
        assert!(last["origin"]["by"].as_str().unwrap().contains('@'), "{r:#}");
        assert_eq!(last["origin"]["rev"], rev, "{r:#}");
    }
}

#[test]
fn status_history_diff_and_rollback_across_three_hosts() {
    let mut env = Env::new(3);
    let (v1, v2) = (salt(), salt());
    let hosts = ["host1", "host2", "host3"];
    for h in hosts {
        env.flake
            .node(h, h)
            .profile("system", system(&v1, &[("a", "1.0"), ("b", "1.0")]));
    }
    assert_eq!(env.rollout("", &[]).status.code(), Some(0), "v1 deployed");
    let first: Vec<String> = hosts.iter().map(|h| env.build(h, "system")).collect();

    for h in hosts {
        env.flake
            .node(h, h)
            .profile("system", system(&v2, &[("a", "2.0"), ("c", "1.0")]));
    }
    // The diff before deploying v2: exactly what changes in host1's closure.
    let (code, diff) = env.json("diff", "#host1", &[]);
    assert_eq!(code, Some(0), "{diff:#}");
    let d = row(&diff, "host1");
    assert_eq!(d["state"], "changed", "{d:#}");
    assert_eq!(names(&d["added"]), ["c 1.0"], "{d:#}");
    assert_eq!(names(&d["removed"]), ["b 1.0"], "{d:#}");
    assert_eq!(
        d["changed"],
        json!([{"name": "a", "old": ["1.0"], "new": ["2.0"]}]),
        "{d:#}"
    );
    assert_eq!(env.target_of("host1", SYSTEM), first[0], "diff changed nothing");
    // The same diff in the plan.
    let out = env.command("plan", "#host1", &["--diff"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["diff"][0]["state"], "changed", "{plan:#}");
    assert_eq!(names(&plan["diff"][0]["added"]), ["c 1.0"], "{plan:#}");
    assert_eq!(plan["deployments"][0]["node"], "host1");

    // v2 comes from a git commit: the deploy records name its revision.
    let rev = commit_flake(&env);
    assert_eq!(env.rollout("", &[]).status.code(), Some(0), "v2 deployed");
    let second: Vec<String> = hosts.iter().map(|h| env.build(h, "system")).collect();
    let (code, status) = env.json("status", "", &[]);
    assert_eq!(code, Some(0), "all in sync: {status:#}");
    assert_all_in_sync(&status, &hosts, &second, &rev);

    // The flake moves on for host1 only: host1 drifted, the others still in sync (exit 5).
    env.flake
        .node("host1", "host1")
        .profile("system", system(&salt(), &[("a", "2.0")]));
    let (code, status) = env.json("status", "", &[]);
    assert_eq!(code, Some(5), "{status:#}");
    assert_eq!(row(&status, "host1")["sync"], "drifted");
    assert_eq!(row(&status, "host2")["sync"], "in-sync");

    // Roll back host2 only: its activation marker is v1's again, the others stay on v2.
    let out = env.command("rollback", "#host2", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(env.target_of("host2", SYSTEM), first[1]);
    assert_eq!(
        env.markers("host2", "system").last().unwrap().out,
        first[1],
        "v1 re-activated"
    );
    assert_eq!(env.target_of("host1", SYSTEM), second[0]);
    assert_eq!(env.target_of("host3", SYSTEM), second[2]);

    let (code, history) = env.json("history", "#host2", &[]);
    assert_eq!(code, Some(0), "{history:#}");
    let gens = row(&history, "host2")["generations"].as_array().unwrap().clone();
    let numbers: Vec<u64> = gens.iter().map(|g| g["number"].as_u64().unwrap()).collect();
    assert_eq!(numbers, [1, 2, 3], "{history:#}");
    assert_eq!(gens[2]["current"], true);
    assert_eq!(gens[2]["path"], first[1]);
    assert_eq!(
        gens[2]["record"]["origin"]["action"], "rollback from generation 2 to generation 1",
        "{history:#}"
    );
    assert_eq!(gens[0]["record"]["origin"]["action"], "deploy");
    assert_eq!(gens[1]["record"]["state"], "confirmed");

    // --to a named generation; a generation that does not exist is refused, nothing changes.
    let out = env.command("rollback", "#host3", &["--to", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(env.target_of("host3", SYSTEM), first[2]);
    let out = env.command("rollback", "", &["--to", "7"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("rollback refused, nothing was changed") && err.contains("has no generation 7"),
        "{err}"
    );
    assert_eq!(env.target_of("host1", SYSTEM), second[0], "nothing changed");
}

#[test]
fn an_unchanged_redeploy_runs_no_activation_and_reactivate_forces_one() {
    let mut env = Env::new(1);
    env.flake
        .node("host1", "host1")
        .profile("system", marker("system").setting("user", json!("root")));
    assert_eq!(env.rollout("#host1", &[]).status.code(), Some(0));
    assert_eq!(env.markers("host1", "system").len(), 1);
    let deploys_before = agent_deploys(&env);
    let out = env.rollout("#host1", &["--json", "--debug-logs"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let events = String::from_utf8_lossy(&out.stdout);
    assert!(
        events
            .lines()
            .any(|l| l.contains(r#""event":"outcome""#) && l.contains(r#""outcome":"unchanged""#)),
        "reported unchanged: {events}"
    );
    assert_eq!(
        agent_deploys(&env),
        deploys_before,
        "the push phase's query found it unchanged: the agent never ran an activation (no deploy dir)"
    );
    assert!(
        !events.contains(r#""phase":"confirm""#),
        "no confirmation login: {events}"
    );
    assert_eq!(env.markers("host1", "system").len(), 1, "no activation ran");
    assert_eq!(env.link("host1", SYSTEM), "system-1-link", "no new generation");
    let out = env.rollout("#host1", &["--reactivate"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(env.markers("host1", "system").len(), 2, "--reactivate activates");
}

/// The deploy directories the agent (as root, temp path /tmp) made on host1: one per activation it ran.
fn agent_deploys(env: &Env) -> usize {
    let o = env.fleet.exec("host1", &["ls", "-A", "/tmp/rollout-0"]).unwrap();
    String::from_utf8_lossy(&o.stdout).lines().count()
}

/// The `--debug-logs` command events of `events` (rollout --json) that run the agent's `verb`.
fn agent_calls(events: &str, verb: &str) -> Vec<String> {
    events
        .lines()
        .filter(|l| l.contains(r#""event":"command""#) && l.contains("rollout-agent"))
        .filter(|l| l.contains(&format!(" {verb} ")))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_profile_whose_lock_names_a_holder_is_left_to_the_agent_which_decides_under_the_lock() {
    let mut env = Env::new(1);
    env.flake
        .node("host1", "host1")
        .profile("system", marker("system").setting("user", json!("root")));
    assert_eq!(env.rollout("#host1", &[]).status.code(), Some(0));
    // What a worker writes while it holds the lock (here without the flock itself, so the agent
    // gets the lock at once): the query cannot tell that no deploy is under way.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let holder = json!({"id": "other", "pid": 1, "deployer": "someone", "started_at": now, "ends_by": now + 60});
    let o = env.fleet.exec(
        "host1",
        &["sh", "-c", &format!("echo '{holder}' > {SYSTEM}.rollout-lock")],
    );
    assert!(o.unwrap().status.success());
    let out = env.rollout("#host1", &["--json", "--debug-logs"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let events = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        agent_calls(&events, "activate").len(),
        1,
        "a deploy that may be under way is not judged from a query: the agent decides: {events}"
    );
    assert!(
        events.contains(r#""outcome":"unchanged""#),
        "and finds it unchanged under the lock: {events}"
    );
    assert_eq!(env.markers("host1", "system").len(), 1, "no activation ran");
}

#[test]
fn status_reports_an_unreachable_host_and_still_shows_the_others() {
    let mut env = Env::new(2);
    for h in ["host1", "host2"] {
        env.flake
            .node(h, h)
            .profile("system", marker("system").setting("user", json!("root")));
    }
    assert_eq!(env.rollout("", &[]).status.code(), Some(0));
    // Only one generation: nothing to roll back to, said per profile, and nothing runs.
    let out = env.command("rollback", "#host1", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("nothing to roll back to"), "{}", stderr(&out));
    let out = env.command("rollback", "#host1", &["--to", "1"]);
    assert!(stderr(&out).contains("at generation 1 already"), "{}", stderr(&out));

    env.fleet.kill_sshd("host2").unwrap();
    let (code, status) = env.json("status", "", &[]);
    env.fleet.restart_sshd("host2").unwrap();
    assert_eq!(code, Some(3), "an unreachable host fails the status: {status:#}");
    let down = row(&status, "host2");
    assert_eq!(down["reachable"], false, "{down:#}");
    assert!(down["error"].as_str().unwrap().contains("host2"), "{down:#}");
    assert_eq!(down["in_sync"], Value::Null);
    let up = row(&status, "host1");
    assert_eq!(
        (up["reachable"].as_bool(), up["in_sync"].as_bool()),
        (Some(true), Some(true)),
        "{up:#}"
    );
}

#[test]
fn a_rollback_whose_activation_fails_ends_on_the_generation_it_started_from() {
    let mut env = Env::new(1);
    let trap = "/tmp/rollout-test-v1-breaks";
    env.flake
        .node("host1", "host1")
        .profile("system", system(&salt(), &[]).fail_when(trap));
    assert_eq!(env.rollout("#host1", &[]).status.code(), Some(0));
    env.flake.node("host1", "host1").profile("system", system(&salt(), &[]));
    assert_eq!(env.rollout("#host1", &[]).status.code(), Some(0));
    let v2 = env.target_of("host1", SYSTEM);
    env.fleet.exec_ok("host1", &["touch", trap]).unwrap();
    let out = env.command("rollback", "#host1", &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "rolled back: {err}");
    assert_eq!(
        env.target_of("host1", SYSTEM),
        v2,
        "back on the generation it started from"
    );
    assert_eq!(env.link("host1", SYSTEM), "system-2-link", "{err}");
    let (_, history) = env.json("history", "#host1", &[]);
    let gens = row(&history, "host1")["generations"].as_array().unwrap().len();
    assert_eq!(gens, 2, "the failed generation is gone: {history:#}");
}

#[test]
fn deploy_records_survive_restarting_the_hosts_daemons_and_emptying_its_tmp() {
    let mut env = Env::new(1);
    env.flake
        .node("host1", "host1")
        .profile("system", marker("system").setting("user", json!("root")));
    assert_eq!(env.rollout("#host1", &[]).status.code(), Some(0));
    env.fleet.restart_sshd("host1").unwrap();
    env.fleet.restart_daemon("host1").unwrap();
    env.fleet
        .exec_ok(
            "host1",
            &[
                "sh",
                "-c",
                // Everything but the lab's own state, which the simulated host sees under /tmp.
                "find /tmp -mindepth 1 -maxdepth 1 ! -name 'rollout-lab-*' -exec rm -rf {} +",
            ],
        )
        .unwrap();
    let left = env.fleet.exec_ok("host1", &["ls", "-A", "/tmp"]).unwrap();
    assert!(
        left.lines().all(|l| l.starts_with("rollout-lab-")),
        "/tmp emptied: {left}"
    );
    let (code, history) = env.json("history", "#host1", &[]);
    assert_eq!(code, Some(0), "{history:#}");
    let g = &row(&history, "host1")["generations"][0];
    assert_eq!(g["record"]["state"], "confirmed", "{history:#}");
    assert_eq!(g["record"]["generation"], 1);
}

#[test]
fn local_apply_deploys_rolls_back_and_shows_status_on_this_machine() {
    assert!(is_root(), "the local profile's activation runs as root here");
    ensure_agent_built();
    let dir = tempfile::Builder::new().prefix("rollout-local-").tempdir().unwrap();
    let profile = dir.path().join("profiles/app").display().to_string();
    let state = dir.path().join("state").display().to_string();
    let marker_name = format!("local-{}", std::process::id());
    let flake = |salt: &str| {
        let mut f = rollout_lab::profiles::FlakeBuilder::new(dir.path());
        f.node("here", "localhost").profile(
            "app",
            Profile::marker(&marker_name)
                .salt(salt)
                .setting("user", json!("root"))
                .setting("profilePath", json!(profile))
                .setting("tempPath", json!(state)),
        );
        f.write().unwrap();
        f.build("here", "app").unwrap().display().to_string()
    };
    let target = format!("{}#here", dir.path().display());
    let run_local = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend([target.as_str(), "-s", "--local"]);
        run(&all)
    };
    let v1 = flake(&salt());
    assert_eq!(run_local(&["deploy"]).status.code(), Some(0));
    let v2 = flake(&salt());
    let out = run_local(&["deploy"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let now = || std::fs::canonicalize(&profile).unwrap().display().to_string();
    assert_eq!(now(), v2);
    let status = run_local(&["status", "--json"]);
    let rows: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status.status.code(), Some(0), "{rows:#}");
    assert_eq!(
        (rows[0]["generation"].as_u64(), rows[0]["in_sync"].as_bool()),
        (Some(2), Some(true)),
        "{rows:#}"
    );
    assert_eq!(rows[0]["host"], "this machine");
    let out = run_local(&["rollback"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(now(), v1, "rolled back on this machine");
    let log = std::path::Path::new("/tmp/rollout-markers").join(format!("{marker_name}.log"));
    let lines = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    assert_eq!(lines.lines().count(), 3, "v1, v2, v1 activated: {lines}");
    assert!(lines.lines().last().unwrap().contains(&v1), "{lines}");
}
