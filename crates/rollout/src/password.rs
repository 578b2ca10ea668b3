//! Sudo passwords for `interactiveSudo`: asked once per host (not per profile), or taken from an
//! environment variable or a command. Passwords only ever travel on the remote command's stdin;
//! they are held as [`Secret`]s (zeroed when dropped, redacted in `Debug`), and the variables
//! that carry them are not passed on to any child process (see `rollout_core::exec::command`).

use rollout_core::exec::is_secret_var;
use rollout_core::plan::Plan;
use rollout_core::secret::Secret;
use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};

fn env_key(node: &str) -> String {
    node.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn from_command(cmd: &str, node: &str, host: &str) -> Result<Secret, String> {
    let mut command = std::process::Command::new("sh");
    for (k, _) in std::env::vars_os().filter(|(k, _)| is_secret_var(k)) {
        command.env_remove(k);
    }
    let out = command
        .args(["-c", cmd])
        .env("ROLLOUT_NODE", node)
        .env("ROLLOUT_HOST", host)
        .stdin(std::process::Stdio::inherit())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("--sudo-password-command could not run: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "--sudo-password-command failed for node `{node}` ({})",
            out.status
        ));
    }
    let stdout = zeroize::Zeroizing::new(out.stdout);
    let s = String::from_utf8_lossy(&stdout);
    let pw = Secret::new(s.lines().next().unwrap_or("").to_string());
    if let std::borrow::Cow::Owned(copy) = s {
        drop(zeroize::Zeroizing::new(copy));
    }
    Ok(pw)
}

/// Read a line from the terminal with echo off.
fn prompt(host: &str) -> Result<Secret, String> {
    // Off a terminal (CI, a pipe) nobody can answer: say how to give the password instead.
    if !std::io::stdin().is_terminal() {
        return Err(format!(
            "interactiveSudo needs the sudo password for {host}, but stdin is not a terminal, so rollout does not \
             ask; set ROLLOUT_SUDO_PASSWORD_<NODE> or ROLLOUT_SUDO_PASSWORD, or pass --sudo-password-command"
        ));
    }
    let tty = std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty").map_err(|_| {
        format!("interactiveSudo needs the sudo password for {host}, but there is no terminal; set ROLLOUT_SUDO_PASSWORD_<NODE> or ROLLOUT_SUDO_PASSWORD, or pass --sudo-password-command")
    })?;
    use std::os::unix::io::AsRawFd;
    let fd = tty.as_raw_fd();
    // SAFETY: plain termios calls on a file descriptor we own for the duration of this function.
    let mut term: libc::termios = unsafe { std::mem::zeroed() };
    let have = unsafe { libc::tcgetattr(fd, &mut term) } == 0;
    let saved = term;
    if have {
        term.c_lflag &= !libc::ECHO;
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &term) };
    }
    let mut w = &tty;
    let _ = write!(w, "(sudo for {host}) Password: ");
    let _ = w.flush();
    let mut line = zeroize::Zeroizing::new(String::new());
    let r = std::io::BufReader::new(&tty).read_line(&mut line);
    if have {
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    }
    let _ = writeln!(w);
    r.map_err(|e| format!("reading the sudo password failed: {e}"))?;
    Ok(Secret::new(line.trim_end_matches(['\n', '\r']).to_string()))
}

/// One password per hostname that has an elevated profile with interactiveSudo.
pub fn collect(plan: &Plan, command: Option<&str>) -> Result<HashMap<String, Secret>, String> {
    let mut out = HashMap::new();
    for d in &plan.deployments {
        if !(d.settings.elevate && d.settings.interactive_sudo) || out.contains_key(&d.settings.hostname) {
            continue;
        }
        let key = env_key(&d.node);
        let from_env = [
            format!("ROLLOUT_SUDO_PASSWORD_{key}"),
            format!("DEPLOY_RS_SUDO_PASSWORD_{key}"),
            "ROLLOUT_SUDO_PASSWORD".to_string(),
        ]
        .iter()
        .find_map(|name| std::env::var(name).ok());
        let pw = if let Some(p) = from_env {
            Secret::new(p)
        } else if let Some(cmd) = command {
            from_command(cmd, &d.node, &d.settings.hostname)?
        } else {
            prompt(&d.settings.hostname)?
        };
        out.insert(d.settings.hostname.clone(), pw);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_keys_follow_deploy_rs_convention() {
        assert_eq!(env_key("web-1.example"), "WEB_1_EXAMPLE");
    }
}
