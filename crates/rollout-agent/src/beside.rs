//! Files kept beside a profile (`<profile dir>/<name>.<suffix>`): they live as long as the
//! profile, survive reboots and `/tmp` cleanups, and belong to the profile's owner. The profile's
//! directory is opened once; a file is read without following a symlink and only when it is a
//! regular file, and written atomically (an exclusive temporary file, fsynced, renamed over it).

use rustix::fd::OwnedFd;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The profile's directory (opened once) and one file name in it.
pub struct Beside {
    dir: OwnedFd,
    dir_path: PathBuf,
    name: String,
}

impl Beside {
    /// `<profile>.<suffix>`, in the profile's directory.
    pub fn open(profile: &Path, suffix: &str) -> Result<Beside, String> {
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
        Ok(Beside {
            dir,
            dir_path: parent.to_path_buf(),
            name: format!("{base}.{suffix}"),
        })
    }

    pub fn display(&self) -> String {
        self.dir_path.join(&self.name).display().to_string()
    }

    /// The file's content; `None` when there is no file.
    pub fn read(&self) -> Result<Option<String>, String> {
        let fd = match rustix::fs::openat(
            &self.dir,
            self.name.as_str(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
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
        Ok(Some(text))
    }

    pub fn write(&self, text: &str) -> Result<(), String> {
        let tmp = format!(".{}.tmp.{}", self.name, crate::statedir::random_hex());
        let fd = rustix::fs::openat(
            &self.dir,
            tmp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .map_err(|e| format!("cannot create a temporary file beside {}: {e}", self.display()))?;
        let mut f = File::from(fd);
        let written = f.write_all(text.as_bytes()).and_then(|()| f.sync_all());
        let renamed = written.map_err(|e| e.to_string()).and_then(|()| {
            rustix::fs::renameat(&self.dir, tmp.as_str(), &self.dir, self.name.as_str()).map_err(|e| e.to_string())
        });
        if let Err(e) = renamed {
            let _ = rustix::fs::unlinkat(&self.dir, tmp.as_str(), AtFlags::empty());
            return Err(format!("cannot write {}: {e}", self.display()));
        }
        // The rename is durable only once the directory is: a reboot right after must see it.
        let _ = rustix::fs::fsync(&self.dir);
        Ok(())
    }

    /// Remove the file (no error when it is not there).
    pub fn remove(&self) -> Result<(), String> {
        match rustix::fs::unlinkat(&self.dir, self.name.as_str(), AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {
                let _ = rustix::fs::fsync(&self.dir);
                Ok(())
            }
            Err(e) => Err(format!("cannot remove {}: {e}", self.display())),
        }
    }
}
