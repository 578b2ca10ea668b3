//! The JSON Schema (draft 2020-12) of a flake's `deploy` output, generated from the settings table
//! ([`crate::schema`]) so that editors, `check-jsonschema` and CI see the same keys, types,
//! defaults and descriptions as rollout's own parser and `docs/settings.md`.

use serde_json::{json, Map, Value};

use crate::schema::{self, DefaultValue, FieldKind, Kind, Level, Setting};

/// The `$schema` of every document this module produces.
pub const DRAFT: &str = "https://json-schema.org/draft/2020-12/schema";

/// Keys that hold the next level down rather than a setting: described by the level's schema.
const STRUCTURE: &[&str] = &["nodes", "profiles"];

/// Keys some level requires (never `null`).
const REQUIRED: &[&str] = &["nodes", "hostname", "profiles", "path"];

/// How keys that are not settings are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtraKeys {
    /// Allowed, as deploy-rs's `interface.json` allows them (flakes carry metadata for other tools).
    Allowed,
    /// Refused (`additionalProperties: false`), to catch a misspelled setting.
    Refused,
}

fn field_schema(kind: FieldKind) -> Value {
    match kind {
        FieldKind::Bool => json!({ "type": "boolean" }),
        FieldKind::Int => json!({ "type": "integer" }),
        FieldKind::Str => json!({ "type": "string" }),
        FieldKind::List => json!({ "type": "array", "items": { "type": "string" } }),
    }
}

/// The type part of one setting's schema.
fn kind_schema(kind: &Kind) -> Value {
    match kind {
        Kind::Bool => json!({ "type": "boolean" }),
        Kind::Seconds => json!({ "type": "integer", "minimum": 1, "maximum": 86400 }),
        Kind::Str(_) => json!({ "type": "string" }),
        Kind::List(_) => json!({ "type": "array", "items": { "type": "string" } }),
        Kind::Objects(fields) => {
            let props: Map<String, Value> = fields
                .iter()
                .map(|f| (f.key.to_string(), field_schema(f.kind)))
                .collect();
            let required: Vec<&str> = fields.iter().filter(|f| f.required).map(|f| f.key).collect();
            json!({
                "type": "array",
                "items": { "type": "object", "properties": props, "required": required },
            })
        }
    }
}

/// One setting: its type, `default` where it is a constant, and its description (which also
/// says how a computed default is found).
fn setting_schema(s: &Setting) -> Value {
    let mut v = kind_schema(&s.kind);
    // `null` reads as unset, as in deploy-rs (generated configs write `sshUser = cfg.user or null`);
    // the keys a level requires must have a value.
    if !REQUIRED.contains(&s.key) {
        let t = v["type"].clone();
        v["type"] = json!([t, "null"]);
    }
    let mut description = s.doc.to_string();
    let default = match s.default {
        DefaultValue::None => None,
        DefaultValue::Bool(b) => Some(json!(b)),
        DefaultValue::Seconds(n) => Some(json!(n)),
        DefaultValue::Str(t) => Some(json!(t)),
        DefaultValue::Computed(how) => {
            description.push_str(&format!(" Default: {how}."));
            None
        }
    };
    if let Some(flag) = s.flag {
        description.push_str(&format!(" Overridden everywhere by {flag}."));
    }
    let o = v.as_object_mut().expect("kind_schema returns an object");
    o.insert("description".into(), json!(description));
    if let Some(d) = default {
        o.insert("default".into(), d);
    }
    v
}

/// The object schema of one level: every setting allowed there, the level's structure key, and
/// what is required.
fn level_schema(level: Level, extra: ExtraKeys, description: &str) -> Value {
    let mut props = Map::new();
    for s in schema::all().filter(|s| s.levels.has(level)) {
        let v = match s.key {
            "nodes" => json!({
                "type": "object",
                "description": s.doc,
                "additionalProperties": { "$ref": "#/$defs/node" },
            }),
            "profiles" => json!({
                "type": "object",
                "description": s.doc,
                "additionalProperties": { "$ref": "#/$defs/profile" },
            }),
            _ => setting_schema(s),
        };
        props.insert(s.key.to_string(), v);
    }
    let required: &[&str] = match level {
        Level::Top => &["nodes"],
        Level::Node => &["hostname", "profiles"],
        Level::Profile => &["path"],
    };
    json!({
        "type": "object",
        "description": description,
        "properties": props,
        "required": required,
        "additionalProperties": extra == ExtraKeys::Allowed,
    })
}

