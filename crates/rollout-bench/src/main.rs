//! `rollout-bench`: the fleet benchmark of rollout (run by hand as root, never by the test suite).
//!
//! For every fleet size N it starts N simulated hosts ([`Fleet::temp`]), writes a flake with one
//! `system` profile per host and runs the release `rollout` binary several times, each time with new
//! content (a fresh salt, so every run builds and copies new closures). Per run it records the wall
//! time, a per-phase split read from `rollout --json`, the SSH authentications per host (sshd logs)
//! and the deployer's peak memory. It also times no-op redeploys (the identical flake again) and
//! checks the project's targets. Timing targets are reported as PASS/FAIL, never as an exit code.
//! See `bench/README.md`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod eval_cost;
mod latency;

use clap::Parser;
use rollout_lab::profiles::{fresh_salt, FlakeBuilder, Profile};
use rollout_lab::Fleet;
use serde::Serialize;
use serde_json::{json, Value};

/// Per-node phases, in pipeline order.
const NODE_PHASES: [&str; 4] = ["connect", "copy", "activate", "confirm"];

#[derive(Parser, Debug, Clone)]
#[command(
    name = "rollout-bench",
    about = "Fleet benchmark of rollout on simulated hosts (needs root; minutes)"
)]
struct Args {
    /// Fleet sizes (comma-separated)
    #[arg(long, value_delimiter = ',', default_value = "1,5,10,20")]
    sizes: Vec<usize>,
    /// Deploys with new content per fleet size (the median is reported)
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Hosts of the no-op redeploy measurement (0 = skip it)
    #[arg(long, default_value_t = 10)]
    noop_hosts: usize,
    /// No-op redeploys (the median is reported)
    #[arg(long, default_value_t = 3)]
    noop_runs: usize,
    /// The rollout binary (default: `rollout` next to this binary)
    #[arg(long)]
    rollout: Option<PathBuf>,
    /// Pass `--parallel N` to rollout (default: rollout's own default)
    #[arg(long)]
    parallel: Option<usize>,
    /// `--confirm-timeout` passed to rollout
    #[arg(long, default_value_t = 30)]
    confirm_timeout: u64,
    /// Kill a rollout run (by its pid) after this many seconds
    #[arg(long, default_value_t = 600)]
    run_timeout: u64,
    /// Extra words appended to the flake's `sshOpts` (e.g. `-o KexAlgorithms=curve25519-sha256`); what-if runs
    #[arg(long, allow_hyphen_values = true)]
    extra_ssh_opts: Option<String>,
    /// Write the results as JSON to this file
    #[arg(long)]
    out: Option<PathBuf>,
    /// Keep each run's JSON events and stderr in this directory
    #[arg(long)]
    keep_logs: Option<PathBuf>,
    /// A peer deploy command run on the same fleet in the same run, alternating with rollout run
    /// by run, each with fresh content; `{flake}` is replaced by the flake directory. Example:
    /// `--compare 'deploy --skip-checks {flake}'` for a deploy-rs binary. Without it there is no peer column.
    #[arg(long, value_name = "CMD")]
    compare: Option<String>,
    /// Latency mode: put every host's SSH port behind a relay delaying each chunk by this many ms
    /// per direction, and report round trips per host (fresh and unchanged deploys, with and
    /// without the relay, in the same run) instead of the size table
    #[arg(long, value_name = "MS")]
    latency_ms: Option<u64>,
    /// Fleet sizes of the latency mode (comma-separated)
    #[arg(long, value_delimiter = ',', default_value = "1,5")]
    latency_sizes: Vec<usize>,
    /// Run the evaluation-cost benchmark instead, on a fleet of this many nodes (0 = the fleet benchmark)
    #[arg(long, default_value_t = 0)]
    eval_cost: usize,
    /// Eval-cost: elements of each node's list
    #[arg(long, default_value_t = 300_000)]
    eval_size: u64,
    /// Eval-cost: folds over the list per node
    #[arg(long, default_value_t = 30)]
    eval_rounds: u64,
    /// Eval-cost: another rollout binary (e.g. a build from before streaming evaluation) deployed the
    /// same way with its defaults, in the same runs
    #[arg(long, value_name = "PATH")]
    eval_baseline: Option<PathBuf>,
}

/// One run of the peer command given with `--compare`.
#[derive(Debug, Clone, Serialize)]
struct PeerRun {
    hosts: usize,
    kind: &'static str,
    index: usize,
    wall_s: f64,
    ok: bool,
}

/// The `--compare` command as argv words with `{flake}` replaced.
fn peer_argv(template: &str, flake: &Path) -> anyhow::Result<Vec<String>> {
    let words =
        shlex::split(template).ok_or_else(|| anyhow::anyhow!("--compare: cannot split `{template}` into words"))?;
    if !words.iter().any(|w| w.contains("{flake}")) {
        anyhow::bail!("--compare: the command must name the flake as {{flake}}, e.g. 'deploy --skip-checks {{flake}}'");
    }
    Ok(words
        .iter()
        .map(|w| w.replace("{flake}", &flake.display().to_string()))
        .collect())
}

