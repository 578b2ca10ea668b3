//! `rollout rollback [--to N]`: every selected profile back to its previous generation (or N),
//! checked for all of them first; then a deploy of those generations with the same guarantees
//! (auto rollback, confirmation over a fresh login, the fleet failure policy, exit codes).

use super::targets;
use crate::cli::DeployArgs;
use crate::{render, request};
use rollout_core::deploy::Report;
use rollout_core::error::Error;
use rollout_core::ops::rollback::rollback_plan;
use std::io::IsTerminal;

pub fn run(args: DeployArgs, to: Option<u64>) -> Result<Report, Error> {
    let asked = targets::ask(&args)?;
    let rb = rollback_plan(&asked.prepared.plan, &asked.inspection.views, to)?;
    drop(asked.inspection);
    for (node, profile, from, to) in &rb.moves {
        eprintln!("rollout: {node}.{profile}: rolling back from generation {from} to generation {to}");
    }
    let progress = !args.no_progress && !args.json && !args.debug_logs && std::io::stderr().is_terminal();
    let (reporter, summary) = render::run_reporter(&args, progress).map_err(Error::BadInput)?;
    let mut opts = request::run_options(&args);
    opts.closures_on_target = true;
    opts.actions = rb.actions;
    opts.agent = Some(asked.agent_path);
    super::deploy::execute(reporter, &summary, asked.prepared, &rb.plan, opts, asked.passwords)
}
