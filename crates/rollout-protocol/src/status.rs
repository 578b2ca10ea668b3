//! Deploy states, the `status.json` record and the `ROLLOUT-STATUS` line (written by the agent, read
//! by the deployer), allowed transitions and the agent's exit codes derived from them.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Prefix of the one machine-readable line the deployer looks for.
pub const STATUS_PREFIX: &str = "ROLLOUT-STATUS ";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Started,
    Activating,
    AwaitingConfirmation,
    Confirmed,
    Activated,
    RollingBack,
    RolledBack,
    Failed,
    /// The profile already ran this closure, confirmed by an earlier deploy: nothing was done.
    Unchanged,
}

impl State {
    /// Every state, in the order a deploy may pass through them.
    pub const ALL: [State; 9] = [
        State::Started,
        State::Activating,
        State::AwaitingConfirmation,
        State::Confirmed,
        State::Activated,
        State::RollingBack,
        State::RolledBack,
        State::Failed,
        State::Unchanged,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            State::Confirmed | State::Activated | State::RolledBack | State::Failed | State::Unchanged
        )
    }

    /// The states after which the foreground `activate` stops following and reports.
    pub fn ends_following(self) -> bool {
        self.is_terminal() || self == State::AwaitingConfirmation
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Started => "started",
            State::Activating => "activating",
            State::AwaitingConfirmation => "awaiting-confirmation",
            State::Confirmed => "confirmed",
            State::Activated => "activated",
            State::RollingBack => "rolling-back",
            State::RolledBack => "rolled-back",
            State::Failed => "failed",
            State::Unchanged => "unchanged",
        }
    }

    /// The state machine of docs/agent-protocol.md; anything else is a bug in the worker.
    /// Staying in a non-terminal state is allowed: that only updates the message.
    pub fn can_go_to(self, to: State) -> bool {
        use State::*;
        if self == to {
            return !self.is_terminal();
        }
        match self {
            Started => matches!(to, Activating | RollingBack | Failed | Unchanged),
            Activating => matches!(to, AwaitingConfirmation | Activated | RollingBack | Failed),
            AwaitingConfirmation => matches!(to, Confirmed | RollingBack | Failed),
            RollingBack => matches!(to, RolledBack | Failed),
            Confirmed | Activated | RolledBack | Failed | Unchanged => false,
        }
    }
}

/// Contents of `status.json`; also the payload of `ROLLOUT-STATUS` lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub id: String,
    pub state: State,
    pub profile_path: Option<PathBuf>,
    pub closure: Option<PathBuf>,
    pub previous_generation: Option<u64>,
    pub new_generation: Option<u64>,
    #[serde(default)]
    pub message: String,
    /// RFC 3339, UTC, whole seconds.
    #[serde(default)]
    pub updated_at: String,
}

impl Status {
    pub fn new(id: &str, profile_path: Option<PathBuf>, closure: Option<PathBuf>, message: &str) -> Status {
        Status {
            id: id.to_string(),
            state: State::Started,
            profile_path,
            closure,
            previous_generation: None,
            new_generation: None,
            message: message.to_string(),
            updated_at: String::new(),
        }
    }

    /// Moves to `to`; refuses transitions the protocol does not have.
    pub fn advance(&mut self, to: State, message: impl Into<String>) -> Result<(), String> {
        if !self.state.can_go_to(to) {
            return Err(format!(
                "internal error: state {} cannot go to {}",
                self.state.as_str(),
                to.as_str()
            ));
        }
        self.state = to;
        self.message = message.into();
        Ok(())
    }

    /// Reads a `ROLLOUT-STATUS {…}` line; any other line (the agent's log) is `None`.
    pub fn parse_line(line: &str) -> Option<Status> {
        serde_json::from_str(line.strip_prefix(STATUS_PREFIX)?).ok()
    }

    /// The `ROLLOUT-STATUS {…}` line (without newline).
    pub fn line(&self) -> String {
        // Serialising plain data cannot fail; fall back to a minimal hand-made object just in case.
        let json = serde_json::to_string(self)
            .unwrap_or_else(|_| format!("{{\"id\":\"{}\",\"state\":\"{}\"}}", self.id, self.state.as_str()));
        format!("{STATUS_PREFIX}{json}")
    }
}

