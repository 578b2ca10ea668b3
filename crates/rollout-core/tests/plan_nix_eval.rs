//! Runs the evaluation lambdas through a real `nix` and feeds the output to config and plan.
//! Skipped (with a note) when `nix` is not installed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use rollout_core::config::{parse_deploy, DeployConfig};
use rollout_core::evalexpr::{apply_lambda, nix_string, non_flake_expr, paths_lambda, NodePaths, Selection};
use rollout_core::plan::build_plan;
use rollout_core::settings::Overrides;
use rollout_core::target::parse_target;

/// These tests need Nix: without it they fail (never pass by testing nothing).
fn require_nix() {
    let ok = Command::new("nix")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "`nix` is not installed: these tests need Nix (scripts/dev setup installs it)"
    );
}

/// A fleet in which everything that must stay unevaluated throws.
const FLEET: &str = r#"{
  sshUser = "top";
  nodes = {
    web = {
      hostname = "web.example";
      profilesOrder = [ "system" ];
      profiles = {
        system = { path = { type = "derivation"; outPath = "/nix/store/aaaa-web-system"; }; user = "root"; };
        home = { path = "/nix/store/bbbb-web-home"; sshOpts = [ "-p" "22" ]; };
        broken = { path = throw "web.broken must not be evaluated"; };
      };
    };
    db = throw "db must not be evaluated";
    "odd.name" = { hostname = "odd"; profiles = throw "odd.name profiles must not be evaluated"; };
    "x\"y\${builtins.throw \"injected\"}" = { hostname = "q"; profiles.p.path = "/nix/store/cccc-q"; };
    typed = {
      hostname = "t";
      magicRollback = x: x;
      tempPath = ./.;
      sshOpts = [ "-v" { } [ ] ];
      profiles.p = { path = "/nix/store/dddd-t"; confirmTimeout = "30"; };
    };
  };
}"#;

fn eval(selection: &Selection) -> Result<serde_json::Value, String> {
    eval_expr(&format!("({}) ({FLEET})", apply_lambda(selection)))
}

/// `nix eval --json --expr EXPR`, as it ended.
fn nix_eval(expr: &str) -> std::process::Output {
    Command::new("nix")
        .args([
            "--extra-experimental-features",
            "nix-command flakes",
            "eval",
            "--json",
            "--expr",
            expr,
        ])
        .output()
        .expect("run nix")
}

/// `nix eval --json --expr EXPR`: its JSON, or its stderr.
fn eval_expr(expr: &str) -> Result<serde_json::Value, String> {
    let out = nix_eval(expr);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&out.stdout).expect("nix printed JSON"))
}

const TAG: &str = "rollout-eval-test";

/// The nodes announced by a per-node evaluation (`paths_lambda`), from the trace lines of `stderr`.
fn announced(stderr: &str) -> Vec<serde_json::Value> {
    let marker = format!("{TAG} ");
    stderr
        .lines()
        .filter_map(|l| l.find(&marker).map(|i| &l[i + marker.len()..]))
        .map(|j| serde_json::from_str(j).expect("a JSON node"))
        .collect()
}

fn node_paths(node: &str, profiles: &[&str]) -> NodePaths {
    NodePaths {
        node: node.into(),
        profiles: profiles.iter().map(|p| p.to_string()).collect(),
    }
}

/// `nix eval` of the per-node lambda on FLEET: what it announced, or Nix's error.
fn eval_paths(nodes: &[NodePaths]) -> Result<Vec<serde_json::Value>, String> {
    let expr = format!("({}) ({FLEET})", paths_lambda(TAG, nodes));
    let out = nix_eval(&expr);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(stderr);
    }
    Ok(announced(&stderr))
}

fn sel(entries: &[(&str, Option<&[&str]>)]) -> Selection {
    Selection::Nodes(
        entries
            .iter()
            .map(|(n, ps)| {
                (
                    n.to_string(),
                    ps.map(|ps| ps.iter().map(|p| p.to_string()).collect::<BTreeSet<_>>()),
                )
            })
            .collect::<BTreeMap<_, _>>(),
    )
}

#[test]
fn selecting_one_profile_evaluates_nothing_else() {
    require_nix();
    let v = eval(&sel(&[("web", Some(&["system", "home"]))])).unwrap();
    let cfg = parse_deploy(&v, "test").unwrap();
    assert_eq!(
        cfg.all_node_names,
        vec!["db", "odd.name", "typed", "web", "x\"y${builtins.throw \"injected\"}"]
    );
    assert_eq!(cfg.all_profile_names["web"], vec!["broken", "home", "system"]);
    // Paths are not forced by the settings evaluation (see the per-node evaluation below).
    assert_eq!(cfg.nodes["web"].profiles["system"].path, "");
    let paths = eval_paths(&[node_paths("web", &["system", "home"])]).unwrap();
    assert_eq!(paths.len(), 1);
    assert_eq!(paths[0]["node"], "web");
    assert_eq!(paths[0]["paths"]["system"]["path"], "/nix/store/aaaa-web-system");
    assert_eq!(paths[0]["paths"]["home"]["path"], "/nix/store/bbbb-web-home");

    let target = parse_target(".#web").unwrap();
    // web.broken is not evaluated, so a whole-node target is an internal error, not a Nix crash.
    assert!(build_plan(&[(target, &cfg)], &Overrides::default(), "me").is_err());
    let targets = [
        (parse_target(".#web.home").unwrap(), &cfg),
        (parse_target(".#web.system").unwrap(), &cfg),
    ];
    let plan = build_plan(&targets, &Overrides::default(), "me").unwrap();
    assert_eq!(plan.deployments.len(), 2);
    assert_eq!(plan.deployments[0].settings.ssh_opts, vec!["-p", "22"]);
    assert_eq!(plan.deployments[1].settings.user, "root");
    assert!(plan.deployments[1].settings.elevate);
}

