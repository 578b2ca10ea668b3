//! The one place that runs external commands: logs each under `--debug-logs`, captures or
//! streams its output, and turns failures into errors that show the command and its stderr.

use crate::cmd::Argv;
use crate::events::{Kind, Reporter};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ExitStatus, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("`{program}` was not found on PATH{hint}")]
    NotFound { program: String, hint: String },
    #[error("could not run `{argv}`: {source}")]
    Spawn { argv: String, source: std::io::Error },
    #[error("{what} failed ({status}): `{argv}`{stderr}")]
    Failed {
        what: String,
        argv: String,
        status: String,
        stderr: String,
    },
}

impl ExecError {
    /// The tail of the command's stderr, for messages that quote Nix's own words.
    pub fn stderr(&self) -> &str {
        match self {
            ExecError::Failed { stderr, .. } => stderr,
            _ => "",
        }
    }
}

#[derive(Debug)]
pub struct Captured {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs commands on behalf of one deployment run.
#[derive(Clone)]
pub struct Runner {
    pub reporter: Reporter,
}

fn status_text(s: &ExitStatus) -> String {
    match s.code() {
        Some(c) => format!("exit code {c}"),
        None => "killed by a signal".to_string(),
    }
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    let start = v.len().saturating_sub(lines);
    v[start..].join("\n")
}

impl Runner {
    pub fn new(reporter: Reporter) -> Self {
        Runner { reporter }
    }

    fn announce(&self, argv: &Argv) {
        self.reporter.emit(Kind::Command { argv: argv.to_string() });
    }

    fn spawn_error(argv: &Argv, e: std::io::Error) -> ExecError {
        if e.kind() == std::io::ErrorKind::NotFound {
            let hint = match argv.program.as_str() {
                "nix" | "nix-build" | "nix-instantiate" | "nix-store" => {
                    "; rollout needs Nix 2.4 or newer (https://nixos.org/download)".to_string()
                }
                "ssh" => "; rollout needs the OpenSSH client".to_string(),
                _ => String::new(),
            };
            ExecError::NotFound {
                program: argv.program.clone(),
                hint,
            }
        } else {
            ExecError::Spawn {
                argv: argv.to_string(),
                source: e,
            }
        }
    }

    /// Run to completion, capturing stdout and stderr.
    pub fn capture(&self, argv: &Argv) -> Result<Captured, ExecError> {
        self.announce(argv);
        let out = argv
            .to_command()
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Self::spawn_error(argv, e))?;
        Ok(Captured {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Run to completion; a non-zero exit is an error that quotes the command and its stderr.
    pub fn checked(&self, argv: &Argv, what: &str) -> Result<String, ExecError> {
        let c = self.capture(argv)?;
        if c.status.success() {
            Ok(c.stdout)
        } else {
            Err(ExecError::Failed {
                what: what.to_string(),
                argv: argv.to_string(),
                status: status_text(&c.status),
                stderr: if c.stderr.trim().is_empty() {
                    String::new()
                } else {
                    format!("\n{}", tail(c.stderr.trim_end(), 40))
                },
            })
        }
    }

    /// Run, feeding `stdin` (then closing it), calling `on_line` for every line of stdout and of
    /// stderr as it arrives. Returns the exit status and the last lines of stderr.
    pub fn stream(
        &self,
        argv: &Argv,
        stdin: Option<&str>,
        on_line: &(dyn Fn(&str) + Sync),
    ) -> Result<(ExitStatus, String), ExecError> {
        self.announce(argv);
        let mut child = argv
            .to_command()
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Self::spawn_error(argv, e))?;
        if let (Some(data), Some(mut w)) = (stdin, child.stdin.take()) {
            // A closed pipe only means the remote side did not read it; the exit status tells more.
            let _ = w.write_all(data.as_bytes());
        }
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let err_tail = std::thread::scope(|s| {
            let h = s.spawn(move || {
                let mut kept = Vec::new();
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    on_line(&line);
                    kept.push(line);
                    if kept.len() > 40 {
                        kept.remove(0);
                    }
                }
                kept.join("\n")
            });
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                on_line(&line);
            }
            h.join().unwrap_or_default()
        });
        let status = child.wait().map_err(|e| ExecError::Spawn {
            argv: argv.to_string(),
            source: e,
        })?;
        Ok((status, err_tail))
    }

    /// Start a long-lived child (an SSH master); the caller owns it and ends it by pid.
    pub fn spawn(&self, argv: &Argv) -> Result<Child, ExecError> {
        self.announce(argv);
        argv.to_command()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Self::spawn_error(argv, e))
    }

    pub fn failed(what: &str, argv: &Argv, status: &ExitStatus, stderr: &str) -> ExecError {
        ExecError::Failed {
            what: what.to_string(),
            argv: argv.to_string(),
            status: status_text(status),
            stderr: if stderr.trim().is_empty() {
                String::new()
            } else {
                format!("\n{}", tail(stderr.trim_end(), 40))
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn missing_program_is_a_clear_error() {
        let r = Runner::new(Reporter::silent());
        let e = r.capture(&Argv::new("nix-build-does-not-exist-xyz")).unwrap_err();
        assert!(matches!(e, ExecError::NotFound { .. }));
    }

    #[test]
    fn failure_quotes_command_and_stderr() {
        let r = Runner::new(Reporter::silent());
        let e = r
            .checked(&Argv::new("sh").args(["-c", "echo boom >&2; exit 3"]), "test step")
            .unwrap_err();
        let m = e.to_string();
        assert!(m.contains("test step failed (exit code 3)"), "{m}");
        assert!(m.contains("boom"), "{m}");
    }

    #[test]
    fn stream_feeds_stdin_and_reports_lines() {
        let r = Runner::new(Reporter::silent());
        let seen = Mutex::new(Vec::new());
        let (st, _) = r
            .stream(
                &Argv::new("sh").args(["-c", "read x; echo got $x; echo err >&2"]),
                Some("pw\n"),
                &|l| seen.lock().unwrap().push(l.to_string()),
            )
            .unwrap();
        assert!(st.success());
        let mut v = seen.into_inner().unwrap();
        v.sort();
        assert_eq!(v, vec!["err", "got pw"]);
    }
}
