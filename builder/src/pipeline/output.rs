//! The output directory `out/<cluster>/`: a node's artifacts appear under
//! their final names only when complete, all of them or none, and
//! `SHA256SUMS` keeps every node's entries.
//!
//! A node's artifacts are made in `.partial-<node>/`. Publishing writes a
//! journal (`PUBLISH`: each file's sha256 and name, in the order they go)
//! into that directory and renames it to `.publishing-<node>/`: that rename
//! is the commit point. Then each artifact is renamed into place, the
//! node's entries are merged into `SHA256SUMS` (a new file renamed over the
//! old one, never deleted first) and the journal directory is removed.
//! An interruption before the commit leaves the old artifacts untouched
//! (the next build of the node removes `.partial-<node>/`); one after it is
//! completed by the next `habuild image` of any node (`recover`), and until
//! then `habuild verify` fails for that node. Publishing and recovery hold
//! an exclusive lock on the directory, so concurrent builds of different
//! nodes keep each other's entries.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::artifact::{publishing_dir, PUBLISHING_PREFIX};

use crate::artifact::checksums::{parse_sums, render_sums, SHA256SUMS as SUMS_FILE};
/// The journal inside `.publishing-<node>/`.
const JOURNAL: &str = "PUBLISH";
const PARTIAL_PREFIX: &str = ".partial-";

/// A node's artifacts, complete, in a private directory beside the final one.
pub struct PendingArtifacts {
    pub dir: PathBuf,
    /// (file name, sha256), in the order they are moved into place.
    pub files: Vec<(String, String)>,
}

/// Creates the private directory for a node's artifacts inside `out_dir`
/// (same filesystem, so the final renames are atomic). A leftover from an
/// interrupted build of the same node is removed first.
pub fn pending_dir(out_dir: &Path, node: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("creating the output directory {}", out_dir.display()))?;
    let dir = out_dir.join(format!("{PARTIAL_PREFIX}{node}"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("removing the leftover {}", dir.display()))?;
    }
    // Private: the image is written here before it is known to be complete.
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Moves a node's artifacts into place and merges its entries into
/// `SHA256SUMS`, all or nothing (see the module doc).
pub fn publish(out_dir: &Path, pending: PendingArtifacts) -> Result<()> {
    let node = pending
        .dir
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix(PARTIAL_PREFIX))
        .with_context(|| {
            format!(
                "{} is not a .partial-<node> directory",
                pending.dir.display()
            )
        })?
        .to_string();
    // Ctrl-C meanwhile takes effect once the node is published.
    let _defer = crate::util::cleanup::defer_interrupts();
    let _lock = lock(out_dir)?;
    complete_all(out_dir)?;
    let mut journal = String::new();
    let mut private = false;
    for (name, sha) in &pending.files {
        journal.push_str(&crate::artifact::checksums::sha256sum_line(sha, name)?);
        sync_file(&pending.dir.join(name))?;
        private |= is_private(&pending.dir.join(name))?;
    }
    if private {
        restrict_dir(out_dir)?;
    }
    let journal_path = pending.dir.join(JOURNAL);
    std::fs::write(&journal_path, journal)
        .with_context(|| format!("writing {}", journal_path.display()))?;
    sync_file(&journal_path)?;
    sync_file(&pending.dir)?;
    let publishing = publishing_dir(out_dir, &node);
    stop_point(0);
    std::fs::rename(&pending.dir, &publishing).with_context(|| {
        format!(
            "moving {} to {}",
            pending.dir.display(),
            publishing.display()
        )
    })?;
    sync_file(out_dir)?;
    stop_point(1);
    complete(out_dir, &publishing)
}

/// Completes every publish an interruption left half done in `out_dir`;
/// returns the nodes it completed.
pub fn recover(out_dir: &Path) -> Result<Vec<String>> {
    if !out_dir.is_dir() {
        return Ok(Vec::new());
    }
    let _defer = crate::util::cleanup::defer_interrupts();
    let _lock = lock(out_dir)?;
    complete_all(out_dir)
}

