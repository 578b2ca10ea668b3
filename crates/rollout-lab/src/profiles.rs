//! Test profiles: flakes (and a non-flake `default.nix`) with a `deploy` output whose profiles are small
//! derivations built with `/bin/sh` only (no nixpkgs): markers, failing, hanging, self-cutting, large and
//! deploy-rs-style profiles, plus helpers to read the markers their activations leave on a host.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Map, Value};

use crate::error::{io_err, LabError, Result};
use crate::fleet::Fleet;

/// Directory (inside each host, so in the host's private `/tmp`) where marker activations append lines.
pub const MARKER_DIR: &str = "/tmp/rollout-markers";

/// What a profile's activation does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileKind {
    /// Appends a marker line (after the optional sleep) and succeeds.
    Marker,
    /// Appends a marker line, then exits 1.
    Failing,
    /// Appends a marker line, then sleeps for an hour.
    Hanging,
    /// Appends a marker line, kills its host's sshd (and in netns mode sets the link down), exits 0.
    CutOff,
    /// A marker profile whose closure carries `mib` MiB of data (in up to 4 dependency paths).
    Large { mib: u32 },
    /// Laid out like deploy-rs's `activate.custom`: `deploy-rs-activate` echoes on dry/boot, else activates.
    DeployRsStyle,
}

impl ProfileKind {
    fn tag(&self) -> &'static str {
        match self {
            ProfileKind::Marker => "marker",
            ProfileKind::Failing => "failing",
            ProfileKind::Hanging => "hanging",
            ProfileKind::CutOff => "cut-off",
            ProfileKind::Large { .. } => "large",
            ProfileKind::DeployRsStyle => "deploy-rs-style",
        }
    }
}

/// A test profile: a derivation whose output has an executable `deploy-rs-activate` and `activate-rs`.
#[derive(Debug, Clone)]
pub struct Profile {
    kind: ProfileKind,
    name: String,
    salt: String,
    sleep: String,
    activate_rs: String,
    settings: Map<String, Value>,
    /// Extra store paths in the closure, named `<name>-<version>` (for closure diffs).
    packages: Vec<(String, String)>,
    /// The activation fails (after its marker) while this file exists on the target.
    fail_when: String,
}

fn check_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty()
        || name.len() > 100
        || name.starts_with('.')
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(format!(
            "marker name {name:?} must be 1-100 chars of [A-Za-z0-9._-], not starting with '.'"
        ));
    }
    Ok(())
}

impl Profile {
    fn new(kind: ProfileKind, name: &str) -> Profile {
        Profile {
            kind,
            name: name.to_string(),
            salt: String::new(),
            sleep: "0".into(),
            activate_rs: String::new(),
            settings: Map::new(),
            packages: Vec::new(),
            fail_when: String::new(),
        }
    }
    /// Appends `profile=… user=… dry=… boot=… out=… start=… end=…` to `/tmp/rollout-markers/<name>.log`.
    pub fn marker(name: &str) -> Profile {
        Profile::new(ProfileKind::Marker, name)
    }
    /// Writes the marker, then exits 1.
    pub fn failing(name: &str) -> Profile {
        Profile::new(ProfileKind::Failing, name)
    }
    /// Writes the marker, then sleeps 3600 s.
    pub fn hanging(name: &str) -> Profile {
        Profile::new(ProfileKind::Hanging, name)
    }
    /// Writes the marker, kills its own host's sshd (pid from `/nix/var/rollout-lab/sshd.pid`) and in netns
    /// mode sets the host's link down; exits 0.
    pub fn cut_off(name: &str) -> Profile {
        Profile::new(ProfileKind::CutOff, name)
    }
    /// A marker profile with `mib` MiB of random data in its closure (1 MiB files in up to 4 store paths).
    pub fn large(name: &str, mib: u32) -> Profile {
        Profile::new(ProfileKind::Large { mib }, name)
    }
    /// deploy-rs `activate.custom` layout: `deploy-rs-activate` (`set -eu`; dry → echo, boot → echo, else
    /// run `bin/activate`, a marker) and `activate-rs`.
    pub fn deploy_rs_style(name: &str) -> Profile {
        Profile::new(ProfileKind::DeployRsStyle, name)
    }
    /// Salt: any string; different salts give different store paths.
    pub fn salt(mut self, salt: impl Into<String>) -> Profile {
        self.salt = salt.into();
        self
    }
    /// Sleep this long (seconds) in the activation before writing the marker (failing: before exiting).
    pub fn sleep(mut self, secs: f64) -> Profile {
        self.sleep = format!("{}", secs.max(0.0));
        self
    }
    /// Make `activate-rs` `exec` this program (e.g. an agent's store path); by default it fails with a message.
    pub fn activate_rs_exec(mut self, program: impl Into<String>) -> Profile {
        self.activate_rs = program.into();
        self
    }
    /// Put packages `name-version` into the closure (each a small store path of its own, the
    /// same for the same name and version in any profile).
    pub fn packages(mut self, packages: &[(&str, &str)]) -> Profile {
        self.packages = packages.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        self
    }
    /// Make the activation fail (after writing its marker) whenever `path` exists on the target.
    pub fn fail_when(mut self, path: impl Into<String>) -> Profile {
        self.fail_when = path.into();
        self
    }
    /// A profile-level setting (raw JSON), e.g. `("user", json!("hello"))`, `("profilePath", …)`.
    pub fn setting(mut self, key: &str, value: Value) -> Profile {
        self.settings.insert(key.to_string(), value);
        self
    }
    /// The marker name (file `/tmp/rollout-markers/<name>.log` on the target).
    pub fn marker_name(&self) -> &str {
        &self.name
    }
    /// The kind.
    pub fn kind(&self) -> &ProfileKind {
        &self.kind
    }
}

