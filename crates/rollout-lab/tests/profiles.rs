//! Profile integration tests: build test flakes with real nix, activate them on lab hosts, read markers.

use rollout_lab::testing as common;

use common::*;
use rollout_lab::profiles::{self, FlakeBuilder, Profile};
use rollout_lab::Fleet;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;

fn is_exec(p: &std::path::Path) -> bool {
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[test]
fn marker_profile_builds() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let salt = profiles::fresh_salt("build");
    let mut f = FlakeBuilder::new(dir.path());
    f.top_setting("sshUser", json!("deploy"));
    f.node("host1", "host1")
        .tags(&["web"])
        .profile("system", Profile::marker("system").salt(&salt));
    f.node("host1", "host1")
        .profile("drs", Profile::deploy_rs_style("drs").salt(&salt));
    f.write().unwrap();
    let out = f.build("host1", "system").expect("nix build");
    let act = out.join("deploy-rs-activate");
    assert!(is_exec(&act), "{} not executable", act.display());
    assert!(std::fs::read_to_string(&act).unwrap().starts_with("#!/bin/sh"));
    assert!(is_exec(&out.join("activate-rs")));
    let drs = f.build("host1", "drs").unwrap();
    let text = std::fs::read_to_string(drs.join("deploy-rs-activate")).unwrap();
    assert!(
        text.contains("set -eu") && text.contains("DRY_ACTIVATE") && text.contains("BOOT"),
        "{text}"
    );
    // a different salt gives a different store path
    let mut g = FlakeBuilder::new(dir.path());
    g.node("host1", "host1")
        .profile("system", Profile::marker("system").salt(format!("{salt}-other")));
    g.write().unwrap();
    assert_ne!(g.build("host1", "system").unwrap(), out);

    // non-flake mode: default.nix exposes the same deploy output
    f.write().unwrap();
    f.write_default_nix().unwrap();
    let o = std::process::Command::new("nix-instantiate")
        .args(["--eval", "--json", "--strict", "-E"])
        .arg(format!(
            "let d = (import {}).deploy; in {{ u = d.sshUser; t = d.nodes.host1.tags; h = d.nodes.host1.hostname; }}",
            dir.path().display()
        ))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(stdout(&o), r#"{"h":"host1","t":["web"],"u":"deploy"}"#);
    let o = std::process::Command::new("nix-build")
        .args(["--no-out-link", "-A", "deploy.nodes.host1.profiles.system.path"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(stdout(&o), out.to_string_lossy());
}

/// Copy a built profile to a host as deploy, set it as the system profile and activate it the way an
/// agent would; then read the markers.
#[test]
fn activate_on_host_and_read_markers() {
    require_root();
    let fleet = Fleet::temp(1).expect("fleet up");
    let dir = tempfile::tempdir().unwrap();
    let salt = profiles::fresh_salt("act");
    let mut f = FlakeBuilder::new(dir.path());
    f.node("host1", "host1")
        .profile("system", Profile::marker("sys").salt(&salt).sleep(0.2))
        .profile("fail", Profile::failing("fail").salt(&salt))
        .profile("drs", Profile::deploy_rs_style("drs").salt(&salt))
        .profile("cut", Profile::cut_off("cut").salt(&salt))
        .profile("big", Profile::large("big", 3).salt(&salt));
    f.write().unwrap();
    let sys = f.build("host1", "system").unwrap().to_string_lossy().into_owned();
    let fail = f.build("host1", "fail").unwrap().to_string_lossy().into_owned();
    let drs = f.build("host1", "drs").unwrap().to_string_lossy().into_owned();
    let cut = f.build("host1", "cut").unwrap().to_string_lossy().into_owned();
    let big = f.build("host1", "big").unwrap().to_string_lossy().into_owned();
    for p in [&sys, &fail, &drs, &cut, &big] {
        let o = nix_copy(&fleet, "ssh://deploy@host1", p);
        assert!(o.status.success(), "copy {p}: {}", String::from_utf8_lossy(&o.stderr));
    }
    // the large closure: 3 data paths of 1 MiB each
    let refs = fleet.exec_ok("host1", &["nix-store", "-qR", &big]).unwrap();
    assert_eq!(refs.lines().count(), 4, "{refs}");
    let size = fleet.exec_ok("host1", &["du", "-sbL", &big]).unwrap();
    assert!(
        size.split_whitespace().next().unwrap().parse::<u64>().unwrap() >= 3 << 20,
        "{size}"
    );

    let system = "/nix/var/nix/profiles/system";
    fleet
        .exec_ok("host1", &["nix-env", "-p", system, "--set", &sys])
        .unwrap();
    assert_eq!(fleet.exec_ok("host1", &["readlink", "-f", system]).unwrap(), sys);
    let act = format!("{system}/deploy-rs-activate");
    let o = fleet
        .exec(
            "host1",
            &["env", &format!("PROFILE={system}"), "DRY_ACTIVATE=0", "BOOT=0", &act],
        )
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m = profiles::read_markers(&fleet, "host1", "sys").unwrap();
    assert_eq!(m.len(), 1);
    assert_eq!(
        (
            m[0].profile.as_str(),
            m[0].user.as_str(),
            m[0].dry.as_str(),
            m[0].out.as_str()
        ),
        (system, "root", "0", sys.as_str())
    );
    assert!(m[0].end - m[0].start >= 0.19, "sleep observed: {:?}", m[0]);

    // as hello, through ssh: markers record the user
    let o = ssh(
        &fleet,
        "hello@host1",
        &[&format!("PROFILE=x DRY_ACTIVATE=1 {sys}/deploy-rs-activate")],
    );
    assert!(o.status.success());
    let m = profiles::read_markers(&fleet, "host1", "sys").unwrap();
    assert_eq!(m.len(), 2);
    assert_eq!((m[1].user.as_str(), m[1].is_dry()), ("hello", true));

    // failing: marker written, exit 1
    let o = fleet.exec("host1", &[&format!("{fail}/deploy-rs-activate")]).unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(profiles::read_markers(&fleet, "host1", "fail").unwrap().len(), 1);

    // deploy-rs style: dry and boot only echo; a switch activates
    for env in ["DRY_ACTIVATE=1", "BOOT=1"] {
        let o = fleet
            .exec("host1", &["env", env, &format!("{drs}/deploy-rs-activate")])
            .unwrap();
        assert!(o.status.success());
        assert_eq!(stdout(&o), format!("{drs}/bin/activate"));
    }
    assert!(profiles::read_markers(&fleet, "host1", "drs").unwrap().is_empty());
    assert!(fleet
        .exec("host1", &[&format!("{drs}/deploy-rs-activate")])
        .unwrap()
        .status
        .success());
    assert_eq!(profiles::read_markers(&fleet, "host1", "drs").unwrap().len(), 1);
    profiles::clear_markers(&fleet, "host1", "drs").unwrap();
    assert!(profiles::read_markers(&fleet, "host1", "drs").unwrap().is_empty());

    // cut-off over ssh: the activation succeeds, then no new connection gets in
    assert!(fleet.status()[0].listening);
    let o = ssh(&fleet, "deploy@host1", &[&format!("sudo {cut}/deploy-rs-activate")]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(profiles::read_markers(&fleet, "host1", "cut").unwrap()[0].user, "root");
    assert!(!ssh(&fleet, "host1", &["true"]).status.success());
    assert!(!fleet.status()[0].listening);
    fleet.restart_sshd("host1").unwrap();
    assert!(ssh(&fleet, "host1", &["true"]).status.success());
}
