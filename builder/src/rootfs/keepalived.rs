//! keepalived's own check of a director's rendered configuration.
//!
//! Manifest validation knows habuild's rules; keepalived has its own ranges
//! and keywords (`advert_int` at most 255 s, weights below 2^31, ...), and on
//! a value it rejects it does not stop: it logs and falls back to a default,
//! so a director would boot with a VRRP instance or virtual server other than
//! the manifest's. Running `keepalived --config-test` on the rendered file,
//! after the director's tree is staged and before the image is assembled,
//! turns that into a build failure carrying keepalived's own message.
//!
//! The host's keepalived does the parsing: it needs no privileges and writes
//! nothing, and the keywords habuild renders mean the same in keepalived 2.2
//! (Debian 12 build hosts) and 2.3 (Debian 13 images). The interface the file
//! names (`lan0`) does not exist on a build host, which `--config-test`
//! reports as an error unless the file allows interfaces that appear later;
//! the rendered file does (`dynamic_interfaces`, see its template).

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util::CommandExt;

/// Where the director overlay renders the configuration.
pub const CONFIG_PATH: &str = "/etc/keepalived/keepalived.conf";

/// Checks the configuration in a director's staged root tree.
pub fn check_staged_root(root: &Path) -> Result<()> {
    crate::host::doctor::require(&["keepalived"])
        .context("keepalived checks the director's configuration at build time")?;
    check_file(&root.join(CONFIG_PATH.trim_start_matches('/'))).with_context(|| {
        format!(
            "{CONFIG_PATH}, rendered from the manifest ([vip], [loadbalancer] and \
             the nodes), does not pass keepalived's config test; no image was written"
        )
    })
}

/// `keepalived --config-test` on one file. The error carries keepalived's
/// messages (file, line and what it rejects).
pub fn check_file(conf: &Path) -> Result<()> {
    // keepalived only warns about a missing configuration file and exits 0.
    let meta = std::fs::metadata(conf)
        .with_context(|| format!("reading the keepalived configuration {}", conf.display()))?;
    if !meta.is_file() || meta.len() == 0 {
        bail!(
            "{} is not a non-empty file (the director overlay renders it)",
            conf.display()
        );
    }
    config_test_command(conf)
        .run_checked()
        .with_context(|| format!("keepalived's config test rejects {}", conf.display()))
}

/// The command line that checks `conf`.
pub fn config_test_command(conf: &Path) -> Command {
    let mut cmd = Command::new("keepalived");
    // `--config-test` takes a log file only as `--config-test=FILE`; without
    // one keepalived reports to stderr, whose tail run_checked keeps.
    cmd.arg("--config-test").arg("--use-file").arg(conf);
    cmd
}

#[cfg(test)]
#[path = "keepalived_tests.rs"]
mod tests;
