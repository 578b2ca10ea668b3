//! The activate phase: each profile of the node in order, through the agent. Earlier profiles keep
//! waiting for their confirmation (kept alive by a heartbeat) while later ones activate, so that
//! one fresh login confirms them all.

use super::outcome::{activation_failure, activation_success, ActivationEnd, FailureContext};
use super::push::Pushed;
use super::{agent_call, agent_reply, call_for, groups, Activated, AgentReply, NodeCx, Pending, ProfileResult};
use crate::deploy::agent::{self, elevation_of, profile_ref, ActivateArgs};
use crate::deploy::Shared;
use crate::events::{Outcome, Phase, Reporter, State};
use crate::exec::{Held, Runner};
use crate::plan::Deployment;
use crate::ssh;
use rollout_protocol::command::Origin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What the activate phase leaves for the settle step.
pub struct Activations<'a> {
    /// Activated, waiting for the confirmation.
    pub pending: Vec<Pending<'a>>,
    /// Ended (activated without magic rollback, dry-activated, or failed).
    pub done: Vec<ProfileResult>,
    /// Why the node stops early, if it does: "profile `x` failed" or "another node failed".
    pub failure: Option<String>,
}

/// One profile's activation, as the settle step needs it.
enum Step<'a> {
    Pending(Pending<'a>),
    Done(ProfileResult),
    Failed(ProfileResult),
}

/// What the push phase left: the profiles it found running their closure, confirmed (they end
/// unchanged without an agent call, as the agent would have ended them), and the first profile's
/// activate call, opened while it copied ([`HeldActivation`]).
pub fn activate_all<'a>(cx: &NodeCx, deps: &[&'a Deployment], pushed: Pushed) -> Activations<'a> {
    let Pushed { unchanged, mut held } = pushed;
    let mut act = Activations {
        pending: Vec::new(),
        done: Vec::new(),
        failure: None,
    };
    for d in deps {
        if cx.shared.stopping() {
            act.failure = Some("another node of this run failed".to_string());
            break;
        }
        if let Some(&n) = unchanged.get(&d.profile) {
            let prep = cx.rep.for_profile(cx.node, &d.profile);
            prep.phase(Phase::Activate, State::Started, None);
            prep.phase(Phase::Activate, State::Succeeded, Some("unchanged".into()));
            act.done
                .push(cx.end(&d.profile, Outcome::Unchanged, &unchanged_message(Some(n)), None));
            continue;
        }
        let mine = held.take_if(|h| h.profile == d.profile);
        match activate_one(cx, d, &act.pending, mine) {
            Step::Pending(p) => act.pending.push(p),
            Step::Done(r) => act.done.push(r),
            Step::Failed(r) => {
                act.failure = Some(format!("profile `{}` failed", r.profile));
                act.done.push(r);
                break;
            }
        }
    }
    act
}

/// The agent for one profile: the closure's own `rollout-agent` when it carries one (rollout's
/// Nix library puts it there, built for the target's system), else the run's shared agent.
pub fn agent_for(shared: &Shared, d: &Deployment) -> String {
    let inside = std::path::Path::new(&d.closure).join("rollout-agent");
    if !d.closure.is_empty() && !d.settings.remote_build && inside.exists() {
        inside.display().to_string()
    } else {
        agent::agent_bin(&shared.agent_path)
    }
}

fn activate_args(cx: &NodeCx, d: &Deployment) -> ActivateArgs {
    let opts = &cx.shared.opts;
    let magic_rollback = d.settings.magic_rollback && !opts.dry_activate && !opts.boot;
    ActivateArgs {
        id: agent::new_id(),
        closure: d.closure.clone().into(),
        profile: profile_ref(d).spec(),
        temp_path: d.settings.temp_path.clone().into(),
        confirm_timeout: d.settings.confirm_timeout,
        activation_timeout: d.settings.activation_bound(magic_rollback),
        magic_rollback,
        auto_rollback: d.settings.auto_rollback,
        dry_activate: opts.dry_activate,
        boot: opts.boot,
        debug: opts.debug_logs,
        // A rollback always activates: the closure it goes back to is by definition not current.
        skip_unchanged: !opts.reactivate && !opts.closures_on_target,
        // A rollback deploys a closure the target already had, not the flake's: it names no flake.
        origin: Origin {
            by: record_text(&opts.origin.by),
            flake: match opts.closures_on_target {
                true => String::new(),
                false => record_text(&d.flake),
            },
            rev: match opts.closures_on_target {
                true => String::new(),
                false => record_text(opts.revisions.get(&d.flake).map_or("", String::as_str)),
            },
            action: record_text(match opts.actions.get(&(d.node.clone(), d.profile.clone())) {
                Some(a) => a,
                None if opts.origin.action.is_empty() => "deploy",
                None => &opts.origin.action,
            }),
        },
    }
}

