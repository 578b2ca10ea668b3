//! Builds and runs what the Nix library (`nix/lib.nix`) produces, with a stub `pkgs`
//! (`nix/tests/stub-pkgs.nix`, no nixpkgs needed) and a real `nix-build`. Also evaluates
//! `flake.nix` against a fake nixpkgs input and `default.nix` against the stub.
//! They fail when `nix-build` is not installed (scripts/dev setup installs it).

mod common;

use common::repo_file;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

/// These tests need Nix: without it they fail (never pass by testing nothing).
fn require_nix() {
    let ok = Command::new("nix-build")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "`nix-build` is not installed: these tests need Nix (scripts/dev setup installs it)"
    );
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

/// A Nix string literal: rollout's own helper.
use rollout_core::evalexpr::nix_string as nix_str;

/// Unique per test and run, so no store path is shared with an earlier (possibly stale) build.
fn salt(test: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("{test}-{}-{nanos}", std::process::id())
}

/// `let pkgs = <stub>; lib = <lib.nix>; base = <a tiny profile base>; in`
fn prelude(test: &str) -> String {
    format!(
        r#"let
          pkgs = import {stub} {{ salt = {salt}; }};
          lib = import {lib} {{ inherit pkgs; rollout = pkgs.stubRollout; }};
          base = pkgs.writeTextFile {{ name = "base"; text = "base\n"; destination = "/share/base"; }};
        in "#,
        stub = repo_file("nix/tests/stub-pkgs.nix"),
        lib = repo_file("nix/lib.nix"),
        salt = nix_str(&salt(test)),
    )
}

struct Built {
    out: Result<PathBuf, String>,
    stderr: String,
}

fn nix_build(expr: &str) -> Built {
    let o = Command::new("nix-build")
        .args(["--no-out-link", "--option", "log-lines", "200", "-E", expr])
        .output()
        .expect("run nix-build");
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let out = if o.status.success() {
        let stdout = String::from_utf8_lossy(&o.stdout);
        Ok(PathBuf::from(
            stdout.lines().last().expect("nix-build printed a path").trim(),
        ))
    } else {
        Err(stderr.clone())
    };
    Built { out, stderr }
}

fn build_ok(expr: &str) -> PathBuf {
    match nix_build(expr).out {
        Ok(p) => p,
        Err(e) => panic!("nix-build failed:\n{e}\nexpression:\n{expr}"),
    }
}

fn build_err(expr: &str) -> String {
    match nix_build(expr).out {
        Ok(p) => panic!("nix-build unexpectedly succeeded: {}\nexpression:\n{expr}", p.display()),
        Err(e) => e,
    }
}

