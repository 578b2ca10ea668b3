//! rollout among the tools around it: shell completions loaded by a real `bash`, man pages
//! rendered by `man`/`groff` without warnings and naming every flag, and `rollout schema` checked
//! with an independent JSON Schema validator against `deploy` outputs evaluated by the real `nix`.
//! No fleet is started.

mod common;

use common::{rollout_bin, run_rollout, write_flake};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Stdio};

fn rollout(args: &[&str]) -> common::Run {
    run_rollout(Path::new("/"), args, &[])
}

/// Every long flag of `rollout deploy --help` (global flags included).
fn long_flags() -> Vec<String> {
    let help = rollout(&["deploy", "--help"]);
    assert_eq!(help.code, 0, "{}", help.stderr);
    let mut flags: Vec<String> = help
        .stdout
        .split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == '=')
        .filter(|w| w.starts_with("--") && w.len() > 2 && w[2..].chars().all(|c| c.is_ascii_lowercase() || c == '-'))
        .map(str::to_string)
        .collect();
    flags.sort();
    flags.dedup();
    assert!(flags.len() > 30, "{flags:?}");
    flags
}

#[test]
fn completions_generate_for_every_shell_and_name_subcommands_and_flags() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let r = rollout(&["completions", shell]);
        assert_eq!(r.code, 0, "{shell}: {}", r.stderr);
        for word in [
            "deploy",
            "plan",
            "schema",
            "targets",
            "confirm-timeout",
            "magic-rollback",
        ] {
            assert!(r.stdout.contains(word), "{shell} completion lacks {word}");
        }
    }
    assert_eq!(rollout(&["completions", "tcsh"]).code, 2);
}

