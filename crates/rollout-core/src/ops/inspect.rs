//! Ask every selected target what its profiles hold — generations, deploy records, deploys under
//! way — with one login per host, hosts in parallel. `status`, `history`, `rollback` and `diff`
//! start here; an unreachable host is a row of its own, never fatal for the others.

use crate::deploy::agent::{self, elevation_of, profile_ref};
use crate::deploy::copy;
use crate::deploy::group_by_node;
use crate::events::{Phase, Reporter, State};
use crate::exec::Runner;
use crate::host::connection::SocketDir;
use crate::host::{Host, LocalHost, SshHost};
use crate::nix::NixContext;
use crate::plan::{Deployment, Plan};
use crate::secret::Secret;
use crate::ssh::{self, Elevation, Endpoint};
use rollout_protocol::report::ProfileReport;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// How to reach the targets.
pub struct InspectOptions<'a> {
    pub ctx: &'a NixContext,
    /// The agent's store path (copied to each host first; a no-op when it is there).
    pub agent_path: &'a str,
    pub passwords: &'a HashMap<String, Secret>,
    pub parallel: usize,
    pub checksigs: bool,
    /// `--sign-key` / `LOCAL_KEY`: the agent is signed before it is copied.
    pub sign_key: Option<&'a str>,
    /// This machine instead of SSH.
    pub local: bool,
}

/// One profile of the plan, as its target answered.
#[derive(Debug, Clone)]
pub struct ProfileView {
    pub node: String,
    pub profile: String,
    /// Where it was asked (`deploy@web1`, `this machine`).
    pub host: String,
    /// What the flake would deploy now.
    pub wanted: String,
    /// `Err`: the host could not be reached, or the agent could not answer; the reason.
    pub report: Result<ProfileReport, String>,
    /// Whether the host was reached at all.
    pub reachable: bool,
}

/// What the targets answered, with their connections kept open for follow-up queries.
pub struct Inspection {
    pub views: Vec<ProfileView>,
    hosts: Vec<(String, Endpoint, Arc<dyn Host>)>,
    _sockets: Option<SocketDir>,
}

impl Inspection {
    /// The open connection to `node`'s endpoint `ep`, if it was reached.
    pub fn host(&self, node: &str, ep: &Endpoint) -> Option<&Arc<dyn Host>> {
        self.hosts
            .iter()
            .find(|(n, e, _)| n == node && e == ep)
            .map(|(_, _, h)| h)
    }
}

impl Drop for Inspection {
    fn drop(&mut self) {
        for (_, _, h) in &self.hosts {
            h.close();
        }
    }
}

type NodeAnswer = (Vec<ProfileView>, Vec<(String, Endpoint, Arc<dyn Host>)>);

pub fn inspect(plan: &Plan, opts: &InspectOptions, reporter: &Reporter) -> Result<Inspection, String> {
    let sockets = if opts.local {
        None
    } else {
        Some(
            SocketDir::create()
                .map_err(|e| format!("cannot create a private directory for SSH control sockets: {e}"))?,
        )
    };
    let nodes = group_by_node(plan);
    let queue: Mutex<VecDeque<&(String, Vec<&Deployment>)>> = Mutex::new(nodes.iter().collect());
    let answers: Mutex<Vec<NodeAnswer>> = Mutex::new(Vec::new());
    let next_socket = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..opts.parallel.max(1).min(nodes.len().max(1)) {
            s.spawn(|| loop {
                let Some((node, deps)) = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front() else {
                    break;
                };
                let rep = reporter.for_node(node);
                let open = |ep: &Endpoint| -> Result<Arc<dyn Host>, String> {
                    if opts.local {
                        return Ok(Arc::new(LocalHost::new()));
                    }
                    let dir = &sockets.as_ref().expect("sockets for ssh").path;
                    let idx = next_socket.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    SshHost::connect(&Runner::new(rep.clone()), &rep, ep, dir, idx)
                        .map(|h| Arc::new(h) as Arc<dyn Host>)
                        .map_err(|e| e.to_string())
                };
                let answer = inspect_node(node, deps, opts, &rep, open);
                answers.lock().unwrap_or_else(|e| e.into_inner()).push(answer);
            });
        }
    });
    let mut views = Vec::new();
    let mut hosts = Vec::new();
    for (v, h) in answers.into_inner().unwrap_or_else(|e| e.into_inner()) {
        views.extend(v);
        hosts.extend(h);
    }
    // Plan order, whatever order the hosts answered in.
    let order = |v: &ProfileView| {
        plan.deployments
            .iter()
            .position(|d| d.node == v.node && d.profile == v.profile)
            .unwrap_or(usize::MAX)
    };
    views.sort_by_key(order);
    Ok(Inspection {
        views,
        hosts,
        _sockets: sockets,
    })
}

