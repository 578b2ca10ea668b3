//! One node, in phases: connect (one [`Host`] per endpoint) → [`push`] (copy closures, build
//! remote profiles) → [`activate`] each profile in order through the agent → settle: [`confirm`]
//! them all over one fresh login, or [`undo`] them. Phases report what they saw; [`outcome`]
//! decides what it means.

mod activate;
mod confirm;
mod health;
mod keys;
pub mod outcome;
mod push;
mod undo;

pub use undo::revoke;

use super::agent::{AgentStatus, ProfileRef};
use super::Shared;
use crate::events::{Outcome, Reporter};
use crate::exec::Runner;
use crate::host::connection::Master;
use crate::host::{Host, LocalHost, SshHost};
use crate::plan::Deployment;
use crate::secret::Secret;
use crate::ssh::{self, Elevation, Endpoint};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// What the run needs to know to undo an activated profile later (rollback-succeeded).
#[derive(Debug, Clone)]
pub struct Activated {
    /// The host it was activated on; later calls (confirm, abort, revoke) go there too.
    pub host: Arc<dyn Host>,
    pub elevation: Option<Elevation>,
    pub password: Option<Secret>,
    pub profile: ProfileRef,
    pub temp_path: String,
    pub generation: Option<u64>,
    pub previous: Option<u64>,
    pub auto_rollback: bool,
    /// The agent that activated this profile; later calls use it too.
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
    /// Its connections, kept open until the whole run is settled (fleet-wide rollback uses them).
    pub hosts: Vec<Arc<dyn Host>>,
}

impl NodeRun {
    pub fn failed(&self) -> bool {
        self.results.iter().any(|r| {
            matches!(
                r.outcome,
                Outcome::Failed | Outcome::RolledBack | Outcome::RollingBack | Outcome::Skipped
            )
        })
    }

    pub fn close(&self) {
        for h in &self.hosts {
            h.close();
        }
    }
}

/// A profile activated on the target and waiting for its confirmation.
struct Pending<'a> {
    d: &'a Deployment,
    id: String,
    /// Index of its host in [`NodeCx::hosts`].
    host: usize,
    act: Activated,
}

/// One node's run: the shared run state, its connected hosts and where its reports go.
struct NodeCx<'a> {
    shared: &'a Shared,
    node: &'a str,
    rep: Reporter,
    runner: Runner,
    /// One host per distinct endpoint of the node's profiles, in first-use order.
    endpoints: Vec<Endpoint>,
    hosts: Vec<Arc<dyn Host>>,
}

impl NodeCx<'_> {
    fn host_of(&self, d: &Deployment) -> usize {
        self.endpoints.iter().position(|e| e == &d.endpoint).unwrap_or(0)
    }

    /// Report how a profile ended and keep it as a result.
    fn end(&self, profile: &str, outcome: Outcome, message: &str, activated: Option<Activated>) -> ProfileResult {
        self.rep.for_profile(self.node, profile).outcome(outcome, message);
        let seq = if activated.is_some() { self.shared.seq() } else { 0 };
        ProfileResult {
            node: self.node.to_string(),
            profile: profile.to_string(),
            outcome,
            message: message.to_string(),
            activated,
            seq,
        }
    }

    /// Every profile of `deps` without a result in `done` ends with `outcome`.
    fn end_rest(&self, deps: &[&Deployment], done: &mut Vec<ProfileResult>, outcome: Outcome, message: &str) {
        for d in deps {
            if !done.iter().any(|r| r.profile == d.profile) {
                let r = self.end(&d.profile, outcome, message, None);
                done.push(r);
            }
        }
    }
}

/// How one agent call ended: its exit code (None: a signal, or it could not start), the status
/// lines it printed and the last lines of its stderr.
struct AgentReply {
    code: Option<i32>,
    statuses: Vec<AgentStatus>,
    stderr: String,
}

impl AgentReply {
    /// The last state the agent reported for deploy `id`.
    fn status_of(&self, id: &str) -> Option<&AgentStatus> {
        self.statuses.iter().rev().find(|s| s.id == id)
    }
}

/// The password line(s) fed to the remote command's stdin, one per elevated command.
fn stdin_for(password: Option<&str>, count: usize) -> Option<Secret> {
    password.map(|p| Secret::new(format!("{p}\n").repeat(count.max(1))))
}