/// The whole schema: the top level inline, nodes and profiles under `$defs`.
pub fn deploy_schema(extra: ExtraKeys) -> Value {
    let mut top = level_schema(
        Level::Top,
        extra,
        "The `deploy` output of a flake, as rollout (and deploy-rs) read it. A profile's setting wins over \
         its node's, the node's over the top level's; a command-line flag wins over all of them.",
    );
    let o = top.as_object_mut().expect("level_schema returns an object");
    let mut head = Map::new();
    head.insert("$schema".into(), json!(DRAFT));
    head.insert("title".into(), json!("deploy"));
    head.append(o);
    head.insert(
        "$defs".into(),
        json!({
            "node": level_schema(Level::Node, extra, "One machine: where to connect and the profiles to deploy there."),
            "profile": level_schema(Level::Profile, extra, "One Nix profile on a node and the closure to activate."),
        }),
    );
    Value::Object(head)
}

/// Settings keys the schema describes at `level` (structure keys excluded), for tests.
pub fn described_settings(level: Level) -> Vec<&'static str> {
    schema::keys_at(level)
        .into_iter()
        .filter(|k| !STRUCTURE.contains(k))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props<'a>(v: &'a Value, pointer: &str) -> &'a Map<String, Value> {
        v.pointer(pointer).and_then(Value::as_object).unwrap()
    }

    #[test]
    fn every_setting_has_type_description_and_its_default_at_every_level_it_is_allowed() {
        let v = deploy_schema(ExtraKeys::Allowed);
        assert_eq!(v["$schema"], DRAFT);
        for (level, ptr) in [
            (Level::Top, "/properties"),
            (Level::Node, "/$defs/node/properties"),
            (Level::Profile, "/$defs/profile/properties"),
        ] {
            let p = props(&v, ptr);
            for key in described_settings(level) {
                let s = &p[key];
                let row = schema::find(key).unwrap();
                let types = &s["type"];
                if REQUIRED.contains(&key) {
                    assert!(types.is_string(), "{key}: {s}");
                } else {
                    assert!(types.is_array() && types[1] == "null", "{key}: {s}");
                }
                assert!(s["description"].as_str().unwrap().starts_with(row.doc), "{key}");
                match row.default {
                    DefaultValue::Bool(_) | DefaultValue::Seconds(_) | DefaultValue::Str(_) => {
                        assert!(!s["default"].is_null(), "{key} has no default")
                    }
                    DefaultValue::Computed(how) => assert!(s["description"].as_str().unwrap().contains(how)),
                    DefaultValue::None => {}
                }
            }
            assert_eq!(p.len(), schema::keys_at(level).len(), "{ptr}");
        }
        assert_eq!(v["properties"]["confirmTimeout"]["default"], 30);
        assert_eq!(v["properties"]["sudo"]["default"], "sudo -u");
        assert_eq!(v["$defs"]["node"]["required"], json!(["hostname", "profiles"]));
    }

    #[test]
    fn extra_keys_are_allowed_unless_refused() {
        let lenient = deploy_schema(ExtraKeys::Allowed);
        let strict = deploy_schema(ExtraKeys::Refused);
        for ptr in [
            "/additionalProperties",
            "/$defs/node/additionalProperties",
            "/$defs/profile/additionalProperties",
        ] {
            assert_eq!(lenient.pointer(ptr), Some(&json!(true)), "{ptr}");
            assert_eq!(strict.pointer(ptr), Some(&json!(false)), "{ptr}");
        }
    }
}
