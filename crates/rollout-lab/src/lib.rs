//! rollout-lab: a local fleet of simulated Nix hosts (own mount/UTS namespace, own `/nix`, own sshd and
//! nix-daemon), plus test profiles (flakes without nixpkgs) for testing the rollout deployer.
//!
//! Each host `hostI` is a holder process in its own mount+UTS namespace (and net namespace with
//! `--netns`) with `DIR/hosts/hostI/{nix,etc-nix,etc-hosts,tmp,root,home}` bind-mounted on `/nix`,
//! `/etc/nix`, `/etc/hosts`, `/tmp`, `/root`, `/home`; its own `nix-daemon` and `sshd` run inside. sshd
//! listens on `127.0.0.(10+I)` (or `10.77.I.2` with `--netns`). Users `root`, `deploy` (passwordless
//! sudo), `deploypw` (sudo with [`Fleet::sudo_password`]) and `hello` log in with [`Fleet::client_key`];
//! `ssh -F DIR/ssh_config hostI` and `NIX_SSHOPTS="-F DIR/ssh_config"` just work.
//!
//! Every process the fleet starts is recorded with its start time; teardown signals only those and
//! processes found inside the hosts (exact namespace ids of live recorded processes, the host's `/nix`
//! mount, or descent), never pid 1, 2 or the caller's ancestors.
//!
//! CLI: `rollout-lab up N --state DIR [--netns] [--port P]`, `down --state DIR [--keep]`,
//! `status --state DIR`, `cut|heal|kill-sshd|restart-sshd hostI --state DIR`,
//! `exec hostI --state DIR -- CMD...`, `env --state DIR`, `gc [--dry-run]`.
//!
//! ```no_run
//! let fleet = rollout_lab::Fleet::temp(2)?;
//! let out = fleet.exec("host1", &["hostname"])?;
//! assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "host1");
//! # Ok::<(), rollout_lab::LabError>(())
//! ```

pub mod error;
pub mod fleet;
mod net;
mod procs;
pub mod profiles;
pub mod relay;
mod setup;
pub mod testing;

pub use error::{LabError, Result};
pub use fleet::{Fleet, HostInfo, HostStatus, LabOptions};

/// Whether process `pid` is alive (not a zombie) and still has start time `start` (as recorded by the fleet).
pub fn process_alive(pid: u32, start: u64) -> bool {
    procs::start_time(pid) == Some(start)
}

/// Start time (field 22 of `/proc/PID/stat`) of a live, non-zombie process.
pub fn process_start_time(pid: u32) -> Option<u64> {
    procs::start_time(pid)
}

/// Whether this process runs as root (the fleet needs it; tests skip otherwise).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