/// Exit code of `activate` (and of the foreground part of any followed deploy).
pub fn activate_exit(state: State) -> i32 {
    match state {
        State::AwaitingConfirmation | State::Activated | State::Confirmed | State::Unchanged => 0,
        State::RolledBack => 3,
        _ => 1,
    }
}

/// Exit code of `revoke`: only a completed rollback is success.
pub fn revoke_exit(state: State) -> i32 {
    if state == State::RolledBack {
        0
    } else {
        1
    }
}

/// Exit code of `confirm`: 0 all confirmed, 3 any rolled back (confirmation came too late), else 1.
pub fn confirm_exit(states: &[Option<State>]) -> i32 {
    if !states.is_empty() && states.iter().all(|s| *s == Some(State::Confirmed)) {
        0
    } else if states.contains(&Some(State::RolledBack)) {
        3
    } else {
        1
    }
}

/// Exit code of `abort`: 0 when no deploy is left live on its new generation, i.e. every one ended
/// `rolled-back` or `failed`; `confirmed`/`activated` (too late to abort) or still running → 1.
pub fn abort_exit(states: &[Option<State>]) -> i32 {
    let ok = states
        .iter()
        .all(|s| matches!(s, Some(State::RolledBack) | Some(State::Failed)));
    if ok && !states.is_empty() {
        0
    } else {
        1
    }
}

/// Formats seconds since the Unix epoch as RFC 3339 UTC (`1970-01-01T00:00:00Z`).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant), valid for all dates after the epoch.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape() {
        let mut s = Status::new("abcdefgh", Some("/p".into()), Some("/nix/store/x".into()), "hi");
        s.previous_generation = Some(3);
        s.updated_at = "t".into();
        let v: serde_json::Value = serde_json::from_str(s.line().strip_prefix(STATUS_PREFIX).unwrap()).unwrap();
        assert_eq!(v["state"], "started");
        assert_eq!(v["previous_generation"], 3);
        assert!(v["new_generation"].is_null());
        assert_eq!(v["profile_path"], "/p");
        assert!(!s.line().contains('\n'));
        let back: Status = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
        assert_eq!(
            serde_json::to_string(&State::AwaitingConfirmation).unwrap(),
            "\"awaiting-confirmation\""
        );
    }

    #[test]
    fn transitions() {
        use State::*;
        let mut s = Status::new("abcdefgh", None, None, "");
        assert!(s.advance(Activating, "a").is_ok());
        assert!(s.advance(Activating, "a2").is_ok());
        assert!(s.advance(Started, "b").is_err());
        assert!(s.advance(AwaitingConfirmation, "c").is_ok());
        assert!(s.advance(Activated, "x").is_err());
        assert!(s.advance(RollingBack, "d").is_ok());
        assert!(s.advance(RolledBack, "e").is_ok());
        for to in State::ALL {
            assert!(!s.state.can_go_to(to), "terminal state left");
        }
        assert_eq!(s.message, "e");
    }

    #[test]
    fn exit_codes() {
        use State::*;
        assert_eq!(activate_exit(AwaitingConfirmation), 0);
        assert_eq!(activate_exit(Activated), 0);
        assert_eq!(activate_exit(RolledBack), 3);
        assert_eq!(activate_exit(Failed), 1);
        assert_eq!(confirm_exit(&[Some(Confirmed), Some(Confirmed)]), 0);
        assert_eq!(confirm_exit(&[Some(Confirmed), Some(RolledBack)]), 3);
        assert_eq!(confirm_exit(&[Some(Confirmed), None]), 1);
        assert_eq!(confirm_exit(&[Some(AwaitingConfirmation)]), 1);
        assert_eq!(abort_exit(&[Some(RolledBack), Some(Failed)]), 0);
        assert_eq!(abort_exit(&[Some(RolledBack), Some(Confirmed)]), 1);
        assert_eq!(abort_exit(&[Some(Activated)]), 1);
        assert_eq!(revoke_exit(RolledBack), 0);
        assert_eq!(revoke_exit(Failed), 1);
    }

    #[test]
    fn time_format() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
