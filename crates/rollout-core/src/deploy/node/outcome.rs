//! What each phase's result means, decided by pure functions so that one table test covers every
//! way a profile's deploy can end: the outcome, the words that say it and (through
//! [`crate::exit`]) the exit code. "Rolled back" only when the rollback was seen; "rolling back"
//! when the target does it by itself out of sight (magic rollback: nothing will confirm).

use crate::events::Outcome;

/// What a successful activation is called, by mode.
pub fn activation_success(dry_activate: bool, boot: bool) -> (Outcome, &'static str) {
    if dry_activate {
        (Outcome::DryActivated, "dry activation succeeded")
    } else if boot {
        (Outcome::Booted, "activated for the next boot")
    } else {
        (Outcome::Deployed, "activated")
    }
}

/// A pending profile this node aborts (an earlier failure), by the state the agent answered.
pub fn abort_outcome(state: Option<&str>, why: &str, confirm_timeout: u64) -> (Outcome, String) {
    match state {
        Some("rolled-back") => (Outcome::RolledBack, format!("rolled back because {why}")),
        Some("failed") => (
            Outcome::Failed,
            format!("{why}, and rolling this profile back failed too; see the agent log on the target"),
        ),
        _ => (
            Outcome::RollingBack,
            format!("{why}; not confirmed, so the target rolls back by itself within {confirm_timeout} s (not seen from here)"),
        ),
    }
}

/// A profile whose confirmation did not land, by the last state learned from the target.
pub fn unconfirmed_outcome(state: Option<&str>, reason: &str, confirm_timeout: u64) -> (Outcome, String) {
    match state {
        Some("rolled-back") => (Outcome::RolledBack, format!("not confirmed ({reason}); the target has rolled back")),
        Some("confirmed") => (Outcome::Deployed, "confirmed".to_string()),
        Some("failed") => (
            Outcome::Failed,
            format!("not confirmed ({reason}), and the target's own rollback failed; see the agent log there"),
        ),
        _ => (
            Outcome::RollingBack,
            format!("not confirmed ({reason}); the target rolls back by itself within {confirm_timeout} s (not seen from here)"),
        ),
    }
}

/// A confirmed profile this run undoes (`revoke`), by how the agent call ended.
pub fn revoke_outcome(code: Option<i32>, detail: &str, why: &str) -> (Outcome, String) {
    if code == Some(0) {
        (Outcome::RolledBack, format!("rolled back because {why}"))
    } else {
        (
            Outcome::Failed,
            format!("{why}; rolling this profile back failed: {}", detail.trim()),
        )
    }
}

/// How a failed `activate` call ended, as the deployer saw it.
pub struct ActivationEnd<'a> {
    /// The agent call's exit code (`None`: ended by a signal).
    pub code: Option<i32>,
    /// The agent's last reported state for this deploy, if it reported one.
    pub state: Option<&'a str>,
    pub message: Option<&'a str>,
    pub stderr: &'a str,
    /// The agent ran under sudo (or another elevation).
    pub elevated: bool,
    pub magic_rollback: bool,
}

/// Names for the messages.
pub struct FailureContext<'a> {
    pub host: &'a str,
    pub ssh_user: &'a str,
    pub user: &'a str,
    pub agent_bin: &'a str,
    pub confirm_timeout: u64,
}

/// The outcome of a failed activation and what to tell the user: pure, so that every way an
/// activation can end is covered by one table test. "Rolled back" only when the agent said so, or
/// when magic rollback makes it certain (nothing will ever confirm).
pub fn activation_failure(e: &ActivationEnd, c: &FailureContext) -> (Outcome, String) {
    let silent = e.state.is_none();
    let detail = match e.message.filter(|m| !m.is_empty()) {
        Some(m) => m.to_string(),
        None if e.stderr.trim().is_empty() => agent_exit_text(e.code),
        None => e.stderr.trim().to_string(),
    };
    let host = c.host;
    if silent && protocol_mismatch(e.code, e.stderr) {
        return (Outcome::Failed, format!(
            "the agent {} on {host} does not speak this rollout's agent protocol {} ({detail}); nothing was changed there. Deploy with the agent of the same rollout version (--agent, or build the profile with this rollout's lib)",
            c.agent_bin,
            rollout_protocol::PROTOCOL_VERSION
        ));
    }
    if silent && e.elevated && sudo_refused(e.stderr) {
        return (Outcome::Failed, format!(
            "sudo on {host} refused to run the agent as {} for {}@{host} ({detail}); the activation never started and the profile is unchanged. Check the password (interactiveSudo, ROLLOUT_SUDO_PASSWORD_<NODE>, --sudo-password-command) or the sudoers rule",
            c.user, c.ssh_user
        ));
    }
    // The remote shell's "cannot execute" (126) / "not found" (127): the agent never ran.
    if silent && matches!(e.code, Some(126) | Some(127)) {
        return (Outcome::Failed, format!(
            "the agent {} could not run on {host} ({detail}); nothing was changed there. If the target's system differs from this machine's, build the profile with rollout's lib.<system>.activate.* (it puts an agent built for the target into the closure) or pass --agent with a rollout-agent store path built for the target",
            c.agent_bin
        ));
    }
    // ssh exits 255 when the connection itself fails; with no status line we never heard the
    // agent's verdict, but the agent goes on without us.
    if silent && e.code == Some(255) {
        return if e.magic_rollback {
            (Outcome::RollingBack, format!("lost the SSH connection to {host} during activation ({detail}); nothing will confirm it, so the target rolls back by itself within {} s of activating", c.confirm_timeout))
        } else {
            (Outcome::Failed, format!("lost the SSH connection to {host} during activation ({detail}); the activation goes on there and its result is unknown (magic rollback is off)"))
        };
    }
    if e.state == Some("rolled-back") {
        return (
            Outcome::RolledBack,
            format!("activation failed and was rolled back on the target: {detail}"),
        );
    }
    (Outcome::Failed, format!("activation failed: {detail}"))
}

