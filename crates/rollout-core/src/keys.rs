//! Secrets ("keys"), colmena-compatible: `keys.<name> = { text | keyFile | keyCommand; destDir ?
//! "/run/keys"; name ? <name>; user ? "root"; group ? "root"; permissions ? "0600"; uploadAt ?
//! "pre-activation" | "post-activation"; }` on a node (or the top level). The content is read
//! here (a file, a command's output, or the text) and reaches the target only on the agent's
//! stdin — never a command line, a log, the plan or an event.

use crate::cmd::Argv;
use crate::exec::Runner;
use crate::schema::{Field, FieldKind, Object};
use crate::secret::Secret;
use crate::validate;
use serde::ser::SerializeSeq;
use serde::Serializer;

pub const FIELDS: &[Field] = &[
    Field {
        key: "text",
        kind: FieldKind::Str,
        required: false,
    },
    Field {
        key: "keyFile",
        kind: FieldKind::Str,
        required: false,
    },
    Field {
        key: "keyCommand",
        kind: FieldKind::List,
        required: false,
    },
    Field {
        key: "destDir",
        kind: FieldKind::Str,
        required: false,
    },
    Field {
        key: "name",
        kind: FieldKind::Str,
        required: false,
    },
    Field {
        key: "user",
        kind: FieldKind::Str,
        required: false,
    },
    Field {
        key: "group",
        kind: FieldKind::Str,
        required: false,
    },
    Field {
        key: "permissions",
        kind: FieldKind::Str,
        required: false,
    },
    Field {
        key: "uploadAt",
        kind: FieldKind::Str,
        required: false,
    },
];

/// Where the content comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum Source {
    Text(Secret),
    File(String),
    Command(Vec<String>),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::Text(_) => "Text(<redacted>)",
            Source::File(_) => "File",
            Source::Command(_) => "Command",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadAt {
    PreActivation,
    PostActivation,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// The attribute name in `keys`.
    pub attr: String,
    /// The file name in `dest_dir`.
    pub name: String,
    pub source: Source,
    pub dest_dir: String,
    pub user: String,
    pub group: String,
    pub permissions: u32,
    pub upload_at: UploadAt,
}

fn text(o: &Object, k: &str) -> Option<String> {
    o.get(k).and_then(|v| v.as_str()).map(str::to_string)
}

impl Key {
    /// One `keys` entry, checked: exactly one source, a plain file name, an absolute `destDir`,
    /// valid user and group names, octal permissions.
    pub fn from_object(o: &Object) -> Result<Key, String> {
        let attr = text(o, "$name").unwrap_or_default();
        let sources = [
            text(o, "text").map(|t| Source::Text(Secret::new(t))),
            text(o, "keyFile").map(Source::File),
            o.get("keyCommand")
                .and_then(|v| v.as_array())
                .map(|w| Source::Command(w.iter().filter_map(|x| x.as_str().map(String::from)).collect())),
        ];
        let mut given = sources.into_iter().flatten();
        let (Some(source), None) = (given.next(), given.next()) else {
            return Err("give exactly one of `text`, `keyFile` or `keyCommand`".into());
        };
        match &source {
            Source::File(p) if !p.starts_with('/') => {
                return Err(format!("`keyFile` is {p:?}; expected an absolute path on this machine"))
            }
            Source::File(p) => validate::check_local_path(p).map_err(|e| format!("`keyFile`: {}", e.message(p)))?,
            Source::Command(w) if w.is_empty() => return Err("`keyCommand` must be a non-empty list of words".into()),
            _ => {}
        }
        let name = text(o, "name").unwrap_or_else(|| attr.clone());
        if name.is_empty() || name.contains('/') || name == "." || name == ".." || name.chars().any(char::is_control) {
            return Err(format!("`name` is {name:?}; expected a plain file name"));
        }
        let dest_dir = text(o, "destDir").unwrap_or_else(|| "/run/keys".into());
        validate::check_target_path(&dest_dir).map_err(|e| format!("`destDir`: {}", e.message(&dest_dir)))?;
        let user = text(o, "user").unwrap_or_else(|| "root".into());
        let group = text(o, "group").unwrap_or_else(|| "root".into());
        for (k, v) in [("user", &user), ("group", &group)] {
            validate::UserName::parse(v).map_err(|e| format!("`{k}`: {}", e.message(v)))?;
        }
        let perms = text(o, "permissions").unwrap_or_else(|| "0600".into());
        let permissions = u32::from_str_radix(&perms, 8)
            .ok()
            .filter(|p| *p <= 0o7777)
            .ok_or_else(|| format!("`permissions` is {perms:?}; expected octal such as \"0640\""))?;
        let upload_at = match text(o, "uploadAt").as_deref() {
            None | Some("pre-activation") => UploadAt::PreActivation,
            Some("post-activation") => UploadAt::PostActivation,
            Some(other) => {
                return Err(format!(
                    "`uploadAt` is {other:?}; expected \"pre-activation\" or \"post-activation\""
                ))
            }
        };
        Ok(Key {
            attr,
            name,
            source,
            dest_dir,
            user,
            group,
            permissions,
            upload_at,
        })
    }

