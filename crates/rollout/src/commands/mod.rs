//! One module per subcommand; each returns its result typed, and `main` maps it to an exit code.

pub mod completions;
pub mod deploy;
pub mod man;
pub mod plan;
pub mod schema;