#[test]
fn missing_node_and_profile_do_not_crash_nix() {
    require_nix();
    let v = eval(&sel(&[("nope", None), ("web", Some(&["nada"]))])).unwrap();
    let cfg: DeployConfig = parse_deploy(&v, "test").unwrap();
    assert!(cfg.nodes["web"].profiles.is_empty());
    let e = build_plan(&[(parse_target(".#nope").unwrap(), &cfg)], &Overrides::default(), "me").unwrap_err();
    assert!(e.to_string().contains("no node named `nope`"), "{e}");
    let e = build_plan(
        &[(parse_target(".#web.nada").unwrap(), &cfg)],
        &Overrides::default(),
        "me",
    )
    .unwrap_err();
    assert!(e.to_string().contains("profiles: broken, home, system"), "{e}");
}

#[test]
fn hostile_names_are_data_not_code() {
    require_nix();
    let name = "x\"y${builtins.throw \"injected\"}";
    let v = eval(&sel(&[(name, None)])).unwrap();
    let cfg = parse_deploy(&v, "test").unwrap();
    assert_eq!(cfg.nodes[name].hostname, "q");
    assert_eq!(cfg.nodes[name].profiles["p"].path, "");
    let paths = eval_paths(&[node_paths(name, &["p"])]).unwrap();
    assert_eq!(paths[0]["node"], name);
    assert_eq!(paths[0]["paths"]["p"]["path"], "/nix/store/cccc-q");
    // And a target naming it round-trips through the parser.
    let t = parse_target(&format!(".#{}", rollout_core::target::quote_attr(name))).unwrap();
    assert_eq!(t.node.as_deref(), Some(name));
    // Evaluated as data, then refused up front by validation, naming the node (such a name
    // cannot be a flake-URL fragment or a safe file name for --keep-result).
    let e = build_plan(&[(t, &cfg)], &Overrides::default(), "me")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("deploy.nodes.\"x\\\"y\\${builtins.throw \\\"injected\\\"}\": node name: expected a name"),
        "{e}"
    );
}

#[test]
fn wrong_types_reach_validation() {
    require_nix();
    let v = eval(&sel(&[("typed", None)])).unwrap();
    let e = parse_deploy(&v, "test").unwrap_err();
    let lines: Vec<String> = e.issues.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        vec![
            "deploy.nodes.typed.magicRollback: expected a boolean (true or false), found a function",
            "deploy.nodes.typed.sshOpts[1]: expected a string, found an attribute set",
            "deploy.nodes.typed.sshOpts[2]: expected a string, found a list",
            "deploy.nodes.typed.tempPath: expected a string, found a path",
            "deploy.nodes.typed.profiles.p.confirmTimeout: expected a non-negative integer (seconds), found a string",
        ]
    );
}

#[test]
fn whole_fleet_selection_forces_everything() {
    require_nix();
    // Sanity check of the test fixture: selecting everything does hit the throws.
    let e = eval(&Selection::All).unwrap_err();
    assert!(e.contains("must not be evaluated"), "{e}");
}

#[test]
fn non_flake_expression_imports_functions_and_odd_paths() {
    require_nix();
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("my \"fleet\" ${x}");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("default.nix"), format!("{{ ... }}: {{ deploy = {FLEET}; }}")).unwrap();
    let run = |cwd: &Path, file: &str| {
        let expr = non_flake_expr(file, &apply_lambda(&sel(&[("web", Some(&["home"]))])));
        let out = Command::new("nix-instantiate")
            .args(["--eval", "--strict", "--json", "-E", &expr])
            .current_dir(cwd)
            .output()
            .expect("run nix-instantiate");
        assert!(out.status.success(), "{}\n{expr}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let cfg = parse_deploy(&v, file).unwrap();
        assert_eq!(cfg.nodes["web"].profiles["home"].path, "");
        // The per-node evaluation reads the same file.
        let expr = non_flake_expr(file, &paths_lambda(TAG, &[node_paths("web", &["home"])]));
        let out = Command::new("nix-instantiate")
            .args(["--eval", "--strict", "--json", "-E", &expr])
            .current_dir(cwd)
            .output()
            .expect("run nix-instantiate");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert_eq!(
            announced(&stderr)[0]["paths"]["home"]["path"],
            "/nix/store/bbbb-web-home"
        );
    };
    run(dir.path(), "my \"fleet\" ${x}");
    run(dir.path(), "./my \"fleet\" ${x}/default.nix");
    run(Path::new("/"), sub.to_str().unwrap());
    // The string escaper agrees with Nix.
    let s = "a\"b\\c${d}$${e}\n\t$";
    let out = Command::new("nix-instantiate")
        .args(["--eval", "--json", "-E", &nix_string(s)])
        .output()
        .unwrap();
    assert_eq!(serde_json::from_slice::<String>(&out.stdout).unwrap(), s);
}

