//! `rollout history`: each selected profile's generations (number, date, store path, the current
//! one marked) with the deploy record that made each. Text on stdout (JSON with `--json`).

use super::targets;
use crate::cli::DeployArgs;
use rollout_core::error::Error;
use rollout_core::exit;
use rollout_core::ops::status::history_rows;

pub fn run(args: DeployArgs) -> Result<u8, Error> {
    let asked = targets::ask(&args)?;
    let rows = history_rows(&asked.inspection.views);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows).unwrap_or_default());
    } else {
        for r in &rows {
            println!("{} {} ({})", r.node, r.profile, r.host);
            if let Some(e) = &r.error {
                println!("  {}: {e}", if r.reachable { "no answer" } else { "unreachable" });
                continue;
            }
            if r.generations.is_empty() {
                println!("  no generations (never deployed)");
            }
            for g in &r.generations {
                let mark = if g.current { "*" } else { " " };
                let record = match &g.record {
                    Some(d) => {
                        let by = if d.origin.by.is_empty() {
                            &d.seen_from
                        } else {
                            &d.origin.by
                        };
                        let rev = if d.origin.rev.is_empty() {
                            String::new()
                        } else {
                            format!(" rev {}", d.origin.rev)
                        };
                        format!("  {} by {by}: {}{rev}", d.origin.action, d.state.as_str())
                    }
                    None => String::new(),
                };
                println!("{mark} {:>4}  {}  {}{record}", g.number, g.time, g.path);
            }
        }
    }
    let code = if rows.iter().any(|r| r.error.is_some()) {
        exit::FAILED
    } else {
        exit::SUCCESS
    };
    Ok(code)
}
