//! The confirm phase: per host, one fresh login (never multiplexed through the master) confirms
//! every waiting profile of that host; when it fails, the master (if still up) tells what the
//! target did instead.

use super::outcome::unconfirmed_outcome;
use super::{call_for, groups, stdin_for, NodeCx, Pending, ProfileResult};
use crate::deploy::agent::{self, AgentStatus};
use crate::events::{Outcome, Phase, Reporter, State};
use crate::exec::{Role, Runner};
use crate::host::Host;
use crate::secret::Secret;
use crate::ssh;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub fn confirm(cx: &NodeCx, pending: Vec<Pending>, done: &mut Vec<ProfileResult>) {
    for hi in 0..cx.hosts.len() {
        let mine: Vec<&Pending> = pending.iter().filter(|p| p.host == hi).collect();
        if !mine.is_empty() {
            confirm_host(cx, hi, &pending, &mine, done);
        }
    }
}

/// The agent commands (one per user, temp path and agent) that confirm host `hi`'s waiting
/// profiles, and the password lines their elevations read from stdin.
fn confirm_commands(hi: usize, pending: &[Pending], verb: &str, wait: u64) -> (Vec<Vec<String>>, Option<Secret>) {
    let mut cmds = Vec::new();
    let mut lines = 0;
    let mut password = None;
    for ((_, _, temp, agent_bin), ps) in groups(pending).into_iter().filter(|(k, _)| k.0 == hi) {
        let ids: Vec<String> = ps.iter().map(|p| p.id.clone()).collect();
        let e = ps[0].act.elevation.as_ref();
        if e.is_some_and(|e| e.password_on_stdin) {
            lines += 1;
            password = ps[0].act.password.clone();
        }
        cmds.push(ssh::agent_command(
            e,
            &agent_bin,
            &agent::ids_args(verb, &temp, &ids, Some(wait)),
        ));
    }
    let stdin = if lines > 0 {
        stdin_for(password.as_deref(), lines)
    } else {
        None
    };
    (cmds, stdin)
}

fn confirm_host(cx: &NodeCx, hi: usize, pending: &[Pending], mine: &[&Pending], done: &mut Vec<ProfileResult>) {
    let host = &cx.hosts[hi];
    let (cmds, stdin) = confirm_commands(hi, pending, "confirm", 15);
    for p in mine {
        cx.rep.for_profile(cx.node, &p.d.profile).phase(
            Phase::Confirm,
            State::Started,
            Some("confirming over a fresh SSH connection".into()),
        );
    }
    let statuses = Mutex::new(Vec::new());
    let r = {
        // Until the login has ended, an interrupt kills it and settles these ids over the master.
        let _probes = crate::interrupt::confirming(abort_probes(cx, hi, pending));
        cx.runner.stream_as(
            Role::Confirm,
            &host.fresh(&cmds),
            stdin.as_deref(),
            &|line| match AgentStatus::parse_line(line) {
                Some(s) => statuses.lock().unwrap_or_else(|e| e.into_inner()).push(s),
                None => cx.rep.log(line),
            },
        )
    };
    let statuses = statuses.into_inner().unwrap_or_else(|e| e.into_inner());
    let (ok, err) = match &r {
        Ok((st, err)) => (st.success(), err.clone()),
        Err(e) => (false, e.to_string()),
    };
    let mut unconfirmed = Vec::new();
    for p in mine {
        let prep = cx.rep.for_profile(cx.node, &p.d.profile);
        let st = statuses.iter().rev().find(|s| s.id == p.id);
        if ok && st.is_some_and(|s| s.state == "confirmed") {
            prep.phase(Phase::Confirm, State::Succeeded, None);
            done.push(cx.end(
                &p.d.profile,
                Outcome::Deployed,
                "activated and confirmed",
                Some(p.act.clone()),
            ));
        } else {
            prep.phase(Phase::Confirm, State::Failed, None);
            unconfirmed.push((*p, st.map(|s| s.state.clone())));
        }
    }
    if !unconfirmed.is_empty() {
        let reason = match err.trim() {
            "" => "no confirmation".to_string(),
            e => e.lines().last().unwrap_or("").to_string(),
        };
        settle_unconfirmed(cx, &**host, unconfirmed, &reason, done);
    }
}

/// The fresh login failed (the activation broke SSH, networking or sudo) or the target had
/// already rolled back. The target rolls back by itself; learn how it ended over the master while
/// it still stands.
fn settle_unconfirmed(
    cx: &NodeCx,
    host: &dyn Host,
    unconfirmed: Vec<(&Pending, Option<String>)>,
    reason: &str,
    done: &mut Vec<ProfileResult>,
) {
    let max_wait = unconfirmed
        .iter()
        .map(|(p, _)| p.d.settings.confirm_timeout)
        .max()
        .unwrap_or(30)
        + 20;
    let deadline = Instant::now() + Duration::from_secs(max_wait);
    let quiet = Runner::new(Reporter::silent());
    for (p, mut state) in unconfirmed {
        let prep = cx.rep.for_profile(cx.node, &p.d.profile);
        let timeout = p.d.settings.confirm_timeout;
        prep.warn(format!(
            "confirmation over a fresh SSH connection to {} failed ({reason}); the target rolls back by itself within {timeout} s",
            host.name()
        ));
        let settled = |s: &Option<String>| matches!(s.as_deref(), Some("rolled-back" | "failed" | "confirmed"));
        while !settled(&state) && Instant::now() < deadline && host.alive() {
            let args = agent::ids_args("status", &p.act.temp_path, std::slice::from_ref(&p.id), None);
            if let Some(s) = call_for(&quiet, &prep, &p.act, &args).status_of(&p.id) {
                state = Some(s.state.clone());
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let (outcome, msg) = unconfirmed_outcome(state.as_deref(), reason, timeout);
        let activated = (outcome == Outcome::Deployed).then(|| p.act.clone());
        done.push(cx.end(&p.d.profile, outcome, &msg, activated));
    }
}

/// For an interrupt during the confirming login to host `hi`: one `abort` per group of its
/// waiting deploys, over the master (see [`crate::interrupt`]).
fn abort_probes(cx: &NodeCx, hi: usize, pending: &[Pending]) -> Vec<crate::interrupt::Probe> {
    groups(pending)
        .into_iter()
        .filter(|(k, _)| k.0 == hi)
        .map(|((_, _, temp, agent_bin), ps)| {
            let ids: Vec<String> = ps.iter().map(|p| p.id.clone()).collect();
            let e = ps[0].act.elevation.as_ref();
            let words = ssh::agent_command(e, &agent_bin, &agent::ids_args("abort", &temp, &ids, Some(5)));
            let stdin = ssh::Elevation::password_line(e, ps[0].act.password.as_deref()).map(Secret::new);
            crate::interrupt::Probe {
                argv: cx.hosts[hi].run(&words),
                stdin,
                ids: ps
                    .iter()
                    .map(|p| (cx.node.to_string(), p.d.profile.clone(), p.id.clone()))
                    .collect(),
            }
        })
        .collect()
}