/// Runs `<profile>/deploy-rs-activate` the way the agent does: `PROFILE=<profile>`, cwd = the
/// profile, `DRY_ACTIVATE`/`BOOT` only when given.
fn activate(profile: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(profile.join("deploy-rs-activate"));
    cmd.current_dir(profile)
        .env("PROFILE", profile)
        .env_remove("DRY_ACTIVATE")
        .env_remove("BOOT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run deploy-rs-activate")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn assert_ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed: {:?}\nstdout: {}\nstderr: {}",
        o.status,
        stdout(o),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

#[test]
fn custom_profile_layout_and_modes() {
    require_nix();
    let profile = build_ok(&format!(
        r#"{} lib.activate.custom base "echo switch > $MARK""#,
        prelude("custom")
    ));
    let entry = profile.join("deploy-rs-activate");
    assert!(is_executable(&entry), "{} is not an executable file", entry.display());
    assert!(
        read(&entry).starts_with("#!/bin/bash\nset -euo pipefail\n"),
        "{}",
        read(&entry)
    );
    assert_eq!(
        read(&profile.join("share/base")),
        "base\n",
        "the base is part of the closure"
    );

    let tmp = tempfile::tempdir().unwrap();
    let mark = tmp.path().join("mark");
    let mark_s = mark.to_str().unwrap();

    // Switch: runs the activation script.
    assert_ok(&activate(&profile, &[("MARK", mark_s)]), "switch");
    assert_eq!(read(&mark), "switch\n");
    std::fs::remove_file(&mark).unwrap();

    // Dry-activate and boot by default print the activation script's path and run nothing.
    for mode in ["DRY_ACTIVATE", "BOOT"] {
        let o = activate(&profile, &[("MARK", mark_s), (mode, "1")]);
        assert_ok(&o, mode);
        let printed = stdout(&o).trim().to_string();
        assert!(
            printed.starts_with("/nix/store/") && printed.ends_with("-activate"),
            "{mode}: {printed}"
        );
        assert_eq!(
            read(Path::new(&printed)),
            "echo switch > $MARK",
            "{mode} prints the script it would run"
        );
        assert!(!mark.exists(), "{mode} must not run the activation");
    }
    // `0` means off, like the agent sends it.
    assert_ok(
        &activate(&profile, &[("MARK", mark_s), ("DRY_ACTIVATE", "0"), ("BOOT", "0")]),
        "switch with 0s",
    );
    assert_eq!(read(&mark), "switch\n");

    // The agent for the profile's system sits at the closure root.
    let agent = profile.join("rollout-agent");
    let o = Command::new(&agent)
        .arg("--version")
        .output()
        .expect("run <profile>/rollout-agent");
    assert_ok(&o, "rollout-agent");
    assert_eq!(stdout(&o), "rollout-agent stub: --version\n");

    // activate-rs speaks deploy-rs's protocol (dropin_fleet.rs drives it as deploy-rs does) and
    // refuses what deploy-rs's would.
    let o = Command::new(profile.join("activate-rs"))
        .args(["activate", "x"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--temp-path is required"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn custom_extended_with_dry_activate_and_boot() {
    require_nix();
    let profile = build_ok(&format!(
        r#"{} (lib.activate.custom // {{ dryActivate = "echo dry $PWD > $MARK"; boot = "echo boot > $MARK"; }}) base ''
          # a multi-line script with a here-document
          cat > "$MARK" <<END
        switched $PROFILE
        END
        ''"#,
        prelude("custom-ext")
    ));
    let tmp = tempfile::tempdir().unwrap();
    let mark = tmp.path().join("mark");
    let m = mark.to_str().unwrap();
    let p = profile.to_str().unwrap();

    assert_ok(&activate(&profile, &[("MARK", m), ("DRY_ACTIVATE", "1")]), "dry");
    assert_eq!(
        read(&mark),
        format!("dry {p}\n"),
        "dry-activate runs in the profile directory"
    );
    assert_ok(&activate(&profile, &[("MARK", m), ("BOOT", "1")]), "boot");
    assert_eq!(read(&mark), "boot\n");
    assert_ok(&activate(&profile, &[("MARK", m)]), "switch");
    assert_eq!(read(&mark), format!("switched {p}\n"));
    // DRY_ACTIVATE wins over BOOT, as in deploy-rs.
    assert_ok(
        &activate(&profile, &[("MARK", m), ("BOOT", "1"), ("DRY_ACTIVATE", "1")]),
        "both",
    );
    assert!(read(&mark).starts_with("dry "));
}

#[test]
fn custom_with_empty_or_failing_scripts() {
    require_nix();
    let pre = prelude("custom-edge");
    // Empty scripts still make a valid entry point.
    let empty = build_ok(&format!(
        r#"{pre} (lib.activate.custom // {{ dryActivate = ""; boot = ""; }}) base """#
    ));
    for env in [&[][..], &[("DRY_ACTIVATE", "1")][..], &[("BOOT", "1")][..]] {
        assert_ok(&activate(&empty, env), &format!("empty script with {env:?}"));
    }
    // `set -euo pipefail`: the first failing command fails the activation.
    let failing = build_ok(&format!(
        r#"{pre} lib.activate.custom base "false | cat; echo unreachable""#
    ));
    let o = activate(&failing, &[]);
    assert!(!o.status.success(), "a failing activation must fail");
    assert_eq!(stdout(&o), "");
}

/// A NixOS toplevel stand-in whose switch-to-configuration records `<arg> <cwd>` in $MARK.
const TOPLEVEL: &str = r##"pkgs.writeTextFile {
      name = "nixos-system-test";
      executable = true;
      destination = "/bin/switch-to-configuration";
      text = "#!/bin/sh\necho \"$1 $PWD\" >> \"$MARK\"\n";
    }"##;

#[test]
fn nixos_runs_switch_to_configuration_per_mode() {
    require_nix();
    let profile = build_ok(&format!(
        r#"{} lib.activate.nixos {{
          config.system.build.toplevel = {TOPLEVEL};
          config.boot.loader.systemd-boot.enable = false;
        }}"#,
        prelude("nixos")
    ));
    assert!(profile
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .ends_with("-activatable-nixos-system-test"));
    let tmp = tempfile::tempdir().unwrap();
    let mark = tmp.path().join("mark");
    let m = mark.to_str().unwrap();
    let p = profile.to_str().unwrap();

    assert_ok(&activate(&profile, &[("MARK", m)]), "switch");
    assert_ok(
        &activate(&profile, &[("MARK", m), ("DRY_ACTIVATE", "1")]),
        "dry-activate",
    );
    assert_ok(&activate(&profile, &[("MARK", m), ("BOOT", "1")]), "boot");
    assert_eq!(
        read(&mark),
        format!("switch /tmp\ndry-activate {p}\nboot {p}\n"),
        "switch runs from /tmp (nixpkgs#73404)"
    );

    // Reboot-safe window: awaiting confirmation, the system goes live with `test` (the boot loader
    // keeps the previous default); the confirmed hook makes it the boot default.
    std::fs::write(&mark, "").unwrap();
    assert_ok(
        &activate(&profile, &[("MARK", m), ("ROLLOUT_CONFIRM_PENDING", "1")]),
        "pending",
    );
    let hook = Command::new(profile.join("rollout-confirmed"))
        .current_dir(&profile)
        .env("PROFILE", &profile)
        .env("MARK", m)
        .output()
        .unwrap();
    assert_ok(&hook, "rollout-confirmed");
    assert_eq!(read(&mark), format!("test /tmp\nboot {p}\n"));
}

