//! One lock per profile, beside the profile itself (`<profile>.rollout-lock`), whatever tempPath or
//! user a deploy runs with: held by the worker from before it reads the current generation until the
//! deploy is confirmed or rolled back. The file says who holds it and by when that deploy ends by
//! itself, so a second deploy can wait exactly as long as that, and say for whom it waits.
//!
//! Not `<profile>.lock`: that name is Nix's own profile lock, which `nix-env --set` takes; holding it
//! across the confirm window would deadlock our own profile switch.

use rustix::fs::{FileType, FlockOperation, Mode, OFlags};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Waited past the holder's own deadline before giving up (its rollback may still be finishing).
pub const MARGIN: Duration = Duration::from_secs(30);
/// How long to wait for a holder that does not say when it ends (an unreadable or empty lock file).
pub const UNKNOWN_WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);

/// Who holds the lock, written into the lock file by the holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub id: String,
    pub pid: u32,
    /// `user` and, when the agent was started over SSH, `from <address>`.
    pub deployer: String,
    pub started_at: u64,
    /// Unix time by which the holding deploy ends by itself (confirmed, rolled back or failed).
    pub ends_by: u64,
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The deployer as the target sees it: the (sudo-ing) user and the SSH client address.
pub fn deployer() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| format!("uid {}", crate::statedir::euid()));
    match std::env::var("SSH_CLIENT")
        .ok()
        .and_then(|c| c.split_whitespace().next().map(str::to_string))
    {
        Some(addr) => format!("{user} from {addr}"),
        None => user,
    }
}

/// What a deploy that finds the lock taken does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Wait,
    GiveUp(String),
}

/// Pure: keep waiting while the holder can still end by itself (its deadline plus a margin), or
/// for a while when it does not say; otherwise give up with a message naming it and saying when to retry.
pub fn decide(holder: Option<&Holder>, now: u64, waited: Duration, profile: &Path) -> Decision {
    match holder {
        Some(h) if now <= h.ends_by + MARGIN.as_secs() => Decision::Wait,
        Some(h) => Decision::GiveUp(format!(
            "profile {} is locked by deploy {} ({}, agent pid {}, started {}), which should have ended by {}; \
             it is still running on this machine: retry once it has ended, or stop that agent",
            profile.display(),
            h.id,
            h.deployer,
            h.pid,
            rollout_protocol::status::rfc3339(h.started_at),
            rollout_protocol::status::rfc3339(h.ends_by)
        )),
        None if waited < UNKNOWN_WAIT => Decision::Wait,
        None => Decision::GiveUp(format!(
            "profile {} is locked by another deploy that does not say when it ends (waited {} s); retry later",
            profile.display(),
            waited.as_secs()
        )),
    }
}

pub struct ProfileLock {
    file: File,
    writable: bool,
    holder: Holder,
}

/// `<canonical parent>/<name>.rollout-lock`: one profile reached through a symlinked directory gets one lock.
pub fn lock_path(profile: &Path) -> Result<PathBuf, String> {
    let parent = profile
        .parent()
        .ok_or_else(|| format!("profile path {} has no parent directory", profile.display()))?;
    let name = profile
        .file_name()
        .ok_or_else(|| format!("profile path {} has no file name", profile.display()))?;
    let parent = std::fs::canonicalize(parent).map_err(|e| format!("cannot resolve {}: {e}", parent.display()))?;
    let mut file = name.to_os_string();
    file.push(".rollout-lock");
    Ok(parent.join(file))
}

/// Opens (creating) the lock file without following a symlink, without blocking on a FIFO, and
/// checks it is a regular file. Read-only when another user's deploy created it (flock still works).
fn open_lock(path: &Path) -> Result<(File, bool), String> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    let name = path.file_name().unwrap_or_default();
    let dir: OwnedFd = rustix::fs::open(
        parent,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("cannot open {}: {e}", parent.display()))?;
    let base = OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let (fd, writable) = match rustix::fs::openat(
        &dir,
        name,
        base | OFlags::RDWR | OFlags::CREATE,
        Mode::from_raw_mode(0o644),
    ) {
        Ok(fd) => (fd, true),
        Err(rustix::io::Errno::ACCESS) => (
            rustix::fs::openat(&dir, name, base | OFlags::RDONLY, Mode::empty())
                .map_err(|e| format!("cannot open lock {}: {e}", path.display()))?,
            false,
        ),
        Err(e) => return Err(format!("cannot open lock {}: {e}", path.display())),
    };
    let st = rustix::fs::fstat(&fd).map_err(|e| format!("cannot inspect lock {}: {e}", path.display()))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(format!("refusing lock {}: it is not a regular file", path.display()));
    }
    Ok((File::from(fd), writable))
}

fn read_holder(file: &mut File) -> Option<Holder> {
    let mut data = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut data).ok()?;
    serde_json::from_str(data.trim()).ok()
}

