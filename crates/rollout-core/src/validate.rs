//! The one validation layer: every value from a flake or a flag that reaches a command, a URI or a
//! path is checked here, with the same rules whatever its source, before anything is built,
//! copied or contacted.
//!
//! Decisions (see `docs/validation.md` for the reasoning):
//! - Host names: DNS names / ssh_config aliases (`[A-Za-z0-9_-]` labels joined by `.`), IPv4,
//!   IPv6 with or without brackets and with a zone id (`fe80::1%eth0`). Nothing that a store URI
//!   (`?`, `#`, `/`, `@`, `%`) or ssh (leading `-`, whitespace) reads as syntax.
//! - User names: `[A-Za-z0-9_.][A-Za-z0-9_.-]*` with an optional trailing `$` (Samba machine
//!   accounts, accepted by shadow's useradd), at most 64 bytes, not only dots.
//! - Node and profile names: `[A-Za-z0-9_][A-Za-z0-9_.+@:=,~'-]*`, at most 255 bytes. Such a name
//!   is a file name (no `/`, never `.` or `..`), a quoted Nix attribute and a flake-URL fragment
//!   character without escaping; `$`, backticks, quotes, backslashes, `%`, spaces and control
//!   characters are refused up front with the node named.
//! - Paths on the target: absolute, no `..` component, no control characters.
//! - Timeouts: 1 s … 1 day.
//! - sshOpts: passed as separate argv words; ssh's own features (ProxyCommand, LocalCommand,
//!   ProxyJump) are kept, since the flake author already controls what runs. Refused: a word that
//!   is not an option or an option's value (ssh would take it as the destination and run the rest
//!   as a remote command), options that make ssh exit without running the command or leave the
//!   foreground (`-f -G -N -O -Q -V -W`), and a `-l` value that is not a user name. The
//!   destination always comes after `--`.

use std::fmt;

use crate::config::Issue;

/// Longest accepted timeout: one day.
pub const MAX_TIMEOUT: u64 = 86_400;
/// Shortest accepted timeout.
pub const MIN_TIMEOUT: u64 = 1;

/// Why one value was refused: what was expected and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub expected: &'static str,
    pub problem: String,
}

impl Invalid {
    fn new(expected: &'static str, problem: impl Into<String>) -> Invalid {
        Invalid {
            expected,
            problem: problem.into(),
        }
    }

    /// A `keys` entry that is not one ([`crate::keys::Key::from_object`] says why).
    pub fn key(problem: String) -> Invalid {
        Invalid::new("a key", problem)
    }

    /// A health check entry that is not one ([`crate::checks::Check::from_object`] says why).
    pub fn check(problem: String) -> Invalid {
        Invalid::new("a health check", problem)
    }

    /// `expected X, found `v`, which …`: the message part of an [`Issue`].
    pub fn message(&self, value: &str) -> String {
        format!("expected {}, found `{}`, {}", self.expected, shown(value), self.problem)
    }

    /// The issue for `value` at `path` (an attribute path or a flag).
    pub fn at(&self, path: &str, value: &str) -> Issue {
        Issue {
            path: path.to_string(),
            message: self.message(value),
        }
    }
}

/// A value as it is shown in messages: control characters and non-ASCII escaped, so that a
/// newline or an escape sequence in a flake cannot forge lines on the user's terminal.
pub fn shown(value: &str) -> String {
    value.chars().flat_map(char::escape_debug).collect()
}

/// Several problems, each on its own line (`path: expected …`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError {
    pub issues: Vec<Issue>,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.issues.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

fn control(c: char) -> bool {
    c.is_control() || c.is_whitespace()
}

const HOST_EXPECTED: &str = "a host name or address (DNS name, IPv4, or IPv6 with an optional %zone)";

/// A host name or address that ssh and a Nix store URI read as nothing but a host. The only
/// constructor validates; IPv6 is kept without brackets (ssh does not strip them).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct HostName(String);