#[test]
fn nixos_with_systemd_boot_drops_the_default_line() {
    require_nix();
    let esp = tempfile::tempdir().unwrap();
    let conf = esp.path().join("loader/loader.conf");
    std::fs::create_dir_all(conf.parent().unwrap()).unwrap();
    let profile = build_ok(&format!(
        r#"{} lib.activate.nixos {{
          config.system.build.toplevel = {TOPLEVEL};
          config.boot.loader.systemd-boot.enable = true;
          config.boot.loader.efi.efiSysMountPoint = {esp};
        }}"#,
        prelude("nixos-sdboot"),
        esp = nix_str(esp.path().to_str().unwrap()),
    ));
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("mark");
    for mode in [None, Some("BOOT")] {
        std::fs::write(&conf, "timeout 3\ndefault nixos-generation-1.conf\nconsole-mode keep\n").unwrap();
        let mut env = vec![("MARK", m.to_str().unwrap())];
        env.extend(mode.map(|k| (k, "1")));
        assert_ok(&activate(&profile, &env), &format!("{mode:?}"));
        assert_eq!(read(&conf), "timeout 3\nconsole-mode keep\n", "{mode:?}");
    }
    // Dry-activate leaves the boot loader alone.
    std::fs::write(&conf, "default x\n").unwrap();
    assert_ok(
        &activate(&profile, &[("MARK", m.to_str().unwrap()), ("DRY_ACTIVATE", "1")]),
        "dry",
    );
    assert_eq!(read(&conf), "default x\n");
}

#[test]
fn home_manager_darwin_and_noop() {
    require_nix();
    let script = |name: &str| {
        format!(
            r##"pkgs.writeTextFile {{ name = "{name}"; executable = true; destination = "/activate"; text = "#!/bin/sh\necho \"{name} $HOME $PWD\" > \"$MARK\"\n"; }}"##
        )
    };
    let pre = prelude("hm-darwin-noop");
    let hm = build_ok(&format!(
        "{pre} lib.activate.home-manager {{ activationPackage = {}; }}",
        script("home-manager-generation")
    ));
    let dw = build_ok(&format!(
        "{pre} lib.activate.darwin {{ config.system.build.toplevel = {}; }}",
        script("darwin-system")
    ));
    let noop = build_ok(&format!("{pre} lib.activate.noop base"));

    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("mark");
    let ms = m.to_str().unwrap();
    assert_ok(&activate(&hm, &[("MARK", ms), ("HOME", "/home/alice")]), "home-manager");
    assert_eq!(
        read(&m),
        format!("home-manager-generation /home/alice {}\n", hm.display())
    );
    assert_ok(&activate(&dw, &[("MARK", ms), ("HOME", "/Users/alice")]), "darwin");
    assert_eq!(
        read(&m),
        format!("darwin-system /var/root {}\n", dw.display()),
        "darwin activates with HOME=/var/root"
    );
    std::fs::remove_file(&m).unwrap();
    for env in [&[][..], &[("DRY_ACTIVATE", "1")][..], &[("BOOT", "1")][..]] {
        let o = activate(&noop, env);
        assert_ok(&o, "noop");
    }
    assert!(noop.join("rollout-agent").exists());
    assert!(!m.exists());
}