impl ProfileLock {
    /// Takes the lock of `profile`, waiting while its holder can still end by itself; `note` is
    /// told (once per holder) that and for whom we wait, so the deployer sees it.
    pub fn acquire(profile: &Path, holder: Holder, mut note: impl FnMut(&str)) -> Result<ProfileLock, String> {
        let path = lock_path(profile)?;
        let (mut file, writable) = open_lock(&path)?;
        let start = Instant::now();
        let mut announced: Option<Option<Holder>> = None;
        loop {
            match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {
                    let mut lock = ProfileLock { file, writable, holder };
                    lock.write_holder();
                    return Ok(lock);
                }
                Err(rustix::io::Errno::WOULDBLOCK) => {}
                Err(e) => return Err(format!("cannot lock {}: {e}", path.display())),
            }
            let other = read_holder(&mut file);
            match decide(other.as_ref(), unix_now(), start.elapsed(), profile) {
                Decision::GiveUp(msg) => return Err(msg),
                Decision::Wait => {
                    if announced.as_ref() != Some(&other) {
                        note(&match &other {
                            Some(h) => format!(
                                "waiting for deploy {} ({}, started {}) of {} to end; it ends by itself by {}",
                                h.id,
                                h.deployer,
                                rollout_protocol::status::rfc3339(h.started_at),
                                profile.display(),
                                rollout_protocol::status::rfc3339(h.ends_by)
                            ),
                            None => format!("waiting for another deploy of {} to end", profile.display()),
                        });
                        announced = Some(other);
                    }
                    std::thread::sleep(POLL);
                }
            }
        }
    }

    /// The holding deploy's own deadline moved (a heartbeat, or the confirm window started).
    pub fn set_ends_by(&mut self, ends_by: u64) {
        if self.holder.ends_by != ends_by {
            self.holder.ends_by = ends_by;
            self.write_holder();
        }
    }

    fn write_holder(&mut self) {
        if !self.writable {
            return;
        }
        let Ok(mut data) = serde_json::to_vec(&self.holder) else {
            return;
        };
        data.push(b'\n');
        // Readers poll; a torn read only makes them wait one more round.
        let _ = self.file.set_len(0);
        let _ = self.file.seek(SeekFrom::Start(0));
        let _ = self.file.write_all(&data);
    }
}

impl Drop for ProfileLock {
    fn drop(&mut self) {
        // Say nothing stale to the next reader; the flock itself ends with the descriptor.
        if self.writable {
            let _ = self.file.set_len(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(id: &str, ends_by: u64) -> Holder {
        Holder {
            id: id.into(),
            pid: 42,
            deployer: "root from 10.0.0.1".into(),
            started_at: 1000,
            ends_by,
        }
    }

    #[test]
    fn waits_while_the_holder_can_still_end_by_itself_then_names_it() {
        let p = Path::new("/nix/var/nix/profiles/system");
        assert_eq!(
            decide(Some(&holder("a", 2000)), 1500, Duration::ZERO, p),
            Decision::Wait
        );
        assert_eq!(
            decide(Some(&holder("a", 2000)), 2000 + 30, Duration::ZERO, p),
            Decision::Wait
        );
        let Decision::GiveUp(msg) = decide(Some(&holder("abc", 2000)), 2031, Duration::ZERO, p) else {
            panic!("should give up")
        };
        assert!(
            msg.contains("deploy abc") && msg.contains("root from 10.0.0.1") && msg.contains("retry"),
            "{msg}"
        );
        assert_eq!(decide(None, 0, Duration::from_secs(5), p), Decision::Wait);
        assert!(matches!(decide(None, 0, UNKNOWN_WAIT, p), Decision::GiveUp(m) if m.contains("retry later")));
    }

    #[test]
    fn second_holder_waits_and_is_told_for_whom() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("prof");
        let first = ProfileLock::acquire(&p, holder("first-deploy", unix_now() + 60), |_| {}).unwrap();
        assert!(lock_path(&p).unwrap().ends_with("prof.rollout-lock"));
        let (tx, rx) = std::sync::mpsc::channel();
        let p2 = p.clone();
        let second = std::thread::spawn(move || {
            ProfileLock::acquire(&p2, holder("second", unix_now() + 60), |m| {
                let _ = tx.send(m.to_string());
            })
            .map(|_| ())
        });
        let note = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(note.contains("waiting for deploy first-deploy"), "{note}");
        drop(first);
        second.join().unwrap().unwrap();
    }

    #[test]
    fn an_expired_holder_is_named_in_the_refusal() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("prof");
        let _first = ProfileLock::acquire(&p, holder("stuck", 10), |_| {}).unwrap();
        let err = ProfileLock::acquire(&p, holder("second", unix_now() + 60), |_| {})
            .err()
            .unwrap();
        assert!(err.contains("locked by deploy stuck"), "{err}");
    }

    #[test]
    fn a_symlink_at_the_lock_name_is_never_followed() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("victim");
        std::fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, t.path().join("prof.rollout-lock")).unwrap();
        assert!(ProfileLock::acquire(&t.path().join("prof"), holder("x", unix_now() + 60), |_| {}).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    }
}
