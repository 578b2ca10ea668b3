//! The on-target state, opened once per process and used through descriptors: the temp path (whose
//! ancestors no other user may rewrite), our per-uid root in it, per-deploy directories and their files.
//!
//! Threat model (docs/agent-protocol.md): another local user on the target may create, rename or
//! symlink anything in directories it can write. Nothing here is checked by path and then used by
//! path: every directory is opened with `O_NOFOLLOW|O_DIRECTORY`, judged with `fstat` on the open
//! descriptor, and every later operation is relative to that descriptor (`openat`, `mkdirat`,
//! `renameat`, `unlinkat`). Files are created with `O_EXCL|O_NOFOLLOW`.

use rollout_protocol::status::{now_rfc3339, Status};
use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, Stat};
use serde::{Deserialize, Serialize};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

pub const REQUEST: &str = "request.json";
pub const STATUS: &str = "status.json";
pub const LOG: &str = "log";
pub const CONFIRM: &str = "confirm";
pub const HEARTBEAT: &str = "heartbeat";
pub const ABORT: &str = "abort";
/// Held (flock) by the worker for its whole life; it appears already locked (created under a
/// temporary name, locked, then renamed), so "exists and unlocked" means the worker is gone.
pub const WORKER_LOCK: &str = "worker.lock";

pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

fn os_err(e: rustix::io::Errno) -> io::Error {
    io::Error::from(e)
}

/// Opens the directory `name` inside `parent` without following a symlink.
fn open_dir_at(parent: impl AsFd, name: &OsStr) -> io::Result<OwnedFd> {
    rustix::fs::openat(parent, name, DIR_FLAGS, Mode::empty()).map_err(os_err)
}

fn fstat(fd: impl AsFd) -> io::Result<Stat> {
    rustix::fs::fstat(fd).map_err(os_err)
}

fn is_dir(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Directory
}

/// Why a directory on the way to the temp path could let another user replace what we keep below
/// it, or `None` when it is safe: owned by root or by us, and not writable by others unless sticky.
pub fn ancestor_problem(owner: u32, mode: u32, uid: u32) -> Option<String> {
    if owner != 0 && owner != uid {
        return Some(format!(
            "is owned by uid {owner}, who could replace what rollout keeps below it"
        ));
    }
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Some(format!(
            "is writable by other users (mode {:04o}) without the sticky bit, so they could rename what rollout keeps in it",
            mode & 0o7777
        ));
    }
    None
}

/// Judges a candidate state root (already opened without following symlinks): ours only when it is
/// a directory owned by `uid` with mode exactly 0700.
pub fn root_problem(is_dir: bool, owner: u32, mode: u32, uid: u32) -> Option<String> {
    if !is_dir {
        return Some("is not a directory".into());
    }
    if owner != uid {
        return Some(format!("is owned by uid {owner}, not by uid {uid}"));
    }
    if mode & 0o7777 != 0o700 {
        return Some(format!("has mode {:04o}, expected 0700", mode & 0o7777));
    }
    None
}

/// Opens the temp path (creating it when `create`), walking from `/` component by component with
/// `O_NOFOLLOW` and refusing any directory another user could rewrite.
fn open_temp_path(temp_path: &Path, create: bool) -> Result<(OwnedFd, PathBuf), String> {
    if !temp_path.is_absolute() {
        return Err(format!("temp path {} is not absolute", temp_path.display()));
    }
    if create {
        std::fs::create_dir_all(temp_path)
            .map_err(|e| format!("cannot create temp path {}: {e}", temp_path.display()))?;
    }
    // Symlinks the system itself set up (e.g. /tmp -> /private/tmp) are resolved once here; the walk
    // below then refuses any symlink, so a link planted after this point makes the walk fail safely.
    let canonical = std::fs::canonicalize(temp_path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            format!("no rollout state under {} (it does not exist)", temp_path.display())
        } else {
            format!("cannot resolve temp path {}: {e}", temp_path.display())
        }
    })?;
    let uid = euid();
    let mut fd = rustix::fs::open("/", DIR_FLAGS, Mode::empty()).map_err(|e| format!("cannot open /: {e}"))?;
    let mut walked = PathBuf::from("/");
    let judge = |fd: &OwnedFd, walked: &Path| -> Result<(), String> {
        let st = fstat(fd).map_err(|e| format!("cannot inspect {}: {e}", walked.display()))?;
        match ancestor_problem(st.st_uid, st.st_mode, uid) {
            Some(why) => Err(format!(
                "refusing temp path {}: {} {why}; use a tempPath whose directories only root or uid {uid} can change",
                temp_path.display(),
                walked.display()
            )),
            None => Ok(()),
        }
    };
    judge(&fd, &walked)?;
    for comp in canonical.components() {
        let Component::Normal(name) = comp else { continue };
        walked.push(name);
        fd = open_dir_at(&fd, name).map_err(|e| format!("cannot open {}: {e}", walked.display()))?;
        judge(&fd, &walked)?;
    }
    Ok((fd, canonical))
}

