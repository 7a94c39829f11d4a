//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Fixed timestamp so test builds are comparable.
pub const EPOCH: i64 = 1_735_689_600;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub struct Run {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the habuild binary with the test cache and a fixed epoch.
pub fn habuild(args: &[&str]) -> Run {
    let cache = std::env::var("HABUILD_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target/habuild-test-cache"));
    let out = Command::new(env!("CARGO_BIN_EXE_habuild"))
        .args(args)
        .arg("--cache-dir")
        .arg(cache)
        .env("SOURCE_DATE_EPOCH", EPOCH.to_string())
        .env("HABUILD_ROOT", repo_root())
        .output()
        .expect("running habuild");
    let run = Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    };
    eprintln!("habuild {}:\n{}", args.join(" "), run.stderr);
    run
}

/// Runs the habuild binary without build options (e.g. `habuild test`).
pub fn habuild_plain(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_habuild"))
        .args(args)
        .env("HABUILD_ROOT", repo_root())
        .output()
        .expect("running habuild");
    let run = Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    };
    eprintln!("habuild {}:\n{}", args.join(" "), run.stderr);
    run
}

/// Runs a checking tool; panics with its output when it fails.
pub fn sh(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (run `habuild doctor --install`)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn sha256(p: &Path) -> String {
    sh(Command::new("sha256sum").arg(p))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

pub fn debugfs_cat(fs: &Path, path: &str) -> String {
    sh(Command::new("debugfs")
        .arg("-R")
        .arg(format!("cat {path}"))
        .arg(fs))
}

pub fn debugfs_stat(fs: &Path, path: &str) -> String {
    sh(Command::new("debugfs")
        .arg("-R")
        .arg(format!("stat {path}"))
        .arg(fs))
}

/// Names in a directory of an ext4 image.
pub fn debugfs_ls(fs: &Path, dir: &str) -> Vec<String> {
    sh(Command::new("debugfs")
        .arg("-R")
        .arg(format!("ls -p {dir}"))
        .arg(fs))
    .lines()
    .filter_map(|l| l.split('/').nth(5).map(str::to_string))
    .filter(|n| !n.is_empty() && n != "." && n != "..")
    .collect()
}
