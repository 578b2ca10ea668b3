//! Target syntax: `FLAKE#NODE.PROFILE` (flake mode) and bare `NODE.PROFILE` (`--file` mode).
//!
//! The grammar follows deploy-rs so existing command lines keep working: the flake reference is
//! everything before the first `#` and is handed to Nix untouched; the fragment is at most two
//! names separated by `.`, each either a Nix identifier or a double-quoted Nix string. Unlike
//! deploy-rs we parse the fragment ourselves instead of through a Nix parser, which lets us
//! accept a quoted node on its own (`FLAKE#"a.b"`) and give precise error messages.

use std::fmt;

use serde::Serialize;

/// One parsed deployment target.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Target {
    /// Flake reference (or, in `--file` mode, the Nix file/directory), passed to Nix verbatim.
    pub flake: String,
    /// Selected node; `None` means every node.
    pub node: Option<String>,
    /// Selected profile of `node`; `None` means every profile of the node.
    pub profile: Option<String>,
}

impl Target {
    /// A whole-flake target.
    pub fn whole(flake: impl Into<String>) -> Self {
        Target {
            flake: flake.into(),
            node: None,
            profile: None,
        }
    }
}

impl fmt::Display for Target {
    /// Canonical form that [`parse_target`] reads back to the same value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.flake)?;
        if let Some(node) = &self.node {
            write!(f, "#{}", quote_attr(node))?;
            if let Some(profile) = &self.profile {
                write!(f, ".{}", quote_attr(profile))?;
            }
        }
        Ok(())
    }
}

/// Why a target string was rejected. Every message is one line, names the target and says what
/// was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("invalid target `{target}`: {problem}; expected {expected}")]
    Syntax {
        target: String,
        problem: String,
        expected: &'static str,
    },
}

const EXPECT_FLAKE: &str = "FLAKE, FLAKE#NODE or FLAKE#NODE.PROFILE, where a name containing `.` or other special characters is double-quoted (shell-quote the whole target: '.#\"host.example.com\".system')";
const EXPECT_FILE: &str = "NODE or NODE.PROFILE (or `.`/empty for every node), where a name containing `.` or other special characters is double-quoted";

/// Parses a flake-mode target such as `.#web.system`, `github:o/r#"db.example.com"` or `../x`.
pub fn parse_target(s: &str) -> Result<Target, TargetError> {
    // The flake reference ends at the FIRST `#`; anything after it is the attribute fragment.
    let (flake, fragment) = match s.split_once('#') {
        Some((flake, fragment)) => (flake, fragment),
        None => (s, ""),
    };
    let (node, profile) = parse_fragment(fragment).map_err(|problem| TargetError::Syntax {
        target: s.to_string(),
        problem,
        expected: EXPECT_FLAKE,
    })?;
    Ok(Target {
        flake: flake.to_string(),
        node,
        profile,
    })
}

/// Parses a `--file` mode target: a bare `node[.profile]`; `.` or the empty string means every node.
pub fn parse_file_target(file: &str, s: &str) -> Result<Target, TargetError> {
    let fragment = if s == "." { "" } else { s };
    let (node, profile) = parse_fragment(fragment).map_err(|problem| TargetError::Syntax {
        target: s.to_string(),
        problem,
        expected: EXPECT_FILE,
    })?;
    Ok(Target {
        flake: file.to_string(),
        node,
        profile,
    })
}

/// Whether `s` is a plain Nix identifier as accepted in targets: `[A-Za-z_][A-Za-z0-9_'-]*`.
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '\'' | '-'))
}

/// Renders an attribute name for a target or an attribute path: bare when it is an identifier,
/// otherwise as a double-quoted Nix string (so `a.b` becomes `"a.b"`).
pub fn quote_attr(name: &str) -> String {
    if is_identifier(name) {
        return name.to_string();
    }
    crate::evalexpr::nix_string(name)
}

