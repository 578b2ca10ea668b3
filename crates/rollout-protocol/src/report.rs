//! What a profile holds on its target, as `query` reports it in one `ROLLOUT-QUERY` line: its
//! generations, the deploy records the agent kept for it, and deploys still under way.

use crate::command::Origin;
use crate::status::{State, Status};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Prefix of the line that carries a [`ProfileReport`].
pub const QUERY_PREFIX: &str = "ROLLOUT-QUERY ";

/// One generation of a profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    pub number: u64,
    /// The store path it points at.
    pub path: PathBuf,
    /// When it was made (the link's modification time), RFC 3339.
    pub time: String,
}

/// The agent's record of one deploy, rollback or revoke of a profile, written when it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    /// When it ended, RFC 3339.
    pub time: String,
    /// How it ended (confirmed, activated, rolled-back, failed).
    pub state: State,
    /// The generation it made (and kept, unless rolled back or failed).
    pub generation: Option<u64>,
    /// The generation the profile was at before.
    pub previous: Option<u64>,
    pub closure: Option<PathBuf>,
    #[serde(default)]
    pub origin: Origin,
    /// Who ran the agent, as the target saw it (user, SSH client address).
    #[serde(default)]
    pub seen_from: String,
    #[serde(default)]
    pub message: String,
}

/// Everything `query` says about one profile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileReport {
    pub profile_path: PathBuf,
    /// The generation the profile points at; `None`: the profile does not exist.
    pub current: Option<u64>,
    /// Oldest first.
    pub generations: Vec<Generation>,
    /// Oldest first; at most [`MAX_RECORDS`].
    pub records: Vec<Record>,
    /// Deploys of this profile that have not ended (activating, awaiting confirmation).
    pub pending: Vec<Status>,
    /// Whether any deploy of the profile may be under way, whatever its temp path or deployer:
    /// the profile's lock file names a holder, or its pending marker exists. `None` from agents
    /// that do not look (before this field existed): unknown, so nothing may be assumed.
    #[serde(default)]
    pub in_flight: Option<bool>,
}

/// How many records a profile keeps: the history stays small however often it is deployed.
pub const MAX_RECORDS: usize = 100;

impl ProfileReport {
    pub fn line(&self) -> String {
        format!("{QUERY_PREFIX}{}", serde_json::to_string(self).unwrap_or_default())
    }

    pub fn parse_line(line: &str) -> Option<ProfileReport> {
        serde_json::from_str(line.strip_prefix(QUERY_PREFIX)?).ok()
    }

    /// The generation the profile points at, with its store path.
    pub fn current_generation(&self) -> Option<&Generation> {
        let n = self.current?;
        self.generations.iter().find(|g| g.number == n)
    }

    /// The record of the deploy that made generation `n`, the latest one if several did.
    pub fn record_of(&self, n: u64) -> Option<&Record> {
        self.records.iter().rev().find(|r| r.generation == Some(n))
    }

    /// The generation the profile runs when it already runs `closure` and nothing can change
    /// that on its own: the deploy that made the generation ended confirmed (or activated, without
    /// magic rollback) with this very closure, and no deploy of the profile is under way. The
    /// worker's rule for an unchanged profile (`--skip-unchanged`), which it applies under the
    /// profile's lock; `in_flight` stands for that lock here, so an unknown `in_flight` is a no.
    pub fn runs_confirmed(&self, closure: &Path) -> Option<u64> {
        if self.in_flight != Some(false) || !self.pending.is_empty() {
            return None;
        }
        let current = self.current_generation()?;
        let record = self.record_of(current.number)?;
        let same = |p: &Path| p == closure;
        (same(&current.path)
            && record.closure.as_deref().is_some_and(same)
            && matches!(record.state, State::Confirmed | State::Activated))
        .then_some(current.number)
    }

