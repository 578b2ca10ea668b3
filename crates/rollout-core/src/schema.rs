//! The settings table: every deploy setting defined once (name, type, default, levels, flag,
//! validation, doc line), driving parsing ([`crate::config`]), merging and overrides
//! ([`crate::settings`]), the evaluation shadow ([`crate::evalexpr`]) and `docs/settings.md`.
//!
//! Generic settings (those allowed at every level) are declared with [`settings_table!`], which
//! also generates their storage ([`GenericSettings`]) and the command-line [`Overrides`], so a new
//! setting is one entry here plus, where the deploy reads it, one field of
//! [`crate::settings::Resolved`]. Node- and profile-only keys are rows of [`OWN`].

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::validate::{self, Invalid};

/// Where a setting may appear in `deploy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Levels {
    pub top: bool,
    pub node: bool,
    pub profile: bool,
}

/// Every level (deploy-rs's generic settings).
pub const ALL: Levels = Levels {
    top: true,
    node: true,
    profile: true,
};
/// Only on a node.
pub const NODE: Levels = Levels {
    top: false,
    node: true,
    profile: false,
};
/// Only on a profile.
pub const PROFILE: Levels = Levels {
    top: false,
    node: false,
    profile: true,
};
/// Only at the top level.
pub const TOP_NODE: Levels = Levels {
    top: true,
    node: true,
    profile: false,
};

pub const TOP: Levels = Levels {
    top: true,
    node: false,
    profile: false,
};

/// One level of `deploy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Top,
    Node,
    Profile,
}

impl Levels {
    pub fn has(self, l: Level) -> bool {
        match l {
            Level::Top => self.top,
            Level::Node => self.node,
            Level::Profile => self.profile,
        }
    }
}

/// A check of one string value.
pub type StrCheck = fn(&str) -> Result<(), Invalid>;
/// A check of a list of words: the index and the word that is wrong, with why.
pub type ListCheck = fn(&[String]) -> Result<(), (usize, String, Invalid)>;

/// The type of one field of a structured setting's objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Bool,
    Int,
    Str,
    /// A list of strings (a command's words).
    List,
}

/// One field of the objects of a structured setting (`healthChecks = [ { url = …; } ]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub key: &'static str,
    pub kind: FieldKind,
    pub required: bool,
}

/// The type of a setting's value, with its validation.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Bool,
    /// Whole seconds in 1 … 86400.
    Seconds,
    /// A non-empty string, checked.
    Str(Option<StrCheck>),
    /// A list of strings, checked as a whole.
    List(Option<ListCheck>),
    /// A list of attribute sets with scalar fields.
    Objects(&'static [Field]),
}

/// How the levels' values combine (the command line always replaces).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// profile > node > top.
    First,
    /// profile, node and top lists concatenated in that order (`sshOpts`).
    Concat,
}

/// The default when no level and no flag sets a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultValue {
    None,
    Bool(bool),
    Seconds(u64),
    Str(&'static str),
    /// Computed at run time; the text says how.
    Computed(&'static str),
}

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The attribute name in `deploy`.
    pub key: &'static str,
    pub kind: Kind,
    pub levels: Levels,
    pub merge: Merge,
    pub default: DefaultValue,
    /// The command-line flag that overrides it everywhere.
    pub flag: Option<&'static str>,
    pub doc: &'static str,
}

/// One object of a structured setting: field name → scalar.
pub type Object = BTreeMap<String, Value>;

/// A JSON object as an [`Object`] (for tests of structured settings).
#[cfg(test)]
pub fn object_of(v: Value) -> Object {
    v.as_object()
        .expect("a JSON object")
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A parsed value of any setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Bool(bool),
    Seconds(u64),
    Str(String),
    List(Vec<String>),
    Objects(Vec<Object>),
}

/// Conversion between the typed storage of [`GenericSettings`] and [`Parsed`], and how lists of
/// values combine under [`Merge::Concat`].
pub trait SettingValue: Sized + Clone {
    fn from_parsed(p: Parsed) -> Option<Self>;
    fn to_parsed(&self) -> Parsed;
    /// Combines the levels' values (profile first); only lists concatenate.
    fn concat(parts: &[&Self]) -> Self {
        parts[0].clone()
    }
}

