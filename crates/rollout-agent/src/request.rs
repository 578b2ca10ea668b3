//! `request.json`: what the foreground asked the detached worker to do — the command's own
//! arguments (the protocol's types, not a copy of them), plus what the foreground resolved.

use rollout_protocol::command::{ActivateArgs, RevokeArgs};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Job {
    Activate(ActivateArgs),
    /// A revoke gets a deploy id of its own (the generation and a random suffix).
    Revoke {
        id: String,
        #[serde(flatten)]
        args: RevokeArgs,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub job: Job,
    /// Resolved by the foreground (same user and environment as the worker).
    pub profile_path: PathBuf,
    /// Who asked, as the target saw it (user, SSH client address): shown to a deploy that waits for
    /// this one's profile lock.
    #[serde(default)]
    pub deployer: String,
}

impl Request {
    pub fn new(job: Job, profile_path: PathBuf) -> Request {
        Request {
            job,
            profile_path,
            deployer: String::new(),
        }
    }

    pub fn id(&self) -> &str {
        match &self.job {
            Job::Activate(a) => &a.id,
            Job::Revoke { id, .. } => id,
        }
    }

    /// The closure to activate, or the one the revoked deploy installed.
    pub fn closure(&self) -> &Path {
        match &self.job {
            Job::Activate(a) => &a.closure,
            Job::Revoke { args, .. } => &args.closure,
        }
    }

    pub fn activation_timeout(&self) -> u64 {
        match &self.job {
            Job::Activate(a) => a.activation_timeout,
            Job::Revoke { args, .. } => args.activation_timeout,
        }
    }

    pub fn debug(&self) -> bool {
        match &self.job {
            Job::Activate(a) => a.debug,
            Job::Revoke { args, .. } => args.debug,
        }
    }

    /// The activate arguments; a revoke behaves as an activation without confirmation.
    fn activate(&self) -> Option<&ActivateArgs> {
        match &self.job {
            Job::Activate(a) => Some(a),
            Job::Revoke { .. } => None,
        }
    }

    pub fn confirm_timeout(&self) -> u64 {
        self.activate().map_or(0, |a| a.confirm_timeout)
    }

    pub fn magic_rollback(&self) -> bool {
        self.activate().is_some_and(|a| a.magic_rollback)
    }

    pub fn auto_rollback(&self) -> bool {
        self.activate().is_none_or(|a| a.auto_rollback)
    }

    pub fn dry_activate(&self) -> bool {
        self.activate().is_some_and(|a| a.dry_activate)
    }

    pub fn boot(&self) -> bool {
        self.activate().is_some_and(|a| a.boot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollout_protocol::command::ProfileSpec;

    #[test]
    fn requests_round_trip_through_json_with_their_kind() {
        let revoke = Request::new(
            Job::Revoke {
                id: "revoke-3-abc".into(),
                args: RevokeArgs {
                    profile: ProfileSpec::Path("/p".into()),
                    closure: "/nix/store/x".into(),
                    generation: 3,
                    previous: Some(2),
                    temp_path: "/tmp".into(),
                    activation_timeout: 9,
                    debug: false,
                },
            },
            "/p".into(),
        );
        let text = serde_json::to_string(&revoke).unwrap();
        assert!(text.contains(r#""kind":"revoke""#), "{text}");
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), revoke);
        assert_eq!(revoke.id(), "revoke-3-abc");
        assert!(revoke.auto_rollback() && !revoke.magic_rollback() && revoke.confirm_timeout() == 0);
    }
}
