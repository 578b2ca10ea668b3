//! The agent's commands as types, and their one argv encoding: [`Command::to_args`] builds it (the
//! deployer), [`parse`] reads it (the agent), and a round-trip test keeps the two in step. A small
//! hand-written parser so every mistake becomes one clear line (exit 2).

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const DEFAULT_TEMP_PATH: &str = "/tmp";
pub const DEFAULT_CONFIRM_TIMEOUT: u64 = 30;
pub const DEFAULT_ACTIVATION_TIMEOUT: u64 = 240;
pub const DEFAULT_CONFIRM_WAIT: u64 = 10;
pub const DEFAULT_ABORT_WAIT: u64 = 300;

pub const USAGE: &str = "\
usage:
  rollout-agent activate --id ID --closure /nix/store/…
      (--profile-path P | --profile-user U --profile-name N)
      [--temp-path T] [--confirm-timeout 30] [--activation-timeout 240]
      [--magic-rollback] [--auto-rollback] [--dry-activate] [--boot] [--debug] [--skip-unchanged]
      [--origin-by USER@HOST] [--origin-flake F] [--origin-rev R] [--origin-action TEXT]
  rollout-agent confirm --id ID [--id ID2 …] [--temp-path T] [--wait 10]
  rollout-agent extend --id ID [--id …] [--temp-path T]
  rollout-agent abort --id ID [--id …] [--temp-path T] [--wait 300]
  rollout-agent status --id ID [--temp-path T]
  rollout-agent query (--profile-path P | --profile-user U --profile-name N) [--temp-path T]
  rollout-agent put-key --dest-dir D --name N --user U --group G --permissions 0600   (content on stdin)
  rollout-agent recover (--all | --profile-path P | --profile-user U --profile-name N)
  rollout-agent revoke (--profile-path P | --profile-user U --profile-name N)
      --closure /nix/store/… --generation NEW [--previous PREV] [--temp-path T] [--activation-timeout 240] [--debug]
Any command may be preceded by --protocol N (the deployer always sends it).
See docs/agent-protocol.md for the protocol.";

/// Which profile to act on, as the deployer named it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProfileSpec {
    Path(PathBuf),
    User { user: String, name: String },
}

/// Where a deploy comes from, as the deployer says: kept in the target's deploy record, never
/// used in a path or a command. Empty means unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The deployer, `user@host`.
    #[serde(default)]
    pub by: String,
    /// The flake (or file) it was deployed from.
    #[serde(default)]
    pub flake: String,
    /// The flake's revision (`self.rev`, or its dirty revision), when it has one.
    #[serde(default)]
    pub rev: String,
    /// What made this deploy: `deploy`, or `rollback to generation N`.
    #[serde(default)]
    pub action: String,
}

/// The origin options, in the order they are encoded.
const ORIGIN_OPTIONS: [&str; 4] = ["origin-by", "origin-flake", "origin-rev", "origin-action"];

