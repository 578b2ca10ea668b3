//! Consumers of the event stream: plain lines or live progress on stderr, JSON lines on stdout,
//! an optional log file, and the final per-node summary.

use crate::cli::DeployArgs;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use rollout_core::deploy::Report;
use rollout_core::events::{Collector, Event, Kind, Outcome, Phase, Reporter, Sink, State};
use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn color_enabled() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
}

fn paint(code: &str, s: &str) -> String {
    if color_enabled() {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_string()
    }
}

pub fn error(msg: &str) {
    eprintln!("{} {msg}", paint("1;31", "rollout: error:"));
}

fn scope(e: &Event) -> String {
    match (&e.node, &e.profile) {
        (Some(n), Some(p)) => format!("[{n}.{p}]"),
        (Some(n), None) => format!("[{n}]"),
        _ => String::new(),
    }
}

fn phase_word(p: Phase) -> &'static str {
    match p {
        Phase::Check => "checks",
        Phase::Evaluate => "evaluate",
        Phase::Build => "build",
        Phase::Connect => "connect",
        Phase::Copy => "copy",
        Phase::Activate => "activate",
        Phase::Confirm => "confirm",
        Phase::Revoke => "roll back",
        Phase::Health => "health checks",
    }
}

fn outcome_word(o: Outcome) -> &'static str {
    match o {
        Outcome::Deployed => "deployed",
        Outcome::DryActivated => "dry-activated",
        Outcome::Unchanged => "unchanged",
        Outcome::Booted => "set for next boot",
        Outcome::RolledBack => "rolled back",
        Outcome::RollingBack => "rolling back",
        Outcome::Failed => "FAILED",
        Outcome::Skipped => "skipped",
    }
}

/// One plain line per event (non-terminal output, `--debug-logs`, log files).
fn plain_line(e: &Event, debug: bool) -> Option<String> {
    let s = scope(e);
    let sp = if s.is_empty() { String::new() } else { format!("{s} ") };
    match &e.kind {
        Kind::Phase { phase, state, message } => Some(match state {
            State::Started => format!(
                "{sp}{}{}",
                phase_word(*phase),
                message.as_ref().map(|m| format!(": {m}")).unwrap_or_default()
            ),
            State::Succeeded => format!("{sp}{} done", phase_word(*phase)),
            State::Failed => format!("{sp}{} failed", phase_word(*phase)),
        }),
        Kind::Log { line } => Some(format!("{sp}| {line}")),
        Kind::Outcome { outcome, message } => Some(format!("{sp}{}: {message}", outcome_word(*outcome))),
        Kind::Progress { .. } => None,
        Kind::Info { message } => Some(format!("{sp}{message}")),
        Kind::Warn { message } => Some(format!("{sp}warning: {message}")),
        Kind::Command { argv } => debug.then(|| format!("{sp}running: {argv}")),
        Kind::HealthCheck {
            name,
            passed,
            attempts,
            output,
            ..
        } => Some(format!(
            "{sp}health check `{name}` {} after {attempts} attempt(s){}",
            if *passed { "passed" } else { "FAILED" },
            if output.is_empty() {
                String::new()
            } else {
                format!(": {output}")
            }
        )),
    }
}

struct PlainSink {
    debug: bool,
}

impl Sink for PlainSink {
    fn emit(&self, e: &Event) {
        if let Some(l) = plain_line(e, self.debug) {
            let l = match &e.kind {
                Kind::Warn { .. } => paint("33", &l),
                Kind::Outcome {
                    outcome: Outcome::Failed | Outcome::RolledBack,
                    ..
                } => paint("31", &l),
                Kind::Outcome {
                    outcome: Outcome::Deployed,
                    ..
                } => paint("32", &l),
                _ => l,
            };
            eprintln!("rollout: {l}");
        }
    }
}

struct JsonSink {
    debug: bool,
}

impl Sink for JsonSink {
    fn emit(&self, e: &Event) {
        if matches!(e.kind, Kind::Command { .. }) && !self.debug {
            return;
        }
        if let Ok(s) = serde_json::to_string(e) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{s}");
            let _ = out.flush();
        }
    }
}

struct FileSink {
    file: Mutex<std::fs::File>,
}

impl Sink for FileSink {
    fn emit(&self, e: &Event) {
        if let Some(l) = plain_line(e, true) {
            let _ = writeln!(self.file.lock().unwrap(), "{:.3} {l}", e.time);
        }
    }
}

