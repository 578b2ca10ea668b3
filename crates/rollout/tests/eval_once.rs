//! One evaluation of the settings (and one check) per flake, however many targets name it; the
//! profiles' paths evaluated once (by `--eval-jobs` processes), built from the evaluated
//! derivations without evaluating again; and the merged settings the plan shows.
//!
//! `plan_shows_merged_settings` only needs a local `nix`. The fleet tests deploy to a real
//! 3-host `rollout_lab::Fleet` and need root. The deployer finds `rollout-agent` next to its own
//! binary (same cargo target dir); `cargo test -p rollout` does not build other packages' binaries,
//! so [`common::ensure_agent_built`] runs `cargo build -p rollout-agent` into the same target dir
//! first (a no-op after `cargo build --workspace --bins`).

mod common;

use common::{commands, ensure_agent_built, is_nix, is_root, run_rollout, started_lines, write_flake};
use rollout_lab::Fleet;
use serde_json::{json, Value};
use std::path::Path;

/// Three nodes a, b, c with a `web` profile each, settings at every level (a has node- and
/// profile-level settings, b has none, c only node-level ones).
const LAYERED: &str = r#"{
  sshUser = "top-su";
  user = "top-u";
  sshOpts = [ "-o" "Top=1" ];
  fastConnection = true;
  magicRollback = false;
  confirmTimeout = 11;
  activationTimeout = 101;
  tempPath = "/top/tmp";
  sudo = "doas -u";
  nodes.a = {
    hostname = "a.example";
    sshUser = "a-su";
    sshOpts = [ "-o" "Node=a" ];
    confirmTimeout = 22;
    autoRollback = false;
    tempPath = "/a/tmp";
    profiles.web = {
      path = prof "a-web";
      user = "web-u";
      sshOpts = [ "-o" "Prof=a" "-p" "2222" ];
      confirmTimeout = 33;
      profilePath = "/nix/var/nix/profiles/a-web";
    };
  };
  nodes.b = { hostname = "b.example"; profiles.web.path = prof "b-web"; };
  nodes.c = {
    hostname = "c.example";
    sshOpts = [ "-o" "Node=c" ];
    remoteBuild = false;
    activationTimeout = 303;
    profiles.web.path = prof "c-web";
  };
}"#;

fn plan(dir: &Path, args: &[&str]) -> Value {
    let out = run_rollout(dir, args, &[]);
    assert_eq!(out.code, 0, "rollout {args:?} failed:\n{}", out.stderr);
    assert!(
        started_lines(&out.stderr).is_empty(),
        "plan touched a machine:\n{}",
        out.stderr
    );
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("plan JSON: {e}\n{}", out.stdout))
}

fn deployment<'a>(p: &'a Value, node: &str) -> &'a Value {
    p["deployments"]
        .as_array()
        .expect("deployments list")
        .iter()
        .find(|d| d["node"] == node)
        .unwrap_or_else(|| panic!("no deployment of {node} in {p:#}"))
}

#[test]
fn plan_shows_merged_settings() {
    let dir = tempfile::tempdir().unwrap();
    write_flake(dir.path(), LAYERED);

    let p = plan(dir.path(), &["plan", ".#a.web", "-s"]);
    let ds = p["deployments"].as_array().unwrap();
    assert_eq!(ds.len(), 1, "{p:#}");
    let a = &ds[0];
    assert_eq!(
        (a["flake"].as_str(), a["node"].as_str(), a["profile"].as_str()),
        (Some("."), Some("a"), Some("web"))
    );
    let closure = a["closure"].as_str().unwrap();
    assert!(
        closure.starts_with("/nix/store/") && closure.ends_with("-a-web"),
        "{closure}"
    );
    let s = &a["settings"];
    // profile > node > top; sshOpts concatenated profile, node, top.
    assert_eq!(s["hostname"], "a.example");
    assert_eq!(s["sshUser"], "a-su", "node beats top");
    assert_eq!(s["user"], "web-u", "profile beats top");
    assert_eq!(
        s["sshOpts"],
        json!(["-o", "Prof=a", "-p", "2222", "-o", "Node=a", "-o", "Top=1"])
    );
    assert_eq!(s["confirmTimeout"], 33, "profile beats node and top");
    assert_eq!(s["activationTimeout"], 101, "top when nobody else sets it");
    assert_eq!(s["tempPath"], "/a/tmp", "node beats top");
    assert_eq!(s["autoRollback"], false, "node");
    assert_eq!(s["magicRollback"], false, "top");
    assert_eq!(s["fastConnection"], true, "top");
    assert_eq!(s["remoteBuild"], false, "default");
    assert_eq!(s["sudo"], "doas -u");
    assert_eq!(s["profilePath"], "/nix/var/nix/profiles/a-web");
    assert_eq!(s["elevate"], true, "user != sshUser");
}