impl Origin {
    fn words(&self) -> Vec<String> {
        let values = [&self.by, &self.flake, &self.rev, &self.action];
        ORIGIN_OPTIONS
            .iter()
            .zip(values)
            .filter(|(_, v)| !v.is_empty())
            .flat_map(|(k, v)| [format!("--{k}"), v.clone()])
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivateArgs {
    pub id: String,
    pub closure: PathBuf,
    pub profile: ProfileSpec,
    pub temp_path: PathBuf,
    pub confirm_timeout: u64,
    pub activation_timeout: u64,
    pub magic_rollback: bool,
    pub auto_rollback: bool,
    pub dry_activate: bool,
    pub boot: bool,
    pub debug: bool,
    /// Do nothing ([`crate::status::State::Unchanged`]) when the profile already runs this
    /// closure and the deploy that made it ended confirmed (or activated).
    #[serde(default)]
    pub skip_unchanged: bool,
    #[serde(default)]
    pub origin: Origin,
}

/// Where and how a key lands on the target (its content comes on stdin, never on the command line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyArgs {
    pub dest_dir: PathBuf,
    /// A file name (no `/`).
    pub name: String,
    pub user: String,
    pub group: String,
    /// Octal, e.g. `0600`.
    pub permissions: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeArgs {
    pub profile: ProfileSpec,
    /// The closure the revoked deploy installed: generation numbers get reused after a rollback
    /// deletes one, so the number alone does not identify the deploy.
    pub closure: PathBuf,
    pub generation: u64,
    pub previous: Option<u64>,
    pub temp_path: PathBuf,
    pub activation_timeout: u64,
    pub debug: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Activate(ActivateArgs),
    Revoke(RevokeArgs),
    /// Internal: the detached worker, started by `activate`/`revoke` themselves.
    Worker {
        temp_path: PathBuf,
        id: String,
    },
    Confirm {
        ids: Vec<String>,
        temp_path: PathBuf,
        wait: u64,
    },
    Extend {
        ids: Vec<String>,
        temp_path: PathBuf,
    },
    Abort {
        ids: Vec<String>,
        temp_path: PathBuf,
        wait: u64,
    },
    /// What a profile holds: its generations, deploy records and deploys under way
    /// ([`crate::report::ProfileReport`], one `ROLLOUT-QUERY` line). Changes nothing.
    Query {
        profile: ProfileSpec,
        temp_path: PathBuf,
    },
    /// Write one secret from stdin to `dest_dir/name`: a fresh file whose owner and mode are set
    /// before the content lands, renamed over the name (never through a symlink). Run as root.
    PutKey(KeyArgs),
    /// Undo unconfirmed deploys whose agent is gone (after a reboot or a kill): of one profile,
    /// or (`None`) of every profile under the Nix profiles directory that has one. The boot step.
    Recover {
        profile: Option<ProfileSpec>,
    },
    Status {
        id: String,
        temp_path: PathBuf,
    },
    Help,
    Version,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn usage<T>(msg: impl Into<String>) -> Result<T, UsageError> {
    Err(UsageError(msg.into()))
}

/// Options of one subcommand after the generic split into `--name value` pairs and flags.
struct Opts {
    cmd: &'static str,
    values: Vec<(String, String)>,
    flags: Vec<String>,
}

impl Opts {
    fn parse(cmd: &'static str, args: &[String], valued: &[&str], flag_names: &[&str]) -> Result<Opts, UsageError> {
        let mut values = Vec::new();
        let mut flags = Vec::new();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let Some(body) = arg.strip_prefix("--") else {
                return usage(format!(
                    "{cmd}: unexpected argument '{arg}' (every value needs its --option)"
                ));
            };
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            if valued.contains(&name) {
                let value = match inline {
                    Some(v) => v,
                    None => match it.next() {
                        Some(v) => v.clone(),
                        None => return usage(format!("{cmd}: --{name} needs a value")),
                    },
                };
                values.push((name.to_string(), value));
            } else if flag_names.contains(&name) {
                if inline.is_some() {
                    return usage(format!("{cmd}: --{name} is a flag and takes no value"));
                }
                if !flags.iter().any(|f| f == name) {
                    flags.push(name.to_string());
                }
            } else {
                return usage(format!("{cmd}: unknown option --{name}"));
            }
        }
        Ok(Opts { cmd, values, flags })
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.values
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A single-valued option; giving it twice is an error rather than "last one wins".
    fn one(&self, name: &str) -> Result<Option<&str>, UsageError> {
        let all = self.all(name);
        match all.len() {
            0 => Ok(None),
            1 => Ok(Some(all[0])),
            _ => usage(format!("{}: --{name} given more than once", self.cmd)),
        }
    }

    fn required(&self, name: &str) -> Result<&str, UsageError> {
        match self.one(name)? {
            Some(v) => Ok(v),
            None => usage(format!("{}: --{name} is required", self.cmd)),
        }
    }

    fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }

    fn number(&self, name: &str, default: u64, min: u64) -> Result<u64, UsageError> {
        match self.one(name)? {
            None => Ok(default),
            Some(v) => parse_number(self.cmd, name, v, min),
        }
    }

    /// A free-text value that is only recorded (an [`Origin`] field): at most 512 bytes, no
    /// control characters; empty when absent.
    fn note(&self, name: &str) -> Result<String, UsageError> {
        let v = self.one(name)?.unwrap_or("");
        if v.len() > 512 || v.chars().any(char::is_control) {
            return usage(format!(
                "{}: --{name} must be at most 512 bytes without control characters",
                self.cmd
            ));
        }
        Ok(v.to_string())
    }

    fn temp_path(&self) -> Result<PathBuf, UsageError> {
        let t = self.one("temp-path")?.unwrap_or(DEFAULT_TEMP_PATH);
        absolute_path(self.cmd, "temp-path", t)
    }

    fn ids(&self) -> Result<Vec<String>, UsageError> {
        let ids = self.all("id");
        if ids.is_empty() {
            return usage(format!("{}: --id is required", self.cmd));
        }
        ids.into_iter().map(|i| validate_id(self.cmd, i)).collect()
    }

    /// Exactly one `--id`.
    fn id(&self) -> Result<String, UsageError> {
        let ids = self.ids()?;
        if ids.len() != 1 {
            return usage(format!("{}: give exactly one --id", self.cmd));
        }
        Ok(ids.into_iter().next().unwrap_or_default())
    }

    fn profile(&self) -> Result<ProfileSpec, UsageError> {
        let path = self.one("profile-path")?;
        let user = self.one("profile-user")?;
        let name = self.one("profile-name")?;
        match (path, user, name) {
            (Some(p), None, None) => {
                let p = absolute_path(self.cmd, "profile-path", p)?;
                match p.file_name() {
                    Some(_) => Ok(ProfileSpec::Path(p)),
                    None => usage(format!("{}: --profile-path '{}' names no file", self.cmd, p.display())),
                }
            }
            (None, Some(u), Some(n)) => {
                if u.is_empty() || u.contains('/') || u.contains('\0') {
                    return usage(format!("{}: --profile-user '{u}' is not a user name", self.cmd));
                }
                if n.is_empty() || n == "." || n == ".." || n.contains('/') || n.contains('\0') {
                    return usage(format!("{}: --profile-name '{n}' is not a profile name", self.cmd));
                }
                Ok(ProfileSpec::User {
                    user: u.to_string(),
                    name: n.to_string(),
                })
            }
            _ => usage(format!(
                "{}: give either --profile-path or both --profile-user and --profile-name",
                self.cmd
            )),
        }
    }
}

fn parse_number(cmd: &str, name: &str, v: &str, min: u64) -> Result<u64, UsageError> {
    match v.parse::<u64>() {
        // Upper bound keeps deadline arithmetic far from overflow (≈136 years is plenty).
        Ok(n) if n >= min && n <= u64::from(u32::MAX) => Ok(n),
        _ => usage(format!(
            "{cmd}: --{name} '{v}' is not a whole number of seconds ≥ {min}"
        )),
    }
}

fn absolute_path(cmd: &str, name: &str, v: &str) -> Result<PathBuf, UsageError> {
    if v.contains('\0') || !Path::new(v).is_absolute() {
        return usage(format!("{cmd}: --{name} '{v}' must be an absolute path"));
    }
    Ok(PathBuf::from(v))
}

/// Deploy IDs become directory names, so they are restricted to a safe alphabet.
pub fn validate_id(cmd: &str, id: &str) -> Result<String, UsageError> {
    let ok_len = (8..=64).contains(&id.len());
    let ok_chars = id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok_len && ok_chars {
        Ok(id.to_string())
    } else {
        usage(format!("{cmd}: --id '{id}' must be 8–64 characters of A–Z a–z 0–9 _ -"))
    }
}

/// The deployer asked for protocol `theirs`; this agent speaks [`crate::PROTOCOL_VERSION`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolMismatch {
    pub theirs: String,
}

impl std::fmt::Display for ProtocolMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "protocol mismatch: the deployer speaks agent protocol {}, this rollout-agent speaks protocol {}; \
             nothing was changed (deploy with the agent of the same rollout version, or pass --agent)",
            self.theirs,
            crate::PROTOCOL_VERSION
        )
    }
}

