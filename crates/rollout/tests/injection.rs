//! Injection suite on a real test fleet: hostile values in every name field and every override
//! (host, ssh user, profile user, node and profile names, paths, ssh options, `-k` names) are
//! refused before anything is built, copied or contacted, with rollout's own first line naming the
//! field; or, where a value is odd but legitimate, it is used literally. After every run: the
//! marker file the payload would create exists on no host and not locally, sshd saw no login on
//! any host, and the healthy second node of the flake was not touched either.

mod common;

use common::*;
use rollout_lab::profiles::FlakeBuilder;
use serde_json::{json, Value};
use std::path::Path;

/// Where a hostile value goes.
enum At {
    /// `hostname` of the node.
    Hostname,
    /// A setting of the node (`sshUser`, `sshOpts`, …).
    Node(&'static str),
    /// A setting of the profile (`user`, `profilePath`, …).
    Profile(&'static str),
    /// The node's name (attribute under `deploy.nodes`).
    NodeName,
    /// The profile's name.
    ProfileName,
    /// Only in flags (the value is spliced into `args` where `PWN` appears).
    Flag,
}

struct Case {
    at: At,
    value: Value,
    /// Extra flags; `VALUE` is replaced by the hostile value (a string), `SSHCFG` by the fleet's
    /// ssh_config path, `RESULT` by a result directory.
    args: &'static [&'static str],
    /// What the first stderr line must contain besides `expected`: the field or flag.
    field: &'static str,
}

fn case(at: At, value: &str, args: &'static [&'static str], field: &'static str) -> Case {
    Case {
        at,
        value: json!(value),
        args,
        field,
    }
}

/// One fleet for many cases: host1 is the hostile node's machine, host2 the healthy node's.
struct Lab {
    env: Env,
    marker: String,
    payload: String,
    result: tempfile::TempDir,
}

impl Lab {
    fn new() -> Lab {
        let env = Env::new(2);
        let marker = format!("/tmp/pwned-{}", salt());
        Lab {
            payload: format!("touch {marker}"),
            marker,
            env,
            result: tempfile::tempdir().unwrap(),
        }
    }

    fn subst(&self, s: &str) -> String {
        s.replace("PAYLOAD", &self.payload)
            .replace("MARKER", &self.marker)
            .replace("SSHCFG", &self.env.fleet.ssh_config().display().to_string())
            .replace("RESULT", &self.result.path().display().to_string())
    }

    /// A fresh flake: a healthy node `good` on host2 and the hostile one (`bad` on host1 unless
    /// the name itself is the hostile value).
    fn flake(&mut self, c: &Case) {
        let mut f = FlakeBuilder::new(self.env.flake_dir());
        f.top_setting("sshUser", json!("deploy"));
        f.top_setting(
            "sshOpts",
            json!(["-F", self.env.fleet.ssh_config().display().to_string()]),
        );
        f.node("good", "host2")
            .profile("system", marker("good").setting("user", json!("root")));
        let value = match &c.value {
            Value::String(s) => json!(self.subst(s)),
            Value::Array(items) => Value::Array(items.iter().map(|i| json!(self.subst(i.as_str().unwrap()))).collect()),
            other => other.clone(),
        };
        let text = value.as_str().map(str::to_string).unwrap_or_default();
        let node_name = if matches!(c.at, At::NodeName) {
            text.clone()
        } else {
            "bad".into()
        };
        let profile_name = if matches!(c.at, At::ProfileName) {
            text.clone()
        } else {
            "system".into()
        };
        let hostname = if matches!(c.at, At::Hostname) {
            text.clone()
        } else {
            "host1".into()
        };
        let mut profile = marker("bad").setting("user", json!("root"));
        if let At::Profile(key) = c.at {
            profile = profile.setting(key, value.clone());
        }
        let node = f.node(&node_name, &hostname);
        if let At::Node(key) = c.at {
            node.setting(key, value.clone());
        }
        node.profile(&profile_name, profile);
        self.env.flake = f;
    }

