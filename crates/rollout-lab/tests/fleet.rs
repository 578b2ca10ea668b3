//! Fleet integration tests: real hosts (namespaces, nix-daemon, sshd), nix copy, sudo, teardown.

use rollout_lab::testing as common;

use std::sync::Mutex;

use common::*;
use rollout_lab::{process_alive, Fleet};

#[test]
fn copy_sudo_and_users() {
    require_root();
    let fleet = Fleet::temp(2).expect("fleet up");
    assert_eq!(fleet.host_names(), vec!["host1", "host2"]);
    let p = fresh_store_path("copy");

    let o = nix_copy(&fleet, "ssh://deploy@host1", &p);
    assert!(o.status.success(), "nix copy: {}", String::from_utf8_lossy(&o.stderr));

    let o = ssh(&fleet, "host1", &["nix-store", "--check-validity", &p]);
    assert!(
        o.status.success(),
        "not valid on host1: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(fleet
        .exec("host1", &["nix-store", "--check-validity", &p])
        .unwrap()
        .status
        .success());
    assert!(
        !ssh(&fleet, "host2", &["nix-store", "--check-validity", &p])
            .status
            .success(),
        "path leaked to host2"
    );
    assert!(!fleet
        .exec("host2", &["nix-store", "--check-validity", &p])
        .unwrap()
        .status
        .success());
    assert!(!fleet.exec("host2", &["test", "-e", &p]).unwrap().status.success());

    // deploy: passwordless sudo
    let o = ssh(&fleet, "deploy@host1", &["sudo", "-n", "true"]);
    assert!(
        o.status.success(),
        "deploy sudo: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    // deploypw: sudo needs the password, given on stdin without a tty
    assert!(!ssh(&fleet, "deploypw@host1", &["sudo", "-n", "true"]).status.success());
    let o = ssh_input(
        &fleet,
        "deploypw@host1",
        &["sudo -S -p '' id -un"],
        &format!("{}\n", fleet.sudo_password()),
    );
    assert!(
        o.status.success(),
        "deploypw sudo -S: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(stdout(&o), "root");
    assert!(
        !ssh_input(&fleet, "deploypw@host1", &["sudo -S -p '' true"], "wrong-password\n")
            .status
            .success()
    );

    // hello: plain user
    let o = ssh(&fleet, "hello@host1", &["sh", "-c", "hostname; id -un"]);
    assert_eq!(stdout(&o), "host1\nhello");
    assert_eq!(fleet.exec_ok("host2", &["hostname"]).unwrap(), "host2");
    assert!(
        fleet.sshd_auth_count("host1") >= 6,
        "auth count {}",
        fleet.sshd_auth_count("host1")
    );

    let _ = std::process::Command::new("nix-store").args(["--delete", &p]).output();
}

#[test]
fn kill_and_restart_sshd() {
    require_root();
    let fleet = Fleet::temp(1).expect("fleet up");
    assert!(ssh(&fleet, "host1", &["true"]).status.success());
    let before = fleet.sshd_auth_count("host1");
    assert_eq!(before, 1);
    fleet.kill_sshd("host1").unwrap();
    assert!(!fleet.status()[0].listening);
    assert!(!ssh(&fleet, "host1", &["true"]).status.success());
    // exec works without sshd
    assert_eq!(fleet.exec_ok("host1", &["hostname"]).unwrap(), "host1");
    fleet.restart_sshd("host1").unwrap();
    assert!(ssh(&fleet, "host1", &["true"]).status.success());
    assert_eq!(fleet.sshd_auth_count("host1"), before + 1);
    let pid = fleet
        .exec_ok("host1", &["cat", "/nix/var/rollout-lab/sshd.pid"])
        .unwrap();
    assert_eq!(Some(pid.parse::<u32>().unwrap()), fleet.status()[0].sshd);
    // bad input
    assert!(fleet.exec("host9", &["true"]).is_err());
    assert!(fleet.exec("nothost", &["true"]).is_err());
}

fn assert_gone(dir: &std::path::Path, recorded: &[(u32, u64)]) {
    assert!(!recorded.is_empty());
    for &(pid, start) in recorded {
        assert!(!process_alive(pid, start), "recorded process {pid} still alive");
    }
    assert!(mounted_below(dir).is_empty(), "mounts left: {:?}", mounted_below(dir));
    assert!(!dir.exists(), "state dir {} not removed", dir.display());
}

#[test]
fn down_stops_everything() {
    require_root();
    let mut fleet = Fleet::temp(2).expect("fleet up");
    let dir = fleet.state_dir().to_path_buf();
    // leave a session and a background process inside a host
    let _ = fleet
        .exec("host1", &["sh", "-c", "setsid sleep 300 >/dev/null 2>&1 < /dev/null &"])
        .unwrap();
    let mut sess = std::process::Command::new("ssh")
        .arg("-F")
        .arg(fleet.ssh_config())
        .args(["hello@host2", "sleep", "300"])
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(800));
    let inside = fleet.host_processes("host1").unwrap();
    assert!(inside.len() >= 3, "holder, daemon, sshd, sleep: {inside:?}");
    let recorded = fleet.recorded_processes();
    let all_inside: Vec<(u32, u64)> = fleet
        .host_names()
        .iter()
        .flat_map(|h| fleet.host_processes(h).unwrap())
        .filter_map(|p| rollout_lab::process_start_time(p).map(|t| (p, t)))
        .collect();
    fleet.down().expect("down");
    assert_gone(&dir, &recorded);
    for (p, t) in all_inside {
        assert!(!process_alive(p, t), "process {p} of a host survived down");
    }
    let _ = sess.wait();
    fleet.down().expect("down is idempotent");
}

type Seen = (std::path::PathBuf, Vec<(u32, u64)>);

#[test]
fn teardown_after_panic() {
    require_root();
    let seen: Mutex<Option<Seen>> = Mutex::new(None);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let fleet = Fleet::temp(1).expect("fleet up");
        *seen.lock().unwrap() = Some((fleet.state_dir().to_path_buf(), fleet.recorded_processes()));
        assert!(fleet.status()[0].listening);
        panic!("test body panicked on purpose");
    }));
    assert!(r.is_err());
    let (dir, recorded) = seen.lock().unwrap().take().expect("fleet was started");
    assert_gone(&dir, &recorded);
}

