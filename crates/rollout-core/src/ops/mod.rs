//! The work behind each subcommand, apart from the command line: a validated request in, a typed
//! result ([`crate::error::Error`]) out. The CLI builds the request from its flags and maps the
//! result to an exit code through [`crate::exit`].

pub mod diff;
pub mod inspect;
mod prepare;
pub mod rollback;
pub mod status;

pub use prepare::{prepare, prepare_settings, revisions, DeployRequest, Prepared};
