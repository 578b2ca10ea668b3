//! deploy-rs command-line flags on a real test fleet: --file, -k/--result-path, --log-dir,
//! --hostname, --ssh-opts, --profile-path, --magic-rollback/--auto-rollback false,
//! --rollback-succeeded false, --activation-timeout, and a cut-off host in netns mode.

mod common;

use common::*;
use rollout_lab::profiles::Profile;
use rollout_lab::Fleet;
use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant};

fn flake_target(env: &Env, fragment: &str) -> String {
    format!("{}{}", env.flake_dir().display(), fragment)
}

/// A root `system` profile on node `host1` (hostname `host1`).
fn system_node(env: &mut Env, p: Profile) {
    env.flake
        .node("host1", "host1")
        .profile("system", p.setting("user", json!("root")));
}

/// Deploy a first good generation of `system` on host1 and return its store path.
fn first_generation(env: &mut Env) -> String {
    system_node(env, marker("system"));
    let out = env.rollout("#host1", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(env.link("host1", SYSTEM), "system-1-link");
    env.target_of("host1", SYSTEM)
}

/// Lines of `--debug-logs` output that show a command being run with program `prog`.
fn commands_of(err: &str, prog: &str) -> usize {
    err.lines()
        .filter(|l| l.contains(&format!("running: {prog} ")) || l.ends_with(&format!("running: {prog}")))
        .count()
}

#[test]
fn file_mode_reads_default_nix_with_nix_instantiate_and_builds_with_nix_build() {
    let mut env = Env::new(1);
    env.flake
        .node("host1", "host1")
        .profiles_order(&["system", "app"])
        .profile("system", marker("system").setting("user", json!("root")))
        .profile("app", marker("app").setting("user", json!("hello")));
    env.write();
    env.flake.write_default_nix().unwrap();
    let dir = env.flake_dir().display().to_string();
    let out = run(&[
        "--file",
        &dir,
        "host1.system",
        "-s",
        "--debug-logs",
        "--confirm-timeout",
        "10",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(
        env.target_of("host1", SYSTEM),
        env.build("host1", "system"),
        "the profile points at the closure"
    );
    assert!(!env.exists("host1", HELLO_APP), "only host1.system was selected");
    assert!(env.markers("host1", "app").is_empty());
    // The settings, then the selected node's paths: no flake command in between.
    assert_eq!(
        commands_of(&err, "nix-instantiate"),
        2,
        "one nix-instantiate for the settings, one for the node: {err}"
    );
    assert!(
        !err.contains("running: nix eval") && !err.contains(" eval --json"),
        "no nix eval in file mode: {err}"
    );
    assert_eq!(commands_of(&err, "nix-build"), 1, "one nix-build: {err}");
    assert!(
        !err.lines()
            .any(|l| l.contains("running: nix build") || l.contains("running: nix --") && l.contains(" build ")),
        "no flake build: {err}"
    );
}

#[test]
fn keep_result_leaves_gc_roots_under_result_path() {
    let mut env = Env::new(1);
    system_node(&mut env, marker("system"));
    let results = tempfile::Builder::new()
        .prefix("rollout-test-results-")
        .tempdir()
        .unwrap();
    let rdir = results.path().join("gc");
    let out = env.rollout("#host1", &["-k", "--result-path", &rdir.display().to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let closure = env.build("host1", "system");
    let root = rdir.join("host1").join("system");
    let meta = std::fs::symlink_metadata(&root).unwrap_or_else(|e| panic!("{} missing: {e}", root.display()));
    assert!(meta.file_type().is_symlink(), "{} is a symlink", root.display());
    assert_eq!(std::fs::canonicalize(&root).unwrap().display().to_string(), closure);
    assert_eq!(env.target_of("host1", SYSTEM), closure);
    let roots = Command::new("nix-store")
        .args(["--gc", "--print-roots"])
        .output()
        .unwrap();
    let roots = String::from_utf8_lossy(&roots.stdout);
    let ours: Vec<&str> = roots
        .lines()
        .filter(|l| l.contains(&rdir.display().to_string()))
        .collect();
    assert!(
        ours.iter()
            .any(|l| l.starts_with(&root.display().to_string()) && l.ends_with(&closure)),
        "{} is a GC root of {closure}: {ours:?}",
        root.display()
    );
}

#[test]
fn log_dir_gets_a_log_file_with_the_phases_of_the_run() {
    let mut env = Env::new(1);
    system_node(&mut env, marker("system"));
    let logs = tempfile::Builder::new().prefix("rollout-test-logs-").tempdir().unwrap();
    let ldir = logs.path().join("logs"); // created by rollout
    let out = env.rollout("#host1", &["--log-dir", &ldir.display().to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let files: Vec<_> = std::fs::read_dir(&ldir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let log = std::fs::read_to_string(&files[0]).unwrap();
    for phase in ["evaluate", "build", "connect", "copy", "activate", "confirm"] {
        assert!(
            log.lines().any(|l| l.contains(&format!("{phase} done"))),
            "`{phase} done` missing in the log:\n{log}"
        );
    }
    assert!(
        log.lines()
            .any(|l| l.contains("[host1.system]") && l.contains("deployed")),
        "outcome in the log:\n{log}"
    );
    // The log is complete (commands included) even without --debug-logs.
    assert!(log.contains("running: "), "{log}");
    assert!(
        stderr(&out).contains(&files[0].display().to_string()),
        "says where the log is"
    );
}

#[test]
fn hostname_flag_overrides_the_flakes_hostname() {
    let mut env = Env::new(2);
    // node host1 points at host2 in the flake; --hostname sends it to host1.
    env.flake
        .node("host1", "host2")
        .profile("system", marker("system").setting("user", json!("root")));
    env.write();
    let target = flake_target(&env, "#host1");
    let plan = run(&["plan", &target, "-s", "--hostname", "host1"]);
    assert_eq!(plan.status.code(), Some(0), "{}", stderr(&plan));
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(plan["deployments"][0]["settings"]["hostname"], "host1", "{plan}");
    let plain = run(&["plan", &target, "-s"]);
    let plain: serde_json::Value = serde_json::from_slice(&plain.stdout).unwrap();
    assert_eq!(plain["deployments"][0]["settings"]["hostname"], "host2");

    let out = env.rollout("#host1", &["--hostname", "host1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(env.target_of("host1", SYSTEM), env.build("host1", "system"));
    assert_eq!(env.markers("host1", "system").len(), 1);
    assert!(env.markers("host2", "system").is_empty(), "host2 untouched");
    assert_eq!(env.target_of("host2", SYSTEM), "");
}

#[test]
fn ssh_opts_flag_replaces_the_flakes_ssh_opts() {
    let mut env = Env::new(1);
    env.flake
        .top_setting("sshOpts", json!(["-F", "/nonexistent/rollout-ssh-config"]));
    system_node(&mut env, marker("system"));
    // With the flake's options ssh cannot even read its config.
    let out = env.rollout("#host1", &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(env.markers("host1", "system").is_empty());

    let opts = format!("-F {}", env.fleet.ssh_config().display());
    let out = env.rollout("#host1", &["--ssh-opts", &opts]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(env.target_of("host1", SYSTEM), env.build("host1", "system"));
    // and the plan shows the replacement, not an addition
    let plan = run(&["plan", &flake_target(&env, "#host1"), "-s", "--ssh-opts", &opts]);
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(
        plan["deployments"][0]["settings"]["sshOpts"],
        json!(["-F", env.fleet.ssh_config().display().to_string()])
    );
}

#[test]
fn profile_path_flag_puts_the_profile_there() {
    let mut env = Env::new(1);
    system_node(&mut env, marker("system"));
    let custom = "/nix/var/nix/profiles/custom-x";
    let out = env.rollout("#host1", &["--profile-path", custom]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let closure = env.build("host1", "system");
    assert_eq!(env.target_of("host1", custom), closure);
    assert_eq!(env.link("host1", custom), "custom-x-1-link");
    assert!(!env.exists("host1", SYSTEM), "the default location is not used");
    assert_eq!(
        env.markers("host1", "system").last().unwrap().profile,
        custom,
        "the activation sees $PROFILE"
    );
}

#[test]
fn magic_rollback_false_keeps_a_cut_off_activation() {
    let mut env = Env::new(1);
    first_generation(&mut env);
    system_node(&mut env, Profile::cut_off("system").salt(salt()));
    let new = env.build("host1", "system");
    let out = env.rollout("#host1", &["--magic-rollback", "false", "--confirm-timeout", "3"]);
    let err = stderr(&out);
    // Wait past the confirm timeout: nothing on the target may roll back.
    std::thread::sleep(Duration::from_secs(5));
    let now = env.target_of("host1", SYSTEM);
    let link = env.link("host1", SYSTEM);
    env.fleet.restart_sshd("host1").unwrap();
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(now, new, "still on the new generation: {err}");
    assert_eq!(link, "system-2-link");
    assert_eq!(
        env.markers("host1", "system").len(),
        2,
        "no re-activation of the old generation"
    );
}

#[test]
fn auto_rollback_false_leaves_the_failed_generation_in_place() {
    let mut env = Env::new(1);
    let good = first_generation(&mut env);
    system_node(&mut env, Profile::failing("system").salt(salt()));
    let bad = env.build("host1", "system");
    let out = env.rollout("#host1", &["--auto-rollback", "false"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "failed, not rolled back: {err}");
    assert_eq!(
        env.target_of("host1", SYSTEM),
        bad,
        "deploy-rs semantics: the failed generation stays: {err}"
    );
    assert_eq!(env.link("host1", SYSTEM), "system-2-link");
    assert!(
        env.exists("host1", "/nix/var/nix/profiles/system-1-link"),
        "the old generation is still there"
    );
    let m = env.markers("host1", "system");
    assert_eq!(m.len(), 2, "no re-activation of {good}: {m:?}");
}

#[test]
fn rollback_succeeded_false_keeps_the_first_profile_when_the_second_fails() {
    let mut env = Env::new(1);
    let pa = "/nix/var/nix/profiles/per-user/root/a";
    let pb = "/nix/var/nix/profiles/per-user/root/b";
    let node = |env: &mut Env, a: Profile, b: Profile| {
        env.flake
            .node("host1", "host1")
            .profiles_order(&["a", "b"])
            .profile("a", a.setting("user", json!("root")))
            .profile("b", b.setting("user", json!("root")));
    };
    node(&mut env, marker("a"), marker("b"));
    assert_eq!(env.rollout("#host1", &[]).status.code(), Some(0));
    let b1 = env.target_of("host1", pb);

    node(&mut env, marker("a"), Profile::failing("b").salt(salt()));
    let a2 = env.build("host1", "a");
    let out = env.rollout("#host1", &["--rollback-succeeded", "false", "--confirm-timeout", "3"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "b was rolled back: {err}");
    assert!(
        err.lines().any(|l| l.contains("[host1.a]") && l.contains("deployed")),
        "a is reported deployed: {err}"
    );
    // Past a's confirm timeout: a must not roll back by itself either.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(env.target_of("host1", pa), a2, "a stays on its new generation: {err}");
    assert_eq!(env.link("host1", pa), "a-2-link");
    assert_eq!(env.markers("host1", "a").len(), 2, "a was not re-activated");
    assert_eq!(
        env.target_of("host1", pb),
        b1,
        "b itself is rolled back (auto rollback)"
    );
}

#[test]
fn activation_timeout_kills_a_hanging_activation_and_rolls_back() {
    let mut env = Env::new(1);
    let good = first_generation(&mut env);
    system_node(&mut env, Profile::hanging("system").salt(salt()));
    let hanging = env.build("host1", "system");
    let t = Instant::now();
    let out = env.rollout("#host1", &["--activation-timeout", "2", "--confirm-timeout", "3"]);
    let took = t.elapsed();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        took < Duration::from_secs(20),
        "killed after ~2 s, took {took:?}: {err}"
    );
    assert!(err.contains("2 s"), "says it timed out: {err}");
    assert_eq!(env.target_of("host1", SYSTEM), good);
    assert_eq!(env.link("host1", SYSTEM), "system-1-link");
    // The hanging activation (its script runs from the salted closure) is gone; the PID namespace may
    // be shared with other tests, so look for this closure only.
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    let left: Vec<&str> = ps.lines().filter(|l| l.contains(&hanging)).collect();
    assert!(left.is_empty(), "the hanging activation was killed: {left:?}");
}

/// Only one netns fleet can be up on the machine: serialize with other processes that take the same
/// lock (held until the returned file is dropped).
struct NetnsLock;

impl NetnsLock {
    fn take() -> std::fs::File {
        use std::os::unix::io::AsRawFd;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open("/tmp/rollout-netns-tests.lock")
            .unwrap();
        // SAFETY: flock on a valid descriptor we own; released when the file is closed.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(r, 0, "flock: {}", std::io::Error::last_os_error());
        f
    }
}

/// Brings the link back up when the test ends, also on a failed assertion.
struct Heal<'a>(&'a Fleet, &'a str);

impl Drop for Heal<'_> {
    fn drop(&mut self) {
        let _ = self.0.heal(self.1);
        let _ = self.0.restart_sshd(self.1);
    }
}

#[test]
fn netns_cut_off_host_rolls_back_by_itself() {
    let _lock = NetnsLock::take();
    let mut env = Env::with_fleet(Fleet::temp_with(1, true).expect("netns fleet up"));
    let good = first_generation(&mut env);
    system_node(&mut env, Profile::cut_off("system").salt(salt()));
    let new = env.build("host1", "system");
    let t = Instant::now();
    let out = {
        let _heal = Heal(&env.fleet, "host1");
        let out = env.rollout("#host1", &["--confirm-timeout", "3"]);
        eprintln!("link state before healing: {:?}", env.fleet.status()[0].link_up);
        out
    };
    let took = t.elapsed();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains("rolls back by itself"),
        "says the target rolls back by itself: {err}"
    );
    assert!(took < Duration::from_secs(60), "gave up in time: {took:?}");
    // healed: the target rolled back within confirmTimeout of the activation, long ago
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.target_of("host1", SYSTEM) != good && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(env.target_of("host1", SYSTEM), good, "rolled back on the target: {err}");
    assert_eq!(env.link("host1", SYSTEM), "system-1-link");
    let m = env.markers("host1", "system");
    assert!(
        m.iter().any(|x| x.out == new),
        "the cut-off generation was activated: {m:?}"
    );
    assert_eq!(m.last().unwrap().out, good, "and the old one re-activated: {m:?}");
}
