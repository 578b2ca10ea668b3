//! Nix expressions that evaluate only the selected part of a `deploy` output, safely.
//!
//! The `--apply` lambda built here returns a JSON-friendly *shadow* of `deploy`:
//!
//! ```text
//! TOP     = { "$type": "set", "attrs": {top-level keys except nodes},
//!             "nodes": NODES | null }                          // null: `nodes` missing
//!         | { "$type": "<typeOf>" }                            // deploy is not an attrset
//! NODES   = { "$type": "set", "names": [all node names],
//!             "selected": { name: NODE } }                     // only selected, existing nodes
//!         | { "$type": "<typeOf>" }
//! NODE    = { "$type": "set", "attrs": {node keys except profiles},
//!             "profiles": PROFILES | null }
//!         | { "$type": "<typeOf>" }
//! PROFILES= { "$type": "set", "names": [all profile names],
//!             "selected": { name: PROFILE } }
//!         | { "$type": "<typeOf>" }
//! PROFILE = { "$type": "set", "attrs": {profile keys; `path` as {"$type": "deferred"}} }
//!         | { "$type": "<typeOf>" }
//! ```
//!
//! Setting values are passed through when they are strings, numbers, booleans or null; a list
//! keeps its scalar elements; a derivation becomes its `outPath`; anything else (function,
//! path, nested set or list) becomes `{"$type": "<typeOf>"}` so that Rust reports the wrong
//! type instead of Nix failing to convert it to JSON.
//!
//! Why this shape: name lists come from `builtins.attrNames`, which never forces the values,
//! so selecting one node does not evaluate (or build) any other node's profiles; a missing node
//! or profile is simply absent from `selected` and [`crate::plan`] reports it with the list of
//! existing names (deploy-rs let Nix fail on a missing attribute instead). The selection itself
//! is embedded as an escaped JSON string read with `builtins.fromJSON`, so no user-supplied
//! name is ever spliced into Nix syntax.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::target::Target;

/// What to evaluate from one flake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every node and every profile.
    All,
    /// These nodes; `None` = all profiles of the node, `Some(set)` = only those profiles.
    Nodes(BTreeMap<String, Option<BTreeSet<String>>>),
}

impl Selection {
    /// The union of what `targets` select (targets of other flakes must be filtered out by
    /// the caller). An empty list selects nothing.
    pub fn from_targets<'a>(targets: impl IntoIterator<Item = &'a Target>) -> Selection {
        let mut sel = Selection::Nodes(BTreeMap::new());
        for t in targets {
            sel.add(t.node.as_deref(), t.profile.as_deref());
        }
        sel
    }

    /// Widens the selection to include `node`/`profile` (`None` = all).
    pub fn add(&mut self, node: Option<&str>, profile: Option<&str>) {
        let Selection::Nodes(nodes) = self else { return };
        let Some(node) = node else {
            *self = Selection::All;
            return;
        };
        match (nodes.get_mut(node), profile) {
            (Some(None), _) => {}
            (Some(Some(set)), Some(p)) => {
                set.insert(p.to_string());
            }
            (Some(entry), None) => *entry = None,
            (None, p) => {
                nodes.insert(node.to_string(), p.map(|p| BTreeSet::from([p.to_string()])));
            }
        }
    }

    /// JSON form embedded in the lambda: `null` for all, else `{node: null | [profiles]}`.
    fn to_json(&self) -> Value {
        match self {
            Selection::All => Value::Null,
            Selection::Nodes(nodes) => Value::Object(
                nodes
                    .iter()
                    .map(|(n, ps)| {
                        let v = match ps {
                            None => Value::Null,
                            Some(ps) => Value::Array(ps.iter().cloned().map(Value::String).collect()),
                        };
                        (n.clone(), v)
                    })
                    .collect::<Map<String, Value>>(),
            ),
        }
    }
}