/// Runs the peer once, bounded by `--run-timeout`; its wall time and whether it exited 0.
fn run_peer(
    args: &Args,
    template: &str,
    flake: &Path,
    n: usize,
    kind: &'static str,
    index: usize,
) -> anyhow::Result<PeerRun> {
    let argv = peer_argv(template, flake)?;
    let (out, err) = match &args.keep_logs {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            (
                Stdio::from(File::create(dir.join(format!("n{n}-peer-{kind}{index}.stdout")))?),
                Stdio::from(File::create(dir.join(format!("n{n}-peer-{kind}{index}.stderr")))?),
            )
        }
        None => (Stdio::null(), Stdio::null()),
    };
    let start = Instant::now();
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()?;
    let deadline = start + Duration::from_secs(args.run_timeout);
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break Some(st);
        }
        if Instant::now() > deadline {
            child.kill()?;
            child.wait()?;
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let r = PeerRun {
        hosts: n,
        kind,
        index,
        wall_s: start.elapsed().as_secs_f64(),
        ok: status.is_some_and(|s| s.success()),
    };
    eprintln!(
        "rollout-bench: N={n} peer {kind} run {index}: {:.2} s{}",
        r.wall_s,
        if r.ok { "" } else { " FAILED" }
    );
    Ok(r)
}

/// The key exchange the fleet's sshd and our ssh agree on (`ssh -v` says it), printed beside the
/// figures: it is most of the per-login CPU cost on this kind of machine.
fn kex_in_use(fleet: &Fleet) -> Option<String> {
    let o = Command::new("ssh")
        .arg("-v")
        .arg("-F")
        .arg(fleet.ssh_config())
        .args(["deploy@host1", "true"])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .find_map(|l| l.split_once("kex: algorithm: ").map(|(_, a)| a.trim().to_string()))
}

/// Today's date and time in UTC, from `date` (the bench's one use of the time of day).
fn date_utc() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// `model name` of the first CPU, for the report header.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// One rollout invocation.
#[derive(Debug, Clone, Serialize)]
struct RunResult {
    hosts: usize,
    /// "fresh" (new content) or "noop" (the identical flake again).
    kind: &'static str,
    index: usize,
    exit_code: Option<i32>,
    ok: bool,
    /// Profiles whose outcome event says `deployed`.
    deployed: usize,
    wall_s: f64,
    /// From spawning rollout to the first `connect` started: evaluation, build, agent staging.
    eval_build_s: Option<f64>,
    /// Run-level phases (no node): evaluate, build, check… duration in seconds.
    run_phases: BTreeMap<String, f64>,
    /// Per node phase: median over nodes of its duration (s).
    phase_median_s: BTreeMap<String, f64>,
    /// Per node phase: max over nodes of its duration (s).
    phase_max_s: BTreeMap<String, f64>,
    /// Median over nodes of first connect started → last confirm/outcome (s).
    node_span_median_s: Option<f64>,
    /// Last node's connect start minus first node's connect start (s): how staggered nodes start.
    connect_start_spread_s: Option<f64>,
    /// From the last event to the exit of rollout (s): closing connections, clean-up.
    tail_s: Option<f64>,
    auths_per_host_mean: f64,
    auths_per_host_max: usize,
    /// Peak RSS of the rollout process itself (VmHWM, sampled every 5 ms), KiB.
    rss_self_kib: u64,
    /// `ru_maxrss` from `wait4`: max over rollout and every descendant it reaped (nix, ssh), KiB.
    rss_tree_kib: u64,
    /// Most open file descriptors of the rollout process (/proc/PID/fd, sampled every 100 ms).
    fds_max: u64,
    /// CPU seconds (user+sys) of rollout and the descendants it reaped: the deployer side.
    deployer_cpu_s: f64,
    /// Busy CPU seconds of the whole machine during the run (/proc/stat): deployer + simulated hosts.
    machine_cpu_s: f64,
    /// machine_cpu_s / (wall × CPUs): 1.0 means every core was busy for the whole run.
    machine_cpu_util: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
struct SizeSummary {
    hosts: usize,
    runs_ok: usize,
    runs: usize,
    median_wall_s: Option<f64>,
    ratio_to_1: Option<f64>,
    /// Median wall time of the `--compare` peer on the same fleet, and peer ÷ rollout.
    peer_median_wall_s: Option<f64>,
    peer_ratio: Option<f64>,
    median_eval_build_s: Option<f64>,
    /// Median over runs of the per-run median over nodes.
    phase_median_s: BTreeMap<String, f64>,
    median_tail_s: Option<f64>,
    median_connect_start_spread_s: Option<f64>,
    auths_per_host_mean: f64,
    auths_per_host_max: usize,
    rss_self_kib_max: u64,
    rss_tree_kib_max: u64,
    fds_max: u64,
    median_deployer_cpu_s: Option<f64>,
    median_machine_cpu_s: Option<f64>,
    median_machine_cpu_util: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
struct Target {
    name: String,
    value: Option<f64>,
    limit: String,
    /// "PASS", "FAIL" or "SKIP" (not measured).
    result: &'static str,
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

fn epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn hosts(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("host{i}")).collect()
}

/// A flake with one `system` profile (user root) per host, all with the same salt.
/// `ssh_config` is the fleet's own or a [`rollout_lab::relay::DelayedSsh`]'s (latency mode).
fn write_flake(dir: &Path, ssh_config: &Path, n: usize, salt: &str, extra: Option<&str>) -> anyhow::Result<()> {
    let mut f = FlakeBuilder::new(dir);
    f.top_setting("sshUser", json!("deploy"));
    let mut opts = vec!["-F".to_string(), ssh_config.display().to_string()];
    opts.extend(extra.unwrap_or("").split_whitespace().map(str::to_string));
    f.top_setting("sshOpts", json!(opts));
    for h in hosts(n) {
        f.node(&h, &h).profile(
            "system",
            Profile::marker("system").salt(salt).setting("user", json!("root")),
        );
    }
    f.write()?;
    Ok(())
}

struct Outcome {
    status: libc::c_int,
    wall_s: f64,
    t0: f64,
    t_end: f64,
    stdout: String,
    stderr: String,
    rss_self_kib: u64,
    rss_tree_kib: u64,
    fds_max: u64,
    deployer_cpu_s: f64,
    machine_cpu_s: f64,
    timed_out: bool,
}

/// Busy CPU seconds of the machine so far (all CPUs, from the first line of /proc/stat).
fn machine_busy_s() -> f64 {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<f64> = s
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user)
    let busy: f64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| v.get(i)).sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    busy / hz
}

