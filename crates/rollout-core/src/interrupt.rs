//! SIGINT, SIGTERM and SIGHUP: stop the confirming logins before they can confirm, end the SSH
//! masters, then say truthfully, per profile, what each target has done or will do.
//!
//! Why a killed deployer never confirms: a profile is confirmed only by the `rollout-agent
//! confirm` that the fresh SSH login runs on the target. That login is a child of rollout with
//! `PR_SET_PDEATHSIG` (see [`crate::exec::command`]), so when rollout dies (even by SIGKILL) the
//! login dies with it; if it had not yet sent its command, nothing confirms and the target rolls
//! back by itself. If the command had already reached the target, the confirmation may land: a
//! SIGKILLed rollout cannot print anything more, and what it printed before never claimed the
//! profile was confirmed (that line comes only after the agent's `confirmed` status came back).
//! On SIGINT/SIGTERM/SIGHUP the handler below first kills the confirming logins, then settles the
//! question over the still-open master: an `abort` wins over a confirmation that has not been
//! acted on, and otherwise reports `confirmed`, so the last lines are right either way.

use crate::cmd::Argv;
use crate::events::{Event, Kind, Outcome, Phase, Reporter, State};
use crate::exec::{self, Role};
use crate::plan::Plan;
use crate::secret::Secret;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::Read;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Set once an interrupt is being handled: no child starts any more, events of the workers are
/// dropped (the handler's report is the last word).
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// True on the handler's thread, whose own events still go out.
    static HANDLER: Cell<bool> = const { Cell::new(false) };
}

/// Has an interrupt been received?
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// After an interrupt, wait for the handler to exit the process (a worker or the main thread
/// must not finish the run on its own and print a summary, or exit with another code).
pub fn hold() {
    while interrupted() {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Where a profile of the run stands, as far as its target is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// Nothing of this run has changed the profile (a copy adds store paths only).
    NotStarted,
    Activating,
    /// Activated, awaiting confirmation (with magic rollback).
    Activated,
    /// The fresh login that confirms is under way.
    Confirming,
    /// A rollback (abort or revoke) runs on the target.
    RollingBack,
    /// Its outcome has been reported.
    Ended(Outcome, String),
}

#[derive(Debug, Clone)]
struct Entry {
    node: String,
    profile: String,
    /// Magic rollback applies (the target rolls back by itself without a confirmation).
    magic: bool,
    confirm_timeout: u64,
    stage: Stage,
}

struct Run {
    entries: Vec<Entry>,
    reporter: Option<Reporter>,
}

static RUN: Mutex<Run> = Mutex::new(Run {
    entries: Vec::new(),
    reporter: None,
});

fn run_state() -> std::sync::MutexGuard<'static, Run> {
    RUN.lock().unwrap_or_else(|e| e.into_inner())
}

/// Record the profiles of a run (all not started) and the reporter the final report goes to.
/// `no_magic` is set for `--dry-activate` and `--boot`, where nothing awaits a confirmation.
pub fn begin(plan: &Plan, no_magic: bool, reporter: &Reporter) {
    let mut r = run_state();
    r.entries = plan
        .deployments
        .iter()
        .map(|d| Entry {
            node: d.node.clone(),
            profile: d.profile.clone(),
            magic: d.settings.magic_rollback && !no_magic,
            confirm_timeout: d.settings.confirm_timeout,
            stage: Stage::NotStarted,
        })
        .collect();
    r.reporter = Some(reporter.clone());
}

/// Called for every event (from [`Reporter::emit`]): follows each profile's stage. Returns false
/// when the event must not be shown: after an interrupt, only the handler speaks.
pub fn observe(e: &Event) -> bool {
    if interrupted() && !HANDLER.with(Cell::get) {
        return false;
    }
    let (Some(node), Some(profile)) = (&e.node, &e.profile) else {
        return true;
    };
    let stage = match &e.kind {
        Kind::Phase { phase, state, .. } => match (phase, state) {
            (Phase::Activate, State::Started) => Stage::Activating,
            (Phase::Activate, State::Succeeded) => Stage::Activated,
            (Phase::Confirm, State::Started) => Stage::Confirming,
            (Phase::Revoke, State::Started) => Stage::RollingBack,
            _ => return true,
        },
        Kind::Outcome { outcome, message } => Stage::Ended(*outcome, message.clone()),
        _ => return true,
    };
    let mut r = run_state();
    if let Some(en) = r
        .entries
        .iter_mut()
        .find(|en| &en.node == node && &en.profile == profile)
    {
        en.stage = stage;
    }
    true
}

/// How to settle a confirmation that was under way: an `abort` of the deploy ids over the
/// node's master (it wins over a confirmation not yet acted on, and reports `confirmed` when it
/// is too late), with the sudo password lines it needs on stdin.
pub struct Probe {
    pub argv: Argv,
    pub stdin: Option<Secret>,
    /// (node, profile, deploy id) for each id the abort names.
    pub ids: Vec<(String, String, String)>,
}

static PROBES: Mutex<BTreeMap<u64, Vec<Probe>>> = Mutex::new(BTreeMap::new());
static NEXT_PROBE: AtomicU64 = AtomicU64::new(0);