/// A value for the target's deploy record: what the agent accepts (at most 512 bytes, no control
/// characters), so that an unusual flake reference never fails a deploy.
fn record_text(s: &str) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).collect();
    while out.len() > 512 {
        out.pop();
    }
    out
}

fn activate_one<'a>(cx: &NodeCx, d: &'a Deployment, pending: &[Pending], held: Option<HeldActivation>) -> Step<'a> {
    let elevation = match elevation_of(d) {
        Ok(e) => e,
        Err(e) => return Step::Failed(cx.end(&d.profile, Outcome::Failed, &e, None)),
    };
    let password = if d.settings.elevate && d.settings.interactive_sudo {
        cx.shared.passwords.get(&d.settings.hostname).cloned()
    } else {
        None
    };
    let hi = cx.host_of(d);
    let host = &cx.hosts[hi];
    let agent_bin = agent_for(cx.shared, d);
    let args = held.as_ref().map_or_else(|| activate_args(cx, d), |h| h.args.clone());
    let prep = cx.rep.for_profile(cx.node, &d.profile);
    prep.phase(Phase::Activate, State::Started, None);
    // Keep earlier profiles of this node waiting while this one activates.
    let stop = AtomicBool::new(false);
    let reply = std::thread::scope(|s| {
        if !pending.is_empty() {
            s.spawn(|| heartbeat(&cx.rep, pending, &stop));
        }
        let call = || {
            agent_call(
                &cx.runner,
                &prep,
                &**host,
                elevation.as_ref(),
                password.as_deref(),
                &agent_bin,
                &agent::activate_args(&args),
            )
        };
        let r = match held {
            Some(h) => h.release(&prep, call),
            None => call(),
        };
        stop.store(true, Ordering::SeqCst);
        r
    });
    let status = reply.status_of(&args.id);
    let act = Activated {
        host: host.clone(),
        elevation: elevation.clone(),
        password,
        profile: profile_ref(d),
        temp_path: d.settings.temp_path.clone(),
        generation: status.and_then(|s| s.new_generation),
        previous: status.and_then(|s| s.previous_generation),
        auto_rollback: d.settings.auto_rollback,
        agent_bin: agent_bin.clone(),
        closure: d.closure.clone(),
    };
    match (reply.code, status.map(|s| s.state.as_str())) {
        (Some(0), Some("awaiting-confirmation")) => {
            prep.phase(Phase::Activate, State::Succeeded, None);
            Step::Pending(Pending {
                d,
                id: args.id.clone(),
                host: hi,
                act,
            })
        }
        (Some(0), Some("unchanged")) => {
            prep.phase(Phase::Activate, State::Succeeded, Some("unchanged".into()));
            let msg = unchanged_message(status.and_then(|s| s.previous_generation));
            Step::Done(cx.end(&d.profile, Outcome::Unchanged, &msg, None))
        }
        (Some(0), Some(_)) => {
            prep.phase(Phase::Activate, State::Succeeded, None);
            let opts = &cx.shared.opts;
            let (outcome, msg) = activation_success(opts.dry_activate, opts.boot);
            let activated = if opts.dry_activate { None } else { Some(act) };
            Step::Done(cx.end(&d.profile, outcome, msg, activated))
        }
        (code, state) => {
            prep.phase(Phase::Activate, State::Failed, None);
            let end = ActivationEnd {
                code,
                state,
                message: status.and_then(|s| s.message.as_deref()),
                stderr: &reply.stderr,
                elevated: elevation.is_some(),
                magic_rollback: args.magic_rollback,
            };
            let ctx = FailureContext {
                host: &d.endpoint.host.to_string(),
                ssh_user: &d.endpoint.user.to_string(),
                user: &d.settings.user,
                agent_bin: &agent_bin,
                confirm_timeout: d.settings.confirm_timeout,
            };
            let (outcome, msg) = activation_failure(&end, &ctx);
            Step::Failed(cx.end(&d.profile, outcome, &msg, None))
        }
    }
}