/// Parses the fragment after `#` into (node, profile). The error is a short problem statement;
/// the caller adds the target and the expected form.
fn parse_fragment(fragment: &str) -> Result<(Option<String>, Option<String>), String> {
    let chars: Vec<char> = fragment.chars().collect();
    let mut pos = 0;
    let mut names: Vec<String> = Vec::new();
    let mut trailing_dot = false;

    loop {
        // End of input or a `#` comment (deploy-rs parses the fragment as Nix, where `#` starts
        // a comment; we keep that so `.#a#b` still means node `a`).
        if pos >= chars.len() || chars[pos] == '#' {
            if names.is_empty() && trailing_dot {
                return Err("a `.` must follow a node name".into());
            }
            break;
        }
        if !names.is_empty() && !trailing_dot {
            // After a name only `.` (or the end) may follow.
            let c = chars[pos];
            if c != '.' {
                return Err(describe_unexpected(c, pos, "`.` or the end of the target"));
            }
            pos += 1;
            trailing_dot = true;
            continue;
        }
        // Expecting a name.
        if names.len() == 2 {
            return Err(format!(
                "too many components after `#` (`{}` would be a third); a target names at most a node and a profile",
                fragment_rest(&chars, pos)
            ));
        }
        let c = chars[pos];
        let name = if c == '"' {
            let (name, next) = parse_quoted(&chars, pos)?;
            pos = next;
            name
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = pos;
            while pos < chars.len() && (chars[pos].is_ascii_alphanumeric() || matches!(chars[pos], '_' | '\'' | '-')) {
                pos += 1;
            }
            chars[start..pos].iter().collect()
        } else if c == '.' {
            return Err(if names.is_empty() {
                "a `.` must follow a node name".into()
            } else {
                "empty name between two `.`".into()
            });
        } else {
            let what = if names.is_empty() {
                "a node name"
            } else {
                "a profile name"
            };
            return Err(describe_unexpected(c, pos, what));
        };
        if name.is_empty() {
            return Err("empty quoted name `\"\"`".into());
        }
        names.push(name);
        trailing_dot = false;
    }

    let mut it = names.into_iter();
    Ok((it.next(), it.next()))
}

fn fragment_rest(chars: &[char], pos: usize) -> String {
    chars[pos..].iter().take_while(|c| **c != '#').collect()
}

fn describe_unexpected(c: char, pos: usize, wanted: &str) -> String {
    let shown = if c.is_whitespace() {
        "whitespace".to_string()
    } else {
        format!("`{c}`")
    };
    let hint = if c.is_ascii_digit() {
        " (a bare name cannot start with a digit; quote it)"
    } else if c == '$' {
        " (interpolation is not allowed)"
    } else if c.is_whitespace() {
        " (quote names containing spaces)"
    } else {
        ""
    };
    format!(
        "unexpected {shown} at position {} of the fragment, wanted {wanted}{hint}",
        pos + 1
    )
}