/// A live line per node on a terminal.
pub struct ProgressSink {
    mp: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl ProgressSink {
    fn bar(&self, node: &str) -> ProgressBar {
        let mut bars = self.bars.lock().unwrap();
        bars.entry(node.to_string())
            .or_insert_with(|| {
                let b = self.mp.add(ProgressBar::new_spinner());
                b.set_style(ProgressStyle::with_template("{spinner} {prefix:.bold} [{elapsed:>4}] {msg}").unwrap());
                b.set_prefix(node.to_string());
                b.enable_steady_tick(Duration::from_millis(120));
                b
            })
            .clone()
    }

    fn finish(&self) {
        for b in self.bars.lock().unwrap().values() {
            if !b.is_finished() {
                b.finish();
            }
        }
    }
}

impl Sink for ProgressSink {
    fn emit(&self, e: &Event) {
        let Some(node) = &e.node else {
            if let Some(l) = plain_line(e, false) {
                let _ = self.mp.println(format!("rollout: {l}"));
            }
            return;
        };
        let b = self.bar(node);
        let prof = e.profile.as_ref().map(|p| format!("{p}: ")).unwrap_or_default();
        match &e.kind {
            Kind::Phase {
                phase,
                state: State::Started,
                message,
            } => b.set_message(format!(
                "{prof}{}{}",
                phase_word(*phase),
                message.as_ref().map(|m| format!(" ({m})")).unwrap_or_default()
            )),
            Kind::Outcome { outcome, message } => {
                b.set_message(format!("{prof}{} {message}", outcome_word(*outcome)));
            }
            Kind::Progress {
                phase: Phase::Copy,
                done,
                ..
            } => {
                b.set_message(format!(
                    "copy: {} copied",
                    rollout_core::deploy::copy::human_bytes(*done)
                ));
            }
            Kind::Warn { message } => {
                let _ = self.mp.println(format!("rollout: {} warning: {message}", scope(e)));
            }
            _ => {}
        }
    }
}

/// Handles kept for the end of the run.
pub struct Summary {
    pub events: Collector,
    pub progress: Option<Arc<ProgressSink>>,
}

struct ArcSink<T: Sink>(Arc<T>);
impl<T: Sink> Sink for ArcSink<T> {
    fn emit(&self, e: &Event) {
        self.0.emit(e)
    }
}

/// The `--log-dir` file, opened before anything starts: a directory that cannot take it is bad
/// input (exit 1), not something to mention and then deploy anyway.
fn log_file(args: &DeployArgs) -> Result<Option<Box<dyn Sink>>, String> {
    let Some(dir) = args.log_dir.as_ref() else {
        return Ok(None);
    };
    std::fs::create_dir_all(dir).map_err(|e| {
        format!("--log-dir: cannot create the directory `{dir}`: {e}; expected a directory rollout can write")
    })?;
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let path = std::path::Path::new(dir).join(format!("rollout_{ts}_{}.log", std::process::id()));
    match std::fs::File::create(&path) {
        Ok(f) => {
            eprintln!("rollout: log is written to {}", path.display());
            Ok(Some(Box::new(FileSink { file: Mutex::new(f) })))
        }
        Err(e) => Err(format!(
            "--log-dir: cannot create the log file {}: {e}; expected a directory rollout can write",
            path.display()
        )),
    }
}

/// Reporter for commands that only plan.
pub fn reporter(args: &DeployArgs, _progress: bool) -> Result<Reporter, String> {
    let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(PlainSink { debug: args.debug_logs })];
    sinks.extend(log_file(args)?);
    Ok(Reporter::new(sinks))
}

pub fn run_reporter(args: &DeployArgs, progress: bool) -> Result<(Reporter, Summary), String> {
    let log = log_file(args)?;
    let events = Collector::default();
    let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(events.clone())];
    let mut prog = None;
    if args.json {
        sinks.push(Box::new(JsonSink { debug: args.debug_logs }));
        if args.debug_logs {
            sinks.push(Box::new(PlainSink { debug: true }));
        }
    } else if progress {
        let p = Arc::new(ProgressSink {
            mp: MultiProgress::new(),
            bars: Mutex::new(HashMap::new()),
        });
        sinks.push(Box::new(ArcSink(p.clone())));
        prog = Some(p);
    } else {
        sinks.push(Box::new(PlainSink { debug: args.debug_logs }));
    }
    sinks.extend(log);
    Ok((Reporter::new(sinks), Summary { events, progress: prog }))
}

pub fn finish(s: &Summary) {
    if let Some(p) = &s.progress {
        p.finish();
    }
}

/// Per node: outcome and the time each phase took, from the event stream.
pub fn summary(s: &Summary, report: &Report, total: Duration) {
    let events = s.events.0.lock().unwrap();
    let mut spans: BTreeMap<(String, Phase), (f64, f64)> = BTreeMap::new();
    for e in events.iter() {
        if let (Some(n), Kind::Phase { phase, state, .. }) = (&e.node, &e.kind) {
            let ent = spans.entry((n.clone(), *phase)).or_insert((e.time, e.time));
            match state {
                State::Started => ent.0 = ent.0.min(e.time),
                _ => ent.1 = ent.1.max(e.time),
            }
        }
    }
    let mut nodes: Vec<String> = Vec::new();
    for r in &report.results {
        if !nodes.contains(&r.node) {
            nodes.push(r.node.clone());
        }
    }
    eprintln!(
        "\n{:<16} {:<20} {:>8} {:>8} {:>9} {:>8}  outcome",
        "node", "profile", "connect", "copy", "activate", "confirm"
    );
    for n in &nodes {
        let t = |p: Phase| {
            spans
                .get(&(n.clone(), p))
                .map(|(a, b)| format!("{:.2}s", (b - a).max(0.0)))
                .unwrap_or_else(|| "-".into())
        };
        for r in report.results.iter().filter(|r| &r.node == n) {
            let line = format!(
                "{:<16} {:<20} {:>8} {:>8} {:>9} {:>8}  {}",
                n,
                r.profile,
                t(Phase::Connect),
                t(Phase::Copy),
                t(Phase::Activate),
                t(Phase::Confirm),
                outcome_word(r.outcome)
            );
            let line = match r.outcome {
                Outcome::Deployed | Outcome::DryActivated | Outcome::Booted | Outcome::Unchanged => paint("32", &line),
                Outcome::Skipped => line,
                _ => paint("31", &line),
            };
            eprintln!("{line}");
            if !matches!(
                r.outcome,
                Outcome::Deployed | Outcome::DryActivated | Outcome::Booted | Outcome::Unchanged
            ) {
                eprintln!("    {}", r.message);
            }
        }
    }
    let ok = report.success();
    eprintln!(
        "{} in {:.2}s",
        if ok {
            paint("1;32", "rollout: all profiles deployed")
        } else if report.rolled_back() {
            paint("1;31", "rollout: deployment failed; rolled back")
        } else {
            paint("1;31", "rollout: deployment failed")
        },
        total.as_secs_f64()
    );
}
