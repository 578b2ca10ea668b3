//! Pure decisions of the worker: confirmation deadline, what to do while waiting, how to roll back.

use std::time::{Duration, SystemTime};

/// Deadline = max(awaiting_since, heartbeat mtime) + timeout. A heartbeat from the future (clock
/// jumps, a hand-set mtime) counts as "now", so it can extend by at most one timeout at a time.
pub fn confirm_deadline(
    awaiting_since: SystemTime,
    heartbeat: Option<SystemTime>,
    now: SystemTime,
    timeout: Duration,
) -> SystemTime {
    let beat = heartbeat.map(|h| h.min(now));
    let base = match beat {
        Some(h) if h > awaiting_since => h,
        _ => awaiting_since,
    };
    base + timeout
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwaitDecision {
    Confirmed,
    Abort,
    TimedOut,
    KeepWaiting,
}

/// One poll of the confirmation wait. Abort wins over confirm (an explicit "no" is never overridden),
/// and a confirmation that is already there when the deadline passes still counts.
pub fn await_decision(abort: bool, confirm: bool, now: SystemTime, deadline: SystemTime) -> AwaitDecision {
    if abort {
        AwaitDecision::Abort
    } else if confirm {
        AwaitDecision::Confirmed
    } else if now >= deadline {
        AwaitDecision::TimedOut
    } else {
        AwaitDecision::KeepWaiting
    }
}

/// What a rollback does to the profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollbackPlan {
    /// Switch back to `previous`, delete `delete` (the generation this deploy created), re-activate.
    Restore { previous: u64, delete: Option<u64> },
    /// First deploy: remove the profile link and, if this deploy created it, the generation link.
    RemoveProfile { delete_link: Option<u64> },
    /// The profile never changed (e.g. `nix-env --set` failed before switching): nothing to undo.
    Nothing,
}

/// `previous`: generation before the deploy; `new`: generation the profile points at now;
/// `new_created`: whether `new` did not exist before this deploy (nix-env reuses the newest
/// generation when it already holds the same closure, and such a generation must survive).
pub fn plan_rollback(previous: Option<u64>, new: Option<u64>, new_created: bool) -> RollbackPlan {
    let delete = new.filter(|n| new_created && Some(*n) != previous);
    match (previous, new) {
        (_, None) => RollbackPlan::Nothing,
        (Some(p), Some(_)) => RollbackPlan::Restore { previous: p, delete },
        (None, Some(_)) => RollbackPlan::RemoveProfile { delete_link: delete },
    }
}

/// Deploy directories older than this are removed by the next `activate`.
pub const DEPLOY_DIR_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

pub fn is_expired(mtime: SystemTime, now: SystemTime) -> bool {
    now.duration_since(mtime)
        .map(|age| age > DEPLOY_DIR_MAX_AGE)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    fn s(secs: u64) -> SystemTime {
        T0 + Duration::from_secs(secs)
    }

    #[test]
    fn deadline() {
        let t = Duration::from_secs(30);
        assert_eq!(confirm_deadline(s(100), None, s(101), t), s(130));
        assert_eq!(
            confirm_deadline(s(100), Some(s(50)), s(101), t),
            s(130),
            "old heartbeat ignored"
        );
        assert_eq!(
            confirm_deadline(s(100), Some(s(120)), s(125), t),
            s(150),
            "heartbeat extends"
        );
        assert_eq!(
            confirm_deadline(s(100), Some(s(9999)), s(125), t),
            s(155),
            "future heartbeat capped at now"
        );
    }

    #[test]
    fn decisions() {
        use AwaitDecision::*;
        assert_eq!(await_decision(true, true, s(0), s(10)), Abort);
        assert_eq!(await_decision(false, true, s(20), s(10)), Confirmed);
        assert_eq!(await_decision(false, false, s(10), s(10)), TimedOut);
        assert_eq!(await_decision(false, false, s(9), s(10)), KeepWaiting);
    }

    #[test]
    fn rollback_plans() {
        assert_eq!(
            plan_rollback(Some(3), Some(4), true),
            RollbackPlan::Restore {
                previous: 3,
                delete: Some(4)
            }
        );
        assert_eq!(
            plan_rollback(Some(3), Some(5), false),
            RollbackPlan::Restore {
                previous: 3,
                delete: None
            }
        );
        assert_eq!(
            plan_rollback(Some(3), Some(3), false),
            RollbackPlan::Restore {
                previous: 3,
                delete: None
            }
        );
        assert_eq!(
            plan_rollback(None, Some(1), true),
            RollbackPlan::RemoveProfile { delete_link: Some(1) }
        );
        assert_eq!(
            plan_rollback(None, Some(2), false),
            RollbackPlan::RemoveProfile { delete_link: None }
        );
        assert_eq!(plan_rollback(Some(3), None, false), RollbackPlan::Nothing);
    }

    #[test]
    fn expiry() {
        assert!(!is_expired(s(0), s(3600)));
        assert!(is_expired(s(0), s(8 * 24 * 3600)));
        assert!(!is_expired(s(100), s(0)), "future mtime is not expired");
    }
}