    /// The newest existing generation older than the current one: where a rollback goes.
    pub fn previous_generation(&self) -> Option<&Generation> {
        let cur = self.current?;
        self.generations.iter().rev().find(|g| g.number < cur)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generation(n: u64) -> Generation {
        Generation {
            number: n,
            path: format!("/nix/store/x-{n}").into(),
            time: "2026-12-05T10:00:00Z".into(),
        }
    }

    #[test]
    fn a_report_round_trips_through_its_line_and_finds_the_previous_generation() {
        let mut r = ProfileReport {
            profile_path: "/nix/var/nix/profiles/system".into(),
            current: Some(4),
            generations: vec![generation(1), generation(2), generation(4)],
            ..Default::default()
        };
        r.records.push(Record {
            id: "d1".into(),
            time: "t".into(),
            state: State::Confirmed,
            generation: Some(4),
            previous: Some(2),
            closure: Some("/nix/store/x-4".into()),
            origin: Origin {
                by: "alice@laptop".into(),
                action: "deploy".into(),
                ..Default::default()
            },
            seen_from: "root from 127.0.0.1".into(),
            message: String::new(),
        });
        let back = ProfileReport::parse_line(&r.line()).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.previous_generation().map(|g| g.number), Some(2));
        assert_eq!(back.current_generation().map(|g| g.number), Some(4));
        assert_eq!(back.record_of(4).map(|r| r.origin.by.as_str()), Some("alice@laptop"));
        assert!(ProfileReport::parse_line("ROLLOUT-STATUS {}").is_none());
        let first = ProfileReport {
            current: Some(1),
            generations: vec![generation(1)],
            ..Default::default()
        };
        assert!(first.previous_generation().is_none(), "nothing to roll back to");
    }

    #[test]
    fn a_profile_runs_a_closure_confirmed_only_when_its_record_says_so_and_nothing_is_under_way() {
        let closure = Path::new("/nix/store/x-4");
        let record = |state, closure: &str| Record {
            id: "d1".into(),
            time: "t".into(),
            state,
            generation: Some(4),
            previous: Some(2),
            closure: Some(closure.into()),
            origin: Origin::default(),
            seen_from: String::new(),
            message: String::new(),
        };
        let quiet = ProfileReport {
            current: Some(4),
            generations: vec![generation(2), generation(4)],
            records: vec![record(State::Confirmed, "/nix/store/x-4")],
            in_flight: Some(false),
            ..Default::default()
        };
        assert_eq!(quiet.runs_confirmed(closure), Some(4));
        assert_eq!(
            quiet.runs_confirmed(Path::new("/nix/store/x-2")),
            None,
            "another closure"
        );
        let unknown = ProfileReport {
            in_flight: None,
            ..quiet.clone()
        };
        assert_eq!(
            unknown.runs_confirmed(closure),
            None,
            "an agent that does not look at the lock"
        );
        let busy = ProfileReport {
            in_flight: Some(true),
            ..quiet.clone()
        };
        assert_eq!(
            busy.runs_confirmed(closure),
            None,
            "a deploy under way may still roll back"
        );
        let rolled = ProfileReport {
            records: vec![record(State::RolledBack, "/nix/store/x-4")],
            ..quiet.clone()
        };
        assert_eq!(rolled.runs_confirmed(closure), None);
        // Nix reuses generation numbers: a record of an earlier generation 4 with another closure.
        let reused = ProfileReport {
            records: vec![record(State::Confirmed, "/nix/store/old-4")],
            ..quiet.clone()
        };
        assert_eq!(reused.runs_confirmed(closure), None);
        let unrecorded = ProfileReport {
            records: vec![],
            ..quiet.clone()
        };
        assert_eq!(unrecorded.runs_confirmed(closure), None, "set by hand or by deploy-rs");
        let pending = ProfileReport {
            pending: vec![Status::new("d2", None, Some(closure.into()), "")],
            ..quiet
        };
        assert_eq!(pending.runs_confirmed(closure), None);
    }
}
