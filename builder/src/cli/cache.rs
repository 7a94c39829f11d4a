//! `habuild cache check|prune`: the base root filesystem cache.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use crate::rootfs::cache::{self, Health};

#[derive(Debug, Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    pub action: CacheAction,
    /// Cache of base root filesystems.
    #[arg(long, env = "HABUILD_CACHE", global = true)]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum CacheAction {
    /// Check every cached base against the content digest recorded when it
    /// was made; exit 1 when one is damaged or has no digest.
    Check,
    /// Remove damaged bases, bases without a digest, leftover bootstraps
    /// and work directories whose build is gone (--all: every base).
    Prune {
        /// Remove every base, sound ones too (they are bootstrapped again
        /// when next needed).
        #[arg(long)]
        all: bool,
    },
}

pub fn run(args: &CacheArgs) -> Result<()> {
    let dir = args
        .cache_dir
        .clone()
        .unwrap_or_else(crate::host::dirs::default_cache_dir);
    match args.action {
        CacheAction::Check => check(&dir),
        CacheAction::Prune { all } => prune(&dir, all),
    }
}

fn describe(h: &Health) -> String {
    match h {
        Health::Sound => "ok".into(),
        Health::Unsealed => {
            "NO DIGEST (made by an older habuild; it cannot be checked and is rebuilt before use)"
                .into()
        }
        Health::Damaged(what) => format!(
            "DAMAGED (it is rebuilt before use):\n    {}",
            what.join("\n    ")
        ),
    }
}

fn check(dir: &std::path::Path) -> Result<()> {
    let entries = cache::entries(dir)?;
    if entries.is_empty() {
        println!("no cached base in {}", dir.display());
        return Ok(());
    }
    let mut bad = 0;
    for e in &entries {
        let started = Instant::now();
        let health =
            cache::check(&e.path).with_context(|| format!("checking {}", e.path.display()))?;
        println!(
            "{}  {} ({:.2}s)",
            e.key,
            describe(&health),
            started.elapsed().as_secs_f64()
        );
        bad += usize::from(health != Health::Sound);
    }
    if bad > 0 {
        bail!(
            "{bad} of {} cached bases are not sound; `habuild cache prune` removes them",
            entries.len()
        );
    }
    Ok(())
}

fn prune(dir: &std::path::Path, all: bool) -> Result<()> {
    let mut removed = 0;
    for e in cache::entries(dir)? {
        let Some(_lock) = cache::try_lock_key(dir, &e.key)? else {
            println!("{}  in use by a build: kept", e.key);
            continue;
        };
        let health = cache::check(&e.path)?;
        if health == Health::Sound && !all {
            println!("{}  ok: kept", e.key);
            continue;
        }
        std::fs::remove_dir_all(&e.path)
            .with_context(|| format!("removing {}", e.path.display()))?;
        removed += 1;
        println!(
            "{}  removed ({})",
            e.key,
            describe(&health).lines().next().unwrap_or("")
        );
    }
    for p in cache::partials(dir)? {
        let Some(_lock) = cache::try_lock_key(dir, &p.key)? else {
            println!("{}.partial  a bootstrap in progress: kept", p.key);
            continue;
        };
        // A bootstrap killed hard leaves /proc, /sys and /dev mounted in it.
        crate::rootfs::base::unmount_under(&p.path)?;
        std::fs::remove_dir_all(&p.path)
            .with_context(|| format!("removing {}", p.path.display()))?;
        removed += 1;
        println!("{}.partial  removed (an interrupted bootstrap)", p.key);
    }
    for line in crate::util::workdir::remove_stale(dir)? {
        removed += usize::from(line.starts_with("removed"));
        println!("{line}");
    }
    println!("{removed} removed from {}", dir.display());
    Ok(())
}
