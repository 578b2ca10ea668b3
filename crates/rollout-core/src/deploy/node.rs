//! One node: connect (one master per endpoint), copy its closures and the agent, build remote
//! profiles, activate its profiles in order through the agent, then confirm them all over ONE
//! fresh connection. Failures abort the node's pending profiles on the target.

use super::agent::{self, ActivateArgs, AgentStatus, ProfileRef};
use super::build;
use super::connection::Master;
use super::Shared;
use crate::events::{Outcome, Phase, Reporter, State};
use crate::exec::{Role, Runner};
use crate::nix;
use crate::plan::Deployment;
use crate::secret::Secret;
use crate::ssh::{self, Elevation, Endpoint};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// What the run needs to know to undo an activated profile later (rollback-succeeded).
#[derive(Debug, Clone)]
pub struct Activated {
    pub endpoint: Endpoint,
    pub elevation: Option<Elevation>,
    pub password: Option<Secret>,
    pub profile: ProfileRef,
    pub temp_path: String,
    pub generation: Option<u64>,
    pub previous: Option<u64>,
    pub auto_rollback: bool,
    /// The agent that activated this profile; later calls (confirm, abort, revoke) use it too.
    pub agent_bin: String,
    pub closure: String,
}

#[derive(Debug, Clone)]
pub struct ProfileResult {
    pub node: String,
    pub profile: String,
    pub outcome: Outcome,
    pub message: String,
    /// Set when the profile is active on the target after this run's activation.
    pub activated: Option<Activated>,
    /// Order in which profiles were confirmed across the run (for reverse-order revocation).
    pub seq: u64,
}

pub struct NodeRun {
    pub node: String,
    pub results: Vec<ProfileResult>,
    pub masters: Vec<Master>,
}

impl NodeRun {
    pub fn failed(&self) -> bool {
        self.results
            .iter()
            .any(|r| matches!(r.outcome, Outcome::Failed | Outcome::RolledBack | Outcome::Skipped))
    }
}

struct Pending<'a> {
    d: &'a Deployment,
    id: String,
    act: Activated,
}

fn elevation_of(d: &Deployment) -> Result<Option<Elevation>, String> {
    if !d.settings.elevate {
        return Ok(None);
    }
    Elevation::from_setting(&d.settings.sudo, &d.settings.user, d.settings.interactive_sudo)
        .map(Some)
        .map_err(|e| format!("node `{}`, profile `{}`: {e}", d.node, d.profile))
}

fn endpoint_of(d: &Deployment) -> Endpoint {
    d.endpoint.clone()
}

/// The agent for one profile: the closure's own `rollout-agent` when it carries one (rollout's
/// Nix library puts it there, built for the target's system), else the run's shared agent.
fn agent_for(shared: &Shared, d: &Deployment) -> String {
    let inside = std::path::Path::new(&d.closure).join("rollout-agent");
    if !d.settings.remote_build && inside.exists() {
        inside.display().to_string()
    } else {
        agent::agent_bin(&shared.agent_path)
    }
}

fn profile_ref(d: &Deployment) -> ProfileRef {
    match &d.settings.profile_path {
        Some(p) => ProfileRef::Path(p.clone()),
        None => ProfileRef::Named {
            user: d.settings.user.clone(),
            name: d.profile.clone(),
        },
    }
}

/// The password line(s) fed to the remote command's stdin, one per elevated command.
fn stdin_for(password: Option<&str>, count: usize) -> Option<Secret> {
    password.map(|p| Secret::new(format!("{p}\n").repeat(count.max(1))))
}

/// How a failed `activate` call ended, as the deployer saw it.
struct ActivationEnd<'a> {
    /// The agent call's exit code (`None`: ended by a signal).
    code: Option<i32>,
    /// The agent's last reported state for this deploy, if it reported one.
    state: Option<&'a str>,
    message: Option<&'a str>,
    stderr: &'a str,
    /// The agent ran under sudo (or another elevation).
    elevated: bool,
    magic_rollback: bool,
}

/// Names for the messages.
struct FailureContext<'a> {
    host: &'a str,
    ssh_user: &'a str,
    user: &'a str,
    agent_bin: &'a str,
    confirm_timeout: u64,
}

