//! One module per subcommand; each returns its result typed, and `main` maps it to an exit code.

pub mod deploy;
pub mod plan;
