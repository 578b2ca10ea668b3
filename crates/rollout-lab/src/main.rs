//! `rollout-lab` CLI: start, inspect, fault-inject and stop a fleet of simulated Nix hosts.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use rollout_lab::{Fleet, LabOptions};

#[derive(Parser)]
#[command(
    name = "rollout-lab",
    version,
    about = "A local fleet of simulated Nix hosts for testing rollout"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start host1..hostN (fresh stores)
    Up {
        /// Number of hosts (1..=1000; 255 with --netns)
        n: usize,
        /// State directory (absolute path without whitespace)
        #[arg(long)]
        state: PathBuf,
        /// Give each host its own network namespace (10.77.I.2, reached via a veth pair)
        #[arg(long)]
        netns: bool,
        /// sshd port on every host (0 = pick a free one)
        #[arg(long, default_value_t = 22)]
        port: u16,
    },
    /// Stop everything `up` started and remove the state dir
    Down {
        #[arg(long)]
        state: PathBuf,
        /// Keep the state dir (logs, stores)
        #[arg(long)]
        keep: bool,
    },
    /// Put every host's SSH port behind a relay delaying each chunk by MS per direction; prints
    /// the ssh_config that goes through it and relays until interrupted
    Delay {
        #[arg(long)]
        state: PathBuf,
        /// Delay per direction, in milliseconds
        #[arg(long)]
        ms: u64,
    },
    /// One line per host: address, holder / nix-daemon / sshd liveness
    Status {
        #[arg(long)]
        state: PathBuf,
    },
    /// netns mode: cut a host's link
    Cut {
        host: String,
        #[arg(long)]
        state: PathBuf,
    },
    /// netns mode: bring a host's link back up
    Heal {
        host: String,
        #[arg(long)]
        state: PathBuf,
    },
    /// Stop a host's sshd listener
    KillSshd {
        host: String,
        #[arg(long)]
        state: PathBuf,
    },
    /// (Re)start a host's sshd
    RestartSshd {
        host: String,
        #[arg(long)]
        state: PathBuf,
    },
    /// Reboot a host: kill all its processes, empty its /tmp, start its daemons, run its boot steps
    /// (/nix/var/rollout-lab/boot.d/*)
    Reboot {
        host: String,
        #[arg(long)]
        state: PathBuf,
    },
    /// Run a command as root inside a host (works without its sshd)
    Exec {
        host: String,
        #[arg(long)]
        state: PathBuf,
        /// Command and arguments (after --)
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Bring down fleets in /tmp/rollout-lab-* leaked by killed test processes
    Gc {
        /// Only list them
        #[arg(long)]
        dry_run: bool,
    },
    /// Print `export NIX_SSHOPTS=...` for the fleet
    Env {
        #[arg(long)]
        state: PathBuf,
    },
}

fn pid(p: Option<u32>) -> String {
    p.map(|p| p.to_string()).unwrap_or_else(|| "dead".into())
}

/// `delay`: relays in front of every host until this process is interrupted (the config it prints
/// stays in the state dir until `down`).
fn delay(state: &std::path::Path, ms: u64) -> Result<(), rollout_lab::LabError> {
    let f = Fleet::attach(state)?;
    let d = f.delayed_ssh(std::time::Duration::from_millis(ms))?;
    println!("ssh -F {} hostI", d.ssh_config().display());
    use std::io::Write;
    let _ = std::io::stdout().flush();
    loop {
        std::thread::park();
    }
}

fn real_main() -> Result<ExitCode, rollout_lab::LabError> {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // help and version go to stdout with exit 0; every usage error exits 1
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return Ok(ExitCode::from(code));
        }
    };
    match cli.cmd {
        Cmd::Up { n, state, netns, port } => {
            let mut f = Fleet::up(
                n,
                LabOptions {
                    state_dir: state,
                    netns,
                    port,
                    keep_state: true,
                },
            )?;
            f.set_down_on_drop(false);
            println!("ssh -F {} host1", f.ssh_config().display());
        }
        Cmd::Down { state, keep } => {
            if !state.exists() {
                eprintln!("rollout-lab: nothing to stop ({} absent)", state.display());
                return Ok(ExitCode::SUCCESS);
            }
            let mut f = Fleet::attach(&state)?;
            f.set_keep_state(keep);
            f.down()?;
            eprintln!(
                "rollout-lab: stopped; {}",
                if keep {
                    format!("state kept in {}", state.display())
                } else {
                    format!("removed {}", state.display())
                }
            );
        }
        Cmd::Status { state } => {
            let f = Fleet::attach(&state)?;
            println!(
                "{:<8} {:<22} {:<10} {:<10} {:<10} {:<10} LINK",
                "HOST", "ADDRESS", "HOLDER", "NIX-DAEMON", "SSHD", "PORT"
            );
            let st = f.status();
            let up = st.iter().filter(|s| s.listening).count();
            for s in &st {
                println!(
                    "{:<8} {:<22} {:<10} {:<10} {:<10} {:<10} {}",
                    s.host.name,
                    format!("{}:{}", s.host.address, s.host.port),
                    pid(s.holder),
                    pid(s.nix_daemon),
                    pid(s.sshd),
                    if s.listening { "listening" } else { "closed" },
                    match s.link_up {
                        Some(true) => "up",
                        Some(false) => "down",
                        None => "-",
                    }
                );
            }
            println!(
                "{up}/{} hosts listening for ssh; ssh_config: {}",
                st.len(),
                f.ssh_config().display()
            );
        }
        Cmd::Cut { host, state } => Fleet::attach(&state)?.cut(&host)?,
        Cmd::Heal { host, state } => Fleet::attach(&state)?.heal(&host)?,
        Cmd::KillSshd { host, state } => Fleet::attach(&state)?.kill_sshd(&host)?,
        Cmd::RestartSshd { host, state } => Fleet::attach(&state)?.restart_sshd(&host)?,
        Cmd::Reboot { host, state } => Fleet::attach(&state)?.reboot(&host)?,
        Cmd::Exec { host, state, cmd } => {
            let f = Fleet::attach(&state)?;
            let argv: Vec<&str> = cmd.iter().map(String::as_str).collect();
            let out = f.exec(&host, &argv)?;
            use std::io::Write;
            let _ = std::io::stdout().write_all(&out.stdout);
            let _ = std::io::stderr().write_all(&out.stderr);
            return Ok(ExitCode::from(out.status.code().unwrap_or(1).clamp(0, 255) as u8));
        }
        Cmd::Delay { state, ms } => delay(&state, ms)?,
        Cmd::Gc { dry_run } => {
            for d in Fleet::gc(dry_run)? {
                println!("{}{}", if dry_run { "would stop " } else { "stopped " }, d.display());
            }
        }
        Cmd::Env { state } => {
            let f = Fleet::attach(&state)?;
            println!("export ROLLOUT_LAB_DIR=\"{}\"", f.state_dir().display());
            println!("export NIX_SSHOPTS=\"{}\"", f.nix_sshopts());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    match real_main() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rollout-lab: error: {e}");
            ExitCode::from(1)
        }
    }
}
