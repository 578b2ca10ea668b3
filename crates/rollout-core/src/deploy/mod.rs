//! Executes a validated plan: per node (in parallel, bounded), as soon as its evaluation is done
//! ([`stream`]), build, connect, copy, activate and confirm; on failure roll back what this run
//! activated, fleet-wide by default.

pub mod agent;
pub mod build;
pub mod copy;
pub mod evaluate;
pub mod node;
pub mod stream;

use crate::events::{Outcome, Phase, Reporter};
use crate::exec::Runner;
use crate::host::connection::{EarlyMasters, SocketDir};
use crate::nix::NixContext;
use crate::plan::{Deployment, Plan};
use crate::secret::Secret;
use evaluate::Mode;
use node::{NodeRun, ProfileResult};
use rollout_protocol::command::Origin;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use stream::EvalPool;

/// Run-wide switches (the command line's, not per profile).
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub dry_activate: bool,
    pub boot: bool,
    pub rollback_succeeded: bool,
    pub keep_result: Option<PathBuf>,
    pub checksigs: bool,
    /// `--sign-key` / `LOCAL_KEY`: sign what is copied with this secret key file first.
    pub sign_key: Option<String>,
    pub debug_logs: bool,
    /// Nodes deployed at once.
    pub parallel: usize,
    /// Deploy the other nodes when one fails, instead of rolling the whole run back.
    pub keep_going: bool,
    /// Deploy this many nodes first; go on only if they all succeed.
    pub canary: usize,
    /// `--agent`: an explicit agent store path or binary.
    pub agent: Option<String>,
    /// Who deploys and why, for the targets' deploy records (the flake and revision are added
    /// per deployment).
    pub origin: Origin,
    /// The revision of each flake of the plan that has one (`self.rev` / its dirty revision).
    pub revisions: HashMap<String, String>,
    /// What the deploy record says made this deploy, per (node, profile), where it is not a
    /// plain deploy (a rollback).
    pub actions: HashMap<(String, String), String>,
    /// The closures are on the targets already (a rollback to an earlier generation): nothing is
    /// built or copied but the agent.
    pub closures_on_target: bool,
    /// Act on this machine (no SSH): `--local`.
    pub local: bool,
    /// Activate profiles that already run the closure too (`--reactivate`); by default they are
    /// reported unchanged and left alone.
    pub reactivate: bool,
    /// Confirm without running the profiles' health checks (`--skip-health-checks`, said loudly).
    pub skip_health_checks: bool,
    /// Upload the nodes' keys and nothing else (`rollout upload-keys`).
    pub keys_only: bool,
    /// Evaluator processes at once (`--eval-jobs`).
    pub eval_jobs: usize,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            dry_activate: false,
            boot: false,
            rollback_succeeded: true,
            keep_result: None,
            checksigs: false,
            sign_key: None,
            debug_logs: false,
            parallel: 10,
            keep_going: false,
            canary: 0,
            agent: None,
            origin: Origin::default(),
            revisions: HashMap::new(),
            actions: HashMap::new(),
            closures_on_target: false,
            local: false,
            reactivate: false,
            skip_health_checks: false,
            keys_only: false,
            eval_jobs: 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Build(#[from] build::BuildError),
    #[error(transparent)]
    Agent(#[from] agent::AgentSourceError),
    #[error("cannot create a private directory for SSH control sockets: {0}")]
    Sockets(std::io::Error),
}

/// State shared by the node workers of one run.
pub struct Shared {
    pub runner: Runner,
    pub ctx: NixContext,
    pub mode: Mode,
    pub opts: RunOptions,
    pub agent_path: String,
    /// Sudo passwords by hostname (interactiveSudo), asked once per host by the caller.
    pub passwords: HashMap<String, Secret>,
    pub sockets: SocketDir,
    pub next_socket: AtomicUsize,
    /// Masters started before their node's turn (see [`node::connect_early`]).
    pub early: EarlyMasters,
    /// NAR sizes of everything that may be copied (for byte counts), added per node once built.
    pub nar_sizes: Mutex<HashMap<String, u64>>,
    /// The nodes' evaluations, when the plan came without its closures.
    pub pool: Option<EvalPool>,
    /// The nodes' local builds, batched.
    pub builds: build::Batcher,
    /// Set when a node failed and the run is to stop (not with --keep-going).
    stop: AtomicBool,
    seq: AtomicU64,
}

impl Shared {
    /// Should nodes still in flight stop and undo their work?
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// The NAR sizes known so far.
    pub fn nar_sizes(&self) -> HashMap<String, u64> {
        self.nar_sizes.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stop the run: nodes not started are skipped, evaluations end.
    fn stop_all(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(p) = &self.pool {
            p.cancel();
        }
    }

    /// A run-wide sequence number: the order in which profiles became active.
    pub fn seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// What happened to every profile of the plan.
#[derive(Debug, Clone)]
pub struct Report {
    pub results: Vec<ProfileResult>,
}

impl Report {
    pub fn success(&self) -> bool {
        self.results.iter().all(|r| {
            matches!(
                r.outcome,
                Outcome::Deployed | Outcome::DryActivated | Outcome::Booted | Outcome::Unchanged
            )
        })
    }

    pub fn rolled_back(&self) -> bool {
        self.results
            .iter()
            .any(|r| matches!(r.outcome, Outcome::RolledBack | Outcome::RollingBack))
    }

    /// The process exit code for this run (see [`crate::exit`]).
    pub fn exit_code(&self) -> u8 {
        crate::exit::for_outcomes(self.results.iter().map(|r| r.outcome))
    }
}

/// Nodes in plan order, each with its profiles in plan order.
pub fn group_by_node(plan: &Plan) -> Vec<(String, Vec<&Deployment>)> {
    let mut out: Vec<(String, Vec<&Deployment>)> = Vec::new();
    for d in &plan.deployments {
        match out.iter_mut().find(|(n, _)| n == &d.node) {
            Some((_, v)) => v.push(d),
            None => out.push((d.node.clone(), vec![d])),
        }
    }
    out
}

/// Evaluate (where the plan has no closures yet), build and deploy every node; returns
/// per-profile outcomes (the caller maps them to an exit code).
pub fn run(
    reporter: Reporter,
    ctx: NixContext,
    mode: Mode,
    plan: &Plan,
    opts: RunOptions,
    passwords: HashMap<String, Secret>,
) -> Result<Report, RunError> {
    crate::interrupt::begin(plan, opts.dry_activate || opts.boot, &reporter);
    let runner = Runner::new(reporter.clone());
    let evaluate = !opts.closures_on_target && !opts.keys_only && plan.deployments.iter().any(|d| d.closure.is_empty());
    // Started first: the agent is prepared while the nodes evaluate.
    let pool = evaluate.then(|| EvalPool::start(runner.clone(), ctx.clone(), mode, plan, opts.eval_jobs));
    let agent_path = agent::resolve_agent(&runner, opts.agent.as_deref())?;
    let nar_sizes = copy::nar_sizes(&runner, std::slice::from_ref(&agent_path));
    let shared = Shared {
        runner,
        ctx,
        mode,
        opts,
        agent_path,
        passwords,
        sockets: SocketDir::create().map_err(RunError::Sockets)?,
        next_socket: AtomicUsize::new(0),
        early: EarlyMasters::default(),
        nar_sizes: Mutex::new(nar_sizes),
        pool,
        builds: build::Batcher::default(),
        stop: AtomicBool::new(false),
        seq: AtomicU64::new(0),
    };
    let nodes = group_by_node(plan);
    let runs = run_nodes(&shared, &nodes);
    shared.early.clear();
    if let Some(p) = &shared.pool {
        p.cancel();
        p.wait_all();
    }
    let report = finish(&shared, runs);
    // An interrupted run ends in the interrupt handler, which reports it.
    crate::interrupt::hold();
    Ok(report)
}

type NodeDeps<'a> = (String, Vec<&'a Deployment>);

/// The next node to deploy: the first in plan order whose evaluation is over (or that needs
/// none), waiting for one when none is.
fn take_next<'a, 'b>(shared: &Shared, queue: &Mutex<VecDeque<&'b NodeDeps<'a>>>) -> Option<&'b NodeDeps<'a>> {
    loop {
        {
            let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.is_empty() {
                return None;
            }
            let at = match &shared.pool {
                None => Some(0),
                Some(pool) => q
                    .iter()
                    .position(|(name, deps)| {
                        deps.iter()
                            .all(|d| !d.closure.is_empty() || pool.is_done(&d.flake, name))
                    })
                    .or_else(|| pool.idle().then_some(0)),
            };
            if let Some(i) = at {
                return q.remove(i);
            }
        }
        if let Some(pool) = &shared.pool {
            pool.wait_change(std::time::Duration::from_millis(100));
        }
    }
}

/// A node's deployments with their evaluated closures, built locally (those not built on their
/// target); or the phase and message of why it cannot be deployed.
fn ready(shared: &Shared, name: &str, deps: &[&Deployment]) -> Result<Vec<Deployment>, (Phase, String)> {
    let mut owned: Vec<Deployment> = deps.iter().map(|d| (*d).clone()).collect();
    if let Some(pool) = &shared.pool {
        for d in owned.iter_mut().filter(|d| d.closure.is_empty()) {
            let result = pool.result(&d.flake, name);
            stream::apply(d, result.as_ref()).map_err(|why| {
                let text = match why {
                    Some(m) => stream::failure_text(name, None, &m),
                    None => "not evaluated: the run is stopping".into(),
                };
                (Phase::Evaluate, text)
            })?;
        }
    }
    if shared.opts.closures_on_target || shared.opts.keys_only {
        return Ok(owned);
    }
    // Evaluated: its login can run while it builds.
    node::connect_early(shared, name, deps);
    let local: Vec<&Deployment> = owned.iter().filter(|d| !d.settings.remote_build).collect();
    let rep = shared.runner.reporter.for_node(name);
    let runner = Runner::new(rep);
    let sizes = build::build_local(
        &runner,
        &shared.ctx,
        shared.mode,
        &shared.builds,
        &local,
        shared.opts.keep_result.as_deref(),
    )
    .map_err(|e| (Phase::Build, e.to_string()))?;
    let mut known = shared.nar_sizes.lock().unwrap_or_else(|e| e.into_inner());
    known.extend(sizes.iter().map(|(p, n)| (p.clone(), *n)));
    Ok(owned)
}

/// Evaluate-and-build, then deploy one node.
fn deploy_node(shared: &Shared, name: &str, deps: &[&Deployment]) -> NodeRun {
    match ready(shared, name, deps) {
        Ok(owned) => {
            let refs: Vec<&Deployment> = owned.iter().collect();
            node::run_node(shared, name, &refs)
        }
        Err((_, msg)) => {
            node::forget_early(shared, deps);
            failed_before_start(shared, name, deps, &msg)
        }
    }
}

fn run_nodes<'a>(shared: &Shared, nodes: &'a [NodeDeps<'a>]) -> Vec<NodeRun> {
    let results: Mutex<Vec<NodeRun>> = Mutex::new(Vec::new());
    let stop = &shared.stop;
    let canary = shared.opts.canary.min(nodes.len());
    let waves: Vec<&[NodeDeps]> = if canary > 0 {
        vec![&nodes[..canary], &nodes[canary..]]
    } else {
        vec![nodes]
    };
    for (w, wave) in waves.iter().enumerate() {
        if stop.load(Ordering::SeqCst) || (w > 0 && results.lock().unwrap().iter().any(|r| r.failed())) {
            // A failed canary (or an earlier failure) stops the rest before it starts.
            let msg = if w > 0 && canary > 0 {
                "not started: a canary node failed"
            } else {
                "not started: another node failed"
            };
            for (name, deps) in wave.iter() {
                results.lock().unwrap().push(skipped(shared, name, deps, msg));
            }
            continue;
        }
        let queue: Mutex<VecDeque<&NodeDeps>> = Mutex::new(wave.iter().collect());
        let workers = shared.opts.parallel.max(1).min(wave.len().max(1));
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    while let Some((name, deps)) = take_next(shared, &queue) {
                        if stop.load(Ordering::SeqCst) {
                            results.lock().unwrap().push(skipped(
                                shared,
                                name,
                                deps,
                                "not started: another node failed",
                            ));
                            continue;
                        }
                        let r = deploy_node(shared, name, deps);
                        if r.failed() && !shared.opts.keep_going {
                            shared.stop_all();
                        }
                        results.lock().unwrap().push(r);
                    }
                });
            }
        });
    }
    results.into_inner().unwrap()
}

