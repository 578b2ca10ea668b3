//! Command-line flags: deploy-rs's, with the same names, short flags and `true`/`false` values,
//! plus rollout's own (fleet selection, parallelism, JSON, agent).

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use rollout_core::schema;
use std::path::PathBuf;

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
    /// Evaluate and validate, then print the plan as JSON on stdout; touches no machine (but
    /// with --diff, which asks the targets what they run).
    Plan(PlanArgs),
    /// What every selected profile runs now, and whether it is what the flake would deploy.
    Status(Targets),
    /// Each selected profile's generations, with the deploy record that made each.
    History(Targets),
    /// Move each selected profile back to its previous generation (or --to N), as a deploy with
    /// the same guarantees.
    Rollback(RollbackArgs),
    /// What a deploy would change: packages added, removed and changed, and the closure size.
    Diff(Targets),
    /// Upload the nodes' `keys` (secrets) and nothing else; no profile is touched.
    UploadKeys(Targets),
    /// Print a shell completion script on stdout (e.g. `rollout completions bash > /etc/bash_completion.d/rollout`).
    Completions(CompletionsArgs),
    /// Print the man page on stdout, or write one page per subcommand into a directory.
    Man(ManArgs),
    /// Print the JSON Schema (draft 2020-12) of the flake's `deploy` output on stdout.
    Schema(SchemaArgs),
}

/// `rollout plan`: its targets, and whether to add each profile's closure diff.
#[derive(Args, Debug, Clone, Default)]
pub struct PlanArgs {
    #[command(flatten)]
    pub targets: Targets,
    /// Also build the profiles and add to the plan what each would change on its target (asks the
    /// targets, changes nothing).
    #[arg(long)]
    pub diff: bool,
}

/// `rollout rollback`: its targets and where to go back to.
#[derive(Args, Debug, Clone, Default)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub targets: Targets,
    /// Go back to this generation [default: the one before the current one].
    #[arg(long, value_name = "GENERATION")]
    pub to: Option<u64>,
}

/// `rollout completions SHELL`.
#[derive(Args, Debug, Clone)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `rollout man [--out DIR]`.
#[derive(Args, Debug, Clone)]
pub struct ManArgs {
    /// Write rollout.1 and rollout-SUBCOMMAND.1 into DIR instead of printing rollout.1 [default: print to stdout].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// `rollout schema [--strict]`.
#[derive(Args, Debug, Clone)]
pub struct SchemaArgs {
    /// Refuse keys that are not settings (`additionalProperties: false`), to catch misspellings
    /// [default: extra keys allowed, as in deploy-rs].
    #[arg(long = "strict-keys")]
    pub strict_keys: bool,
}

/// When messages on stderr are coloured.
#[derive(ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Color {
    /// On a terminal, unless `NO_COLOR` is set.
    #[default]
    Auto,
    /// Always (also overrides `NO_COLOR`).
    Always,
    /// Never.
    Never,
}

fn bool_value() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(["true", "false"])
}

/// What to deploy; given to the bare form or to a subcommand.
#[derive(Args, Debug, Clone, Default)]
pub struct Targets {
    /// What to deploy: FLAKE, FLAKE#node or FLAKE#node.profile [default: .].
    #[arg(group = "deploy")]
    pub target: Option<String>,
    /// Several targets, each written like TARGET [default: TARGET alone].
    #[arg(long, num_args = 1.., group = "deploy")]
    pub targets: Vec<String>,
    /// Arguments passed on to every nix call, after `--` [default: none].
    #[arg(last = true)]
    pub extra: Vec<String>,
}

