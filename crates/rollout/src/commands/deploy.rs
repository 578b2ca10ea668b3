//! `rollout deploy [TARGET…]`: prepare the plan, optionally show it and ask, then execute it.

use crate::cli::DeployArgs;
use crate::render::Summary;
use crate::{confirm, password, render, request};
use rollout_core::deploy::{self, Report, RunOptions};
use rollout_core::error::Error;
use rollout_core::events::Reporter;
use rollout_core::exec::Runner;
use rollout_core::ops;
use rollout_core::ops::diff::diff_rows;
use rollout_core::ops::Prepared;
use rollout_core::plan::Plan;
use rollout_core::secret::Secret;
use std::collections::HashMap;
use std::io::IsTerminal;

/// What every command that deploys starts with: the reporter (live progress only on a terminal),
/// the validated plan and the sudo passwords.
struct Started {
    reporter: Reporter,
    summary: Summary,
    prepared: Prepared,
    passwords: HashMap<String, Secret>,
}

fn start(args: &DeployArgs) -> Result<Started, Error> {
    let progress = !args.no_progress && !args.json && !args.debug_logs && std::io::stderr().is_terminal();
    let (reporter, summary) = render::run_reporter(args, progress).map_err(Error::BadInput)?;
    let req = request::deploy_request(args)?;
    // Deploying evaluates each node's profiles as part of the run (streamed); showing the plan
    // first (`-i`) or uploading keys only needs them all, or none.
    let prepared = if args.interactive {
        ops::prepare(&req, &reporter)?
    } else {
        ops::prepare_settings(&req, &reporter)?
    };
    let passwords =
        password::collect(&prepared.plan, args.sudo_password_command.as_deref()).map_err(Error::BadInput)?;
    Ok(Started {
        reporter,
        summary,
        prepared,
        passwords,
    })
}

/// Run `plan` with `opts`, then the summary (also for a rollback's plan).
pub(super) fn execute(
    reporter: Reporter,
    summary: &Summary,
    prepared: Prepared,
    plan: &Plan,
    opts: RunOptions,
    passwords: HashMap<String, Secret>,
) -> Result<Report, Error> {
    render::set_order(summary, plan);
    let started = std::time::Instant::now();
    let report = deploy::run(reporter, prepared.ctx, prepared.mode, plan, opts, passwords);
    render::finish(summary);
    let report = report?;
    render::summary(summary, &report, started.elapsed());
    Ok(report)
}

pub fn run(args: DeployArgs) -> Result<Report, Error> {
    let Started {
        reporter,
        summary,
        prepared,
        passwords,
    } = start(&args)?;
    if args.interactive {
        eprintln!(
            "The following profiles are going to be deployed:\n{}",
            prepared.plan.to_toml()
        );
        // What each target would change, as `rollout diff` says it.
        let (_, inspection) = super::targets::inspect(&args, &prepared, &passwords, &reporter)?;
        let rows = diff_rows(&prepared, &inspection, &Runner::new(reporter.clone()))?;
        drop(inspection);
        eprint!("{}", super::diff::text_all(&rows));
        if !confirm::ask(&mut std::io::stdin().lock(), &mut std::io::stderr()) {
            return Err(Error::Cancelled);
        }
    }
    let mut opts = request::run_options(&args);
    opts.revisions = ops::revisions(&prepared, &reporter);
    let plan = prepared.plan.clone();
    execute(reporter, &summary, prepared, &plan, opts, passwords)
}

/// `rollout upload-keys`: connect, put the agent there, write the nodes' keys; touch no profile.
pub fn upload_keys(args: DeployArgs) -> Result<Report, Error> {
    let s = start(&args)?;
    let mut opts = request::run_options(&args);
    opts.keys_only = true;
    let plan = s.prepared.plan.clone();
    execute(s.reporter, &s.summary, s.prepared, &plan, opts, s.passwords)
}
