//! A target reached over SSH: one authenticated master connection that every command, copy and
//! build rides on, and a new login (never multiplexed) for the confirmation.

use super::connection::{ConnectError, Master, Starting};
use super::Host;
use crate::cmd::Argv;
use crate::events::Reporter;
use crate::exec::Runner;
use crate::nix::{self, NixContext, StoreScheme};
use crate::ssh::{self, Endpoint};
use std::path::Path;

pub struct SshHost {
    endpoint: Endpoint,
    socket: String,
    /// None only for hosts made for unit tests, which never run anything.
    master: Option<Master>,
}

impl std::fmt::Debug for SshHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SshHost({})", self.endpoint.destination())
    }
}

impl SshHost {
    /// Log in once (the master connection, socket `m<index>` in `sockets`) and keep it open.
    pub fn connect(
        runner: &Runner,
        rep: &Reporter,
        endpoint: &Endpoint,
        sockets: &Path,
        index: usize,
    ) -> Result<SshHost, ConnectError> {
        let master = Master::open(runner, rep, endpoint, sockets, index)?;
        Ok(SshHost {
            endpoint: endpoint.clone(),
            socket: master.socket.clone(),
            master: Some(master),
        })
    }

    /// The host behind a master started earlier ([`Master::start`]), once it is authenticated.
    pub fn connected(starting: Starting, rep: &Reporter) -> Result<SshHost, ConnectError> {
        let master = starting.wait(rep)?;
        Ok(SshHost {
            endpoint: master.endpoint.clone(),
            socket: master.socket.clone(),
            master: Some(master),
        })
    }

    /// A host whose argvs can be inspected but that was never connected.
    #[cfg(test)]
    pub fn unconnected(endpoint: Endpoint, socket: &str) -> SshHost {
        SshHost {
            endpoint,
            socket: socket.to_string(),
            master: None,
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn nix_sshopts(&self, ctx: &NixContext) -> Result<String, String> {
        ctx.sshopts_env(&ssh::nix_sshopts(&self.endpoint, &self.socket))
    }
}

impl Host for SshHost {
    fn name(&self) -> String {
        self.endpoint.destination()
    }

    fn run(&self, words: &[String]) -> Argv {
        ssh::via_master(&self.endpoint, &self.socket, words)
    }

    fn fresh(&self, commands: &[Vec<String>]) -> Argv {
        ssh::fresh_many(&self.endpoint, commands)
    }

    fn copy(
        &self,
        ctx: &NixContext,
        paths: &[String],
        substitute: bool,
        check_sigs: bool,
    ) -> Result<Option<Argv>, String> {
        let uri = nix::store_uri(StoreScheme::Ssh, &self.endpoint.user, &self.endpoint.host);
        Ok(Some(nix::copy_to(
            &uri,
            paths,
            substitute,
            check_sigs,
            &self.nix_sshopts(ctx)?,
        )))
    }

    fn build(&self, ctx: &NixContext, installables: &[String]) -> Result<Argv, String> {
        let uri = nix::store_uri(StoreScheme::SshNg, &self.endpoint.user, &self.endpoint.host);
        Ok(ctx.build_remote(&uri, installables, &self.nix_sshopts(ctx)?))
    }

    fn alive(&self) -> bool {
        self.master.as_ref().is_some_and(Master::alive)
    }

    fn close(&self) {
        if let Some(m) = &self.master {
            m.close();
        }
    }
}
