//! The harness of rollout's integration tests (on top of `rollout_lab::testing`, which every test
//! crate shares): run the real `rollout` binary, write throw-away flakes whose profiles are tiny
//! `builtins.derivation`s (no nixpkgs needed), pick apart the `rollout: running: <argv>` lines of
//! `--debug-logs`, and ([`fleet`]) deploy to a lab fleet.

#![allow(dead_code, unused_imports)]

pub mod fleet;
pub use fleet::*;
pub use rollout_lab::testing::Run;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The `rollout` binary cargo built for these tests.
pub fn rollout_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rollout"))
}

/// A file of this repository as a Nix string literal (an absolute path), e.g. `nix/lib.nix`.
pub fn repo_file(rel: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel);
    rollout_core::evalexpr::nix_string(&p.canonicalize().expect("repository file").display().to_string())
}

/// `builtins.currentSystem` of the local Nix (e.g. `x86_64-linux`).
pub fn system() -> &'static str {
    rollout_lab::testing::current_system()
}

/// Nix text of a `prof` function: `prof "name"` is a derivation whose output holds a
/// `deploy-rs-activate` that exits 0. `PATH` matters: builders get no PATH otherwise.
pub fn prof_fn() -> String {
    format!(
        r#"prof = name: builtins.derivation {{
    inherit name;
    system = "{sys}";
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
    args = [ "-c" "mkdir $out; printf '#!/bin/sh\nexit 0\n' > $out/deploy-rs-activate; chmod +x $out/deploy-rs-activate" ];
  }};"#,
        sys = system()
    )
}

/// A flake with no inputs whose `deploy` output is `deploy_expr` (Nix text, may call `prof`).
pub fn flake_text(deploy_expr: &str) -> String {
    format!(
        "{{\n  outputs = {{ self }}: let\n  {}\n  in {{\n    deploy = {};\n  }};\n}}\n",
        prof_fn(),
        deploy_expr
    )
}

/// Writes `flake.nix` with the given `deploy` expression into `dir`.
pub fn write_flake(dir: &Path, deploy_expr: &str) {
    std::fs::write(dir.join("flake.nix"), flake_text(deploy_expr)).expect("writing flake.nix");
}

/// Runs `rollout ARGS` in `cwd` with extra environment variables (`env`), stdin closed.
/// `NO_COLOR` keeps the messages free of escape codes.
pub fn run_rollout(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    rollout_lab::testing::run_program(&rollout_bin(), Some(cwd), args, env).into()
}

/// The argv of every `rollout: running: …` line of `--debug-logs` output, as words, with leading
/// `VAR=value` environment assignments dropped. An argv may span several lines (the `--apply`
/// lambda of `nix eval` is multi-line): continuation lines are joined until the quoting balances.
pub fn commands(stderr: &str) -> Vec<Vec<String>> {
    let lines: Vec<&str> = stderr.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(argv) = running_argv(lines[i]) else {
            i += 1;
            continue;
        };
        let mut text = argv.to_string();
        let mut words = shlex::split(&text);
        let mut j = i + 1;
        while words.is_none() && j < lines.len() && !lines[j].starts_with("rollout: ") {
            text.push('\n');
            text.push_str(lines[j]);
            words = shlex::split(&text);
            j += 1;
        }
        let words = words.unwrap_or_else(|| argv.split_whitespace().map(str::to_string).collect());
        out.push(words.into_iter().skip_while(|w| is_env_assignment(w)).collect());
        i = j;
    }
    out
}

/// The text after `running: ` of a `rollout: [scope] running: …` line.
fn running_argv(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("rollout: ")?;
    // Node-scoped lines look like `rollout: [node.profile] running: …`.
    let rest = match rest.strip_prefix('[') {
        Some(r) => r.split_once("] ")?.1,
        None => rest,
    };
    rest.strip_prefix("running: ")
}

fn is_env_assignment(w: &str) -> bool {
    match w.split_once('=') {
        Some((k, _)) => {
            !k.is_empty()
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !k.starts_with(|c: char| c.is_ascii_digit())
        }
        None => false,
    }
}

/// Whether the argv is `nix … <sub> …` (the subcommand as a word of its own, e.g. `eval`,
/// `build`, or `flake` followed by `check`).
pub fn is_nix(argv: &[String], sub: &[&str]) -> bool {
    if argv
        .first()
        .map(|p| Path::new(p).file_name().and_then(|f| f.to_str()) == Some("nix"))
        != Some(true)
    {
        return false;
    }
    argv.windows(sub.len()).any(|w| w.iter().zip(sub).all(|(a, b)| a == b))
}

/// Lines that mean a machine was contacted: a `connect` phase line, or an ssh / nix copy /
/// remote build command.
pub fn started_lines(stderr: &str) -> Vec<String> {
    let mut out: Vec<String> = stderr
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            l.contains("] connect") || l.starts_with("rollout: connect")
        })
        .map(str::to_string)
        .collect();
    for argv in commands(stderr) {
        let prog = argv.first().map(String::as_str).unwrap_or("");
        if prog == "ssh" || prog.ends_with("/ssh") || is_nix(&argv, &["copy"]) || is_nix(&argv, &["build"]) {
            out.push(argv.join(" "));
        }
    }
    out
}

/// Makes sure `rollout-agent` sits next to the `rollout` binary (the deployer looks for it there).
/// `cargo test -p rollout` builds the `rollout` binary but not other packages' binaries, so we
/// build the agent into the same target directory once. Under `cargo test --workspace` (or after
/// `cargo build --workspace --bins`) this is a no-op build.
pub fn ensure_agent_built() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let bin = rollout_bin();
        let dir = bin.parent().expect("binary has a directory");
        // target/<profile>/rollout → target dir is two levels up.
        let target_dir = dir.parent().expect("profile directory has a parent");
        let profile = dir.file_name().and_then(|f| f.to_str()).unwrap_or("debug");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "rollout-agent", "--bins"])
            .env("CARGO_TARGET_DIR", target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile == "release" {
            cmd.arg("--release");
        }
        let st = cmd.status().expect("running cargo build -p rollout-agent");
        assert!(st.success(), "cargo build -p rollout-agent failed");
        assert!(
            dir.join("rollout-agent").is_file(),
            "rollout-agent not found next to {}",
            bin.display()
        );
    });
}

/// Whether we run as root (the fleet needs namespaces, users and sshd).
pub fn is_root() -> bool {
    rollout_lab::is_root()
}
