//! The plan: the ordered list of (node, profile) deployments with merged settings.
//!
//! The plan is a plain value: `-i`, `plan`/`--dry-run` and `--json` print it, execution only
//! reads it, and nothing touches a machine before it has been built without error. Order is
//! deterministic (deploy-rs used random `HashMap` order): targets in argument order; for a
//! whole-flake target, nodes by name; within a node, `profilesOrder` first, then the remaining
//! profiles by name.

use std::collections::HashSet;
use std::fmt::Write as _;

use serde::Serialize;

use crate::config::{list_names, suggest, DeployConfig, GenericSettings, Issue};
use crate::settings::{resolve, validate_overrides, Overrides, Resolved};
use crate::ssh::Endpoint;
use crate::target::{quote_attr, Target};
use crate::validate::{check_name, ValidationError};

/// Everything that will be deployed, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub deployments: Vec<Deployment>,
    /// What was accepted as deploy-rs accepts it but deserves a look (keys it would ignore, a
    /// duplicate in `profilesOrder` …); printed as warnings before anything runs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Issue>,
}

/// One profile on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    pub flake: String,
    pub node: String,
    pub profile: String,
    /// Store path of the profile's activatable closure (`path` in the flake); empty until the
    /// node's evaluation (streamed, see `deploy::stream`) has produced it.
    pub closure: String,
    /// The derivation that builds `closure`, when `path` was one (built without evaluating again).
    #[serde(skip)]
    pub drv: Option<String>,
    pub settings: Resolved,
    /// Where to connect: built from the validated host, user and options only.
    #[serde(skip)]
    pub endpoint: Endpoint,
}

/// A target that does not match the evaluated configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("target `{target}`: no node named `{node}` in `{flake}`{hint}; nodes: {available}")]
    NoSuchNode {
        target: String,
        flake: String,
        node: String,
        hint: String,
        available: String,
    },
    #[error("target `{target}`: node `{node}` has no profile named `{profile}`{hint}; profiles: {available}")]
    NoSuchProfile {
        target: String,
        node: String,
        profile: String,
        hint: String,
        available: String,
    },
    /// Values that cannot be used (host, user and node names, paths, timeouts, ssh options …);
    /// every problem of every selected deployment, one per line.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// Nothing to deploy: no nodes in `deploy.nodes`, or a selection that matched nothing.
    #[error("nothing to deploy: {0}")]
    Empty(String),
    /// The evaluation did not include something the target needs: a bug in how the caller
    /// built the selection, not a user error.
    #[error(
        "target `{target}`: `{what}` was not evaluated (internal error: the evaluation selection did not include it)"
    )]
    NotEvaluated { target: String, what: String },
}