/// A Nix double-quoted string literal whose value is exactly `s`. `\`, `"` and `$` are escaped
/// (escaping every `$` rules out `${` interpolation), control characters use Nix escapes.
pub fn nix_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '$' => out.push_str("\\$"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The body of the lambda; `SELECTION` is replaced by a `builtins.fromJSON` call.
const LAMBDA: &str = r#"deploy:
let
  sel = SELECTION;
  other = v: { "$type" = builtins.typeOf v; };
  leaf = v:
    if builtins.isAttrs v then (if v ? outPath then leaf v.outPath else other v)
    else if builtins.isFunction v || builtins.isPath v || builtins.isList v then other v
    else v;
  value = v: if builtins.isList v then map leaf v else leaf v;
  # Structured settings (lists of attribute sets, from the settings table): one level of fields,
  # each a value or a list of values (a health check's `command`).
  objects = OBJECTS;
  object = e: if builtins.isAttrs e && !(e ? outPath) then { "$type" = "set"; attrs = builtins.mapAttrs (_: value) e; } else leaf e;
  setting = k: v:
    if builtins.elem k objects && builtins.isList v then map object v
    else if builtins.elem k objects && builtins.isAttrs v && !(v ? outPath)
    then { "$type" = "set"; attrs = builtins.mapAttrs (_: object) v; }
    else value v;
  attrs = skip: s: builtins.mapAttrs setting (builtins.removeAttrs s skip);
  pick = set: wanted: builtins.listToAttrs (map (name: { inherit name; value = set.${name}; })
    (builtins.filter (name: builtins.hasAttr name set) wanted));
  # `path` is only announced here, never forced: forcing it evaluates the whole system, which
  # the per-node evaluations (`paths_lambda`) do in parallel.
  profile = p:
    if builtins.isAttrs p then {
      "$type" = "set";
      attrs = attrs [ "path" ] p // (if p ? path then { path = { "$type" = "deferred"; }; } else { });
    } else other p;
  profiles = ps: wanted:
    if builtins.isAttrs ps then {
      "$type" = "set";
      names = builtins.attrNames ps;
      selected = builtins.mapAttrs (_: profile) (pick ps (if wanted == null then builtins.attrNames ps else wanted));
    } else other ps;
  node = n: wanted:
    if builtins.isAttrs n then {
      "$type" = "set";
      attrs = attrs [ "profiles" ] n;
      profiles = if n ? profiles then profiles n.profiles wanted else null;
    } else other n;
  nodes = ns:
    if builtins.isAttrs ns then {
      "$type" = "set";
      names = builtins.attrNames ns;
      selected = builtins.mapAttrs (name: n: node n (if sel == null then null else sel.${name}))
        (pick ns (if sel == null then builtins.attrNames ns else builtins.attrNames sel));
    } else other ns;
in
  if builtins.isAttrs deploy then {
    "$type" = "set";
    attrs = attrs [ "nodes" ] deploy;
    nodes = if deploy ? nodes then nodes deploy.nodes else null;
  } else other deploy
"#;

/// The `--apply` lambda for `nix eval --json FLAKE#deploy --apply <lambda>`; the structured
/// settings come from the settings table.
pub fn apply_lambda(selection: &Selection) -> String {
    apply_lambda_for(selection, &crate::schema::object_keys())
}

/// [`apply_lambda`] with an explicit list of structured setting keys (tests use their own).
pub fn apply_lambda_for(selection: &Selection, objects: &[&str]) -> String {
    let json = selection.to_json().to_string();
    let sel = format!("builtins.fromJSON {}", nix_string(&json));
    let objects = format!(
        "builtins.fromJSON {}",
        nix_string(&serde_json::json!(objects).to_string())
    );
    LAMBDA.replacen("SELECTION", &sel, 1).replacen("OBJECTS", &objects, 1)
}

/// One node of a per-node evaluation: the node and the profiles whose `path` to force.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodePaths {
    pub node: String,
    pub profiles: Vec<String>,
}

/// The `--apply` lambda that forces the `path` of the given nodes' profiles, one node after the
/// other, and announces each node on stderr as soon as it is evaluated: a `builtins.trace` line
/// `<tag> {"node": …, "paths": {profile: {"path": …, "drv": …}}}`. The evaluation itself returns
/// the number of nodes. This is how one evaluator process streams its nodes: the deployer
/// starts each node's build and copy while the same process evaluates the next node. `drv` is
/// the derivation (built by its store path, without evaluating again); a Nix path is copied to
/// the store; anything else but a string is `{"$type": "<typeOf>"}` for Rust to report.
pub fn paths_lambda(tag: &str, nodes: &[NodePaths]) -> String {
    let chunk = serde_json::to_string(nodes).unwrap_or_else(|_| "[]".into());
    PATHS_LAMBDA.replacen("TAG", &nix_string(tag), 1).replacen(
        "CHUNK",
        &format!("builtins.fromJSON {}", nix_string(&chunk)),
        1,
    )
}

const PATHS_LAMBDA: &str = r#"deploy:
let
  tag = TAG;
  chunk = CHUNK;
  one = v:
    if builtins.isPath v then { path = "${v}"; }
    else if builtins.isAttrs v && v ? outPath then { path = "${v.outPath}"; drv = v.drvPath or null; }
    else if builtins.isString v then { path = v; }
    else { path = { "$type" = builtins.typeOf v; }; };
  node = e: builtins.toJSON {
    inherit (e) node;
    paths = builtins.listToAttrs
      (map (p: { name = p; value = one deploy.nodes.${e.node}.profiles.${p}.path; }) e.profiles);
  };