/// Parses a double-quoted Nix string starting at `chars[start] == '"'`. Returns the decoded
/// value and the position after the closing quote.
fn parse_quoted(chars: &[char], start: usize) -> Result<(String, usize), String> {
    let mut out = String::new();
    let mut pos = start + 1;
    while pos < chars.len() {
        match chars[pos] {
            '"' => return Ok((out, pos + 1)),
            '\\' => {
                let Some(&next) = chars.get(pos + 1) else { break };
                // Nix string escapes: \n \r \t are control characters, any other \X is X.
                out.push(match next {
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    other => other,
                });
                pos += 2;
            }
            '$' => match chars.get(pos + 1) {
                Some('{') => {
                    return Err(
                        "`${` interpolation is not allowed in a quoted name (write `\\${` for a literal)".into(),
                    )
                }
                // In Nix `$$` is a literal `$$` (it also stops `$${` from interpolating).
                Some('$') => {
                    out.push_str("$$");
                    pos += 2;
                }
                _ => {
                    out.push('$');
                    pos += 1;
                }
            },
            c => {
                out.push(c);
                pos += 1;
            }
        }
    }
    Err("unterminated quoted name (missing closing `\"`)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(flake: &str, node: Option<&str>, profile: Option<&str>) -> Target {
        Target {
            flake: flake.into(),
            node: node.map(Into::into),
            profile: profile.map(Into::into),
        }
    }

    fn ok(s: &str) -> Target {
        parse_target(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn err(s: &str) -> String {
        match parse_target(s) {
            Ok(t) => panic!("{s} parsed as {t:?}"),
            Err(e) => e.to_string(),
        }
    }

    // deploy-rs's own test_parse_flake cases.
    #[test]
    fn deploy_rs_unit_cases() {
        let r = "../deploy/examples/system";
        assert_eq!(ok(r), t(r, None, None));
        assert_eq!(ok(&format!("{r}#")), t(r, None, None));
        assert_eq!(
            ok(&format!("{r}#computer.\"something.nix\"")),
            t(r, Some("computer"), Some("something.nix"))
        );
        assert_eq!(
            ok(&format!("{r}#\"example.com\".system")),
            t(r, Some("example.com"), Some("system"))
        );
        assert_eq!(ok(&format!("{r}#example")), t(r, Some("example"), None));
        assert_eq!(
            ok(&format!("{r}#example.system")),
            t(r, Some("example"), Some("system"))
        );
    }

    #[test]
    fn brief_cases() {
        assert_eq!(ok("../x"), t("../x", None, None));
        assert_eq!(ok("../x#"), t("../x", None, None));
        assert_eq!(ok("../x#example"), t("../x", Some("example"), None));
        assert_eq!(ok("../x#example.system"), t("../x", Some("example"), Some("system")));
        assert_eq!(
            ok("../x#\"example.com\".system"),
            t("../x", Some("example.com"), Some("system"))
        );
        assert_eq!(
            ok("../x#computer.\"something.nix\""),
            t("../x", Some("computer"), Some("something.nix"))
        );
    }

    // Every accepted row of the observed table (deploy-rs.md §2.2).
    #[test]
    fn observed_table_accepted_rows() {
        assert_eq!(ok(".#"), t(".", None, None));
        assert_eq!(ok("#"), t("", None, None));
        assert_eq!(ok(""), t("", None, None));
        assert_eq!(ok("#node"), t("", Some("node"), None));
        assert_eq!(ok("node"), t("node", None, None));
        assert_eq!(ok("github:foo/bar#node"), t("github:foo/bar", Some("node"), None));
        assert_eq!(ok("./x?dir=y#node.p"), t("./x?dir=y", Some("node"), Some("p")));
        assert_eq!(ok(".#a-b"), t(".", Some("a-b"), None));
        assert_eq!(ok(".#a_b'"), t(".", Some("a_b'"), None));
        assert_eq!(ok(".#\"x\".\"y\""), t(".", Some("x"), Some("y")));
        assert_eq!(ok(".#a.\"b c\""), t(".", Some("a"), Some("b c")));
        assert_eq!(ok(".#b."), t(".", Some("b"), None));
        assert_eq!(ok(".#a#b"), t(".", Some("a"), None));
    }

    // Rows deploy-rs rejects; we reject them too, with a message naming the target.
    #[test]
    fn observed_table_rejected_rows() {
        for s in [".#a.b.c", ".#a.b.c.d", ".#.b", ".#1abc", ".#x y", ".#a . b", ".#${x}"] {
            let e = err(s);
            assert!(e.contains(&format!("`{s}`")), "{e}");
            assert!(e.contains("expected FLAKE"), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
        assert!(err(".#a.b.c").contains("too many components"));
        assert!(err(".#a.b.c").contains("`c`"));
        assert!(err(".#1abc").contains("cannot start with a digit"));
        assert!(err(".#x y").contains("whitespace"));
        assert!(err(".#${x}").contains("interpolation"));
    }

    // deploy-rs rejects a quoted node without profile (a quirk); we accept it.
    #[test]
    fn quoted_node_alone_is_accepted() {
        assert_eq!(ok(".#\"a.b\""), t(".", Some("a.b"), None));
        assert_eq!(ok(".#\"a\""), t(".", Some("a"), None));
        assert_eq!(ok(".#\"a.b\"."), t(".", Some("a.b"), None));
    }

    #[test]
    fn file_targets() {
        let f = |s: &str| parse_file_target("file.nix", s).unwrap();
        assert_eq!(f("."), t("file.nix", None, None));
        assert_eq!(f(""), t("file.nix", None, None));
        assert_eq!(f("server.system"), t("file.nix", Some("server"), Some("system")));
        assert_eq!(f("\"a.b\".c"), t("file.nix", Some("a.b"), Some("c")));
        assert_eq!(f("server"), t("file.nix", Some("server"), None));
        let e = parse_file_target("file.nix", "a.b.c").unwrap_err().to_string();
        assert!(
            e.contains("`a.b.c`") && e.contains("expected NODE or NODE.PROFILE"),
            "{e}"
        );
        // A `#` has no special meaning for the flake part here: it is a comment like in Nix.
        assert_eq!(f("a#x"), t("file.nix", Some("a"), None));
    }

    #[test]
    fn escapes_in_quoted_names() {
        assert_eq!(ok(r#".#"a\"b".p"#), t(".", Some("a\"b"), Some("p")));
        assert_eq!(ok(r#".#"a\\b""#), t(".", Some("a\\b"), None));
        assert_eq!(ok(r#".#"a\nb""#), t(".", Some("a\nb"), None));
        assert_eq!(ok(r#".#"a\${x}""#), t(".", Some("a${x}"), None));
        assert_eq!(ok(r#".#"a$b""#), t(".", Some("a$b"), None));
        assert_eq!(ok(r#".#"a$${b}""#), t(".", Some("a$${b}"), None));
        // A `#` inside a quoted name is part of the name, not a comment.
        assert_eq!(ok(r#".#"a#b".c"#), t(".", Some("a#b"), Some("c")));
        assert!(err(r#".#"a${x}""#).contains("interpolation"));
        assert!(err(r#".#"abc"#).contains("unterminated"));
        assert!(err(r#".#"""#).contains("empty"));
    }

    #[test]
    fn flake_ref_is_verbatim_up_to_first_hash() {
        assert_eq!(
            ok("git+https://h/r?ref=main#n"),
            t("git+https://h/r?ref=main", Some("n"), None)
        );
        assert_eq!(ok("path:/a b/c#n.p"), t("path:/a b/c", Some("n"), Some("p")));
    }

    #[test]
    fn more_rejections() {
        assert!(err(".#.").contains("must follow a node name"));
        assert!(err(".#a..b").contains("empty name"));
        assert!(err(".#a\"b\"").contains("`\"`"));
        assert!(err(".#a.b c").contains("whitespace"));
        assert!(err(".#a.1").contains("profile name"));
    }

    #[test]
    fn display_round_trips() {
        for s in [
            ".",
            ".#a",
            ".#a.b",
            ".#\"a.b\".c",
            "github:x/y#\"h s\".\"p$q\"",
            ".#\"q\\\"\\\\\"",
        ] {
            let target = ok(s);
            assert_eq!(ok(&target.to_string()), target, "{s} -> {target}");
        }
        assert_eq!(t(".", Some("a.b"), Some("c")).to_string(), ".#\"a.b\".c");
        assert_eq!(t(".", Some("a${x}"), None).to_string(), ".#\"a\\${x}\"");
    }

    #[test]
    fn identifiers() {
        assert!(is_identifier("a"));
        assert!(is_identifier("_a'-1"));
        assert!(!is_identifier("1a"));
        assert!(!is_identifier("a.b"));
        assert!(!is_identifier(""));
        assert!(!is_identifier("-a"));
    }
}