/// Expands `targets` (each paired with the configuration evaluated from its flake) into the
/// ordered, de-duplicated plan.
pub fn build_plan(
    targets: &[(Target, &DeployConfig)],
    overrides: &Overrides,
    local_user: &str,
) -> Result<Plan, PlanError> {
    let mut deployments = Vec::new();
    let mut seen: HashSet<(String, String, String)> = HashSet::new();
    let mut issues = validate_overrides(overrides);
    let mut warnings = config_notes(targets, overrides, &mut issues);

    for (target, cfg) in targets {
        let shown = target.to_string();
        let node_names: Vec<&String> = match &target.node {
            None => cfg.all_node_names.iter().collect(),
            Some(n) => {
                if !cfg.all_node_names.contains(n) {
                    return Err(PlanError::NoSuchNode {
                        target: shown.clone(),
                        flake: target.flake.clone(),
                        node: n.clone(),
                        hint: suggest(n, cfg.all_node_names.iter().map(String::as_str)),
                        available: list_names(&cfg.all_node_names),
                    });
                }
                vec![n]
            }
        };
        for node_name in node_names {
            let not_evaluated = |what: String| PlanError::NotEvaluated {
                target: shown.clone(),
                what,
            };
            let node = cfg
                .nodes
                .get(node_name)
                .ok_or_else(|| not_evaluated(format!("deploy.nodes.{}", quote_attr(node_name))))?;
            let all_profiles = cfg.all_profile_names.get(node_name).map(Vec::as_slice).unwrap_or(&[]);
            let profile_names = match &target.profile {
                Some(p) if !all_profiles.contains(p) => {
                    return Err(PlanError::NoSuchProfile {
                        target: shown.clone(),
                        node: node_name.clone(),
                        profile: p.clone(),
                        hint: suggest(p, all_profiles.iter().map(String::as_str)),
                        available: list_names(all_profiles),
                    });
                }
                Some(p) => {
                    // deploy-rs does not read profilesOrder for one profile; rollout only warns.
                    let mut unused = Vec::new();
                    check_order(node_name, &node.profiles_order, all_profiles, &mut unused);
                    warnings.extend(unused.into_iter().map(|mut i| {
                        i.message = format!("{}; ignored, as only one profile is deployed", i.message);
                        i
                    }));
                    vec![p]
                }
                None => {
                    check_order(node_name, &node.profiles_order, all_profiles, &mut issues);
                    ordered(&node.profiles_order, all_profiles)
                }
            };
            for profile_name in profile_names {
                let profile = node.profiles.get(profile_name).ok_or_else(|| {
                    not_evaluated(format!(
                        "deploy.nodes.{}.profiles.{}",
                        quote_attr(node_name),
                        quote_attr(profile_name)
                    ))
                })?;
                let key = (target.flake.clone(), node_name.clone(), profile_name.clone());
                if !seen.insert(key) {
                    continue;
                }
                check_names(node_name, profile_name, &mut issues);
                match resolve(
                    &cfg.settings,
                    node,
                    profile,
                    overrides,
                    local_user,
                    (node_name, profile_name),
                ) {
                    Ok((settings, endpoint)) => {
                        let eff =
                            GenericSettings::effective(overrides, &profile.settings, &node.settings, &cfg.settings);
                        warnings.extend(setting_notes(&eff, &settings, node_name, profile_name));
                        deployments.push(Deployment {
                            flake: target.flake.clone(),
                            node: node_name.clone(),
                            profile: profile_name.clone(),
                            closure: profile.path.clone(),
                            drv: None,
                            settings,
                            endpoint,
                        });
                    }
                    Err(found) => issues.extend(found),
                }
            }
        }
    }
    finish(targets, deployments, issues, warnings)
}

/// Each flake's ignored keys (warnings, or errors in strict mode) and its other warnings, once
/// per flake.
fn config_notes(targets: &[(Target, &DeployConfig)], o: &Overrides, issues: &mut Vec<Issue>) -> Vec<Issue> {
    let mut warnings = Vec::new();
    let mut done = HashSet::new();
    for (target, cfg) in targets {
        if !done.insert(target.flake.as_str()) {
            continue;
        }
        let strict = o.strict.unwrap_or(cfg.strict);
        for i in &cfg.ignored {
            if strict {
                issues.push(i.error());
            } else {
                warnings.push(i.warning());
            }
        }
        warnings.extend(cfg.warnings.iter().cloned());
    }
    warnings
}

/// profilesOrder first (no duplicates: config dropped them; missing names skipped, reported by
/// [`check_order`]), then the rest by name.
fn ordered<'a>(order: &'a [String], profiles: &'a [String]) -> Vec<&'a String> {
    let mut out: Vec<&String> = order.iter().filter(|p| profiles.contains(p)).collect();
    out.extend(profiles.iter().filter(|p| !order.contains(p)));
    out
}

/// Settings that mean something else than they seem to, as in deploy-rs: said once per profile.
fn setting_notes(eff: &GenericSettings, r: &Resolved, node: &str, profile: &str) -> Vec<Issue> {
    let path = format!("deploy.nodes.{}.profiles.{}", quote_attr(node), quote_attr(profile));
    let mut notes = Vec::new();
    if eff.activation_timeout.is_some() && !r.magic_rollback {
        notes.push(Issue {
            path: path.clone(),
            message: format!(
                "activationTimeout has no effect without magic rollback (as in deploy-rs); the activation may take up to {} s",
                r.activation_bound(false)
            ),
        });
    }
    if r.interactive_sudo && !r.elevate && r.user != "root" {
        notes.push(Issue {
            path,
            message: format!(
                "interactiveSudo has no effect: the profile user `{}` is the ssh user (deploy-rs would activate as root); \
                 leave `user` unset or set it to \"root\" to elevate",
                r.user
            ),
        });
    }
    notes
}

