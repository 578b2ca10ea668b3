//! Build: the profiles of one node that are not built on their target, from the derivations
//! their evaluation produced (nothing is evaluated again), in one Nix call; optional GC roots; a
//! check that each closure is activatable.

use super::evaluate::Mode;
use crate::events::{Phase, State};
use crate::exec::{ExecError, Runner};
use crate::nix::{self, NixContext};
use crate::plan::Deployment;
use crate::target::quote_attr;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("building the profiles failed:\n{0}")]
    Build(String),
    #[error(
        "deploy.nodes.{}.profiles.{}.path is not a derivation (a plain string such as \"/etc\", or a store path \
         that Nix cannot build): `{closure}`; expected a profile built by lib.<system>.activate.* (or a Nix path)\n{nix}",
        quote_attr(node), quote_attr(profile)
    )]
    NotBuildable {
        node: String,
        profile: String,
        closure: String,
        nix: String,
    },
    #[error(
        "profile `{profile}` of node `{node}`: {closure} has no `deploy-rs-activate`; build the profile with \
             rollout's (or deploy-rs's) lib.<system>.activate.* so that it knows how to activate itself"
    )]
    NotActivatable {
        node: String,
        profile: String,
        closure: String,
    },
    #[error("--keep-result: cannot make a GC root for node `{node}`, profile `{profile}` inside {dir}: {problem}")]
    RootName {
        node: String,
        profile: String,
        dir: String,
        problem: String,
    },
    #[error("cannot create the result directory {0}: {1}")]
    ResultDir(String, std::io::Error),
    #[error(transparent)]
    Exec(#[from] ExecError),
}

pub fn installable(mode: Mode, d: &Deployment) -> String {
    match mode {
        Mode::Flake => nix::profile_installable(&d.flake, &d.node, &d.profile),
        Mode::File => nix::profile_attr(&d.node, &d.profile),
    }
}

/// Build the given (evaluated) deployments locally in one Nix call, keep GC roots if asked.
pub fn build_local(
    runner: &Runner,
    ctx: &NixContext,
    mode: Mode,
    deployments: &[&Deployment],
    keep_result: Option<&Path>,
) -> Result<(), BuildError> {
    if deployments.is_empty() {
        return Ok(());
    }
    let rep = &runner.reporter;
    rep.phase(
        Phase::Build,
        State::Started,
        Some(format!("building {} profile(s)", deployments.len())),
    );
    let wanted: Vec<String> = deployments
        .iter()
        .map(|d| d.drv.clone().unwrap_or_else(|| d.closure.clone()))
        .collect();
    for argv in build_argvs(ctx, mode, &wanted) {
        if let Err(e) = runner.checked(&argv, "nix build") {
            rep.phase(Phase::Build, State::Failed, None);
            return Err(match e {
                ExecError::Failed { .. } => failed(deployments, e.stderr().trim()),
                other => other.into(),
            });
        }
    }
    for d in deployments {
        if !Path::new(&d.closure).join("deploy-rs-activate").exists() {
            rep.phase(Phase::Build, State::Failed, None);
            return Err(BuildError::NotActivatable {
                node: d.node.clone(),
                profile: d.profile.clone(),
                closure: d.closure.clone(),
            });
        }
    }
    if let Some(dir) = keep_result {
        for d in deployments {
            let root = gc_root(dir, &d.node, &d.profile)?;
            let node_dir = dir.join(&d.node);
            std::fs::create_dir_all(&node_dir).map_err(|e| BuildError::ResultDir(node_dir.display().to_string(), e))?;
            runner.checked(
                &nix::add_root(&d.closure, &root.display().to_string()),
                "creating a GC root",
            )?;
        }
    }
    rep.phase(Phase::Build, State::Succeeded, None);
    Ok(())
}

/// Why a build failed: a `path` that is a plain store path Nix cannot produce names its attribute;
/// anything else is Nix's text.
fn failed(deployments: &[&Deployment], nix: &str) -> BuildError {
    match deployments.iter().find(|d| d.drv.is_none() && nix.contains(&d.closure)) {
        Some(d) => BuildError::NotBuildable {
            node: d.node.clone(),
            profile: d.profile.clone(),
            closure: d.closure.clone(),
            nix: nix.to_string(),
        },
        None => BuildError::Build(nix.to_string()),
    }
}

/// The Nix calls that build `wanted` (derivations, or plain store paths to make valid).
fn build_argvs(ctx: &NixContext, mode: Mode, wanted: &[String]) -> Vec<crate::cmd::Argv> {
    match mode {
        Mode::Flake => vec![ctx.build_outputs(wanted)],
        Mode::File => {
            let (drvs, plain): (Vec<String>, Vec<String>) = wanted.iter().cloned().partition(|p| p.ends_with(".drv"));
            let mut out = Vec::new();
            if !drvs.is_empty() {
                out.push(ctx.build_drvs_file(&drvs));
            }
            if !plain.is_empty() {
                out.push(nix::realise(&plain));
            }
            out
        }
    }
}

/// `DIR/NODE/PROFILE`, refused unless both names are plain file names (validated names always
/// are: this keeps a root inside `--result-path` even if a caller skipped validation).
pub fn gc_root(dir: &Path, node: &str, profile: &str) -> Result<std::path::PathBuf, BuildError> {
    for name in [node, profile] {
        if let Err(e) = crate::validate::check_name(name) {
            return Err(BuildError::RootName {
                node: crate::validate::shown(node),
                profile: crate::validate::shown(profile),
                dir: dir.display().to_string(),
                problem: e.message(name),
            });
        }
    }
    Ok(dir.join(node).join(profile))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gc_roots_stay_inside_the_result_path() {
        let dir = Path::new("/r");
        assert_eq!(gc_root(dir, "web", "system").unwrap(), Path::new("/r/web/system"));
        assert_eq!(gc_root(dir, "a.b", "x.y").unwrap(), Path::new("/r/a.b/x.y"));
        for (n, p) in [
            ("../../../../tmp/x", "s"),
            ("/tmp/x", "s"),
            ("web", ".."),
            ("web", "a/b"),
            (".", "s"),
            ("", "s"),
        ] {
            assert!(gc_root(dir, n, p).is_err(), "{n} {p}");
        }
    }
}
