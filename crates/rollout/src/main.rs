//! `rollout`: the command-line edge. Parses flags, hands them to rollout-core, maps the result to
//! an exit code: 0 success, 1 bad input (nothing started), 2 usage, 3 deployment failed,
//! 4 deployment failed and was rolled back.

mod cli;
mod commands;
mod password;
mod render;

use clap::Parser;
use std::process::ExitCode;

/// Flags may come before `plan` (`rollout -d plan .#web`): clap then sees `plan` as the target,
/// so parse again with `plan` first unless a flake directory named `plan` is meant.
fn parse() -> cli::Cli {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let first = cli::Cli::try_parse_from(&argv);
    let misplaced = argv.iter().skip(2).position(|a| a == "plan").map(|i| i + 2);
    let retry = match (&first, misplaced) {
        (Ok(c), Some(_)) => c.deploy.target.as_deref() == Some("plan") && !std::path::Path::new("plan").exists(),
        (Err(_), Some(_)) => true,
        _ => false,
    };
    if let (true, Some(i)) = (retry, misplaced) {
        let mut moved = argv.clone();
        let plan = moved.remove(i);
        moved.insert(1, plan);
        if let Ok(c) = cli::Cli::try_parse_from(&moved) {
            return c;
        }
    }
    first.unwrap_or_else(|e| e.exit())
}

fn main() -> ExitCode {
    rollout_core::interrupt::install();
    let cli = parse();
    let code = match cli.command {
        Some(cli::Command::Plan(args)) => commands::plan::run(args),
        None if cli.deploy.dry_run => commands::plan::run(cli.deploy),
        None => commands::deploy::run(cli.deploy),
    };
    ExitCode::from(code)
}