/// The outcome of a failed activation and what to tell the user: pure, so that every way an
/// activation can end is covered by one table test. "Rolled back" only when the agent said so, or
/// when magic rollback makes it certain (nothing will ever confirm).
fn activation_failure(e: &ActivationEnd, c: &FailureContext) -> (Outcome, String) {
    let silent = e.state.is_none();
    let detail = match e.message.filter(|m| !m.is_empty()) {
        Some(m) => m.to_string(),
        None if e.stderr.trim().is_empty() => agent_exit_text(e.code),
        None => e.stderr.trim().to_string(),
    };
    let host = c.host;
    if silent && protocol_mismatch(e.code, e.stderr) {
        return (Outcome::Failed, format!(
            "the agent {} on {host} does not speak this rollout's agent protocol {} ({detail}); nothing was changed there. Deploy with the agent of the same rollout version (--agent, or build the profile with this rollout's lib)",
            c.agent_bin,
            rollout_protocol::PROTOCOL_VERSION
        ));
    }
    if silent && e.elevated && sudo_refused(e.stderr) {
        return (Outcome::Failed, format!(
            "sudo on {host} refused to run the agent as {} for {}@{host} ({detail}); the activation never started and the profile is unchanged. Check the password (interactiveSudo, ROLLOUT_SUDO_PASSWORD_<NODE>, --sudo-password-command) or the sudoers rule",
            c.user, c.ssh_user
        ));
    }
    // The remote shell's "cannot execute" (126) / "not found" (127): the agent never ran.
    if silent && matches!(e.code, Some(126) | Some(127)) {
        return (Outcome::Failed, format!(
            "the agent {} could not run on {host} ({detail}); nothing was changed there. If the target's system differs from this machine's, build the profile with rollout's lib.<system>.activate.* (it puts an agent built for the target into the closure) or pass --agent with a rollout-agent store path built for the target",
            c.agent_bin
        ));
    }
    // ssh exits 255 when the connection itself fails; with no status line we never heard the
    // agent's verdict, but the agent goes on without us.
    if silent && e.code == Some(255) {
        return if e.magic_rollback {
            (Outcome::RolledBack, format!("lost the SSH connection to {host} during activation ({detail}); nothing will confirm it, so the target rolls back by itself within {} s of activating", c.confirm_timeout))
        } else {
            (Outcome::Failed, format!("lost the SSH connection to {host} during activation ({detail}); the activation goes on there and its result is unknown (magic rollback is off)"))
        };
    }
    if e.state == Some("rolled-back") {
        return (
            Outcome::RolledBack,
            format!("activation failed and was rolled back on the target: {detail}"),
        );
    }
    (Outcome::Failed, format!("activation failed: {detail}"))
}

/// How an agent call ended when it said nothing: its exit status, or the signal that ended it.
fn agent_exit_text(code: Option<i32>) -> String {
    match code {
        Some(n) => format!("the agent exited with status {n} without reporting a state"),
        None => "the agent was ended by a signal before reporting a state".to_string(),
    }
}

/// An agent of another protocol version refused before touching anything: a current agent says so
/// with its own exit code; one from before protocol versions rejects the `--protocol` word itself.
fn protocol_mismatch(code: Option<i32>, stderr: &str) -> bool {
    (code == Some(rollout_protocol::PROTOCOL_MISMATCH_EXIT) && stderr.contains("protocol mismatch"))
        || (code == Some(2) && stderr.contains("--protocol"))
}

/// sudo's own words when it will not run the command: a wrong or missing password, or a rule that
/// needs a terminal. The agent never started, so nothing on the target changed.
fn sudo_refused(stderr: &str) -> bool {
    [
        "incorrect password attempt",
        "Sorry, try again",
        "a password is required",
        "a terminal is required",
    ]
    .iter()
    .any(|m| stderr.contains(m))
}

/// Run an agent command through the master; returns exit code, status lines, stderr tail.
fn agent_call(
    runner: &Runner,
    rep: &Reporter,
    master: &Master,
    elevation: Option<&Elevation>,
    password: Option<&str>,
    agent_bin: &str,
    args: &[String],
) -> Result<(Option<i32>, Vec<AgentStatus>, String), String> {
    let words = ssh::agent_command(elevation, agent_bin, args);
    let argv = ssh::via_master(&master.endpoint, &master.socket, &words);
    let statuses = std::sync::Mutex::new(Vec::new());
    let stdin = if elevation.is_some_and(|e| e.password_on_stdin) {
        stdin_for(password, 1)
    } else {
        None
    };
    let (st, err) = runner
        .stream(&argv, stdin.as_deref(), &|line| match AgentStatus::parse_line(line) {
            Some(s) => statuses.lock().unwrap().push(s),
            None => rep.log(line),
        })
        .map_err(|e| e.to_string())?;
    Ok((st.code(), statuses.into_inner().unwrap(), err))
}

