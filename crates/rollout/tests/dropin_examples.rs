//! deploy-rs's own acceptance cases, written here from their shapes: every `test_parse_flake`
//! target (deploy-rs `src/lib.rs`) and flakes shaped like its three examples (a `setActivate`
//! app profile for a non-root user, a NixOS system behind `interactiveSudo` with its own ssh
//! port, and the same through `default.nix` without flakes), each wired with `deployChecks` the
//! way deploy-rs's README does. They must check, evaluate and plan with rollout unchanged, apart
//! from the library input. The library comes from this repository with a stub `pkgs`
//! (`nix/tests/stub-pkgs.nix`), so the flakes are evaluated with `--impure`.

mod common;

use common::{repo_file as repo, run_rollout};
use serde_json::Value;
use std::path::Path;

/// A flake whose `let` binds `lib` (rollout's library on the stub pkgs), `base` (a tiny package)
/// and `nixos` (a NixOS configuration stand-in), with `outputs` spliced in.
fn flake(outputs: &str) -> String {
    format!(
        r##"{{
  outputs = {{ self }}:
    let
      pkgs = import {stub} {{ salt = "dropin-examples"; }};
      lib = import {lib} {{ inherit pkgs; rollout = pkgs.stubRollout; }};
      base = pkgs.writeTextFile {{ name = "hello"; text = "#!/bin/sh\necho hello\n"; executable = true; destination = "/bin/hello"; }};
      nixos = {{
        config.boot.loader.systemd-boot.enable = false;
        config.system.build.toplevel = pkgs.writeTextFile {{
          name = "nixos-system-example"; executable = true; destination = "/bin/switch-to-configuration";
          text = "#!/bin/sh\nexit 0\n";
        }};
      }};
    in {outputs};
}}"##,
        stub = repo("nix/tests/stub-pkgs.nix"),
        lib = repo("nix/lib.nix"),
    )
}

/// `rollout plan` (checks included, unless `-s` is given) in `dir`; the plan JSON.
fn plan(dir: &Path, args: &[&str]) -> Value {
    let mut all = vec!["plan"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--", "--impure"]);
    let out = run_rollout(dir, &all, &[]);
    assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
    serde_json::from_str(&out.stdout).expect("plan JSON")
}

fn picked(plan: &Value) -> Vec<(String, String)> {
    plan["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["node"].as_str().unwrap().into(),
                d["profile"].as_str().unwrap().into(),
            )
        })
        .collect()
}

/// deploy-rs's `test_parse_flake` targets, run from a sibling directory with its relative flake
/// path (`../deploy/examples/system…`), select what deploy-rs parses them to.
#[test]
fn deploy_rs_test_parse_flake_targets_select_the_same_node_and_profile() {
    let root = tempfile::tempdir().unwrap();
    let flake_dir = root.path().join("deploy/examples/system");
    std::fs::create_dir_all(&flake_dir).unwrap();
    let cwd = root.path().join("cwd");
    std::fs::create_dir(&cwd).unwrap();
    std::fs::write(
        flake_dir.join("flake.nix"),
        flake(
            r#"{ deploy.nodes = {
          example = { hostname = "localhost"; profiles.system = { user = "root"; path = lib.activate.nixos nixos; }; };
          "example.com" = { hostname = "example.com"; profiles.system.path = lib.activate.noop base; };
          computer = { hostname = "computer"; profiles."something.nix".path = lib.activate.noop base; };
        }; }"#,
        ),
    )
    .unwrap();
    let r = "../deploy/examples/system";
    let all = vec![
        ("computer".to_string(), "something.nix".to_string()),
        ("example".into(), "system".into()),
        ("example.com".into(), "system".into()),
    ];
    let cases: Vec<(String, Vec<(String, String)>)> = vec![
        (r.to_string(), all.clone()),
        (format!("{r}#"), all.clone()),
        (format!("{r}#computer.\"something.nix\""), vec![all[0].clone()]),
        (format!("{r}#\"example.com\".system"), vec![all[2].clone()]),
        (format!("{r}#example"), vec![all[1].clone()]),
        (format!("{r}#example.system"), vec![all[1].clone()]),
    ];
    for (target, want) in cases {
        assert_eq!(picked(&plan(&cwd, &["-s", &target])), want, "{target}");
    }
}

/// examples/simple's shape: an app profile of a non-root user through the deprecated
/// `setActivate`, checks from `deployChecks` for every system of the library.
#[test]
fn a_flake_shaped_like_deploy_rs_simple_example_checks_and_plans() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("flake.nix"),
        flake(
            r#"{
          deploy.nodes.example = {
            hostname = "localhost";
            profiles.hello = { user = "balsoft"; path = lib.setActivate base "./bin/hello"; };
          };
          checks = builtins.mapAttrs (system: deployLib: deployLib.deployChecks self.deploy)
            { ${builtins.currentSystem} = lib; };
        }"#,
        ),
    )
    .unwrap();
    let p = plan(dir.path(), &["."]);
    assert_eq!(picked(&p), vec![("example".to_string(), "hello".to_string())]);
    let s = &p["deployments"][0]["settings"];
    assert_eq!(
        (&s["user"], &s["hostname"]),
        (&Value::from("balsoft"), &Value::from("localhost"))
    );
}

/// examples/system's shape: a NixOS system on a non-standard ssh port, fast connection,
/// interactiveSudo with an `admin` ssh user on the profile and `user = "root"`.
#[test]
fn a_flake_shaped_like_deploy_rs_system_example_checks_and_plans() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("flake.nix"),
        flake(
            r#"{
          nixosConfigurations.example-nixos-system = nixos;
          deploy.nodes.example = {
            sshOpts = [ "-p" "2221" ];
            hostname = "localhost";
            fastConnection = true;
            interactiveSudo = true;
            profiles.system = {
              sshUser = "admin";
              path = lib.activate.nixos self.nixosConfigurations.example-nixos-system;
              user = "root";
            };
          };
          checks.${builtins.currentSystem} = lib.deployChecks self.deploy;
        }"#,
        ),
    )
    .unwrap();
    let p = plan(dir.path(), &[".#example"]);
    let s = &p["deployments"][0]["settings"];
    assert_eq!(s["sshUser"], "admin");
    assert_eq!(s["user"], "root");
    assert_eq!(s["elevate"], true);
    assert_eq!(s["interactiveSudo"], true);
    assert_eq!(s["fastConnection"], true);
    assert_eq!(s["sshOpts"], serde_json::json!(["-p", "2221"]));
}

/// examples/noflake's shape: `default.nix` with `deploy` (and `checks`), read with `--file`.
#[test]
fn a_default_nix_shaped_like_deploy_rs_noflake_example_plans_with_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("default.nix"),
        format!(
            r#"let
  pkgs = import {stub} {{ salt = "dropin-examples"; }};
  lib = import {lib} {{ inherit pkgs; rollout = pkgs.stubRollout; }};
  base = pkgs.writeTextFile {{ name = "hello"; text = "hello\n"; destination = "/share/hello"; }};
in rec {{
  deploy.nodes.example = {{
    hostname = "localhost";
    profiles.hello = {{ user = "balsoft"; path = lib.activate.custom base "./bin/hello"; }};
  }};
  checks.${{builtins.currentSystem}} = lib.deployChecks deploy;
}}"#,
            stub = repo("nix/tests/stub-pkgs.nix"),
            lib = repo("nix/lib.nix"),
        ),
    )
    .unwrap();
    let p = plan(dir.path(), &["-f", ".", "example.hello"]);
    assert_eq!(picked(&p), vec![("example".to_string(), "hello".to_string())]);
}