/// Our state root in the temp path: `rollout-<uid>`, or `rollout-<uid>.<random>` when another user
/// took that name first (so nobody can block our deploys by creating a directory).
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

fn is_root_name(name: &[u8], uid: u32) -> bool {
    let primary = format!("rollout-{uid}");
    name == primary.as_bytes() || name.starts_with(format!("{primary}.").as_bytes())
}

/// Our roots under the temp path, the primary name first.
fn our_roots(tp: &OwnedFd, tp_path: &Path) -> Result<Vec<Root>, String> {
    let uid = euid();
    let primary = format!("rollout-{uid}");
    let mut names: Vec<Vec<u8>> = Vec::new();
    // read_from opens "." relative to the descriptor: a listing of its own, no shared offset.
    let dir = Dir::read_from(tp).map_err(|e| format!("cannot read {}: {e}", tp_path.display()))?;
    for entry in dir {
        let entry = entry.map_err(|e| format!("cannot read {}: {e}", tp_path.display()))?;
        let name = entry.file_name().to_bytes();
        if is_root_name(name, uid) {
            names.push(name.to_vec());
        }
    }
    names.sort_by_key(|n| (n.as_slice() != primary.as_bytes(), n.clone()));
    let mut roots = Vec::new();
    for name in names {
        let name = OsStr::from_bytes(&name);
        let Ok(fd) = open_dir_at(tp, name) else { continue };
        let Ok(st) = fstat(&fd) else { continue };
        if root_problem(is_dir(&st), st.st_uid, st.st_mode, uid).is_none() {
            roots.push(Root {
                fd,
                path: tp_path.join(name),
            });
        }
    }
    Ok(roots)
}

