//! rollout-agent: the target-side program that activates a Nix profile and rolls it back safely.

mod beside;
mod commands;
mod exec;
mod follow;
mod history;
mod keys;
mod lock;
mod pending;
mod policy;
mod profile;
mod request;
mod statedir;
mod undo;
mod worker;

use rollout_protocol::command::{self as cli, Command};

/// A progress line. In the worker stdout is the deploy log; in the foreground it is the deployer.
pub(crate) fn log(msg: &str) {
    follow::out(format!("rollout-agent: {msg}\n").as_bytes());
}

/// An error line on stderr (ignoring a closed stderr).
pub(crate) fn error(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "rollout-agent: error: {msg}");
}

/// Reports an operational failure and yields exit code 1.
pub(crate) fn fatal(msg: &str) -> i32 {
    error(msg);
    1
}

fn main() {
    let args: Vec<String> = match std::env::args_os().skip(1).map(|a| a.into_string()).collect() {
        Ok(a) => a,
        Err(bad) => {
            error(&format!("argument {bad:?} is not valid UTF-8"));
            std::process::exit(2);
        }
    };
    // A deployer of another protocol version is refused before anything is parsed or touched.
    let args = match cli::strip_protocol(&args) {
        Ok(rest) => rest,
        Err(e) => {
            error(&e.to_string());
            std::process::exit(rollout_protocol::PROTOCOL_MISMATCH_EXIT);
        }
    };
    let code = match cli::parse(args) {
        Err(e) => {
            error(&e.0);
            2
        }
        Ok(Command::Help) => {
            follow::out(format!("{}\n", cli::USAGE).as_bytes());
            0
        }
        Ok(Command::Version) => {
            follow::out(
                format!(
                    "rollout-agent {} (protocol {})\n",
                    env!("CARGO_PKG_VERSION"),
                    rollout_protocol::PROTOCOL_VERSION
                )
                .as_bytes(),
            );
            0
        }
        Ok(Command::Activate(a)) => commands::activate(&a),
        Ok(Command::Revoke(r)) => commands::revoke(&r),
        Ok(Command::Worker { temp_path, id }) => worker::run(&temp_path, &id),
        Ok(Command::Confirm { ids, temp_path, wait }) => commands::confirm(&temp_path, &ids, wait),
        Ok(Command::Extend { ids, temp_path }) => commands::extend(&temp_path, &ids),
        Ok(Command::Abort { ids, temp_path, wait }) => commands::abort(&temp_path, &ids, wait),
        Ok(Command::Status { id, temp_path }) => commands::status(&temp_path, &id),
        Ok(Command::Query { profile, temp_path }) => commands::query(&profile, &temp_path),
        Ok(Command::Recover { profile }) => commands::recover(profile.as_ref()),
        Ok(Command::PutKey(k)) => keys::put_key(&k),
    };
    std::process::exit(code);
}
