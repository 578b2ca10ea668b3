//! Per-node evaluation, streamed: up to `--eval-jobs` evaluator processes at once (and fewer
//! when memory is short), each forcing the profile paths of a chunk of nodes one after another
//! and announcing every node the moment it is evaluated, so that the node can be built, copied
//! and activated while the others still evaluate.
//!
//! Why chunks of nodes per process instead of one process per node: every `nix eval` loads the
//! flake (and, for a NixOS fleet, imports nixpkgs) again; a chunk pays that once for several
//! nodes, and the trace lines (`evalexpr::paths_lambda`) keep the per-node streaming. A node whose
//! evaluation fails ends its process: that node gets Nix's message, and the rest of its chunk is
//! evaluated again by a new process, so one error fails exactly one node.

use super::evaluate::Mode;
use crate::config::check_closure;
use crate::evalexpr::{self, NodePaths};
use crate::events::{Phase, State};
use crate::exec::{self, ExecError, Role, Runner};
use crate::nix::NixContext;
use crate::plan::{Deployment, Plan};
use crate::target::quote_attr;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Nodes evaluated by one evaluator process at most (then a fresh process, so that the memory
/// of many evaluated systems is given back).
pub const MAX_CHUNK: usize = 8;

/// Memory assumed for one evaluation before any has been measured (KiB).
const MIN_RESERVE_KIB: u64 = 256 * 1024;

/// One profile's evaluated `path`: the closure, and the derivation that builds it when the path
/// came from one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluated {
    pub closure: String,
    pub drv: Option<String>,
}

/// A node's profiles by name, or why the node could not be evaluated (Nix's message, or what is
/// wrong with a `path`).
pub type NodeResult = Result<BTreeMap<String, Evaluated>, String>;

/// (flake, node).
pub type NodeKey = (String, String);

#[derive(Default)]
struct Board {
    done: HashMap<NodeKey, NodeResult>,
    /// Chunks not started yet.
    queue: VecDeque<(String, Vec<NodePaths>)>,
    running: usize,
    /// Worker threads still alive; `wait_all` returns when none is.
    workers: usize,
}

struct Inner {
    board: Mutex<Board>,
    changed: Condvar,
    cancelled: AtomicBool,
    runner: Runner,
    ctx: NixContext,
    mode: Mode,
    tag: String,
}

/// The evaluations of one run, running in the background.
#[derive(Clone)]
pub struct EvalPool {
    inner: Arc<Inner>,
}

/// The nodes of `plan` whose profiles still need their `path` evaluated, per flake, in plan order.
pub fn pending(plan: &Plan) -> Vec<(String, Vec<NodePaths>)> {
    let mut out: Vec<(String, Vec<NodePaths>)> = Vec::new();
    for d in plan.deployments.iter().filter(|d| d.closure.is_empty()) {
        let idx = match out.iter().position(|(f, _)| f == &d.flake) {
            Some(i) => i,
            None => {
                out.push((d.flake.clone(), Vec::new()));
                out.len() - 1
            }
        };
        let nodes = &mut out[idx].1;
        match nodes.iter_mut().find(|n| n.node == d.node) {
            Some(n) => n.profiles.push(d.profile.clone()),
            None => nodes.push(NodePaths {
                node: d.node.clone(),
                profiles: vec![d.profile.clone()],
            }),
        }
    }
    out
}

/// Split every flake's nodes into chunks: as many chunks as evaluator processes when that keeps
/// them at most [`MAX_CHUNK`] nodes, else chunks of [`MAX_CHUNK`].
pub fn chunks(pending: Vec<(String, Vec<NodePaths>)>, jobs: usize) -> VecDeque<(String, Vec<NodePaths>)> {
    let total: usize = pending.iter().map(|(_, n)| n.len()).sum();
    let size = total.div_ceil(jobs.max(1)).clamp(1, MAX_CHUNK);
    let mut out = VecDeque::new();
    for (flake, nodes) in pending {
        for c in nodes.chunks(size) {
            out.push_back((flake.clone(), c.to_vec()));
        }
    }
    out
}

/// Whether another evaluator may start: always when none runs (the run must progress), else only
/// while the machine has at least as much memory available as the largest evaluation so far
/// needed (at least [`MIN_RESERVE_KIB`]).
pub fn admit(running: usize, available_kib: Option<u64>, largest_kib: u64) -> bool {
    running == 0 || available_kib.is_none_or(|a| a >= largest_kib.max(MIN_RESERVE_KIB))
}

