//! The safety promises of the README's "Safety" section, end to end with
//! the habuild binary: a damaged cached base is noticed and rebuilt, never
//! built from. Builds the amd64 director (its native bootstrap takes about
//! a minute), with a private copy of the test cache's base so the shared
//! cache is never damaged.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn director_build(manifest: &Path, out: &Path, cache: &Path) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_habuild"));
    cmd.args(["image", "--node", "master-x86-1", "--manifest"])
        .arg(manifest)
        .arg("--out")
        .arg(out)
        .arg("--cache-dir")
        .arg(cache)
        .env("SOURCE_DATE_EPOCH", EPOCH.to_string())
        .env("HABUILD_ROOT", repo_root());
    let o = cmd.output().expect("running habuild");
    let run = Run {
        status: o.status,
        stdout: String::from_utf8_lossy(&o.stdout).into(),
        stderr: String::from_utf8_lossy(&o.stderr).into(),
    };
    eprintln!("habuild image (cache {}):\n{}", cache.display(), run.stderr);
    run
}

/// The director's base in the shared test cache, built if needed.
fn director_base(t: &Path) -> (String, PathBuf) {
    let manifest = repo_root().join("tests/fixtures/test-cluster.toml");
    let out = t.join("warm-out");
    let run = director_build(&manifest, &out, &test_cache());
    assert!(run.status.success(), "{}", run.stderr);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("testcluster/master-x86-1.json")).unwrap())
            .unwrap();
    let key = json["base_key"].as_str().unwrap().to_string();
    let entry = test_cache().join("base").join(&key);
    assert!(entry.join("rootfs").is_dir(), "{}", entry.display());
    (key, entry)
}

/// A private cache holding a copy of `entry` under `key`.
fn private_copy(t: &Path, key: &str, entry: &Path) -> PathBuf {
    let cache = t.join("cache");
    std::fs::create_dir_all(cache.join("base")).unwrap();
    sh(Command::new("cp")
        .args(["-a", "--reflink=auto"])
        .arg(entry)
        .arg(cache.join("base").join(key)));
    cache
}

#[test]
fn a_damaged_cached_base_is_rebuilt_not_built_from() {
    let t = tempfile::tempdir().unwrap();
    let (key, entry) = director_base(t.path());
    let cache = private_copy(t.path(), &key, &entry);
    let tree = cache.join("base").join(&key).join("rootfs");
    std::fs::remove_file(tree.join("usr/lib/systemd/systemd")).unwrap();

    let manifest = repo_root().join("tests/fixtures/test-cluster.toml");
    let out = t.path().join("out");
    let run = director_build(&manifest, &out, &cache);
    assert!(run.status.success(), "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("the cached base {key} is damaged"))
            && run.stderr.contains("/usr/lib/systemd/systemd: missing"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("base root filesystem (cached)"),
        "built from the damaged base:\n{}",
        run.stderr
    );
    assert!(
        tree.join("usr/lib/systemd/systemd").is_file(),
        "the base was not rebuilt"
    );
}