fn complete_all(out_dir: &Path) -> Result<Vec<String>> {
    let mut done = Vec::new();
    let entries =
        std::fs::read_dir(out_dir).with_context(|| format!("listing {}", out_dir.display()))?;
    let mut journals: Vec<(String, PathBuf)> = Vec::new();
    for e in entries {
        let e = e.with_context(|| format!("listing {}", out_dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(node) = name.strip_prefix(PUBLISHING_PREFIX) {
            journals.push((node.to_string(), e.path()));
        }
    }
    journals.sort();
    for (node, dir) in journals {
        complete(out_dir, &dir)
            .with_context(|| format!("completing the interrupted publish of {node}"))?;
        done.push(node);
    }
    Ok(done)
}

/// The part after the commit point; repeatable: files already moved are
/// not in the journal directory any more, and the sums merge is idempotent.
fn complete(out_dir: &Path, publishing: &Path) -> Result<()> {
    let journal_path = publishing.join(JOURNAL);
    let journal = std::fs::read_to_string(&journal_path)
        .with_context(|| format!("reading {}", journal_path.display()))?;
    let files: Vec<(String, String)> = journal
        .lines()
        .filter_map(|l| l.split_once("  "))
        .map(|(sha, name)| (name.to_string(), sha.to_string()))
        .collect();
    if files.is_empty() {
        bail!("{} lists no file", journal_path.display());
    }
    for (i, (name, _)) in files.iter().enumerate() {
        let from = publishing.join(name);
        if from.exists() {
            let to = out_dir.join(name);
            std::fs::rename(&from, &to)
                .with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
        }
        stop_point(2 + i);
    }
    // A node's image in another form (.img after .img.zst, or the other
    // way) belongs to an earlier build: its bmap was just replaced.
    for name in superseded(files.iter().map(|(n, _)| n.as_str())) {
        let old = out_dir.join(&name);
        match std::fs::remove_file(&old) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", old.display())),
        }
    }
    let sums_path = out_dir.join(SUMS_FILE);
    let mut sums = read_sums(&sums_path)?;
    for (name, sha) in &files {
        sums.insert(name.clone(), sha.clone());
    }
    // Drop entries whose files are gone (e.g. removed by hand).
    sums.retain(|name, _| out_dir.join(name).is_file());
    let tmp = out_dir.join(format!(".{SUMS_FILE}.tmp"));
    std::fs::write(&tmp, render_sums(&sums))
        .with_context(|| format!("writing {}", tmp.display()))?;
    sync_file(&tmp)?;
    std::fs::rename(&tmp, &sums_path)
        .with_context(|| format!("moving {} into place", sums_path.display()))?;
    sync_file(out_dir)?;
    stop_point(2 + files.len());
    std::fs::remove_dir_all(publishing)
        .with_context(|| format!("removing {}", publishing.display()))?;
    Ok(())
}

/// The other forms of each published image (`n.img`, `n.img.zst`,
/// `n.img.xz`, `n.img.gz`) that a publish of one of them replaces.
pub fn superseded<'a>(published: impl Iterator<Item = &'a str> + Clone) -> Vec<String> {
    const FORMS: [&str; 4] = ["", ".zst", ".xz", ".gz"];
    let mut out = Vec::new();
    for name in published.clone() {
        let Some(stem) = FORMS
            .iter()
            .rev()
            .find_map(|f| name.strip_suffix(&format!(".img{f}")))
        else {
            continue;
        };
        for f in FORMS {
            let other = format!("{stem}.img{f}");
            if published.clone().all(|p| p != other) {
                out.push(other);
            }
        }
    }
    out
}

/// Gives an artifact that carries secrets mode 0600 (it is made in the
/// 0700 partial directory, so no one else could open it before).
pub fn make_private(path: &Path) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {} private (mode 0600)", path.display()))
}

fn is_private(path: &Path) -> Result<bool> {
    let mode = std::fs::metadata(path)
        .with_context(|| format!("reading the mode of {}", path.display()))?
        .permissions()
        .mode();
    Ok(mode & 0o077 == 0)
}

/// Takes every permission from "others" on the output directory, so that
/// a private artifact is never listed to, or reached by, other users
/// (group access is the owner's choice and kept).
fn restrict_dir(out_dir: &Path) -> Result<()> {
    let mode = std::fs::metadata(out_dir)
        .with_context(|| format!("reading the mode of {}", out_dir.display()))?
        .permissions()
        .mode();
    if mode & 0o007 != 0 {
        std::fs::set_permissions(out_dir, std::fs::Permissions::from_mode(mode & 0o7770))
            .with_context(|| {
                format!(
                    "making {} unlistable by others (it will hold private artifacts)",
                    out_dir.display()
                )
            })?;
    }
    Ok(())
}

