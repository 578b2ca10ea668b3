//! `rollout`: the command-line edge. Parses flags, hands them to rollout-core, maps the result to
//! an exit code: 0 success, 1 bad input (nothing started), 2 usage, 3 deployment failed,
//! 4 deployment failed and was rolled back.

mod cli;
mod commands;
mod password;
mod render;

use clap::Parser;
use std::process::ExitCode;

/// Flags may come before `plan` (`rollout -d plan .#web`): clap then sees `plan` as the target,
/// so parse again with `plan` first unless a flake directory named `plan` is meant.
fn parse() -> cli::Cli {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let first = cli::Cli::try_parse_from(&argv);
    let misplaced = argv.iter().skip(2).position(|a| a == "plan").map(|i| i + 2);
    let retry = match (&first, misplaced) {
        (Ok(c), Some(_)) => c.deploy.target.as_deref() == Some("plan") && !std::path::Path::new("plan").exists(),
        (Err(_), Some(_)) => true,
        _ => false,
    };
    if let (true, Some(i)) = (retry, misplaced) {
        let mut moved = argv.clone();
        let plan = moved.remove(i);
        moved.insert(1, plan);
        if let Ok(c) = cli::Cli::try_parse_from(&moved) {
            return c;
        }
    }
    first.unwrap_or_else(|e| e.exit())
}

/// Write end of the pipe that turns SIGINT, SIGTERM and SIGHUP into a message for a thread.
static SIGNAL_PIPE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let b = sig as u8;
    // SAFETY: write(2) is async-signal-safe; the fd stays open for the life of the process.
    unsafe {
        libc::write(
            SIGNAL_PIPE.load(std::sync::atomic::Ordering::Relaxed),
            &b as *const u8 as *const libc::c_void,
            1,
        );
    }
}

/// On SIGINT, SIGTERM or SIGHUP a thread ends the SSH masters and exits: nothing of rollout's is
/// left running, and the agents on the targets roll back whatever this run did not confirm. (A
/// handler rather than a blocked mask, so that children start with the default signal state.)
fn handle_interrupts() {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe(2) into a local array; sigaction with a handler that only calls write(2).
    unsafe {
        if libc::pipe(fds.as_mut_ptr()) != 0 {
            return;
        }
        SIGNAL_PIPE.store(fds[1], std::sync::atomic::Ordering::Relaxed);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(s, &sa, std::ptr::null_mut());
        }
    }
    let read_fd = fds[0];
    std::thread::spawn(move || {
        let mut b = 0u8;
        // SAFETY: read(2) of one byte from our own pipe.
        let n = unsafe { libc::read(read_fd, &mut b as *mut u8 as *mut libc::c_void, 1) };
        if n == 1 {
            rollout_core::deploy::connection::end_all_masters();
            eprintln!("\nrollout: interrupted; profiles activated but not confirmed are rolled back by their targets");
            std::process::exit(128 + b as i32);
        }
    });
}

fn main() -> ExitCode {
    handle_interrupts();
    let cli = parse();
    let code = match cli.command {
        Some(cli::Command::Plan(args)) => commands::plan::run(args),
        None if cli.deploy.dry_run => commands::plan::run(cli.deploy),
        None => commands::deploy::run(cli.deploy),
    };
    ExitCode::from(code)
}
