//! `rollout-bench --eval-cost N`: a fleet whose nodes cost real evaluation (each node's profile
//! forces a fold over a large `genList`, about a second of evaluation), deployed with
//! `--eval-jobs 1` (one evaluator process for every node, as before) and with the default
//! (parallel, streamed), alternating run by run with fresh content; plus the same nodes
//! evaluated by one plain `nix eval`. Reports wall medians, the evaluation span and per-node
//! split from the `--json` events, when the first copy started, and peak memory.

use crate::{epoch, invoke, median, Args};
use rollout_lab::profiles::fresh_salt;
use rollout_lab::Fleet;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// The flake: `n` nodes `host1..hostN`, each with a `system` profile whose derivation name holds
/// the result of a fold over `size` elements repeated `rounds` times (forced when the path is).
fn write_flake(dir: &Path, fleet: &Fleet, n: usize, salt: &str, size: u64, rounds: u64) -> anyhow::Result<()> {
    let system = rollout_lab::testing::current_system();
    let nodes: String = (1..=n)
        .map(|i| {
            format!(
                r#"    host{i} = {{ hostname = "host{i}"; profiles.system = {{ user = "root"; path = prof "n{i}-{salt}-${{toString (heavy {i})}}"; }}; }};
"#
            )
        })
        .collect();
    let text = format!(
        r#"{{
  outputs = {{ self }}: let
    heavy = i: let l = builtins.genList (x: x * i) {size}; in
      builtins.foldl' (acc: k: acc + builtins.foldl' (a: b: a + b * k) 0 l) 0 (builtins.genList (k: k + 1) {rounds});
    prof = name: builtins.derivation {{
      inherit name;
      system = "{system}";
      builder = "/bin/sh";
      PATH = "/usr/bin:/bin";
      args = [ "-c" "mkdir $out; printf '#!/bin/sh\nexit 0\n' > $out/deploy-rs-activate; chmod +x $out/deploy-rs-activate" ];
    }};
  in {{
    deploy = {{
      sshUser = "deploy";
      sshOpts = [ "-F" "{cfg}" ];
      nodes = {{
{nodes}      }};
    }};
  }};
}}
"#,
        cfg = fleet.ssh_config().display()
    );
    std::fs::write(dir.join("flake.nix"), text)?;
    Ok(())
}

/// What one deploy showed.
#[derive(Debug, Clone, serde::Serialize)]
struct EvalRun {
    mode: &'static str,
    ok: bool,
    wall_s: f64,
    /// First node's evaluation start to last node's evaluation end, from the events.
    eval_span_s: f64,
    /// Median of the nodes' own evaluation times.
    node_eval_s: f64,
    /// From the spawn to the first node's copy.
    first_copy_s: f64,
    /// From the spawn to the last node's evaluation end.
    last_eval_s: f64,
    rss_tree_mib: f64,
}

/// The nodes' events of `phase` in `state`; the run's own when no node has any (a rollout from
/// before per-node evaluation reports one run-wide `evaluate`).
fn phase_times(events: &[Value], phase: &str, state: &str) -> Vec<(String, f64)> {
    let of = |node_level: bool| -> Vec<(String, f64)> {
        events
            .iter()
            .filter(|e| e["event"] == "phase" && e["phase"] == phase && e["state"] == state)
            .filter(|e| e["node"].is_string() == node_level)
            .map(|e| {
                (
                    e["node"].as_str().unwrap_or("").to_string(),
                    e["time"].as_f64().unwrap_or(0.0),
                )
            })
            .collect()
    };
    let nodes = of(true);
    if nodes.is_empty() {
        of(false)
    } else {
        nodes
    }
}

fn one_deploy(args: &Args, rollout: &Path, dir: &Path, mode: &'static str, extra: &[&str]) -> anyhow::Result<EvalRun> {
    let o = invoke(args, rollout, dir, extra)?;
    let events: Vec<Value> = o.stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let starts = phase_times(&events, "evaluate", "started");
    let ends = phase_times(&events, "evaluate", "succeeded");
    let per_node: Vec<f64> = ends
        .iter()
        .filter_map(|(n, t)| starts.iter().find(|(m, _)| m == n).map(|(_, s)| t - s))
        .collect();
    let min = |v: &[(String, f64)]| v.iter().map(|x| x.1).fold(f64::INFINITY, f64::min);
    let max = |v: &[(String, f64)]| v.iter().map(|x| x.1).fold(0.0, f64::max);
    let copies = phase_times(&events, "copy", "started");
    let ok = o.status == 0 && !o.timed_out;
    if !ok {
        eprintln!(
            "eval-cost: {mode} run failed:\n{}",
            o.stderr.lines().rev().take(15).collect::<Vec<_>>().join("\n")
        );
    }
    Ok(EvalRun {
        mode,
        ok,
        wall_s: o.wall_s,
        eval_span_s: max(&ends) - min(&starts),
        node_eval_s: median(&per_node).unwrap_or(0.0),
        first_copy_s: min(&copies) - o.t0,
        last_eval_s: max(&ends) - o.t0,
        rss_tree_mib: o.rss_tree_kib as f64 / 1024.0,
    })
}