/// Flushes a file or directory to disk, so that after a crash a rename
/// that survived points at complete content.
fn sync_file(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("flushing {} to disk", path.display()))
}

/// The output directory's publish lock, held until dropped: an exclusive
/// flock on the directory itself (no lock file left beside the artifacts).
fn lock(out_dir: &Path) -> Result<File> {
    let f = File::open(out_dir).with_context(|| format!("opening {}", out_dir.display()))?;
    f.lock()
        .with_context(|| format!("locking {} to publish", out_dir.display()))?;
    Ok(f)
}

/// Test hook: `HABUILD_TEST_PUBLISH_STOP_AFTER=N` kills habuild with
/// SIGKILL (nothing gets to clean up) right after publish step N: 0 is
/// just before the commit rename, 1 right after it, 2.. each artifact's
/// rename, then SHA256SUMS's.
fn stop_point(step: usize) {
    if std::env::var("HABUILD_TEST_PUBLISH_STOP_AFTER").is_ok_and(|v| v == step.to_string()) {
        let me = rustix::process::getpid();
        let _ = rustix::process::kill_process(me, rustix::process::Signal::KILL);
    }
}

fn read_sums(path: &Path) -> Result<BTreeMap<String, String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(parse_sums(&t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::digest::sha256_file;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn a_compressed_image_supersedes_the_other_forms() {
        let names = ["n.img.bmap", "n-firmware.tar.gz", "n.json", "n.img.zst"];
        assert_eq!(
            superseded(names.iter().copied()),
            ["n.img", "n.img.xz", "n.img.gz"]
        );
        assert_eq!(
            superseded(["n.img.bmap", "n.img"].iter().copied()),
            ["n.img.zst", "n.img.xz", "n.img.gz"]
        );
        assert!(superseded(["SHA256SUMS", "n.json"].iter().copied()).is_empty());
    }

    const NAMES: [&str; 4] = ["a.img.bmap", "a-firmware.tar.gz", "a.json", "a.img"];

    fn sha(text: &str) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(text.as_bytes()))
    }

    /// An output directory where nodes a and b were published, and a's
    /// new artifacts wait in `.partial-a`.
    fn prepared() -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let mut sums = BTreeMap::new();
        for name in NAMES.iter().chain(&["b.img", "b.json"]) {
            let text = format!("old {name}");
            std::fs::write(out.join(name), &text).unwrap();
            sums.insert(name.to_string(), sha(&text));
        }
        std::fs::write(out.join(SUMS_FILE), render_sums(&sums)).unwrap();
        let dir = pending_dir(&out, "a").unwrap();
        for name in NAMES {
            std::fs::write(dir.join(name), format!("new {name}")).unwrap();
        }
        (t, out)
    }

    fn pending(out: &Path) -> PendingArtifacts {
        PendingArtifacts {
            dir: out.join(".partial-a"),
            files: NAMES
                .iter()
                .map(|n| (n.to_string(), sha(&format!("new {n}"))))
                .collect(),
        }
    }

    /// Every SHA256SUMS entry matches its file; returns the entries.
    fn consistent(out: &Path) -> BTreeMap<String, String> {
        let sums = read_sums(&out.join(SUMS_FILE)).unwrap();
        for (name, expected) in &sums {
            assert_eq!(&sha256_file(&out.join(name)).unwrap(), expected, "{name}");
        }
        sums
    }

    fn content(out: &Path, name: &str) -> String {
        std::fs::read_to_string(out.join(name)).unwrap()
    }

    /// Not a test of its own: the child process the next test starts (the
    /// test binary again, this test only), killed by the test hook.
    #[test]
    fn publish_in_a_child() {
        let Ok(out) = std::env::var("HABUILD_TEST_PUBLISH_OUT") else {
            return;
        };
        let out = PathBuf::from(out);
        publish(&out, pending(&out)).unwrap();
    }

    #[test]
    fn killed_at_any_step_the_other_node_holds_and_the_next_run_completes() {
        let exe = std::env::current_exe().unwrap();
        for step in 0..=7 {
            let (_t, out) = prepared();
            let status = std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "pipeline::output::tests::publish_in_a_child",
                    "--test-threads=1",
                ])
                .env("HABUILD_TEST_PUBLISH_OUT", &out)
                .env("HABUILD_TEST_PUBLISH_STOP_AFTER", step.to_string())
                .stdout(std::process::Stdio::null())
                .status()
                .unwrap();
            let journal = publishing_dir(&out, "a");
            if step < 7 {
                assert_eq!(status.signal(), Some(9), "step {step}: not killed");
            } else {
                assert!(status.success(), "{status}");
            }
            // b is never touched, whatever the step.
            let sums = read_sums(&out.join(SUMS_FILE)).unwrap();
            assert_eq!(sums["b.img"], sha("old b.img"), "step {step}");
            assert_eq!(content(&out, "b.json"), "old b.json", "step {step}");
            if step == 0 {
                // Before the commit: nothing of a's changed.
                assert!(!journal.exists());
                for n in NAMES {
                    assert_eq!(content(&out, n), format!("old {n}"));
                }
                assert_eq!(consistent(&out).len(), 6);
                assert!(recover(&out).unwrap().is_empty());
                continue;
            }
            assert_eq!(journal.exists(), step < 7, "step {step}");
            let completed = recover(&out).unwrap();
            assert_eq!(completed.len(), usize::from(step < 7), "step {step}");
            assert!(!journal.exists());
            let sums = consistent(&out);
            assert_eq!(sums.len(), 6, "step {step}: {sums:?}");
            for n in NAMES {
                assert_eq!(content(&out, n), format!("new {n}"), "step {step}");
            }
            assert_eq!(recover(&out).unwrap(), Vec::<String>::new());
        }
    }

    /// Runs `args` as user nobody; true when it succeeds.
    fn as_nobody(args: &[&str]) -> bool {
        std::process::Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    #[test]
    fn private_artifacts_stay_private_on_the_way_and_in_place() {
        use std::os::unix::fs::PermissionsExt;
        if !crate::host::setup::is_root().unwrap_or(false) {
            eprintln!("skipped: running a check as another user needs root");
            return;
        }
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        let t = tempfile::tempdir().unwrap();
        // Others may pass through the parents, as through a home directory.
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = t.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(out.join("b.img"), "a director's image").unwrap();
        let pending = pending_dir(&out, "a").unwrap();
        assert_eq!(mode(&pending), 0o700, "the partial directory");
        let img = pending.join("a.img");
        std::fs::write(&img, "BEGIN PRIVATE KEY").unwrap();
        make_private(&img).unwrap();
        assert!(!as_nobody(&["cat", img.to_str().unwrap()]));
        publish(
            &out,
            PendingArtifacts {
                dir: pending,
                files: vec![("a.img".into(), sha("BEGIN PRIVATE KEY"))],
            },
        )
        .unwrap();
        assert_eq!(mode(&out.join("a.img")), 0o600);
        assert_eq!(mode(&out) & 0o007, 0, "others can list {}", out.display());
        assert!(!as_nobody(&["cat", out.join("a.img").to_str().unwrap()]));
        assert!(!as_nobody(&["ls", out.to_str().unwrap()]));
        // The owner keeps working on it.
        assert_eq!(
            std::fs::read_to_string(out.join("a.img")).unwrap(),
            "BEGIN PRIVATE KEY"
        );
    }

    #[test]
    fn publish_replaces_and_keeps_other_nodes() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path();
        std::fs::write(out.join("a.img"), "old a").unwrap();
        std::fs::write(out.join("b.img"), "b").unwrap();
        std::fs::write(
            out.join(SUMS_FILE),
            "111  a.img\n222  b.img\n333  gone.img\n",
        )
        .unwrap();
        let dir = pending_dir(out, "a").unwrap();
        std::fs::write(dir.join("a.img"), "new a").unwrap();
        publish(
            out,
            PendingArtifacts {
                dir: dir.clone(),
                files: vec![("a.img".into(), "999".into())],
            },
        )
        .unwrap();
        assert_eq!(std::fs::read_to_string(out.join("a.img")).unwrap(), "new a");
        assert_eq!(
            std::fs::read_to_string(out.join(SUMS_FILE)).unwrap(),
            "999  a.img\n222  b.img\n"
        );
        assert!(!dir.exists());
    }
}
