//! rollout-core: turns targets, flags and flake data into a validated plan, then executes it.
//!
//! The flow runs one way: targets → evaluation → validation → [`plan::Plan`] → build → per node
//! (connect, copy, activate through the agent, confirm). Every external command is an [`cmd::Argv`]
//! value built by a small function, and every stage reports through one [`events`] stream.

pub mod checks;
pub mod cmd;
pub mod config;
pub mod deploy;
pub mod error;
pub mod evalexpr;
pub mod events;
pub mod exec;
pub mod exit;
pub mod host;
pub mod interrupt;
pub mod jsonschema;
pub mod keys;
pub mod nix;
pub mod ops;
pub mod plan;
pub mod schema;
pub mod secret;
pub mod select;
pub mod settings;
pub mod ssh;
pub mod target;
pub mod validate;
