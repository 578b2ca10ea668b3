//! Where a profile lives and which generation it points at (parsed from symlinks, never from nix-env output).

use rollout_protocol::command::ProfileSpec;
use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

/// The environment variables profile resolution depends on (empty values count as unset).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileEnv {
    pub nix_state_dir: Option<String>,
    pub xdg_state_home: Option<String>,
    pub home: Option<String>,
}

impl ProfileEnv {
    pub fn from_process() -> ProfileEnv {
        let get = |k| std::env::var(k).ok().filter(|v: &String| !v.is_empty());
        ProfileEnv {
            nix_state_dir: get("NIX_STATE_DIR"),
            xdg_state_home: get("XDG_STATE_HOME"),
            home: get("HOME"),
        }
    }
}

/// Resolves the profile path as deploy-rs does. `dir_exists` is asked only about the legacy
/// `per-user/<U>` directory, so the function stays pure for tests.
pub fn resolve(spec: &ProfileSpec, env: &ProfileEnv, dir_exists: impl Fn(&Path) -> bool) -> Result<PathBuf, String> {
    let (user, name) = match spec {
        ProfileSpec::Path(p) => return Ok(p.clone()),
        ProfileSpec::User { user, name } => (user, name),
    };
    let state_dir = PathBuf::from(env.nix_state_dir.as_deref().unwrap_or("/nix/var/nix"));
    let profiles = state_dir.join("profiles");
    if user == "root" {
        return Ok(if name == "system" {
            profiles.join("system")
        } else {
            profiles.join("per-user/root").join(name)
        });
    }
    let legacy = profiles.join("per-user").join(user);
    if dir_exists(&legacy) {
        return Ok(legacy.join(name));
    }
    let state_home = match (&env.xdg_state_home, &env.home) {
        (Some(x), _) => PathBuf::from(x),
        (None, Some(h)) => Path::new(h).join(".local/state"),
        (None, None) => {
            return Err(format!(
                "cannot find the profile directory of user {user}: {} does not exist and neither \
                 XDG_STATE_HOME nor HOME is set",
                legacy.display()
            ))
        }
    };
    Ok(state_home.join("nix/profiles").join(name))
}

/// Generation number from a generation link's file name, `<profile name>-<N>-link`.
pub fn parse_generation_name(profile_name: &str, file_name: &str) -> Option<u64> {
    let digits = file_name
        .strip_prefix(profile_name)?
        .strip_prefix('-')?
        .strip_suffix("-link")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn profile_name(profile: &Path) -> io::Result<&str> {
    profile
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::other(format!("profile path {} has no usable file name", profile.display())))
}

/// Path of generation `n`'s link next to the profile.
pub fn generation_link(profile: &Path, n: u64) -> PathBuf {
    let name = profile
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    profile.with_file_name(format!("{name}-{n}-link"))
}

/// The generation the profile symlink points at; `None` when the profile does not exist yet.
pub fn current_generation(profile: &Path) -> Result<Option<u64>, String> {
    let meta = match std::fs::symlink_metadata(profile) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot inspect profile {}: {e}", profile.display())),
    };
    if !meta.file_type().is_symlink() {
        return Err(format!(
            "profile {} exists but is not a symlink to a generation",
            profile.display()
        ));
    }
    let target =
        std::fs::read_link(profile).map_err(|e| format!("cannot read profile link {}: {e}", profile.display()))?;
    let name = profile_name(profile).map_err(|e| e.to_string())?;
    target
        .file_name()
        .and_then(|f| f.to_str())
        .and_then(|f| parse_generation_name(name, f))
        .map(Some)
        .ok_or_else(|| {
            format!(
                "profile {} points to {}, which is not a {name}-<N>-link generation",
                profile.display(),
                target.display()
            )
        })
}