/// Strips a leading `--protocol N`, refusing a version this agent does not speak. Without it the
/// caller is a person at a shell, who gets this agent's protocol.
pub fn strip_protocol(args: &[String]) -> Result<&[String], ProtocolMismatch> {
    match args {
        [flag, v, rest @ ..] if flag == "--protocol" => {
            if v.parse::<u32>().ok() == Some(crate::PROTOCOL_VERSION) {
                Ok(rest)
            } else {
                Err(ProtocolMismatch { theirs: v.clone() })
            }
        }
        _ => Ok(args),
    }
}

fn profile_words(p: &ProfileSpec) -> Vec<String> {
    match p {
        ProfileSpec::Path(path) => vec!["--profile-path".into(), path.display().to_string()],
        ProfileSpec::User { user, name } => {
            vec![
                "--profile-user".into(),
                user.clone(),
                "--profile-name".into(),
                name.clone(),
            ]
        }
    }
}

fn ids_words(cmd: &str, ids: &[String], temp_path: &Path) -> Vec<String> {
    let mut v = vec![cmd.to_string(), "--temp-path".into(), temp_path.display().to_string()];
    for id in ids {
        v.extend(["--id".to_string(), id.clone()]);
    }
    v
}

impl Command {
    /// The argv words after the program name that [`parse`] reads back as this command, preceded
    /// by `--protocol N`. The deployer quotes each word for the remote shell.
    pub fn to_args(&self) -> Vec<String> {
        let mut v = vec!["--protocol".to_string(), crate::PROTOCOL_VERSION.to_string()];
        v.extend(self.words());
        v
    }

