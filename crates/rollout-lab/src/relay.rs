//! A userspace TCP relay that delays every chunk by a fixed time per direction: the hosts' SSH
//! port behind a simulated long link (this kernel has no netem), for the bench's latency mode.
//!
//! Std threads, not tokio: a relay carries a handful of SSH connections (a master, a copy, a
//! confirming login per host), each needing two readers and two writers that mostly sleep; the
//! lab has no async runtime and a blocking design keeps the delay logic a plain `sleep_until`.
//!
//! The model of the link: each chunk read from one side is stamped when it arrives and written to
//! the other side `delay` later (chunks keep their order and overlap in flight, so bandwidth is not
//! limited by the delay). A TCP handshake costs one round trip before the server sees the
//! connection: the relay accepts at once (the kernel does) but connects upstream only 3 × `delay`
//! later — SYN, SYN-ACK, ACK — so the server's first byte reaches the client 2 round trips after
//! its `connect`, as on a real link.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use std::path::{Path, PathBuf};

use crate::error::{io_err, LabError, Result};
use crate::Fleet;

/// One listening relay in front of one upstream address.
pub struct Relay {
    local: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Every socket the relay opened, shut down when it stops so that no thread stays blocked.
    sockets: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Relay({})", self.local)
    }
}

impl Relay {
    /// Listen on `listen` (port 0 picks a free one) and forward every connection to `upstream`,
    /// each chunk `delay` late in each direction.
    pub fn start(listen: SocketAddr, upstream: SocketAddr, delay: Duration) -> Result<Relay> {
        let listener = TcpListener::bind(listen).map_err(|e| LabError::Command {
            cmd: format!("relay: bind {listen}"),
            detail: e.to_string(),
        })?;
        let local = listener.local_addr().map_err(|e| LabError::Command {
            cmd: format!("relay: local address of {listen}"),
            detail: e.to_string(),
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let sockets: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let acceptor = {
            let (stop, sockets) = (stop.clone(), sockets.clone());
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    // Remembered here, before the acceptor can end: a drop then reaches it.
                    remember(&sockets, &client);
                    let sockets = sockets.clone();
                    std::thread::spawn(move || serve(client, upstream, delay, &sockets));
                }
            })
        };
        Ok(Relay {
            local,
            stop,
            sockets,
            acceptor: Some(acceptor),
        })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor, which then sees `stop` and ends.
        let _ = TcpStream::connect_timeout(&self.local, Duration::from_secs(1));
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        for s in self.sockets.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// Keep a clone of `s` so that [`Relay`]'s drop can shut it down.
fn remember(sockets: &Mutex<Vec<TcpStream>>, s: &TcpStream) {
    if let Ok(c) = s.try_clone() {
        sockets.lock().unwrap_or_else(|e| e.into_inner()).push(c);
    }
}

/// One relayed connection: open the upstream after the simulated handshake, then pump both ways.
fn serve(client: TcpStream, upstream: SocketAddr, delay: Duration, sockets: &Mutex<Vec<TcpStream>>) {
    let accepted = Instant::now();
    let _ = client.set_nodelay(true);
    // The client may already send (its SSH banner): stamp it now, deliver it once connected.
    let (to_up, from_client) = mpsc::channel();
    let Ok(client_r) = client.try_clone() else { return };
    let reader = std::thread::spawn(move || read_chunks(client_r, &to_up));
    std::thread::sleep((accepted + delay * 3).saturating_duration_since(Instant::now()));
    let Ok(server) = TcpStream::connect(upstream) else {
        let _ = client.shutdown(Shutdown::Both);
        let _ = reader.join();
        return;
    };
    remember(sockets, &server);
    let _ = server.set_nodelay(true);
    let (Ok(server_r), Ok(server_w), Ok(client_w)) = (server.try_clone(), server.try_clone(), client.try_clone())
    else {
        let _ = client.shutdown(Shutdown::Both);
        let _ = server.shutdown(Shutdown::Both);
        return;
    };
    let up = std::thread::spawn(move || write_chunks(server_w, &from_client, delay));
    let (to_client, from_server) = mpsc::channel();
    let down_reader = std::thread::spawn(move || read_chunks(server_r, &to_client));
    write_chunks(client_w, &from_server, delay);
    let _ = up.join();
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
    let _ = reader.join();
    let _ = down_reader.join();
}

/// Read `from` until EOF or an error, sending each chunk with the time it arrived; an empty chunk
/// marks the end.
fn read_chunks(mut from: TcpStream, to: &mpsc::Sender<(Instant, Vec<u8>)>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(n) if n > 0 => {
                if to.send((Instant::now(), buf[..n].to_vec())).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            _ => {
                let _ = to.send((Instant::now(), Vec::new()));
                return;
            }
        }
    }
}

