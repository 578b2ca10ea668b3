//! The on-target state: per-uid root (permission-checked), per-deploy directories, status files, locks.

use crate::status::{now_rfc3339, Status};
use serde::{Deserialize, Serialize};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

pub const REQUEST: &str = "request.json";
pub const STATUS: &str = "status.json";
pub const LOG: &str = "log";
pub const CONFIRM: &str = "confirm";
pub const HEARTBEAT: &str = "heartbeat";
pub const ABORT: &str = "abort";
const LOCKS: &str = "locks";

/// How long a second deploy of the same profile waits for the lock.
pub const LOCK_WAIT: Duration = Duration::from_secs(5);

pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Judges an existing state root. Checked with lstat so a planted symlink is never followed.
pub fn check_root(is_symlink: bool, is_dir: bool, owner: u32, mode: u32, uid: u32) -> Result<(), String> {
    if is_symlink {
        return Err("is a symlink".into());
    }
    if !is_dir {
        return Err("is not a directory".into());
    }
    if owner != uid {
        return Err(format!("is owned by uid {owner}, not by uid {uid}"));
    }
    if mode & 0o7777 != 0o700 {
        return Err(format!("has mode {:04o}, expected 0700", mode & 0o7777));
    }
    Ok(())
}

/// `<temp_path>/rollout-<uid>`, created (with `temp_path` if needed) when `create`, then checked.
pub fn state_root(temp_path: &Path, create: bool) -> Result<PathBuf, String> {
    let uid = euid();
    let root = temp_path.join(format!("rollout-{uid}"));
    if create {
        fs::create_dir_all(temp_path).map_err(|e| format!("cannot create temp path {}: {e}", temp_path.display()))?;
        match DirBuilder::new().mode(0o700).create(&root) {
            // The umask may have removed bits we need; we own the fresh directory, so set it exactly.
            Ok(()) => fs::set_permissions(&root, fs::Permissions::from_mode(0o700))
                .map_err(|e| format!("cannot chmod state root {}: {e}", root.display()))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create state root {}: {e}", root.display())),
        }
    }
    let meta = match fs::symlink_metadata(&root) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(format!(
                "no rollout state under {} ({} does not exist)",
                temp_path.display(),
                root.display()
            ))
        }
        Err(e) => return Err(format!("cannot inspect state root {}: {e}", root.display())),
    };
    check_root(
        meta.file_type().is_symlink(),
        meta.is_dir(),
        meta.uid(),
        meta.mode(),
        uid,
    )
    .map_err(|why| format!("refusing state root {}: it {why} (remove or fix it)", root.display()))?;
    Ok(root)
}

/// Creates a fresh deploy dir. `mkdir` without `-p`: an existing one (stale or reused ID) is refused.
pub fn create_deploy_dir(root: &Path, id: &str) -> Result<PathBuf, String> {
    let dir = root.join(id);
    match DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => Ok(dir),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(format!(
            "deploy directory {} already exists; refusing to reuse deploy id {id}",
            dir.display()
        )),
        Err(e) => Err(format!("cannot create deploy directory {}: {e}", dir.display())),
    }
}

/// An existing deploy dir for commands that name a deploy.
pub fn existing_deploy_dir(root: &Path, id: &str) -> Result<PathBuf, String> {
    let dir = root.join(id);
    match fs::symlink_metadata(&dir) {
        Ok(m) if m.is_dir() => Ok(dir),
        Ok(_) => Err(format!("{} is not a deploy directory", dir.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(format!("unknown deploy id {id} (no {})", dir.display())),
        Err(e) => Err(format!("cannot inspect {}: {e}", dir.display())),
    }
}

/// Write to a unique temporary name, fsync, rename: readers see the old or the new file, never half.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), String> {
    let mut data = serde_json::to_vec_pretty(value).map_err(|e| format!("cannot encode {}: {e}", path.display()))?;
    data.push(b'\n');
    write_atomic(path, &data).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, String> {
    let data = fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_slice(&data).map_err(|e| format!("cannot parse {}: {e}", path.display()))
}

/// Stamps `updated_at` and writes `status.json`.
pub fn write_status(dir: &Path, status: &mut Status) -> Result<(), String> {
    status.updated_at = now_rfc3339();
    write_json(&dir.join(STATUS), status)
}

pub fn read_status(dir: &Path) -> Result<Status, String> {
    read_json(&dir.join(STATUS))
}

pub fn exists(dir: &Path, name: &str) -> bool {
    fs::symlink_metadata(dir.join(name)).is_ok()
}

/// Creates a marker file (`confirm`, `abort`) if missing.
pub fn touch_marker(dir: &Path, name: &str) -> Result<(), String> {
    let p = dir.join(name);
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&p)
        .map(drop)
        .map_err(|e| format!("cannot create {}: {e}", p.display()))
}

/// Creates `heartbeat` if needed and sets its mtime to now (that mtime is what extends the deadline).
pub fn touch_heartbeat(dir: &Path) -> Result<(), String> {
    let p = dir.join(HEARTBEAT);
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&p)
        .map_err(|e| format!("cannot create {}: {e}", p.display()))?;
    f.set_modified(SystemTime::now())
        .map_err(|e| format!("cannot touch {}: {e}", p.display()))
}