/// Names in `profilesOrder` must be profiles of the node where the order is used (deploy-rs:
/// "No profile named `x` was found").
fn check_order(node: &str, order: &[String], profiles: &[String], issues: &mut Vec<Issue>) {
    for (i, p) in order.iter().enumerate() {
        if !profiles.contains(p) {
            issues.push(Issue {
                path: format!("deploy.nodes.{}.profilesOrder[{i}]", quote_attr(node)),
                message: format!(
                    "no profile named `{p}`{}; profiles: {}",
                    suggest(p, profiles.iter().map(String::as_str)),
                    list_names(profiles)
                ),
            });
        }
    }
}

/// Node and profile names become file names, Nix attributes and URL fragments: refused up front
/// unless they are plain (see [`crate::validate::check_name`]).
fn check_names(node: &str, profile: &str, issues: &mut Vec<Issue>) {
    let npath = format!("deploy.nodes.{}", quote_attr(node));
    let ppath = format!("{npath}.profiles.{}", quote_attr(profile));
    for (what, path, name) in [("node", &npath, node), ("profile", &ppath, profile)] {
        if let Err(e) = check_name(name) {
            let mut issue = e.at(path, name);
            issue.message = format!("{what} name: {}", issue.message);
            issues.push(issue);
        }
    }
}

/// Every issue of every deployment (each once), or the plan; an empty plan is an error.
fn finish(
    targets: &[(Target, &DeployConfig)],
    deployments: Vec<Deployment>,
    mut issues: Vec<Issue>,
    warnings: Vec<Issue>,
) -> Result<Plan, PlanError> {
    let mut shown = HashSet::new();
    issues.retain(|i| shown.insert(i.to_string()));
    if !issues.is_empty() {
        return Err(ValidationError { issues }.into());
    }
    if deployments.is_empty() {
        let flakes: Vec<String> = targets.iter().map(|(t, _)| format!("`{t}`")).collect();
        let why = if targets.iter().all(|(_, c)| c.all_node_names.is_empty()) {
            "no node (deploy.nodes is empty)"
        } else {
            "no profile (its nodes have `profiles = { }`)"
        };
        return Err(PlanError::Empty(format!(
            "{} selects {why}; expected at least one node with a profile",
            flakes.join(", ")
        )));
    }
    Ok(Plan { deployments, warnings })
}

impl Plan {
    /// Human-readable plan in the shape of deploy-rs's `-i` output: one `[node.profile]` table
    /// per deployment, in plan order, with `user`, `ssh_user`, `path`, `hostname`, `ssh_opts`
    /// first and rollout's other merged settings after them. When the same node.profile comes
    /// from two flakes, the table name is prefixed with the flake to stay valid TOML.
    pub fn to_toml(&self) -> String {
        let mut counts = std::collections::HashMap::new();
        for d in &self.deployments {
            *counts.entry((&d.node, &d.profile)).or_insert(0usize) += 1;
        }
        let mut out = String::new();
        for (i, d) in self.deployments.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            let s = &d.settings;
            let header = if counts[&(&d.node, &d.profile)] > 1 {
                format!("{}.{}.{}", toml_key(&d.flake), toml_key(&d.node), toml_key(&d.profile))
            } else {
                format!("{}.{}", toml_key(&d.node), toml_key(&d.profile))
            };
            let _ = writeln!(out, "[{header}]");
            let mut kv = |k: &str, v: toml::Value| {
                let _ = writeln!(out, "{k} = {v}");
            };
            kv("user", s.user.clone().into());
            kv("ssh_user", s.ssh_user.clone().into());
            kv("path", d.closure.clone().into());
            kv("hostname", s.hostname.clone().into());
            kv(
                "ssh_opts",
                toml::Value::Array(s.ssh_opts.iter().cloned().map(toml::Value::from).collect()),
            );
            kv("flake", d.flake.clone().into());
            if let Some(p) = &s.profile_path {
                kv("profile_path", p.clone().into());
            }
            if s.elevate {
                kv("sudo", s.sudo.clone().into());
            }
            kv("fast_connection", s.fast_connection.into());
            kv("auto_rollback", s.auto_rollback.into());
            kv("magic_rollback", s.magic_rollback.into());
            kv("confirm_timeout", toml_int(s.confirm_timeout));
            kv("activation_timeout", toml_int(s.activation_timeout));
            kv("temp_path", s.temp_path.clone().into());
            kv("remote_build", s.remote_build.into());
            kv("interactive_sudo", s.interactive_sudo.into());
        }
        out
    }

    /// Machine-readable plan (camelCase keys, mirroring the flake schema).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("plan serializes to JSON")
    }
}

