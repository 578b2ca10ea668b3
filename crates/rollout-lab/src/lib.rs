//! rollout-lab: a local fleet of simulated Nix hosts (own mount/UTS namespace, own `/nix`, own sshd and
//! nix-daemon), plus test profiles (flakes without nixpkgs) for testing the rollout deployer.
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
mod setup;

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
