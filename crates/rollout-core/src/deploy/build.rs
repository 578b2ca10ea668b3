//! Build: the profiles of one node that are not built on their target, from the derivations
//! their evaluation produced (nothing is evaluated again), in one Nix call; optional GC roots; a
//! check that each closure is activatable.

use super::copy;
use super::evaluate::Mode;
use crate::events::{Phase, State};
use crate::exec::{ExecError, Runner};
use crate::nix::{self, NixContext};
use crate::plan::Deployment;
use crate::target::quote_attr;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

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

/// Builds that nodes ask for at about the same time, run as one Nix call (a group commit): a node
/// that asks while no build runs starts one with everything asked so far; a node that asks while
/// one runs waits, and the next build takes its request with the others that came meanwhile. With
/// cheap evaluations a fleet's nodes are ready together and share one `nix build` (and one
/// `nix path-info`); with expensive ones each node is built as soon as it is evaluated.
#[derive(Default)]
pub struct Batcher {
    state: Mutex<BatchState>,
    done: Condvar,
}

#[derive(Default)]
struct BatchState {
    /// Requests not started: ticket, what to build, the closures it yields.
    queue: Vec<Request>,
    running: bool,
    results: HashMap<u64, Batched>,
    next: u64,
}

/// A request's result: the NAR sizes of its batch's closures, or Nix's text of its failed build.
type Batched = Result<Arc<HashMap<String, u64>>, String>;

impl Batcher {
    /// Make `wanted` (derivations, or store paths) valid here; the NAR sizes of `closures`.
    fn realise(
        &self,
        runner: &Runner,
        ctx: &NixContext,
        mode: Mode,
        wanted: Vec<String>,
        closures: Vec<String>,
    ) -> Batched {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let ticket = st.next;
        st.next += 1;
        st.queue.push((ticket, wanted, closures));
        loop {
            if let Some(r) = st.results.remove(&ticket) {
                return r;
            }
            if st.running {
                st = self.done.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            st.running = true;
            let batch = std::mem::take(&mut st.queue);
            drop(st);
            let results = run_batch(&batch, &|wanted| build_all(runner, ctx, mode, wanted), &|closures| {
                copy::nar_sizes(runner, closures)
            });
            st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.running = false;
            st.results.extend(results);
            self.done.notify_all();
        }
    }
}

type Request = (u64, Vec<String>, Vec<String>);

/// One build of a whole batch; when it fails and the batch has several requests, each request
/// again on its own, so that only the failing ones fail.
fn run_batch(
    batch: &[Request],
    build: &dyn Fn(&[String]) -> Result<(), String>,
    sizes: &dyn Fn(&[String]) -> HashMap<String, u64>,
) -> Vec<(u64, Batched)> {
    let all: Vec<String> = batch.iter().flat_map(|(_, w, _)| w.iter().cloned()).collect();
    match build(&all) {
        Ok(()) => {
            let closures: Vec<String> = batch.iter().flat_map(|(_, _, c)| c.iter().cloned()).collect();
            let sizes = Arc::new(sizes(&closures));
            batch.iter().map(|(t, _, _)| (*t, Ok(sizes.clone()))).collect()
        }
        Err(e) if batch.len() == 1 => vec![(batch[0].0, Err(e))],
        Err(_) => batch
            .iter()
            .flat_map(|one| run_batch(std::slice::from_ref(one), build, sizes))
            .collect(),
    }
}

fn build_all(runner: &Runner, ctx: &NixContext, mode: Mode, wanted: &[String]) -> Result<(), String> {
    for argv in build_argvs(ctx, mode, wanted) {
        runner.checked(&argv, "nix build").map_err(|e| match e {
            ExecError::Failed { .. } => e.stderr().trim().to_string(),
            other => other.to_string(),
        })?;
    }
    Ok(())
}

/// Build the given (evaluated) deployments locally (through `batcher`, with other nodes' builds
/// of the moment), keep GC roots if asked; the NAR sizes of what was built.
pub fn build_local(
    runner: &Runner,
    ctx: &NixContext,
    mode: Mode,
    batcher: &Batcher,
    deployments: &[&Deployment],
    keep_result: Option<&Path>,
) -> Result<Arc<HashMap<String, u64>>, BuildError> {
    if deployments.is_empty() {
        return Ok(Arc::default());
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
    let closures = deployments.iter().map(|d| d.closure.clone()).collect();
    let sizes = match batcher.realise(runner, ctx, mode, wanted, closures) {
        Ok(s) => s,
        Err(nix) => {
            rep.phase(Phase::Build, State::Failed, None);
            return Err(failed(deployments, &nix));
        }
    };
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
    Ok(sizes)
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
    fn a_failed_shared_build_fails_only_the_requests_that_fail_alone() {
        let req = |t: u64, p: &str| (t, vec![p.to_string()], vec![format!("{p}-out")]);
        let batch = [req(0, "a"), req(1, "bad"), req(2, "c")];
        let calls = Mutex::new(Vec::new());
        let build = |w: &[String]| {
            calls.lock().unwrap().push(w.to_vec());
            if w.iter().any(|p| p == "bad") {
                Err("bad breaks".to_string())
            } else {
                Ok(())
            }
        };
        let sizes = |c: &[String]| c.iter().map(|p| (p.clone(), 1)).collect();
        let r: HashMap<u64, Batched> = run_batch(&batch, &build, &sizes).into_iter().collect();
        assert!(r[&0].is_ok() && r[&2].is_ok());
        assert_eq!(r[&1].as_ref().unwrap_err(), "bad breaks");
        // All together first, then each on its own.
        assert_eq!(calls.lock().unwrap().len(), 4);
        // A batch that builds is one call, and every request gets the sizes of the batch.
        let ok = [req(0, "a"), req(1, "c")];
        let r = run_batch(&ok, &build, &sizes);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].1.as_ref().unwrap().len(), 2);
    }

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