pub fn run_node(shared: &Shared, node: &str, deps: &[&Deployment]) -> NodeRun {
    let rep = shared.runner.reporter.for_node(node);
    let runner = Runner::new(rep.clone());
    let mut run = NodeRun {
        node: node.to_string(),
        results: Vec::new(),
        masters: Vec::new(),
    };
    // Every profile of the node that has no result yet gets this one.
    let fail_all = |run: &mut NodeRun, outcome: Outcome, msg: &str| {
        for d in deps {
            if !run.results.iter().any(|r| r.profile == d.profile) {
                let r = ProfileResult {
                    node: node.into(),
                    profile: d.profile.clone(),
                    outcome,
                    message: msg.to_string(),
                    activated: None,
                    seq: 0,
                };
                rep.for_profile(node, &d.profile).outcome(outcome, msg);
                run.results.push(r);
            }
        }
    };

    // Connect: one master per distinct endpoint of this node.
    let mut endpoints: Vec<Endpoint> = Vec::new();
    for d in deps {
        let ep = endpoint_of(d);
        if !endpoints.contains(&ep) {
            endpoints.push(ep);
        }
    }
    for ep in &endpoints {
        let idx = shared.next_socket.fetch_add(1, Ordering::SeqCst);
        match Master::open(&runner, &rep, ep, &shared.sockets.path, idx) {
            Ok(m) => run.masters.push(m),
            Err(e) => {
                fail_all(&mut run, Outcome::Failed, &e.to_string());
                return run;
            }
        }
    }
    let master_for = |d: &Deployment| run_master_index(&endpoints, &endpoint_of(d));

    // Copy (and remote builds), per endpoint.
    for (i, ep) in endpoints.iter().enumerate() {
        let socket = run.masters[i].socket.clone();
        let mine: Vec<&&Deployment> = deps.iter().filter(|d| &endpoint_of(d) == ep).collect();
        let opts = match shared.ctx.sshopts_env(&ssh::nix_sshopts(ep, &socket)) {
            Ok(o) => o,
            Err(e) => {
                fail_all(&mut run, Outcome::Failed, &e);
                return run;
            }
        };
        let mut paths: Vec<String> = mine
            .iter()
            .filter(|d| !d.settings.remote_build)
            .map(|d| d.closure.clone())
            .collect();
        if mine
            .iter()
            .any(|d| agent_for(shared, d) == agent::agent_bin(&shared.agent_path))
        {
            paths.push(shared.agent_path.clone());
        }
        let substitute = !mine.iter().all(|d| d.settings.fast_connection);
        rep.phase(
            Phase::Copy,
            State::Started,
            Some(format!("copying {} path(s) to {}", paths.len(), ep.host)),
        );
        let copy = nix::copy_to(
            &nix::store_uri(nix::StoreScheme::Ssh, &ep.user, &ep.host),
            &paths,
            substitute,
            shared.opts.checksigs,
            &opts,
        );
        match super::copy::run_copy(&runner, &rep, &copy, &shared.nar_sizes) {
            Ok(st) => {
                let msg = if st.paths == 0 {
                    "all paths already present".to_string()
                } else {
                    format!("copied {} path(s), {}", st.paths, super::copy::human_bytes(st.bytes))
                };
                rep.phase(Phase::Copy, State::Succeeded, Some(msg));
            }
            Err(e) => {
                rep.phase(Phase::Copy, State::Failed, None);
                fail_all(
                    &mut run,
                    Outcome::Failed,
                    &format!(
                        "copying {} path(s) to {} failed, so nothing was activated there and its profiles are unchanged: {}",
                        paths.len(),
                        ep.host,
                        e.trim()
                    ),
                );
                return run;
            }
        }
        let remote: Vec<String> = mine
            .iter()
            .filter(|d| d.settings.remote_build)
            .map(|d| build::installable(shared.mode, d))
            .collect();
        if !remote.is_empty() {
            rep.phase(
                Phase::Build,
                State::Started,
                Some(format!("building {} profile(s) on {}", remote.len(), ep.host)),
            );
            let argv = shared.ctx.build_remote(
                &nix::store_uri(nix::StoreScheme::SshNg, &ep.user, &ep.host),
                &remote,
                &opts,
            );
            let argv = if shared.mode == super::evaluate::Mode::File {
                // `nix build -f FILE ATTR…` reads the same file as the local non-flake build.
                let mut a = argv;
                let pos = a.args.iter().position(|x| x == "--store").unwrap_or(0);
                a.args.insert(pos, mine[0].flake.clone());
                a.args.insert(pos, "-f".into());
                a
            } else {
                argv
            };
            if let Err(e) = runner.checked(&argv, "remote build") {
                rep.phase(Phase::Build, State::Failed, None);
                fail_all(
                    &mut run,
                    Outcome::Failed,
                    &format!("building on {} failed: {}", ep.host, e.stderr().trim()),
                );
                return run;
            }
            rep.phase(Phase::Build, State::Succeeded, None);
        }
    }

    let opts = &shared.opts;
    let mut pending: Vec<Pending> = Vec::new();
    let mut done: Vec<ProfileResult> = Vec::new();
    // Why this node stops early, if it does: "profile `x` failed" or "another node failed".
    let mut failure: Option<String> = None;

    for d in deps.iter() {
        if shared.stopping() {
            failure = Some("another node of this run failed".to_string());
            break;
        }
        let prep = rep.for_profile(node, &d.profile);
        let elevation = match elevation_of(d) {
            Ok(e) => e,
            Err(e) => {
                failure = Some(format!("profile `{}` failed", d.profile));
                prep.outcome(Outcome::Failed, e);
                done.push(ProfileResult {
                    node: node.into(),
                    profile: d.profile.clone(),
                    outcome: Outcome::Failed,
                    message: String::new(),
                    activated: None,
                    seq: 0,
                });
                break;
            }
        };
        let password = if d.settings.elevate && d.settings.interactive_sudo {
            shared.passwords.get(&d.settings.hostname).cloned()
        } else {
            None
        };
        let master = &run.masters[master_for(d)];
        let agent_bin = agent_for(shared, d);
        let args = ActivateArgs {
            id: agent::new_id(),
            closure: d.closure.clone().into(),
            profile: profile_ref(d).spec(),
            temp_path: d.settings.temp_path.clone().into(),
            confirm_timeout: d.settings.confirm_timeout,
            activation_timeout: d.settings.activation_timeout,
            magic_rollback: d.settings.magic_rollback && !opts.dry_activate && !opts.boot,
            auto_rollback: d.settings.auto_rollback,
            dry_activate: opts.dry_activate,
            boot: opts.boot,
            debug: opts.debug_logs,
        };
        prep.phase(Phase::Activate, State::Started, None);
        // Keep earlier profiles of this node waiting while this one activates: their
        // confirmation comes with this one's, over one fresh connection.
        let stop = AtomicBool::new(false);
        let result = std::thread::scope(|s| {
            if !pending.is_empty() {
                s.spawn(|| heartbeat(&rep, &run.masters, &endpoints, &pending, &stop));
            }
            let r = agent_call(
                &runner,
                &prep,
                master,
                elevation.as_ref(),
                password.as_deref(),
                &agent_bin,
                &agent::activate_args(&args),
            );
            stop.store(true, Ordering::SeqCst);
            r
        });
        let (code, statuses, err) = match result {
            Ok(x) => x,
            Err(e) => (None, Vec::new(), e),
        };
        let status = statuses.into_iter().rev().find(|s| s.id == args.id);
        let act = Activated {
            endpoint: master.endpoint.clone(),
            elevation: elevation.clone(),
            password: password.clone(),
            profile: profile_ref(d),
            temp_path: d.settings.temp_path.clone(),
            generation: status.as_ref().and_then(|s| s.new_generation),
            previous: status.as_ref().and_then(|s| s.previous_generation),
            auto_rollback: d.settings.auto_rollback,
            agent_bin: agent_bin.clone(),
            closure: d.closure.clone(),
        };
        match (code, status.as_ref().map(|s| s.state.as_str())) {
            (Some(0), Some("awaiting-confirmation")) => {
                prep.phase(Phase::Activate, State::Succeeded, None);
                pending.push(Pending {
                    d,
                    id: args.id.clone(),
                    act,
                });
            }
            (Some(0), Some(_)) => {
                prep.phase(Phase::Activate, State::Succeeded, None);
                let (outcome, msg) = if opts.dry_activate {
                    (Outcome::DryActivated, "dry activation succeeded")
                } else if opts.boot {
                    (Outcome::Booted, "activated for the next boot")
                } else {
                    (Outcome::Deployed, "activated")
                };
                prep.outcome(outcome, msg);
                done.push(ProfileResult {
                    node: node.into(),
                    profile: d.profile.clone(),
                    outcome,
                    message: msg.into(),
                    activated: if opts.dry_activate { None } else { Some(act) },
                    seq: shared.seq(),
                });
            }
            (_, st) => {
                prep.phase(Phase::Activate, State::Failed, None);
                let end = ActivationEnd {
                    code,
                    state: st,
                    message: status.as_ref().and_then(|s| s.message.as_deref()),
                    stderr: &err,
                    elevated: elevation.is_some(),
                    magic_rollback: args.magic_rollback,
                };
                let ctx = FailureContext {
                    host: &master.endpoint.host.to_string(),
                    ssh_user: &master.endpoint.user.to_string(),
                    user: &d.settings.user,
                    agent_bin: &agent_bin,
                    confirm_timeout: d.settings.confirm_timeout,
                };
                let (outcome, msg) = activation_failure(&end, &ctx);
                prep.outcome(outcome, &msg);
                done.push(ProfileResult {
                    node: node.into(),
                    profile: d.profile.clone(),
                    outcome,
                    message: msg.clone(),
                    activated: None,
                    seq: 0,
                });
                failure = Some(format!("profile `{}` failed", d.profile));
                break;
            }
        }
    }

    if failure.is_none() && !pending.is_empty() && shared.stopping() {
        // Another node failed while this one activated: undo rather than confirm and revoke.
        failure = Some("another node of this run failed".to_string());
    }
    if let Some(why) = failure {
        // Undo this node's earlier profiles: pending ones are aborted on the target; already
        // activated ones (no magic rollback) are revoked, newest first. With
        // --rollback-succeeded false the earlier profiles stay: pending ones are confirmed
        // (deploy-rs confirms each profile before activating the next one).
        if opts.rollback_succeeded {
            abort_pending(&runner, &rep, node, &run.masters, &endpoints, &pending, &mut done, &why);
        } else if !pending.is_empty() {
            confirm(
                shared,
                &runner,
                &rep,
                node,
                &mut run.masters,
                &endpoints,
                pending,
                &mut done,
            );
        }
        if opts.rollback_succeeded && !opts.dry_activate {
            let mut acts: Vec<usize> = (0..done.len())
                .filter(|&i| done[i].activated.is_some() && done[i].outcome != Outcome::RolledBack)
                .collect();
            acts.reverse();
            for i in acts {
                let a = done[i].activated.clone().unwrap();
                if !a.auto_rollback {
                    continue;
                }
                let m = &run.masters[run_master_index(&endpoints, &a.endpoint)];
                let (outcome, msg) = revoke(&runner, &rep.for_profile(node, &done[i].profile), m, &a, &why);
                done[i].outcome = outcome;
                done[i].message = msg;
                done[i].activated = None;
            }
        }
        run.results = done;
        fail_all(&mut run, Outcome::Skipped, &format!("not started: {why}"));
        return run;
    }

    if !pending.is_empty() {
        confirm(
            shared,
            &runner,
            &rep,
            node,
            &mut run.masters,
            &endpoints,
            pending,
            &mut done,
        );
    }
    run.results = done;
    run
}

