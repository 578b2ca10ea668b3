//! Executes a validated plan: build once, then per node (in parallel, bounded) connect, copy,
//! activate and confirm; on failure roll back what this run activated, fleet-wide by default.

pub mod agent;
pub mod build;
pub mod copy;
pub mod evaluate;
pub mod node;

use crate::events::{Outcome, Reporter};
use crate::exec::Runner;
use crate::host::connection::SocketDir;
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
    /// NAR sizes of everything that may be copied (for byte counts).
    pub nar_sizes: HashMap<String, u64>,
    /// Set when a node failed and the run is to stop (not with --keep-going).
    stop: AtomicBool,
    seq: AtomicU64,
}

impl Shared {
    /// Should nodes still in flight stop and undo their work?
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
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

/// Build, then deploy every node; returns per-profile outcomes (the caller maps them to an exit code).
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
    let local: Vec<&Deployment> = if opts.closures_on_target || opts.keys_only {
        Vec::new()
    } else {
        plan.deployments.iter().filter(|d| !d.settings.remote_build).collect()
    };
    build::build_local(&runner, &ctx, mode, &local, opts.keep_result.as_deref())?;
    let agent_path = agent::resolve_agent(&runner, opts.agent.as_deref())?;
    let mut local_paths: Vec<String> = local.iter().map(|d| d.closure.clone()).collect();
    local_paths.push(agent_path.clone());
    let nar_sizes = copy::nar_sizes(&runner, &local_paths);
    let shared = Shared {
        runner,
        ctx,
        mode,
        opts,
        agent_path,
        passwords,
        sockets: SocketDir::create().map_err(RunError::Sockets)?,
        next_socket: AtomicUsize::new(0),
        nar_sizes,
        stop: AtomicBool::new(false),
        seq: AtomicU64::new(0),
    };
    let nodes = group_by_node(plan);
    let runs = run_nodes(&shared, &nodes);
    let report = finish(&shared, runs);
    // An interrupted run ends in the interrupt handler, which reports it.
    crate::interrupt::hold();
    Ok(report)
}

fn run_nodes<'a>(shared: &Shared, nodes: &'a [(String, Vec<&'a Deployment>)]) -> Vec<NodeRun> {
    let results: Mutex<Vec<NodeRun>> = Mutex::new(Vec::new());
    let stop = &shared.stop;
    let canary = shared.opts.canary.min(nodes.len());
    let waves: Vec<&[(String, Vec<&Deployment>)]> = if canary > 0 {
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
        let queue: Mutex<VecDeque<&(String, Vec<&Deployment>)>> = Mutex::new(wave.iter().collect());
        let workers = shared.opts.parallel.max(1).min(wave.len().max(1));
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    let Some((name, deps)) = queue.lock().unwrap().pop_front() else {
                        break;
                    };
                    if stop.load(Ordering::SeqCst) {
                        results
                            .lock()
                            .unwrap()
                            .push(skipped(shared, name, deps, "not started: another node failed"));
                        continue;
                    }
                    let r = node::run_node(shared, name, deps);
                    if r.failed() && !shared.opts.keep_going {
                        stop.store(true, Ordering::SeqCst);
                    }
                    results.lock().unwrap().push(r);
                });
            }
        });
    }
    results.into_inner().unwrap()
}

fn skipped(shared: &Shared, node: &str, deps: &[&Deployment], msg: &str) -> NodeRun {
    let rep = shared.runner.reporter.for_node(node);
    let results = deps
        .iter()
        .map(|d| {
            rep.for_profile(node, &d.profile).outcome(Outcome::Skipped, msg);
            ProfileResult {
                node: node.into(),
                profile: d.profile.clone(),
                outcome: Outcome::Skipped,
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
    for r in &runs {
        r.close();
    }
    let mut results: Vec<ProfileResult> = Vec::new();
    for r in runs {
        results.extend(r.results);
    }
    Report { results }
}
