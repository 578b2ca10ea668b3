//! One module per subcommand; shared set-up (targets → evaluated, validated, filtered plan).

pub mod deploy;
pub mod plan;

use crate::cli::{parse_bool, DeployArgs};
use rollout_core::deploy::evaluate::{self, Mode};
use rollout_core::events::Reporter;
use rollout_core::exec::Runner;
use rollout_core::nix::NixContext;
use rollout_core::plan::{build_plan, Plan};
use rollout_core::select::NodeFilter;
use rollout_core::settings::{split_ssh_opts, Overrides};
use rollout_core::target::{parse_file_target, parse_target, Target};

pub use rollout_core::exit::{BAD_INPUT as EXIT_USER, FAILED as EXIT_FAILED};

/// Everything decided before any machine is touched.
pub struct Prepared {
    pub plan: Plan,
    pub mode: Mode,
    pub ctx: NixContext,
}

pub fn targets(args: &DeployArgs) -> Result<Vec<Target>, String> {
    let mut raw: Vec<String> = args.targets.clone();
    if let Some(t) = &args.target {
        raw.push(t.clone());
    }
    if raw.is_empty() {
        raw.push(".".into());
    }
    raw.iter()
        .map(|t| match &args.file {
            Some(file) => parse_file_target(file, t).map_err(|e| e.to_string()),
            None => parse_target(t).map_err(|e| e.to_string()),
        })
        .collect()
}

pub fn overrides(args: &DeployArgs) -> Result<Overrides, String> {
    Ok(Overrides {
        ssh_user: args.ssh_user.clone(),
        profile_user: args.profile_user.clone(),
        ssh_opts: args
            .ssh_opts
            .as_deref()
            .map(split_ssh_opts)
            .transpose()
            .map_err(|e| e.to_string())?,
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
    })
}

pub fn local_user() -> String {
    // SAFETY: getpwuid returns a pointer into static storage or null; we copy the name at once.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if !pw.is_null() && !(*pw).pw_name.is_null() {
            if let Ok(s) = std::ffi::CStr::from_ptr((*pw).pw_name).to_str() {
                return s.to_string();
            }
        }
    }
    std::env::var("USER").unwrap_or_else(|_| "root".into())
}

/// Targets → one evaluation per flake → validated plan → node filter.
pub fn prepare(args: &DeployArgs, reporter: &Reporter) -> Result<Prepared, String> {
    if args.dry_activate && args.boot {
        return Err("--dry-activate and --boot cannot be used together (expected at most one of them)".into());
    }
    if args.parallel == 0 {
        return Err("--parallel must be at least 1".into());
    }
    let targets = targets(args)?;
    let overrides = overrides(args)?;
    let filter = NodeFilter::parse(&args.on, &args.exclude).map_err(|e| e.to_string())?;
    if let Some(r) = &args.result_path {
        rollout_core::validate::check_local_path(r).map_err(|e| e.at("--result-path", r).to_string())?;
    }
    let runner = Runner::new(reporter.clone());
    let (mode, ctx) = evaluate::detect(&runner, args.file.is_some(), args.extra.clone()).map_err(|e| e.to_string())?;
    let evaluated = evaluate::evaluate(&runner, &ctx, mode, &targets, args.skip_checks).map_err(|e| e.to_string())?;
    let pairs: Vec<(Target, &rollout_core::config::DeployConfig)> =
        evaluated.iter().map(|(t, c)| (t.clone(), c.as_ref())).collect();
    let mut plan = build_plan(&pairs, &overrides, &local_user()).map_err(|e| e.to_string())?;
    if !filter.is_empty() {
        let all: Vec<String> = {
            let mut v: Vec<String> = plan.deployments.iter().map(|d| d.node.clone()).collect();
            v.dedup();
            v
        };
        plan.deployments.retain(|d| {
            let tags = evaluated
                .iter()
                .find(|(t, _)| t.flake == d.flake)
                .and_then(|(_, c)| c.nodes.get(&d.node))
                .map(|n| n.tags.clone())
                .unwrap_or_default();
            filter.matches(&d.node, &tags)
        });
        if plan.deployments.is_empty() {
            return Err(filter.empty_error(&all).to_string());
        }
    }
    if let Some(h) = &args.hostname {
        // deploy-rs applies --hostname to every node (its issue #122); sending several nodes'
        // profiles to one machine is never what was meant.
        let mut nodes: Vec<&str> = plan.deployments.iter().map(|d| d.node.as_str()).collect();
        nodes.sort();
        nodes.dedup();
        if nodes.len() > 1 {
            return Err(format!(
                "--hostname {h} would send {} nodes ({}) to one machine; select one node (e.g. .#{})",
                nodes.len(),
                nodes.join(", "),
                nodes[0]
            ));
        }
    }
    Ok(Prepared { plan, mode, ctx })
}
