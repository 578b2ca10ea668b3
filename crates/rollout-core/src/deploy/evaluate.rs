//! Evaluation of the settings: flake support detection, checks once per flake, and ONE `nix eval`
//! per flake for all of its targets (non-flake: one `nix-instantiate` per file) that reads every
//! setting but not the profiles' paths (those are evaluated per node: [`super::stream`]).

use crate::config::{parse_deploy, ConfigError, DeployConfig};
use crate::evalexpr::{self, Selection};
use crate::events::{Phase, Reporter, State};
use crate::exec::{ExecError, Runner};
use crate::nix::{self, NixContext};
use crate::target::Target;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("`{0}` is not a flake or directory (expected a path to a directory with flake.nix, or a flake reference such as github:owner/repo)")]
    NotAFlake(String),
    #[error("`{0}` does not exist (expected a Nix file or a directory with default.nix for --file)")]
    NoSuchFile(String),
    #[error("checks of `{flake}` failed (skip them with -s/--skip-checks):\n{nix}")]
    Checks { flake: String, nix: String },
    #[error("evaluating the `deploy` output of `{flake}` failed:\n{nix}")]
    Eval { flake: String, nix: String },
    #[error("{}", super::stream::failure_text(node, Some(flake), message))]
    Node {
        flake: String,
        node: String,
        message: String,
    },
    #[error("the evaluation of `{flake}` did not return JSON: {err}")]
    BadJson { flake: String, err: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Exec(#[from] ExecError),
}

/// Where the `deploy` output comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Flake,
    /// `default.nix`/a file read with `nix-instantiate` (no flakes, or `--file`).
    File,
}

/// Decide between flakes and the non-flake fallback, and learn the Nix version.
pub fn detect(runner: &Runner, force_file: bool, extra_args: Vec<String>) -> Result<(Mode, NixContext), ExecError> {
    let out = runner.checked(&nix::version(), "asking Nix for its version")?;
    let version = nix::parse_version(&out).unwrap_or((2, 4));
    let ctx = NixContext { version, extra_args };
    if force_file {
        return Ok((Mode::File, ctx));
    }
    let probe = runner.capture(&nix::flake_probe())?;
    if probe.status.success() {
        Ok((Mode::Flake, ctx))
    } else {
        runner
            .reporter
            .warn("this Nix has no flake support; reading `deploy` from default.nix (flake-compat) instead");
        Ok((Mode::File, ctx))
    }
}

fn check_local_source(flake: &str, mode: Mode) -> Result<(), EvalError> {
    // Only plain paths can be checked here; other references (github:, path:, git+…) are Nix's.
    let is_path = flake.is_empty() || flake.starts_with('.') || flake.starts_with('/');
    if !is_path {
        return Ok(());
    }
    let base = flake.split('?').next().unwrap_or(flake);
    let p = Path::new(if base.is_empty() { "." } else { base });
    match mode {
        Mode::Flake if !p.is_dir() || !p.join("flake.nix").is_file() => Err(EvalError::NotAFlake(flake.to_string())),
        Mode::File if !p.exists() => Err(EvalError::NoSuchFile(flake.to_string())),
        _ => Ok(()),
    }
}

/// Check (unless skipped) and evaluate every distinct flake once; returns each target with the
/// configuration of its flake.
pub fn evaluate(
    runner: &Runner,
    ctx: &NixContext,
    mode: Mode,
    targets: &[Target],
    skip_checks: bool,
) -> Result<Vec<(Target, Arc<DeployConfig>)>, EvalError> {
    let mut flakes: Vec<String> = Vec::new();
    for t in targets {
        if !flakes.contains(&t.flake) {
            flakes.push(t.flake.clone());
        }
    }
    let mut configs: BTreeMap<String, Arc<DeployConfig>> = BTreeMap::new();
    for flake in &flakes {
        check_local_source(flake, mode)?;
        let rep: &Reporter = &runner.reporter;
        if !skip_checks {
            rep.phase(Phase::Check, State::Started, Some(format!("running checks of {flake}")));
            let argv = match mode {
                Mode::Flake => ctx.flake_check(flake),
                Mode::File => ctx.file_check(flake),
            };
            if let Err(e) = runner.checked(&argv, "nix flake check") {
                rep.phase(Phase::Check, State::Failed, None);
                return Err(match e {
                    ExecError::Failed { .. } => EvalError::Checks {
                        flake: flake.clone(),
                        nix: e.stderr().trim().to_string(),
                    },
                    other => other.into(),
                });
            }
            rep.phase(Phase::Check, State::Succeeded, None);
        }
        let mine: Vec<&Target> = targets.iter().filter(|t| &t.flake == flake).collect();
        let lambda = evalexpr::apply_lambda(&Selection::from_targets(mine));
        let argv = match mode {
            Mode::Flake => ctx.eval_flake(flake, &lambda),
            Mode::File => ctx.eval_file(&evalexpr::non_flake_expr(flake, &lambda)),
        };
        rep.phase(Phase::Evaluate, State::Started, Some(format!("evaluating {flake}")));
        let out = match runner.checked(&argv, "nix eval") {
            Ok(o) => o,
            Err(e @ ExecError::Failed { .. }) => {
                rep.phase(Phase::Evaluate, State::Failed, None);
                return Err(EvalError::Eval {
                    flake: flake.clone(),
                    nix: e.stderr().trim().to_string(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let json: serde_json::Value = serde_json::from_str(&out).map_err(|e| EvalError::BadJson {
            flake: flake.clone(),
            err: e.to_string(),
        })?;
        let cfg = parse_deploy(&json, flake)?;
        rep.phase(Phase::Evaluate, State::Succeeded, None);
        configs.insert(flake.clone(), Arc::new(cfg));
    }
    Ok(targets.iter().map(|t| (t.clone(), configs[&t.flake].clone())).collect())
}