/// Write each chunk `delay` after it arrived; at the end, pass the half-close on (or, when the
/// other side is gone, cut both directions so that the readers end too).
fn write_chunks(mut to: TcpStream, from: &mpsc::Receiver<(Instant, Vec<u8>)>, delay: Duration) {
    while let Ok((at, chunk)) = from.recv() {
        std::thread::sleep((at + delay).saturating_duration_since(Instant::now()));
        if chunk.is_empty() {
            let _ = to.shutdown(Shutdown::Write);
            return;
        }
        if to.write_all(&chunk).is_err() {
            let _ = to.shutdown(Shutdown::Both);
            return;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Every host of a fleet behind its own [`Relay`], and an ssh_config that reaches them through
/// the relays (same aliases, keys and known_hosts; only `HostName` and `Port` differ). Dropping it
/// stops the relays and removes the config.
#[derive(Debug)]
pub struct DelayedSsh {
    relays: Vec<Relay>,
    config: PathBuf,
    delay: Duration,
}

impl DelayedSsh {
    /// The ssh_config to use instead of [`Fleet::ssh_config`]: `ssh -F THIS hostI` crosses the relay.
    pub fn ssh_config(&self) -> &Path {
        &self.config
    }
    /// The delay per direction.
    pub fn delay(&self) -> Duration {
        self.delay
    }
    /// Where host `i` (1-based) is reached through its relay.
    pub fn relay_addr(&self, i: usize) -> SocketAddr {
        self.relays[i - 1].local_addr()
    }
}

impl Drop for DelayedSsh {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.config);
    }
}

/// `config` (the fleet's ssh_config) with `HostName`/`Port` of each `Host hostI` block replaced by
/// what `addr_of(I)` gives.
fn rewrite_config(config: &str, addr_of: impl Fn(usize) -> Option<SocketAddr>) -> String {
    let mut out = String::new();
    let mut current: Option<SocketAddr> = None;
    for line in config.lines() {
        let t = line.trim_start();
        if let Some(name) = t.strip_prefix("Host ") {
            current = name
                .trim()
                .strip_prefix("host")
                .and_then(|i| i.parse().ok())
                .and_then(&addr_of);
        }
        match current {
            Some(a) if t.starts_with("HostName ") => out.push_str(&format!("  HostName {}", a.ip())),
            Some(a) if t.starts_with("Port ") => out.push_str(&format!("  Port {}", a.port())),
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

impl Fleet {
    /// Put every host's SSH port behind a relay that delays each chunk by `delay` per direction
    /// (so one round trip costs at least 2 × `delay`); see [`DelayedSsh`].
    pub fn delayed_ssh(&self, delay: Duration) -> Result<DelayedSsh> {
        let mut relays = Vec::new();
        for i in 1..=self.len() {
            let h = self.host(i);
            let upstream = SocketAddr::from((h.address, h.port));
            relays.push(Relay::start(SocketAddr::from(([127, 0, 0, 1], 0)), upstream, delay)?);
        }
        let base = self.ssh_config();
        let text = std::fs::read_to_string(&base).map_err(io_err(&base))?;
        let text = rewrite_config(&text, |i| relays.get(i.wrapping_sub(1)).map(Relay::local_addr));
        let config = self.state_dir().join(format!(
            "ssh_config.delay-{}ms-{}-{}",
            delay.as_millis(),
            std::process::id(),
            relays[0].local_addr().port()
        ));
        std::fs::write(&config, text).map_err(io_err(&config))?;
        Ok(DelayedSsh { relays, config, delay })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on a free loopback port: answers every chunk with the same bytes.
    fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    /// Time for `rounds` one-byte ping-pongs over a new connection to `addr`, connect included.
    fn ping_pong(addr: SocketAddr, rounds: usize) -> Duration {
        let t = Instant::now();
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        for i in 0..rounds {
            s.write_all(&[i as u8]).unwrap();
            let mut b = [0u8; 1];
            s.read_exact(&mut b).unwrap();
            assert_eq!(b[0], i as u8, "the relay passes bytes on unchanged");
        }
        t.elapsed()
    }

    #[test]
    fn every_round_trip_over_the_relay_costs_at_least_twice_the_delay() {
        let echo = echo_server();
        let delay = Duration::from_millis(40);
        let relay = Relay::start("127.0.0.1:0".parse().unwrap(), echo, delay).unwrap();
        let rounds = 3;
        let direct = ping_pong(echo, rounds);
        let relayed = ping_pong(relay.local_addr(), rounds);
        // Each ping-pong crosses the relay twice; the first also waits for the simulated handshake
        // (3 × delay before the upstream connection exists, which holds the first ping).
        let floor = delay * 2 * rounds as u32 + delay * 2;
        assert!(
            relayed >= direct + floor,
            "relayed {relayed:?}, direct {direct:?}: expected at least {floor:?} more"
        );
    }

    #[test]
    fn the_delayed_config_points_each_host_at_its_relay_and_keeps_the_rest() {
        let base = "# x\n\nHost host1\n  HostName 127.0.0.11\n  Port 2200\n  HostKeyAlias host1\n\nHost host2\n  HostName 127.0.0.12\n  Port 2200\n";
        let out = rewrite_config(base, |i| (i == 1).then(|| "127.0.0.1:4000".parse().unwrap()));
        assert_eq!(
            out,
            "# x\n\nHost host1\n  HostName 127.0.0.1\n  Port 4000\n  HostKeyAlias host1\n\nHost host2\n  HostName 127.0.0.12\n  Port 2200\n"
        );
    }

    #[test]
    fn a_half_close_reaches_the_other_side_and_the_relay_stops_cleanly() {
        let echo = echo_server();
        let relay = Relay::start("127.0.0.1:0".parse().unwrap(), echo, Duration::from_millis(5)).unwrap();
        let mut s = TcpStream::connect(relay.local_addr()).unwrap();
        s.write_all(b"hello").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        s.read_to_end(&mut back).unwrap();
        assert_eq!(back, b"hello", "all bytes come back, then EOF");
        let mut open = TcpStream::connect(relay.local_addr()).unwrap();
        drop(relay);
        let mut b = [0u8; 1];
        open.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        match open.read(&mut b) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("a stopped relay closes its connections; got {other:?}"),
        }
    }
}
