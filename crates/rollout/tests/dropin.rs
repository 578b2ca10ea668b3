//! Drop-in without surprises (issue 15): flakes and habits that deploy-rs accepts work with
//! rollout on the first run, through the real binary and `rollout plan` (no host needed): keys
//! deploy-rs ignores are warnings (errors only in strict mode), `null` is "unset", the smaller
//! cases deploy-rs accepts, interactiveSudo without a `user`, activationTimeout without magic
//! rollback. (The `-i` answers need hosts to inspect: `dropin_fleet.rs`.)

mod common;

use common::{run_rollout, write_flake, Run};
use serde_json::Value;

/// A node `web` (profiles `system` and `app`) and a node `db`; `{top}`, `{web}` and `{sys}` are
/// spliced into the top level, the web node and its `system` profile.
fn fleet(top: &str, web: &str, sys: &str) -> String {
    format!(
        r#"{{
      {top}
      nodes.web = {{
        hostname = "web.example";
        {web}
        profiles.system = {{ path = prof "web-system"; user = "root"; {sys} }};
        profiles.app.path = prof "web-app";
      }};
      nodes.db = {{ hostname = "db.example"; profiles.system.path = prof "db-system"; }};
    }}"#
    )
}

fn plan_in(deploy: &str, args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    write_flake(dir.path(), deploy);
    let mut all = vec!["plan", "-s"];
    all.extend_from_slice(args);
    run_rollout(dir.path(), &all, &[])
}

/// The plan as JSON, asserting success.
fn plan_ok(deploy: &str, args: &[&str]) -> (Value, String) {
    let out = plan_in(deploy, args);
    assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
    (serde_json::from_str(&out.stdout).expect("plan JSON"), out.stderr)
}

fn names(plan: &Value) -> Vec<String> {
    plan["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| format!("{}.{}", d["node"].as_str().unwrap(), d["profile"].as_str().unwrap()))
        .collect()
}

fn settings<'a>(plan: &'a Value, node: &str, profile: &str) -> &'a Value {
    let d = plan["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["node"] == node && d["profile"] == profile)
        .unwrap_or_else(|| panic!("{node}.{profile} in {plan}"));
    &d["settings"]
}

/// rollout's own error lines (after the progress lines of the phases that ran).
fn errors(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with("rollout: error: ")).collect()
}

