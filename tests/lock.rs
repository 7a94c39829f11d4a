//! `habuild lock` and `habuild image` with a lock file, on a copy of the
//! test cluster's manifest: the lock is written, written again to the same
//! bytes, checked; a tampered lock fails the check and the build (before
//! any bootstrap) naming the package; a manifest asking for a package the
//! lock does not cover fails before any image work; and the amd64 director
//! built with the lock has exactly the locked packages installed.
//!
//! Needs the network (the Debian mirror of the host's apt configuration)
//! and root for the image build. Resolving takes apt about ten seconds per
//! base; the director's base comes from the test cache when it is there
//! (else a native amd64 bootstrap, about a minute).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use habuild::lock::{format, Lock, LockedBase};

fn read_lock(path: &Path) -> Lock {
    format::parse(path, &std::fs::read_to_string(path).unwrap()).unwrap()
}

fn base<'a>(lock: &'a Lock, arch: &str) -> &'a LockedBase {
    lock.bases
        .iter()
        .find(|b| b.arch == arch)
        .unwrap_or_else(|| panic!("no {arch} base in {lock:?}"))
}

/// Copies the lock with one package's version changed, as if the lock had
/// been made when the archive had another version.
fn tampered(lock: &Path, package: &str, to: &Path) {
    let text = std::fs::read_to_string(lock).unwrap();
    let prefix = format!("{{ name = \"{package}\", version = \"");
    let start = text.find(&prefix).expect("the package in the lock") + prefix.len();
    let end = start + text[start..].find('"').unwrap();
    let changed = format!("{}0.0-tampered{}", &text[..start], &text[end..]);
    std::fs::write(to, changed).unwrap();
}

