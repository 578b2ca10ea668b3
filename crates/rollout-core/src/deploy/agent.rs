//! The deployer's side of the agent protocol (docs/agent-protocol.md): where the agent comes
//! from, the argv of each agent command, and the `ROLLOUT-STATUS` lines it answers with.

use crate::exec::{ExecError, Runner};
use crate::nix;
use crate::plan::Deployment;
use crate::ssh::Elevation;
use std::path::{Path, PathBuf};

use rollout_protocol::command::{self as proto, Command, ProfileSpec};
pub use rollout_protocol::status::STATUS_PREFIX;

/// What the deployer reads from a `ROLLOUT-STATUS` line (parsed by the protocol crate's one parser).
#[derive(Debug, Clone, PartialEq)]
pub struct AgentStatus {
    pub id: String,
    pub state: String,
    pub profile_path: Option<String>,
    pub closure: Option<String>,
    pub previous_generation: Option<u64>,
    pub new_generation: Option<u64>,
    pub message: Option<String>,
}

impl AgentStatus {
    pub fn parse_line(line: &str) -> Option<AgentStatus> {
        let s = rollout_protocol::status::Status::parse_line(line)?;
        Some(AgentStatus {
            id: s.id,
            state: s.state.as_str().to_string(),
            profile_path: s.profile_path.map(|p| p.display().to_string()),
            closure: s.closure.map(|p| p.display().to_string()),
            previous_generation: s.previous_generation,
            new_generation: s.new_generation,
            message: Some(s.message).filter(|m| !m.is_empty()),
        })
    }
}

/// A fresh deploy id (the protocol crate's one generator): unique per deploy and profile, so no
/// earlier deploy's leftovers can confirm this one.
pub fn new_id() -> String {
    rollout_protocol::id::new_deploy_id()
}

/// How the target names the profile: an explicit path, or user + name resolved on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileRef {
    Path(String),
    Named { user: String, name: String },
}

impl ProfileRef {
    pub fn spec(&self) -> ProfileSpec {
        match self {
            ProfileRef::Path(p) => ProfileSpec::Path(p.into()),
            ProfileRef::Named { user, name } => ProfileSpec::User {
                user: user.clone(),
                name: name.clone(),
            },
        }
    }
}

pub use rollout_protocol::command::ActivateArgs;

pub fn activate_args(a: &ActivateArgs) -> Vec<String> {
    Command::Activate(a.clone()).to_args()
}

/// `confirm`, `extend`, `abort` and `status` all name deploys by id under one temp path; `wait`
/// (confirm, abort) defaults to the agent's own default when `None`.
pub fn ids_args(cmd: &str, temp_path: &str, ids: &[String], wait: Option<u64>) -> Vec<String> {
    let (ids, temp_path) = (ids.to_vec(), PathBuf::from(temp_path));
    let c = match cmd {
        "confirm" => Command::Confirm {
            ids,
            temp_path,
            wait: wait.unwrap_or(proto::DEFAULT_CONFIRM_WAIT),
        },
        "abort" => Command::Abort {
            ids,
            temp_path,
            wait: wait.unwrap_or(proto::DEFAULT_ABORT_WAIT),
        },
        "extend" => Command::Extend { ids, temp_path },
        "status" => Command::Status {
            id: ids.into_iter().next().unwrap_or_default(),
            temp_path,
        },
        other => unreachable!("not an agent command naming deploys: {other}"),
    };
    c.to_args()
}

/// `query`: what the profile holds (generations, deploy records, deploys under way).
pub fn query_args(profile: &ProfileRef, temp_path: &str) -> Vec<String> {
    Command::Query {
        profile: profile.spec(),
        temp_path: temp_path.into(),
    }
    .to_args()
}

/// How the target names a deployment's profile.
pub fn profile_ref(d: &Deployment) -> ProfileRef {
    match &d.settings.profile_path {
        Some(p) => ProfileRef::Path(p.clone()),
        None => ProfileRef::Named {
            user: d.settings.user.clone(),
            name: d.profile.clone(),
        },
    }
}

/// How to become a deployment's profile user on the target (`None`: the ssh user is it).
pub fn elevation_of(d: &Deployment) -> Result<Option<Elevation>, String> {
    if !d.settings.elevate {
        return Ok(None);
    }
    Elevation::from_setting(&d.settings.sudo, &d.settings.user, d.settings.interactive_sudo)
        .map(Some)
        .map_err(|e| format!("node `{}`, profile `{}`: {e}", d.node, d.profile))
}

/// `closure` guards against generation numbers that Nix reused since (see the protocol doc).
pub fn revoke_args(
    profile: &ProfileRef,
    closure: &str,
    temp_path: &str,
    generation: u64,
    previous: Option<u64>,
) -> Vec<String> {
    Command::Revoke(proto::RevokeArgs {
        profile: profile.spec(),
        closure: closure.into(),
        generation,
        previous,
        temp_path: temp_path.into(),
        activation_timeout: proto::DEFAULT_ACTIVATION_TIMEOUT,
        debug: false,
    })
    .to_args()
}

