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
    let c = cache.to_str().unwrap();
    let check = habuild_plain(&["cache", "check", "--cache-dir", c]);
    assert!(check.status.success(), "{}{}", check.stdout, check.stderr);
    std::fs::remove_file(tree.join("usr/lib/systemd/systemd")).unwrap();
    std::fs::write(tree.join("usr/lib/x86_64-linux-gnu/libc.so.6"), b"").unwrap();
    let check = habuild_plain(&["cache", "check", "--cache-dir", c]);
    assert!(!check.status.success());
    assert!(
        check.stdout.contains(&format!("{key}  DAMAGED"))
            && check.stdout.contains("/usr/lib/systemd/systemd: missing")
            && check
                .stdout
                .contains("/usr/lib/x86_64-linux-gnu/libc.so.6: size"),
        "{}",
        check.stdout
    );

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
    let check = habuild_plain(&["cache", "check", "--cache-dir", c]);
    assert!(check.status.success(), "{}{}", check.stdout, check.stderr);

    // A package version edited in the cache's record (what <node>.json
    // would report): caught, and pruned.
    let record = cache.join("base").join(&key).join("record.json");
    let text = std::fs::read_to_string(&record).unwrap();
    let at = text.find("\"version\": \"").unwrap() + "\"version\": \"".len();
    std::fs::write(&record, format!("{}9:{}", &text[..at], &text[at..])).unwrap();
    let check = habuild_plain(&["cache", "check", "--cache-dir", c]);
    assert!(!check.status.success());
    assert!(
        check.stdout.contains("record.json was changed"),
        "{}",
        check.stdout
    );
    let prune = habuild_plain(&["cache", "prune", "--cache-dir", c]);
    assert!(prune.status.success(), "{}", prune.stderr);
    assert!(
        prune.stdout.contains(&format!("{key}  removed")),
        "{}",
        prune.stdout
    );
    assert!(!cache.join("base").join(&key).exists());
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
    // Five artifacts a node: .img, .img.bmap, .json, .cdx.json, firmware.
    let before = sums(&dir);
    assert_eq!(before.len(), 10, "{before:?}");
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
    assert_eq!(after.len(), 10, "{after:?}");
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
        "master-x86-2.cdx.json",
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

/// A `cp` first on PATH that records its pid in `$HABUILD_TEST_MARKER` and
/// sleeps (a child of its own) before doing the copy: it holds a build in
/// the layering step, with a tool running.
fn slow_cp(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let cp = bin.join("cp");
    std::fs::write(
        &cp,
        "#!/bin/sh\necho $$ > \"$HABUILD_TEST_MARKER\"\nsleep 300\nexec /bin/cp \"$@\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&cp, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

fn spawn_director_build(out: &Path, bin: &Path, marker: &Path) -> std::process::Child {
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    Command::new(env!("CARGO_BIN_EXE_habuild"))
        .args(["image", "--node", "master-x86-1", "--manifest"])
        .arg(repo_root().join("tests/fixtures/test-cluster.toml"))
        .arg("--out")
        .arg(out)
        .arg("--cache-dir")
        .arg(test_cache())
        .env("SOURCE_DATE_EPOCH", EPOCH.to_string())
        .env("HABUILD_ROOT", repo_root())
        .env("PATH", path)
        .env("HABUILD_TEST_MARKER", marker)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `what` (up to `secs`); panics naming it when it never holds.
fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !f() {
        assert!(std::time::Instant::now() < until, "timed out: {what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The pid written into `marker`, once it is there.
fn marker_pid(marker: &Path) -> u32 {
    let mut pid = 0;
    wait_until(120, "the build runs cp", || {
        pid = std::fs::read_to_string(marker)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        pid != 0
    });
    pid
}

/// A live process (not a zombie) with this pid.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim_start().to_string()))
        .is_some_and(|r| !r.starts_with('Z'))
}

/// The children of `pid` (from /proc/*/stat).
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')?
                        .1
                        .split_whitespace()
                        .nth(1)?
                        .parse::<u32>()
                        .ok()
                })
                == Some(pid)
        })
        .collect()
}

/// Kills what a failed run of the test left running.
struct KillOnDrop(Vec<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = Command::new("kill")
                .args(["-KILL", &p.to_string()])
                .status();
        }
    }
}

/// Tools habuild runs die with it, whether it is killed (SIGKILL) or
/// stopped by a SIGTERM sent to its own pid only; the next build removes
/// the work directory a killed one left; the messages say what happened.
#[test]
fn children_die_with_habuild_and_the_next_run_removes_what_it_left() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    let t = tempfile::tempdir().unwrap();
    let bin = slow_cp(t.path());
    let out = t.path().join("out");
    let mut leftovers = KillOnDrop(Vec::new());
    let work_of = |pid: u32| {
        test_cache()
            .join("work")
            .join(format!("master-x86-1-{pid}"))
    };

    // SIGKILL: nothing in habuild runs, yet its tools must stop.
    let marker = t.path().join("cp-1");
    let mut build = spawn_director_build(&out, &bin, &marker);
    let cp = marker_pid(&marker);
    let mut sleeper = Vec::new();
    wait_until(10, "cp's sleep starts", || {
        sleeper = children_of(cp);
        !sleeper.is_empty()
    });
    leftovers.0.extend([cp, sleeper[0]]);
    let killed_work = work_of(build.id());
    assert!(killed_work.is_dir(), "{}", killed_work.display());
    assert_eq!(mode(&killed_work), 0o700, "the work directory is private");
    build.kill().unwrap();
    assert_eq!(build.wait().unwrap().signal(), Some(9));
    wait_until(10, "cp and its child die with habuild", || {
        !alive(cp) && !alive(sleeper[0])
    });
    assert!(killed_work.is_dir(), "SIGKILL leaves it for the next run");

    // SIGTERM to habuild's own pid (not its group).
    let marker = t.path().join("cp-2");
    let mut build = spawn_director_build(&out, &bin, &marker);
    let cp = marker_pid(&marker);
    leftovers.0.push(cp);
    let work = work_of(build.id());
    assert!(work.is_dir());
    sh(Command::new("kill").args(["-TERM", &build.id().to_string()]));
    let status = build.wait().unwrap();
    let mut stderr = String::new();
    build
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    eprintln!("SIGTERM run:\n{stderr}");
    assert_eq!(status.code(), Some(130), "{stderr}");
    wait_until(10, "cp dies with habuild", || !alive(cp));
    assert!(!work.exists(), "{} is left", work.display());
    assert!(
        stderr.contains("removed 1 unfinished build directory")
            && !stderr.contains("could not remove"),
        "{stderr}"
    );

    // That next build removed the killed one's work directory first.
    assert!(
        stderr.contains(&format!(
            "removed the stale work directory {} (left by process",
            killed_work.display()
        )),
        "{stderr}"
    );
    assert!(!killed_work.exists());
}