/// A node that failed before anything touched it (its evaluation or build): every profile
/// failed with `msg`.
fn failed_before_start(shared: &Shared, node: &str, deps: &[&Deployment], msg: &str) -> NodeRun {
    ended(shared, node, deps, Outcome::Failed, msg)
}

fn skipped(shared: &Shared, node: &str, deps: &[&Deployment], msg: &str) -> NodeRun {
    ended(shared, node, deps, Outcome::Skipped, msg)
}

fn ended(shared: &Shared, node: &str, deps: &[&Deployment], outcome: Outcome, msg: &str) -> NodeRun {
    let rep = shared.runner.reporter.for_node(node);
    let results = deps
        .iter()
        .map(|d| {
            rep.for_profile(node, &d.profile).outcome(outcome, msg);
            ProfileResult {
                node: node.into(),
                profile: d.profile.clone(),
                outcome,
                message: msg.into(),
                activated: None,
                seq: 0,
            }
        })
        .collect();
    NodeRun {
        node: node.into(),
        results,
        hosts: Vec::new(),
    }
}

/// End every node's connections, several at once: each master takes a moment to go, and a
/// thousand of them one after another made a ten-second tail.
fn close_all(runs: &[NodeRun]) {
    let per = runs.len().div_ceil(16).max(1);
    std::thread::scope(|s| {
        for part in runs.chunks(per) {
            s.spawn(move || part.iter().for_each(NodeRun::close));
        }
    });
}