#[derive(Debug, thiserror::Error)]
pub enum AgentSourceError {
    #[error("agent `{0}` is not a store path containing bin/rollout-agent (expected /nix/store/…-rollout-agent…)")]
    NotAPackage(String),
    #[error("cannot find the rollout-agent binary next to {0}; build it (cargo build -p rollout-agent) or pass --agent /nix/store/…")]
    Missing(String),
    #[error("cannot stage the agent for `nix-store --add`: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Exec(#[from] ExecError),
}

/// The store path (a directory with `bin/rollout-agent`) that is copied to every target.
///
/// Order: an explicit `--agent`/`ROLLOUT_AGENT`; the package this binary was installed from when
/// it lives in the Nix store (the flake's package ships both binaries); otherwise the agent built
/// next to this binary, added to the local store (content-addressed, so repeated runs reuse it).
pub fn resolve_agent(runner: &Runner, explicit: Option<&str>) -> Result<String, AgentSourceError> {
    if let Some(p) = explicit {
        if p.starts_with("/nix/store/") && Path::new(p).join("bin/rollout-agent").exists() {
            return Ok(p.trim_end_matches('/').to_string());
        }
        if Path::new(p).is_file() {
            return add_binary(runner, Path::new(p));
        }
        return Err(AgentSourceError::NotAPackage(p.to_string()));
    }
    let exe = std::env::current_exe()?;
    let exe = exe.canonicalize().unwrap_or(exe);
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if exe.starts_with("/nix/store") {
        if let Some(pkg) = dir.parent() {
            if pkg.join("bin/rollout-agent").exists() {
                let s = pkg.display().to_string();
                return Ok(s);
            }
        }
    }
    // Test binaries live one level below the binaries in cargo's target dir (`deps/`).
    for cand in [dir.join("rollout-agent"), dir.join("../rollout-agent")] {
        if cand.is_file() {
            return add_binary(runner, &cand);
        }
    }
    Err(AgentSourceError::Missing(exe.display().to_string()))
}

fn add_binary(runner: &Runner, bin: &Path) -> Result<String, AgentSourceError> {
    let stage = tempfile_dir()?;
    let pkg = stage.join(format!("rollout-agent-{}", env!("CARGO_PKG_VERSION")));
    std::fs::create_dir_all(pkg.join("bin"))?;
    let dst = pkg.join("bin/rollout-agent");
    std::fs::copy(bin, &dst)?;
    let out = runner.checked(
        &nix::store_add(&pkg.display().to_string()),
        "adding the agent to the local Nix store",
    );
    let _ = std::fs::remove_dir_all(&stage);
    Ok(out?.trim().to_string())
}

fn tempfile_dir() -> std::io::Result<PathBuf> {
    let base = std::env::temp_dir().join(format!("rollout-stage-{}-{}", std::process::id(), new_id()));
    std::fs::create_dir_all(&base)?;
    Ok(base)
}

/// `<agent store path>/bin/rollout-agent`
pub fn agent_bin(agent_path: &str) -> String {
    format!("{agent_path}/bin/rollout-agent")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activate_args_carry_every_setting() {
        let a = ActivateArgs {
            id: "d1".into(),
            closure: "/nix/store/x".into(),
            profile: ProfileRef::Named {
                user: "hello".into(),
                name: "app".into(),
            }
            .spec(),
            temp_path: "/tmp".into(),
            confirm_timeout: 30,
            activation_timeout: 240,
            magic_rollback: true,
            auto_rollback: true,
            dry_activate: false,
            boot: false,
            debug: false,
            skip_unchanged: false,
            origin: Default::default(),
        };
        assert_eq!(
            activate_args(&a).join(" "),
            "--protocol 2 activate --id d1 --closure /nix/store/x --profile-user hello --profile-name app --temp-path /tmp \
             --confirm-timeout 30 --activation-timeout 240 --magic-rollback --auto-rollback"
        );
    }

    #[test]
    fn ids_are_unique_and_safe() {
        let a = new_id();
        let b = new_id();
        assert_ne!(a, b);
        assert!(a.len() >= 8 && a.chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn status_lines_parse_and_other_lines_are_ignored() {
        let s = AgentStatus::parse_line(
            r#"ROLLOUT-STATUS {"id":"d1","state":"awaiting-confirmation","previous_generation":3,"new_generation":4}"#,
        )
        .unwrap();
        assert_eq!(s.state, "awaiting-confirmation");
        assert_eq!(s.new_generation, Some(4));
        assert!(AgentStatus::parse_line("rollout-agent: activating").is_none());
    }

    #[test]
    fn revoke_names_exact_generations() {
        let v = revoke_args(&ProfileRef::Path("/p".into()), "/nix/store/c", "/tmp", 5, Some(4));
        assert_eq!(
            v.join(" "),
            "--protocol 2 revoke --profile-path /p --closure /nix/store/c --generation 5 --previous 4 --temp-path /tmp \
             --activation-timeout 240"
        );
    }
}