fn toml_int(n: u64) -> toml::Value {
    // TOML integers are i64; larger timeouts are unrealistic but must not panic.
    toml::Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

/// A TOML key: bare when it only uses `A-Za-z0-9_-`, otherwise a basic string.
fn toml_key(k: &str) -> String {
    if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        k.to_string()
    } else {
        toml::Value::from(k).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_raw_deploy;
    use crate::target::parse_target;
    use serde_json::json;

    fn cfg(v: serde_json::Value) -> DeployConfig {
        parse_raw_deploy(&v, "").unwrap()
    }

    fn fleet() -> DeployConfig {
        cfg(json!({
            "sshUser": "top",
            "nodes": {
                "web": { "hostname": "web.example", "profilesOrder": ["system"], "profiles": {
                    "system": { "path": "/nix/store/w-sys", "user": "root" },
                    "app": { "path": "/nix/store/w-app" },
                    "home": { "path": "/nix/store/w-home" }
                } },
                "db": { "hostname": "db.example", "sshOpts": ["-p", "2222"], "profiles": {
                    "system": { "path": "/nix/store/d-sys" }
                } },
                "a.b": { "hostname": "ab", "profiles": { "x.y": { "path": "/nix/store/ab" } } }
            }
        }))
    }

    fn plan(targets: &[&str], c: &DeployConfig) -> Result<Plan, PlanError> {
        let ts: Vec<(Target, &DeployConfig)> = targets.iter().map(|t| (parse_target(t).unwrap(), c)).collect();
        build_plan(&ts, &Overrides::default(), "me")
    }

    fn names(p: &Plan) -> Vec<String> {
        p.deployments
            .iter()
            .map(|d| format!("{}.{}", d.node, d.profile))
            .collect()
    }

    #[test]
    fn order_is_deterministic() {
        let c = fleet();
        assert_eq!(
            names(&plan(&["."], &c).unwrap()),
            vec!["a.b.x.y", "db.system", "web.system", "web.app", "web.home"]
        );
        assert_eq!(
            names(&plan(&[".#web"], &c).unwrap()),
            vec!["web.system", "web.app", "web.home"]
        );
        assert_eq!(
            names(&plan(&[".#web.home", ".#db"], &c).unwrap()),
            vec!["web.home", "db.system"]
        );
        assert_eq!(names(&plan(&[".#\"a.b\".\"x.y\""], &c).unwrap()), vec!["a.b.x.y"]);
    }

    #[test]
    fn duplicates_are_dropped_keeping_first_position() {
        let c = fleet();
        assert_eq!(
            names(&plan(&[".#web.app", ".#web", ".#db.system", "."], &c).unwrap()),
            vec!["web.app", "web.system", "web.home", "db.system", "a.b.x.y"]
        );
        // The same node.profile from two different flakes is two deployments.
        let ts = vec![
            (parse_target("./one#db").unwrap(), &c),
            (parse_target("./two#db").unwrap(), &c),
        ];
        let p = build_plan(&ts, &Overrides::default(), "me").unwrap();
        assert_eq!(p.deployments.len(), 2);
        assert_eq!(p.deployments[1].flake, "./two");
    }

    #[test]
    fn missing_node_or_profile_lists_existing_names() {
        let c = fleet();
        assert_eq!(
            plan(&[".#webb"], &c).unwrap_err().to_string(),
            "target `.#webb`: no node named `webb` in `.`; did you mean `web`?; nodes: \"a.b\", db, web"
        );
        assert_eq!(
            plan(&[".#web.sytem"], &c).unwrap_err().to_string(),
            "target `.#web.sytem`: node `web` has no profile named `sytem`; did you mean `system`?; profiles: app, home, system"
        );
        assert_eq!(
            plan(&[".#zzzzzz"], &c).unwrap_err().to_string(),
            "target `.#zzzzzz`: no node named `zzzzzz` in `.`; nodes: \"a.b\", db, web"
        );
    }

    #[test]
    fn unevaluated_selection_is_an_internal_error() {
        // Evaluation selected only web.system, but the target asks for all of web.
        let mut c = fleet();
        c.nodes.get_mut("web").unwrap().profiles.remove("app");
        let e = plan(&[".#web"], &c).unwrap_err();
        assert!(matches!(e, PlanError::NotEvaluated { .. }), "{e}");
        assert!(e.to_string().contains("deploy.nodes.web.profiles.app"));
        c.nodes.remove("db");
        assert!(matches!(plan(&["."], &c).unwrap_err(), PlanError::NotEvaluated { .. }));
    }

    #[test]
    fn settings_are_merged_with_overrides() {
        let c = fleet();
        let p = plan(&[".#db", ".#web.system"], &c).unwrap();
        let db = &p.deployments[0];
        assert_eq!(db.closure, "/nix/store/d-sys");
        assert_eq!(db.settings.ssh_user, "top");
        assert_eq!(db.settings.ssh_opts, vec!["-p", "2222"]);
        assert!(!db.settings.elevate);
        let web = &p.deployments[1];
        assert_eq!((web.settings.user.as_str(), web.settings.elevate), ("root", true));

        let o = Overrides {
            hostname: Some("10.1.1.1".into()),
            magic_rollback: Some(false),
            ..Default::default()
        };
        let ts = vec![(parse_target(".#db").unwrap(), &c)];
        let p = build_plan(&ts, &o, "me").unwrap();
        assert_eq!(p.deployments[0].settings.hostname, "10.1.1.1");
        assert!(!p.deployments[0].settings.magic_rollback);
    }

    #[test]
    fn toml_output() {
        let c = fleet();
        let p = plan(&[".#web.system", ".#\"a.b\""], &c).unwrap();
        let text = p.to_toml();
        let expected = r#"[web.system]
user = "root"
ssh_user = "top"
path = "/nix/store/w-sys"
hostname = "web.example"
ssh_opts = []
flake = "."
sudo = "sudo -u"
fast_connection = false
auto_rollback = true
magic_rollback = true
confirm_timeout = 30
activation_timeout = 240
temp_path = "/tmp"
remote_build = false
interactive_sudo = false

["a.b"."x.y"]
user = "top"
ssh_user = "top"
path = "/nix/store/ab"
hostname = "ab"
ssh_opts = []
flake = "."
fast_connection = false
auto_rollback = true
magic_rollback = true
confirm_timeout = 30
activation_timeout = 240
temp_path = "/tmp"
remote_build = false
interactive_sudo = false
"#;
        assert_eq!(text, expected);
        let parsed: toml::Table = text.parse().unwrap();
        assert_eq!(parsed["a.b"]["x.y"]["hostname"].as_str(), Some("ab"));
    }

    #[test]
    fn toml_stays_valid_with_colliding_names_and_odd_values() {
        let c = cfg(
            json!({ "nodes": { "db": { "hostname": "fe80::1%eth0", "sshOpts": ["-o", "A=\"b c\""],
            "profiles": { "system": { "path": "/nix/store/a", "profilePath": "/p" } } } } }),
        );
        let ts = vec![
            (parse_target("./one#db").unwrap(), &c),
            (parse_target("./two#db").unwrap(), &c),
        ];
        let text = build_plan(&ts, &Overrides::default(), "me").unwrap().to_toml();
        let parsed: toml::Table = text.parse().unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(
            parsed["./one"]["db"]["system"]["hostname"].as_str(),
            Some("fe80::1%eth0")
        );
        assert_eq!(parsed["./two"]["db"]["system"]["profile_path"].as_str(), Some("/p"));
        assert_eq!(
            parsed["./two"]["db"]["system"]["ssh_opts"][1].as_str(),
            Some("A=\"b c\"")
        );
    }

    #[test]
    fn json_output_is_camel_case() {
        let c = fleet();
        let p = plan(&[".#db"], &c).unwrap();
        let j = p.to_json();
        let d = &j["deployments"][0];
        assert_eq!(d["node"], "db");
        assert_eq!(d["closure"], "/nix/store/d-sys");
        assert_eq!(d["settings"]["sshUser"], "top");
        assert_eq!(d["settings"]["sshOpts"], json!(["-p", "2222"]));
        assert_eq!(d["settings"]["magicRollback"], true);
        assert_eq!(d["settings"]["confirmTimeout"], 30);
        assert_eq!(d["settings"]["profilePath"], json!(null));
        assert_eq!(d["settings"]["elevate"], false);
    }

    #[test]
    fn empty_flake_is_an_error_not_an_empty_plan() {
        let c = cfg(json!({ "nodes": {} }));
        let e = plan(&["."], &c).unwrap_err().to_string();
        assert_eq!(
            e,
            "nothing to deploy: `.` selects no node (deploy.nodes is empty); expected at least one node with a profile"
        );
    }

    fn warnings(p: &Plan) -> Vec<String> {
        p.warnings.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn ignored_keys_warn_and_strict_mode_refuses_them() {
        let raw = json!({ "owner": "ops", "nodes": { "web": { "hostname": "h", "magicRolback": false,
            "profiles": { "system": { "path": "/nix/store/s" } } } } });
        let c = cfg(raw.clone());
        let p = plan(&["."], &c).unwrap();
        let w = warnings(&p);
        assert!(
            w[0].starts_with("deploy.owner: unknown setting, ignored — valid settings here: sshUser,"),
            "{w:?}"
        );
        assert_eq!(
            w[1],
            "deploy.nodes.web.magicRolback: unknown setting, ignored — did you mean `magicRollback`?"
        );
        assert!(
            p.deployments[0].settings.magic_rollback,
            "the misspelt key has no effect"
        );
        let strict = Overrides {
            strict: Some(true),
            ..Default::default()
        };
        let t = [(parse_target(".").unwrap(), &c)];
        let e = build_plan(&t, &strict, "me").unwrap_err().to_string();
        assert!(
            e.contains(
                "deploy.nodes.web.magicRolback: unknown setting; did you mean `magicRollback`? (refused in strict mode"
            ),
            "{e}"
        );
        assert_eq!(e.lines().count(), 2, "{e}");
        // `strict = true` in the flake: refused while parsing, with the flake's other problems.
        let mut raw = raw;
        raw["strict"] = json!(true);
        let e = parse_raw_deploy(&raw, "").unwrap_err();
        assert_eq!(e.issues.len(), 2, "{e}");
    }

    #[test]
    fn profiles_order_naming_a_missing_profile_is_an_error_only_where_the_order_is_used() {
        let c = cfg(
            json!({ "nodes": { "web": { "hostname": "h", "profilesOrder": ["system", "nope"], "profiles": {
            "system": { "path": "/nix/store/s" }, "app": { "path": "/nix/store/a" } } } } }),
        );
        let e = plan(&[".#web"], &c).unwrap_err().to_string();
        assert_eq!(
            e,
            "deploy.nodes.web.profilesOrder[1]: no profile named `nope`; profiles: app, system"
        );
        assert!(plan(&["."], &c).is_err());
        // One profile targeted: deploy-rs does not read the order; rollout warns and deploys it.
        let p = plan(&[".#web.app"], &c).unwrap();
        assert_eq!(names(&p), vec!["web.app"]);
        assert_eq!(
            warnings(&p),
            vec!["deploy.nodes.web.profilesOrder[1]: no profile named `nope`; profiles: app, system; ignored, as only one profile is deployed"]
        );
    }

    #[test]
    fn a_node_without_profiles_deploys_nothing_and_the_others_deploy() {
        let c = cfg(json!({ "nodes": {
            "empty": { "hostname": "e", "profiles": {} },
            "web": { "hostname": "h", "profiles": { "system": { "path": "/nix/store/s" } } } } }));
        let p = plan(&["."], &c).unwrap();
        assert_eq!(names(&p), vec!["web.system"]);
        assert_eq!(
            warnings(&p),
            vec!["deploy.nodes.empty.profiles: the node has no profiles; nothing is deployed to it"]
        );
        let e = plan(&[".#empty"], &c).unwrap_err().to_string();
        assert_eq!(
            e,
            "nothing to deploy: `.#empty` selects no profile (its nodes have `profiles = { }`); expected at least one node with a profile"
        );
    }

    #[test]
    fn an_empty_hostname_is_accepted_only_with_hostname_on_the_command_line() {
        let c = cfg(
            json!({ "nodes": { "web": { "hostname": "", "profiles": { "system": { "path": "/nix/store/s" } } } } }),
        );
        let e = plan(&["."], &c).unwrap_err().to_string();
        assert!(e.starts_with("deploy.nodes.web.hostname: expected a host name"), "{e}");
        let o = Overrides {
            hostname: Some("10.0.0.7".into()),
            ..Default::default()
        };
        let p = build_plan(&[(parse_target(".").unwrap(), &c)], &o, "me").unwrap();
        assert_eq!(p.deployments[0].settings.hostname, "10.0.0.7");
    }
}
