//! The command line and the settings table agree: every flag the table names exists in
//! `rollout --help` (the CLI declares its flags itself; this test keeps the two in step).

use std::process::Command;

#[test]
fn every_flag_of_the_settings_table_is_a_rollout_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_rollout"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let missing: Vec<&str> = rollout_core::schema::all()
        .filter_map(|s| s.flag)
        .filter(|f| !help.lines().any(|l| l.split([' ', ',', '=']).any(|w| w == *f)))
        .collect();
    assert!(
        missing.is_empty(),
        "flags in the table but not in --help: {missing:?}\n{help}"
    );
}
