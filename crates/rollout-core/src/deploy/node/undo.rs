//! Undo: abort this node's profiles that still wait for confirmation, and revoke (switch back)
//! the ones this run activated and confirmed — newest first, the reverse of activation order.

use super::outcome::{abort_outcome, revoke_outcome};
use super::{call_for, Activated, NodeCx, Pending, ProfileResult};
use crate::deploy::agent;
use crate::events::{Outcome, Phase, Reporter, State};
use crate::exec::Runner;

pub fn abort_pending(cx: &NodeCx, pending: &[Pending], done: &mut Vec<ProfileResult>, why: &str) {
    for p in pending.iter().rev() {
        let prep = cx.rep.for_profile(cx.node, &p.d.profile);
        prep.phase(Phase::Revoke, State::Started, Some(why.to_string()));
        let args = agent::ids_args("abort", &p.act.temp_path, std::slice::from_ref(&p.id), Some(300));
        let reply = call_for(&cx.runner, &prep, &p.act, &args);
        let state = reply.status_of(&p.id).map(|s| s.state.clone());
        let (outcome, msg) = abort_outcome(state.as_deref(), why, p.d.settings.confirm_timeout);
        match outcome {
            Outcome::RolledBack => prep.phase(Phase::Revoke, State::Succeeded, None),
            Outcome::Failed => prep.phase(Phase::Revoke, State::Failed, None),
            _ => {}
        }
        done.push(cx.end(&p.d.profile, outcome, &msg, None));
    }
}

/// Revoke every profile of `done` that this run activated (and that may be rolled back), newest first.
pub fn revoke_done(cx: &NodeCx, done: &mut [ProfileResult], why: &str) {
    let mut acts: Vec<usize> = (0..done.len())
        .filter(|&i| done[i].activated.as_ref().is_some_and(|a| a.auto_rollback))
        .collect();
    acts.sort_by_key(|&i| std::cmp::Reverse(done[i].seq));
    for i in acts {
        let Some(a) = done[i].activated.take() else { continue };
        let prep = cx.rep.for_profile(cx.node, &done[i].profile);
        let (outcome, msg) = revoke(&cx.runner, &prep, &a, why);
        done[i].outcome = outcome;
        done[i].message = msg;
    }
}

/// Undo a confirmed profile: switch back to the generation it replaced.
pub fn revoke(runner: &Runner, prep: &Reporter, a: &Activated, why: &str) -> (Outcome, String) {
    let Some(generation) = a.generation else {
        let msg = format!("{why}; cannot roll back: the agent did not report the new generation");
        prep.outcome(Outcome::Failed, &msg);
        return (Outcome::Failed, msg);
    };
    prep.phase(Phase::Revoke, State::Started, Some(why.to_string()));
    let args = agent::revoke_args(&a.profile, &a.closure, &a.temp_path, generation, a.previous);
    let reply = call_for(runner, prep, a, &args);
    let detail = match reply.statuses.last().and_then(|s| s.message.clone()) {
        Some(m) => m,
        None => reply.stderr.clone(),
    };
    let (outcome, msg) = revoke_outcome(reply.code, &detail, why);
    let state = if outcome == Outcome::RolledBack {
        State::Succeeded
    } else {
        State::Failed
    };
    prep.phase(Phase::Revoke, state, None);
    prep.outcome(outcome, &msg);
    (outcome, msg)
}
