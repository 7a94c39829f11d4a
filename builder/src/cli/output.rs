//! What the subcommands print, and how their outcome becomes an exit code.
//!
//! With `--json`, a command prints exactly one JSON document on stdout
//! ([`document`]) and its human text goes to stderr ([`say`]); when it
//! fails before printing its document, `cli::main` prints [`error_document`]
//! instead, so a script always reads one document. Exit codes are one
//! table ([`exit_code`]): 0 success, 1 failure, 2 usage or configuration
//! error (clap's own usage errors exit 2 too).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::config::{ConfigErrors, UsageError};

/// Exit status of a failure: checks failed, a tool or a build failed.
pub const FAILURE: u8 = 1;
/// Exit status of a usage or configuration error (fix the command or file).
pub const USAGE: u8 = 2;

static PRINTED: AtomicBool = AtomicBool::new(false);

/// Prints the command's one JSON document on stdout.
pub fn document(value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).context("serialising the JSON output")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .context("writing the JSON output to stdout")?;
    PRINTED.store(true, Ordering::SeqCst);
    Ok(())
}

/// Whether [`document`] has printed this run's document.
pub fn document_printed() -> bool {
    PRINTED.load(Ordering::SeqCst)
}

/// A line of the command's human output: stdout, or stderr when stdout
/// carries the JSON document.
pub fn say(json: bool, line: &str) {
    if json {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

/// The exit status for an error (pure): usage and configuration errors
/// are 2, everything else 1.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err.downcast_ref::<ConfigErrors>().is_some() || err.downcast_ref::<UsageError>().is_some() {
        USAGE
    } else {
        FAILURE
    }
}

/// The document a `--json` command prints when it fails before its own
/// (pure): the message, the exit status, and a configuration error's
/// problems one by one.
pub fn error_document(err: &anyhow::Error) -> serde_json::Value {
    let problems: Vec<serde_json::Value> = err
        .downcast_ref::<ConfigErrors>()
        .map(|c| {
            c.0.iter()
                .map(|e| {
                    serde_json::json!({
                        "file": e.file,
                        "key": e.key,
                        "problem": e.problem,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    serde_json::json!({
        "ok": false,
        "exit_code": exit_code(err),
        "error": format!("{err:#}").trim_end(),
        "problems": problems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigError;

    #[test]
    fn exit_codes_are_one_table() {
        let cfg: anyhow::Error = ConfigErrors(vec![ConfigError {
            file: "m.toml".into(),
            key: "vip.address".into(),
            problem: "bad".into(),
        }])
        .into();
        assert_eq!(exit_code(&cfg), 2);
        // Context on top keeps the kind.
        assert_eq!(exit_code(&cfg.context("loading")), 2);
        let usage: anyhow::Error = UsageError("no node x".into()).into();
        assert_eq!(exit_code(&usage), 2);
        assert_eq!(exit_code(&anyhow::anyhow!("mkfs failed")), 1);
    }

    #[test]
    fn error_documents_list_the_problems() {
        let cfg: anyhow::Error = ConfigErrors(vec![ConfigError {
            file: "m.toml".into(),
            key: "vip.address".into(),
            problem: "bad".into(),
        }])
        .into();
        let d = error_document(&cfg);
        assert_eq!(d["ok"], false);
        assert_eq!(d["exit_code"], 2);
        assert_eq!(d["problems"][0]["key"], "vip.address");
        assert_eq!(d["problems"][0]["file"], "m.toml");
        let d = error_document(&anyhow::anyhow!("boom"));
        assert_eq!(d["exit_code"], 1);
        assert_eq!(d["error"], "boom");
        assert_eq!(d["problems"].as_array().unwrap().len(), 0);
    }
}