/// Run an agent command on `host`, elevated as given; other output lines go to `rep` as logs.
fn agent_call(
    runner: &Runner,
    rep: &Reporter,
    host: &dyn Host,
    elevation: Option<&Elevation>,
    password: Option<&str>,
    agent_bin: &str,
    args: &[String],
) -> AgentReply {
    let argv = host.run(&ssh::agent_command(elevation, agent_bin, args));
    let stdin = Elevation::password_line(elevation, password).map(Secret::new);
    agent_reply(rep, |on_line| runner.stream(&argv, stdin.as_deref(), on_line))
}

/// The reply of an agent command that `run` runs, handing it a line handler: status lines are
/// kept, other lines go to `rep` as logs.
fn agent_reply(
    rep: &Reporter,
    run: impl FnOnce(&(dyn Fn(&str) + Sync)) -> Result<(std::process::ExitStatus, String), crate::exec::ExecError>,
) -> AgentReply {
    let statuses = Mutex::new(Vec::new());
    let r = run(&|line| match AgentStatus::parse_line(line) {
        Some(s) => statuses.lock().unwrap_or_else(|e| e.into_inner()).push(s),
        None => rep.log(line),
    });
    let statuses = statuses.into_inner().unwrap_or_else(|e| e.into_inner());
    match r {
        Ok((st, stderr)) => AgentReply {
            code: st.code(),
            statuses,
            stderr,
        },
        Err(e) => AgentReply {
            code: None,
            statuses,
            stderr: e.to_string(),
        },
    }
}

/// [`agent_call`] for an activated profile, as the user and with the agent that activated it.
fn call_for(runner: &Runner, rep: &Reporter, a: &Activated, args: &[String]) -> AgentReply {
    agent_call(
        runner,
        rep,
        &*a.host,
        a.elevation.as_ref(),
        a.password.as_deref(),
        &a.agent_bin,
        args,
    )
}

type GroupKey = (usize, String, String, String);

/// Pending deploys grouped by (host, user, temp path, agent): one agent call per group.
fn groups<'a, 'b>(pending: &'b [Pending<'a>]) -> BTreeMap<GroupKey, Vec<&'b Pending<'a>>> {
    let mut g: BTreeMap<GroupKey, Vec<&Pending>> = BTreeMap::new();
    for p in pending {
        let user = p.act.elevation.as_ref().map(|e| e.user.clone()).unwrap_or_default();
        let key = (p.host, user, p.act.temp_path.clone(), p.act.agent_bin.clone());
        g.entry(key).or_default().push(p);
    }
    g
}

/// Connect: one host per distinct endpoint of the node. On failure, the hosts connected so far
/// (to be closed) and the reason.
fn connect(
    shared: &Shared,
    runner: &Runner,
    rep: &Reporter,
    deps: &[&Deployment],
) -> (Vec<Endpoint>, Vec<Arc<dyn Host>>, Option<String>) {
    let mut endpoints: Vec<Endpoint> = Vec::new();
    for d in deps {
        if !endpoints.contains(&d.endpoint) {
            endpoints.push(d.endpoint.clone());
        }
    }
    let mut hosts: Vec<Arc<dyn Host>> = Vec::new();
    if shared.opts.local {
        hosts.extend(endpoints.iter().map(|_| Arc::new(LocalHost::new()) as Arc<dyn Host>));
        return (endpoints, hosts, None);
    }
    for ep in &endpoints {
        let connected = match shared.early.take(ep) {
            Some(started) => SshHost::connected(started, rep),
            None => {
                let idx = shared.next_socket.fetch_add(1, Ordering::SeqCst);
                SshHost::connect(runner, rep, ep, &shared.sockets.path, idx)
            }
        };
        match connected {
            Ok(h) => hosts.push(Arc::new(h)),
            Err(e) => return (endpoints, hosts, Some(e.to_string())),
        }
    }
    (endpoints, hosts, None)
}

