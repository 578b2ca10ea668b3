//! The command line: `rollout deploy`, `rollout plan` and the bare form, flags before or after the subcommand.

use std::process::Command;

fn flake(dir: &std::path::Path) {
    let system = String::from_utf8(
        Command::new("nix")
            .args([
                "--extra-experimental-features",
                "nix-command",
                "eval",
                "--impure",
                "--raw",
                "--expr",
                "builtins.currentSystem",
            ])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    std::fs::write(
        dir.join("flake.nix"),
        format!(
            r#"{{ outputs = {{ self }}: {{ deploy.nodes.web = {{ hostname = "web.example"; profiles.system.path =
              builtins.derivation {{ name = "p"; system = "{system}"; builder = "/bin/sh"; args = [ "-c" "echo > $out" ]; }}; }}; }}; }}"#
        ),
    )
    .unwrap();
}

fn plan(args: &[&str], dir: &std::path::Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_rollout"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn flags_before_or_after_plan_mean_the_same() {
    let dir = tempfile::tempdir().unwrap();
    flake(dir.path());
    let after = plan(&["plan", "-s", "--confirm-timeout", "7", ".#web"], dir.path());
    let before = plan(&["-s", "--confirm-timeout", "7", "plan", ".#web"], dir.path());
    assert_eq!(after, before);
    assert_eq!(after["deployments"][0]["settings"]["confirmTimeout"], 7);
}

#[test]
fn explicit_deploy_dry_run_and_the_bare_form_give_the_same_plan() {
    let dir = tempfile::tempdir().unwrap();
    flake(dir.path());
    let bare = plan(&["--dry-run", "-s", ".#web"], dir.path());
    let explicit = plan(&["deploy", "--dry-run", "-s", ".#web"], dir.path());
    let flags_first = plan(&["-s", "--dry-run", "deploy", ".#web"], dir.path());
    assert_eq!(bare, explicit);
    assert_eq!(bare, flags_first);
}

#[test]
fn a_flake_directory_named_like_a_subcommand_is_reached_as_a_path() {
    let dir = tempfile::tempdir().unwrap();
    let named = dir.path().join("plan");
    std::fs::create_dir(&named).unwrap();
    flake(&named);
    // `rollout plan` is the subcommand (planning the flake in the current directory, here none);
    // `./plan` is the directory.
    let p = plan(&["--dry-run", "-s", "./plan#web"], dir.path());
    assert_eq!(p["deployments"][0]["node"], "web");
    let p = plan(&["plan", "-s", "./plan"], dir.path());
    assert_eq!(p["deployments"][0]["node"], "web");
}

#[test]
fn help_lists_the_subcommands_and_each_has_its_own() {
    let help = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_rollout")).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let top = help(&["--help"]);
    assert!(top.contains("deploy") && top.contains("plan"), "{top}");
    assert!(help(&["deploy", "--help"]).contains("Usage: rollout deploy"));
    assert!(help(&["plan", "--help"]).contains("Usage: rollout plan"));
    // Flags are global: the deploy flags are listed under each subcommand too.
    assert!(help(&["plan", "--help"]).contains("--confirm-timeout"));
}
