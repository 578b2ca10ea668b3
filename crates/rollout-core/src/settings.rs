//! Settings merge: profile > node > top level, then command-line overrides, then defaults.
//!
//! Matches deploy-rs's precedence and `sshOpts` concatenation (profile, node, top), but every
//! command-line override takes effect, including `--sudo`, `--temp-path` and `--hostname`,
//! which deploy-rs parses and then ignores or applies only at use sites.

use serde::Serialize;

use crate::config::{GenericSettings, Issue, NodeConfig, ProfileConfig};
pub use crate::schema::Overrides;
use crate::schema::{self, DefaultValue, Parsed, Setting};
use crate::ssh::Endpoint;
use crate::target::quote_attr;
use crate::validate::{HostName, Invalid, UserName};

/// Fully merged settings for one (node, profile).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Resolved {
    pub hostname: String,
    pub ssh_user: String,
    /// User that owns the profile and runs activation.
    pub user: String,
    pub ssh_opts: Vec<String>,
    pub fast_connection: bool,
    pub auto_rollback: bool,
    pub magic_rollback: bool,
    pub confirm_timeout: u64,
    pub activation_timeout: u64,
    pub temp_path: String,
    pub remote_build: bool,
    pub interactive_sudo: bool,
    /// Privilege-escalation prefix, e.g. `sudo -u`; the command is `<sudo> <user> …`.
    pub sudo: String,
    /// Explicit profile location on the target; `None` lets the target compute it.
    pub profile_path: Option<String>,
    /// Whether activation must run through `sudo` (`user != ssh_user`).
    pub elevate: bool,
    /// The node's secrets (`keys`); the plan shows where they go, never their text.
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "crate::keys::redacted")]
    pub keys: Vec<schema::Object>,
    /// Checks that must pass before the profile is confirmed (`healthChecks`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub health_checks: Vec<schema::Object>,
}

impl Resolved {
    /// The escalation prefix as argv words (`["sudo", "-u", "root"]`), or empty when no
    /// escalation is needed. `sudo` is split shell-style so `doas -u` or `run0 --user` work.
    pub fn sudo_argv(&self) -> Vec<String> {
        if !self.elevate {
            return Vec::new();
        }
        let mut words =
            shlex::split(&self.sudo).unwrap_or_else(|| self.sudo.split_whitespace().map(str::to_string).collect());
        words.push(self.user.clone());
        words
    }
}

impl Resolved {
    /// How long the agent lets the activation run. As in deploy-rs, activationTimeout bounds the
    /// activation only while magic rollback waits for it (`magic`: on for this run, so not with
    /// `--boot` or `--dry-activate`); otherwise a long activation is not killed and rolled back
    /// after four minutes, only after a day, so that a hung one still ends.
    pub fn activation_bound(&self, magic: bool) -> u64 {
        if magic {
            self.activation_timeout
        } else {
            ACTIVATION_CAP
        }
    }
}

/// `--ssh-opts` could not be split into words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("invalid --ssh-opts `{0}`: unbalanced quotes or trailing backslash; expected shell-style words such as `-p 2222 -o \"ProxyJump=a b\"`")]
    SshOpts(String),
}

/// Splits `--ssh-opts` shell-style (deploy-rs split on single spaces, keeping quotes literally
/// and producing empty words: issue #130).
pub fn split_ssh_opts(s: &str) -> Result<Vec<String>, SettingsError> {
    shlex::split(s).ok_or_else(|| SettingsError::SshOpts(s.to_string()))
}

/// The user interactiveSudo elevates to when no `user` is set.
const ROOT: &str = "root";

/// The activation bound without magic rollback: the largest timeout validation allows (a day).
pub const ACTIVATION_CAP: u64 = crate::validate::MAX_TIMEOUT;

fn bool_default(key: &str) -> bool {
    matches!(schema::default_of(key), DefaultValue::Bool(true))
}

fn seconds_default(key: &str) -> u64 {
    match schema::default_of(key) {
        DefaultValue::Seconds(n) => n,
        _ => 0,
    }
}

fn str_default(key: &str) -> String {
    match schema::default_of(key) {
        DefaultValue::Str(s) => s.to_string(),
        _ => String::new(),
    }
}

