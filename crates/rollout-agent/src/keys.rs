//! `put-key`: one secret from stdin into `dest_dir/name`. The file is created fresh and exclusive
//! (`O_EXCL|O_NOFOLLOW`, mode 0600, root's), given its owner, group and mode, and only then filled,
//! fsynced and renamed over the name inside the directory opened once — so the content is never
//! readable by anyone it is not meant for, and a symlink at the name is replaced, never followed.

use rollout_protocol::command::KeyArgs;
use rustix::fd::OwnedFd;
use rustix::fs::{AtFlags, Gid, Mode, OFlags, Uid};
use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};

fn uid_of(user: &str) -> Result<u32, String> {
    if let Ok(n) = user.parse::<u32>() {
        return Ok(n);
    }
    let c = CString::new(user).map_err(|_| format!("user {user:?} is not a valid name"))?;
    // SAFETY: getpwnam returns a pointer into static storage or null; the uid is copied at once.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    if pw.is_null() {
        return Err(format!("no user named {user} on this machine"));
    }
    // SAFETY: pw is non-null and points to a valid passwd record.
    Ok(unsafe { (*pw).pw_uid })
}

fn gid_of(group: &str) -> Result<u32, String> {
    if let Ok(n) = group.parse::<u32>() {
        return Ok(n);
    }
    let c = CString::new(group).map_err(|_| format!("group {group:?} is not a valid name"))?;
    // SAFETY: getgrnam returns a pointer into static storage or null; the gid is copied at once.
    let gr = unsafe { libc::getgrnam(c.as_ptr()) };
    if gr.is_null() {
        return Err(format!("no group named {group} on this machine"));
    }
    // SAFETY: gr is non-null and points to a valid group record.
    Ok(unsafe { (*gr).gr_gid })
}

/// Why a destination directory is not safe for a key owned by `key_uid`, if it is not: another
/// user who owns it, or may write into it without the sticky bit, could remove or replace the key.
fn dest_problem(owner: u32, mode: u32, key_uid: u32) -> Option<String> {
    if owner != 0 && owner != key_uid {
        return Some(format!("belongs to uid {owner}, neither root nor the key's owner"));
    }
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Some(format!(
            "is writable by others (mode {:04o}) without the sticky bit",
            mode & 0o7777
        ));
    }
    None
}

/// The destination directory (created 0755 when missing), opened without following a final
/// symlink, and refused when someone else could tamper with what lands in it.
fn open_dest(k: &KeyArgs, key_uid: u32) -> Result<OwnedFd, String> {
    if !k.dest_dir.is_dir() {
        std::fs::create_dir_all(&k.dest_dir).map_err(|e| format!("cannot create {}: {e}", k.dest_dir.display()))?;
    }
    let dir = rustix::fs::open(
        &k.dest_dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("cannot open {}: {e}", k.dest_dir.display()))?;
    let st = rustix::fs::fstat(&dir).map_err(|e| format!("cannot inspect {}: {e}", k.dest_dir.display()))?;
    if let Some(why) = dest_problem(st.st_uid, st.st_mode, key_uid) {
        return Err(format!("refusing {}: it {why}", k.dest_dir.display()));
    }
    Ok(dir)
}

pub fn put_key(k: &KeyArgs) -> i32 {
    match put(k) {
        Ok(()) => {
            crate::log(&format!(
                "key {} written ({}:{}, {:04o})",
                k.dest_dir.join(&k.name).display(),
                k.user,
                k.group,
                k.permissions
            ));
            0
        }
        Err(e) => crate::fatal(&format!("key {}: {e}", k.dest_dir.join(&k.name).display())),
    }
}

fn put(k: &KeyArgs) -> Result<(), String> {
    let (uid, gid) = (uid_of(&k.user)?, gid_of(&k.group)?);
    let mut content = Vec::new();
    std::io::stdin()
        .read_to_end(&mut content)
        .map_err(|e| format!("cannot read the key from stdin: {e}"))?;
    let dir = open_dest(k, uid)?;
    let tmp = format!(".{}.rollout-tmp.{}", k.name, crate::statedir::random_hex());
    let fd = rustix::fs::openat(
        &dir,
        tmp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| format!("cannot create a temporary file: {e}"))?;
    let result = (|| {
        // Owner and mode first: the content never sits in a file with other permissions.
        rustix::fs::fchown(&fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
            .map_err(|e| format!("cannot give it to {}:{}: {e}", k.user, k.group))?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(k.permissions))
            .map_err(|e| format!("cannot set mode {:04o}: {e}", k.permissions))?;
        let mut f = File::from(fd);
        f.write_all(&content)
            .and_then(|()| f.sync_all())
            .map_err(|e| format!("cannot write it: {e}"))?;
        rustix::fs::renameat(&dir, tmp.as_str(), &dir, k.name.as_str())
            .map_err(|e| format!("cannot put it in place: {e}"))
    })();
    content.fill(0);
    if result.is_err() {
        let _ = rustix::fs::unlinkat(&dir, tmp.as_str(), AtFlags::empty());
    }
    let _ = rustix::fs::fsync(&dir);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_directory_others_could_tamper_with_is_refused() {
        assert_eq!(dest_problem(0, 0o40755, 1000), None, "root's /run/keys");
        assert_eq!(dest_problem(1000, 0o40750, 1000), None, "the key owner's own directory");
        assert_eq!(dest_problem(0, 0o41777, 1000), None, "a sticky /tmp-like directory");
        assert!(dest_problem(1001, 0o40755, 1000).unwrap().contains("uid 1001"));
        assert!(dest_problem(0, 0o40777, 1000)
            .unwrap()
            .contains("without the sticky bit"));
        assert!(dest_problem(0, 0o40775, 0).unwrap().contains("mode 0775"));
    }
}
