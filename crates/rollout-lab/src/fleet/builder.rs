//! Test hosts as Nix remote builders: of the deployer's Nix, or of another host's nix-daemon.

use super::*;
use std::os::unix::fs::OpenOptionsExt;

impl Fleet {
    /// Host `name` as a Nix remote builder reached as `user` (`deploy` and root are trusted Nix
    /// users on every host, which building a derivation sent over ssh needs): one line of the
    /// `builders` setting, `ssh://user@hostI SYSTEM` (`ssh-ng://` with `ng`). The host alias,
    /// port, key and known host come from the fleet's ssh_config, so the Nix that runs the build
    /// hook needs `NIX_SSHOPTS` = [`Fleet::nix_sshopts`]: a Nix without a daemon (this machine's)
    /// runs the hook itself with the caller's environment; a daemon would need it in its own.
    pub fn builder_line(&self, name: &str, user: &str, ng: bool, system: &str) -> Result<String> {
        let host = self.host_by_name(name)?;
        let scheme = if ng { "ssh-ng" } else { "ssh" };
        Ok(format!("{scheme}://{user}@{} {system}", host.name))
    }

    /// Make host `builder` a remote builder of host `client`'s own nix-daemon, reached as `user`
    /// (what a `remoteBuild` target that offloads its builds looks like). The daemon runs its build
    /// hook as root inside `client`, so `client`'s private `/root/.ssh` gets the fleet's client key,
    /// a `config` entry for the `builder` alias and its known host; the machine line (returned) is
    /// appended to `client`'s `/etc/nix/machines`, which the default `builders = @/etc/nix/machines`
    /// reads for every build (no daemon restart). Only without netns (hosts reach each other on
    /// loopback); everything written lives in the fleet's state dir and goes with it.
    pub fn add_builder(&self, client: &str, builder: &str, user: &str, system: &str) -> Result<String> {
        if self.meta.netns {
            return Err(LabError::Invalid(
                "add_builder: hosts of a --netns fleet cannot reach each other".into(),
            ));
        }
        let c = self.host_by_name(client)?;
        let b = self.host_by_name(builder)?;
        let ssh = c.dir.join("root/.ssh");
        let key = ssh.join("id_rollout_lab");
        fs::copy(self.client_key(), &key).map_err(io_err(&key))?;
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).map_err(io_err(&key))?;
        let known = fs::read_to_string(self.known_hosts()).map_err(io_err(self.known_hosts()))?;
        let entry = known
            .lines()
            .find(|l| l.split_whitespace().next() == Some(b.name.as_str()))
            .ok_or_else(|| LabError::Invalid(format!("no known host entry for {}", b.name)))?;
        append(&ssh.join("known_hosts"), &format!("{entry}\n"))?;
        append(
            &ssh.join("config"),
            &format!(
                "\nHost {name}\n  HostName {addr}\n  Port {port}\n  HostKeyAlias {name}\n  IdentityFile /root/.ssh/id_rollout_lab\n  IdentitiesOnly yes\n  UserKnownHostsFile /root/.ssh/known_hosts\n  StrictHostKeyChecking yes\n  BatchMode yes\n  ConnectTimeout 5\n",
                name = b.name,
                addr = b.address,
                port = b.port
            ),
        )?;
        let line = self.builder_line(builder, user, false, system)?;
        append(&c.dir.join("etc-nix/machines"), &format!("{line}\n"))?;
        Ok(line)
    }
}

fn append(p: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(p)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(io_err(p))
}