/// Command-line overrides beat every level; `--ssh-opts` replaces the merged list.
#[test]
fn plan_flags_override_every_level() {
    let dir = tempfile::tempdir().unwrap();
    write_flake(dir.path(), LAYERED);
    let p = plan(
        dir.path(),
        &[
            "plan",
            ".#a.web",
            "-s",
            "--confirm-timeout",
            "7",
            "--hostname",
            "h",
            "--magic-rollback",
            "true",
            "--ssh-user",
            "cli-su",
        ],
    );
    let s = &deployment(&p, "a")["settings"];
    assert_eq!(s["confirmTimeout"], 7);
    assert_eq!(s["hostname"], "h");
    assert_eq!(s["magicRollback"], true);
    assert_eq!(s["sshUser"], "cli-su");
    assert_eq!(s["user"], "web-u");
    assert_eq!(
        s["sshOpts"],
        json!(["-o", "Prof=a", "-p", "2222", "-o", "Node=a", "-o", "Top=1"]),
        "no --ssh-opts: merged list kept"
    );
    assert_eq!(s["activationTimeout"], 101);

    // --ssh-opts replaces the whole merged list, split as a shell would.
    let p = plan(
        dir.path(),
        &[
            "plan",
            ".#a.web",
            "-s",
            "--ssh-opts",
            "-p 22 -o 'ProxyCommand=nc %h %p'",
        ],
    );
    assert_eq!(
        deployment(&p, "a")["settings"]["sshOpts"],
        json!(["-p", "22", "-o", "ProxyCommand=nc %h %p"])
    );
}

