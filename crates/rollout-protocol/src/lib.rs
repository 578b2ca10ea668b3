//! The deployer⇄agent contract as types, used by both `rollout-core` and `rollout-agent`: the agent
//! commands and their one argv encoding ([`command`]), deploy states and the `ROLLOUT-STATUS` line
//! ([`status`]), deploy ids ([`id`]), and what a profile holds ([`report`]: generations and deploy records). docs/agent-protocol.md describes it in prose.

pub mod command;
pub mod id;
pub mod report;
pub mod status;

/// Bumped whenever a command, an option or the status line changes incompatibly. The deployer
/// sends it first (`--protocol N`); an agent that speaks another version refuses before it
/// touches anything, with [`PROTOCOL_MISMATCH_EXIT`].
pub const PROTOCOL_VERSION: u32 = 2;

/// Exit code of an agent asked to speak a protocol version it does not speak.
pub const PROTOCOL_MISMATCH_EXIT: i32 = 5;
