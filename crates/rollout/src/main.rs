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
    let cli = cli::Cli::parse();
    let code = match cli.command {
        Some(cli::Command::Plan(args)) => commands::plan::run(args),
        None if cli.deploy.dry_run => commands::plan::run(cli.deploy),
        None => commands::deploy::run(cli.deploy),
    };
    ExitCode::from(code)
}
