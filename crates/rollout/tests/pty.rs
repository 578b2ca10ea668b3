//! What a person sees: rollout run in a real pseudo-terminal (a private tmux server, whose
//! `capture-pane` gives the screen as a terminal draws it), against the same run without a
//! terminal. On a terminal: one live line per node in the plan's order, each ending as that
//! node's outcome, no spinner left behind, colour unless `NO_COLOR`; `-i` is answered at the
//! terminal (piped answers: dropin_fleet.rs). Off a terminal: plain lines, no animation, no escape
//! codes, and a clear error where a sudo password would have to be typed. Runs on the test fleet.

mod common;

use common::{marker, rollout_bin, stderr, Env, SYSTEM};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A tmux server of our own (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

/// indicatif's default spinner frames: none may stay on the final screen.
const SPINNER: &[char] = &['⠁', '⠂', '⠄', '⡀', '⢀', '⠠', '⠐', '⠈'];

impl Tmux {
    /// Starts `command` (a shell command line) in a detached 160×50 terminal, in `cwd`.
    fn start(command: &str, cwd: &Path) -> Tmux {
        let socket = format!("rollout-pty-{}-{}", std::process::id(), common::salt());
        let t = Tmux { socket };
        // The shell prints the exit code and then waits, so the final screen stays to be read.
        let script = format!("{command}; echo \"EXIT=$?\"; sleep 600");
        let ok = t
            .cmd(&["-f", "/dev/null", "new-session", "-d", "-x", "160", "-y", "50", "-c"])
            .arg(cwd)
            .args(["sh", "-c", &script])
            .status()
            .expect("running tmux");
        assert!(ok.success(), "tmux new-session failed");
        t
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]).args(args).stdin(Stdio::null());
        c
    }

    /// The screen (with `escapes`, the colour and attribute sequences too).
    fn screen(&self, escapes: bool) -> String {
        let mut args = vec!["capture-pane", "-p"];
        if escapes {
            args.push("-e");
        }
        let out = self.cmd(&args).output().expect("tmux capture-pane");
        // A terminal line is as wide as the terminal: compare without the padding.
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim_end)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until the screen contains `text`; the screen then.
    fn wait_for(&self, text: &str, limit: Duration) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen(false);
            if s.contains(text) {
                return s;
            }
            assert!(start.elapsed() < limit, "`{text}` never appeared; the screen:\n{s}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn send(&self, keys: &str) {
        assert!(self.cmd(&["send-keys", keys, "Enter"]).status().unwrap().success());
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]).status();
    }
}