/// Fleet-wide rollback (unless --keep-going): every profile this run activated on another node is
/// rolled back, newest first, over that node's still-open master connection.
fn finish(shared: &Shared, mut runs: Vec<NodeRun>) -> Report {
    let any_failed = runs.iter().any(|r| r.failed());
    if any_failed && !shared.opts.keep_going && shared.opts.rollback_succeeded && !shared.opts.dry_activate {
        let failed_nodes: Vec<String> = runs.iter().filter(|r| r.failed()).map(|r| r.node.clone()).collect();
        let why = format!(
            "node(s) {} failed",
            failed_nodes
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut todo: Vec<(u64, usize, usize)> = Vec::new();
        for (ri, r) in runs.iter().enumerate() {
            for (pi, p) in r.results.iter().enumerate() {
                if let Some(a) = &p.activated {
                    if a.auto_rollback {
                        todo.push((p.seq, ri, pi));
                    }
                }
            }
        }
        todo.sort_by_key(|t| std::cmp::Reverse(t.0));
        for (_, ri, pi) in todo {
            let run = &mut runs[ri];
            let Some(a) = run.results[pi].activated.take() else {
                continue;
            };
            let prep = shared.runner.reporter.for_profile(&run.node, &run.results[pi].profile);
            let runner = Runner::new(prep.clone());
            let (outcome, msg) = node::revoke(&runner, &prep, &a, &why);
            run.results[pi].outcome = outcome;
            run.results[pi].message = msg;
        }
    }
    close_all(&runs);
    let mut results: Vec<ProfileResult> = Vec::new();
    for r in runs {
        results.extend(r.results);
    }
    Report { results }
}
