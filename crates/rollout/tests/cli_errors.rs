//! Bad input through the real `rollout` binary: each row is a flake (or none), the arguments, the
//! expected exit code and the words stderr must contain (full attribute path, expected type,
//! suggestion, listed names). Every row must also leave every machine untouched: no `connect`
//! line, no ssh / `nix copy` / `nix build` command, nothing on stdout.
//!
//! Rows run in parallel threads, each in its own temporary directory; flake rows use `-s` so only
//! `nix eval` runs. Needs a local `nix` with flakes (no nixpkgs, no network).

mod common;

use common::{run_rollout, started_lines, write_flake, Run};

struct Row {
    name: &'static str,
    /// The `deploy` expression of `flake.nix` in the row's directory (may call `prof "x"`), or
    /// `None` for no flake at all.
    deploy: Option<String>,
    args: Vec<&'static str>,
    env: Vec<(&'static str, &'static str)>,
    code: i32,
    words: Vec<&'static str>,
}

fn row(name: &'static str, deploy: Option<String>, args: &[&'static str], code: i32, words: &[&'static str]) -> Row {
    Row {
        name,
        deploy,
        args: args.to_vec(),
        env: Vec::new(),
        code,
        words: words.to_vec(),
    }
}

/// A valid two-node fleet: web (profiles system, app; profilesOrder [system]) and db (system).
/// `top`, `web` and `web_system` are spliced into the top level, the web node and web's
/// `system` profile.
fn fleet(top: &str, web: &str, web_system: &str) -> Option<String> {
    Some(format!(
        r#"{{
      {top}
      nodes.web = {{
        hostname = "web.example";
        profilesOrder = [ "system" ];
        {web}
        profiles.system = {{ path = prof "web-system"; {web_system} }};
        profiles.app = {{ path = prof "web-app"; }};
      }};
      nodes.db = {{ hostname = "db.example"; profiles.system.path = prof "db-system"; }};
    }}"#
    ))
}

fn base() -> Option<String> {
    fleet("", "", "")
}

fn top(s: &str) -> Option<String> {
    fleet(s, "", "")
}

fn web(s: &str) -> Option<String> {
    fleet("", s, "")
}

fn web_system(s: &str) -> Option<String> {
    fleet("", "", s)
}

fn raw(s: &str) -> Option<String> {
    Some(s.to_string())
}

// Deploy rows run the real deploy path (not `plan`), with `--debug-logs` so that any command it
// would run shows up in stderr for the "nothing started" check.
const PLAN: &str = "plan";

