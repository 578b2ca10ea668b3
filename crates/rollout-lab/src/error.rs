//! Typed errors of rollout-lab: each names the host, file or command concerned and what was expected.

use std::path::PathBuf;

/// Everything that can go wrong while starting, using or stopping a fleet, or writing test profiles.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// rollout-lab creates namespaces, mounts and users: it needs root.
    #[error("rollout-lab must run as root (it creates namespaces, mounts and users); running as uid {uid}")]
    NotRoot { uid: u32 },
    /// A program rollout-lab shells out to is not installed.
    #[error("required tool `{tool}` not found in PATH ({hint})")]
    MissingTool { tool: String, hint: String },
    /// The state directory is unusable.
    #[error("bad state dir {path}: {why}")]
    BadStateDir { path: PathBuf, why: String },
    /// `up` on a state dir whose fleet is still running.
    #[error("a fleet is already up in {path}; run `rollout-lab down --state {path}` first")]
    AlreadyUp { path: PathBuf },
    /// The directory holds no fleet state.
    #[error("{path} is not a rollout-lab state dir (expected {path}/.rollout-lab)")]
    NotAFleet { path: PathBuf },
    /// A host name that is not part of the fleet.
    #[error("no such host `{host}`: expected one of host1..host{count}")]
    NoSuchHost { host: String, count: usize },
    /// Something about one host failed.
    #[error("{host}: {what}")]
    Host { host: String, what: String },
    /// An external command could not be run or failed.
    #[error("command `{cmd}` failed: {detail}")]
    Command { cmd: String, detail: String },
    /// A file or directory operation failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Bad input from the caller (host count, port, profile name, ...).
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// netns mode is not available or only one netns fleet can be up at a time.
    #[error("netns: {0}")]
    Netns(String),
    /// Teardown refused to signal a protected process (pid 1, 2, the caller or its ancestors).
    #[error("{host}: refusing to signal protected pid(s) {pids:?}; run `down` from outside the hosts")]
    Protected { host: String, pids: Vec<u32> },
    /// Teardown finished but something is left behind.
    #[error("teardown of {path} incomplete: {what}")]
    Teardown { path: PathBuf, what: String },
    /// A marker line or other file content did not have the expected format.
    #[error("{what}: cannot parse {line:?} (expected {expected})")]
    Parse {
        what: String,
        line: String,
        expected: String,
    },
}

/// Result with [`LabError`].
pub type Result<T> = std::result::Result<T, LabError>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> LabError {
    let path = path.into();
    move |source| LabError::Io { path, source }
}
