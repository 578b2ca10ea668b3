//! External commands as plain values: program, arguments and environment, inspectable by unit tests.

use std::fmt;
use std::process::Command;

/// One external command. Built by the argv builders in [`crate::nix`] and [`crate::ssh`], run by
/// [`crate::exec`]. Keeping it a value means tests can assert on exactly what would run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Argv {
    pub program: String,
    pub args: Vec<String>,
    /// Extra environment variables (added to the inherited environment).
    pub env: Vec<(String, String)>,
}

impl Argv {
    pub fn new(program: impl Into<String>) -> Self {
        Argv {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args<I, S>(mut self, items: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(items.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// The whole command line, program first.
    pub fn words(&self) -> Vec<String> {
        std::iter::once(self.program.clone())
            .chain(self.args.iter().cloned())
            .collect()
    }

    /// A shell line in which every word is quoted: safe to hand to a remote shell (ssh joins its
    /// arguments with spaces and the remote shell splits them again).
    pub fn to_shell(&self) -> String {
        shell_join(&self.words())
    }

    pub fn to_command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.args);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }
}

impl fmt::Display for Argv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, v) in &self.env {
            write!(f, "{}={} ", k, quote(v))?;
        }
        f.write_str(&self.to_shell())
    }
}

/// Quote one word for a POSIX shell. Plain words stay readable; anything else is single-quoted.
pub fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./-_^".contains(&b));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

pub fn shell_join<S: AsRef<str>>(words: &[S]) -> String {
    words.iter().map(|w| quote(w.as_ref())).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_keeps_plain_words_and_protects_the_rest() {
        assert_eq!(quote("/nix/store/abc-x"), "/nix/store/abc-x");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote("$(rm -rf /)"), "'$(rm -rf /)'");
        assert_eq!(quote("a;b"), "'a;b'");
    }

    #[test]
    fn shell_line_round_trips_through_a_shell_splitter() {
        let words = vec![
            "echo".to_string(),
            "a b".into(),
            "it's".into(),
            "$HOME".into(),
            "".into(),
        ];
        let line = shell_join(&words);
        assert_eq!(shlex::split(&line).unwrap(), words);
    }

    #[test]
    fn display_shows_env_then_quoted_words() {
        let a = Argv::new("nix")
            .args(["copy", "--to", "ssh://u@h"])
            .env("NIX_SSHOPTS", "-p 22");
        assert_eq!(a.to_string(), "NIX_SSHOPTS='-p 22' nix copy --to ssh://u@h");
    }
}
