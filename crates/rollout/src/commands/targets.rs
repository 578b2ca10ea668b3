//! The set-up shared by the commands that ask targets what they hold (`status`, `history`,
//! `rollback`, `diff`): the plan of the selected profiles, sudo passwords, the agent, and one
//! inspection of every host.

use crate::cli::DeployArgs;
use crate::{password, render, request};
use rollout_core::deploy::agent;
use rollout_core::error::Error;
use rollout_core::events::Reporter;
use rollout_core::exec::Runner;
use rollout_core::ops::inspect::{self, InspectOptions, Inspection};
use rollout_core::ops::{self, Prepared};
use rollout_core::secret::Secret;
use std::collections::HashMap;

pub struct Asked {
    pub prepared: Prepared,
    pub passwords: HashMap<String, Secret>,
    pub reporter: Reporter,
    pub agent_path: String,
    pub inspection: Inspection,
}

pub fn ask(args: &DeployArgs) -> Result<Asked, Error> {
    // The answer is the output: progress lines only with --debug-logs.
    let reporter = if args.debug_logs {
        render::reporter(args, false).map_err(Error::BadInput)?
    } else {
        Reporter::silent()
    };
    let req = request::deploy_request(args)?;
    let prepared = ops::prepare(&req, &reporter)?;
    let passwords =
        password::collect(&prepared.plan, args.sudo_password_command.as_deref()).map_err(Error::BadInput)?;
    let (agent_path, inspection) = inspect(args, &prepared, &passwords, &reporter)?;
    Ok(Asked {
        prepared,
        passwords,
        reporter,
        agent_path,
        inspection,
    })
}

/// Ask the targets of an already prepared plan (the agent first, as a deploy would copy it).
pub fn inspect(
    args: &DeployArgs,
    prepared: &Prepared,
    passwords: &HashMap<String, Secret>,
    reporter: &Reporter,
) -> Result<(String, Inspection), Error> {
    let runner = Runner::new(reporter.clone());
    let agent_path = agent::resolve_agent(&runner, args.agent.as_deref()).map_err(|e| Error::Run(e.into()))?;
    let opts = InspectOptions {
        ctx: &prepared.ctx,
        agent_path: &agent_path,
        passwords,
        parallel: args.parallel,
        checksigs: args.checksigs,
        sign_key: args.sign_key.as_deref(),
        local: args.local,
    };
    let inspection = inspect::inspect(&prepared.plan, &opts, reporter).map_err(Error::BadInput)?;
    Ok((agent_path, inspection))
}
