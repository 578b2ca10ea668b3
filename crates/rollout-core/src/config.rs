//! Typed `deploy` configuration, parsed from the evaluation output with strict validation.
//!
//! The input is the JSON produced by the `--apply` lambda of [`crate::evalexpr`]: every
//! attribute set is wrapped as `{"$type": "set", ...}` and anything Nix cannot turn into JSON
//! (functions, paths, nested sets where a scalar is expected) is replaced by `{"$type": "<typeOf>"}`,
//! so a wrong value reaches this module and gets a precise message instead of crashing Nix.
//! deploy-rs silently ignores unknown keys (flakes carry metadata for their own tooling), so a
//! key rollout does not know is collected as [`Ignored`]: a warning naming the full attribute
//! path and the nearest valid key, an error only in strict mode (`--strict`, `strict = true`).
//! `null` means "unset" for every optional setting, as in deploy-rs (`sshUser = cfg.user or null`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::schema::{self, Field, FieldKind, Kind, Level, Object, Parsed};
use crate::target::quote_attr;

pub use crate::schema::GenericSettings;

/// One profile of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileConfig {
    pub settings: GenericSettings,
    /// Store path of the activatable closure.
    pub path: String,
    pub profile_path: Option<String>,
}

/// One node. `profiles` holds only the profiles that were selected for evaluation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeConfig {
    pub settings: GenericSettings,
    pub hostname: String,
    pub profiles: BTreeMap<String, ProfileConfig>,
    pub profiles_order: Vec<String>,
    /// rollout extension: free-form labels for selecting nodes.
    pub tags: Vec<String>,
}

/// The whole `deploy` attribute set, restricted to what was evaluated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeployConfig {
    pub settings: GenericSettings,
    /// Evaluated (selected) nodes only.
    pub nodes: BTreeMap<String, NodeConfig>,
    /// Every node name of the flake, sorted, including unselected ones.
    pub all_node_names: Vec<String>,
    /// For every evaluated node, all its profile names (sorted), including unselected ones.
    pub all_profile_names: BTreeMap<String, Vec<String>>,
    /// `strict = true` at the top level: ignored keys are errors.
    pub strict: bool,
    /// Keys deploy-rs would ignore (unknown, or at the wrong level), in the evaluated part.
    pub ignored: Vec<Ignored>,
    /// Other things accepted as deploy-rs accepts them, worth a warning (a duplicate in
    /// `profilesOrder`, a node without profiles).
    pub warnings: Vec<Issue>,
}

/// A key deploy-rs ignores and rollout reports: unknown, or a known key at the wrong level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ignored {
    /// Attribute path such as `deploy.nodes.web.magicRolback`.
    pub path: String,
    /// What the key is: `unknown setting`, ``hostname` is a node setting``.
    pub what: String,
    /// What to do instead: `did you mean `magicRollback`?`, `put it on a node (…)`; may be empty.
    pub hint: String,
}

impl Ignored {
    /// The default: a warning, the key has no effect (as in deploy-rs).
    pub fn warning(&self) -> Issue {
        let hint = if self.hint.is_empty() {
            String::new()
        } else {
            format!(" — {}", self.hint)
        };
        Issue {
            path: self.path.clone(),
            message: format!("{}, ignored{hint}", self.what),
        }
    }

    /// In strict mode: an error.
    pub fn error(&self) -> Issue {
        let hint = if self.hint.is_empty() {
            String::new()
        } else {
            format!("; {}", self.hint)
        };
        Issue {
            path: self.path.clone(),
            message: format!(
                "{}{hint} (refused in strict mode: --strict or `strict = true` in deploy)",
                self.what
            ),
        }
    }
}

/// One validation problem at one attribute path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Issue {
    /// Attribute path such as `deploy.nodes.web.profiles.system.path`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// All validation problems found in one evaluated `deploy` value. Displayed as one
/// self-contained line per issue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// Where the configuration came from (flake reference or file), for messages.
    pub origin: String,
    pub issues: Vec<Issue>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.issues.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{issue}")?;
            if !self.origin.is_empty() {
                write!(f, " (in `{}`)", self.origin)?;
            }
        }
        Ok(())
    }
}

/// Parses the evaluation output (see [`crate::evalexpr`] for its shape). `source` names the
/// flake or file in messages.
pub fn parse_deploy(v: &Value, source: &str) -> Result<DeployConfig, ConfigError> {
    let mut cx = Cx::default();
    let cfg = cx.top(v);
    if cfg.as_ref().is_some_and(|c| c.strict) {
        // `strict = true` in the flake: refused here, with every other problem of the flake.
        let ignored = std::mem::take(&mut cx.ignored);
        cx.issues.extend(ignored.iter().map(Ignored::error));
    }
    match cfg {
        Some(mut cfg) if cx.issues.is_empty() => {
            cfg.ignored = cx.ignored;
            cfg.warnings = cx.warnings;
            Ok(cfg)
        }
        _ => {
            if cx.issues.is_empty() {
                cx.push(
                    "deploy",
                    "evaluation output has an unexpected shape (internal error)".into(),
                );
            }
            Err(ConfigError {
                origin: source.to_string(),
                issues: cx.issues,
            })
        }
    }
}

/// Parses a plain `deploy` value as `nix eval --json .#deploy` would print it (no wrapping),
/// treating every node and profile as selected. Handy for tests and for tools that already hold
/// the raw JSON.
pub fn parse_raw_deploy(raw: &Value, source: &str) -> Result<DeployConfig, ConfigError> {
    parse_deploy(&wrap_raw(raw), source)
}