impl Root {
    /// For `activate`/`revoke`: the temp path (created if needed), then one of our roots, created
    /// if there is none.
    pub fn open_or_create(temp_path: &Path) -> Result<Root, String> {
        let (tp, tp_path) = open_temp_path(temp_path, true)?;
        if let Some(root) = our_roots(&tp, &tp_path)?.into_iter().next() {
            return Ok(root);
        }
        let uid = euid();
        let primary = format!("rollout-{uid}");
        let name = match rustix::fs::statat(&tp, primary.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Err(rustix::io::Errno::NOENT) => primary,
            // Taken by someone else (or not usable): a fresh name nobody can predict.
            _ => {
                let alt = format!("{primary}.{}", random_hex());
                crate::log(&format!(
                    "note: {} is not ours; keeping this deploy's state in {}",
                    tp_path.join(format!("rollout-{uid}")).display(),
                    tp_path.join(&alt).display()
                ));
                alt
            }
        };
        let path = tp_path.join(&name);
        rustix::fs::mkdirat(&tp, name.as_str(), Mode::from_raw_mode(0o700))
            .map_err(|e| format!("cannot create state root {}: {e}", path.display()))?;
        let fd = open_dir_at(&tp, OsStr::new(&name)).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        // The umask may have removed bits; the directory is ours (checked below), so set it exactly.
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o700))
            .map_err(|e| format!("cannot chmod {}: {e}", path.display()))?;
        let st = fstat(&fd).map_err(|e| format!("cannot inspect {}: {e}", path.display()))?;
        if let Some(why) = root_problem(is_dir(&st), st.st_uid, st.st_mode, uid) {
            return Err(format!("refusing state root {}: it {why}", path.display()));
        }
        Ok(Root { fd, path })
    }

    /// For the commands that name a deploy: finds `id` in one of our roots.
    pub fn find_deploy(temp_path: &Path, id: &str) -> Result<DeployDir, String> {
        let (tp, tp_path) = open_temp_path(temp_path, false)?;
        for root in our_roots(&tp, &tp_path)? {
            if let Ok(d) = root.open_deploy(id) {
                return Ok(d);
            }
        }
        Err(format!(
            "unknown deploy id {id} (no rollout state of uid {} under {} holds it)",
            euid(),
            tp_path.display()
        ))
    }

    /// The deploys of the profile at `profile` that have not ended, in our roots under
    /// `temp_path` (read only: nothing is created). Unreadable entries are passed over.
    pub fn pending_for(temp_path: &Path, profile: &Path) -> Vec<Status> {
        let Ok((tp, tp_path)) = open_temp_path(temp_path, false) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for root in our_roots(&tp, &tp_path).unwrap_or_default() {
            let Ok(dir) = Dir::read_from(&root.fd) else { continue };
            for entry in dir.flatten() {
                let Ok(name) = entry.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                if name.starts_with('.') {
                    continue;
                }
                let Ok(st) = root.open_deploy(&name).and_then(|d| d.read_status()) else {
                    continue;
                };
                if !st.state.is_terminal() && st.profile_path.as_deref() == Some(profile) {
                    out.push(st);
                }
            }
        }
        out
    }

    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates a fresh deploy dir. `mkdirat` without `-p`: an existing one (stale or reused ID) is refused.
    pub fn create_deploy(&self, id: &str) -> Result<DeployDir, String> {
        let path = self.path.join(id);
        match rustix::fs::mkdirat(&self.fd, id, Mode::from_raw_mode(0o700)) {
            Ok(()) => {}
            Err(rustix::io::Errno::EXIST) => {
                return Err(format!(
                    "deploy directory {} already exists; refusing to reuse deploy id {id}",
                    path.display()
                ))
            }
            Err(e) => return Err(format!("cannot create deploy directory {}: {e}", path.display())),
        }
        self.open_deploy(id)
    }

    fn open_deploy(&self, id: &str) -> Result<DeployDir, String> {
        let path = self.path.join(id);
        let fd = open_dir_at(&self.fd, OsStr::new(id)).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let st = fstat(&fd).map_err(|e| format!("cannot inspect {}: {e}", path.display()))?;
        if st.st_uid != euid() {
            return Err(format!("{} is not owned by uid {}", path.display(), euid()));
        }
        Ok(DeployDir {
            fd,
            path,
            id: id.to_string(),
        })
    }

    /// Best effort: removes deploy dirs older than seven days whose deploy is over.
    pub fn cleanup_old(&self) {
        let Ok(dir) = Dir::read_from(&self.fd) else { return };
        let now = SystemTime::now();
        for entry in dir.flatten() {
            let Ok(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if name == "." || name == ".." {
                continue;
            }
            let Ok(st) = rustix::fs::statat(&self.fd, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) else {
                continue;
            };
            if !is_dir(&st) || !crate::policy::is_expired(stat_mtime(&st), now) {
                continue;
            }
            let Ok(d) = self.open_deploy(&name) else { continue };
            // A deploy still waiting for confirmation after a week of `extend`s is left alone.
            if d.read_status().map(|s| s.state.is_terminal()).unwrap_or(true) {
                d.remove_all_files();
                let _ = rustix::fs::unlinkat(&self.fd, name.as_str(), AtFlags::REMOVEDIR);
            }
        }
    }
}

fn stat_mtime(st: &Stat) -> SystemTime {
    let secs = u64::try_from(st.st_mtime).unwrap_or(0);
    let nanos = u32::try_from(st.st_mtime_nsec).unwrap_or(0);
    SystemTime::UNIX_EPOCH + Duration::new(secs, nanos)
}

/// One deploy's directory, held open; every file operation is relative to it.
pub struct DeployDir {
    fd: OwnedFd,
    path: PathBuf,
    id: String,
}

impl DeployDir {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// For messages only: where a person finds the file.
    pub fn display(&self, name: &str) -> String {
        self.path.join(name).display().to_string()
    }

    fn open_file(&self, name: &str, flags: OFlags) -> io::Result<File> {
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(os_err)?;
        Ok(File::from(fd))
    }