#[test]
fn lock_is_written_canonically_checked_and_enforced_by_image() {
    let t = tempfile::tempdir().unwrap();
    let manifest = fixture_copy(t.path(), "test-cluster.toml", "test-cluster.toml");
    let m = manifest.to_str().unwrap();
    let bundle = t.path().join("bundle");
    habuild::testdoubles::build_bundle(&repo_root().join("tests/doubles"), "arm64", &bundle, EPOCH)
        .unwrap();
    let b = bundle.to_str().unwrap();
    let lock_path = t.path().join("habuild.lock");

    // 1. The lock beside the manifest: both bases, every package pinned.
    let started = Instant::now();
    let run = habuild_plain(&["lock", "--manifest", m, "--k8s-bundle", b]);
    assert!(run.status.success(), "habuild lock failed:\n{}", run.stderr);
    eprintln!("habuild lock took {:?}", started.elapsed());
    let first = std::fs::read(&lock_path).unwrap();
    let lock = read_lock(&lock_path);
    assert_eq!(lock.bases.len(), 2, "{lock:?}");
    let director = base(&lock, "amd64");
    assert_eq!(director.nodes, ["master-x86-1"]);
    assert!(director.requested.contains(&"keepalived".to_string()));
    for essential in [
        "dpkg",
        "apt",
        "base-files",
        "keepalived",
        "linux-image-amd64",
    ] {
        assert!(
            director.packages.iter().any(|p| p.name == essential),
            "{essential} is not in the director's base"
        );
    }
    let planes = base(&lock, "arm64");
    assert_eq!(
        planes.nodes,
        ["master-arm-1", "master-arm-2", "master-arm-3"]
    );
    for p in lock.bases.iter().flat_map(|b| &b.packages) {
        assert!(
            p.sha256.len() == 64 && p.sha256.chars().all(|c| c.is_ascii_hexdigit()),
            "{p:?}"
        );
    }
    // The bundle's packages are marked and pinned by the files' own sha256.
    for deb in std::fs::read_dir(&bundle).unwrap() {
        let deb = deb.unwrap().path();
        if deb.extension().is_none_or(|e| e != "deb") {
            continue;
        }
        let name = deb.file_name().unwrap().to_string_lossy().into_owned();
        let package = name.split('_').next().unwrap();
        let locked = planes
            .packages
            .iter()
            .find(|p| p.name == package)
            .unwrap_or_else(|| panic!("{package} is not in the arm64 base"));
        assert_eq!(locked.from, "bundle");
        assert_eq!(locked.sha256, sha256(&deb), "{name}");
        assert!(planes.bundle.iter().any(|f| f.file == name));
    }
    for r in &director.repositories {
        assert!(r.uri.is_none(), "the distro's mirror is not pinned: {r:?}");
        let s = r.snapshot.as_deref().expect("a Debian snapshot timestamp");
        assert!(
            s.len() == 16 && s.ends_with('Z') && s.as_bytes()[8] == b'T',
            "{s}"
        );
    }
    assert_eq!(
        director
            .repositories
            .iter()
            .map(|r| r.suite.as_str())
            .collect::<Vec<_>>(),
        ["trixie", "trixie-updates"]
    );
    let text = String::from_utf8(first.clone()).unwrap();
    assert!(!text.contains("://"), "no host name in the lock:\n{text}");

    // 2. Resolving again gives the same bytes, and --check agrees.
    let run = habuild_plain(&["lock", "--manifest", m, "--k8s-bundle", b]);
    assert!(run.status.success(), "{}", run.stderr);
    assert!(
        std::fs::read(&lock_path).unwrap() == first,
        "a second `habuild lock` changed the file"
    );
    let run = habuild_plain(&["lock", "--check", "--manifest", m, "--k8s-bundle", b]);
    assert!(run.status.success(), "lock --check failed:\n{}", run.stderr);
    assert!(run.stderr.contains("is current"), "{}", run.stderr);

    // 3. A lock with another keepalived version is not current.
    let bad = t.path().join("tampered.lock");
    tampered(&lock_path, "keepalived", &bad);
    let bad_s = bad.to_str().unwrap();
    let run = habuild_plain(&[
        "lock",
        "--check",
        "--manifest",
        m,
        "--k8s-bundle",
        b,
        "--lock",
        bad_s,
    ]);
    assert!(!run.status.success(), "a tampered lock passed --check");
    assert!(run.stderr.contains("is not current"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("keepalived (amd64): locked 0.0-tampered, now "),
        "{}",
        run.stderr
    );

    // 4. A manifest asking for a package the lock does not cover: stopped
    //    before any image work, naming the lock file, the key, node and package.
    let root = t.path().join("project");
    std::fs::create_dir(&root).unwrap();
    for dir in ["boards", "manifests", "overlays"] {
        sh(Command::new("cp")
            .arg("-a")
            .arg(repo_root().join(dir))
            .arg(&root));
    }
    let profile = root.join("manifests/distros/debian-13.toml");
    let text = std::fs::read_to_string(&profile).unwrap();
    let wanting_htop = text.replace(
        "director = [\"keepalived\", \"ipvsadm\"]",
        "director = [\"keepalived\", \"ipvsadm\", \"htop\"]",
    );
    assert_ne!(text, wanting_htop, "the profile's director packages moved");
    std::fs::write(&profile, wanting_htop).unwrap();
    let out = t.path().join("out");
    let o = out.to_str().unwrap();
    // The director's image, with these options added.
    let director_image = |root: &Path, extra: &[&str]| {
        let mut args = vec![
            "image",
            "--node",
            "master-x86-1",
            "--manifest",
            m,
            "--out",
            o,
        ];
        args.extend(extra);
        habuild_in(root, &args)
    };
    let started = Instant::now();
    let run = director_image(&root, &[]);
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    assert!(started.elapsed() < Duration::from_secs(30));
    let expected = format!(
        "{}: `base[0].requested`: node master-x86-1 asks for htop",
        lock_path.display()
    );
    assert!(run.stderr.contains(&expected), "{}", run.stderr);
    assert!(!run.stderr.contains("bootstrapping"), "{}", run.stderr);
    assert!(!out.exists(), "nothing is written");

    // 5. The archive does not give the tampered version: the build stops
    //    before bootstrapping, and says what to do.
    let run = director_image(&repo_root(), &["--lock", bad_s]);
    assert!(!run.status.success(), "{}", run.stderr);
    for needle in [
        "the archive no longer gives the locked packages",
        "keepalived (amd64): locked 0.0-tampered, now ",
        "--mirror",
        "habuild lock",
    ] {
        assert!(run.stderr.contains(needle), "{needle}: {}", run.stderr);
    }
    assert!(
        !run.stderr.contains("bootstrapping debian-13"),
        "{}",
        run.stderr
    );
    assert!(!out.join("testcluster/master-x86-1.img").exists());

    // 6. With the lock beside the manifest, the director builds and its
    //    installed packages are exactly the locked ones.
    let run = director_image(&repo_root(), &[]);
    assert!(run.status.success(), "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("installed packages match {}", lock_path.display())),
        "{}",
        run.stderr
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("testcluster/master-x86-1.json")).unwrap())
            .unwrap();
    let installed: Vec<(String, String, String)> = report["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let f = |k: &str| p[k].as_str().unwrap().to_string();
            (f("name"), f("version"), f("architecture"))
        })
        .collect();
    let locked: Vec<(String, String, String)> = director
        .installed()
        .into_iter()
        .map(|p| (p.name, p.version, p.architecture))
        .collect();
    pretty_assertions::assert_eq!(installed, locked);
}
