//! Consumers of the event stream: plain lines or live progress on stderr, JSON lines on stdout,
//! an optional log file, and the final per-node summary.

use crate::cli::{Color, DeployArgs};
use crate::diagnose::{explain, Explained};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use rollout_core::deploy::Report;
use rollout_core::events::{Collector, Event, Kind, Outcome, Phase, Reporter, Sink, State};
use rollout_core::plan::Plan;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `--color` of this run (0 auto, 1 always, 2 never); set once the flags are parsed.
static COLOR: AtomicU8 = AtomicU8::new(0);

/// Records `--color` for every later message of this process.
pub fn set_color(c: Color) {
    COLOR.store(
        match c {
            Color::Auto => 0,
            Color::Always => 1,
            Color::Never => 2,
        },
        Ordering::Relaxed,
    );
}

/// Whether `--color`, `NO_COLOR` (set and not empty, <https://no-color.org>) and stderr allow colour.
fn color_enabled() -> bool {
    match COLOR.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal(),
    }
}

fn paint(code: &str, s: &str) -> String {
    if color_enabled() {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_string()
    }
}

/// The continuation lines of an explained message: the tool's text indented under `indent`,
/// then the hints.
fn below(e: &Explained, indent: &str) -> Vec<String> {
    let mut out: Vec<String> = e
        .detail
        .iter()
        .map(|l| {
            if l.trim().is_empty() {
                String::new()
            } else {
                format!("{indent}    {l}")
            }
        })
        .collect();
    out.extend(e.hints.iter().map(|h| format!("{indent}{} {h}", paint("36", "hint:"))));
    out
}

/// A command's final error: rollout's own first line, the tool's text indented, hints.
pub fn error(msg: &str) {
    let e = explain(msg);
    eprintln!("{} {}", paint("1;31", "rollout: error:"), e.headline);
    for l in below(&e, "") {
        eprintln!("{l}");
    }
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
        Phase::Keys => "keys",
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
        Kind::Outcome { outcome, message } => {
            // rollout's line first; a tool's text (ssh's banner, Nix's error) indented below it.
            let e = explain(message);
            let mut l = format!("{sp}{}: {}", outcome_word(*outcome), e.headline);
            for d in e.detail.iter().filter(|d| !d.trim().is_empty()) {
                l.push_str(&format!("\n    {d}"));
            }
            Some(l)
        }
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

/// One node's live line and the outcomes of its profiles so far.
struct NodeLine {
    node: String,
    bar: ProgressBar,
    ends: Vec<(Outcome, String)>,
}

/// A live line per node on a terminal, in the plan's order; at the end each line is replaced by
/// the node's outcome (no spinner left behind).
pub struct ProgressSink {
    mp: MultiProgress,
    lines: Mutex<Vec<NodeLine>>,
    /// Set when the deployment starts ([`set_order`]): before it (inspecting targets, asking
    /// for `-i`), node events are plain lines, so nothing redraws over a question.
    live: AtomicBool,
}

fn is_success(o: Outcome) -> bool {
    matches!(
        o,
        Outcome::Deployed | Outcome::DryActivated | Outcome::Booted | Outcome::Unchanged
    )
}

/// `✓` when every profile of the node succeeded, `-` when none started, else `✗`.
fn mark(ends: &[(Outcome, String)]) -> String {
    if !ends.is_empty() && ends.iter().all(|(o, _)| is_success(*o)) {
        paint("32", "✓")
    } else if ends.iter().all(|(o, _)| *o == Outcome::Skipped) {
        "-".to_string()
    } else {
        paint("31", "✗")
    }
}

impl ProgressSink {
    fn new() -> ProgressSink {
        ProgressSink {
            mp: MultiProgress::new(),
            lines: Mutex::new(Vec::new()),
            live: AtomicBool::new(false),
        }
    }

    fn add(&self, lines: &mut Vec<NodeLine>, node: &str) -> ProgressBar {
        let b = self.mp.add(ProgressBar::new_spinner());
        let prefix = if color_enabled() { "{prefix:.bold}" } else { "{prefix}" };
        let template = format!("{{spinner}} {prefix} [{{elapsed:>4}}] {{msg}}");
        b.set_style(ProgressStyle::with_template(&template).expect("a valid progress template"));
        b.set_prefix(node.to_string());
        b.set_message("waiting");
        b.enable_steady_tick(Duration::from_millis(120));
        lines.push(NodeLine {
            node: node.to_string(),
            bar: b.clone(),
            ends: Vec::new(),
        });
        b
    }

    /// Lines for `nodes` up front, so the screen keeps the plan's order whatever starts first.
    fn order(&self, nodes: &[String]) {
        self.live.store(true, Ordering::SeqCst);
        let mut lines = self.lines.lock().unwrap();
        for n in nodes {
            if !lines.iter().any(|l| &l.node == n) {
                self.add(&mut lines, n);
            }
        }
    }

    fn with_line<R>(&self, node: &str, f: impl FnOnce(&mut NodeLine) -> R) -> R {
        let mut lines = self.lines.lock().unwrap();
        if !lines.iter().any(|l| l.node == node) {
            self.add(&mut lines, node);
        }
        let line = lines.iter_mut().find(|l| l.node == node).expect("added above");
        f(line)
    }

    fn finish(&self) {
        let width = self
            .lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| l.node.len())
            .max()
            .unwrap_or(0);
        for l in self.lines.lock().unwrap().iter() {
            if l.bar.is_finished() {
                continue;
            }
            let text = if l.ends.is_empty() {
                "not started".to_string()
            } else {
                l.ends.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>().join("; ")
            };
            let style = format!("{} {{prefix}} [{{elapsed:>4}}] {{msg}}", mark(&l.ends));
            l.bar
                .set_style(ProgressStyle::with_template(&style).expect("a valid progress template"));
            l.bar.set_prefix(format!("{:<width$}", l.node));
            l.bar.finish_with_message(text);
        }
    }
}