/// A node of the generated flake.
#[derive(Debug, Clone)]
pub struct NodeBuilder {
    name: String,
    hostname: String,
    settings: Map<String, Value>,
    profiles: Vec<(String, Profile)>,
}

impl NodeBuilder {
    /// A node-level setting (raw JSON).
    pub fn setting(&mut self, key: &str, value: Value) -> &mut Self {
        self.settings.insert(key.to_string(), value);
        self
    }
    /// Set `tags` (a list of strings) on the node.
    pub fn tags(&mut self, tags: &[&str]) -> &mut Self {
        self.setting(
            "tags",
            Value::from(tags.iter().map(|t| Value::from(*t)).collect::<Vec<_>>()),
        )
    }
    /// Set `profilesOrder`.
    pub fn profiles_order(&mut self, order: &[&str]) -> &mut Self {
        self.setting(
            "profilesOrder",
            Value::from(order.iter().map(|t| Value::from(*t)).collect::<Vec<_>>()),
        )
    }
    /// Add (or replace) a profile.
    pub fn profile(&mut self, name: &str, profile: Profile) -> &mut Self {
        self.profiles.retain(|(n, _)| n != name);
        self.profiles.push((name.to_string(), profile));
        self
    }
}

/// Writes `DIR/flake.nix` with a deploy-rs-shaped `deploy` output, `packages.<system>."<node>-<profile>"`,
/// and optionally `DIR/default.nix` for non-flake mode.
#[derive(Debug, Clone)]
pub struct FlakeBuilder {
    dir: PathBuf,
    system: String,
    top: Map<String, Value>,
    nodes: Vec<NodeBuilder>,
}

/// The Nix system of this machine (`x86_64-linux`, `aarch64-linux`, …), as flakes need it spelled out.
pub fn detect_system() -> String {
    let arch = match std::env::consts::ARCH {
        "x86" => "i686",
        a => a,
    };
    format!("{arch}-linux")
}

/// A Nix string literal for `s`: the one helper rollout itself uses.
pub use rollout_core::evalexpr::nix_string;

/// A Nix expression for a JSON value.
pub fn json_to_nix(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => {
            let s = n.to_string();
            if s.starts_with('-') {
                format!("({s})")
            } else {
                s
            }
        }
        Value::String(s) => nix_string(s),
        Value::Array(a) => {
            let items: Vec<String> = a.iter().map(json_to_nix).collect();
            format!("[ {} ]", items.join(" "))
        }
        Value::Object(m) => {
            let mut o = String::from("{ ");
            for (k, v) in m {
                let _ = write!(o, "{} = {}; ", nix_string(k), json_to_nix(v));
            }
            o.push('}');
            o
        }
    }
}

const BUILDER: &str = r##"set -eu
PATH=/usr/bin:/bin
mkdir -p "$out"
printf '%s\n' "$salt" > "$out/salt"
if [ "$kind" = data ]; then
  i=0
  while [ "$i" -lt "$sizeMib" ]; do
    head -c 1048576 /dev/urandom > "$out/blob-$i"
    i=$((i + 1))
  done
  exit 0
