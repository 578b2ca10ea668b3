//! `rollout plan` accepts its flags before or after the subcommand word.

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
