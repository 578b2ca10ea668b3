//! The detached worker: sets the profile, activates, awaits confirmation and rolls back.
//!
//! It runs in its own session with stdout/stderr on the deploy log, so nothing that happens to the
//! SSH connection or the foreground process can interrupt it. Every path ends in a terminal state.

use crate::exec::{run_activation, run_confirmed_hook, Mode, NixEnv};
use crate::lock::{unix_now, Holder, ProfileLock};
use crate::policy::{await_decision, confirm_deadline, plan_rollback, AwaitDecision};
use crate::profile::{current_generation, existing_generations, generation_link};
use crate::request::{Job, Request};
use crate::statedir::{DeployDir, Root, ABORT, CONFIRM, HEARTBEAT, REQUEST};
use rollout_protocol::command::Origin;
use rollout_protocol::report::Record;
use rollout_protocol::status::now_rfc3339;
use rollout_protocol::status::{State, Status};
use std::path::Path;
use std::time::{Duration, SystemTime};

// Short: every poll that finds nothing new adds its interval to the deploy's latency, and a stat
// of a small file costs next to nothing.
const POLL: Duration = Duration::from_millis(20);

/// Entry point of `rollout-agent worker --temp-path T --id ID`; returns the process exit code.
pub fn run(temp_path: &Path, id: &str) -> i32 {
    ignore_hangup();
    // The deploy dir is found again with the same checks as every other command (no path handed
    // over is trusted), then used through its descriptor only.
    let dir = match Root::find_deploy(temp_path, id) {
        Ok(d) => d,
        Err(e) => {
            crate::error(&e);
            return 1;
        }
    };
    let _alive = match dir.hold_worker_lock() {
        Ok(f) => f,
        Err(e) => {
            crate::error(&format!(
                "cannot take {}: {e}",
                dir.display(crate::statedir::WORKER_LOCK)
            ));
            return 1;
        }
    };
    if let Err(e) = log_to(&dir) {
        crate::error(&e);
    }
    let req: Request = match dir.read_json(REQUEST) {
        Ok(r) => r,
        Err(e) => {
            crate::log(&e);
            let mut st = Status::new(dir.id(), None, None, "");
            let _ = st.advance(State::Failed, format!("worker cannot start: {e}"));
            let _ = dir.write_status(&mut st);
            return 1;
        }
    };
    let status = dir.read_status().unwrap_or_else(|_| {
        Status::new(
            req.id(),
            Some(req.profile_path.clone()),
            Some(req.closure().to_path_buf()),
            "worker started",
        )
    });
    let mut w = Worker {
        dir,
        req,
        status,
        pending: false,
        lock: None,
    };
    match w.req.job {
        Job::Activate(_) => w.activate(),
        Job::Revoke { .. } => w.revoke(),
    }
    w.record();
    if w.pending {
        if let Err(e) = crate::pending::remove(w.profile()) {
            crate::log(&format!("warning: {e}"));
        }
    }
    // Terminal status is on disk; clean canaries once more in case a `confirm` raced the final write.
    w.dir.remove_markers();
    0
}