fi
printf '%s\n' "$kind" > "$out/kind"
for d in $data; do ln -s "$d" "$out/data-${d##*/}"; done
mkdir -p "$out/bin"
{
  echo '#!/bin/sh'
  echo "# rollout-lab test activation ($kind)"
  echo "out=$out"
  echo "name=$markerName"
  echo "kind=$kind"
  echo "sleep_secs=$sleepSecs"
  echo "fail_when='$failWhen'"
  cat <<'EOF'
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
dir=/tmp/rollout-markers
mkdir -p "$dir" 2>/dev/null || true
chmod 1777 "$dir" 2>/dev/null || true
log="$dir/$name.log"
start=$(date +%s.%N)
mark() {
  printf 'profile=%s user=%s dry=%s boot=%s out=%s start=%s end=%s\n' \
    "${PROFILE:-}" "$(id -un)" "${DRY_ACTIVATE:-}" "${BOOT:-}" "$out" "$start" "$(date +%s.%N)" >> "$log"
  chmod 0666 "$log" 2>/dev/null || true
}
case "$kind" in
  failing)
    [ "$sleep_secs" = 0 ] || sleep "$sleep_secs"
    mark
    echo "rollout-lab: profile $name fails on purpose" >&2
    exit 1 ;;
  hanging)
    mark
    sleep 3600 ;;
  cut-off)
    mark
    kill "$(cat /nix/var/rollout-lab/sshd.pid)" 2>/dev/null || true
    if [ -f /nix/var/rollout-lab/netns-iface ]; then
      ip link set dev "$(cat /nix/var/rollout-lab/netns-iface)" down 2>/dev/null || true
    fi ;;
  *)
    [ "$sleep_secs" = 0 ] || sleep "$sleep_secs"
    mark
    if [ -n "$fail_when" ] && [ -e "$fail_when" ]; then
      echo "rollout-lab: profile $name fails because $fail_when exists" >&2
      exit 1
    fi ;;
esac
exit 0
EOF
} > "$out/bin/activate"
chmod 0555 "$out/bin/activate"
if [ "$kind" = deploy-rs-style ]; then
  {
    echo '#!/bin/sh'
    echo 'set -eu'
    echo ''
    echo 'if [ "${DRY_ACTIVATE:-}" = "1" ]'
    echo 'then'
    echo "    echo $out/bin/activate"
    echo 'elif [ "${BOOT:-}" = "1" ]'
    echo 'then'
    echo "    echo $out/bin/activate"
    echo 'else'
    echo "    $out/bin/activate"
    echo 'fi'
  } > "$out/deploy-rs-activate"
else
  printf '#!/bin/sh\nexec %s/bin/activate "$@"\n' "$out" > "$out/deploy-rs-activate"
fi
chmod 0555 "$out/deploy-rs-activate"
if [ -n "$activateRs" ]; then
  printf '#!/bin/sh\nexec %s "$@"\n' "$activateRs" > "$out/activate-rs"
else
  printf '#!/bin/sh\necho "activate-rs: rollout-lab test profile without an activate program (see Profile::activate_rs_exec)" >&2\nexit 1\n' > "$out/activate-rs"
fi
chmod 0555 "$out/activate-rs"
"##;