    fn words(&self) -> Vec<String> {
        let flag = |on: bool, name: &str| on.then(|| format!("--{name}"));
        match self {
            Command::Activate(a) => {
                let mut v = vec!["activate".to_string(), "--id".into(), a.id.clone(), "--closure".into()];
                v.push(a.closure.display().to_string());
                v.extend(profile_words(&a.profile));
                v.extend([
                    "--temp-path".to_string(),
                    a.temp_path.display().to_string(),
                    "--confirm-timeout".into(),
                    a.confirm_timeout.to_string(),
                    "--activation-timeout".into(),
                    a.activation_timeout.to_string(),
                ]);
                v.extend(
                    [
                        flag(a.magic_rollback, "magic-rollback"),
                        flag(a.auto_rollback, "auto-rollback"),
                        flag(a.dry_activate, "dry-activate"),
                        flag(a.boot, "boot"),
                        flag(a.debug, "debug"),
                        flag(a.skip_unchanged, "skip-unchanged"),
                    ]
                    .into_iter()
                    .flatten(),
                );
                v.extend(a.origin.words());
                v
            }
            Command::Revoke(r) => {
                let mut v = vec!["revoke".to_string()];
                v.extend(profile_words(&r.profile));
                v.extend(["--closure".to_string(), r.closure.display().to_string()]);
                v.extend(["--generation".to_string(), r.generation.to_string()]);
                if let Some(p) = r.previous {
                    v.extend(["--previous".to_string(), p.to_string()]);
                }
                v.extend([
                    "--temp-path".to_string(),
                    r.temp_path.display().to_string(),
                    "--activation-timeout".into(),
                    r.activation_timeout.to_string(),
                ]);
                v.extend(flag(r.debug, "debug"));
                v
            }
            Command::Worker { temp_path, id } => ids_words("worker", std::slice::from_ref(id), temp_path),
            Command::Confirm { ids, temp_path, wait } => {
                let mut v = ids_words("confirm", ids, temp_path);
                v.extend(["--wait".to_string(), wait.to_string()]);
                v
            }
            Command::Extend { ids, temp_path } => ids_words("extend", ids, temp_path),
            Command::Abort { ids, temp_path, wait } => {
                let mut v = ids_words("abort", ids, temp_path);
                v.extend(["--wait".to_string(), wait.to_string()]);
                v
            }
            Command::Status { id, temp_path } => ids_words("status", std::slice::from_ref(id), temp_path),
            Command::PutKey(k) => vec![
                "put-key".to_string(),
                "--dest-dir".into(),
                k.dest_dir.display().to_string(),
                "--name".into(),
                k.name.clone(),
                "--user".into(),
                k.user.clone(),
                "--group".into(),
                k.group.clone(),
                "--permissions".into(),
                format!("{:04o}", k.permissions),
            ],
            Command::Recover { profile } => {
                let mut v = vec!["recover".to_string()];
                match profile {
                    Some(p) => v.extend(profile_words(p)),
                    None => v.push("--all".into()),
                }
                v
            }
            Command::Query { profile, temp_path } => {
                let mut v = vec!["query".to_string()];
                v.extend(profile_words(profile));
                v.extend(["--temp-path".to_string(), temp_path.display().to_string()]);
                v
            }
            Command::Help => vec!["--help".into()],
            Command::Version => vec!["--version".into()],
        }
    }
}

