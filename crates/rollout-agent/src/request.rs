//! `request.json`: what the foreground asked the detached worker to do.

use rollout_protocol::command::ProfileSpec;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Activate,
    Revoke,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub kind: Kind,
    pub id: String,
    /// As given on the command line.
    pub profile: ProfileSpec,
    /// Resolved by the foreground (same user and environment as the worker).
    pub profile_path: PathBuf,
    pub temp_path: PathBuf,
    pub closure: Option<PathBuf>,
    pub confirm_timeout: u64,
    pub activation_timeout: u64,
    pub magic_rollback: bool,
    pub auto_rollback: bool,
    pub dry_activate: bool,
    pub boot: bool,
    pub debug: bool,
    /// Revoke only: the generation to undo and the one to return to.
    pub generation: Option<u64>,
    pub previous: Option<u64>,
    /// Who asked, as the target saw it (user, SSH client address): shown to a deploy that waits for
    /// this one's profile lock.
    #[serde(default)]
    pub deployer: String,
}
