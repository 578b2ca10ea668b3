//! Health checks decide the confirmation, on the test fleet: target-side commands (as the profile
//! user), deployer-side HTTP checks against a server this test runs, retries, the fleet policy
//! (whole fleet rolled back, `--keep-going`, canaries), and the checks in JSON events.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A tiny HTTP server on 127.0.0.1: `/ok/…` answers 200, `/fail/…` 503. Stopped on drop.
struct Server {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start() -> Server {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let Ok((mut c, _)) = l.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    continue;
                };
                let _ = c.set_nonblocking(false);
                let mut got = Vec::new();
                let mut buf = [0u8; 1024];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let req = String::from_utf8_lossy(&got);
                let code = if req.starts_with("GET /ok/") {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                };
                let _ = write!(c, "HTTP/1.1 {code}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        });
        Server {
            port,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn hosts(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("host{i}")).collect()
}

/// Every host: a `system` marker profile (root) with the checks `checks(host)`.
fn fleet(env: &mut Env, n: usize, checks: impl Fn(&str) -> Value) {
    for h in hosts(n) {
        env.flake.node(&h, &h).profile(
            "system",
            marker("system")
                .setting("user", json!("root"))
                .setting("healthChecks", checks(&h)),
        );
    }
}

#[test]
fn a_failing_target_check_rolls_the_node_back_and_its_output_is_an_event() {
    let mut env = Env::new(1);
    fleet(&mut env, 1, |_| json!([]));
    assert_eq!(env.rollout("#host1", &[]).status.code(), Some(0));
    let v1 = env.target_of("host1", SYSTEM);
    fleet(
        &mut env,
        1,
        |_| json!([{ "name": "service up", "command": ["sh", "-c", "echo 'nginx: inactive' >&2; exit 3"], "retries": 1, "interval": 0 }]),
    );
    let out = env.rollout("#host1", &["--json"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "exits as a rollback: {err}");
    assert_eq!(env.target_of("host1", SYSTEM), v1, "back on the previous generation");
    assert_eq!(
        env.markers("host1", "system").last().unwrap().out,
        v1,
        "v1 re-activated"
    );
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let check = events
        .iter()
        .find(|e| e["event"] == "health-check")
        .unwrap_or_else(|| panic!("a health-check event: {events:?}"));
    assert_eq!(check["name"], "service up");
    assert_eq!(check["passed"], false);
    assert_eq!(check["attempts"], 2, "the first attempt and one retry");
    assert_eq!(check["output"], "nginx: inactive");
    let outcome = events.iter().find(|e| e["event"] == "outcome").unwrap();
    assert!(
        outcome["message"]
            .as_str()
            .unwrap()
            .contains("health check `service up`"),
        "{outcome}"
    );
}

#[test]
fn a_check_that_passes_on_its_second_attempt_confirms() {
    let mut env = Env::new(1);
    // First attempt: creates the flag and fails; second: finds it and passes. As the profile user.
    let flag = format!("/tmp/rollout-health-{}", salt());
    fleet(
        &mut env,
        1,
        |_| json!([{ "command": ["sh", "-c", format!("test \"$(id -un)\" = root && {{ test -e {flag} || {{ touch {flag}; exit 1; }}; }}")], "interval": 1 }]),
    );
    let out = env.rollout("#host1", &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("passed after 2 attempt(s)"), "{err}");
    assert_eq!(env.target_of("host1", SYSTEM), env.build("host1", "system"));
}

#[test]
fn a_failing_deployer_http_check_on_one_node_rolls_back_all_three_unless_keep_going() {
    let server = Server::start();
    let mut env = Env::new(3);
    fleet(&mut env, 3, |_| json!([]));
    assert_eq!(env.rollout("", &[]).status.code(), Some(0));
    let before: Vec<String> = hosts(3).iter().map(|h| env.target_of(h, SYSTEM)).collect();

    let check = |h: &str| {
        let path = if h == "host2" {
            format!("/fail/{h}")
        } else {
            format!("/ok/{h}")
        };
        json!([{ "http": server.url(&path), "on": "deployer", "retries": 0 }])
    };
    fleet(&mut env, 3, check);
    let out = env.rollout("", &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    let after: Vec<String> = hosts(3).iter().map(|h| env.target_of(h, SYSTEM)).collect();
    assert_eq!(after, before, "the whole fleet is back: {err}");

    fleet(&mut env, 3, check);
    let wanted: Vec<String> = hosts(3).iter().map(|h| env.build(h, "system")).collect();
    let out = env.rollout("", &["--keep-going"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert_eq!(env.target_of("host1", SYSTEM), wanted[0], "{err}");
    assert_eq!(
        env.target_of("host2", SYSTEM),
        before[1],
        "only host2 rolled back: {err}"
    );
    assert_eq!(env.target_of("host3", SYSTEM), wanted[2], "{err}");
}

#[test]
fn a_canary_whose_checks_fail_leaves_the_other_nodes_untouched() {
    let server = Server::start();
    let mut env = Env::new(3);
    fleet(&mut env, 3, |_| json!([]));
    assert_eq!(env.rollout("", &[]).status.code(), Some(0));
    let before: Vec<String> = hosts(3).iter().map(|h| env.target_of(h, SYSTEM)).collect();
    let counts: Vec<usize> = hosts(3).iter().map(|h| env.markers(h, "system").len()).collect();
    fleet(
        &mut env,
        3,
        |h| json!([{ "http": server.url(&format!("/fail/{h}")), "on": "deployer", "retries": 0 }]),
    );
    let out = env.rollout("", &["--canary", "1"]);
    let err = stderr(&out);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("not started: a canary node failed"), "{err}");
    for (i, h) in hosts(3).iter().enumerate() {
        assert_eq!(env.target_of(h, SYSTEM), before[i], "{h}: {err}");
    }
    // host1 (the canary) activated and rolled back; the others never activated.
    assert_eq!(env.markers("host2", "system").len(), counts[1], "{err}");
    assert_eq!(env.markers("host3", "system").len(), counts[2], "{err}");
}

#[test]
fn skip_health_checks_confirms_without_them_and_says_so() {
    let server = Server::start();
    let mut env = Env::new(1);
    fleet(
        &mut env,
        1,
        |_| json!([{ "http": server.url("/fail/x"), "on": "deployer" }]),
    );
    let out = env.rollout("#host1", &["--skip-health-checks"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("--skip-health-checks: 1 health check(s) NOT run"), "{err}");
}

#[test]
fn an_invalid_check_is_refused_naming_it_before_any_host_is_contacted() {
    let mut env = Env::new(1);
    let logins = env.fleet.total_auth_count();
    fleet(
        &mut env,
        1,
        |_| json!([{ "http": "ftp://example.org/x", "on": "deployer" }]),
    );
    let out = env.rollout("#host1", &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("deploy.nodes.host1.profiles.system.healthChecks[0]"),
        "{err}"
    );
    assert!(err.contains("http:// or https://"), "{err}");
    assert_eq!(env.fleet.total_auth_count(), logins, "no host contacted");
    fleet(&mut env, 1, |_| json!([{ "command": ["true"], "on": "moon" }]));
    let err = stderr(&env.rollout("#host1", &[]));
    assert!(err.contains("expected \"target\" or \"deployer\""), "{err}");
}