/// Parses the arguments after the program name (and after [`strip_protocol`]).
pub fn parse(args: &[String]) -> Result<Command, UsageError> {
    let Some((sub, rest)) = args.split_first() else {
        return usage("missing command (activate, confirm, extend, abort, status, revoke); try --help");
    };
    match sub.as_str() {
        "-h" | "--help" | "help" => Ok(Command::Help),
        "-V" | "--version" => Ok(Command::Version),
        "activate" => parse_activate(rest),
        "revoke" => parse_revoke(rest),
        "put-key" => {
            let o = Opts::parse("put-key", rest, &["dest-dir", "name", "user", "group", "permissions"], &[])?;
            let name = o.required("name")?;
            if name.is_empty() || name.contains('/') || name == "." || name == ".." || name.contains('\0') {
                return usage(format!("put-key: --name '{name}' must be a plain file name"));
            }
            let perms = o.required("permissions")?;
            let permissions = u32::from_str_radix(perms, 8)
                .ok()
                .filter(|p| *p <= 0o7777)
                .ok_or_else(|| UsageError(format!("put-key: --permissions '{perms}' must be octal, at most 7777")))?;
            Ok(Command::PutKey(KeyArgs {
                dest_dir: absolute_path("put-key", "dest-dir", o.required("dest-dir")?)?,
                name: name.to_string(),
                user: o.required("user")?.to_string(),
                group: o.required("group")?.to_string(),
                permissions,
            }))
        }
        "recover" => {
            let o = Opts::parse(
                "recover",
                rest,
                &["profile-path", "profile-user", "profile-name"],
                &["all"],
            )?;
            let named = o.one("profile-path")?.is_some() || o.one("profile-user")?.is_some();
            match (o.flag("all"), named) {
                (true, false) => Ok(Command::Recover { profile: None }),
                (false, true) => Ok(Command::Recover {
                    profile: Some(o.profile()?),
                }),
                _ => usage(
                    "recover: give either --all or one profile (--profile-path, or --profile-user and --profile-name)",
                ),
            }
        }
        "query" => {
            let o = Opts::parse(
                "query",
                rest,
                &["profile-path", "profile-user", "profile-name", "temp-path"],
                &[],
            )?;
            Ok(Command::Query {
                profile: o.profile()?,
                temp_path: o.temp_path()?,
            })
        }
        "worker" => {
            let o = Opts::parse("worker", rest, &["temp-path", "id"], &[])?;
            Ok(Command::Worker {
                temp_path: o.temp_path()?,
                id: o.id()?,
            })
        }
        "confirm" => {
            let o = Opts::parse("confirm", rest, &["id", "temp-path", "wait"], &[])?;
            Ok(Command::Confirm {
                ids: o.ids()?,
                temp_path: o.temp_path()?,
                wait: o.number("wait", DEFAULT_CONFIRM_WAIT, 0)?,
            })
        }
        "extend" => {
            let o = Opts::parse("extend", rest, &["id", "temp-path"], &[])?;
            Ok(Command::Extend {
                ids: o.ids()?,
                temp_path: o.temp_path()?,
            })
        }
        "abort" => {
            let o = Opts::parse("abort", rest, &["id", "temp-path", "wait"], &[])?;
            Ok(Command::Abort {
                ids: o.ids()?,
                temp_path: o.temp_path()?,
                wait: o.number("wait", DEFAULT_ABORT_WAIT, 0)?,
            })
        }
        "status" => {
            let o = Opts::parse("status", rest, &["id", "temp-path"], &[])?;
            Ok(Command::Status {
                id: o.id()?,
                temp_path: o.temp_path()?,
            })
        }
        other => usage(format!(
            "unknown command '{other}' (expected activate, confirm, extend, abort, status, query, recover, put-key or revoke)"
        )),
    }
}

