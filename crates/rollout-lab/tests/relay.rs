//! The latency relay in front of real sshd: logins through [`Fleet::delayed_ssh`] work and pay the
//! delay on every round trip (a lower bound only: no upper-bound timing is asserted).

use rollout_lab::testing::{require_root, stdout};
use rollout_lab::Fleet;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Wall time of `ssh -F CONFIG deploy@host1 hostname`, and what it printed.
fn login(config: &std::path::Path) -> (Duration, String) {
    let t = Instant::now();
    let o = std::process::Command::new("ssh")
        .arg("-F")
        .arg(config)
        .args(["deploy@host1", "hostname"])
        .stdin(Stdio::null())
        .output()
        .expect("ssh runs");
    assert!(o.status.success(), "ssh: {}", String::from_utf8_lossy(&o.stderr));
    (t.elapsed(), stdout(&o))
}

#[test]
fn a_login_through_the_relay_reaches_the_host_and_pays_the_delay_on_each_round_trip() {
    require_root();
    let fleet = Fleet::temp(1).expect("fleet up");
    let delay = Duration::from_millis(50);
    let delayed = fleet.delayed_ssh(delay).expect("relays start");
    let (direct, name) = login(&fleet.ssh_config());
    assert_eq!(name.trim(), "host1");
    let (relayed, name) = login(delayed.ssh_config());
    assert_eq!(
        name.trim(),
        "host1",
        "the relay leads to the same host (same host key alias)"
    );
    // A login needs at least: the TCP handshake and the server's banner (2 round trips in the
    // relay's model), the key exchange, one authentication step and the session channel: 5.
    let floor = delay * 2 * 5;
    assert!(
        relayed >= direct + floor,
        "relayed login {relayed:?}, direct {direct:?}: expected at least {floor:?} more"
    );
    let config = delayed.ssh_config().to_path_buf();
    drop(delayed);
    assert!(!config.exists(), "the delayed ssh_config is removed with its relays");
}