#[test]
fn real_flake_with_apply_lambda() {
    require_nix();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("flake.nix"),
        format!("{{ outputs = {{ self }}: {{ deploy = {FLEET}; }}; }}"),
    )
    .unwrap();
    let flake = format!("path:{}", dir.path().display());
    let targets = [
        parse_target(&format!("{flake}#web.home")).unwrap(),
        parse_target(&format!("{flake}#\"x\\\"y\\${{builtins.throw \\\"injected\\\"}}\"")).unwrap(),
    ];
    let lambda = apply_lambda(&Selection::from_targets(&targets));
    let out = Command::new("nix")
        .args(["--extra-experimental-features", "nix-command flakes", "eval", "--json"])
        .arg(format!("{flake}#deploy"))
        .args(["--apply", &lambda])
        .output()
        .expect("run nix");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let cfg = parse_deploy(&v, &flake).unwrap();
    let pairs: Vec<_> = targets.iter().map(|t| (t.clone(), &cfg)).collect();
    // The hostile name was evaluated as data (no throw), and validation refuses it by name.
    let e = build_plan(&pairs, &Overrides::default(), "me").unwrap_err().to_string();
    assert!(e.contains("node name: expected a name"), "{e}");
    let plan = build_plan(&pairs[..1], &Overrides::default(), "me").unwrap();
    let got: Vec<(String, String, String)> = plan
        .deployments
        .iter()
        .map(|d| (d.node.clone(), d.profile.clone(), d.closure.clone()))
        .collect();
    assert_eq!(got, vec![("web".into(), "home".into(), String::new())]);
    let out = Command::new("nix")
        .args(["--extra-experimental-features", "nix-command flakes", "eval", "--json"])
        .arg(format!("{flake}#deploy"))
        .args(["--apply", &paths_lambda(TAG, &[node_paths("web", &["home"])])])
        .output()
        .expect("run nix");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        announced(&stderr)[0]["paths"]["home"]["path"],
        "/nix/store/bbbb-web-home"
    );
}

#[test]
fn per_node_evaluation_announces_nodes_in_order_and_stops_at_the_first_error() {
    require_nix();
    // Two good nodes, then a profile that throws: the first two are announced before the error.
    let nodes = [
        node_paths("web", &["home"]),
        node_paths("typed", &["p"]),
        node_paths("web", &["broken"]),
    ];
    let expr = format!("({}) ({FLEET})", paths_lambda(TAG, &nodes));
    let out = nix_eval(&expr);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let got = announced(&stderr);
    assert_eq!(got.len(), 2, "{stderr}");
    assert_eq!(got[0]["node"], "web");
    assert_eq!(got[1]["paths"]["p"]["path"], "/nix/store/dddd-t");
    assert!(stderr.contains("web.broken must not be evaluated"), "{stderr}");
    // A real derivation comes with its .drv, which is in the store after the evaluation.
    let drv = r#"builtins.derivation { name = "x"; system = "x"; builder = "/bin/sh"; }"#;
    let fleet = format!("{{ nodes.d.profiles.s.path = {drv}; }}");
    let expr = format!("({}) ({fleet})", paths_lambda(TAG, &[node_paths("d", &["s"])]));
    let out = nix_eval(&expr);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let got = announced(&stderr);
    let d = got[0]["paths"]["s"]["drv"].as_str().unwrap_or_default().to_string();
    assert!(d.ends_with("-x.drv") && Path::new(&d).exists(), "{stderr}");
}

#[test]
fn structured_settings_keep_one_level_of_fields_in_the_shadow() {
    require_nix();
    let deploy = r#"{ healthChecks = [ { url = "http://x"; n = 2; f = x: x; } 3 ]; tags = [ { } ];
      nodes = { }; }"#;
    let lambda = rollout_core::evalexpr::apply_lambda_for(&Selection::All, &["healthChecks"]);
    let v = eval_expr(&format!("({lambda}) ({deploy})")).unwrap();
    assert_eq!(
        v["attrs"]["healthChecks"],
        serde_json::json!([
            { "$type": "set", "attrs": { "url": "http://x", "n": 2, "f": { "$type": "lambda" } } },
            3
        ])
    );
    // Other keys keep the flat shadow: a set inside a list is only a type marker.
    assert_eq!(v["attrs"]["tags"], serde_json::json!([{ "$type": "set" }]));
}