pub fn mtime(path: &Path) -> Option<SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Removes `confirm`, `heartbeat` and `abort`, so no canary outlives a terminal state.
pub fn remove_markers(dir: &Path) {
    for name in [CONFIRM, HEARTBEAT, ABORT] {
        let _ = fs::remove_file(dir.join(name));
    }
}

/// FNV-1a, 64 bit: a stable, dependency-free digest; lock names need uniqueness, not secrecy.
pub fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Lock file name for a profile: readable prefix plus a digest of the full path.
pub fn lock_name(profile: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let base: String = profile
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .take(32)
                .collect()
        })
        .unwrap_or_default();
    format!("{base}-{:016x}.lock", fnv1a64(profile.as_os_str().as_bytes()))
}

/// Canonical key for a profile: its parent resolved (so `/nix/var/nix/profiles` reached through a
/// symlinked directory gives the same lock) plus the file name, which itself is not resolved.
pub fn profile_key(profile: &Path) -> PathBuf {
    match (
        profile.parent().and_then(|p| fs::canonicalize(p).ok()),
        profile.file_name(),
    ) {
        (Some(parent), Some(name)) => parent.join(name),
        _ => profile.to_path_buf(),
    }
}

/// Held lock on one profile; released when dropped (or when the process dies).
pub struct ProfileLock {
    _file: File,
}

/// Takes the profile lock, waiting up to `wait`.
pub fn lock_profile(root: &Path, profile: &Path, wait: Duration) -> Result<ProfileLock, String> {
    let locks = root.join(LOCKS);
    match DirBuilder::new().mode(0o700).create(&locks) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {}: {e}", locks.display())),
    }
    let path = locks.join(lock_name(&profile_key(profile)));
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("cannot open lock {}: {e}", path.display()))?;
    let start = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(ProfileLock { _file: file }),
            Err(fs::TryLockError::WouldBlock) if start.elapsed() < wait => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(fs::TryLockError::WouldBlock) => {
                return Err(format!(
                    "profile is locked: another deploy of {} is still running (lock {})",
                    profile.display(),
                    path.display()
                ))
            }
            Err(fs::TryLockError::Error(e)) => return Err(format!("cannot lock {}: {e}", path.display())),
        }
    }
}

/// Best effort: removes deploy dirs older than seven days whose deploy is over.
pub fn cleanup_old(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else { return };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        if entry.file_name() == LOCKS {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        let Ok(modified) = meta.modified() else { continue };
        if !meta.is_dir() || !crate::policy::is_expired(modified, now) {
            continue;
        }
        let dir = entry.path();
        // A deploy still waiting for confirmation after a week of `extend`s is left alone.
        let over = read_status(&dir).map(|s| s.state.is_terminal()).unwrap_or(true);
        if over {
            let _ = fs::remove_dir_all(&dir);
        }
    }
}

/// 12 random hex digits from the kernel (for revoke deploy IDs).
pub fn random_hex() -> String {
    use std::io::Read;
    let mut buf = [0u8; 6];
    let ok = File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_ok();
    if !ok {
        // Without /dev/urandom, pid and time still make a collision unlikely; mkdir refuses one anyway.
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let v = fnv1a64(format!("{}-{t}", std::process::id()).as_bytes());
        buf.copy_from_slice(&v.to_le_bytes()[..6]);
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_checks() {
        assert!(check_root(false, true, 5, 0o40700, 5).is_ok());
        assert!(check_root(true, false, 5, 0o700, 5).unwrap_err().contains("symlink"));
        assert!(check_root(false, false, 5, 0o700, 5)
            .unwrap_err()
            .contains("not a directory"));
        assert!(check_root(false, true, 0, 0o700, 5).unwrap_err().contains("uid 0"));
        assert!(check_root(false, true, 5, 0o755, 5).unwrap_err().contains("0755"));
        assert!(check_root(false, true, 5, 0o1700, 5).is_err());
    }

    #[test]
    fn lock_names_are_stable_and_distinct() {
        let a = lock_name(Path::new("/nix/var/nix/profiles/system"));
        assert_eq!(a, lock_name(Path::new("/nix/var/nix/profiles/system")));
        assert!(a.starts_with("system-") && a.ends_with(".lock"));
        assert_ne!(a, lock_name(Path::new("/other/system")));
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
    }

    #[test]
    fn deploy_dir_is_never_reused() {
        let t = tempfile::tempdir().unwrap();
        let root = state_root(&t.path().join("new/sub"), true).unwrap();
        create_deploy_dir(&root, "abcdefgh").unwrap();
        assert!(create_deploy_dir(&root, "abcdefgh")
            .unwrap_err()
            .contains("already exists"));
        assert!(existing_deploy_dir(&root, "zzzzzzzz")
            .unwrap_err()
            .contains("unknown deploy id"));
    }

    #[test]
    fn lock_excludes_second_holder() {
        let t = tempfile::tempdir().unwrap();
        let root = state_root(t.path(), true).unwrap();
        let p = t.path().join("prof");
        let held = lock_profile(&root, &p, Duration::ZERO).unwrap();
        let err = lock_profile(&root, &p, Duration::from_millis(200)).err().unwrap();
        assert!(err.contains("profile is locked"));
        drop(held);
        assert!(lock_profile(&root, &p, Duration::ZERO).is_ok());
    }
}
