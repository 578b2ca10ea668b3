//! `rollout plan` / `--dry-run`: evaluate and validate, print the plan as JSON, touch nothing;
//! `plan --diff` adds what each profile would change on its target.

use crate::cli::DeployArgs;
use crate::{password, render, request};
use rollout_core::error::Error;
use rollout_core::exec::Runner;
use rollout_core::ops;
use rollout_core::ops::diff::diff_rows;

pub fn run(args: DeployArgs, diff: bool) -> Result<(), Error> {
    let reporter = render::reporter(&args, false).map_err(Error::BadInput)?;
    let req = request::deploy_request(&args)?;
    let prepared = ops::prepare(&req, &reporter)?;
    let mut json = prepared.plan.to_json();
    if diff {
        let passwords =
            password::collect(&prepared.plan, args.sudo_password_command.as_deref()).map_err(Error::BadInput)?;
        let (_, inspection) = super::targets::inspect(&args, &prepared, &passwords, &reporter)?;
        let rows = diff_rows(&prepared, &inspection, &Runner::new(reporter.clone()))?;
        json["diff"] = serde_json::to_value(&rows).unwrap_or_default();
    }
    println!("{}", serde_json::to_string_pretty(&json).unwrap_or_default());
    Ok(())
}