/// b (no node/profile settings) gets the top level; c mixes node and top. `--dry-run` is the
/// same as `plan`, and the targets keep their order.
#[test]
fn plan_of_several_targets_keeps_their_order_and_levels() {
    let dir = tempfile::tempdir().unwrap();
    write_flake(dir.path(), LAYERED);
    let p = plan(
        dir.path(),
        &[
            "--dry-run",
            "-s",
            "--targets",
            ".#c",
            ".#b.web",
            "--confirm-timeout",
            "7",
        ],
    );
    let order: Vec<&str> = p["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["node"].as_str().unwrap())
        .collect();
    assert_eq!(order, vec!["c", "b"]);
    let b = &deployment(&p, "b")["settings"];
    assert_eq!(b["hostname"], "b.example");
    assert_eq!(b["sshUser"], "top-su");
    assert_eq!(b["user"], "top-u");
    assert_eq!(b["sshOpts"], json!(["-o", "Top=1"]));
    assert_eq!(b["confirmTimeout"], 7);
    assert_eq!(b["activationTimeout"], 101);
    assert_eq!(b["tempPath"], "/top/tmp");
    assert_eq!(b["autoRollback"], true, "default");
    assert_eq!(b["profilePath"], Value::Null);
    let c = &deployment(&p, "c")["settings"];
    assert_eq!(c["sshOpts"], json!(["-o", "Node=c", "-o", "Top=1"]));
    assert_eq!(c["activationTimeout"], 303);
    assert_eq!(c["confirmTimeout"], 7);
    assert_eq!(c["hostname"], "c.example");
}

/// Checks (without `-s`) run once per flake too, in plan mode.
#[test]
fn plan_checks_flake_once_for_three_targets() {
    let dir = tempfile::tempdir().unwrap();
    write_flake(dir.path(), LAYERED);
    let out = run_rollout(
        dir.path(),
        &[
            "plan",
            "--debug-logs",
            "--eval-jobs",
            "1",
            "--targets",
            ".#a",
            ".#b.web",
            ".#c",
        ],
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let cmds = commands(&out.stderr);
    assert_eq!(count(&cmds, &["flake", "check"]), 1, "{}", out.stderr);
    assert_eq!(settings_evals(&cmds), 1, "{}", out.stderr);
    assert_eq!(path_evals(&cmds), 1, "one evaluator for three nodes:\n{}", out.stderr);
    assert_eq!(count(&cmds, &["build"]), 0, "plan builds nothing:\n{}", out.stderr);
}

fn count(cmds: &[Vec<String>], sub: &[&str]) -> usize {
    cmds.iter().filter(|c| is_nix(c, sub)).count()
}

/// `nix … eval` calls that evaluate a flake's `deploy` output. rollout also runs the
/// flake-support probe `nix eval --expr builtins.getFlake` (as deploy-rs does); that one
/// evaluates no flake and is counted separately.
fn deploy_evals(cmds: &[Vec<String>]) -> usize {
    cmds.iter()
        .filter(|c| is_nix(c, &["eval"]) && c.iter().any(|w| w.ends_with("#deploy")))
        .count()
}

/// The evaluations of the settings (the selecting lambda) …
fn settings_evals(cmds: &[Vec<String>]) -> usize {
    deploy_evals_with(cmds, "sel = builtins.fromJSON")
}

/// … and of the profiles' paths (the per-node lambda).
fn path_evals(cmds: &[Vec<String>]) -> usize {
    deploy_evals_with(cmds, "chunk = builtins.fromJSON")
}

fn deploy_evals_with(cmds: &[Vec<String>], text: &str) -> usize {
    cmds.iter()
        .filter(|c| {
            is_nix(c, &["eval"]) && c.iter().any(|w| w.ends_with("#deploy")) && c.iter().any(|w| w.contains(text))
        })
        .count()
}

fn probe_evals(cmds: &[Vec<String>]) -> usize {
    cmds.iter()
        .filter(|c| is_nix(c, &["eval"]) && c.iter().any(|w| w == "builtins.getFlake"))
        .count()
}

/// A flake for the fleet: nodes a, b, c on host1..host3, deployed as `deploy`, activated as root.
fn fleet_flake(dir: &Path, fleet: &Fleet, salt: &str) {
    let nodes: String = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, n)| {
            format!(
                "  nodes.{n} = {{ hostname = \"host{}\"; profiles.web.path = prof \"web-{n}-{salt}\"; }};\n",
                i + 1
            )
        })
        .collect();
    let deploy = format!(
        "{{\n  sshUser = \"deploy\";\n  user = \"root\";\n  sshOpts = [ \"-F\" \"{}\" ];\n{nodes}}}",
        fleet.ssh_config().display()
    );
    write_flake(dir, &deploy);
}

fn salt() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    format!("{}-{}", std::process::id(), t.as_nanos())
}

fn closure_of(plan: &Value, node: &str) -> String {
    deployment(plan, node)["closure"].as_str().unwrap().to_string()
}