/// Converts a raw `deploy` JSON value into the shape the evaluation lambda produces with
/// everything selected.
pub fn wrap_raw(raw: &Value) -> Value {
    fn set_or_type(v: &Value, f: impl FnOnce(&Map<String, Value>) -> Value) -> Value {
        match v {
            Value::Object(m) => f(m),
            other => serde_json::json!({ "$type": json_type(other) }),
        }
    }
    fn attrs(m: &Map<String, Value>, skip: &str) -> Value {
        let objects = schema::object_keys();
        let mut out = Map::new();
        for (k, v) in m {
            if k != skip {
                // Nested objects in settings are attribute sets in Nix: mark them like the lambda does.
                let v = match v {
                    // Structured settings keep one level of fields, as the lambda does.
                    Value::Array(items) if objects.contains(&k.as_str()) => Value::Array(
                        items
                            .iter()
                            .map(|i| match i {
                                Value::Object(o) => serde_json::json!({ "$type": "set", "attrs": o }),
                                x => x.clone(),
                            })
                            .collect(),
                    ),
                    // Already a type marker (lets tests stand in for functions and paths).
                    Value::Object(m) if m.contains_key("$type") => v.clone(),
                    Value::Object(_) => serde_json::json!({ "$type": "set" }),
                    Value::Array(items) => Value::Array(
                        items
                            .iter()
                            .map(|i| match i {
                                Value::Object(_) => serde_json::json!({ "$type": "set" }),
                                Value::Array(_) => serde_json::json!({ "$type": "list" }),
                                x => x.clone(),
                            })
                            .collect(),
                    ),
                    x => x.clone(),
                };
                out.insert(k.clone(), v);
            }
        }
        Value::Object(out)
    }
    set_or_type(raw, |top| {
        let nodes = top.get("nodes").map(|ns| {
            set_or_type(ns, |ns| {
                let selected: Map<String, Value> = ns
                    .iter()
                    .map(|(name, node)| {
                        let wrapped = set_or_type(node, |node| {
                            let profiles = node.get("profiles").map(|ps| {
                                set_or_type(ps, |ps| {
                                    let sel: Map<String, Value> = ps
                                        .iter()
                                        .map(|(p, prof)| {
                                            let w = set_or_type(prof, |prof| {
                                                serde_json::json!({ "$type": "set", "attrs": attrs(prof, "") })
                                            });
                                            (p.clone(), w)
                                        })
                                        .collect();
                                    serde_json::json!({ "$type": "set", "names": ps.keys().collect::<Vec<_>>(), "selected": sel })
                                })
                            });
                            serde_json::json!({ "$type": "set", "attrs": attrs(node, "profiles"), "profiles": profiles })
                        });
                        (name.clone(), wrapped)
                    })
                    .collect();
                serde_json::json!({ "$type": "set", "names": ns.keys().collect::<Vec<_>>(), "selected": selected })
            })
        });
        serde_json::json!({ "$type": "set", "attrs": attrs(top, "nodes"), "nodes": nodes })
    })
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "set",
    }
}

/// Human description of a value's type, with an article ("a string", "an attribute set").
fn describe(v: &Value) -> String {
    let t = match v {
        Value::Object(m) => match m.get("$type").and_then(Value::as_str) {
            Some(t) => t.to_string(),
            None => "set".to_string(),
        },
        Value::Number(n) if n.as_i64().is_some_and(|i| i < 0) => return "a negative integer".into(),
        other => json_type(other).to_string(),
    };
    match t.as_str() {
        "null" => "null".into(),
        "bool" => "a boolean".into(),
        "int" => "an integer".into(),
        "float" => "a float".into(),
        "string" => "a string".into(),
        "list" => "a list".into(),
        "set" => "an attribute set".into(),
        "lambda" => "a function".into(),
        "path" => "a path".into(),
        other => format!("a value of type `{other}`"),
    }
}

fn child(path: &str, key: &str) -> String {
    format!("{path}.{}", quote_attr(key))
}

#[derive(Default)]
struct Cx {
    issues: Vec<Issue>,
    ignored: Vec<Ignored>,
    warnings: Vec<Issue>,
}

impl Cx {
    fn push(&mut self, path: &str, message: String) {
        self.issues.push(Issue {
            path: path.to_string(),
            message,
        });
    }

    fn type_err(&mut self, path: &str, expected: &str, found: &Value) {
        self.push(path, format!("expected {expected}, found {}", describe(found)));
    }