/// Merges one profile's settings by the table's rules (command line, profile, node, top, then
/// the table's defaults); no validation: see [`resolve`]. `local_user` is the deployer's user
/// name, the last fallback for the SSH user.
pub fn merge(
    top: &GenericSettings,
    node: &NodeConfig,
    profile: &ProfileConfig,
    o: &Overrides,
    local_user: &str,
) -> Resolved {
    let e = GenericSettings::effective(o, &profile.settings, &node.settings, top);
    let ssh_user = e.ssh_user.unwrap_or_else(|| local_user.to_string());
    let interactive_sudo = e.interactive_sudo.unwrap_or(bool_default("interactiveSudo"));
    // deploy-rs errors when neither `user` nor `sshUser` is set; falling back to the SSH user
    // (including the local-user default) means "no escalation", which is what that case meant.
    // With interactiveSudo and no `user`, deploy-rs runs `sudo -S` without `-u`: root. rollout
    // does the same, and makes root the profile's owner too (deploy-rs kept the ssh user's
    // profile path, so a NixOS system profile ended up outside /nix/var/nix/profiles/system).
    let user = match e.user {
        Some(u) => u,
        None if interactive_sudo => ROOT.to_string(),
        None => ssh_user.clone(),
    };
    let magic_rollback = e.magic_rollback.unwrap_or(bool_default("magicRollback"));
    Resolved {
        elevate: user != ssh_user,
        hostname: o.hostname.clone().unwrap_or_else(|| node.hostname.clone()),
        ssh_opts: e.ssh_opts.unwrap_or_default(),
        fast_connection: e.fast_connection.unwrap_or(bool_default("fastConnection")),
        auto_rollback: e.auto_rollback.unwrap_or(bool_default("autoRollback")),
        magic_rollback,
        confirm_timeout: e.confirm_timeout.unwrap_or(seconds_default("confirmTimeout")),
        activation_timeout: e.activation_timeout.unwrap_or(seconds_default("activationTimeout")),
        temp_path: e.temp_path.unwrap_or_else(|| str_default("tempPath")),
        remote_build: e.remote_build.unwrap_or(bool_default("remoteBuild")),
        interactive_sudo,
        sudo: e.sudo.unwrap_or_else(|| str_default("sudo")),
        profile_path: o.profile_path.clone().or_else(|| profile.profile_path.clone()),
        health_checks: e.health_checks.unwrap_or_default(),
        keys: e.keys.unwrap_or_default(),
        ssh_user,
        user,
    }
}

/// The issue for a value that failed its row's check, at `at` (a flag or an attribute path).
fn issue(at: &str, index: Option<usize>, value: &str, e: &Invalid, merged: bool) -> Issue {
    let at = match index {
        Some(i) if merged => format!("{at} (merged word {})", i + 1),
        Some(i) if at.starts_with("--") => format!("{at} (word {})", i + 1),
        Some(i) => format!("{at}[{i}]"),
        None => at.to_string(),
    };
    e.at(&at, value)
}

/// Checks every command-line override with the rules flake values follow (the table's); each
/// issue names the flag.
pub fn validate_overrides(o: &Overrides) -> Vec<Issue> {
    let g = o.as_settings();
    let mut issues = Vec::new();
    let own = [("hostname", &o.hostname), ("profilePath", &o.profile_path)];
    for row in schema::all().filter(|r| r.flag.is_some()) {
        let value = match own.iter().find(|(k, _)| *k == row.key) {
            Some((_, v)) => (*v).clone().map(Parsed::Str),
            None => g.get(row.key),
        };
        if let Some(Err((i, w, e))) = value.map(|v| schema::check(&row.kind, &v)) {
            issues.push(issue(row.flag.unwrap_or(row.key), i, &w, &e, false));
        }
    }
    issues
}

/// Where a merged value came from, for messages: the flag, or the attribute path of the level
/// that set it.
struct Origin<'a> {
    node: &'a str,
    profile: &'a str,
}

