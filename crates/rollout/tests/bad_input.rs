//! Bad-input suite: configurations and flags that must be refused before any host is contacted.
//! Every row is a flake whose nodes point at a real test fleet (web → host1, db → host2, reachable
//! with the fleet's ssh_config), run as a real deploy (not `plan`, unless the row says so). Each
//! row asserts the exit code, that the FIRST line of stderr is rollout's own (or clap's, for usage
//! errors) and names the field, flag or file with what is expected, and that sshd on every host
//! saw no login at all.

mod common;

use common::{run_rollout, write_flake};
use rollout_lab::Fleet;

struct Row {
    /// Spliced into the top level, the web node and web's `system` profile; `None` in `raw`
    /// means the whole `deploy` expression is `raw`'s text instead.
    top: &'static str,
    web: &'static str,
    sys: &'static str,
    raw: Option<&'static str>,
    args: &'static [&'static str],
    code: i32,
    /// Words the first stderr line must contain.
    first: &'static [&'static str],
}

const fn r(
    top: &'static str,
    web: &'static str,
    sys: &'static str,
    args: &'static [&'static str],
    first: &'static [&'static str],
) -> Row {
    Row {
        top,
        web,
        sys,
        raw: None,
        args,
        code: 1,
        first,
    }
}

const fn raw(deploy: &'static str, first: &'static [&'static str]) -> Row {
    Row {
        top: "",
        web: "",
        sys: "",
        raw: Some(deploy),
        args: &[],
        code: 1,
        first,
    }
}

const fn flag(args: &'static [&'static str], code: i32, first: &'static [&'static str]) -> Row {
    Row {
        top: "",
        web: "",
        sys: "",
        raw: None,
        args,
        code,
        first,
    }
}

const W: &str = "deploy.nodes.web";
const S: &str = "deploy.nodes.web.profiles.system";

