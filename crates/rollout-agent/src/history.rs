//! The durable deploy record of a profile: `<profile dir>/<name>.rollout-history`, beside the
//! profile (it lives as long as the profile, survives reboots and `/tmp` cleanups, and belongs to
//! the profile's owner). Written only by the worker that holds the profile's lock, atomically
//! (a fresh temporary file renamed over it, in a directory opened once, never following a
//! symlink), and bounded to the last [`MAX_RECORDS`] records.

use rollout_protocol::report::{Record, MAX_RECORDS};
use rustix::fd::OwnedFd;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The profile's directory (opened once) and the record's file name in it.
struct Place {
    dir: OwnedFd,
    dir_path: PathBuf,
    name: String,
}

fn place(profile: &Path) -> Result<Place, String> {
    let parent = profile
        .parent()
        .ok_or_else(|| format!("profile path {} has no parent directory", profile.display()))?;
    let base = profile
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("profile path {} has no usable file name", profile.display()))?;
    let dir = rustix::fs::open(
        parent,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("cannot open {}: {e}", parent.display()))?;
    Ok(Place {
        dir,
        dir_path: parent.to_path_buf(),
        name: format!("{base}.rollout-history"),
    })
}

impl Place {
    fn display(&self) -> String {
        self.dir_path.join(&self.name).display().to_string()
    }

    /// The records on disk, oldest first; none when there is no file yet.
    fn read(&self) -> Result<Vec<Record>, String> {
        let fd = match rustix::fs::openat(
            &self.dir,
            self.name.as_str(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(Vec::new()),
            Err(e) => return Err(format!("cannot open {}: {e}", self.display())),
        };
        let st = rustix::fs::fstat(&fd).map_err(|e| format!("cannot inspect {}: {e}", self.display()))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(format!("{} is not a regular file; ignoring it", self.display()));
        }
        let mut text = String::new();
        File::from(fd)
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read {}: {e}", self.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{} is not a deploy record: {e}", self.display()))
    }

    fn write(&self, records: &[Record]) -> Result<(), String> {
        let text = serde_json::to_string_pretty(records).map_err(|e| e.to_string())?;
        let tmp = format!(".{}.tmp.{}", self.name, crate::statedir::random_hex());
        let fd = rustix::fs::openat(
            &self.dir,
            tmp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .map_err(|e| format!("cannot create a temporary file beside {}: {e}", self.display()))?;
        let mut f = File::from(fd);
        let written = f
            .write_all(text.as_bytes())
            .and_then(|()| f.write_all(b"\n"))
            .and_then(|()| f.sync_all());
        let renamed = written.map_err(|e| e.to_string()).and_then(|()| {
            rustix::fs::renameat(&self.dir, tmp.as_str(), &self.dir, self.name.as_str()).map_err(|e| e.to_string())
        });
        if let Err(e) = renamed {
            let _ = rustix::fs::unlinkat(&self.dir, tmp.as_str(), AtFlags::empty());
            return Err(format!("cannot write {}: {e}", self.display()));
        }
        Ok(())
    }
}

/// The profile's records, oldest first (none when it has no history yet).
pub fn read(profile: &Path) -> Result<Vec<Record>, String> {
    place(profile)?.read()
}

/// Append `record`, keeping the newest [`MAX_RECORDS`]. A history that cannot be read (damaged,
/// or not a regular file) is started afresh rather than blocking the deploy.
pub fn append(profile: &Path, record: Record) -> Result<(), String> {
    let place = place(profile)?;
    let mut records = match place.read() {
        Ok(r) => r,
        Err(e) => {
            crate::log(&format!("note: {e}; starting a new history"));
            Vec::new()
        }
    };
    records.push(record);
    let excess = records.len().saturating_sub(MAX_RECORDS);
    records.drain(..excess);
    place.write(&records)
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
