//! The one event stream: every stage reports here; the terminal view, plain log, `--json` writer
//! and final summary are all consumers of it.

use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Check,
    Evaluate,
    Build,
    Connect,
    Copy,
    Activate,
    Confirm,
    Revoke,
    /// The profile's health checks, between activation and confirmation.
    Health,
    /// The node's secrets, written on the target.
    Keys,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Started,
    Succeeded,
    Failed,
}

/// How one profile (or node) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Activated, and confirmed where magic rollback applies.
    Deployed,
    /// `--dry-activate` ran.
    DryActivated,
    /// The target already ran this closure, confirmed: nothing was done (`--reactivate` forces it).
    Unchanged,
    /// Activated for the next boot.
    Booted,
    /// Failed and rolled back on the target (by itself or because another part of the run failed).
    RolledBack,
    /// Failed and not confirmed; the target rolls back by itself (magic rollback), but this run
    /// could not see it happen (the connection was gone).
    RollingBack,
    /// Failed, nothing to roll back, or the rollback itself failed.
    Failed,
    /// Not started because of an earlier failure.
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Kind {
    Phase {
        phase: Phase,
        state: State,
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// A line of output from the target (agent and activation script).
    Log {
        line: String,
    },
    Outcome {
        outcome: Outcome,
        message: String,
    },
    /// Bytes copied so far (when known).
    Progress {
        phase: Phase,
        done: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        total: Option<u64>,
    },
    Info {
        message: String,
    },
    Warn {
        message: String,
    },
    /// An external command about to run (shown with `--debug-logs`).
    Command {
        argv: String,
    },
    /// How one health check ended.
    HealthCheck {
        name: String,
        on: crate::checks::Side,
        passed: bool,
        attempts: u32,
        /// The last line its last attempt printed.
        output: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Seconds since the Unix epoch.
    pub time: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(flatten)]
    pub kind: Kind,
}

pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A consumer of events. Implementations must be cheap: they run on the pipeline's threads.
pub trait Sink: Send + Sync {
    fn emit(&self, e: &Event);
}

/// A cloneable handle the pipeline reports through, scoped to a node and profile.
#[derive(Clone)]
pub struct Reporter {
    sinks: Arc<Vec<Box<dyn Sink>>>,
    node: Option<String>,
    profile: Option<String>,
}

impl Reporter {
    pub fn new(sinks: Vec<Box<dyn Sink>>) -> Self {
        Reporter {
            sinks: Arc::new(sinks),
            node: None,
            profile: None,
        }
    }

    pub fn silent() -> Self {
        Reporter::new(Vec::new())
    }

    pub fn for_node(&self, node: &str) -> Self {
        Reporter {
            sinks: self.sinks.clone(),
            node: Some(node.to_string()),
            profile: None,
        }
    }

    pub fn for_profile(&self, node: &str, profile: &str) -> Self {
        Reporter {
            sinks: self.sinks.clone(),
            node: Some(node.to_string()),
            profile: Some(profile.to_string()),
        }
    }

    pub fn emit(&self, kind: Kind) {
        let e = Event {
            time: now(),
            node: self.node.clone(),
            profile: self.profile.clone(),
            kind,
        };
        if !crate::interrupt::observe(&e) {
            return;
        }
        for s in self.sinks.iter() {
            s.emit(&e);
        }
    }

    pub fn phase(&self, phase: Phase, state: State, message: Option<String>) {
        self.emit(Kind::Phase { phase, state, message });
    }

    pub fn info(&self, message: impl Into<String>) {
        self.emit(Kind::Info {
            message: message.into(),
        });
    }

    pub fn warn(&self, message: impl Into<String>) {
        self.emit(Kind::Warn {
            message: message.into(),
        });
    }

    pub fn log(&self, line: impl Into<String>) {
        self.emit(Kind::Log { line: line.into() });
    }

    pub fn outcome(&self, outcome: Outcome, message: impl Into<String>) {
        self.emit(Kind::Outcome {
            outcome,
            message: message.into(),
        });
    }
}

/// Keeps every event in memory (tests and the final summary).
#[derive(Default, Clone)]
pub struct Collector(pub Arc<Mutex<Vec<Event>>>);

impl Sink for Collector {
    fn emit(&self, e: &Event) {
        self.0.lock().unwrap().push(e.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_as_flat_json_lines() {
        let e = Event {
            time: 1.5,
            node: Some("web".into()),
            profile: Some("system".into()),
            kind: Kind::Phase {
                phase: Phase::Activate,
                state: State::Started,
                message: None,
            },
        };
        let j = serde_json::to_value(&e).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"time":1.5,"node":"web","profile":"system","event":"phase","phase":"activate","state":"started"})
        );
    }

    #[test]
    fn reporter_scopes_node_and_profile() {
        let c = Collector::default();
        let r = Reporter::new(vec![Box::new(c.clone())]);
        r.for_profile("a", "p").info("hi");
        let got = c.0.lock().unwrap();
        assert_eq!(got[0].node.as_deref(), Some("a"));
        assert_eq!(got[0].profile.as_deref(), Some("p"));
    }
}