/// Deploys `.#a .#b .#c` and checks: exit 0, the number of each nix call, and every host's
/// `web` profile. `checks`: whether the run includes `nix flake check` (no `-s`).
fn deploy_three(fleet: &Fleet, dir: &Path, checks: bool) {
    // The closures the deploy should install (plan builds nothing; the paths are known after eval).
    let p = plan(dir, &["plan", "-s", "--targets", ".#a", ".#b", ".#c"]);

    let mut args = vec!["--debug-logs", "--confirm-timeout", "10", "--eval-jobs", "1"];
    if !checks {
        args.push("-s");
    }
    args.extend(["--targets", ".#a", ".#b", ".#c"]);
    let out = run_rollout(dir, &args, &[]);
    assert_eq!(out.code, 0, "rollout {args:?} failed:\n{}", out.stderr);
    let cmds = commands(&out.stderr);
    let shown = || {
        cmds.iter()
            .map(|c| format!("  {}", c.join(" ").chars().take(160).collect::<String>()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        settings_evals(&cmds),
        1,
        "exactly one evaluation of the settings; commands:\n{}",
        shown()
    );
    assert_eq!(
        path_evals(&cmds),
        1,
        "one evaluator process for the three nodes (--eval-jobs 1); commands:\n{}",
        shown()
    );
    assert!(
        probe_evals(&cmds) <= 1,
        "flake-support probe at most once; commands:\n{}",
        shown()
    );
    assert_eq!(
        count(&cmds, &["eval"]),
        deploy_evals(&cmds) + probe_evals(&cmds),
        "no other nix eval; commands:\n{}",
        shown()
    );
    // Builds of the derivations the evaluation produced (nothing is evaluated again): at most one
    // per node, fewer when nodes are ready together (they share a build), every node's in one.
    let builds: Vec<&Vec<String>> = cmds.iter().filter(|c| is_nix(c, &["build"])).collect();
    assert!(
        (1..=3).contains(&builds.len()),
        "a build per node at most; commands:\n{}",
        shown()
    );
    let drvs: Vec<&String> = builds
        .iter()
        .flat_map(|b| b.iter().filter(|w| w.starts_with("/nix/store/") && w.contains(".drv")))
        .collect();
    assert_eq!(
        drvs.len(),
        3,
        "each node's derivation built once; commands:\n{}",
        shown()
    );
    assert!(
        !builds.iter().any(|b| b.iter().any(|w| w.contains("#deploy"))),
        "no build of a flake attribute; commands:\n{}",
        shown()
    );
    assert_eq!(
        count(&cmds, &["flake", "metadata"]),
        1,
        "the flake's revision is asked once; commands:\n{}",
        shown()
    );
    assert_eq!(
        count(&cmds, &["flake", "check"]),
        usize::from(checks),
        "flake checks; commands:\n{}",
        shown()
    );

    for (i, n) in ["a", "b", "c"].iter().enumerate() {
        let host = format!("host{}", i + 1);
        let want = closure_of(&p, n);
        let got = fleet
            .exec_ok(&host, &["readlink", "-f", "/nix/var/nix/profiles/per-user/root/web"])
            .unwrap();
        assert_eq!(got, want, "{host}: profile web");
        let act = fleet
            .exec(&host, &["test", "-x", &format!("{want}/deploy-rs-activate")])
            .unwrap();
        assert!(
            act.status.success(),
            "{host}: closure {want} copied with its activate script"
        );
    }
}

#[test]
fn three_targets_one_settings_eval_one_path_eval_and_a_build_per_node_real_fleet() {
    // A skipped test must not pass: the fleet needs root, so say so and fail.
    assert!(
        is_root(),
        "this test needs root (rollout-lab starts namespaces, sshd and nix-daemon)"
    );
    ensure_agent_built();
    let fleet = Fleet::temp(3).expect("starting a 3-host test fleet");
    let dir = tempfile::tempdir().unwrap();

    fleet_flake(dir.path(), &fleet, &salt());
    deploy_three(&fleet, dir.path(), false);

    // Again with checks on (fresh closures, so the build does real work again): one
    // `nix flake check` for the three targets of the same flake.
    fleet_flake(dir.path(), &fleet, &salt());
    deploy_three(&fleet, dir.path(), true);
}
