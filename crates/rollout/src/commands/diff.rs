//! `rollout diff`: per selected profile, what deploying the flake would change compared with
//! what the target runs now — packages added, removed and changed, and the closure size. Builds
//! locally (as a deploy would) but changes nothing on any target.

use super::targets;
use crate::cli::DeployArgs;
use rollout_core::deploy::copy;
use rollout_core::error::Error;
use rollout_core::exec::Runner;
use rollout_core::exit;
use rollout_core::ops::diff::{diff_rows, DiffRow};

pub fn run(args: DeployArgs) -> Result<u8, Error> {
    let asked = targets::ask(&args)?;
    let rows = diff_rows(&asked.prepared, &asked.inspection, &Runner::new(asked.reporter.clone()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows).unwrap_or_default());
    } else {
        for r in &rows {
            print!("{}", text(r));
        }
    }
    Ok(if rows.iter().any(|r| r.error.is_some()) {
        exit::FAILED
    } else {
        exit::SUCCESS
    })
}

/// The diff of every row as text, as `diff` and `deploy -i` show it.
pub fn text_all(rows: &[DiffRow]) -> String {
    rows.iter().map(text).collect()
}

fn text(r: &DiffRow) -> String {
    let head = format!("{}.{} ({})", r.node, r.profile, r.host);
    let Some(d) = &r.diff else {
        return format!("{head}: unknown: {}\n", r.error.as_deref().unwrap_or(""));
    };
    if r.state == "unchanged" {
        return format!("{head}: unchanged\n");
    }
    let sign = if d.size_after >= d.size_before { "+" } else { "-" };
    let mut out = format!(
        "{head}: {}{} added, {} removed, {} changed; closure {} → {} ({sign}{})\n",
        if r.state == "new-profile" { "new profile; " } else { "" },
        d.added.len(),
        d.removed.len(),
        d.changed.len(),
        copy::human_bytes(d.size_before),
        copy::human_bytes(d.size_after),
        copy::human_bytes(d.size_after.abs_diff(d.size_before)),
    );
    for p in &d.added {
        out.push_str(&format!("  + {} {}\n", p.name, p.version));
    }
    for p in &d.removed {
        out.push_str(&format!("  - {} {}\n", p.name, p.version));
    }
    for c in &d.changed {
        out.push_str(&format!("  ~ {} {} → {}\n", c.name, c.old.join(", "), c.new.join(", ")));
    }
    out
}