impl Origin<'_> {
    fn of(&self, flag: Option<&str>, key: &str, set: [bool; 3]) -> String {
        let n = format!("deploy.nodes.{}", quote_attr(self.node));
        match (flag, set) {
            (Some(f), _) => f.to_string(),
            (None, [true, _, _]) => format!("{n}.profiles.{}.{key}", quote_attr(self.profile)),
            (None, [false, true, _]) => format!("{n}.{key}"),
            (None, [false, false, true]) => format!("deploy.{key}"),
            (None, _) => format!("{key} (the default, for node `{}`)", self.node),
        }
    }

    /// Where `row`'s merged value came from.
    fn row(&self, row: &Setting, o: &GenericSettings, levels: [&GenericSettings; 3]) -> String {
        let flag = o.get(row.key).and(row.flag);
        self.of(flag, row.key, levels.map(|l| l.get(row.key).is_some()))
    }
}

/// Merges one profile's settings ([`merge`]) and validates the result by the table's checks; the
/// [`Endpoint`] is built from the validated host and user and is the only way the deploy reaches
/// the host. Each issue names where the value came from: the flag, or the attribute path of the
/// level that set it.
pub fn resolve(
    top: &GenericSettings,
    node: &NodeConfig,
    profile: &ProfileConfig,
    o: &Overrides,
    local_user: &str,
    names: (&str, &str),
) -> Result<(Resolved, Endpoint), Vec<Issue>> {
    let r = merge(top, node, profile, o, local_user);
    let levels = [&profile.settings, &node.settings, top];
    let over = o.as_settings();
    let eff = GenericSettings::effective(o, levels[0], levels[1], levels[2]);
    let origin = Origin {
        node: names.0,
        profile: names.1,
    };
    let mut issues = Vec::new();
    for row in schema::GENERIC {
        if let Some(Err((i, w, e))) = eff.get(row.key).map(|v| schema::check(&row.kind, &v)) {
            let merged = over.get(row.key).is_none() && levels.iter().filter(|l| l.get(row.key).is_some()).count() > 1;
            issues.push(issue(&origin.row(row, &over, levels), i, &w, &e, merged));
        }
    }
    let ssh_user = UserName::parse(&r.ssh_user)
        .map_err(|e| issues.push(e.at(&origin.row(&schema::GENERIC[0], &over, levels), &r.ssh_user)))
        .ok();
    let host = HostName::parse(&r.hostname)
        .map_err(|e| {
            let at = origin.of(
                o.hostname.as_ref().map(|_| "--hostname"),
                "hostname",
                [false, true, false],
            );
            issues.push(e.at(&at, &r.hostname));
        })
        .ok();
    if let (Some(pp), Some(row)) = (&r.profile_path, schema::find("profilePath")) {
        if let Err((_, w, e)) = schema::check(&row.kind, &Parsed::Str(pp.clone())) {
            let at = origin.of(o.profile_path.as_ref().and(row.flag), row.key, [true, false, false]);
            issues.push(e.at(&at, &w));
        }
    }
    let mut shown = std::collections::HashSet::new();
    issues.retain(|i| shown.insert(i.to_string()));
    match (ssh_user, host) {
        (Some(user), Some(host)) if issues.is_empty() => {
            let opts = r.ssh_opts.clone();
            Ok((r, Endpoint { user, host, opts }))
        }
        _ => Err(issues),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn node(settings: GenericSettings) -> NodeConfig {
        NodeConfig {
            settings,
            hostname: "node-host".into(),
            profiles: BTreeMap::new(),
            profiles_order: vec![],
            tags: vec![],
        }
    }

    fn profile(settings: GenericSettings) -> ProfileConfig {
        ProfileConfig {
            settings,
            path: "/nix/store/x".into(),
            profile_path: None,
        }
    }

    fn run(t: GenericSettings, n: GenericSettings, p: GenericSettings, o: &Overrides) -> Resolved {
        resolve(&t, &node(n), &profile(p), o, "me", ("n", "p")).unwrap().0
    }

    fn none() -> GenericSettings {
        GenericSettings::default()
    }

    #[test]
    fn defaults() {
        let r = run(none(), none(), none(), &Overrides::default());
        assert_eq!(
            r,
            Resolved {
                hostname: "node-host".into(),
                ssh_user: "me".into(),
                user: "me".into(),
                ssh_opts: vec![],
                fast_connection: false,
                auto_rollback: true,
                magic_rollback: true,
                confirm_timeout: 30,
                activation_timeout: 240,
                temp_path: "/tmp".into(),
                remote_build: false,
                interactive_sudo: false,
                sudo: "sudo -u".into(),
                profile_path: None,
                elevate: false,
                health_checks: vec![],
                keys: vec![],
            }
        );
        assert!(r.sudo_argv().is_empty());
    }

    /// For one field: set it at chosen levels, check the winner. `set(level_value)` builds
    /// settings with only that field set.
    fn precedence<T: Clone + PartialEq + std::fmt::Debug>(
        set: impl Fn(T) -> GenericSettings,
        over: impl Fn(T) -> Overrides,
        get: impl Fn(&Resolved) -> T,
        [vt, vn, vp, vo]: [T; 4],
    ) {
        let o0 = Overrides::default();
        // top only
        assert_eq!(get(&run(set(vt.clone()), none(), none(), &o0)), vt);
        // node beats top
        assert_eq!(get(&run(set(vt.clone()), set(vn.clone()), none(), &o0)), vn);
        // node alone
        assert_eq!(get(&run(none(), set(vn.clone()), none(), &o0)), vn);
        // profile beats node and top
        assert_eq!(get(&run(set(vt.clone()), set(vn.clone()), set(vp.clone()), &o0)), vp);
        assert_eq!(get(&run(set(vt.clone()), none(), set(vp.clone()), &o0)), vp);
        // command line beats everything
        assert_eq!(
            get(&run(
                set(vt.clone()),
                set(vn.clone()),
                set(vp.clone()),
                &over(vo.clone())
            )),
            vo
        );
        assert_eq!(get(&run(none(), none(), none(), &over(vo.clone()))), vo);
    }

    #[test]
    fn precedence_ssh_user() {
        precedence(
            |v| GenericSettings {
                ssh_user: Some(v),
                ..none()
            },
            |v| Overrides {
                ssh_user: Some(v),
                ..Default::default()
            },
            |r| r.ssh_user.clone(),
            ["t".to_string(), "n".into(), "p".into(), "o".into()],
        );
    }

    #[test]
    fn precedence_user() {
        precedence(
            |v| GenericSettings {
                user: Some(v),
                ..none()
            },
            |v| Overrides {
                profile_user: Some(v),
                ..Default::default()
            },
            |r| r.user.clone(),
            ["t".to_string(), "n".into(), "p".into(), "o".into()],
        );
    }

    #[test]
    fn precedence_bools() {
        type Field = (
            fn(&mut GenericSettings) -> &mut Option<bool>,
            fn(&mut Overrides) -> &mut Option<bool>,
            fn(&Resolved) -> bool,
        );
        let fields: Vec<Field> = vec![
            (
                |g| &mut g.fast_connection,
                |o| &mut o.fast_connection,
                |r| r.fast_connection,
            ),
            (|g| &mut g.auto_rollback, |o| &mut o.auto_rollback, |r| r.auto_rollback),
            (
                |g| &mut g.magic_rollback,
                |o| &mut o.magic_rollback,
                |r| r.magic_rollback,
            ),
            (|g| &mut g.remote_build, |o| &mut o.remote_build, |r| r.remote_build),
            (
                |g| &mut g.interactive_sudo,
                |o| &mut o.interactive_sudo,
                |r| r.interactive_sudo,
            ),
        ];
        for (gf, of, rf) in fields {
            let set = |v: bool| {
                let mut g = none();
                *gf(&mut g) = Some(v);
                g
            };
            let over = |v: bool| {
                let mut o = Overrides::default();
                *of(&mut o) = Some(v);
                o
            };
            precedence(set, over, rf, [true, false, true, false]);
            precedence(set, over, rf, [false, true, false, true]);
            // An explicit `false` override beats a `true` everywhere (and vice versa).
            assert!(!rf(&run(set(true), set(true), set(true), &over(false))));
            assert!(rf(&run(set(false), set(false), set(false), &over(true))));
        }
    }

    #[test]
    fn precedence_timeouts() {
        precedence(
            |v| GenericSettings {
                confirm_timeout: Some(v),
                ..none()
            },
            |v| Overrides {
                confirm_timeout: Some(v),
                ..Default::default()
            },
            |r| r.confirm_timeout,
            [1, 2, 3, 4],
        );
        precedence(
            |v| GenericSettings {
                activation_timeout: Some(v),
                ..none()
            },
            |v| Overrides {
                activation_timeout: Some(v),
                ..Default::default()
            },
            |r| r.activation_timeout,
            [1, 2, 3, 4],
        );
        // Zero is a value, not "unset", and out of range: refused, naming where it was set.
        let p = GenericSettings {
            confirm_timeout: Some(0),
            ..none()
        };
        let e = resolve(
            &none(),
            &node(none()),
            &profile(p),
            &Overrides::default(),
            "me",
            ("n", "p"),
        )
        .unwrap_err();
        assert_eq!(
            e[0].to_string(),
            "deploy.nodes.n.profiles.p.confirmTimeout: expected a number of seconds from 1 to 86400 (one day), \
             found `0`, which is out of range"
        );
    }

    #[test]
    fn precedence_temp_path_and_sudo() {
        precedence(
            |v| GenericSettings {
                temp_path: Some(v),
                ..none()
            },
            |v| Overrides {
                temp_path: Some(v),
                ..Default::default()
            },
            |r| r.temp_path.clone(),
            ["/t".to_string(), "/n".into(), "/p".into(), "/o".into()],
        );
        precedence(
            |v| GenericSettings {
                sudo: Some(v),
                ..none()
            },
            |v| Overrides {
                sudo: Some(v),
                ..Default::default()
            },
            |r| r.sudo.clone(),
            [
                "doas -u".to_string(),
                "run0 --user".into(),
                "sudo -n -u".into(),
                "sudo -u".into(),
            ],
        );
    }

    #[test]
    fn ssh_opts_concatenate_profile_node_top() {
        let s = |v: &[&str]| GenericSettings {
            ssh_opts: Some(v.iter().map(|x| x.to_string()).collect()),
            ..none()
        };
        let r = run(
            s(&["-o", "TopOpt=1"]),
            s(&["-p", "2222"]),
            s(&["-o", "ProfOpt=1"]),
            &Overrides::default(),
        );
        assert_eq!(r.ssh_opts, vec!["-o", "ProfOpt=1", "-p", "2222", "-o", "TopOpt=1"]);
        let r = run(s(&["-t"]), none(), s(&["-p"]), &Overrides::default());
        assert_eq!(r.ssh_opts, vec!["-p", "-t"]);
        // The command line replaces the whole list, even with an empty one.
        let o = Overrides {
            ssh_opts: Some(vec!["-v".into()]),
            ..Default::default()
        };
        assert_eq!(run(s(&["-t"]), s(&["-n"]), s(&["-p"]), &o).ssh_opts, vec!["-v"]);
        let o = Overrides {
            ssh_opts: Some(vec![]),
            ..Default::default()
        };
        assert!(run(s(&["-t"]), s(&["-n"]), s(&["-p"]), &o).ssh_opts.is_empty());
    }

    #[test]
    fn hostname_and_profile_path() {
        let o = Overrides::default();
        let r = resolve(&none(), &node(none()), &profile(none()), &o, "me", ("n", "p"))
            .unwrap()
            .0;
        assert_eq!(r.hostname, "node-host");
        assert_eq!(r.profile_path, None);
        let mut p = profile(none());
        p.profile_path = Some("/nix/var/nix/profiles/x".into());
        assert_eq!(
            resolve(&none(), &node(none()), &p, &o, "me", ("n", "p"))
                .unwrap()
                .0
                .profile_path
                .as_deref(),
            Some("/nix/var/nix/profiles/x")
        );
        let o = Overrides {
            hostname: Some("10.0.0.1".into()),
            profile_path: Some("/o".into()),
            ..Default::default()
        };
        let r = resolve(&none(), &node(none()), &p, &o, "me", ("n", "p")).unwrap().0;
        assert_eq!(r.hostname, "10.0.0.1");
        assert_eq!(r.profile_path.as_deref(), Some("/o"));
    }

    #[test]
    fn user_falls_back_to_ssh_user_and_elevation() {
        let o = Overrides::default();
        let r = run(
            GenericSettings {
                ssh_user: Some("deploy".into()),
                ..none()
            },
            none(),
            none(),
            &o,
        );
        assert_eq!(
            (r.ssh_user.as_str(), r.user.as_str(), r.elevate),
            ("deploy", "deploy", false)
        );
        let r = run(
            GenericSettings {
                ssh_user: Some("deploy".into()),
                ..none()
            },
            GenericSettings {
                user: Some("root".into()),
                ..none()
            },
            none(),
            &o,
        );
        assert_eq!(
            (r.ssh_user.as_str(), r.user.as_str(), r.elevate),
            ("deploy", "root", true)
        );
        assert_eq!(r.sudo_argv(), vec!["sudo", "-u", "root"]);
        // user == ssh_user explicitly: no escalation.
        let r = run(
            GenericSettings {
                ssh_user: Some("root".into()),
                user: Some("root".into()),
                ..none()
            },
            none(),
            none(),
            &o,
        );
        assert!(!r.elevate);
        // --ssh-user changes the user fallback too.
        let o = Overrides {
            ssh_user: Some("admin".into()),
            ..Default::default()
        };
        let r = run(
            GenericSettings {
                ssh_user: Some("deploy".into()),
                ..none()
            },
            none(),
            none(),
            &o,
        );
        assert_eq!(
            (r.ssh_user.as_str(), r.user.as_str(), r.elevate),
            ("admin", "admin", false)
        );
        // Local user default with an explicit profile user.
        let r = run(
            none(),
            none(),
            GenericSettings {
                user: Some("root".into()),
                ..none()
            },
            &Overrides::default(),
        );
        assert_eq!((r.ssh_user.as_str(), r.user.as_str(), r.elevate), ("me", "root", true));
        let o = Overrides {
            sudo: Some("doas -u".into()),
            ..Default::default()
        };
        let r = run(
            none(),
            none(),
            GenericSettings {
                user: Some("root".into()),
                ..none()
            },
            &o,
        );
        assert_eq!(r.sudo_argv(), vec!["doas", "-u", "root"]);
    }

    #[test]
    fn ssh_opts_split_shell_style() {
        assert_eq!(
            split_ssh_opts(r#" -p  22 -o "ProxyCommand=a b" "#).unwrap(),
            vec!["-p", "22", "-o", "ProxyCommand=a b"]
        );
        assert_eq!(split_ssh_opts("").unwrap(), Vec::<String>::new());
        assert_eq!(split_ssh_opts("-o 'A=b c'").unwrap(), vec!["-o", "A=b c"]);
        let e = split_ssh_opts("-o \"unterminated").unwrap_err().to_string();
        assert!(e.contains("--ssh-opts") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn interactive_sudo_without_a_user_elevates_to_root_as_deploy_rs_does() {
        let su = GenericSettings {
            ssh_user: Some("deploy".into()),
            interactive_sudo: Some(true),
            ..none()
        };
        let r = run(su.clone(), none(), none(), &Overrides::default());
        assert_eq!((r.user.as_str(), r.elevate), ("root", true));
        assert_eq!(r.sudo_argv(), vec!["sudo", "-u", "root"]);
        // An explicit user wins, also one equal to the ssh user (no elevation then).
        let u = |v: &str| GenericSettings {
            user: Some(v.into()),
            ..none()
        };
        let r = run(su.clone(), u("deploy"), none(), &Overrides::default());
        assert_eq!((r.user.as_str(), r.elevate), ("deploy", false));
        let r = run(su.clone(), none(), u("hello"), &Overrides::default());
        assert_eq!((r.user.as_str(), r.elevate), ("hello", true));
        // Logged in as root already: nothing to elevate.
        let root = GenericSettings {
            ssh_user: Some("root".into()),
            ..su
        };
        assert!(!run(root, none(), none(), &Overrides::default()).elevate);
    }

    #[test]
    fn activation_timeout_bounds_the_activation_only_with_magic_rollback() {
        let set = GenericSettings {
            activation_timeout: Some(60),
            ..none()
        };
        let r = run(set, none(), none(), &Overrides::default());
        assert_eq!((r.activation_timeout, r.activation_bound(true)), (60, 60));
        assert_eq!(r.activation_bound(false), ACTIVATION_CAP);
        assert_eq!(ACTIVATION_CAP, 86_400);
    }
}