/// Points stdout and stderr at the deploy log (also when systemd started us with the journal there).
fn log_to(dir: &DeployDir) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let log = dir
        .open_log_append()
        .map_err(|e| format!("cannot open {}: {e}", dir.display(crate::statedir::LOG)))?;
    for target in [1, 2] {
        // SAFETY: dup2 onto the standard descriptors, which this process owns; `log` stays valid.
        if unsafe { libc::dup2(log.as_raw_fd(), target) } == -1 {
            return Err(format!("cannot redirect output: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Belt and braces: the foreground already set SIG_IGN before exec, but the worker must never die
/// of SIGHUP (old deploy-rs lost half-done switches that way). SIGPIPE is ignored by Rust already.
fn ignore_hangup() {
    // SAFETY: installing SIG_IGN is always sound.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

struct Worker {
    dir: DeployDir,
    req: Request,
    status: Status,
    /// This deploy wrote the profile's pending marker (removed when it ends).
    pending: bool,
    /// The profile's lock, held until the worker ends (after the terminal state is written).
    lock: Option<ProfileLock>,
}

/// What the profile looked like before this deploy touched it.
struct Before {
    current: Option<u64>,
    existing: std::collections::BTreeSet<u64>,
}

impl Worker {
    /// Keep the deploy's end in the profile's history, while the profile lock is still held. A
    /// deploy that never held the lock, or a dry activation, changed nothing and is not kept.
    fn record(&self) {
        if self.lock.is_none() || self.req.dry_activate() || self.status.state == State::Unchanged {
            return;
        }
        let origin = match &self.req.job {
            Job::Activate(a) => a.origin.clone(),
            Job::Revoke { .. } => Origin {
                action: "revoke (the run that deployed it failed elsewhere)".into(),
                ..Default::default()
            },
        };
        let record = Record {
            id: self.req.id().to_string(),
            time: now_rfc3339(),
            state: self.status.state,
            generation: self.status.new_generation,
            previous: self.status.previous_generation,
            closure: self.status.closure.clone(),
            origin,
            seen_from: self.req.deployer.clone(),
            message: self.status.message.clone(),
        };
        if let Err(e) = crate::history::append(self.profile(), record) {
            crate::log(&format!("note: the deploy record was not kept: {e}"));
        }
    }

    fn profile(&self) -> &Path {
        &self.req.profile_path
    }

    /// Moves to `state`, writes status.json and logs the message.
    fn set(&mut self, state: State, message: impl Into<String>) {
        let message = message.into();
        crate::log(&format!("{}: {message}", state.as_str()));
        if let Err(e) = self.status.advance(state, message) {
            crate::log(&e);
            // A bug in the state machine must still end in a terminal state.
            self.status.state = State::Failed;
            self.status.message = e;
        }
        if let Err(e) = self.dir.write_status(&mut self.status) {
            crate::log(&e);
        }
        if self.status.state.is_terminal() {
            self.dir.remove_markers();
        }
    }

    fn fail(&mut self, message: impl Into<String>) {
        self.set(State::Failed, message);
    }

    /// Until when this deploy may hold the profile lock if nothing else happens: the activation,
    /// the confirm window and a rollback's re-activation.
    fn ends_by_from(&self, from: u64) -> u64 {
        let a = self.req.activation_timeout();
        from + a + self.req.confirm_timeout() + a + 10
    }

    /// Parent dir, lock and the pre-deploy view of the profile; `None` after reporting a failure.
    fn prepare(&mut self) -> Option<Before> {
        let profile = self.profile().to_path_buf();
        if let Some(parent) = profile.parent() {
            if let Err(e) = std::fs::create_dir_all(parent) {
                self.fail(format!("cannot create profile directory {}: {e}", parent.display()));
                return None;
            }
        }
        let now = unix_now();
        let holder = Holder {
            id: self.req.id().to_string(),
            pid: std::process::id(),
            deployer: self.req.deployer.clone(),
            started_at: now,
            ends_by: self.ends_by_from(now),
        };
        match ProfileLock::acquire(&profile, holder, crate::log) {
            Ok(l) => self.lock = Some(l),
            Err(e) => {
                self.fail(e);
                return None;
            }
        }
        // An earlier deploy that never got its confirmation and whose agent is gone (we hold the
        // lock) is undone first: the profile must not stay on a generation nobody confirmed.
        match crate::pending::undo_stale(&profile, self.req.activation_timeout()) {
            Ok(Some(done)) => crate::log(&format!("note: {done}")),
            Ok(None) => {}
            Err(e) => {
                self.fail(format!(
                    "cannot settle an earlier unconfirmed deploy of {}: {e}",
                    profile.display()
                ));
                return None;
            }
        }
        let current = match current_generation(&profile) {
            Ok(c) => c,
            Err(e) => {
                self.fail(e);
                return None;
            }
        };
        let existing = match existing_generations(&profile) {
            Ok(x) => x,
            Err(e) => {
                self.fail(e);
                return None;
            }
        };
        self.status.previous_generation = current;
        Some(Before { current, existing })
    }

    /// The current generation when the deployer allows skipping and the profile already runs
    /// `closure`, made by a deploy that ended confirmed (or activated, without magic rollback)
    /// according to the profile's record. Without such a record (set by hand, by deploy-rs, or
    /// before records existed) nothing is assumed: the activation runs.
    fn unchanged(&self, before: &Before, closure: &Path) -> Option<u64> {
        let Job::Activate(a) = &self.req.job else { return None };
        if !a.skip_unchanged || a.dry_activate || a.boot {
            return None;
        }
        let n = before.current?;
        let target = std::fs::read_link(generation_link(self.profile(), n)).ok()?;
        if !same_path(&target, closure) {
            return None;
        }
        let records = crate::history::read(self.profile()).ok()?;
        let last = records.iter().rev().find(|r| r.generation == Some(n))?;
        matches!(last.state, State::Confirmed | State::Activated).then_some(n)
    }

    fn activate(&mut self) {
        let closure = self.req.closure().to_path_buf();
        let Some(before) = self.prepare() else { return };
        let profile = self.profile().to_path_buf();
        let timeout = self.req.activation_timeout();
        if self.dir.exists(ABORT) {
            return self.fail("deploy aborted before anything was changed");
        }
        if std::fs::symlink_metadata(&closure).is_err() {
            return self.fail(format!("closure {} does not exist on this machine", closure.display()));
        }

        if let Some(n) = self.unchanged(&before, &closure) {
            return self.set(
                State::Unchanged,
                format!(
                    "{} already runs {} (generation {n}, confirmed); nothing to do",
                    profile.display(),
                    closure.display()
                ),
            );
        }

        if self.req.dry_activate() {
            return self.dry_activate(&closure);
        }

        self.set(
            State::Activating,
            format!("setting {} to {}", profile.display(), closure.display()),
        );
        let nix = match NixEnv::find(self.req.debug()) {
            Ok(n) => n,
            Err(e) => return self.fail(e),
        };
        let magic = self.req.magic_rollback() && !self.req.boot();
        let mut marker = match self.mark_pending(magic, &before, &closure) {
            Ok(m) => m,
            Err(e) => return self.fail(format!("{e}; profile unchanged")),
        };
        let set_result = nix.set(&profile, &closure);
        let now = current_generation(&profile);
        let new = match &now {
            Ok(n) => *n,
            Err(_) => None,
        };
        self.status.new_generation = new;
        let new_created = new.is_some_and(|n| !before.existing.contains(&n));
        if let Err(e) = set_result {
            if new == before.current {
                return self.fail(format!("{e}; profile unchanged"));
            }
            // nix-env failed after moving the link: undo that if allowed.
            return self.after_failure(&nix, &before, new, new_created, e);
        }
        if let Err(e) = now {
            return self.fail(format!("profile set, but {e}"));
        }
        if let Some(m) = &mut marker {
            m.generation = new;
            m.new_created = new_created;
            if let Err(e) = crate::pending::write(&profile, m) {
                crate::log(&format!("warning: {e}"));
            }
        }

        let what = if self.req.boot() {
            "activating for next boot"
        } else {
            "activating"
        };
        let gen_txt = new.map(|n| format!(" (generation {n})")).unwrap_or_default();
        self.set(State::Activating, format!("{what} {}{gen_txt}", profile.display()));
        let mode = Mode {
            boot: self.req.boot(),
            pending: magic,
            ..Mode::default()
        };
        if let Err(e) = run_activation(&profile, mode, timeout) {
            return self.after_failure(&nix, &before, new, new_created, e.to_string());
        }
        if self.dir.exists(ABORT) {
            return self.rollback(
                &nix,
                &before,
                new,
                new_created,
                "deploy aborted during activation".into(),
            );
        }
        if self.req.magic_rollback() && !self.req.boot() {
            self.await_confirmation(&nix, &before, new, new_created);
        } else {
            let how = if self.req.boot() {
                "profile set; activation for next boot succeeded"
            } else {
                "activation succeeded"
            };
            self.set(State::Activated, how);
        }
    }

    /// Reboot-safe window: from before the profile changes until this deploy ends, a marker beside
    /// the profile says what to undo if this worker is gone first (magic rollback only).
    fn mark_pending(
        &mut self,
        magic: bool,
        before: &Before,
        closure: &Path,
    ) -> Result<Option<crate::pending::Pending>, String> {
        if !magic {
            return Ok(None);
        }
        let marker = crate::pending::Pending {
            id: self.req.id().to_string(),
            previous: before.current,
            generation: None,
            new_created: false,
            closure: closure.to_path_buf(),
            since: now_rfc3339(),
        };
        crate::pending::write(self.profile(), &marker)?;
        self.pending = true;
        Ok(Some(marker))
    }

    /// `--dry-activate`: the closure's activation in dry mode; the profile is not touched.
    fn dry_activate(&mut self, closure: &Path) {
        self.set(State::Activating, format!("dry-activating {}", closure.display()));
        let mode = Mode {
            dry: true,
            ..Mode::default()
        };
        match run_activation(closure, mode, self.req.activation_timeout()) {
            Ok(()) => self.set(State::Activated, "dry activation succeeded (profile unchanged)"),
            Err(e) => self.fail(format!("dry activation failed: {e} (profile unchanged)")),
        }
    }

    fn after_failure(&mut self, nix: &NixEnv, before: &Before, new: Option<u64>, new_created: bool, why: String) {
        if self.req.auto_rollback() || self.dir.exists(ABORT) {
            self.rollback(nix, before, new, new_created, why);
        } else {
            let at = new
                .map(|n| format!("generation {n}"))
                .unwrap_or_else(|| "the new closure".into());
            self.fail(format!(
                "{why}; no auto-rollback, so {} stays at {at}",
                self.profile().display()
            ));
        }
    }

    fn await_confirmation(&mut self, nix: &NixEnv, before: &Before, new: Option<u64>, new_created: bool) {
        let timeout = Duration::from_secs(self.req.confirm_timeout());
        let since = SystemTime::now();
        self.set(
            State::AwaitingConfirmation,
            format!(
                "activation succeeded; waiting up to {} s for confirmation",
                self.req.confirm_timeout()
            ),
        );
        loop {
            let now = SystemTime::now();
            let deadline = confirm_deadline(since, self.dir.mtime(HEARTBEAT), now, timeout);
            // A second deploy of this profile waits exactly as long as this one can still run.
            let deadline_unix = deadline
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let ends_by = deadline_unix + self.req.activation_timeout() + 10;
            if let Some(l) = &mut self.lock {
                l.set_ends_by(ends_by);
            }
            let decision = await_decision(self.dir.exists(ABORT), self.dir.exists(CONFIRM), now, deadline);
            match decision {
                AwaitDecision::KeepWaiting => std::thread::sleep(POLL),
                AwaitDecision::Confirmed => {
                    // The profile's own step for a confirmed deploy (NixOS: become the boot default).
                    let note = match run_confirmed_hook(self.profile(), self.req.activation_timeout()) {
                        Ok(true) => "; its rollout-confirmed step ran",
                        Ok(false) => "",
                        Err(e) => {
                            crate::log(&format!("warning: the profile's rollout-confirmed step failed: {e}"));
                            "; WARNING: its rollout-confirmed step failed (see the log)"
                        }
                    };
                    return self.set(State::Confirmed, format!("deployment confirmed{note}"));
                }
                AwaitDecision::Abort => {
                    return self.rollback(nix, before, new, new_created, "deploy aborted by the deployer".into())
                }
                AwaitDecision::TimedOut => {
                    let why = format!("no confirmation within {} s", self.req.confirm_timeout());
                    return self.rollback(nix, before, new, new_created, why);
                }
            }
        }
    }

    /// Undo this deploy: back to the previous generation (or no profile at all), re-activate it.
    fn rollback(&mut self, nix: &NixEnv, before: &Before, new: Option<u64>, new_created: bool, why: String) {
        let profile = self.profile().to_path_buf();
        self.set(State::RollingBack, format!("{why}; rolling back"));
        let plan = plan_rollback(before.current, new, new_created);
        match crate::undo::undo(nix, &profile, plan, self.req.activation_timeout()) {
            Ok(done) => self.set(State::RolledBack, format!("{why}; {done}")),
            Err(e) => self.fail(format!("{why}; {e}")),
        }
    }

    fn revoke(&mut self) {
        let Job::Revoke { args, .. } = &self.req.job else {
            return self.fail("request is not a revoke");
        };
        let (generation, previous) = (args.generation, args.previous);
        let Some(before) = self.prepare() else { return };
        let profile = self.profile().to_path_buf();
        if before.current != Some(generation) {
            let now = before
                .current
                .map(|n| format!("generation {n}"))
                .unwrap_or_else(|| "nothing (absent)".into());
            return self.fail(format!(
                "refusing to revoke: {} points at {now}, not generation {generation}; it was deployed again since",
                profile.display()
            ));
        }
        let closure = self.req.closure().to_path_buf();
        let link = generation_link(&profile, generation);
        let holds = std::fs::read_link(&link)
            .map(|t| same_path(&t, &closure))
            .unwrap_or(false);
        if !holds {
            return self.fail(format!(
                "refusing to revoke: generation {generation} of {} is not {} any more; it was deployed again since",
                profile.display(),
                closure.display()
            ));
        }
        let nix = match NixEnv::find(self.req.debug()) {
            Ok(n) => n,
            Err(e) => return self.fail(e),
        };
        // Roll back relative to the generation the original deploy started from, not today's.
        let before = Before {
            current: previous,
            existing: before.existing,
        };
        self.status.previous_generation = previous;
        self.status.new_generation = Some(generation);
        if previous == Some(generation) {
            self.set(State::RollingBack, format!("revoking generation {generation}"));
            return self.set(
                State::RolledBack,
                format!("generation {generation} was already active before that deploy; nothing to undo"),
            );
        }
        if let Some(p) = previous {
            if !before.existing.contains(&p) {
                self.set(State::RollingBack, format!("revoking generation {generation}"));
                return self.fail(format!(
                    "cannot revoke: previous generation {p} of {} no longer exists",
                    profile.display()
                ));
            }
        }
        self.rollback(
            &nix,
            &before,
            Some(generation),
            true,
            format!("revoking generation {generation}"),
        );
    }
}

/// Store paths compare textually; fall back to resolving both in case one goes through a symlink.
fn same_path(a: &Path, b: &Path) -> bool {
    a == b || matches!((std::fs::canonicalize(a), std::fs::canonicalize(b)), (Ok(x), Ok(y)) if x == y)
}
