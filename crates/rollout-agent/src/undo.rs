//! Undoing a deploy on the target: back to the generation before it (or no profile at all, after a
//! first deploy), then that generation's activation again. Used by the worker's rollbacks and by
//! `recover` after a reboot or a killed agent.

use crate::exec::{run_activation, Mode, NixEnv, ScriptError};
use crate::policy::RollbackPlan;
use crate::profile::generation_link;
use std::path::Path;

/// Carry out `plan` on `profile`. `Ok`: what was done (rolled back); `Err`: why it failed.
pub fn undo(nix: &NixEnv, profile: &Path, plan: RollbackPlan, timeout: u64) -> Result<String, String> {
    match plan {
        RollbackPlan::Nothing => Err("nothing to roll back".into()),
        RollbackPlan::RemoveProfile { delete_link } => {
            let mut problems = Vec::new();
            for path in std::iter::once(profile.to_path_buf()).chain(delete_link.map(|n| generation_link(profile, n))) {
                if let Err(e) = std::fs::remove_file(&path) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        problems.push(format!("cannot remove {}: {e}", path.display()));
                    }
                }
            }
            if problems.is_empty() {
                Ok(format!(
                    "first deploy of {}: removed the profile again (nothing to re-activate)",
                    profile.display()
                ))
            } else {
                Err(format!("rollback failed: {}", problems.join("; ")))
            }
        }
        RollbackPlan::Restore { previous, delete } => {
            nix.switch_generation(profile, previous)
                .map_err(|e| format!("rollback failed: {e}"))?;
            let mut notes = String::new();
            if let Some(n) = delete {
                if let Err(e) = nix.delete_generation(profile, n) {
                    // The switch already happened; a leftover generation link is only clutter.
                    crate::log(&format!("warning: {e}"));
                    notes = format!(" (could not delete generation {n}: {e})");
                }
            }
            match run_activation(profile, Mode::default(), timeout) {
                Ok(()) => Ok(format!(
                    "rolled back to generation {previous} and re-activated it{notes}"
                )),
                Err(ScriptError::Missing(p)) => Ok(format!(
                    "rolled back the profile to generation {previous}, but it could not be re-activated: {} does \
                     not exist{notes}",
                    p.display()
                )),
                Err(e) => Err(format!(
                    "profile rolled back to generation {previous}, but re-activating it failed: {e}{notes}"
                )),
            }
        }
    }
}