/// Keeps probes registered while a confirming login runs.
pub struct ProbeGuard(u64);

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        PROBES.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.0);
    }
}

/// Register the probes for a confirming login that is about to start; keep the guard until it
/// has ended.
pub fn confirming(probes: Vec<Probe>) -> ProbeGuard {
    let key = NEXT_PROBE.fetch_add(1, Ordering::SeqCst);
    PROBES.lock().unwrap_or_else(|e| e.into_inner()).insert(key, probes);
    ProbeGuard(key)
}

/// What a target has done or will do with a profile when the run is interrupted at `stage`.
/// `settled` is the agent's state learned by the abort probe for a profile that was being
/// confirmed (None when there was no probe or it failed).
pub fn verdict(stage: &Stage, magic: bool, confirm_timeout: u64, settled: Option<&str>) -> (Outcome, String) {
    let by_itself = format!("the target rolls it back by itself within {confirm_timeout} s");
    match (stage, settled) {
        (Stage::Ended(o, m), _) => (*o, m.clone()),
        (Stage::NotStarted, _) => (
            Outcome::Skipped,
            "interrupted before it was activated; the target is unchanged".into(),
        ),
        (Stage::Activating, _) if magic => (
            Outcome::RolledBack,
            format!("interrupted during its activation; it will not be confirmed: when the activation ends, {by_itself}"),
        ),
        (Stage::Activating, _) => (
            Outcome::Failed,
            "interrupted during its activation; the activation goes on on the target and its result stays (magic rollback is off)".into(),
        ),
        (Stage::Activated, _) if magic => (
            Outcome::RolledBack,
            format!("interrupted while awaiting confirmation; not confirmed: {by_itself}"),
        ),
        (Stage::Activated, _) => (
            Outcome::Deployed,
            "activated before the interrupt (magic rollback is off); it stays".into(),
        ),
        (Stage::Confirming, Some("confirmed")) => (
            Outcome::Deployed,
            "interrupted while confirming, but the confirmation had reached the target: it stays".into(),
        ),
        (Stage::Confirming, Some("rolled-back")) => (
            Outcome::RolledBack,
            "interrupted while confirming, before the confirmation landed: rolled back on the target".into(),
        ),
        (Stage::Confirming, Some("failed")) => (
            Outcome::Failed,
            "interrupted while confirming; rolling back failed on the target: see its agent log".into(),
        ),
        (Stage::Confirming, Some(_)) => (
            Outcome::RolledBack,
            "interrupted while confirming, before the confirmation landed: the target is rolling it back".into(),
        ),
        (Stage::Confirming, None) => (
            Outcome::RolledBack,
            format!("interrupted while confirming; the confirming login was stopped: unless its confirmation had already reached the target, {by_itself}"),
        ),
        (Stage::RollingBack, _) => (
            Outcome::RolledBack,
            "interrupted while rolling back; the target finishes the rollback by itself".into(),
        ),
    }
}

/// Run one probe (at most 8 s) and return the agent's state for each of its ids.
fn settle(p: &Probe, found: &mut BTreeMap<(String, String), String>) {
    let mut cmd = exec::command(&p.argv);
    cmd.stdin(if p.stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    // Started here, not through the (closed) spawner. The forking thread ends before rollout
    // does, which fires PR_SET_PDEATHSIG: by then the probe has been reaped (or killed) below.
    let Ok(mut child) = cmd.spawn() else {
        return;
    };
    if let (Some(data), Some(mut w)) = (&p.stdin, child.stdin.take()) {
        let _ = std::io::Write::write_all(&mut w, data.as_bytes());
    }
    let mut stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(o) = stdout.as_mut() {
            let _ = o.read_to_string(&mut s);
        }
        s
    });
    let deadline = Instant::now() + Duration::from_secs(8);
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let out = reader.join().unwrap_or_default();
    for line in out.lines() {
        if let Some(s) = crate::deploy::agent::AgentStatus::parse_line(line) {
            if let Some((n, pr, _)) = p.ids.iter().find(|(_, _, id)| id == &s.id) {
                found.insert((n.clone(), pr.clone()), s.state);
            }
        }
    }
}

/// The handler's work, in order: no child may start and the confirming logins die (SIGKILL:
/// before they can send their command if they have not yet); the confirmations that were under
/// way are settled over the masters; the masters and every other child end; the report.
fn on_interrupt(sig: i32) -> ! {
    // Whatever happens below, the process exits with 128 + sig (threads parked in `hold` wait).
    let _ = std::panic::catch_unwind(|| handle(sig));
    std::process::exit(128 + sig);
}

