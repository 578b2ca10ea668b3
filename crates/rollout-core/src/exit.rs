//! Exit codes: the one place where outcomes and errors become the process's exit status.

use crate::error::Error;
use crate::events::Outcome;

/// Every selected profile deployed (or dry-activated, or set for the next boot).
pub const SUCCESS: u8 = 0;
/// Bad input: refused with rollout's own first line before anything was built, copied or contacted.
pub const BAD_INPUT: u8 = 1;
/// A usage error found by the argument parser.
pub const USAGE: u8 = 2;
/// The deployment failed and the failed profile is unchanged on its target.
pub const FAILED: u8 = 3;
/// The deployment failed and a target rolled back: seen, or certain because nothing will confirm.
pub const ROLLED_BACK: u8 = 4;
/// `status`: every host answered, and some profile differs from what the flake would deploy
/// (drifted, or never deployed).
pub const DRIFTED: u8 = 5;

/// The exit code of a run whose profiles ended with `outcomes`.
pub fn for_outcomes(outcomes: impl IntoIterator<Item = Outcome>) -> u8 {
    let mut code = SUCCESS;
    for o in outcomes {
        match o {
            Outcome::Deployed | Outcome::DryActivated | Outcome::Booted | Outcome::Unchanged => {}
            Outcome::RolledBack | Outcome::RollingBack => code = ROLLED_BACK,
            Outcome::Failed | Outcome::Skipped if code == SUCCESS => code = FAILED,
            Outcome::Failed | Outcome::Skipped => {}
        }
    }
    code
}

/// The exit code of a command that ended with `e`.
pub fn for_error(e: &Error) -> u8 {
    match e {
        Error::BadInput(_) | Error::Cancelled => BAD_INPUT,
        Error::Run(_) => FAILED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Outcome::*;

    #[test]
    fn refusals_exit_1_and_run_errors_3() {
        assert_eq!(for_error(&Error::bad_input("--parallel must be at least 1")), BAD_INPUT);
        assert_eq!(for_error(&Error::Cancelled), BAD_INPUT);
        let io = std::io::Error::other("no space");
        assert_eq!(for_error(&Error::Run(crate::deploy::RunError::Sockets(io))), FAILED);
    }

    #[test]
    fn a_rollback_anywhere_makes_the_run_exit_4_and_any_other_failure_3() {
        let rows: &[(&[Outcome], u8)] = &[
            (&[], SUCCESS),
            (&[Deployed, DryActivated, Booted], SUCCESS),
            (&[Deployed, Failed], FAILED),
            (&[Skipped], FAILED),
            (&[Failed, Skipped], FAILED),
            (&[Failed, RolledBack, Skipped], ROLLED_BACK),
            (&[RolledBack, Failed], ROLLED_BACK),
            (&[Deployed, RollingBack], ROLLED_BACK),
        ];
        for (outcomes, want) in rows {
            assert_eq!(for_outcomes(outcomes.iter().copied()), *want, "{outcomes:?}");
        }
    }
}
