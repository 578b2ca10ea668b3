//! The latency mode (`--latency-ms D`): fresh and unchanged deploys of small fleets, each once
//! directly and once with every host's SSH port behind a relay that delays each chunk by D per
//! direction, run by run in the same run; round trips on the critical path = (wall with the delay
//! − wall without) / 2D, for the whole deploy and per node phase (from `--json` events).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rollout_lab::profiles::fresh_salt;
use rollout_lab::Fleet;
use serde_json::{json, Value};

use super::{date_utc, f2, kex_in_use, median, one_run, write_flake, Args, RunResult, NODE_PHASES};

/// The four kinds of run, in the order each round runs them.
const KINDS: [(&str, bool); 4] = [
    ("fresh", false),
    ("noop", false),
    ("fresh-delayed", true),
    ("noop-delayed", true),
];

/// One fleet size: every kind `args.runs` times, interleaved so that all kinds see the same
/// machine state over the run.
fn measure(args: &Args, rollout: &Path, n: usize, delay: Duration) -> anyhow::Result<Vec<RunResult>> {
    let fleet = Fleet::temp(n)?;
    let delayed = fleet.delayed_ssh(delay)?;
    let mut runs = Vec::new();
    for i in 1..=args.runs {
        for through_relay in [false, true] {
            let config = match through_relay {
                true => delayed.ssh_config().to_path_buf(),
                false => fleet.ssh_config(),
            };
            let dir = tempfile::Builder::new().prefix("rollout-bench-latency-").tempdir()?;
            write_flake(
                dir.path(),
                &config,
                n,
                &fresh_salt("bench-latency"),
                args.extra_ssh_opts.as_deref(),
            )?;
            // The fresh deploy, then the identical flake again: the unchanged redeploy.
            for (kind, relay) in KINDS {
                if relay == through_relay {
                    runs.push(one_run(args, rollout, &fleet, dir.path(), n, kind, i)?);
                }
            }
        }
    }
    Ok(runs)
}

/// Round trips per host for one kind at one size: total and per phase.
struct Trips {
    hosts: usize,
    kind: &'static str,
    direct_s: Option<f64>,
    delayed_s: Option<f64>,
    /// (with − without) / 2D of the wall time, eval+build, each node phase, the tail.
    trips: BTreeMap<String, f64>,
    runs_ok: String,
}

/// One figure of a run (seconds), by name.
type Figure = Box<dyn Fn(&RunResult) -> Option<f64>>;

fn trips(n: usize, kind: &'static str, runs: &[RunResult], delay_s: f64) -> Trips {
    let of = |k: &str| -> Vec<&RunResult> { runs.iter().filter(|r| r.kind == k && r.ok).collect() };
    let direct = of(kind);
    let delayed_kind = if kind == "fresh" {
        "fresh-delayed"
    } else {
        "noop-delayed"
    };
    let delayed = of(delayed_kind);
    let med = |rs: &[&RunResult], f: &dyn Fn(&RunResult) -> Option<f64>| {
        median(&rs.iter().filter_map(|r| f(r)).collect::<Vec<_>>())
    };
    let mut figures: Vec<(String, Figure)> = vec![
        ("wall".into(), Box::new(|r: &RunResult| Some(r.wall_s))),
        ("eval+build".into(), Box::new(|r: &RunResult| r.eval_build_s)),
        ("tail".into(), Box::new(|r: &RunResult| r.tail_s)),
    ];
    for p in NODE_PHASES {
        figures.push((
            p.into(),
            Box::new(move |r: &RunResult| r.phase_median_s.get(p).copied()),
        ));
    }
    let mut t = BTreeMap::new();
    for (name, f) in &figures {
        // A phase that did not run (no copy or confirm in an unchanged deploy) costs nothing.
        let d = med(&delayed, f).unwrap_or(0.0);
        let w = med(&direct, f).unwrap_or(0.0);
        t.insert(name.clone(), (d - w) / (2.0 * delay_s));
    }
    let total = |k: &str| runs.iter().filter(|r| r.kind == k).count();
    Trips {
        hosts: n,
        kind,
        direct_s: med(&direct, &|r| Some(r.wall_s)),
        delayed_s: med(&delayed, &|r| Some(r.wall_s)),
        trips: t,
        runs_ok: format!(
            "{}/{} + {}/{}",
            direct.len(),
            total(kind),
            delayed.len(),
            total(delayed_kind)
        ),
    }
}

fn print(rows: &[Trips], ms: u64, kex: Option<&str>) {
    println!(
        "rollout-bench {}: latency mode, {ms} ms per direction ({} ms round trip), revision {}, ssh key exchange {}",
        date_utc(),
        2 * ms,
        std::env::var("ROLLOUT_BENCH_REV").unwrap_or_else(|_| "unknown".into()),
        kex.unwrap_or("unknown"),
    );
    println!(
        "| hosts | deploy    | wall direct | wall delayed | round trips | connect | copy | activate | confirm | eval+build | tail | runs ok |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let g = |k: &str| r.trips.get(k).map_or("-".into(), |x| format!("{x:.1}"));
        println!(
            "| {} | {} | {} s | {} s | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.hosts,
            if r.kind == "fresh" { "fresh" } else { "unchanged" },
            f2(r.direct_s),
            f2(r.delayed_s),
            g("wall"),
            g("connect"),
            g("copy"),
            g("activate"),
            g("confirm"),
            g("eval+build"),
            g("tail"),
            r.runs_ok,
        );
    }
    println!("round trips = (median wall with the relay − median wall without) / (2 × {ms} ms), on the critical");
    println!("path of the slowest host; per phase the same over the median node's phase duration (--json events).");
    println!("targets (issue 13): fresh <= 12, unchanged <= 4 round trips per host.");
}

/// Run the latency mode and print (and with `--out`, write) its figures.
pub fn run(args: &Args, rollout: &Path, ms: u64, background: f64) -> anyhow::Result<()> {
    if ms == 0 || args.latency_sizes.is_empty() || args.latency_sizes.contains(&0) {
        anyhow::bail!("--latency-ms needs a positive delay and --latency-sizes positive host counts");
    }
    let delay = Duration::from_millis(ms);
    let mut kex = None;
    let mut rows = Vec::new();
    let mut all = Vec::new();
    for &n in &args.latency_sizes {
        if kex.is_none() {
            kex = kex_in_use(&Fleet::temp(1)?);
        }
        let runs = measure(args, rollout, n, delay)?;
        rows.push(trips(n, "fresh", &runs, delay.as_secs_f64()));
        rows.push(trips(n, "noop", &runs, delay.as_secs_f64()));
        all.extend(runs);
    }
    print(&rows, ms, kex.as_deref());
    if background > 0.15 {
        println!(
            "WARNING: the machine was {:.0} % busy before the benchmark",
            background * 100.0
        );
    }
    if let Some(p) = &args.out {
        let v = json!({
            "mode": "latency",
            "latency_ms": ms,
            "revision": std::env::var("ROLLOUT_BENCH_REV").ok(),
            "kex": kex,
            "date": date_utc(),
            "background_cpu_util": background,
            "round_trips": rows.iter().map(|r| json!({
                "hosts": r.hosts, "kind": r.kind, "direct_wall_s": r.direct_s,
                "delayed_wall_s": r.delayed_s, "round_trips": r.trips,
            })).collect::<Vec<Value>>(),
            "runs": all,
        });
        std::fs::write(p, serde_json::to_string_pretty(&v)? + "\n")?;
        eprintln!("rollout-bench: results written to {}", p.display());
    }
    Ok(())
}