/// Every flag of a run. All are global: `rollout -d plan .#web` and `rollout plan -d .#web` mean the same.
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Run options")]
pub struct Flags {
    /// Read `deploy` from a Nix file or directory (flake-compat) instead of a flake [default: the flake in TARGET].
    #[arg(global = true, short = 'f', long)]
    pub file: Option<String>,
    /// Check signatures when copying (drops `--no-check-sigs`) [default: off].
    #[arg(global = true, short = 'c', long)]
    pub checksigs: bool,
    /// Sign the closures with this secret key file before copying them, for targets that only take signed paths [default: unsigned; env LOCAL_KEY, as in deploy-rs].
    #[arg(global = true, long, value_name = "FILE", env = "LOCAL_KEY")]
    pub sign_key: Option<String>,
    /// Print the plan and ask for confirmation before deploying; needs a terminal [default: off].
    #[arg(global = true, short = 'i', long)]
    pub interactive: bool,
    /// Show every command run, and the agents' debug output [default: off].
    #[arg(global = true, short = 'd', long)]
    pub debug_logs: bool,
    /// Also write the log of this run to a file in DIR [default: no log file].
    #[arg(global = true, long, value_name = "DIR")]
    pub log_dir: Option<String>,
    /// Keep GC roots of the built profiles under --result-path [default: off].
    #[arg(global = true, short = 'k', long)]
    pub keep_result: bool,
    /// Where --keep-result puts its GC roots [default: ./.deploy-gc].
    #[arg(global = true, short = 'r', long, value_name = "PATH")]
    pub result_path: Option<String>,
    /// Skip the flake's checks [default: off, the checks run].
    #[arg(global = true, short = 's', long)]
    pub skip_checks: bool,
    #[arg(help = schema::flag_help("--strict"), global = true, long)]
    pub strict: bool,
    #[arg(help = schema::flag_help("--remote-build"), global = true, long)]
    pub remote_build: bool,
    #[arg(help = schema::flag_help("--ssh-user"), global = true, long, value_name = "USER")]
    pub ssh_user: Option<String>,
    #[arg(help = schema::flag_help("--profile-user"), global = true, long, value_name = "USER")]
    pub profile_user: Option<String>,
    #[arg(help = schema::flag_help("--ssh-opts"), global = true, long, allow_hyphen_values = true, value_name = "OPTS")]
    pub ssh_opts: Option<String>,
    #[arg(help = schema::flag_help("--fast-connection"), global = true, long, value_parser = bool_value(), value_name = "BOOL")]
    pub fast_connection: Option<String>,
    #[arg(help = schema::flag_help("--auto-rollback"), global = true, long, value_parser = bool_value(), value_name = "BOOL")]
    pub auto_rollback: Option<String>,
    #[arg(help = schema::flag_help("--hostname"), global = true, long)]
    pub hostname: Option<String>,
    #[arg(help = schema::flag_help("--magic-rollback"), global = true, long, value_parser = bool_value(), value_name = "BOOL")]
    pub magic_rollback: Option<String>,
    #[arg(help = schema::flag_help("--confirm-timeout"), global = true, long, value_name = "SECONDS")]
    pub confirm_timeout: Option<u64>,
    #[arg(help = schema::flag_help("--activation-timeout"), global = true, long, value_name = "SECONDS")]
    pub activation_timeout: Option<u64>,
    #[arg(help = schema::flag_help("--temp-path"), global = true, long, value_name = "PATH")]
    pub temp_path: Option<String>,
    #[arg(help = schema::flag_help("--profile-path"), global = true, long, value_name = "PATH")]
    pub profile_path: Option<String>,
    /// Run the activation's dry-activate mode; change nothing [default: off].
    #[arg(global = true, long)]
    pub dry_activate: bool,
    /// Set the profile and activate it on the next boot [default: off].
    #[arg(global = true, long)]
    pub boot: bool,
    /// Roll back profiles this run already activated when a later one fails [default: true].
    #[arg(global = true, long, value_parser = bool_value(), value_name = "BOOL")]
    pub rollback_succeeded: Option<String>,
    #[arg(help = schema::flag_help("--sudo"), global = true, long, value_name = "CMD")]
    pub sudo: Option<String>,
    #[arg(help = schema::flag_help("--interactive-sudo"), global = true, long, value_parser = bool_value(), value_name = "BOOL")]
    pub interactive_sudo: Option<String>,
    /// Run this command to get the sudo password [default: the ROLLOUT_SUDO_PASSWORD* variables, else a prompt].
    #[arg(global = true, long, value_name = "CMD")]
    pub sudo_password_command: Option<String>,