/// All generation numbers whose links exist next to the profile.
pub fn existing_generations(profile: &Path) -> Result<BTreeSet<u64>, String> {
    let name = profile_name(profile).map_err(|e| e.to_string())?;
    let dir = profile.parent().unwrap_or(Path::new("/"));
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => return Err(format!("cannot list {}: {e}", dir.display())),
    };
    let mut out = BTreeSet::new();
    for entry in entries.flatten() {
        if let Some(n) = entry.file_name().to_str().and_then(|f| parse_generation_name(name, f)) {
            out.insert(n);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(u: &str, n: &str) -> ProfileSpec {
        ProfileSpec::User {
            user: u.into(),
            name: n.into(),
        }
    }

    #[test]
    fn resolution_table() {
        let env = ProfileEnv {
            nix_state_dir: Some("/sd".into()),
            xdg_state_home: None,
            home: Some("/home/a".into()),
        };
        let no = |_: &Path| false;
        assert_eq!(
            resolve(&user("root", "system"), &env, no).unwrap(),
            PathBuf::from("/sd/profiles/system")
        );
        assert_eq!(
            resolve(&user("root", "foo"), &env, no).unwrap(),
            PathBuf::from("/sd/profiles/per-user/root/foo")
        );
        let bob = |p: &Path| p == Path::new("/sd/profiles/per-user/bob");
        assert_eq!(
            resolve(&user("bob", "hm"), &env, bob).unwrap(),
            PathBuf::from("/sd/profiles/per-user/bob/hm")
        );
        assert_eq!(
            resolve(&user("alice", "hm"), &env, no).unwrap(),
            PathBuf::from("/home/a/.local/state/nix/profiles/hm")
        );
        let xdg = ProfileEnv {
            xdg_state_home: Some("/x".into()),
            ..env.clone()
        };
        assert_eq!(
            resolve(&user("alice", "hm"), &xdg, no).unwrap(),
            PathBuf::from("/x/nix/profiles/hm")
        );
        let bare = ProfileEnv::default();
        assert_eq!(
            resolve(&user("root", "system"), &bare, no).unwrap(),
            PathBuf::from("/nix/var/nix/profiles/system")
        );
        assert!(resolve(&user("alice", "hm"), &bare, no).unwrap_err().contains("alice"));
        assert_eq!(
            resolve(&ProfileSpec::Path("/p/q".into()), &bare, no).unwrap(),
            PathBuf::from("/p/q")
        );
    }

    #[test]
    fn generation_names() {
        assert_eq!(parse_generation_name("test", "test-12-link"), Some(12));
        assert_eq!(parse_generation_name("test", "test-2-3-link"), None);
        assert_eq!(parse_generation_name("test", "test--link"), None);
        assert_eq!(parse_generation_name("test", "test-1-linkx"), None);
        assert_eq!(parse_generation_name("test", "other-1-link"), None);
        assert_eq!(parse_generation_name("test-2", "test-2-3-link"), Some(3));
        assert_eq!(parse_generation_name("test", "test-+1-link"), None);
        assert_eq!(generation_link(Path::new("/a/sys"), 4), PathBuf::from("/a/sys-4-link"));
    }

    #[test]
    fn generations_from_disk() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("prof");
        assert_eq!(current_generation(&p).unwrap(), None);
        std::os::unix::fs::symlink("/nowhere", d.path().join("prof-3-link")).unwrap();
        std::os::unix::fs::symlink("/nowhere", d.path().join("prof-10-link")).unwrap();
        std::os::unix::fs::symlink("/nowhere", d.path().join("prof-x-9-link")).unwrap();
        std::os::unix::fs::symlink("prof-10-link", &p).unwrap();
        assert_eq!(current_generation(&p).unwrap(), Some(10));
        assert_eq!(
            existing_generations(&p).unwrap().into_iter().collect::<Vec<_>>(),
            vec![3, 10]
        );
        let q = d.path().join("q");
        std::os::unix::fs::symlink("/nix/store/abc", &q).unwrap();
        assert!(current_generation(&q).unwrap_err().contains("not a q-<N>-link"));
        let f = d.path().join("file");
        std::fs::write(&f, "").unwrap();
        assert!(current_generation(&f).unwrap_err().contains("not a symlink"));
    }
}
