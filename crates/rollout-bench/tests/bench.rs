//! The fleet benchmark's peer column is measured in the same run (`--compare`), never a constant:
//! with a stand-in peer (rollout itself, invoked the way a peer binary would be) it shows the peer's
//! median and ratio; without `--compare` there is no peer column at all.

use std::path::PathBuf;
use std::process::Command;

fn bench() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rollout-bench"))
}

/// The `rollout` binary the workspace build put next to the bench (scripts/dev test builds it first).
fn rollout() -> PathBuf {
    let p = bench().with_file_name("rollout");
    assert!(
        p.is_file(),
        "{} missing: build the workspace binaries first (cargo build --workspace --bins)",
        p.display()
    );
    p
}

fn run(extra: &[&str]) -> (String, String) {
    let out = Command::new(bench())
        .args([
            "--sizes",
            "1",
            "--runs",
            "1",
            "--noop-hosts",
            "0",
            "--confirm-timeout",
            "10",
            "--rollout",
        ])
        .arg(rollout())
        .args(extra)
        .output()
        .unwrap();
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "rollout-bench failed:\n{o}\n{e}");
    (o, e)
}

#[test]
fn compare_measures_the_peer_in_the_same_run_and_without_it_there_is_no_peer_column() {
    let peer = format!("{} {{flake}} -s --confirm-timeout 10", rollout().display());
    let (out, err) = run(&["--compare", &peer]);
    assert!(
        err.contains("N=1 peer fresh run 1:") && !err.contains("FAILED"),
        "{err}"
    );
    assert!(out.contains("peer (÷ rollout)"), "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with("|        1 |") || l.trim_start_matches('|').trim().starts_with("1 |"))
        .unwrap_or("");
    assert!(row.contains("×)"), "the N=1 row has the peer's median and ratio: {out}");
    assert!(
        out.contains("ssh key exchange") && !out.contains("ssh key exchange unknown"),
        "{out}"
    );

    let (out, _) = run(&[]);
    assert!(
        !out.contains("peer (÷ rollout)") && !out.contains("×)"),
        "no peer column without --compare: {out}"
    );
    assert!(
        !out.to_lowercase().contains("deploy-rs"),
        "no figures of another tool: {out}"
    );
}
