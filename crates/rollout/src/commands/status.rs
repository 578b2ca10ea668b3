//! `rollout status`: what every selected profile runs, whether it is what the flake would deploy
//! now, its last deploy and any deploy under way. A table on stdout (JSON with `--json`).

use super::targets;
use crate::cli::DeployArgs;
use rollout_core::error::Error;
use rollout_core::ops::status::{status_exit, status_rows, StatusRow};

pub fn run(args: DeployArgs) -> Result<u8, Error> {
    let asked = targets::ask(&args)?;
    let rows = status_rows(&asked.inspection.views);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows).unwrap_or_default());
    } else {
        print!("{}", table(&rows));
    }
    Ok(status_exit(&rows))
}

fn last_deploy(r: &StatusRow) -> String {
    match &r.last_deploy {
        None => "-".to_string(),
        Some(d) => {
            let by = if d.origin.by.is_empty() {
                &d.seen_from
            } else {
                &d.origin.by
            };
            let action = if d.origin.action.is_empty() {
                "deploy"
            } else {
                &d.origin.action
            };
            format!("{} {} ({action}, {by})", d.state.as_str(), d.time)
        }
    }
}

/// The human table: one line per profile, columns aligned.
pub fn table(rows: &[StatusRow]) -> String {
    let mut lines = vec![[
        "NODE".to_string(),
        "PROFILE".into(),
        "HOST".into(),
        "GEN".into(),
        "SINCE".into(),
        "STATE".into(),
        "LAST DEPLOY".into(),
    ]];
    for r in rows {
        let state = match (&r.error, r.sync) {
            (Some(e), _) => format!("{}: {e}", if r.reachable { "no answer" } else { "unreachable" }),
            (None, s) if !r.pending.is_empty() => {
                let p: Vec<String> = r.pending.iter().map(|p| format!("{} {}", p.id, p.state)).collect();
                format!("{}; under way: {}", s.word(), p.join(", "))
            }
            (None, s) => s.word().to_string(),
        };
        lines.push([
            r.node.clone(),
            r.profile.clone(),
            r.host.clone(),
            r.generation.map_or("-".into(), |g| g.to_string()),
            r.activated_at.clone().unwrap_or_else(|| "-".into()),
            state,
            last_deploy(r),
        ]);
    }
    align(&lines)
}

/// Columns padded to their widest cell (the last one left as it is).
pub fn align<const N: usize>(lines: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for l in lines {
        for (i, c) in l.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for l in lines {
        let mut line = String::new();
        for (i, c) in l.iter().enumerate() {
            if i + 1 == N {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
