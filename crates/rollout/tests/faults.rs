//! Fault tests on a real test fleet: the deployer SIGKILLed or SIGTERMed during the copy, the
//! activation, the confirm wait and the confirming login. Each case ends with every profile on a
//! working generation that matches what rollout printed, no process of the run left (by the
//! pids recorded just before the signal, and by the run's socket directory and ssh config in
//! command lines), and no socket directory left (after the next rollout start for SIGKILL).
//!
//! A redeploy right after a killed deploy may find the profile's lock on the target still held
//! by the killed deploy's worker until it has rolled back; these tests wait for every deploy on
//! the target to reach a terminal state before redeploying, and retry once if the agent still
//! says "locked" (the agent's lock is being reworked to wait and say for whom).

mod common;

use common::*;
use rollout_lab::profiles::Profile;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CONFIRM_TIMEOUT: &str = "4";

/// A running `rollout --json` whose events are collected as they arrive.
struct Run {
    child: Child,
    pid: u32,
    events: Arc<Mutex<Vec<Value>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

fn start(env: &Env, args: &[&str], path_prefix: Option<&Path>) -> Run {
    env.write();
    let target = format!("{}#host1", env.flake_dir().display());
    let mut cmd = Command::new(rollout_bin());
    cmd.arg(&target)
        .args(["-s", "--json", "--confirm-timeout", CONFIRM_TIMEOUT])
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("XDG_RUNTIME_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = path_prefix {
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{}:{path}", dir.display()));
    }
    let mut child = cmd.spawn().unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let out = child.stdout.take().unwrap();
    let sink = events.clone();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                sink.lock().unwrap().push(v);
            }
        }
    });
    Run {
        pid: child.id(),
        child,
        events,
        reader: Some(reader),
    }
}

/// Processes by (pid, start time): the descendants of `root`.
fn descendants(root: u32) -> Vec<(u32, u64)> {
    let mut parent = BTreeMap::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Some((ppid, start)) = stat(pid) {
            parent.insert(pid, (ppid, start));
        }
    }
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (&c, &(pp, start)) in &parent {
            if pp == p {
                found.push((c, start));
                frontier.push(c);
            }
        }
    }
    found
}

/// (parent pid, start time) of a live, non-zombie process.
fn stat(pid: u32) -> Option<(u32, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = s[s.rfind(')')? + 2..].split(' ').collect();
    if f[0] == "Z" {
        return None;
    }
    Some((f[1].parse().ok()?, f[19].parse().ok()?))
}

/// Command lines of live processes that mention `needle` (read-only scan; nothing is signalled).
fn mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() || stat(pid).is_none() {
            continue;
        }
        if let Ok(raw) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
            if cmd.contains(needle) {
                found.push(format!("{pid}: {cmd}"));
            }
        }
    }
    found
}