#[test]
fn set_activate_is_a_deprecated_alias_of_custom() {
    require_nix();
    let b = nix_build(&format!(
        r#"{} lib.setActivate base "echo set > $MARK""#,
        prelude("set-activate")
    ));
    let profile = b.out.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        b.stderr.contains("trace: warning: lib.setActivate is deprecated"),
        "stderr: {}",
        b.stderr
    );
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("mark");
    assert_ok(
        &activate(&profile, &[("MARK", m.to_str().unwrap())]),
        "setActivate profile",
    );
    assert_eq!(read(&m), "set\n");
    assert!(profile.join("rollout-agent").exists());
}

/// A `deploy` with two nodes; `{extra}` is spliced into the `web.system` profile.
fn fleet(extra: &str) -> String {
    format!(
        r#"{{
          sshUser = "deploy";
          magicRollback = true;
          nodes.web = {{
            hostname = "web.example";
            profilesOrder = [ "system" ];
            tags = [ "frontend" ];
            profiles.system = {{ path = lib.activate.noop base; user = "root"; sshOpts = [ "-p" "2222" ]; {extra} }};
            profiles.app = {{ path = "${{lib.activate.custom base ":"}}"; profilePath = "/nix/var/nix/profiles/per-user/app/app"; }};
          }};
          nodes.db = {{ hostname = "10.0.0.2"; confirmTimeout = 60; profiles.system.path = lib.activate.noop base; }};
        }}"#
    )
}

#[test]
fn deploy_checks_pass_for_a_valid_deploy() {
    require_nix();
    let pre = prelude("checks-valid");
    let fleet = fleet("");
    let schema = build_ok(&format!("{pre} (lib.deployChecks {fleet}).deploy-schema"));
    assert!(schema.exists());
    let act = build_ok(&format!("{pre} (lib.deployChecks {fleet}).deploy-activate"));
    assert!(act.exists());
}

#[test]
fn deploy_schema_does_not_build_profiles_but_deploy_activate_does() {
    require_nix();
    let pre = prelude("checks-lazy");
    let deploy = r#"{ nodes.n = { hostname = "h"; profiles.p.path = pkgs.unbuildable "never-built"; }; }"#;
    build_ok(&format!("{pre} (lib.deployChecks {deploy}).deploy-schema"));
    let err = build_err(&format!("{pre} (lib.deployChecks {deploy}).deploy-activate"));
    assert!(err.contains("this derivation must not be built"), "{err}");
}