/// What bash's programmable completion offers for `words` (the last one being completed).
fn bash_complete(words: &[&str]) -> Vec<String> {
    let script = format!(
        r#"set -e
source <("{bin}" completions bash)
COMP_WORDS=({words})
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
COMP_LINE="${{COMP_WORDS[*]}}"
COMP_POINT=${{#COMP_LINE}}
_rollout rollout "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}""#,
        bin = rollout_bin().display(),
        words = words.iter().map(|w| format!("'{w}'")).collect::<Vec<_>>().join(" ")
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &script])
        .stdin(Stdio::null())
        .output()
        .expect("running bash");
    assert!(out.status.success(), "bash: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_loads_the_completion_and_completes_subcommands_flags_and_values() {
    assert_eq!(bash_complete(&["rollout", "pl"]), ["plan"]);
    assert_eq!(
        bash_complete(&["rollout", "deploy", "--confirm-t"]),
        ["--confirm-timeout"]
    );
    let offered = bash_complete(&["rollout", "completions", ""]);
    assert!(
        offered.ends_with(&["bash", "elvish", "fish", "powershell", "zsh"].map(String::from)),
        "{offered:?}"
    );
    assert_eq!(bash_complete(&["rollout", "completions", "z"]), ["zsh"]);
    assert_eq!(bash_complete(&["rollout", "--magic-rollback", "f"]), ["false"]);
}

/// Runs `man -l` and `groff` on a page: both must be silent on stderr (no warnings).
fn render_page(page: &Path) -> String {
    let man = Command::new("man")
        .args(["-l", "--warnings=w"])
        .arg(page)
        .env("MANWIDTH", "100")
        .env("MAN_KEEP_FORMATTING", "0")
        .stdin(Stdio::null())
        .output()
        .expect("running man");
    let warnings = String::from_utf8_lossy(&man.stderr);
    assert!(
        man.status.success() && warnings.trim().is_empty(),
        "{}: {warnings}",
        page.display()
    );
    let groff = Command::new("groff")
        .args(["-k", "-man", "-ww", "-z", "-Tutf8"])
        .arg(page)
        .output()
        .expect("running groff");
    let warnings = String::from_utf8_lossy(&groff.stderr);
    assert!(
        groff.status.success() && warnings.trim().is_empty(),
        "{}: {warnings}",
        page.display()
    );
    // `man` may overstrike bold text when it writes to a pipe: keep the letters only.
    let text = String::from_utf8_lossy(&man.stdout).into_owned();
    let mut plain = String::new();
    for c in text.chars() {
        if c == '\u{8}' {
            plain.pop();
        } else {
            plain.push(c);
        }
    }
    plain.replace('\u{2010}', "-")
}

#[test]
fn man_pages_render_without_warnings_and_name_every_flag() {
    let dir = tempfile::tempdir().unwrap();
    let r = rollout(&["man", "--out", dir.path().to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut pages: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    assert_eq!(
        pages,
        [
            "rollout-completions.1",
            "rollout-deploy.1",
            "rollout-diff.1",
            "rollout-history.1",
            "rollout-man.1",
            "rollout-plan.1",
            "rollout-rollback.1",
            "rollout-schema.1",
            "rollout-status.1",
            "rollout-upload-keys.1",
            "rollout.1"
        ]
    );
    for p in &pages {
        render_page(&dir.path().join(p));
    }
    // The deploy page documents every flag of `rollout deploy --help`, and rollout.1 the exit codes.
    let roff = std::fs::read_to_string(dir.path().join("rollout-deploy.1")).unwrap();
    for flag in long_flags() {
        let escaped = flag.replace('-', "\\-");
        assert!(roff.contains(&escaped), "rollout-deploy.1 lacks {flag}");
    }
    let main = render_page(&dir.path().join("rollout.1"));
    for words in [
        "EXIT STATUS",
        "rolled back",
        "NO_COLOR",
        "rollout-deploy(1)",
        "--confirm-timeout",
    ] {
        assert!(main.contains(words), "rollout.1 lacks {words}:\n{main}");
    }
    // Without --out, rollout.1 goes to stdout.
    let stdout = rollout(&["man"]);
    assert_eq!(stdout.code, 0);
    assert_eq!(
        stdout.stdout,
        std::fs::read_to_string(dir.path().join("rollout.1")).unwrap()
    );
}

#[test]
fn man_refuses_an_output_directory_it_cannot_create_with_its_own_first_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let out = file.join("man");
    let r = rollout(&["man", "--out", out.to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.starts_with("rollout: error: --out "), "{}", r.stderr);
}

fn schema(args: &[&str]) -> jsonschema::Validator {
    let r = rollout(&[&["schema"], args].concat());
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).expect("rollout schema prints JSON");
    assert_eq!(v["$schema"], "https://json-schema.org/draft/2020-12/schema");
    jsonschema::draft202012::new(&v).expect("a valid draft 2020-12 schema")
}

/// The JSON of `deploy` from a flake written with `deploy_expr`, as the real `nix eval` gives it.
fn evaluated_deploy(deploy_expr: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    write_flake(dir.path(), deploy_expr);
    nix_eval_deploy(dir.path())
}

fn nix_eval_deploy(flake: &Path) -> Value {
    let out = Command::new("nix")
        .args([
            "--extra-experimental-features",
            "nix-command flakes",
            "eval",
            "--json",
            "--no-write-lock-file",
        ])
        .arg(format!("path:{}#deploy", flake.display()))
        .output()
        .expect("running nix eval");
    assert!(
        out.status.success(),
        "nix eval: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn errors(v: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// Every setting, at every level that allows it, plus a key deploy-rs users keep for other tools.
const FULL: &str = r#"{
  sshUser = "deploy"; user = "root"; sshOpts = [ "-p" "22" ]; fastConnection = false;
  autoRollback = true; magicRollback = true; confirmTimeout = 30; activationTimeout = 240;
  tempPath = "/tmp"; remoteBuild = false; interactiveSudo = false; sudo = "sudo -u";
  nodes.web = {
    hostname = "web.example"; tags = [ "eu" ]; profilesOrder = [ "system" ]; sshOpts = [ "-v" ];
    confirmTimeout = 60;
    profiles.system = { path = prof "web-system"; profilePath = "/nix/var/nix/profiles/system"; user = "root"; };
    profiles.app = { path = prof "web-app"; user = "hello"; magicRollback = false; };
  };
  nodes.db = { hostname = "db.example"; profiles.system.path = prof "db-system"; };
}"#;

#[test]
fn schema_accepts_evaluated_deploy_outputs_and_flags_a_misspelled_key() {
    let lenient = schema(&[]);
    let strict = schema(&["--strict-keys"]);
    let full = evaluated_deploy(FULL);
    assert_eq!(errors(&lenient, &full), Vec::<String>::new());
    assert_eq!(errors(&strict, &full), Vec::<String>::new());
    // rollout itself plans the same flake (the schema describes what rollout reads).
    let dir = tempfile::tempdir().unwrap();
    write_flake(dir.path(), FULL);
    let plan = run_rollout(dir.path(), &["plan", "-s", "."], &[]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);

    // null is unset (as rollout reads it), but not where a value is required.
    let nulls = evaluated_deploy(
        r#"{ sshUser = null; nodes.web = { hostname = "w"; confirmTimeout = null; profiles.system = { path = prof "s"; user = null; }; }; }"#,
    );
    assert_eq!(errors(&strict, &nulls), Vec::<String>::new());
    let dir = tempfile::tempdir().unwrap();
    write_flake(
        dir.path(),
        r#"{ sshUser = null; nodes.web = { hostname = "w"; profiles.system = { path = prof "s"; user = null; }; }; }"#,
    );
    assert_eq!(run_rollout(dir.path(), &["plan", "-s", "."], &[]).code, 0);
    assert!(!errors(
        &lenient,
        &json!({ "nodes": { "web": { "hostname": null, "profiles": {} } } })
    )
    .is_empty());

    let misspelled = evaluated_deploy(
        r#"{ nodes.web = { hostname = "w"; profiles.system = { path = prof "s"; magicRolback = false; }; }; }"#,
    );
    assert!(
        errors(&lenient, &misspelled).is_empty(),
        "extra keys are allowed as in deploy-rs"
    );
    let e = errors(&strict, &misspelled);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains("magicRolback") && e[0].contains("/nodes/web/profiles/system"),
        "{e:?}"
    );

    for (bad, at) in [
        (
            json!({ "nodes": { "web": { "hostname": "w", "profiles": { "p": { "path": "/nix/store/x" } } } }, "confirmTimeout": "30" }),
            "/confirmTimeout",
        ),
        (
            json!({ "nodes": { "web": { "profiles": { "p": { "path": "/nix/store/x" } } } } }),
            "/nodes/web",
        ),
        (
            json!({ "nodes": { "web": { "hostname": "w", "profiles": { "p": { "user": "root" } } } } }),
            "/nodes/web/profiles/p",
        ),
        (
            json!({ "nodes": { "web": { "hostname": "w", "sshOpts": "-v", "profiles": {} } } }),
            "/nodes/web/sshOpts",
        ),
        (json!({ "sshUser": "x" }), ""),
    ] {
        let e = errors(&lenient, &bad);
        assert!(
            !e.is_empty() && e.iter().any(|m| m.ends_with(&format!(" at {at}"))),
            "{bad}: {e:?}"
        );
    }
}

#[test]
fn schema_accepts_the_demo_flake_of_the_repository() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/demo/flake.nix.in")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = text
        .replace("@SYSTEM@", common::system())
        .replace("@VARIANT@", "good")
        .replace("@SSH_CONFIG@", "/dev/null");
    std::fs::write(dir.path().join("flake.nix"), text).unwrap();
    let deploy = nix_eval_deploy(dir.path());
    assert_eq!(deploy["nodes"]["host1"]["profilesOrder"], json!(["system", "app"]));
    assert_eq!(errors(&schema(&["--strict-keys"]), &deploy), Vec::<String>::new());
}

/// A flake directory with `flake.nix` written verbatim.
fn raw_flake(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("flake.nix"), text).unwrap();
    dir
}

/// rollout's own line for the failure: after `rollout: error: ` (a refused run) or after
/// `rollout: [NODE.PROFILE] FAILED: ` (a node that failed during the run: its evaluation or
/// build), with the lines below it up to the next blank line.
fn failure_lines(stderr: &str) -> (&str, Vec<&str>) {
    let lines: Vec<&str> = stderr.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("rollout: error: ") || (l.starts_with("rollout: [") && l.contains("] FAILED: ")))
        .unwrap_or_else(|| panic!("no error line:\n{stderr}"));
    let l = lines[at];
    let own = match l.strip_prefix("rollout: error: ") {
        Some(rest) => rest,
        None => &l[l.find("] FAILED: ").map_or(0, |i| i + "] FAILED: ".len())..],
    };
    let below = lines[at + 1..].iter().copied().take_while(|l| !l.is_empty()).collect();
    (own, below)
}

