//! Command-line flags: deploy-rs's, with the same names, short flags and `true`/`false` values,
//! plus rollout's own (fleet selection, parallelism, JSON, agent).

use clap::{ArgAction, Args, Parser, Subcommand};
use rollout_core::schema;

#[derive(Parser, Debug)]
#[command(
    name = "rollout",
    version,
    about = "Deploy Nix profiles from a flake to a fleet over SSH, with automatic and magic rollback",
    long_about = "Deploy Nix profiles from a flake to a fleet over SSH, with automatic and magic rollback.\n\n\
                  `rollout [FLAGS] [TARGET]` is `rollout deploy [FLAGS] [TARGET]` (deploy-rs's form). Flags may \
                  come before or after the subcommand. A flake directory named like a subcommand is written \
                  as a path: `rollout ./plan`."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub targets: Targets,
    #[command(flatten)]
    pub flags: Flags,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Deploy the targets' profiles (what bare `rollout TARGET` does).
    Deploy(Targets),
    /// Evaluate and validate, then print the plan as JSON on stdout; touches no machine.
    Plan(Targets),
}

fn bool_value() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(["true", "false"])
}

/// What to deploy; given to the bare form or to a subcommand.
#[derive(Args, Debug, Clone, Default)]
pub struct Targets {
    /// What to deploy: FLAKE, FLAKE#node or FLAKE#node.profile (default: `.`).
    #[arg(group = "deploy")]
    pub target: Option<String>,
    /// Several targets.
    #[arg(long, num_args = 1.., group = "deploy")]
    pub targets: Vec<String>,
    /// Arguments passed on to every nix call.
    #[arg(last = true)]
    pub extra: Vec<String>,
}

/// Every flag of a run. All are global: `rollout -d plan .#web` and `rollout plan -d .#web` mean the same.
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Run options")]
pub struct Flags {
    /// Read `deploy` from a Nix file or directory (flake-compat) instead of a flake.
    #[arg(global = true, short = 'f', long)]
    pub file: Option<String>,
    /// Check signatures when copying (drops `--no-check-sigs`).
    #[arg(global = true, short = 'c', long)]
    pub checksigs: bool,
    /// Print the plan and ask for confirmation before deploying.
    #[arg(global = true, short = 'i', long)]
    pub interactive: bool,
    /// Show every command run, and the agents' debug output.
    #[arg(global = true, short = 'd', long)]
    pub debug_logs: bool,
    /// Also write the log of this run to a file in DIR.
    #[arg(global = true, long, value_name = "DIR")]
    pub log_dir: Option<String>,
    /// Keep GC roots of the built profiles under --result-path.
    #[arg(global = true, short = 'k', long)]
    pub keep_result: bool,
    /// Where --keep-result puts its GC roots.
    #[arg(global = true, short = 'r', long, value_name = "PATH")]
    pub result_path: Option<String>,
    /// Skip the flake's checks.
    #[arg(global = true, short = 's', long)]
    pub skip_checks: bool,
    #[arg(help = schema::flag_help("--remote-build"), global = true, long)]
    pub remote_build: bool,
    #[arg(help = schema::flag_help("--ssh-user"), global = true, long, value_name = "USER")]
    pub ssh_user: Option<String>,
    #[arg(help = schema::flag_help("--profile-user"), global = true, long, value_name = "USER")]
    pub profile_user: Option<String>,
    #[arg(help = schema::flag_help("--ssh-opts"), global = true, long, allow_hyphen_values = true, value_name = "OPTS")]
    pub ssh_opts: Option<String>,
    #[arg(help = schema::flag_help("--fast-connection"), global = true, long, value_parser = bool_value())]
    pub fast_connection: Option<String>,
    #[arg(help = schema::flag_help("--auto-rollback"), global = true, long, value_parser = bool_value())]
    pub auto_rollback: Option<String>,
    #[arg(help = schema::flag_help("--hostname"), global = true, long)]
    pub hostname: Option<String>,
    #[arg(help = schema::flag_help("--magic-rollback"), global = true, long, value_parser = bool_value())]
    pub magic_rollback: Option<String>,
    #[arg(help = schema::flag_help("--confirm-timeout"), global = true, long, value_name = "SECONDS")]
    pub confirm_timeout: Option<u64>,
    #[arg(help = schema::flag_help("--activation-timeout"), global = true, long, value_name = "SECONDS")]
    pub activation_timeout: Option<u64>,
    #[arg(help = schema::flag_help("--temp-path"), global = true, long, value_name = "PATH")]
    pub temp_path: Option<String>,
    #[arg(help = schema::flag_help("--profile-path"), global = true, long, value_name = "PATH")]
    pub profile_path: Option<String>,
    /// Run the activation's dry-activate mode; change nothing.
    #[arg(global = true, long)]
    pub dry_activate: bool,
    /// Set the profile and activate it on the next boot.
    #[arg(global = true, long)]
    pub boot: bool,
    /// Roll back profiles this run already activated when a later one fails.
    #[arg(global = true, long, value_parser = bool_value())]
    pub rollback_succeeded: Option<String>,
    #[arg(help = schema::flag_help("--sudo"), global = true, long, value_name = "CMD")]
    pub sudo: Option<String>,
    #[arg(help = schema::flag_help("--interactive-sudo"), global = true, long, value_parser = bool_value())]
    pub interactive_sudo: Option<String>,
    /// Run this command to get the sudo password (instead of a prompt).
    #[arg(global = true, long, value_name = "CMD")]
    pub sudo_password_command: Option<String>,