fn cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Spawn rollout, sample its VmHWM, wait until it has exited (without reaping), then reap it with
/// `wait4` to read `ru_maxrss`.
fn invoke(args: &Args, rollout: &Path, flake: &Path, extra: &[&str]) -> anyhow::Result<Outcome> {
    let out_f = tempfile::tempfile()?;
    let err_f = tempfile::tempfile()?;
    let mut cmd = Command::new(rollout);
    cmd.arg(flake.display().to_string())
        .args(["-s", "--json", "--confirm-timeout"])
        .arg(args.confirm_timeout.to_string());
    if let Some(p) = args.parallel {
        cmd.arg("--parallel").arg(p.to_string());
    }
    cmd.args(extra);
    cmd.env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::from(out_f.try_clone()?))
        .stderr(Stdio::from(err_f.try_clone()?));
    let busy0 = machine_busy_s();
    let t0 = epoch();
    let start = Instant::now();
    let child = cmd.spawn()?;
    let pid = child.id();
    // The std Child is never waited on: we reap it ourselves with wait4 below.
    std::mem::forget(child);

    let done = Arc::new(AtomicBool::new(false));
    let hwm = Arc::new(AtomicU64::new(0));
    let fds = Arc::new(AtomicU64::new(0));
    let timed_out = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (done, hwm, fds, timed_out) = (done.clone(), hwm.clone(), fds.clone(), timed_out.clone());
        let deadline = start + Duration::from_secs(args.run_timeout);
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !done.load(Ordering::SeqCst) {
                if let Some(k) = vm_hwm_kib(pid) {
                    hwm.fetch_max(k, Ordering::SeqCst);
                }
                if i.is_multiple_of(20) {
                    if let Ok(d) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
                        fds.fetch_max(d.count() as u64, Ordering::SeqCst);
                    }
                }
                i += 1;
                if Instant::now() > deadline && !timed_out.swap(true, Ordering::SeqCst) {
                    // SAFETY: pid is our own unreaped child (a zombie at worst), so it cannot be reused.
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    // Block until the child has exited, leaving it a zombie (WNOWAIT) so the sampler cannot race
    // with pid reuse.
    loop {
        // SAFETY: zeroed siginfo_t is a valid out-parameter for waitid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if r == 0 {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(anyhow::anyhow!("waitid on rollout ({pid}): {e}"));
        }
    }
    let wall_s = start.elapsed().as_secs_f64();
    let t_end = epoch();
    let busy1 = machine_busy_s();
    done.store(true, Ordering::SeqCst);
    let _ = sampler.join();
    let mut status: libc::c_int = 0;
    // SAFETY: zeroed rusage is a valid out-parameter for wait4.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut ru) };
    if r != pid as libc::pid_t {
        return Err(anyhow::anyhow!(
            "wait4 on rollout ({pid}): {}",
            std::io::Error::last_os_error()
        ));
    }
    let read = |mut f: File| -> String {
        use std::io::Seek;
        let mut s = String::new();
        let _ = f.seek(std::io::SeekFrom::Start(0));
        let _ = f.read_to_string(&mut s);
        s
    };
    Ok(Outcome {
        status,
        wall_s,
        t0,
        t_end,
        stdout: read(out_f),
        stderr: read(err_f),
        rss_self_kib: hwm.load(Ordering::SeqCst),
        rss_tree_kib: ru.ru_maxrss.max(0) as u64,
        fds_max: fds.load(Ordering::SeqCst),
        deployer_cpu_s: tv(ru.ru_utime) + tv(ru.ru_stime),
        machine_cpu_s: busy1 - busy0,
        timed_out: timed_out.load(Ordering::SeqCst),
    })
}