#[rustfmt::skip]
fn rows() -> Vec<Row> {
    vec![
        // ----- wrong types -----
        r("", "confirmTimeout = \"30\";", "", &[], &["deploy.nodes.web.confirmTimeout", "expected a non-negative integer", "found a string"]),
        r("", "", "activationTimeout = -1;", &[], &["deploy.nodes.web.profiles.system.activationTimeout", "expected a non-negative integer", "negative"]),
        r("", "", "activationTimeout = 1.5;", &[], &[S, "activationTimeout", "found a float"]),
        r("", "", "magicRollback = \"yes\";", &[], &[S, "magicRollback", "expected a boolean"]),
        r("", "", "autoRollback = 1;", &[], &[S, "autoRollback", "expected a boolean", "found an integer"]),
        r("", "fastConnection = 1;", "", &[], &[W, "fastConnection", "expected a boolean", "integer"]),
        r("", "", "remoteBuild = [ ];", &[], &[S, "remoteBuild", "expected a boolean", "list"]),
        r("interactiveSudo = { };", "", "", &[], &["deploy.interactiveSudo", "expected a boolean", "attribute set"]),
        r("", "sshUser = true;", "", &[], &[W, "sshUser", "expected a string"]),
        r("", "user = \"\";", "", &[], &[W, "user", "expected a non-empty string"]),
        r("", "", "sudo = x: x;", &[], &[S, "sudo", "expected a string", "function"]),
        r("", "tempPath = ./.;", "", &[], &[W, "tempPath", "expected a string", "path"]),
        r("", "sshOpts = \"-p 22\";", "", &[], &[W, "sshOpts", "expected a list of strings"]),
        r("", "", "sshOpts = [ \"-p\" 22 ];", &[], &[S, "sshOpts[1]", "expected a string"]),
        r("", "tags = \"prod\";", "", &[], &[W, "tags", "expected a list of strings"]),
        raw("{ nodes.web = { hostname = 3; profiles.system.path = prof \"s\"; }; }", &["deploy.nodes.web.hostname", "expected a string"]),
        r("", "profilesOrder = \"system\";", "", &[], &[W, "profilesOrder", "expected a list of strings"]),
        raw("3", &["deploy", "expected an attribute set", "integer"]),
        raw("{ nodes = [ ]; }", &["deploy.nodes", "expected an attribute set of nodes"]),
        // ----- unknown keys and keys at the wrong level -----
        r("", "", "magicRolback = true;", &["--strict"], &[S, "magicRolback", "unknown setting", "did you mean `magicRollback`"]),
        r("sshuser = \"deploy\"; strict = true;", "", "", &[], &["deploy.sshuser", "unknown setting", "did you mean `sshUser`"]),
        r("", "hostnme = \"x\";", "", &["--strict"], &[W, "hostnme", "did you mean `hostname`"]),
        r("", "", "hostname = \"host2\";", &["--strict"], &[S, "hostname", "is a node setting"]),
        r("", "path = \"/nix/store/x\";", "", &["--strict"], &[W, "path", "is a profile setting"]),
        r("profilePath = \"/x\"; strict = true;", "", "", &[], &["deploy.profilePath", "is a profile setting"]),
        // ----- timeouts out of range -----
        r("", "confirmTimeout = 0;", "", &[], &[W, "confirmTimeout", "expected a number of seconds from 1 to 86400", "`0`"]),
        r("", "", "confirmTimeout = 86401;", &[], &[S, "confirmTimeout", "from 1 to 86400", "`86401`"]),
        r("activationTimeout = 4294967296;", "", "", &[], &["deploy.activationTimeout", "from 1 to 86400", "`4294967296`"]),
        flag(&["--confirm-timeout", "0"], 1, &["--confirm-timeout", "from 1 to 86400", "`0`"]),
        flag(&["--activation-timeout", "100000"], 1, &["--activation-timeout", "from 1 to 86400", "`100000`"]),
        // ----- paths -----
        r("tempPath = \"tmp\";", "", "", &[], &["deploy.tempPath", "expected an absolute path on the target", "relative"]),
        r("", "", "profilePath = \"profiles/x\";", &[], &[S, "profilePath", "absolute path", "relative"]),
        r("", "", "profilePath = \"/nix/var/nix/profiles/../x\";", &[], &[S, "profilePath", "without `..`"]),
        r("", "tempPath = \"/tmp/a\\nb\";", "", &[], &[W, "tempPath", "absolute path", "control character", "`/tmp/a\\nb`"]),
        flag(&["--temp-path", "tmp"], 1, &["--temp-path", "expected an absolute path on the target", "relative"]),
        flag(&["--profile-path", "rel/p"], 1, &["--profile-path", "absolute path", "relative"]),
        flag(&["-k", "--result-path", ""], 1, &["--result-path", "expected a directory path", "empty"]),
        flag(&["-k", "--result-path", "r\nx"], 1, &["--result-path", "expected a directory path", "control character"]),
        flag(&["--log-dir", "/proc/rollout-logs"], 1, &["--log-dir", "cannot create", "expected a directory rollout can write"]),
        flag(&["--log-dir", "/dev/null"], 1, &["--log-dir", "expected a directory rollout can write"]),
        // ----- names -----
        r("user = \"root;id\";", "", "", &[], &["deploy.user", "expected a user name", "`;`"]),
        r("", "sshUser = \"a b\";", "", &[], &[W, "sshUser", "expected a user name", "whitespace"]),
        raw("{ nodes.web = { hostname = \"host1 x\"; profiles.system.path = prof \"s\"; }; }", &["deploy.nodes.web.hostname", "expected a host name", "whitespace"]),
        raw("{ nodes.web = { hostname = \"host1?x=y\"; profiles.system.path = prof \"s\"; }; }", &["deploy.nodes.web.hostname", "expected a host name", "`?`"]),
        raw("{ nodes.web = { hostname = \"-oProxyCommand=x\"; profiles.system.path = prof \"s\"; }; }", &["deploy.nodes.web.hostname", "starts with `-`"]),
        raw("{ nodes.\"a/b\" = { hostname = \"host1\"; profiles.system.path = prof \"s\"; }; }", &["deploy.nodes.\"a/b\"", "node name", "expected a name", "`/`"]),
        raw("{ nodes.web = { hostname = \"host1\"; profiles.\"p$q\".path = prof \"s\"; }; }", &["deploy.nodes.web.profiles.\"p\\$q\"", "profile name", "`$`"]),
        flag(&["--hostname="], 1, &["--hostname", "expected a host name", "empty"]),
        flag(&["--ssh-user", "x@y"], 1, &["--ssh-user", "expected a user name", "`@`"]),
        flag(&["--profile-user=-u"], 1, &["--profile-user", "expected a user name", "starts with `-`"]),
        // ----- ssh options and sudo -----
        r("", "sshOpts = [ \"-F\" \"/dev/null\" \"evilhost\" ];", "", &[], &[W, "sshOpts", "not an option"]),
        r("", "", "sshOpts = [ \"-O\" \"exit\" ];", &[], &[S, "sshOpts[0]", "expected ssh options", "`-O`"]),
        r("", "", "sudo = \"sudo \\\"-u\";", &[], &[S, "sudo", "expected a command prefix", "unbalanced quotes"]),
        flag(&["--ssh-opts", "-p 22 -o 'ProxyJump=a"], 1, &["--ssh-opts", "unbalanced quotes", "expected shell-style words"]),
        flag(&["--ssh-opts", "-Z"], 1, &["--ssh-opts", "expected ssh options", "not an ssh option"]),
        // ----- missing and empty -----
        raw("{ nodes = { }; }", &["nothing to deploy", "deploy.nodes is empty", "expected at least one node"]),
        raw("{ sshUser = \"deploy\"; }", &["deploy.nodes", "missing", "expected an attribute set of nodes"]),
        raw("{ nodes.web = { hostname = \"host1\"; }; }", &["deploy.nodes.web.profiles", "missing", "expected an attribute set"]),
        raw("{ nodes.web = { hostname = \"host1\"; profiles = { }; }; }", &["nothing to deploy", "selects no profile", "expected at least one node with a profile"]),
        raw("{ nodes.web = { hostname = \"host1\"; profiles.system = { user = \"root\"; }; }; }", &["deploy.nodes.web.profiles.system.path", "missing", "`path`"]),
        raw("{ nodes.web = { profiles.system.path = prof \"s\"; }; }", &["deploy.nodes.web.hostname", "missing", "`hostname`"]),
        r("", "profilesOrder = [ \"system\" \"nope\" ];", "", &[], &[W, "profilesOrder[1]", "no profile named `nope`"]),
        // ----- targets and flags -----
        flag(&[".#web.system.extra"], 1, &["invalid target `.#web.system.extra`", "expected"]),
        flag(&[".#\"unclosed"], 1, &["invalid target", "expected"]),
        flag(&[".#webb"], 1, &["target `.#webb`", "no node named `webb`", "nodes: db, web"]),
        flag(&[".#web.nope"], 1, &["target `.#web.nope`", "no profile named `nope`", "profiles: system"]),
        flag(&["./no-such-dir"], 1, &["`./no-such-dir` is not a flake", "expected"]),
        flag(&["--parallel", "0"], 1, &["--parallel", "at least 1"]),
        flag(&["--dry-activate", "--boot"], 1, &["--dry-activate and --boot", "expected at most one"]),
        flag(&["--on", "nosuchnode"], 1, &["nosuchnode"]),
        flag(&["--confirm-timeout", "soon"], 2, &["invalid value 'soon'", "--confirm-timeout"]),
        flag(&["--magic-rollback", "maybe"], 2, &["invalid value 'maybe'", "--magic-rollback"]),
    ]
}

