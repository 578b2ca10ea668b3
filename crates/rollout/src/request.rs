//! Flags → a validated request for the core: parse the targets, overrides and node filter, check
//! the flags that exclude each other, and refuse (exit 1) before anything is evaluated.

use crate::cli::{parse_bool, DeployArgs};
use rollout_core::deploy::RunOptions;
use rollout_core::error::Error;
use rollout_core::ops::DeployRequest;
use rollout_core::select::NodeFilter;
use rollout_core::settings::{split_ssh_opts, Overrides};
use rollout_core::target::{parse_file_target, parse_target, Target};
use rollout_protocol::command::Origin;
use std::path::PathBuf;

pub fn deploy_request(args: &DeployArgs) -> Result<DeployRequest, Error> {
    if args.dry_activate && args.boot {
        return Err(Error::bad_input(
            "--dry-activate and --boot cannot be used together (expected at most one of them)",
        ));
    }
    if args.parallel == 0 {
        return Err(Error::bad_input("--parallel must be at least 1"));
    }
    if args.eval_jobs == Some(0) {
        return Err(Error::bad_input("--eval-jobs must be at least 1"));
    }
    if let Some(r) = &args.result_path {
        rollout_core::validate::check_local_path(r).map_err(|e| Error::bad_input(e.at("--result-path", r)))?;
    }
    if let Some(k) = &args.sign_key {
        check_sign_key(k)?;
    }
    let mut overrides = overrides(args)?;
    if args.local {
        // On this machine the deployer is the "ssh user": elevation happens exactly when the
        // profile's user is someone else.
        overrides.ssh_user = Some(local_user());
    }
    Ok(DeployRequest {
        targets: targets(args)?,
        file_mode: args.file.is_some(),
        extra: args.extra.clone(),
        overrides,
        filter: NodeFilter::parse(&args.on, &args.exclude).map_err(Error::bad_input)?,
        skip_checks: args.skip_checks,
        local_user: local_user(),
        eval_jobs: eval_jobs(args),
    })
}

/// `--eval-jobs`, by default the number of CPUs this process may use.
pub fn eval_jobs(args: &DeployArgs) -> usize {
    args.eval_jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get))
}

/// The switches of the run itself (not per profile).
pub fn run_options(args: &DeployArgs) -> RunOptions {
    RunOptions {
        dry_activate: args.dry_activate,
        boot: args.boot,
        rollback_succeeded: parse_bool(&args.rollback_succeeded).unwrap_or(true),
        keep_result: args
            .keep_result
            .then(|| PathBuf::from(args.result_path.clone().unwrap_or_else(|| "./.deploy-gc".into()))),
        checksigs: args.checksigs,
        sign_key: args.sign_key.clone(),
        debug_logs: args.debug_logs,
        parallel: args.parallel,
        keep_going: args.keep_going,
        canary: args.canary,
        agent: args.agent.clone(),
        origin: Origin {
            by: format!("{}@{}", local_user(), local_hostname()),
            ..Default::default()
        },
        local: args.local,
        reactivate: args.reactivate,
        skip_health_checks: args.skip_health_checks,
        eval_jobs: eval_jobs(args),
        ..Default::default()
    }
}

/// `--sign-key` / `LOCAL_KEY`: a readable local file, checked before anything is built.
fn check_sign_key(k: &str) -> Result<(), Error> {
    let at = "--sign-key (or LOCAL_KEY)";
    rollout_core::validate::check_local_path(k).map_err(|e| Error::bad_input(e.at(at, k)))?;
    std::fs::File::open(k)
        .map(drop)
        .map_err(|e| Error::BadInput(format!("{at}: expected a readable secret key file (nix-store --generate-binary-cache-key), found `{k}`, which cannot be opened: {e}")))
}

fn targets(args: &DeployArgs) -> Result<Vec<Target>, Error> {
    let mut raw: Vec<String> = args.targets.clone();
    if let Some(t) = &args.target {
        raw.push(t.clone());
    }
    if raw.is_empty() {
        raw.push(".".into());
    }
    raw.iter()
        .map(|t| match &args.file {
            Some(file) => parse_file_target(file, t).map_err(Error::bad_input),
            None => parse_target(t).map_err(Error::bad_input),
        })
        .collect()
}

fn overrides(args: &DeployArgs) -> Result<Overrides, Error> {
    Ok(Overrides {
        ssh_user: args.ssh_user.clone(),
        profile_user: args.profile_user.clone(),
        ssh_opts: args
            .ssh_opts
            .as_deref()
            .map(split_ssh_opts)
            .transpose()
            .map_err(Error::bad_input)?,
        fast_connection: parse_bool(&args.fast_connection),
        auto_rollback: parse_bool(&args.auto_rollback),
        magic_rollback: parse_bool(&args.magic_rollback),
        confirm_timeout: args.confirm_timeout,
        activation_timeout: args.activation_timeout,
        temp_path: args.temp_path.clone(),
        remote_build: if args.remote_build { Some(true) } else { None },
        interactive_sudo: parse_bool(&args.interactive_sudo),
        sudo: args.sudo.clone(),
        hostname: args.hostname.clone(),
        profile_path: args.profile_path.clone(),
        strict: args.strict.then_some(true),
        // Checks come from the flake only; there is no flag for them.
        health_checks: None,
        keys: None,
    })
}

/// This machine's name, for the targets' deploy records.
fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The name of the user running rollout (the default profile user of deploy-rs's merge rules).
fn local_user() -> String {
    // SAFETY: getpwuid returns a pointer into static storage or null; the name is copied at once.
    let name = unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if pw.is_null() || (*pw).pw_name.is_null() {
            None
        } else {
            std::ffi::CStr::from_ptr((*pw).pw_name)
                .to_str()
                .ok()
                .map(str::to_string)
        }
    };
    name.or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "root".into())
}
