//! The reboot-safe confirmation window. While a deploy of a profile waits for its confirmation,
//! `<profile>.rollout-pending` beside the profile ([`crate::beside`]) says which generation it
//! made and which one it replaced. The worker removes it when the deploy ends. If the worker is
//! gone first — the host rebooted (its tempPath state may be gone too), or the agent was killed —
//! nothing else would ever undo the unconfirmed generation; [`recover`] does: at boot
//! (`rollout-agent recover --all`, the boot step), and before any later deploy of the profile.

use crate::beside::Beside;
use crate::exec::NixEnv;
use crate::lock::{Holder, ProfileLock};
use crate::policy::plan_rollback;
use crate::profile::current_generation;
use rollout_protocol::report::Record;
use rollout_protocol::status::{now_rfc3339, State};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const SUFFIX: &str = "rollout-pending";

/// A deploy that has changed the profile and is not confirmed yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub id: String,
    /// The generation before the deploy (`None`: its first deploy).
    pub previous: Option<u64>,
    /// The generation it made, once `nix-env --set` has run.
    pub generation: Option<u64>,
    /// Whether that generation is new (nix-env reuses an existing one for the same closure).
    pub new_created: bool,
    pub closure: PathBuf,
    pub since: String,
}

pub fn write(profile: &Path, p: &Pending) -> Result<(), String> {
    let text = serde_json::to_string(p).map_err(|e| e.to_string())?;
    Beside::open(profile, SUFFIX)?.write(&text)
}

pub fn read(profile: &Path) -> Result<Option<Pending>, String> {
    let file = Beside::open(profile, SUFFIX)?;
    match file.read()? {
        None => Ok(None),
        Some(t) => serde_json::from_str(&t)
            .map(Some)
            .map_err(|e| format!("{} is not a pending-deploy marker: {e}", file.display())),
    }
}

pub fn remove(profile: &Path) -> Result<(), String> {
    Beside::open(profile, SUFFIX)?.remove()
}

/// Undo the deploy a pending marker names, if the profile still runs what it made. The caller
/// holds the profile's lock, so the worker that wrote the marker is gone. Returns what was done.
pub fn undo_stale(profile: &Path, timeout: u64) -> Result<Option<String>, String> {
    let Some(p) = read(profile)? else {
        return Ok(None);
    };
    // Confirmed (or ended otherwise) and recorded, but the marker outlived its worker by an
    // instant: nothing to undo.
    let ended = crate::history::read(profile)
        .unwrap_or_default()
        .iter()
        .any(|r| r.id == p.id && r.state.is_terminal());
    if ended {
        remove(profile)?;
        return Ok(None);
    }
    let current = current_generation(profile)?;
    let why = format!(
        "deploy {} (since {}) was never confirmed: its agent ended first (a reboot, or it was killed)",
        p.id, p.since
    );
    // The marker is written before `nix-env --set`; without a recorded generation the set may or
    // may not have happened: anything other than the previous generation is this deploy's.
    let made = p.generation.or(current.filter(|c| Some(*c) != p.previous));
    let outcome = if made.is_some() && current == made {
        let nix = NixEnv::find(false)?;
        let new_created = p.generation.is_none() || p.new_created;
        let plan = plan_rollback(p.previous, current, new_created);
        match crate::undo::undo(&nix, profile, plan, timeout) {
            Ok(done) => (State::RolledBack, format!("{why}; {done}")),
            Err(e) => (State::Failed, format!("{why}; {e}")),
        }
    } else {
        let now = current.map_or("no generation".to_string(), |n| format!("generation {n}"));
        (
            State::Failed,
            format!("{why}; the profile is at {now} since, so it was left alone"),
        )
    };
    crate::log(&outcome.1);
    let record = Record {
        id: p.id.clone(),
        time: now_rfc3339(),
        state: outcome.0,
        generation: made,
        previous: p.previous,
        closure: Some(p.closure.clone()),
        origin: rollout_protocol::command::Origin {
            action: "recover".into(),
            ..Default::default()
        },
        seen_from: crate::lock::deployer(),
        message: outcome.1.clone(),
    };
    if let Err(e) = crate::history::append(profile, record) {
        crate::log(&format!("note: the deploy record was not kept: {e}"));
    }
    remove(profile)?;
    Ok(Some(outcome.1))
}

/// `rollout-agent recover`: undo the unconfirmed deploys of `profiles` whose agents are gone.
pub fn recover(profiles: &[PathBuf], timeout: u64) -> i32 {
    let mut code = 0;
    for profile in profiles {
        let holder = Holder {
            id: format!("recover-{}", crate::statedir::random_hex()),
            pid: std::process::id(),
            deployer: crate::lock::deployer(),
            started_at: crate::lock::unix_now(),
            ends_by: crate::lock::unix_now() + timeout + 10,
        };
        let lock = match ProfileLock::acquire(profile, holder, crate::log) {
            Ok(l) => l,
            Err(e) => {
                crate::error(&e);
                code = 1;
                continue;
            }
        };
        match undo_stale(profile, timeout) {
            Ok(Some(msg)) => crate::log(&format!("{}: {msg}", profile.display())),
            Ok(None) => {}
            Err(e) => {
                crate::error(&format!("{}: {e}", profile.display()));
                code = 1;
            }
        }
        drop(lock);
    }
    code
}

/// Every profile under the Nix profiles directory (and its `per-user/*`) with a pending marker:
/// what the boot step recovers.
pub fn all_pending(state_dir: &Path) -> Vec<PathBuf> {
    let profiles = state_dir.join("profiles");
    let mut dirs = vec![profiles.clone()];
    if let Ok(users) = std::fs::read_dir(profiles.join("per-user")) {
        dirs.extend(users.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
    }
    let mut out = Vec::new();
    for d in dirs {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(profile) = name.strip_suffix(&format!(".{SUFFIX}")) {
                if !profile.starts_with('.') && !profile.is_empty() {
                    out.push(d.join(profile));
                }
            }
        }
    }
    out.sort();
    out
}
