//! Where profiles live: the one seam through which deploy logic reaches a target — run a command
//! over the established connection, copy closures, build there, log in afresh to confirm — with an
//! SSH implementation ([`SshHost`]) and one for this machine ([`LocalHost`]).
//!
//! A host hands out argv values rather than running them, so that the caller keeps one way of
//! running, streaming and reporting commands, and unit tests can inspect exactly what would run.

pub mod connection;
mod local;
mod remote;

pub use local::LocalHost;
pub use remote::SshHost;

use crate::cmd::Argv;
use crate::nix::NixContext;

/// One target machine, connected.
pub trait Host: Send + Sync + std::fmt::Debug {
    /// How messages name it (`deploy@web1`, `this machine`).
    fn name(&self) -> String;
    /// `words` run there over the established connection (no new login).
    fn run(&self, words: &[String]) -> Argv;
    /// `commands` run there one after the other, stopping at the first failure, over a
    /// connection made for this call alone: a confirmation must prove that a new login still
    /// works after the activation.
    fn fresh(&self, commands: &[Vec<String>]) -> Argv;
    /// The copy of `paths` and their closures into its store; `None` when they are there already.
    fn copy(
        &self,
        ctx: &NixContext,
        paths: &[String],
        substitute: bool,
        check_sigs: bool,
    ) -> Result<Option<Argv>, String>;
    /// A build of `installables` whose results land in its store.
    fn build(&self, ctx: &NixContext, installables: &[String]) -> Result<Argv, String>;
    /// Is the connection still up? (It goes down when an activation cut the target off.)
    fn alive(&self) -> bool;
    /// End the connection; later calls do nothing.
    fn close(&self);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssh::Endpoint;
    use crate::validate::{HostName, UserName};

    fn ctx() -> NixContext {
        NixContext {
            version: (2, 8),
            extra_args: Vec::new(),
        }
    }

    fn words(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn an_ssh_host_runs_through_its_master_and_confirms_over_a_new_login() {
        let ep = Endpoint {
            user: UserName::parse("deploy").unwrap(),
            host: HostName::parse("web-1").unwrap(),
            opts: vec!["-p".into(), "2222".into()],
        };
        let h = SshHost::unconnected(ep, "/run/s/m0");
        assert_eq!(h.name(), "deploy@web-1");
        let run = h.run(&words(&["agent", "status", "a b"])).to_string();
        assert!(run.contains("-S /run/s/m0"), "{run}");
        assert!(run.ends_with("deploy@web-1 'agent status '\\''a b'\\'''"), "{run}");
        let fresh = h.fresh(&[words(&["a", "1"]), words(&["b", "2"])]).to_string();
        assert!(fresh.contains("ControlPath=none"), "{fresh}");
        assert!(fresh.ends_with("'a 1 && b 2'"), "{fresh}");
        let copy = h.copy(&ctx(), &words(&["/nix/store/x"]), false, true).unwrap().unwrap();
        assert_eq!(copy.program, "nix");
        assert!(copy.args.iter().any(|a| a == "ssh://deploy@web-1"), "{copy}");
        assert!(copy
            .env
            .iter()
            .any(|(k, v)| k == "NIX_SSHOPTS" && v.contains("ControlPath=/run/s/m0")));
        let build = h.build(&ctx(), &words(&["f#p"])).unwrap();
        assert!(build.args.iter().any(|a| a == "ssh-ng://deploy@web-1"), "{build}");
    }

    #[test]
    fn this_machine_runs_directly_and_needs_no_copy() {
        let h = LocalHost::new();
        assert_eq!(h.name(), "this machine");
        let run = h.run(&words(&["sudo", "-u", "alice", "agent", "x y"]));
        assert_eq!(run.program, "sudo");
        assert_eq!(run.args, words(&["-u", "alice", "agent", "x y"]));
        let fresh = h.fresh(&[words(&["a", "x y"]), words(&["b"])]);
        assert_eq!(fresh.program, "sh");
        assert_eq!(fresh.args, words(&["-c", "a 'x y' && b"]));
        assert!(h.copy(&ctx(), &words(&["/nix/store/x"]), true, true).unwrap().is_none());
        let build = h.build(&ctx(), &words(&["f#p"])).unwrap();
        assert!(!build.args.iter().any(|a| a == "--store"), "{build}");
        assert!(h.alive());
    }
}