    pub fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        let mut data = Vec::new();
        self.open_file(name, OFlags::RDONLY)?.read_to_end(&mut data)?;
        Ok(data)
    }

    /// Write to a fresh, exclusive temporary name, fsync, rename: readers see the old or the new file.
    pub fn write_atomic(&self, name: &str, data: &[u8]) -> io::Result<()> {
        let tmp = format!(".{name}.tmp.{}.{}", std::process::id(), random_hex());
        let mut f = self.open_file(&tmp, OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL)?;
        f.write_all(data)?;
        f.sync_all()?;
        rustix::fs::renameat(&self.fd, tmp.as_str(), &self.fd, name).map_err(os_err)
    }

    pub fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<(), String> {
        let mut data =
            serde_json::to_vec_pretty(value).map_err(|e| format!("cannot encode {}: {e}", self.display(name)))?;
        data.push(b'\n');
        self.write_atomic(name, &data)
            .map_err(|e| format!("cannot write {}: {e}", self.display(name)))
    }

    pub fn read_json<T: for<'de> Deserialize<'de>>(&self, name: &str) -> Result<T, String> {
        let data = self
            .read(name)
            .map_err(|e| format!("cannot read {}: {e}", self.display(name)))?;
        serde_json::from_slice(&data).map_err(|e| format!("cannot parse {}: {e}", self.display(name)))
    }

    /// Stamps `updated_at` and writes `status.json`.
    pub fn write_status(&self, status: &mut Status) -> Result<(), String> {
        status.updated_at = now_rfc3339();
        self.write_json(STATUS, status)
    }

    pub fn read_status(&self) -> Result<Status, String> {
        self.read_json(STATUS)
    }

    pub fn exists(&self, name: &str) -> bool {
        rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW).is_ok()
    }

    pub fn mtime(&self, name: &str) -> Option<SystemTime> {
        rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)
            .ok()
            .map(|st| stat_mtime(&st))
    }

    /// Creates a marker file (`confirm`, `abort`) if missing.
    pub fn touch_marker(&self, name: &str) -> Result<(), String> {
        self.open_file(name, OFlags::WRONLY | OFlags::CREATE)
            .map(drop)
            .map_err(|e| format!("cannot create {}: {e}", self.display(name)))
    }

    /// Creates `heartbeat` if needed and sets its mtime to now (that mtime is what extends the deadline).
    pub fn touch_heartbeat(&self) -> Result<(), String> {
        let f = self
            .open_file(HEARTBEAT, OFlags::WRONLY | OFlags::CREATE)
            .map_err(|e| format!("cannot create {}: {e}", self.display(HEARTBEAT)))?;
        f.set_modified(SystemTime::now())
            .map_err(|e| format!("cannot touch {}: {e}", self.display(HEARTBEAT)))
    }

    /// Removes `confirm`, `heartbeat` and `abort`, so no canary outlives a terminal state.
    pub fn remove_markers(&self) {
        for name in [CONFIRM, HEARTBEAT, ABORT] {
            let _ = rustix::fs::unlinkat(&self.fd, name, AtFlags::empty());
        }
    }

    fn remove_all_files(&self) {
        let Ok(dir) = Dir::read_from(&self.fd) else { return };
        for entry in dir.flatten() {
            let name = entry.file_name();
            if name.to_bytes() != b"." && name.to_bytes() != b".." {
                let _ = rustix::fs::unlinkat(&self.fd, name, AtFlags::empty());
            }
        }
    }

    /// The deploy log, opened for appending (the worker's stdout and stderr).
    pub fn open_log_append(&self) -> io::Result<File> {
        self.open_file(LOG, OFlags::WRONLY | OFlags::CREATE | OFlags::APPEND)
    }

    pub fn open_log_read(&self) -> Option<File> {
        self.open_file(LOG, OFlags::RDONLY).ok()
    }

    /// Called by the worker first thing: takes `worker.lock` for the rest of its life. The file is
    /// locked before it gets its name, so the foreground never sees it unlocked while we live.
    pub fn hold_worker_lock(&self) -> io::Result<File> {
        let tmp = format!(".{WORKER_LOCK}.tmp.{}.{}", std::process::id(), random_hex());
        let f = self.open_file(&tmp, OFlags::RDWR | OFlags::CREATE | OFlags::EXCL)?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(os_err)?;
        rustix::fs::renameat(&self.fd, tmp.as_str(), &self.fd, WORKER_LOCK).map_err(os_err)?;
        Ok(f)
    }

    /// `None` while the worker has not started; then whether it still runs.
    pub fn worker_running(&self) -> Option<bool> {
        let f = self.open_file(WORKER_LOCK, OFlags::RDONLY).ok()?;
        match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockShared) {
            Ok(()) => Some(false),
            Err(_) => Some(true),
        }
    }
}

