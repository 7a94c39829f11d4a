//! A build's work directory in the cache, `work/<node>-<pid>/`: private
//! (0700: it holds a copy of the cluster's keys), removed when the build
//! ends, and owned through an exclusive lock on `work/<node>-<pid>.lock`
//! for as long as the build runs. A directory whose lock is free (its
//! owner is gone however it ended, even by SIGKILL) is stale, and the next
//! build removes it ([`remove_stale`]).

use std::fs::File;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::cleanup::{self, RemoveOnExit};

pub struct WorkDir {
    pub path: PathBuf,
    lock_path: PathBuf,
    /// Registers the directory for removal on Ctrl-C.
    _remove: RemoveOnExit,
    /// Held until the directory is gone (fields drop after `drop` ran).
    _lock: File,
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        // The lock file goes only with the directory: a directory that
        // could not be removed stays stale for the next build to remove.
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                log::warn!("could not remove {}: {e}", self.path.display());
                return;
            }
        }
        let _ = std::fs::remove_file(&self.lock_path);
    }
}

fn work_root(cache_dir: &Path) -> PathBuf {
    cache_dir.join("work")
}

/// Creates `work/<node>-<pid>/` under `cache_dir`, locked and private.
pub fn create(cache_dir: &Path, node: &str) -> Result<WorkDir> {
    let root = work_root(cache_dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&root)
        .with_context(|| format!("creating {}", root.display()))?;
    let name = format!("{node}-{}", std::process::id());
    let lock_path = root.join(format!("{name}.lock"));
    let lock =
        File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
    lock.try_lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;
    let path = root.join(&name);
    if path.exists() {
        // Our pid, an earlier owner's directory: that owner is gone.
        std::fs::remove_dir_all(&path)
            .with_context(|| format!("removing the leftover {}", path.display()))?;
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    Ok(WorkDir {
        _remove: cleanup::remove_on_exit(&path),
        path,
        lock_path,
        _lock: lock,
    })
}

/// `<node>-<pid>` → pid.
fn owner_pid(name: &str) -> Option<u32> {
    name.rsplit_once('-')?.1.parse().ok()
}

/// Whether the work directory `name` under `root` has no live owner. An
/// owner holds `<name>.lock`; a directory without one (made by an older
/// habuild) is stale when its pid is no longer running.
fn is_stale(root: &Path, name: &str) -> Result<Option<Option<File>>> {
    let lock_path = root.join(format!("{name}.lock"));
    match File::options().write(true).open(&lock_path) {
        Ok(f) => Ok(f.try_lock().is_ok().then_some(Some(f))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let Some(pid) = owner_pid(name) else {
                return Ok(None);
            };
            Ok((!Path::new(&format!("/proc/{pid}")).exists()).then_some(None))
        }
        Err(e) => Err(e).with_context(|| format!("opening {}", lock_path.display())),
    }
}

/// Removes the work directories under `cache_dir` whose owner is gone;
/// returns one line per directory saying what was done (removed, or why not).
pub fn remove_stale(cache_dir: &Path) -> Result<Vec<String>> {
    let root = work_root(cache_dir);
    let Ok(entries) = std::fs::read_dir(&root) else {
        return Ok(Vec::new());
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut said = Vec::new();
    for name in &names {
        let path = root.join(name);
        if let Some(stem) = name.strip_suffix(".lock") {
            // A lock without its directory (the owner was stopped between the two).
            if !root.join(stem).exists() && is_stale(&root, stem)?.is_some() {
                let _ = std::fs::remove_file(&path);
            }
            continue;
        }
        if !path.is_dir() {
            continue;
        }
        let Some(held) = is_stale(&root, name)? else {
            continue;
        };
        let owner =
            owner_pid(name).map_or("an unknown process".to_string(), |p| format!("process {p}"));
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {
                said.push(format!(
                    "removed the stale work directory {} (left by {owner}, which is gone)",
                    path.display()
                ));
                if held.is_some() {
                    let _ = std::fs::remove_file(root.join(format!("{name}.lock")));
                }
            }
            Err(e) => said.push(format!(
                "could NOT remove the stale work directory {} (left by {owner}): {e}",
                path.display()
            )),
        }
    }
    Ok(said)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_live_work_dir_is_private_and_kept_a_dead_ones_removed() {
        let t = tempfile::tempdir().unwrap();
        let cache = t.path();
        let mine = create(cache, "n1").unwrap();
        let mode = std::fs::metadata(&mine.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        std::fs::write(mine.path.join("ca.key"), "k").unwrap();

        // Left by a killed build: its lock file is there but free.
        let dead = work_root(cache).join("n2-4000000");
        std::fs::create_dir_all(dead.join("root/etc")).unwrap();
        File::create(work_root(cache).join("n2-4000000.lock")).unwrap();
        // Left by an older habuild (no lock file), owner pid not running.
        let old = work_root(cache).join("n3-4000001");
        std::fs::create_dir_all(&old).unwrap();
        // An older habuild's directory whose owner still runs (us).
        let running = work_root(cache).join(format!("n4-{}", std::process::id()));
        std::fs::create_dir_all(&running).unwrap();

        let said = remove_stale(cache).unwrap();
        assert_eq!(said.len(), 2, "{said:?}");
        assert!(
            said[0].starts_with(&format!(
                "removed the stale work directory {}",
                dead.display()
            )),
            "{said:?}"
        );
        assert!(
            said[0].contains("process 4000000, which is gone"),
            "{said:?}"
        );
        assert!(!dead.exists() && !old.exists());
        assert!(!work_root(cache).join("n2-4000000.lock").exists());
        assert!(
            mine.path.join("ca.key").exists(),
            "a live build's directory was removed"
        );
        assert!(running.exists());

        let path = mine.path.clone();
        drop(mine);
        assert!(!path.exists());
        assert!(!work_root(cache)
            .join(format!("n1-{}.lock", std::process::id()))
            .exists());
    }

    #[test]
    fn a_failed_removal_is_said_as_such() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root for chattr");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let dead = work_root(t.path()).join("n-4000002");
        std::fs::create_dir_all(&dead).unwrap();
        let stuck = dead.join("stuck");
        std::fs::write(&stuck, "x").unwrap();
        // Immutable: not even root may remove it.
        if crate::util::CommandExt::run_checked(
            std::process::Command::new("chattr").arg("+i").arg(&stuck),
        )
        .is_err()
        {
            eprintln!("skipped: this filesystem has no immutable flag");
            return;
        }
        let said = remove_stale(t.path()).unwrap();
        let _ = crate::util::CommandExt::run_checked(
            std::process::Command::new("chattr").arg("-i").arg(&stuck),
        );
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(
            said[0].starts_with("could NOT remove the stale work directory"),
            "{said:?}"
        );
        assert!(!said.iter().any(|s| s.starts_with("removed")), "{said:?}");
    }
}
