//! The push phase: per host, copy the closures built here (and the agent, when a profile needs
//! the run's own) into its store, then build the `remoteBuild` profiles there. While the copy
//! runs, one `query` per profile asks what the target already runs: a host whose every profile
//! runs its closure, confirmed, needs neither the copy (it is ended) nor an activation.

use super::activate::{agent_for, HeldActivation};
use super::NodeCx;
use crate::deploy::agent::{self, elevation_of, profile_ref};
use crate::deploy::evaluate::Mode;
use crate::deploy::{build, copy};
use crate::events::{Phase, Reporter, State};
use crate::exec::Runner;
use crate::plan::Deployment;
use crate::secret::Secret;
use crate::ssh::{self, Elevation};
use rollout_protocol::report::ProfileReport;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Profiles (by name) that already run their closure, confirmed, with the generation they run.
pub type Unchanged = HashMap<String, u64>;

/// What the push phase leaves for the activations.
#[derive(Default)]
pub struct Pushed {
    pub unchanged: Unchanged,
    /// The first profile's activate call, opened while the closures were copied.
    pub held: Option<HeldActivation>,
}

pub fn push(cx: &NodeCx, deps: &[&Deployment]) -> Result<Pushed, String> {
    let mut unchanged = Unchanged::new();
    // Opened first, so that its channel is set up while the copy runs; dropped (never run) when
    // anything below fails.
    let mut held = deps.first().and_then(|d| HeldActivation::open(cx, d));
    for (hi, host) in cx.hosts.iter().enumerate() {
        let mine: Vec<&Deployment> = deps.iter().copied().filter(|d| cx.host_of(d) == hi).collect();
        let everything_there = AtomicBool::new(false);
        let (found, copied) = std::thread::scope(|s| {
            let probe = s.spawn(|| {
                let found = probe(cx, hi, &mine);
                if !mine.is_empty() && found.len() == mine.len() {
                    everything_there.store(true, Ordering::SeqCst);
                }
                found
            });
            let copied = copy_closures(cx, hi, &mine, &everything_there);
            (probe.join().unwrap_or_default(), copied)
        });
        copied?;
        unchanged.extend(found);
        build_there(cx, hi, &mine).map_err(|e| format!("building on {} failed: {e}", host.name()))?;
    }
    // A first profile found unchanged is not activated: its held call never runs.
    held.take_if(|h| unchanged.contains_key(h.profile()));
    Ok(Pushed { unchanged, held })
}

/// May the profile be found unchanged by a query? The same cases in which the agent would skip
/// it (`--skip-unchanged`: not with --reactivate, --dry-activate, --boot or a rollback), on a
/// target reached over SSH, with a closure built here.
fn probed(cx: &NodeCx, d: &Deployment) -> bool {
    let o = &cx.shared.opts;
    !(o.reactivate
        || o.dry_activate
        || o.boot
        || o.closures_on_target
        || o.keys_only
        || o.local
        || d.settings.remote_build)
}

/// One `query` per profile of host `hi`, all at once (one round trip together): the profiles
/// that run their closure, confirmed, with nothing under way ([`ProfileReport::runs_confirmed`]).
/// A query that fails (no agent on the target yet, sudo refused) finds nothing.
fn probe(cx: &NodeCx, hi: usize, mine: &[&Deployment]) -> Unchanged {
    // One channel per query, beside the copy's and the held activation's: stay well within
    // sshd's MaxSessions (10 by default); a host with more profiles is left to the agent.
    if mine.len() > 6 {
        return Unchanged::new();
    }
    let quiet = Runner::new(Reporter::silent());
    let found = Mutex::new(Unchanged::new());
    std::thread::scope(|s| {
        for d in mine.iter().filter(|d| probed(cx, d)) {
            let (quiet, found) = (&quiet, &found);
            s.spawn(move || {
                let Some(report) = query(cx, quiet, hi, d) else { return };
                if let Some(n) = report.runs_confirmed(std::path::Path::new(&d.closure)) {
                    found
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(d.profile.clone(), n);
                }
            });
        }
    });
    found.into_inner().unwrap_or_else(|e| e.into_inner())
}