/// The same nodes' paths, evaluated by one `nix eval` (no deploy): wall and its own peak RSS
/// (`wait4` on it).
fn one_process_eval(dir: &Path) -> anyhow::Result<(f64, f64)> {
    let start = Instant::now();
    let child = Command::new("nix")
        .args([
            "--extra-experimental-features",
            "nix-command flakes",
            "eval",
            "--option",
            "eval-cache",
            "false",
            "--json",
            ".#deploy",
            "--apply",
            "d: map (n: d.nodes.${n}.profiles.system.path.drvPath) (builtins.attrNames d.nodes)",
        ])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id();
    // Reaped here with wait4 (for its rusage), never by the std Child.
    std::mem::forget(child);
    let mut status: libc::c_int = 0;
    // SAFETY: a zeroed rusage is a valid out-parameter; pid is our own unreaped child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut ru) };
    let wall = start.elapsed().as_secs_f64();
    if r != pid as libc::pid_t || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        anyhow::bail!("nix eval of the eval-cost flake failed (status {status})");
    }
    Ok((wall, ru.ru_maxrss as f64 / 1024.0))
}

/// The eval-cost benchmark; prints its table and returns the runs as JSON.
pub fn run(args: &Args, rollout: &Path) -> anyhow::Result<Value> {
    let n = args.eval_cost;
    let fleet = Fleet::temp(n)?;
    let dir = tempfile::tempdir()?;
    let (size, rounds) = (args.eval_size, args.eval_rounds);
    let mut runs: Vec<EvalRun> = Vec::new();
    let mut single: Vec<f64> = Vec::new();
    let t0 = epoch();
    for i in 0..args.runs {
        // One plain evaluation first (its peak is the largest child so far, so it goes first).
        write_flake(dir.path(), &fleet, n, &fresh_salt(&format!("e{i}")), size, rounds)?;
        let (wall, rss) = one_process_eval(dir.path())?;
        single.push(wall);
        if i == 0 {
            eprintln!("eval-cost: one `nix eval` of {n} nodes: {wall:.2} s, peak RSS {rss:.0} MiB");
        }
        let mut modes: Vec<(&'static str, &Path, &[&str])> = vec![
            ("one evaluator", rollout, &["--eval-jobs", "1"][..]),
            ("parallel", rollout, &[][..]),
        ];
        if let Some(b) = &args.eval_baseline {
            modes.push(("baseline", b.as_path(), &[][..]));
        }
        for (mode, binary, extra) in modes {
            write_flake(dir.path(), &fleet, n, &fresh_salt(&format!("r{i}")), size, rounds)?;
            let r = one_deploy(args, binary, dir.path(), mode, extra)?;
            eprintln!(
                "eval-cost: run {i} {mode}: {:.2} s (evaluation {:.2} s, first copy at {:.2} s)",
                r.wall_s, r.eval_span_s, r.first_copy_s
            );
            runs.push(r);
        }
    }
    let med = |mode: &str, f: fn(&EvalRun) -> f64| {
        let v: Vec<f64> = runs.iter().filter(|r| r.mode == mode && r.ok).map(f).collect();
        median(&v).unwrap_or(f64::NAN)
    };
    println!();
    println!(
        "Evaluation-cost fleet: {n} nodes, each forcing a fold over {size} elements x {rounds}; {} runs, medians",
        args.runs
    );
    println!(
        "{:<16} {:>8} {:>10} {:>10} {:>11} {:>10} {:>9}",
        "mode", "wall", "eval span", "node eval", "first copy", "last eval", "peak RSS"
    );
    let mut shown = vec!["one evaluator", "parallel"];
    if args.eval_baseline.is_some() {
        shown.push("baseline");
    }
    for mode in shown {
        println!(
            "{:<16} {:>7.2}s {:>9.2}s {:>9.2}s {:>10.2}s {:>9.2}s {:>6.0} MiB",
            mode,
            med(mode, |r| r.wall_s),
            med(mode, |r| r.eval_span_s),
            med(mode, |r| r.node_eval_s),
            med(mode, |r| r.first_copy_s),
            med(mode, |r| r.last_eval_s),
            med(mode, |r| r.rss_tree_mib),
        );
    }
    let single_wall = median(&single).unwrap_or(f64::NAN);
    println!(
        "{:<16} {:>7.2}s   (evaluation only, no deploy)",
        "one nix eval", single_wall
    );
    let ratio = med("parallel", |r| r.wall_s) / med("one evaluator", |r| r.wall_s);
    let eval_ratio = med("parallel", |r| r.eval_span_s) / single_wall;
    println!(
        "parallel / one evaluator (deploy wall): {ratio:.2}x  (target <= 0.6x: {})",
        if ratio <= 0.6 { "PASS" } else { "FAIL" }
    );
    println!("parallel evaluation span / one nix eval: {eval_ratio:.2}x");
    if let Some(b) = &args.eval_baseline {
        let base = med("baseline", |r| r.wall_s);
        println!(
            "parallel / baseline ({}) (deploy wall): {:.2}x",
            b.display(),
            med("parallel", |r| r.wall_s) / base
        );
    }
    println!("RSS: wait4 ru_maxrss of rollout = the largest of rollout and the processes it reaped (its evaluators).");
    Ok(json!({
        "nodes": n, "size": size, "rounds": rounds, "started": t0,
        "runs": runs, "one_nix_eval_s": single, "ratio_parallel_vs_one_evaluator": ratio,
    }))
}
