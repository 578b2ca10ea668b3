//! `rollout man [--out DIR]`: man pages generated from the clap definition (the same text as
//! `--help`), with rollout's exit codes and environment variables added to `rollout(1)`.

use crate::cli::{Cli, ManArgs};
use clap::CommandFactory;
use clap_mangen::roff::{bold, roman, Roff};
use clap_mangen::Man;
use rollout_core::error::Error;
use std::io::Write;

/// Exit codes, as documented in the README (each has a test that produces it).
const EXIT_CODES: &[(&str, &str)] = &[
    ("0", "Every selected profile was deployed (activated and confirmed)."),
    (
        "1",
        "Bad input: a flake, flag or file was refused; nothing was built, copied or contacted.",
    ),
    ("2", "Usage error (unknown flag, missing value)."),
    (
        "3",
        "The deployment failed and the failed profile is unchanged on its target.",
    ),
    (
        "4",
        "The deployment failed and a target rolled back (seen, or certain because nothing will confirm it).",
    ),
    (
        "128+N",
        "Interrupted by signal N (130 SIGINT, 143 SIGTERM, 129 SIGHUP).",
    ),
];

const ENVIRONMENT: &[(&str, &str)] = &[
    ("NO_COLOR", "When set (and not empty), no colour with --color auto."),
    ("ROLLOUT_AGENT", "The agent to copy to targets (as --agent)."),
    (
        "ROLLOUT_SUDO_PASSWORD_<NODE>, ROLLOUT_SUDO_PASSWORD",
        "The sudo password for interactiveSudo, per node or for all (also DEPLOY_RS_SUDO_PASSWORD_<NODE>).",
    ),
];

/// `rollout(1)`: clap_mangen's sections, then EXIT STATUS and ENVIRONMENT.
fn render_main(out: &mut dyn Write) -> std::io::Result<()> {
    let man = Man::new(Cli::command().disable_help_subcommand(true));
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    man.render_subcommands_section(out)?;
    let mut roff = Roff::new();
    for (title, rows) in [("EXIT STATUS", EXIT_CODES), ("ENVIRONMENT", ENVIRONMENT)] {
        roff.control("SH", [title]);
        for (name, text) in rows {
            roff.control("TP", []);
            roff.text([bold(*name)]);
            roff.text([roman(*text)]);
        }
    }
    roff.to_writer(out)?;
    man.render_version_section(out)
}

/// Every subcommand's page (`rollout-deploy.1`, …) and `rollout.1` into `dir`.
fn write_all(dir: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let page = Man::new(sub.clone());
        written.push(page.generate_to(dir)?);
    }
    let main = dir.join("rollout.1");
    let mut f = std::fs::File::create(&main)?;
    render_main(&mut f)?;
    f.flush()?;
    written.push(main);
    Ok(written)
}

pub fn run(args: &ManArgs) -> Result<(), Error> {
    match &args.out {
        None => render_main(&mut std::io::stdout().lock())
            .map_err(|e| Error::bad_input(format!("man: cannot write the man page to stdout: {e}"))),
        Some(dir) => {
            let pages = write_all(dir).map_err(|e| {
                Error::bad_input(format!(
                    "--out {}: cannot write the man pages: {e}; expected a directory rollout can write",
                    dir.display()
                ))
            })?;
            for p in pages {
                println!("{}", p.display());
            }
            Ok(())
        }
    }
}