/// The agent's report on `d`'s profile, over the host's connection, as the profile user.
fn query(cx: &NodeCx, quiet: &Runner, hi: usize, d: &Deployment) -> Option<ProfileReport> {
    let elevation = elevation_of(d).ok()?;
    let password = match d.settings.elevate && d.settings.interactive_sudo {
        true => cx.shared.passwords.get(&d.settings.hostname).cloned(),
        false => None,
    };
    let args = agent::query_args(&profile_ref(d), &d.settings.temp_path);
    let words = ssh::agent_command(elevation.as_ref(), &agent_for(cx.shared, d), &args);
    let stdin = Elevation::password_line(elevation.as_ref(), password.as_deref()).map(Secret::new);
    let report = Mutex::new(None);
    let r = quiet.stream(&cx.hosts[hi].run(&words), stdin.as_deref(), &|line| {
        if let Some(rep) = ProfileReport::parse_line(line) {
            *report.lock().unwrap_or_else(|e| e.into_inner()) = Some(rep);
        }
    });
    let report = report.into_inner().unwrap_or_else(|e| e.into_inner());
    r.ok().filter(|(st, _)| st.success()).and(report)
}

fn copy_closures(cx: &NodeCx, hi: usize, mine: &[&Deployment], everything_there: &AtomicBool) -> Result<(), String> {
    let shared = cx.shared;
    let host = &cx.hosts[hi];
    let mut paths: Vec<String> = mine
        .iter()
        .filter(|d| !d.settings.remote_build && !shared.opts.closures_on_target && !shared.opts.keys_only)
        .map(|d| d.closure.clone())
        .collect();
    if mine
        .iter()
        .any(|d| agent_for(shared, d) == agent::agent_bin(&shared.agent_path))
    {
        paths.push(shared.agent_path.clone());
    }
    let substitute = !mine.iter().all(|d| d.settings.fast_connection);
    let name = host.name();
    cx.rep.phase(
        Phase::Copy,
        State::Started,
        Some(format!("copying {} path(s) to {name}", paths.len())),
    );
    let copied = copy::sign(&cx.runner, shared.opts.sign_key.as_deref(), &paths)
        .and_then(|()| host.copy(&shared.ctx, &paths, substitute, shared.opts.checksigs))
        .and_then(|argv| match argv {
            Some(argv) => copy::run_copy_until(&cx.runner, &cx.rep, &argv, &shared.nar_sizes(), Some(everything_there)),
            None => Ok(copy::CopyStats::default()),
        });
    match copied {
        // Ended on purpose: every profile already runs its closure, so the target has them all.
        _ if everything_there.load(Ordering::SeqCst) => {
            let msg = "not needed: every profile already runs its closure";
            cx.rep.phase(Phase::Copy, State::Succeeded, Some(msg.into()));
            Ok(())
        }
        Ok(st) => {
            let msg = if st.paths == 0 {
                "all paths already present".to_string()
            } else {
                format!("copied {} path(s), {}", st.paths, copy::human_bytes(st.bytes))
            };
            cx.rep.phase(Phase::Copy, State::Succeeded, Some(msg));
            Ok(())
        }
        Err(e) => {
            cx.rep.phase(Phase::Copy, State::Failed, None);
            Err(format!(
                "copying {} path(s) to {name} failed, so nothing was activated there and its profiles are unchanged: {}",
                paths.len(),
                e.trim()
            ))
        }
    }
}

/// Build the `remoteBuild` profiles in the host's store (nothing is built here).
fn build_there(cx: &NodeCx, hi: usize, mine: &[&Deployment]) -> Result<(), String> {
    let shared = cx.shared;
    let remote: Vec<String> = mine
        .iter()
        .filter(|d| d.settings.remote_build && !shared.opts.closures_on_target && !shared.opts.keys_only)
        .map(|d| build::installable(shared.mode, d))
        .collect();
    if remote.is_empty() {
        return Ok(());
    }
    let host = &cx.hosts[hi];
    cx.rep.phase(
        Phase::Build,
        State::Started,
        Some(format!("building {} profile(s) on {}", remote.len(), host.name())),
    );
    let mut argv = host.build(&shared.ctx, &remote)?;
    if shared.mode == Mode::File {
        // `nix build -f FILE ATTR…` reads the same file as the local non-flake build.
        let pos = argv.args.iter().position(|x| x == "--store").unwrap_or(0);
        argv.args.insert(pos, mine[0].flake.clone());
        argv.args.insert(pos, "-f".into());
    }
    match cx.runner.checked(&argv, "remote build") {
        Ok(_) => {
            cx.rep.phase(Phase::Build, State::Succeeded, None);
            Ok(())
        }
        Err(e) => {
            cx.rep.phase(Phase::Build, State::Failed, None);
            Err(e.stderr().trim().to_string())
        }
    }
}