/// `MemAvailable` of /proc/meminfo, in KiB.
fn available_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The peak RSS of the largest child this process has reaped (evaluators are the largest), KiB.
fn largest_child_kib() -> u64 {
    // SAFETY: getrusage fills the zeroed struct we own.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) == 0 {
            u64::try_from(u.ru_maxrss).unwrap_or(0)
        } else {
            0
        }
    }
}

impl EvalPool {
    /// Start evaluating every node of `plan` whose closure is not known yet, with up to `jobs`
    /// evaluator processes.
    pub fn start(runner: Runner, ctx: NixContext, mode: Mode, plan: &Plan, jobs: usize) -> EvalPool {
        let queue = chunks(pending(plan), jobs);
        let workers = jobs.max(1).min(queue.len());
        let inner = Arc::new(Inner {
            board: Mutex::new(Board {
                queue,
                workers,
                ..Board::default()
            }),
            changed: Condvar::new(),
            cancelled: AtomicBool::new(false),
            runner,
            ctx,
            mode,
            tag: format!("rollout-eval-{}", rollout_protocol::id::random_hex(8)),
        });
        for _ in 0..workers {
            let inner = inner.clone();
            std::thread::spawn(move || {
                inner.work();
                inner.board.lock().unwrap_or_else(|e| e.into_inner()).workers -= 1;
                inner.changed.notify_all();
            });
        }
        EvalPool { inner }
    }

