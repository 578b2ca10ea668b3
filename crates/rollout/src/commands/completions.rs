//! `rollout completions SHELL`: the completion script for a shell, generated from the clap
//! definition so it always lists the current subcommands and flags.

use crate::cli::{Cli, CompletionsArgs};
use clap::CommandFactory;
use rollout_core::error::Error;

pub fn run(args: &CompletionsArgs) -> Result<(), Error> {
    let mut cmd = Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "rollout", &mut std::io::stdout());
    Ok(())
}