    /// The wrapper of an attribute set (`{"$type":"set", ...}`), or an issue when the value
    /// is something else.
    fn as_set<'a>(&mut self, v: &'a Value, path: &str, expected: &str) -> Option<&'a Map<String, Value>> {
        match v {
            Value::Object(m) if m.get("$type").and_then(Value::as_str) == Some("set") => Some(m),
            // A plain object here means the input did not come from the evaluation lambda.
            Value::Object(m) if !m.contains_key("$type") => {
                self.push(path, "evaluation output has an unexpected shape (internal error: not produced by the rollout evaluation expression)".into());
                None
            }
            other => {
                self.type_err(path, expected, other);
                None
            }
        }
    }

    fn names(&mut self, wrapper: &Map<String, Value>, path: &str) -> Option<Vec<String>> {
        let names = wrapper.get("names").and_then(Value::as_array);
        let parsed: Option<Vec<String>> =
            names.and_then(|n| n.iter().map(|x| x.as_str().map(str::to_string)).collect());
        if parsed.is_none() {
            self.push(
                path,
                "evaluation output lacks the list of names (internal error)".into(),
            );
        }
        parsed
    }

    fn top(&mut self, v: &Value) -> Option<DeployConfig> {
        let path = "deploy";
        let top = self.as_set(v, path, "an attribute set")?;
        let settings = self.settings(top.get("attrs"), path, Level::Top);
        let nodes_path = "deploy.nodes";
        let nodes = match top.get("nodes") {
            None | Some(Value::Null) => {
                self.push(nodes_path, "missing; expected an attribute set of nodes".into());
                return None;
            }
            Some(n) => self.as_set(n, nodes_path, "an attribute set of nodes")?,
        };
        let all_node_names = self.names(nodes, nodes_path)?;
        let mut out_nodes = BTreeMap::new();
        let mut all_profile_names = BTreeMap::new();
        if let Some(selected) = nodes.get("selected").and_then(Value::as_object) {
            for (name, node) in selected {
                let npath = child(nodes_path, name);
                if let Some((cfg, profile_names)) = self.node(node, &npath) {
                    out_nodes.insert(name.clone(), cfg);
                    all_profile_names.insert(name.clone(), profile_names);
                }
            }
        }
        let strict = match top.get("attrs").and_then(|a| a.get("strict")) {
            None | Some(Value::Null) => false,
            Some(v) => self.boolean(v, "deploy.strict").unwrap_or(false),
        };
        Some(DeployConfig {
            settings,
            nodes: out_nodes,
            all_node_names,
            all_profile_names,
            strict,
            ignored: Vec::new(),
            warnings: Vec::new(),
        })
    }

    fn node(&mut self, v: &Value, path: &str) -> Option<(NodeConfig, Vec<String>)> {
        let node = self.as_set(v, path, "an attribute set (a node)")?;
        let attrs = node.get("attrs");
        let settings = self.settings(attrs, path, Level::Node);
        let attrs = attrs.and_then(Value::as_object);
        let get = |k: &str| attrs.and_then(|a| a.get(k));

        let hostname = match get("hostname") {
            None => {
                self.push(
                    &child(path, "hostname"),
                    "missing; every node needs a `hostname` (string)".into(),
                );
                None
            }
            // deploy-rs accepts an empty hostname (used with `--hostname`); the plan refuses it
            // when nothing overrides it.
            Some(Value::String(h)) if h.is_empty() => Some(String::new()),
            Some(h) => self.own_string("hostname", h, &child(path, "hostname")),
        };
        let tags = match get("tags") {
            None | Some(Value::Null) => Vec::new(),
            Some(t) => self.string_list(t, &child(path, "tags")).unwrap_or_default(),
        };

        let ppath = child(path, "profiles");
        let (profiles, names) = match node.get("profiles") {
            None | Some(Value::Null) => {
                self.push(
                    &ppath,
                    "missing; expected an attribute set of profiles (`{ }` deploys nothing to this node)".into(),
                );
                (BTreeMap::new(), None)
            }
            Some(p) => match self.as_set(p, &ppath, "an attribute set of profiles") {
                None => (BTreeMap::new(), None),
                Some(ps) => {
                    let names = self.names(ps, &ppath);
                    if names.as_ref().is_some_and(Vec::is_empty) {
                        // deploy-rs deploys nothing for such a node; so does rollout, saying so.
                        self.warnings.push(Issue {
                            path: ppath.clone(),
                            message: "the node has no profiles; nothing is deployed to it".into(),
                        });
                    }
                    let mut out = BTreeMap::new();
                    if let Some(sel) = ps.get("selected").and_then(Value::as_object) {
                        for (pname, prof) in sel {
                            if let Some(cfg) = self.profile(prof, &child(&ppath, pname)) {
                                out.insert(pname.clone(), cfg);
                            }
                        }
                    }
                    (out, names)
                }
            },
        };
        let profiles_order = self.profiles_order(get("profilesOrder"), &child(path, "profilesOrder"));

        Some((
            NodeConfig {
                settings,
                hostname: hostname?,
                profiles,
                profiles_order,
                tags,
            },
            names?,
        ))
    }

    /// `profilesOrder`: a duplicate is dropped with a warning, as deploy-rs drops it. Names of
    /// missing profiles are checked by the plan, only where the order is used (a whole node).
    fn profiles_order(&mut self, v: Option<&Value>, path: &str) -> Vec<String> {
        let Some(list) = v.filter(|v| !v.is_null()).and_then(|v| self.string_list(v, path)) else {
            return Vec::new();
        };
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for (i, p) in list.into_iter().enumerate() {
            if seen.insert(p.clone()) {
                out.push(p);
            } else {
                self.warnings.push(Issue {
                    path: format!("{path}[{i}]"),
                    message: format!("`{p}` is listed twice; the later entry is ignored"),
                });
            }
        }
        out
    }

    fn profile(&mut self, v: &Value, path: &str) -> Option<ProfileConfig> {
        let prof = self.as_set(v, path, "an attribute set (a profile)")?;
        let attrs = prof.get("attrs");
        let settings = self.settings(attrs, path, Level::Profile);
        let attrs = attrs.and_then(Value::as_object);
        let get = |k: &str| attrs.and_then(|a| a.get(k));
        let p = child(path, "path");
        let closure = match get("path") {
            None => {
                self.push(
                    &p,
                    "missing; every profile needs a `path` (the store path of its activatable closure)".into(),
                );
                None
            }
            // Forced later, per node (see `evalexpr::paths_lambda`); empty until then.
            Some(Value::Object(o)) if o.get("$type").and_then(Value::as_str) == Some("deferred") => Some(String::new()),
            Some(v) => match check_closure(v) {
                Ok(c) => Some(c),
                Err(message) => {
                    self.push(&p, message);
                    None
                }
            },
        };
        let profile_path = get("profilePath")
            .filter(|v| !v.is_null())
            .and_then(|v| self.own_string("profilePath", v, &child(path, "profilePath")));
        Some(ProfileConfig {
            settings,
            path: closure?,
            profile_path,
        })
    }

    /// Reads the generic settings from `attrs` and reports unknown keys. The level's own keys
    /// are skipped here and read by the caller.
    fn settings(&mut self, attrs: Option<&Value>, path: &str, level: Level) -> GenericSettings {
        let mut s = GenericSettings::default();
        let Some(attrs) = attrs.and_then(Value::as_object) else {
            return s;
        };
        for (key, v) in attrs {
            let kp = child(path, key);
            match schema::find(key) {
                // deploy-rs reads every optional setting as `Option`: null is "unset".
                Some(row) if row.levels.has(level) && v.is_null() => {}
                Some(row) if row.levels.has(level) && schema::GENERIC.iter().any(|g| g.key == row.key) => {
                    if let Some(parsed) = self.value(&row.kind, v, &kp) {
                        s.store(key, parsed);
                    }
                }
                // The level's own keys are read by the caller.
                Some(row) if row.levels.has(level) => {}
                _ => {
                    let (what, hint) = unknown_key_message(key, level, path);
                    self.ignored.push(Ignored { path: kp, what, hint });
                }
            }
        }
        s
    }

    /// A level's own string key (`hostname`, `profilePath`), parsed and checked by its row.
    fn own_string(&mut self, key: &str, v: &Value, path: &str) -> Option<String> {
        let row = schema::find(key)?;
        match self.value(&row.kind, v, path)? {
            Parsed::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Parses and checks one value by its row's kind (the table's validation).
    fn value(&mut self, kind: &Kind, v: &Value, path: &str) -> Option<Parsed> {
        let parsed = match kind {
            Kind::Bool => Parsed::Bool(self.boolean(v, path)?),
            Kind::Seconds => Parsed::Seconds(self.seconds(v, path)?),
            Kind::Str(_) => Parsed::Str(self.nonempty_string(v, path)?),
            Kind::List(_) => Parsed::List(self.string_list(v, path)?),
            Kind::Objects(fields) => Parsed::Objects(self.objects(fields, v, path)?),
        };
        match schema::check(kind, &parsed) {
            Ok(()) => Some(parsed),
            Err((index, value, e)) => {
                let at = index.map_or(path.to_string(), |i| format!("{path}[{i}]"));
                self.issues.push(e.at(&at, &value));
                None
            }
        }
    }

    /// A structured setting: a list of attribute sets whose fields are the row's.
    fn objects(&mut self, fields: &[Field], v: &Value, path: &str) -> Option<Vec<Object>> {
        // An attribute set of entries (colmena's `keys.<name> = { … }`): each entry is named by
        // its attribute (`$name`), in attribute order.
        if let Value::Object(m) = v {
            if m.get("$type").and_then(Value::as_str) == Some("set") && m.contains_key("attrs") {
                let attrs = m.get("attrs").and_then(Value::as_object).cloned().unwrap_or_default();
                let mut out = Vec::new();
                let before = self.issues.len();
                for (name, item) in &attrs {
                    let ip = child(path, name);
                    let Some(set) = self.as_set(item, &ip, "an attribute set") else {
                        continue;
                    };
                    let fields_of = set.get("attrs").and_then(Value::as_object).cloned().unwrap_or_default();
                    let mut o = self.object(fields, &fields_of, &ip);
                    o.insert("$name".into(), Value::String(name.clone()));
                    out.push(o);
                }
                return (self.issues.len() == before).then_some(out);
            }
        }
        let Value::Array(items) = v else {
            self.type_err(path, "a list of attribute sets", v);
            return None;
        };
        let mut out = Vec::new();
        let before = self.issues.len();
        for (i, item) in items.iter().enumerate() {
            let ip = format!("{path}[{i}]");
            let Some(set) = self.as_set(item, &ip, "an attribute set") else {
                continue;
            };
            let attrs = set.get("attrs").and_then(Value::as_object).cloned().unwrap_or_default();
            out.push(self.object(fields, &attrs, &ip));
        }
        (self.issues.len() == before).then_some(out)
    }

    fn object(&mut self, fields: &[Field], attrs: &Map<String, Value>, path: &str) -> Object {
        let mut obj = Object::new();
        for f in fields.iter().filter(|f| f.required && !attrs.contains_key(f.key)) {
            self.push(&child(path, f.key), format!("missing; every entry needs `{}`", f.key));
        }
        for (k, v) in attrs {
            let kp = child(path, k);
            let Some(f) = fields.iter().find(|f| f.key == k) else {
                let hint = suggest(k, fields.iter().map(|f| f.key));
                let valid: Vec<&str> = fields.iter().map(|f| f.key).collect();
                self.push(&kp, format!("unknown field{hint}; fields: {}", valid.join(", ")));
                continue;
            };
            let ok = match f.kind {
                FieldKind::Bool => self.boolean(v, &kp).is_some(),
                FieldKind::Int => {
                    v.as_i64().is_some() || {
                        self.type_err(&kp, "an integer", v);
                        false
                    }
                }
                FieldKind::Str => self.nonempty_string(v, &kp).is_some(),
                FieldKind::List => match v.as_array() {
                    Some(items) if items.iter().all(|w| w.as_str().is_some_and(|w| !w.is_empty())) => true,
                    _ => {
                        self.type_err(&kp, "a list of non-empty strings", v);
                        false
                    }
                },
            };
            if ok {
                obj.insert(k.clone(), v.clone());
            }
        }
        obj
    }

    fn nonempty_string(&mut self, v: &Value, path: &str) -> Option<String> {
        match v {
            Value::String(s) if s.is_empty() => {
                self.push(path, "expected a non-empty string, found an empty string".into());
                None
            }
            Value::String(s) => Some(s.clone()),
            other => {
                self.type_err(path, "a string", other);
                None
            }
        }
    }

    fn boolean(&mut self, v: &Value, path: &str) -> Option<bool> {
        match v {
            Value::Bool(b) => Some(*b),
            other => {
                self.type_err(path, "a boolean (true or false)", other);
                None
            }
        }
    }

    fn seconds(&mut self, v: &Value, path: &str) -> Option<u64> {
        match v.as_u64() {
            Some(n) => Some(n),
            None => {
                self.type_err(path, "a non-negative integer (seconds)", v);
                None
            }
        }
    }

    fn string_list(&mut self, v: &Value, path: &str) -> Option<Vec<String>> {
        let Value::Array(items) = v else {
            self.type_err(path, "a list of strings", v);
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match item {
                Value::String(s) => out.push(s.clone()),
                other => {
                    self.type_err(&format!("{path}[{i}]"), "a string", other);
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }
}

/// What an ignored key is and what to do instead.
fn unknown_key_message(key: &str, level: Level, path: &str) -> (String, String) {
    // A valid key at another level: say where it belongs.
    if let Some(row) = schema::find(key) {
        if row.levels.node && !row.levels.top {
            return (
                format!("`{key}` is a node setting, not allowed here"),
                format!("put it on a node (deploy.nodes.<name>.{key})"),
            );
        }
        if row.levels.profile && !row.levels.node {
            let node = if level == Level::Node {
                path.to_string()
            } else {
                "deploy.nodes.<node>".to_string()
            };
            return (
                format!("`{key}` is a profile setting, not allowed here"),
                format!("put it on a profile ({node}.profiles.<name>.{key})"),
            );
        }
        if row.levels.top && !row.levels.node {
            return (
                format!("`{key}` is only allowed at the top level of `deploy`"),
                String::new(),
            );
        }
    }
    let valid = schema::keys_at(level);
    match nearest(key, valid.iter().copied()) {
        Some(near) => ("unknown setting".into(), format!("did you mean `{near}`?")),
        None => (
            "unknown setting".into(),
            format!("valid settings here: {}", valid.join(", ")),
        ),
    }
}

/// The candidate closest to `word`, when it is close enough to be a likely typo.
pub(crate) fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lw = word.to_lowercase();
    let best = candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(&lw, &c.to_lowercase()), c))
        .min_by_key(|(d, _)| *d);
    match best {
        // Allow roughly one edit per three characters, at least two.
        Some((d, c)) if d <= (word.chars().count() / 3).max(1) => Some(c),
        _ => None,
    }
}