    /// Start no further evaluation and end the running evaluators (the run stops).
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::SeqCst);
        exec::signal_children(Some(Role::Eval), libc::SIGTERM, false);
        self.inner.changed.notify_all();
    }

    /// The result of a node, once its evaluation ended.
    pub fn result(&self, flake: &str, node: &str) -> Option<NodeResult> {
        let b = self.inner.board.lock().unwrap_or_else(|e| e.into_inner());
        b.done.get(&(flake.to_string(), node.to_string())).cloned()
    }

    /// Whether a node's evaluation has ended (without copying its result).
    pub fn is_done(&self, flake: &str, node: &str) -> bool {
        let b = self.inner.board.lock().unwrap_or_else(|e| e.into_inner());
        b.done.contains_key(&(flake.to_string(), node.to_string()))
    }

    /// Whether nothing more will be evaluated (all done, or cancelled and idle).
    pub fn idle(&self) -> bool {
        self.inner.board.lock().unwrap_or_else(|e| e.into_inner()).workers == 0
    }

    /// Wait until some node's evaluation ends (or `limit` passes).
    pub fn wait_change(&self, limit: Duration) {
        let b = self.inner.board.lock().unwrap_or_else(|e| e.into_inner());
        let _unused = self.inner.changed.wait_timeout(b, limit);
    }

    /// Wait for every evaluation; every node's result.
    pub fn wait_all(&self) -> HashMap<NodeKey, NodeResult> {
        let mut b = self.inner.board.lock().unwrap_or_else(|e| e.into_inner());
        while b.workers > 0 {
            b = self.inner.changed.wait(b).unwrap_or_else(|e| e.into_inner());
        }
        b.done.clone()
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Board> {
        self.board.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One worker: take chunks until none is left, running one evaluator at a time.
    fn work(&self) {
        loop {
            let chunk = {
                let mut b = self.lock();
                loop {
                    if self.cancelled.load(Ordering::SeqCst) || b.queue.is_empty() {
                        break None;
                    }
                    if admit(b.running, available_kib(), largest_child_kib()) {
                        b.running += 1;
                        break b.queue.pop_front();
                    }
                    // Memory is short: wait for a running evaluator to end.
                    b = self
                        .changed
                        .wait_timeout(b, Duration::from_millis(200))
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            };
            let Some((flake, nodes)) = chunk else { return };
            let rest = self.evaluate(&flake, &nodes);
            let mut b = self.lock();
            b.running -= 1;
            if !rest.is_empty() {
                b.queue.push_front((flake, rest));
            }
            drop(b);
            self.changed.notify_all();
        }
    }

    /// Evaluate one chunk; returns the nodes that still need an evaluator (after a node failed).
    fn evaluate(&self, flake: &str, nodes: &[NodePaths]) -> Vec<NodePaths> {
        let lambda = evalexpr::paths_lambda(&self.tag, nodes);
        let argv = match self.mode {
            Mode::Flake => self.ctx.eval_flake(flake, &lambda),
            Mode::File => self.ctx.eval_file(&evalexpr::non_flake_expr(flake, &lambda)),
        };
        let next = Mutex::new(0usize);
        let started = |i: usize| {
            if let Some(n) = nodes.get(i) {
                let rep = self.runner.reporter.for_node(&n.node);
                rep.phase(
                    Phase::Evaluate,
                    State::Started,
                    Some(format!("evaluating node {}", n.node)),
                );
            }
        };
        started(0);
        let marker = format!("{} ", self.tag);
        let on_line = |line: &str| {
            let Some(at) = line.find(&marker) else { return };
            let Some(value) = first_json(&line[at + marker.len()..]) else {
                return;
            };
            let mut i = next.lock().unwrap_or_else(|e| e.into_inner());
            let Some(n) = nodes.get(*i) else { return };
            self.finish(flake, n, parse_node(n, &value));
            *i += 1;
            started(*i);
        };
        let r = self.runner.stream_as(Role::Eval, &argv, None, &on_line);
        let i = *next.lock().unwrap_or_else(|e| e.into_inner());
        if i >= nodes.len() {
            return Vec::new();
        }
        let message = match r {
            Ok((status, _)) if status.success() => "the evaluation ended without this node".to_string(),
            Ok((_, stderr)) => without_traces(&stderr, &marker),
            Err(e @ ExecError::Failed { .. }) => e.stderr().trim().to_string(),
            Err(e) => e.to_string(),
        };
        self.finish(flake, &nodes[i], Err(message));
        nodes[i + 1..].to_vec()
    }

    fn finish(&self, flake: &str, n: &NodePaths, result: NodeResult) {
        let rep = self.runner.reporter.for_node(&n.node);
        match &result {
            Ok(_) => rep.phase(Phase::Evaluate, State::Succeeded, None),
            Err(_) => rep.phase(Phase::Evaluate, State::Failed, None),
        }
        self.lock().done.insert((flake.to_string(), n.node.clone()), result);
        self.changed.notify_all();
    }
}

/// Put a node's evaluated closure into one of its deployments; why not when the node's evaluation
/// failed (Nix's text), or `None` when it was not evaluated.
pub fn apply(d: &mut Deployment, result: Option<&NodeResult>) -> Result<(), Option<String>> {
    match result {
        Some(Ok(paths)) => {
            if let Some(e) = paths.get(&d.profile) {
                d.closure.clone_from(&e.closure);
                d.drv.clone_from(&e.drv);
            }
            Ok(())
        }
        Some(Err(m)) => Err(Some(m.clone())),
        None => Err(None),
    }
}

/// Put every evaluated node's closures into `plan`; the nodes that failed, with why.
pub fn fill(plan: &mut Plan, results: &HashMap<NodeKey, NodeResult>) -> Result<(), Vec<(NodeKey, String)>> {
    let mut failed: Vec<(NodeKey, String)> = Vec::new();
    for d in plan.deployments.iter_mut().filter(|d| d.closure.is_empty()) {
        let key = (d.flake.clone(), d.node.clone());
        if let Err(why) = apply(d, results.get(&key)) {
            if !failed.iter().any(|(k, _)| k == &key) {
                failed.push((key, why.unwrap_or_else(|| "not evaluated".into())));
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed)
    }
}

/// How a node's failed evaluation reads: a problem with a `path` names its attribute itself;
/// Nix's text goes below rollout's line.
pub fn failure_text(node: &str, flake: Option<&str>, message: &str) -> String {
    if message.starts_with("deploy.nodes.") {
        return message.to_string();
    }
    match flake {
        Some(f) => format!("evaluating node `{node}` of `{f}` failed:\n{message}"),
        None => format!("evaluating node `{node}` failed:\n{message}"),
    }
}

/// The first JSON value at the start of `s` (what follows it, such as a colour reset, is ignored).
fn first_json(s: &str) -> Option<Value> {
    serde_json::Deserializer::from_str(s).into_iter::<Value>().next()?.ok()
}

/// Stderr of a failed evaluator without the trace lines of the nodes it had finished.
fn without_traces(stderr: &str, marker: &str) -> String {
    let kept: Vec<&str> = stderr.lines().filter(|l| !l.contains(marker)).collect();
    kept.join("\n").trim().to_string()
}

/// A node's announced paths, checked: every profile asked for, each an absolute store path.
fn parse_node(n: &NodePaths, v: &Value) -> NodeResult {
    let mut out = BTreeMap::new();
    let mut problems = Vec::new();
    for p in &n.profiles {
        let attr = format!("deploy.nodes.{}.profiles.{}.path", quote_attr(&n.node), quote_attr(p));
        let e = &v["paths"][p];
        match check_closure(&e["path"]) {
            Ok(closure) => {
                // Passed to `nix build` as a word: only a store path ending in .drv (the same check
                // as the closure), never whatever a flake put in `drvPath`.
                let drv = e["drv"]
                    .as_str()
                    .filter(|d| d.ends_with(".drv"))
                    .and_then(|d| check_closure(&Value::String(d.to_string())).ok());
                out.insert(p.clone(), Evaluated { closure, drv });
            }
            Err(m) => problems.push(format!("{attr}: {m}")),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn np(node: &str) -> NodePaths {
        NodePaths {
            node: node.into(),
            profiles: vec!["system".into()],
        }
    }

    #[test]
    fn chunks_spread_nodes_over_the_evaluators_and_stay_small() {
        let nodes = |n: usize| vec![(".".to_string(), (0..n).map(|i| np(&format!("n{i}"))).collect())];
        let sizes = |q: VecDeque<(String, Vec<NodePaths>)>| q.iter().map(|(_, c)| c.len()).collect::<Vec<_>>();
        assert_eq!(sizes(chunks(nodes(2), 2)), vec![1, 1]);
        assert_eq!(sizes(chunks(nodes(5), 2)), vec![3, 2]);
        assert_eq!(sizes(chunks(nodes(20), 2)), vec![8, 8, 4]);
        assert_eq!(sizes(chunks(nodes(3), 1)), vec![3]);
        assert_eq!(sizes(chunks(nodes(1), 8)), vec![1]);
        assert!(chunks(nodes(0), 2).is_empty());
        // Nodes of two flakes never share a process.
        let two = vec![
            ("a".to_string(), vec![np("x"), np("y")]),
            ("b".to_string(), vec![np("z")]),
        ];
        let q = chunks(two, 1);
        assert_eq!(q.len(), 2);
        assert_eq!(q[1].0, "b");
    }

    #[test]
    fn another_evaluator_starts_only_with_memory_for_it() {
        assert!(admit(0, Some(0), u64::MAX), "the first always starts");
        assert!(admit(1, None, 1 << 30), "unknown memory does not block");
        assert!(admit(1, Some(2 << 20), 1 << 20));
        assert!(
            !admit(1, Some(1 << 20), 2 << 20),
            "less available than the largest evaluation"
        );
        assert!(!admit(2, Some(100 * 1024), 0), "at least the minimum reserve");
    }

    #[test]
    fn announced_paths_are_checked_per_profile() {
        let n = NodePaths {
            node: "web".into(),
            profiles: vec!["system".into(), "app".into()],
        };
        let good = serde_json::json!({"node": "web", "paths": {
            "system": {"path": "/nix/store/abc-sys", "drv": "/nix/store/def-sys.drv"},
            "app": {"path": "/nix/store/abc-app", "drv": null}}});
        let r = parse_node(&n, &good).unwrap();
        assert_eq!(r["system"].drv.as_deref(), Some("/nix/store/def-sys.drv"));
        assert_eq!(r["app"].drv, None);
        let bad = serde_json::json!({"node": "web", "paths": {
            "system": {"path": "result"}, "app": {"path": {"$type": "lambda"}}}});
        // A `drvPath` that is not a store derivation is not used (the closure is built as a path).
        let odd = serde_json::json!({"node": "web", "paths": {
            "system": {"path": "/nix/store/abc-sys", "drv": "--option x y.drv"},
            "app": {"path": "/nix/store/abc-app", "drv": "/etc/x.drv"}}});
        let r = parse_node(&n, &odd).unwrap();
        assert_eq!(r["system"].drv, None);
        assert_eq!(r["app"].drv, None);
        let e = parse_node(&n, &bad).unwrap_err();
        assert!(
            e.contains("deploy.nodes.web.profiles.system.path: expected an absolute store path"),
            "{e}"
        );
        assert!(
            e.contains("deploy.nodes.web.profiles.app.path: expected a string, found a function"),
            "{e}"
        );
    }

    #[test]
    fn trace_lines_are_found_and_removed() {
        assert_eq!(first_json("{\"a\":1}\u{1b}[0m"), Some(serde_json::json!({"a": 1})));
        let err = "trace: rollout-eval-x {\"node\":\"a\"}\nerror: boom\n  at x";
        assert_eq!(without_traces(err, "rollout-eval-x "), "error: boom\n  at x");
    }
}
