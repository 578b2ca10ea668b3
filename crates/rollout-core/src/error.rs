//! The errors a command ends with; [`crate::exit::for_error`] maps each to its exit code.

use crate::deploy::RunError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Refused before anything started: a flag, a flake value or a file (rollout's own first
    /// line, naming what is wrong and what is expected).
    #[error("{0}")]
    BadInput(String),
    /// The person at the terminal answered no.
    #[error("deployment cancelled by the user")]
    Cancelled,
    /// A step the whole run shares failed (the local build, the agent, the socket directory).
    #[error(transparent)]
    Run(#[from] RunError),
}

impl Error {
    pub fn bad_input(e: impl std::fmt::Display) -> Error {
        Error::BadInput(e.to_string())
    }
}