/// The first line of stderr after the progress lines of the phases that ran (`rollout: evaluate:
/// evaluating .`, printed before the problem was known): the error's own first line.
fn first_line(stderr: &str) -> &str {
    stderr
        .lines()
        .find(|l| !(l.starts_with("rollout: evaluate") || l.starts_with("rollout: check")))
        .unwrap_or("")
}

/// The row's `deploy` expression, pointing at the fleet.
fn deploy_expr(row: &Row, ssh_config: &str) -> String {
    let conn = format!("sshUser = \"deploy\"; sshOpts = [ \"-F\" \"{ssh_config}\" ];");
    if let Some(raw) = row.raw {
        // Raw rows that are attribute sets get the connection settings too (prepended).
        return match raw.strip_prefix('{') {
            Some(rest) if !raw.contains("sshUser") => format!("{{ {conn} {rest}"),
            _ => raw.to_string(),
        };
    }
    format!(
        r#"{{
      {conn}
      {top}
      nodes.web = {{
        hostname = "host1";
        {web}
        profiles.system = {{ path = prof "web-system"; user = "root"; {sys} }};
      }};
      nodes.db = {{ hostname = "host2"; profiles.system = {{ path = prof "db-system"; user = "root"; }}; }};
    }}"#,
        top = row.top,
        web = row.web,
        sys = row.sys,
    )
}

#[test]
fn bad_configurations_and_flags_are_refused_before_any_host_is_contacted() {
    let fleet = Fleet::temp(2).expect("start test fleet");
    let ssh_config = fleet.ssh_config().display().to_string();
    let rows = rows();
    assert!(rows.len() >= 50, "{} rows", rows.len());
    let mut failures = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        write_flake(dir.path(), &deploy_expr(row, &ssh_config));
        let mut args: Vec<&str> = vec!["-s"];
        // A row whose first argument is a target uses it; the others deploy the whole flake.
        let has_target = row.args.first().is_some_and(|a| a.starts_with('.'));
        if !has_target {
            args.push(".");
        }
        args.extend_from_slice(row.args);
        let run = run_rollout(dir.path(), &args, &[]);
        let first = first_line(&run.stderr);
        let mut why = Vec::new();
        if run.code != row.code {
            why.push(format!("exit {} (expected {})", run.code, row.code));
        }
        let own = if row.code == 2 {
            first.starts_with("error: ")
        } else {
            first.starts_with("rollout: error: ")
        };
        if !own {
            why.push("the first line is not rollout's (or clap's) own".to_string());
        }
        for w in row.first {
            if !first.contains(w) {
                why.push(format!("the first line lacks `{w}`"));
            }
        }
        let auths = fleet.total_auth_count();
        if auths != 0 {
            why.push(format!("{auths} ssh login(s) on the fleet"));
        }
        if !run.stdout.is_empty() {
            why.push("stdout is not empty".into());
        }
        if !why.is_empty() {
            failures.push(format!(
                "row {i} {:?}: {}\n  stderr: {}",
                row.args,
                why.join("; "),
                run.stderr.trim()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
    // The login counter the rows rely on does count: one real login shows up.
    let st = fleet.ssh("deploy@host1", &["true"]).status().unwrap();
    assert!(st.success());
    assert_eq!(fleet.total_auth_count(), 1);
}