fn parse_activate(rest: &[String]) -> Result<Command, UsageError> {
    let o = Opts::parse(
        "activate",
        rest,
        &[
            "id",
            "closure",
            "profile-path",
            "profile-user",
            "profile-name",
            "temp-path",
            "confirm-timeout",
            "activation-timeout",
            ORIGIN_OPTIONS[0],
            ORIGIN_OPTIONS[1],
            ORIGIN_OPTIONS[2],
            ORIGIN_OPTIONS[3],
        ],
        &[
            "magic-rollback",
            "auto-rollback",
            "dry-activate",
            "boot",
            "debug",
            "skip-unchanged",
        ],
    )?;
    let id = validate_id("activate", o.required("id")?)?;
    let closure = absolute_path("activate", "closure", o.required("closure")?)?;
    let (dry_activate, boot) = (o.flag("dry-activate"), o.flag("boot"));
    if dry_activate && boot {
        return usage("activate: --dry-activate and --boot exclude each other");
    }
    Ok(Command::Activate(ActivateArgs {
        id,
        closure,
        profile: o.profile()?,
        temp_path: o.temp_path()?,
        confirm_timeout: o.number("confirm-timeout", DEFAULT_CONFIRM_TIMEOUT, 1)?,
        activation_timeout: o.number("activation-timeout", DEFAULT_ACTIVATION_TIMEOUT, 1)?,
        magic_rollback: o.flag("magic-rollback"),
        auto_rollback: o.flag("auto-rollback"),
        dry_activate,
        boot,
        debug: o.flag("debug"),
        skip_unchanged: o.flag("skip-unchanged"),
        origin: Origin {
            by: o.note(ORIGIN_OPTIONS[0])?,
            flake: o.note(ORIGIN_OPTIONS[1])?,
            rev: o.note(ORIGIN_OPTIONS[2])?,
            action: o.note(ORIGIN_OPTIONS[3])?,
        },
    }))
}