/// 12 random hex digits (fallback roots, temporary names).
pub fn random_hex() -> String {
    rollout_protocol::id::random_hex(6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn root_checks() {
        assert!(root_problem(true, 5, 0o40700, 5).is_none());
        assert!(root_problem(false, 5, 0o700, 5).unwrap().contains("not a directory"));
        assert!(root_problem(true, 0, 0o700, 5).unwrap().contains("uid 0"));
        assert!(root_problem(true, 5, 0o755, 5).unwrap().contains("0755"));
        assert!(root_problem(true, 5, 0o1700, 5).is_some());
    }

    #[test]
    fn ancestors_writable_by_others_need_the_sticky_bit_and_a_trusted_owner() {
        assert!(ancestor_problem(0, 0o41777, 0).is_none(), "/tmp");
        assert!(ancestor_problem(0, 0o40755, 1000).is_none());
        assert!(ancestor_problem(1000, 0o40755, 1000).is_none(), "our own directory");
        assert!(ancestor_problem(0, 0o40777, 0).unwrap().contains("sticky"));
        assert!(ancestor_problem(0, 0o40775, 0).unwrap().contains("0775"));
        assert!(ancestor_problem(1001, 0o41777, 0).unwrap().contains("uid 1001"));
    }

    #[test]
    fn deploy_dir_is_never_reused_and_found_again() {
        let t = tempfile::tempdir().unwrap();
        let tp = t.path().join("new/sub");
        let root = Root::open_or_create(&tp).unwrap();
        root.create_deploy("abcdefgh").unwrap();
        assert!(root.create_deploy("abcdefgh").err().unwrap().contains("already exists"));
        assert!(Root::find_deploy(&tp, "zzzzzzzz")
            .err()
            .unwrap()
            .contains("unknown deploy id"));
        let d = Root::find_deploy(&tp, "abcdefgh").unwrap();
        d.write_json(REQUEST, &serde_json::json!({"a": 1})).unwrap();
        let v: serde_json::Value = d.read_json(REQUEST).unwrap();
        assert_eq!(v["a"], 1);
    }

    #[test]
    fn a_root_name_taken_by_someone_else_does_not_block_us() {
        let t = tempfile::tempdir().unwrap();
        // Not ours in the sense that matters: wrong mode (as if another user had made it).
        let squatted = t.path().join(format!("rollout-{}", euid()));
        std::fs::create_dir(&squatted).unwrap();
        std::fs::set_permissions(&squatted, std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = Root::open_or_create(t.path()).unwrap();
        assert_ne!(root.path(), squatted.as_path());
        root.create_deploy("abcdefgh").unwrap();
        assert!(Root::find_deploy(t.path(), "abcdefgh").is_ok());
        // The second run finds the same fallback root instead of making another.
        assert_eq!(Root::open_or_create(t.path()).unwrap().path(), root.path());
    }

    #[test]
    fn a_temp_path_under_a_world_writable_non_sticky_directory_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let open = t.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = Root::open_or_create(&open.join("tp")).err().unwrap();
        assert!(err.contains("without the sticky bit"), "{err}");
    }

    #[test]
    fn worker_lock_says_whether_the_worker_runs() {
        let t = tempfile::tempdir().unwrap();
        let d = Root::open_or_create(t.path())
            .unwrap()
            .create_deploy("abcdefgh")
            .unwrap();
        assert_eq!(d.worker_running(), None);
        let held = d.hold_worker_lock().unwrap();
        assert_eq!(d.worker_running(), Some(true));
        drop(held);
        assert_eq!(d.worker_running(), Some(false));
    }
}