/// `"; did you mean `x`?"` for the closest candidate, or the empty string when none is close.
pub(crate) fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    nearest(word, candidates).map_or(String::new(), |c| format!("; did you mean `{c}`?"))
}

/// Comma-separated, quoted-when-needed list of names, or `(none)`.
pub(crate) fn list_names<S: AsRef<str>>(names: &[S]) -> String {
    if names.is_empty() {
        return "(none)".into();
    }
    names
        .iter()
        .map(|n| quote_attr(n.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The local Nix store directory (`NIX_STORE_DIR`, else /nix/store).
/// A profile's `path` as evaluated: an absolute path inside the local store, or what is wrong
/// with it (the message after the attribute path).
pub fn check_closure(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) if s.is_empty() => Err("expected a non-empty string, found an empty string".into()),
        Value::String(s) if !s.starts_with('/') => Err(format!("expected an absolute store path, found `{s}`")),
        Value::String(s) if !in_store(s) => Err(format!(
            "expected a store path (a derivation, e.g. from lib.<system>.activate.*), found `{s}`, which is outside {}",
            store_dir()
        )),
        Value::String(s) => Ok(s.clone()),
        other => Err(format!("expected a string, found {}", describe(other))),
    }
}

fn store_dir() -> String {
    std::env::var("NIX_STORE_DIR").unwrap_or_else(|_| "/nix/store".into())
}

/// Whether `path` names something inside the local store (a closure Nix can build or copy).
fn in_store(path: &str) -> bool {
    path.strip_prefix(&store_dir())
        .and_then(|rest| rest.strip_prefix('/'))
        .is_some_and(|name| !name.is_empty() && !name.starts_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(raw: Value) -> Result<DeployConfig, ConfigError> {
        parse_raw_deploy(&raw, "")
    }

    fn issues(raw: Value) -> Vec<String> {
        parse(raw).unwrap_err().issues.iter().map(ToString::to_string).collect()
    }

    fn one_issue(raw: Value) -> String {
        let i = issues(raw);
        assert_eq!(i.len(), 1, "{i:#?}");
        i.into_iter().next().unwrap()
    }

    fn minimal() -> Value {
        json!({ "nodes": { "web": { "hostname": "web.example", "profiles": { "system": { "path": "/nix/store/aaa-sys" } } } } })
    }

    #[test]
    fn parses_minimal() {
        let c = parse(minimal()).unwrap();
        assert_eq!(c.all_node_names, vec!["web"]);
        assert_eq!(c.all_profile_names["web"], vec!["system"]);
        let n = &c.nodes["web"];
        assert_eq!(n.hostname, "web.example");
        assert_eq!(n.profiles["system"].path, "/nix/store/aaa-sys");
        assert_eq!(n.profiles["system"].profile_path, None);
        assert_eq!(n.settings, GenericSettings::default());
        assert!(n.tags.is_empty() && n.profiles_order.is_empty());
    }

    #[test]
    fn parses_every_setting_at_every_level() {
        let gen = |p: &str| {
            json!({
                "sshUser": format!("{p}-su"), "user": format!("{p}-u"), "sshOpts": [format!("-{p}")],
                "fastConnection": true, "autoRollback": false, "magicRollback": false,
                "confirmTimeout": 7, "activationTimeout": 8, "tempPath": format!("/t/{p}"),
                "remoteBuild": true, "interactiveSudo": true, "sudo": format!("doas-{p} -u")
            })
        };
        let expect = |p: &str| GenericSettings {
            ssh_user: Some(format!("{p}-su")),
            user: Some(format!("{p}-u")),
            ssh_opts: Some(vec![format!("-{p}")]),
            fast_connection: Some(true),
            auto_rollback: Some(false),
            magic_rollback: Some(false),
            confirm_timeout: Some(7),
            activation_timeout: Some(8),
            temp_path: Some(format!("/t/{p}")),
            remote_build: Some(true),
            interactive_sudo: Some(true),
            sudo: Some(format!("doas-{p} -u")),
            health_checks: None,
            keys: None,
        };
        let mut top = gen("top");
        let mut node = gen("node");
        let mut prof = gen("prof");
        prof["path"] = json!("/nix/store/x");
        prof["profilePath"] = json!("/nix/var/nix/profiles/x");
        node["hostname"] = json!("h");
        node["tags"] = json!(["a", "b"]);
        node["profilesOrder"] = json!(["p"]);
        node["profiles"] = json!({ "p": prof });
        top["nodes"] = json!({ "n": node });
        let c = parse(top).unwrap();
        assert_eq!(c.settings, expect("top"));
        assert_eq!(c.nodes["n"].settings, expect("node"));
        assert_eq!(c.nodes["n"].tags, vec!["a", "b"]);
        assert_eq!(c.nodes["n"].profiles_order, vec!["p"]);
        assert_eq!(c.nodes["n"].profiles["p"].settings, expect("prof"));
        assert_eq!(
            c.nodes["n"].profiles["p"].profile_path.as_deref(),
            Some("/nix/var/nix/profiles/x")
        );
    }

    /// The warnings for keys deploy-rs would ignore, as printed.
    fn ignored(raw: Value) -> Vec<String> {
        let c = parse(raw).unwrap_or_else(|e| panic!("{e}"));
        c.ignored.iter().map(|i| i.warning().to_string()).collect()
    }

    fn one_ignored(raw: Value) -> String {
        let i = ignored(raw);
        assert_eq!(i.len(), 1, "{i:#?}");
        i.into_iter().next().unwrap()
    }

    #[test]
    fn unknown_keys_are_ignored_with_a_warning_naming_the_nearest_key() {
        let mut raw = minimal();
        raw["nodes"]["web"]["profiles"]["system"]["magicRolback"] = json!(true);
        let c = parse(raw.clone()).unwrap();
        // Ignored as deploy-rs ignores it: magicRollback keeps its default.
        assert_eq!(c.nodes["web"].profiles["system"].settings, GenericSettings::default());
        assert_eq!(
            one_ignored(raw),
            "deploy.nodes.web.profiles.system.magicRolback: unknown setting, ignored — did you mean `magicRollback`?"
        );
        assert_eq!(
            c.ignored[0].error().to_string(),
            "deploy.nodes.web.profiles.system.magicRolback: unknown setting; did you mean `magicRollback`? \
             (refused in strict mode: --strict or `strict = true` in deploy)"
        );
        let mut raw = minimal();
        raw["sshuser"] = json!("x");
        assert_eq!(
            one_ignored(raw),
            "deploy.sshuser: unknown setting, ignored — did you mean `sshUser`?"
        );
        let mut raw = minimal();
        raw["nodes"]["web"]["hostnme"] = json!("x");
        assert!(one_ignored(raw)
            .starts_with("deploy.nodes.web.hostnme: unknown setting, ignored — did you mean `hostname`?"));
        // Metadata for other tools: any value, even one Nix cannot print as JSON.
        let mut raw = minimal();
        raw["frobnicate"] = json!({ "$type": "lambda" });
        raw["nodes"]["web"]["meta"] = json!({ "owner": "ops" });
        let i = ignored(raw);
        assert!(
            i[0].starts_with("deploy.frobnicate: unknown setting, ignored — valid settings here: sshUser,"),
            "{i:?}"
        );
        assert!(
            i[1].starts_with("deploy.nodes.web.meta: unknown setting, ignored"),
            "{i:?}"
        );
    }

    #[test]
    fn strict_at_the_top_level_is_read() {
        let mut raw = minimal();
        raw["strict"] = json!(true);
        assert!(parse(raw).unwrap().strict);
        let mut raw = minimal();
        raw["strict"] = json!(null);
        assert!(!parse(raw).unwrap().strict);
        let mut raw = minimal();
        raw["strict"] = json!("yes");
        assert_eq!(
            one_issue(raw),
            "deploy.strict: expected a boolean (true or false), found a string"
        );
        let mut raw = minimal();
        raw["nodes"]["web"]["strict"] = json!(true);
        assert!(one_ignored(raw).starts_with("deploy.nodes.web.strict: `strict` is only allowed at the top level"));
    }

    #[test]
    fn keys_at_the_wrong_level_are_ignored_saying_where_they_belong() {
        let mut raw = minimal();
        raw["nodes"]["web"]["profiles"]["system"]["hostname"] = json!("x");
        assert_eq!(
            one_ignored(raw),
            "deploy.nodes.web.profiles.system.hostname: `hostname` is a node setting, not allowed here, ignored \
             — put it on a node (deploy.nodes.<name>.hostname)"
        );
        let mut raw = minimal();
        raw["nodes"]["web"]["path"] = json!("/nix/store/x");
        let e = one_ignored(raw);
        assert!(
            e.starts_with("deploy.nodes.web.path: `path` is a profile setting"),
            "{e}"
        );
        assert!(e.contains("deploy.nodes.web.profiles.<name>.path"), "{e}");
        let mut raw = minimal();
        raw["profilePath"] = json!("/x");
        assert!(one_ignored(raw).starts_with("deploy.profilePath: `profilePath` is a profile setting"));
        let mut raw = minimal();
        raw["tags"] = json!([]);
        assert!(one_ignored(raw).starts_with("deploy.tags: `tags` is a node setting"));
        let mut raw = minimal();
        raw["nodes"]["web"]["profiles"]["system"]["profilesOrder"] = json!([]);
        assert!(one_ignored(raw).contains("`profilesOrder` is a node setting"));
        let mut raw = minimal();
        raw["nodes"]["web"]["nodes"] = json!({});
        assert!(one_ignored(raw).contains("`nodes` is only allowed at the top level"));
    }

    #[test]
    fn null_is_unset_for_every_optional_setting_at_every_level() {
        let mut raw = minimal();
        for row in schema::GENERIC {
            if row.levels.top {
                raw[row.key] = Value::Null;
            }
            if row.levels.node {
                raw["nodes"]["web"][row.key] = Value::Null;
            }
            if row.levels.profile {
                raw["nodes"]["web"]["profiles"]["system"][row.key] = Value::Null;
            }
        }
        for k in ["tags", "profilesOrder"] {
            raw["nodes"]["web"][k] = Value::Null;
        }
        raw["nodes"]["web"]["profiles"]["system"]["profilePath"] = Value::Null;
        raw["strict"] = Value::Null;
        let c = parse(raw).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c, parse(minimal()).unwrap());
        // Required values stay required.
        let mut raw = minimal();
        raw["nodes"]["web"]["hostname"] = Value::Null;
        assert_eq!(
            one_issue(raw),
            "deploy.nodes.web.hostname: expected a string, found null"
        );
        let mut raw = minimal();
        raw["nodes"]["web"]["profiles"]["system"]["path"] = Value::Null;
        assert_eq!(
            one_issue(raw),
            "deploy.nodes.web.profiles.system.path: expected a string, found null"
        );
    }

    #[test]
    fn wrong_types() {
        let mut raw = minimal();
        raw["nodes"]["web"]["confirmTimeout"] = json!("30");
        assert_eq!(
            one_issue(raw),
            "deploy.nodes.web.confirmTimeout: expected a non-negative integer (seconds), found a string"
        );
        let cases: Vec<(&str, Value, &str)> = vec![
            (
                "activationTimeout",
                json!(-1),
                "expected a non-negative integer (seconds), found a negative integer",
            ),
            (
                "activationTimeout",
                json!(1.5),
                "expected a non-negative integer (seconds), found a float",
            ),
            (
                "magicRollback",
                json!("yes"),
                "expected a boolean (true or false), found a string",
            ),
            (
                "fastConnection",
                json!(1),
                "expected a boolean (true or false), found an integer",
            ),
            (
                "remoteBuild",
                json!([]),
                "expected a boolean (true or false), found a list",
            ),
            (
                "interactiveSudo",
                json!({}),
                "expected a boolean (true or false), found an attribute set",
            ),
            ("sshUser", json!(true), "expected a string, found a boolean"),
            ("user", json!(""), "expected a non-empty string, found an empty string"),
            (
                "sudo",
                json!({"$type": "lambda"}),
                "expected a string, found a function",
            ),
            ("tempPath", json!({"$type": "path"}), "expected a string, found a path"),
            (
                "tempPath",
                json!("tmp"),
                "expected an absolute path on the target without `..`, found `tmp`, which is relative",
            ),
            ("sshOpts", json!("-p 22"), "expected a list of strings, found a string"),
        ];
        for (key, value, msg) in cases {
            let mut raw = minimal();
            raw["nodes"]["web"]["profiles"]["system"][key] = value;
            assert_eq!(one_issue(raw), format!("deploy.nodes.web.profiles.system.{key}: {msg}"));
        }
        let mut raw = minimal();
        raw["sshOpts"] = json!(["-p", 22]);
        assert_eq!(one_issue(raw), "deploy.sshOpts[1]: expected a string, found an integer");
        let mut raw = minimal();
        raw["nodes"]["web"]["tags"] = json!("prod");
        assert_eq!(
            one_issue(raw),
            "deploy.nodes.web.tags: expected a list of strings, found a string"
        );
        let mut raw = minimal();
        raw["nodes"]["web"]["hostname"] = json!(3);
        assert_eq!(
            one_issue(raw),
            "deploy.nodes.web.hostname: expected a string, found an integer"
        );
        let mut raw = minimal();
        raw["nodes"]["web"]["profiles"]["system"]["path"] = json!("result");
        assert_eq!(
            one_issue(raw),
            "deploy.nodes.web.profiles.system.path: expected an absolute store path, found `result`"
        );
        let mut raw = minimal();
        raw["nodes"]["web"]["profiles"]["system"]["path"] = json!("/etc");
        assert_eq!(
            one_issue(raw),
            "deploy.nodes.web.profiles.system.path: expected a store path (a derivation, e.g. from \
             lib.<system>.activate.*), found `/etc`, which is outside /nix/store"
        );
    }

    #[test]
    fn missing_required() {
        let raw = json!({ "nodes": { "web": { "profiles": { "system": { "path": "/nix/store/a" } } } } });
        assert_eq!(
            one_issue(raw),
            "deploy.nodes.web.hostname: missing; every node needs a `hostname` (string)"
        );
        let raw = json!({ "nodes": { "web": { "hostname": "h", "profiles": { "system": {} } } } });
        assert!(one_issue(raw).starts_with("deploy.nodes.web.profiles.system.path: missing;"));
        let raw = json!({ "nodes": { "web": { "hostname": "h" } } });
        assert!(one_issue(raw).starts_with("deploy.nodes.web.profiles: missing;"));
        // deploy-rs deploys nothing for a node with `profiles = { }`: accepted, with a warning.
        let raw = json!({ "nodes": { "web": { "hostname": "h", "profiles": {} } } });
        let c = parse(raw).unwrap();
        assert!(c.nodes["web"].profiles.is_empty());
        assert_eq!(
            c.warnings[0].to_string(),
            "deploy.nodes.web.profiles: the node has no profiles; nothing is deployed to it"
        );
        // An empty hostname is kept for the plan to judge (`--hostname` may replace it).
        let raw = json!({ "nodes": { "web": { "hostname": "", "profiles": { "s": { "path": "/nix/store/a" } } } } });
        assert_eq!(parse(raw).unwrap().nodes["web"].hostname, "");
        let raw = json!({ "sshUser": "x" });
        assert_eq!(
            one_issue(raw),
            "deploy.nodes: missing; expected an attribute set of nodes"
        );
    }

    #[test]
    fn non_set_containers() {
        assert_eq!(
            one_issue(json!(3)),
            "deploy: expected an attribute set, found an integer"
        );
        assert_eq!(
            one_issue(json!({ "nodes": [] })),
            "deploy.nodes: expected an attribute set of nodes, found a list"
        );
        assert_eq!(
            one_issue(json!({ "nodes": { "web": "x" } })),
            "deploy.nodes.web: expected an attribute set (a node), found a string"
        );
        assert_eq!(
            one_issue(json!({ "nodes": { "web": { "hostname": "h", "profiles": { "p": null } } } })),
            "deploy.nodes.web.profiles.p: expected an attribute set (a profile), found null"
        );
        assert_eq!(
            one_issue(json!({ "nodes": { "web": { "hostname": "h", "profiles": "p" } } })),
            "deploy.nodes.web.profiles: expected an attribute set of profiles, found a string"
        );
    }

    #[test]
    fn a_duplicate_in_profiles_order_is_dropped_with_a_warning() {
        let mut raw = minimal();
        raw["nodes"]["web"]["profilesOrder"] = json!(["system", "systme", "system"]);
        let c = parse(raw).unwrap();
        // Names are checked by the plan, where the order is used.
        assert_eq!(c.nodes["web"].profiles_order, vec!["system", "systme"]);
        let w: Vec<String> = c.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            w,
            vec!["deploy.nodes.web.profilesOrder[2]: `system` is listed twice; the later entry is ignored"]
        );
        let mut raw = minimal();
        raw["nodes"]["web"]["profilesOrder"] = json!("system");
        assert_eq!(
            one_issue(raw),
            "deploy.nodes.web.profilesOrder: expected a list of strings, found a string"
        );
    }

    #[test]
    fn quoted_names_in_paths_and_all_issues_collected() {
        let raw = json!({ "nodes": {
            "web.example.com": { "hostname": "h", "profiles": { "sys": { "path": "/nix/store/a", "user": 1 } } },
            "db": { "hostname": 1, "profiles": { "sys": { "path": "/nix/store/a" } } }
        } });
        let e = parse_raw_deploy(&raw, "github:o/r").unwrap_err();
        let lines: Vec<String> = e.to_string().lines().map(str::to_string).collect();
        assert_eq!(
            lines,
            vec![
                "deploy.nodes.db.hostname: expected a string, found an integer (in `github:o/r`)",
                "deploy.nodes.\"web.example.com\".profiles.sys.user: expected a string, found an integer (in `github:o/r`)",
            ]
        );
    }

    #[test]
    fn unselected_profiles_are_listed_but_not_parsed() {
        // What the eval lambda yields when only `web.system` was selected.
        let v = json!({
            "$type": "set", "attrs": {},
            "nodes": { "$type": "set", "names": ["db", "web"], "selected": {
                "web": { "$type": "set", "attrs": { "hostname": "h" },
                         "profiles": { "$type": "set", "names": ["home", "system"],
                                       "selected": { "system": { "$type": "set", "attrs": { "path": "/nix/store/s" } } } } }
            } }
        });
        let c = parse_deploy(&v, ".").unwrap();
        assert_eq!(c.all_node_names, vec!["db", "web"]);
        assert_eq!(c.all_profile_names["web"], vec!["home", "system"]);
        assert_eq!(c.nodes.keys().collect::<Vec<_>>(), vec!["web"]);
        assert_eq!(c.nodes["web"].profiles.keys().collect::<Vec<_>>(), vec!["system"]);
    }

    #[test]
    fn malformed_wrapper_is_an_internal_error_not_a_panic() {
        let v = json!({ "$type": "set", "attrs": {}, "nodes": { "$type": "set" } });
        let e = parse_deploy(&v, "").unwrap_err();
        assert!(e.to_string().contains("internal error"), "{e}");
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            suggest("magicRolback", schema::GENERIC.iter().map(|s| s.key)),
            "; did you mean `magicRollback`?"
        );
        assert_eq!(suggest("xyz", schema::GENERIC.iter().map(|s| s.key)), "");
        assert_eq!(
            suggest("SSHUSER", schema::GENERIC.iter().map(|s| s.key)),
            "; did you mean `sshUser`?"
        );
        assert_eq!(suggest("x", ["db"]), "");
        assert_eq!(suggest("dc", ["db"]), "; did you mean `db`?");
    }

    #[test]
    fn host_and_user_names_are_single_words() {
        let mut raw = minimal();
        raw["nodes"]["web"]["hostname"] = json!("-oProxyCommand=x");
        assert_eq!(
            one_issue(raw),
            "deploy.nodes.web.hostname: expected a host name or address (DNS name, IPv4, or IPv6 with an optional \
             %zone), found `-oProxyCommand=x`, which starts with `-` (ssh would read it as an option)"
        );
        let mut raw = minimal();
        raw["nodes"]["web"]["hostname"] = json!("web example");
        assert!(one_issue(raw).ends_with("which contains whitespace or a control character"));
        let mut raw = minimal();
        raw["sshUser"] = json!("root@web");
        let e = one_issue(raw);
        assert!(e.starts_with("deploy.sshUser: expected a user name"), "{e}");
        assert!(e.ends_with("which contains `@` (the host goes in `hostname`)"), "{e}");
        let mut raw = minimal();
        raw["user"] = json!("-x");
        let e = one_issue(raw);
        assert!(
            e.starts_with("deploy.user: expected a user name") && e.contains("found `-x`"),
            "{e}"
        );
        let mut raw = minimal();
        raw["nodes"]["web"]["hostname"] = json!("fe80::1%eth0");
        assert!(parse(raw).is_ok());
    }

    #[test]
    fn raw_json_given_to_parse_deploy_is_an_internal_error() {
        let e = parse_deploy(&minimal(), "").unwrap_err().to_string();
        assert!(
            e.starts_with("deploy: evaluation output has an unexpected shape"),
            "{e}"
        );
    }

    #[test]
    fn structured_values_parse_with_field_checks() {
        const FIELDS: &[Field] = &[
            Field {
                key: "url",
                kind: FieldKind::Str,
                required: true,
            },
            Field {
                key: "timeout",
                kind: FieldKind::Int,
                required: false,
            },
        ];
        let kind = Kind::Objects(FIELDS);
        let mut cx = Cx::default();
        let v = json!([{ "$type": "set", "attrs": { "url": "http://x/health", "timeout": 5 } }]);
        let mut expected = Object::new();
        expected.insert("url".into(), json!("http://x/health"));
        expected.insert("timeout".into(), json!(5));
        assert_eq!(
            cx.value(&kind, &v, "deploy.healthChecks"),
            Some(Parsed::Objects(vec![expected]))
        );
        assert!(cx.issues.is_empty());
        let v = json!([{ "$type": "set", "attrs": { "timout": 5 } }, 3, { "$type": "set", "attrs": { "url": true } }]);
        assert_eq!(cx.value(&kind, &v, "deploy.healthChecks"), None);
        let got: Vec<String> = cx.issues.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            vec![
                "deploy.healthChecks[0].url: missing; every entry needs `url`",
                "deploy.healthChecks[0].timout: unknown field; did you mean `timeout`?; fields: url, timeout",
                "deploy.healthChecks[1]: expected an attribute set, found an integer",
                "deploy.healthChecks[2].url: expected a string, found a boolean",
            ]
        );
        let mut cx = Cx::default();
        assert_eq!(cx.value(&kind, &json!({ "$type": "set" }), "deploy.h"), None);
        assert_eq!(
            cx.issues[0].to_string(),
            "deploy.h: expected a list of attribute sets, found an attribute set"
        );
    }

    #[test]
    fn every_generic_setting_parses_at_every_level_through_the_table() {
        // One value of the right type per row, at each level: stored and read back unchanged.
        for row in schema::GENERIC {
            let (raw, parsed) = match row.kind {
                Kind::Bool => (json!(false), Parsed::Bool(false)),
                Kind::Seconds => (json!(9), Parsed::Seconds(9)),
                Kind::Str(_) if row.key == "tempPath" => (json!("/t"), Parsed::Str("/t".into())),
                Kind::Str(_) => (json!("doas"), Parsed::Str("doas".into())),
                Kind::List(_) => (json!(["-v"]), Parsed::List(vec!["-v".into()])),
                Kind::Objects(_) => continue,
            };
            let mut top = minimal();
            top[row.key] = raw.clone();
            top["nodes"]["web"][row.key] = raw.clone();
            top["nodes"]["web"]["profiles"]["system"][row.key] = raw;
            let c = parse(top).unwrap_or_else(|e| panic!("{}: {e}", row.key));
            assert_eq!(c.settings.get(row.key), Some(parsed.clone()), "{}", row.key);
            assert_eq!(
                c.nodes["web"].settings.get(row.key),
                Some(parsed.clone()),
                "{}",
                row.key
            );
            let p = &c.nodes["web"].profiles["system"].settings;
            assert_eq!(p.get(row.key), Some(parsed), "{}", row.key);
        }
    }
}
