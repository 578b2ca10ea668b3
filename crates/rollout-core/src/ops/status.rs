//! `status` and `history` as data: one row per profile, built from what the targets answered
//! (pure, so that the rows and the exit code are unit-tested without a fleet).

use super::inspect::{ProfileView, Sync};
use rollout_protocol::report::Record;
use serde::Serialize;

/// What `rollout status` shows for one profile (and prints as JSON with `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct StatusRow {
    pub node: String,
    pub profile: String,
    pub host: String,
    pub reachable: bool,
    /// The generation the profile points at.
    pub generation: Option<u64>,
    /// Its store path.
    pub path: Option<String>,
    /// When that generation was made.
    pub activated_at: Option<String>,
    /// Whether it runs what the flake would deploy now (`null`: not known).
    pub in_sync: Option<bool>,
    pub sync: Sync,
    /// What the flake would deploy now.
    pub wanted: String,
    /// The last deploy record of the profile.
    pub last_deploy: Option<Record>,
    /// Deploys under way (activating, awaiting confirmation): `id` and `state`.
    pub pending: Vec<Pending>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Pending {
    pub id: String,
    pub state: String,
}

pub fn status_rows(views: &[ProfileView]) -> Vec<StatusRow> {
    views
        .iter()
        .map(|v| {
            let sync = Sync::of(v);
            let (generation, path, activated_at, last_deploy, pending) = match &v.report {
                Ok(r) => {
                    let g = r.current_generation();
                    (
                        r.current,
                        g.map(|g| g.path.display().to_string()),
                        g.map(|g| g.time.clone()),
                        r.records.last().cloned(),
                        r.pending
                            .iter()
                            .map(|s| Pending {
                                id: s.id.clone(),
                                state: s.state.as_str().to_string(),
                            })
                            .collect(),
                    )
                }
                Err(_) => (None, None, None, None, Vec::new()),
            };
            StatusRow {
                node: v.node.clone(),
                profile: v.profile.clone(),
                host: v.host.clone(),
                reachable: v.reachable,
                generation,
                path,
                activated_at,
                in_sync: (sync != Sync::Unknown).then_some(sync == Sync::InSync),
                sync,
                wanted: v.wanted.clone(),
                last_deploy,
                pending,
                error: v.report.as_ref().err().cloned(),
            }
        })
        .collect()
}

/// 0: every profile reached and in sync; [`crate::exit::FAILED`]: a host or agent did not answer;
/// [`crate::exit::DRIFTED`]: all answered, and some profile differs from the flake.
pub fn status_exit(rows: &[StatusRow]) -> u8 {
    if rows.iter().any(|r| r.error.is_some()) {
        crate::exit::FAILED
    } else if rows.iter().any(|r| r.sync != Sync::InSync) {
        crate::exit::DRIFTED
    } else {
        crate::exit::SUCCESS
    }
}

/// What `rollout history` shows for one profile.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryRow {
    pub node: String,
    pub profile: String,
    pub host: String,
    pub reachable: bool,
    pub current: Option<u64>,
    /// Oldest first.
    pub generations: Vec<GenerationRow>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GenerationRow {
    pub number: u64,
    pub path: String,
    pub time: String,
    pub current: bool,
    /// The deploy that made it, when the agent kept a record of it.
    pub record: Option<Record>,
}

pub fn history_rows(views: &[ProfileView]) -> Vec<HistoryRow> {
    views
        .iter()
        .map(|v| {
            let (current, generations) = match &v.report {
                Ok(r) => (
                    r.current,
                    r.generations
                        .iter()
                        .map(|g| GenerationRow {
                            number: g.number,
                            path: g.path.display().to_string(),
                            time: g.time.clone(),
                            current: r.current == Some(g.number),
                            record: r.record_of(g.number).cloned(),
                        })
                        .collect(),
                ),
                Err(_) => (None, Vec::new()),
            };
            HistoryRow {
                node: v.node.clone(),
                profile: v.profile.clone(),
                host: v.host.clone(),
                reachable: v.reachable,
                current,
                generations,
                error: v.report.as_ref().err().cloned(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollout_protocol::report::{Generation, ProfileReport};

    fn view(current: Option<&str>, wanted: &str) -> ProfileView {
        let report = ProfileReport {
            current: current.map(|_| 1),
            generations: current
                .map(|p| Generation {
                    number: 1,
                    path: p.into(),
                    time: "2026-12-05T10:00:00Z".into(),
                })
                .into_iter()
                .collect(),
            ..Default::default()
        };
        ProfileView {
            node: "web".into(),
            profile: "system".into(),
            host: "deploy@web".into(),
            wanted: wanted.into(),
            report: Ok(report),
            reachable: true,
        }
    }

    #[test]
    fn status_exits_0_in_sync_5_drifted_3_unreachable() {
        let synced = view(Some("/nix/store/a"), "/nix/store/a");
        let drifted = view(Some("/nix/store/a"), "/nix/store/b");
        let never = view(None, "/nix/store/b");
        let mut down = view(None, "/nix/store/b");
        down.report = Err("ssh: connect to host web port 22: Connection refused".into());
        down.reachable = false;
        assert_eq!(status_exit(&status_rows(std::slice::from_ref(&synced))), 0);
        assert_eq!(
            status_exit(&status_rows(&[synced.clone(), drifted])),
            crate::exit::DRIFTED
        );
        assert_eq!(
            status_exit(&status_rows(&[synced.clone(), never])),
            crate::exit::DRIFTED
        );
        let rows = status_rows(&[synced, down]);
        assert_eq!(status_exit(&rows), crate::exit::FAILED);
        assert_eq!(rows[1].in_sync, None);
        assert!(!rows[1].reachable);
        let json = serde_json::to_value(&rows[0]).unwrap();
        for key in ["node", "profile", "generation", "path", "in_sync", "reachable"] {
            assert!(json.get(key).is_some(), "{key} in {json}");
        }
    }
}
