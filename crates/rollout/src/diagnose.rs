//! Failure messages as a person should read them: rollout's own first line (what failed, where,
//! what is expected), the underlying tool's text indented below, and `hint:` lines for the common
//! fixes. The core reports what happened; this module only recognises well-known tool texts
//! (ssh, sudo, nix) so that their first line never stands in for rollout's.

/// One failure message, split for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explained {
    /// rollout's own first line.
    pub headline: String,
    /// The tool's text (or the rest of the message), shown indented.
    pub detail: Vec<String>,
    /// One line each: what usually fixes it.
    pub hints: Vec<String>,
}

/// ssh's "REMOTE HOST IDENTIFICATION HAS CHANGED" box is drawn with these.
const SSH_BANNER: &str = "@@@@@@@@";

/// Texts of well-known failures and the hint each calls for.
const HINTS: &[(&[&str], &str)] = &[
    (
        &["lacks a signature by a trusted key", "lacks a valid signature"],
        "the target's Nix does not trust paths copied by this ssh user: add the user to `trusted-users` in the \
         target's nix.conf (NixOS: nix.settings.trusted-users), or sign the closures with a key the target trusts",
    ),
    (
        &["REMOTE HOST IDENTIFICATION HAS CHANGED", "Host key verification failed"],
        "the target's ssh host key is not the one in known_hosts: if the machine was reinstalled on purpose, remove \
         the old key (`ssh-keygen -R HOST`) and connect once to check the new one; otherwise find out why it changed",
    ),
    (
        &[
            "a password is required",
            "a terminal is required to read the password",
            "no tty present and no askpass program",
            "incorrect password attempt",
        ],
        "sudo on the target wants a password: set `interactiveSudo = true` (or --interactive-sudo true) and give it \
         through ROLLOUT_SUDO_PASSWORD_<NODE> or --sudo-password-command, or allow the ssh user passwordless sudo",
    ),
    (
        &["no `deploy-rs-activate`", "deploy-rs-activate: No such file"],
        "build the profile with an activation script: `rollout.lib.<system>.activate.nixos \
         self.nixosConfigurations.<name>` (or `.custom`, `.home-manager`; deploy-rs's lib works too)",
    ),
    (
        &["Permission denied (publickey"],
        "ssh could not log in: check sshUser and that its key is offered (ssh-agent, ~/.ssh/config, --ssh-opts \"-i KEY\")",
    ),
];

/// Splits `msg` into rollout's line, the tool's text and hints.
pub fn explain(msg: &str) -> Explained {
    let mut lines: Vec<String> = msg.lines().map(str::to_string).collect();
    if lines.is_empty() {
        lines.push(String::new());
    }
    let mut headline = lines.remove(0);
    let mut detail = lines;
    // A tool's first line glued to rollout's ("cannot connect to h: @@@@…"): move it below.
    if let Some(i) = headline
        .find(SSH_BANNER)
        .or_else(|| headline.find(": error: ").map(|i| i + 2))
    {
        detail.insert(0, headline[i..].to_string());
        headline = headline[..i].trim_end().trim_end_matches(':').to_string();
    }
    if let Some(better) = refine(&headline, &detail) {
        headline = better;
    }
    let hints = HINTS
        .iter()
        .filter(|(texts, _)| texts.iter().any(|t| msg.contains(t)))
        .map(|(_, hint)| (*hint).to_string())
        .collect();
    Explained {
        headline,
        detail,
        hints,
    }
}

/// A better first line where the message's own is generic and the tool's text says more.
fn refine(headline: &str, detail: &[String]) -> Option<String> {
    let text = detail.join("\n");
    if text.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") {
        return Some(format!(
            "{headline}: its ssh host key is not the one in known_hosts, so ssh refused to connect"
        ));
    }
    if let Some(attr) = between(&text, "flake output attribute '", "' is not a derivation") {
        let field = attr.strip_suffix(".path").unwrap_or(attr);
        return Some(format!(
            "{field}.path is not a derivation (a plain string such as \"/etc\", or a store path that Nix cannot \
             build); expected a profile built by lib.<system>.activate.* (or a Nix path)"
        ));
    }
    if let Some(node) = between(headline, "evaluating node `", "`") {
        // One node's profile paths (see rollout_core::deploy::stream).
        let first = text.lines().find_map(|l| l.strip_prefix("error: "))?;
        let flake = between(headline, "` of `", "` failed").unwrap_or(".");
        return Some(format!(
            "evaluating node `{node}` failed: {first} (an error raised by the flake's Nix code; \
             `nix eval --show-trace {flake}#deploy.nodes.{}.profiles` shows where)",
            rollout_core::target::quote_attr(node)
        ));
    }
    let evaluating = between(headline, "evaluating the `deploy` output of `", "` failed");
    let flake = evaluating.or_else(|| between(headline, "checks of `", "` failed"))?;
    // A syntax error fails the checks and the evaluation alike: skipping checks would not help.
    if let Some(syntax) = text.lines().find_map(|l| l.strip_prefix("error: syntax error")) {
        let place = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("at "))
            .map(|at| format!(" in {}", source_place(at)))
            .unwrap_or_default();
        return Some(format!(
            "`{flake}` has a Nix syntax error{place} (syntax error{syntax}); fix the file and run again"
        ));
    }
    let flake = evaluating?;
    if text.contains("does not provide attribute") && text.contains("'deploy'") {
        return Some(format!(
            "`{flake}` has no `deploy` output; expected `deploy = {{ nodes = {{ … }}; }}` among the flake's outputs"
        ));
    }
    let first = text.lines().find_map(|l| l.strip_prefix("error: "))?;
    Some(format!(
        "evaluating the `deploy` output of `{flake}` failed: {first} (an error raised by the flake's Nix code; \
         `nix eval --show-trace {flake}#deploy` shows where)"
    ))
}

