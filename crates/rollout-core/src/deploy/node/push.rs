//! The push phase: per host, copy the closures built here (and the agent, when a profile needs
//! the run's own) into its store, then build the `remoteBuild` profiles there.

use super::activate::agent_for;
use super::NodeCx;
use crate::deploy::evaluate::Mode;
use crate::deploy::{agent, build, copy};
use crate::events::{Phase, State};
use crate::plan::Deployment;

pub fn push(cx: &NodeCx, deps: &[&Deployment]) -> Result<(), String> {
    for (hi, host) in cx.hosts.iter().enumerate() {
        let mine: Vec<&Deployment> = deps.iter().copied().filter(|d| cx.host_of(d) == hi).collect();
        copy_closures(cx, hi, &mine)?;
        build_there(cx, hi, &mine).map_err(|e| format!("building on {} failed: {e}", host.name()))?;
    }
    Ok(())
}

fn copy_closures(cx: &NodeCx, hi: usize, mine: &[&Deployment]) -> Result<(), String> {
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
            Some(argv) => copy::run_copy(&cx.runner, &cx.rep, &argv, &shared.nar_sizes()),
            None => Ok(copy::CopyStats::default()),
        });
    match copied {
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
