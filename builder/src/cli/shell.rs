//! Shell integration: `habuild completions SHELL` (clap_complete) and
//! `habuild man DIR` (clap_mangen), both generated from the clap
//! definition that `--help` prints, so neither can drift from it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, CommandFactory};

use super::Cli;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Directory for habuild.1 and habuild-<subcommand>.1 (created if missing).
    pub dir: PathBuf,
}

/// The clap command habuild parses, built (global options propagated).
pub fn command() -> clap::Command {
    let mut cmd = Cli::command();
    cmd.build();
    cmd
}

pub fn completions(a: &CompletionsArgs) -> Result<()> {
    let mut cmd = command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(a.shell, &mut cmd, "habuild", &mut out);
    Ok(())
}

pub fn man(a: &ManArgs) -> Result<()> {
    for page in write_man_pages(&a.dir)? {
        println!("{}", page.display());
    }
    Ok(())
}

/// Writes `habuild.1` and one page per visible subcommand, nested ones
/// included (`habuild-secrets-init.1`); returns the files written.
pub fn write_man_pages(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    write_page(&command(), "habuild", dir, &mut written)?;
    Ok(written)
}

fn write_page(
    cmd: &clap::Command,
    name: &str,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> Result<()> {
    let path = dir.join(format!("{name}.1"));
    let page = cmd
        .clone()
        .name(name.to_string())
        .bin_name(name.replace('-', " "));
    let mut bytes = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut bytes)
        .with_context(|| format!("rendering the man page {name}"))?;
    std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        write_page(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}