/// `/nix/store/…-source/dir/flake.nix:1:44:` → `dir/flake.nix, line 1, column 44`.
fn source_place(at: &str) -> String {
    let at = at.trim_end_matches(':');
    let rel = at.split_once("-source/").map_or(at, |(_, r)| r);
    let mut parts = rel.rsplitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(col), Some(line), Some(file)) if col.parse::<u32>().is_ok() && line.parse::<u32>().is_ok() => {
            format!("{file}, line {line}, column {col}")
        }
        _ => rel.to_string(),
    }
}

/// The text between `start` and the next `end`.
fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = s.find(start)? + start.len();
    let len = s[from..].find(end)?;
    Some(&s[from..from + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ssh_banner_moves_below_rollouts_line_with_a_host_key_hint() {
        let msg = "cannot connect to deploy@host1: @@@@@@@@@@@@@@@@\n\
                   @    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n\
                   Host key verification failed.";
        let e = explain(msg);
        assert_eq!(
            e.headline,
            "cannot connect to deploy@host1: its ssh host key is not the one in known_hosts, so ssh refused to connect"
        );
        assert_eq!(e.detail[0], "@@@@@@@@@@@@@@@@");
        assert_eq!(e.detail.len(), 3);
        assert_eq!(e.hints.len(), 1);
        assert!(e.hints[0].contains("ssh-keygen -R"));
    }

    #[test]
    fn well_known_tool_texts_get_their_hint() {
        let rows = [
            (
                "copying failed: error: cannot add path '/nix/store/x' because it lacks a valid signature",
                "trusted-users",
            ),
            (
                "copy: path '/nix/store/x' lacks a signature by a trusted key",
                "trusted-users",
            ),
            ("sudo refused (sudo: a password is required)", "interactiveSudo"),
            (
                "profile `p` of node `n`: /nix/store/x has no `deploy-rs-activate`; build it",
                "activate.nixos",
            ),
            ("cannot connect to a@b: a@b: Permission denied (publickey).", "sshUser"),
        ];
        for (msg, word) in rows {
            let e = explain(msg);
            assert_eq!(e.hints.len(), 1, "{msg}");
            assert!(e.hints[0].contains(word), "{msg}: {:?}", e.hints);
        }
        assert!(explain("the deployment failed").hints.is_empty());
    }

    #[test]
    fn nix_evaluation_failures_get_rollouts_own_first_line() {
        let syntax = explain(
            "evaluating the `deploy` output of `./fleet` failed:\nerror: syntax error, unexpected ';'\n\n       \
             at /nix/store/yqm8-source/flake.nix:1:44:\n\n            1| { outputs",
        );
        assert_eq!(
            syntax.headline,
            "`./fleet` has a Nix syntax error in flake.nix, line 1, column 44 (syntax error, unexpected ';'); fix \
             the file and run again"
        );
        assert_eq!(syntax.detail[0], "error: syntax error, unexpected ';'");
        let in_checks = explain(
            "checks of `.` failed (skip them with -s/--skip-checks):\nerror: syntax error, unexpected ';'\n at \
             /nix/store/a-source/sub/flake.nix:3:5:",
        );
        assert!(in_checks
            .headline
            .starts_with("`.` has a Nix syntax error in sub/flake.nix, line 3, column 5"));
        let check_failed = explain("checks of `.` failed (skip them with -s/--skip-checks):\nerror: builder failed");
        assert_eq!(
            check_failed.headline,
            "checks of `.` failed (skip them with -s/--skip-checks):"
        );
        let missing = explain(
            "evaluating the `deploy` output of `./x` failed:\nerror: flake 'path:/x' does not provide attribute \
             'packages.x86_64-linux.deploy', 'legacyPackages.x86_64-linux.deploy' or 'deploy'",
        );
        assert!(
            missing.headline.starts_with("`./x` has no `deploy` output"),
            "{}",
            missing.headline
        );
        let thrown = explain(
            "evaluating the `deploy` output of `./t` failed:\nerror: no such host config\n(use '--show-trace')",
        );
        assert!(
            thrown
                .headline
                .starts_with("evaluating the `deploy` output of `./t` failed: no such host config (an error"),
            "{}",
            thrown.headline
        );
        let not_drv = explain(
            "building the profiles failed:\nerror: flake output attribute 'deploy.nodes.web.profiles.system.path' is \
             not a derivation",
        );
        assert!(
            not_drv
                .headline
                .starts_with("deploy.nodes.web.profiles.system.path is not a derivation"),
            "{}",
            not_drv.headline
        );
    }

    #[test]
    fn nix_text_glued_to_rollouts_line_moves_below_it() {
        let e = explain(
            "copying 2 path(s) to hello@host1 failed, so nothing was activated there: error: cannot add path \
             '/nix/store/x' because it lacks a valid signature\nerror: unexpected end-of-file",
        );
        assert_eq!(
            e.headline,
            "copying 2 path(s) to hello@host1 failed, so nothing was activated there"
        );
        assert_eq!(
            e.detail,
            [
                "error: cannot add path '/nix/store/x' because it lacks a valid signature",
                "error: unexpected end-of-file"
            ]
        );
        assert!(e.hints[0].contains("trusted-users"));
    }

    #[test]
    fn other_messages_keep_their_first_line() {
        let e = explain("--parallel must be at least 1");
        assert_eq!(e.headline, "--parallel must be at least 1");
        assert!(e.detail.is_empty() && e.hints.is_empty());
        assert_eq!(explain("").headline, "");
    }
}
