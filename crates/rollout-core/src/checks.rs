//! Health checks: what a profile's `healthChecks` entries mean, and running one with its retries.
//! A check is a command or an HTTP request, run on the target (as the profile's user) or on this
//! machine; after a node's profiles are activated and before they are confirmed, every check must
//! pass or the node is rolled back (see `deploy::node`).

use crate::cmd::Argv;
use crate::schema::{Field, FieldKind, Object};
use serde::Serialize;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Where a check runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// On the target, as the profile's user.
    Target,
    /// On this machine, with `ROLLOUT_NODE`, `ROLLOUT_HOSTNAME` and `ROLLOUT_PROFILE` set.
    Deployer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    Command(Vec<String>),
    Http { url: String, expect_status: u16 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub what: What,
    pub on: Side,
    /// Seconds one attempt may take.
    pub timeout: u64,
    /// Attempts after the first one.
    pub retries: u32,
    /// Seconds between attempts.
    pub interval: u64,
}

/// The fields of a `healthChecks` entry, for the settings table.
pub const FIELDS: &[Field] = &[
    Field {
        key: "name",
        kind: FieldKind::Str,
        required: false,
    },
    Field {
        key: "command",
        kind: FieldKind::List,
        required: false,
    },
    Field {
        key: "http",
        kind: FieldKind::Str,
        required: false,
    },
    Field {
        key: "expectStatus",
        kind: FieldKind::Int,
        required: false,
    },
    Field {
        key: "on",
        kind: FieldKind::Str,
        required: false,
    },
    Field {
        key: "timeout",
        kind: FieldKind::Int,
        required: false,
    },
    Field {
        key: "retries",
        kind: FieldKind::Int,
        required: false,
    },
    Field {
        key: "interval",
        kind: FieldKind::Int,
        required: false,
    },
];

pub const DEFAULT_TIMEOUT: u64 = 10;
pub const DEFAULT_RETRIES: u32 = 3;
pub const DEFAULT_INTERVAL: u64 = 2;

fn int(o: &Object, key: &str, default: u64, range: std::ops::RangeInclusive<u64>) -> Result<u64, String> {
    match o.get(key) {
        None | Some(serde_json::Value::Null) => Ok(default),
        Some(v) => match v.as_u64().filter(|n| range.contains(n)) {
            Some(n) => Ok(n),
            None => Err(format!(
                "`{key}` must be a whole number in {}..={}",
                range.start(),
                range.end()
            )),
        },
    }
}

impl Check {
    /// One `healthChecks` entry (already type-checked by the configuration layer): exactly one of
    /// `command` (a list of words) or `http` (an `http://` or `https://` URL).
    pub fn from_object(o: &Object, index: usize) -> Result<Check, String> {
        let command = o.get("command").and_then(|v| v.as_array());
        let http = o.get("http").and_then(|v| v.as_str());
        let what = match (command, http) {
            (Some(words), None) => {
                let words: Vec<String> = words.iter().filter_map(|w| w.as_str().map(String::from)).collect();
                if words.is_empty() || words.iter().any(|w| w.contains('\0')) {
                    return Err("`command` must be a non-empty list of words".into());
                }
                What::Command(words)
            }
            (None, Some(url)) => {
                check_url(url)?;
                let expect = int(o, "expectStatus", 200, 100..=599)?;
                What::Http {
                    url: url.to_string(),
                    expect_status: expect as u16,
                }
            }
            _ => return Err("give exactly one of `command` (a list of words) or `http` (a URL)".into()),
        };
        let on = match o.get("on").and_then(|v| v.as_str()) {
            None | Some("target") => Side::Target,
            Some("deployer") => Side::Deployer,
            Some(other) => return Err(format!("`on` is \"{other}\"; expected \"target\" or \"deployer\"")),
        };
        let name = match o.get("name").and_then(|v| v.as_str()) {
            Some(n) => n.to_string(),
            None => match &what {
                What::Command(w) => w.join(" "),
                What::Http { url, .. } => url.clone(),
            },
        };
        Ok(Check {
            name: if name.is_empty() {
                format!("check {}", index + 1)
            } else {
                name
            },
            what,
            on,
            timeout: int(o, "timeout", DEFAULT_TIMEOUT, 1..=3600)?,
            retries: int(o, "retries", u64::from(DEFAULT_RETRIES), 0..=100)? as u32,
            interval: int(o, "interval", DEFAULT_INTERVAL, 0..=3600)?,
        })
    }

    /// The words that run one attempt (before any elevation or transport): the command itself,
    /// or `curl` for an HTTP check run on the target, each bounded by `timeout`.
    pub fn words(&self) -> Vec<String> {
        let mut v = vec!["timeout".to_string(), self.timeout.to_string()];
        match &self.what {
            What::Command(w) => v.extend(w.iter().cloned()),
            What::Http { url, .. } => v.extend(
                ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time"]
                    .iter()
                    .map(|s| s.to_string())
                    .chain([self.timeout.to_string(), "--".to_string(), url.clone()]),
            ),
        }
        v
    }

