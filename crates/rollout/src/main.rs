//! `rollout`: the command-line edge. Parses flags, hands them to rollout-core, maps the result to
//! an exit code: 0 success, 1 bad input (nothing started), 2 usage, 3 deployment failed,
//! 4 deployment failed and was rolled back.

mod cli;
mod commands;
mod confirm;
mod diagnose;
mod password;
mod render;
mod request;

use clap::Parser;
use rollout_core::exit;
use std::process::ExitCode;

fn main() -> ExitCode {
    rollout_core::interrupt::install();
    rollout_core::exec::raise_open_files_limit();
    let cli = cli::Cli::parse();
    let result = match cli.command {
        Some(cli::Command::Plan(p)) => {
            commands::plan::run(cli::DeployArgs::new(p.targets, cli.flags), p.diff).map(|()| exit::SUCCESS)
        }
        Some(cli::Command::Deploy(t)) if cli.flags.dry_run => {
            commands::plan::run(cli::DeployArgs::new(t, cli.flags), false).map(|()| exit::SUCCESS)
        }
        Some(cli::Command::Deploy(t)) => {
            commands::deploy::run(cli::DeployArgs::new(t, cli.flags)).map(|r| r.exit_code())
        }
        None if cli.flags.dry_run => {
            commands::plan::run(cli::DeployArgs::new(cli.targets, cli.flags), false).map(|()| exit::SUCCESS)
        }
        Some(cli::Command::Completions(a)) => commands::completions::run(&a).map(|()| exit::SUCCESS),
        Some(cli::Command::Man(a)) => commands::man::run(&a).map(|()| exit::SUCCESS),
        Some(cli::Command::Schema(a)) => commands::schema::run(&a).map(|()| exit::SUCCESS),
        None => commands::deploy::run(cli::DeployArgs::new(cli.targets, cli.flags)).map(|r| r.exit_code()),
        Some(cli::Command::Status(t)) => commands::status::run(cli::DeployArgs::new(t, cli.flags)),
        Some(cli::Command::History(t)) => commands::history::run(cli::DeployArgs::new(t, cli.flags)),
        Some(cli::Command::Diff(t)) => commands::diff::run(cli::DeployArgs::new(t, cli.flags)),
        Some(cli::Command::UploadKeys(t)) => {
            commands::deploy::upload_keys(cli::DeployArgs::new(t, cli.flags)).map(|r| r.exit_code())
        }
        Some(cli::Command::Rollback(r)) => {
            commands::rollback::run(cli::DeployArgs::new(r.targets, cli.flags), r.to).map(|r| r.exit_code())
        }
    };
    // The one place where a command's result becomes the exit status.
    ExitCode::from(match result {
        Ok(code) => code,
        Err(e) => {
            render::error(&e.to_string());
            exit::for_error(&e)
        }
    })
}
