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

/// The base root filesystem cache the tests share.
pub fn test_cache() -> PathBuf {
    std::env::var("HABUILD_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target/habuild-test-cache"))
}

/// A copy of `tests/fixtures/<fixture>` at `dir/<name>`, so that what goes
/// beside it (secrets, lock) is private to the test.
pub fn fixture_copy(dir: &Path, fixture: &str, name: &str) -> PathBuf {
    let to = dir.join(name);
    std::fs::copy(repo_root().join("tests/fixtures").join(fixture), &to).unwrap();
    to
}

/// Runs the habuild binary with the test cache and a fixed epoch.
pub fn habuild(args: &[&str]) -> Run {
    habuild_in(&repo_root(), args)
}

/// Runs the habuild binary without build options (e.g. `habuild test`).
pub fn habuild_plain(args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_habuild"));
    cmd.args(args);
    run(cmd, &repo_root(), args)
}

/// Runs the habuild binary with `root` as its project directory (boards,
/// distro profiles, overlays), the test cache and a fixed epoch.
pub fn habuild_in(root: &Path, args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_habuild"));
    cmd.args(args)
        .arg("--cache-dir")
        .arg(test_cache())
        .env("SOURCE_DATE_EPOCH", EPOCH.to_string());
    run(cmd, root, args)
}

fn run(mut cmd: Command, root: &Path, args: &[&str]) -> Run {
    let out = cmd
        .env("HABUILD_ROOT", root)
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
