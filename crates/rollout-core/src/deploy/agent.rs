//! The deployer's side of the agent protocol (docs/agent-protocol.md): where the agent comes
//! from, the argv of each agent command, and the `ROLLOUT-STATUS` lines it answers with.

use crate::exec::{ExecError, Runner};
use crate::nix;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Prefix of the one machine-readable line the agent prints per deploy id.
pub const STATUS_PREFIX: &str = "ROLLOUT-STATUS ";

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct AgentStatus {
    pub id: String,
    pub state: String,
    #[serde(default)]
    pub profile_path: Option<String>,
    #[serde(default)]
    pub closure: Option<String>,
    #[serde(default)]
    pub previous_generation: Option<u64>,
    #[serde(default)]
    pub new_generation: Option<u64>,
    #[serde(default)]
    pub message: Option<String>,
}

impl AgentStatus {
    pub fn parse_line(line: &str) -> Option<AgentStatus> {
        serde_json::from_str(line.strip_prefix(STATUS_PREFIX)?).ok()
    }
}

/// A fresh deploy id: unique per deploy and profile, so no earlier deploy's leftovers can
/// confirm this one.
pub fn new_id() -> String {
    let mut buf = [0u8; 12];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .is_ok();
    if !ok {
        // Fall back on time and pid; still unique per run on one deployer.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        buf[..8].copy_from_slice(&(t.as_nanos() as u64).to_le_bytes());
        buf[8..].copy_from_slice(&std::process::id().to_le_bytes());
    }
    let hex: String = buf.iter().map(|b| format!("{b:02x}")).collect();
    format!("d{hex}")
}

/// How the target names the profile: an explicit path, or user + name resolved on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileRef {
    Path(String),
    Named { user: String, name: String },
}

impl ProfileRef {
    fn args(&self) -> Vec<String> {
        match self {
            ProfileRef::Path(p) => vec!["--profile-path".into(), p.clone()],
            ProfileRef::Named { user, name } => {
                vec![
                    "--profile-user".into(),
                    user.clone(),
                    "--profile-name".into(),
                    name.clone(),
                ]
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct ActivateArgs {
    pub id: String,
    pub closure: String,
    pub profile: ProfileRef,
    pub temp_path: String,
    pub confirm_timeout: u64,
    pub activation_timeout: u64,
    pub magic_rollback: bool,
    pub auto_rollback: bool,
    pub dry_activate: bool,
    pub boot: bool,
    pub debug: bool,
}

pub fn activate_args(a: &ActivateArgs) -> Vec<String> {
    let mut v = vec![
        "activate".to_string(),
        "--id".into(),
        a.id.clone(),
        "--closure".into(),
        a.closure.clone(),
    ];
    v.extend(a.profile.args());
    v.extend([
        "--temp-path".to_string(),
        a.temp_path.clone(),
        "--confirm-timeout".into(),
        a.confirm_timeout.to_string(),
        "--activation-timeout".into(),
        a.activation_timeout.to_string(),
    ]);
    for (on, flag) in [
        (a.magic_rollback, "--magic-rollback"),
        (a.auto_rollback, "--auto-rollback"),
        (a.dry_activate, "--dry-activate"),
        (a.boot, "--boot"),
        (a.debug, "--debug"),
    ] {
        if on {
            v.push(flag.into());
        }
    }
    v
}

/// `confirm`, `extend`, `abort` and `status` all name deploys by id under one temp path.
pub fn ids_args(cmd: &str, temp_path: &str, ids: &[String], wait: Option<u64>) -> Vec<String> {
    let mut v = vec![cmd.to_string(), "--temp-path".into(), temp_path.to_string()];
    for id in ids {
        v.push("--id".into());
        v.push(id.clone());
    }
    if let Some(w) = wait {
        v.push("--wait".into());
        v.push(w.to_string());
    }
    v
}

/// `closure` guards against generation numbers that Nix reused since (see the protocol doc).
pub fn revoke_args(
    profile: &ProfileRef,
    closure: &str,
    temp_path: &str,
    generation: u64,
    previous: Option<u64>,
) -> Vec<String> {
    let mut v = vec!["revoke".to_string()];
    v.extend(profile.args());
    v.extend(["--closure".to_string(), closure.to_string()]);
    v.extend([
        "--temp-path".to_string(),
        temp_path.to_string(),
        "--generation".into(),
        generation.to_string(),
    ]);
    if let Some(p) = previous {
        v.extend(["--previous".to_string(), p.to_string()]);
    }
    v
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
            },
            temp_path: "/tmp".into(),
            confirm_timeout: 30,
            activation_timeout: 240,
            magic_rollback: true,
            auto_rollback: true,
            dry_activate: false,
            boot: false,
            debug: false,
        };
        assert_eq!(
            activate_args(&a).join(" "),
            "activate --id d1 --closure /nix/store/x --profile-user hello --profile-name app --temp-path /tmp \
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
            "revoke --profile-path /p --closure /nix/store/c --temp-path /tmp --generation 5 --previous 4"
        );
    }
}