fn tv(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

/// Cost of one fresh SSH connection to a host (`ssh deploy@host1 true`, sequentially): median wall
/// time and machine CPU-seconds per connection.
fn calibrate_ssh(fleet: &Fleet, count: usize) -> Value {
    let mut walls = Vec::new();
    let busy0 = machine_busy_s();
    for _ in 0..count {
        let t = Instant::now();
        let ok = fleet
            .ssh("deploy@host1", &["true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            return json!({"error": "ssh deploy@host1 true failed"});
        }
        walls.push(t.elapsed().as_secs_f64());
    }
    let cpu = (machine_busy_s() - busy0) / count as f64;
    json!({"connections": count, "median_wall_s": median(&walls), "machine_cpu_s_per_connection": cpu})
}

/// Per node and phase: (first started, last succeeded/failed).
type Spans = BTreeMap<String, BTreeMap<String, (Option<f64>, Option<f64>)>>;

/// What one run's JSON events say: phase spans per node and for the run, profiles deployed, the
/// last event's time per node and overall.
struct EventSpans {
    node_spans: Spans,
    run_spans: BTreeMap<String, (Option<f64>, Option<f64>)>,
    deployed: usize,
    last_event: Option<f64>,
    node_last: BTreeMap<String, f64>,
}

fn event_spans(stdout: &str) -> EventSpans {
    let events: Vec<Value> = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let mut node_spans: Spans = BTreeMap::new();
    let mut run_spans: BTreeMap<String, (Option<f64>, Option<f64>)> = BTreeMap::new();
    let mut deployed = 0;
    let mut last_event: Option<f64> = None;
    let mut node_last: BTreeMap<String, f64> = BTreeMap::new();
    for e in &events {
        let t = e["time"].as_f64().unwrap_or(0.0);
        last_event = Some(last_event.map_or(t, |x: f64| x.max(t)));
        let node = e["node"].as_str().map(str::to_string);
        if let Some(n) = &node {
            let x = node_last.entry(n.clone()).or_insert(t);
            *x = x.max(t);
        }
        match e["event"].as_str() {
            Some("phase") => {
                let phase = e["phase"].as_str().unwrap_or("?").to_string();
                let slot = match &node {
                    Some(n) => node_spans.entry(n.clone()).or_default().entry(phase).or_default(),
                    None => run_spans.entry(phase).or_default(),
                };
                match e["state"].as_str() {
                    Some("started") if slot.0.is_none() => slot.0 = Some(t),
                    Some("started") => {}
                    Some(_) => slot.1 = Some(slot.1.map_or(t, |x: f64| x.max(t))),
                    None => {}
                }
            }
            Some("outcome") if e["outcome"] == "deployed" || e["outcome"] == "unchanged" => deployed += 1,
            _ => {}
        }
    }
    EventSpans {
        node_spans,
        run_spans,
        deployed,
        last_event,
        node_last,
    }
}

fn analyse(hosts_n: usize, kind: &'static str, index: usize, o: &Outcome, auths: &[usize]) -> RunResult {
    let EventSpans {
        node_spans,
        run_spans,
        deployed,
        last_event,
        node_last,
    } = event_spans(&o.stdout);
    let dur = |s: &(Option<f64>, Option<f64>)| match s {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let mut phase_median_s = BTreeMap::new();
    let mut phase_max_s = BTreeMap::new();
    for p in NODE_PHASES {
        let d: Vec<f64> = node_spans.values().filter_map(|m| m.get(p).and_then(dur)).collect();
        if let Some(m) = median(&d) {
            phase_median_s.insert(p.to_string(), m);
            phase_max_s.insert(p.to_string(), d.iter().cloned().fold(f64::MIN, f64::max));
        }
    }
    let run_phases = run_spans
        .iter()
        .filter_map(|(k, s)| dur(s).map(|d| (k.clone(), d)))
        .collect();
    let connect_starts: Vec<f64> = node_spans
        .values()
        .filter_map(|m| m.get("connect").and_then(|s| s.0))
        .collect();
    let first_connect = connect_starts.iter().cloned().reduce(f64::min);
    let last_connect = connect_starts.iter().cloned().reduce(f64::max);
    let spans: Vec<f64> = node_spans
        .iter()
        .filter_map(|(n, m)| {
            let s = m.get("connect")?.0?;
            Some(node_last.get(n)? - s)
        })
        .collect();
    let code = if libc::WIFEXITED(o.status) {
        Some(libc::WEXITSTATUS(o.status))
    } else {
        None
    };
    let ok = code == Some(0) && deployed == hosts_n;
    let error = if ok {
        None
    } else {
        let tail: Vec<&str> = o.stderr.lines().rev().take(8).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Some(format!(
            "{}exit {:?}, {deployed}/{hosts_n} deployed: {}",
            if o.timed_out { "timed out and killed; " } else { "" },
            code,
            tail.join(" | ")
        ))
    };
    let total: usize = auths.iter().sum();
    RunResult {
        hosts: hosts_n,
        kind,
        index,
        exit_code: code,
        ok,
        deployed,
        wall_s: o.wall_s,
        eval_build_s: first_connect.map(|c| c - o.t0),
        run_phases,
        phase_median_s,
        phase_max_s,
        node_span_median_s: median(&spans),
        connect_start_spread_s: first_connect.zip(last_connect).map(|(a, b)| b - a),
        tail_s: last_event.map(|l| o.t_end - l),
        auths_per_host_mean: total as f64 / hosts_n.max(1) as f64,
        auths_per_host_max: auths.iter().cloned().max().unwrap_or(0),
        rss_self_kib: o.rss_self_kib,
        rss_tree_kib: o.rss_tree_kib,
        fds_max: o.fds_max,
        deployer_cpu_s: o.deployer_cpu_s,
        machine_cpu_s: o.machine_cpu_s,
        machine_cpu_util: o.machine_cpu_s / (o.wall_s * cpus() as f64),
        error,
    }
}

fn one_run(
    args: &Args,
    rollout: &Path,
    fleet: &Fleet,
    flake: &Path,
    n: usize,
    kind: &'static str,
    index: usize,
) -> anyhow::Result<RunResult> {
    let names = hosts(n);
    let before: Vec<usize> = names.iter().map(|h| fleet.sshd_auth_count(h)).collect();
    let o = invoke(args, rollout, flake, &[])?;
    // sshd writes its log line at authentication time; give the last one a moment anyway.
    std::thread::sleep(Duration::from_millis(50));
    let auths: Vec<usize> = names
        .iter()
        .zip(&before)
        .map(|(h, b)| fleet.sshd_auth_count(h).saturating_sub(*b))
        .collect();
    if let Some(dir) = &args.keep_logs {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join(format!("n{n}-{kind}{index}.jsonl")), &o.stdout)?;
        std::fs::write(dir.join(format!("n{n}-{kind}{index}.stderr")), &o.stderr)?;
    }
    let r = analyse(n, kind, index, &o, &auths);
    eprintln!(
        "rollout-bench: N={n} {kind} run {index}: {:.2} s{}, auths/host {:.1} (max {}), eval+build {}",
        r.wall_s,
        if r.ok { "" } else { " FAILED" },
        r.auths_per_host_mean,
        r.auths_per_host_max,
        r.eval_build_s.map_or("-".into(), |x| format!("{x:.2} s")),
    );
    if let Some(e) = &r.error {
        eprintln!("rollout-bench:   {e}");
    }
    Ok(r)
}

fn summarize(n: usize, runs: &[RunResult], base: Option<f64>, peer: &[&PeerRun]) -> SizeSummary {
    let ok: Vec<&RunResult> = runs.iter().filter(|r| r.ok).collect();
    let med = |f: &dyn Fn(&RunResult) -> Option<f64>| median(&ok.iter().filter_map(|r| f(r)).collect::<Vec<_>>());
    let wall = med(&|r| Some(r.wall_s));
    let peer_wall = median(&peer.iter().filter(|p| p.ok).map(|p| p.wall_s).collect::<Vec<_>>());
    let mut phase_median_s = BTreeMap::new();
    for p in NODE_PHASES {
        if let Some(m) = med(&|r| r.phase_median_s.get(p).copied()) {
            phase_median_s.insert(p.to_string(), m);
        }
    }
    SizeSummary {
        hosts: n,
        runs_ok: ok.len(),
        runs: runs.len(),
        median_wall_s: wall,
        ratio_to_1: wall.zip(base).map(|(w, b)| w / b),
        peer_median_wall_s: peer_wall,
        peer_ratio: peer_wall.zip(wall).map(|(p, w)| p / w),
        median_eval_build_s: med(&|r| r.eval_build_s),
        phase_median_s,
        median_tail_s: med(&|r| r.tail_s),
        median_connect_start_spread_s: med(&|r| r.connect_start_spread_s),
        auths_per_host_mean: median(&runs.iter().map(|r| r.auths_per_host_mean).collect::<Vec<_>>()).unwrap_or(0.0),
        auths_per_host_max: runs.iter().map(|r| r.auths_per_host_max).max().unwrap_or(0),
        rss_self_kib_max: runs.iter().map(|r| r.rss_self_kib).max().unwrap_or(0),
        rss_tree_kib_max: runs.iter().map(|r| r.rss_tree_kib).max().unwrap_or(0),
        fds_max: runs.iter().map(|r| r.fds_max).max().unwrap_or(0),
        median_deployer_cpu_s: med(&|r| Some(r.deployer_cpu_s)),
        median_machine_cpu_s: med(&|r| Some(r.machine_cpu_s)),
        median_machine_cpu_util: med(&|r| Some(r.machine_cpu_util)),
    }
}

fn f2(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.2}"))
}

fn mib(k: u64) -> String {
    format!("{:.1}", k as f64 / 1024.0)
}

fn print_table(sizes: &[SizeSummary], noop: Option<&SizeSummary>, peer: Option<&str>) {
    let mut rows: Vec<(String, &SizeSummary)> = sizes.iter().map(|s| (s.hosts.to_string(), s)).collect();
    if let Some(s) = noop {
        rows.push((format!("{} noop", s.hosts), s));
    }
    println!();
    println!("rollout fleet benchmark: time (seconds; median of runs; phases: median over nodes, then over runs)");
    // The peer column exists only when a peer was measured in this run.
    let mut head = vec!["hosts", "wall", "×N=1"];
    if peer.is_some() {
        head.push("peer (÷ rollout)");
    }
    head.extend([
        "eval+build",
        "connect",
        "copy",
        "activate",
        "confirm",
        "spread",
        "tail",
        "ok",
    ]);
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|(label, s)| {
            let ph = |p: &str| f2(s.phase_median_s.get(p).copied());
            let mut c = vec![label.clone(), f2(s.median_wall_s), f2(s.ratio_to_1)];
            if peer.is_some() {
                c.push(match (s.peer_median_wall_s, s.peer_ratio) {
                    (Some(w), Some(r)) => format!("{w:.2} ({r:.2}×)"),
                    _ => "-".into(),
                });
            }
            c.extend([
                f2(s.median_eval_build_s),
                ph("connect"),
                ph("copy"),
                ph("activate"),
                ph("confirm"),
                f2(s.median_connect_start_spread_s),
                f2(s.median_tail_s),
                format!("{}/{}", s.runs_ok, s.runs),
            ]);
            c
        })
        .collect();
    let widths: Vec<usize> = (0..head.len())
        .map(|i| {
            cells
                .iter()
                .map(|c| c[i].chars().count())
                .chain([head[i].chars().count()])
                .max()
                .unwrap_or(1)
        })
        .collect();
    let line = |c: &[String]| {
        let parts: Vec<String> = c.iter().zip(&widths).map(|(x, w)| format!(" {x:>w$} ")).collect();
        format!("|{}|", parts.join("|"))
    };
    println!("{}", line(&head.iter().map(|h| h.to_string()).collect::<Vec<_>>()));
    println!(
        "|{}|",
        widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("|")
    );
    for c in &cells {
        println!("{}", line(c));
    }
    println!();
    println!("rollout fleet benchmark: resources");
    println!(
        "| {:>8} | {:>10} | {:>8} | {:>8} | {:>6} | {:>12} | {:>11} | {:>8} |",
        "hosts", "auths/host", "RSS self", "RSS tree", "fds", "deployer CPU", "machine CPU", "CPU busy"
    );
    println!("|{}|", [10, 12, 10, 10, 8, 14, 13, 10].map(|w| "-".repeat(w)).join("|"));
    for (label, s) in &rows {
        println!(
            "| {:>8} | {:>10} | {:>8} | {:>8} | {:>6} | {:>12} | {:>11} | {:>8} |",
            label,
            format!("{:.1} / {}", s.auths_per_host_mean, s.auths_per_host_max),
            format!("{} MiB", mib(s.rss_self_kib_max)),
            format!("{} MiB", mib(s.rss_tree_kib_max)),
            s.fds_max,
            format!("{} s", f2(s.median_deployer_cpu_s)),
            format!("{} s", f2(s.median_machine_cpu_s)),
            s.median_machine_cpu_util
                .map_or("-".into(), |u| format!("{:.0} %", u * 100.0)),
        );
    }
    println!();
    println!("wall: rollout's wall time; eval+build: spawn → first `connect` started (evaluate, build, agent);");
    println!("spread: first → last node's connect start; tail: last event → exit.");
    match peer {
        Some(cmd) => println!(
            "peer: `{cmd}` on the same fleet in this run, alternating with rollout run by run, each with new content."
        ),
        None => println!("peer: none measured (pass --compare CMD to run one on the same fleet in the same run)."),
    }
    println!("auths/host: median of per-run mean / max over runs and hosts. RSS self: peak RSS of the rollout");
    println!("process (VmHWM); RSS tree: wait4 ru_maxrss = max over rollout and the nix/ssh processes it reaped.");
    println!("deployer CPU: user+sys of rollout and its reaped children; machine CPU: busy CPU-seconds of the whole");
    println!("machine during the run (deployer + simulated hosts' sshd/nix/agent); CPU busy: machine CPU / (wall × {} CPUs).", cpus());
}

