//! The durable deploy record of a profile: `<profile dir>/<name>.rollout-history`, beside the
//! profile ([`crate::beside`]: it lives as long as the profile and survives reboots and `/tmp`
//! cleanups). Written only by the worker that holds the profile's lock, atomically, never through
//! a symlink, and bounded to the last [`MAX_RECORDS`] records.

use crate::beside::Beside;
use rollout_protocol::report::{Record, MAX_RECORDS};
use std::path::Path;

const SUFFIX: &str = "rollout-history";

/// The profile's records, oldest first (none when it has no history yet).
pub fn read(profile: &Path) -> Result<Vec<Record>, String> {
    let file = Beside::open(profile, SUFFIX)?;
    match file.read()? {
        None => Ok(Vec::new()),
        Some(text) => {
            serde_json::from_str(&text).map_err(|e| format!("{} is not a deploy record: {e}", file.display()))
        }
    }
}

/// Append `record`, keeping the newest [`MAX_RECORDS`]. A history that cannot be read (damaged,
/// or not a regular file) is started afresh rather than blocking the deploy.
pub fn append(profile: &Path, record: Record) -> Result<(), String> {
    let file = Beside::open(profile, SUFFIX)?;
    let mut records = match read(profile) {
        Ok(r) => r,
        Err(e) => {
            crate::log(&format!("note: {e}; starting a new history"));
            Vec::new()
        }
    };
    records.push(record);
    let excess = records.len().saturating_sub(MAX_RECORDS);
    records.drain(..excess);
    let text = serde_json::to_string_pretty(&records).map_err(|e| e.to_string())?;
    file.write(&format!("{text}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollout_protocol::status::State;

    fn record(n: u64) -> Record {
        Record {
            id: format!("d{n:024}"),
            time: "2026-12-05T10:00:00Z".into(),
            state: State::Confirmed,
            generation: Some(n),
            previous: n.checked_sub(1),
            closure: None,
            origin: Default::default(),
            seen_from: String::new(),
            message: String::new(),
        }
    }

    #[test]
    fn records_are_appended_atomically_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let profile = dir.path().join("system");
        assert!(read(&profile).unwrap().is_empty());
        for n in 1..=(MAX_RECORDS as u64 + 5) {
            append(&profile, record(n)).unwrap();
        }
        let r = read(&profile).unwrap();
        assert_eq!(r.len(), MAX_RECORDS);
        assert_eq!(r[0].generation, Some(6), "the oldest were dropped");
        assert_eq!(r.last().unwrap().generation, Some(MAX_RECORDS as u64 + 5));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp."))
            .collect();
        assert!(leftovers.is_empty(), "no temporary files left");
    }

    #[test]
    fn a_symlink_at_the_history_name_is_neither_read_nor_followed() {
        let dir = tempfile::tempdir().unwrap();
        let profile = dir.path().join("app");
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, "precious").unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.path().join("app.rollout-history")).unwrap();
        assert!(read(&profile).is_err(), "a symlink is not read");
        append(&profile, record(1)).unwrap();
        assert_eq!(
            std::fs::read_to_string(&elsewhere).unwrap(),
            "precious",
            "not written through"
        );
        assert_eq!(read(&profile).unwrap().len(), 1, "replaced by a regular file");
    }
}
