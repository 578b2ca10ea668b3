//! Argv builders for OpenSSH: the per-host master connection, commands through it, fresh
//! connections for confirmation, and the remote agent command lines (each word quoted).

use crate::cmd::{shell_join, Argv};
use crate::validate::{HostName, UserName};

/// Where and as whom to connect, with the merged `sshOpts`. Built only from validated parts, so
/// `user@host` is one destination word that neither ssh nor a store URI reads as syntax.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    pub user: UserName,
    pub host: HostName,
    pub opts: Vec<String>,
}

impl Endpoint {
    pub fn destination(&self) -> String {
        format!("{}@{}", self.user, self.host)
    }
}

/// Options rollout adds after the user's (OpenSSH keeps the first value it sees, so the user's
/// own `sshOpts` win over these defaults).
fn defaults() -> Vec<String> {
    [
        "-o",
        "ConnectTimeout=10",
        "-o",
        "ServerAliveInterval=5",
        "-o",
        "ServerAliveCountMax=3",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The master connection: one authentication, then every copy, agent call and log follow rides
/// on it. Kept in the foreground (`-N`) as our child so we can end it by pid.
pub fn master(ep: &Endpoint, socket: &str) -> Argv {
    Argv::new("ssh")
        .args([
            "-M",
            "-S",
            socket,
            "-o",
            "ControlMaster=yes",
            "-o",
            "ControlPersist=no",
            "-N",
        ])
        .args(ep.opts.iter().cloned())
        .args(defaults())
        .arg("--")
        .arg(ep.destination())
}

/// A remote command multiplexed over the master (no new authentication).
pub fn via_master(ep: &Endpoint, socket: &str, remote: &[String]) -> Argv {
    Argv::new("ssh")
        .args(["-S", socket, "-o", "ControlMaster=no"])
        .args(ep.opts.iter().cloned())
        .args(defaults())
        .arg("--")
        .arg(ep.destination())
        .arg(shell_join(remote))
}

/// A remote command over a NEW connection that can never be multiplexed through an existing
/// master (the user's own ControlMaster settings included): the confirmation must prove that a
/// fresh login still works after activation.
pub fn fresh(ep: &Endpoint, remote: &[String]) -> Argv {
    fresh_many(ep, std::slice::from_ref(&remote.to_vec()))
}

/// The same as [`fresh`] but for several commands run one after the other in one login (one per
/// profile user when confirming several profiles of a host); stops at the first failure.
pub fn fresh_many(ep: &Endpoint, remotes: &[Vec<String>]) -> Argv {
    let line = remotes.iter().map(|r| shell_join(r)).collect::<Vec<_>>().join(" && ");
    Argv::new("ssh")
        .args(["-S", "none", "-o", "ControlMaster=no", "-o", "ControlPath=none"])
        .args(ep.opts.iter().cloned())
        .args(defaults())
        .arg("--")
        .arg(ep.destination())
        .arg(line)
}

/// Options for `NIX_SSHOPTS` so that `nix copy` rides on the master too.
pub fn nix_sshopts(ep: &Endpoint, socket: &str) -> Vec<String> {
    let mut v = vec![
        "-o".to_string(),
        format!("ControlPath={socket}"),
        "-o".into(),
        "ControlMaster=no".into(),
    ];
    v.extend(ep.opts.iter().cloned());
    v
}

/// How to become the profile user on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elevation {
    /// The `sudo` setting split into words, e.g. `["sudo", "-u"]`; the user is appended.
    pub sudo: Vec<String>,
    pub user: String,
    /// Read the password from stdin (interactiveSudo).
    pub password_on_stdin: bool,
}

impl Elevation {
    /// `sudo` setting string → words. The setting is a command prefix (`sudo -u`, `doas -u`,
    /// `run0 --user`) to which the user name is appended.
    pub fn from_setting(setting: &str, user: &str, interactive: bool) -> Result<Elevation, String> {
        let sudo = shlex::split(setting).filter(|w| !w.is_empty()).ok_or_else(|| {
            format!("sudo setting `{setting}` is not a valid command prefix (expected e.g. `sudo -u`)")
        })?;
        if sudo.is_empty() {
            return Err("sudo setting is empty (expected a command prefix such as `sudo -u`)".into());
        }
        Ok(Elevation {
            sudo,
            user: user.to_string(),
            password_on_stdin: interactive,
        })
    }

    /// What the elevated command reads on stdin before its own input: the password line when
    /// this elevation asks for one (interactiveSudo), else nothing.
    pub fn password_line(elevation: Option<&Elevation>, password: Option<&str>) -> Option<String> {
        elevation
            .filter(|e| e.password_on_stdin)
            .and(password)
            .map(|p| format!("{p}\n"))
    }

    /// The words placed before the elevated command.
    pub fn prefix(&self) -> Vec<String> {
        let mut v = self.sudo.clone();
        // For plain sudo with a password: read it from stdin, print no prompt (it would end up in
        // the agent's output). A custom command is left as the user wrote it.
        if self.password_on_stdin && v.len() == 2 && v[0] == "sudo" && v[1] == "-u" {
            v = vec!["sudo".into(), "-S".into(), "-p".into(), "".into(), "-u".into()];
        }
        v.push(self.user.clone());
        v
    }
}

/// `[sudo -u user] <agent> <args…>` as words.
pub fn agent_command(elevation: Option<&Elevation>, agent_bin: &str, args: &[String]) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(e) = elevation {
        v.extend(e.prefix());
    }
    v.push(agent_bin.to_string());
    v.extend(args.iter().cloned());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep() -> Endpoint {
        Endpoint {
            user: UserName::parse("deploy").unwrap(),
            host: HostName::parse("web-1").unwrap(),
            opts: vec!["-p".into(), "2222".into()],
        }
    }

    #[test]
    fn master_and_multiplexed_commands_share_the_socket() {
        let m = master(&ep(), "/tmp/s/h1");
        assert!(m.args.windows(2).any(|w| w == ["-S", "/tmp/s/h1"]));
        assert_eq!(m.args.last().unwrap(), "deploy@web-1");
        let c = via_master(&ep(), "/tmp/s/h1", &["echo".into(), "a b".into()]);
        assert!(c.args.windows(2).any(|w| w == ["-S", "/tmp/s/h1"]));
        assert_eq!(c.args.last().unwrap(), "echo 'a b'");
        // user options come before rollout's defaults so that they win
        let p = c.args.iter().position(|a| a == "2222").unwrap();
        let d = c.args.iter().position(|a| a == "ConnectTimeout=10").unwrap();
        assert!(p < d);
    }

    #[test]
    fn confirmation_connection_never_uses_a_master() {
        let f = fresh(&ep(), &["true".into()]);
        assert!(f.args.windows(2).any(|w| w == ["-o", "ControlPath=none"]));
        assert!(f.args.windows(2).any(|w| w == ["-S", "none"]));
        // our ControlPath=none comes before the user's options, so theirs cannot re-enable muxing
        let ours = f.args.iter().position(|a| a == "ControlPath=none").unwrap();
        let theirs = f.args.iter().position(|a| a == "-p").unwrap();
        assert!(ours < theirs);
    }

    #[test]
    fn destination_is_after_double_dash_and_a_hostname_cannot_become_an_option() {
        assert!(HostName::parse("-oProxyCommand=x").is_err());
        for f in [
            fresh(&ep(), &["true".into()]),
            via_master(&ep(), "/s", &["true".into()]),
            master(&ep(), "/s"),
        ] {
            let dd = f.args.iter().position(|a| a == "--").unwrap();
            assert_eq!(f.args[dd + 1], "deploy@web-1");
        }
    }

    #[test]
    fn remote_words_stay_literal() {
        let hostile = ["$(touch /tmp/pwned)", "`id`", "a;b", "x'y", "--profile-name", "a b\nc"];
        let words: Vec<String> = hostile.iter().map(|s| s.to_string()).collect();
        let line = via_master(&ep(), "/s", &words).args.last().unwrap().clone();
        assert_eq!(shlex::split(&line).unwrap(), words);
    }

    #[test]
    fn agent_command_quotes_every_word_and_elevates() {
        let e = Elevation::from_setting("sudo -u", "hello", false).unwrap();
        let words = agent_command(
            Some(&e),
            "/nix/store/x-rollout-agent/bin/rollout-agent",
            &["activate".into(), "--profile-name".into(), "my app".into()],
        );
        assert_eq!(
            shell_join(&words),
            "sudo -u hello /nix/store/x-rollout-agent/bin/rollout-agent activate --profile-name 'my app'"
        );
    }

    #[test]
    fn interactive_sudo_reads_password_from_stdin_without_prompt() {
        let e = Elevation::from_setting("sudo -u", "root", true).unwrap();
        assert_eq!(e.prefix(), vec!["sudo", "-S", "-p", "", "-u", "root"]);
        let custom = Elevation::from_setting("doas -u", "root", true).unwrap();
        assert_eq!(custom.prefix(), vec!["doas", "-u", "root"]);
    }

    #[test]
    fn empty_sudo_setting_is_an_error() {
        assert!(Elevation::from_setting("  ", "root", false).is_err());
        assert!(Elevation::from_setting("sudo \"-u", "root", false).is_err());
    }

    #[test]
    fn the_password_line_goes_only_to_an_elevation_that_reads_it() {
        let asks = Elevation::from_setting("sudo -u", "root", true).unwrap();
        let quiet = Elevation::from_setting("sudo -u", "root", false).unwrap();
        assert_eq!(
            Elevation::password_line(Some(&asks), Some("pw")).as_deref(),
            Some("pw\n")
        );
        assert_eq!(Elevation::password_line(Some(&quiet), Some("pw")), None);
        assert_eq!(Elevation::password_line(None, Some("pw")), None);
        assert_eq!(Elevation::password_line(Some(&asks), None), None);
    }
}
