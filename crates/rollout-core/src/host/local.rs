//! This machine as a target: commands run directly (elevated with the profile's `sudo` like on
//! any target), closures are already in the store, and the "fresh login" of a confirmation is a
//! new process started by the deployer itself.

use super::Host;
use crate::cmd::{shell_join, Argv};
use crate::nix::NixContext;

#[derive(Debug, Default)]
pub struct LocalHost;

impl LocalHost {
    pub fn new() -> LocalHost {
        LocalHost
    }
}

impl Host for LocalHost {
    fn name(&self) -> String {
        "this machine".to_string()
    }

    fn run(&self, words: &[String]) -> Argv {
        match words.split_first() {
            Some((program, rest)) => Argv::new(program.clone()).args(rest.iter().cloned()),
            None => Argv::new("true"),
        }
    }

    fn fresh(&self, commands: &[Vec<String>]) -> Argv {
        let line = commands.iter().map(|c| shell_join(c)).collect::<Vec<_>>().join(" && ");
        Argv::new("sh").args(["-c".to_string(), line])
    }

    fn copy(&self, _: &NixContext, _: &[String], _: bool, _: bool) -> Result<Option<Argv>, String> {
        Ok(None)
    }

    fn build(&self, ctx: &NixContext, installables: &[String]) -> Result<Argv, String> {
        Ok(ctx.build_outputs(installables))
    }

    fn alive(&self) -> bool {
        true
    }

    fn close(&self) {}
}
