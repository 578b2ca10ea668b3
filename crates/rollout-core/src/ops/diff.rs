//! Closure diff: what a deploy would change in a profile — packages added, removed and changed
//! (name, old → new version) and the closure size — comparing the closure built here with the
//! one the target runs now (queried over the same connection as everything else).

use super::inspect::Inspection;
use super::Prepared;
use crate::cmd::Argv;
use crate::deploy::build;
use crate::error::Error;
use crate::exec::Runner;
use crate::host::{Host, LocalHost};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// A store path's name split into package name and version, the way nvd and dix read them: the
/// version starts at the first dash-separated word that begins with a digit; words after it that
/// do not (an output or variant such as `man`, `modules`) go back to the name.
pub fn parse_name(path: &str) -> (String, String) {
    let base = path.rsplit('/').next().unwrap_or(path);
    let base = match base.split_once('-') {
        Some((hash, rest)) if hash.len() == 32 && hash.bytes().all(|b| b.is_ascii_alphanumeric()) => rest,
        _ => base,
    };
    let words: Vec<&str> = base.split('-').collect();
    let starts_with_digit = |w: &str| w.bytes().next().is_some_and(|b| b.is_ascii_digit());
    let Some(first) = (1..words.len()).find(|&i| starts_with_digit(words[i])) else {
        return (base.to_string(), String::new());
    };
    let mut name: Vec<&str> = words[..first].to_vec();
    let mut version: Vec<&str> = Vec::new();
    for (i, w) in words.iter().enumerate().skip(first) {
        if starts_with_digit(w) && name.len() == first && (version.len() == i - first) {
            version.push(w);
        } else {
            name.push(w);
        }
    }
    (name.join("-"), version.join("-"))
}

/// One package of a diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Package {
    pub name: String,
    pub version: String,
}

/// A package whose versions differ between the two closures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub name: String,
    pub old: Vec<String>,
    pub new: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClosureDiff {
    pub added: Vec<Package>,
    pub removed: Vec<Package>,
    pub changed: Vec<Change>,
    /// Sum of the NAR sizes of the closure's paths, before and after.
    pub size_before: u64,
    pub size_after: u64,
}

impl ClosureDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

fn by_name(closure: &[(String, u64)]) -> BTreeMap<String, BTreeSet<String>> {
    let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, _) in closure {
        let (name, version) = parse_name(path);
        m.entry(name).or_default().insert(version);
    }
    m
}

/// Compare two closures given as (store path, NAR size).
pub fn closure_diff(old: &[(String, u64)], new: &[(String, u64)]) -> ClosureDiff {
    let (o, n) = (by_name(old), by_name(new));
    let packages = |names: Vec<(&String, &BTreeSet<String>)>| -> Vec<Package> {
        names
            .into_iter()
            .flat_map(|(name, vs)| {
                vs.iter().map(|v| Package {
                    name: name.clone(),
                    version: v.clone(),
                })
            })
            .collect()
    };
    ClosureDiff {
        added: packages(n.iter().filter(|(k, _)| !o.contains_key(*k)).collect()),
        removed: packages(o.iter().filter(|(k, _)| !n.contains_key(*k)).collect()),
        changed: o
            .iter()
            .filter_map(|(k, ov)| {
                let nv = n.get(k)?;
                (ov != nv).then(|| Change {
                    name: k.clone(),
                    old: ov.iter().cloned().collect(),
                    new: nv.iter().cloned().collect(),
                })
            })
            .collect(),
        size_before: old.iter().map(|(_, s)| s).sum(),
        size_after: new.iter().map(|(_, s)| s).sum(),
    }
}

/// The closure of `path` with each path's NAR size, asked through `run` (which turns words into
/// an argv for the machine whose store holds it). Plain `nix-store`, which every Nix has.
pub fn closure_of(runner: &Runner, run: impl Fn(&[String]) -> Argv, path: &str) -> Result<Vec<(String, u64)>, String> {
    let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let reqs = runner
        .checked(
            &run(&words(&["nix-store", "--query", "--requisites", path])),
            "nix-store --query --requisites",
        )
        .map_err(|e| e.to_string())?;
    let paths: Vec<String> = reqs
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    let mut size_words = words(&["nix-store", "--query", "--size"]);
    size_words.extend(paths.iter().cloned());
    let sizes = runner
        .checked(&run(&size_words), "nix-store --query --size")
        .map_err(|e| e.to_string())?;
    let sizes: Vec<u64> = sizes.lines().map(|l| l.trim().parse().unwrap_or(0)).collect();
    Ok(paths
        .into_iter()
        .zip(sizes.into_iter().chain(std::iter::repeat(0)))
        .collect())
}