/// The socket directories of process `pid` under /tmp.
fn socket_dirs(pid: u32) -> Vec<PathBuf> {
    let prefix = format!("rollout-{pid}-");
    std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

impl Run {
    /// Wait until an event satisfies `pred` (at most 60 s).
    fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) {
        let t0 = Instant::now();
        loop {
            if self.events.lock().unwrap().iter().any(&pred) {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "never saw {what}: {:?}",
                self.events.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Send `sig` to rollout and collect how it ended, with the processes it had started.
    fn signal(mut self, sig: libc::c_int) -> Ended {
        let children = descendants(self.pid);
        // SAFETY: kill(2) of the rollout process this test started and has not reaped.
        unsafe { libc::kill(self.pid as libc::pid_t, sig) };
        let status = self.child.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(&mut self.child.stderr.take().unwrap(), &mut err).unwrap();
        let _ = self.reader.take().unwrap().join();
        eprintln!("--- rollout (signal {sig}) exit {status:?}\n{err}");
        let events = self.events.lock().unwrap().clone();
        Ended {
            sig,
            pid: self.pid,
            status,
            err,
            children,
            events,
        }
    }
}

/// How an interrupted rollout ended.
struct Ended {
    sig: libc::c_int,
    pid: u32,
    status: ExitStatus,
    err: String,
    /// Its descendants (pid, start time) just before the signal.
    children: Vec<(u32, u64)>,
    events: Vec<Value>,
}

/// The last outcome rollout printed for each profile: (outcome, message).
fn outcomes(events: &[Value]) -> BTreeMap<String, (String, String)> {
    let mut m = BTreeMap::new();
    for e in events.iter().filter(|e| e["event"] == "outcome") {
        m.insert(
            e["profile"].as_str().unwrap_or("").to_string(),
            (
                e["outcome"].as_str().unwrap_or("").to_string(),
                e["message"].as_str().unwrap_or("").to_string(),
            ),
        );
    }
    m
}

fn is_phase(e: &Value, profile: Option<&str>, phase: &str, state: &str) -> bool {
    e["event"] == "phase" && e["phase"] == phase && e["state"] == state && profile.is_none_or(|p| e["profile"] == p)
}

fn is_log(e: &Value, profile: &str, text: &str) -> bool {
    e["event"] == "log" && e["profile"] == profile && e["line"].as_str().is_some_and(|l| l.contains(text))
}

/// Wait until no deploy on host1 is in a non-terminal state (the agents have finished).
fn await_agents(env: &Env) {
    let t0 = Instant::now();
    let busy = "grep -lE '\"state\": *\"(started|activating|awaiting-confirmation|rolling-back)\"' /tmp/rollout-0/*/status.json";
    while env.fleet.exec("host1", &["sh", "-c", busy]).unwrap().status.success() {
        assert!(
            t0.elapsed() < Duration::from_secs(40),
            "the target's agents never finished"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A profile of the test: its path on host1, its good (deployed) closure and the new one.
struct Prof {
    name: &'static str,
    path: String,
    good: String,
    new: String,
}

/// Every check that ends a case: exit status; no process of the run left; what rollout printed
/// matches each profile's generation once the target's agents are done; the socket directory is
/// gone (for SIGKILL: after the next rollout start, the redeploy of the good configuration, which
/// must confirm).
fn verify(env: &mut Env, r: Ended, profs: &[Prof], good: &[(&'static str, Profile)]) {
    use std::os::unix::process::ExitStatusExt;
    let killed = r.sig == libc::SIGKILL;
    let err = &r.err;
    if killed {
        assert_eq!(r.status.signal(), Some(libc::SIGKILL), "{err}");
    } else {
        assert_eq!(r.status.code(), Some(128 + r.sig), "exits as interrupted: {err}");
        assert!(err.contains("rollout: interrupted by"), "{err}");
        assert!(
            socket_dirs(r.pid).is_empty(),
            "socket directory left: {:?}",
            socket_dirs(r.pid)
        );
    }
    // Nothing of the run is left: the processes it had started, and anything using its ssh
    // configuration (which every ssh of the run names; also one started after the snapshot).
    let ssh_config = env.fleet.ssh_config().display().to_string();
    let t0 = Instant::now();
    loop {
        let left: Vec<_> = r
            .children
            .iter()
            .filter(|(p, s)| stat(*p).is_some_and(|(_, st)| st == *s))
            .collect();
        let using = mentioning(&ssh_config);
        if left.is_empty() && using.is_empty() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "processes of the run are left: {left:?} {using:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The targets are done: each profile is where rollout said it would be.
    let printed = outcomes(&r.events);
    await_agents(env);
    for p in profs {
        let now = env.target_of("host1", &p.path);
        let said = printed.get(p.name);
        let expected = match said.map(|(o, _)| o.as_str()) {
            Some("deployed") => &p.new,
            _ => &p.good,
        };
        assert_eq!(&now, expected, "{}: rollout printed {said:?}", p.name);
        if killed {
            assert_ne!(said.map(|(o, _)| o.as_str()), Some("deployed"), "{err}");
        } else {
            assert!(said.is_some(), "rollout said nothing about {}: {err}", p.name);
        }
    }
    // The next start (the good configuration again) cleans up after a SIGKILLed run.
    let node = env.flake.node("host1", "host1");
    for (n, p) in good {
        node.profile(n, p.clone().setting("user", json!("root")));
    }
    let mut out = env.rollout("#host1", &["--confirm-timeout", "10"]);
    if out.status.code() != Some(0) && stderr(&out).contains("locked") {
        std::thread::sleep(Duration::from_secs(6));
        out = env.rollout("#host1", &["--confirm-timeout", "10"]);
    }
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for p in profs {
        assert_eq!(env.target_of("host1", &p.path), p.good, "{}", p.name);
    }
    assert!(
        socket_dirs(r.pid).is_empty(),
        "socket directory left: {:?}",
        socket_dirs(r.pid)
    );
}

/// One node with the given profiles (user root), deployed once: returns the env and, per
/// profile, its path and good closure; `new_profiles` then become the node's configuration.
fn fleet_with(good: &[(&'static str, Profile)], new: &[(&'static str, Profile)]) -> (Env, Vec<Prof>) {
    let mut env = Env::new(1);
    let names: Vec<&str> = good.iter().map(|(n, _)| *n).collect();
    let set = |env: &mut Env, ps: &[(&'static str, Profile)]| {
        let node = env.flake.node("host1", "host1");
        node.profiles_order(&names);
        for (n, p) in ps {
            node.profile(n, p.clone().setting("user", json!("root")));
        }
    };
    set(&mut env, good);
    let out = env.rollout("#host1", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut profs: Vec<Prof> = good
        .iter()
        .map(|(n, _)| {
            let path = if *n == "system" {
                SYSTEM.to_string()
            } else {
                format!("/nix/var/nix/profiles/per-user/root/{n}")
            };
            Prof {
                name: n,
                good: env.target_of("host1", &path),
                path,
                new: String::new(),
            }
        })
        .collect();
    set(&mut env, new);
    for p in profs.iter_mut() {
        p.new = env.build("host1", p.name);
    }
    (env, profs)
}

/// Case: the signal arrives while `nix copy` runs (a 24 MiB closure).
fn during_copy(sig: libc::c_int) {
    let good = vec![("system", marker("system"))];
    let (mut env, profs) = fleet_with(&good, &[("system", Profile::large("system", 24).salt(salt()))]);
    let run = start(&env, &[], None);
    run.wait_for("the copy", |e| is_phase(e, None, "copy", "started"));
    std::thread::sleep(Duration::from_millis(50));
    let r = run.signal(sig);
    if sig != libc::SIGKILL {
        let said = outcomes(&r.events);
        assert_eq!(said["system"].0, "skipped", "{said:?}");
    }
    verify(&mut env, r, &profs, &good);
}

/// Case: the signal arrives while the activation script runs (it sleeps 3 s).
fn during_activation(sig: libc::c_int) {
    let good = vec![("system", marker("system"))];
    let (mut env, profs) = fleet_with(&good, &[("system", marker("system").sleep(3.0))]);
    let run = start(&env, &[], None);
    run.wait_for("the activation script", |e| {
        is_log(e, "system", "activating: activating")
    });
    let r = run.signal(sig);
    if sig != libc::SIGKILL {
        let said = outcomes(&r.events);
        assert_eq!(said["system"].0, "rolled-back", "{said:?}");
        assert!(said["system"].1.contains("during its activation"), "{said:?}");
    }
    verify(&mut env, r, &profs, &good);
}

/// Case: `a` is activated and awaits its confirmation (sent with `b`'s), `b` activates (3 s).
fn during_confirm_wait(sig: libc::c_int) {
    let good = vec![("a", marker("a")), ("b", marker("b"))];
    let (mut env, profs) = fleet_with(&good, &[("a", marker("a")), ("b", marker("b").sleep(3.0))]);
    let run = start(&env, &[], None);
    run.wait_for("b's activation script", |e| is_log(e, "b", "activating: activating"));
    let r = run.signal(sig);
    if sig != libc::SIGKILL {
        let said = outcomes(&r.events);
        assert_eq!(said["a"].0, "rolled-back", "{said:?}");
        assert!(said["a"].1.contains("awaiting confirmation"), "{said:?}");
        assert_eq!(said["b"].0, "rolled-back", "{said:?}");
    }
    verify(&mut env, r, &profs, &good);
}

/// Case: the confirming login is under way. An `ssh` wrapper first on rollout's PATH holds the
/// fresh login (the one with `ControlPath=none`) for 2 s before it connects, and says so in a
/// file; were it to outlive rollout, it would go on and confirm within the 4 s confirm window.
fn during_confirming_login(sig: libc::c_int) {
    use std::os::unix::fs::PermissionsExt;
    let good = vec![("system", marker("system"))];
    let (mut env, profs) = fleet_with(&good, &[("system", marker("system"))]);
    let bin_dir = env.flake_dir().join("wrap");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let flag = bin_dir.join("confirm-started");
    let wrapper = bin_dir.join("ssh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ncase \"$*\" in *ControlPath=none*)\n  : > '{}'\n  i=0; while [ $i -lt 20 ]; do sleep 0.1; i=$((i+1)); done;;\nesac\nexec /usr/bin/ssh \"$@\"\n",
            flag.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = start(&env, &[], Some(&bin_dir));
    let t0 = Instant::now();
    while !flag.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the confirming login never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let r = run.signal(sig);
    if sig != libc::SIGKILL {
        let said = outcomes(&r.events);
        assert_eq!(said["system"].0, "rolled-back", "{said:?}");
        assert!(said["system"].1.contains("while confirming"), "{said:?}");
    }
    verify(&mut env, r, &profs, &good);
}

#[test]
fn sigkill_during_copy_leaves_the_target_unchanged_and_nothing_running() {
    during_copy(libc::SIGKILL);
}

#[test]
fn sigterm_during_copy_reports_the_target_unchanged() {
    during_copy(libc::SIGTERM);
}

#[test]
fn sigkill_during_activation_rolls_back_on_the_target() {
    during_activation(libc::SIGKILL);
}

#[test]
fn sigterm_during_activation_reports_the_rollback_that_follows() {
    during_activation(libc::SIGTERM);
}

#[test]
fn sigkill_during_confirm_wait_rolls_back_every_unconfirmed_profile() {
    during_confirm_wait(libc::SIGKILL);
}

#[test]
fn sigterm_during_confirm_wait_reports_each_profile_rolling_back() {
    during_confirm_wait(libc::SIGTERM);
}

#[test]
fn sigkill_during_the_confirming_login_never_confirms() {
    during_confirming_login(libc::SIGKILL);
}

#[test]
fn sigterm_during_the_confirming_login_stops_it_before_it_confirms() {
    during_confirming_login(libc::SIGTERM);
}

/// Secrets stay secret: with the sudo password in rollout's environment, none of the processes
/// rollout starts (ssh master, agent calls, nix copy, the confirming login) has it in its
/// environment, and it is in no output.
#[test]
fn the_sudo_password_is_in_no_child_environment() {
    let mut env = Env::new(1);
    env.flake
        .node("host1", "host1")
        .setting("sshUser", json!("deploypw"))
        .setting("interactiveSudo", json!(true))
        .profile("system", marker("system").sleep(2.0).setting("user", json!("root")));
    env.write();
    let password = env.fleet.sudo_password();
    let target = format!("{}#host1", env.flake_dir().display());
    let mut child = Command::new(rollout_bin())
        .args([&target, "-s", "--json", "--debug-logs"])
        .env("ROLLOUT_SUDO_PASSWORD_HOST1", &password)
        .env("DEPLOY_RS_SUDO_PASSWORD", &password)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut seen = 0;
    let mut leaked = Vec::new();
    let rollout = std::fs::canonicalize(rollout_bin()).unwrap();
    while matches!(child.try_wait(), Ok(None)) {
        for (p, _) in descendants(pid) {
            // A child between fork and exec is still rollout's own image with rollout's
            // environment; what it runs gets its environment at exec, so look again next round.
            if std::fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|e| e == rollout) {
                continue;
            }
            if let Ok(environ) = std::fs::read(format!("/proc/{p}/environ")) {
                seen += 1;
                if String::from_utf8_lossy(&environ).contains(&password) {
                    let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                    leaked.push(String::from_utf8_lossy(&cmd).replace('\0', " "));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let (stdout, err) = (String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(seen > 10, "looked at only {seen} child environments");
    assert!(leaked.is_empty(), "the password is in the environment of: {leaked:?}");
    assert!(
        !err.contains(&password) && !stdout.contains(&password),
        "the password is in the output"
    );
}
