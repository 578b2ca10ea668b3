//! `rollout plan` / `--dry-run`: evaluate and validate, print the plan as JSON, touch nothing.

use crate::cli::DeployArgs;
use crate::{render, request};
use rollout_core::error::Error;
use rollout_core::ops;

pub fn run(args: DeployArgs) -> Result<(), Error> {
    let reporter = render::reporter(&args, false).map_err(Error::BadInput)?;
    let req = request::deploy_request(&args)?;
    let prepared = ops::prepare(&req, &reporter)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&prepared.plan.to_json()).unwrap_or_default()
    );
    Ok(())
}