/// A shell word.
fn sh(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `env VARS rollout ARGS` as a shell command line.
fn rollout_line(env: &[(&str, &str)], args: &[&str]) -> String {
    let mut words = vec!["env".to_string()];
    words.extend(env.iter().map(|(k, v)| sh(&format!("{k}={v}"))));
    words.push(sh(&rollout_bin().display().to_string()));
    words.extend(args.iter().map(|a| sh(a)));
    words.join(" ")
}

/// Three nodes; host3 first in no order but last in the plan (nodes in name order).
fn three_nodes(env: &mut Env) {
    for h in ["host1", "host2", "host3"] {
        env.flake.node(h, h).profile("system", marker("system"));
    }
    env.write();
}

/// The node lines of the final screen: those that start with a mark and a node name.
fn node_lines(screen: &str) -> Vec<&str> {
    screen
        .lines()
        .filter(|l| l.starts_with("✓ host") || l.starts_with("✗ host") || l.starts_with("- host"))
        .collect()
}

#[test]
fn on_a_terminal_each_node_has_one_live_line_in_plan_order_ending_in_its_outcome() {
    let mut env = Env::new(3);
    three_nodes(&mut env);
    let target = format!("{}", env.flake_dir().display());
    let line = rollout_line(&[("NO_COLOR", "1")], &[&target, "-s", "--parallel", "3"]);
    let tmux = Tmux::start(&line, env.flake_dir());
    let screen = tmux.wait_for("EXIT=", Duration::from_secs(120));
    eprintln!("final screen:\n{screen}");
    assert!(screen.contains("EXIT=0"), "{screen}");
    let nodes = node_lines(&screen);
    assert_eq!(nodes.len(), 3, "one line per node: {screen}");
    for (l, h) in nodes.iter().zip(["host1", "host2", "host3"]) {
        assert!(l.starts_with(&format!("✓ {h} ")), "plan order: {l}");
        assert!(l.ends_with("system: activated and confirmed"), "said once: {l}");
    }
    assert!(!screen.contains(SPINNER), "a spinner frame was left behind:\n{screen}");
    assert!(!screen.contains("deployed activated"), "{screen}");
    assert!(
        !screen.contains("] connect"),
        "no plain progress lines on a terminal:\n{screen}"
    );
    // The summary table keeps the plan's order too.
    let rows: Vec<&str> = screen.lines().filter(|l| l.starts_with("host")).collect();
    assert_eq!(rows.len(), 3, "{screen}");
    for (r, h) in rows.iter().zip(["host1", "host2", "host3"]) {
        assert!(r.starts_with(h) && r.ends_with("deployed"), "{r}");
    }
    assert!(screen.contains("rollout: all profiles deployed"), "{screen}");
    // NO_COLOR: no colour sequences on the screen (tmux reports them with -e).
    assert!(!tmux.screen(true).contains("\x1b[3"), "colour despite NO_COLOR");
}

#[test]
fn colour_follows_the_color_flag_and_no_color() {
    let mut env = Env::new(1);
    env.flake.node("host1", "host1").profile("system", marker("system"));
    env.write();
    let target = format!("{}", env.flake_dir().display());
    // On a terminal, colour by default; --color never and NO_COLOR turn it off; --color always wins
    // over NO_COLOR.
    for (vars, flag, coloured) in [
        (vec![], "--color=auto", true),
        (vec![("NO_COLOR", "1")], "--color=auto", false),
        (vec![], "--color=never", false),
        (vec![("NO_COLOR", "1")], "--color=always", true),
    ] {
        let tmux = Tmux::start(&rollout_line(&vars, &[&target, "-s", flag]), env.flake_dir());
        let screen = tmux.wait_for("EXIT=", Duration::from_secs(60));
        assert!(screen.contains("EXIT=0"), "{screen}");
        let raw = tmux.screen(true);
        assert_eq!(
            raw.contains("\x1b[32m") || raw.contains("\x1b[1;32m"),
            coloured,
            "{vars:?} {flag}:\n{raw:?}"
        );
    }
    // Off a terminal nothing is coloured, unless asked for.
    let out = Command::new(rollout_bin())
        .args([&target, "-s"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!stderr(&out).contains('\x1b'), "{}", stderr(&out));
    let out = Command::new(rollout_bin())
        .args([&target, "-s", "--color", "always"])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        stderr(&out).contains("\x1b[1;32mrollout: all profiles deployed"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn off_a_terminal_there_are_plain_lines_and_nothing_animates() {
    let mut env = Env::new(3);
    three_nodes(&mut env);
    let out = env.rollout("", &["--parallel", "3"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        !err.contains('\r') && !err.contains('\x1b'),
        "no redrawing, no escape codes: {err:?}"
    );
    assert!(!err.contains(SPINNER), "{err}");
    for h in ["host1", "host2", "host3"] {
        assert!(err.contains(&format!("rollout: [{h}] connect")), "{err}");
        assert!(
            err.contains(&format!("rollout: [{h}.system] deployed: activated and confirmed")),
            "{err}"
        );
    }
}

#[test]
fn interactive_asks_at_the_terminal_and_deploys_only_on_yes() {
    let mut env = Env::new(1);
    env.flake
        .node("host1", "host1")
        .profile("system", marker("system").setting("user", serde_json::json!("root")));
    env.write();
    let target = format!("{}#host1", env.flake_dir().display());
    // At a terminal: the plan (as deploy-rs's TOML), the question, and the answer typed there.
    let deployed = env.build("host1", "system");
    let ask = |answer: &str| {
        let tmux = Tmux::start(
            &rollout_line(&[("NO_COLOR", "1")], &[&target, "-s", "-i"]),
            env.flake_dir(),
        );
        let screen = tmux.wait_for("[y/N]", Duration::from_secs(60));
        assert!(screen.contains("[host1.system]"), "the plan is shown: {screen}");
        assert!(screen.contains(&format!("path = \"{deployed}\"")), "{screen}");
        tmux.send(answer);
        tmux.wait_for("EXIT=", Duration::from_secs(60))
    };
    // No, and an empty answer, change nothing.
    for answer in ["n", ""] {
        let screen = ask(answer);
        assert!(
            screen.contains("host1.system (deploy@host1): new profile; "),
            "the diff is shown: {screen}"
        );
        assert!(screen.contains("EXIT=1") && screen.contains("cancelled"), "{screen}");
        assert!(!env.exists("host1", SYSTEM), "nothing deployed on `{answer}`");
    }
    let screen = ask("y");
    assert!(screen.contains("EXIT=0"), "{screen}");
    assert_eq!(env.target_of("host1", SYSTEM), deployed);
    assert_eq!(env.markers("host1", "system").len(), 1, "activated once");
    // The same closure again: nothing to change, and no is still no.
    let screen = ask("n");
    assert!(screen.contains("host1.system (deploy@host1): unchanged"), "{screen}");
    assert!(screen.contains("EXIT=1"), "{screen}");
    assert_eq!(env.link("host1", SYSTEM), "system-1-link");
    assert_eq!(env.markers("host1", "system").len(), 1, "no activation");
}

#[test]
fn interactive_sudo_without_a_terminal_or_a_password_says_how_to_give_one() {
    let mut env = Env::new(1);
    env.flake
        .node("host1", "host1")
        .setting("sshUser", serde_json::json!("deploypw"))
        .setting("interactiveSudo", serde_json::json!(true))
        .profile("system", marker("system").setting("user", serde_json::json!("root")));
    let out = env.rollout("#host1", &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("rollout: error: interactiveSudo needs the sudo password for host1, but stdin is not a terminal"),
        "{err}"
    );
    assert!(err.contains("ROLLOUT_SUDO_PASSWORD"), "{err}");
    assert_eq!(env.fleet.total_auth_count(), 0, "asked before any host is contacted");
}