fn parse_revoke(rest: &[String]) -> Result<Command, UsageError> {
    let o = Opts::parse(
        "revoke",
        rest,
        &[
            "profile-path",
            "profile-user",
            "profile-name",
            "closure",
            "generation",
            "previous",
            "temp-path",
            "activation-timeout",
        ],
        &["debug"],
    )?;
    let generation = parse_number("revoke", "generation", o.required("generation")?, 1)?;
    let previous = match o.one("previous")? {
        Some(v) => Some(parse_number("revoke", "previous", v, 1)?),
        None => None,
    };
    Ok(Command::Revoke(RevokeArgs {
        closure: absolute_path("revoke", "closure", o.required("closure")?)?,
        profile: o.profile()?,
        generation,
        previous,
        temp_path: o.temp_path()?,
        activation_timeout: o.number("activation-timeout", DEFAULT_ACTIVATION_TIMEOUT, 1)?,
        debug: o.flag("debug"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The commands that name deploys or do the rest (all but activate and revoke).
    fn other_commands() -> Vec<Command> {
        vec![
            Command::Worker {
                temp_path: "/tmp".into(),
                id: "dabcdef012345".into(),
            },
            Command::Confirm {
                ids: vec!["dabcdef012345".into(), "d0000000000001".into()],
                temp_path: "/tmp".into(),
                wait: 10,
            },
            Command::Extend {
                ids: vec!["dabcdef012345".into()],
                temp_path: "/tmp".into(),
            },
            Command::Abort {
                ids: vec!["dabcdef012345".into()],
                temp_path: "/tmp".into(),
                wait: 300,
            },
            Command::Status {
                id: "dabcdef012345".into(),
                temp_path: "/tmp".into(),
            },
            Command::Query {
                profile: ProfileSpec::User {
                    user: "root".into(),
                    name: "system".into(),
                },
                temp_path: "/tmp".into(),
            },
            Command::Recover { profile: None },
            Command::PutKey(KeyArgs {
                dest_dir: "/run/keys".into(),
                name: "db password".into(),
                user: "postgres".into(),
                group: "keys".into(),
                permissions: 0o640,
            }),
            Command::Recover {
                profile: Some(ProfileSpec::Path("/nix/var/nix/profiles/system".into())),
            },
            Command::Help,
            Command::Version,
        ]
    }

    /// Every command survives to_args → strip_protocol → parse unchanged.
    #[test]
    fn every_command_round_trips_through_its_one_encoding() {
        let user = ProfileSpec::User {
            user: "hello".into(),
            name: "app".into(),
        };
        let path = ProfileSpec::Path("/nix/var/nix/profiles/system".into());
        let activate = |profile: ProfileSpec, flags: bool| {
            Command::Activate(ActivateArgs {
                id: "dabcdef012345".into(),
                closure: "/nix/store/abc-x".into(),
                profile,
                temp_path: "/var/tmp/with space".into(),
                confirm_timeout: 7,
                activation_timeout: 9,
                magic_rollback: flags,
                auto_rollback: !flags,
                dry_activate: flags,
                boot: false,
                debug: flags,
                skip_unchanged: flags,
                origin: if flags {
                    Origin {
                        by: "alice@laptop".into(),
                        flake: "git+file:///src/fleet?ref=main".into(),
                        rev: "0123abc-dirty".into(),
                        action: "rollback to generation 3".into(),
                    }
                } else {
                    Origin::default()
                },
            })
        };
        let cmds = vec![
            activate(path.clone(), true),
            activate(user.clone(), false),
            Command::Revoke(RevokeArgs {
                profile: user,
                closure: "/nix/store/abc-x".into(),
                generation: 4,
                previous: Some(3),
                temp_path: "/tmp".into(),
                activation_timeout: 240,
                debug: true,
            }),
            Command::Revoke(RevokeArgs {
                profile: path,
                closure: "/nix/store/abc-x".into(),
                generation: 1,
                previous: None,
                temp_path: "/tmp".into(),
                activation_timeout: 5,
                debug: false,
            }),
        ];
        for c in cmds.into_iter().chain(other_commands()) {
            let args = c.to_args();
            assert_eq!(
                args[..2],
                ["--protocol".to_string(), crate::PROTOCOL_VERSION.to_string()]
            );
            let rest = strip_protocol(&args).unwrap();
            assert_eq!(parse(rest).as_ref(), Ok(&c), "{args:?}");
        }
    }

    #[test]
    fn another_protocol_version_is_refused_before_parsing() {
        let args: Vec<String> = ["--protocol", "99", "status", "--id", "dabcdef012345"]
            .map(String::from)
            .to_vec();
        let e = strip_protocol(&args).unwrap_err();
        assert!(e.to_string().contains("deployer speaks agent protocol 99"), "{e}");
        let plain: Vec<String> = ["status", "--id", "dabcdef012345"].map(String::from).to_vec();
        assert_eq!(strip_protocol(&plain).unwrap(), &plain[..]);
    }

    fn p(s: &str) -> Result<Command, UsageError> {
        let v: Vec<String> = s.split_whitespace().map(String::from).collect();
        parse(&v)
    }

    #[test]
    fn activate_full() {
        let c = p("activate --id abcdefgh --closure /nix/store/x --profile-user root --profile-name system \
                   --temp-path /var/t --confirm-timeout 5 --activation-timeout=7 --magic-rollback --auto-rollback --debug")
            .unwrap();
        let Command::Activate(a) = c else { panic!() };
        assert_eq!(
            a.profile,
            ProfileSpec::User {
                user: "root".into(),
                name: "system".into()
            }
        );
        assert_eq!((a.confirm_timeout, a.activation_timeout), (5, 7));
        assert!(a.magic_rollback && a.auto_rollback && a.debug && !a.boot && !a.dry_activate);
        assert_eq!(a.temp_path, PathBuf::from("/var/t"));
    }

    #[test]
    fn activate_defaults() {
        let Command::Activate(a) = p("activate --id abcdefgh --closure /nix/store/x --profile-path /p/q").unwrap()
        else {
            panic!()
        };
        assert_eq!(a.temp_path, PathBuf::from("/tmp"));
        assert_eq!((a.confirm_timeout, a.activation_timeout), (30, 240));
    }

    #[test]
    fn errors_name_the_argument() {
        let e = |s| p(s).unwrap_err().0;
        assert!(e("activate --id short --closure /x --profile-path /p").contains("--id 'short'"));
        assert!(e("activate --id abcdefgh --closure x --profile-path /p").contains("--closure 'x'"));
        assert!(e("activate --id abcdefgh --closure /x").contains("--profile-path"));
        assert!(e("activate --id abcdefgh --closure /x --profile-path /p --profile-user u").contains("either"));
        assert!(
            e("activate --id abcdefgh --closure /x --profile-path /p --confirm-timeout 0")
                .contains("--confirm-timeout")
        );
        assert!(
            e("activate --id abcdefgh --closure /x --profile-path /p --confirm-timeout x")
                .contains("--confirm-timeout")
        );
        assert!(e("activate --id abcdefgh --closure /x --profile-path /p --bogus").contains("--bogus"));
        assert!(e("activate --id abcdefgh --closure /x --profile-path /p --boot --dry-activate").contains("exclude"));
        assert!(e("activate --id abcdefgh --id abcdefgi --closure /x --profile-path /p").contains("more than once"));
        let long = format!(
            "activate --id abcdefgh --closure /x --profile-path /p --origin-by {}",
            "a".repeat(600)
        );
        assert!(e(&long).contains("--origin-by must be at most 512 bytes"));
        let ctl = vec![
            "activate".to_string(),
            "--id=abcdefgh".into(),
            "--closure=/x".into(),
            "--profile-path=/p".into(),
            "--origin-action=a\nb".to_string(),
        ];
        assert!(parse(&ctl).unwrap_err().0.contains("without control characters"));
        assert!(e("activate --id abcdefgh --closure").contains("needs a value"));
        assert!(e("activate stray").contains("stray"));
        assert!(e("frobnicate").contains("frobnicate"));
        assert!(e("revoke --profile-path /p --closure /c").contains("--generation"));
        assert!(e("revoke --profile-path /p --generation 2").contains("--closure"));
        assert!(e("status --id abcdefgh --id abcdefgi").contains("exactly one"));
        assert!(e("activate --id abcdefgh --closure /x --profile-user u --profile-name ../x").contains("profile-name"));
        assert!(p("").is_err());
    }

    #[test]
    fn multi_id_commands() {
        let c = p("confirm --id abcdefgh --id ABC_def-9 --wait 0").unwrap();
        assert_eq!(
            c,
            Command::Confirm {
                ids: vec!["abcdefgh".into(), "ABC_def-9".into()],
                temp_path: "/tmp".into(),
                wait: 0
            }
        );
        let Command::Abort { wait, .. } = p("abort --id abcdefgh").unwrap() else {
            panic!()
        };
        assert_eq!(wait, 300);
    }

    #[test]
    fn revoke_parses() {
        let Command::Revoke(r) =
            p("revoke --profile-path /p/x --closure /nix/store/c --generation 4 --previous 3").unwrap()
        else {
            panic!()
        };
        assert_eq!((r.generation, r.previous), (4, Some(3)));
        let Command::Revoke(r) = p("revoke --profile-path /p/x --closure /nix/store/c --generation 1").unwrap() else {
            panic!()
        };
        assert_eq!(r.previous, None);
    }

    #[test]
    fn id_alphabet() {
        assert!(validate_id("x", "abc-DEF_123").is_ok());
        assert!(validate_id("x", "abc/defgh").is_err());
        assert!(validate_id("x", "..........").is_err());
        assert!(validate_id("x", &"a".repeat(65)).is_err());
    }
}