impl FlakeBuilder {
    /// A builder writing into `dir` (created if missing), for this machine's system.
    pub fn new(dir: impl Into<PathBuf>) -> FlakeBuilder {
        FlakeBuilder {
            dir: dir.into(),
            system: detect_system(),
            top: Map::new(),
            nodes: Vec::new(),
        }
    }
    /// Override the Nix system (default: [`detect_system`]).
    pub fn system(&mut self, system: &str) -> &mut Self {
        self.system = system.to_string();
        self
    }
    /// A top-level setting of `deploy` (raw JSON), e.g. `("sshUser", json!("deploy"))`.
    pub fn top_setting(&mut self, key: &str, value: Value) -> &mut Self {
        self.top.insert(key.to_string(), value);
        self
    }
    /// Add (or get) node `name` with `hostname`.
    pub fn node(&mut self, name: &str, hostname: &str) -> &mut NodeBuilder {
        let pos = match self.nodes.iter().position(|n| n.name == name) {
            Some(p) => {
                self.nodes[p].hostname = hostname.to_string();
                p
            }
            None => {
                self.nodes.push(NodeBuilder {
                    name: name.to_string(),
                    hostname: hostname.to_string(),
                    settings: Map::new(),
                    profiles: Vec::new(),
                });
                self.nodes.len() - 1
            }
        };
        &mut self.nodes[pos]
    }
    /// The directory of the flake.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// Flake reference of the directory (`path:DIR`, so no git is needed).
    pub fn flake_ref(&self) -> String {
        format!("path:{}", self.dir.display())
    }
    /// Attribute path of a profile's store path inside the flake outputs (and in `default.nix`).
    pub fn profile_attr(node: &str, profile: &str) -> String {
        format!(
            "deploy.nodes.{}.profiles.{}.path",
            nix_string(node),
            nix_string(profile)
        )
    }
    /// Same as [`FlakeBuilder::profile_attr`]: the Nix attribute path of a profile's store path.
    pub fn profile_path_expr(node: &str, profile: &str) -> String {
        FlakeBuilder::profile_attr(node, profile)
    }
    /// Installable for `nix build`: `path:DIR#deploy.nodes."n".profiles."p".path`.
    pub fn profile_installable(&self, node: &str, profile: &str) -> String {
        format!("{}#{}", self.flake_ref(), FlakeBuilder::profile_attr(node, profile))
    }

    fn render(&self) -> Result<String> {
        let mut lets = String::new();
        let mut pkgs = String::new();
        let mut deploy = String::from("{ ");
        for (k, v) in &self.top {
            if k == "nodes" {
                return Err(LabError::Invalid(
                    "top-level setting `nodes` is generated; use node()".into(),
                ));
            }
            let _ = write!(deploy, "{} = {}; ", nix_string(k), json_to_nix(v));
        }
        deploy.push_str("nodes = { ");
        let mut idx = 0usize;
        for n in &self.nodes {
            let _ = write!(
                deploy,
                "{} = {{ hostname = {}; ",
                nix_string(&n.name),
                nix_string(&n.hostname)
            );
            for (k, v) in &n.settings {
                if k == "hostname" || k == "profiles" {
                    return Err(LabError::Invalid(format!(
                        "node {}: setting `{k}` is generated",
                        n.name
                    )));
                }
                let _ = write!(deploy, "{} = {}; ", nix_string(k), json_to_nix(v));
            }
            deploy.push_str("profiles = { ");
            for (pname, p) in &n.profiles {
                check_name(&p.name).map_err(|e| LabError::Invalid(format!("node {} profile {pname}: {e}", n.name)))?;
                let var = format!("p{idx}");
                idx += 1;
                let mut data = Vec::new();
                for (k, (pname_, version)) in p.packages.iter().enumerate() {
                    let dvar = format!("{var}k{k}");
                    check_name(pname_).map_err(|e| LabError::Invalid(format!("package {pname_}: {e}")))?;
                    let _ = writeln!(
                        lets,
                        "      {dvar} = mk {{ name = {}; kind = \"data\"; sizeMib = \"0\"; salt = \"package\"; }};",
                        nix_string(&format!("{pname_}-{version}")),
                    );
                    data.push(dvar);
                }
                if let ProfileKind::Large { mib } = p.kind {
                    let parts = mib.min(4);
                    for k in 0..parts {
                        let size = mib / parts + u32::from(k < mib % parts);
                        let dvar = format!("{var}d{k}");
                        let _ = writeln!(
                            lets,
                            "      {dvar} = mk {{ name = {}; kind = \"data\"; sizeMib = \"{size}\"; salt = {}; }};",
                            nix_string(&format!("lab-data-{}-{k}", p.name)),
                            nix_string(&p.salt)
                        );
                        data.push(dvar);
                    }
                }
                let _ = writeln!(
                    lets,
                    "      {var} = mk {{ name = {}; kind = {}; markerName = {}; salt = {}; sleepSecs = {}; activateRs = {}; failWhen = {}; data = [ {} ]; }};",
                    nix_string(&format!("lab-{}-{}", p.kind.tag(), p.name)),
                    nix_string(p.kind.tag()),
                    nix_string(&p.name),
                    nix_string(&p.salt),
                    nix_string(&p.sleep),
                    nix_string(&p.activate_rs),
                    nix_string(&p.fail_when),
                    data.join(" ")
                );
                let _ = write!(deploy, "{} = {{ path = {var}; ", nix_string(pname));
                for (k, v) in &p.settings {
                    if k == "path" {
                        return Err(LabError::Invalid(format!(
                            "node {} profile {pname}: setting `path` is generated",
                            n.name
                        )));
                    }
                    let _ = write!(deploy, "{} = {}; ", nix_string(k), json_to_nix(v));
                }
                deploy.push_str("}; ");
                let _ = writeln!(pkgs, "        {} = {var};", nix_string(&format!("{}-{pname}", n.name)));
            }
            deploy.push_str("}; }; ");
        }
        deploy.push_str("}; }");
        Ok(format!(
            "# generated by rollout-lab (no nixpkgs: builtins.derivation with /bin/sh)\n{{\n  description = \"rollout-lab test flake\";\n  outputs = {{ self, ... }}:\n    let\n      system = {system};\n      builderScript = {builder};\n      mk = attrs: builtins.derivation ({{ inherit system; builder = \"/bin/sh\"; args = [ \"-c\" builderScript ]; data = [ ]; failWhen = \"\"; }} // attrs);\n{lets}    in\n    {{\n      deploy = {deploy};\n      packages.${{system}} = {{\n{pkgs}      }};\n    }};\n}}\n",
            system = nix_string(&self.system),
            builder = nix_string(BUILDER),
        ))
    }