/// How an agent call ended when it said nothing: its exit status, or the signal that ended it.
fn agent_exit_text(code: Option<i32>) -> String {
    match code {
        Some(n) => format!("the agent exited with status {n} without reporting a state"),
        None => "the agent was ended by a signal before reporting a state".to_string(),
    }
}

/// An agent of another protocol version refused before touching anything: a current agent says so
/// with its own exit code; one from before protocol versions rejects the `--protocol` word itself.
fn protocol_mismatch(code: Option<i32>, stderr: &str) -> bool {
    (code == Some(rollout_protocol::PROTOCOL_MISMATCH_EXIT) && stderr.contains("protocol mismatch"))
        || (code == Some(2) && stderr.contains("--protocol"))
}

/// sudo's own words when it will not run the command: a wrong or missing password, or a rule that
/// needs a terminal. The agent never started, so nothing on the target changed.
fn sudo_refused(stderr: &str) -> bool {
    [
        "incorrect password attempt",
        "Sorry, try again",
        "a password is required",
        "a terminal is required",
    ]
    .iter()
    .any(|m| stderr.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_exits_are_described_in_words() {
        assert_eq!(
            agent_exit_text(Some(1)),
            "the agent exited with status 1 without reporting a state"
        );
        assert!(agent_exit_text(None).contains("ended by a signal"));
        assert!(!agent_exit_text(None).contains("None"));
    }

    fn context() -> FailureContext<'static> {
        FailureContext {
            host: "host1",
            ssh_user: "deploy",
            user: "root",
            agent_bin: "/nix/store/a/bin/rollout-agent",
            confirm_timeout: 30,
        }
    }

    fn end<'a>(
        code: Option<i32>,
        state: Option<&'a str>,
        message: Option<&'a str>,
        stderr: &'a str,
        elevated: bool,
        magic_rollback: bool,
    ) -> ActivationEnd<'a> {
        ActivationEnd {
            code,
            state,
            message,
            stderr,
            elevated,
            magic_rollback,
        }
    }

    fn check(rows: Vec<(ActivationEnd, Outcome, &str)>) {
        let c = context();
        for (e, want, words) in rows {
            let (got, msg) = activation_failure(&e, &c);
            assert_eq!(got, want, "{msg}");
            assert!(msg.contains(words), "expected {words:?} in {msg:?}");
            assert!(!msg.contains("Some(") && !msg.contains("None"), "{msg}");
        }
    }

    /// A failed activation whose agent reported its verdict → outcome and the words that say it.
    #[test]
    fn failed_activation_with_a_verdict_outcomes_table() {
        check(vec![
            (
                end(Some(3), Some("rolled-back"), Some("script exited 1"), "", true, true),
                Outcome::RolledBack,
                "activation failed and was rolled back on the target: script exited 1",
            ),
            (
                end(Some(1), Some("failed"), Some("no auto-rollback"), "", true, true),
                Outcome::Failed,
                "activation failed: no auto-rollback",
            ),
            (
                end(Some(1), Some("failed"), None, "", false, false),
                Outcome::Failed,
                "activation failed: the agent exited with status 1",
            ),
        ]);
    }

    /// A failed activation whose agent said nothing (lost connection, not runnable, sudo refused,
    /// another protocol, a signal) → outcome and the words that say it.
    #[test]
    fn failed_activation_without_a_verdict_outcomes_table() {
        check(vec![
            (
                end(Some(255), None, None, "Connection closed", true, true),
                Outcome::RollingBack,
                "nothing will confirm it, so the target rolls back by itself within 30 s",
            ),
            (
                end(Some(255), None, None, "Connection closed", true, false),
                Outcome::Failed,
                "its result is unknown (magic rollback is off)",
            ),
            (
                end(Some(127), None, None, "not found", false, true),
                Outcome::Failed,
                "could not run on host1 (not found); nothing was changed there",
            ),
            (
                end(Some(126), None, None, "Exec format error", false, true),
                Outcome::Failed,
                "could not run on host1",
            ),
            (
                end(
                    Some(1),
                    None,
                    None,
                    "Sorry, try again.\nsudo: 1 incorrect password attempt",
                    true,
                    true,
                ),
                Outcome::Failed,
                "sudo on host1 refused to run the agent as root for deploy@host1",
            ),
            (
                end(Some(1), None, None, "Sorry, try again.", false, true),
                Outcome::Failed,
                "activation failed: Sorry, try again.",
            ),
            (
                end(
                    Some(5),
                    None,
                    None,
                    "rollout-agent: error: protocol mismatch: …",
                    true,
                    true,
                ),
                Outcome::Failed,
                "does not speak this rollout's agent protocol 2",
            ),
            (
                end(
                    Some(2),
                    None,
                    None,
                    "rollout-agent: error: unknown command `--protocol`",
                    true,
                    true,
                ),
                Outcome::Failed,
                "does not speak this rollout's agent protocol",
            ),
            (
                end(None, None, None, "", false, true),
                Outcome::Failed,
                "the agent was ended by a signal",
            ),
        ]);
    }

    /// Every other phase end → outcome, exit code of a run that ends so, and the words.
    #[test]
    fn phase_outcomes_table() {
        let why = "node `b` failed";
        let owned = |(o, m): (Outcome, &str)| (o, m.to_string());
        let rows: Vec<((Outcome, String), Outcome, u8, &str)> = vec![
            (
                owned(activation_success(false, false)),
                Outcome::Deployed,
                0,
                "activated",
            ),
            (
                owned(activation_success(true, false)),
                Outcome::DryActivated,
                0,
                "dry activation",
            ),
            (owned(activation_success(false, true)), Outcome::Booted, 0, "next boot"),
            (
                abort_outcome(Some("rolled-back"), why, 30),
                Outcome::RolledBack,
                4,
                "rolled back because node `b` failed",
            ),
            (
                abort_outcome(Some("failed"), why, 30),
                Outcome::Failed,
                3,
                "rolling this profile back failed too",
            ),
            (
                abort_outcome(None, why, 30),
                Outcome::RollingBack,
                4,
                "rolls back by itself within 30 s (not seen",
            ),
            (
                unconfirmed_outcome(Some("rolled-back"), "timeout", 9),
                Outcome::RolledBack,
                4,
                "has rolled back",
            ),
            (
                unconfirmed_outcome(Some("confirmed"), "timeout", 9),
                Outcome::Deployed,
                0,
                "confirmed",
            ),
            (
                unconfirmed_outcome(Some("failed"), "timeout", 9),
                Outcome::Failed,
                3,
                "own rollback failed",
            ),
            (
                unconfirmed_outcome(Some("awaiting-confirmation"), "timeout", 9),
                Outcome::RollingBack,
                4,
                "within 9 s",
            ),
            (
                unconfirmed_outcome(None, "Connection refused", 9),
                Outcome::RollingBack,
                4,
                "(Connection refused)",
            ),
            (
                revoke_outcome(Some(0), "", why),
                Outcome::RolledBack,
                4,
                "rolled back because",
            ),
            (
                revoke_outcome(Some(1), " no generation 3 \n", why),
                Outcome::Failed,
                3,
                "failed: no generation 3",
            ),
            (
                revoke_outcome(None, "killed", why),
                Outcome::Failed,
                3,
                "failed: killed",
            ),
        ];
        for ((got, msg), want, code, words) in rows {
            assert_eq!(got, want, "{msg}");
            assert_eq!(crate::exit::for_outcomes([got]), code, "{msg}");
            assert!(msg.contains(words), "expected {words:?} in {msg:?}");
            assert!(!msg.contains("Some(") && !msg.contains("None"), "{msg}");
        }
    }

    #[test]
    fn agents_of_another_protocol_are_recognised() {
        assert!(protocol_mismatch(
            Some(5),
            "rollout-agent: error: protocol mismatch: the deployer speaks agent protocol 1, this rollout-agent speaks protocol 2"
        ));
        assert!(protocol_mismatch(
            Some(2),
            "rollout-agent: error: unknown command `--protocol`; try --help"
        ));
        assert!(!protocol_mismatch(Some(1), "activation failed"));
    }

    #[test]
    fn sudo_refusals_are_recognised() {
        assert!(sudo_refused("Sorry, try again.\nsudo: 1 incorrect password attempt\n"));
        assert!(sudo_refused("sudo: a password is required\n"));
        assert!(!sudo_refused("rollout-lab: profile system fails on purpose"));
    }
}
