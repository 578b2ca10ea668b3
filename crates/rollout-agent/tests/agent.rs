//! End-to-end tests: the real agent binary against real Nix profiles and store paths in temp dirs.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_rollout-agent");

/// One test's sandbox: profile dir, temp path and the marker file activation scripts append to.
struct Env {
    dir: tempfile::TempDir,
}

static SALT: AtomicU32 = AtomicU32::new(0);

fn salt() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}-{}-{t}", std::process::id(), SALT.fetch_add(1, Ordering::SeqCst))
}

/// Builds a store path; `script` (if any) becomes its `deploy-rs-activate`.
fn build(script: Option<&str>) -> PathBuf {
    let expr = r#"{ script, salt }: builtins.derivation {
        name = "rollout-agent-test";
        system = builtins.currentSystem;
        builder = "/bin/sh";
        PATH = "/usr/bin:/bin";
        inherit salt;
        args = [ "-c" (if script == "" then "mkdir $out; echo $salt > $out/salt"
                 else "mkdir $out; cp ${builtins.toFile "deploy-rs-activate" script} $out/deploy-rs-activate; chmod +x $out/deploy-rs-activate") ];
    }"#;
    let salt = salt();
    // Tests run in parallel on a daemon-less local store; a busy SQLite database can make one
    // nix-build give up, so builds are serialised and retried.
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = BUILD.lock().unwrap_or_else(|p| p.into_inner());
    let mut errors = String::new();
    for _ in 0..3 {
        let out = Command::new("nix-build")
            .args([
                "--no-out-link",
                "-E",
                expr,
                "--argstr",
                "script",
                script.unwrap_or(""),
                "--argstr",
                "salt",
                &salt,
            ])
            .output()
            .expect("run nix-build");
        if out.status.success() {
            return PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        }
        errors.push_str(&String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("nix-build failed three times:\n{errors}");
}

/// nix-env for test setup, retried like the agent does when the database is busy.
fn nix_env(profile: &Path, args: &[&str]) {
    let mut errors = String::new();
    for _ in 0..5 {
        let out = Command::new("nix-env")
            .arg("-p")
            .arg(profile)
            .args(args)
            .output()
            .unwrap();
        if out.status.success() {
            return;
        }
        errors.push_str(&String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(Duration::from_secs(1));
    }
    panic!("nix-env {args:?} failed:\n{errors}");
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::Builder::new().prefix("rollout-agent-test").tempdir().unwrap();
        std::fs::create_dir(dir.path().join("profiles")).unwrap();
        Env { dir }
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn profile(&self) -> PathBuf {
        self.path("profiles/test")
    }
    fn temp(&self) -> PathBuf {
        self.path("t")
    }
    fn marker(&self) -> PathBuf {
        self.path("marker")
    }
    /// A closure whose activation records `label PROFILE DRY_ACTIVATE BOOT`, then runs `tail`.
    fn closure(&self, label: &str, tail: &str) -> PathBuf {
        let script = format!(
            "#!/bin/sh\necho \"{label} $PROFILE $DRY_ACTIVATE $BOOT\" >> {}\n{tail}\n",
            self.marker().display()
        );
        build(Some(&script))
    }
    fn marker_lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.marker())
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }
    fn agent(&self, args: &[&str]) -> Output {
        Command::new(BIN).args(args).output().unwrap()
    }
    fn activate(&self, id: &str, closure: &Path, extra: &[&str]) -> Output {
        let (profile, temp) = (self.profile(), self.temp());
        let mut args = vec![
            "activate",
            "--id",
            id,
            "--closure",
            closure.to_str().unwrap(),
            "--profile-path",
            profile.to_str().unwrap(),
            "--temp-path",
            temp.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        self.agent(&args)
    }
    fn cmd(&self, sub: &str, extra: &[&str]) -> Output {
        let temp = self.temp();
        let mut args = vec![sub, "--temp-path", temp.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.agent(&args)
    }
    fn deploy_dir(&self, id: &str) -> PathBuf {
        self.temp()
            .join(format!("rollout-{}", unsafe { libc::geteuid() }))
            .join(id)
    }
    fn status(&self, id: &str) -> Value {
        serde_json::from_slice(&std::fs::read(self.deploy_dir(id).join("status.json")).unwrap()).unwrap()
    }
    fn wait_terminal(&self, id: &str, secs: u64) -> Value {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            let st = self.status(id);
            let s = st["state"].as_str().unwrap().to_string();
            if ["confirmed", "activated", "rolled-back", "failed"].contains(&s.as_str()) || Instant::now() > end {
                return st;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    /// Store path the profile resolves to, or None if the profile is absent.
    fn current(&self) -> Option<PathBuf> {
        std::fs::canonicalize(self.profile()).ok()
    }
    fn gen_link(&self, n: u64) -> PathBuf {
        self.path(&format!("profiles/test-{n}-link"))
    }
}

/// The `ROLLOUT-STATUS` line must be the last line of stdout.
fn reported(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let json = last.strip_prefix("ROLLOUT-STATUS ").unwrap_or_else(|| {
        panic!(
            "no status line in:\n{stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    serde_json::from_str(json).unwrap()
}

fn all_reported(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("ROLLOUT-STATUS "))
        .map(|j| serde_json::from_str(j).unwrap())
        .collect()
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn line(label: &str, profile: &Path, dry: u8, boot: u8) -> String {
    format!("{label} {} {dry} {boot}", profile.display())
}

#[test]
fn plain_activation() {
    let e = Env::new();
    let a = e.closure("A", "echo hello-from-activation");
    let out = e.activate("plain0001", &a, &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let st = reported(&out);
    assert_eq!(st["state"], "activated");
    assert_eq!(st["new_generation"], 1);
    assert!(st["previous_generation"].is_null());
    assert_eq!(e.current(), Some(a.clone()));
    assert_eq!(e.marker_lines(), vec![line("A", &e.profile(), 0, 0)]);
    // Activation output reaches the deployer through the followed log.
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello-from-activation"));
    assert_eq!(code(&e.cmd("status", &["--id", "plain0001"])), 0);
}

#[test]
fn auto_rollback_on_failed_activation() {
    let e = Env::new();
    let a = e.closure("A", "");
    let b = e.closure("B", "exit 1");
    assert_eq!(code(&e.activate("autorb001", &a, &[])), 0);
    let out = e.activate("autorb002", &b, &["--auto-rollback"]);
    assert_eq!(code(&out), 3);
    let st = reported(&out);
    assert_eq!(st["state"], "rolled-back");
    assert_eq!(
        (st["previous_generation"].as_u64(), st["new_generation"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(e.current(), Some(a));
    assert!(!e.gen_link(2).exists(), "failed generation must be deleted");
    let p = e.profile();
    assert_eq!(
        e.marker_lines(),
        vec![line("A", &p, 0, 0), line("B", &p, 0, 0), line("A", &p, 0, 0)]
    );
}

#[test]
fn failed_activation_without_auto_rollback_stays() {
    let e = Env::new();
    let a = e.closure("A", "");
    let b = e.closure("B", "exit 1");
    assert_eq!(code(&e.activate("noauto001", &a, &[])), 0);
    let out = e.activate("noauto002", &b, &[]);
    assert_eq!(code(&out), 1);
    assert_eq!(reported(&out)["state"], "failed");
    assert_eq!(e.current(), Some(b));
}

#[test]
fn magic_rollback_timeout() {
    let e = Env::new();
    let a = e.closure("A", "");
    let b = e.closure("B", "");
    assert_eq!(code(&e.activate("magict001", &a, &[])), 0);
    let out = e.activate("magict002", &b, &["--magic-rollback", "--confirm-timeout", "2"]);
    let started = Instant::now();
    assert_eq!(code(&out), 0);
    assert_eq!(reported(&out)["state"], "awaiting-confirmation");
    assert_eq!(e.current(), Some(b));
    let st = e.wait_terminal("magict002", 15);
    assert_eq!(st["state"], "rolled-back", "{st}");
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert_eq!(e.current(), Some(a));
    assert!(!e.gen_link(2).exists());
    assert_eq!(e.marker_lines().len(), 3, "A, B, A again");
    // Too late: confirming now reports the rollback (exit 3) and leaves no canary behind.
    let c = e.cmd("confirm", &["--id", "magict002", "--wait", "1"]);
    assert_eq!(code(&c), 3);
    assert!(!e.deploy_dir("magict002").join("confirm").exists());
}

#[test]
fn magic_rollback_confirm() {
    let e = Env::new();
    let b = e.closure("B", "");
    let out = e.activate("magicc001", &b, &["--magic-rollback", "--confirm-timeout", "20"]);
    assert_eq!(code(&out), 0);
    let c = e.cmd("confirm", &["--id", "magicc001"]);
    assert_eq!(code(&c), 0, "{}", stderr(&c));
    assert_eq!(reported(&c)["state"], "confirmed");
    assert_eq!(e.current(), Some(b));
    assert!(
        !e.deploy_dir("magicc001").join("confirm").exists(),
        "canary must not survive"
    );
}

#[test]
fn magic_rollback_extend() {
    let e = Env::new();
    let b = e.closure("B", "");
    let out = e.activate("magice001", &b, &["--magic-rollback", "--confirm-timeout", "2"]);
    let t0 = Instant::now();
    assert_eq!(code(&out), 0);
    std::thread::sleep(Duration::from_millis(1200).saturating_sub(t0.elapsed()));
    assert_eq!(code(&e.cmd("extend", &["--id", "magice001"])), 0);
    std::thread::sleep(Duration::from_millis(2600).saturating_sub(t0.elapsed()));
    assert_eq!(
        e.status("magice001")["state"],
        "awaiting-confirmation",
        "extend must push the deadline"
    );
    let c = e.cmd("confirm", &["--id", "magice001"]);
    assert_eq!(code(&c), 0);
    assert_eq!(e.current(), Some(b));
    assert!(!e.deploy_dir("magice001").join("heartbeat").exists());
}

#[test]
fn magic_rollback_abort() {
    let e = Env::new();
    let a = e.closure("A", "");
    let b = e.closure("B", "");
    assert_eq!(code(&e.activate("magica001", &a, &[])), 0);
    assert_eq!(
        code(&e.activate("magica002", &b, &["--magic-rollback", "--confirm-timeout", "60"])),
        0
    );
    let t0 = Instant::now();
    let out = e.cmd("abort", &["--id", "magica002", "--wait", "20"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(reported(&out)["state"], "rolled-back");
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert_eq!(e.current(), Some(a));
    assert!(!e.deploy_dir("magica002").join("abort").exists());
}

#[test]
fn reused_id_and_stale_canaries() {
    let e = Env::new();
    let a = e.closure("A", "");
    let b = e.closure("B", "");
    assert_eq!(code(&e.activate("reuse0001", &a, &[])), 0);
    let out = e.activate("reuse0001", &b, &[]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert_eq!(
        e.current(),
        Some(a.clone()),
        "refused deploy must not touch the profile"
    );
    // A leftover dir (e.g. from a crashed run) is refused the same way, even with a canary in it.
    std::fs::create_dir(e.deploy_dir("stale0001")).unwrap();
    std::fs::write(e.deploy_dir("stale0001").join("confirm"), "").unwrap();
    assert_eq!(code(&e.activate("stale0001", &b, &["--magic-rollback"])), 1);
    assert_eq!(e.current(), Some(a));
    // Confirming a finished (non-magic) deploy creates no canary.
    let c = e.cmd("confirm", &["--id", "reuse0001", "--wait", "0"]);
    assert_eq!(code(&c), 1);
    assert_eq!(reported(&c)["state"], "activated");
    assert!(!e.deploy_dir("reuse0001").join("confirm").exists());
    // Unknown IDs.
    let u = e.cmd("confirm", &["--id", "unknown01", "--wait", "0"]);
    assert_eq!(code(&u), 1);
    assert!(stderr(&u).contains("unknown deploy id unknown01"));
    assert_eq!(code(&e.cmd("status", &["--id", "unknown01"])), 1);
}

#[test]
fn survives_killed_foreground() {
    let e = Env::new();
    let a = e.closure("A", "");
    // Prints after the foreground is gone: with stdout on a dead SSH pipe this would die of SIGPIPE.
    let b = e.closure("B", "sleep 1\necho output-after-kill");
    assert_eq!(code(&e.activate("killfg001", &a, &[])), 0);
    let mut child = Command::new(BIN)
        .args([
            "activate",
            "--id",
            "killfg002",
            "--closure",
            b.to_str().unwrap(),
            "--profile-path",
            e.profile().to_str().unwrap(),
            "--temp-path",
            e.temp().to_str().unwrap(),
            "--magic-rollback",
            "--confirm-timeout",
            "2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill as soon as the activation script is running.
    let end = Instant::now() + Duration::from_secs(10);
    while !e.marker_lines().iter().any(|l| l.starts_with("B ")) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL to exactly the process we spawned
    drop(child.stdout.take()); // and close the "SSH channel"
    child.wait().unwrap();
    let st = e.wait_terminal("killfg002", 20);
    assert_eq!(st["state"], "rolled-back", "{st}");
    assert_eq!(e.current(), Some(a));
    let log = std::fs::read_to_string(e.deploy_dir("killfg002").join("log")).unwrap();
    assert!(log.contains("output-after-kill"), "{log}");
}

#[test]
fn dry_activate() {
    let e = Env::new();
    let a = e.closure("A", "");
    let b = e.closure("B", "");
    let c = e.closure("C", "exit 1");
    assert_eq!(code(&e.activate("dryact001", &a, &[])), 0);
    let out = e.activate(
        "dryact002",
        &b,
        &["--dry-activate", "--magic-rollback", "--auto-rollback"],
    );
    assert_eq!(code(&out), 0);
    assert_eq!(reported(&out)["state"], "activated");
    assert_eq!(e.current(), Some(a.clone()));
    let out = e.activate("dryact003", &c, &["--dry-activate", "--auto-rollback"]);
    assert_eq!(code(&out), 1);
    assert_eq!(reported(&out)["state"], "failed");
    assert_eq!(e.current(), Some(a));
    assert!(!e.gen_link(2).exists());
    let lines = e.marker_lines();
    assert_eq!(lines[1], line("B", &b, 1, 0));
    assert_eq!(lines[2], line("C", &c, 1, 0));
    assert_eq!(lines.len(), 3);
}

#[test]
fn boot_skips_confirmation() {
    let e = Env::new();
    let b = e.closure("B", "");
    let out = e.activate(
        "bootac001",
        &b,
        &["--boot", "--magic-rollback", "--confirm-timeout", "1"],
    );
    assert_eq!(code(&out), 0);
    assert_eq!(reported(&out)["state"], "activated");
    assert_eq!(e.current(), Some(b));
    assert_eq!(e.marker_lines(), vec![line("B", &e.profile(), 0, 1)]);
}

#[test]
fn boot_failure_rolls_back_in_switch_mode() {
    let e = Env::new();
    let a = e.closure("A", "");
    let b = e.closure("B", "exit 1");
    assert_eq!(code(&e.activate("bootfl001", &a, &[])), 0);
    assert_eq!(code(&e.activate("bootfl002", &b, &["--boot", "--auto-rollback"])), 3);
    let p = e.profile();
    assert_eq!(
        e.marker_lines(),
        vec![line("A", &p, 0, 0), line("B", &p, 0, 1), line("A", &p, 0, 0)]
    );
}

#[test]
fn activation_timeout_kills_group() {
    let e = Env::new();
    let a = e.closure("A", "");
    let pidfile = e.path("sleep.pid");
    let b = e.closure("B", &format!("sleep 1000 &\necho $! > {}\nwait", pidfile.display()));
    assert_eq!(code(&e.activate("actto0001", &a, &[])), 0);
    let t0 = Instant::now();
    let out = e.activate("actto0002", &b, &["--activation-timeout", "2", "--auto-rollback"]);
    assert_eq!(code(&out), 3);
    let st = reported(&out);
    assert!(
        st["message"].as_str().unwrap().contains("did not finish within 2 s"),
        "{st}"
    );
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert_eq!(e.current(), Some(a));
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    // The grandchild got SIGTERM with its group; give the kernel a moment to reap it.
    std::thread::sleep(Duration::from_millis(300));
    let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false);
    assert!(!alive, "sleep {pid} survived the activation timeout");
}

#[test]
fn first_deploy_failure_removes_profile() {
    let e = Env::new();
    let b = e.closure("B", "exit 1");
    let out = e.activate("first0001", &b, &["--auto-rollback"]);
    assert_eq!(code(&out), 3);
    let st = reported(&out);
    assert_eq!(st["state"], "rolled-back");
    assert!(st["previous_generation"].is_null());
    assert!(
        std::fs::symlink_metadata(e.profile()).is_err(),
        "profile must be absent"
    );
    assert!(
        std::fs::symlink_metadata(e.gen_link(1)).is_err(),
        "generation link must be gone"
    );
}

#[test]
fn previous_generation_without_activation_script() {
    let e = Env::new();
    let plain = build(None);
    nix_env(&e.profile(), &["--set", plain.to_str().unwrap()]);
    let b = e.closure("B", "exit 1");
    let out = e.activate("noscrpt01", &b, &["--auto-rollback"]);
    assert_eq!(code(&out), 3);
    let st = reported(&out);
    assert_eq!(st["state"], "rolled-back");
    assert!(
        st["message"].as_str().unwrap().contains("could not be re-activated"),
        "{st}"
    );
    assert_eq!(e.current(), Some(plain));
}

#[test]
fn revoke_confirmed_deploy() {
    let e = Env::new();
    let a = e.closure("A", "");
    let b = e.closure("B", "");
    let c = e.closure("C", "");
    assert_eq!(code(&e.activate("revoke001", &a, &[])), 0);
    assert_eq!(
        code(&e.activate("revoke002", &b, &["--magic-rollback", "--confirm-timeout", "20"])),
        0
    );
    assert_eq!(code(&e.cmd("confirm", &["--id", "revoke002"])), 0);
    let p = e.profile();
    let ps = p.to_str().unwrap();
    let t = e.temp();
    let ts = t.to_str().unwrap();
    let bs = b.to_str().unwrap();
    let out = e.agent(&[
        "revoke",
        "--profile-path",
        ps,
        "--closure",
        bs,
        "--generation",
        "2",
        "--previous",
        "1",
        "--temp-path",
        ts,
    ]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(reported(&out)["state"], "rolled-back");
    assert_eq!(e.current(), Some(a));
    assert!(!e.gen_link(2).exists());
    assert_eq!(e.marker_lines().last().unwrap(), &line("A", &p, 0, 0));
    // Someone deployed since. Nix reuses the freed number, so C is generation 2 again: the number
    // matches, the closure does not, and the revoke is refused without touching anything.
    assert_eq!(code(&e.activate("revoke003", &c, &[])), 0);
    assert_eq!(e.status("revoke003")["new_generation"], 2);
    let out = e.agent(&[
        "revoke",
        "--profile-path",
        ps,
        "--closure",
        bs,
        "--generation",
        "2",
        "--previous",
        "1",
        "--temp-path",
        ts,
    ]);
    assert_eq!(code(&out), 1);
    assert!(reported(&out)["message"].as_str().unwrap().contains("refusing"));
    assert_eq!(e.current(), Some(c.clone()));
    // And a plain number mismatch is refused too.
    let cs = c.to_str().unwrap();
    let out = e.agent(&[
        "revoke",
        "--profile-path",
        ps,
        "--closure",
        cs,
        "--generation",
        "5",
        "--previous",
        "1",
        "--temp-path",
        ts,
    ]);
    assert_eq!(code(&out), 1);
    assert!(reported(&out)["message"].as_str().unwrap().contains("not generation 5"));
    assert_eq!(e.current(), Some(c.clone()));
    assert_eq!(e.marker_lines().len(), 4, "A, B, A (revoke), C");
}

#[test]
fn temp_path_created_and_state_roots_others_made_neither_used_nor_blocking() {
    use std::os::unix::fs::PermissionsExt;
    let e = Env::new();
    let a = e.closure("A", "");
    let uid = unsafe { libc::geteuid() };
    let p = e.profile();
    let run = |temp: &Path, id: &str| {
        e.agent(&[
            "activate",
            "--id",
            id,
            "--closure",
            a.to_str().unwrap(),
            "--profile-path",
            p.to_str().unwrap(),
            "--temp-path",
            temp.to_str().unwrap(),
        ])
    };
    let deep = e.path("does/not/exist");
    assert_eq!(code(&run(&deep, "tmpath001")), 0);
    let meta = std::fs::metadata(deep.join(format!("rollout-{uid}"))).unwrap();
    assert_eq!(PermissionsExt::mode(&meta.permissions()) & 0o777, 0o700);

    // A root of the wrong mode, a symlink to elsewhere, a root owned by someone else: none is used,
    // none blocks the deploy (it gets a fresh root of its own), and status finds the deploy again.
    let wide = e.path("wide");
    std::fs::create_dir_all(wide.join(format!("rollout-{uid}"))).unwrap();
    std::fs::set_permissions(
        wide.join(format!("rollout-{uid}")),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let link = e.path("link");
    std::fs::create_dir_all(&link).unwrap();
    std::fs::create_dir(e.path("elsewhere")).unwrap();
    std::fs::set_permissions(e.path("elsewhere"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink(e.path("elsewhere"), link.join(format!("rollout-{uid}"))).unwrap();
    let mut cases = vec![(wide, "tmpath002"), (link, "tmpath003")];
    if uid == 0 {
        let owned = e.path("owned");
        let r = owned.join("rollout-0");
        std::fs::create_dir_all(&r).unwrap();
        std::fs::set_permissions(&r, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&r, Some(4321), None).unwrap();
        cases.push((owned, "tmpath004"));
    }
    for (temp, id) in &cases {
        let out = run(temp, id);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert!(stdout(&out).contains("is not ours"), "{}", stdout(&out));
        let squatted = temp.join(format!("rollout-{uid}"));
        assert!(
            std::fs::read_dir(&squatted).unwrap().next().is_none(),
            "nothing written into {squatted:?}"
        );
        let st = e.agent(&["status", "--id", id, "--temp-path", temp.to_str().unwrap()]);
        assert_eq!(code(&st), 0, "{}", stderr(&st));
        assert_eq!(reported(&st)["state"], "activated");
    }
    assert!(std::fs::read_dir(e.path("elsewhere")).unwrap().next().is_none());

    // An ancestor that other users can write without the sticky bit is refused before anything.
    let open = e.path("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = run(&open.join("tp"), "tmpath005");
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("without the sticky bit"), "{}", stderr(&out));
    assert_eq!(
        e.marker_lines().len(),
        1 + cases.len(),
        "the refused run must not activate anything"
    );
}

#[test]
fn second_deploy_of_a_locked_profile_waits_for_the_first_and_says_for_whom() {
    let e = Env::new();
    let a = e.closure("A", "");
    let b = e.closure("B", "");
    assert_eq!(
        code(&e.activate("locked001", &a, &["--magic-rollback", "--confirm-timeout", "30"])),
        0
    );
    let temp = e.temp();
    let second = Command::new(BIN)
        .args([
            "activate",
            "--id",
            "locked002",
            "--closure",
            b.to_str().unwrap(),
            "--profile-path",
        ])
        .arg(e.profile())
        .arg("--temp-path")
        .arg(&temp)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        e.current(),
        Some(a.clone()),
        "the second deploy must not touch the profile yet"
    );
    assert_eq!(code(&e.cmd("confirm", &["--id", "locked001"])), 0);
    let out = second.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("waiting for deploy locked001"),
        "{}",
        stdout(&out)
    );
    assert_eq!(e.current(), Some(b));
    assert!(e
        .profile()
        .with_file_name(format!(
            "{}.rollout-lock",
            e.profile().file_name().unwrap().to_string_lossy()
        ))
        .exists());
}

#[test]
fn a_deployer_of_another_protocol_is_refused_before_anything_is_created() {
    let e = Env::new();
    let a = e.closure("A", "");
    let temp = e.path("proto-tmp");
    let out = e.agent(&[
        "--protocol",
        "99",
        "activate",
        "--id",
        "proto0001",
        "--closure",
        a.to_str().unwrap(),
        "--profile-path",
        e.profile().to_str().unwrap(),
        "--temp-path",
        temp.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 5);
    assert!(stderr(&out).contains("protocol mismatch"), "{}", stderr(&out));
    assert!(!temp.exists(), "nothing created");
    assert_eq!(e.current(), None);
    let v = e.agent(&["--version"]);
    let want = format!("(protocol {})", rollout_protocol::PROTOCOL_VERSION);
    assert!(stdout(&v).contains(&want), "{}", stdout(&v));
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    let e = Env::new();
    for (args, needle) in [
        (
            vec![
                "activate",
                "--id",
                "x",
                "--closure",
                "/nix/store/x",
                "--profile-path",
                "/p",
            ],
            "--id 'x'",
        ),
        (
            vec!["activate", "--id", "abcdefgh", "--profile-path", "/p"],
            "--closure is required",
        ),
        (
            vec![
                "activate",
                "--id",
                "abcdefgh",
                "--closure",
                "/x",
                "--profile-path",
                "/p",
                "--confirm-timeout",
                "soon",
            ],
            "--confirm-timeout",
        ),
        (vec!["confirm"], "--id is required"),
        (vec!["nonsense"], "unknown command"),
        (vec![], "missing command"),
    ] {
        let out = e.agent(&args);
        assert_eq!(code(&out), 2, "{args:?}");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn multiple_ids_confirm_and_status_lines() {
    let e = Env::new();
    let a = e.closure("A", "");
    let e2 = Env::new();
    let b = e2.closure("B", "");
    assert_eq!(
        code(&e.activate("multi0001", &a, &["--magic-rollback", "--confirm-timeout", "20"])),
        0
    );
    // Second profile, same temp path.
    let out = e.agent(&[
        "activate",
        "--id",
        "multi0002",
        "--closure",
        b.to_str().unwrap(),
        "--profile-path",
        e.path("profiles/other").to_str().unwrap(),
        "--temp-path",
        e.temp().to_str().unwrap(),
        "--magic-rollback",
        "--confirm-timeout",
        "20",
    ]);
    assert_eq!(code(&out), 0);
    let c = e.cmd("confirm", &["--id", "multi0001", "--id", "multi0002"]);
    assert_eq!(code(&c), 0);
    let states: Vec<_> = all_reported(&c)
        .iter()
        .map(|s| s["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(states, vec!["confirmed", "confirmed"]);
}

#[test]
fn reused_generation_survives_rollback() {
    let e = Env::new();
    let a = e.closure("A", "");
    let b = e.closure("B", "exit 1");
    assert_eq!(code(&e.activate("reusegen1", &a, &[])), 0);
    assert_eq!(code(&e.activate("reusegen2", &b, &[])), 1); // no auto-rollback: stays on gen 2
    nix_env(&e.profile(), &["--switch-generation", "1"]);
    // nix-env reuses generation 2 (newest, same closure); rolling back must not delete it.
    let out = e.activate("reusegen3", &b, &["--auto-rollback"]);
    assert_eq!(code(&out), 3);
    let st = reported(&out);
    assert_eq!(
        (st["previous_generation"].as_u64(), st["new_generation"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(e.current(), Some(a));
    assert!(
        std::fs::symlink_metadata(e.gen_link(2)).is_ok(),
        "pre-existing generation 2 was deleted"
    );
}

#[test]
fn profile_user_and_name_resolution() {
    // (NIX_STATE_DIR cannot be redirected here: it also moves Nix's own database. The root cases
    // are covered by the unit tests of profile::resolve.)
    let e = Env::new();
    let a = e.closure("A", "");
    let home = e.path("home");
    let xdg = e.path("xdg");
    let temp = e.temp();
    let user = "rollout-test-nobody";
    assert!(!Path::new("/nix/var/nix/profiles/per-user").join(user).exists());
    let run = |id: &str, with_xdg: bool| {
        let mut c = Command::new(BIN);
        c.args([
            "activate",
            "--id",
            id,
            "--closure",
            a.to_str().unwrap(),
            "--profile-user",
            user,
            "--profile-name",
            "hm",
            "--temp-path",
            temp.to_str().unwrap(),
        ])
        .env("HOME", &home)
        .env_remove("XDG_STATE_HOME")
        .env_remove("NIX_STATE_DIR");
        if with_xdg {
            c.env("XDG_STATE_HOME", &xdg);
        }
        c.output().unwrap()
    };
    for (id, with_xdg, expect) in [
        ("resolve01", false, home.join(".local/state/nix/profiles/hm")),
        ("resolve02", true, xdg.join("nix/profiles/hm")),
    ] {
        let out = run(id, with_xdg);
        assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stdout));
        assert_eq!(reported(&out)["profile_path"], expect.to_str().unwrap());
        assert_eq!(
            std::fs::canonicalize(&expect).unwrap(),
            a,
            "parent directory created, profile set"
        );
    }
}

#[test]
fn abort_output_includes_rollback_log() {
    let e = Env::new();
    let a = e.closure("A", "echo reactivating-A");
    let b = e.closure("B", "");
    assert_eq!(code(&e.activate("abortlog1", &a, &[])), 0);
    assert_eq!(
        code(&e.activate("abortlog2", &b, &["--magic-rollback", "--confirm-timeout", "60"])),
        0
    );
    let out = e.cmd("abort", &["--id", "abortlog2", "--wait", "20"]);
    assert_eq!(code(&out), 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("reactivating-A"), "{text}");
    assert!(text.lines().last().unwrap().starts_with("ROLLOUT-STATUS "));
    // Aborting a deploy that is already over changes nothing and reports it.
    let again = e.cmd("abort", &["--id", "abortlog1", "--wait", "0"]);
    assert_eq!(code(&again), 1, "activated deploy cannot be aborted");
    assert!(!e.deploy_dir("abortlog1").join("abort").exists());
}

#[test]
fn revoke_first_deploy_removes_profile() {
    let e = Env::new();
    let a = e.closure("A", "");
    assert_eq!(code(&e.activate("revfirst1", &a, &[])), 0);
    let (p, t) = (e.profile(), e.temp());
    let out = e.agent(&[
        "revoke",
        "--profile-path",
        p.to_str().unwrap(),
        "--closure",
        a.to_str().unwrap(),
        "--generation",
        "1",
        "--temp-path",
        t.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stdout));
    let st = reported(&out);
    assert_eq!(st["state"], "rolled-back");
    assert!(st["id"].as_str().unwrap().starts_with("revoke-1-"));
    assert!(std::fs::symlink_metadata(&p).is_err());
    assert!(std::fs::symlink_metadata(e.gen_link(1)).is_err());
}
