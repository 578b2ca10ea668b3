//! One module per subcommand; each returns its result typed, and `main` maps it to an exit code.

pub mod completions;
pub mod deploy;
pub mod diff;
pub mod history;
pub mod man;
pub mod plan;
pub mod rollback;
pub mod schema;
pub mod status;
mod targets;
