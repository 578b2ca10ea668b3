//! Targets → one evaluation of each flake's settings → validated plan → node filter → the
//! profiles' paths, evaluated per node in parallel: everything decided before any machine is
//! touched (what `rollout plan` prints). `rollout deploy` takes the plan before its paths are
//! evaluated and streams them ([`crate::deploy::stream`]).

use crate::config::DeployConfig;
use crate::deploy::evaluate::{self, EvalError, Mode};
use crate::deploy::stream::{self, EvalPool};
use crate::error::Error;
use crate::events::Reporter;
use crate::exec::Runner;
use crate::nix::NixContext;
use crate::plan::{build_plan, Plan};
use crate::select::NodeFilter;
use crate::settings::Overrides;
use crate::target::Target;
use std::collections::HashMap;

/// What to deploy, with every flag already parsed and checked.
#[derive(Debug, Clone, Default)]
pub struct DeployRequest {
    pub targets: Vec<Target>,
    /// `-f`: read `deploy` from a Nix file instead of a flake.
    pub file_mode: bool,
    /// Arguments after `--`, passed on to every nix call.
    pub extra: Vec<String>,
    pub overrides: Overrides,
    pub filter: NodeFilter,
    pub skip_checks: bool,
    /// The local user (the default profile user of deploy-rs's merge rules).
    pub local_user: String,
    /// Evaluator processes at once (`--eval-jobs`; at least 1).
    pub eval_jobs: usize,
}

/// Everything decided before any machine is touched.
pub struct Prepared {
    pub plan: Plan,
    pub mode: Mode,
    pub ctx: NixContext,
    pub eval_jobs: usize,
}

/// The plan with every profile's path evaluated (in parallel, per node); the first node whose
/// evaluation failed is bad input.
pub fn prepare(req: &DeployRequest, reporter: &Reporter) -> Result<Prepared, Error> {
    let mut p = prepare_settings(req, reporter)?;
    let pool = EvalPool::start(
        Runner::new(reporter.clone()),
        p.ctx.clone(),
        p.mode,
        &p.plan,
        p.eval_jobs,
    );
    let results = pool.wait_all();
    if let Err(failed) = stream::fill(&mut p.plan, &results) {
        let ((flake, node), message) = failed.into_iter().next().unwrap_or_default();
        return Err(Error::bad_input(EvalError::Node { flake, node, message }));
    }
    Ok(p)
}

/// The plan before the profiles' paths are evaluated (their `closure` is empty): what
/// `rollout deploy` starts from, evaluating each node while others already deploy.
pub fn prepare_settings(req: &DeployRequest, reporter: &Reporter) -> Result<Prepared, Error> {
    let runner = Runner::new(reporter.clone());
    let (mode, ctx) = evaluate::detect(&runner, req.file_mode, req.extra.clone()).map_err(Error::bad_input)?;
    let evaluated = evaluate::evaluate(&runner, &ctx, mode, &req.targets, req.skip_checks).map_err(Error::bad_input)?;
    let pairs: Vec<(Target, &DeployConfig)> = evaluated.iter().map(|(t, c)| (t.clone(), c.as_ref())).collect();
    let mut plan = build_plan(&pairs, &req.overrides, &req.local_user).map_err(Error::bad_input)?;
    for w in &plan.warnings {
        reporter.warn(w.to_string());
    }
    if !req.filter.is_empty() {
        let mut all: Vec<String> = plan.deployments.iter().map(|d| d.node.clone()).collect();
        all.dedup();
        plan.deployments.retain(|d| {
            let tags = evaluated
                .iter()
                .find(|(t, _)| t.flake == d.flake)
                .and_then(|(_, c)| c.nodes.get(&d.node))
                .map(|n| n.tags.clone())
                .unwrap_or_default();
            req.filter.matches(&d.node, &tags)
        });
        if plan.deployments.is_empty() {
            return Err(Error::bad_input(req.filter.empty_error(&all)));
        }
    }
    if let Some(h) = &req.overrides.hostname {
        one_node_for_hostname(&plan, h)?;
    }
    Ok(Prepared {
        plan,
        mode,
        ctx,
        eval_jobs: req.eval_jobs.max(1),
    })
}

/// The revision of each flake of the plan that has one (`revision`, or `dirtyRevision` where Nix
/// reports it), for the targets' deploy records. Best effort: a flake without one (a plain
/// directory, an old Nix) is recorded without.
pub fn revisions(prepared: &Prepared, reporter: &Reporter) -> HashMap<String, String> {
    let mut out = HashMap::new();
    if prepared.mode != Mode::Flake {
        return out;
    }
    let runner = Runner::new(reporter.clone());
    let mut asked = std::collections::HashSet::new();
    for d in &prepared.plan.deployments {
        // Once per flake, also when it has no revision.
        if !asked.insert(d.flake.as_str()) {
            continue;
        }
        let Ok(c) = runner.capture(&prepared.ctx.flake_metadata(&d.flake)) else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&c.stdout).unwrap_or_default();
        if let Some(rev) = v["revision"].as_str().or(v["dirtyRevision"].as_str()) {
            out.insert(d.flake.clone(), rev.to_string());
        }
    }
    out
}

/// deploy-rs applies `--hostname` to every node (its issue #122); sending several nodes' profiles
/// to one machine is never what was meant.
fn one_node_for_hostname(plan: &Plan, hostname: &str) -> Result<(), Error> {
    let mut nodes: Vec<&str> = plan.deployments.iter().map(|d| d.node.as_str()).collect();
    nodes.sort();
    nodes.dedup();
    if nodes.len() > 1 {
        return Err(Error::BadInput(format!(
            "--hostname {hostname} would send {} nodes ({}) to one machine; select one node (e.g. .#{})",
            nodes.len(),
            nodes.join(", "),
            nodes[0]
        )));
    }
    Ok(())
}
