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
    build_node(manifest, "master-x86-1", out, cache, &[])
}

fn build_node(
    manifest: &Path,
    node: &str,
    out: &Path,
    cache: &Path,
    env: &[(&str, String)],
) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_habuild"));
    cmd.args(["image", "--node", node, "--manifest"])
        .arg(manifest)
        .arg("--out")
        .arg(out)
        .arg("--cache-dir")
        .arg(cache)
        .env("SOURCE_DATE_EPOCH", EPOCH.to_string())
        .env("HABUILD_ROOT", repo_root());
    for (k, v) in env {
        cmd.env(k, v);
    }
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

fn verify(image: &Path) -> Run {
    habuild_plain(&["verify", image.to_str().unwrap()])
}

fn sums(dir: &Path) -> std::collections::BTreeMap<String, String> {
    std::fs::read_to_string(dir.join("SHA256SUMS"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once("  "))
        .map(|(h, n)| (n.to_string(), h.to_string()))
        .collect()
}

/// Two directors in one output directory; the second one's rebuild is
/// killed (SIGKILL, through the test hook) after its first artifact was
/// renamed into place. The other node's files and SHA256SUMS entries stay
/// good throughout; the interrupted node fails `verify` until the next
/// `habuild image` (of any node) completes its publish; and `verify`
/// fails for a file SHA256SUMS does not list.
#[test]
fn an_interrupted_publish_is_completed_and_keeps_the_other_nodes_sums() {
    use std::os::unix::process::ExitStatusExt;
    let t = tempfile::tempdir().unwrap();
    let manifest = repo_root().join("tests/fixtures/two-directors.toml");
    let out = t.path().join("out");
    let dir = out.join("twodirectors");
    let cache = test_cache();
    for node in ["master-x86-1", "master-x86-2"] {
        let run = build_node(&manifest, node, &out, &cache, &[]);
        assert!(run.status.success(), "{}", run.stderr);
    }
    let before = sums(&dir);
    assert_eq!(before.len(), 8, "{before:?}");
    let (one, two) = (dir.join("master-x86-1.img"), dir.join("master-x86-2.img"));

    // Another epoch: every artifact of master-x86-2 changes.
    let later = (EPOCH + 86_400).to_string();
    let run = build_node(
        &manifest,
        "master-x86-2",
        &out,
        &cache,
        &[
            ("SOURCE_DATE_EPOCH", later.clone()),
            ("HABUILD_TEST_PUBLISH_STOP_AFTER", "2".into()),
        ],
    );
    assert_eq!(run.status.signal(), Some(9), "not killed: {}", run.stderr);
    let v = verify(&one);
    assert!(
        v.status.success(),
        "the other node suffered:\n{}{}",
        v.stdout,
        v.stderr
    );
    let v = verify(&two);
    assert!(
        !v.status.success(),
        "a half-published node passed:\n{}",
        v.stdout
    );

    // The next build, of the other node, completes it first.
    let run = build_node(&manifest, "master-x86-1", &out, &cache, &[]);
    assert!(run.status.success(), "{}", run.stderr);
    let after = sums(&dir);
    assert_eq!(after.len(), 8, "{after:?}");
    assert!(
        run.stderr
            .contains("completed the interrupted publish of master-x86-2"),
        "{}",
        run.stderr
    );
    for n in ["master-x86-1.img", "master-x86-1.json"] {
        assert_eq!(after[n], before[n], "{n}");
    }
    for n in [
        "master-x86-2.img",
        "master-x86-2.img.bmap",
        "master-x86-2.json",
    ] {
        assert_ne!(after[n], before[n], "{n} is not the new one");
        assert_eq!(after[n], sha256(&dir.join(n)), "{n}");
    }
    sh(Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(&dir));
    let json = std::fs::read_to_string(dir.join("master-x86-2.json")).unwrap();
    assert!(
        json.contains(&format!("\"source_date_epoch\": {later}")),
        "{json}"
    );
    for img in [&one, &two] {
        let v = verify(img);
        assert!(v.status.success(), "{}{}", v.stdout, v.stderr);
    }
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A file SHA256SUMS does not list fails verify, even when all else matches.
    let text = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
    let kept: String = text
        .lines()
        .filter(|l| !l.ends_with("  master-x86-1.img"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(dir.join("SHA256SUMS"), kept).unwrap();
    let v = verify(&one);
    assert!(!v.status.success(), "{}", v.stdout);
    assert!(
        v.stdout.contains("MISMATCH  master-x86-1.img against") && v.stdout.contains("no entry"),
        "{}",
        v.stdout
    );
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Runs `args` as user nobody; its output when it succeeds.
fn as_nobody(args: &[&str]) -> Option<String> {
    let o = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .args(args)
        .output()
        .unwrap();
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// A control plane's image carries the cluster's CA keys: it, its
/// firmware bundle and their directory are private to the user who built
/// them, while verify and flash keep working. (The control plane is built
/// on the amd64 board: the same secrets as on a Pi, without the arm64
/// bootstrap.)
#[test]
fn a_control_plane_image_is_private() {
    let t = tempfile::tempdir().unwrap();
    // Others may pass through the parents, as through a home directory.
    std::fs::set_permissions(
        t.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let text = std::fs::read_to_string(repo_root().join("tests/fixtures/test-cluster.toml"))
        .unwrap()
        .replace("board = \"rpi4\"", "board = \"amd64\"")
        .replace("name = \"testcluster\"", "name = \"amdcluster\"");
    let manifest = t.path().join("amd.toml");
    std::fs::write(&manifest, text).unwrap();
    let m = manifest.to_str().unwrap();
    assert!(habuild_plain(&["secrets", "init", "--manifest", m])
        .status
        .success());
    let out = t.path().join("out");
    let run = habuild(&[
        "image",
        "--node",
        "master-arm-1",
        "--manifest",
        m,
        "--without-kubernetes",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", run.stderr);
    let dir = out.join("amdcluster");
    let img = dir.join("master-arm-1.img");
    assert_eq!(mode(&img), 0o600);
    assert_eq!(mode(&dir.join("master-arm-1-firmware.tar.gz")), 0o600);
    assert_eq!(mode(&dir) & 0o007, 0, "others can list {}", dir.display());
    let keys = sh(Command::new("grep")
        .args(["-a", "-c", "BEGIN PRIVATE KEY"])
        .arg(&img));
    assert!(
        keys.trim().parse::<u32>().unwrap() > 0,
        "no key in the image?"
    );
    assert_eq!(
        as_nobody(&[
            "grep",
            "-a",
            "-c",
            "BEGIN PRIVATE KEY",
            img.to_str().unwrap()
        ]),
        None,
        "another user reads the keys"
    );
    assert_eq!(as_nobody(&["ls", dir.to_str().unwrap()]), None);

    let v = verify(&img);
    assert!(v.status.success(), "{}{}", v.stdout, v.stderr);
    let copy = t.path().join("copy.img");
    let f = habuild_plain(&["flash", img.to_str().unwrap(), copy.to_str().unwrap()]);
    assert!(f.status.success(), "{}", f.stderr);
    let v = habuild_plain(&[
        "verify",
        copy.to_str().unwrap(),
        "--image",
        img.to_str().unwrap(),
    ]);
    assert!(v.status.success(), "{}{}", v.stdout, v.stderr);
}
