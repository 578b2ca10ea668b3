//! Pushing closures with `nix copy`, reading Nix's JSON log to report the paths and bytes copied
//! as they complete.

use crate::cmd::Argv;
use crate::events::{Kind, Phase, Reporter};
use crate::exec::Runner;
use crate::nix;
use std::collections::HashMap;
use std::sync::Mutex;

/// Nix's activity type for copying one store path.
const ACT_COPY_PATH: u64 = 100;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct CopyStats {
    pub paths: usize,
    pub bytes: u64,
}

/// NAR size of every path in the closures of `paths` (one `nix path-info` call; unknown paths are
/// simply absent, which only makes the byte count smaller).
pub fn nar_sizes(runner: &Runner, paths: &[String]) -> HashMap<String, u64> {
    if paths.is_empty() {
        return HashMap::new();
    }
    match runner.checked(&nix::path_info_sizes(paths), "nix path-info") {
        Ok(out) => parse_sizes(&out),
        Err(_) => HashMap::new(),
    }
}

pub fn parse_sizes(json: &str) -> HashMap<String, u64> {
    let mut m = HashMap::new();
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(serde_json::Value::Array(items)) => {
            for it in items {
                if let (Some(p), Some(n)) = (it["path"].as_str(), it["narSize"].as_u64()) {
                    m.insert(p.to_string(), n);
                }
            }
        }
        Ok(serde_json::Value::Object(map)) => {
            for (p, it) in map {
                if let Some(n) = it["narSize"].as_u64() {
                    m.insert(p, n);
                }
            }
        }
        _ => {}
    }
    m
}

/// One line of Nix's `internal-json` log that matters here.
#[derive(Debug, PartialEq)]
pub enum LogLine {
    CopyStarted { id: u64, path: String },
    Stopped { id: u64 },
    Error(String),
    Other,
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\u{1b}' {
            // skip to the end of the escape sequence (a letter)
            for d in it.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub fn parse_line(line: &str) -> LogLine {
    let Some(json) = line.strip_prefix("@nix ") else {
        return if line.trim().is_empty() {
            LogLine::Other
        } else {
            LogLine::Error(line.to_string())
        };
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
        return LogLine::Other;
    };
    match v["action"].as_str() {
        Some("start") if v["type"].as_u64() == Some(ACT_COPY_PATH) => match (v["id"].as_u64(), v["fields"][0].as_str())
        {
            (Some(id), Some(path)) => LogLine::CopyStarted {
                id,
                path: path.to_string(),
            },
            _ => LogLine::Other,
        },
        Some("stop") => v["id"]
            .as_u64()
            .map(|id| LogLine::Stopped { id })
            .unwrap_or(LogLine::Other),
        Some("msg") if v["level"].as_u64() == Some(0) => LogLine::Error(strip_ansi(v["msg"].as_str().unwrap_or(""))),
        _ => LogLine::Other,
    }
}

/// Sign what is about to be copied (`--sign-key` / `LOCAL_KEY`); a no-op without a key.
pub fn sign(runner: &Runner, key: Option<&str>, paths: &[String]) -> Result<(), String> {
    match key {
        Some(k) if !paths.is_empty() => runner
            .checked(&nix::sign_closures(k, paths), "nix store sign")
            .map(drop)
            .map_err(|e| format!("signing with `{k}` failed: {}", e.stderr().trim())),
        _ => Ok(()),
    }
}

/// Run the copy, reporting progress; on failure, Nix's error messages.
pub fn run_copy(
    runner: &Runner,
    rep: &Reporter,
    argv: &Argv,
    sizes: &HashMap<String, u64>,
) -> Result<CopyStats, String> {
    run_copy_until(runner, rep, argv, sizes, None)
}

/// [`run_copy`], ended early once `stop` is set (the target turned out to have everything).
pub fn run_copy_until(
    runner: &Runner,
    rep: &Reporter,
    argv: &Argv,
    sizes: &HashMap<String, u64>,
    stop: Option<&std::sync::atomic::AtomicBool>,
) -> Result<CopyStats, String> {
    struct St {
        open: HashMap<u64, String>,
        stats: CopyStats,
        errors: Vec<String>,
    }
    let st = Mutex::new(St {
        open: HashMap::new(),
        stats: CopyStats::default(),
        errors: Vec::new(),
    });
    let on_line = |line: &str| {
        let mut s = st.lock().unwrap();
        match parse_line(line) {
            LogLine::CopyStarted { id, path } => {
                s.open.insert(id, path);
            }
            LogLine::Stopped { id } => {
                if let Some(path) = s.open.remove(&id) {
                    s.stats.paths += 1;
                    s.stats.bytes += sizes.get(&path).copied().unwrap_or(0);
                    rep.emit(Kind::Progress {
                        phase: Phase::Copy,
                        done: s.stats.bytes,
                        total: None,
                    });
                }
            }
            LogLine::Error(e) => s.errors.push(e),
            LogLine::Other => {}
        }
    };
    let r = runner.stream_until(crate::exec::Role::Work, argv, None, &on_line, stop);
    let s = st.into_inner().unwrap();
    match r {
        Ok((status, _)) if status.success() => Ok(s.stats),
        Ok((status, _)) => Err(if s.errors.is_empty() {
            format!("nix copy exited with {status}")
        } else {
            s.errors.join("\n")
        }),
        Err(e) => Err(e.to_string()),
    }
}

pub fn human_bytes(b: u64) -> String {
    const U: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_activities_and_errors_are_recognised() {
        let start = r#"@nix {"action":"start","fields":["/nix/store/abc-x","local","ssh://d@h"],"id":7,"level":3,"text":"copying path","type":100}"#;
        assert_eq!(
            parse_line(start),
            LogLine::CopyStarted {
                id: 7,
                path: "/nix/store/abc-x".into()
            }
        );
        assert_eq!(
            parse_line(r#"@nix {"action":"stop","id":7}"#),
            LogLine::Stopped { id: 7 }
        );
        let err = "@nix {\"action\":\"msg\",\"level\":0,\"msg\":\"\\u001b[31;1merror:\\u001b[0m cannot connect\"}";
        assert_eq!(parse_line(err), LogLine::Error("error: cannot connect".into()));
        assert_eq!(
            parse_line(r#"@nix {"action":"msg","level":3,"msg":"info"}"#),
            LogLine::Other
        );
        assert_eq!(
            parse_line("ssh: connect refused"),
            LogLine::Error("ssh: connect refused".into())
        );
    }

    #[test]
    fn path_info_sizes_in_old_and_new_formats() {
        let old = r#"[{"path":"/nix/store/a","narSize":10},{"path":"/nix/store/b","narSize":5}]"#;
        let new = r#"{"/nix/store/a":{"narSize":10},"/nix/store/b":{"narSize":5}}"#;
        assert_eq!(parse_sizes(old), parse_sizes(new));
        assert_eq!(parse_sizes(old)["/nix/store/a"], 10);
    }

    #[test]
    fn bytes_are_shown_in_binary_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 * 1024 * 1024 + 1024 * 512), "3.5 MiB");
    }
}