/// A single-valued setting type stored as one [`Parsed`] variant.
macro_rules! scalar_value {
    ($ty:ty, $variant:ident) => {
        impl SettingValue for $ty {
            fn from_parsed(p: Parsed) -> Option<Self> {
                match p {
                    Parsed::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn to_parsed(&self) -> Parsed {
                Parsed::$variant(self.clone())
            }
        }
    };
}

scalar_value!(bool, Bool);
scalar_value!(u64, Seconds);
scalar_value!(String, Str);

impl SettingValue for Vec<String> {
    fn from_parsed(p: Parsed) -> Option<Self> {
        match p {
            Parsed::List(v) => Some(v),
            _ => None,
        }
    }
    fn to_parsed(&self) -> Parsed {
        Parsed::List(self.clone())
    }
    fn concat(parts: &[&Self]) -> Self {
        parts.iter().flat_map(|p| p.iter().cloned()).collect()
    }
}

impl SettingValue for Vec<Object> {
    fn from_parsed(p: Parsed) -> Option<Self> {
        match p {
            Parsed::Objects(v) => Some(v),
            _ => None,
        }
    }
    fn to_parsed(&self) -> Parsed {
        Parsed::Objects(self.clone())
    }
    fn concat(parts: &[&Self]) -> Self {
        parts.iter().flat_map(|p| p.iter().cloned()).collect()
    }
}

/// The command line first, then the levels by the setting's merge rule.
pub fn merge_value<T: SettingValue>(merge: Merge, over: &Option<T>, levels: [&Option<T>; 3]) -> Option<T> {
    if over.is_some() {
        return over.clone();
    }
    let parts: Vec<&T> = levels.iter().filter_map(|v| v.as_ref()).collect();
    match (merge, parts.first()) {
        (_, None) => None,
        (Merge::First, Some(p)) => Some((*p).clone()),
        (Merge::Concat, Some(_)) => Some(T::concat(&parts)),
    }
}

/// Declares the generic settings: each entry is `field / override_field: Type = "key" { row }`.
macro_rules! settings_table {
    ($( $(#[$meta:meta])* $field:ident / $ofield:ident : $ty:ty = $key:literal { $($row:tt)* } ; )*) => {
        /// Settings that may appear at the top level, on a node or on a profile: one field per
        /// row of [`GENERIC`], `None` when the level does not set it.
        #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
        #[serde(rename_all = "camelCase")]
        pub struct GenericSettings {
            $( $(#[$meta])* pub $field: Option<$ty>, )*
        }

        /// Values given on the command line; `Some` wins over anything in the flake.
        #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
        #[serde(rename_all = "camelCase")]
        pub struct Overrides {
            $( $(#[$meta])* pub $ofield: Option<$ty>, )*
            /// Applies to every node in the run.
            pub hostname: Option<String>,
            pub profile_path: Option<String>,
            /// `--strict`: keys deploy-rs would ignore are errors.
            pub strict: Option<bool>,
        }

        /// The generic settings, in table order.
        pub const GENERIC: &[Setting] = &[ $( Setting { key: $key, $($row)* }, )* ];

        impl GenericSettings {
            /// Stores a parsed value; false when `key` is not a generic setting or the value has
            /// the wrong type for it.
            pub fn store(&mut self, key: &str, v: Parsed) -> bool {
                match key {
                    $( $key => {
                        self.$field = SettingValue::from_parsed(v);
                        self.$field.is_some()
                    } )*
                    _ => false,
                }
            }

            /// The value of `key` at this level, if set.
            pub fn get(&self, key: &str) -> Option<Parsed> {
                match key {
                    $( $key => self.$field.as_ref().map(SettingValue::to_parsed), )*
                    _ => None,
                }
            }

            /// Command line, then profile, node and top by each setting's merge rule.
            pub fn effective(o: &Overrides, p: &Self, n: &Self, t: &Self) -> Self {
                let row = |k: &str| find(k).map(|s| s.merge).unwrap_or(Merge::First);
                GenericSettings {
                    $( $field: merge_value(row($key), &o.$ofield, [&p.$field, &n.$field, &t.$field]), )*
                }
            }
        }

        impl Overrides {
            /// The generic overrides as settings (the flags without a level: hostname and
            /// profile path are separate).
            pub fn as_settings(&self) -> GenericSettings {
                GenericSettings { $( $field: self.$ofield.clone(), )* }
            }
        }
    };
}

fn check_user(s: &str) -> Result<(), Invalid> {
    validate::UserName::parse(s).map(drop)
}

fn check_host(s: &str) -> Result<(), Invalid> {
    validate::HostName::parse(s).map(drop)
}

settings_table! {
    ssh_user / ssh_user: String = "sshUser" {
        kind: Kind::Str(Some(check_user)), levels: ALL, merge: Merge::First,
        default: DefaultValue::Computed("the local user name"), flag: Some("--ssh-user"),
        doc: "User to log in as over SSH.",
    };
    user / profile_user: String = "user" {
        kind: Kind::Str(Some(check_user)), levels: ALL, merge: Merge::First,
        default: DefaultValue::Computed("sshUser (no elevation); root with interactiveSudo"), flag: Some("--profile-user"),
        doc: "User that owns the profile and runs the activation (through `sudo` when it differs from sshUser).",
    };
    /// Replaces the whole merged list on the command line (split shell-style).
    ssh_opts / ssh_opts: Vec<String> = "sshOpts" {
        kind: Kind::List(Some(validate::check_ssh_opts)), levels: ALL, merge: Merge::Concat,
        default: DefaultValue::None, flag: Some("--ssh-opts"),
        doc: "Extra ssh options, each an option or its value; profile, node and top lists are concatenated.",
    };
    fast_connection / fast_connection: bool = "fastConnection" {
        kind: Kind::Bool, levels: ALL, merge: Merge::First,
        default: DefaultValue::Bool(false), flag: Some("--fast-connection"),
        doc: "Copy everything from here instead of letting the target substitute from caches.",
    };
    auto_rollback / auto_rollback: bool = "autoRollback" {
        kind: Kind::Bool, levels: ALL, merge: Merge::First,
        default: DefaultValue::Bool(true), flag: Some("--auto-rollback"),
        doc: "Roll back to the previous generation when activation fails.",
    };
    magic_rollback / magic_rollback: bool = "magicRollback" {
        kind: Kind::Bool, levels: ALL, merge: Merge::First,
        default: DefaultValue::Bool(true), flag: Some("--magic-rollback"),
        doc: "The target rolls back by itself unless a fresh ssh login confirms within confirmTimeout.",
    };
    confirm_timeout / confirm_timeout: u64 = "confirmTimeout" {
        kind: Kind::Seconds, levels: ALL, merge: Merge::First,
        default: DefaultValue::Seconds(30), flag: Some("--confirm-timeout"),
        doc: "Seconds the target waits for the confirmation before rolling back.",
    };
    activation_timeout / activation_timeout: u64 = "activationTimeout" {
        kind: Kind::Seconds, levels: ALL, merge: Merge::First,
        default: DefaultValue::Seconds(240), flag: Some("--activation-timeout"),
        doc: "Seconds the activation may take while magic rollback waits for it (then it is stopped and rolled back); without magic rollback only a one-day cap applies, as deploy-rs sets no bound.",
    };
    temp_path / temp_path: String = "tempPath" {
        kind: Kind::Str(Some(validate::check_target_path)), levels: ALL, merge: Merge::First,
        default: DefaultValue::Str("/tmp"), flag: Some("--temp-path"),
        doc: "Directory on the target for the agent's deploy state.",
    };
    remote_build / remote_build: bool = "remoteBuild" {
        kind: Kind::Bool, levels: ALL, merge: Merge::First,
        default: DefaultValue::Bool(false), flag: Some("--remote-build"),
        doc: "Build the profile on the target instead of locally.",
    };
    interactive_sudo / interactive_sudo: bool = "interactiveSudo" {
        kind: Kind::Bool, levels: ALL, merge: Merge::First,
        default: DefaultValue::Bool(false), flag: Some("--interactive-sudo"),
        doc: "Ask for the sudo password once per host and feed it to sudo; without a `user`, the activation runs as root.",
    };
    keys / keys: Vec<Object> = "keys" {
        kind: Kind::Objects(crate::keys::FIELDS), levels: TOP_NODE, merge: Merge::First,
        default: DefaultValue::None, flag: None,
        doc: "Secrets uploaded outside the Nix store, colmena's shape: `keys.<name> = { text | keyFile | keyCommand; destDir ? \"/run/keys\"; name ? <name>; user ? \"root\"; group ? \"root\"; permissions ? \"0600\"; uploadAt ? \"pre-activation\" | \"post-activation\"; }` (keyFile and keyCommand are read on the deployer).",
    };
    health_checks / health_checks: Vec<Object> = "healthChecks" {
        kind: Kind::Objects(crate::checks::FIELDS), levels: ALL, merge: Merge::First,
        default: DefaultValue::None, flag: None,
        doc: "Checks run after activation and before confirmation, all of which must pass or the node rolls back: `{ command = [ … ]; }` or `{ http = \"http://…\"; expectStatus = 200; }`, each with `on` (`\"target\"`, as the profile user, or `\"deployer\"`), `timeout` (10), `retries` (3), `interval` (2), `name`.",
    };
    sudo / sudo: String = "sudo" {
        kind: Kind::Str(Some(validate::check_sudo)), levels: ALL, merge: Merge::First,
        default: DefaultValue::Str("sudo -u"), flag: Some("--sudo"),
        doc: "Command prefix that becomes the profile user; the user name is appended.",
    };
}

/// Keys that belong to one level only and are read by that level's parser.
pub const OWN: &[Setting] = &[
    Setting {
        key: "nodes",
        kind: Kind::Objects(&[]),
        levels: TOP,
        merge: Merge::First,
        default: DefaultValue::None,
        flag: None,
        doc: "The nodes, by name.",
    },
    Setting {
        key: "strict",
        kind: Kind::Bool,
        levels: TOP,
        merge: Merge::First,
        default: DefaultValue::Bool(false),
        flag: Some("--strict"),
        doc: "Refuse keys deploy-rs would ignore (unknown, or at the wrong level) instead of warning (rollout extension).",
    },
    Setting {
        key: "hostname",
        kind: Kind::Str(Some(check_host)),
        levels: NODE,
        merge: Merge::First,
        default: DefaultValue::None,
        flag: Some("--hostname"),
        doc: "Host name or address to connect to (required).",
    },
    Setting {
        key: "profiles",
        kind: Kind::Objects(&[]),
        levels: NODE,
        merge: Merge::First,
        default: DefaultValue::None,
        flag: None,
        doc: "The node's profiles, by name (`{ }` deploys nothing to the node).",
    },
    Setting {
        key: "profilesOrder",
        kind: Kind::List(None),
        levels: NODE,
        merge: Merge::First,
        default: DefaultValue::Computed("the remaining profiles by name"),
        flag: None,
        doc: "Profiles deployed first, in this order.",
    },
    Setting {
        key: "tags",
        kind: Kind::List(None),
        levels: NODE,
        merge: Merge::First,
        default: DefaultValue::None,
        flag: None,
        doc: "Labels for selecting nodes with `--on @tag` (rollout extension).",
    },
    Setting {
        key: "path",
        kind: Kind::Str(None),
        levels: PROFILE,
        merge: Merge::First,
        default: DefaultValue::None,
        flag: None,
        doc: "Store path of the activatable closure (required).",
    },
    Setting {
        key: "profilePath",
        kind: Kind::Str(Some(validate::check_target_path)),
        levels: PROFILE,
        merge: Merge::First,
        default: DefaultValue::Computed("/nix/var/nix/profiles/… from the user and profile name"),
        flag: Some("--profile-path"),
        doc: "Where the profile lives on the target.",
    },
];

/// Every row: generic settings, then the level-specific keys.
pub fn all() -> impl Iterator<Item = &'static Setting> {
    GENERIC.iter().chain(OWN)
}

/// The row of `key`.
pub fn find(key: &str) -> Option<&'static Setting> {
    all().find(|s| s.key == key)
}

/// The `--help` line of a setting's override flag, from its row: the doc line, the flake setting it
/// overrides everywhere, and its default. Panics on a flag with no row (a test checks every one).
pub fn flag_help(flag: &str) -> String {
    let Some(s) = all().find(|s| s.flag == Some(flag)) else {
        panic!("no setting has the flag {flag}")
    };
    let default = match s.default {
        DefaultValue::None => String::new(),
        DefaultValue::Bool(b) => format!("; default: {b}"),
        DefaultValue::Seconds(n) => format!("; default: {n}"),
        DefaultValue::Str(v) => format!("; default: {v}"),
        DefaultValue::Computed(how) => format!("; default: {how}"),
    };
    format!(
        "{} [overrides `{}` everywhere{default}]",
        s.doc.trim_end_matches('.'),
        s.key
    )
}

/// Keys allowed at `level`.
pub fn keys_at(level: Level) -> Vec<&'static str> {
    all().filter(|s| s.levels.has(level)).map(|s| s.key).collect()
}

/// Keys of structured settings (lists of attribute sets), for the evaluation shadow.
pub fn object_keys() -> Vec<&'static str> {
    GENERIC
        .iter()
        .filter(|s| matches!(s.kind, Kind::Objects(_)))
        .map(|s| s.key)
        .collect()
}

/// The typed default of a generic setting.
pub fn default_of(key: &str) -> DefaultValue {
    find(key).map_or(DefaultValue::None, |s| s.default)
}

/// Checks a value (from any source) against its row's validation.
pub fn check(kind: &Kind, v: &Parsed) -> Result<(), (Option<usize>, String, Invalid)> {
    match (kind, v) {
        (Kind::Seconds, Parsed::Seconds(n)) => validate::check_timeout(*n).map_err(|e| (None, n.to_string(), e)),
        (Kind::Str(Some(f)), Parsed::Str(s)) => f(s).map_err(|e| (None, s.clone(), e)),
        (Kind::List(Some(f)), Parsed::List(words)) => f(words).map_err(|(i, w, e)| (Some(i), w, e)),
        (Kind::Objects(fields), Parsed::Objects(objs)) if *fields == crate::keys::FIELDS => {
            for (i, o) in objs.iter().enumerate() {
                crate::keys::Key::from_object(o).map_err(|problem| {
                    let name = o.get("$name").and_then(|v| v.as_str()).unwrap_or("").to_string();
                    (Some(i), name, Invalid::key(problem))
                })?;
            }
            Ok(())
        }
        (Kind::Objects(fields), Parsed::Objects(objs)) if *fields == crate::checks::FIELDS => {
            for (i, o) in objs.iter().enumerate() {
                crate::checks::Check::from_object(o, i).map_err(|problem| {
                    let shown = serde_json::to_string(o).unwrap_or_default();
                    (Some(i), shown, Invalid::check(problem))
                })?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn default_text(d: DefaultValue) -> String {
    match d {
        DefaultValue::None => "—".into(),
        DefaultValue::Bool(b) => format!("`{b}`"),
        DefaultValue::Seconds(n) => format!("`{n}`"),
        DefaultValue::Str(s) => format!("`\"{s}\"`"),
        DefaultValue::Computed(s) => s.into(),
    }
}

fn kind_text(k: &Kind) -> String {
    match k {
        Kind::Bool => "boolean".into(),
        Kind::Seconds => "integer, seconds (1 … 86400)".into(),
        Kind::Str(_) => "string".into(),
        Kind::List(_) => "list of strings".into(),
        Kind::Objects([]) => "attribute set".into(),
        Kind::Objects(fields) => format!(
            "list of {{ {} }}",
            fields.iter().map(|f| f.key).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn levels_text(l: Levels) -> String {
    let mut v = Vec::new();
    for (on, name) in [(l.top, "top"), (l.node, "node"), (l.profile, "profile")] {
        if on {
            v.push(name);
        }
    }
    v.join(", ")
}

/// `docs/settings.md`: the table as Markdown (a unit test keeps the file in sync).
pub fn markdown() -> String {
    let mut out = String::from(
        "# Settings\n\nGenerated from `crates/rollout-core/src/schema.rs` (the settings table); \
         a unit test keeps this file in sync.\n\nA profile's value wins over its node's, the node's over the \
         top level's; a flag wins over all of them. `sshOpts` lists are concatenated (profile, node, top).\n\n\
         | setting | type | levels | default | flag | description |\n|---|---|---|---|---|---|\n",
    );
    for s in all() {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} |\n",
            s.key,
            kind_text(&s.kind),
            levels_text(s.levels),
            default_text(s.default),
            s.flag.map_or("—".to_string(), |f| format!("`{f}`")),
            s.doc
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_generic_setting_stores_and_reads_back_its_own_type() {
        for s in GENERIC {
            let v = match s.kind {
                Kind::Bool => Parsed::Bool(true),
                Kind::Seconds => Parsed::Seconds(7),
                Kind::Str(_) => Parsed::Str("x".into()),
                Kind::List(_) => Parsed::List(vec!["-v".into()]),
                Kind::Objects(_) => Parsed::Objects(vec![Object::new()]),
            };
            let mut g = GenericSettings::default();
            assert!(g.store(s.key, v.clone()), "{}", s.key);
            assert_eq!(g.get(s.key), Some(v), "{}", s.key);
            // A value of another type is not stored.
            let mut g = GenericSettings::default();
            let wrong = if matches!(s.kind, Kind::Bool) {
                Parsed::Seconds(1)
            } else {
                Parsed::Bool(true)
            };
            assert!(!g.store(s.key, wrong), "{}", s.key);
        }
        assert!(!GenericSettings::default().store("hostname", Parsed::Str("h".into())));
    }

    #[test]
    fn keys_are_unique_and_flags_are_long_options() {
        let mut keys: Vec<&str> = all().map(|s| s.key).collect();
        keys.sort_unstable();
        let n = keys.len();
        keys.dedup();
        assert_eq!(keys.len(), n);
        for s in all() {
            if let Some(f) = s.flag {
                assert!(
                    f.starts_with("--") && f[2..].chars().all(|c| c.is_ascii_lowercase() || c == '-'),
                    "{f}"
                );
            }
            assert!(!s.doc.is_empty() && s.doc.ends_with('.'), "{}", s.key);
        }
        assert!(keys_at(Level::Top).contains(&"nodes") && !keys_at(Level::Top).contains(&"hostname"));
        assert!(keys_at(Level::Profile).contains(&"sshUser") && keys_at(Level::Profile).contains(&"path"));
    }

    #[test]
    fn every_override_flag_has_a_help_line_from_its_row() {
        for s in all().filter(|s| s.flag.is_some()) {
            let h = flag_help(s.flag.unwrap());
            assert!(h.starts_with(s.doc.trim_end_matches('.')) && h.contains(s.key), "{h}");
        }
        assert!(flag_help("--confirm-timeout").contains("default: 30"));
    }

    #[test]
    fn merge_rules_per_level_and_override() {
        let l = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let (p, n, t) = (l(&["-p"]), l(&["-n"]), l(&["-t"]));
        assert_eq!(merge_value(Merge::Concat, &None, [&p, &n, &t]), l(&["-p", "-n", "-t"]));
        assert_eq!(merge_value(Merge::Concat, &None, [&None, &n, &None]), l(&["-n"]));
        assert_eq!(merge_value(Merge::Concat, &l(&[]), [&p, &n, &t]), l(&[]));
        assert_eq!(
            merge_value(Merge::First, &None, [&None, &Some(2u64), &Some(3)]),
            Some(2)
        );
        assert_eq!(
            merge_value(Merge::First, &Some(9u64), [&Some(1), &Some(2), &Some(3)]),
            Some(9)
        );
        assert_eq!(merge_value::<u64>(Merge::First, &None, [&None, &None, &None]), None);
    }

    #[test]
    fn structured_values_merge_by_their_rule() {
        let obj = |url: &str| {
            let mut o = Object::new();
            o.insert("url".into(), Value::from(url));
            o
        };
        let (p, t) = (Some(vec![obj("p")]), Some(vec![obj("t")]));
        assert_eq!(
            merge_value(Merge::Concat, &None, [&p, &None, &t]),
            Some(vec![obj("p"), obj("t")])
        );
        assert_eq!(merge_value(Merge::First, &None, [&None, &None, &t]), t);
    }

    #[test]
    fn overrides_map_to_the_same_settings() {
        let o = Overrides {
            profile_user: Some("root".into()),
            confirm_timeout: Some(5),
            ..Default::default()
        };
        let g = o.as_settings();
        assert_eq!(g.user.as_deref(), Some("root"));
        assert_eq!(g.get("confirmTimeout"), Some(Parsed::Seconds(5)));
        let none = GenericSettings::default();
        let e = GenericSettings::effective(&o, &none, &none, &none);
        assert_eq!(e.user.as_deref(), Some("root"));
    }

    #[test]
    fn checks_come_from_the_row() {
        let row = |k| find(k).unwrap().kind;
        assert!(check(&row("confirmTimeout"), &Parsed::Seconds(0)).is_err());
        assert!(check(&row("sshUser"), &Parsed::Str("a;b".into())).is_err());
        assert!(check(&row("hostname"), &Parsed::Str("h?x".into())).is_err());
        let (i, w, _) = check(
            &row("sshOpts"),
            &Parsed::List(vec!["-p".into(), "1".into(), "x".into()]),
        )
        .unwrap_err();
        assert_eq!((i, w.as_str()), (Some(2), "x"));
        assert!(check(&row("fastConnection"), &Parsed::Bool(true)).is_ok());
    }

    #[test]
    fn docs_settings_md_is_generated_from_the_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/settings.md");
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        if on_disk != markdown() && std::env::var_os("ROLLOUT_WRITE_DOCS").is_some() {
            std::fs::write(path, markdown()).unwrap();
            return;
        }
        assert_eq!(
            on_disk,
            markdown(),
            "docs/settings.md is stale: run ROLLOUT_WRITE_DOCS=1 cargo test -p rollout-core docs_settings"
        );
    }
}
