//! The subcommands: each returns its exit code and prints `ROLLOUT-STATUS` lines where the protocol says.

use crate::follow::{follow, out, spawn_worker, LogTail};
use crate::profile::{resolve, ProfileEnv};
use crate::request::{Job, Request};
use crate::statedir::{DeployDir, Root, ABORT, CONFIRM, REQUEST};
use rollout_protocol::command::{ActivateArgs, ProfileSpec, RevokeArgs};
use rollout_protocol::report::{Generation, ProfileReport};
use rollout_protocol::status::{abort_exit, activate_exit, confirm_exit, revoke_exit, rfc3339, State, Status};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn print_status(st: &Status) {
    out(format!("{}\n", st.line()).as_bytes());
}

fn resolve_profile(spec: &ProfileSpec) -> Result<PathBuf, String> {
    resolve(spec, &ProfileEnv::from_process(), |p| p.is_dir())
}

/// Common foreground of `activate` and `revoke`: deploy dir, request, worker, follow.
fn start_and_follow(
    temp_path: &Path,
    id: &str,
    spec: &ProfileSpec,
    build: impl Fn(PathBuf) -> Request,
) -> Result<Status, String> {
    let root = Root::open_or_create(temp_path)?;
    root.cleanup_old();
    let dir = root.create_deploy(id)?;
    let closure = build(PathBuf::new()).closure().to_path_buf();
    let mut st = Status::new(id, None, Some(closure), "deploy started");
    let fail = |st: &mut Status, msg: String| {
        let _ = st.advance(State::Failed, msg);
        let _ = dir.write_status(st);
        st.clone()
    };
    let profile_path = match resolve_profile(spec) {
        Ok(p) => p,
        Err(e) => return Ok(fail(&mut st, e)),
    };
    st.profile_path = Some(profile_path.clone());
    let mut req = build(profile_path);
    req.deployer = crate::lock::deployer();
    if let Err(e) = dir.write_json(REQUEST, &req) {
        return Ok(fail(&mut st, e));
    }
    if let Err(e) = dir.write_status(&mut st) {
        return Ok(fail(&mut st, e));
    }
    match spawn_worker(&dir, temp_path) {
        Ok(child) => Ok(follow(&dir, child)),
        Err(e) => Ok(fail(&mut st, e)),
    }
}

pub fn activate(a: &ActivateArgs) -> i32 {
    let res = start_and_follow(&a.temp_path, &a.id, &a.profile, |profile_path| {
        Request::new(Job::Activate(a.clone()), profile_path)
    });
    match res {
        Ok(st) => {
            print_status(&st);
            activate_exit(st.state)
        }
        Err(e) => crate::fatal(&e),
    }
}

pub fn revoke(r: &RevokeArgs) -> i32 {
    let id = format!("revoke-{}-{}", r.generation, crate::statedir::random_hex());
    let res = start_and_follow(&r.temp_path, &id, &r.profile, |profile_path| {
        let job = Job::Revoke {
            id: id.clone(),
            args: r.clone(),
        };
        Request::new(job, profile_path)
    });
    match res {
        Ok(st) => {
            print_status(&st);
            revoke_exit(st.state)
        }
        Err(e) => crate::fatal(&e),
    }
}

/// Deploy dirs of the named IDs; unknown ones are reported on stderr and come back as `None`.
fn deploy_dirs(temp_path: &Path, ids: &[String]) -> Vec<Option<DeployDir>> {
    ids.iter()
        .map(|id| match Root::find_deploy(temp_path, id) {
            Ok(d) => Some(d),
            Err(e) => {
                crate::error(&e);
                None
            }
        })
        .collect()
}

/// Drops `marker` into every named deploy that `may_mark` accepts, waits up to `wait` for all to be
/// terminal, prints their status lines and returns the final states.
fn mark_and_wait(
    temp_path: &Path,
    ids: &[String],
    marker: &str,
    wait: u64,
    may_mark: impl Fn(&Status) -> Result<(), String>,
) -> Result<Vec<Option<State>>, String> {
    let dirs = deploy_dirs(temp_path, ids);
    let mut usable: Vec<Option<DeployDir>> = Vec::new();
    // Log lines the worker writes from now on (e.g. the rollback's re-activation) are shown too.
    let mut tails: Vec<Option<LogTail>> = dirs.iter().map(|d| d.as_ref().map(LogTail::from_end)).collect();
    for d in dirs {
        let Some(dir) = d else {
            usable.push(None);
            continue;
        };
        let st = match dir.read_status() {
            Ok(s) => s,
            Err(e) => {
                crate::error(&e);
                usable.push(None);
                continue;
            }
        };
        // Never drop a canary into a finished deploy: it could only ever be stale.
        if !st.state.is_terminal() {
            match may_mark(&st) {
                Ok(()) => dir.touch_marker(marker)?,
                Err(e) => crate::error(&e),
            }
        }
        usable.push(Some(dir));
    }
    let end = Instant::now() + Duration::from_secs(wait);
    let mut states = Vec::new();
    for (dir, tail) in usable.iter().zip(tails.iter_mut()) {
        let Some(dir) = dir else {
            states.push(None);
            continue;
        };
        let mut st = dir.read_status().ok();
        while st.as_ref().is_some_and(|s| !s.state.is_terminal()) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
            st = dir.read_status().ok();
        }
        if let Some(s) = &st {
            if let Some(t) = tail {
                t.pump(dir, true);
            }
            if s.state.is_terminal() {
                // The worker may have finished between our check and our marker; clean up after it.
                dir.remove_markers();
            }
            print_status(s);
        }
        states.push(st.map(|s| s.state));
    }
    Ok(states)
}