#[test]
fn attach_and_already_up() {
    require_root();
    let fleet = Fleet::temp(1).expect("fleet up");
    let a = Fleet::attach(fleet.state_dir()).unwrap();
    assert_eq!(a.host(1), fleet.host(1));
    assert!(a.status()[0].listening);
    drop(a); // attached handles do not tear down
    assert!(fleet.status()[0].listening);
    let opts = rollout_lab::LabOptions {
        state_dir: fleet.state_dir().to_path_buf(),
        netns: false,
        port: 0,
        keep_state: false,
    };
    match Fleet::up(1, opts) {
        Err(rollout_lab::LabError::AlreadyUp { .. }) => {}
        other => panic!("expected AlreadyUp, got {other:?}"),
    }
    assert!(fleet.status()[0].listening);
}

#[test]
fn netns_cut_and_heal() {
    require_root();
    let fleet = Fleet::temp_with(2, true).expect("netns fleet up");
    assert_eq!(fleet.host(1).address.to_string(), "10.77.1.2");
    assert!(ssh(&fleet, "host1", &["true"]).status.success());
    fleet.cut("host1").unwrap();
    assert_eq!(fleet.status()[0].link_up, Some(false));
    let t = std::time::Instant::now();
    assert!(!ssh(&fleet, "host1", &["-o", "ConnectTimeout=2", "true"])
        .status
        .success());
    assert!(t.elapsed().as_secs() < 10);
    assert!(
        ssh(&fleet, "host2", &["true"]).status.success(),
        "other hosts unaffected"
    );
    fleet.heal("host1").unwrap();
    let o = ssh(&fleet, "host1", &["ip", "-4", "-o", "addr", "show"]);
    assert!(o.status.success(), "after heal: {}", String::from_utf8_lossy(&o.stderr));
    let addrs = stdout(&o);
    assert!(
        addrs.contains("10.77.1.2/30") && addrs.contains("127.0.0.1/8"),
        "{addrs}"
    );
    assert_eq!(addrs.lines().count(), 2, "only lo and the veth: {addrs}");
}

/// Helper run in a child process by `gc_collects_leaked_fleet`: starts a fleet, prints its state dir and
/// waits to be killed.
#[test]
#[ignore = "helper for gc_collects_leaked_fleet"]
fn helper_leak_fleet() {
    if std::env::var_os("ROLLOUT_LAB_LEAK_HELPER").is_none() {
        return;
    }
    let fleet = Fleet::temp(1).expect("fleet up");
    println!("STATE {}", fleet.state_dir().display());
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    std::thread::sleep(std::time::Duration::from_secs(120));
}

#[test]
fn gc_collects_leaked_fleet() {
    require_root();
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_leak_fleet",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("ROLLOUT_LAB_LEAK_HELPER", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut dir = None;
    for line in std::io::BufReader::new(out).lines() {
        let line = line.unwrap();
        // libtest may print "test helper_leak_fleet ... " on the same line
        if let Some(pos) = line.find("STATE /") {
            dir = Some(std::path::PathBuf::from(line[pos + 6..].trim()));
            break;
        }
    }
    let Some(dir) = dir else {
        let _ = child.kill();
        panic!("helper did not print its state dir");
    };
    child.kill().unwrap(); // SIGKILL: no Drop runs
    child.wait().unwrap();
    let leaked = Fleet::attach(&dir).unwrap();
    assert!(leaked.is_orphaned());
    assert!(leaked.status()[0].listening, "hosts outlive their killed owner");
    let recorded = leaked.recorded_processes();
    let collected = Fleet::gc(false).unwrap();
    assert!(collected.contains(&dir), "{collected:?}");
    assert_gone(&dir, &recorded);
}