fn targets(sizes: &[SizeSummary], noop: Option<&SizeSummary>, all_runs: &[RunResult]) -> Vec<Target> {
    let wall = |n: usize| sizes.iter().find(|s| s.hosts == n).and_then(|s| s.median_wall_s);
    let mut t = Vec::new();
    let ratio = |name: &str, n: usize, k: f64| {
        let v = wall(n).zip(wall(1)).map(|(a, b)| a / b);
        Target {
            name: name.into(),
            value: v,
            limit: format!("<= {k}"),
            result: match v {
                None => "SKIP",
                Some(x) if x <= k => "PASS",
                _ => "FAIL",
            },
        }
    };
    t.push(ratio("N=10 wall / N=1 wall", 10, 2.5));
    t.push(ratio("N=20 wall / N=1 wall", 20, 4.0));
    let nv = noop.filter(|s| s.hosts == 10).and_then(|s| s.median_wall_s);
    t.push(Target {
        name: "no-op redeploy of 10 hosts (s)".into(),
        value: nv,
        limit: "< 3".into(),
        result: match nv {
            None => "SKIP",
            Some(x) if x < 3.0 => "PASS",
            _ => "FAIL",
        },
    });
    let max_auth = all_runs.iter().map(|r| r.auths_per_host_max).max();
    t.push(Target {
        name: "SSH authentications per host (max over hosts and runs)".into(),
        value: max_auth.map(|x| x as f64),
        limit: "<= 2".into(),
        result: match max_auth {
            None => "SKIP",
            Some(x) if x <= 2 => "PASS",
            _ => "FAIL",
        },
    });
    t
}