    /// Print the plan as JSON on stdout and exit (same as `rollout plan`).
    #[arg(global = true, long)]
    pub dry_run: bool,
    /// One JSON event per line on stdout.
    #[arg(global = true, long)]
    pub json: bool,
    /// Nodes deployed at the same time.
    #[arg(global = true, long, value_name = "N", default_value_t = 10)]
    pub parallel: usize,
    /// When a node fails, deploy the others anyway (no fleet-wide rollback).
    #[arg(global = true, long)]
    pub keep_going: bool,
    /// Deploy K nodes first and go on only if they all succeed.
    #[arg(global = true, long, value_name = "K", default_value_t = 0)]
    pub canary: usize,
    /// Only these nodes: names, globs or @tag (comma-separated or repeated).
    #[arg(global = true, long, value_name = "SEL", action = ArgAction::Append)]
    pub on: Vec<String>,
    /// Leave out these nodes: names, globs or @tag.
    #[arg(global = true, long, value_name = "SEL", action = ArgAction::Append)]
    pub exclude: Vec<String>,
    /// No live progress lines, even on a terminal.
    #[arg(global = true, long)]
    pub no_progress: bool,
    /// The agent to copy to targets: a store path with bin/rollout-agent, or a binary.
    #[arg(global = true, long, value_name = "PATH", env = "ROLLOUT_AGENT")]
    pub agent: Option<String>,
}

/// One run's request as the commands see it: its targets and its flags (fields of `Flags` are
/// reachable directly, `args.ssh_user`, through `Deref`).
#[derive(Debug, Clone, Default)]
pub struct DeployArgs {
    pub target: Option<String>,
    pub targets: Vec<String>,
    pub extra: Vec<String>,
    pub flags: Flags,
}

impl DeployArgs {
    pub fn new(t: Targets, flags: Flags) -> DeployArgs {
        DeployArgs {
            target: t.target,
            targets: t.targets,
            extra: t.extra,
            flags,
        }
    }
}

impl std::ops::Deref for DeployArgs {
    type Target = Flags;
    fn deref(&self) -> &Flags {
        &self.flags
    }
}

pub fn parse_bool(v: &Option<String>) -> Option<bool> {
    v.as_deref().map(|s| s == "true")
}
