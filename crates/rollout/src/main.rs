//! `rollout`: the command-line edge. Parses flags, hands them to rollout-core, maps the result to
//! an exit code: 0 success, 1 bad input (nothing started), 2 usage, 3 deployment failed,
//! 4 deployment failed and was rolled back.

mod cli;
mod commands;
mod password;
mod render;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    rollout_core::interrupt::install();
    let cli = cli::Cli::parse();
    let code = match cli.command {
        Some(cli::Command::Plan(t)) => commands::plan::run(cli::DeployArgs::new(t, cli.flags)),
        Some(cli::Command::Deploy(t)) if cli.flags.dry_run => commands::plan::run(cli::DeployArgs::new(t, cli.flags)),
        Some(cli::Command::Deploy(t)) => commands::deploy::run(cli::DeployArgs::new(t, cli.flags)),
        None if cli.flags.dry_run => commands::plan::run(cli::DeployArgs::new(cli.targets, cli.flags)),
        None => commands::deploy::run(cli::DeployArgs::new(cli.targets, cli.flags)),
    };
    ExitCode::from(code)
}