/// The first profile's activate call, opened during the push phase: its channel is set up while
/// the closures are copied (one round trip), and its command waits for one line on stdin before
/// it runs, so nothing reaches the target before the copy has succeeded. Dropped unreleased (the
/// copy failed, the profile was found unchanged, the node stops), its command sees the end of
/// its input and never runs. See docs/agent-protocol.md, "Round trips".
pub struct HeldActivation {
    profile: String,
    args: ActivateArgs,
    held: Held,
}

/// What the held command runs first on the target: wait for one line, then become the agent.
const HOLD: &str = "read -r _ && exec \"$@\"";

impl HeldActivation {
    /// The profile it activates.
    pub fn profile(&self) -> &str {
        &self.profile
    }

    /// Open `d`'s activate call now, held. None where it does not apply: this machine (no round
    /// trip to save), upload-keys (no activation), a sudo that reads a password on stdin.
    pub fn open(cx: &NodeCx, d: &Deployment) -> Option<HeldActivation> {
        let o = &cx.shared.opts;
        if o.local || o.keys_only {
            return None;
        }
        let elevation = elevation_of(d).ok()?;
        if elevation.as_ref().is_some_and(|e| e.password_on_stdin) {
            return None;
        }
        let args = activate_args(cx, d);
        let mut words: Vec<String> = vec!["sh".into(), "-c".into(), HOLD.into(), "rollout-held".into()];
        words.extend(ssh::agent_command(
            elevation.as_ref(),
            &agent_for(cx.shared, d),
            &agent::activate_args(&args),
        ));
        let held = cx.runner.hold(&cx.hosts[cx.host_of(d)].run(&words)).ok()?;
        Some(HeldActivation {
            profile: d.profile.clone(),
            args,
            held,
        })
    }

    /// Let the command run and read its reply. When ssh itself failed (exit 255 with no status
    /// line: the channel was refused, say), the agent never started: `call` makes the call anew.
    fn release(self, rep: &Reporter, call: impl FnOnce() -> AgentReply) -> AgentReply {
        let reply = agent_reply(rep, |on_line| self.held.release("go\n", on_line));
        if reply.code == Some(255) && reply.statuses.is_empty() {
            return call();
        }
        reply
    }
}

/// How an unchanged profile is reported, whether the agent or the push phase's query found it.
fn unchanged_message(generation: Option<u64>) -> String {
    format!(
        "unchanged: already runs this closure{}, confirmed; not re-activated (--reactivate does)",
        generation.map(|n| format!(" (generation {n})")).unwrap_or_default()
    )
}

/// Extend the confirmation window of the waiting profiles (a third of the shortest one, at least
/// every second) until `stop` is set.
pub(super) fn heartbeat(rep: &Reporter, pending: &[Pending], stop: &AtomicBool) {
    let every = pending
        .iter()
        .map(|p| p.d.settings.confirm_timeout)
        .min()
        .unwrap_or(30)
        .max(3)
        / 3;
    let quiet = Runner::new(Reporter::silent());
    let mut last: Option<Instant> = None;
    while !stop.load(Ordering::SeqCst) {
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(every)) {
            last = Some(Instant::now());
            for ((_, _, temp, _), ps) in groups(pending) {
                let ids: Vec<String> = ps.iter().map(|p| p.id.clone()).collect();
                call_for(&quiet, rep, &ps[0].act, &agent::ids_args("extend", &temp, &ids, None));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::record_text;

    #[test]
    fn record_values_fit_what_the_agent_accepts() {
        assert_eq!(record_text("git+file:///src?ref=main\n"), "git+file:///src?ref=main");
        let long = "é".repeat(400);
        let cut = record_text(&long);
        assert!(cut.len() <= 512 && cut.chars().all(|c| c == 'é'), "{}", cut.len());
        assert_eq!(record_text(""), "");
    }
}