/// What a node's line says when one of its profiles ends: success in the core's words
/// ("activated and confirmed"), failures with their outcome word first.
fn end_text(profile: Option<&String>, outcome: Outcome, message: &str) -> String {
    let prof = profile.map(|p| format!("{p}: ")).unwrap_or_default();
    let headline = explain(message).headline;
    if is_success(outcome) {
        format!("{prof}{headline}")
    } else {
        format!("{prof}{}: {headline}", outcome_word(outcome))
    }
}

impl Sink for ProgressSink {
    fn emit(&self, e: &Event) {
        let live = self.live.load(Ordering::SeqCst);
        let Some(node) = e.node.as_ref().filter(|_| live) else {
            if let Some(l) = plain_line(e, false) {
                let _ = self.mp.println(format!("rollout: {l}"));
            }
            return;
        };
        let prof = e.profile.as_ref().map(|p| format!("{p}: ")).unwrap_or_default();
        match &e.kind {
            Kind::Phase {
                phase,
                state: State::Started,
                message,
            } => self.with_line(node, |l| {
                l.bar.set_message(format!(
                    "{prof}{}{}",
                    phase_word(*phase),
                    message.as_ref().map(|m| format!(" ({m})")).unwrap_or_default()
                ))
            }),
            Kind::Outcome { outcome, message } => self.with_line(node, |l| {
                let text = end_text(e.profile.as_ref(), *outcome, message);
                l.bar.set_message(text.clone());
                l.ends.push((*outcome, text));
            }),
            Kind::Progress {
                phase: Phase::Copy,
                done,
                ..
            } => self.with_line(node, |l| {
                l.bar.set_message(format!(
                    "copy: {} copied",
                    rollout_core::deploy::copy::human_bytes(*done)
                ))
            }),
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
    /// The plan's node order, for the live lines and the summary rows.
    pub order: Mutex<Vec<String>>,
}

/// Shows the nodes in the plan's order (live lines and summary), whatever order they start in.
pub fn set_order(s: &Summary, plan: &Plan) {
    let mut nodes: Vec<String> = Vec::new();
    for d in &plan.deployments {
        if !nodes.contains(&d.node) {
            nodes.push(d.node.clone());
        }
    }
    if let Some(p) = &s.progress {
        p.order(&nodes);
    }
    *s.order.lock().unwrap() = nodes;
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
    set_color(args.color);
    let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(PlainSink { debug: args.debug_logs })];
    sinks.extend(log_file(args)?);
    Ok(Reporter::new(sinks))
}

pub fn run_reporter(args: &DeployArgs, progress: bool) -> Result<(Reporter, Summary), String> {
    set_color(args.color);
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
        let p = Arc::new(ProgressSink::new());
        sinks.push(Box::new(ArcSink(p.clone())));
        prog = Some(p);
    } else {
        sinks.push(Box::new(PlainSink { debug: args.debug_logs }));
    }
    sinks.extend(log);
    Ok((
        Reporter::new(sinks),
        Summary {
            events,
            progress: prog,
            order: Mutex::new(Vec::new()),
        },
    ))
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
    let order = s.order.lock().unwrap().clone();
    nodes.sort_by_key(|n| order.iter().position(|o| o == n).unwrap_or(usize::MAX));
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
            if !is_success(r.outcome) {
                let e = explain(&r.message);
                eprintln!("    {}", e.headline);
                for l in below(&e, "    ") {
                    eprintln!("{l}");
                }
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