    /// Write `DIR/flake.nix` (removing a stale `flake.lock`). Returns the path of flake.nix.
    pub fn write(&self) -> Result<PathBuf> {
        fs::create_dir_all(&self.dir).map_err(io_err(&self.dir))?;
        let p = self.dir.join("flake.nix");
        fs::write(&p, self.render()?).map_err(io_err(&p))?;
        let _ = fs::remove_file(self.dir.join("flake.lock"));
        Ok(p)
    }

    /// Write `DIR/default.nix` exposing the same `deploy` output for non-flake mode. Returns its path.
    pub fn write_default_nix(&self) -> Result<PathBuf> {
        fs::create_dir_all(&self.dir).map_err(io_err(&self.dir))?;
        let p = self.dir.join("default.nix");
        fs::write(
            &p,
            "# generated by rollout-lab: the flake's outputs for non-flake evaluation\nlet\n  flake = import ./flake.nix;\n  self = flake.outputs { inherit self; };\nin\nself\n",
        )
        .map_err(io_err(&p))?;
        Ok(p)
    }

    /// `nix build` a profile (flake mode) and return its store path.
    pub fn build(&self, node: &str, profile: &str) -> Result<PathBuf> {
        let inst = self.profile_installable(node, profile);
        let out = crate::setup::run(
            Command::new("nix")
                .args([
                    "--extra-experimental-features",
                    "nix-command flakes",
                    "build",
                    "--no-link",
                    "--json",
                ])
                .arg(&inst),
        )?;
        // nix 2.8 has no --print-out-paths: [{"drvPath": …, "outputs": {"out": "/nix/store/…"}}]
        let s = String::from_utf8_lossy(&out.stdout);
        let v: Value = serde_json::from_str(&s).unwrap_or(Value::Null);
        let path = v
            .get(0)
            .and_then(|o| o.get("outputs"))
            .and_then(|o| o.get("out"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if !path.starts_with("/nix/store/") {
            return Err(LabError::Parse {
                what: format!("nix build --json {inst}"),
                line: s.into_owned(),
                expected: "[{\"outputs\": {\"out\": \"/nix/store/…\"}}]".into(),
            });
        }
        Ok(PathBuf::from(path))
    }
}

/// One line appended by a marker activation.
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    /// `$PROFILE` as seen by the activation.
    pub profile: String,
    /// `id -un` of the activation.
    pub user: String,
    /// `$DRY_ACTIVATE` (empty when unset).
    pub dry: String,
    /// `$BOOT` (empty when unset).
    pub boot: String,
    /// Store path of the profile whose activation wrote the line.
    pub out: String,
    /// Unix time (s, ns resolution) when the activation started.
    pub start: f64,
    /// Unix time when the line was written.
    pub end: f64,
    /// The raw line.
    pub line: String,
}

impl Marker {
    /// Whether the activation ran as a dry activation (`DRY_ACTIVATE=1`).
    pub fn is_dry(&self) -> bool {
        self.dry == "1"
    }
    /// Whether it ran with `BOOT=1`.
    pub fn is_boot(&self) -> bool {
        self.boot == "1"
    }
}

/// Parse `profile=… user=… dry=… boot=… out=… start=… end=…`.
pub fn parse_marker_line(line: &str) -> Result<Marker> {
    let err = || LabError::Parse {
        what: "marker line".into(),
        line: line.into(),
        expected: "profile=P user=U dry=D boot=B out=O start=T end=T".into(),
    };
    let mut m = Marker {
        profile: String::new(),
        user: String::new(),
        dry: String::new(),
        boot: String::new(),
        out: String::new(),
        start: 0.0,
        end: 0.0,
        line: line.to_string(),
    };
    let mut seen = 0;
    for field in line.split(' ') {
        let (k, v) = field.split_once('=').ok_or_else(err)?;
        match k {
            "profile" => m.profile = v.into(),
            "user" => m.user = v.into(),
            "dry" => m.dry = v.into(),
            "boot" => m.boot = v.into(),
            "out" => m.out = v.into(),
            "start" => m.start = v.parse().map_err(|_| err())?,
            "end" => m.end = v.parse().map_err(|_| err())?,
            _ => return Err(err()),
        }
        seen += 1;
    }
    if seen != 7 {
        return Err(err());
    }
    Ok(m)
}

/// Read and parse the marker lines of `name` on `host` (via [`Fleet::exec`]); none yet → empty.
pub fn read_markers(fleet: &Fleet, host: &str, name: &str) -> Result<Vec<Marker>> {
    check_name(name).map_err(LabError::Invalid)?;
    let file = format!("{MARKER_DIR}/{name}.log");
    let out = fleet.exec(
        host,
        &["sh", "-c", "if [ -f \"$1\" ]; then cat \"$1\"; fi", "sh", &file],
    )?;
    if !out.status.success() {
        return Err(LabError::Host {
            host: host.into(),
            what: format!("cannot read {file}: {}", String::from_utf8_lossy(&out.stderr).trim()),
        });
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(parse_marker_line)
        .collect()
}

/// Remove the marker file of `name` on `host`.
pub fn clear_markers(fleet: &Fleet, host: &str, name: &str) -> Result<()> {
    check_name(name).map_err(LabError::Invalid)?;
    fleet
        .exec_ok(host, &["rm", "-f", &format!("{MARKER_DIR}/{name}.log")])
        .map(|_| ())
}

/// A salt unique to this call (time + pid + counter), for forcing new store paths per test run.
pub fn fresh_salt(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{t}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nix_strings_escape() {
        assert_eq!(nix_string("a\"b\\c${d}$e\n"), r#""a\"b\\c\${d}\$e\n""#);
    }
    #[test]
    fn json_rendering() {
        assert_eq!(
            json_to_nix(&json!({"a": [1, -2, "x"], "b": null, "c": true})),
            r#"{ "a" = [ 1 (-2) "x" ]; "b" = null; "c" = true; }"#
        );
    }
    #[test]
    fn marker_lines() {
        let m = parse_marker_line(
            "profile=/nix/var/nix/profiles/system user=root dry=0 boot= out=/nix/store/x start=1.5 end=2.25",
        )
        .unwrap();
        assert_eq!(m.user, "root");
        assert!(!m.is_dry());
        assert_eq!(m.end, 2.25);
        assert!(parse_marker_line("garbage").is_err());
    }
    #[test]
    fn render_has_nodes() {
        let mut f = FlakeBuilder::new("/tmp/x");
        f.top_setting("sshUser", json!("deploy"));
        f.node("host1", "host1").tags(&["web"]).profile(
            "system",
            Profile::marker("system").salt("s").setting("user", json!("root")),
        );
        f.node("host2", "host2").profile("big", Profile::large("big", 6));
        let s = f.render().unwrap();
        assert!(s.contains(r#""sshUser" = "deploy";"#));
        assert!(s.contains(r#""system" = { path = p0; "user" = "root"; };"#), "{s}");
        assert!(s.contains("p1d3"));
        assert!(!s.contains("p1d4"));
        let mut bad = FlakeBuilder::new("/tmp/x");
        bad.node("h", "h").profile("p", Profile::marker("bad name"));
        assert!(bad.render().is_err());
    }
}