/// Rows: unknown keys, with the nearest valid name.
fn rows_unknown_keys() -> Vec<Row> {
    vec![
        row(
            "unknown key on a profile, with --strict",
            web_system("magicRolback = true;"),
            &[PLAN, ".#web.system", "-s", "--strict"],
            1,
            &[
                "deploy.nodes.web.profiles.system.magicRolback",
                "unknown setting",
                "did you mean `magicRollback`?",
                "refused in strict mode",
            ],
        ),
        row(
            "unknown key on a node, with --strict after the subcommand",
            web("fastConection = true;"),
            &[PLAN, ".#web", "-s", "--strict"],
            1,
            &[
                "deploy.nodes.web.fastConection",
                "unknown setting",
                "did you mean `fastConnection`?",
            ],
        ),
        row(
            "unknown key at the top level (deploy), with strict = true in the flake",
            top(r#"sshuser = "deploy"; strict = true;"#),
            &["--debug-logs", "-s", "."],
            1,
            &["deploy.sshuser", "unknown setting", "did you mean `sshUser`?"],
        ),
        row(
            "unknown key with no near name lists the valid ones",
            top("frobnicate = 1;"),
            &["--strict", "--dry-run", "-s", "."],
            1,
            &[
                "deploy.frobnicate",
                "valid settings here",
                "sshUser",
                "magicRollback",
                "confirmTimeout",
                "nodes",
            ],
        ),
    ]
}

/// Rows: wrong types.
fn rows_wrong_types() -> Vec<Row> {
    vec![
        row(
            "confirmTimeout as a string",
            web(r#"confirmTimeout = "30";"#),
            &[PLAN, ".#web.system", "-s"],
            1,
            &[
                "deploy.nodes.web.confirmTimeout",
                "expected a non-negative integer (seconds)",
                "found a string",
            ],
        ),
        row(
            "sshOpts as a string",
            top(r#"sshOpts = "-p 2222";"#),
            &["--debug-logs", "-s", ".#db"],
            1,
            &["deploy.sshOpts", "expected a list of strings", "found a string"],
        ),
        row(
            "sshOpts with a non-string element",
            web_system(r#"sshOpts = [ "-p" 2222 ];"#),
            &[PLAN, ".#web.system", "-s"],
            1,
            &[
                "deploy.nodes.web.profiles.system.sshOpts[1]",
                "expected a string",
                "found an integer",
            ],
        ),
        row(
            "fastConnection as a number",
            web_system("fastConnection = 1;"),
            &[PLAN, ".#web.system", "-s"],
            1,
            &[
                "deploy.nodes.web.profiles.system.fastConnection",
                "expected a boolean (true or false)",
                "found an integer",
            ],
        ),
        row(
            "profilePath is not a string",
            web_system("profilePath = 3;"),
            &[PLAN, ".#web.system", "-s"],
            1,
            &[
                "deploy.nodes.web.profiles.system.profilePath",
                "expected a string",
                "found an integer",
            ],
        ),
        row(
            "tags is not a list",
            web(r#"tags = "prod";"#),
            &[PLAN, ".#web", "-s"],
            1,
            &["deploy.nodes.web.tags", "expected a list of strings", "found a string"],
        ),
        row(
            "tags with a non-string element",
            web(r#"tags = [ "prod" 1 ];"#),
            &["--debug-logs", "-s", ".#web"],
            1,
            &["deploy.nodes.web.tags[1]", "expected a string", "found an integer"],
        ),
        row(
            "relative tempPath in the flake",
            top(r#"tempPath = "tmp";"#),
            &[PLAN, ".", "-s"],
            1,
            &["deploy.tempPath", "expected an absolute path on the target", "`tmp`"],
        ),
        row(
            "deploy is a function",
            raw("x: x"),
            &[PLAN, ".", "-s"],
            1,
            &["deploy: expected an attribute set", "found a function"],
        ),
    ]
}

/// Rows: missing required values.
fn rows_missing_values() -> Vec<Row> {
    vec![
        row(
            "missing path",
            raw(r#"{ nodes.web = { hostname = "h"; profiles.system.user = "root"; }; }"#),
            &[PLAN, ".#web.system", "-s"],
            1,
            &["deploy.nodes.web.profiles.system.path", "missing", "store path"],
        ),
        row(
            "missing hostname",
            raw(r#"{ nodes.web = { profiles.system.path = prof "s"; }; }"#),
            &["--debug-logs", "-s", ".#web"],
            1,
            &["deploy.nodes.web.hostname", "missing", "`hostname` (string)"],
        ),
        row(
            "the only node has an empty profiles set: nothing to deploy",
            raw(r#"{ nodes.web = { hostname = "h"; profiles = { }; }; }"#),
            &[PLAN, ".", "-s"],
            1,
            &["nothing to deploy", "selects no profile", "profiles = { }"],
        ),
        row(
            "node without profiles",
            raw(r#"{ nodes.web = { hostname = "h"; }; }"#),
            &[PLAN, ".", "-s"],
            1,
            &[
                "deploy.nodes.web.profiles",
                "missing",
                "expected an attribute set of profiles",
            ],
        ),
        row(
            "profilesOrder names a missing profile",
            raw(
                r#"{ nodes.web = { hostname = "h"; profilesOrder = [ "system" "systme" ]; profiles.system.path = prof "s"; profiles.app.path = prof "a"; }; }"#,
            ),
            &[PLAN, ".#web", "-s"],
            1,
            &[
                "deploy.nodes.web.profilesOrder[1]",
                "no profile named `systme`",
                "did you mean `system`?",
                "profiles: app, system",
            ],
        ),
    ]
}

/// Rows: keys at the wrong level.
fn rows_wrong_level() -> Vec<Row> {
    vec![
        row(
            "hostname inside a profile",
            web_system(r#"hostname = "other";"#),
            &[PLAN, ".#web.system", "-s", "--strict"],
            1,
            &[
                "deploy.nodes.web.profiles.system.hostname",
                "is a node setting",
                "deploy.nodes.<name>.hostname",
            ],
        ),
        row(
            "path on a node",
            web(r#"path = prof "x";"#),
            &["--debug-logs", "-s", "--strict", ".#web"],
            1,
            &[
                "deploy.nodes.web.path",
                "is a profile setting",
                "deploy.nodes.web.profiles.<name>.path",
            ],
        ),
        row(
            "host name that would be an ssh option",
            raw(r#"{ nodes.web = { hostname = "-oProxyCommand=x"; profiles.system.path = prof "s"; }; }"#),
            &["--debug-logs", "-s", "."],
            1,
            &[
                "deploy.nodes.web.hostname",
                "expected a host name or address",
                "starts with `-`",
            ],
        ),
        row(
            "every issue is reported, not just the first",
            fleet(
                r#"sshuser = "x"; strict = true;"#,
                r#"confirmTimeout = "1";"#,
                "magicRolback = true;",
            ),
            &[PLAN, ".#web.system", "-s"],
            1,
            &[
                "deploy.sshuser",
                "deploy.nodes.web.confirmTimeout",
                "deploy.nodes.web.profiles.system.magicRolback",
            ],
        ),
    ]
}

/// Rows: targets.
fn rows_targets() -> Vec<Row> {
    vec![
        row(
            "target names a missing node",
            base(),
            &[PLAN, ".#webb", "-s"],
            1,
            &[
                "target `.#webb`",
                "no node named `webb`",
                "did you mean `web`?",
                "nodes: db, web",
            ],
        ),
        row(
            "target names a missing profile (deploy)",
            base(),
            &["--debug-logs", "-s", ".#web.nope"],
            1,
            &[
                "target `.#web.nope`",
                "node `web` has no profile named `nope`",
                "profiles: app, system",
            ],
        ),
        row(
            "one bad target among --targets",
            base(),
            &["--debug-logs", "-s", "--targets", ".#web", ".#dbb"],
            1,
            &["no node named `dbb`", "did you mean `db`?", "nodes: db, web"],
        ),
        row(
            "target with three components",
            base(),
            &[PLAN, ".#a.b.c", "-s"],
            1,
            &[
                "invalid target `.#a.b.c`",
                "too many components",
                "expected FLAKE, FLAKE#NODE or FLAKE#NODE.PROFILE",
            ],
        ),
        row(
            "target name starting with a digit",
            base(),
            &["--debug-logs", "-s", ".#1web"],
            1,
            &["invalid target `.#1web`", "cannot start with a digit"],
        ),
        row(
            "path that does not exist",
            None,
            &[PLAN, "./not-here#web", "-s"],
            1,
            &["`./not-here` is not a flake or directory", "flake.nix"],
        ),
        row(
            "path that is a file, not a flake directory",
            base(),
            &["--debug-logs", "-s", "./flake.nix#web"],
            1,
            &["`./flake.nix` is not a flake or directory"],
        ),
        row(
            "--file names a missing file",
            None,
            &[PLAN, "-f", "./missing.nix", "web", "-s"],
            1,
            &["`./missing.nix` does not exist", "--file"],
        ),
    ]
}

/// Rows: evaluation.
fn rows_evaluation() -> Vec<Row> {
    vec![row(
        "flake that fails to evaluate shows Nix's message",
        raw(r#"throw "boom-42""#),
        &[PLAN, ".#web", "-s"],
        1,
        &["evaluating the `deploy` output of `.` failed", "boom-42"],
    )]
}

/// Rows: flags.
fn rows_flags() -> Vec<Row> {
    vec![
        row(
            "--ssh-opts with unbalanced quotes",
            base(),
            &["--debug-logs", "-s", "--ssh-opts", "-p 22 -o 'ProxyJump=a", ".#web"],
            1,
            &["invalid --ssh-opts", "-p 22 -o 'ProxyJump=a", "unbalanced quotes"],
        ),
        row(
            "--magic-rollback maybe",
            base(),
            &["--magic-rollback", "maybe", ".#web"],
            2,
            &["invalid value 'maybe'", "--magic-rollback", "true", "false"],
        ),
        row(
            "--confirm-timeout that is not a number",
            base(),
            &[PLAN, "--confirm-timeout", "soon", ".#web"],
            2,
            &["invalid value 'soon'", "--confirm-timeout"],
        ),
        row(
            "TARGET together with --targets",
            base(),
            &[".#web", "--targets", ".#db"],
            2,
            &["cannot be used with", "--targets"],
        ),
        row(
            "--hostname with more than one node",
            base(),
            &["--debug-logs", "-s", "--hostname", "one.example", "."],
            1,
            &["--hostname", "2 nodes", "db", "web"],
        ),
        row(
            "--dry-activate with --boot",
            base(),
            &["--debug-logs", "-s", "--dry-activate", "--boot", ".#web"],
            1,
            &["--dry-activate and --boot cannot be used together"],
        ),
        row(
            "relative --temp-path",
            base(),
            &["--debug-logs", "-s", "--temp-path", "tmp/rollout", ".#web"],
            1,
            &[
                "--temp-path: expected an absolute path on the target",
                "found `tmp/rollout`, which is relative",
            ],
        ),
        row(
            "--parallel 0",
            base(),
            &["--debug-logs", "-s", "--parallel", "0", "."],
            1,
            &["--parallel must be at least 1"],
        ),
        row(
            "--on with an invalid glob",
            base(),
            &["--debug-logs", "-s", "--on", "web-[", "."],
            1,
            &["invalid node selector `web-[`", "`@db`"],
        ),
        row(
            "--on with an empty tag",
            base(),
            &[PLAN, "--on", "@", ".", "-s"],
            1,
            &["invalid node selector `@`"],
        ),
        row(
            "--on matching no node",
            base(),
            &["--debug-logs", "-s", "--on", "zz*", "--exclude", "db", "."],
            1,
            &[
                "no selected node matches --on zz* --exclude db",
                "nodes in the plan: db, web",
            ],
        ),
    ]
}

fn rows() -> Vec<Row> {
    let mut rows: Vec<Row> = [
        rows_unknown_keys(),
        rows_wrong_types(),
        rows_missing_values(),
        rows_wrong_level(),
        rows_targets(),
        rows_evaluation(),
        rows_flags(),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut nix_missing = row(
        "nix is not on PATH",
        base(),
        &["--debug-logs", "-s", ".#web"],
        1,
        &["`nix` was not found on PATH", "Nix 2.4 or newer"],
    );
    nix_missing.env.push(("PATH", "/nonexistent/rollout-test-empty-bin"));
    rows.push(nix_missing);
    rows
}

fn run_row(r: &Row) -> Result<(), String> {
    let dir = tempfile::Builder::new()
        .prefix("rollout-cli-errors-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    if let Some(d) = &r.deploy {
        write_flake(dir.path(), d);
    }
    let out: Run = run_rollout(dir.path(), &r.args, &r.env);
    let mut problems = Vec::new();
    if out.code != r.code {
        problems.push(format!("exit code {} (expected {})", out.code, r.code));
    }
    for w in &r.words {
        if !out.stderr.contains(w) {
            problems.push(format!("stderr lacks `{w}`"));
        }
    }
    let started = started_lines(&out.stderr);
    if !started.is_empty() {
        problems.push(format!("something was started: {started:?}"));
    }
    if !out.stdout.trim().is_empty() {
        problems.push(format!("unexpected stdout: {}", out.stdout));
    }
    if !out.stderr.contains("error") {
        problems.push("stderr has no error message".into());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "row `{}`: {}\n  args: {:?}\n  code: {}\n  stderr:\n{}",
            r.name,
            problems.join("; "),
            r.args,
            out.code,
            indent(&out.stderr)
        ))
    }
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}

#[test]
fn bad_inputs_fail_early_with_precise_messages() {
    common::system(); // learn the system once, before the threads start
    let rows = rows();
    assert!(rows.len() >= 24);
    let mut names = std::collections::HashSet::new();
    for r in &rows {
        assert!(names.insert(r.name), "duplicate row name {}", r.name);
    }
    let results: Vec<Result<(), String>> = std::thread::scope(|s| {
        let hs: Vec<_> = rows
            .chunks(6)
            .map(|chunk| s.spawn(move || chunk.iter().map(run_row).collect::<Vec<_>>()))
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().expect("row thread panicked"))
            .collect()
    });
    let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n\n")
    );
}

/// The table's own helper sanity: the base fleet is valid, so the rows fail for their own reason.
#[test]
fn base_fleet_plans() {
    let dir = tempfile::tempdir().unwrap();
    write_flake(dir.path(), &base().unwrap());
    let out = run_rollout(dir.path(), &["plan", ".", "-s"], &[]);
    assert_eq!(out.code, 0, "stderr:\n{}", out.stderr);
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).expect("plan JSON on stdout");
    let names: Vec<String> = plan["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| format!("{}.{}", d["node"].as_str().unwrap(), d["profile"].as_str().unwrap()))
        .collect();
    assert_eq!(names, vec!["db.system", "web.system", "web.app"]);
    assert!(started_lines(&out.stderr).is_empty());
}