impl HostName {
    pub fn parse(s: &str) -> Result<HostName, Invalid> {
        let bad = |p: &str| Err(Invalid::new(HOST_EXPECTED, p));
        if s.is_empty() {
            return bad("which is empty");
        }
        if s.chars().any(control) {
            return bad("which contains whitespace or a control character");
        }
        if s.starts_with('-') {
            return bad("which starts with `-` (ssh would read it as an option)");
        }
        if let Some(c) = s.chars().find(|c| matches!(c, '?' | '#' | '/' | '@')) {
            return bad(&format!(
                "which contains `{c}` (a store URI or ssh would read it as syntax)"
            ));
        }
        if let Some(inner) = s.strip_prefix('[') {
            let Some(inner) = inner.strip_suffix(']') else {
                return bad("which opens `[` without closing it");
            };
            return ipv6(inner).map(|()| HostName(inner.to_string()));
        }
        if s.contains(':') {
            return ipv6(s).map(|()| HostName(s.to_string()));
        }
        if s.contains('%') {
            return bad("which contains `%` outside an IPv6 zone id");
        }
        dns_name(s).map(|()| HostName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn ipv6(s: &str) -> Result<(), Invalid> {
    let (addr, zone) = match s.split_once('%') {
        Some((a, z)) => (a, Some(z)),
        None => (s, None),
    };
    if addr.parse::<std::net::Ipv6Addr>().is_err() {
        return Err(Invalid::new(HOST_EXPECTED, "which is not a valid IPv6 address"));
    }
    if let Some(z) = zone {
        if z.is_empty()
            || !z
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(Invalid::new(
                HOST_EXPECTED,
                "whose zone id is not an interface name ([A-Za-z0-9_.-])",
            ));
        }
    }
    Ok(())
}

fn dns_name(s: &str) -> Result<(), Invalid> {
    let body = s.strip_suffix('.').unwrap_or(s);
    if s.len() > 253 {
        return Err(Invalid::new(HOST_EXPECTED, "which is longer than 253 characters"));
    }
    for label in body.split('.') {
        if label.is_empty() {
            return Err(Invalid::new(
                HOST_EXPECTED,
                "which has an empty label (`..` or a leading `.`)",
            ));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_')))
        {
            return Err(Invalid::new(
                HOST_EXPECTED,
                format!(
                    "which contains `{}` (labels use letters, digits, `-` and `_`)",
                    shown(&c.to_string())
                ),
            ));
        }
        if label.starts_with('-') {
            return Err(Invalid::new(HOST_EXPECTED, "which has a label starting with `-`"));
        }
    }
    Ok(())
}

const USER_EXPECTED: &str = "a user name ([A-Za-z0-9_.][A-Za-z0-9_.-]*, optionally ending in `$`)";

/// A login or profile user name: safe as `user@host`, in a store URI and as a `sudo -u` word.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct UserName(String);

impl UserName {
    pub fn parse(s: &str) -> Result<UserName, Invalid> {
        let bad = |p: String| Err(Invalid::new(USER_EXPECTED, p));
        if s.is_empty() {
            return bad("which is empty".into());
        }
        if s.len() > 64 {
            return bad("which is longer than 64 characters".into());
        }
        if s.starts_with('-') {
            return bad("which starts with `-` (it would be read as an option)".into());
        }
        let body = s.strip_suffix('$').unwrap_or(s);
        if let Some(c) = body
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        {
            let why = if c == '@' { " (the host goes in `hostname`)" } else { "" };
            let what = if control(c) {
                "whitespace or a control character".to_string()
            } else {
                format!("`{c}`")
            };
            return bad(format!("which contains {what}{why}"));
        }
        if body.is_empty() || body.chars().all(|c| c == '.') {
            return bad("which is not a name".into());
        }
        Ok(UserName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

const NAME_EXPECTED: &str =
    "a name of letters, digits and `_ . + @ : = , ~ ' -` that starts with a letter, digit or `_`";

/// A node or profile name: a file name (for `--keep-result` roots and the target's profile), a
/// Nix attribute and a flake-URL fragment, all without escaping.
pub fn check_name(s: &str) -> Result<(), Invalid> {
    let bad = |p: String| Err(Invalid::new(NAME_EXPECTED, p));
    let Some(first) = s.chars().next() else {
        return bad("which is empty".into());
    };
    if s.len() > 255 {
        return bad("which is longer than 255 bytes (a file name)".into());
    }
    if !(first.is_ascii_alphanumeric() || first == '_') {
        return bad(format!("which starts with `{}`", shown(&first.to_string())));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_.+@:=,~'-".contains(*c)))
    {
        let what = if control(c) {
            "whitespace or a control character".to_string()
        } else {
            format!("`{}`", shown(&c.to_string()))
        };
        return bad(format!(
            "which contains {what} (names become file names, Nix attributes and URL fragments)"
        ));
    }
    Ok(())
}

const TARGET_PATH_EXPECTED: &str = "an absolute path on the target without `..`";

/// A path on the target (`profilePath`, `tempPath`): absolute, no `..`, no control characters.
pub fn check_target_path(s: &str) -> Result<(), Invalid> {
    let bad = |p: &str| Err(Invalid::new(TARGET_PATH_EXPECTED, p));
    if s.is_empty() {
        return bad("which is empty");
    }
    if !s.starts_with('/') {
        return bad("which is relative");
    }
    if s.chars().any(char::is_control) {
        return bad("which contains a control character");
    }
    if s.split('/').any(|c| c == "..") {
        return bad("which has a `..` component");
    }
    Ok(())
}

const LOCAL_PATH_EXPECTED: &str = "a directory path";

/// A local path given as a flag (`--result-path`, `--log-dir`): non-empty, no control characters.
pub fn check_local_path(s: &str) -> Result<(), Invalid> {
    if s.is_empty() {
        return Err(Invalid::new(LOCAL_PATH_EXPECTED, "which is empty"));
    }
    if s.chars().any(char::is_control) {
        return Err(Invalid::new(LOCAL_PATH_EXPECTED, "which contains a control character"));
    }
    Ok(())
}

const TIMEOUT_EXPECTED: &str = "a number of seconds from 1 to 86400 (one day)";

/// `confirmTimeout`, `activationTimeout`.
pub fn check_timeout(n: u64) -> Result<(), Invalid> {
    if (MIN_TIMEOUT..=MAX_TIMEOUT).contains(&n) {
        Ok(())
    } else {
        Err(Invalid::new(TIMEOUT_EXPECTED, "which is out of range"))
    }
}

/// ssh's options (OpenSSH 9): those that take a value, and those that do not.
const SSH_WITH_VALUE: &str = "bceilmopBDEFIJLOPQRSwW";
const SSH_FLAGS: &str = "1246afgknqstvxACGKMNTVXYy";
/// Options that make ssh exit without running the command, print instead of connect, or fork
/// into the background: a deploy through them would report success for work that never ran.
const SSH_REFUSED: &str = "fGNOQVW";

const SSH_OPTS_EXPECTED: &str = "ssh options (each word an option or an option's value)";

/// `sshOpts` / `--ssh-opts`: every word an option of ssh or the value of the option before it.
/// Returns the index of the offending word with the reason.
pub fn check_ssh_opts(words: &[String]) -> Result<(), (usize, String, Invalid)> {
    let bad = |i: usize, w: &String, p: String| Err((i, w.clone(), Invalid::new(SSH_OPTS_EXPECTED, p)));
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        if w.chars().any(|c| c.is_control() || c == '\n') {
            return bad(i, w, "which contains a control character".into());
        }
        let Some(flags) = w.strip_prefix('-').filter(|f| !f.is_empty() && *f != "-") else {
            return bad(
                i,
                w,
                "which is not an option (ssh would take it as the destination and run the rest as a command)".into(),
            );
        };
        for (pos, c) in flags.char_indices() {
            if SSH_REFUSED.contains(c) {
                return bad(
                    i,
                    w,
                    format!("whose `-{c}` makes ssh skip or background the command rollout runs"),
                );
            }
            if SSH_WITH_VALUE.contains(c) {
                let rest = &flags[pos + c.len_utf8()..];
                let value = if rest.is_empty() {
                    i += 1;
                    match words.get(i) {
                        Some(v) => v.as_str(),
                        None => return bad(i - 1, w, format!("whose `-{c}` lacks its value")),
                    }
                } else {
                    rest
                };
                if value.chars().any(char::is_control) {
                    return bad(i, &words[i], "which contains a control character".into());
                }
                if c == 'l' {
                    if let Err(e) = UserName::parse(value) {
                        return Err((i, value.to_string(), e));
                    }
                }
                break;
            }
            if !SSH_FLAGS.contains(c) {
                return bad(i, w, format!("whose `-{}` is not an ssh option", shown(&c.to_string())));
            }
        }
        i += 1;
    }
    Ok(())
}

/// `sudo` setting: a command prefix that shell-style splitting turns into at least one word.
pub fn check_sudo(s: &str) -> Result<(), Invalid> {
    const EXP: &str = "a command prefix such as `sudo -u` (the user is appended)";
    match shlex::split(s) {
        None => Err(Invalid::new(EXP, "which has unbalanced quotes")),
        Some(w) if w.iter().all(String::is_empty) => Err(Invalid::new(EXP, "which is empty")),
        Some(w) if w.iter().any(|w| w.chars().any(char::is_control)) => {
            Err(Invalid::new(EXP, "which contains a control character"))
        }
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_accepted() {
        for h in [
            "web",
            "web-1.example.com",
            "web.example.com.",
            "my_host",
            "10.0.0.1",
            "::1",
            "fe80::1%eth0",
            "2001:db8::1",
            "::ffff:10.0.0.1",
            "host1",
        ] {
            assert_eq!(HostName::parse(h).unwrap().as_str(), h, "{h}");
        }
        assert_eq!(HostName::parse("[::1]").unwrap().as_str(), "::1");
        assert_eq!(HostName::parse("[fe80::1%eth0]").unwrap().as_str(), "fe80::1%eth0");
    }

    #[test]
    fn host_names_refused_with_the_reason() {
        let cases = [
            ("host1?remote-program=touch%20/tmp/pwned%3Bnix-store", "`?`"),
            ("host1#frag", "`#`"),
            ("host1/x", "`/`"),
            ("root@host1", "`@`"),
            ("host%41", "`%` outside an IPv6 zone id"),
            ("fe80::1%eth0;x", "zone id"),
            ("-oProxyCommand=x", "starts with `-`"),
            ("web example", "whitespace"),
            ("web\nx", "control"),
            ("", "empty"),
            ("a..b", "empty label"),
            ("[::1", "without closing"),
            ("[web]", "IPv6"),
            ("1:2:3", "IPv6"),
            ("a;b", "`;`"),
            ("$(id)", "`$`"),
            ("a-.-b", "starting with `-`"),
        ];
        for (h, why) in cases {
            let e = HostName::parse(h).unwrap_err();
            assert!(e.problem.contains(why), "{h}: {}", e.problem);
            assert!(e.message(h).starts_with("expected a host name or address"), "{h}");
        }
    }

    #[test]
    fn user_names() {
        for u in ["root", "deploy", "hello", "a.b", "_x", "machine$", "1user", "web-admin"] {
            assert!(UserName::parse(u).is_ok(), "{u}");
        }
        for (u, why) in [
            ("", "empty"),
            ("-x", "starts with `-`"),
            ("root@web", "`@`"),
            ("a;b", "`;`"),
            ("$(id)", "`$`"),
            ("a$b", "`$`"),
            ("a b", "whitespace"),
            ("a'b", "`'`"),
            ("a\"b", "`\"`"),
            ("a:b", "`:`"),
            ("x?remote-program=y", "`?`"),
            ("..", "not a name"),
            ("$", "not a name"),
        ] {
            let e = UserName::parse(u).unwrap_err();
            assert!(e.problem.contains(why), "{u}: {}", e.problem);
        }
    }

    #[test]
    fn node_and_profile_names() {
        for n in [
            "web",
            "web.example.com",
            "a.b",
            "x_y",
            "sys-1",
            "1",
            "a@b",
            "k=v,w",
            "_",
        ] {
            assert!(check_name(n).is_ok(), "{n}");
        }
        for n in [
            "", ".", "..", "../../x", "/tmp/x", "a/b", "a$b", "a`b", "a\"b", "a\\b", "a\nb", "a b", "a%41", "a#b",
            "-x", ".hidden", "a\0b", "a?b",
        ] {
            assert!(check_name(n).is_err(), "{n:?}");
        }
    }

    #[test]
    fn target_paths_and_timeouts() {
        assert!(check_target_path("/nix/var/nix/profiles/x").is_ok());
        assert!(check_target_path("/tmp/my state").is_ok());
        for (p, why) in [
            ("tmp", "relative"),
            ("", "empty"),
            ("/a/../b", "`..`"),
            ("/a/..", "`..`"),
            ("/a\nb", "control"),
        ] {
            assert!(check_target_path(p).unwrap_err().problem.contains(why), "{p}");
        }
        assert!(check_timeout(1).is_ok() && check_timeout(86_400).is_ok());
        assert!(check_timeout(0).is_err() && check_timeout(86_401).is_err() && check_timeout(1 << 32).is_err());
        assert_eq!(
            check_timeout(0).unwrap_err().message("0"),
            "expected a number of seconds from 1 to 86400 (one day), found `0`, which is out of range"
        );
    }

    fn words(s: &[&str]) -> Vec<String> {
        s.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn ssh_options() {
        for ok in [
            &["-p", "2222"][..],
            &["-oProxyCommand=nc %h %p"],
            &["-o", "LocalCommand=true", "-o", "PermitLocalCommand=yes"],
            &["-F", "/x/ssh_config", "-4", "-v"],
            &["-p2222", "-i", "/k"],
            &["-J", "jump@bastion"],
            &["-l", "deploy"],
            &["-vvv"],
        ] {
            assert!(check_ssh_opts(&words(ok)).is_ok(), "{ok:?}");
        }
        for (bad, at, why) in [
            (&["evilhost"][..], 0, "not an option"),
            (&["-p"], 0, "lacks its value"),
            (&["-p", "22", "--"], 2, "not an option"),
            (&["-O", "exit"], 0, "`-O`"),
            (&["-G"], 0, "`-G`"),
            (&["-fN"], 0, "`-f`"),
            (&["-Z"], 0, "not an ssh option"),
            (&["-l", "x?remote-program=y"], 1, "`?`"),
            (&["-lroot@h"], 0, "`@`"),
            (&[""], 0, "not an option"),
            (&["-o", "A=b\nc"], 1, "control"),
        ] {
            let (i, _, e) = check_ssh_opts(&words(bad)).unwrap_err();
            assert_eq!(i, at, "{bad:?}");
            assert!(e.problem.contains(why), "{bad:?}: {}", e.problem);
        }
    }

    #[test]
    fn sudo_setting() {
        assert!(check_sudo("sudo -u").is_ok() && check_sudo("doas -u").is_ok());
        assert!(check_sudo("  ").is_err() && check_sudo("sudo \"-u").is_err());
    }

    #[test]
    fn shown_values_cannot_forge_lines() {
        assert_eq!(shown("a\nb\x1b[31m"), "a\\nb\\u{1b}[31m");
    }
}