    /// The argv of one attempt on this machine (a command check; HTTP checks are made in-process).
    pub fn local_argv(&self, node: &str, hostname: &str, profile: &str) -> Argv {
        let w = self.words();
        Argv::new(w[0].clone())
            .args(w[1..].iter().cloned())
            .env("ROLLOUT_NODE", node)
            .env("ROLLOUT_HOSTNAME", hostname)
            .env("ROLLOUT_PROFILE", profile)
    }
}

/// A URL a check may request: `http://` or `https://`, no whitespace or control characters.
pub fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("`http` is {url:?}; expected an http:// or https:// URL"))?;
    if rest.is_empty() || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "`http` is {url:?}; expected a URL without spaces or control characters"
        ));
    }
    Ok(())
}

/// Whether one attempt's result passes: an HTTP check's status against the expected one, a
/// command's exit code 0.
pub fn passed(check: &Check, exit_ok: bool, output: &str) -> bool {
    match &check.what {
        What::Command(_) => exit_ok,
        What::Http { expect_status, .. } => exit_ok && output.trim().parse::<u16>().ok() == Some(*expect_status),
    }
}

/// `GET url` from this machine for `http://` URLs (no TLS; `https://` goes through `curl`):
/// the response's status code, or why there is none.
pub fn http_status(url: &str, timeout: Duration) -> Result<u16, String> {
    let rest = url.strip_prefix("http://").ok_or("not an http:// URL")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let sock = addr
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("cannot resolve {authority}"))?;
    let mut s =
        TcpStream::connect_timeout(&sock, timeout).map_err(|e| format!("cannot connect to {authority}: {e}"))?;
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let host = authority.split(':').next().unwrap_or(authority);
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: rollout\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes())
        .map_err(|e| format!("cannot send the request: {e}"))?;
    // The status line may arrive in pieces: read until its end (or the connection's).
    let mut head = Vec::new();
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if head.is_empty() => return Err(format!("no response: {e}")),
            Err(_) => break,
        }
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .filter(|_| line.starts_with("HTTP/"))
        .ok_or_else(|| format!("not an HTTP response: {:?}", line.lines().next().unwrap_or("")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::schema::object_of as obj;

    #[test]
    fn entries_become_checks_with_defaults_and_refusals_name_the_field() {
        let c = Check::from_object(&obj(json!({"command": ["systemctl", "is-active", "nginx"]})), 0).unwrap();
        assert_eq!((c.on, c.timeout, c.retries, c.interval), (Side::Target, 10, 3, 2));
        assert_eq!(c.name, "systemctl is-active nginx");
        assert_eq!(c.words()[..3], ["timeout", "10", "systemctl"]);
        let h = Check::from_object(
            &obj(json!({"http": "http://localhost:8080/health", "on": "deployer", "expectStatus": 204, "retries": 0, "name": "web"})),
            1,
        )
        .unwrap();
        assert_eq!(
            h.what,
            What::Http {
                url: "http://localhost:8080/health".into(),
                expect_status: 204
            }
        );
        assert_eq!((h.on, h.retries, h.name.as_str()), (Side::Deployer, 0, "web"));
        assert!(h.words().contains(&"%{http_code}".to_string()));
        for (bad, words) in [
            (json!({}), "exactly one of"),
            (json!({"command": [], }), "non-empty list"),
            (json!({"command": ["a"], "http": "http://x"}), "exactly one of"),
            (json!({"http": "ftp://x"}), "http:// or https://"),
            (json!({"http": "http://x y"}), "without spaces"),
            (
                json!({"command": ["a"], "on": "moon"}),
                "expected \"target\" or \"deployer\"",
            ),
            (json!({"command": ["a"], "timeout": 0}), "`timeout` must be"),
            (
                json!({"http": "http://x", "expectStatus": 42}),
                "`expectStatus` must be",
            ),
        ] {
            let e = Check::from_object(&obj(bad.clone()), 0).unwrap_err();
            assert!(e.contains(words), "{bad}: {e}");
        }
    }

    #[test]
    fn an_http_check_passes_on_the_expected_status_only() {
        let h = Check::from_object(&obj(json!({"http": "http://x/"})), 0).unwrap();
        assert!(passed(&h, true, "200"));
        assert!(!passed(&h, true, "503"));
        assert!(!passed(&h, false, "200"));
        let c = Check::from_object(&obj(json!({"command": ["true"]})), 0).unwrap();
        assert!(passed(&c, true, "anything") && !passed(&c, false, ""));
    }

    #[test]
    fn the_built_in_client_reads_the_status_of_a_real_server() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for code in ["200 OK", "503 Service Unavailable"] {
                let (mut s, _) = l.accept().unwrap();
                let mut got = Vec::new();
                let mut buf = [0u8; 512];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = write!(s, "HTTP/1.1 {code}\r\nContent-Length: 0\r\n\r\n");
            }
        });
        let url = format!("http://127.0.0.1:{port}/health");
        assert_eq!(http_status(&url, Duration::from_secs(5)), Ok(200));
        assert_eq!(http_status(&url, Duration::from_secs(5)), Ok(503));
        server.join().unwrap();
        assert!(http_status(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(1)).is_err());
    }
}