#[test]
fn unknown_keys_are_warnings_naming_the_path_and_the_nearest_key() {
    let deploy = fleet(
        r#"owner = "ops"; "#,
        r#"meta = { team = "web"; rack = 4; };"#,
        "magicRolback = false;",
    );
    let (plan, stderr) = plan_ok(&deploy, &[]);
    for want in [
        "rollout: warning: deploy.nodes.web.profiles.system.magicRolback: unknown setting, ignored — did you mean `magicRollback`?",
        "rollout: warning: deploy.nodes.web.meta: unknown setting, ignored — valid settings here: sshUser,",
        "rollout: warning: deploy.owner: unknown setting, ignored",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in:\n{stderr}");
    }
    // Ignored, as deploy-rs ignores it: the misspelt setting changes nothing.
    assert_eq!(settings(&plan, "web", "system")["magicRollback"], true);
    assert_eq!(names(&plan), vec!["db.system", "web.app", "web.system"]);
    // The plan carries the same warnings as data.
    let w: Vec<&str> = plan["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["path"].as_str().unwrap())
        .collect();
    assert!(w.contains(&"deploy.nodes.web.profiles.system.magicRolback"), "{w:?}");
}

#[test]
fn strict_mode_refuses_ignored_keys_from_the_flag_or_the_flake() {
    let deploy = fleet("", "", "magicRolback = false;");
    for (deploy, args) in [
        (deploy.clone(), vec!["--strict"]),
        (deploy.replacen("{\n", "{\n strict = true;", 1), vec![]),
    ] {
        let out = plan_in(&deploy, &args);
        assert_eq!(out.code, 1, "{args:?}: {}", out.stderr);
        let e = errors(&out.stderr);
        assert_eq!(e.len(), 1, "{}", out.stderr);
        assert!(
            e[0].starts_with(
                "rollout: error: deploy.nodes.web.profiles.system.magicRolback: unknown setting; did you mean \
                 `magicRollback`? (refused in strict mode: --strict or `strict = true` in deploy)"
            ),
            "{}",
            out.stderr
        );
        assert!(out.stdout.is_empty());
    }
    // A key at the wrong level is ignored by deploy-rs too: a warning, an error when strict.
    let deploy = fleet("", r#"profilePath = "/nix/var/nix/profiles/x";"#, "");
    let (_, stderr) = plan_ok(&deploy, &[]);
    assert!(
        stderr.contains("deploy.nodes.web.profilePath: `profilePath` is a profile setting, not allowed here, ignored"),
        "{stderr}"
    );
    assert_eq!(plan_in(&deploy, &["--strict"]).code, 1);
}

#[test]
fn null_is_unset_for_every_optional_setting_at_every_level() {
    let nulls = [
        "sshUser",
        "user",
        "sshOpts",
        "fastConnection",
        "autoRollback",
        "magicRollback",
        "confirmTimeout",
        "activationTimeout",
        "tempPath",
        "remoteBuild",
        "interactiveSudo",
        "sudo",
    ]
    .map(|k| format!("{k} = null;"))
    .join(" ");
    let top = format!("{nulls} strict = null;");
    let web = format!("{nulls} tags = null; profilesOrder = null;");
    let sys = format!("{nulls} profilePath = null;");
    // `user = null` on the profile replaces its `user = "root"`: compare with a flake without it.
    let with_nulls = fleet(&top, &web, &sys).replace(r#"user = "root"; "#, "");
    let without = fleet("", "", "").replace(r#"user = "root"; "#, "");
    let (a, stderr) = plan_ok(&with_nulls, &[]);
    let (b, _) = plan_ok(&without, &[]);
    assert_eq!(a, b);
    assert!(!stderr.contains("warning"), "{stderr}");
    // The generated-config idiom: `sshUser = cfg.user or null`.
    let idiom = fleet(r#"sshUser = { }.user or null;"#, "", "");
    assert_eq!(plan_ok(&idiom, &[]).0, plan_ok(&fleet("", "", ""), &[]).0);
}

#[test]
fn an_empty_hostname_is_accepted_when_hostname_is_given() {
    let deploy = fleet("", "", "").replace(r#"hostname = "web.example";"#, r#"hostname = "";"#);
    let (plan, _) = plan_ok(&deploy, &["--hostname", "10.1.2.3", ".#web"]);
    assert_eq!(settings(&plan, "web", "system")["hostname"], "10.1.2.3");
    // Without it there is nowhere to connect to: refused, naming the field.
    let out = plan_in(&deploy, &[".#web"]);
    assert_eq!(out.code, 1);
    let e = errors(&out.stderr);
    assert!(
        e[0].starts_with("rollout: error: deploy.nodes.web.hostname: expected a host name or address"),
        "{e:?}"
    );
}

#[test]
fn a_node_with_no_profiles_deploys_nothing_and_the_others_deploy() {
    let deploy = fleet("", "", "").replace(
        "nodes.db =",
        "nodes.spare = { hostname = \"spare.example\"; profiles = { }; };\n nodes.db =",
    );
    let (plan, stderr) = plan_ok(&deploy, &[]);
    assert_eq!(names(&plan), vec!["db.system", "web.app", "web.system"]);
    assert!(
        stderr.contains(
            "rollout: warning: deploy.nodes.spare.profiles: the node has no profiles; nothing is deployed to it"
        ),
        "{stderr}"
    );
    // Selecting only that node selects nothing: an error, so CI does not report a deploy that did nothing.
    let out = plan_in(&deploy, &[".#spare"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("nothing to deploy: `.#spare` selects no profile"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_duplicate_in_profiles_order_is_dropped() {
    let deploy = fleet("", r#"profilesOrder = [ "app" "system" "app" ];"#, "");
    let (plan, stderr) = plan_ok(&deploy, &[".#web"]);
    assert_eq!(names(&plan), vec!["web.app", "web.system"]);
    assert!(
        stderr
            .contains("warning: deploy.nodes.web.profilesOrder[2]: `app` is listed twice; the later entry is ignored"),
        "{stderr}"
    );
}

#[test]
fn profiles_order_naming_a_missing_profile_matters_only_when_the_whole_node_is_deployed() {
    let deploy = fleet("", r#"profilesOrder = [ "system" "sytem" ];"#, "");
    let (plan, stderr) = plan_ok(&deploy, &[".#web.app"]);
    assert_eq!(names(&plan), vec!["web.app"]);
    assert!(
        stderr.contains("warning: deploy.nodes.web.profilesOrder[1]: no profile named `sytem`"),
        "{stderr}"
    );
    // The whole node: deploy-rs fails with "No profile named `sytem` was found"; so does rollout.
    let out = plan_in(&deploy, &[".#web"]);
    assert_eq!(out.code, 1);
    assert_eq!(
        errors(&out.stderr),
        vec![
            "rollout: error: deploy.nodes.web.profilesOrder[1]: no profile named `sytem`; did you mean `system`?; \
             profiles: app, system"
        ]
    );
}

#[test]
fn interactive_sudo_without_a_user_activates_as_root() {
    let deploy = fleet(r#"sshUser = "deploy"; interactiveSudo = true;"#, "", "");
    let (plan, stderr) = plan_ok(&deploy, &[]);
    // No `user` anywhere on web.app: root, through sudo, as deploy-rs's `sudo -S` does.
    let app = settings(&plan, "web", "app");
    assert_eq!(
        (&app["user"], &app["elevate"]),
        (&Value::from("root"), &Value::from(true))
    );
    assert_eq!(app["sshUser"], "deploy");
    // An explicit user equal to the ssh user stays that user, and the plan says interactiveSudo does nothing.
    let explicit = fleet(
        r#"sshUser = "deploy"; interactiveSudo = true;"#,
        r#"user = "deploy";"#,
        "",
    )
    .replace(r#"user = "root"; "#, "");
    let (plan, stderr2) = plan_ok(&explicit, &[".#web.app"]);
    assert_eq!(settings(&plan, "web", "app")["elevate"], false);
    assert!(stderr2.contains("interactiveSudo has no effect"), "{stderr2}");
    assert!(!stderr.contains("interactiveSudo has no effect"), "{stderr}");
}

#[test]
fn activation_timeout_bounds_the_activation_only_with_magic_rollback() {
    let deploy = fleet("activationTimeout = 60;", "", "magicRollback = false;");
    let (plan, stderr) = plan_ok(&deploy, &[]);
    assert_eq!(settings(&plan, "web", "system")["activationTimeout"], 60);
    assert!(
        stderr.contains(
            "warning: deploy.nodes.web.profiles.system: activationTimeout has no effect without magic rollback \
             (as in deploy-rs); the activation may take up to 86400 s"
        ),
        "{stderr}"
    );
    // Only there: web.app has magic rollback.
    assert_eq!(stderr.matches("activationTimeout has no effect").count(), 1, "{stderr}");
    let (_, stderr) = plan_ok(&fleet("", "", ""), &["--magic-rollback", "false"]);
    assert!(
        !stderr.contains("activationTimeout"),
        "the default is no setting: {stderr}"
    );
}
