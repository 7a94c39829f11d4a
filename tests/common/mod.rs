//! Helpers shared by the integration tests: running habuild with the
//! shared base cache and a fixed epoch, fixtures in a private workspace,
//! and reading images back with independent tools. `flash` holds the
//! small test images of tests/flash.rs.
#![allow(dead_code)]

pub mod flash;

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
    cmd.env("HABUILD_ROOT", root);
    output_of(&mut cmd, &format!("habuild {}", args.join(" ")))
}

/// Runs `cmd` as it is set up, capturing its output; its stderr is shown
/// under `label` (the test's output when it fails).
pub fn output_of(cmd: &mut Command, label: &str) -> Run {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {label}: {e}"));
    let run = Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    };
    eprintln!("{label}:\n{}", run.stderr);
    run
}

/// `habuild image` of the fixture's director (Debian profile) into `out`;
/// fails the test when the build fails.
pub fn build_director(manifest: &Path, out: &Path) -> Run {
    let run = habuild(&director_image_args(manifest, out, &[]));
    assert!(
        run.status.success(),
        "habuild image failed:\n{}",
        run.stderr
    );
    run
}

/// A fixture copied into a temporary directory, with its own secrets beside
/// it and the arm64 test-double Kubernetes bundle: what a test needs to
/// build any node of the fixture. Dropping it removes everything.
pub struct Workspace {
    pub dir: tempfile::TempDir,
    pub manifest: PathBuf,
    pub secrets: PathBuf,
    pub bundle: PathBuf,
    pub out: PathBuf,
}

impl Workspace {
    /// `fixture` is a file name under tests/fixtures.
    pub fn new(fixture: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let manifest = fixture_copy(dir.path(), fixture, fixture);
        let secrets = manifest.with_extension("secrets.toml");
        let init = habuild_plain(&[
            "secrets",
            "init",
            "--manifest",
            manifest.to_str().unwrap(),
            "--secrets",
            secrets.to_str().unwrap(),
        ]);
        assert!(
            init.status.success(),
            "secrets init failed:\n{}",
            init.stderr
        );
        let bundle = dir.path().join("bundle");
        habuild::testdoubles::build_bundle(
            &repo_root().join("tests/doubles"),
            "arm64",
            &bundle,
            EPOCH,
        )
        .unwrap();
        let out = dir.path().join("out");
        Workspace {
            dir,
            manifest,
            secrets,
            bundle,
            out,
        }
    }

    pub fn m(&self) -> &str {
        self.manifest.to_str().unwrap()
    }

    pub fn o(&self) -> &str {
        self.out.to_str().unwrap()
    }

    /// `habuild image` with this workspace's manifest, secrets, bundle and
    /// output directory, plus `extra` (which images, other options).
    pub fn try_build(&self, extra: &[&str]) -> Run {
        let mut args = vec![
            "image",
            "--manifest",
            self.m(),
            "--secrets",
            self.secrets.to_str().unwrap(),
            "--k8s-bundle",
            self.bundle.to_str().unwrap(),
            "--out",
            self.o(),
        ];
        args.extend_from_slice(extra);
        habuild(&args)
    }

    /// [`Self::try_build`], failing the test when the build fails.
    pub fn build(&self, extra: &[&str]) -> Run {
        let run = self.try_build(extra);
        assert!(
            run.status.success(),
            "habuild image {extra:?} failed:\n{}",
            run.stderr
        );
        run
    }
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

/// Copies one partition of `img`, as `sfdisk -J` lists it, to `dir/name`.
pub fn extract_partition(img: &Path, part: &serde_json::Value, dir: &Path, name: &str) -> PathBuf {
    let start = part["start"].as_u64().unwrap() * 512;
    let size = part["size"].as_u64().unwrap() * 512;
    let out = dir.join(name);
    sh(Command::new("dd")
        .arg(format!("if={}", img.display()))
        .arg(format!("of={}", out.display()))
        .args([
            "bs=4M",
            "iflag=skip_bytes,count_bytes",
            "conv=sparse",
            "status=none",
        ])
        .arg(format!("skip={start}"))
        .arg(format!("count={size}")));
    out
}

/// A file of a FAT image, read with mtools.
pub fn mtype(fat: &Path, file: &str) -> String {
    sh(Command::new("mtype")
        .arg("-i")
        .arg(fat)
        .arg(format!("::{file}")))
}

/// `habuild image` arguments for the fixture's director (Debian profile)
/// into `out`, then `extra`.
pub fn director_image_args<'a>(
    manifest: &'a Path,
    out: &'a Path,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "image",
        "--node",
        "master-x86-1",
        "--distro",
        "debian-13",
        "--manifest",
        manifest.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args
}