    /// Print the plan as JSON on stdout and exit (same as `rollout plan`) [default: off].
    #[arg(global = true, long)]
    pub dry_run: bool,
    /// One JSON event per line on stdout; human messages stay on stderr [default: off].
    #[arg(global = true, long)]
    pub json: bool,
    /// Nodes deployed at the same time.
    #[arg(global = true, long, value_name = "N", default_value_t = 10)]
    pub parallel: usize,
    /// Nodes evaluated at the same time, each in its own `nix eval` process (fewer while memory
    /// is short) [default: the number of CPUs].
    #[arg(global = true, long, value_name = "N")]
    pub eval_jobs: Option<usize>,
    /// When a node fails, deploy the others anyway (no fleet-wide rollback) [default: off].
    #[arg(global = true, long)]
    pub keep_going: bool,
    /// Deploy K nodes first and go on only if they all succeed (0: no canary).
    #[arg(global = true, long, value_name = "K", default_value_t = 0)]
    pub canary: usize,
    /// Only these nodes: names, globs or @tag, comma-separated or repeated [default: every node].
    #[arg(global = true, long, value_name = "SEL", action = ArgAction::Append)]
    pub on: Vec<String>,
    /// Leave out these nodes: names, globs or @tag [default: none].
    #[arg(global = true, long, value_name = "SEL", action = ArgAction::Append)]
    pub exclude: Vec<String>,
    /// No live progress lines, even on a terminal [default: off; progress only when stderr is a terminal].
    #[arg(global = true, long)]
    pub no_progress: bool,
    /// The agent to copy to targets: a store path with bin/rollout-agent, or a binary [default: the one
    /// in the profile's closure, else the one shipped with rollout].
    #[arg(global = true, long, value_name = "PATH", env = "ROLLOUT_AGENT")]
    pub agent: Option<String>,
    /// Colour the messages on stderr.
    #[arg(global = true, long, value_enum, value_name = "WHEN", default_value_t = Color::Auto)]
    pub color: Color,
    /// Confirm without running the profiles' health checks, for emergencies (said loudly in the
    /// output) [default: off].
    #[arg(global = true, long)]
    pub skip_health_checks: bool,
    /// Activate profiles that already run the flake's closure too [default: off; they are reported
    /// unchanged and left alone when the deploy that made them was confirmed].
    #[arg(global = true, long)]
    pub reactivate: bool,
    /// Act on this machine instead of the nodes' hosts (no SSH): deploy, status, history, rollback, diff
    /// [default: off].
    #[arg(global = true, long)]
    pub local: bool,
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every command and its subcommands, built (global flags propagated).
    fn all_commands() -> Vec<clap::Command> {
        fn walk(c: &clap::Command, out: &mut Vec<clap::Command>) {
            out.push(c.clone());
            for s in c.get_subcommands() {
                walk(s, out);
            }
        }
        let mut root = Cli::command();
        root.build();
        let mut out = Vec::new();
        walk(&root, &mut out);
        out
    }

    #[test]
    fn every_flag_and_argument_has_a_one_line_help() {
        for cmd in all_commands() {
            assert!(
                cmd.get_about().is_some() || cmd.get_name() == "help",
                "{} has no about",
                cmd.get_name()
            );
            for a in cmd.get_arguments() {
                let help = a.get_help().map(ToString::to_string).unwrap_or_default();
                assert!(!help.trim().is_empty(), "{} {}: empty help", cmd.get_name(), a.get_id());
                assert!(
                    !help.contains('\n'),
                    "{} {}: help is not one line",
                    cmd.get_name(),
                    a.get_id()
                );
            }
        }
    }

    /// A flag that takes a value says what happens without it: a clap default, a `[default: …]` in
    /// its text, or the flake setting it overrides (whose own default the text then gives, where
    /// it has one).
    #[test]
    fn every_flag_that_takes_a_value_shows_its_default() {
        for cmd in all_commands() {
            for a in cmd.get_arguments() {
                let takes_value = a.get_num_args().is_some_and(|n| n.takes_values());
                let builtin = ["help", "version"].contains(&a.get_id().as_str());
                if !takes_value || builtin || a.is_required_set() {
                    continue;
                }
                let help = a.get_help().map(ToString::to_string).unwrap_or_default();
                let shown = !a.get_default_values().is_empty()
                    || help.contains("default:")
                    || help.contains("overrides `")
                    || help.contains("(0: ");
                assert!(shown, "{} {}: no default in `{help}`", cmd.get_name(), a.get_id());
            }
        }
    }

    #[test]
    fn color_defaults_to_auto_and_takes_the_three_words() {
        let cli = Cli::try_parse_from(["rollout", "plan", "."]).unwrap();
        assert_eq!(cli.flags.color, Color::Auto);
        for (w, c) in [
            ("auto", Color::Auto),
            ("always", Color::Always),
            ("never", Color::Never),
        ] {
            let cli = Cli::try_parse_from(["rollout", "--color", w, "plan"]).unwrap();
            assert_eq!(cli.flags.color, c);
        }
        assert!(Cli::try_parse_from(["rollout", "--color", "sometimes"]).is_err());
    }

    #[test]
    fn tool_subcommands_parse() {
        let cli = Cli::try_parse_from(["rollout", "completions", "zsh"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Completions(CompletionsArgs {
                shell: clap_complete::Shell::Zsh
            }))
        ));
        let cli = Cli::try_parse_from(["rollout", "man", "--out", "d"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Man(ManArgs { out: Some(_) }))));
        let cli = Cli::try_parse_from(["rollout", "schema", "--strict-keys"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Schema(SchemaArgs { strict_keys: true }))
        ));
    }
}