    /// The content, read here: the text, the file, or what the command prints on stdout.
    pub fn content(&self, runner: &Runner) -> Result<Secret, String> {
        match &self.source {
            Source::Text(t) => Ok(t.clone()),
            Source::File(p) => std::fs::read_to_string(p)
                .map(Secret::new)
                .map_err(|e| format!("key `{}`: cannot read keyFile {p}: {e}", self.attr)),
            Source::Command(words) => {
                let argv = Argv::new(words[0].clone()).args(words[1..].iter().cloned());
                match runner.capture(&argv) {
                    Ok(c) if c.status.success() => Ok(Secret::new(c.stdout)),
                    Ok(c) => Err(format!(
                        "key `{}`: keyCommand `{}` failed ({}): {}",
                        self.attr,
                        words[0],
                        c.status,
                        c.stderr.trim().lines().last().unwrap_or("")
                    )),
                    Err(e) => Err(format!("key `{}`: keyCommand: {e}", self.attr)),
                }
            }
        }
    }
}

/// How `keys` appear in the plan: where each goes and from what kind of source, never the content.
pub fn redacted<S: Serializer>(objects: &[Object], s: S) -> Result<S::Ok, S::Error> {
    let mut seq = s.serialize_seq(Some(objects.len()))?;
    for o in objects {
        let mut shown = Object::new();
        for (k, v) in o {
            let v = match k.as_str() {
                "text" => serde_json::Value::String("<redacted>".into()),
                _ => v.clone(),
            };
            shown.insert(k.clone(), v);
        }
        seq.serialize_element(&shown)?;
    }
    seq.end()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::schema::object_of as obj;

    #[test]
    fn entries_become_keys_with_colmenas_defaults_and_refusals_name_the_field() {
        let k = Key::from_object(&obj(json!({"$name": "db", "keyCommand": ["pass", "db"]}))).unwrap();
        assert_eq!(
            (k.name.as_str(), k.dest_dir.as_str(), k.user.as_str()),
            ("db", "/run/keys", "root")
        );
        assert_eq!((k.permissions, k.upload_at), (0o600, UploadAt::PreActivation));
        let k = Key::from_object(&obj(
            json!({"$name": "a", "text": "s3cret", "name": "a.pem", "permissions": "0640",
            "user": "nginx", "group": "keys", "uploadAt": "post-activation", "destDir": "/var/keys"}),
        ))
        .unwrap();
        assert_eq!(
            (k.name.as_str(), k.permissions, k.upload_at),
            ("a.pem", 0o640, UploadAt::PostActivation)
        );
        assert!(!format!("{k:?}").contains("s3cret"), "Debug never shows the text");
        for (bad, words) in [
            (json!({"$name": "a"}), "exactly one of"),
            (json!({"$name": "a", "text": "x", "keyFile": "/k"}), "exactly one of"),
            (json!({"$name": "a", "keyFile": "relative"}), "`keyFile`"),
            (json!({"$name": "a", "text": "x", "name": "../x"}), "plain file name"),
            (json!({"$name": "a", "text": "x", "destDir": "run/keys"}), "`destDir`"),
            (json!({"$name": "a", "text": "x", "user": "a;b"}), "`user`"),
            (json!({"$name": "a", "text": "x", "permissions": "rw"}), "`permissions`"),
            (json!({"$name": "a", "text": "x", "uploadAt": "later"}), "`uploadAt`"),
        ] {
            let e = Key::from_object(&obj(bad.clone())).unwrap_err();
            assert!(e.contains(words), "{bad}: {e}");
        }
    }

    #[test]
    fn the_plan_shows_where_keys_go_but_never_their_text() {
        let o = obj(json!({"$name": "a", "text": "s3cret", "user": "nginx"}));
        let mut out = Vec::new();
        redacted(&[o], &mut serde_json::Serializer::new(&mut out)).unwrap();
        let shown = String::from_utf8(out).unwrap();
        assert!(
            shown.contains("<redacted>") && shown.contains("nginx") && !shown.contains("s3cret"),
            "{shown}"
        );
    }
}
