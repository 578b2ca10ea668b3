//! The health phase: after a node's profiles are activated and before they are confirmed, every
//! activated profile's `healthChecks` run, each with its retries, while the target keeps waiting
//! for the confirmation (heartbeats). The first check that fails fails the node, which is then
//! undone like a failed activation — and the fleet policy applies as for any failed node.

use super::activate::heartbeat;
use super::{NodeCx, Pending, ProfileResult};
use crate::checks::{self, Check, Side, What};
use crate::deploy::agent::elevation_of;
use crate::events::{Kind, Phase, Reporter, State};
use crate::exec::Runner;
use crate::host::Host;
use crate::plan::Deployment;
use crate::secret::Secret;
use crate::ssh::Elevation;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Run the checks of every profile this node activated; `Some(why)` when one failed.
pub fn run(cx: &NodeCx, deps: &[&Deployment], pending: &[Pending], done: &[ProfileResult]) -> Option<String> {
    let activated: Vec<&Deployment> = deps
        .iter()
        .copied()
        .filter(|d| {
            pending.iter().any(|p| p.d.profile == d.profile)
                || done.iter().any(|r| r.profile == d.profile && r.activated.is_some())
        })
        .filter(|d| !d.settings.health_checks.is_empty())
        .collect();
    if activated.is_empty() {
        return None;
    }
    if cx.shared.opts.skip_health_checks {
        for d in &activated {
            cx.rep.for_profile(cx.node, &d.profile).warn(format!(
                "--skip-health-checks: {} health check(s) NOT run; confirming without them",
                d.settings.health_checks.len()
            ));
        }
        return None;
    }
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        if !pending.is_empty() {
            s.spawn(|| heartbeat(&cx.rep, pending, &stop));
        }
        let verdict = activated.iter().find_map(|d| run_profile(cx, d));
        stop.store(true, Ordering::SeqCst);
        verdict
    })
}

fn run_profile(cx: &NodeCx, d: &Deployment) -> Option<String> {
    let prep = cx.rep.for_profile(cx.node, &d.profile);
    prep.phase(
        Phase::Health,
        State::Started,
        Some(format!("{} check(s)", d.settings.health_checks.len())),
    );
    for (i, o) in d.settings.health_checks.iter().enumerate() {
        let check = match Check::from_object(o, i) {
            Ok(c) => c,
            Err(e) => {
                prep.phase(Phase::Health, State::Failed, None);
                return Some(format!(
                    "health check {} of profile `{}` is invalid: {e}",
                    i + 1,
                    d.profile
                ));
            }
        };
        let (passed, attempts, last) = attempt_all(cx, d, &check, &prep);
        prep.emit(Kind::HealthCheck {
            name: check.name.clone(),
            on: check.on,
            passed,
            attempts,
            output: last.clone(),
        });
        if !passed {
            prep.phase(Phase::Health, State::Failed, None);
            return Some(format!(
                "health check `{}` of profile `{}` failed after {attempts} attempt(s): {}",
                check.name,
                d.profile,
                if last.is_empty() { "no output".to_string() } else { last }
            ));
        }
    }
    prep.phase(Phase::Health, State::Succeeded, None);
    None
}

/// Every attempt until one passes: (passed, attempts made, the last attempt's last output line).
fn attempt_all(cx: &NodeCx, d: &Deployment, check: &Check, prep: &Reporter) -> (bool, u32, String) {
    let runner = Runner::new(prep.clone());
    let host = &cx.hosts[cx.host_of(d)];
    let mut last = String::new();
    for attempt in 1..=check.retries + 1 {
        if attempt > 1 {
            std::thread::sleep(Duration::from_secs(check.interval));
        }
        let (ok, output) = match check.on {
            Side::Deployer => on_deployer(&runner, d, check),
            Side::Target => on_target(&runner, &**host, d, check, cx),
        };
        last = output
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_string();
        if checks::passed(check, ok, &output) {
            return (true, attempt, last);
        }
        prep.info(format!(
            "health check `{}`: attempt {attempt} failed: {last}",
            check.name
        ));
    }
    (false, check.retries + 1, last)
}

fn on_deployer(runner: &Runner, d: &Deployment, check: &Check) -> (bool, String) {
    if let What::Http { url, .. } = &check.what {
        if url.starts_with("http://") {
            return match checks::http_status(url, Duration::from_secs(check.timeout)) {
                Ok(code) => (true, code.to_string()),
                Err(e) => (false, e),
            };
        }
    }
    let argv = check.local_argv(&d.node, &d.settings.hostname, &d.profile);
    match runner.capture(&argv) {
        Ok(c) => (c.status.success(), format!("{}{}", c.stderr, c.stdout)),
        Err(e) => (false, e.to_string()),
    }
}

fn on_target(runner: &Runner, host: &dyn Host, d: &Deployment, check: &Check, cx: &NodeCx) -> (bool, String) {
    let elevation = match elevation_of(d) {
        Ok(e) => e,
        Err(e) => return (false, e),
    };
    let mut words = Vec::new();
    if let Some(e) = &elevation {
        words.extend(e.prefix());
    }
    words.extend(check.words());
    let argv = host.run(&words);
    let password = cx.shared.passwords.get(&d.settings.hostname).map(|p| &**p);
    let password = Elevation::password_line(elevation.as_ref(), password).map(Secret::new);
    let lines = std::sync::Mutex::new(String::new());
    let r = runner.stream(&argv, password.as_deref(), &|l| {
        let mut s = lines.lock().unwrap_or_else(|e| e.into_inner());
        s.push_str(l);
        s.push('\n');
    });
    let out = lines.into_inner().unwrap_or_else(|e| e.into_inner());
    match r {
        Ok((st, _)) => (st.success(), out),
        Err(e) => (false, format!("{out}{e}")),
    }
}

/// A check's words with the elevation it runs under, as they reach the target (for tests).
#[cfg(test)]
fn target_words(e: Option<&Elevation>, check: &Check) -> Vec<String> {
    let mut w = e.map(|e| e.prefix()).unwrap_or_default();
    w.extend(check.words());
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_target_check_runs_as_the_profile_user_bounded_by_its_timeout() {
        let o = json!({"command": ["systemctl", "is-active", "web"], "timeout": 5});
        let c = Check::from_object(&crate::schema::object_of(o), 0).unwrap();
        let e = Elevation::from_setting("sudo -u", "web", false).unwrap();
        assert_eq!(
            target_words(Some(&e), &c),
            ["sudo", "-u", "web", "timeout", "5", "systemctl", "is-active", "web"]
        );
    }
}
