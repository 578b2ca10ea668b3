//! The package expression (`nix/package.nix`) as the flake and its overlay use it, evaluated and
//! built by the real Nix against a stand-in nixpkgs (`nix/tests/fake-nixpkgs.nix`, same
//! attribute names) that records what `rustPlatform.buildRustPackage` is given: a source with
//! every workspace crate and `Cargo.lock` (and nothing cargo does not need), the lock file,
//! `meta.mainProgram`, and a `postInstall` that installs `deploy`, completions and man pages.
//! A broken package expression fails here instead of on a user's machine.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// `let outputs = <flake.nix on the fake nixpkgs>; pkg = outputs.packages.<sys>.default; in EXPR`.
fn with_package(expr: &str) -> String {
    let r = root();
    format!(
        r#"let
          fake = import {r}/nix/tests/fake-nixpkgs.nix {{ salt = "eco-package-{pid}"; }};
          outputs = (import {r}/flake.nix).outputs {{ self = outputs; nixpkgs = fake; }};
          sys = builtins.currentSystem;
          pkgs = fake.legacyPackages.${{sys}};
          overlaid = let final = pkgs // outputs.overlays.default final pkgs; in final;
          pkg = outputs.packages.${{sys}}.default;
        in {expr}"#,
        r = r.display(),
        pid = std::process::id(),
    )
}

fn nix(args: &[&str], expr: &str) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .arg("-E")
        .arg(expr)
        .output()
        .expect("running nix");
    assert!(
        out.status.success(),
        "{}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn eval_json(expr: &str) -> serde_json::Value {
    serde_json::from_str(&nix(
        &["nix-instantiate", "--eval", "--strict", "--json", "--read-write-mode"],
        &with_package(expr),
    ))
    .unwrap()
}

/// Files of the work tree under `paths` that git does not ignore, relative to the repository.
fn tracked(paths: &[&str]) -> Vec<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(root())
        .args(["ls-files", "--cached", "--others", "--exclude-standard"])
        .args(paths)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Every file under `dir`, relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn build_rust_package_gets_every_crate_the_lock_file_and_main_program() {
    let v = eval_json(
        r#"{
          src = "${pkg.rustArgs.src}";
          lock = builtins.readFile pkg.rustArgs.cargoLock.lockFile;
          inherit (pkg.rustArgs) pname version cargoBuildFlags doCheck;
          main = pkg.rustArgs.meta.mainProgram;
          native = pkg.rustArgs.nativeBuildInputs;
          overlayMain = overlaid.rollout.rustArgs.meta.mainProgram;
          deployRs = outputs.packages.${sys}.deploy-rs.outPath == pkg.outPath;
        }"#,
    );
    let src = PathBuf::from(v["src"].as_str().unwrap());
    let in_src = files_under(&src);
    // Every tracked file of the workspace cargo reads is in the source, and nothing else.
    let mut wanted = tracked(&["Cargo.toml", "Cargo.lock", "crates"]);
    wanted.sort();
    assert_eq!(in_src, wanted, "the source filter of nix/package.nix");
    let manifest: toml_members::Members = toml_members::read(&root().join("Cargo.toml"));
    for member in &manifest.0 {
        assert!(
            in_src.contains(&format!("{member}/Cargo.toml")),
            "{member} is missing from the source"
        );
    }
    assert_eq!(
        v["lock"].as_str().unwrap(),
        std::fs::read_to_string(root().join("Cargo.lock")).unwrap(),
        "cargoLock.lockFile is the repository's Cargo.lock"
    );
    assert_eq!(v["pname"], "rollout");
    let cargo = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    assert!(cargo.contains(&format!("version = \"{}\"", v["version"].as_str().unwrap())));
    assert_eq!(v["cargoBuildFlags"], serde_json::json!(["--workspace", "--bins"]));
    assert_eq!(v["doCheck"], false);
    assert_eq!(v["main"], "rollout");
    assert_eq!(v["overlayMain"], "rollout");
    assert_eq!(v["native"], serde_json::json!(["installShellFiles"]));
    assert_eq!(v["deployRs"], true);
}

#[test]
fn the_package_installs_both_binaries_deploy_completions_and_man_pages() {
    let out = nix(&["nix-build", "--no-out-link"], &with_package("pkg"));
    let pkg = PathBuf::from(out.lines().last().unwrap());
    let files = files_under(&pkg);
    for f in [
        "bin/rollout",
        "bin/rollout-agent",
        "bin/deploy",
        "share/bash-completion/completions/rollout.bash",
        "share/zsh/site-functions/_rollout",
        "share/fish/vendor_completions.d/rollout.fish",
        "share/man/man1/rollout.1",
        "share/man/man1/rollout-deploy.1",
    ] {
        assert!(files.iter().any(|x| x == f), "{f} is not installed: {files:?}");
    }
    assert_eq!(
        std::fs::read_link(pkg.join("bin/deploy")).unwrap(),
        Path::new("rollout")
    );
    // What postInstall asked the built binary for.
    let bash = std::fs::read_to_string(pkg.join("share/bash-completion/completions/rollout.bash")).unwrap();
    assert_eq!(bash, "# rollout completion for bash\n");
}

/// The workspace members listed in Cargo.toml (a few lines of TOML read by hand: no toml crate
/// in this crate's dependencies).
mod toml_members {
    pub struct Members(pub Vec<String>);

    pub fn read(path: &std::path::Path) -> Members {
        let text = std::fs::read_to_string(path).unwrap();
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with("members"))
            .expect("members = [...]");
        let list = line.split_once('[').unwrap().1.split_once(']').unwrap().0;
        Members(
            list.split(',')
                .map(|m| m.trim().trim_matches('"').to_string())
                .filter(|m| !m.is_empty())
                .collect(),
        )
    }
}

/// `cargo install`-able: the crates a user installs package (manifest checks, versions on the
/// path dependencies, the README included) without a network.
#[test]
fn cargo_package_accepts_the_installable_crates() {
    let target = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO"))
        .current_dir(root())
        .args(["package", "--allow-dirty", "--no-verify", "--offline", "--target-dir"])
        .arg(target.path())
        .args([
            "-p",
            "rollout-protocol",
            "-p",
            "rollout-core",
            "-p",
            "rollout-agent",
            "-p",
            "rollout",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for c in ["rollout-protocol", "rollout-core", "rollout-agent", "rollout"] {
        assert!(target.path().join(format!("package/{c}-0.1.0.crate")).exists(), "{c}");
    }
    let listed = Command::new(env!("CARGO"))
        .current_dir(root())
        .args(["package", "--list", "--allow-dirty", "--offline", "-p", "rollout"])
        .output()
        .unwrap();
    let files = String::from_utf8_lossy(&listed.stdout);
    assert!(files.lines().any(|l| l == "README.md"), "{files}");
}
