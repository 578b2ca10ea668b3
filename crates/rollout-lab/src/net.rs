//! Networking helpers: sshd liveness read from `/proc/PID/net/tcp` (no probe connections), free-port
//! selection for parallel fleets, and the veth pairs of `--netns` mode (10.77.I.1/30 ⇄ 10.77.I.2/30 only).

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::process::Command;
use std::sync::Mutex;

use crate::error::{LabError, Result};
use crate::setup::run;

/// Whether a TCP socket listens on addr:port, per the tcp table of the net namespace of `pid` (or the
/// caller's when `pid` is None).
pub(crate) fn is_listening(pid: Option<u32>, addr: Ipv4Addr, port: u16) -> bool {
    let path = match pid {
        Some(p) => format!("/proc/{p}/net/tcp"),
        None => "/proc/net/tcp".into(),
    };
    let Ok(s) = std::fs::read_to_string(path) else {
        return false;
    };
    let o = addr.octets();
    let want = format!("{:02X}{:02X}{:02X}{:02X}:{:04X}", o[3], o[2], o[1], o[0], port);
    s.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3 && f[1] == want && f[3] == "0A"
    })
}

fn listening_ports_any() -> HashSet<(String, u16)> {
    let mut set = HashSet::new();
    for path in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(s) = std::fs::read_to_string(path) else {
            continue;
        };
        for l in s.lines().skip(1) {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() > 3 && f[3] == "0A" {
                if let Some((a, p)) = f[1].split_once(':') {
                    if let Ok(p) = u16::from_str_radix(p, 16) {
                        set.insert((a.to_string(), p));
                    }
                }
            }
        }
    }
    set
}

static RESERVED: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// Cross-process port reservations: `/run/rollout-lab-ports/PORT` holding "PID STARTTIME UNIXTIME" of the
/// reserving process. A reservation only has to cover the time until sshd listens; it counts while its
/// owner lives and for at most 10 minutes.
const RES_DIR: &str = "/run/rollout-lab-ports";

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn reserved_elsewhere(port: u16) -> bool {
    let Ok(s) = std::fs::read_to_string(format!("{RES_DIR}/{port}")) else {
        return false;
    };
    let f: Vec<u64> = s.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    match f[..] {
        [pid, start, t] => crate::procs::start_time(pid as u32) == Some(start) && now_secs().saturating_sub(t) < 600,
        _ => false,
    }
}

/// Loopback address of host I in normal mode: 127.0.0.(10+I) (carrying into the third octet past 245).
pub(crate) fn loopback_addr(i: usize) -> Ipv4Addr {
    let n = 10 + i;
    Ipv4Addr::new(127, 0, (n / 256) as u8, (n % 256) as u8)
}

fn port_free_with(port: u16, n: usize, taken: &HashSet<(String, u16)>) -> bool {
    let wild = ["00000000", "00000000000000000000000000000000"];
    if wild.iter().any(|w| taken.contains(&(w.to_string(), port))) {
        return false;
    }
    (1..=n).all(|i| {
        let a = loopback_addr(i);
        let o = a.octets();
        let hex = format!("{:02X}{:02X}{:02X}{:02X}", o[3], o[2], o[1], o[0]);
        !taken.contains(&(hex, port)) && TcpListener::bind((a, port)).is_ok()
    })
}

/// Whether `port` is free on 127.0.0.11..=127.0.0.(10+n).
pub(crate) fn port_free(port: u16, n: usize) -> bool {
    port_free_with(port, n, &listening_ports_any())
}

/// Pick a port free on 127.0.0.11..=127.0.0.(10+n) and reserve it (in this process and machine-wide)
/// until released. Ports come from 20000..40000 starting at a random offset.
pub(crate) fn reserve_port(n: usize) -> Result<u16> {
    let _lock = crate::setup::Lock::take()?;
    let mut res = RESERVED.lock().unwrap_or_else(|e| e.into_inner());
    let taken = listening_ports_any();
    let seed = u64::from_str_radix(&rollout_protocol::id::random_hex(4), 16).unwrap_or(0);
    let _ = std::fs::create_dir_all(RES_DIR);
    for k in 0..4000u64 {
        let p = 20000 + ((seed + k * 7919) % 20000) as u16;
        if res.contains(&p) || reserved_elsewhere(p) || !port_free_with(p, n, &taken) {
            continue;
        }
        let me = std::process::id();
        let st = crate::procs::start_time(me).unwrap_or(0);
        let _ = std::fs::write(format!("{RES_DIR}/{p}"), format!("{me} {st} {}\n", now_secs()));
        res.push(p);
        return Ok(p);
    }
    Err(LabError::Invalid(format!("no free port for {n} hosts on 127.0.0.11..")))
}