pub fn confirm(temp_path: &Path, ids: &[String], wait: u64) -> i32 {
    let res = mark_and_wait(temp_path, ids, CONFIRM, wait, |st| {
        if st.state == State::AwaitingConfirmation {
            Ok(())
        } else {
            // Confirming before activation finished would pre-approve an unseen result.
            Err(format!(
                "deploy {} is {}, not awaiting confirmation; not confirming it",
                st.id,
                st.state.as_str()
            ))
        }
    });
    match res {
        Ok(states) => confirm_exit(&states),
        Err(e) => crate::fatal(&e),
    }
}

pub fn abort(temp_path: &Path, ids: &[String], wait: u64) -> i32 {
    match mark_and_wait(temp_path, ids, ABORT, wait, |_| Ok(())) {
        Ok(states) => abort_exit(&states),
        Err(e) => crate::fatal(&e),
    }
}

pub fn extend(temp_path: &Path, ids: &[String]) -> i32 {
    let dirs = deploy_dirs(temp_path, ids);
    let mut code = 0;
    for dir in dirs {
        let Some(dir) = dir else {
            code = 1;
            continue;
        };
        let terminal = |d: &DeployDir| d.read_status().map(|s| s.state.is_terminal()).unwrap_or(false);
        if terminal(&dir) {
            continue;
        }
        if let Err(e) = dir.touch_heartbeat() {
            crate::error(&e);
            code = 1;
        }
        if terminal(&dir) {
            dir.remove_markers();
        }
    }
    code
}

pub fn status(temp_path: &Path, id: &str) -> i32 {
    let res = Root::find_deploy(temp_path, id).and_then(|dir| dir.read_status());
    match res {
        Ok(st) => {
            print_status(&st);
            0
        }
        Err(e) => crate::fatal(&e),
    }
}

/// `query`: what the profile holds — generations, deploy records, deploys under way — as one
/// `ROLLOUT-QUERY` line. Reads only.
pub fn query(spec: &ProfileSpec, temp_path: &Path) -> i32 {
    let profile = match resolve_profile(spec) {
        Ok(p) => p,
        Err(e) => return crate::fatal(&e),
    };
    let mut report = ProfileReport {
        profile_path: profile.clone(),
        ..Default::default()
    };
    match crate::profile::current_generation(&profile) {
        Ok(c) => report.current = c,
        Err(e) => return crate::fatal(&e),
    }
    let numbers = match crate::profile::existing_generations(&profile) {
        Ok(n) => n,
        Err(e) => return crate::fatal(&e),
    };
    for number in numbers {
        let link = crate::profile::generation_link(&profile, number);
        let (Ok(path), Ok(meta)) = (std::fs::read_link(&link), std::fs::symlink_metadata(&link)) else {
            continue;
        };
        let secs = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        report.generations.push(Generation {
            number,
            path,
            time: rfc3339(secs),
        });
    }
    match crate::history::read(&profile) {
        Ok(r) => report.records = r,
        Err(e) => crate::error(&format!("{e}; showing no deploy records")),
    }
    report.pending = Root::pending_for(temp_path, &profile);
    report.in_flight = Some(in_flight(&profile));
    out(format!("{}\n", report.line()).as_bytes());
    0
}

/// Whether a deploy of `profile` may be under way, from any temp path or deployer: its lock file
/// names a holder (a holder empties it when it lets go; one killed leaves its name, which only
/// costs a skipped shortcut) or its pending marker exists. Anything unreadable counts as yes.
fn in_flight(profile: &Path) -> bool {
    let holder = crate::lock::lock_path(profile).map(|p| match std::fs::read(&p) {
        Ok(data) => data.iter().any(|b| !b.is_ascii_whitespace()),
        Err(e) => e.kind() != std::io::ErrorKind::NotFound,
    });
    let marker = crate::pending::read(profile).map(|m| m.is_some());
    holder.unwrap_or(true) || marker.unwrap_or(true)
}

/// `recover`: undo unconfirmed deploys whose agent is gone — of one profile, or (`None`, the
/// boot step) of every profile under the Nix profiles directory that has a pending marker.
pub fn recover(spec: Option<&ProfileSpec>) -> i32 {
    let profiles = match spec {
        Some(s) => match resolve_profile(s) {
            Ok(p) => vec![p],
            Err(e) => return crate::fatal(&e),
        },
        None => {
            let env = ProfileEnv::from_process();
            let state = PathBuf::from(env.nix_state_dir.as_deref().unwrap_or("/nix/var/nix"));
            crate::pending::all_pending(&state)
        }
    };
    crate::pending::recover(&profiles, rollout_protocol::command::DEFAULT_ACTIVATION_TIMEOUT)
}
