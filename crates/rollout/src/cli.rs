//! Command-line flags: deploy-rs's, with the same names, short flags and `true`/`false` values,
//! plus rollout's own (fleet selection, parallelism, JSON, agent).

use clap::{ArgAction, Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "rollout",
    version,
    about = "Deploy Nix profiles from a flake to a fleet over SSH, with automatic and magic rollback",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub deploy: DeployArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Evaluate and validate, then print the plan as JSON on stdout; touches no machine.
    Plan(DeployArgs),
}

fn bool_value() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(["true", "false"])
}

#[derive(Args, Debug, Clone, Default)]
pub struct DeployArgs {
    /// What to deploy: FLAKE, FLAKE#node or FLAKE#node.profile (default: `.`).
    #[arg(group = "deploy")]
    pub target: Option<String>,
    /// Several targets.
    #[arg(long, num_args = 1.., group = "deploy")]
    pub targets: Vec<String>,
    /// Read `deploy` from a Nix file or directory (flake-compat) instead of a flake.
    #[arg(short = 'f', long)]
    pub file: Option<String>,
    /// Check signatures when copying (drops `--no-check-sigs`).
    #[arg(short = 'c', long)]
    pub checksigs: bool,
    /// Print the plan and ask for confirmation before deploying.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Show every command run, and the agents' debug output.
    #[arg(short = 'd', long)]
    pub debug_logs: bool,
    /// Also write the log of this run to a file in DIR.
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<String>,
    /// Keep GC roots of the built profiles under --result-path.
    #[arg(short = 'k', long)]
    pub keep_result: bool,
    /// Where --keep-result puts its GC roots.
    #[arg(short = 'r', long, value_name = "PATH")]
    pub result_path: Option<String>,
    /// Skip the flake's checks.
    #[arg(short = 's', long)]
    pub skip_checks: bool,
    /// Build every profile on its target.
    #[arg(long)]
    pub remote_build: bool,
    #[arg(long, value_name = "USER")]
    pub ssh_user: Option<String>,
    #[arg(long, value_name = "USER")]
    pub profile_user: Option<String>,
    /// SSH options, split as a shell would (replaces sshOpts).
    #[arg(long, allow_hyphen_values = true, value_name = "OPTS")]
    pub ssh_opts: Option<String>,
    #[arg(long, value_parser = bool_value())]
    pub fast_connection: Option<String>,
    #[arg(long, value_parser = bool_value())]
    pub auto_rollback: Option<String>,
    /// Override the hostname of every node in the run.
    #[arg(long)]
    pub hostname: Option<String>,
    #[arg(long, value_parser = bool_value())]
    pub magic_rollback: Option<String>,
    #[arg(long, value_name = "SECONDS")]
    pub confirm_timeout: Option<u64>,
    #[arg(long, value_name = "SECONDS")]
    pub activation_timeout: Option<u64>,
    /// Where the agent keeps its state on the target.
    #[arg(long, value_name = "PATH")]
    pub temp_path: Option<String>,
    /// Profile location on the target (overrides profilePath and the computed default).
    #[arg(long, value_name = "PATH")]
    pub profile_path: Option<String>,
    /// Run the activation's dry-activate mode; change nothing.
    #[arg(long)]
    pub dry_activate: bool,
    /// Set the profile and activate it on the next boot.
    #[arg(long)]
    pub boot: bool,
    /// Roll back profiles this run already activated when a later one fails.
    #[arg(long, value_parser = bool_value())]
    pub rollback_succeeded: Option<String>,
    /// Command prefix that becomes the profile user (the user is appended), e.g. `sudo -u`.
    #[arg(long, value_name = "CMD")]
    pub sudo: Option<String>,
    #[arg(long, value_parser = bool_value())]
    pub interactive_sudo: Option<String>,
    /// Run this command to get the sudo password (instead of a prompt).
    #[arg(long, value_name = "CMD")]
    pub sudo_password_command: Option<String>,

    /// Print the plan as JSON on stdout and exit (same as `rollout plan`).
    #[arg(long)]
    pub dry_run: bool,
    /// One JSON event per line on stdout.
    #[arg(long)]
    pub json: bool,
    /// Nodes deployed at the same time.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub parallel: usize,
    /// When a node fails, deploy the others anyway (no fleet-wide rollback).
    #[arg(long)]
    pub keep_going: bool,
    /// Deploy K nodes first and go on only if they all succeed.
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub canary: usize,
    /// Only these nodes: names, globs or @tag (comma-separated or repeated).
    #[arg(long, value_name = "SEL", action = ArgAction::Append)]
    pub on: Vec<String>,
    /// Leave out these nodes: names, globs or @tag.
    #[arg(long, value_name = "SEL", action = ArgAction::Append)]
    pub exclude: Vec<String>,
    /// No live progress lines, even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
    /// The agent to copy to targets: a store path with bin/rollout-agent, or a binary.
    #[arg(long, value_name = "PATH", env = "ROLLOUT_AGENT")]
    pub agent: Option<String>,

    /// Arguments passed on to every nix call.
    #[arg(last = true)]
    pub extra: Vec<String>,
}

pub fn parse_bool(v: &Option<String>) -> Option<bool> {
    v.as_deref().map(|s| s == "true")
}