fn handle(sig: i32) {
    HANDLER.with(|h| h.set(true));
    INTERRUPTED.store(true, Ordering::SeqCst);
    let confirms = exec::signal_children(Some(Role::Confirm), libc::SIGKILL, true);
    exec::wait_gone(&confirms, Duration::from_secs(1));
    let probes: Vec<Probe> = std::mem::take(&mut *PROBES.lock().unwrap_or_else(|e| e.into_inner()))
        .into_values()
        .flatten()
        .collect();
    // One probe per node and agent group, all at once (each takes at most 8 s).
    let settled = Mutex::new(BTreeMap::new());
    std::thread::scope(|s| {
        for p in &probes {
            let settled = &settled;
            s.spawn(move || {
                let mut found = BTreeMap::new();
                settle(p, &mut found);
                settled.lock().unwrap_or_else(|e| e.into_inner()).extend(found);
            });
        }
    });
    let settled = settled.into_inner().unwrap_or_else(|e| e.into_inner());
    crate::host::connection::end_all_masters();
    report(sig, &settled);
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

/// One outcome event per profile whose outcome was not reported yet, then a closing line.
fn report(sig: i32, settled: &BTreeMap<(String, String), String>) {
    let (entries, reporter) = {
        let r = run_state();
        (r.entries.clone(), r.reporter.clone())
    };
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    for en in &entries {
        let key = (en.node.clone(), en.profile.clone());
        let (outcome, msg) = verdict(
            &en.stage,
            en.magic,
            en.confirm_timeout,
            settled.get(&key).map(String::as_str),
        );
        let word = match outcome {
            Outcome::Deployed | Outcome::DryActivated | Outcome::Booted | Outcome::Unchanged => "stay deployed",
            Outcome::RolledBack | Outcome::RollingBack => "are or will be rolled back on their targets",
            Outcome::Failed => "failed",
            Outcome::Skipped => "were not started (unchanged)",
        };
        *counts.entry(word).or_default() += 1;
        if !matches!(en.stage, Stage::Ended(..)) {
            if let Some(r) = &reporter {
                r.for_profile(&en.node, &en.profile).outcome(outcome, msg);
            }
        }
    }
    let parts: Vec<String> = counts.iter().map(|(w, n)| format!("{n} profile(s) {w}")).collect();
    if parts.is_empty() {
        eprintln!("\nrollout: interrupted by {}", signal_name(sig));
    } else {
        eprintln!("rollout: interrupted by {}: {}", signal_name(sig), parts.join(", "));
    }
}

/// Write end of the pipe that turns SIGINT, SIGTERM and SIGHUP into a message for a thread.
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let b = sig as u8;
    // SAFETY: write(2) is async-signal-safe; the fd stays open for the life of the process.
    unsafe {
        libc::write(
            SIGNAL_PIPE.load(Ordering::Relaxed),
            &b as *const u8 as *const libc::c_void,
            1,
        );
    }
}

/// Install the handlers: on SIGINT, SIGTERM or SIGHUP a thread runs [`on_interrupt`] and exits
/// with 128 + the signal. (A handler rather than a blocked mask, so that children start with the
/// default signal state.)
pub fn install() {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe(2) into a local array; sigaction with a handler that only calls write(2).
    unsafe {
        if libc::pipe(fds.as_mut_ptr()) != 0 {
            return;
        }
        SIGNAL_PIPE.store(fds[1], Ordering::Relaxed);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(s, &sa, std::ptr::null_mut());
        }
    }
    let read_fd = fds[0];
    std::thread::spawn(move || {
        let mut b = 0u8;
        // SAFETY: read(2) of one byte from our own pipe.
        let n = unsafe { libc::read(read_fd, &mut b as *mut u8 as *mut libc::c_void, 1) };
        if n == 1 {
            on_interrupt(i32::from(b));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(stage: Stage, magic: bool, settled: Option<&str>) -> Outcome {
        verdict(&stage, magic, 7, settled).0
    }

    #[test]
    fn verdict_per_stage() {
        assert_eq!(v(Stage::NotStarted, true, None), Outcome::Skipped);
        assert_eq!(v(Stage::Activating, true, None), Outcome::RolledBack);
        assert_eq!(v(Stage::Activating, false, None), Outcome::Failed);
        assert_eq!(v(Stage::Activated, true, None), Outcome::RolledBack);
        assert_eq!(v(Stage::Activated, false, None), Outcome::Deployed);
        assert_eq!(v(Stage::Confirming, true, Some("confirmed")), Outcome::Deployed);
        assert_eq!(v(Stage::Confirming, true, Some("rolled-back")), Outcome::RolledBack);
        assert_eq!(v(Stage::Confirming, true, Some("rolling-back")), Outcome::RolledBack);
        assert_eq!(v(Stage::Confirming, true, Some("failed")), Outcome::Failed);
        assert_eq!(v(Stage::Confirming, true, None), Outcome::RolledBack);
        assert_eq!(v(Stage::RollingBack, true, None), Outcome::RolledBack);
        let ended = Stage::Ended(Outcome::Deployed, "activated and confirmed".into());
        assert_eq!(
            verdict(&ended, true, 7, None),
            (Outcome::Deployed, "activated and confirmed".into())
        );
    }

    #[test]
    fn verdicts_name_the_confirm_window() {
        let (_, m) = verdict(&Stage::Activated, true, 7, None);
        assert!(m.contains("within 7 s"), "{m}");
        let (_, m) = verdict(&Stage::Confirming, true, 7, None);
        assert!(m.contains("unless") && m.contains("within 7 s"), "{m}");
    }
}