    /// Runs every case against the whole flake and checks that each was refused up front.
    fn refuse_all(&mut self, cases: &[Case]) -> usize {
        let mut failures = Vec::new();
        for c in cases {
            self.flake(c);
            let value = c.value.as_str().map(|s| self.subst(s)).unwrap_or_default();
            let args: Vec<String> = c.args.iter().map(|a| self.subst(a).replace("VALUE", &value)).collect();
            let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let auths = self.env.fleet.total_auth_count();
            let out = self.env.rollout("", &arg_refs);
            let err = stderr(&out);
            // The error's first line: after the progress lines of the evaluation that ran first.
            let first = err.lines().find(|l| !l.starts_with("rollout: evaluate")).unwrap_or("");
            let mut why = Vec::new();
            if out.status.code() != Some(1) {
                why.push(format!("exit {:?}, expected 1", out.status.code()));
            }
            if !(first.starts_with("rollout: error: ") && first.contains(c.field) && first.contains("expected")) {
                why.push(format!("first line does not name `{}` and what is expected", c.field));
            }
            if self.env.fleet.total_auth_count() != auths {
                why.push("a host was logged into".into());
            }
            for host in ["host1", "host2"] {
                if self.env.exists(host, &self.marker) {
                    why.push(format!("{} exists on {host}", self.marker));
                }
            }
            if Path::new(&self.marker).exists() {
                why.push(format!("{} exists locally", self.marker));
            }
            if !self.env.target_of("host2", SYSTEM).is_empty() {
                why.push("the healthy node was deployed".into());
            }
            if !why.is_empty() {
                failures.push(format!("value {:?} args {args:?}: {}\n{err}", c.value, why.join("; ")));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} cases failed:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
        cases.len()
    }
}

const EXPLOIT: &str = "host1?remote-program=touch%20MARKER%3Bnix-store";
const USER_EXPLOIT: &str = "deploy?remote-program=touch%20MARKER%3Bnix-store";

#[test]
fn hostile_host_names_from_the_flake_and_from_hostname_never_reach_ssh_or_nix() {
    let mut lab = Lab::new();
    let h = "deploy.nodes.bad.hostname";
    let cases = vec![
        case(At::Hostname, EXPLOIT, &[], h),
        case(At::Hostname, "host1?remote-store=MARKER", &[], h),
        case(At::Hostname, "host1%3Fremote-program=touch", &[], h),
        case(At::Hostname, "host1#x", &[], h),
        case(At::Hostname, "deploy@host1", &[], h),
        case(At::Hostname, "host1/../x", &[], h),
        case(At::Hostname, "-oProxyCommand=touch${IFS}MARKER", &[], h),
        case(At::Hostname, "host1 -oProxyCommand=PAYLOAD", &[], h),
        case(At::Hostname, "host1;PAYLOAD", &[], h),
        case(At::Hostname, "$(PAYLOAD)", &[], h),
        case(At::Hostname, "`PAYLOAD`", &[], h),
        case(At::Hostname, "host1\nPAYLOAD", &[], h),
        case(At::Hostname, "[::1]?remote-program=x", &[], h),
        case(At::Flag, "", &["--hostname", EXPLOIT], "--hostname"),
        case(
            At::Flag,
            "",
            &["--hostname=-oProxyCommand=touch${IFS}MARKER"],
            "--hostname",
        ),
        case(
            At::Flag,
            "",
            &["--hostname", "host1 -oProxyCommand=PAYLOAD"],
            "--hostname",
        ),
        case(At::Flag, "", &["--hostname", "root@host1"], "--hostname"),
    ];
    let n = lab.refuse_all(&cases);
    assert_eq!(n, 17);
}

#[test]
fn hostile_user_names_and_ssh_options_are_refused_naming_the_field() {
    let mut lab = Lab::new();
    let su = "deploy.nodes.bad.sshUser";
    let u = "deploy.nodes.bad.profiles.system.user";
    let so = "deploy.nodes.bad.sshOpts";
    let mut cases = vec![
        case(At::Node("sshUser"), USER_EXPLOIT, &[], su),
        case(At::Node("sshUser"), "deploy;PAYLOAD", &[], su),
        case(At::Node("sshUser"), "$(PAYLOAD)", &[], su),
        case(At::Node("sshUser"), "-oProxyCommand=PAYLOAD", &[], su),
        case(At::Node("sshUser"), "root@host1", &[], su),
        case(At::Node("sshUser"), "de'ploy", &[], su),
        case(At::Profile("user"), "root;PAYLOAD", &[], u),
        case(At::Profile("user"), "$(PAYLOAD)", &[], u),
        case(At::Profile("user"), "-x", &[], u),
        case(At::Profile("user"), "root\nPAYLOAD", &[], u),
        case(
            At::Flag,
            "",
            &["--ssh-user", USER_EXPLOIT, "--ssh-opts", "-F SSHCFG -l deploy"],
            "--ssh-user",
        ),
        case(At::Flag, "", &["--ssh-user", "$(PAYLOAD)"], "--ssh-user"),
        case(At::Flag, "", &["--profile-user", "root;PAYLOAD"], "--profile-user"),
        case(At::Flag, "", &["--profile-user", "`PAYLOAD`"], "--profile-user"),
        case(At::Flag, "", &["--ssh-opts", "host2 PAYLOAD"], "--ssh-opts"),
        case(At::Flag, "", &["--ssh-opts", "-F SSHCFG -O exit"], "--ssh-opts"),
        case(
            At::Flag,
            "",
            &["--ssh-opts", "-F SSHCFG -l x?remote-program=touch%20MARKER"],
            "--ssh-opts",
        ),
        case(At::Flag, "", &["--ssh-opts", "-F SSHCFG -G"], "--ssh-opts"),
    ];
    // sshUser with `?…` and `-l` in sshOpts: the exploit's second form.
    cases.push(Case {
        at: At::Node("sshOpts"),
        value: json!(["-l", "deploy?remote-program=touch%20MARKER%3Bnix-store"]),
        args: &[],
        field: so,
    });
    for opts in [
        json!(["host2", "PAYLOAD"]),
        json!(["-O", "exit"]),
        json!(["-N"]),
        json!(["-p"]),
    ] {
        cases.push(Case {
            at: At::Node("sshOpts"),
            value: opts,
            args: &[],
            field: so,
        });
    }
    let n = lab.refuse_all(&cases);
    assert_eq!(n, 23);
}

#[test]
fn hostile_node_profile_names_and_paths_are_refused_and_gc_roots_stay_inside_the_result_path() {
    let mut lab = Lab::new();
    let pp = "deploy.nodes.bad.profiles.system.profilePath";
    let tp = "deploy.nodes.bad.tempPath";
    let cases = vec![
        case(
            At::NodeName,
            "../../../../tmp/pwned-x",
            &["-k", "--result-path", "RESULT"],
            "node name",
        ),
        case(
            At::NodeName,
            "/tmp/pwned-x",
            &["-k", "--result-path", "RESULT"],
            "node name",
        ),
        case(At::NodeName, "a$(PAYLOAD)", &[], "node name"),
        case(At::NodeName, "a`PAYLOAD`", &[], "node name"),
        case(At::NodeName, "x\"y${builtins.throw \"x\"}", &[], "node name"),
        case(At::NodeName, "..", &["-k", "--result-path", "RESULT"], "node name"),
        case(At::NodeName, "a\nb", &[], "node name"),
        case(
            At::ProfileName,
            "../../pwned-x",
            &["-k", "--result-path", "RESULT"],
            "profile name",
        ),
        case(At::ProfileName, "p$(PAYLOAD)", &[], "profile name"),
        case(At::ProfileName, ".", &["-k", "--result-path", "RESULT"], "profile name"),
        case(At::ProfileName, "p\\q", &[], "profile name"),
        case(At::Profile("profilePath"), "../../tmp/pwned-x", &[], pp),
        case(
            At::Profile("profilePath"),
            "/nix/var/nix/profiles/../../../tmp/pwned-x",
            &[],
            pp,
        ),
        case(At::Profile("profilePath"), "/tmp/x\nPAYLOAD", &[], pp),
        case(At::Node("tempPath"), "tmp/pwned", &[], tp),
        case(At::Node("tempPath"), "/tmp/../tmp/pwned", &[], tp),
        case(At::Flag, "", &["--temp-path", "/tmp/../pwned"], "--temp-path"),
        case(At::Flag, "", &["--temp-path", "rel/dir"], "--temp-path"),
        case(At::Flag, "", &["--profile-path", "../x"], "--profile-path"),
        case(
            At::Flag,
            "",
            &["--profile-path", "/nix/var/nix/profiles/a/../../b"],
            "--profile-path",
        ),
        case(
            At::Flag,
            "",
            &["-k", "--result-path", "RESULT/x\nPAYLOAD"],
            "--result-path",
        ),
    ];
    let n = lab.refuse_all(&cases);
    assert_eq!(n, 21);
    // Nothing was written outside the result path, nor inside it.
    assert!(!Path::new("/tmp/pwned-x").exists());
    assert_eq!(std::fs::read_dir(lab.result.path()).unwrap().count(), 0);
}

#[test]
fn odd_but_valid_names_and_paths_are_used_literally() {
    let mut env = Env::new(1);
    let node = "n.o@d:e=1,x~'y";
    let profile = "p.r+o";
    env.flake
        .node(node, "host1")
        .setting("tempPath", json!("/tmp/rollout state"));
    env.flake.node(node, "host1").profile(
        profile,
        marker("odd")
            .setting("user", json!("root"))
            .setting("profilePath", json!("/nix/var/nix/profiles/odd name")),
    );
    let result = tempfile::tempdir().unwrap();
    let r = result.path().display().to_string();
    let out = env.rollout("", &["-k", "--result-path", &r, "--confirm-timeout", "10"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let built = env.build(node, profile);
    assert_eq!(env.target_of("host1", "/nix/var/nix/profiles/odd name"), built);
    // The GC root is exactly RESULT/NODE/PROFILE.
    let root = result.path().join(node).join(profile);
    assert_eq!(std::fs::read_link(&root).unwrap().display().to_string(), built);
    // Activated once, for exactly that profile path; the state went to the tempPath with a space.
    let log = env
        .fleet
        .exec_ok("host1", &["cat", "/tmp/rollout-markers/odd.log"])
        .unwrap();
    assert_eq!(log.lines().count(), 1, "{log}");
    assert!(
        log.starts_with("profile=/nix/var/nix/profiles/odd name user=root "),
        "{log}"
    );
    assert!(env.exists("host1", "/tmp/rollout state"));
}