/// One profile's diff, as `rollout diff` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DiffRow {
    pub node: String,
    pub profile: String,
    pub host: String,
    /// `new-profile`, `unchanged`, `changed`, or `unknown` (with `error`).
    pub state: &'static str,
    #[serde(flatten)]
    pub diff: Option<ClosureDiff>,
    pub error: Option<String>,
}

/// Build the plan's closures here (as a deploy would), then diff each against what its target
/// runs now, over the inspection's connections.
pub fn diff_rows(prepared: &Prepared, inspection: &Inspection, runner: &Runner) -> Result<Vec<DiffRow>, Error> {
    let plan = &prepared.plan;
    let local: Vec<_> = plan.deployments.iter().filter(|d| !d.settings.remote_build).collect();
    build::build_local(
        runner,
        &prepared.ctx,
        prepared.mode,
        &build::Batcher::default(),
        &local,
        None,
    )
    .map_err(|e| Error::Run(e.into()))?;
    let here = LocalHost::new();
    let mut rows = Vec::new();
    for (d, v) in plan.deployments.iter().zip(&inspection.views) {
        let row = |state, diff, error| DiffRow {
            node: d.node.clone(),
            profile: d.profile.clone(),
            host: v.host.clone(),
            state,
            diff,
            error,
        };
        let report = match &v.report {
            Ok(r) => r,
            Err(e) => {
                rows.push(row("unknown", None, Some(e.clone())));
                continue;
            }
        };
        if d.settings.remote_build {
            let why = "built on the target (remoteBuild): its closure is known only after deploying";
            rows.push(row("unknown", None, Some(why.into())));
            continue;
        }
        let new = match closure_of(runner, |w| here.run(w), &d.closure) {
            Ok(c) => c,
            Err(e) => {
                rows.push(row("unknown", None, Some(e)));
                continue;
            }
        };
        let Some(current) = report.current_generation() else {
            rows.push(row("new-profile", Some(closure_diff(&[], &new)), None));
            continue;
        };
        let current = current.path.display().to_string();
        if current == d.closure {
            rows.push(row("unchanged", Some(ClosureDiff::default()), None));
            continue;
        }
        let Some(host) = inspection.host(&d.node, &d.endpoint) else {
            rows.push(row("unknown", None, Some("the host's connection is gone".into())));
            continue;
        };
        match closure_of(runner, |w| host.run(w), &current) {
            Ok(old) => rows.push(row("changed", Some(closure_diff(&old, &new)), None)),
            Err(e) => rows.push(row("unknown", None, Some(e))),
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_names_split_into_name_and_version_like_nvd() {
        let h = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-";
        let rows = [
            ("python3-3.12.4", "python3", "3.12.4"),
            ("linux-6.6.30-modules", "linux-modules", "6.6.30"),
            ("firefox-unwrapped-126.0", "firefox-unwrapped", "126.0"),
            ("hello-2.12.1-man", "hello-man", "2.12.1"),
            ("glibc-2.39-52", "glibc", "2.39-52"),
            ("source", "source", ""),
            ("unit-script-nginx-start", "unit-script-nginx-start", ""),
            (
                "nixos-system-web-24.05.20240101.abcdef",
                "nixos-system-web",
                "24.05.20240101.abcdef",
            ),
            ("0ad-0.0.26", "0ad", "0.0.26"),
        ];
        for (base, name, version) in rows {
            let got = parse_name(&format!("{h}{base}"));
            assert_eq!(got, (name.to_string(), version.to_string()), "{base}");
        }
        assert_eq!(
            parse_name("hello-2.12.1"),
            ("hello".into(), "2.12.1".into()),
            "no store prefix"
        );
    }

    #[test]
    fn a_diff_lists_added_removed_and_changed_packages_and_the_size() {
        let p = |s: &str, n: u64| (format!("/nix/store/0123456789abcdfghijklmnpqrsvwxyz-{s}"), n);
        let old = [p("a-1.0", 10), p("b-1.0", 20), p("same-3", 5), p("hello-2.12.1-man", 1)];
        let new = [p("a-2.0", 12), p("c-1.0", 30), p("same-3", 5), p("hello-2.12.1-man", 1)];
        let d = closure_diff(&old, &new);
        let pkg = |n: &str, v: &str| Package {
            name: n.into(),
            version: v.into(),
        };
        assert_eq!(d.added, vec![pkg("c", "1.0")]);
        assert_eq!(d.removed, vec![pkg("b", "1.0")]);
        assert_eq!(
            d.changed,
            vec![Change {
                name: "a".into(),
                old: vec!["1.0".into()],
                new: vec!["2.0".into()],
            }]
        );
        assert_eq!((d.size_before, d.size_after), (36, 48));
        assert!(closure_diff(&old, &old).is_empty());
    }
}
