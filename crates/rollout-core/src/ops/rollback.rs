//! `rollback`: where each selected profile goes back to, decided from what its target holds. Every
//! profile is checked before anything runs; the rollback itself is a deploy of that generation's
//! store path (already on the target) with the same guarantees: auto rollback, the confirmation
//! over a fresh login, the fleet failure policy.

use super::inspect::ProfileView;
use crate::error::Error;
use crate::plan::Plan;
use std::collections::HashMap;

/// The plan of a rollback: each deployment's closure replaced by the generation it goes back
/// to, and per (node, profile) what the deploy record will say.
pub struct RollbackPlan {
    pub plan: Plan,
    pub actions: HashMap<(String, String), String>,
    /// (node, profile, from generation, to generation), for the output.
    pub moves: Vec<(String, String, u64, u64)>,
}

pub fn rollback_plan(plan: &Plan, views: &[ProfileView], to: Option<u64>) -> Result<RollbackPlan, Error> {
    let mut problems = Vec::new();
    let mut out = RollbackPlan {
        plan: plan.clone(),
        actions: HashMap::new(),
        moves: Vec::new(),
    };
    for d in &mut out.plan.deployments {
        let at = format!("node `{}`, profile `{}`", d.node, d.profile);
        let Some(v) = views.iter().find(|v| v.node == d.node && v.profile == d.profile) else {
            problems.push(format!("{at}: its target was not asked"));
            continue;
        };
        let r = match &v.report {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("{at}: cannot tell what {} holds: {e}", v.host));
                continue;
            }
        };
        let Some(current) = r.current else {
            problems.push(format!(
                "{at}: the profile does not exist on {}; nothing to roll back",
                v.host
            ));
            continue;
        };
        let target = match to {
            Some(n) if n == current => {
                problems.push(format!("{at}: {} is at generation {n} already", v.host));
                continue;
            }
            Some(n) => r.generations.iter().find(|g| g.number == n),
            None => r.previous_generation(),
        };
        let Some(g) = target else {
            let existing: Vec<String> = r.generations.iter().map(|g| g.number.to_string()).collect();
            problems.push(match to {
                Some(n) => format!(
                    "{at}: {} has no generation {n} (it has {}; current {current})",
                    v.host,
                    existing.join(", ")
                ),
                None => format!(
                    "{at}: nothing to roll back to on {}: generation {current} is the oldest one left",
                    v.host
                ),
            });
            continue;
        };
        d.closure = g.path.display().to_string();
        out.actions.insert(
            (d.node.clone(), d.profile.clone()),
            format!("rollback from generation {current} to generation {}", g.number),
        );
        out.moves.push((d.node.clone(), d.profile.clone(), current, g.number));
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(Error::BadInput(format!(
            "rollback refused, nothing was changed:\n  {}",
            problems.join("\n  ")
        )))
    }
}