/// flake.nix, arguments, exit code, the start of rollout's line, a line of Nix's text below it.
type NixFailure = (String, &'static [&'static str], i32, &'static str, Option<&'static str>);

#[test]
fn nix_failures_have_rollouts_own_first_line_and_nixs_text_indented_below() {
    let sys = common::system();
    let no_activate = format!(
        r#"{{ outputs = {{ self }}: {{ deploy.nodes.web = {{ hostname = "web.invalid";
          profiles.system.path = builtins.derivation {{ name = "bare"; system = "{sys}"; builder = "/bin/sh";
            args = [ "-c" "echo > $out" ]; }}; }}; }}; }}"#
    );
    let rows: Vec<NixFailure> = vec![
        (
            "{ outputs = { self }: { deploy = { nodes = ; }; }".into(),
            &["plan", "."],
            1,
            "`.` has a Nix syntax error in flake.nix, line 1, column 44",
            Some("error: syntax error, unexpected ';'"),
        ),
        (
            "{ outputs = { self }: { packages = { }; }; }".into(),
            &["plan", "."],
            1,
            "`.` has no `deploy` output; expected `deploy = { nodes = { … }; }`",
            Some("does not provide attribute"),
        ),
        (
            r#"{ outputs = { self }: { deploy.nodes.web = { hostname = "h"; profiles.system.path = throw "no config for web"; }; }; }"#.into(),
            &["plan", "."],
            1,
            "evaluating node `web` failed: no config for web (an error raised by the flake's Nix code",
            Some("error: no config for web"),
        ),
        (
            r#"{ outputs = { self }: { deploy.nodes.web = { hostname = "h"; profiles.system.path = "/etc"; }; }; }"#.into(),
            &["plan", "."],
            1,
            "deploy.nodes.web.profiles.system.path: expected a store path (a derivation, e.g. from lib.<system>.activate.*), found `/etc`",
            None,
        ),
        (
            r#"{ outputs = { self }: { deploy.nodes.web = { hostname = "web.invalid"; profiles.system.path = "/nix/store/00000000000000000000000000000000-missing"; }; }; }"#.into(),
            &["-s", "."],
            3,
            "deploy.nodes.web.profiles.system.path is not a derivation (a plain string such as \"/etc\", or a store path that Nix cannot build)",
            Some("is required, but there is no substituter"),
        ),
        (no_activate, &["-s", "."], 3, "profile `system` of node `web`: /nix/store/", None),
    ];
    for (text, args, code, start, below) in rows {
        let dir = raw_flake(&text);
        let r = run_rollout(dir.path(), args, &[]);
        assert_eq!(r.code, code, "{args:?}: {}", r.stderr);
        let (first, after) = failure_lines(&r.stderr);
        assert!(first.starts_with(start), "expected `{start}`, got:\n{}", r.stderr);
        if let Some(nix) = below {
            assert!(
                after.iter().any(|l| l.starts_with("    ") && l.contains(nix)),
                "{}",
                r.stderr
            );
        }
        assert!(
            after.iter().all(|l| l.starts_with("    ") || l.starts_with("hint: ")),
            "{}",
            r.stderr
        );
    }
    // The missing activation script also says how to build one.
    let dir = raw_flake(&format!(
        r#"{{ outputs = {{ self }}: {{ deploy.nodes.web = {{ hostname = "web.invalid";
          profiles.system.path = builtins.derivation {{ name = "bare"; system = "{sys}"; builder = "/bin/sh";
            args = [ "-c" "echo > $out" ]; }}; }}; }}; }}"#
    ));
    let r = run_rollout(dir.path(), &["-s", "."], &[]);
    assert!(
        r.stderr.lines().any(|l| l
            .trim_start()
            .starts_with("hint: build the profile with an activation script")),
        "{}",
        r.stderr
    );
}

#[test]
fn the_ci_guide_matches_its_example_workflow_and_the_exit_codes() {
    let docs = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/");
    let guide = std::fs::read_to_string(format!("{docs}ci.md")).unwrap();
    let example = std::fs::read_to_string(format!("{docs}ci-example.yml")).unwrap();
    let block = guide.split_once("```yaml\n").unwrap().1.split_once("```\n").unwrap().0;
    let body: String = example.lines().skip(1).map(|l| format!("{l}\n")).collect();
    assert_eq!(block, body, "docs/ci-example.yml and the block in docs/ci.md differ");
    use rollout_core::exit::*;
    for code in [SUCCESS, BAD_INPUT, USAGE, FAILED, ROLLED_BACK, DRIFTED] {
        assert!(
            guide.contains(&format!("\n| {code} |")),
            "docs/ci.md lacks exit code {code}"
        );
    }
    // The flags it tells CI to use exist.
    let help = rollout(&["deploy", "--help"]).stdout;
    for flag in [
        "--json",
        "--no-progress",
        "--color",
        "--log-dir",
        "--sudo-password-command",
        "--ssh-opts",
    ] {
        assert!(help.contains(flag), "{flag}");
    }
}