fn main() -> ExitCode {
    let args = Args::parse();
    match real_main(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rollout-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The rollout binary to measure: `--rollout`, else the one beside this program.
fn rollout_binary(args: &Args) -> anyhow::Result<PathBuf> {
    let rollout = match &args.rollout {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .map(|d| d.join("rollout"))
            .unwrap_or_else(|| PathBuf::from("rollout")),
    };
    if !rollout.is_file() {
        anyhow::bail!(
            "rollout binary not found at {} (build with `cargo build --release --workspace --bins` or pass --rollout)",
            rollout.display()
        );
    }
    eprintln!(
        "rollout-bench: rollout = {}, sizes {:?}, {} runs each, no-op: {} hosts × {}",
        rollout.display(),
        args.sizes,
        args.runs,
        args.noop_hosts,
        args.noop_runs
    );
    Ok(rollout)
}

/// Other work on the machine skews every figure (the hosts share its CPUs): measure it first
/// (the share of all CPUs busy before the benchmark starts).
fn warn_if_busy() -> f64 {
    let b0 = machine_busy_s();
    std::thread::sleep(Duration::from_secs(2));
    let background = (machine_busy_s() - b0) / (2.0 * cpus() as f64);
    if background > 0.15 {
        eprintln!(
            "rollout-bench: WARNING: the machine is already {:.0} % busy before the benchmark; figures will be skewed",
            background * 100.0
        );
    }
    background
}

/// Everything one benchmark measured, before it is summarised.
struct Measured {
    all_runs: Vec<RunResult>,
    noop_runs: Vec<RunResult>,
    peer_runs: Vec<PeerRun>,
    calibration: Value,
    kex: Option<String>,
    sizes: Vec<usize>,
}

/// Fresh deploys per fleet size, then the no-op redeploys (and the peer's runs, alternating).
fn measure(args: &Args, rollout: &Path) -> anyhow::Result<Measured> {
    let mut all_runs: Vec<RunResult> = Vec::new();
    let mut noop_runs: Vec<RunResult> = Vec::new();
    let mut peer_runs: Vec<PeerRun> = Vec::new();
    let mut sizes = args.sizes.clone();
    sizes.dedup();
    let mut run_noop = |fleet: &Fleet,
                        flake: &Path,
                        n: usize,
                        deployed: bool,
                        all: &mut Vec<RunResult>,
                        peers: &mut Vec<PeerRun>|
     -> anyhow::Result<()> {
        if !deployed {
            write_flake(
                flake,
                &fleet.ssh_config(),
                n,
                &fresh_salt("bench-noop"),
                args.extra_ssh_opts.as_deref(),
            )?;
            let r = one_run(args, rollout, fleet, flake, n, "noop-setup", 0)?;
            all.push(r);
        }
        for i in 1..=args.noop_runs {
            let r = one_run(args, rollout, fleet, flake, n, "noop", i)?;
            noop_runs.push(r);
            if let Some(t) = &args.compare {
                peers.push(run_peer(args, t, flake, n, "noop", i)?);
            }
        }
        Ok(())
    };
    let mut calibration = Value::Null;
    let mut kex = None;
    for &n in &sizes {
        let fleet = Fleet::temp(n)?;
        if calibration.is_null() {
            calibration = calibrate_ssh(&fleet, 5);
            kex = kex_in_use(&fleet);
            eprintln!("rollout-bench: one fresh SSH connection: {calibration}; key exchange {kex:?}");
        }
        let dir = tempfile::Builder::new().prefix("rollout-bench-flake-").tempdir()?;
        let mut last_ok = false;
        for i in 1..=args.runs {
            write_flake(
                dir.path(),
                &fleet.ssh_config(),
                n,
                &fresh_salt("bench"),
                args.extra_ssh_opts.as_deref(),
            )?;
            let r = one_run(args, rollout, &fleet, dir.path(), n, "fresh", i)?;
            last_ok = r.ok;
            all_runs.push(r);
            if let Some(t) = &args.compare {
                // Alternating, with new content of its own: both see the same machine state over the run.
                let peer_dir = tempfile::Builder::new().prefix("rollout-bench-peer-").tempdir()?;
                write_flake(
                    peer_dir.path(),
                    &fleet.ssh_config(),
                    n,
                    &fresh_salt("bench-peer"),
                    args.extra_ssh_opts.as_deref(),
                )?;
                peer_runs.push(run_peer(args, t, peer_dir.path(), n, "fresh", i)?);
            }
        }
        if n == args.noop_hosts && args.noop_runs > 0 {
            // The last run deployed this very flake: redeploy it unchanged.
            run_noop(&fleet, dir.path(), n, last_ok, &mut all_runs, &mut peer_runs)?;
        }
        drop(fleet);
    }
    if args.noop_hosts > 0 && args.noop_runs > 0 && !sizes.contains(&args.noop_hosts) {
        let n = args.noop_hosts;
        let fleet = Fleet::temp(n)?;
        let dir = tempfile::Builder::new().prefix("rollout-bench-flake-").tempdir()?;
        run_noop(&fleet, dir.path(), n, false, &mut all_runs, &mut peer_runs)?;
        drop(fleet);
    }

    Ok(Measured {
        all_runs,
        noop_runs,
        peer_runs,
        calibration,
        kex,
        sizes,
    })
}

fn real_main(args: &Args) -> anyhow::Result<()> {
    if !rollout_lab::is_root() {
        anyhow::bail!("must run as root (the test fleet uses namespaces)");
    }
    if args.sizes.is_empty() || args.sizes.contains(&0) || args.runs == 0 {
        anyhow::bail!("--sizes needs positive host counts and --runs at least 1");
    }
    let rollout = rollout_binary(args)?;
    let background = warn_if_busy();
    if args.eval_cost > 0 {
        let v = eval_cost::run(args, &rollout)?;
        if let Some(out) = &args.out {
            std::fs::write(out, serde_json::to_string_pretty(&v)?)?;
        }
        return Ok(());
    }
    match args.latency_ms {
        Some(ms) => latency::run(args, &rollout, ms, background),
        None => size_table(args, &rollout, background),
    }
}

/// The default mode: fresh deploys per fleet size, no-op redeploys, targets.
fn size_table(args: &Args, rollout: &Path, background: f64) -> anyhow::Result<()> {
    if let Some(t) = &args.compare {
        peer_argv(t, Path::new("/flake"))?;
    }
    let Measured {
        all_runs,
        noop_runs,
        peer_runs,
        calibration,
        kex,
        sizes,
    } = measure(args, rollout)?;
    let fresh = |n: usize| -> Vec<RunResult> {
        all_runs
            .iter()
            .filter(|r| r.hosts == n && r.kind == "fresh")
            .cloned()
            .collect()
    };
    let peer_of = |n: usize, kind: &str| -> Vec<&PeerRun> {
        peer_runs.iter().filter(|p| p.hosts == n && p.kind == kind).collect()
    };
    let base = summarize(1, &fresh(1), None, &[])
        .median_wall_s
        .filter(|_| sizes.contains(&1));
    let summaries: Vec<SizeSummary> = sizes
        .iter()
        .map(|&n| summarize(n, &fresh(n), base, &peer_of(n, "fresh")))
        .collect();
    let noop = if noop_runs.is_empty() {
        None
    } else {
        Some(summarize(
            args.noop_hosts,
            &noop_runs,
            None,
            &peer_of(args.noop_hosts, "noop"),
        ))
    };
    println!(
        "rollout-bench {}: revision {}, {} CPUs ({}), ssh key exchange {}",
        date_utc(),
        std::env::var("ROLLOUT_BENCH_REV").unwrap_or_else(|_| "unknown".into()),
        cpus(),
        cpu_model(),
        kex.as_deref().unwrap_or("unknown"),
    );
    print_table(&summaries, noop.as_ref(), args.compare.as_deref());
    println!(
        "background load before the benchmark: {:.0} % of {} CPUs{}",
        background * 100.0,
        cpus(),
        if background > 0.15 {
            " (WARNING: not idle, figures skewed)"
        } else {
            ""
        }
    );
    println!(
        "one fresh SSH connection (ssh deploy@host1 true, sequential): {} s wall, {} machine CPU-s",
        f2(calibration["median_wall_s"].as_f64()),
        f2(calibration["machine_cpu_s_per_connection"].as_f64())
    );
    let everything: Vec<RunResult> = all_runs.iter().chain(noop_runs.iter()).cloned().collect();
    let tg = targets(&summaries, noop.as_ref(), &everything);
    println!();
    println!("targets:");
    for t in &tg {
        println!("  {:<4} {} = {} (target {})", t.result, t.name, f2(t.value), t.limit);
    }
    let failed_runs = everything.iter().filter(|r| !r.ok).count();
    if failed_runs > 0 {
        println!(
            "  note: {failed_runs} run(s) did not deploy every host; they are left out of the medians (see the JSON)"
        );
    }
    if let Some(p) = &args.out {
        let results = Results {
            rollout,
            sizes: &sizes,
            background,
            summaries: &summaries,
            noop: noop.as_ref(),
            targets: &tg,
            calibration: &calibration,
            peer_runs: &peer_runs,
            kex: kex.as_deref(),
            runs: &everything,
        };
        write_results(args, p, &results)?;
    }
    Ok(())
}

/// What `--out` writes.
struct Results<'a> {
    rollout: &'a Path,
    sizes: &'a [usize],
    background: f64,
    summaries: &'a [SizeSummary],
    noop: Option<&'a SizeSummary>,
    targets: &'a [Target],
    calibration: &'a Value,
    peer_runs: &'a [PeerRun],
    kex: Option<&'a str>,
    runs: &'a [RunResult],
}

fn write_results(args: &Args, p: &Path, r: &Results) -> anyhow::Result<()> {
    let (rollout, sizes, background, summaries, noop, tg, calibration, peer_runs, kex, everything) = (
        r.rollout,
        r.sizes,
        r.background,
        r.summaries,
        r.noop,
        r.targets,
        r.calibration,
        r.peer_runs,
        r.kex,
        r.runs,
    );
    let v = json!({
        "rollout": rollout.display().to_string(),
        "revision": std::env::var("ROLLOUT_BENCH_REV").ok(),
        "config": {
            "sizes": sizes, "runs": args.runs, "noop_hosts": args.noop_hosts, "noop_runs": args.noop_runs,
            "parallel": args.parallel, "extra_ssh_opts": args.extra_ssh_opts, "confirm_timeout": args.confirm_timeout,
            "cpus": cpus(),
            "background_cpu_util": background,
        },
        "sizes": summaries,
        "noop": noop,
        "targets": tg,
        "ssh_calibration": calibration,
        "compare": args.compare,
        "peer_runs": peer_runs,
        "kex": kex,
        "cpu_model": cpu_model(),
        "date": date_utc(),
        "runs": everything,
    });
    std::fs::write(p, serde_json::to_string_pretty(&v)? + "\n")?;
    eprintln!("rollout-bench: results written to {}", p.display());
    Ok(())
}