#[test]
fn deploy_schema_names_the_full_path_of_every_problem() {
    require_nix();
    let pre = prelude("checks-schema");
    let bad = fleet(r#"magicRolback = false; confirmTimeout = "30";"#)
        .replace(r#"hostname = "10.0.0.2";"#, r#"hostnme = "10.0.0.2";"#)
        .replace(r#"profilesOrder = [ "system" ];"#, r#"profilesOrder = [ "sytem" ];"#);
    let err = build_err(&format!("{pre} (lib.deployChecks {bad}).deploy-schema"));
    for want in [
        "deploy.nodes.web.profiles.system.confirmTimeout: expected a non-negative integer (seconds), found a string",
        "deploy.nodes.db.hostname: missing; every node needs a `hostname` (string)",
        // Keys deploy-rs ignores are warnings (traced at evaluation), not the reason it fails.
        "warning: deploy.nodes.web.profiles.system.magicRolback: unknown setting, ignored — did you mean `magicRollback`?",
        "warning: deploy.nodes.db.hostnme: unknown setting, ignored — did you mean `hostname`?",
        "warning: deploy.nodes.web.profilesOrder[0]: no profile named `sytem`; did you mean `system`?",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }

    // Evaluation-side view of the same check (rollout extra): a list of issues.
    let o = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json", "-E"])
        .arg(format!(
            r#"{pre} lib.deployIssues {{ nodes."odd.name" = {{ hostname = "-x"; profiles.p.path = "relative"; }}; }}"#
        ))
        .output()
        .unwrap();
    assert_ok(&o, "nix-instantiate");
    let issues: Vec<String> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        issues,
        [
            "deploy.nodes.\"odd.name\".hostname: expected a host name or address, found `-x`, which starts with `-`",
            "deploy.nodes.\"odd.name\".profiles.p.path: expected an absolute store path, found `relative`",
        ]
    );
}

/// What deploy-rs accepts passes deployChecks (with warnings); `strict = true` refuses ignored keys.
#[test]
fn deploy_schema_accepts_what_deploy_rs_accepts_and_strict_refuses_ignored_keys() {
    require_nix();
    let pre = prelude("checks-dropin");
    let lenient = fleet(r#"magicRolback = false; sshUser = null; confirmTimeout = null; meta.owner = "ops";"#)
        .replace(
            r#"profilesOrder = [ "system" ];"#,
            r#"profilesOrder = [ "system" "system" ]; tempPath = null;"#,
        )
        .replace(
            r#"hostname = "10.0.0.2";"#,
            r#"hostname = ""; activationTimeout = null;"#,
        )
        .replace(
            "magicRollback = true;",
            "magicRollback = true; nodes.empty = { hostname = \"e\"; profiles = { }; };",
        );
    let built = nix_build(&format!("{pre} (lib.deployChecks ({lenient})).deploy-schema"));
    assert!(built.out.is_ok(), "{}", built.stderr);
    for want in [
        "warning: deploy.nodes.web.profiles.system.magicRolback: unknown setting, ignored — did you mean `magicRollback`?",
        "warning: deploy.nodes.web.profiles.system.meta: unknown setting, ignored",
        "warning: deploy.nodes.web.profilesOrder[1]: `system` is listed twice; the later entry is ignored",
        "warning: deploy.nodes.empty.profiles: the node has no profiles; nothing is deployed to it",
    ] {
        assert!(built.stderr.contains(want), "missing {want:?} in:\n{}", built.stderr);
    }
    let strict = lenient.replacen("sshUser = \"deploy\";", "sshUser = \"deploy\"; strict = true;", 1);
    let err = build_err(&format!("{pre} (lib.deployChecks ({strict})).deploy-schema"));
    assert!(
        err.contains(
            "deploy.nodes.web.profiles.system.magicRolback: unknown setting; did you mean `magicRollback`? \
             (refused in strict mode: `strict = true` in deploy)"
        ),
        "{err}"
    );
}

#[test]
fn deploy_activate_names_the_profile_without_an_entry_point() {
    require_nix();
    let pre = prelude("checks-activate");
    let bad = fleet("").replace(
        "profiles.system.path = lib.activate.noop base;",
        "profiles.bare.path = base;",
    );
    let err = build_err(&format!("{pre} (lib.deployChecks {bad}).deploy-activate"));
    assert!(err.contains("#db.bare is missing deploy-rs-activate"), "{err}");
    assert!(!err.contains("#web."), "only the broken profile is named:\n{err}");
    // The schema does not look inside closures.
    build_ok(&format!("{pre} (lib.deployChecks {bad}).deploy-schema"));
}

#[test]
fn flake_outputs_evaluate_against_a_fake_nixpkgs() {
    require_nix();
    let o = Command::new("nix-instantiate")
        .arg("--parse")
        .arg(root().join("flake.nix"))
        .output()
        .unwrap();
    assert_ok(&o, "nix-instantiate --parse flake.nix");

    let flake = format!(
        r#"let
          fake = import {fake} {{ salt = {salt}; }};
          outputs = (import {flake}).outputs {{ self = outputs; nixpkgs = fake; }};
          sys = builtins.currentSystem;
          pkgs = fake.legacyPackages.${{sys}};
          overlaid = let final = pkgs // outputs.overlays.default final pkgs; in final;
        in "#,
        fake = repo_file("nix/tests/fake-nixpkgs.nix"),
        flake = repo_file("flake.nix"),
        salt = nix_str(&salt("flake")),
    );
    let o = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json", "-E"])
        .arg(format!(
            r#"{flake} {{
              systems = builtins.attrNames outputs.packages;
              lib = builtins.attrNames outputs.lib.${{sys}};
              activate = builtins.attrNames outputs.lib.${{sys}}.activate;
              checks = builtins.attrNames outputs.checks.${{sys}};
              apps = builtins.mapAttrs (_: a: a.type) outputs.apps.${{sys}};
              app = builtins.baseNameOf outputs.apps.${{sys}}.default.program;
              appDeploy = builtins.baseNameOf outputs.apps.${{sys}}.deploy-rs.program;
              args = {{ inherit (outputs.packages.${{sys}}.default.rustArgs) pname cargoBuildFlags doCheck postInstall; }};
              same = outputs.packages.${{sys}}.rollout.outPath == outputs.packages.${{sys}}.default.outPath;
              overlay = builtins.attrNames overlaid.deploy-rs;
              overlayPkg = overlaid.rollout.rustArgs.pname;
              shell = builtins.length outputs.devShells.${{sys}}.default.shellArgs.inputsFrom;
            }}"#
        ))
        .output()
        .unwrap();
    assert_ok(&o, "evaluate the flake outputs");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["systems"],
        serde_json::json!(["aarch64-darwin", "aarch64-linux", "x86_64-darwin", "x86_64-linux"])
    );
    assert_eq!(
        v["lib"],
        serde_json::json!([
            "activate",
            "deployChecks",
            "deployIssues",
            "deployWarnings",
            "setActivate"
        ])
    );
    assert_eq!(
        v["activate"],
        serde_json::json!(["custom", "darwin", "home-manager", "nixos", "noop"])
    );
    assert_eq!(
        v["checks"],
        serde_json::json!(["lib-activate", "lib-deploy-activate", "lib-deploy-schema"])
    );
    assert_eq!(v["apps"], serde_json::json!({"default": "app", "deploy-rs": "app"}));
    assert_eq!(v["app"], "rollout");
    assert_eq!(v["appDeploy"], "deploy");
    assert_eq!(v["args"]["pname"], "rollout");
    assert_eq!(
        v["args"]["cargoBuildFlags"],
        serde_json::json!(["--workspace", "--bins"])
    );
    assert_eq!(v["args"]["doCheck"], false);
    assert!(
        v["args"]["postInstall"]
            .as_str()
            .unwrap()
            .starts_with("ln -s rollout $out/bin/deploy\n"),
        "{}",
        v["args"]["postInstall"]
    );
    assert_eq!(v["same"], true);
    assert_eq!(v["overlay"], serde_json::json!(["deploy-rs", "lib"]));
    assert_eq!(v["overlayPkg"], "rollout");
    assert_eq!(v["shell"], 1);

    // The checks build, and a profile from the flake's lib carries the package's agent.
    let checks = build_ok(&format!("{flake} builtins.attrValues outputs.checks.${{sys}}"));
    assert!(checks.exists());
    let profile = build_ok(&format!("{flake} outputs.lib.${{sys}}.activate.noop (pkgs.writeTextFile {{ name = \"b\"; text = \"\"; destination = \"/b\"; }})"));
    let o = Command::new(profile.join("rollout-agent")).arg("hi").output().unwrap();
    assert_eq!(stdout(&o), "rollout-agent stand-in: hi\n");
    let pkg = build_ok(&format!("{flake} outputs.packages.${{sys}}.default"));
    assert_eq!(
        std::fs::read_link(pkg.join("bin/deploy")).unwrap(),
        Path::new("rollout")
    );
}

#[test]
fn default_nix_exposes_the_library_without_flakes() {
    require_nix();
    let o = Command::new("nix-instantiate")
        .arg("--parse")
        .arg(root().join("default.nix"))
        .output()
        .unwrap();
    assert_ok(&o, "nix-instantiate --parse default.nix");
    let expr = format!(
        r#"let
          pkgs = import {stub} {{ salt = {salt}; }};
          top = import {default} {{ inherit pkgs; rollout = pkgs.stubRollout; }};
          base = pkgs.writeTextFile {{ name = "base"; text = ""; destination = "/b"; }};
        in [ (top.lib.activate.noop base) (top.lib.${{builtins.currentSystem}}.activate.custom base "echo hi") ]"#,
        stub = repo_file("nix/tests/stub-pkgs.nix"),
        default = repo_file("default.nix"),
        salt = nix_str(&salt("default-nix")),
    );
    let profile = build_ok(&expr);
    let o = activate(&profile, &[]);
    assert_ok(&o, "default.nix profile");
    assert_eq!(stdout(&o), "hi\n");
    assert!(profile.join("rollout-agent").exists());
}
