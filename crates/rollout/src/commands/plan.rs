//! `rollout plan` / `--dry-run`: evaluate and validate, print the plan as JSON, touch nothing.

use super::{prepare, EXIT_USER};
use crate::cli::DeployArgs;
use crate::render;

pub fn run(args: DeployArgs) -> u8 {
    let reporter = match render::reporter(&args, false) {
        Ok(r) => r,
        Err(e) => {
            render::error(&e);
            return EXIT_USER;
        }
    };
    match prepare(&args, &reporter) {
        Ok(p) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&p.plan.to_json()).unwrap_or_default()
            );
            0
        }
        Err(e) => {
            render::error(&e);
            EXIT_USER
        }
    }
}