in
  builtins.foldl' (n: e: builtins.seq (builtins.trace "${tag} ${node e}" null) (n + 1)) 0 chunk
"#;

/// Expression for `nix-instantiate --eval --strict --json -E` in non-flake mode: imports
/// `file` (a file or a directory with `default.nix`), calls it with `{}` if it is a function,
/// and applies `apply_lambda` to its `deploy` attribute.
pub fn non_flake_expr(file: &str, apply_lambda: &str) -> String {
    format!(
        "let r = import {}; d = (if builtins.isFunction r then r {{ }} else r).deploy; in ({}) d",
        nix_path_expr(file),
        apply_lambda.trim_end()
    )
}

/// A Nix expression for the path `file`, built from a string literal so that no character in
/// the name is Nix syntax. Relative paths resolve against the working directory of the Nix
/// process (`./.` in an `-E` expression), `~/` against `$HOME`.
pub fn nix_path_expr(file: &str) -> String {
    if file.starts_with('/') {
        format!("(/. + {})", nix_string(file))
    } else if let Some(rest) = file.strip_prefix("~/") {
        format!("(/. + builtins.getEnv \"HOME\" + {})", nix_string(&format!("/{rest}")))
    } else {
        format!("(./. + {})", nix_string(&format!("/{file}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(entries: &[(&str, Option<&[&str]>)]) -> Selection {
        Selection::Nodes(
            entries
                .iter()
                .map(|(n, ps)| (n.to_string(), ps.map(|ps| ps.iter().map(|p| p.to_string()).collect())))
                .collect(),
        )
    }

    #[test]
    fn nix_string_escapes() {
        assert_eq!(nix_string("plain"), r#""plain""#);
        assert_eq!(nix_string(r#"a"b"#), r#""a\"b""#);
        assert_eq!(nix_string(r"a\b"), r#""a\\b""#);
        assert_eq!(nix_string("${x}"), r#""\${x}""#);
        assert_eq!(nix_string("$${x}"), r#""\$\${x}""#);
        assert_eq!(nix_string("a\nb\tc\r"), r#""a\nb\tc\r""#);
        assert_eq!(nix_string(r#"\${"#), r#""\\\${""#);
    }

    #[test]
    fn selection_from_targets() {
        let t = |n: Option<&str>, p: Option<&str>| Target {
            flake: ".".into(),
            node: n.map(Into::into),
            profile: p.map(Into::into),
        };
        let ts = [
            t(Some("a"), Some("x")),
            t(Some("a"), Some("y")),
            t(Some("b"), None),
            t(Some("b"), Some("z")),
        ];
        assert_eq!(
            Selection::from_targets(&ts),
            nodes(&[("a", Some(&["x", "y"])), ("b", None)])
        );
        let ts = [t(Some("a"), Some("x")), t(Some("a"), None)];
        assert_eq!(Selection::from_targets(&ts), nodes(&[("a", None)]));
        let ts = [t(Some("a"), Some("x")), t(None, None), t(Some("b"), None)];
        assert_eq!(Selection::from_targets(&ts), Selection::All);
        assert_eq!(Selection::from_targets(&[]), nodes(&[]));
    }

    #[test]
    fn lambda_embeds_selection_as_escaped_json() {
        let l = apply_lambda(&Selection::All);
        assert!(l.starts_with("deploy:\n"));
        assert!(l.contains("sel = builtins.fromJSON \"null\";"));
        let l = apply_lambda(&nodes(&[("web", None), ("a\"b${x}\\", Some(&["p"]))]));
        assert!(
            l.contains(r#"sel = builtins.fromJSON "{\"a\\\"b\${x}\\\\\":[\"p\"],\"web\":null}";"#),
            "{l}"
        );
        assert!(!l.contains("SELECTION") && !l.contains("OBJECTS"));
        assert!(
            apply_lambda_for(&Selection::All, &["checks"]).contains(r#"objects = builtins.fromJSON "[\"checks\"]";"#)
        );
    }

    #[test]
    fn non_flake_expression() {
        let e = non_flake_expr("./dir", "d: d");
        assert_eq!(
            e,
            "let r = import (./. + \"/./dir\"); d = (if builtins.isFunction r then r { } else r).deploy; in (d: d) d"
        );
        assert!(non_flake_expr("/abs/x\"${y}.nix", "d: d").contains(r#"import (/. + "/abs/x\"\${y}.nix")"#));
        assert_eq!(nix_path_expr("~/fleet"), "(/. + builtins.getEnv \"HOME\" + \"/fleet\")");
        assert_eq!(nix_path_expr("."), "(./. + \"/.\")");
    }
}