fn inspect_node(
    node: &str,
    deps: &[&Deployment],
    opts: &InspectOptions,
    rep: &Reporter,
    open: impl Fn(&Endpoint) -> Result<Arc<dyn Host>, String>,
) -> NodeAnswer {
    let runner = Runner::new(rep.clone());
    let mut views = Vec::new();
    let mut hosts: Vec<(String, Endpoint, Arc<dyn Host>)> = Vec::new();
    let mut failed: Vec<(Endpoint, String)> = Vec::new();
    for d in deps {
        let view = |report: Result<ProfileReport, String>, reachable: bool, host: String| ProfileView {
            node: node.to_string(),
            profile: d.profile.clone(),
            host,
            wanted: d.closure.clone(),
            report,
            reachable,
        };
        if let Some((_, why)) = failed.iter().find(|(e, _)| e == &d.endpoint) {
            views.push(view(Err(why.clone()), false, d.endpoint.destination()));
            continue;
        }
        let host = match hosts.iter().find(|(_, e, _)| e == &d.endpoint) {
            Some((_, _, h)) => h.clone(),
            None => match open(&d.endpoint).and_then(|h| copy_agent(&runner, rep, &*h, opts).map(|()| h)) {
                Ok(h) => {
                    hosts.push((node.to_string(), d.endpoint.clone(), h.clone()));
                    h
                }
                Err(why) => {
                    failed.push((d.endpoint.clone(), why.clone()));
                    views.push(view(Err(why), false, d.endpoint.destination()));
                    continue;
                }
            },
        };
        let report = query(&runner, rep, &*host, d, opts);
        views.push(view(report, true, host.name()));
    }
    (views, hosts)
}

/// Put the agent on the host (nothing to do when it is there already).
fn copy_agent(runner: &Runner, rep: &Reporter, host: &dyn Host, opts: &InspectOptions) -> Result<(), String> {
    let paths = [opts.agent_path.to_string()];
    copy::sign(runner, opts.sign_key, &paths)?;
    let Some(argv) = host.copy(opts.ctx, &paths, true, opts.checksigs)? else {
        return Ok(());
    };
    rep.phase(
        Phase::Copy,
        State::Started,
        Some(format!("copying the agent to {}", host.name())),
    );
    let r = copy::run_copy(runner, rep, &argv, &HashMap::new());
    rep.phase(
        Phase::Copy,
        if r.is_ok() { State::Succeeded } else { State::Failed },
        None,
    );
    r.map(|_| ())
        .map_err(|e| format!("copying the agent to {} failed: {}", host.name(), e.trim()))
}

/// One `query` of one profile, as its user.
fn query(
    runner: &Runner,
    rep: &Reporter,
    host: &dyn Host,
    d: &Deployment,
    opts: &InspectOptions,
) -> Result<ProfileReport, String> {
    let elevation = elevation_of(d)?;
    let args = agent::query_args(&profile_ref(d), &d.settings.temp_path);
    let words = ssh::agent_command(elevation.as_ref(), &agent::agent_bin(opts.agent_path), &args);
    let password = opts.passwords.get(&d.settings.hostname).map(|p| &**p);
    let stdin = Elevation::password_line(elevation.as_ref(), password).map(Secret::new);
    let found: Mutex<Option<ProfileReport>> = Mutex::new(None);
    let (status, stderr) = runner
        .stream(
            &host.run(&words),
            stdin.as_deref(),
            &|line| match ProfileReport::parse_line(line) {
                Some(r) => *found.lock().unwrap_or_else(|e| e.into_inner()) = Some(r),
                None => rep.log(line),
            },
        )
        .map_err(|e| e.to_string())?;
    match found.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(r) if status.success() => Ok(r),
        _ => Err(format!(
            "the agent on {} could not report profile `{}`: {}",
            host.name(),
            d.profile,
            match stderr.trim() {
                "" => format!("it exited with {status}"),
                e => e.lines().last().unwrap_or(e).to_string(),
            }
        )),
    }
}

/// How a profile on its target compares with what the flake would deploy now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sync {
    /// It runs exactly the flake's closure.
    InSync,
    /// It runs something else.
    Drifted,
    /// The profile does not exist there.
    NeverDeployed,
    /// The host or its agent did not answer.
    Unknown,
}

impl Sync {
    pub fn of(view: &ProfileView) -> Sync {
        match &view.report {
            Err(_) => Sync::Unknown,
            Ok(r) => match r.current_generation() {
                None => Sync::NeverDeployed,
                Some(g) if g.path.as_os_str() == view.wanted.as_str() => Sync::InSync,
                Some(_) => Sync::Drifted,
            },
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            Sync::InSync => "in sync",
            Sync::Drifted => "drifted",
            Sync::NeverDeployed => "never deployed",
            Sync::Unknown => "unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollout_protocol::report::Generation;

    fn view(report: Result<ProfileReport, String>) -> ProfileView {
        ProfileView {
            node: "web".into(),
            profile: "system".into(),
            host: "deploy@web".into(),
            wanted: "/nix/store/b".into(),
            report,
            reachable: true,
        }
    }

    fn at(path: &str) -> ProfileReport {
        ProfileReport {
            current: Some(2),
            generations: vec![Generation {
                number: 2,
                path: path.into(),
                time: String::new(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_profile_is_in_sync_only_when_it_runs_the_flakes_closure() {
        assert_eq!(Sync::of(&view(Ok(at("/nix/store/b")))), Sync::InSync);
        assert_eq!(Sync::of(&view(Ok(at("/nix/store/a")))), Sync::Drifted);
        assert_eq!(Sync::of(&view(Ok(ProfileReport::default()))), Sync::NeverDeployed);
        assert_eq!(Sync::of(&view(Err("Connection refused".into()))), Sync::Unknown);
    }
}