/// Start the master login of a node whose evaluation succeeded, before its build: the login
/// then overlaps the build instead of adding its round trips after it. Not for nodes with keys
/// (a key that cannot be read must stop its node before anything is contacted), nor before the
/// evaluation (a node that fails to evaluate is never contacted). See docs/agent-protocol.md,
/// "Round trips".
pub fn connect_early(shared: &Shared, node: &str, deps: &[&Deployment]) {
    if shared.opts.local || deps.iter().any(|d| !d.settings.keys.is_empty()) {
        return;
    }
    let rep = shared.runner.reporter.for_node(node);
    let runner = Runner::new(rep.clone());
    let mut started: Vec<&Endpoint> = Vec::new();
    for d in deps {
        if started.contains(&&d.endpoint) {
            continue;
        }
        started.push(&d.endpoint);
        let idx = shared.next_socket.fetch_add(1, Ordering::SeqCst);
        // A master that cannot even start is left to the node's own connect, which says why.
        if let Ok(s) = Master::start(&runner, &rep, &d.endpoint, &shared.sockets.path, idx) {
            shared.early.add(s);
        }
    }
}

/// End the masters started for a node that will not be deployed after all (its build failed).
pub fn forget_early(shared: &Shared, deps: &[&Deployment]) {
    for d in deps {
        drop(shared.early.take(&d.endpoint));
    }
}

pub fn run_node(shared: &Shared, node: &str, deps: &[&Deployment]) -> NodeRun {
    let rep = shared.runner.reporter.for_node(node);
    let runner = Runner::new(rep.clone());
    // Secrets first: a key that cannot be read stops the node before anything is contacted.
    let keys = keys::read(&runner, deps);
    let (endpoints, hosts, err) = match &keys {
        Ok(_) => connect(shared, &runner, &rep, deps),
        Err(why) => (
            Vec::new(),
            Vec::new(),
            Some(format!("{why}; nothing was changed on this node")),
        ),
    };
    let cx = NodeCx {
        shared,
        node,
        rep,
        runner,
        endpoints,
        hosts,
    };
    let mut done = Vec::new();
    let keys = keys.unwrap_or_default();
    let mut pushed = push::Pushed::default();
    if let Some(why) = err {
        cx.end_rest(deps, &mut done, Outcome::Failed, &why);
    } else if let Err(why) = push::push(&cx, deps).map(|p| pushed = p) {
        cx.end_rest(deps, &mut done, Outcome::Failed, &why);
    } else if shared.opts.keys_only {
        let all: Vec<_> = keys.pre.iter().chain(&keys.post).cloned().collect();
        match keys::upload(&cx, deps, &all) {
            Ok(()) => cx.end_rest(
                deps,
                &mut done,
                Outcome::Unchanged,
                "keys uploaded; the profile was not touched",
            ),
            Err(why) => cx.end_rest(deps, &mut done, Outcome::Failed, &why),
        }
    } else if let Err(why) = keys::upload(&cx, deps, &keys.pre) {
        let msg = format!("{why}; nothing was activated on this node");
        cx.end_rest(deps, &mut done, Outcome::Failed, &msg);
    } else {
        let act = activate::activate_all(&cx, deps, pushed);
        done = settle(&cx, deps, act, &keys.post);
    }
    NodeRun {
        node: node.to_string(),
        results: done,
        hosts: cx.hosts,
    }
}

/// After the activations: confirm what waits for it, or — when a profile of this node or another
/// node failed — undo this node's work, and say why the rest never started.
fn settle(
    cx: &NodeCx,
    deps: &[&Deployment],
    act: activate::Activations,
    post_keys: &[(crate::keys::Key, Secret)],
) -> Vec<ProfileResult> {
    let activate::Activations {
        pending,
        mut done,
        mut failure,
    } = act;
    let opts = &cx.shared.opts;
    if failure.is_none() {
        failure = keys::upload(cx, deps, post_keys).err();
    }
    if failure.is_none() {
        failure = health::run(cx, deps, &pending, &done);
    }
    if failure.is_none() && !pending.is_empty() && cx.shared.stopping() {
        // Another node failed while this one activated: undo rather than confirm and revoke.
        failure = Some("another node of this run failed".to_string());
    }
    let Some(why) = failure else {
        confirm::confirm(cx, pending, &mut done);
        return done;
    };
    // Pending profiles are aborted on the target; confirmed ones (no magic rollback) are revoked,
    // newest first. With --rollback-succeeded false the earlier profiles stay: pending ones are
    // confirmed (deploy-rs confirms each profile before activating the next one).
    if opts.rollback_succeeded {
        undo::abort_pending(cx, &pending, &mut done, &why);
        if !opts.dry_activate {
            undo::revoke_done(cx, &mut done, &why);
        }
    } else {
        confirm::confirm(cx, pending, &mut done);
    }
    cx.end_rest(deps, &mut done, Outcome::Skipped, &format!("not started: {why}"));
    done
}