pub(crate) fn release_port(port: u16) {
    let mut res = RESERVED.lock().unwrap_or_else(|e| e.into_inner());
    res.retain(|p| *p != port);
    let path = format!("{RES_DIR}/{port}");
    if let Ok(s) = std::fs::read_to_string(&path) {
        if s.split_whitespace().next() == Some(&std::process::id().to_string()) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Root-side veth name of host I.
pub(crate) fn veth_name(i: usize) -> String {
    format!("rlab{i}")
}
/// Interface name inside the host.
pub(crate) const HOST_IFACE: &str = "eth0";

pub(crate) fn netns_addrs(i: usize) -> Result<(Ipv4Addr, Ipv4Addr)> {
    if i == 0 || i > 255 {
        return Err(LabError::Netns(format!("host index {i} out of range 1..=255")));
    }
    Ok((Ipv4Addr::new(10, 77, i as u8, 1), Ipv4Addr::new(10, 77, i as u8, 2)))
}

pub(crate) fn link_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

fn ip() -> Command {
    Command::new("ip")
}

fn in_netns(holder: u32) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--target={holder}")).args(["--net", "--", "ip"]);
    c
}

/// Create host I's veth pair into the holder's net namespace and configure both ends.
pub(crate) fn setup_veth(i: usize, holder: u32) -> Result<String> {
    let (root_a, host_a) = netns_addrs(i)?;
    let name = veth_name(i);
    if link_exists(&name) {
        return Err(LabError::Netns(format!(
            "interface {name} already exists: another --netns fleet is probably up (only one at a time)"
        )));
    }
    run(ip().args([
        "link",
        "add",
        &name,
        "type",
        "veth",
        "peer",
        "name",
        HOST_IFACE,
        "netns",
        &holder.to_string(),
    ]))?;
    // no IPv6 link-local addresses: the only addresses are 10.77.I.1 and 10.77.I.2
    run(ip().args(["link", "set", "dev", &name, "addrgenmode", "none"]))?;
    run(ip().args(["addr", "add", &format!("{root_a}/30"), "dev", &name]))?;
    run(ip().args(["link", "set", "dev", &name, "up"]))?;
    run(in_netns(holder).args(["link", "set", "dev", HOST_IFACE, "addrgenmode", "none"]))?;
    run(in_netns(holder).args(["addr", "add", &format!("{host_a}/30"), "dev", HOST_IFACE]))?;
    run(in_netns(holder).args(["link", "set", "dev", HOST_IFACE, "up"]))?;
    run(in_netns(holder).args(["link", "set", "dev", "lo", "up"]))?;
    Ok(name)
}

/// Set the host side of the link down (cut) or up (heal); healing also brings the root side up.
pub(crate) fn set_link(holder: u32, root_name: &str, up: bool) -> Result<()> {
    let state = if up { "up" } else { "down" };
    run(in_netns(holder).args(["link", "set", "dev", HOST_IFACE, state]))?;
    if up && link_exists(root_name) {
        run(ip().args(["link", "set", "dev", root_name, "up"]))?;
    }
    if up {
        // forget neighbour entries that failed while the link was down ("No route to host")
        let _ = crate::setup::output(ip().args(["neigh", "flush", "dev", root_name]));
        let _ = crate::setup::output(in_netns(holder).args(["neigh", "flush", "dev", HOST_IFACE]));
    }
    Ok(())
}

/// Whether the host-side interface is administratively up.
pub(crate) fn link_is_up(holder: u32) -> Option<bool> {
    let out = crate::setup::output(in_netns(holder).args(["-o", "link", "show", "dev", HOST_IFACE])).ok()?;
    let s = String::from_utf8_lossy(&out.stdout);
    let flags = s.split('<').nth(1)?.split('>').next()?;
    Some(flags.split(',').any(|f| f == "UP"))
}

pub(crate) fn delete_link(name: &str) -> Result<()> {
    if link_exists(name) {
        run(ip().args(["link", "del", "dev", name]))?;
    }
    Ok(())
}
