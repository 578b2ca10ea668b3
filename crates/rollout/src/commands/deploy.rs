//! `rollout [TARGET]`: prepare the plan, optionally show it and ask, then execute it.

use super::{prepare, EXIT_FAILED, EXIT_USER};
use crate::cli::{parse_bool, DeployArgs};
use crate::{password, render};
use rollout_core::deploy::{self, RunOptions};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

fn confirm_interactively() -> bool {
    eprint!("Are you sure you want to deploy these profiles? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        return false;
    }
    matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

pub fn run(args: DeployArgs) -> u8 {
    let progress = !args.no_progress && !args.json && !args.debug_logs && std::io::stderr().is_terminal();
    let (reporter, summary) = match render::run_reporter(&args, progress) {
        Ok(r) => r,
        Err(e) => {
            render::error(&e);
            return EXIT_USER;
        }
    };
    let prepared = match prepare(&args, &reporter) {
        Ok(p) => p,
        Err(e) => {
            render::error(&e);
            return EXIT_USER;
        }
    };
    if args.interactive {
        eprintln!(
            "The following profiles are going to be deployed:\n{}",
            prepared.plan.to_toml()
        );
        if !confirm_interactively() {
            render::error("deployment cancelled by the user");
            return EXIT_USER;
        }
    }
    let passwords = match password::collect(&prepared.plan, args.sudo_password_command.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            render::error(&e);
            return EXIT_USER;
        }
    };
    let opts = RunOptions {
        dry_activate: args.dry_activate,
        boot: args.boot,
        rollback_succeeded: parse_bool(&args.rollback_succeeded).unwrap_or(true),
        keep_result: if args.keep_result {
            Some(PathBuf::from(
                args.result_path.clone().unwrap_or_else(|| "./.deploy-gc".into()),
            ))
        } else {
            None
        },
        checksigs: args.checksigs,
        debug_logs: args.debug_logs,
        parallel: args.parallel,
        keep_going: args.keep_going,
        canary: args.canary,
        agent: args.agent.clone(),
    };
    let started = std::time::Instant::now();
    let report = match deploy::run(
        reporter.clone(),
        prepared.ctx,
        prepared.mode,
        &prepared.plan,
        opts,
        passwords,
    ) {
        Ok(r) => r,
        Err(e) => {
            render::finish(&summary);
            render::error(&e.to_string());
            return EXIT_FAILED;
        }
    };
    render::finish(&summary);
    render::summary(&summary, &report, started.elapsed());
    report.exit_code()
}