fn run_master_index(endpoints: &[Endpoint], ep: &Endpoint) -> usize {
    endpoints.iter().position(|e| e == ep).unwrap_or(0)
}

type GroupKey = (usize, String, String, String);

/// Group pending deploys by (endpoint, user, temp path, agent): one agent call per group.
fn groups<'a, 'b>(endpoints: &[Endpoint], pending: &'b [Pending<'a>]) -> BTreeMap<GroupKey, Vec<&'b Pending<'a>>> {
    let mut g: BTreeMap<GroupKey, Vec<&Pending>> = BTreeMap::new();
    for p in pending {
        let user = p.act.elevation.as_ref().map(|e| e.user.clone()).unwrap_or_default();
        let key = (
            run_master_index(endpoints, &p.act.endpoint),
            user,
            p.act.temp_path.clone(),
            p.act.agent_bin.clone(),
        );
        g.entry(key).or_default().push(p);
    }
    g
}

fn heartbeat(rep: &Reporter, masters: &[Master], endpoints: &[Endpoint], pending: &[Pending], stop: &AtomicBool) {
    let every = pending
        .iter()
        .map(|p| p.d.settings.confirm_timeout)
        .min()
        .unwrap_or(30)
        .max(3)
        / 3;
    let quiet = Runner::new(Reporter::silent());
    let mut last = std::time::Instant::now() - Duration::from_secs(every);
    while !stop.load(Ordering::SeqCst) {
        if last.elapsed() >= Duration::from_secs(every) {
            last = std::time::Instant::now();
            for ((mi, _, temp, agent_bin), ps) in groups(endpoints, pending) {
                let ids: Vec<String> = ps.iter().map(|p| p.id.clone()).collect();
                let first = ps[0];
                let _ = agent_call(
                    &quiet,
                    rep,
                    &masters[mi],
                    first.act.elevation.as_ref(),
                    first.act.password.as_deref(),
                    &agent_bin,
                    &agent::ids_args("extend", &temp, &ids, None),
                );
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Roll back this node's profiles that still wait for confirmation, newest first, one at a
/// time: the reverse of the order they were activated in.
#[allow(clippy::too_many_arguments)]
fn abort_pending(
    runner: &Runner,
    rep: &Reporter,
    node: &str,
    masters: &[Master],
    endpoints: &[Endpoint],
    pending: &[Pending],
    done: &mut Vec<ProfileResult>,
    why: &str,
) {
    for p in pending.iter().rev() {
        let prep = rep.for_profile(node, &p.d.profile);
        prep.phase(Phase::Revoke, State::Started, Some(why.to_string()));
        let master = &masters[run_master_index(endpoints, &p.act.endpoint)];
        let args = agent::ids_args("abort", &p.act.temp_path, std::slice::from_ref(&p.id), Some(300));
        let r = agent_call(
            runner,
            &prep,
            master,
            p.act.elevation.as_ref(),
            p.act.password.as_deref(),
            &p.act.agent_bin,
            &args,
        );
        let state = r
            .ok()
            .and_then(|(_, st, _)| st.into_iter().find(|s| s.id == p.id))
            .map(|s| s.state);
        let (outcome, msg) = match state.as_deref() {
            Some("rolled-back") => {
                prep.phase(Phase::Revoke, State::Succeeded, None);
                (Outcome::RolledBack, format!("rolled back because {why}"))
            }
            Some("failed") => {
                prep.phase(Phase::Revoke, State::Failed, None);
                (
                    Outcome::Failed,
                    format!("{why}, and rolling this profile back failed too; see the agent log on the target"),
                )
            }
            _ => (
                Outcome::RolledBack,
                format!("{why}; not confirmed, so the target rolls back by itself"),
            ),
        };
        prep.outcome(outcome, &msg);
        done.push(ProfileResult {
            node: node.into(),
            profile: p.d.profile.clone(),
            outcome,
            message: msg,
            activated: None,
            seq: 0,
        });
    }
}

/// Undo a confirmed profile: switch back to the generation it replaced.
pub fn revoke(runner: &Runner, prep: &Reporter, master: &Master, a: &Activated, why: &str) -> (Outcome, String) {
    let Some(generation) = a.generation else {
        return (
            Outcome::Failed,
            format!("{why}; cannot roll back: the agent did not report the new generation"),
        );
    };
    prep.phase(Phase::Revoke, State::Started, Some(why.to_string()));
    let r = agent_call(
        runner,
        prep,
        master,
        a.elevation.as_ref(),
        a.password.as_deref(),
        &a.agent_bin,
        &agent::revoke_args(&a.profile, &a.closure, &a.temp_path, generation, a.previous),
    );
    match r {
        Ok((Some(0), _, _)) => {
            prep.phase(Phase::Revoke, State::Succeeded, None);
            let msg = format!("rolled back because {why}");
            prep.outcome(Outcome::RolledBack, &msg);
            (Outcome::RolledBack, msg)
        }
        Ok((_, st, err)) => {
            prep.phase(Phase::Revoke, State::Failed, None);
            let detail = st.last().and_then(|s| s.message.clone()).unwrap_or(err);
            let msg = format!("{why}; rolling this profile back failed: {}", detail.trim());
            prep.outcome(Outcome::Failed, &msg);
            (Outcome::Failed, msg)
        }
        Err(e) => {
            let msg = format!("{why}; rolling this profile back failed: {e}");
            prep.outcome(Outcome::Failed, &msg);
            (Outcome::Failed, msg)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn confirm(
    shared: &Shared,
    runner: &Runner,
    rep: &Reporter,
    node: &str,
    masters: &mut [Master],
    endpoints: &[Endpoint],
    pending: Vec<Pending>,
    done: &mut Vec<ProfileResult>,
) {
    for (mi, ep) in endpoints.iter().enumerate() {
        let mine: Vec<&Pending> = pending.iter().filter(|p| &p.act.endpoint == ep).collect();
        if mine.is_empty() {
            continue;
        }
        let mut cmds = Vec::new();
        let mut password_lines = 0;
        let mut password = None;
        for ((_, _, temp, agent_bin), ps) in groups(endpoints, &pending).into_iter().filter(|(k, _)| k.0 == mi) {
            let ids: Vec<String> = ps.iter().map(|p| p.id.clone()).collect();
            let e = ps[0].act.elevation.as_ref();
            if e.is_some_and(|e| e.password_on_stdin) {
                password_lines += 1;
                password = ps[0].act.password.clone();
            }
            cmds.push(ssh::agent_command(
                e,
                &agent_bin,
                &agent::ids_args("confirm", &temp, &ids, Some(15)),
            ));
        }
        for p in &mine {
            rep.for_profile(node, &p.d.profile).phase(
                Phase::Confirm,
                State::Started,
                Some("confirming over a fresh SSH connection".into()),
            );
        }
        let argv = ssh::fresh_many(ep, &cmds);
        let statuses = std::sync::Mutex::new(Vec::new());
        let stdin = if password_lines > 0 {
            stdin_for(password.as_deref(), password_lines)
        } else {
            None
        };
        // Until the login has ended, an interrupt kills it and settles these ids over the master.
        let _probes = crate::interrupt::confirming(abort_probes(endpoints, &masters[mi], &pending, node));
        let r = runner.stream_as(
            Role::Confirm,
            &argv,
            stdin.as_deref(),
            &|line| match AgentStatus::parse_line(line) {
                Some(s) => statuses.lock().unwrap().push(s),
                None => rep.log(line),
            },
        );
        let statuses = statuses.into_inner().unwrap();
        let (ok, err) = match &r {
            Ok((st, err)) => (st.success(), err.clone()),
            Err(e) => (false, e.to_string()),
        };
        let mut unconfirmed = Vec::new();
        for p in &mine {
            let prep = rep.for_profile(node, &p.d.profile);
            let st = statuses.iter().find(|s| s.id == p.id);
            if ok && st.is_some_and(|s| s.state == "confirmed") {
                prep.phase(Phase::Confirm, State::Succeeded, None);
                prep.outcome(Outcome::Deployed, "activated and confirmed");
                done.push(ProfileResult {
                    node: node.into(),
                    profile: p.d.profile.clone(),
                    outcome: Outcome::Deployed,
                    message: "activated and confirmed".into(),
                    activated: Some(p.act.clone()),
                    seq: shared.seq(),
                });
            } else {
                prep.phase(Phase::Confirm, State::Failed, None);
                unconfirmed.push((*p, st.cloned()));
            }
        }
        if unconfirmed.is_empty() {
            continue;
        }
        // The fresh connection failed (the activation broke SSH, networking or sudo) or the
        // target had already rolled back. The target rolls back by itself; learn the outcome
        // over the master if it still stands.
        let reason = if err.trim().is_empty() {
            "no confirmation".to_string()
        } else {
            err.trim().lines().last().unwrap_or("").to_string()
        };
        let max_wait = unconfirmed
            .iter()
            .map(|(p, _)| p.d.settings.confirm_timeout)
            .max()
            .unwrap_or(30)
            + 20;
        let deadline = std::time::Instant::now() + Duration::from_secs(max_wait);
        for (p, st) in unconfirmed {
            let prep = rep.for_profile(node, &p.d.profile);
            prep.warn(format!("confirmation over a fresh SSH connection to {} failed ({reason}); the target rolls back by itself within {} s", ep.host, p.d.settings.confirm_timeout));
            let mut final_state = st.map(|s| s.state);
            while !matches!(
                final_state.as_deref(),
                Some("rolled-back") | Some("failed") | Some("confirmed")
            ) && std::time::Instant::now() < deadline
                && masters[mi].alive()
            {
                let quiet = Runner::new(Reporter::silent());
                if let Ok((_, s, _)) = agent_call(
                    &quiet,
                    &prep,
                    &masters[mi],
                    p.act.elevation.as_ref(),
                    p.act.password.as_deref(),
                    &p.act.agent_bin,
                    &agent::ids_args("status", &p.act.temp_path, std::slice::from_ref(&p.id), None),
                ) {
                    if let Some(s) = s.into_iter().find(|s| s.id == p.id) {
                        final_state = Some(s.state);
                    }
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            let (outcome, msg) = match final_state.as_deref() {
                Some("rolled-back") => (
                    Outcome::RolledBack,
                    format!("not confirmed ({reason}); the target has rolled back"),
                ),
                Some("confirmed") => (Outcome::Deployed, "confirmed".to_string()),
                _ => (
                    Outcome::RolledBack,
                    format!("not confirmed ({reason}); the target will roll back by itself"),
                ),
            };
            prep.outcome(outcome, &msg);
            let activated = if outcome == Outcome::Deployed {
                Some(p.act.clone())
            } else {
                None
            };
            done.push(ProfileResult {
                node: node.into(),
                profile: p.d.profile.clone(),
                outcome,
                message: msg,
                activated,
                seq: shared.seq(),
            });
        }
    }
}

/// For an interrupt during the confirming login to this master's endpoint: one `abort` per group
/// of its pending deploys, over the master (see [`crate::interrupt`]).
fn abort_probes(
    endpoints: &[Endpoint],
    master: &Master,
    pending: &[Pending],
    node: &str,
) -> Vec<crate::interrupt::Probe> {
    let mi = run_master_index(endpoints, &master.endpoint);
    groups(endpoints, pending)
        .into_iter()
        .filter(|(k, _)| k.0 == mi)
        .map(|((_, _, temp, agent_bin), ps)| {
            let ids: Vec<String> = ps.iter().map(|p| p.id.clone()).collect();
            let e = ps[0].act.elevation.as_ref();
            let words = ssh::agent_command(e, &agent_bin, &agent::ids_args("abort", &temp, &ids, Some(5)));
            let stdin = if e.is_some_and(|e| e.password_on_stdin) {
                stdin_for(ps[0].act.password.as_deref(), 1)
            } else {
                None
            };
            crate::interrupt::Probe {
                argv: ssh::via_master(&master.endpoint, &master.socket, &words),
                stdin,
                ids: ps
                    .iter()
                    .map(|p| (node.to_string(), p.d.profile.clone(), p.id.clone()))
                    .collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_exits_are_described_in_words() {
        assert_eq!(
            agent_exit_text(Some(1)),
            "the agent exited with status 1 without reporting a state"
        );
        assert!(agent_exit_text(None).contains("ended by a signal"));
        assert!(!agent_exit_text(None).contains("None"));
    }

    /// Every way a failed activation can end → outcome and the words that say it.
    #[test]
    fn failed_activation_outcomes_table() {
        let c = FailureContext {
            host: "host1",
            ssh_user: "deploy",
            user: "root",
            agent_bin: "/nix/store/a/bin/rollout-agent",
            confirm_timeout: 30,
        };
        let end = |code, state, message, stderr, elevated, magic_rollback| ActivationEnd {
            code,
            state,
            message,
            stderr,
            elevated,
            magic_rollback,
        };
        let rows: Vec<(ActivationEnd, Outcome, &str)> = vec![
            (
                end(Some(3), Some("rolled-back"), Some("script exited 1"), "", true, true),
                Outcome::RolledBack,
                "activation failed and was rolled back on the target: script exited 1",
            ),
            (
                end(Some(1), Some("failed"), Some("no auto-rollback"), "", true, true),
                Outcome::Failed,
                "activation failed: no auto-rollback",
            ),
            (
                end(Some(1), Some("failed"), None, "", false, false),
                Outcome::Failed,
                "activation failed: the agent exited with status 1",
            ),
            (
                end(Some(255), None, None, "Connection closed", true, true),
                Outcome::RolledBack,
                "nothing will confirm it, so the target rolls back by itself within 30 s",
            ),
            (
                end(Some(255), None, None, "Connection closed", true, false),
                Outcome::Failed,
                "its result is unknown (magic rollback is off)",
            ),
            (
                end(Some(127), None, None, "not found", false, true),
                Outcome::Failed,
                "could not run on host1 (not found); nothing was changed there",
            ),
            (
                end(Some(126), None, None, "Exec format error", false, true),
                Outcome::Failed,
                "could not run on host1",
            ),
            (
                end(
                    Some(1),
                    None,
                    None,
                    "Sorry, try again.\nsudo: 1 incorrect password attempt",
                    true,
                    true,
                ),
                Outcome::Failed,
                "sudo on host1 refused to run the agent as root for deploy@host1",
            ),
            (
                end(Some(1), None, None, "Sorry, try again.", false, true),
                Outcome::Failed,
                "activation failed: Sorry, try again.",
            ),
            (
                end(
                    Some(5),
                    None,
                    None,
                    "rollout-agent: error: protocol mismatch: …",
                    true,
                    true,
                ),
                Outcome::Failed,
                "does not speak this rollout's agent protocol 1",
            ),
            (
                end(
                    Some(2),
                    None,
                    None,
                    "rollout-agent: error: unknown command `--protocol`",
                    true,
                    true,
                ),
                Outcome::Failed,
                "does not speak this rollout's agent protocol",
            ),
            (
                end(None, None, None, "", false, true),
                Outcome::Failed,
                "the agent was ended by a signal",
            ),
        ];
        for (e, want, words) in rows {
            let (got, msg) = activation_failure(&e, &c);
            assert_eq!(got, want, "{msg}");
            assert!(msg.contains(words), "expected {words:?} in {msg:?}");
            assert!(!msg.contains("Some(") && !msg.contains("None"), "{msg}");
        }
    }

    #[test]
    fn agents_of_another_protocol_are_recognised() {
        assert!(protocol_mismatch(
            Some(5),
            "rollout-agent: error: protocol mismatch: the deployer speaks agent protocol 1, this rollout-agent speaks protocol 2"
        ));
        assert!(protocol_mismatch(
            Some(2),
            "rollout-agent: error: unknown command `--protocol`; try --help"
        ));
        assert!(!protocol_mismatch(Some(1), "activation failed"));
    }

    #[test]
    fn sudo_refusals_are_recognised() {
        assert!(sudo_refused("Sorry, try again.\nsudo: 1 incorrect password attempt\n"));
        assert!(sudo_refused("sudo: a password is required\n"));
        assert!(!sudo_refused("rollout-lab: profile system fails on purpose"));
    }
}
